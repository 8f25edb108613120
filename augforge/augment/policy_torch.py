"""AutoAugment's ImageNet policy, RandAugment and TrivialAugment Wide in plain torch: the policies without DALI.

The op suites, magnitude ranges and the ImageNet sub-policies are those of ``nvidia.dali.auto_aug`` (the
default backend), so a policy means the same on both backends; the pixels differ (other kernels and random
streams). Each primitive takes a float CHW image on the 0..255 scale and returns it rounded and clipped, as
DALI's uint8 ops do, and works on grey (one channel) as well as colour images. A magnitude bin ``k`` of
``bins`` is the value ``linspace(low, high, bins)[k]``, negated with probability 1/2 where the op is signed.
docs/policies.md gives the table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from augforge.augment.colour import GRAY


def grey_of(x: torch.Tensor) -> torch.Tensor:
    """A CHW image's grey levels (ITU-R BT.601 luma, ``colour.GRAY``) as one channel, float; a grey image as
    it is."""
    if x.shape[0] == 1:
        return x.float()
    return (torch.tensor(GRAY, dtype=torch.float32)[:, None, None] * x.float()).sum(0, keepdim=True)


def _warp(x: torch.Tensor, inverse, center, shift, fill: float) -> torch.Tensor:
    """Resample ``x`` where each output pixel (u, v) reads the input at ``inverse @ ((u, v) - center) + center
    - shift`` (pixel units, bilinear), ``fill`` outside."""
    c, H, W = x.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5,
                          indexing="ij")
    du, dv = u - center[0], v - center[1]
    a = inverse
    src_u = a[0][0] * du + a[0][1] * dv + center[0] - shift[0]
    src_v = a[1][0] * du + a[1][1] * dv + center[1] - shift[1]
    grid = torch.stack([src_u / W * 2 - 1, src_v / H * 2 - 1], dim=-1)[None]
    img = torch.cat([x.float(), torch.ones(1, H, W)])[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:-1] + (1 - out[-1:]) * fill


def shear_x(x, s, fill):
    """x' = x + s·y about the top-left corner (DALI's ``transforms.shear``)."""
    return _warp(x, ((1.0, -s), (0.0, 1.0)), (0.0, 0.0), (0.0, 0.0), fill)


def shear_y(x, s, fill):
    """y' = y + s·x about the top-left corner."""
    return _warp(x, ((1.0, 0.0), (-s, 1.0)), (0.0, 0.0), (0.0, 0.0), fill)


def translate_x(x, rel, fill):
    """Shift right by ``rel`` of the width (left when negative)."""
    return _warp(x, ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0), (rel * x.shape[2], 0.0), fill)


def translate_y(x, rel, fill):
    """Shift down by ``rel`` of the height."""
    return _warp(x, ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0), (0.0, rel * x.shape[1]), fill)


def rotate(x, degrees, fill):
    """About the centre, canvas kept, in the direction of augforge's ``rotate`` op."""
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    return _warp(x, ((cos, -sin), (sin, cos)), (x.shape[2] / 2, x.shape[1] / 2), (0.0, 0.0), fill)


def brightness(x, factor, fill):
    """Multiply by ``factor``."""
    return x * factor


def contrast(x, factor, fill):
    """Scale about the image's mean grey level (PIL's contrast centre)."""
    center = grey_of(x).mean()
    return center + (x - center) * factor


def color(x, factor, fill):
    """Blend with the image's grey version (saturation; nothing to do on a grey image)."""
    grey = grey_of(x)
    return grey + (x - grey) * factor


def sharpness(x, m, fill):
    """The PIL smoothing kernel blended with identity: -m·blur + (1 + m)·identity, edges mirrored."""
    blur = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1.0
    kernel = (-m * blur + (1 + m) * ident).expand(x.shape[0], 1, 3, 3)
    return F.conv2d(F.pad(x[None], (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[0])[0]


def posterize(x, keep_bits, fill):
    """Keep the top ``keep_bits`` bits (at least 1, at most 8)."""
    keep = min(max(int(round(keep_bits)), 1), 8)
    mask = 255 ^ (2 ** (8 - keep) - 1)
    return (x.round().clamp(0, 255).to(torch.uint8) & mask).float()


def solarize(x, threshold, fill):
    """Invert the pixels at or above ``threshold``."""
    return torch.where(x < threshold, x, 255 - x)


def solarize_add(x, shift, fill):
    """Add ``shift`` to the pixels below 128."""
    return torch.where(x < 128, x + int(shift), x)


def invert(x, _, fill):
    """255 − x."""
    return 255 - x


def equalize(x, _, fill):
    """Histogram equalisation per channel (OpenCV's formula, as DALI's ``equalize``)."""
    out = torch.empty_like(x)
    for c in range(x.shape[0]):
        channel = x[c].round().clamp(0, 255).long()
        hist = torch.bincount(channel.flatten(), minlength=256)
        cdf = hist.cumsum(0)
        first = cdf[hist > 0][0]
        total = channel.numel()
        if total == first:
            out[c] = channel.float()
            continue
        lut = ((cdf - first).clamp(min=0).float() * 255 / (total - first)).round()
        out[c] = lut[channel]
    return out


def auto_contrast(x, _, fill):
    """Stretch each channel to 0..255 (unchanged where it is flat)."""
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    scale = torch.where(hi > lo, 255 / (hi - lo).clamp(min=1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def identity(x, _, fill):
    """The image as it is."""
    return x


def _enhance(value: float) -> float:
    return 1.0 + value


def _sharp(value: float) -> float:
    return value


#: (op, magnitude range or None, signed, magnitude -> parameter); ranges as nvidia.dali.auto_aug's suites
def _suite(translate: float, shear: float, degrees: float, enhance: tuple, poster: tuple) -> list:
    return [(translate_x, (0.0, translate), True, None), (translate_y, (0.0, translate), True, None),
            (shear_x, (0.0, shear), True, None), (shear_y, (0.0, shear), True, None),
            (rotate, (0.0, degrees), True, None), (brightness, enhance, True, _enhance),
            (contrast, enhance, True, _enhance), (color, enhance, True, _enhance),
            (sharpness, enhance, True, _sharp), (posterize, poster, False, None),
            (solarize, (256.0, 0.0), False, None), (equalize, None, False, None),
            (auto_contrast, None, False, None), (identity, None, False, None)]


TRIVIAL_WIDE = _suite(1.0, 0.99, 135.0, (0.01, 0.99), (8.0, 2.0))
RAND = _suite(100 / 224, 0.3, 30.0, (0.0, 0.9), (8.0, 4.0))
#: AutoAugment's ImageNet policy as nvidia.dali.auto_aug has it: 11 bins, 25 sub-policies of (op, p, bin)
AA_BINS = 11
AA_OPS = {"shear_x": (shear_x, (0.0, 0.3), True, None), "shear_y": (shear_y, (0.0, 0.3), True, None),
          "translate_y": (translate_y, (0.0, 1.0), True, None), "rotate": (rotate, (0.0, 30.0), True, None),
          "color": (color, (0.1, 1.9), False, None), "posterize": (posterize, (0.0, 4.0), False, None),
          "solarize": (solarize, (0.0, 256.0), False, None), "solarize_add": (solarize_add, (0.0, 110.0), False, None),
          "invert": (invert, None, False, None), "equalize": (equalize, None, False, None),
          "auto_contrast": (auto_contrast, None, False, None)}
IMAGENET_POLICY = (
    (("equalize", 0.8, None), ("shear_y", 0.8, 4)), (("color", 0.4, 9), ("equalize", 0.6, None)),
    (("color", 0.4, 1), ("rotate", 0.6, 8)), (("solarize", 0.8, 3), ("equalize", 0.4, None)),
    (("solarize", 0.4, 2), ("solarize", 0.6, 2)), (("color", 0.2, 0), ("equalize", 0.8, None)),
    (("equalize", 0.4, None), ("solarize_add", 0.8, 3)), (("shear_x", 0.2, 9), ("rotate", 0.6, 8)),
    (("color", 0.6, 1), ("equalize", 1.0, None)), (("invert", 0.4, None), ("rotate", 0.6, 0)),
    (("equalize", 1.0, None), ("shear_y", 0.6, 3)), (("color", 0.4, 7), ("equalize", 0.6, None)),
    (("posterize", 0.4, 6), ("auto_contrast", 0.4, None)), (("solarize", 0.6, 8), ("color", 0.6, 9)),
    (("solarize", 0.2, 4), ("rotate", 0.8, 9)), (("rotate", 1.0, 7), ("translate_y", 0.8, 9)),
    (("solarize", 0.8, 4),), (("shear_y", 0.8, 0), ("color", 0.6, 4)),
    (("color", 1.0, 0), ("rotate", 0.6, 2)), (("equalize", 0.8, None),),
    (("equalize", 1.0, None), ("auto_contrast", 0.6, None)), (("shear_y", 0.4, 7), ("solarize_add", 0.6, 7)),
    (("posterize", 0.8, 2), ("solarize", 0.6, 10)), (("solarize", 0.6, 8), ("equalize", 0.6, None)),
    (("color", 0.8, 6), ("rotate", 0.4, 5)),
)


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _pick(n: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, n, (), generator=gen))


def apply_op(x: torch.Tensor, entry, magnitude: float, bins: int, gen: torch.Generator, fill: float) -> torch.Tensor:
    """One suite entry at magnitude bin ``magnitude`` (a float bin is interpolated) of ``bins``; rounded and
    clipped to 0..255."""
    op, span, signed, to_param = entry
    value = 0.0
    if span is not None:
        low, high = span
        value = low + (high - low) * magnitude / max(bins - 1, 1)
        if signed and _rand(gen) < 0.5:
            value = -value
        if to_param is not None:
            value = to_param(value)
    return op(x.float(), value, fill).round().clamp(0, 255)


def trivial_augment(x, prm, gen):
    """TrivialAugment Wide: one op of the wide suite at a uniformly drawn magnitude bin."""
    bins = int(prm["bins"])
    entry = TRIVIAL_WIDE[_pick(len(TRIVIAL_WIDE), gen)]
    return apply_op(x, entry, _pick(bins, gen), bins, gen, float(prm["fill"]))


def rand_augment(x, prm, gen):
    """RandAugment: ``n`` ops of the suite (drawn with replacement) at magnitude ``m``; with ``mstd`` > 0 each
    op's magnitude is drawn from N(m, mstd), clipped to the bins (timm's magnitude noise)."""
    bins, m, mstd = int(prm["bins"]), float(prm["m"]), float(prm.get("mstd", 0.0))
    out = x
    for _ in range(int(prm["n"])):
        entry = RAND[_pick(len(RAND), gen)]
        magnitude = m
        if mstd > 0:
            magnitude = min(max(m + mstd * float(torch.randn((), generator=gen)), 0.0), bins - 1.0)
        out = apply_op(out, entry, magnitude, bins, gen, float(prm["fill"]))
    return out


def auto_augment(x, prm, gen):
    """AutoAugment's ImageNet policy: one sub-policy drawn uniformly, each of its ops applied with its
    probability at its magnitude bin."""
    out = x
    for name, p, magnitude in IMAGENET_POLICY[_pick(len(IMAGENET_POLICY), gen)]:
        if _rand(gen) < p:
            out = apply_op(out, AA_OPS[name], 0 if magnitude is None else magnitude, AA_BINS, gen,
                           float(prm["fill"]))
    return out


POLICY_FUNCTIONS = {f.__name__: f for f in (trivial_augment, rand_augment, auto_augment)}
