"""Losses that sum over samples (the loop divides by the samples of the whole accumulated step), with label
smoothing for multi-class and binary targets. Inputs are never modified."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """New soft-target rows: ``1 - smoothing`` on the class plus ``smoothing / num_classes`` everywhere
    (the labels tensor itself is left as it is)."""
    if labels.is_floating_point():  # already soft (mixup/cutmix): smooth the distribution
        soft = labels.float()
    else:
        soft = F.one_hot(labels.long(), num_classes).float()
    return soft * (1.0 - smoothing) + smoothing / num_classes


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Summed cross-entropy for class indices or soft targets, with label smoothing; ``weight`` scales each
    class's term (as ``F.cross_entropy``'s ``weight`` does, without its division by the weights' sum)."""
    logits = logits.float()
    if not targets.is_floating_point() and smoothing == 0.0:
        return F.cross_entropy(logits, targets.long(), weight=weight, reduction="sum")
    soft = smoothed_targets(targets, logits.shape[-1], smoothing)
    if weight is not None:
        soft = soft * weight.to(soft.device, soft.dtype)
    return -(soft * F.log_softmax(logits, dim=-1)).sum()


def balanced_class_weights(counts) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"``: ``n / (classes * count)`` per class (0 for absent ones)."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def binary_cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Summed binary cross-entropy on one logit per sample; smoothing moves targets to ``y(1-s) + s/2``."""
    soft = targets.float() * (1.0 - smoothing) + smoothing / 2
    return F.binary_cross_entropy_with_logits(logits.float().reshape(soft.shape), soft, reduction="sum")


def weight_penalty(model: torch.nn.Module, l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * sum|w| + l2 * sum w^2`` over the weights that decay (>= 2 dimensions)."""
    total = torch.zeros(())
    if not (l1 or l2):
        return total
    for param in model.parameters():
        if param.requires_grad and param.ndim >= 2:
            if l1:
                total = total + l1 * param.abs().sum()
            if l2:
                total = total + l2 * param.pow(2).sum()
    return total
