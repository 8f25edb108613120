"""Strategy chains: parsing, and projected counts equal to what imbalanced-learn's samplers produce."""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from augforge.balance.strategy import SAMPLERS, parse_strategy, project, sampler_info
from augforge.errors import AugforgeError


def _imbalanced_digits(classes, keep):
    d = load_digits()
    rows = np.concatenate([np.flatnonzero(d.target == c)[:k] for c, k in zip(classes, keep)])
    return d.data[rows], d.target[rows]


def _run_imblearn(text, X, y, class_names):
    for step in parse_strategy(text):
        X, y = step.build(class_names, random_state=0).fit_resample(X, y)
    counts = Counter(y.tolist())
    return [counts.get(i, 0) for i in range(len(class_names))]


CASES = [
    ([0, 1], [170, 30], "smote:0.5,under:0.8"),
    ([0, 1], [170, 30], "over:0.4"),
    ([0, 1], [170, 30], "under:0.5"),
    ([0, 1, 2], [170, 60, 25], "smote"),
    ([0, 1, 2], [170, 60, 25], "over:minority"),
    ([0, 1, 2], [170, 60, 25], "under:not minority"),
    ([0, 1, 2], [170, 60, 25], "under:all"),
    ([0, 1, 2], [170, 60, 25], "smote:{1: 100, 2: 90}:k=3,under:{0: 120}"),
    ([0, 1, 2], [170, 60, 25], "over:not majority,nearmiss:majority"),
    ([0, 1, 2], [170, 60, 25], "cluster_centroids:{0: 50}"),
]


@pytest.mark.parametrize("classes, keep, text", CASES)
def test_projection_equals_what_imblearn_produces(classes, keep, text):
    X, y = _imbalanced_digits(classes, keep)
    y = np.searchsorted(classes, y)
    names = [str(c) for c in range(len(classes))]
    projected = project(parse_strategy(text), np.bincount(y), names)
    assert projected.exact
    assert projected.counts == _run_imblearn(text, X, y, names)


@pytest.mark.parametrize("text, note", [("smote,enn", "upper bounds"), ("borderline_smote:0.7:k=4", "approximately"),
                                        ("smote_tomek", "upper bounds")])
def test_data_dependent_steps_are_upper_bounds(text, note):
    X, y = _imbalanced_digits([0, 1, 8], [170, 60, 25])
    y = np.searchsorted([0, 1, 8], y)
    names = ["0", "1", "8"]
    if text.startswith("borderline"):
        keep = y != 1
        X, y = X[keep], np.searchsorted([0, 2], y[keep])
        names = ["0", "8"]
    projected = project(parse_strategy(text), np.bincount(y), names)
    assert not projected.exact and note in projected.notes[0]
    actual = _run_imblearn(text, X, y, names)
    assert all(a <= p for a, p in zip(actual, projected.counts))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 400), min_size=2, max_size=6),
       word=st.sampled_from(["auto", "minority", "not majority", "not minority", "all"]),
       sampler=st.sampled_from(["over", "under"]))
def test_projection_matches_random_samplers_on_any_counts(counts, word, sampler):
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.arange(len(y), dtype=float)[:, None]
    names = [f"c{i}" for i in range(len(counts))]
    text = f"{sampler}:{word}"
    try:
        projected = project(parse_strategy(text), counts, names)
    except AugforgeError:
        with pytest.raises(ValueError):
            _run_imblearn(text, X, y, names)
        return
    assert projected.counts == _run_imblearn(text, X, y, names)


def test_every_sampler_is_reachable_by_name_and_class_name():
    for name, info in SAMPLERS.items():
        assert sampler_info(name) is info
        assert sampler_info(info.cls.__name__) is info
    assert sampler_info("RUS").name == "under" and sampler_info("SMOTETomek").name == "smote_tomek"


def test_options_and_aliases():
    (step,) = parse_strategy("smote:0.5:k=7")
    assert step.sampling_strategy == 0.5 and step.options == {"k_neighbors": 7}
    (step,) = parse_strategy("adasyn:k=3")
    assert step.options == {"n_neighbors": 3} and step.sampling_strategy == "auto"
    (step,) = parse_strategy("nearmiss:majority:version=2")
    assert step.options == {"version": 2}
    assert step.build(["a", "b"]).get_params()["version"] == 2


@pytest.mark.parametrize("text, message", [
    ("", "empty strategy"),
    ("smote,,under", "empty step"),
    ("magic:0.5", "unknown sampler 'magic'"),
    ("smote:lots", "'lots' is not a sampling_strategy"),
    ("smote:2", "ratio 2.0 must be in"),
    ("smote:k=3:0.5", "give the sampling_strategy once"),
    ("smote:0.5:0.6", "give the sampling_strategy once"),
    ("smote:kk=3", "SMOTE has no option 'kk'"),
    ("smote:{1: 5", "unbalanced braces"),
])
def test_bad_strategies(text, message):
    with pytest.raises(AugforgeError, match=message):
        parse_strategy(text)


@pytest.mark.parametrize("text, message", [
    ("smote:0.5", "can be a float only when the type of target is binary"),
    ("over:{9: 10}", "unknown class '9'"),
    ("over:{0: 10}", "imbalanced-learn refuses it"),
    ("under:{2: 500}", "imbalanced-learn refuses it"),
])
def test_strategies_imblearn_refuses(text, message):
    with pytest.raises(AugforgeError, match=message):
        project(parse_strategy(text), [100, 50, 20], ["0", "1", "2"])


@pytest.mark.parametrize("mapping", ["{yes: 40, 01: 40}", "{'yes': 40, '01': 40}", '{"yes": 40, "01": 40}'])
def test_class_names_yaml_would_coerce_stay_strings(tmp_path, capsys, mapping):
    import polars as pl

    from augforge.cli import main

    rng = np.random.default_rng(0)
    labels = ["yes"] * 10 + ["no"] * 40 + ["01"] * 20 + ["on"] * 5
    path = tmp_path / "t.csv"
    pl.DataFrame({"x": rng.normal(size=len(labels)), "label": labels}).write_csv(path)
    assert main(["report", str(path), "--strategy", f"over:{mapping}", "--json"]) == 0
    projected = json.loads(capsys.readouterr().out)["projected"]["counts"]
    assert projected == {"01": 40, "no": 40, "on": 5, "yes": 40}
    assert parse_strategy(f"over:{mapping}")[0].sampling_strategy == {"yes": 40, "01": 40}
    with pytest.raises(AugforgeError, match="count '1.5' is not a whole number"):
        parse_strategy("over:{yes: 1.5}")
