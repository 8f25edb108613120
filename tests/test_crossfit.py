"""augforge crossfit: folds stratified and grouped by source row, every row scored by models that did not
train on it, resumable, and its probabilities read by augforge audit --probs."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.audit.probs import read_probs
from augforge.cli import main
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError
from augforge.recipe import load_recipe
from augforge.experiments.crossfit import assign_folds, crossfit, model_probabilities

FOLDS = 3


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30)), min_size=12, max_size=80),
       st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_folds_keep_a_source_rows_copies_together(pairs, seed):
    groups = [f"g{g}" for _, g in pairs]
    labels = np.array([int(g[1:]) % 3 for g in groups])  # copies of a source row share its label
    distinct = {(label, g) for label, g in zip(labels, groups)}
    per_class = [len({g for label, g in distinct if label == c}) for c in np.unique(labels)]
    if min(per_class) < 2 or len(set(groups)) < FOLDS:
        with pytest.raises(AugforgeError):
            assign_folds(labels, groups, FOLDS, seed)
        return
    fold = assign_folds(labels, groups, FOLDS, seed)
    assert set(fold.tolist()) <= set(range(FOLDS)) and (fold >= 0).all()
    for g in set(groups):
        assert len({f for f, h in zip(fold, groups) if h == g}) == 1  # one source row, one fold
    assert np.array_equal(fold, assign_folds(labels, groups, FOLDS, seed))  # the same seed, the same folds


def test_folds_are_stratified():
    labels = np.repeat([0, 1, 2], [60, 30, 9])
    fold = assign_folds(labels, [f"r{i}" for i in range(len(labels))], FOLDS, 0)
    for f in range(FOLDS):
        assert np.bincount(labels[fold == f], minlength=3).tolist() == [20, 10, 3]
    with pytest.raises(AugforgeError, match="folds 1: expected at least 2"):
        assign_folds(labels, list(range(len(labels))), 1, 0)


def test_binary_heads_give_two_columns():
    import torch

    probs = model_probabilities(torch.tensor([[0.0], [2.0]]), binary=True)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1) and probs[0, 1] == pytest.approx(0.5)
    assert np.allclose(model_probabilities(torch.tensor([[0.0, 0.0]]), binary=False), [[0.5, 0.5]])


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """scikit-learn's digits as features with 90 labels flipped, cross-fitted from the CLI (3 folds, MLP)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("crossfit")
    digits, rng = load_digits(), np.random.default_rng(0)
    labels = digits.target.copy()
    flipped = rng.choice(len(labels), 90, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    table = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    table["label"], table["id"] = labels, [f"r{i}" for i in range(len(labels))]
    table.to_csv(root / "digits.csv", index=False)
    recipe = {"seed": 0, "source": {"path": str(root / "digits.csv"), "label_col": "label", "id_col": "id",
                                    "test_split": 0.2},
              "output": {"dir": str(root / "data")},
              "train": {"model": "mlp", "model_options": {"hidden": [64]}, "epochs": 10, "batch_size": 32,
                        "lr": 0.003, "threads": 1}}
    (root / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["crossfit", str(root / "r.yaml"), "--out", str(root / "cf"), "--folds", str(FOLDS)]) == 0
    return root, {f"r{i}" for i in flipped}


def test_every_row_is_scored_by_models_that_did_not_train_on_it(noisy):
    root, _ = noisy
    ids, probs, fold = read_probs(root / "cf" / "probs.npz")
    train, test = Dataset(root / "data", "train"), Dataset(root / "data", "test")
    train_ids = train.take(np.arange(len(train)), ["id"]).column("id").to_pylist()
    test_ids = test.take(np.arange(len(test)), ["id"]).column("id").to_pylist()
    assert sorted(ids.tolist()) == sorted(train_ids + test_ids)
    assert np.allclose(probs.sum(axis=1), 1.0) and (probs >= 0).all()
    where = {i: n for n, i in enumerate(ids.tolist())}
    held_test = []
    for f in range(FOLDS):
        fold_ids, fold_probs, marks = read_probs(root / "cf" / f"fold-{f}" / "heldout.npz")
        own = [i for i, m in zip(fold_ids.tolist(), marks) if m == f]
        summary = json.loads((root / "cf" / f"fold-{f}" / "summary.json").read_text())
        assert summary["train_rows"] == len(train_ids) - len(own)  # it trained on every other train row
        assert all(fold[where[i]] == f for i in own)
        held_test.append(fold_probs[marks == -1])
        assert [i for i, m in zip(fold_ids.tolist(), marks) if m == -1] == test_ids
    test_rows = [where[i] for i in test_ids]
    assert np.allclose(probs[test_rows], np.mean(held_test, axis=0))  # held-out rows: the mean of the folds
    assert (fold[test_rows] == -1).all()
    description = json.loads((root / "cf" / "crossfit.json").read_text())
    labels = train.labels()
    accuracy = (probs[[where[i] for i in train_ids]].argmax(axis=1) == labels).mean()
    assert description["train_oof"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert description["folds"] == FOLDS and description["rows"] == {"train": len(train_ids),
                                                                      "held_out": len(test_ids)}


def test_audit_with_the_runs_probabilities_finds_the_flipped_labels(noisy, capsys):
    root, flipped = noisy
    capsys.readouterr()
    assert main(["audit", str(root / "data"), "--probs", str(root / "cf"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    found = {row["id"] for row in report["label_issues"]["rows"]}
    precision, recall = len(found & flipped) / len(found), len(found & flipped) / len(flipped)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    assert "augforge run" in report["label_issues"]["method"] and "3-fold" in report["label_issues"]["method"]


def test_a_rerun_reuses_finished_folds_and_rescoring_gives_the_same_probabilities(noisy, tmp_path):
    root, _ = noisy
    out = tmp_path / "cf"
    shutil.copytree(root / "cf", out)
    before = read_probs(out / "probs.npz")
    (out / "fold-1" / "heldout.npz").unlink()  # a crash after fold 1's training, before its scores
    lines = []
    crossfit(load_recipe(root / "r.yaml"), out, folds=FOLDS, log=lines.append)
    assert not any("training on" in line for line in lines)  # no fold trained again
    after = read_probs(out / "probs.npz")
    assert np.array_equal(before[0], after[0]) and np.allclose(before[1], after[1]) and \
        np.array_equal(before[2], after[2])
    with pytest.raises(AugforgeError, match="holds a cross-fit with another folds"):
        crossfit(load_recipe(root / "r.yaml"), out, folds=2, log=lines.append)


def test_probabilities_that_do_not_fit_the_audited_rows_are_refused(noisy, tmp_path, capsys):
    root, _ = noisy
    table = pd.read_csv(root / "digits.csv")
    other = table[table.label != 9]
    other.to_csv(tmp_path / "nine.csv", index=False)
    assert main(["audit", str(tmp_path / "nine.csv"), "--label-col", "label", "--id-col", "id",
                 "--probs", str(root / "cf")]) != 0
    err = capsys.readouterr().err
    assert "the run's classes ['0', '1'," in err and "differ from the audited data's" in err, err
    table.assign(id="s" + table.id).to_csv(tmp_path / "renamed.csv", index=False)
    assert main(["audit", str(tmp_path / "renamed.csv"), "--label-col", "label", "--id-col", "id",
                 "--probs", str(root / "cf")]) != 0
    err = capsys.readouterr().err
    assert "has no probabilities for 1,797 of the 1,797 audited rows (first: s" in err and len(err.splitlines()) == 1
    assert main(["audit", str(root / "data"), "--probs", str(tmp_path)]) != 0
    assert "is not a finished cross-fit (no crossfit.json)" in capsys.readouterr().err
