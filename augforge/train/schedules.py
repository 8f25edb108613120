"""Learning-rate schedules stepped once per optimizer step (not per micro-batch, not per epoch).

Each is a multiplier of the base learning rate, as a function of the optimizer step:

- ``cosine``: linear warm-up from 0 to 1 over ``warmup`` steps, then cosine decay to ``min_factor``;
- ``step``: multiply by ``gamma`` every ``step_size`` steps (after the warm-up);
- ``onecycle``: linear warm-up to 1 over ``pct_start`` of training, then cosine annealing to
  ``min_factor`` (Smith's one-cycle policy on the learning rate);
- ``constant``: 1 (after the warm-up);
- ``linear``: linear warm-up, then a straight line down to ``min_factor`` (fastText's own trainer decays its
  rate this way).

``warmup`` is a number of steps, or a fraction of the total when below 1.
"""

from __future__ import annotations

import math

import torch

from augforge.errors import AugforgeError
from augforge.recipe.train import SCHEDULES


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Warm-up length in steps: a count, or a fraction of ``total_steps`` when below 1."""
    if warmup < 0:
        raise AugforgeError(f"warmup {warmup}: expected >= 0 (steps, or a fraction of training below 1)")
    return int(round(warmup * total_steps)) if 0 < warmup < 1 else int(warmup)


def lr_factor(kind: str, step: int, total_steps: int, *, warmup: float = 0.0, min_factor: float = 0.0,
              step_size: int = 1000, gamma: float = 0.1, pct_start: float = 0.3) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if kind not in SCHEDULES:
        raise AugforgeError(f"unknown schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    total_steps = max(1, total_steps)
    if kind == "onecycle":
        warm = max(1, int(round(pct_start * total_steps)))
    else:
        warm = warmup_steps(warmup, total_steps)
    if step < warm:
        return (step + 1) / warm
    if kind == "constant":
        return 1.0
    if kind == "step":
        return gamma ** ((step - warm) // max(1, step_size))
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    if kind == "linear":
        return 1.0 - (1.0 - min_factor) * progress
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, **options):
    """A ``LambdaLR`` applying ``lr_factor`` to every parameter group's base learning rate."""
    lr_factor(kind, 0, total_steps, **options)  # validate now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(kind, step, total_steps, **options))
