"""`augforge build` and `augforge preview` end to end: real recipes, real DALI, real shards in tmp dirs."""

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from augforge.cli import main
from augforge.datasets import open_dataset
from augforge.datasets.manifest import MANIFEST
from augforge.pipelines.build import build
from augforge.pipelines.preview import preview
from augforge.pipelines.preview_grid import GAP, LABEL_HEIGHT
from augforge.recipe import load_recipe, parse_recipe
from cli_process import start_cli
from conftest import kill_9_after_shards, make_image_folder

DIGITS = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
    "balance": {"strategy": "over"},
    "augment": {"copies": 2, "color": "gray", "image": [
        {"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 10, "p": 0.7}]},
    "output": {"format": "png", "shard_rows": 500},
}


def write_recipe(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def payloads(out, split="all"):
    ds = open_dataset(out, split)
    return ds.take(np.arange(len(ds))).to_pydict()


def checksums(out):
    return [s["checksum"] for s in json.loads((out / MANIFEST).read_text())["shards"]]


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "digits"
    result = build(parse_recipe(DIGITS, "digits.yaml"), out, workers=2)
    return out, result


def test_balanced_augmented_and_test_untouched(digits_build, digits_lt):
    out, result = digits_build
    train = open_dataset(out, "train")
    counts = train.class_counts()
    assert set(counts.values()) == {134 * 3}  # every class balanced to the majority, then x (2 copies + 1)
    rows = payloads(out, "train")
    by_id = dict(zip(rows["id"], range(len(rows["id"]))))
    source = payloads(digits_lt, "train")
    originals = [i for i, a in enumerate(rows["aug"]) if a is None]
    assert len(originals) == len(source["id"])  # each source row kept once, with its pixels
    for row_id, image in zip(source["id"], source["image"]):
        kept = rows["image"][by_id[row_id]]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(kept))), np.asarray(Image.open(io.BytesIO(image))))
    variants = [i for i, a in enumerate(rows["aug"]) if a is not None]
    assert all(rows["synthetic"][i] for i in variants)
    assert {rows["aug"][i] for i in variants} == {"augment", "balance:over+augment"}
    changed = sum(rows["image"][i] != rows["image"][by_id[rows["source_id"][i]]] for i in variants
                  if rows["source_id"][i] in by_id)
    assert changed > 0.8 * len(variants)
    assert len(set(rows["id"])) == len(rows["id"])
    # the test split is the source's, pixel for pixel
    test_in, test_out = payloads(digits_lt, "test"), payloads(out, "test")
    assert test_in["id"] == test_out["id"] and not any(test_out["synthetic"])
    for a, b in zip(test_in["image"], test_out["image"]):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
    manifest = result.write.manifest
    assert manifest["build"]["augmented"] == len(variants) and manifest["recipe"]["seed"] == 0
    assert manifest["payload_info"]["encoding"] == "png"


def test_same_recipe_same_bytes_other_seed_other_bytes(digits_build, tmp_path):
    out, _ = digits_build
    again = tmp_path / "again"
    build(parse_recipe(DIGITS, "digits.yaml"), again, workers=1)  # thread count does not change the bytes
    assert checksums(again) == checksums(out)
    other = tmp_path / "other"
    build(parse_recipe({**DIGITS, "seed": 4}, "digits.yaml"), other)
    assert payloads(other)["image"] != payloads(out)["image"]


def test_refuses_to_clobber_and_is_idempotent(digits_build, tmp_path, capsys):
    out, _ = digits_build
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS)
    assert main(["build", str(recipe), "--out", str(out), "-q"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    changed = write_recipe(tmp_path / "c.yaml", {**DIGITS, "augment": {**DIGITS["augment"], "copies": 1}})
    assert main(["build", str(changed), "--out", str(out), "-q"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err



def test_kill_9_mid_build_then_resume_equals_uninterrupted(tmp_path):
    data = {**DIGITS, "augment": {**DIGITS["augment"], "copies": 7}, "output": {"format": "png", "shard_rows": 100}}
    recipe = write_recipe(tmp_path / "r.yaml", data)
    run = lambda out: start_cli(["build", str(recipe), "--out", str(out), "-q"])  # noqa: E731
    full = tmp_path / "full"
    assert run(full).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    done_before = kill_9_after_shards(run(killed), killed, shards=3)
    assert not (killed / MANIFEST).exists()
    assert 3 <= done_before < len(checksums(full))
    assert run(killed).wait(timeout=300) == 0
    assert checksums(killed) == checksums(full)
    ids = open_dataset(killed, "all").to_polars(["id"])["id"]
    assert ids.n_unique() == len(ids) == json.loads((full / MANIFEST).read_text())["num_rows"]


def test_image_folder_with_bad_files_jpeg_output_and_per_class_copies(tmp_path, sample_images):
    root = make_image_folder(tmp_path / "photos", sample_images, per_class=(6, 3), size=48)
    (root / "flower" / "truncated.jpg").write_bytes((root / "china" / "img00.jpg").read_bytes()[:300])
    (root / "china" / "notes.txt").write_text("not an image")
    (root / "china" / "copy.png").write_bytes((root / "china" / "img01.png").read_bytes())  # exact duplicate
    data = {"source": {"path": str(root)}, "augment": {
        "copies": {"default": 1, "flower": 3}, "image": [{"op": "random_resized_crop", "size": 32},
                                                         {"op": "color", "brightness": [0.7, 1.3]}]},
        "output": {"format": "jpeg", "quality": 90}}
    out = tmp_path / "out"
    result = build(parse_recipe(data, "r.yaml"), out)
    counts = open_dataset(out).class_counts()
    assert counts == {"china": 6 * 2, "flower": 3 * 4}  # the duplicate dropped; flower gets 3 copies
    problems = {p["path"]: p["reason"] for p in result.write.manifest["problems"]}
    assert any(p.endswith("truncated.jpg") for p in problems) and any(p.endswith("notes.txt") for p in problems)
    assert any("exact duplicate" in reason for reason in problems.values())
    rows = payloads(out)
    for image, aug in zip(rows["image"], rows["aug"]):
        with Image.open(io.BytesIO(image)) as img:
            assert img.format == "JPEG" if aug else img.format in ("JPEG", "PNG")
            if aug:
                assert img.size == (32, 32)


def test_raw_output_reads_back_as_tensors(tmp_path):
    data = {**DIGITS, "augment": {**DIGITS["augment"], "copies": 1}, "output": {"format": "raw"}}
    out = tmp_path / "raw"
    build(parse_recipe(data, "r.yaml"), out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["payload_info"] == {"encoding": "raw", "channels": 1, "height": 8, "width": 8}
    ds = open_dataset(out).torch_dataset()
    x, y = ds[0]
    assert tuple(x.shape) == (1, 8, 8) and str(x.dtype) == "torch.uint8"
    assert all(len(b) == 64 for b in payloads(out)["image"])


def test_a_raw_build_writes_its_manifest_once_with_the_shape_even_when_resumed(tmp_path, monkeypatch):
    import augforge.datasets.writer as writer

    data = {**DIGITS, "augment": {**DIGITS["augment"], "copies": 1}, "output": {"format": "raw", "shard_rows": 400}}
    points = []

    def crash_before_the_manifest(name):  # the writer's crash points, seen in process
        points.append(name)
        if name == "before-manifest" and points.count(name) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer, "fault_point", crash_before_the_manifest)
    out = tmp_path / "raw"
    with pytest.raises(KeyboardInterrupt):
        build(parse_recipe(data, "r.yaml"), out)
    assert not (out / MANIFEST).exists() and (out / ".augforge-progress.json").exists()
    result = build(parse_recipe(data, "r.yaml"), out)  # resumed: no row is left to make, the shape is in the journal
    assert result.write.written_rows == 0 and points.count("manifest-write") == 1  # one manifest write, complete
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["payload_info"] == {"encoding": "raw", "channels": 1, "height": 8, "width": 8}
    from augforge.pipelines.stream import open_loader

    x, _ = next(iter(open_loader(out, 16)))
    assert tuple(x.shape) == (16, 1, 8, 8)
    fresh = tmp_path / "fresh"
    build(parse_recipe(data, "r.yaml"), fresh)
    assert checksums(fresh) == checksums(out)


def test_online_mode_builds_once_and_streams_fresh_ops_every_epoch(tmp_path):
    data = {**DIGITS, "augment": {"mode": "online", "color": "gray", "image": DIGITS["augment"]["image"]},
            "train": {"batch_size": 64}}
    out = tmp_path / "online"
    result = build(parse_recipe(data, "r.yaml"), out)
    manifest = result.write.manifest
    assert result.augmented == 0 and manifest["build"]["mode"] == "online"
    assert sum(manifest["counts"]["train"].values()) == 10 * max(manifest["counts"]["train"].values())  # balanced
    from augforge.pipelines.stream import open_loader

    recipe = parse_recipe(data, "r.yaml")
    loader = open_loader(out, 64, recipe=recipe, shuffle=False)
    assert [op.name for op in loader.ops] == ["pad", "random_crop", "rotate"]
    first, second = [x.clone() for x, _ in loader], [x.clone() for x, _ in loader]
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, second))  # new draws each epoch
    test = open_loader(out, 64, split="test", recipe=recipe)
    assert [op.name for op in test.ops] == ["pad", "center_crop"]


def test_bad_recipes_fail_before_any_work(tmp_path, capsys, text_csv):
    cases = [
        ({**DIGITS, "augment": {**DIGITS["augment"], "image": [{"op": "color", "brightness": 1.2}]}},
         "augment.image[0].op: color needs colour images"),
        ({**DIGITS, "augment": {**DIGITS["augment"], "copies": {"default": 1, "cat": 2}}},
         "augment.copies.cat: no such class"),
        ({**DIGITS, "augment": {**DIGITS["augment"], "image": [{"op": "normalize"}]}}, "normalize"),
        ({**DIGITS, "balance": {"strategy": "smote"}}, "needs feature vectors"),
        ({**DIGITS, "source": {"path": str(text_csv)}}, "label"),
        ({**DIGITS, "source": {"path": "nowhere/at/all"}}, "no such file or directory"),
    ]
    for i, (data, needle) in enumerate(cases):
        recipe = write_recipe(tmp_path / f"r{i}.yaml", data)
        out = tmp_path / f"out{i}"
        assert main(["build", str(recipe), "--out", str(out), "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not out.exists()
    assert main(["build", str(write_recipe(tmp_path / "x.yaml", {**DIGITS, "augment": {"copies": 1, "image": [
        {"op": "rotate", "degrees": "abc"}]}})), "-q"]) == 1
    assert 'augment.image[0].degrees: expected a number or [min, max], got "abc"' in capsys.readouterr().err


def test_the_shipped_example_builds_balanced(tmp_path, capsys):
    recipe = load_recipe("examples/digits.yaml")
    assert recipe.augment.copies >= 4 and recipe.output.format == "png"
    out = tmp_path / "example"
    assert main(["build", "examples/digits.yaml", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["imbalance_ratio"] == 1.0 and report["total"] == 134 * 10 * (recipe.augment.copies + 1)


def test_preview_grid(tmp_path):
    recipe = parse_recipe(DIGITS, "r.yaml")
    result = preview(recipe, n=5, variants=3)
    cell = result.cell
    assert result.image.size == (GAP + 4 * (cell + GAP), GAP + 5 * (cell + LABEL_HEIGHT + GAP))
    assert len(set(result.labels)) == 5  # spread over the classes
    for row in result.cells:
        source, variants = row[0], row[1:]
        assert sum(not np.array_equal(v, source) for v in variants) >= 2
    out = tmp_path / "grid.png"
    assert main(["preview", str(write_recipe(tmp_path / "r.yaml", DIGITS)), "--out", str(out), "--n", "4"]) == 0
    with Image.open(out) as img:
        assert img.size == (GAP + 5 * (cell + GAP), GAP + 4 * (cell + LABEL_HEIGHT + GAP))


def test_a_complete_text_build_is_reused_without_making_its_variants_again(tmp_path, text_csv, monkeypatch):
    data = {"seed": 0, "source": {"path": str(text_csv), "text_col": "review", "label_col": "sentiment"},
            "augment": {"copies": 1, "text": [{"op": "keyboard", "aug_char_p": 0.1, "aug_word_p": 0.2}]}}
    first = build(parse_recipe(data, "r.yaml"), tmp_path / "t")
    assert not first.write.up_to_date and first.augmented > 0

    def not_again(*args, **kwargs):
        raise AssertionError("the variants of a complete build were made again")

    monkeypatch.setattr("augforge.pipelines.text_rows.TextTrainRows", not_again)
    again = build(parse_recipe(data, "r.yaml"), tmp_path / "t")
    assert again.write.up_to_date and again.augmented == first.augmented
