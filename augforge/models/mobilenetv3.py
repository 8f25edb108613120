"""MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019), Small and Large.

Inverted residual blocks (1x1 expand, depthwise kxk, optional squeeze-and-excitation, 1x1
project, residual when shapes allow), hard-swish in the later layers, a 1x1 conv to 6x the last
block's channels, global pooling and a two-layer head. ``alpha`` scales every channel count
(rounded to multiples of 8); as in the authors' TensorFlow reference, the head's width (1024 /
1280) is only scaled for alpha > 1. ``minimalistic`` drops SE and hard-swish and uses 3x3 kernels
everywhere. Stages are split where the resolution halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from augforge.models.registry import register_model
from augforge.models.convnet import ConvClassifier, with_attention
from augforge.models.layers import ConvNormAct, SqueezeExcite, activation, make_divisible

#: The reference implementations' BatchNorm settings (TensorFlow's defaults).
BN = {"bn_eps": 0.001, "bn_momentum": 0.01}


@dataclass(frozen=True)
class Bneck:
    """One inverted residual block of the paper's tables: kernel, expansion, output, SE, activation, stride."""

    kernel: int
    expand: int
    out: int
    se: bool
    act: str
    stride: int


# Table 1 of the paper (Large) and Table 2 (Small); "RE" = relu, "HS" = hswish.
LARGE = [
    Bneck(3, 16, 16, False, "relu", 1), Bneck(3, 64, 24, False, "relu", 2), Bneck(3, 72, 24, False, "relu", 1),
    Bneck(5, 72, 40, True, "relu", 2), Bneck(5, 120, 40, True, "relu", 1), Bneck(5, 120, 40, True, "relu", 1),
    Bneck(3, 240, 80, False, "hswish", 2), Bneck(3, 200, 80, False, "hswish", 1),
    Bneck(3, 184, 80, False, "hswish", 1), Bneck(3, 184, 80, False, "hswish", 1),
    Bneck(3, 480, 112, True, "hswish", 1), Bneck(3, 672, 112, True, "hswish", 1),
    Bneck(5, 672, 160, True, "hswish", 2), Bneck(5, 960, 160, True, "hswish", 1),
    Bneck(5, 960, 160, True, "hswish", 1),
]
SMALL = [
    Bneck(3, 16, 16, True, "relu", 2), Bneck(3, 72, 24, False, "relu", 2), Bneck(3, 88, 24, False, "relu", 1),
    Bneck(5, 96, 40, True, "hswish", 2), Bneck(5, 240, 40, True, "hswish", 1), Bneck(5, 240, 40, True, "hswish", 1),
    Bneck(5, 120, 48, True, "hswish", 1), Bneck(5, 144, 48, True, "hswish", 1),
    Bneck(5, 288, 96, True, "hswish", 2), Bneck(5, 576, 96, True, "hswish", 1),
    Bneck(5, 576, 96, True, "hswish", 1),
]


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when expand == in), depthwise kxk, SE, 1x1 linear projection, residual."""

    def __init__(self, in_ch: int, kernel: int, exp_ch: int, out_ch: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp_ch != in_ch:
            layers.append(ConvNormAct(in_ch, exp_ch, 1, act=act, **BN))
        layers.append(ConvNormAct(exp_ch, exp_ch, kernel, stride, groups=exp_ch, act=act, **BN))
        if se:
            layers.append(SqueezeExcite(exp_ch, make_divisible(exp_ch // 4, 8)))
        layers.append(ConvNormAct(exp_ch, out_ch, 1, act="identity", **BN))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


def _mobilenet_v3(table: list[Bneck], head_width: int, num_classes: int, in_channels: int, alpha: float,
                  minimalistic: bool, dropout: float) -> ConvClassifier:
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    scale = lambda ch: make_divisible(ch * alpha, 8)  # noqa: E731
    hard = "relu" if minimalistic else "hswish"
    stem_ch = scale(16)
    stages: list[list[nn.Module]] = [[ConvNormAct(in_channels, stem_ch, 3, 2, act=hard, **BN)]]
    channels = [stem_ch]
    previous = stem_ch
    for spec in table:
        kernel, se, act = (3, False, "relu") if minimalistic else (spec.kernel, spec.se, spec.act)
        block = InvertedResidual(previous, kernel, scale(spec.expand), scale(spec.out), se, act, spec.stride)
        if spec.stride == 2:
            stages.append([])
            channels.append(0)
        stages[-1].append(block)
        previous = channels[-1] = scale(spec.out)
    last_conv = 6 * previous
    stages[-1].append(ConvNormAct(previous, last_conv, 1, act=hard, **BN))
    channels[-1] = last_conv
    width = make_divisible(head_width * alpha, 8) if alpha > 1.0 else head_width
    head = nn.Sequential(nn.Linear(last_conv, width), activation(hard), nn.Dropout(dropout),
                         nn.Linear(width, num_classes))
    model = ConvClassifier([nn.Sequential(*s) for s in stages], channels, head, num_classes)
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    """The reference initialisation: Kaiming-normal (fan out) convs, unit BN, N(0, 0.01) linears."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


@register_model
def mobilenet_v3_small(num_classes: int, in_channels: int = 3, alpha: float = 1.0, minimalistic: bool = False,
                       dropout: float = 0.2, attention_after: Sequence[int] | None = None,
                       attention_heads: int | None = None, attention_mlp_ratio: float = 2.0) -> ConvClassifier:
    """MobileNetV3-Small: 2.54 M parameters at alpha 1.0 and 1,000 classes, about 56 M MACs at 224x224."""
    model = _mobilenet_v3(SMALL, 1024, num_classes, in_channels, alpha, minimalistic, dropout)
    return with_attention(model, attention_after, attention_heads, attention_mlp_ratio)


@register_model
def mobilenet_v3_large(num_classes: int, in_channels: int = 3, alpha: float = 1.0, minimalistic: bool = False,
                       dropout: float = 0.2, attention_after: Sequence[int] | None = None,
                       attention_heads: int | None = None, attention_mlp_ratio: float = 2.0) -> ConvClassifier:
    """MobileNetV3-Large: 5.48 M parameters at alpha 1.0 and 1,000 classes, about 217 M MACs at 224x224."""
    model = _mobilenet_v3(LARGE, 1280, num_classes, in_channels, alpha, minimalistic, dropout)
    return with_attention(model, attention_after, attention_heads, attention_mlp_ratio)
