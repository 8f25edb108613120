"""The learning-rate range test (Smith, 2017): sweep the learning rate exponentially over a few hundred
optimizer steps, record the smoothed loss, and suggest where it falls fastest.

The model and optimizer are copies: the sweep never changes the weights you train afterwards.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError, OptionError
from augforge.train.loop import TrainConfig, Trainer


@dataclass
class LRFind:
    """The sweep: learning rates, raw and smoothed losses, and the suggestion with its reason."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    reason: str


def lr_find(model, batches: Iterable, config: TrainConfig, *, start: float = 1e-6, end: float = 1.0,
            steps: int = 100, smooth: float = 0.9, diverge: float = 4.0) -> LRFind:
    """Run the sweep on copies of ``model``; stop early once the smoothed loss exceeds ``diverge`` x its minimum."""
    if not 0 < start < end:
        raise AugforgeError(f"lr-find: expected 0 < start < end, got {start} and {end}")
    if steps < 5:
        raise AugforgeError("lr-find: needs at least 5 steps")
    cfg = copy.deepcopy(config)
    cfg.schedule, cfg.warmup, cfg.epochs, cfg.swa_start, cfg.ema_decay = "constant", 0, 1, None, None
    cfg.nonfinite = "skip"
    trainer = Trainer(copy.deepcopy(model), cfg, steps * cfg.accumulate)
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    group = []
    it = iter(batches)
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        for g in trainer.optimizer.param_groups:
            g["lr"] = lr
        trainer.scheduler.base_lrs = [lr] * len(trainer.optimizer.param_groups)
        group = []
        for _ in range(cfg.accumulate):
            try:
                group.append(next(it))
            except StopIteration:
                it = iter(batches)
                group.append(next(it))
        loss = trainer.optimizer_step(group)
        if not math.isfinite(loss):
            break
        average = smooth * average + (1 - smooth) * loss
        value = average / (1 - smooth ** (i + 1))  # bias-corrected
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge * best and i > 5:
            break
    if len(smoothed) < 5:
        raise OptionError("lr-find: the loss diverged at once; lower {start}")
    log_lrs = np.log10(lrs)
    slopes = np.gradient(np.asarray(smoothed), log_lrs)
    usable = slice(2, max(3, int(np.argmin(smoothed)) + 1))
    steepest = int(np.argmin(slopes[usable])) + usable.start
    suggestion = float(lrs[steepest])
    reason = (f"the smoothed loss falls fastest at lr {suggestion:.2e} (its minimum, {min(smoothed):.3f}, "
              f"is at lr {lrs[int(np.argmin(smoothed))]:.2e})")
    return LRFind(lrs, losses, smoothed, suggestion, reason)


def plot(result: LRFind, path) -> None:
    """Loss against learning rate (log scale), with the suggestion marked, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed")
    ax.axvline(result.suggestion, color="C3", linestyle="--", label=f"suggested {result.suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
