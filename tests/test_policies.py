"""Policies as values (``augforge.augment.policy``) and their torch path (``augforge.augment.policy_torch``): strings
parse in one place and print back canonically, every recipe list of image ops takes them, the torch primitives
do what DALI's do, and the policies run on grey images on both backends."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from augforge.augment import policy_torch as pt
from augforge.augment.image import ImageAugmenter
from augforge.augment.policy import Policy, parse_policy, policy_of
from augforge.augment.torch_ops import rotate as recipe_rotate
from augforge.augment.torch_pipeline import TorchImageAugmenter
from augforge.errors import AugforgeError
from augforge.pipelines.loader_ops import parse_ops
from augforge.recipe import RecipeError, parse_recipe


@given(st.integers(1, 14), st.integers(2, 100), st.data(), st.sampled_from([0.0, 0.5, 1.25, 3.0]))
@settings(max_examples=60, deadline=None)
def test_rand_strings_print_back_canonically(n, bins, data, mstd):
    m = data.draw(st.integers(0, bins - 1))
    policy = Policy("rand", bins=bins, n=n, m=m, mstd=mstd)
    text = str(policy)
    assert parse_policy(text) == policy and str(parse_policy(text.upper())) == text
    # parts after the family in any order
    shuffled = "rand-" + "-".join(reversed(text.split("-")[1:]))
    assert parse_policy(shuffled) == policy
    (op,) = parse_ops([text], "ops")
    assert policy_of(op) == text


@pytest.mark.parametrize("text, canonical", [
    ("trivial", "trivial"), ("trivial-wide", "trivial"), ("trivial-wide-b31", "trivial"),
    ("Trivial-Wide-B21", "trivial-wide-b21"), ("rand-n2-m9", "rand-n2-m9"), ("rand-m9-n2-b31", "rand-n2-m9"),
    ("rand-n2-m9-mstd0.5", "rand-n2-m9-mstd0.5"), ("rand-n2-m9-mstd0", "rand-n2-m9"), ("autoaug", "autoaug-imagenet"),
    ("autoaug-imagenet", "autoaug-imagenet"), ("none", "none"), (" none ", "none"),
])
def test_aliases_and_canonical_forms(text, canonical):
    assert str(parse_policy(text)) == canonical


@pytest.mark.parametrize("text, message", [
    ("rand-n2-m99", "'rand-n2-m99': M runs 0..30 with 31 bins, got 99"),
    ("rand-n2-m10-b10", "M runs 0..9 with 10 bins, got 10"),
    ("rand-n0-m9", "N (ops per image) runs 1..14, got 0"),
    ("rand-n2", "RandAugment needs M"),
    ("rand-n2-m9-n3", "n is given twice"),
    ("rand-n2.5-m9", "n must be a whole number"),
    ("rand-n2-m9-x4", "unexpected part 'x4'"),
    ("trivial-wide-b1", "B (magnitude bins) runs 2..100"),
    ("autoaug-cifar", "the AutoAugment policy augforge has is autoaug-imagenet"),
    ("augmix-m5-w4", "not a policy; policies are none, trivial"),
    ("", "expected a policy string"),
])
def test_bad_strings_are_refused_in_one_line(text, message):
    with pytest.raises(AugforgeError) as info:
        parse_policy(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def _recipe(augment=None, stream=None):
    data = {"source": {"path": "-"}}
    if augment is not None:
        data["augment"] = augment
    if stream is not None:
        data["train"] = {"stream": stream}
    return parse_recipe(data, "r.yaml")


def test_recipes_take_policies_in_every_op_list():
    r = _recipe({"mode": "online", "image": [{"op": "hflip"}, {"op": "normalize", "mean": [0.5], "std": [0.5]}],
                 "policy": "rand-n2-m9"})
    assert [op.name for op in r.augment.image] == ["hflip", "rand_augment", "normalize"]  # before normalize
    assert r.augment.image[1].params == {"n": 2, "m": 9, "bins": 31, "mstd": 0.0, "fill": 128}
    assert [op.name for op in _recipe(stream="trivial").run.stream] == ["trivial_augment"]
    assert [op.name for op in _recipe(stream=[{"op": "hflip"}, "autoaug"]).run.stream] == ["hflip", "auto_augment"]
    assert _recipe(stream="none").run.stream == ()
    assert [op.name for op in _recipe({"image": ["trivial"], "copies": 2}).augment.image] == ["trivial_augment"]
    with pytest.raises(RecipeError, match=r"^r.yaml: train.stream: 'rand-n2-m99': M runs 0..30 with 31 bins"):
        _recipe(stream="rand-n2-m99")
    with pytest.raises(RecipeError, match=r"^r.yaml: augment.image\[1\]: 'randaug': not a policy"):
        _recipe({"image": [{"op": "hflip"}, "randaug"], "copies": 1})
    with pytest.raises(RecipeError, match=r"augment.policy: expected a list of image ops or a policy string"):
        _recipe({"policy": 3, "mode": "online"})
    with pytest.raises(RecipeError, match=r"augment.image: expected a list of image ops or a policy string, got 0"):
        _recipe({"image": 0, "mode": "online"})
    assert _recipe({"policy": None, "mode": "online"}).augment.image == ()


def _ramp(c=1, h=16, w=16) -> torch.Tensor:
    return (torch.arange(c * h * w, dtype=torch.float32).reshape(c, h, w) % 256)


def test_the_torch_primitives_do_what_dalis_do():
    x = _ramp(1, 16, 16)
    assert torch.equal(pt.posterize(x, 4, 0), (x.long() & 0xF0).float())  # keeps the top 4 bits
    assert torch.equal(pt.posterize(x, 0, 0), (x.long() & 0x80).float())  # 0 bits remaps to 1, never a blank image
    assert torch.equal(pt.solarize(x, 128, 0), torch.where(x < 128, x, 255 - x))
    assert torch.equal(pt.solarize(x, 256, 0), x)  # threshold 256: unchanged
    assert torch.equal(pt.invert(x, None, 0), 255 - x)
    assert torch.equal(pt.solarize_add(x, 30, 0), torch.where(x < 128, x + 30, x))
    narrow = 50 + x / 255 * 50  # 50..100
    stretched = pt.auto_contrast(narrow, None, 0)
    assert float(stretched.min()) == 0 and float(stretched.max()) == pytest.approx(255)
    flat = torch.full((1, 8, 8), 77.0)
    assert torch.equal(pt.auto_contrast(flat, None, 0), flat) and torch.equal(pt.equalize(flat, None, 0), flat)
    skewed = ((x / 255) ** 2 * 255).round()  # most pixels dark
    equal = pt.equalize(skewed, None, 0)
    assert float(equal.max()) == 255 and float(equal.min()) == 0
    assert abs(float(equal.mean()) - 127.5) < abs(float(skewed.mean()) - 127.5) / 2  # the histogram spread out
    assert torch.equal(torch.argsort(equal.flatten(), stable=True), torch.argsort(skewed.flatten(), stable=True))
    assert torch.equal(pt.brightness(x, 1.0, 0), x) and torch.allclose(pt.contrast(x, 0.0, 0), x.mean().expand_as(x))
    colour = torch.stack([x[0], 255 - x[0], x[0] / 2])
    assert torch.allclose(pt.color(colour, 0.0, 0), pt.grey_of(colour).expand_as(colour))  # saturation 0: grey
    assert torch.equal(pt.color(x, 0.2, 0), x)  # nothing to desaturate on a grey image
    assert torch.allclose(pt.sharpness(x, 0.0, 0), x)
    assert torch.allclose(pt.shear_x(x, 0.0, 0), x, atol=1e-4) and torch.allclose(pt.translate_y(x, 0.0, 0), x,
                                                                                       atol=1e-4)


def test_the_torch_geometry_moves_pixels_as_stated():
    x = _ramp(1, 8, 8)
    moved = pt.translate_x(x, 0.25, 128.0)  # 2 pixels right, fill on the left
    assert torch.allclose(moved[:, :, 2:], x[:, :, :-2], atol=1e-3) and torch.all(moved[:, :, :2] == 128)
    down = pt.translate_y(x, -0.25, 0.0)  # 2 pixels up
    assert torch.allclose(down[:, :-2], x[:, 2:], atol=1e-3)
    sheared = pt.shear_x(x, 1.0, 0.0)  # about the top-left corner: row y moves right by y (pixel centres: y + 0.5)
    assert torch.allclose(sheared[:, 0, 1:], (x[:, 0, :-1] + x[:, 0, 1:]) / 2, atol=1e-3)
    square = torch.rand(3, 12, 12) * 255
    turned = pt.rotate(square, 30.0, 128.0)
    same = recipe_rotate(square, {"degrees": (30.0, 30.0), "fill": 128, "expand": False}, torch.Generator())
    assert torch.allclose(turned, same, atol=1e-3)  # the direction of augforge's rotate op
    # +90 degrees is a quarter turn counter-clockwise on screen (torch.rot90's direction)
    assert torch.allclose(pt.rotate(square, 90.0, 0.0), torch.rot90(square, 1, dims=(1, 2)), atol=1e-3)


def test_the_imagenet_policy_table_is_whole():
    assert len(pt.IMAGENET_POLICY) == 25
    for sub in pt.IMAGENET_POLICY:
        for name, p, magnitude in sub:
            assert name in pt.AA_OPS and 0 <= p <= 1
            assert (magnitude is None) == (pt.AA_OPS[name][1] is None)
            assert magnitude is None or 0 <= magnitude < pt.AA_BINS
    assert len(pt.TRIVIAL_WIDE) == len(pt.RAND) == 14


def test_magnitude_noise_spreads_the_strength():
    gen_zero, gen_noisy = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.rand(3, 24, 24) * 255
    plain = [pt.rand_augment(x, {"n": 1, "m": 0, "bins": 31, "mstd": 0.0, "fill": 128}, gen_zero) for _ in range(40)]
    noisy = [pt.rand_augment(x, {"n": 1, "m": 0, "bins": 31, "mstd": 8.0, "fill": 128}, gen_noisy) for _ in range(40)]
    change = [np.mean([float((o - x.round()).abs().mean()) for o in outs]) for outs in (plain, noisy)]
    assert change[1] > 2 * change[0]  # magnitude 0 barely changes an image; N(0, 8) clipped at 0 does


@pytest.fixture(scope="module")
def grey_png():
    pixels = (np.add.outer(np.arange(32), np.arange(32)) * 4 % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


@pytest.mark.parametrize("text", ["trivial", "rand-n2-m9", "autoaug-imagenet"])
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_policies_run_on_grey_images(grey_png, text, backend):
    pixels, encoded = grey_png
    ops = parse_ops([text], "ops")
    make = (lambda seed: TorchImageAugmenter(ops, seed=seed, device="cpu", color="gray")) if backend == "torch" else \
        (lambda seed: ImageAugmenter(ops, seed=seed, device="cpu", color="gray", batch_size=16))
    outs = make(1).augment([encoded] * 16)
    assert all(o.shape == (32, 32, 1) and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o[:, :, 0], pixels) for o in outs) >= 8  # most draws change the image
    assert all(np.array_equal(a, b) for a, b in zip(outs, make(1).augment([encoded] * 16)))


def test_magnitude_noise_is_refused_on_dali_in_one_line():
    with pytest.raises(AugforgeError, match=r"^ops\[0\]: rand_augment with mstd 0.5: DALI's RandAugment takes one "
                                            r"magnitude; magnitude noise runs on the torch backend"):
        ImageAugmenter(parse_ops(["rand-n2-m9-mstd0.5"], "ops"), device="cpu")
