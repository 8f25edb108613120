"""When augforge's samplers equal imbalanced-learn's, bit for bit, and what differs where they do not.

The statement tested here (docs/balance.md): with ``knn_backend="auto"`` on a CPU below 4e8 query x point
pairs (and always with ``"sklearn"``), every sampler runs imbalanced-learn's own neighbour search on the
input's own dtype, so its output equals imbalanced-learn's exactly: tie-heavy data and float64 included.
The torch searches (``brute``, ``cells``, ``auto`` on large problems or a GPU) order exactly tied
neighbours by index and rank float32 values: they equal imbalanced-learn's output on float32 data
without exact distance ties, and otherwise differ only in the order of tied neighbours (float32 data)
or by float32 rounding (float64 data).
"""

import numpy as np
import pytest
from imblearn.combine import SMOTEENN, SMOTETomek
from imblearn.over_sampling import ADASYN, SMOTE, SVMSMOTE, BorderlineSMOTE
from imblearn.under_sampling import AllKNN, EditedNearestNeighbours, RepeatedEditedNearestNeighbours, TomekLinks
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.neighbors import NearestNeighbors

from augforge.balance.knn import exact_knn
from augforge.balance.resample import resample
from augforge.balance.strategy import parse_strategy

PEERS = {"smote": SMOTE, "adasyn": ADASYN, "borderline_smote": BorderlineSMOTE, "svm_smote": SVMSMOTE,
         "enn": EditedNearestNeighbours, "renn": RepeatedEditedNearestNeighbours, "allknn": AllKNN,
         "tomek": TomekLinks}


def _tie_heavy_digits():
    """Real digits, integer pixel values 0-16: exact distance ties everywhere; a 3-class long tail."""
    X, y = load_digits(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:40], np.flatnonzero(y == 2)[:60]])
    return X[keep], y[keep]


def _ours(name: str, X, y, backend: str):
    step = parse_strategy(name)[0]
    return step.build(sorted({str(v) for v in y}, key=int), random_state=0, knn_backend=backend).fit_resample(X, y)


def _theirs(name: str, X, y):
    cls = PEERS[name]
    return cls(random_state=0).fit_resample(X, y) if "random_state" in cls().get_params() else cls().fit_resample(X, y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(PEERS))
def test_auto_and_sklearn_backends_equal_imbalanced_learn_on_tie_heavy_data(name, dtype):
    X, y = _tie_heavy_digits()
    X = X.astype(dtype)
    theirs = _theirs(name, X, y)
    for backend in ("auto", "sklearn"):
        ours = _ours(name, X, y, backend)
        assert ours[0].dtype == theirs[0].dtype and np.array_equal(ours[0], theirs[0]), (name, backend)
        assert np.array_equal(ours[1], theirs[1])


@pytest.mark.parametrize("name", ["smote", "adasyn", "enn", "tomek"])
@pytest.mark.parametrize("backend", ["brute", "cells"])
def test_torch_searches_equal_imbalanced_learn_on_float32_data_without_ties(name, backend):
    X, y = load_breast_cancer(return_X_y=True)  # real measurements: no two distances exactly equal
    X = X.astype(np.float32)
    theirs, ours = _theirs(name, X, y), _ours(name, X, y, backend)
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_torch_searches_differ_only_in_the_order_of_exact_ties():
    X, _ = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    dist, idx = exact_knn(X, 6, method="brute")
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=6).fit(X.astype(np.float64)).kneighbors(X.astype(np.float64))
    squared, ref_squared = np.rint(dist ** 2), np.rint(ref_dist ** 2)  # integer data: exact squared distances
    assert np.array_equal(squared, ref_squared) and np.allclose(dist, ref_dist, rtol=1e-12)
    differ = np.flatnonzero((idx != ref_idx).any(1))
    assert len(differ) > 0  # digits are full of ties: the orders do differ somewhere
    for row in differ:  # ... and only among neighbours at exactly the same distance (the last group may be
        for d in np.unique(squared[row]):  # cut differently at k)
            if d != squared[row, -1]:
                assert set(idx[row][squared[row] == d]) == set(ref_idx[row][ref_squared[row] == d])


def test_torch_searches_on_float64_data_round_to_float32():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)) * 1e-3 + 1.0  # values whose float32 rounding shows
    dist, idx = exact_knn(X, 5, method="brute")
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(X)
    # off by the float32 rounding of the values (about 1e-7 each here), not more
    assert np.allclose(dist, ref_dist, rtol=0, atol=1e-6) and not np.array_equal(dist, ref_dist)
    auto_dist, auto_idx = exact_knn(X, 5)  # small, on a CPU: imbalanced-learn's own search, float64
    assert np.array_equal(auto_dist, ref_dist) and np.array_equal(auto_idx, ref_idx)


@pytest.mark.parametrize("chain, peer", [("smote_tomek", SMOTETomek), ("smote_enn", SMOTEENN)])
def test_combined_chains_equal_imbalanced_learn_where_their_steps_do(chain, peer):
    X, y = _tie_heavy_digits()
    X = X.astype(np.float64)
    ours = resample(parse_strategy(chain), y, ["0", "1", "2"], X, seed=0)
    theirs_x, theirs_y = peer(random_state=0).fit_resample(X, y)
    assert len(ours.y) == len(theirs_y) and np.array_equal(np.bincount(ours.y), np.bincount(theirs_y))


def test_auto_on_a_cpu_runs_imbalanced_learns_search_where_the_cells_would_not_prune(monkeypatch):
    from augforge.balance import knn

    monkeypatch.setattr(knn, "DENSE_TORCH_PAIRS", 1000)  # past the small-problem shortcut: the cells are tried
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(3000, 16))  # noise-like: nothing to prune
    dist, idx = exact_knn(noise, 6)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=6).fit(noise).kneighbors(noise)
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)  # imbalanced-learn's own, float64
    centres = rng.uniform(-50, 50, size=(30, 16))
    clusters = (centres[rng.integers(0, 30, 3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    dist, idx = exact_knn(clusters, 6)  # the cells prune here: torch's search, the same neighbours
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=6).fit(clusters).kneighbors(clusters)
    assert np.array_equal(idx, ref_idx) and np.allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


def test_searches_take_the_cores_other_processes_leave_free(monkeypatch):
    import torch

    import augforge.balance.search_threads as threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(threads, "_runnable_now", lambda: 0)
    assert threads.search_threads() == min(2, torch.get_num_threads())
    monkeypatch.setattr(threads, "_runnable_now", lambda: 1)  # another busy process: one thread, not two waiting
    assert threads.search_threads() == 1
    monkeypatch.setattr(threads, "_runnable_now", lambda: 7)
    assert threads.search_threads() == 1
    monkeypatch.setattr(threads, "_runnable_now", lambda: None)  # no /proc: torch's own setting
    assert threads.search_threads() == torch.get_num_threads()
    X = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    monkeypatch.setattr(threads, "_runnable_now", lambda: 1)
    busy = exact_knn(X, 5, method="brute")  # one thread: the same neighbours
    monkeypatch.setattr(threads, "_runnable_now", lambda: 0)
    before = torch.get_num_threads()
    assert all(np.array_equal(a, b) for a, b in zip(busy, exact_knn(X, 5, method="brute")))
    assert torch.get_num_threads() == before  # the setting is restored after each search
