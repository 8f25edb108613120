"""Image ops on real DALI pipelines (CPU-only mode here; the GPU path where a GPU is present)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from augforge.augment.image import ImageAugmenter, resolve_device
from augforge.augment.image_ops import OPS, check_op_list
from augforge.augment.image_ops import check_image_op as check_op
from augforge.augment.ops import REQUIRED
from augforge.recipe import Checker, RecipeError, parse_recipe


@pytest.fixture(scope="module")
def photo(sample_images):
    """A 120x160 crop of a real photo, PNG-encoded (lossless, so pixels can be compared exactly)."""
    pixels = np.ascontiguousarray(sample_images[0][100:220, 200:360])
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def ops(*entries, color="rgb"):
    recipe = parse_recipe({"source": {"path": "digits"},
                           "augment": {"copies": 1, "color": color, "image": list(entries)}})
    return recipe.augment.image


def run(entries, encoded, n=1, seed=0, color="rgb", device="cpu", fuse=True):
    return ImageAugmenter(ops(*entries, color=color), seed=seed, color=color, device=device, batch_size=16,
                          fuse=fuse).augment([encoded] * n)


def test_exact_geometry(photo):
    pixels, encoded = photo
    assert np.array_equal(run([{"op": "hflip"}], encoded)[0], pixels[:, ::-1])
    assert np.array_equal(run([{"op": "vflip"}], encoded)[0], pixels[::-1])
    padded = run([{"op": "pad", "padding": 5, "fill": 7}], encoded)[0]
    assert padded.shape == (130, 170, 3) and np.array_equal(padded[5:-5, 5:-5], pixels) and (padded[:5] == 7).all()
    centre = run([{"op": "center_crop", "size": [60, 80]}], encoded)[0]
    assert np.array_equal(centre, pixels[30:90, 40:120])
    crops = run([{"op": "random_crop", "size": 50}], encoded, n=8)
    for crop in crops:  # every random crop is a window of the source
        found = [(y, x) for y in range(71) for x in range(111)
                 if crop[0, 0, 0] == pixels[y, x, 0] and np.array_equal(crop, pixels[y : y + 50, x : x + 50])]
        assert found, "a random crop that is not a window of the image"


@pytest.mark.parametrize("entry, shape", [
    ({"op": "random_resized_crop", "size": [64, 48]}, (64, 48, 3)),
    ({"op": "resize", "size": [40, 30]}, (40, 30, 3)),
    ({"op": "resize", "size": 60, "keep_aspect": True}, (60, 80, 3)),
    ({"op": "rotate", "degrees": 30}, (120, 160, 3)),
    ({"op": "color", "brightness": [0.5, 1.5], "saturation": [0, 2], "hue": [-30, 30]}, (120, 160, 3)),
    ({"op": "gaussian_blur", "sigma": [0.5, 2.0], "kernel": 7}, (120, 160, 3)),
    ({"op": "random_erasing", "scale": [0.1, 0.2]}, (120, 160, 3)),
    ({"op": "cutout", "size": 20}, (120, 160, 3)),
    ({"op": "auto_augment"}, (120, 160, 3)),
    ({"op": "rand_augment", "n": 2, "m": 9}, (120, 160, 3)),
    ({"op": "trivial_augment"}, (120, 160, 3)),
])
def test_every_op_runs_and_varies_the_image(photo, entry, shape):
    pixels, encoded = photo
    outs = run([entry], encoded, n=6)
    assert all(o.shape == shape and o.dtype == np.uint8 for o in outs)
    if entry["op"] == "resize":  # deterministic: every sample the same
        assert len({o.tobytes() for o in outs}) == 1
        return
    if shape == pixels.shape:
        assert sum(not np.array_equal(o, pixels) for o in outs) >= 3
    assert len({o.tobytes() for o in outs}) >= 2  # random per sample


def test_grayscale_erasing_and_cutout_do_what_they_say(photo):
    pixels, encoded = photo
    grey = run([{"op": "grayscale"}], encoded)[0]
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1 and grey.std() > 10
    for out in run([{"op": "cutout", "size": 20, "fill": 0}], encoded, n=4):
        erased = (out == 0).all(-1) & ~(pixels == 0).all(-1)
        ys, xs = np.nonzero(erased)
        assert 0 < len(ys) <= 400 and np.ptp(ys) < 20 and np.ptp(xs) < 20  # one square of at most 20x20
        assert np.array_equal(out[~erased], pixels[~erased])
    for out in run([{"op": "random_erasing", "scale": [0.1, 0.1], "ratio": [1, 1], "fill": 0}], encoded, n=4):
        erased = (out == 0).all(-1) & ~(pixels == 0).all(-1)
        assert abs(erased.mean() - 0.1) < 0.03


def test_normalize_gives_float_chw(photo):
    pixels, encoded = photo
    out = run([{"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}], encoded)[0]
    assert out.dtype == np.float32 and out.shape == (3, 120, 160)
    np.testing.assert_allclose(out, (pixels.transpose(2, 0, 1) / 255.0 - 0.5) / 0.25, atol=1e-4)


def test_batches_are_views_that_later_batches_never_overwrite(photo):
    """batch_tensor hands DALI's output over without a copy; the next runs must not write into it."""
    pixels, encoded = photo
    augmenter = ImageAugmenter(ops({"op": "hflip"}), device="cpu", batch_size=4)
    first = augmenter.batch_tensor([encoded] * 4)
    kept = first.clone()
    other = np.ascontiguousarray(pixels[::-1])  # different pixels through the same pipeline
    buf = io.BytesIO()
    Image.fromarray(other).save(buf, format="PNG")
    for _ in range(5):
        later = augmenter.batch_tensor([buf.getvalue()] * 4)
    assert torch.equal(first, kept) and torch.equal(first[0], torch.from_numpy(pixels[:, ::-1].copy()))
    assert torch.equal(later[0], torch.from_numpy(other[:, ::-1].copy()))


def test_probability_applies_to_a_random_share(photo):
    pixels, encoded = photo
    outs = run([{"op": "hflip", "p": 0.5}], encoded, n=64)
    flipped = [np.array_equal(o, pixels[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, pixels) for f, o in zip(flipped, outs))
    assert 16 <= sum(flipped) <= 48
    assert run([{"op": "hflip", "p": 0.0}], encoded, n=4)[0].tobytes() == pixels.tobytes()


def test_same_seed_same_pixels_other_seed_others(photo):
    _, encoded = photo
    chain = [{"op": "random_resized_crop", "size": 48}, {"op": "rotate", "degrees": 20, "p": 0.5},
             {"op": "color", "brightness": [0.6, 1.4]}, {"op": "trivial_augment"}]
    a, b = run(chain, encoded, n=20, seed=5), run(chain, encoded, n=20, seed=5)
    c = run(chain, encoded, n=20, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sum(np.array_equal(x, y) for x, y in zip(a, c)) < 5


def test_grey_images_and_colour_ops(digits_lt):
    from augforge.datasets import open_dataset

    encoded = open_dataset(digits_lt).take([0, 1, 2]).column("image").to_pylist()
    outs = ImageAugmenter(ops({"op": "rotate", "degrees": 10}, color="gray"), color="gray", device="cpu").augment(
        encoded)
    assert all(o.shape == (8, 8, 1) for o in outs)
    with pytest.raises(RecipeError, match=r"augment.image\[0\].op: color needs colour images"):
        check_op_list(ops({"op": "color", "brightness": 1.2}, color="gray"), "gray", "r.yaml", False)
    with pytest.raises(RecipeError, match="must be the last op"):
        check_op_list(ops({"op": "normalize"}, {"op": "hflip"}), "rgb", "r.yaml", False)
    with pytest.raises(RecipeError, match="cannot store"):
        check_op_list(ops({"op": "normalize"}), "rgb", "r.yaml", True)


def test_op_table_is_complete():
    expected = {"random_resized_crop", "random_crop", "center_crop", "resize", "pad", "rotate", "hflip", "vflip",
                "color", "grayscale", "gaussian_blur", "random_erasing", "cutout", "normalize", "auto_augment",
                "rand_augment", "trivial_augment"}
    assert expected <= set(OPS)
    checker = Checker("r.yaml")
    for name, spec in OPS.items():  # every op validates with its defaults (plus its required values)
        raw = {"op": name, **{k: 8 for k, p in spec.params.items() if p.default is REQUIRED}}
        assert check_op(checker, raw, "augment.image[0]").name == name


def test_device_choice():
    assert resolve_device("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.gpu
def test_gpu_pipeline_matches_the_cpu_geometry(photo):
    pixels, encoded = photo
    out = run([{"op": "hflip"}, {"op": "pad", "padding": 2}], encoded, device="gpu")[0]
    assert out.shape == (124, 164, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - pixels[:, ::-1]).max() <= 1
    varied = run([{"op": "random_resized_crop", "size": 64}, {"op": "color", "brightness": [0.5, 1.5]},
                  {"op": "auto_augment"}], encoded, n=8, device="gpu")
    assert all(v.shape == (64, 64, 3) for v in varied) and len({v.tobytes() for v in varied}) > 1


def test_colour_matrix_algebra():
    from augforge.augment.colour import colour_matrix

    M, T = colour_matrix(1.0, 1.0, 1.0, 0.0)
    np.testing.assert_allclose(M, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T, 0)
    M, _ = colour_matrix(1.0, 1.0, 0.0, 0.0)  # saturation 0: every channel is the grey level
    np.testing.assert_allclose(M, np.tile([0.299, 0.587, 0.114], (3, 1)), atol=1e-12)
    np.testing.assert_allclose(colour_matrix(1.0, 1.0, 1.0, 360.0)[0], np.eye(3), atol=1e-9)
    for hue in (30.0, 120.0):  # a hue turn keeps grey pixels grey
        np.testing.assert_allclose(colour_matrix(1.0, 1.0, 1.0, hue)[0] @ np.ones(3), np.ones(3), atol=1e-9)
    M, T = colour_matrix(1.2, 0.5, 1.0, 0.0)
    np.testing.assert_allclose(M, 0.6 * np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T, 64.0)


@pytest.mark.parametrize("params", [dict(brightness=1.3, contrast=0.8, saturation=0.4, hue=25.0),
                                    dict(brightness=0.7, contrast=1.2, saturation=1.5, hue=-40.0)])
def test_colour_op_equals_the_numpy_reference(photo, params):
    from augforge.augment.colour import colour_matrix

    pixels, encoded = photo
    M, T = colour_matrix(**params)
    expected = np.clip(np.rint(pixels.astype(np.float64) @ M.T + T), 0, 255)
    fixed = run([{"op": "color", **params}], encoded)[0]
    assert np.abs(fixed.astype(int) - expected).max() <= 1
    # the per-sample path (random ranges) builds the same matrix in the DALI graph
    tight = {k: [v, v + 1e-4] for k, v in params.items()}
    drawn = run([{"op": "color", **tight}], encoded)[0]
    assert np.abs(drawn.astype(int) - expected).max() <= 1
    # followed by normalize: the same map, saturated to 0..255, then (x/255 - mean) / std
    fused = run([{"op": "color", **tight}, {"op": "normalize", "mean": [0.5] * 3, "std": [0.2] * 3}], encoded)[0]
    np.testing.assert_allclose(fused, ((np.clip(pixels.astype(np.float64) @ M.T + T, 0, 255) / 255 - 0.5) / 0.2)
                               .transpose(2, 0, 1), atol=0.05)
