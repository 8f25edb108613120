"""The image op table: each op's parameters and its DALI graph (docs/recipes.md lists them).

Each op is a small function from a DALI ``DataNode`` to a ``DataNode``; ``augforge.augment.image`` chains
them into a pipeline. Ops DALI does not have (grayscale, random erasing, padding on every side) are built
from DALI ops, never as a Python loop over images. Nothing here imports DALI: ``fn`` and ``types`` are
handed in, so recipes are checked against this table without it.
"""

from __future__ import annotations

import math

import numpy as np

from augforge.augment.colour import colour_map, normalize_affine
from augforge.augment.draws import coin, uniform
from augforge.augment.ops import REQUIRED, OpDef, OpSpec, Param, check_op
from augforge.augment.policy import parse_policy
from augforge.checks import RecipeError, show_value
from augforge.errors import AugforgeError

#: bumped whenever the pixels an op list makes change (it is part of a build's fingerprint, beside DALI's version)
OPS_VERSION = 2  # 2: the fused CPU kernel


def _span(low=None, high=None, symmetric=False, default=REQUIRED) -> Param:
    return Param("span", default, {"low": low, "high": high, "symmetric": symmetric})


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
    angle = uniform(fn, prm["degrees"])
    if prm["expand"]:
        return fn.rotate(img, device=ctx.op_device, angle=angle, fill_value=_fill(prm))
    return fn.rotate(img, device=ctx.op_device, angle=angle, fill_value=_fill(prm), keep_size=True)


def _hflip(fn, types, img, prm, ctx):
    return fn.flip(img, device=ctx.op_device, horizontal=coin(fn, types, prm["p"]), vertical=0)


def _vflip(fn, types, img, prm, ctx):
    return fn.flip(img, device=ctx.op_device, horizontal=0, vertical=coin(fn, types, prm["p"]))


def _color(fn, types, img, prm, ctx):
    # colour jitter as one per-pixel affine map, saturated to uint8
    M, T = colour_map(fn, types, prm)
    if isinstance(M, np.ndarray):
        M, T = M.astype(np.float32).ravel().tolist(), T.astype(np.float32).tolist()
    return fn.coord_transform(img, device=ctx.op_device, M=M, T=T, dtype=types.UINT8)


def _grayscale(fn, types, img, prm, ctx):
    # DALI has no grayscale op that keeps three channels: saturation 0 in HSV space is one
    return fn.hsv(img, device=ctx.op_device, saturation=0.0)


def _gaussian_blur(fn, types, img, prm, ctx):
    return fn.gaussian_blur(img, device=ctx.op_device, sigma=uniform(fn, prm["sigma"]),
                            window_size=int(prm["kernel"]))


def _random_erasing(fn, types, img, prm, ctx):
    # the torchvision recipe as a DALI graph: area share s ~ U(scale), log aspect r ~ U(log ratio)
    from nvidia.dali import math as dmath

    shape = img.shape(dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    area = uniform(fn, prm["scale"])
    log_aspect = uniform(fn, (math.log(prm["ratio"][0]), math.log(prm["ratio"][1])))
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
    scale, shift = normalize_affine(prm, ctx.channels)
    return fn.coord_transform(img, device=ctx.op_device, M=np.diag(scale).astype(np.float32).ravel().tolist(),
                              T=list(np.float32(shift)), dtype=types.FLOAT)


def _on_colour(fn, types, img, ctx, policy):
    """``policy`` (a DataNode -> DataNode function) on three channels: a grey image is repeated into RGB and
    brought back to grey after (DALI's auto_aug ops assume colour; AutoAugment crashes on one channel)."""
    if ctx.channels == 3:
        return policy(img)
    rgb = fn.cat(img, img, img, axis=2, device=ctx.op_device)
    return fn.color_space_conversion(policy(rgb), image_type=types.RGB, output_type=types.GRAY, device=ctx.op_device)


def _auto_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import auto_augment

    return _on_colour(fn, types, img, ctx, lambda x: auto_augment.auto_augment_image_net(
        x, shape=x.shape(), fill_value=int(prm["fill"])))


def _rand_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import rand_augment

    return _on_colour(fn, types, img, ctx, lambda x: rand_augment.rand_augment(
        x, n=int(prm["n"]), m=int(prm["m"]), shape=x.shape(), num_magnitude_bins=int(prm["bins"]),
        fill_value=int(prm["fill"])))


def _trivial_augment(fn, types, img, prm, ctx):
    from nvidia.dali.auto_aug import trivial_augment

    return _on_colour(fn, types, img, ctx, lambda x: trivial_augment.trivial_augment_wide(
        x, shape=x.shape(), num_magnitude_bins=int(prm["bins"]), fill_value=int(prm["fill"])))


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
          _auto_augment, summary="AutoAugment, ImageNet policy (`autoaug-imagenet`)"),
    OpDef("rand_augment", {"n": Param("number", 2, {"low": 1, "high": 14, "integer": True}),
                           "m": Param("number", 9, {"low": 0, "high": 99, "integer": True}),
                           "bins": Param("number", 31, {"low": 2, "high": 100, "integer": True}),
                           "mstd": Param("number", 0.0, {"low": 0.0, "high": 100.0}),
                           "fill": Param("number", 128, {"low": 0, "high": 255, "integer": True})},
          _rand_augment, summary="RandAugment: `n` random ops at magnitude `m` of `bins` (`rand-n2-m9`); `mstd` "
                                 "draws each op's magnitude from N(m, mstd) (torch backend)"),
    OpDef("trivial_augment", {"bins": Param("number", 31, {"low": 2, "high": 100, "integer": True}),
                              "fill": Param("number", 128, {"low": 0, "high": 255, "integer": True})},
          _trivial_augment, summary="TrivialAugment Wide: one random op at a random magnitude (`trivial`)"),
)}
ALIASES = {"horizontal_flip": "hflip", "vertical_flip": "vflip", "color_jitter": "color", "blur": "gaussian_blur",
           "erase": "random_erasing", "autoaugment": "auto_augment", "randaugment": "rand_augment",
           "trivialaugment": "trivial_augment"}


def check_image_op(checker, raw, where: str) -> OpSpec:
    """Validate one image op entry of a recipe (``{op: name, p: ..., <params>}``) into an ``OpSpec``."""
    op = check_op(checker, raw, where, OPS, ALIASES)
    if op.name == "rand_augment" and op.params["m"] > op.params["bins"] - 1:
        checker.fail(f"{where}.m", f"M runs 0..{op.params['bins'] - 1} with {op.params['bins']} bins, got "
                                   f"{op.params['m']}")
    return op


def check_image_ops(checker, value, where: str) -> tuple[OpSpec, ...]:
    """Validate a list of image ops (``augment.image``, ``train.stream``, a loader's ``ops``). An item may be a
    policy string (``trivial``, ``rand-n2-m9``: ``augforge.augment.policy``), and a policy string alone stands
    for a list of it; ``none`` adds nothing."""
    single = isinstance(value, str)
    if single:
        value = [value]
    if not isinstance(value, (list, tuple)):
        checker.fail(where, f"expected a list of image ops or a policy string, got {show_value(value)}")
    out = []
    for i, raw in enumerate(value):
        place = where if single else f"{where}[{i}]"
        if isinstance(raw, OpSpec):
            out.append(raw)
            continue
        if isinstance(raw, str):
            try:
                raw = parse_policy(raw).op_entry()
            except AugforgeError as exc:
                checker.fail(place, str(exc))
            if raw is None:
                continue
        out.append(check_image_op(checker, raw, place))
    return tuple(out)


def check_op_list(ops, color: str, file: str, encoded_output: bool) -> None:
    """Refuse op lists that cannot run: colour ops on grey images, normalize before the end or into shards."""
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
    out = []
    for op in ops:
        if op.name == "random_crop":
            out.append(OpSpec("center_crop", {"size": op.params["size"], "fill": op.params["fill"]}, 1.0,
                                   op.where))
        elif op.name == "random_resized_crop":
            h, w = op.params["size"]
            out.append(OpSpec("resize", {"size": (min(h, w), min(h, w)), "keep_aspect": True}, 1.0, op.where))
            out.append(OpSpec("center_crop", {"size": (h, w), "fill": 0}, 1.0, op.where))
        elif op.name in DETERMINISTIC and op.p >= 1.0:
            out.append(op)
    return tuple(out)
