"""ML-ROS (multilabel random over-sampling, Charte et al. 2015): IRLbl and MeanIR as defined, clones only of
minority-label images until P of the set or the bag empties, and the strategy from the CLI on image-level labels:
what report --strategy projects is what balance writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from augforge.balance.ml_ros import imbalance_ratios, label_counts, mean_ir, ml_ros_clones, parse_ml_ros
from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dense_multilabel import _flagged_set  # noqa: E402  (six real photos with several LabelMe flags each)


def test_the_measures_and_a_case_worked_by_hand():
    sets = [[0], [0], [0], [0, 1], [1, 2], [2]]
    counts = label_counts(sets, 4)
    assert counts.tolist() == [4, 2, 2, 0]
    np.testing.assert_allclose(imbalance_ratios(counts)[:3], [1.0, 2.0, 2.0])
    assert np.isinf(imbalance_ratios(counts)[3]) and mean_ir(counts) == pytest.approx(5 / 3)
    # labels 1 and 2 are above MeanIR (2 > 5/3); one clone each brings them to 4/3 and 4/3 <= 5/3: the bag empties
    clones = ml_ros_clones(sets, 4, share=10.0, seed=0)
    assert len(clones) == 2
    assert 1 in sets[clones[0]] and 2 in sets[clones[1]]


@pytest.mark.parametrize("seed", range(5))
def test_clones_carry_a_minority_label_and_lower_mean_ir(seed):
    rng = np.random.default_rng(seed)
    weights = np.array([0.8, 0.3, 0.1, 0.05, 0.02])
    sets = [[k for k in range(5) if rng.random() < weights[k]] or [0] for _ in range(300)]
    before = label_counts(sets, 5)
    bag = set(np.flatnonzero(imbalance_ratios(before) > mean_ir(before)).tolist())
    clones = ml_ros_clones(sets, 5, share=0.25, seed=seed)
    assert 0 < len(clones) <= 75
    assert all(bag & set(sets[i]) for i in clones)  # only images holding a minority label are cloned
    after = label_counts(sets + [sets[i] for i in clones], 5)
    assert mean_ir(after) < mean_ir(before)


@pytest.mark.parametrize("text, share", [("ml_ros", 0.25), ("ml_ros:0.5", 0.5), ("over", None)])
def test_the_strategy_text(text, share):
    assert parse_ml_ros(text) == share


def test_a_bad_ml_ros_strategy_is_one_line():
    with pytest.raises(AugforgeError, match="ml_ros's P"):
        parse_ml_ros("ml_ros:0")


def test_report_projects_what_balance_writes_on_image_level_labels(tmp_path, capsys):
    root = _flagged_set(tmp_path)
    capsys.readouterr()
    assert main(["report", str(root), "--split", "all", "--strategy", "ml_ros:1.0", "--json"]) == 0
    projected = json.loads(capsys.readouterr().out)["instance_projection"]
    assert projected["mean_ir_after"] <= projected["mean_ir_before"]
    assert main(["balance", str(root), str(tmp_path / "bal"), "--strategy", "ml_ros:1.0", "-q"]) == 0
    data = Dataset(tmp_path / "bal", "train")
    written = label_counts(data.take(np.arange(len(data)), ["image_labels"]).column("image_labels").to_pylist(), 3)
    assert written.tolist() == [projected["per_class"][n]["after"] for n in ("cat", "dog", "sofa")]
    assert len(data) == projected["images_after"] > projected["images_before"]
    capsys.readouterr()
    assert main(["balance", str(root), str(tmp_path / "b2"), "--strategy", "ml_ros:1.0,under"]) == 1
    assert "ml_ros is a strategy of its own" in capsys.readouterr().err
