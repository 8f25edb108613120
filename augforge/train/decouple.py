"""Decoupled classifier learning (Kang et al., ICLR 2020): a second stage on a trained backbone.

- ``crt`` (classifier re-training): the classifier, the last ``nn.Linear`` of the model's ``head``, is
  initialised afresh and trained for ``epochs`` on class-balanced draws of the train split (its ops and
  mixing as in the first stage), with plain cross-entropy; every other parameter is frozen and the backbone
  stays in evaluation mode (its BatchNorm statistics do not move).
- ``tau_norm``: each class's classifier weights are divided by their norm to the power tau and the bias is
  dropped (as in the authors' code); tau 0 keeps the weights, 1 normalises them. ``auto`` picks tau on the
  val split (the early-stopping metric).

Both return a model of the same architecture, so the checkpoint and ``augforge evaluate`` need nothing else.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from augforge.errors import AugforgeError
from augforge.recipe.long_tail import DecoupleSpec, LossSpec
from augforge.recipe.train import TrainConfig
from augforge.train.loop import Trainer, collect_logits, predictions
from augforge.train.metrics import classification_metrics

#: the taus ``decouple: {mode: tau_norm, tau: auto}`` tries on the val split
TAU_NORM_GRID = tuple(round(0.1 * i, 1) for i in range(16))  # 0.0 .. 1.5


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's classifier: its ``head`` when that is a Linear, else the head's last Linear."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    if not linears:
        raise AugforgeError(f"train.decouple: model {type(model).__name__} has no Linear classifier in its head")
    return linears[-1]


def tau_normalized(model: nn.Module, tau: float) -> nn.Module:
    """A copy of ``model`` whose classifier rows are ``w_c / ||w_c||^tau``, without bias."""
    out = copy.deepcopy(model)
    linear = classifier_of(out)
    with torch.no_grad():
        norms = linear.weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
        linear.weight.div_(norms.pow(tau))
        if linear.bias is not None:
            linear.bias.zero_()
    return out


class _ClassifierOnly(nn.Module):
    """The model with only its classifier trainable; ``train()`` leaves the rest in evaluation mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.classifier = classifier_of(model)
        for param in model.parameters():
            param.requires_grad_(False)
        for param in self.classifier.parameters():
            param.requires_grad_(True)

    def train(self, mode: bool = True) -> "_ClassifierOnly":
        self.training = mode
        self.inner.eval()
        self.classifier.train(mode)
        return self

    def forward(self, *x):
        return self.inner(*x)


def retrain_classifier(model: nn.Module, loader, config: TrainConfig, epochs: int, seed: int, device) -> nn.Module:
    """cRT: a copy of ``model`` whose classifier is re-initialised (from ``seed``) and trained ``epochs`` on
    class-balanced draws of ``loader`` (switched to balanced sampling), the rest frozen."""
    out = copy.deepcopy(model)
    linear = classifier_of(out)
    torch.manual_seed(seed)
    linear.reset_parameters()
    wrapped = _ClassifierOnly(out)
    stage = replace(config, epochs=epochs, loss=LossSpec(), rebalance=None, class_weights="none", swa_start=None,
                    ema_decay=None, posthoc_tau=None, decouple=None, warmup=0.0, accumulate=1)
    trainer = Trainer(wrapped, stage, len(loader), device=device)
    loader.set_sampler("balanced")
    trainer.fit(loader)
    for param in out.parameters():
        param.requires_grad_(True)
    return out.eval()


def pick_tau_norm(model: nn.Module, val, class_names: list[str], metric: str, device) -> dict:
    """The tau of ``TAU_NORM_GRID`` whose normalised classifier scores best on ``metric`` on ``val`` (the
    smaller on a tie); the features are computed once. {"tau": best, "val": {tau: score}}."""
    linear = classifier_of(model)
    features = []
    hook = linear.register_forward_hook(lambda module, inputs, output: features.append(inputs[0].detach().cpu()))
    try:
        _, true, _ = collect_logits(model, val, device)
    finally:
        hook.remove()
    x, weight = torch.cat(features).float(), linear.weight.detach().float().cpu()
    norms = weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
    scores = {}
    for tau in TAU_NORM_GRID:
        logits = x @ (weight / norms.pow(tau)).T
        scores[tau] = classification_metrics(true, predictions(logits), class_names)[metric]
    best = max(TAU_NORM_GRID, key=lambda t: (scores[t], -t))
    return {"tau": best, "val": {str(t): round(float(s), 6) for t, s in scores.items()}}


def decouple(model: nn.Module, spec: DecoupleSpec, config: TrainConfig, loader, val, class_names: list[str],
             metric: str, seed: int, device) -> tuple[nn.Module, dict]:
    """The second stage ``spec`` asks for on the trained ``model``: (the new model, what was done)."""
    if spec.mode == "crt":
        return retrain_classifier(model, loader, config, spec.epochs, seed, device), \
            {"mode": "crt", "epochs": spec.epochs}
    info = {"mode": "tau_norm", "tau": spec.tau, "picked_on": None}
    if spec.tau == "auto":
        if val is None:
            raise AugforgeError("train.decouple.tau: auto picks tau on the val split, and the dataset has none; set "
                                "source.val_split, or give tau as a number")
        info = {"mode": "tau_norm", **pick_tau_norm(model, val, class_names, metric, device),
                "picked_on": f"val {metric}"}
    return tau_normalized(model, float(info["tau"])), info
