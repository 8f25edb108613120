"""Dense datasets from the command line: COCO / YOLO / VOC / LabelMe ingested into shards with their targets,
reported (instances per class, box sizes), and exported back, with the same instances after the round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augforge.cli import main
from augforge.datasets.formats.coco import read_coco
from augforge.datasets.reader import Dataset
from augforge.datasets.sources import open_source
from augforge.datasets.targets import from_columns, instance_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    """24 composed scenes as a COCO set (images/ beside annotations.json), and the truth by file name."""
    root = tmp_path_factory.mktemp("coco")
    dense = composed_scenes.write_coco_set(root, 24, seed=7)
    return root, {t.file: t for t in dense.images}


def _dataset_instances(path) -> dict:
    data = Dataset(path, "all")
    table = data.take(np.arange(len(data)))
    return dict(zip(table.column("id").to_pylist(), from_columns(table)))


def _assert_same(truth: dict, got: dict, box_tol: float = 1e-9, masks: bool = True) -> None:
    assert sorted(truth) == sorted(got)
    for name, target in truth.items():
        want, have = target.instances, got[name]
        assert want.classes.tolist() == have.classes.tolist()
        np.testing.assert_allclose(want.boxes, have.boxes, atol=box_tol * 96, rtol=0)
        for i in range(len(want) if masks else 0):
            assert (instance_mask(want, i, 64, 96) == instance_mask(have, i, 64, 96)).all()


def test_coco_ingest_report_export_and_ingest_again(coco_set, tmp_path, capsys):
    root, truth = coco_set
    assert main(["ingest", str(root / "annotations.json"), str(tmp_path / "data"), "--test-split", "0.25"]) == 0
    got = _dataset_instances(tmp_path / "data")
    _assert_same(truth, got)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["payload_info"]["targets"]["classes"] == composed_scenes.CLASSES
    assert manifest["payload_info"]["targets"]["keypoint_names"] == composed_scenes.KEYPOINTS
    # the row label is the image's rarest instance class (by instances over the whole set)
    source = open_source(root / "annotations.json")
    counts = source.instance_counts
    for target, label in zip(source.dense.images, source.labels()):
        assert label == min(set(target.instances.classes.tolist()), key=lambda c: (counts[c], c))

    capsys.readouterr()
    assert main(["report", str(tmp_path / "data"), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    section = report["instances"]
    assert section["instances"] == sum(len(t.instances) for t in truth.values())
    for c, name in enumerate(composed_scenes.CLASSES):
        assert section["per_class"][name]["instances"] == sum(int((t.instances.classes == c).sum())
                                                              for t in truth.values())
        assert section["per_class"][name]["images"] == sum(int(c in t.instances.classes) for t in truth.values())
    assert sum(section["box_sizes"].values()) == section["instances"]
    assert "detection or segmentation" in report["recommendation"]["reason"]

    assert main(["export-data", str(tmp_path / "data"), str(tmp_path / "coco-out"), "--format", "coco"]) == 0
    exported = read_coco(tmp_path / "coco-out" / "annotations.json")
    _assert_same(truth, {t.file: t.instances for t in exported.images})
    assert main(["ingest", str(tmp_path / "coco-out" / "annotations.json"), str(tmp_path / "again"),
                 "--test-split", "0.25"]) == 0
    _assert_same(truth, _dataset_instances(tmp_path / "again"))
    # the same rows in the same splits: the round trip changed nothing the split is planned on
    first, second = Dataset(tmp_path / "data", "test"), Dataset(tmp_path / "again", "test")
    assert sorted(first.to_polars(["id"])["id"]) == sorted(second.to_polars(["id"])["id"])


def test_yolo_and_voc_exports_ingest_back(coco_set, tmp_path):
    root, truth = coco_set
    assert main(["ingest", str(root / "annotations.json"), str(tmp_path / "data")]) == 0
    assert main(["export-data", str(tmp_path / "data"), str(tmp_path / "yolo"), "--format", "yolo"]) == 0
    assert (tmp_path / "yolo" / "images" / "scene-000.png").is_file()
    assert main(["ingest", str(tmp_path / "yolo"), str(tmp_path / "from-yolo")]) == 0
    _assert_same(truth, _dataset_instances(tmp_path / "from-yolo"), box_tol=1e-6, masks=False)
    assert main(["export-data", str(tmp_path / "data"), str(tmp_path / "voc"), "--format", "voc"]) == 0
    assert main(["ingest", str(tmp_path / "voc"), str(tmp_path / "from-voc")]) == 0
    got = _dataset_instances(tmp_path / "from-voc")
    for name, target in truth.items():  # VOC keeps whole pixels: each corner within half a pixel
        np.testing.assert_allclose(got[name].boxes, target.instances.boxes, atol=0.5 + 1e-9, rtol=0)


def test_bad_annotations_are_reported_and_an_export_refuses_what_it_cannot_do(coco_set, tmp_path, capsys):
    root, _ = coco_set
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"][0]["bbox"] = [90, 60, 20, 20]  # outside the 96x64 image
    data["annotations"][1]["category_id"] = 42
    (tmp_path / "images").symlink_to(root / "images")
    (tmp_path / "bad.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "bad.json"), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]["items"]
    assert {"path": "bad.json#annotation 2", "reason": "unknown category id 42"} in problems
    assert {"path": "bad.json#annotation 1", "reason": "box [90, 60, 110, 80] lies outside the 96x64 image"} in problems
    # a classification dataset has nothing to export; an existing folder is never written into
    assert main(["ingest", "digits", str(tmp_path / "digits")]) == 0
    capsys.readouterr()
    assert main(["export-data", str(tmp_path / "digits"), str(tmp_path / "x"), "--format", "coco"]) == 1
    assert "a classification dataset (no target columns)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_image_folder_whose_classes_look_like_a_layout_stays_an_image_folder(tmp_path):
    """Class folders named images/labels or Annotations (without YOLO's names file or VOC's XML) are classes."""
    from augforge.datasets.sources import ImageFolderSource

    for name in ("images", "labels", "Annotations"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8), 40).save(tmp_path / name / "a.png")
    assert isinstance(open_source(tmp_path), ImageFolderSource)


def test_what_classification_commands_cannot_do_with_a_detection_set_is_one_line(coco_set, tmp_path, capsys):
    root, _ = coco_set
    data = tmp_path / "data"
    assert main(["ingest", str(root / "annotations.json"), str(data), "-q"]) == 0
    recipe = tmp_path / "train.yaml"
    recipe.write_text(f"source:\n  path: {root / 'annotations.json'}\ntrain:\n  model: simple_cnn\n"
                      f"output:\n  dir: {tmp_path / 'out'}\n")
    cases = [(["balance", str(data), str(tmp_path / "bal"), "--strategy", "over"], "strategy over: a detection"),
             (["report", str(data), "--strategy", "over"], "--strategy: "),
             (["report", str(data), "--evaluate"], "--evaluate: "),
             (["train", str(recipe)], "augforge's trainer trains image, text and feature classifiers")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bal").exists() and not (tmp_path / "out").exists()


def test_audit_of_a_detection_set_checks_images_and_says_why_not_labels(coco_set, tmp_path, capsys):
    root, _ = coco_set
    data = tmp_path / "data"
    assert main(["ingest", str(root / "annotations.json"), str(data), "-q"]) == 0
    capsys.readouterr()
    assert main(["audit", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "label_issues" not in report and report["rows"] == 24
    assert "label issues are not checked on a detection or segmentation set" in report["near_duplicates"]["note"]
    assert report["near_duplicates"]["pairs"] == 0  # 24 distinct composed scenes


def test_audit_finds_duplicate_boxes_uncovered_masks_and_left_out_annotations(tmp_path, capsys):
    root = tmp_path / "coco"
    composed_scenes.write_coco_set(root, 8, seed=3, with_keypoints=False)
    data = json.loads((root / "annotations.json").read_text())
    anns = data["annotations"]
    next_id = max(a["id"] for a in anns) + 1
    twin = dict(anns[0], id=next_id)  # the same object annotated twice
    x, y, w, h = anns[1]["bbox"]
    anns[1]["bbox"] = [max(0, x - 10), max(0, y - 10), w + 20, h + 20]  # a box drawn around more than its mask
    flat = dict(anns[2], id=next_id + 1, bbox=[10, 10, 0, 5], segmentation=[])  # no area
    outside = dict(anns[3], id=next_id + 2, bbox=[90, 60, 30, 30], segmentation=[])  # beyond the 96x64 image
    anns += [twin, flat, outside]
    (root / "annotations.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["audit", str(root / "annotations.json"), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["annotations"]
    assert notes["duplicate_boxes"]["count"] == 1 and notes["duplicate_boxes"]["rows"][0]["iou"] == 1.0
    uncovered = notes["masks_not_covering_their_box"]
    widened = f"annotation {anns[1]['id']}"
    assert uncovered["count"] >= 1 and any(r["instance"].endswith(widened) for r in uncovered["rows"])
    assert notes["left_out"]["box_without_area"]["count"] == 1 and notes["left_out"]["box_outside_image"]["count"] == 1
    assert main(["audit", str(root / "annotations.json")]) == 0
    out = capsys.readouterr().out
    assert "duplicate boxes" in out and "box outside image 1" in out
