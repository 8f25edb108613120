"""Optimizers with weight decay only where it belongs: not on norms, biases or other 1-D parameters."""

from __future__ import annotations

import torch

from augforge.errors import AugforgeError
from augforge.recipe.train import OPTIMIZERS



def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: weights of >= 2 dimensions decay; biases, norm scales and other 1-D
    parameters (and embeddings' positional tables marked ``no_decay``) do not."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or getattr(param, "no_decay", False) or name.endswith(".bias"):
            keep.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                    momentum: float = 0.9, nesterov: bool = False, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW over ``decay_groups``."""
    groups = decay_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise AugforgeError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
