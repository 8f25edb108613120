"""Losses that sum over samples (the loop divides by the samples of the whole accumulated step), with label
smoothing for multi-class and binary targets. Inputs are never modified.

The long-tail losses of ``train.loss`` (``Criterion``), with ``pi`` the class priors (train counts / total)
and ``n`` the counts:

- ``focal`` (Lin et al. 2017): ``-sum_c t_c (1 - p_c)^gamma log p_c``; gamma 0 is cross-entropy;
- ``logit_adjusted`` (Menon et al. 2021): cross-entropy of ``logits + tau log pi``; tau 0 is cross-entropy;
- ``balanced_softmax`` (Ren et al. 2020): cross-entropy of ``logits + log pi`` (logit adjustment at tau 1);
- ``ldam`` (Cao et al. 2019): cross-entropy of ``scale * (logits - m_y)`` with ``m_c`` proportional to
  ``n_c^(-1/4)``, the rarest class's margin ``max_margin``;

and the deferred re-weighting (DRW) weights of Cao et al., the effective number of Cui et al. 2019.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from augforge.errors import AugforgeError
from augforge.recipe.long_tail import LossSpec


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


def effective_number_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al.'s class-balanced weights ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to the number of
    classes present (0 for absent ones): what DRW switches to."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts[present]))
    weights[present] *= present.sum() / weights[present].sum()
    return weights.float()


def log_priors(counts) -> torch.Tensor:
    """``log(n_c / sum n)``; a class without rows counts as one row (its prior is small, not zero)."""
    counts = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
    return torch.log(counts / counts.sum()).float()


def ldam_margins(counts, max_margin: float) -> torch.Tensor:
    """Per-class margins proportional to ``n_c^(-1/4)``, the largest (the rarest class's) ``max_margin``."""
    raw = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0).pow(-0.25)
    return (raw * (max_margin / raw.max())).float()


def focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, gamma: float, smoothing: float = 0.0,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Summed focal loss ``-sum_c t_c (1 - p_c)^gamma log p_c`` over index or soft targets ``t`` (smoothed)."""
    logits = logits.float()
    soft = smoothed_targets(targets, logits.shape[-1], smoothing)
    if weight is not None:
        soft = soft * weight.to(soft.device, soft.dtype)
    log_p = F.log_softmax(logits, dim=-1)
    return -(soft * (1.0 - log_p.exp()).pow(gamma) * log_p).sum()


class Criterion:
    """A run's training loss: the ``train.loss`` with its class counts, and the class weights of each epoch
    (``train.class_weights``, or the deferred DRW weights from their epoch on). ``sum`` gives the summed
    loss of a micro-batch."""

    def __init__(self, spec=None, smoothing: float = 0.0, counts=None, weights=None, deferred=None,
                 binary: bool = False) -> None:
        self.spec = spec or LossSpec()
        self.smoothing, self.binary = smoothing, binary
        self.weights = None if weights is None else torch.as_tensor(weights).float()
        #: (first epoch, weights from then on), or None
        self.deferred = None if deferred is None else (int(deferred[0]), torch.as_tensor(deferred[1]).float())
        if binary and self.spec.name != "ce":
            raise AugforgeError(f"loss {self.spec.name}: a binary head trains with binary cross-entropy")
        if self.spec.uses_priors and counts is None:
            raise AugforgeError(f"loss {self.spec.name}: needs the train split's class counts")
        self.shift = None  # added to the logits (the prior-adjusted losses)
        if self.spec.name == "logit_adjusted":
            self.shift = self.spec.tau * log_priors(counts)
        elif self.spec.name == "balanced_softmax":
            self.shift = log_priors(counts)
        self.margins = ldam_margins(counts, self.spec.max_margin) if self.spec.name == "ldam" else None

    def to(self, device) -> "Criterion":
        """The same criterion with its tensors on ``device``."""
        for key in ("weights", "shift", "margins"):
            if getattr(self, key) is not None:
                setattr(self, key, getattr(self, key).to(device))
        if self.deferred is not None:
            self.deferred = (self.deferred[0], self.deferred[1].to(device))
        return self

    def weights_at(self, epoch: int) -> torch.Tensor | None:
        """The class weights of ``epoch``: the deferred ones from their start, else the fixed ones (or None)."""
        if self.deferred is not None and epoch >= self.deferred[0]:
            return self.deferred[1]
        return self.weights

    def sum(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """The summed loss of ``logits`` against index or soft ``targets`` in ``epoch``."""
        if self.binary:
            return binary_cross_entropy_sum(logits, targets, self.smoothing)
        logits, weight, name = logits.float(), self.weights_at(epoch), self.spec.name
        if name == "focal":
            return focal_loss_sum(logits, targets, self.spec.gamma, self.smoothing, weight)
        if self.shift is not None:
            logits = logits + self.shift
        elif self.margins is not None:
            hard = targets.float() if targets.is_floating_point() else F.one_hot(targets.long(), logits.shape[-1])
            logits = self.spec.scale * (logits - hard * self.margins)
        return cross_entropy_sum(logits, targets, self.smoothing, weight)


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
