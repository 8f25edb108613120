"""Image-level labels (multilabel): LabelMe's flags, from Debian's labelme-examples (its classification example)
and from folders made here with several flags an image, ingested, reported (images per label, co-occurrence),
kept through a build and streamed as multi-hot vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import IMAGE_LABELS
from augforge.pipelines.dense_loader import open_dense_loader

CLASSIFICATION = Path("/usr/share/doc/labelme-examples/examples/classification/data_annotated")
FLAGS = [{"cat": True, "dog": False, "sofa": True}, {"cat": False, "dog": True, "sofa": True},
         {"cat": True, "dog": True, "sofa": False}, {"cat": False, "dog": False, "sofa": True},
         {"cat": False, "dog": False, "sofa": False}, {"cat": True, "dog": False, "sofa": False}]


def _rows(path) -> dict:
    data = Dataset(path, "all")
    return data.take(np.arange(len(data)), ["id", "label", IMAGE_LABELS]).to_pydict()


def test_labelme_flags_are_image_level_labels(tmp_path):
    assert main(["ingest", str(CLASSIFICATION), str(tmp_path / "data"), "-q"]) == 0
    rows = _rows(tmp_path / "data")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["payload_info"]["targets"]["classes"] == ["cat", "dog"]  # __ignore__ is no label
    truth = {f"{f.stem}.jpg": [k for k, on in json.loads(f.read_text())["flags"].items() if on and k != "__ignore__"]
             for f in CLASSIFICATION.glob("*.json")}
    assert {i: [["cat", "dog"][c] for c in labels] for i, labels in zip(rows["id"], rows[IMAGE_LABELS])} == truth


def _flagged_set(tmp_path: Path) -> Path:
    """Six variants of the real photos with several flags each (cat, dog, sofa), as LabelMe files."""
    root = tmp_path / "flags"
    root.mkdir()
    photos = sorted(CLASSIFICATION.glob("*.jpg"))
    for n, flags in enumerate(FLAGS):
        pixels = np.asarray(Image.open(photos[n % 2])).copy()
        pixels[n, n] = 255 - pixels[n, n]  # six different files (a build drops exact duplicates)
        Image.fromarray(pixels).save(root / f"{n:02d}.png")
        (root / f"{n:02d}.json").write_text(json.dumps({
            "version": "4.0.0", "flags": {"__ignore__": False, **flags}, "shapes": [], "imagePath": f"{n:02d}.png",
            "imageData": None, "imageHeight": 480, "imageWidth": 640}))
    return root


def test_multilabel_report_build_and_stream(tmp_path, capsys):
    root = _flagged_set(tmp_path)
    capsys.readouterr()
    assert main(["report", str(root), "--split", "all", "--json"]) == 0
    section = json.loads(capsys.readouterr().out)["image_labels"]
    assert section["per_label"] == {"cat": 3, "dog": 2, "sofa": 3} and section["images_without_labels"] == 1
    assert section["labels_per_image"] == round(8 / 6, 4)
    assert {tuple(p["labels"]): p["images"] for p in section["co_occurrence"]} == \
        {("cat", "sofa"): 1, ("dog", "sofa"): 1, ("cat", "dog"): 1}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(root), "test_split": 0.0},
                                      "augment": {"copies": 1, "image": [{"op": "hflip"}, {"op": "resize",
                                                                                          "size": [60, 80]}]},
                                      "output": {"dir": str(tmp_path / "built"), "format": "jpeg"}}))
    assert main(["build", str(recipe), "-q"]) == 0
    rows = _rows(tmp_path / "built")
    by_id = dict(zip(rows["id"], rows[IMAGE_LABELS]))
    assert len(by_id) == 12 and all(by_id[f"{i}~a1"] == by_id[i] for i in by_id if "~a" not in i)
    images, targets = next(iter(open_dense_loader(tmp_path / "built", 12, split="all", shuffle=False)))
    names = ["cat", "dog", "sofa"]
    for row_id, target in zip(rows["id"], targets):
        expected = torch.tensor([float(i in by_id[row_id]) for i in range(3)])
        assert torch.equal(target["image_labels"], expected), (row_id, names)
    capsys.readouterr()
    assert main(["export-data", str(tmp_path / "built"), str(tmp_path / "coco"), "--format", "coco", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["not_written"]["image_labels"] == 16  # said, not silently lost
