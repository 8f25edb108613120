"""The recipe's image ops in plain torch, on the CPU: the fallback for users who cannot install DALI.

The same op list and parameters as ``augforge.augment.image`` (DALI, the default), applied to one
uint8 CHW tensor at a time with a seeded ``torch.Generator``. The draws follow the same
distributions, but the pixels differ from DALI's (other kernels and random streams). The three policies
(TrivialAugment, RandAugment, AutoAugment's ImageNet policy) are ``augforge.augment.policy_torch``'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from augforge.augment.colour import colour_matrix
from augforge.augment.policy_torch import POLICY_FUNCTIONS, grey_of
from augforge.errors import AugforgeError


def _uniform(bounds, gen: torch.Generator) -> float:
    low, high = bounds
    return float(low) if low == high else float(low + (high - low) * torch.rand((), generator=gen))


def _resize(x: torch.Tensor, h: int, w: int, antialias: bool = True) -> torch.Tensor:
    out = F.interpolate(x[None].float(), size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
    return out[0]


def _window(x: torch.Tensor, top: int, left: int, h: int, w: int, fill: float) -> torch.Tensor:
    """The (h, w) window at (top, left), padded with ``fill`` where it leaves the image."""
    out = torch.full((x.shape[0], h, w), float(fill), dtype=x.dtype)
    H, W = x.shape[-2:]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, H), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = x[:, y0:y1, x0:x1]
    return out


def random_resized_crop(x, prm, gen):
    """torchvision's recipe: up to 10 draws of area share and log-aspect, else the central crop."""
    H, W = x.shape[-2:]
    area = H * W
    log_lo, log_hi = math.log(prm["ratio"][0]), math.log(prm["ratio"][1])
    for _ in range(10):
        target = area * _uniform(prm["scale"], gen)
        aspect = math.exp(_uniform((log_lo, log_hi), gen))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            top = int(torch.randint(0, H - h + 1, (), generator=gen))
            left = int(torch.randint(0, W - w + 1, (), generator=gen))
            break
    else:
        h, w = min(H, W), min(H, W)
        top, left = (H - h) // 2, (W - w) // 2
    return _resize(x[:, top : top + h, left : left + w], *prm["size"], antialias=prm["antialias"])


def random_crop(x, prm, gen):
    """A window at a random position (padded with ``fill`` where the image is smaller)."""
    h, w = prm["size"]
    H, W = x.shape[-2:]
    top = int(torch.randint(0, max(H - h, 0) + 1, (), generator=gen)) if H >= h else -((h - H) // 2)
    left = int(torch.randint(0, max(W - w, 0) + 1, (), generator=gen)) if W >= w else -((w - W) // 2)
    return _window(x, top, left, h, w, prm["fill"])


def center_crop(x, prm, gen):
    """The central window."""
    h, w = prm["size"]
    H, W = x.shape[-2:]
    return _window(x, (H - h) // 2, (W - w) // 2, h, w, prm["fill"])


def resize(x, prm, gen):
    """To [h, w], or the shorter side to ``size`` with ``keep_aspect``."""
    h, w = prm["size"]
    if prm["keep_aspect"]:
        H, W = x.shape[-2:]
        short = min(h, w)
        h, w = (short, round(W * short / H)) if H <= W else (round(H * short / W), short)
    return _resize(x, h, w)


def pad(x, prm, gen):
    """``padding`` pixels of ``fill`` on every side."""
    n = int(prm["padding"])
    return _window(x, -n, -n, x.shape[-2] + 2 * n, x.shape[-1] + 2 * n, prm["fill"])


def rotate(x, prm, gen):
    """By a random angle about the centre, canvas kept, ``fill`` outside (bilinear)."""
    if prm["expand"]:
        raise AugforgeError("rotate with expand has no torch fallback; drop expand or install DALI")
    angle = math.radians(_uniform(prm["degrees"], gen))
    H, W = x.shape[-2:]
    cos, sin = math.cos(angle), math.sin(angle)
    # output -> input coordinates in normalised units, aspect corrected
    theta = torch.tensor([[cos, -sin * H / W, 0.0], [sin * W / H, cos, 0.0]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, x.shape[0], H, W], align_corners=False)
    img = torch.cat([x.float(), torch.ones(1, H, W)])[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    inside = out[-1:]
    return out[:-1] + (1 - inside) * float(prm["fill"])


def hflip(x, prm, gen):
    """Mirror left-right."""
    return x.flip(-1)


def vflip(x, prm, gen):
    """Mirror top-bottom."""
    return x.flip(-2)


def color(x, prm, gen):
    """The same affine colour map as the DALI op (``colour_matrix``), clipped to 0..255."""
    draws = [_uniform(prm[k], gen) for k in ("brightness", "contrast", "saturation", "hue")]
    M, T = colour_matrix(*draws)
    M, T = torch.as_tensor(M, dtype=torch.float32), torch.as_tensor(T, dtype=torch.float32)
    return (torch.einsum("ck,khw->chw", M, x.float()) + T[:, None, None]).clamp(0, 255)


def grayscale(x, prm, gen):
    """Grey levels, three channels kept."""
    return grey_of(x).expand(3, -1, -1).clone()


def gaussian_blur(x, prm, gen):
    """A separable Gaussian blur, random sigma, window ``kernel``, edges reflected."""
    sigma, k = _uniform(prm["sigma"], gen), int(prm["kernel"])
    k += 1 - k % 2
    t = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[0]
    img = F.pad(x.float()[None], (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    img = F.conv2d(img, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(img, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)[0]


def erase_window(x, top: float, left: float, h: float, w: float, fill: float):
    """``x`` (CHW) as float with the window at (top, left), ``h`` by ``w`` (rounded to whole pixels, clipped to the
    image), set to ``fill``."""
    out = x.float().clone()
    H, W = x.shape[-2:]
    y0, x0 = max(int(round(top)), 0), max(int(round(left)), 0)
    y1, x1 = min(int(round(top + h)), H), min(int(round(left + w)), W)
    out[:, y0:y1, x0:x1] = float(fill)
    return out


def random_erasing(x, prm, gen):
    """Erase a rectangle of random area share and aspect at a random place."""
    H, W = x.shape[-2:]
    side = math.sqrt(_uniform(prm["scale"], gen) * H * W)
    root = math.exp(_uniform((math.log(prm["ratio"][0]), math.log(prm["ratio"][1])), gen) / 2)
    h, w = min(side * root, H), min(side / root, W)
    return erase_window(x, float(torch.rand((), generator=gen)) * (H - h),
                        float(torch.rand((), generator=gen)) * (W - w),
                        h, w, prm["fill"])


def cutout(x, prm, gen):
    """Erase a square centred at a random point."""
    H, W = x.shape[-2:]
    s = float(prm["size"])
    return erase_window(x, float(torch.rand((), generator=gen)) * H - s / 2,
                        float(torch.rand((), generator=gen)) * W - s / 2,
                        s, s, prm["fill"])


def normalize(x, prm, gen):
    """(x / 255 - mean) / std, float32."""
    c = x.shape[0]
    mean = torch.tensor(prm["mean"], dtype=torch.float32)[:c] if len(prm["mean"]) >= c else \
        torch.tensor(prm["mean"] * c, dtype=torch.float32)[:c]
    std = torch.tensor(prm["std"], dtype=torch.float32)[:c] if len(prm["std"]) >= c else \
        torch.tensor(prm["std"] * c, dtype=torch.float32)[:c]
    return (x.float() / 255.0 - mean[:, None, None]) / std[:, None, None]


TORCH_OPS = {f.__name__: f for f in (random_resized_crop, random_crop, center_crop, resize, pad, rotate, hflip, vflip,
                                     color, grayscale, gaussian_blur, random_erasing, cutout, normalize)}
TORCH_OPS.update(POLICY_FUNCTIONS)


class TorchAugment:
    """The op list as a callable ``(uint8 CHW tensor, torch.Generator) -> tensor``.

    uint8 in, uint8 out (rounded and clipped), or float32 after ``normalize``.
    """

    def __init__(self, ops) -> None:
        self.ops = tuple(ops)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = x
        for op in self.ops:
            if op.p >= 1.0 or float(torch.rand((), generator=gen)) < op.p:
                out = TORCH_OPS[op.name](out, op.params, gen)
        if out.dtype != torch.uint8 and not (self.ops and self.ops[-1].name == "normalize"):
            out = out.round().clamp(0, 255).to(torch.uint8)
        return out
