"""The classic baseline: three conv + pool stages and a dense head with dropout."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from augforge.models.registry import register_model
from augforge.models.convnet import ConvClassifier, with_attention
from augforge.models.layers import ConvNormAct


@register_model
def simple_cnn(num_classes: int, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128), hidden: int = 256,
               dropout: float = 0.3, attention_after: Sequence[int] | None = None, attention_heads: int | None = None,
               attention_mlp_ratio: float = 2.0) -> ConvClassifier:
    """Stages of two 3x3 conv-BN-ReLU layers and a 2x2 max-pool; head: Linear-ReLU-Dropout-Linear.

    Each stage halves the resolution, so inputs from 8x8 (the digits) upward work.
    """
    stages, channels, previous = [], [], in_channels
    for width in widths:
        stages.append(nn.Sequential(ConvNormAct(previous, width), ConvNormAct(width, width), nn.MaxPool2d(2)))
        channels.append(width)
        previous = width
    head = nn.Sequential(nn.Linear(previous, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))
    model = ConvClassifier(stages, channels, head, num_classes)
    return with_attention(model, attention_after, attention_heads, attention_mlp_ratio)
