"""The colour algebra of the ``color`` and ``normalize`` ops: one affine map per pixel.

A colour draw (brightness, contrast, saturation, hue) is ``x -> M x + T`` on 0..255 RGB; ``colour_matrix``
is the numpy reference, ``colour_map`` the same as DALI nodes (one draw per sample). The DALI ops, the fused
CPU kernel (``augforge.augment.fused_cpu``) and the torch ops (``augforge.augment.torch_ops``) all use it.
"""

from __future__ import annotations

import math

import numpy as np

from augforge.augment.draws import per_sample, uniform

#: the grey level's weights (ITU-R BT.601) and the RGB -> YIQ matrix
GRAY = np.array([0.299, 0.587, 0.114])
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_basis() -> np.ndarray:
    """(9, 6) matrix B such that the colour matrix (row-major) is ``B @ [1, s, cos h, s cos h, sin h, s sin h]``.

    Saturation ``s`` blends each pixel with its grey level (``s I + (1 - s) 1 w^T``); hue ``h`` rotates
    the chroma plane of YIQ space around the grey axis. Both are linear in those six terms.
    """
    inv = np.linalg.inv(YIQ)
    luma = inv @ np.diag([1.0, 0.0, 0.0]) @ YIQ
    chroma = inv @ np.diag([0.0, 1.0, 1.0]) @ YIQ
    turn = inv @ np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]) @ YIQ
    grey = np.outer(np.ones(3), GRAY)
    colour = np.eye(3) - grey
    terms = [luma @ grey, luma @ colour, chroma @ grey, chroma @ colour, turn @ grey, turn @ colour]
    return np.stack([t.reshape(9) for t in terms], axis=1)


def colour_matrix(brightness: float, contrast: float, saturation: float, hue: float) -> tuple[np.ndarray, np.ndarray]:
    """The affine map ``x -> M x + T`` (uint8 RGB in, 0..255 scale) of one colour draw (reference in numpy).

    Brightness multiplies, contrast scales around mid-grey 128, saturation and hue act on the chroma.
    """
    rad = np.deg2rad(hue)
    terms = np.array([1, saturation, np.cos(rad), saturation * np.cos(rad), np.sin(rad), saturation * np.sin(rad)])
    M = (colour_basis() @ terms).reshape(3, 3) * brightness * contrast
    return M, np.full(3, (1 - contrast) * 128.0)


def colour_map(fn, types, prm):
    """(M, T) of one colour draw per sample: DataNodes (3x3 and 3), or numpy arrays when every range is fixed."""
    from nvidia.dali import math as dmath

    draws = [uniform(fn, prm[k]) for k in ("brightness", "contrast", "saturation", "hue")]
    like = next((d for d in draws if not isinstance(d, float)), None)
    if like is None:  # fixed factors: a constant matrix
        return colour_matrix(*draws)
    b, c, sat, hue = draws
    rad = per_sample(hue, like) * (math.pi / 180.0)
    cos, sin, sat = dmath.cos(rad), dmath.sin(rad), per_sample(sat, like)
    terms = fn.reshape(fn.stack(per_sample(1.0, like), sat, cos, sat * cos, sin, sat * sin), shape=[1, 6])
    # (9 x 6) basis times the six terms, by broadcasting and a sum: the 9 entries of M
    entries = fn.reductions.sum(terms * types.Constant(colour_basis().astype(np.float32)), axes=[1])
    M = fn.reshape(entries * (per_sample(b, like) * c), shape=[3, 3])
    grey = (1.0 - per_sample(c, like)) * 128.0
    return M, fn.stack(grey, grey, grey)


def normalize_affine(prm, channels: int = 3) -> tuple[tuple, tuple]:
    """(scale, shift) per channel of normalize on 0..255 pixels: (x / 255 - mean) / std."""
    mean, std = np.asarray(prm["mean"], dtype=np.float64), np.asarray(prm["std"], dtype=np.float64)
    if channels == 1:
        mean, std = mean[:1], std[:1]
    mean, std = np.broadcast_to(mean, channels), np.broadcast_to(std, channels)
    return tuple(1.0 / (255.0 * std)), tuple(-mean / std)
