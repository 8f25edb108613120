"""Mosaic: four composed scenes tiled around a centre, their targets moved exactly with their pixels and clipped
to their quadrants by the frame policy, provenance per instance; in the stream (a batch-level op) and in a
build."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from augforge.augment.mosaic import MosaicSpec, mosaic, quadrant_matrix, quadrants
from augforge.augment.target_geometry import FramePolicy, clip_polygon, polygon_area, transform_points, warp_image
from augforge.cli import main
from augforge.datasets.targets import IGNORE, polygon_box, polygon_mask
from augforge.errors import OptionError
from augforge.pipelines.dense_loader import open_dense_loader
from conftest import rebuilt_train_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def _four(seed: int):
    rng = np.random.default_rng(seed)
    return [composed_scenes.scene(rng, objects=3, min_radius=8.0) for _ in range(4)]


def _replay(seed: int, spec: MosaicSpec, scenes):
    """The draws ``mosaic`` makes with this generator: the centre, then a zoom per quadrant."""
    rng = np.random.default_rng(seed)
    w, h = spec.size
    cx, cy = int(round(rng.uniform(*spec.centre) * w)), int(round(rng.uniform(*spec.centre) * h))
    out = []
    for k, quadrant in enumerate(quadrants(w, h, cx, cy)):
        image = scenes[k][0]
        zoom = float(rng.uniform(*spec.scale)) * min(w / image.shape[1], h / image.shape[0])
        out.append((quadrant, quadrant_matrix(k, (image.shape[1], image.shape[0]), zoom, quadrant)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_a_mosaic_moves_each_quadrants_targets_with_its_pixels(seed):
    scenes = _four(seed)
    spec = MosaicSpec(size=(160, 128), policy=FramePolicy(on_lost="keep"))
    tiled = mosaic(np.random.default_rng(seed), [s[0] for s in scenes], [s[1] for s in scenes], list("abcd"), spec)
    assert tiled.image.shape == (128, 160, 3)
    at = 0
    for k, (quadrant, matrix) in enumerate(_replay(seed, spec, scenes)):
        x0, y0, x1, y1 = quadrant
        image, instances = scenes[k]
        expected = warp_image(image, matrix, (x1 - x0, y1 - y0), fill=spec.fill)
        assert np.array_equal(tiled.image[y0:y1, x0:x1], expected)  # the quadrant's pixels: its image, moved
        for i in range(len(instances)):
            ring = clip_polygon(transform_points(instances.polygons[i][0], matrix), x1 - x0, y1 - y0) + [x0, y0]
            got = tiled.instances
            assert got.origin[at] == (instances.origin[i] if k == 0 else f"mosaic:{'abcd'[k]}#{instances.origin[i]}")
            if len(ring) >= 3 and polygon_area(ring) > 0:
                np.testing.assert_allclose(got.polygons[at][0].reshape(-1, 2), ring, atol=1e-6)
                np.testing.assert_allclose(got.boxes[at], polygon_box([ring]), atol=1e-6)
                assert x0 - 1e-9 <= got.boxes[at, 0] and got.boxes[at, 2] <= x1 + 1e-9  # clipped to its quadrant
            at += 1
    assert at == len(tiled.instances)


def test_the_frame_policy_and_semantic_maps_in_a_mosaic():
    scenes = _four(7)
    dropping = MosaicSpec(size=(160, 128), policy=FramePolicy(min_visibility=0.6))
    tiled = mosaic(np.random.default_rng(3), [s[0] for s in scenes], [s[1] for s in scenes], list("abcd"), dropping)
    kept = np.flatnonzero(~tiled.lost)
    assert len(tiled.instances) == len(kept) and (tiled.visibility[kept] >= 0.6).all()
    maps = []
    for image, instances in scenes:
        labels = np.zeros(image.shape[:2], np.uint8)
        for i in range(len(instances)):
            labels[polygon_mask(instances.polygons[i], 64, 96)] = instances.classes[i] + 1
        maps.append(labels)
    spec = MosaicSpec(size=(160, 128), scale=(0.3, 0.4))  # small images: borders of no class
    tiled = mosaic(np.random.default_rng(1), [s[0] for s in scenes], [s[1] for s in scenes], list("abcd"), spec, maps)
    assert tiled.semantic.shape == (128, 160) and (tiled.semantic == IGNORE).any()
    assert ((tiled.image == 114).all(-1) == (tiled.semantic == IGNORE)).mean() > 0.99
    for k, (quadrant, matrix) in enumerate(_replay(1, spec, scenes)):  # each quadrant: its map, nearest pixel
        x0, y0, x1, y1 = quadrant
        expected = warp_image(maps[k], matrix, (x1 - x0, y1 - y0), nearest=True, fill=IGNORE)
        assert np.array_equal(tiled.semantic[y0:y1, x0:x1], expected)
    with pytest.raises(OptionError, match="centre"):
        MosaicSpec(centre=(0.0, 0.5))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaic")
    composed_scenes.write_coco_set(root, 12, seed=2, objects=3, with_keypoints=False)
    return root / "annotations.json"


def test_mosaic_in_the_stream_and_in_a_build(coco, tmp_path):
    recipe = tmp_path / "r.yaml"
    data = {"source": {"path": str(coco), "test_split": 0.0},
            "augment": {"mode": "online", "image": [{"op": "hflip", "p": 0.5}],
                        "targets": {"mosaic": {"p": 1.0, "size": [96, 128]}}},
            "output": {"dir": str(tmp_path / "data"), "format": "png"}}
    recipe.write_text(yaml.safe_dump(data))
    assert main(["build", str(recipe), "-q"]) == 0
    loader = open_dense_loader(tmp_path / "data", 6, recipe=str(recipe), seed=1)
    first = list(loader)
    for images, targets in first:
        assert all(image.shape == (3, 96, 128) for image in images)
    counts = [len(t["labels"]) for _, ts in first for t in ts]
    assert len(counts) == 12 and max(counts) > 3  # three instances a scene: more come from the other tiles
    assert [t["boxes"].tolist() for _, ts in first for t in ts] == \
        [t["boxes"].tolist() for _, ts in open_dense_loader(tmp_path / "data", 6, recipe=str(recipe), seed=1)
         for t in ts]  # seeded: the same mosaics on a rerun
    data["augment"] = {"copies": 1, "image": [{"op": "hflip", "p": 0.5}],
                       "targets": {"mosaic": {"p": 1.0, "size": [96, 128]}}}
    table, rows = rebuilt_train_rows(recipe, data, tmp_path / "built")
    widths = dict(zip(table.column("id").to_pylist(), table.column("width").to_pylist()))
    tiled = [i for i in rows if "~a" in i]
    assert len(tiled) == 12 and all(widths[i] == 128 for i in tiled)
    assert all(any(o.startswith("mosaic:") for o in rows[i].origin) for i in tiled if len(rows[i]) > 3)
    assert sum(len(rows[i]) > 3 for i in tiled) >= 6  # most tiles bring instances of other rows
