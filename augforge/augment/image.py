"""Image ops on NVIDIA DALI: a declarative op list compiled into one DALI pipeline.

Each op is a small function from a DALI ``DataNode`` to a ``DataNode``. Every op takes a
probability ``p``; below 1 it runs inside a DALI conditional, so it applies to a random subset
of each batch. Ops DALI does not have (grayscale, random erasing, padding on every side) are
built from DALI ops, never as a Python loop over images.

Devices: ``cpu`` runs DALI in CPU-only mode (``device_id=None``); ``gpu`` decodes with the
``mixed`` decoder and runs every op on the GPU; ``auto`` picks ``gpu`` when a CUDA device is
present. The op table, with each parameter, is in docs/recipes.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from augforge.errors import AugforgeError

REQUIRED = object()
#: bumped whenever the pixels an op list makes change (it is part of a build's fingerprint, beside DALI's version)
OPS_VERSION = 2  # 2: the fused CPU kernel


@dataclass(frozen=True)
class Param:
    """A parameter of an op: how it is checked (a ``Checker`` method and its arguments) and its default."""

    kind: str
    default: object = REQUIRED
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpDef:
    """An image op: its parameters, its DALI graph, and what it needs."""

    name: str
    params: dict
    build: Callable
    rgb: bool = False  # needs three channels
    float_output: bool = False  # produces float pixels (normalize): last, and not for encoded shards
    own_coin: bool = False  # draws its own per-sample coin for p (no DALI conditional needed)
    summary: str = ""


def _span(low=None, high=None, symmetric=False, default=REQUIRED) -> Param:
    return Param("span", default, {"low": low, "high": high, "symmetric": symmetric})


def _uniform(fn, bounds: tuple[float, float]):
    """A per-sample uniform draw in ``bounds``, or the constant when the bounds are equal."""
    low, high = bounds
    return float(low) if low == high else fn.random.uniform(range=[float(low), float(high)])


def _fill(params: dict) -> float:
    return float(params["fill"])


def _random_resized_crop(fn, types, img, prm, ctx):
    h, w = prm["size"]
    return fn.random_resized_crop(img, device=ctx.op_device, size=[h, w], random_area=list(prm["scale"]),
                                  random_aspect_ratio=list(prm["ratio"]), antialias=prm["antialias"])


def _random_crop(fn, types, img, prm, ctx):
    h, w = prm["size"]
    return fn.crop(img, device=ctx.op_device, crop=[h, w], crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
                   crop_pos_y=fn.random.uniform(range=[0.0, 1.0]), out_of_bounds_policy="pad",
                   fill_values=_fill(prm))


def _center_crop(fn, types, img, prm, ctx):
    h, w = prm["size"]
    return fn.crop(img, device=ctx.op_device, crop=[h, w], out_of_bounds_policy="pad", fill_values=_fill(prm))


def _resize(fn, types, img, prm, ctx):
    h, w = prm["size"]
    if prm["keep_aspect"]:
        return fn.resize(img, device=ctx.op_device, resize_shorter=float(min(h, w)), antialias=True)
    return fn.resize(img, device=ctx.op_device, resize_x=float(w), resize_y=float(h), antialias=True)


def _pad(fn, types, img, prm, ctx):
    n = float(prm["padding"])
    shape = img.shape(dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    start = fn.cast(fn.stack(height * 0.0 - n, width * 0.0 - n), dtype=types.INT32)
    size = fn.cast(fn.stack(height + 2.0 * n, width + 2.0 * n), dtype=types.INT32)
    return fn.slice(img, start, size, device=ctx.op_device, axis_names="HW", out_of_bounds_policy="pad",
                    fill_values=_fill(prm))


def _rotate(fn, types, img, prm, ctx):
    angle = _uniform(fn, prm["degrees"])
    if prm["expand"]:
        return fn.rotate(img, device=ctx.op_device, angle=angle, fill_value=_fill(prm))
    return fn.rotate(img, device=ctx.op_device, angle=angle, fill_value=_fill(prm), keep_size=True)


def _coin(fn, types, p: float):
    return 1 if p >= 1.0 else fn.random.coin_flip(probability=p, dtype=types.INT32)


def _hflip(fn, types, img, prm, ctx):
    return fn.flip(img, device=ctx.op_device, horizontal=_coin(fn, types, prm["p"]), vertical=0)


def _vflip(fn, types, img, prm, ctx):
    return fn.flip(img, device=ctx.op_device, horizontal=0, vertical=_coin(fn, types, prm["p"]))


_GRAY = np.array([0.299, 0.587, 0.114])
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_basis() -> np.ndarray:
    """(9, 6) matrix B such that the colour matrix (row-major) is ``B @ [1, s, cos h, s cos h, sin h, s sin h]``.

    Saturation ``s`` blends each pixel with its grey level (``s I + (1 - s) 1 w^T``); hue ``h`` rotates
    the chroma plane of YIQ space around the grey axis. Both are linear in those six terms.
    """
    inv = np.linalg.inv(_YIQ)
    luma = inv @ np.diag([1.0, 0.0, 0.0]) @ _YIQ
    chroma = inv @ np.diag([0.0, 1.0, 1.0]) @ _YIQ
    turn = inv @ np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]) @ _YIQ
    grey = np.outer(np.ones(3), _GRAY)
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


def _node(value, like):
    """``value`` as a per-sample DataNode (``like`` is any DataNode of the graph)."""
    return value if not isinstance(value, (int, float)) else like * 0.0 + float(value)


def _colour_map(fn, types, prm):
    """(M, T) of one colour draw per sample: DataNodes (3x3 and 3), or numpy arrays when every range is fixed."""
    from nvidia.dali import math as dmath

    draws = [_uniform(fn, prm[k]) for k in ("brightness", "contrast", "saturation", "hue")]
    like = next((d for d in draws if not isinstance(d, float)), None)
    if like is None:  # fixed factors: a constant matrix
        return colour_matrix(*draws)
    b, c, sat, hue = draws
    rad = _node(hue, like) * (math.pi / 180.0)
    cos, sin, sat = dmath.cos(rad), dmath.sin(rad), _node(sat, like)
    terms = fn.reshape(fn.stack(_node(1.0, like), sat, cos, sat * cos, sin, sat * sin), shape=[1, 6])
    # (9 x 6) basis times the six terms, by broadcasting and a sum: the 9 entries of M
    entries = fn.reductions.sum(terms * types.Constant(colour_basis().astype(np.float32)), axes=[1])
    M = fn.reshape(entries * (_node(b, like) * c), shape=[3, 3])
    grey = (1.0 - _node(c, like)) * 128.0
    return M, fn.stack(grey, grey, grey)


def _color(fn, types, img, prm, ctx):
    # colour jitter as one per-pixel affine map, saturated to uint8
    M, T = _colour_map(fn, types, prm)
    if isinstance(M, np.ndarray):
        M, T = M.astype(np.float32).ravel().tolist(), T.astype(np.float32).tolist()
    return fn.coord_transform(img, device=ctx.op_device, M=M, T=T, dtype=types.UINT8)


def _normalize_affine(prm, channels: int = 3) -> tuple[tuple, tuple]:
    """(scale, shift) per channel of normalize on 0..255 pixels: (x / 255 - mean) / std."""
    mean, std = np.asarray(prm["mean"], dtype=np.float64), np.asarray(prm["std"], dtype=np.float64)
    if channels == 1:
        mean, std = mean[:1], std[:1]
    mean, std = np.broadcast_to(mean, channels), np.broadcast_to(std, channels)
    return tuple(1.0 / (255.0 * std)), tuple(-mean / std)


def _grayscale(fn, types, img, prm, ctx):
    # DALI has no grayscale op that keeps three channels: saturation 0 in HSV space is one
    return fn.hsv(img, device=ctx.op_device, saturation=0.0)


def _gaussian_blur(fn, types, img, prm, ctx):
    return fn.gaussian_blur(img, device=ctx.op_device, sigma=_uniform(fn, prm["sigma"]),
                            window_size=int(prm["kernel"]))


def _random_erasing(fn, types, img, prm, ctx):
    # the torchvision recipe as a DALI graph: area share s ~ U(scale), log aspect r ~ U(log ratio)
    from nvidia.dali import math as dmath

    shape = img.shape(dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    area = _uniform(fn, prm["scale"])
    log_aspect = _uniform(fn, (math.log(prm["ratio"][0]), math.log(prm["ratio"][1])))
    # sqrt(aspect) = exp(log_aspect / 2), a constant when the ratio range is one value
    root = math.exp(log_aspect / 2) if isinstance(log_aspect, float) else dmath.exp(log_aspect * 0.5)
    side = dmath.sqrt(area * height * width)
    eh = dmath.min(side * root, height)
    ew = dmath.min(side / root, width)
    ay = fn.random.uniform(range=[0.0, 1.0]) * (height - eh)
    ax = fn.random.uniform(range=[0.0, 1.0]) * (width - ew)
    return fn.erase(img, device=ctx.op_device, anchor=fn.stack(ay, ax), shape=fn.stack(eh, ew), axis_names="HW",
                    fill_value=_fill(prm))


def _cutout(fn, types, img, prm, ctx):
    shape = img.shape(dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    size = float(prm["size"])
    ay = fn.random.uniform(range=[0.0, 1.0]) * height - size / 2
    ax = fn.random.uniform(range=[0.0, 1.0]) * width - size / 2
    return fn.erase(img, device=ctx.op_device, anchor=fn.stack(ay, ax), shape=[size, size], axis_names="HW",
                    fill_value=_fill(prm))


def _normalize(fn, types, img, prm, ctx):
    # one per-pixel affine map to float (HWC; the augmenter hands it over as CHW)
    scale, shift = _normalize_affine(prm, ctx.channels)
    return fn.coord_transform(img, device=ctx.op_device, M=np.diag(scale).astype(np.float32).ravel().tolist(),
                              T=list(np.float32(shift)), dtype=types.FLOAT)


def _auto_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import auto_augment

    return auto_augment.auto_augment_image_net(img, shape=img.shape(), fill_value=int(prm["fill"]))


def _rand_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import rand_augment

    return rand_augment.rand_augment(img, n=int(prm["n"]), m=int(prm["m"]), shape=img.shape(),
                                     num_magnitude_bins=int(prm["bins"]), fill_value=int(prm["fill"]))


def _trivial_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import trivial_augment

    return trivial_augment.trivial_augment_wide(img, shape=img.shape(), num_magnitude_bins=int(prm["bins"]),
                                                fill_value=int(prm["fill"]))


FILL = Param("number", 0, {"low": 0, "high": 255})
OPS: dict[str, OpDef] = {op.name: op for op in (
    OpDef("random_resized_crop", {"size": Param("size"), "scale": _span(0.0, 1.0, default=(0.08, 1.0)),
                                  "ratio": _span(0.01, 100.0, default=(3 / 4, 4 / 3)),
                                  "antialias": Param("flag", True)}, _random_resized_crop,
          summary="crop a random area share `scale` with aspect `ratio`, resized to `size`"),
    OpDef("random_crop", {"size": Param("size"), "fill": FILL}, _random_crop,
          summary="a `size` window at a random position (padded with `fill` where the image is smaller)"),
    OpDef("center_crop", {"size": Param("size"), "fill": FILL}, _center_crop, summary="the central `size` window"),
    OpDef("resize", {"size": Param("size"), "keep_aspect": Param("flag", False)}, _resize,
          summary="to `size` ([h, w]), or the shorter side to `size` with `keep_aspect`"),
    OpDef("pad", {"padding": Param("number", REQUIRED, {"low": 0, "high": 4096, "integer": True}), "fill": FILL},
          _pad, summary="`padding` pixels of `fill` on every side"),
    OpDef("rotate", {"degrees": _span(0, 360, symmetric=True), "fill": FILL, "expand": Param("flag", False)}, _rotate,
          summary="by a random angle in `degrees` (x means [-x, x]); `expand` grows the canvas"),
    OpDef("hflip", {}, _hflip, own_coin=True, summary="mirror left-right"),
    OpDef("vflip", {}, _vflip, own_coin=True, summary="mirror top-bottom"),
    OpDef("color", {"brightness": _span(0, 10, default=(1.0, 1.0)), "contrast": _span(0, 10, default=(1.0, 1.0)),
                    "saturation": _span(0, 10, default=(1.0, 1.0)), "hue": _span(-180, 180, default=(0.0, 0.0))},
          _color, rgb=True, summary="random brightness, contrast, saturation factors and hue shift (degrees)"),
    OpDef("grayscale", {}, _grayscale, rgb=True, summary="grey levels, three channels kept"),
    OpDef("gaussian_blur", {"sigma": _span(0.01, 50, default=(0.1, 2.0)),
                            "kernel": Param("number", 5, {"low": 1, "high": 101, "integer": True})},
          _gaussian_blur, summary="blur with a random `sigma`, window `kernel`"),
    OpDef("random_erasing", {"scale": _span(0.0, 1.0, default=(0.02, 0.33)),
                             "ratio": _span(0.01, 100.0, default=(0.3, 3.3)), "fill": FILL},
          _random_erasing, summary="erase a random rectangle (area share `scale`, aspect `ratio`)"),
    OpDef("cutout", {"size": Param("number", REQUIRED, {"low": 1, "high": 4096, "integer": True}), "fill": FILL},
          _cutout, summary="erase a `size` square centred at a random point"),
    OpDef("normalize", {"mean": Param("numbers", (0.485, 0.456, 0.406)),
                        "std": Param("numbers", (0.229, 0.224, 0.225))},
          _normalize, float_output=True, summary="(x/255 - mean) / std, float32 CHW; streaming only"),
    OpDef("auto_augment", {"policy": Param("choice", "imagenet", {"options": ("imagenet",)}),
                           "fill": Param("number", 128, {"low": 0, "high": 255, "integer": True})},
          _auto_augment, rgb=True, summary="AutoAugment, ImageNet policy (nvidia.dali.auto_aug)"),
    OpDef("rand_augment", {"n": Param("number", 2, {"low": 1, "high": 14, "integer": True}),
                           "m": Param("number", 9, {"low": 0, "high": 30, "integer": True}),
                           "bins": Param("number", 31, {"low": 2, "high": 100, "integer": True}),
                           "fill": Param("number", 128, {"low": 0, "high": 255, "integer": True})},
          _rand_augment, rgb=True, summary="RandAugment: `n` random ops at magnitude `m` of `bins`"),
    OpDef("trivial_augment", {"bins": Param("number", 31, {"low": 2, "high": 100, "integer": True}),
                              "fill": Param("number", 128, {"low": 0, "high": 255, "integer": True})},
          _trivial_augment, rgb=True, summary="TrivialAugment Wide: one random op at a random magnitude"),
)}
ALIASES = {"horizontal_flip": "hflip", "vertical_flip": "vflip", "color_jitter": "color", "blur": "gaussian_blur",
           "erase": "random_erasing", "autoaugment": "auto_augment", "randaugment": "rand_augment",
           "trivialaugment": "trivial_augment"}


def check_op(checker, raw, where: str, table: dict | None = None, aliases: dict | None = None):
    """Validate one op entry of a recipe (``{op: name, p: ..., <params>}``) into an ``ImageOpSpec``.

    ``table`` and ``aliases`` default to the image ops; the text ops pass their own.
    """
    from augforge.recipe import ImageOpSpec

    table = OPS if table is None else table
    aliases = ALIASES if aliases is None else aliases
    if not isinstance(raw, dict) or "op" not in raw:
        checker.fail(where, f"expected a mapping with 'op' (one of {', '.join(table)}), got {raw!r}")
    name = aliases.get(str(raw["op"]).lower(), str(raw["op"]).lower())
    if name not in table:
        checker.fail(f"{where}.op", f"unknown op {raw['op']!r}; known: {', '.join(table)}")
    spec = table[name]
    params = {}
    for key in raw:
        if key not in ("op", "p") and key not in spec.params:
            known = ", ".join([*spec.params, "p"])
            checker.fail(f"{where}.{key}", f"{name} has no parameter {key!r}; it takes {known}")
    for key, param in spec.params.items():
        if key not in raw:
            if param.default is REQUIRED:
                checker.fail(f"{where}.{key}", f"missing; {name} needs {key}")
            params[key] = param.default
            continue
        params[key] = getattr(checker, param.kind)(raw[key], f"{where}.{key}", **param.args)
    p = float(checker.number(raw.get("p", 1.0), f"{where}.p", 0.0, 1.0))
    return ImageOpSpec(name, params, p, where)


def check_op_list(ops, color: str, file: str, encoded_output: bool) -> None:
    """Refuse op lists that cannot run: colour ops on grey images, normalize before the end or into shards."""
    from augforge.recipe import RecipeError

    for i, op in enumerate(ops):
        spec = OPS[op.name]
        if spec.rgb and color == "gray":
            raise RecipeError(f"{file}: {op.where}.op: {op.name} needs colour images; set augment.color: rgb")
        if spec.float_output and op.p < 1.0:
            raise RecipeError(f"{file}: {op.where}.p: {op.name} sets the output format (float pixels), so it runs "
                              "on every image; remove p or set it to 1")
        if spec.float_output and (i != len(ops) - 1 or encoded_output):
            why = "it must be the last op" if i != len(ops) - 1 else \
                "it makes float pixels, which an encoded (png/jpeg/raw uint8) dataset cannot store; normalize when " \
                "streaming"
            raise RecipeError(f"{file}: {op.where}.op: normalize: {why}")


#: ops that do the same to every image when p = 1: evaluation keeps them as they are
DETERMINISTIC = ("resize", "center_crop", "pad", "normalize", "grayscale")


def evaluation_ops(ops) -> tuple:
    """The deterministic part of an op list: what evaluation applies, never a random op.

    resize, center_crop, pad, normalize and grayscale with p = 1 are kept. A random crop becomes its
    centred window, so that evaluation sees the shape training saw: random_crop -> center_crop of the same
    size and fill; random_resized_crop -> the shorter side resized to the crop's, then center_crop. Every
    other op, and every op with p < 1, is left out."""
    from augforge.recipe import ImageOpSpec

    out = []
    for op in ops:
        if op.name == "random_crop":
            out.append(ImageOpSpec("center_crop", {"size": op.params["size"], "fill": op.params["fill"]}, 1.0,
                                   op.where))
        elif op.name == "random_resized_crop":
            h, w = op.params["size"]
            out.append(ImageOpSpec("resize", {"size": (min(h, w), min(h, w)), "keep_aspect": True}, 1.0, op.where))
            out.append(ImageOpSpec("center_crop", {"size": (h, w), "fill": 0}, 1.0, op.where))
        elif op.name in DETERMINISTIC and op.p >= 1.0:
            out.append(op)
    return tuple(out)


def op_dicts(ops) -> list[dict]:
    """Ops as recipe mappings (``{op, p, <params>}``, tuples as lists): JSON for manifests and checkpoints, and
    read back by ``check_op``."""
    return [{"op": op.name, "p": op.p, **{k: list(v) if isinstance(v, tuple) else v for k, v in op.params.items()}}
            for op in ops]


def resolve_device(device) -> str:
    """DALI's device for ``device`` (auto, cpu, gpu/cuda, or an ``augforge.device.Device``): 'gpu' or 'cpu'.
    'auto' is 'gpu' when a CUDA device is present; the decision is ``augforge.device.choose_device``'s."""
    from augforge.device import choose_device

    return choose_device(device).dali


@dataclass
class Context:
    """What every op's graph needs to know: where it runs."""

    device: str  # "cpu" or "gpu"
    channels: int = 3  # 1 for grey images
    fuse: bool = True  # on the CPU, runs of resize/flip/colour/normalize as one pass of the fused kernel

    @property
    def op_device(self) -> str:
        """The ``device`` argument of DALI ops."""
        return "gpu" if self.device == "gpu" else "cpu"


def apply_ops(fn, types, img, ops, ctx: Context, resize: tuple | None = None):
    """Chain ``ops`` on the DataNode ``img``; an op with p < 1 runs in a DALI conditional (flips draw their
    own coin). ``resize`` ((h, w), antialias) is a resize still owed by the decoder's fused crop.

    On the CPU, a run of resize (leading the run), flips, one ``color`` and ``normalize`` is one pass of
    the kernel in ``augforge.augment.fused_cpu`` (see ``_fused_run``); on the GPU, DALI's own ops run.
    (Its helpers that only build the graph are kept out of DALI's AutoGraph, whose conversion of a function
    costs about 0.15 s at every first pipeline build of a process.)"""
    ops = list(ops)
    fuse = ctx.device == "cpu" and ctx.fuse
    i = 0
    while i < len(ops) or resize is not None:
        fused = _fused_run(ops, i, resize) if fuse else None
        if fused is not None:
            from augforge.augment.fused_cpu import fused_pass

            img, resize = fused_pass(fn, types, img, ops[i : i + fused], resize, ctx), None
            i += fused
        elif resize is not None:
            img, resize = _resize_to(fn, img, *resize, ctx), None
        else:
            img = _maybe(fn, types, img, ops[i], ctx)
            i += 1
    return img


def _resize_to(fn, img, size, antialias: bool, ctx):
    return fn.resize(img, device=ctx.op_device, size=list(size), antialias=antialias)


#: ops the fused CPU kernel takes on, and those of them worth a pass of their own (flips alone stay DALI's)
_FUSABLE, _SLOW = ("resize", "hflip", "vflip", "color", "normalize"), ("resize", "color", "normalize")


def _fused_run(ops: list, start: int, resize) -> int | None:
    """How many ops from ``start`` the fused CPU kernel does with the resize owed by the decoder (if any):
    resize (first in the run, none owed), flips, one color, normalize, each with p = 1 but flips and color.
    None when the pass would have nothing slow to do (flips alone stay DALI's)."""
    n = 0
    for op in ops[start:]:
        if op.name not in _FUSABLE or (op.p < 1.0 and op.name not in ("hflip", "vflip", "color")):
            break
        if op.name == "resize" and (n or resize is not None or op.params["keep_aspect"]):
            break
        if op.name == "color" and any(o.name == "color" for o in ops[start : start + n]):
            break
        n += 1
    slow = resize is not None or any(op.name in _SLOW for op in ops[start : start + n])
    return n if slow else None


def _maybe(fn, types, img, op, ctx):
    spec = OPS[op.name]
    if op.p <= 0.0:
        return img
    if spec.own_coin:
        return spec.build(fn, types, img, {**op.params, "p": op.p}, ctx)
    if op.p >= 1.0:
        return spec.build(fn, types, img, op.params, ctx)
    if fn.random.coin_flip(probability=op.p, dtype=types.BOOL):
        out = spec.build(fn, types, img, op.params, ctx)
    else:
        out = img
    return out


def decode(fn, types, encoded, color: str, ctx: Context, first=None):
    """Decode encoded images (``mixed`` on a GPU). A leading random_resized_crop with p = 1 is fused into the
    decoder (``decoders.image_random_crop``): only the crop window is decoded, and its resize is owed to
    ``apply_ops``. Returns (images, ops consumed, owed resize ((h, w), antialias) or None)."""
    out_type = types.GRAY if color == "gray" else types.RGB
    device = "mixed" if ctx.device == "gpu" else "cpu"
    if first is not None and first.name == "random_resized_crop" and first.p >= 1.0:
        img = fn.decoders.image_random_crop(encoded, device=device, output_type=out_type,
                                            random_area=list(first.params["scale"]),
                                            random_aspect_ratio=list(first.params["ratio"]))
        return img, 1, (tuple(first.params["size"]), bool(first.params["antialias"]))
    return fn.decoders.image(encoded, device=device, output_type=out_type), 0, None


class ImagePipeline:
    """What every image pipeline is given and says of its outputs (DALI's ``ImageAugmenter`` and the torch
    one, ``augforge.augment.torch_pipeline``): the ops, colour, device, seed, batch size and threads, and
    ``chw``, whether batches come out as float NCHW (after ``normalize``) rather than uint8 NHWC.
    Subclasses give ``batch_tensor``; ``augment_batches`` is built on it."""

    def __init__(self, ops, *, color: str = "rgb", device: str = "auto", seed: int = 0, batch_size: int = 64,
                 threads: int = 2, decode_only: bool = False, decoded: bool = False, source=None,
                 source_workers: int = 0, fuse: bool = True) -> None:
        self.ops = tuple(ops)
        #: on the CPU, runs of resize, flips, colour and normalize are one pass of ``fused_cpu``'s kernel;
        #: False runs DALI's own ops for them (as on the GPU)
        self.fuse = fuse
        self.color = color
        self.device = resolve_device(device)
        self.seed = int(seed) % (2**31 - 1)
        self.batch_size = batch_size
        self.threads = threads
        self.decode_only = decode_only
        #: inputs are HWC uint8 pixel arrays (raw shards), not encoded images
        self.decoded = decoded
        #: normalize leaves float HWC pixels in DALI; they are handed over as CHW
        self.chw = bool(self.ops) and OPS[self.ops[-1].name].float_output and not decode_only
        #: a picklable callable(BatchInfo) -> list of arrays, run by ``source_workers`` processes through
        #: DALI's parallel external_source (``next_batch``); None: batches are fed (``batch_tensor``)
        self.source = source
        self.source_workers = source_workers

    def batch_tensor(self, batch: list):
        """One batch (at most ``batch_size`` images) through the pipeline, as one torch tensor."""
        raise NotImplementedError

    def augment_batches(self, encoded: list):
        """Like ``augment``, one batch at a time as a torch tensor (images of one shape, e.g. after a crop).

        After ``normalize`` the batch is float32 NCHW (in ``torch.channels_last`` memory format from DALI).
        On a GPU the tensor is already on the device."""
        for start in range(0, len(encoded), self.batch_size):
            yield self.batch_tensor(encoded[start : start + self.batch_size])


class ImageAugmenter(ImagePipeline):
    """Runs a list of ops over encoded images through one DALI pipeline, in order.

    ``seed`` fixes every random draw: the same images fed in the same batches give the same
    outputs. ``augment(encoded)`` returns HWC uint8 arrays (CHW float32 after ``normalize``).
    With ``decode_only`` the ops are skipped (images are only decoded).
    """

    def __init__(self, ops, **options) -> None:
        super().__init__(ops, **options)
        self._pipe = None

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        ctx = Context(self.device, 1 if self.color == "gray" else 3, self.fuse)
        ops, color, decode_only, decoded = self.ops, self.color, self.decode_only, self.decoded

        source, parallel = self.source, {}
        if source is not None:
            import torch

            # forked workers cannot use a CUDA context the parent already holds: spawn them then
            start = "spawn" if torch.cuda.is_available() and torch.cuda.is_initialized() else "fork"
            parallel = dict(py_num_workers=max(1, self.source_workers), py_start_method=start)

        def inputs(**layout):
            if source is None:
                return fn.external_source(name="encoded", dtype=types.UINT8, no_copy=False, **layout)
            return fn.external_source(source=source, parallel=True, batch=True, batch_info=True,
                                      dtype=types.UINT8, prefetch_queue_depth=2, **layout)

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads,
                      device_id=0 if self.device == "gpu" else None, seed=self.seed, enable_conditionals=True,
                      prefetch_queue_depth=1, exec_dynamic=True, **parallel)  # outputs stay valid after next run
        def pipeline():
            if decoded:
                images = inputs(ndim=3, layout="HWC")
                return apply_ops(fn, types, images.gpu() if ctx.device == "gpu" else images, ops, ctx)
            encoded = inputs(ndim=1)
            if decode_only:
                return decode(fn, types, encoded, color, ctx)[0]
            images, used, resize = decode(fn, types, encoded, color, ctx, ops[0] if ops else None)
            return apply_ops(fn, types, images, ops[used:], ctx, resize)

        pipe = pipeline()
        pipe.build()
        return pipe

    def _execute(self, batch: list):
        """One DALI iteration over ``batch`` (encoded images or pixels): the output TensorList, where DALI left it."""
        if self._pipe is None:
            self._pipe = self._build()
        arrays = [np.frombuffer(e, dtype=np.uint8) if isinstance(e, (bytes, bytearray)) else e for e in batch]
        self._pipe.feed_input("encoded", arrays)
        try:
            (result,) = self._pipe.run()
        except RuntimeError as exc:
            raise AugforgeError(f"DALI could not process a batch: {str(exc).splitlines()[0]}") from None
        return result

    def _run(self, batch: list):
        """One DALI iteration over ``batch``: the output TensorList, on the CPU."""
        result = self._execute(batch)
        return result.as_cpu() if self.device == "gpu" else result

    def augment(self, encoded: list) -> list[np.ndarray]:
        """Decode and augment ``encoded`` (a list of bytes or uint8 arrays); outputs in the same order."""
        out: list[np.ndarray] = []
        for start in range(0, len(encoded), self.batch_size):
            result = self._run(encoded[start : start + self.batch_size])
            if self.chw:
                out.extend(np.ascontiguousarray(np.array(result[i]).transpose(2, 0, 1)) for i in range(len(result)))
            else:
                out.extend(np.array(result[i]) for i in range(len(result)))
        return out

    def batch_tensor(self, batch: list):
        """One batch (at most ``batch_size`` images) through the pipeline, as one torch tensor."""
        return self._tensor(self._execute(batch))

    def next_batch(self):
        """With a ``source``: the next batch its workers read, as ``batch_tensor`` gives it; None at the end of
        the source's epoch (the pipeline is then reset, and the next call starts the source's next epoch)."""
        if self._pipe is None:
            self._pipe = self._build()
        try:
            (result,) = self._pipe.run()
        except StopIteration:
            self._pipe.reset()
            return None
        except RuntimeError as exc:
            raise AugforgeError(f"DALI could not process a batch: {str(exc).splitlines()[0]}") from None
        return self._tensor(result)

    def _tensor(self, result):
        """A dense DALI output as one torch tensor (on the GPU when the pipeline runs there)."""
        import torch

        if not result.is_dense_tensor():
            raise AugforgeError("the ops give images of different sizes; end them with resize or a crop to "
                                "batch them as one tensor")
        if self.device == "gpu":  # stays on the device: copied into a torch CUDA tensor
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = result.as_tensor()
            dtype = torch.float32 if self.chw else torch.uint8
            out = torch.empty(dense.shape(), dtype=dtype, device="cuda")
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream())
        else:
            # a view of DALI's output, no copy: the dynamic executor never reuses memory that is still referenced
            out = torch.from_numpy(np.asarray(result.as_tensor()))
        # float pixels: NHWC memory seen as NCHW, i.e. torch's channels_last format (no copy)
        return out.permute(0, 3, 1, 2) if self.chw else out

    def close(self) -> None:
        """Release the pipeline (and its threads)."""
        self._pipe = None
