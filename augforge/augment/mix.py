"""Batch mixing: mixup and cutmix, with soft labels the trainer's loss takes as they are.

mixup (Zhang et al., 2018) blends two images with weight ``lam ~ Beta(alpha, alpha)``; cutmix (Yun et
al., 2019) pastes a box of another image whose area share is ``1 - lam``, and ``lam`` is then corrected
to the pasted box's exact area. The partner of each sample is the batch reversed, and every label row
sums to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixConfig:
    """``prob``: share of batches mixed; with both alphas set, ``switch_prob`` of those use cutmix."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self):
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if not (0 <= self.prob <= 1 and 0 <= self.switch_prob <= 1):
            raise ValueError("prob and switch_prob must be in [0, 1]")

    @property
    def active(self) -> bool:
        """Whether any mixing can happen."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 one-hot rows."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) of area share about ``1 - lam``, centred at a uniform point, clipped to the image."""
    ratio = np.sqrt(1.0 - lam)
    h, w = int(height * ratio), int(width * ratio)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    return (int(np.clip(cy - h // 2, 0, height)), int(np.clip(cy + h // 2, 0, height)),
            int(np.clip(cx - w // 2, 0, width)), int(np.clip(cx + w // 2, 0, width)))


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, config: MixConfig,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Mix an NCHW batch; returns (images, soft labels, 'mixup' | 'cutmix' | 'none'). ``x`` is not modified."""
    targets = one_hot(y, num_classes)
    if not config.active or len(x) < 2 or rng.random() >= config.prob:
        return x, targets, "none"
    use_cutmix = config.cutmix_alpha > 0 and (config.mixup_alpha <= 0 or rng.random() < config.switch_prob)
    alpha = config.cutmix_alpha if use_cutmix else config.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    flipped = x.flip(0)
    if use_cutmix:
        y0, y1, x0, x1 = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
        mixed = x.clone()
        mixed[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
        kind = "cutmix"
    else:
        mixed = x * lam + flipped * (1.0 - lam) if x.is_floating_point() else \
            (x.float() * lam + flipped.float() * (1.0 - lam))
        kind = "mixup"
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam), kind
