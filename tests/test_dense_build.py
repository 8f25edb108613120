"""`augforge build` on a detection set: the recipe's ops move boxes, polygons and keypoints with the pixels, the
build is byte-identical on a rerun and after kill -9, and what it writes exports back to COCO / YOLO."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from augforge.augment.target_geometry import clip_polygon, transform_points
from augforge.cli import main
from augforge.datasets.keys import row_rng
from augforge.datasets.manifest import MANIFEST
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import from_columns, polygon_box
from augforge.pipelines.dense_rows import PURPOSE, decode_rgb
from augforge.recipe import load_recipe
from cli_process import start_cli
from conftest import kill_9_after_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)

OPS = [{"op": "random_resized_crop", "size": [48, 72], "scale": [0.4, 1.0]}, {"op": "rotate", "degrees": 25},
       {"op": "hflip", "p": 0.5}, {"op": "color", "brightness": [0.7, 1.3], "saturation": [0.5, 1.5]}]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco-build")
    composed_scenes.write_coco_set(root, 24, seed=11)
    return root


def _recipe(path: Path, root: Path, out: Path, **augment) -> Path:
    data = {"seed": 3, "source": {"path": str(root / "annotations.json"), "test_split": 0.25},
            "augment": {"copies": 2, "image": OPS, "targets": {"min_visibility": 0.25, "flip_pairs": [[0, 1]]},
                        **augment},
            "output": {"dir": str(out), "format": "png", "shard_rows": 8}}
    path.write_text(yaml.safe_dump(data))
    return path


def _rows(out: Path, split: str = "all") -> tuple[dict, list]:
    data = Dataset(out, split)
    table = data.take(np.arange(len(data)))
    return table.to_pydict(), from_columns(table)


def _checksums(out: Path) -> list:
    return [s["checksum"] for s in json.loads((out / MANIFEST).read_text())["shards"]]


@pytest.fixture(scope="module")
def built(coco_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("built")
    recipe = _recipe(tmp / "r.yaml", coco_root, tmp / "out")
    assert main(["build", str(recipe), "-q"]) == 0
    return recipe, tmp / "out"


def test_build_moves_targets_with_the_pixels_under_the_recipe_policy(built, coco_root):
    recipe_path, out = built
    rows, instances = _rows(out)
    truth = {t.file: t.instances for t in composed_scenes.write_coco_set(coco_root / "again", 24, seed=11).images}
    manifest = json.loads((out / MANIFEST).read_text())
    train = [i for i, s in enumerate(rows["split"]) if s == "train"]
    others = [i for i, s in enumerate(rows["split"]) if s != "train"]
    assert len(train) == 3 * 18 and len(others) == 6  # 18 train images, each kept and augmented twice
    recipe = load_recipe(recipe_path)
    augment = recipe.augment.targets.augmenter(recipe.augment.image)
    augmented = [i for i in train if "~a" in rows["id"][i]]
    by_id = {rows["id"][i]: instances[i] for i in train if "~a" not in rows["id"][i]}
    assert len(augmented) == 36 and all(rows["synthetic"][i] and rows["aug"][i] == "augment" for i in augmented)
    for i in augmented:
        source_id, variant = rows["source_id"][i], int(rows["id"][i].split("~a")[1])
        original = by_id[source_id]  # the kept original: the instances as ingested
        np.testing.assert_allclose(original.boxes, truth[source_id].boxes, atol=1e-9)
        # the row's draw, replayed: its matrix moves the exact polygons onto what the shards hold
        rng = row_rng(recipe.augment_seed, source_id, variant, PURPOSE)
        matrix, size = augment.geometry(rng, 96, 64, original)
        image = decode_rgb(rows["image"][i])
        assert (image.shape[1], image.shape[0]) == size == (72, 48) == (rows["width"][i], rows["height"][i])
        got = instances[i]
        kept = [original.origin.index(o) for o in got.origin]  # provenance: which source instance each one is
        assert got.classes.tolist() == original.classes[kept].tolist()
        for j, k in enumerate(kept):
            ring = clip_polygon(transform_points(original.polygons[k][0], matrix), *size)
            np.testing.assert_allclose(got.polygons[j][0].reshape(-1, 2), ring, atol=1e-6)
            np.testing.assert_allclose(got.boxes[j], polygon_box([ring]), atol=1e-6)  # tight, from the polygon
            assert 0 <= got.boxes[j, 0] <= got.boxes[j, 2] <= 72 and 0 <= got.boxes[j, 1] <= got.boxes[j, 3] <= 48
            moved = transform_points(original.keypoints[k, :, :2], matrix)
            if np.linalg.det(matrix[:2, :2]) < 0:  # a flip: left and right trade places
                moved = moved[::-1]
            np.testing.assert_allclose(got.keypoints[j, :, :2], moved, atol=1e-6)
    plain = [i for i in train if "~a" not in rows["id"][i]] + others
    for i in plain:  # kept originals and val/test rows: their instances exactly as ingested
        np.testing.assert_allclose(instances[i].boxes, truth[rows["id"][i]].boxes, atol=1e-9)
    counts = manifest["build"]["targets"]
    assert counts["augmented_rows_counted"] == 36
    dropped = sum(len(truth[rows["source_id"][i]]) - len(instances[i]) for i in augmented)
    assert counts["lost_instances"] == dropped > 0  # the policy dropped some, and the manifest says how many


def test_build_is_byte_identical_on_a_rerun_and_after_kill_9(built, coco_root, tmp_path):
    recipe, out = built
    again = tmp_path / "again"
    assert main(["build", str(recipe), "--out", str(again), "-q"]) == 0
    assert _checksums(again) == _checksums(out)
    killed = tmp_path / "killed"
    done = kill_9_after_shards(start_cli(["build", str(recipe), "--out", str(killed), "-q"]), killed, shards=2)
    assert not (killed / MANIFEST).exists() and done >= 2
    assert start_cli(["build", str(recipe), "--out", str(killed), "-q"]).wait(timeout=300) == 0
    assert _checksums(killed) == _checksums(out)


def test_a_built_dense_set_exports_to_coco_and_yolo(built, tmp_path):
    _, out = built
    rows, instances = _rows(out)
    for fmt in ("coco", "yolo"):
        assert main(["export-data", str(out), str(tmp_path / fmt), "--format", fmt]) == 0
        assert main(["ingest", str(tmp_path / fmt / ("annotations.json" if fmt == "coco" else "")),
                     str(tmp_path / f"{fmt}-in"), "-q"]) == 0
        back, again = _rows(tmp_path / f"{fmt}-in")
        assert len(back["id"]) == len(rows["id"])
        # the same instances per image (file names are re-made from row ids): compared as a sorted multiset
        def signature(inst):
            return tuple(inst.classes.tolist()), tuple(np.round(inst.boxes, 4).ravel().tolist())

        assert sorted(map(signature, again)) == sorted(map(signature, instances))


@pytest.mark.parametrize("change, message", [
    ({"augment": {"image": [{"op": "rand_augment"}], "copies": 1}},
     "augment.image[0].op: rand_augment is refused on a detection or segmentation set"),
    ({"balance": {"strategy": "over"}}, "balance.strategy: over resamples whole rows by their label"),
    ({"output": {"format": "raw"}}, "output.format: raw needs every image the same size"),
    ({"augment": {"image": OPS, "copies": 1, "targets": {"on_lost": "vanish"}}}, "augment.targets.on_lost"),
])
def test_what_a_dense_build_cannot_do_is_one_line(coco_root, tmp_path, capsys, change, message):
    recipe = _recipe(tmp_path / "r.yaml", coco_root, tmp_path / "out")
    data = yaml.safe_load(recipe.read_text())
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value}
    recipe.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["build", str(recipe), "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_preview_of_a_dense_recipe_draws_the_variants_the_build_writes(built, tmp_path, capsys):
    recipe_path, out = built
    png = tmp_path / "preview.png"
    assert main(["preview", str(recipe_path), "--out", str(png), "--n", "3", "--variants", "2"]) == 0
    assert "3 source images x 2 variants" in capsys.readouterr().out
    from PIL import Image

    from augforge.pipelines.preview import preview
    from augforge.pipelines.preview_dense import PALETTE, draw_instances
    from augforge.balance.instances import instance_classes
    from augforge.pipelines.build_plan import recipe_source

    result = preview(load_recipe(recipe_path), n=3, variants=2)
    assert Image.open(png).size == result.image.size and len(result.cells) == 3
    rows, instances = _rows(out)
    index = {row_id: i for i, row_id in enumerate(rows["id"])}
    names = instance_classes(recipe_source(load_recipe(recipe_path)))
    for row_id, cells in zip(result.ids, result.cells):
        for k in (1, 2):  # preview variant k is the build's row id~ak, drawn
            i = index[f"{row_id}~a{k}"]
            expected = draw_instances(decode_rgb(rows["image"][i]), instances[i], names)
            assert np.array_equal(cells[k], expected)
        assert any((cells[0] == np.array(c, np.uint8)).all(-1).any() for c in PALETTE)  # targets are drawn


@pytest.mark.gpu
def test_a_gpu_build_moves_the_same_targets_as_the_cpu_build(built, coco_root, tmp_path):
    recipe_path, out = built
    data = yaml.safe_load(recipe_path.read_text())
    data["augment"]["device"] = "gpu"
    data["output"]["dir"] = str(tmp_path / "gpu")
    gpu_recipe = tmp_path / "gpu.yaml"
    gpu_recipe.write_text(yaml.safe_dump(data))
    assert main(["build", str(gpu_recipe), "-q"]) == 0
    cpu_rows, cpu = _rows(out)
    gpu_rows, gpu = _rows(tmp_path / "gpu")
    assert cpu_rows["id"] == gpu_rows["id"]
    assert json.loads((tmp_path / "gpu" / MANIFEST).read_text())["build"]["device"] == "gpu"
    for a, b in zip(cpu, gpu):
        assert a.classes.tolist() == b.classes.tolist()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1.0)
        np.testing.assert_allclose(a.keypoints[..., :2], b.keypoints[..., :2], atol=1.0)
