"""Real annotated photos: Debian's labelme-examples (PASCAL VOC 2011 photos annotated in LabelMe, with LabelMe's
own COCO and VOC conversions and instance mask PNGs; GPL, installed by scripts/setup.sh, never copied here).
The same instances read from each format must agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from augforge.augment.dense_ops import DenseAugment
from augforge.augment.target_geometry import box_corners, clip_polygon, rotation, transform_points
from augforge.cli import main
from augforge.datasets.formats.coco import read_coco
from augforge.datasets.formats.labelme import read_labelme
from augforge.datasets.formats.voc import read_voc
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import Instances, from_columns, instance_mask, polygon_box
from augforge.pipelines.loader_ops import parse_ops

EXAMPLES = Path("/usr/share/doc/labelme-examples/examples")
SEGMENTATION = EXAMPLES / "instance_segmentation"
DETECTION = EXAMPLES / "bbox_detection"


def _classes(folder: Path) -> list[str]:
    """The classes of labelme's labels.txt, without its ``__ignore__`` and ``_background_`` entries."""
    return [c for c in (folder / "labels.txt").read_text().split() if c not in ("__ignore__", "_background_")]


def _by_file(dense) -> dict:
    return {Path(image.file).name: image for image in dense.images}


def test_labelme_polygons_and_labelme2coco_agree_on_real_photos():
    """LabelMe's JSON (read here) and the COCO file labelme2coco made from it: the same instances per image,
    classes, masks pixel for pixel, boxes to a pixel (labelme2coco takes the box from the mask's pixels)."""
    classes = _classes(SEGMENTATION)
    labelme = read_labelme(SEGMENTATION / "data_annotated", classes=classes)
    coco = read_coco(SEGMENTATION / "data_dataset_coco" / "annotations.json")
    assert all("__ignore__" in line for line in labelme.problems)  # labelme's ignore regions are named, not read
    assert coco.problems == []
    ours, theirs = _by_file(labelme), _by_file(coco)
    assert sorted(ours) == sorted(theirs) == ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    total = 0
    for name, image in ours.items():
        other = theirs[name]
        a, b = image.instances, other.instances
        assert [classes[c] for c in a.classes] == [coco.classes[c] for c in b.classes]
        for i in range(len(a)):
            mask_a = instance_mask(a, i, image.height, image.width)
            mask_b = instance_mask(b, i, other.height, other.width)
            assert (mask_a == mask_b).all()
            assert np.abs(a.boxes[i] - b.boxes[i]).max() <= 1.0
            total += 1
    assert total == 12


def test_instance_masks_match_labelmes_own_rendering():
    """Each instance's mask (its polygons rasterised by pycocotools, as COCO's tools do) against labelme2voc's
    object PNG (drawn by PIL, whose polygon fill also takes the pixels the outline touches: about half a pixel
    wider all round). Ours lies inside the drawn object (>= 0.97 of its pixels) and matches it with IoU >= 0.95
    on every instance of 1,000 pixels or more, >= 0.93 on all (the smallest, 815 pixels, where that boundary
    weighs most, is at 0.934)."""
    coco = read_coco(SEGMENTATION / "data_dataset_coco" / "annotations.json")
    ious = []
    for image in coco.images:
        objects = np.asarray(Image.open(SEGMENTATION / "data_dataset_voc" / "SegmentationObjectPNG" /
                                        f"{Path(image.file).stem}.png"))
        for i in range(len(image.instances)):
            mask = instance_mask(image.instances, i, image.height, image.width)
            drawn = objects == max((k for k in np.unique(objects) if k), key=lambda k: (mask & (objects == k)).sum())
            assert (mask & drawn).sum() / mask.sum() >= 0.97
            ious.append(((mask & drawn).sum() / (mask | drawn).sum(), mask.sum()))
    assert len(ious) == 12 and min(iou for iou, _ in ious) >= 0.93
    assert all(iou >= 0.95 for iou, pixels in ious if pixels >= 1000)


def test_labelme_rectangles_and_labelme2voc_agree_and_voc_reads_its_zero_based_corners():
    """The detection example: LabelMe rectangles against the VOC XML labelme2voc wrote from them. labelme2voc
    writes the rectangles' 0-based corners where VOC means 1-based pixel indices, so VOC's reading is one pixel
    left of and above LabelMe's at the top-left corner and equal at the bottom-right: exactly that, no more."""
    classes = _classes(DETECTION)
    labelme = _by_file(read_labelme(DETECTION / "data_annotated", classes=classes))
    voc = read_voc(DETECTION / "data_dataset_voc", classes=classes)
    assert voc.problems == []
    for name, image in _by_file(voc).items():
        a, b = labelme[name].instances, image.instances
        assert a.classes.tolist() == b.classes.tolist() and len(a) > 0
        np.testing.assert_allclose(b.boxes[:, :2], a.boxes[:, :2] - 1, atol=1e-9)
        np.testing.assert_allclose(b.boxes[:, 2:], a.boxes[:, 2:], atol=1e-9)


def test_real_coco_through_ingest_report_and_yolo_export(tmp_path, capsys):
    source = SEGMENTATION / "data_dataset_coco" / "annotations.json"
    assert main(["ingest", str(source), str(tmp_path / "data")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "data"), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["instances"]["instances"] == 12 and report["instances"]["per_class"]["person"]["instances"] >= 4
    assert main(["export-data", str(tmp_path / "data"), str(tmp_path / "yolo"), "--format", "yolo"]) == 0
    assert main(["ingest", str(tmp_path / "yolo"), str(tmp_path / "again")]) == 0
    first, again = Dataset(tmp_path / "data", "all"), Dataset(tmp_path / "again", "all")
    a = dict(zip(first.take(range(3), ["id"]).column("id").to_pylist(), from_columns(first.take(range(3)))))
    b = dict(zip(again.take(range(3), ["id"]).column("id").to_pylist(), from_columns(again.take(range(3)))))
    for row_id, inst in a.items():
        other = b[row_id]
        assert inst.classes.tolist() == other.classes.tolist()
        # YOLO holds each instance's first polygon ring: a box from it is tight to that ring
        for i in range(len(inst)):
            if len(inst.polygons[i]) == 1:
                np.testing.assert_allclose(other.boxes[i], inst.polygons[i][0].reshape(-1, 2).min(0).tolist() +
                                           inst.polygons[i][0].reshape(-1, 2).max(0).tolist(), atol=1e-3)


QUOKKA = Path(__file__).resolve().parents[1] / "build" / "quokka"  # taken out of imgaug's wheel by make setup


def _quokka():
    """imgaug's quokka photo (MIT) with its annotated box, outline polygon and seven named keypoints."""
    assert (QUOKKA / "quokka_annotations.json").is_file(), "run make setup: it takes the quokka out of imgaug's wheel"
    data = json.loads((QUOKKA / "quokka_annotations.json").read_text())
    image = np.asarray(Image.open(QUOKKA / "quokka.jpg").convert("RGB"))
    names = [k["label"] for k in data["keypoints"]]
    points = np.array([[k["x"], k["y"], 2.0] for k in data["keypoints"]])
    ring = np.array([[p["x"], p["y"]] for p in data["polygons"][0]["keypoints"]], dtype=np.float64).ravel()
    box = data["bounding_boxes"][0]
    instances = Instances(np.array([0]), np.array([[box["x1"], box["y1"], box["x2"], box["y2"]]]), [[ring]],
                          keypoints=points[None], origin=["quokka_annotations.json#0"])
    pairs = tuple((names.index(n), names.index(n.replace("_left", "_right"))) for n in names if n.endswith("_left"))
    return image, instances, names, pairs


def test_the_real_quokka_flips_with_its_left_and_right_and_turns_with_a_tight_box():
    image, instances, names, pairs = _quokka()
    height, width = image.shape[:2]
    assert len(pairs) == 3  # ears, eyes, paws
    # its annotated box and its outline agree (a box drawn by hand, within 5 px of the polygon's extent)
    np.testing.assert_allclose(polygon_box(instances.polygons[0]), instances.boxes[0], atol=5)
    flipped = DenseAugment(parse_ops([{"op": "hflip"}], "ops"), flip_pairs=pairs)(
        np.random.default_rng(0), image, instances).moved
    assert np.array_equal(flipped.image, image[:, ::-1])
    before, after = instances.keypoints[0], flipped.instances.keypoints[0]
    swap = {a: b for pair in pairs for a, b in (pair, pair[::-1])}
    for n in range(len(names)):  # each named point is the mirror of its partner (the nose of itself)
        assert after[n, 0] == width - before[swap.get(n, n), 0] and after[n, 1] == before[swap.get(n, n), 1]
    eye_left, eye_right = names.index("eye_left"), names.index("eye_right")
    assert (before[eye_left, 0] < before[eye_right, 0]) == (after[eye_left, 0] < after[eye_right, 0])
    turned = DenseAugment(parse_ops([{"op": "rotate", "degrees": [30, 30]}], "ops"))(
        np.random.default_rng(0), image, instances).moved
    ring = transform_points(instances.polygons[0][0], rotation(30, width, height))
    exact = polygon_box([clip_polygon(ring, width, height)])
    np.testing.assert_allclose(turned.instances.boxes[0], exact, atol=1e-6)  # from the outline: tight
    corners = polygon_box([transform_points(box_corners(instances.boxes[0]), rotation(30, width, height))])
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(exact) < 0.75 * area(corners)  # what rotating the box's corners alone would have given
