"""The recipe's image ops on samples with dense targets (``augforge.augment.dense_ops``): geometry composes into one
transform that moves polygons, masks and keypoints exactly; pixel ops leave targets alone; occluding ops hide
instances and keypoints; policies that cannot carry targets are refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.augment.dense_ops import GEOMETRY_OPS, DenseAugment, erase_rect, op_matrix
from augforge.augment.image_ops import ALIASES, OPS
from augforge.augment.ops import check_op
from augforge.augment.target_geometry import FramePolicy, clip_polygon, polygon_area, transform_points
from augforge.checks import Checker
from augforge.datasets.targets import Instances, instance_mask, polygon_box, polygon_mask, rle_encode
from augforge.errors import AugforgeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def ops(*entries) -> tuple:
    checker = Checker("recipe.yaml")
    return tuple(check_op(checker, e, f"augment.image[{i}]", OPS, ALIASES) for i, e in enumerate(entries))


def _scene(seed: int = 0, objects: int = 4):
    return composed_scenes.scene(np.random.default_rng(seed), objects=objects, min_radius=8.0)


def _as_masks(instances: Instances, width: int, height: int) -> Instances:
    """The same instances with RLE masks instead of polygons (what a mask-only dataset holds)."""
    masks = [rle_encode(instance_mask(instances, i, height, width)) for i in range(len(instances))]
    return Instances(instances.classes, instances.boxes, [[] for _ in masks], masks, instances.keypoints,
                     instances.crowd, instances.origin)


def test_pixel_ops_change_pixels_and_leave_targets_exactly_as_they_were():
    image, instances = _scene(1)
    augment = DenseAugment(ops({"op": "color", "brightness": [0.5, 0.6], "hue": [20, 30]}, {"op": "grayscale"},
                               {"op": "gaussian_blur", "sigma": [1.0, 2.0]}))
    drawn = augment(np.random.default_rng(0), image, instances)
    out = drawn.moved.instances
    assert drawn.moved.image.shape == image.shape and np.abs(drawn.moved.image.astype(int) - image).mean() > 10
    np.testing.assert_array_equal(out.boxes, instances.boxes)
    np.testing.assert_array_equal(out.keypoints, instances.keypoints)
    for a, b in zip(out.polygons, instances.polygons):
        np.testing.assert_array_equal(a[0], b[0])
    assert out.classes.tolist() == instances.classes.tolist() and drawn.rejected == 0


def test_an_erased_instance_loses_visibility_its_keypoints_hide_and_the_policy_decides():
    image, instances = _scene(2, objects=2)
    cover = ops({"op": "cutout", "size": 400})  # larger than the image: everything is hidden
    dropped = DenseAugment(cover, FramePolicy(min_visibility=0.5))(np.random.default_rng(0), image, instances)
    assert len(dropped.moved.instances) == 0 and dropped.moved.lost.all()
    assert (dropped.moved.image == 0).all()
    kept = DenseAugment(cover, FramePolicy(min_visibility=0.5, on_lost="keep"))(np.random.default_rng(0), image,
                                                                                  instances)
    assert len(kept.moved.instances) == 2 and (kept.moved.visibility == 0).all()
    assert (kept.moved.instances.keypoints[..., 2] == 1).all()  # labelled, not visible (COCO's v = 1)
    np.testing.assert_array_equal(kept.moved.instances.boxes, instances.boxes)  # the object is still there
    # a partial erasure: each instance's hidden share is the share of its mask under the rectangle
    rng = np.random.default_rng(5)
    erasing = ops({"op": "random_erasing", "scale": [0.2, 0.3]})
    partial = DenseAugment(erasing, FramePolicy(on_lost="keep"))(rng, image, instances)
    x0, y0, x1, y1 = erase_rect(erasing[0], _replay(5), 96, 64)
    for i in range(2):
        mask = instance_mask(instances, i, 64, 96)
        assert partial.moved.visibility[i] == pytest.approx(1 - mask[y0:y1, x0:x1].sum() / mask.sum())
    assert (partial.moved.image[y0:y1, x0:x1] == 0).all()


def _replay(seed: int) -> np.random.Generator:
    """The generator a DenseAugment with one occluding op (p = 1) hands to ``erase_rect``: after the torch
    seed it draws first."""
    rng = np.random.default_rng(seed)
    rng.integers(2**63 - 1)
    return rng


def test_reject_sample_redraws_an_erasure_that_hides_an_instance():
    image, instances = _scene(3, objects=3)
    augment = DenseAugment(ops({"op": "random_erasing", "scale": [0.3, 0.33]}),
                           FramePolicy(min_visibility=0.9, on_lost="reject_sample"), attempts=50)
    drawn = augment(np.random.default_rng(1), image, instances)
    assert len(drawn.moved.instances) == 3 and (drawn.moved.visibility >= 0.9).all()


@pytest.mark.parametrize("name", ["auto_augment", "rand_augment", "trivial_augment"])
def test_policies_whose_sub_ops_cannot_move_targets_are_refused_by_name(name):
    with pytest.raises(AugforgeError, match=f"augment.image\\[1\\].op: {name} is refused on a detection or "
                                            "segmentation set"):
        DenseAugment(ops({"op": "hflip"}, {"op": name}))


def test_each_geometry_op_matrix_matches_its_image_op():
    rng = np.random.default_rng(0)
    center = ops({"op": "center_crop", "size": [20, 30]})[0]
    matrix, size = op_matrix(center, rng, 100, 60)
    assert size == (30, 20)
    np.testing.assert_allclose(transform_points([[35, 20]], matrix), [[0, 0]])  # the window starts at (35, 20)
    pad = ops({"op": "pad", "padding": 4})[0]
    matrix, size = op_matrix(pad, rng, 10, 8)
    assert size == (18, 16) and transform_points([[0, 0]], matrix).tolist() == [[4, 4]]
    resize = ops({"op": "resize", "size": [32, 32], "keep_aspect": True})[0]
    assert op_matrix(resize, rng, 100, 50)[1] == (64, 32)  # the shorter side to 32
    expand = ops({"op": "rotate", "degrees": [90, 90], "expand": True})[0]
    matrix, size = op_matrix(expand, rng, 100, 50)
    assert size == (50, 100)
    corners = transform_points([[0, 0], [100, 0], [100, 50], [0, 50]], matrix)
    np.testing.assert_allclose(corners.min(0), [0, 0], atol=1e-9)
    np.testing.assert_allclose(corners.max(0), [50, 100], atol=1e-9)


def test_object_aware_crops_keep_enough_of_some_instance():
    image, instances = _scene(4, objects=1)
    augment = DenseAugment(ops({"op": "random_crop", "size": [40, 40]}), min_coverage=0.8)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        matrix, size = augment.geometry(rng, 96, 64, instances)
        ring = clip_polygon(transform_points(instances.polygons[0][0], matrix), *size)
        box = polygon_box([transform_points(instances.polygons[0][0], matrix)])
        kept_box = (min(box[2], 40) - max(box[0], 0)) * (min(box[3], 40) - max(box[1], 0))
        assert kept_box / ((box[2] - box[0]) * (box[3] - box[1])) >= 0.8 - 1e-9
        assert len(ring) >= 3


GEOMETRY_ENTRIES = st.sampled_from([
    {"op": "random_resized_crop", "size": [40, 56], "scale": [0.3, 1.0]}, {"op": "random_crop", "size": [48, 48]},
    {"op": "center_crop", "size": [56, 80]}, {"op": "resize", "size": [80, 120]}, {"op": "pad", "padding": 6},
    {"op": "rotate", "degrees": 40}, {"op": "rotate", "degrees": 30, "expand": True}, {"op": "hflip", "p": 0.5},
    {"op": "vflip", "p": 0.5}])


@settings(max_examples=25, deadline=None)
@given(entries=st.lists(GEOMETRY_ENTRIES, min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_random_compositions_move_polygons_masks_and_keypoints_exactly(entries, seed):
    image, instances = _scene(seed % 7, objects=3)
    augment = DenseAugment(ops(*entries, {"op": "color", "brightness": [0.8, 1.2]}), FramePolicy(on_lost="keep"),
                           flip_pairs=((0, 1),))
    assert all(op.name in GEOMETRY_OPS for op in augment.ops[:-1])
    matrix, size = augment.geometry(np.random.default_rng(seed), 96, 64, instances)
    drawn = augment(np.random.default_rng(seed), image, instances)
    out = drawn.moved.instances
    assert drawn.moved.image.shape == (size[1], size[0], 3)
    masked = augment(np.random.default_rng(seed), image, _as_masks(instances, 96, 64)).moved.instances
    for i in range(len(instances)):
        moved = transform_points(instances.polygons[i][0], matrix)
        ring = clip_polygon(moved, *size)
        visible = polygon_area(ring) / polygon_area(moved)
        assert drawn.moved.visibility[i] == pytest.approx(visible, abs=1e-9)
        if visible == 0:
            continue
        np.testing.assert_allclose(out.polygons[i][0].reshape(-1, 2), ring, atol=1e-6)
        np.testing.assert_allclose(out.boxes[i], polygon_box([ring]), atol=1e-6)
        points = transform_points(instances.keypoints[i, :, :2], matrix)
        if np.linalg.det(matrix[:2, :2]) < 0:
            points = points[::-1]
        np.testing.assert_allclose(out.keypoints[i, :, :2], points, atol=1e-6)
        exact = polygon_mask([ring.reshape(-1)], size[1], size[0])
        warped = instance_mask(masked, i, size[1], size[0])
        if exact.sum() >= 150:  # a mask warped with the pixels agrees with the exactly moved polygon
            iou = (exact & warped).sum() / (exact | warped).sum()
            assert iou >= 0.85, (entries, i, iou)
