"""Repeat-factor sampling (LVIS): the factors against the formula, the stochastic rounding's mean, the offline
strategy from the CLI and a recipe (what report --strategy projects is what balance and build write, val/test
untouched), and the stream's sampler drawing it again each epoch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from augforge.balance.repeat_factor import parse_repeat_factor, repeat_counts, repeat_factors
from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import Instances, from_columns
from augforge.errors import AugforgeError
from augforge.pipelines.dense_loader import open_dense_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composed_scenes  # noqa: E402  (the scene maker, shared with the dense benchmarks)


def _image(*classes, crowd=()):
    n = len(classes)
    return Instances(np.array(classes, dtype=np.int64), np.tile([0.0, 0, 4, 4], (n, 1)),
                     crowd=np.array([i in crowd for i in range(n)]))


def test_repeat_factors_follow_the_lvis_formula():
    # 10 images: class 0 in all, class 1 in one, class 2 in four, class 3 only as a crowd region
    rows = [_image(0, 1)] + [_image(0, 2) for _ in range(4)] + [_image(0) for _ in range(4)] + \
        [_image(0, 3, crowd=(1,))]
    t = 0.4
    per_image, per_class = repeat_factors(rows, 4, t)
    frequency = {0: 1.0, 1: 0.1, 2: 0.4}
    expected_class = [max(1.0, math.sqrt(t / frequency[c])) if c in frequency else 1.0 for c in range(4)]
    np.testing.assert_allclose(per_class, expected_class)  # r(c) = max(1, sqrt(t / f(c))): 1, 2, 1, 1
    np.testing.assert_allclose(per_image, [2.0] + [1.0] * 9)  # an image takes its rarest class's factor
    np.testing.assert_allclose(repeat_factors([_image(0), Instances.empty()], 1, 1.0)[0], [math.sqrt(2), 1.0])
    with pytest.raises(AugforgeError, match="no image has an instance"):
        repeat_factors([Instances.empty()], 1, 0.1)


def test_stochastic_rounding_repeats_an_image_its_factor_times_on_average():
    factors = np.array([1.0, 1.3, 2.75, 4.0])
    counts = np.stack([repeat_counts(factors, np.random.default_rng(s)) for s in range(4000)])
    assert set(np.unique(counts[:, 1])) == {1, 2} and (counts[:, 3] == 4).all() and (counts[:, 0] == 1).all()
    np.testing.assert_allclose(counts.mean(0), factors, atol=0.03)


@pytest.mark.parametrize("text, threshold", [("repeat_factor", 0.001), ("repeat_factor:0.05", 0.05),
                                             ("repeat_factor:t=0.2", 0.2), ("over", None), (None, None)])
def test_the_strategy_text(text, threshold):
    assert parse_repeat_factor(text) == threshold


@pytest.mark.parametrize("text", ["repeat_factor:0", "repeat_factor:2", "repeat_factor:x", "over,repeat_factor"])
def test_a_bad_repeat_factor_strategy_is_one_line(text):
    with pytest.raises(AugforgeError, match="repeat_factor"):
        parse_repeat_factor(text)


@pytest.fixture(scope="module")
def longtail(tmp_path_factory):
    """A long-tailed COCO set of composed scenes: classes drawn 50 : 10 : 1."""
    root = tmp_path_factory.mktemp("longtail")
    composed_scenes.write_coco_set(root, 60, seed=5, objects=3, class_weights=[50, 10, 1], with_keypoints=False)
    return root / "annotations.json"


def _instances_per_class(path: Path, split: str = "train") -> np.ndarray:
    data = Dataset(path, split)
    rows = from_columns(data.take(np.arange(len(data))))
    return np.bincount(np.concatenate([r.classes for r in rows]), minlength=3)


def test_report_projects_what_balance_and_build_write(longtail, tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(longtail), "--strategy", "repeat_factor:0.3", "--test-split", "0.2", "--json"]) == 0
    projection = json.loads(capsys.readouterr().out)["instance_projection"]
    after = [projection["per_class"][c]["after"] for c in composed_scenes.CLASSES]
    before = [projection["per_class"][c]["before"] for c in composed_scenes.CLASSES]
    assert after[2] > before[2] and projection["images_after"] > projection["images_before"]
    assert main(["balance", str(longtail), str(tmp_path / "bal"), "--strategy", "repeat_factor:0.3", "--test-split",
                 "0.2", "-q"]) == 0
    assert _instances_per_class(tmp_path / "bal").tolist() == after
    manifest = json.loads((tmp_path / "bal" / "manifest.json").read_text())
    assert manifest["balance"]["instances"] == projection
    copies = Dataset(tmp_path / "bal", "train").take(np.arange(projection["images_after"]), ["synthetic", "aug"])
    assert sum(copies.column("synthetic").to_pylist()) == projection["images_after"] - projection["images_before"]
    # val/test untouched: the same test rows as a plain ingest
    assert main(["ingest", str(longtail), str(tmp_path / "plain"), "--test-split", "0.2", "-q"]) == 0
    held_out = _instances_per_class(tmp_path / "plain", "test")
    assert held_out.sum() > 0 and _instances_per_class(tmp_path / "bal", "test").tolist() == held_out.tolist()
    # a recipe's build: copies get augmented variants (a flip loses no instance), originals kept
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(longtail), "test_split": 0.2},
                                      "balance": {"strategy": "repeat_factor:0.3"},
                                      "augment": {"image": [{"op": "hflip"}, {"op": "color", "brightness": [0.8, 1]}]},
                                      "output": {"dir": str(tmp_path / "built"), "format": "png"}}))
    assert main(["build", str(recipe), "-q"]) == 0
    assert _instances_per_class(tmp_path / "built").tolist() == after
    built = json.loads((tmp_path / "built" / "manifest.json").read_text())
    assert built["build"]["balance"]["instances"] == projection


def test_the_stream_draws_repeat_factors_each_epoch(longtail, tmp_path):
    assert main(["ingest", str(longtail), str(tmp_path / "data"), "--test-split", "0", "-q"]) == 0
    loader = open_dense_loader(tmp_path / "data", 8, split="train", sampler="repeat_factor", repeat_threshold=0.3,
                               ops=[{"op": "hflip", "p": 0.5}], seed=2)
    factors = loader.repeat
    assert factors.max() > 1 and factors.min() == 1
    n = len(factors)
    seen = np.zeros(n)
    epochs = 40
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        rows = loader.epoch_rows()
        seen += np.bincount(rows % n, minlength=n)
        assert len(loader) == -(-len(rows) // 8)
    np.testing.assert_allclose(seen / epochs, factors, atol=0.35)  # each image its factor times, on average
    assert abs(seen.sum() / epochs - factors.sum()) < 0.05 * factors.sum()
    loader.set_epoch(1)
    again = open_dense_loader(tmp_path / "data", 8, split="train", sampler="repeat_factor", repeat_threshold=0.3,
                              ops=[{"op": "hflip", "p": 0.5}], seed=2)
    again.set_epoch(1)
    assert np.array_equal(loader.epoch_rows(), again.epoch_rows())  # (seed, epoch) decide it
    rare = int(np.argmax(factors))  # an image repeated within an epoch: its copies drawn apart
    copies = [loader.dataset.batch([rare + k * n])[0][1]["boxes"] for k in range(3)]
    assert not all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies[1:])
    with pytest.raises(AugforgeError, match="sampler"):
        open_dense_loader(tmp_path / "data", 8, sampler="balanced")


def test_a_recipe_sets_the_streams_repeat_factor_sampler(longtail, tmp_path):
    assert main(["ingest", str(longtail), str(tmp_path / "data"), "-q"]) == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(longtail)}, "augment": {
        "mode": "online", "image": [{"op": "hflip", "p": 0.5}], "targets": {"sampler": "repeat_factor:0.3"}}}))
    loader = open_dense_loader(tmp_path / "data", 8, recipe=str(recipe))
    direct = open_dense_loader(tmp_path / "data", 8, sampler="repeat_factor", repeat_threshold=0.3, augment=True)
    assert loader.repeat is not None and np.array_equal(loader.repeat, direct.repeat)
    assert open_dense_loader(tmp_path / "data", 8, recipe=str(recipe), split="train", augment=False).repeat is None
    recipe.write_text(yaml.safe_dump({"source": {"path": str(longtail)}, "augment": {"targets": {"sampler": "over"}}}))
    with pytest.raises(AugforgeError, match="augment.targets.sampler"):
        open_dense_loader(tmp_path / "data", 8, recipe=str(recipe))
