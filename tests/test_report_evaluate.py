"""`augforge report --evaluate`: the recommendation cross-validated on real rows against no resampling,
class weights and a tuned threshold; recommendations that hold inside cross-validation."""

import json

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from augforge.balance.evaluate import evaluate_strategies
from augforge.balance.recommend import recommend
from augforge.balance.stats import ClassStats
from augforge.cli import main


def _long_tail_digits(minority: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:minority]])
    return X[keep].astype(np.float32), (y[keep] == 1).astype(np.int64)


def test_the_class_weights_arm_is_what_scikit_learn_computes():
    X, y = load_breast_cancer(return_X_y=True)
    out = evaluate_strategies(X, y, ["malignant", "benign"], "smote", payload="features", folds=5)
    assert set(out["arms"]) == {"none", "class weights", "threshold", "smote"} and out["folds"] == 5
    expected = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        expected.append(balanced_accuracy_score(y[test], model.fit(X[train], y[train]).predict(X[test])))
    assert out["arms"]["class weights"]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    again = evaluate_strategies(X, y, ["malignant", "benign"], "smote", payload="features", folds=5)
    assert again == out  # seeded: the same figures every run
    for arm in out["arms"].values():
        assert all(0.8 < arm[m]["mean"] <= 1.0 for m in ("balanced_accuracy", "macro_f1", "g_mean"))


def test_texts_compare_the_linear_and_word_models_with_each_balancing():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_union

    from augforge.errors import OptionError

    table = pl.read_csv("examples/tickets.csv")
    texts, names = table["text"].to_list(), sorted(set(table["label"]))
    y = np.array([names.index(v) for v in table["label"]])
    out = evaluate_strategies(texts, y, names, "over", payload="text", folds=3)
    assert set(out["arms"]) == {"linear", "linear + class weights", "linear + over", "words", "words + class weights",
                                "words + over"}
    expected = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(texts, y):
        peer = make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)),
                             LogisticRegression(max_iter=2000, class_weight="balanced"))
        predicted = peer.fit([texts[i] for i in train], y[train]).predict([texts[i] for i in test])
        expected.append(f1_score(y[test], predicted, average="macro"))
    assert out["arms"]["linear + class weights"]["macro_f1"]["mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    best = max(out["arms"], key=lambda a: out["arms"][a]["balanced_accuracy"]["mean"])
    assert out["verdict"].startswith(f"best by balanced accuracy: {best} ")
    alone = evaluate_strategies(texts, y, names, "over", payload="text", folds=3, classifier="linear")
    assert set(alone["arms"]) == {"none", "class weights", "over"}
    assert alone["arms"]["class weights"] == out["arms"]["linear + class weights"]
    with pytest.raises(OptionError, match="for texts"):
        evaluate_strategies(np.zeros((6, 2)), np.array([0, 1] * 3), ["a", "b"], None, payload="features",
                            classifier="linear")


def test_augforge_fasttext_is_cross_validated_in_the_same_folds_as_a_scikit_learn_classifier(capsys):
    from sklearn.base import clone
    from sklearn.preprocessing import FunctionTransformer

    from augforge.balance.evaluate import CandidateModel
    from augforge.experiments.text_estimator import TrainedTextClassifier, text_column

    table = pl.read_csv("examples/tickets.csv")
    texts, names = table["text"].to_list(), sorted(set(table["label"]))
    y = np.array([names.index(v) for v in table["label"]])
    small = {"epochs": 3, "text": {"buckets": 2048}, "model_options": {"embed_dim": 8}}
    model = TrainedTextClassifier("fasttext", train=small)
    fasttext = CandidateModel("fasttext", lambda: FunctionTransformer(text_column),
                              lambda balanced, seed: clone(model).set_params(class_weight="balanced" if balanced
                                                                             else None, seed=seed))
    out = evaluate_strategies(texts, y, names, "over", payload="text", folds=3, extra_models=(fasttext,))
    assert {"fasttext", "fasttext + class weights", "fasttext + over"} <= set(out["arms"])
    assert all("failed" not in out["arms"][a] for a in out["arms"])  # the sampler resamples the text column
    expected = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(texts, y):
        fitted = clone(model).set_params(class_weight="balanced").fit([texts[i] for i in train], y[train])
        predicted = fitted.predict([texts[i] for i in test])
        expected.append(balanced_accuracy_score(y[test], predicted))
        probs = fitted.predict_proba([texts[i] for i in test])
        assert probs.shape == (len(test), len(names)) and np.allclose(probs.sum(1), 1.0)
        assert np.array_equal(fitted.classes_[probs.argmax(1)], predicted)
    assert out["arms"]["fasttext + class weights"]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(expected))
    assert main(["report", "examples/tickets.csv", "--text-col", "text", "--evaluate", "--fasttext",
                 "--classifier", "tree"]) == 1
    assert "cannot be combined with --classifier" in capsys.readouterr().err


def test_a_strategy_that_fails_inside_a_fold_is_reported_not_raised():
    X, y = _long_tail_digits(7)  # 7 minority rows: 5 or 6 per training fold, SMOTE's k=5 needs 6
    out = evaluate_strategies(X, y, ["zero", "one"], "smote", payload="features", folds=5)
    assert out["arms"]["smote"]["failed"].startswith("fold ")
    assert "failed inside cross-validation" in out["verdict"] and "do not use it" in out["verdict"]
    stats = ClassStats(("zero", "one"), (178, 7))
    assert recommend(stats, "features")["strategy"] == "over"  # the recommendation holds inside CV
    assert evaluate_strategies(X, y, ["zero", "one"], "over", payload="features", folds=5)["arms"]["over"].get(
        "failed") is None


def test_every_recommendation_carries_the_class_weights_alternative():
    rec = recommend(ClassStats(("a", "b"), (500, 20)), "features")
    assert rec["strategy"] and "class weights" in rec["alternative"]
    assert "alternative" not in recommend(ClassStats(("a", "b"), (50, 45)), "features")  # nothing to balance


def test_report_evaluate_from_the_cli_on_features_text_and_images(tmp_path, capsys):
    X, y = _long_tail_digits(40)
    table = tmp_path / "digits.parquet"
    pl.DataFrame({**{f"p{i}": X[:, i] for i in range(X.shape[1])}, "label": y}).write_parquet(table)
    assert main(["report", str(table), "--evaluate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["evaluation"]["strategy"] == report["recommendation"]["strategy"]
    assert set(report["evaluation"]["arms"]) >= {"none", "class weights", "threshold"}
    assert main(["report", str(table), "--evaluate", "--strategy", "under", "--classifier", "tree"]) == 0
    out = capsys.readouterr().out
    assert "5-fold stratified CV, tree classifier" in out and "verdict: best by balanced accuracy" in out
    assert main(["report", "examples/tickets.csv", "--text-col", "text", "--evaluate", "--folds", "3", "--json"]) == 0
    text = json.loads(capsys.readouterr().out)["evaluation"]
    assert text["folds"] == 3 and text["strategy"] == "over" and "failed" not in text["arms"]["linear + over"]
    assert main(["report", "digits", "--evaluate"]) == 1
    assert "needs feature vectors or texts" in capsys.readouterr().err
