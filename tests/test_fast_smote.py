"""FastSMOTE against imbalanced-learn: segments, counts, bit-identical output, determinism, pipelines."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE
from imblearn.pipeline import Pipeline
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import NearestNeighbors

from augforge.balance import FastSMOTE, TorchNearestNeighbors, parse_strategy
from test_knn import reference


def long_tail_digits(classes=(0, 1, 2, 3), keep=(170, 60, 30, 12)):
    d = load_digits()
    rows = np.concatenate([np.flatnonzero(d.target == c)[:k] for c, k in zip(classes, keep)])
    return d.data[rows].astype(np.float32), np.searchsorted(classes, d.target[rows])


def test_every_synthetic_row_lies_on_a_segment_to_one_of_its_k_nearest():
    X, y = long_tail_digits()
    k = 5
    sampler = FastSMOTE(k_neighbors=k, random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    synthetic = X_res[len(X):]
    origin, partner = sampler.sample_origin_, sampler.sample_neighbor_
    assert len(synthetic) == len(origin) == len(partner) > 0
    for label in np.unique(y_res[len(X):]):
        members = np.flatnonzero(y == label)
        _, nn = reference(X[members], k, exclude_self=True)  # exact neighbour lists within the class
        allowed = {(members[i], members[j]) for i in range(len(members)) for j in nn[i]}
        rows = np.flatnonzero(y_res[len(X):] == label)
        for r in rows:
            a, b = origin[r], partner[r]
            assert y[a] == y[b] == label
            # partner is one of a's k nearest (or tied with the k-th one)
            kth = np.sort(((X[members] - X[a]) ** 2).sum(1))[k]
            assert (a, b) in allowed or ((X[b] - X[a]) ** 2).sum() <= kth
            # the row is X[a] + t (X[b] - X[a]) with t in [0, 1]
            d = X[b].astype(np.float64) - X[a]
            t = 0.0 if not d.any() else float(np.dot(synthetic[r] - X[a], d) / np.dot(d, d))
            assert -1e-6 <= t <= 1 + 1e-6
            np.testing.assert_allclose(synthetic[r], X[a] + t * d, atol=1e-4)


@pytest.mark.parametrize("strategy", ["auto", "minority", "not majority", {1: 120, 2: 100, 3: 80}, "all"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_to_imblearn(strategy, dtype):
    X, y = long_tail_digits()
    X = X.astype(dtype)
    ref = SMOTE(sampling_strategy=strategy, random_state=7).fit_resample(X, y)
    ours = FastSMOTE(sampling_strategy=strategy, random_state=7).fit_resample(X, y)
    assert ours[0].dtype == ref[0].dtype
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_array_equal(ours[1], ref[1])


def test_binary_ratio_counts_equal_imblearn():
    X, y = long_tail_digits(classes=(0, 1), keep=(170, 30))
    for ratio in (0.3, 0.5, 1.0):
        ref = SMOTE(sampling_strategy=ratio, random_state=0).fit_resample(X, y)[1]
        ours = FastSMOTE(sampling_strategy=ratio, random_state=0).fit_resample(X, y)[1]
        assert Counter(ours) == Counter(ref)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8))
def test_deterministic_for_a_random_state(seed, k):
    X, y = long_tail_digits()
    runs = [FastSMOTE(k_neighbors=k, random_state=seed, knn_backend=backend).fit_resample(X, y)
            for backend in ("auto", "auto", "cells", "brute")]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    # augforge's own searches order ties by index, so they agree row for row on tie-rich digits
    np.testing.assert_array_equal(runs[2][0], runs[3][0])
    for X_res, y_res in runs[1:]:
        np.testing.assert_array_equal(y_res, runs[0][1])


def test_k_neighbors_as_an_estimator():
    X, y = long_tail_digits()
    ours = FastSMOTE(k_neighbors=NearestNeighbors(n_neighbors=4), random_state=1).fit_resample(X, y)
    ref = SMOTE(k_neighbors=NearestNeighbors(n_neighbors=4), random_state=1).fit_resample(X, y)
    np.testing.assert_array_equal(ours[0], ref[0])
    torch_nn = FastSMOTE(k_neighbors=TorchNearestNeighbors(n_neighbors=4), random_state=1).fit_resample(X, y)
    np.testing.assert_array_equal(torch_nn[1], ref[1])


def test_in_an_imblearn_pipeline_with_a_classifier():
    X, y = long_tail_digits()
    pipe = Pipeline([("smote", FastSMOTE(random_state=0)), ("clf", LogisticRegression(max_iter=2000))])
    scores = cross_val_score(pipe, X, y, cv=3, scoring="balanced_accuracy")
    assert scores.mean() > 0.9
    assert pipe.fit(X, y).predict(X[:5]).shape == (5,)


@pytest.mark.parametrize("cls, param", [(BorderlineSMOTE, "m_neighbors"), (ADASYN, "n_neighbors")])
def test_other_variants_on_the_torch_search_equal_imblearn(cls, param):
    X, y = make_classification(n_samples=600, n_features=10, weights=[0.85], flip_y=0.05, random_state=0)
    ref = cls(random_state=0).fit_resample(X, y)
    step = parse_strategy({BorderlineSMOTE: "borderline_smote", ADASYN: "adasyn"}[cls])[0]
    sampler = step.build(["0", "1"], random_state=0, knn_backend="cells")
    assert isinstance(getattr(sampler, param), TorchNearestNeighbors)
    ours = sampler.fit_resample(X, y)
    np.testing.assert_array_equal(ours[1], ref[1])
    np.testing.assert_allclose(ours[0], ref[0])


def test_too_few_rows_for_k_is_refused_like_imblearn():
    X, y = long_tail_digits(keep=(50, 40, 30, 4))
    with pytest.raises(ValueError):
        SMOTE(random_state=0).fit_resample(X, y)
    with pytest.raises(ValueError):
        FastSMOTE(random_state=0).fit_resample(X, y)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_equals_imbalanced_learn(fmt):
    """TF-IDF rows of the example tickets (sparse, 4 imbalanced classes): the same rows, in the input's format."""
    import polars as pl
    from imblearn.over_sampling import SMOTE
    from sklearn.feature_extraction.text import TfidfVectorizer

    frame = pl.read_csv("examples/tickets.csv")
    X = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(frame["text"].to_list()).asformat(fmt)
    y = np.unique(frame["label"].to_numpy(), return_inverse=True)[1]
    ours, y_ours = FastSMOTE(random_state=3, k_neighbors=4).fit_resample(X, y)
    ref, y_ref = SMOTE(random_state=3, k_neighbors=4).fit_resample(X, y)
    assert ours.format == fmt and ours.shape == ref.shape and ours.shape[0] > X.shape[0]
    assert (ours != ref).nnz == 0 and np.array_equal(y_ours, y_ref)
