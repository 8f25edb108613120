"""Model registry: `create(name, num_classes, in_channels=3, **options)` and `available()`."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from augforge.errors import AugforgeError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make a builder ``fn(num_classes, in_channels, **options)`` available by its name."""
    _MODELS[fn.__name__] = fn
    return fn


def available() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, object]:
    """The options a model's builder takes, with their defaults."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()
            if p.name not in ("num_classes", "in_channels")}


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise AugforgeError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _MODELS[name]


def create(name: str, num_classes: int, in_channels: int = 3, *, seed: int | None = None,
           channels_last: bool = False, compile: bool = False, **options) -> nn.Module:
    """Build a registered model.

    ``seed`` makes initialization deterministic without touching the global RNG;
    ``channels_last`` stores conv weights NHWC (faster for convolutions on most CPUs and GPUs);
    ``compile`` wraps the model in ``torch.compile``. Other options go to the model's builder
    (``augforge models NAME`` lists them); an unknown option is an error.
    """
    builder = _builder(name)
    known = model_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise AugforgeError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; options: "
                            f"{', '.join(known) or 'none'}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise AugforgeError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = builder(num_classes=num_classes, in_channels=in_channels, **options)
    except (TypeError, ValueError) as exc:
        raise AugforgeError(f"model {name!r}: bad option value ({exc})") from None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model
