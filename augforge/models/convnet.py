"""Conv classifiers share one shape: ``stages`` (a Sequential), global pooling, then ``head``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from augforge.models.attention import add_attention
from augforge.models.layers import ClassifierMixin


class ConvClassifier(ClassifierMixin, nn.Module):
    """``stages`` -> adaptive average pool -> ``head``; ``stage_channels`` lists each stage's output channels."""

    input_kind = "image"

    def __init__(self, stages: Sequence[nn.Module], stage_channels: Sequence[int], head: nn.Module,
                 num_classes: int) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.stage_channels = list(stage_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map."""
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.forward_features(x)), 1))


def with_attention(model: ConvClassifier, attention_after: Sequence[int] | None, attention_heads: int | None,
                   attention_mlp_ratio: float) -> ConvClassifier:
    """Apply the ``attention_after`` option every conv model builder takes."""
    if attention_after:
        add_attention(model, attention_after, attention_heads, attention_mlp_ratio)
    return model
