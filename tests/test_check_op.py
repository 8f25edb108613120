"""The check every image op passes, on every backend: DALI's own CPU ops, the fused CPU pass, the torch
fallback, and the GPU where one is present.

For each op of the op table (``OPS``) and each backend: the output shape and dtype; ``p = 0`` leaves the
image unchanged; the same seed gives the same pixels; and the backends agree with DALI's CPU ops within
the op's stated tolerance, on parameters that make the op deterministic (for the ops that place a box at
random, on the area they change instead).
"""

import io

import numpy as np
import pytest
from PIL import Image

from augforge.augment.image import ImageAugmenter
from augforge.augment.image_ops import OPS
from augforge.augment.torch_pipeline import TorchImageAugmenter
from augforge.pipelines.loader_ops import parse_ops

H, W = 120, 160
#: per op: parameters that make it deterministic (a random box keeps a random place), the output shape for a
#: 120x160 input, and how the backends must agree: ("pixels", mean abs, max abs) in grey levels (normalized
#: units for normalize), ("area", relative tolerance) of the changed pixels, ("box", side) for cutout, or for
#: the policies, whose draws differ between backends, ("policy", z): the mean absolute change per image and the
#: share of images left unchanged agree within z standard errors over 192 draws (two-sample)
CASES = {
    "random_resized_crop": ({"size": [64, 48], "scale": [1.0, 1.0], "ratio": [4 / 3, 4 / 3]}, (64, 48),
                            ("pixels", 0.25, 10)),
    "random_crop": ({"size": [H, W]}, (H, W), ("pixels", 0, 0)),
    "center_crop": ({"size": [60, 80]}, (60, 80), ("pixels", 0, 0)),
    "resize": ({"size": [40, 30]}, (40, 30), ("pixels", 0.25, 10)),
    "pad": ({"padding": 5, "fill": 7}, (H + 10, W + 10), ("pixels", 0, 0)),
    "rotate": ({"degrees": [30, 30]}, (H, W), ("pixels", 0.01, 1)),
    "hflip": ({}, (H, W), ("pixels", 0, 0)),
    "vflip": ({}, (H, W), ("pixels", 0, 0)),
    "color": ({"brightness": [1.2, 1.2], "contrast": [0.8, 0.8], "saturation": [0.5, 0.5], "hue": [20, 20]},
              (H, W), ("pixels", 0.01, 1)),
    "grayscale": ({}, (H, W), ("pixels", 0.25, 1)),
    "gaussian_blur": ({"sigma": [1.0, 1.0], "kernel": 5}, (H, W), ("pixels", 0.01, 1)),
    "random_erasing": ({"scale": [0.1, 0.1], "ratio": [1.0, 1.0]}, (H, W), ("area", 0.05)),
    "cutout": ({"size": 20}, (H, W), ("box", 20)),
    "normalize": ({}, (H, W), ("pixels", 1e-5, 1e-4)),
    "auto_augment": ({}, (H, W), ("policy", 4.0)),
    "rand_augment": ({}, (H, W), ("policy", 4.0)),
    "trivial_augment": ({}, (H, W), ("policy", 4.0)),
}
BACKENDS = ["dali", "fused", "torch", "gpu"]


@pytest.fixture(scope="module")
def photo(sample_images):
    pixels = np.ascontiguousarray(sample_images[0][100 : 100 + H, 200 : 200 + W])
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def apply(backend: str, name: str, params: dict, photo, p: float = 1.0, seed: int = 0, n: int = 1) -> list:
    """``n`` outputs of one op on the photo, as HWC numpy arrays (uint8, or float32 after normalize)."""
    pixels, encoded = photo
    ops = parse_ops([{"op": name, "p": p, **params}], "ops")
    if backend == "torch":  # the pipeline that runs where DALI is absent: PIL decoding, then the torch ops
        augmenter = TorchImageAugmenter(ops, seed=seed, device="cpu")
    else:
        augmenter = ImageAugmenter(ops, seed=seed, device="gpu" if backend == "gpu" else "cpu", batch_size=8,
                                   fuse=backend == "fused")
    outs = augmenter.augment([encoded] * n)
    return [o.transpose(1, 2, 0) if OPS[name].float_output else o for o in outs]


def every(name):
    return [pytest.param(name, backend, id=f"{name}-{backend}", marks=[pytest.mark.gpu] if backend == "gpu" else [])
            for backend in BACKENDS]


CHECKS = [case for name in OPS for case in every(name)]


def test_the_check_covers_every_op():
    assert set(CASES) == set(OPS)


def test_normalize_with_p_below_one_is_refused():
    from augforge.augment.image_ops import check_op_list
    from augforge.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"ops\[0\]\.p: normalize sets the output format"):
        check_op_list(parse_ops([{"op": "normalize", "p": 0.5}], "ops"), "rgb", "r.yaml", encoded_output=False)


@pytest.mark.parametrize("name, backend", CHECKS)
def test_shape_and_dtype(photo, name, backend):
    params, shape, _ = CASES[name]
    (out,) = apply(backend, name, params, photo)
    assert out.shape == (*shape, 3)
    assert out.dtype == (np.float32 if OPS[name].float_output else np.uint8)


@pytest.mark.parametrize("name, backend", CHECKS)
def test_p_zero_leaves_the_image_unchanged(photo, name, backend):
    if OPS[name].float_output:  # normalize always runs: it is the output format
        return
    params = CASES[name][0]
    outs = apply(backend, name, params, photo, p=0.0, n=4)
    assert all(np.array_equal(out, photo[0]) for out in outs)


@pytest.mark.parametrize("name, backend", CHECKS)
def test_the_same_seed_gives_the_same_pixels(photo, name, backend):
    params = {**CASES[name][0], **RANDOM.get(name, {})}
    p = 1.0 if OPS[name].float_output else 0.7  # normalize runs on every image (p < 1 is refused)
    first = apply(backend, name, params, photo, p=p, seed=3, n=4)
    again = apply(backend, name, params, photo, p=p, seed=3, n=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


#: ranges that make the ops random again, for the seed check
RANDOM = {"random_resized_crop": {"scale": [0.3, 1.0], "ratio": [0.75, 1.33]}, "random_crop": {"size": 64},
          "rotate": {"degrees": 30}, "color": {"brightness": [0.5, 1.5], "hue": [-30, 30]},
          "gaussian_blur": {"sigma": [0.5, 2.0]}, "random_erasing": {"scale": [0.05, 0.3]}}


@pytest.mark.parametrize("name, backend", [case for case in CHECKS if case.values[1] != "dali"])
def test_backends_agree_with_dalis_cpu_ops(photo, name, backend):
    params, _, (kind, *tolerance) = CASES[name]
    if kind == "policy" and backend != "fused":  # other random streams: the distributions of change must agree
        change = {b: np.array([np.abs(o.astype(np.float64) - photo[0]).mean()
                               for o in apply(b, name, params, photo, n=192)]) for b in ("dali", backend)}
        ref, out = change["dali"], change[backend]
        z, n = tolerance[0], len(ref)
        assert abs(out.mean() - ref.mean()) <= z * np.sqrt((out.var() + ref.var()) / n), (out.mean(), ref.mean())
        same = (np.mean(out == 0) + np.mean(ref == 0)) / 2
        assert abs(np.mean(out == 0) - np.mean(ref == 0)) <= z * np.sqrt(2 * same * (1 - same) / n) + 1 / n
        assert ref.mean() > 5  # the policy changes the images at all
        return
    (ref,) = apply("dali", name, params, photo)
    (out,) = apply(backend, name, params, photo)
    assert out.shape == ref.shape
    if kind in ("pixels", "policy"):  # the fused pass leaves the policies to DALI's own ops: equal pixels
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        tolerance = (0, 0) if kind == "policy" else tolerance
        assert diff.mean() <= tolerance[0] and diff.max() <= tolerance[1], (diff.mean(), diff.max())
        return
    changed_ref, changed = ((o != photo[0]).any(-1).sum() for o in (ref, out))
    if kind == "area":  # the same share of the image is erased, wherever the box fell
        assert abs(int(changed) - int(changed_ref)) <= tolerance[0] * changed_ref and changed_ref > 0
    else:  # a box of that side, clipped where it leaves the image
        assert 0 < changed <= tolerance[0] ** 2 and 0 < changed_ref <= tolerance[0] ** 2


#: the geometry with dense targets, op by op and composed: DALI (CPU, and the GPU where present) against the CPU
#: path on the same draws. Boxes and keypoints within a pixel, masks by IoU >= 0.98, pixels within half a grey level
TARGET_CASES = {
    "rotate": [{"op": "rotate", "degrees": 40}],
    "rotate_expand": [{"op": "rotate", "degrees": 30, "expand": True}],
    "random_resized_crop": [{"op": "random_resized_crop", "size": [48, 64], "scale": [0.3, 1.0]}],
    "random_crop": [{"op": "random_crop", "size": [40, 72]}],
    "center_crop": [{"op": "center_crop", "size": [56, 80], "fill": 9}],
    "resize": [{"op": "resize", "size": [80, 120]}],
    "pad": [{"op": "pad", "padding": 7, "fill": 50}],
    "flips": [{"op": "hflip", "p": 0.5}, {"op": "vflip", "p": 0.5}],
    "composed": [{"op": "pad", "padding": 5}, {"op": "rotate", "degrees": 30, "expand": True},
                 {"op": "random_resized_crop", "size": [64, 64], "scale": [0.5, 1.0]}, {"op": "hflip", "p": 0.5}],
}


def target_checks():
    return [pytest.param(name, backend, id=f"{name}-{backend}", marks=[pytest.mark.gpu] if backend == "gpu" else [])
            for name in TARGET_CASES for backend in ("dali", "gpu")]


@pytest.fixture(scope="module")
def target_scenes():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import composed_scenes

    from augforge.datasets.targets import Instances, instance_mask, rle_encode

    rng = np.random.default_rng(4)
    scenes = [composed_scenes.scene(rng, objects=4, min_radius=8.0) for _ in range(8)]
    masked = []
    for _, inst in scenes:  # the same instances as RLE masks only: the mask path of every backend
        masks = [rle_encode(instance_mask(inst, i, 64, 96)) for i in range(len(inst))]
        masked.append(Instances(inst.classes, inst.boxes, [[] for _ in masks], masks, inst.keypoints, inst.crowd,
                                inst.origin))
    return [image for image, _ in scenes], [inst for _, inst in scenes], masked


@pytest.mark.parametrize("name, backend", target_checks())
def test_dense_targets_agree_across_backends_on_the_same_draw(name, backend, target_scenes):
    from augforge.augment.dense_ops import DenseAugment
    from augforge.augment.target_geometry import FramePolicy
    from augforge.datasets.targets import instance_mask

    images, polygons, masks = target_scenes
    augment = DenseAugment(parse_ops(TARGET_CASES[name], "ops"), FramePolicy(min_visibility=0.1),
                           flip_pairs=((0, 1),))
    mover = augment.dali_mover(len(images), "gpu" if backend == "gpu" else "cpu")
    for targets in (polygons, masks):
        cpu = [augment(np.random.default_rng(k), image, inst) for k, (image, inst) in enumerate(zip(images, targets))]
        dali = augment.batch([np.random.default_rng(k) for k in range(len(images))], images, targets, mover)
        compared = 0
        for a, b in zip(cpu, dali):
            assert a.moved.image.shape == b.moved.image.shape
            assert np.abs(a.moved.image.astype(float) - b.moved.image).mean() <= 0.5
            one, other = a.moved.instances, b.moved.instances
            assert one.classes.tolist() == other.classes.tolist() and one.origin == other.origin
            np.testing.assert_allclose(one.boxes, other.boxes, atol=1.0)
            np.testing.assert_allclose(one.keypoints[..., :2], other.keypoints[..., :2], atol=1.0)
            assert (one.keypoints[..., 2] == other.keypoints[..., 2]).all()
            height, width = a.moved.image.shape[:2]
            for i in range(len(one)):
                x, y = instance_mask(one, i, height, width), instance_mask(other, i, height, width)
                if x.sum() >= 20:
                    assert (x & y).sum() / (x | y).sum() >= 0.98
                    compared += 1
        assert compared >= 16  # most instances stay in the frame: the check is on real overlaps
