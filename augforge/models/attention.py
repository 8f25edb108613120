"""A transformer block over a conv feature map, insertable after any stage of a conv model."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from augforge.errors import AugforgeError


def sincos_2d(height: int, width: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes, (height*width, dim): half the channels code the row, half the column.

    Being a function of the grid, they work at any input size (no learned table to interpolate).
    """
    if dim % 4:
        raise AugforgeError(f"attention needs a channel count divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    y = ys.reshape(-1, 1) * omega
    x = xs.reshape(-1, 1) * omega
    codes = torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)
    return codes.to(dtype) if dtype is not None else codes


class TransformerBlock2d(nn.Module):
    """Pre-norm transformer block on a (B, C, H, W) map seen as H*W tokens of C channels.

    ``x + MHSA(LN(x))`` with the 2-D position codes added to queries and keys, then
    ``x + MLP(LN(x))``; the output has the input's shape, so it drops in after any stage.
    """

    def __init__(self, channels: int, heads: int | None = None, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % 4:
            raise AugforgeError(f"attention needs a channel count divisible by 4, got {channels}")
        heads = heads or next(h for h in (8, 4, 2, 1) if channels % h == 0)
        if channels % heads:
            raise AugforgeError(f"attention heads ({heads}) must divide the channels ({channels})")
        hidden = int(channels * mlp_ratio)
        self.channels = channels
        self.norm1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, channels), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        normed = self.norm1(tokens)
        qk = normed + sincos_2d(h, w, c, x.device, normed.dtype)
        tokens = tokens + self.attn(qk, qk, normed, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)  # an NHWC-strided view: no copy


def add_attention(model: nn.Module, after: Sequence[int], heads: int | None = None, mlp_ratio: float = 2.0,
                  dropout: float = 0.0) -> nn.Module:
    """Insert a TransformerBlock2d after the chosen stages (negative indices count from the end).

    The model must expose ``stages`` (a Sequential) and ``stage_channels`` (each stage's output channels),
    as every conv model in this registry does.
    """
    if not hasattr(model, "stages") or not hasattr(model, "stage_channels"):
        raise AugforgeError(f"{type(model).__name__} has no conv stages to put attention after")
    count = len(model.stages)
    chosen = set()
    for index in after:
        if not -count <= index < count:
            raise AugforgeError(f"attention_after: stage {index} does not exist; the model has {count} stages "
                                f"(0..{count - 1}, or -1..-{count})")
        chosen.add(index % count)
    for index in sorted(chosen):
        block = TransformerBlock2d(model.stage_channels[index], heads, mlp_ratio, dropout)
        model.stages[index] = nn.Sequential(model.stages[index], block)
    return model
