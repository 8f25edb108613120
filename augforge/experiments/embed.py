"""Embeddings of a dataset's rows from a local augforge checkpoint, for ``augforge audit --embed MODEL``.

A row's embedding is what the model's classifier (its head's last Linear) receives: the penultimate
features, computed with the checkpoint's own preprocessing (``checkpoint_model_and_loader``), in the
split's storage order. The checkpoint's classes need not be the data's: a model trained on other data
embeds these rows as well as it can, and only the payload (and a feature table's width) must fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from augforge.train.decouple import classifier_of
from augforge.train.loop import collect_logits
from augforge.train.restore import checkpoint_model_and_loader


def checkpoint_embedder(checkpoint: str | Path, device="auto"):
    """A function (dataset directory, split) -> (rows, features) float32 embeddings under ``checkpoint``; it
    says what it is in its ``description``."""
    checkpoint = Path(checkpoint)

    def embed(data: str | Path, split: str) -> np.ndarray:
        model, loader, _, _, placement = checkpoint_model_and_loader(checkpoint, data, split, device,
                                                                    check_classes=False)
        captured: list[torch.Tensor] = []
        hook = classifier_of(model).register_forward_pre_hook(lambda _, inputs: captured.append(
            inputs[0].detach().float().flatten(1).cpu()))
        try:
            collect_logits(model, loader, placement.torch)  # the forward passes; the hook keeps the features
        finally:
            hook.remove()
        return torch.cat(captured).numpy()

    embed.description = f"the penultimate features of {checkpoint}"
    return embed
