"""Semantic masks (a class per pixel): real VOC masks from Debian's labelme-examples (labelme2voc's
SegmentationClassPNG, checked against its .npy arrays) ingested, reported, moved by the recipe's geometry with the
pixels (nearest pixel, ignore outside), on the CPU and on DALI, built, streamed and exported back."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from augforge.augment.dense_ops import DenseAugment
from augforge.augment.target_geometry import warp_image
from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import IGNORE, SEMANTIC, Instances, decode_semantic, polygon_mask
from augforge.pipelines.dense_loader import open_dense_loader
from augforge.pipelines.loader_ops import parse_ops

VOC = Path("/usr/share/doc/labelme-examples/examples/semantic_segmentation/data_dataset_voc")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def _maps(path: Path) -> dict:
    data = Dataset(path, "all")
    table = data.take(np.arange(len(data)), ["id", SEMANTIC])
    return {row_id: decode_semantic(m) for row_id, m in zip(table.column("id").to_pylist(),
                                                             table.column(SEMANTIC).to_pylist())}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    out = tmp_path_factory.mktemp("semantic") / "data"
    assert main(["ingest", str(VOC), str(out), "-q"]) == 0
    return out


def test_real_voc_masks_are_ingested_pixel_for_pixel_and_reported(ingested, capsys):
    maps = _maps(ingested)
    assert sorted(maps) == ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    for row_id, labels in maps.items():
        stem = Path(row_id).stem
        assert np.array_equal(labels, np.asarray(Image.open(VOC / "SegmentationClassPNG" / f"{stem}.png")))
        truth = np.load(VOC / "SegmentationClass" / f"{stem}.npy")  # labelme2voc's own array: -1 is ignore
        assert np.array_equal(labels, np.where(truth == -1, IGNORE, truth))
    manifest = json.loads((ingested / "manifest.json").read_text())
    targets = manifest["payload_info"]["targets"]
    assert targets["classes"] == (VOC / "class_names.txt").read_text().splitlines()
    assert targets["semantic"]["ignore"] == IGNORE
    capsys.readouterr()
    assert main(["report", str(ingested), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pixels = sum(np.bincount(m.ravel(), minlength=256) for m in maps.values())
    per_class = report["semantic"]["per_class"]
    assert [per_class[name]["pixels"] for name in targets["classes"]] == pixels[:21].tolist()
    assert report["semantic"]["ignored_pixels"] == int(pixels[IGNORE])
    assert per_class["person"]["images"] == 2 and per_class["bus"]["images"] == 1
    # each row's label: its rarest class (by the images holding it)
    labels = Dataset(ingested, "all").take(np.arange(3), ["id", "label"]).to_pydict()
    names = manifest["class_names"]
    assert dict(zip(labels["id"], [names[i] for i in labels["label"]]))["2011_000003.jpg"] == "bottle"


def test_bad_semantic_masks_are_one_line_each(tmp_path, capsys):
    root = tmp_path / "voc"
    shutil.copytree(VOC / "JPEGImages", root / "JPEGImages")
    shutil.copytree(VOC / "SegmentationClassPNG", root / "SegmentationClassPNG")
    shutil.copy(VOC / "class_names.txt", root / "class_names.txt")
    masks = root / "SegmentationClassPNG"
    Image.open(masks / "2011_000003.png").resize((50, 50)).save(masks / "2011_000003.png")  # another size
    Image.open(masks / "2011_000006.png").convert("RGB").save(masks / "2011_000006.png")  # colours
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(masks / "orphan.png")  # no image
    assert main(["report", str(root), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    reasons = {p["path"]: p["reason"] for p in report["problems"]["items"]}
    assert reasons["SegmentationClassPNG/2011_000003.png"] == "mask of 50x50 for an image of 500x338"
    assert "a colour mask" in reasons["SegmentationClassPNG/2011_000006.png"]
    assert "no image orphan.*" in reasons["SegmentationClassPNG/orphan.png"]
    assert report["semantic"]["images"] == 1


def _painted(seed: int):
    """A composed scene and its semantic map: each polygon painted with its class + 1 (0 is background)."""
    image, instances = composed_scenes.scene(np.random.default_rng(seed), objects=3, min_radius=10.0,
                                             with_keypoints=False)
    labels = np.zeros(image.shape[:2], np.uint8)
    for i in range(len(instances)):
        labels[polygon_mask(instances.polygons[i], *image.shape[:2])] = instances.classes[i] + 1
    return image, instances, labels


@pytest.mark.parametrize("entries", [[{"op": "rotate", "degrees": 35}],
                                     [{"op": "random_resized_crop", "size": [48, 64], "scale": [0.4, 1.0]},
                                      {"op": "hflip", "p": 0.5}],
                                     [{"op": "pad", "padding": 6}, {"op": "rotate", "degrees": 20, "expand": True}]])
def test_a_semantic_map_moves_by_its_nearest_pixel_with_the_polygons_and_on_dali(entries):
    augment = DenseAugment(parse_ops(entries, "ops"))
    scenes = [_painted(seed) for seed in range(4)]
    mover = augment.dali_mover(len(scenes), "cpu")
    dali = augment.batch([np.random.default_rng(k) for k in range(4)], [s[0] for s in scenes],
                         [s[1] for s in scenes], mover, [s[2] for s in scenes])
    for k, (image, instances, labels) in enumerate(scenes):
        matrix, size = augment.geometry(np.random.default_rng(k), 96, 64, instances)
        drawn = augment(np.random.default_rng(k), image, instances, labels).moved
        # exactly the nearest-pixel warp of the map, ignore where the frame holds nothing of the input
        assert np.array_equal(drawn.semantic, warp_image(labels, matrix, size, nearest=True, fill=IGNORE))
        assert set(np.unique(drawn.semantic)) <= {0, 1, 2, 3, IGNORE}
        for i in range(len(drawn.instances)):  # each class region where its moved polygon is
            exact = polygon_mask(drawn.instances.polygons[i], size[1], size[0])
            if exact.sum() >= 100:
                region = drawn.semantic == drawn.instances.classes[i] + 1
                assert (exact & region).sum() / exact.sum() >= 0.9
        agree = (dali[k].moved.semantic == drawn.semantic).mean()
        assert agree >= 0.995  # DALI's nearest pixel: ties at exact half-pixel positions may round the other way


def test_erasing_hides_the_classes_under_it():
    image, instances, labels = _painted(9)
    augment = DenseAugment(parse_ops([{"op": "cutout", "size": 30}], "ops"))
    drawn = augment(np.random.default_rng(3), image, Instances.empty(), labels).moved
    erased = (drawn.image == 0).all(-1)
    assert erased.sum() >= 400 and (drawn.semantic[erased] == IGNORE).all()
    assert np.array_equal(drawn.semantic[~erased], labels[~erased])


def test_build_stream_and_export_a_semantic_set(ingested, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "seed": 1, "source": {"path": str(VOC), "test_split": 0.0},
        "augment": {"copies": 2, "image": [{"op": "random_resized_crop", "size": [96, 128], "scale": [0.3, 1.0]},
                                           {"op": "rotate", "degrees": 20}, {"op": "color", "brightness": [0.8, 1.2]}]},
        "output": {"dir": str(tmp_path / "built"), "format": "png"}}))
    assert main(["build", str(recipe), "-q"]) == 0
    maps = _maps(tmp_path / "built")
    assert len(maps) == 9
    originals = _maps(ingested)
    for row_id, labels in maps.items():
        if "~a" in row_id:
            assert labels.shape == (96, 128) and set(np.unique(labels)) <= set(np.unique(originals[
                row_id.split("~a")[0]])) | {IGNORE}
        else:
            assert np.array_equal(labels, originals[row_id])
    ops = [{"op": "resize", "size": [96, 128]}, {"op": "rotate", "degrees": [20, 30]}]
    images, targets = next(iter(open_dense_loader(tmp_path / "built", 9, split="all", ops=ops, augment=True)))
    for image, target in zip(images, targets):
        assert target["semantic"].dtype == torch.int64 and target["semantic"].shape == (96, 128)
        assert image.shape == (3, 96, 128) and (target["semantic"] == IGNORE).any()  # the turned corners
    assert main(["export-data", str(tmp_path / "built"), str(tmp_path / "voc"), "--format", "voc"]) == 0
    assert not (tmp_path / "voc" / "Annotations").exists()
    assert main(["ingest", str(tmp_path / "voc"), str(tmp_path / "again"), "-q"]) == 0
    again = _maps(tmp_path / "again")
    assert sorted(np.concatenate([m.ravel() for m in again.values()]).tolist()) == \
        sorted(np.concatenate([m.ravel() for m in maps.values()]).tolist())
    assert main(["export-data", str(tmp_path / "built"), str(tmp_path / "coco"), "--format", "coco"]) == 1
