"""An MLP for feature datasets (tabular columns or embeddings)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from augforge.models.registry import register_model
from augforge.models.layers import ClassifierMixin


class MLP(ClassifierMixin, nn.Module):
    """Linear-BatchNorm-ReLU-Dropout blocks, then a linear head."""

    input_kind = "features"

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int], dropout: float, norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width, bias=not norm), *([nn.BatchNorm1d(width)] if norm else []),
                       nn.ReLU(inplace=True), nn.Dropout(dropout)]
            previous = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(previous, num_classes)
        self.in_features = in_features
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@register_model
def mlp(num_classes: int, in_channels: int = 3, in_features: int | None = None, hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1, norm: bool = True) -> MLP:
    """MLP over ``in_features`` inputs (``in_channels`` is taken as the feature count when it is not given)."""
    return MLP(num_classes, in_features or in_channels, hidden, dropout, norm)
