"""Dense targets: the canonical model's Arrow columns, and COCO / YOLO / VOC / LabelMe read and written back on
composed scenes with exact ground truth (benchmarks/composed_scenes.py); bad annotations named in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from augforge.datasets.formats.coco import read_coco, write_coco
from augforge.datasets.formats.labelme import CIRCLE_POINTS, read_labelme
from augforge.datasets.formats.voc import read_voc, write_voc
from augforge.datasets.formats.yolo import read_yolo, write_yolo
from augforge.datasets.targets import (Instances, from_columns, instance_mask, mask_box, polygon_mask, rle_encode,
                                       target_fields, to_columns)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def _same_instances(a, b, width, height, *, box_tol=1e-9, masks=True, keypoints=True):
    """The instances of ``a`` and ``b`` match: classes, boxes (to ``box_tol`` of the image size), crowd, masks
    pixel for pixel after rasterising, keypoints."""
    assert a.classes.tolist() == b.classes.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_tol * max(width, height), rtol=0)
    assert a.crowd.tolist() == b.crowd.tolist()
    if masks:
        for i in range(len(a)):
            ma, mb = instance_mask(a, i, height, width), instance_mask(b, i, height, width)
            assert (ma is None) == (mb is None)
            if ma is not None:
                assert (ma == mb).all(), f"instance {i}: {int((ma != mb).sum())} pixels differ"
    if keypoints:
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=box_tol * max(width, height), rtol=0)


def _with_rle_and_crowd(dense):
    """The first image's second instance as an RLE mask (no polygon) and marked crowd: every kind of target."""
    image = dense.images[0]
    inst = image.instances
    mask = polygon_mask(inst.polygons[1], image.height, image.width)
    inst.masks[1], inst.polygons[1] = rle_encode(mask), []
    inst.boxes[1] = mask_box(mask)
    inst.crowd[1] = True
    return dense


def test_arrow_columns_hold_every_target_exactly():
    _, dense = composed_scenes.scenes(4, seed=1)
    dense = _with_rle_and_crowd(dense)
    rows = [image.instances for image in dense.images]
    columns = to_columns(rows, [(i.width, i.height) for i in dense.images])
    table = pa.table(columns, schema=pa.schema(target_fields()))
    back = from_columns(table)
    for image, got in zip(dense.images, back):
        _same_instances(image.instances, got, image.width, image.height)
        assert got.origin == image.instances.origin


def test_coco_round_trip_keeps_boxes_polygons_masks_keypoints_and_crowd(tmp_path):
    _, dense = composed_scenes.scenes(6, seed=2)
    dense = _with_rle_and_crowd(dense)
    write_coco(dense, tmp_path / "annotations.json")
    back = read_coco(tmp_path / "annotations.json")
    assert back.problems == [] and back.classes == dense.classes and back.keypoint_names == dense.keypoint_names
    assert [i.file for i in back.images] == [i.file for i in dense.images]
    for want, got in zip(dense.images, back.images):
        _same_instances(want.instances, got.instances, want.width, want.height)
    data = json.loads((tmp_path / "annotations.json").read_text())
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"], dict)  # the mask as compressed RLE
    # area: the mask's pixels, as COCO's evaluation reads it
    first = data["annotations"][0]
    assert first["area"] == float(polygon_mask(dense.images[0].instances.polygons[0], 64, 96).sum())


def _save_images(root: Path, images, dense):
    root.mkdir(parents=True, exist_ok=True)
    for image, target in zip(images, dense.images):
        Image.fromarray(image).save(root / target.file)


def test_yolo_round_trip_keeps_boxes_polygons_and_keypoints(tmp_path):
    images, dense = composed_scenes.scenes(5, seed=3, with_keypoints=False)
    _save_images(tmp_path / "yolo" / "images", images, dense)
    write_yolo(dense, tmp_path / "yolo")
    back = read_yolo(tmp_path / "yolo")
    assert back.problems == [] and back.classes == dense.classes
    for want, got in zip(dense.images, back.images):
        _same_instances(want.instances, got.instances, want.width, want.height, box_tol=1e-6, keypoints=False)
    # pose: a box and keypoints per line (kpt_shape), flip_idx from the flip pairs
    images, dense = composed_scenes.scenes(3, seed=4)
    _save_images(tmp_path / "pose" / "images", images, dense)
    write_yolo(dense, tmp_path / "pose")
    back = read_yolo(tmp_path / "pose")
    config = (tmp_path / "pose" / "data.yaml").read_text()
    assert "kpt_shape:\n- 2\n- 3" in config and "flip_idx:\n- 1\n- 0" in config
    for want, got in zip(dense.images, back.images):
        _same_instances(want.instances, got.instances, want.width, want.height, box_tol=1e-6, masks=False)


def test_voc_round_trip_on_whole_pixel_boxes(tmp_path):
    _, dense = composed_scenes.scenes(4, seed=5, with_keypoints=False)
    for image in dense.images:  # VOC stores whole 1-based pixel indices
        image.instances.boxes[:] = np.round(image.instances.boxes)
    dense.images[0].instances.crowd[0] = True  # <difficult>1</difficult>
    write_voc(dense, tmp_path)
    back = read_voc(tmp_path, classes=dense.classes)
    assert back.problems == []
    for want, got in zip(dense.images, back.images):
        _same_instances(want.instances, got.instances, want.width, want.height, masks=False, keypoints=False)
    xml = (tmp_path / "Annotations" / "scene-000.xml").read_text()
    x0 = int(dense.images[0].instances.boxes[0][0])
    assert f"<xmin>{x0 + 1}</xmin>" in xml and "<difficult>1</difficult>" in xml


def test_labelme_rectangles_polygons_circles_and_groups(tmp_path):
    Image.new("RGB", (80, 60)).save(tmp_path / "a.png")
    shapes = [{"label": "cat", "shape_type": "rectangle", "points": [[30, 40], [10, 5]], "group_id": None},
              {"label": "dog", "shape_type": "polygon", "points": [[1, 1], [20, 2], [10, 30]], "group_id": 7},
              {"label": "dog", "shape_type": "polygon", "points": [[40, 40], [50, 41], [45, 55]], "group_id": 7},
              {"label": "cat", "shape_type": "circle", "points": [[60, 30], [60, 40]], "group_id": None},
              {"label": "cat", "shape_type": "point", "points": [[5, 5]], "group_id": None}]
    (tmp_path / "a.json").write_text(json.dumps({"imagePath": "a.png", "imageWidth": 80, "imageHeight": 60,
                                                 "shapes": shapes}))
    dense = read_labelme(tmp_path)
    assert dense.classes == ["cat", "dog"]
    inst = dense.images[0].instances
    assert inst.classes.tolist() == [0, 1, 0]
    np.testing.assert_allclose(inst.boxes[0], [10, 5, 30, 40])
    np.testing.assert_allclose(inst.boxes[1], [1, 1, 50, 55])  # the group's two parts: one instance
    assert len(inst.polygons[1]) == 2 and len(inst.polygons[2][0]) == 2 * CIRCLE_POINTS
    np.testing.assert_allclose(inst.boxes[2], [50, 20, 70, 40], atol=1e-9)
    assert dense.problems == ["a.json#shape 5: a point shape of 1 point(s) is not an instance (rectangle, "
                              "polygon, circle); not read"]


def test_bad_coco_annotations_are_named_one_line_each_and_the_rest_kept(tmp_path):
    good = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 10], "segmentation": [], "iscrowd": 0}
    bad = [{"id": 2, "image_id": 1, "category_id": 3, "bbox": [90, 2, 30, 10]},                    # outside
           {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, -4, 10]},                     # negative width
           {"id": 4, "image_id": 1, "category_id": 99, "bbox": [5, 5, 4, 10]},                     # unknown category
           {"id": 5, "image_id": 1, "category_id": 3, "bbox": [5, 5, 4, 10], "segmentation": [[1, 1, 5, 5]]},
           {"id": 6, "image_id": 1, "category_id": 3, "bbox": [5, 5, 4, 10],
            "segmentation": {"size": [10, 10], "counts": "PP1"}},                                   # wrong size
           {"id": 7, "image_id": 42, "category_id": 3, "bbox": [5, 5, 4, 10]}]                     # unknown image
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png", "width": 100, "height": 50}],
                                "annotations": [good, *bad], "categories": [{"id": 3, "name": "thing"}]}))
    dense = read_coco(path)
    assert len(dense.images[0].instances) == 1 and dense.images[0].instances.origin == ["bad.json#annotation 1"]
    assert dense.problems == [
        "bad.json#annotation 4: unknown category id 99",
        "bad.json#annotation 7: unknown image id 42",
        "bad.json#annotation 6: mask is 10x10; the image is 100x50",
        "bad.json#annotation 2: box [90, 2, 120, 12] lies outside the 100x50 image",
        "bad.json#annotation 3: box [5, 5, 1, 15] has width -4 and height 10; both must be positive",
        "bad.json#annotation 5: a polygon of 2 point(s) (4 numbers); a polygon needs at least 3 points"]


def test_bad_yolo_lines_are_named_with_file_and_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "a.png")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5\n5 0.5 0.5 0.2 0.2\nx 1 2 3 4\n")
    dense = read_yolo(tmp_path)
    assert dense.images[0].instances.classes.tolist() == [0]
    np.testing.assert_allclose(dense.images[0].instances.boxes[0], [16, 8, 24, 12])
    assert dense.problems == [
        "labels/a.txt:2: 2 numbers after the class; a box has 4, a polygon at least 6 (an even count)",
        "labels/a.txt:4: not numbers: 'x 1 2 3 4'",
        "labels/a.txt:3: unknown category (class index 5)"]


def test_a_folder_that_is_not_the_format_says_so_in_one_line(tmp_path):
    from augforge.errors import AugforgeError

    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(AugforgeError, match="not COCO JSON: expected the keys images, annotations and categories"):
        read_coco(tmp_path / "x.json")
    with pytest.raises(AugforgeError, match="not a YOLO folder: no images/"):
        read_yolo(tmp_path)
    with pytest.raises(AugforgeError, match="not a VOC folder: no Annotations"):
        read_voc(tmp_path)


boxes = st.tuples(st.floats(0, 50), st.floats(0, 30), st.floats(1, 40), st.floats(1, 30)).map(
    lambda b: (b[0], b[1], min(100.0, b[0] + b[2]), min(60.0, b[1] + b[3])))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), boxes, st.booleans()), max_size=6))
def test_coco_written_then_read_is_the_identity(tmp_path_factory, items):
    """Any boxes (and crowd flags) inside a 100x60 image come back from COCO exactly."""
    from augforge.datasets.formats.dense import DenseSet, ImageTargets

    inst = Instances(np.asarray([c for c, _, _ in items], np.int64),
                     np.asarray([b for _, b, _ in items]).reshape(-1, 4),
                     crowd=np.asarray([k for *_, k in items], bool))
    dense = DenseSet(["a", "b", "c"], [ImageTargets("x.png", 100, 60, inst)], Path("."))
    path = tmp_path_factory.mktemp("coco") / "a.json"
    write_coco(dense, path)
    back = read_coco(path).images[0].instances
    _same_instances(inst, back, 100, 60, masks=False, keypoints=False)
