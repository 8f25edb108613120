"""Building blocks shared by the conv models: conv-norm-activation, squeeze-and-excitation, channel rounding."""

from __future__ import annotations

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "hsigmoid": nn.Hardsigmoid,
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """An activation module by name: relu, hswish, hsigmoid, gelu, silu or identity."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + activation, 'same' padding; BN defaults are PyTorch's."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "relu", bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum),
            activation(act),
        )
        self.out_channels = out_ch


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid, rescale."""

    def __init__(self, channels: int, squeeze: int, gate: str = "hsigmoid") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = activation(gate)

    def forward(self, x):
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class ClassifierMixin:
    """Models keep their classifier in ``self.head``; everything else is the backbone."""

    head: nn.Module

    def reset_head(self, num_classes: int) -> None:
        """Replace the last Linear of the head with a fresh one for ``num_classes`` outputs."""
        head = self.head
        if isinstance(head, nn.Linear):
            self.head = nn.Linear(head.in_features, num_classes)
        else:
            last = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
            head[last] = nn.Linear(head[last].in_features, num_classes)
        self.num_classes = num_classes
