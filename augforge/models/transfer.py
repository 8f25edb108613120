"""Transfer learning: load local weights by name, replace the head, freeze the backbone, discriminative LRs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError, first_line

#: Prefixes that wrappers add to parameter names (DDP, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What ``load_weights`` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Whether every key matched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.mismatched:
            lines.append("shape mismatch (kept the model's): " + ", ".join(
                f"{k} {tuple(a)} in file vs {tuple(b)} in model" for k, a, b in self.mismatched))
        if self.missing:
            lines.append("missing from the file (kept the model's): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("in the file but not in the model (ignored): " + ", ".join(self.unexpected))
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a local ``.safetensors`` file or a torch checkpoint (loaded with ``weights_only=True``).

    A checkpoint dict holding ``state_dict`` or ``model`` is unwrapped; DDP and torch.compile
    prefixes are stripped. Nothing is ever downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise AugforgeError(f"{path}: no such weights file (weights are loaded from local files only)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AugforgeError(f"{path}: not a weights file ({type(exc).__name__}: {first_line(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AugforgeError(f"{path}: holds no state dict of tensors")
    return {_strip(k): v for k, v in state.items()}


def _strip(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write the model's state dict atomically: safetensors for ``.safetensors``, else a torch file."""
    state = {_strip(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)


def load_weights(model: nn.Module, weights: str | Path | dict, strict: bool = False) -> LoadReport:
    """Copy tensors whose names and shapes match into ``model``; report the rest.

    With ``strict=True`` any missing, unexpected or shape-mismatched key is an error.
    """
    state = read_state_dict(weights) if not isinstance(weights, dict) else {_strip(k): v for k, v in weights.items()}
    own = model.state_dict()
    report = LoadReport()
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    if strict and not report.clean:
        raise AugforgeError(f"weights do not fit the model: {str(report).splitlines()[1]}")
    model.load_state_dict(usable, strict=False)
    return report


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh classifier for ``num_classes`` outputs; the backbone is kept."""
    if not hasattr(model, "reset_head"):
        raise AugforgeError(f"{type(model).__name__} has no replaceable head")
    model.reset_head(num_classes)
    return model


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: the same output in train and eval mode."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        features = bn.num_features
        self.eps = bn.eps
        self.register_buffer("weight", bn.weight.detach().clone() if bn.affine else torch.ones(features))
        self.register_buffer("bias", bn.bias.detach().clone() if bn.affine else torch.zeros(features))
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.reshape(shape) + shift.reshape(shape)


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the head's parameters (everything else is the backbone)."""
    return {f"head.{name}" for name, _ in model.head.named_parameters()}


def freeze_backbone(model: nn.Module) -> int:
    """Stop training everything but the head: ``requires_grad=False`` and BatchNorm statistics frozen.

    BatchNorm layers of the backbone become ``FrozenBatchNorm`` so that ``model.train()``
    cannot update their running statistics. Returns the number of frozen parameters.
    """
    if not hasattr(model, "head"):
        raise AugforgeError(f"{type(model).__name__} has no head to keep trainable")
    _freeze_norms(model, skip=model.head)
    head = head_parameter_names(model)
    frozen = 0
    for name, param in model.named_parameters():
        if name not in head:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def _freeze_norms(module: nn.Module, skip: nn.Module) -> None:
    for name, child in module.named_children():
        if child is skip:
            continue
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, FrozenBatchNorm(child))
        else:
            _freeze_norms(child, skip)


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None = None) -> list[dict]:
    """Optimizer groups for discriminative learning rates: the backbone at ``backbone_lr`` (default lr / 10),
    the head at ``lr``. Frozen parameters are left out."""
    head = head_parameter_names(model)
    groups = {"backbone": [], "head": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["head" if name in head else "backbone"].append(param)
    backbone_lr = lr / 10 if backbone_lr is None else backbone_lr
    return [g for g in ({"name": "backbone", "params": groups["backbone"], "lr": backbone_lr},
                        {"name": "head", "params": groups["head"], "lr": lr}) if g["params"]]
