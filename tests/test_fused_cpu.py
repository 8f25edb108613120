"""The fused CPU kernel (augforge.augment.fused_cpu): against DALI's own resize, the colour algebra, and
inside real DALI pipelines against DALI's own ops."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from augforge.augment import fused_cpu
from augforge.augment.fused_cpu import PARAM_LAYOUT, identity_params, resample, taps
from augforge.augment.image import ImageAugmenter, fused_run
from test_image_augment import ops, run


class DaliResize:
    """DALI's own CPU resize (float output, per-sample sizes): the reference the kernel must match."""

    def __init__(self, antialias: bool) -> None:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=True, prefetch_queue_depth=1)
        def pipe():
            img = fn.external_source(name="img", dtype=types.UINT8, ndim=3, layout="HWC")
            height = fn.external_source(name="h", dtype=types.FLOAT, ndim=0)
            width = fn.external_source(name="w", dtype=types.FLOAT, ndim=0)
            return fn.resize(img, resize_x=width, resize_y=height, antialias=antialias, dtype=types.FLOAT)

        self.pipe = pipe()
        self.pipe.build()

    def __call__(self, img: np.ndarray, size) -> np.ndarray:
        self.pipe.feed_input("img", [img])
        self.pipe.feed_input("h", [np.float32(size[0])])
        self.pipe.feed_input("w", [np.float32(size[1])])
        (out,) = self.pipe.run()
        return np.array(out[0])


@pytest.fixture(scope="module")
def dali_resize():
    return {aa: DaliResize(aa) for aa in (False, True)}


@pytest.fixture(scope="module")
def photo(sample_images):
    pixels = np.ascontiguousarray(sample_images[1][60:180, 100:260])  # 120x160 of the flower
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ih=st.integers(1, 90), iw=st.integers(1, 90), oh=st.integers(1, 90), ow=st.integers(1, 90),
       channels=st.sampled_from([1, 3]), antialias=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_resamples_exactly_as_dalis_resize(dali_resize, ih, iw, oh, ow, channels, antialias, seed):
    img = np.random.default_rng(seed).integers(0, 256, size=(ih, iw, channels), dtype=np.uint8)
    prm = identity_params()
    prm[PARAM_LAYOUT["antialias"]] = float(antialias)
    ours = resample(img, (oh, ow), prm)
    theirs = dali_resize[antialias](img, (oh, ow))
    assert ours.shape == theirs.shape == (oh, ow, channels)
    np.testing.assert_allclose(ours, theirs, atol=0.02)


def test_known_values_of_a_two_times_upscale():
    # pixel centres: output x samples input (x + 0.5) / 2 - 0.5; edges clamp
    img = np.array([[[0], [100]]], dtype=np.uint8)  # 1 x 2
    out = resample(img, (1, 4), identity_params())[0, :, 0]
    np.testing.assert_allclose(out, [0, 25, 75, 100], atol=1e-4)


@settings(max_examples=200, deadline=None)
@given(n_in=st.integers(1, 500), n_out=st.integers(1, 500), antialias=st.booleans(), reverse=st.booleans())
def test_taps_are_in_range_and_weights_sum_to_one(n_in, n_out, antialias, reverse):
    first, weight = taps(n_in, n_out, antialias, reverse)
    assert first.shape == (n_out,) and weight.shape[0] == n_out
    assert int(first.max()) + weight.shape[1] <= n_in
    assert (weight >= 0).all()
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, atol=1e-5)
    if reverse:
        plain = taps(n_in, n_out, antialias, False)
        assert np.array_equal(first, plain[0][::-1]) and np.array_equal(weight, plain[1][::-1])


def test_flips_colour_and_normalize_follow_their_definitions(photo):
    pixels, _ = photo
    rng = np.random.default_rng(3)
    plain = resample(pixels, (50, 70), identity_params())
    prm = identity_params()
    prm[PARAM_LAYOUT["hflip"]] = prm[PARAM_LAYOUT["vflip"]] = 1.0
    assert np.array_equal(resample(pixels, (50, 70), prm), plain[::-1, ::-1])
    M, T = np.eye(3) * 1.8 + rng.uniform(-0.2, 0.2, (3, 3)), rng.uniform(-40, 40, 3)
    S, U = rng.uniform(0.01, 0.02, 3), rng.uniform(-2, 0, 3)
    prm = identity_params()
    prm[PARAM_LAYOUT["M"]], prm[PARAM_LAYOUT["T"]] = M.ravel(), T
    prm[PARAM_LAYOUT["S"]], prm[PARAM_LAYOUT["U"]] = S, U
    expected = np.clip(plain.astype(np.float64) @ M.T + T, 0, 255) * S + U  # colour saturates before normalize
    np.testing.assert_allclose(resample(pixels, (50, 70), prm), expected, atol=1e-3)
    mapped = plain.astype(np.float64) @ M.T + T
    assert mapped.max() > 255 and mapped.min() < 0  # the clamp was exercised at both ends


def test_uint8_output_is_the_rounded_float(photo):
    pixels, _ = photo
    prm = identity_params()
    prm[PARAM_LAYOUT["M"]] = (np.eye(3) * 1.7).ravel()  # some pixels saturate
    as_float = resample(pixels, (97, 33), prm)
    as_uint8 = resample(pixels, (97, 33), prm, dtype=np.uint8)
    rounded = np.clip(np.floor(as_float.astype(np.float64) + 0.5), 0, 255)
    assert np.abs(as_uint8.astype(int) - rounded).max() <= 1  # float ties may round either way
    assert np.mean(as_uint8 == rounded) > 0.999


def test_which_runs_the_kernel_takes():
    chain = ops({"op": "resize", "size": 32}, {"op": "hflip", "p": 0.5}, {"op": "color", "brightness": [0.5, 1.5]},
                {"op": "normalize"})
    assert fused_run(list(chain), 0, None) == 4
    owed = ((32, 32), True)  # a resize owed by the decoder's crop: a second resize starts a new run
    assert fused_run(list(chain), 0, owed) == 0 and fused_run(list(chain), 1, owed) == 3
    assert fused_run(list(ops({"op": "hflip"}, {"op": "vflip"})), 0, None) is None  # flips alone stay DALI's
    assert fused_run(list(ops({"op": "hflip"}, {"op": "vflip"})), 0, owed) == 2
    # the owed resize is the kernel's whatever follows it, and at the end of the op list too
    assert fused_run(list(ops({"op": "rotate", "degrees": 10})), 0, owed) == 0
    assert fused_run([], 0, owed) == 0 and fused_run([], 0, None) is None
    colours = list(ops({"op": "color", "brightness": 1.2}, {"op": "color", "contrast": 0.8}))
    assert fused_run(colours, 0, None) == 1  # one colour map per pass
    mixed = list(ops({"op": "resize", "size": 40}, {"op": "rotate", "degrees": 10}, {"op": "resize", "size": 32},
                     {"op": "vflip"}))
    assert fused_run(mixed, 0, None) == 1 and fused_run(mixed, 1, None) is None and fused_run(mixed, 2, None) == 2
    assert fused_run(list(ops({"op": "resize", "size": 40, "keep_aspect": True})), 0, None) is None
    assert fused_run(list(ops({"op": "resize", "size": 40, "p": 0.5})), 0, None) is None


@pytest.mark.parametrize("entries, atol", [
    ([{"op": "resize", "size": [50, 70]}, {"op": "hflip"},
      {"op": "color", "brightness": 1.2, "contrast": 0.9, "saturation": 0.6, "hue": 20}], 1),
    ([{"op": "resize", "size": [150, 90]}, {"op": "vflip"}, {"op": "normalize"}], 0.02),
    ([{"op": "random_resized_crop", "size": [60, 80], "scale": [1, 1], "ratio": [4 / 3, 4 / 3]}, {"op": "hflip"},
      {"op": "color", "brightness": 0.8, "hue": -30}, {"op": "normalize"}], 0.03),
    # the crop's owed resize goes through the kernel even when DALI's own op comes next
    ([{"op": "random_resized_crop", "size": [60, 80], "scale": [1, 1], "ratio": [4 / 3, 4 / 3]},
      {"op": "rotate", "degrees": [5, 5]}], 1),
])
def test_fused_pipeline_equals_dalis_own_ops(photo, entries, atol):
    _, encoded = photo
    fused, own = run(entries, encoded)[0], run(entries, encoded, fuse=False)[0]
    assert fused.shape == own.shape and fused.dtype == own.dtype
    # DALI's own chain rounds to uint8 after the resize and after the colour map; the kernel does not
    assert np.abs(fused.astype(np.float64) - own.astype(np.float64)).max() <= atol


def test_per_sample_coins_pick_each_image_its_own_flip_and_colour(photo):
    pixels, encoded = photo
    colour = {"brightness": 1.3, "contrast": 0.7, "saturation": 0.5, "hue": 40.0}
    outs = run([{"op": "resize", "size": [40, 56]}, {"op": "hflip", "p": 0.5}, {"op": "color", "p": 0.5, **colour}],
               encoded, n=48, seed=11)
    from augforge.augment.colour import colour_matrix

    M, T = colour_matrix(**colour)
    variants = {}
    for flip in (0.0, 1.0):
        for coloured in (False, True):
            prm = identity_params()
            prm[PARAM_LAYOUT["hflip"]], prm[PARAM_LAYOUT["antialias"]] = flip, 1.0  # resize antialiases
            if coloured:
                prm[PARAM_LAYOUT["M"]], prm[PARAM_LAYOUT["T"]] = M.ravel(), T
            variants[flip, coloured] = resample(pixels, (40, 56), prm, dtype=np.uint8).astype(int)
    seen = []
    for out in outs:
        match = [key for key, v in variants.items() if np.abs(out.astype(int) - v).max() <= 1]
        assert len(match) == 1  # every output is exactly one of the four combinations
        seen.append(match[0])
    assert set(seen) == set(variants)  # and each combination is drawn
    again = run([{"op": "resize", "size": [40, 56]}, {"op": "hflip", "p": 0.5}, {"op": "color", "p": 0.5, **colour}],
                encoded, n=48, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(outs, again))


def test_grey_images_go_through_the_kernel(digits_lt):
    from augforge.datasets import open_dataset

    encoded = open_dataset(digits_lt).take([0, 1, 2]).column("image").to_pylist()
    chain = ops({"op": "resize", "size": 16}, {"op": "normalize", "mean": [0.5], "std": [0.25]}, color="gray")
    fused = ImageAugmenter(chain, color="gray", device="cpu").augment(encoded)
    own = ImageAugmenter(chain, color="gray", device="cpu", fuse=False).augment(encoded)
    assert all(f.shape == (1, 16, 16) and f.dtype == np.float32 for f in fused)
    assert max(np.abs(f - o).max() for f, o in zip(fused, own)) <= 0.02


def test_the_shape_function_is_made_once_per_size():
    assert fused_cpu._setup(32, 48) == fused_cpu._setup(32, 48) != fused_cpu._setup(48, 32)
