"""Exact k-NN in torch: equal to a float64 brute force with ties by index, by every method, on varied data."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import load_digits

from augforge.balance import TorchNearestNeighbors, exact_knn
from augforge.balance import knn as knn_module


def reference(data, k, queries=None, exclude_self=False):
    """float64 brute force from differences, a chunk of queries at a time; ties ordered by index."""
    data = np.asarray(data, dtype=np.float32).astype(np.float64)
    q = data if queries is None else np.asarray(queries, dtype=np.float32).astype(np.float64)
    dists, idxs = [], []
    for start in range(0, len(q), 100):
        d = ((q[start : start + 100, None, :] - data[None, :, :]) ** 2).sum(-1)
        if exclude_self:
            d[np.arange(len(d)), np.arange(start, start + len(d))] = np.inf
        order = np.lexsort((np.broadcast_to(np.arange(len(data)), d.shape), d), axis=1)[:, :k]
        dists.append(np.sqrt(np.take_along_axis(d, order, 1)))
        idxs.append(order)
    return np.concatenate(dists), np.concatenate(idxs)


def clustered(n=3000, dim=12, clusters=15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)


DATA = {
    "digits": load_digits().data[:1500],  # integer pixels: many exact ties and duplicates
    "clustered": clustered(),
    "gaussian": np.random.default_rng(1).normal(size=(1200, 20)).astype(np.float32),
    "offset": np.random.default_rng(2).normal(1000.0, 0.01, size=(800, 6)).astype(np.float32),  # large norms
}


@pytest.fixture(params=["plain", "tiled"])
def topk(request, monkeypatch):
    """Run with the candidate top-k over whole rows by torch.topk, or over tiles of 64 points merged one
    after the other, each block-wise (blocks of 4)."""
    if request.param == "tiled":
        monkeypatch.setattr(knn_module, "TOPK_BLOCK", 4)
        monkeypatch.setattr(knn_module, "BLOCKED_TOPK_BLOCKS", 1)
        monkeypatch.setattr(knn_module, "CPU_TILE_COLUMNS", 64)
    return request.param


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("method", ["cells", "brute", "auto"])
def test_equals_brute_force_with_ties_by_index(name, method, topk):
    data = DATA[name]
    dist, idx = exact_knn(data, 6, exclude_self=True, method=method, device="cpu")
    ref_d, ref_i = reference(data, 6, exclude_self=True)
    if method == "auto":  # a small dense search on a CPU is scikit-learn's: same neighbours up to exact ties
        np.testing.assert_allclose(dist, ref_d, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-12, atol=1e-12)


def test_cells_prune_clustered_data_and_auto_uses_them(monkeypatch):
    data = clustered(n=6000, dim=16, clusters=30)
    calls = []
    original = knn_module._knn_among

    def spy(queries, points, x_ids, *args):
        calls.append(len(queries.x) * (len(points.x) if x_ids is None else len(x_ids)))
        return original(queries, points, x_ids, *args)

    monkeypatch.setattr(knn_module, "_knn_among", spy)
    _, idx = exact_knn(data, 5, exclude_self=True, method="auto", device="cpu")
    assert sum(calls) < 0.25 * len(data) ** 2  # most pairs were never computed
    np.testing.assert_array_equal(idx, reference(data, 5, exclude_self=True)[1])


@pytest.mark.parametrize("dense_torch_pairs", [4e8, 0])  # scikit-learn's brute force when small, else torch
def test_auto_falls_back_to_the_dense_search_on_noise(monkeypatch, dense_torch_pairs):
    data = np.random.default_rng(0).normal(size=(3000, 32)).astype(np.float32)
    monkeypatch.setattr(knn_module, "DENSE_TORCH_PAIRS", dense_torch_pairs)
    searches, sklearn_calls = [], []
    among, brute = knn_module._knn_among, knn_module._sklearn_knn
    monkeypatch.setattr(knn_module, "_knn_among", lambda q, p, ids, *a: searches.append(ids) or among(q, p, ids, *a))
    monkeypatch.setattr(knn_module, "_sklearn_knn", lambda *a: sklearn_calls.append(1) or brute(*a))
    dist, idx = exact_knn(data, 5, exclude_self=True, method="auto", device="cpu")
    # small: no cells tried; large: the cells are planned, would not prune, and the dense search on a CPU is
    # imbalanced-learn's own (scikit-learn's), not torch's
    assert sklearn_calls == [1] and searches == []
    ref_d, ref_i = reference(data, 5, exclude_self=True)
    np.testing.assert_array_equal(idx, ref_i)  # no exact ties in Gaussian noise
    np.testing.assert_allclose(dist, ref_d, rtol=1e-6)  # scikit-learn's distances on float32 data


def test_separate_queries():
    data, queries = DATA["clustered"][:2000], DATA["clustered"][2000:2300]
    for method in ("cells", "brute"):
        dist, idx = exact_knn(data, 4, queries, method=method, device="cpu")
        ref_d, ref_i = reference(data, 4, queries)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(2, 160), st.integers(1, 5)),
           elements=st.sampled_from([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 7.0])),  # few values: ties everywhere
    st.integers(1, 6),
    st.sampled_from(["cells", "brute"]),
)
def test_property_exact_on_tied_data(data, k, method):
    k = min(k, len(data) - 1)
    ref_d, ref_i = reference(data, k, exclude_self=True)
    for block in (None, 2):  # torch.topk on whole rows, then tiles of 8 points, block-wise
        with pytest.MonkeyPatch.context() as patch:
            if block:
                patch.setattr(knn_module, "TOPK_BLOCK", block)
                patch.setattr(knn_module, "BLOCKED_TOPK_BLOCKS", 1)
                patch.setattr(knn_module, "CPU_TILE_COLUMNS", 8)
            dist, idx = exact_knn(data, k, exclude_self=True, method=method, device="cpu", memory_mb=0.01)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 8), st.integers(0, 2**31))
def test_blockwise_smallest_equals_topk(rows, blocks, c, seed):
    import torch

    c = min(c, blocks)
    keys = torch.from_numpy(np.random.default_rng(seed).integers(0, 5, size=(rows, blocks * 4)).astype(np.float32))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(knn_module, "TOPK_BLOCK", 4)
        values, where = knn_module._smallest(keys, c)
    expected = torch.topk(keys, c, dim=1, largest=False, sorted=True).values
    assert torch.equal(values, expected) and torch.equal(torch.gather(keys, 1, where), values)


def test_estimator_api_and_graph():
    data = DATA["digits"][:300]
    nn = TorchNearestNeighbors(n_neighbors=3, method="cells", device="cpu").fit(data)
    idx = nn.kneighbors(data, return_distance=False)
    assert idx.shape == (300, 3)
    assert (idx[:, 0] == np.arange(300)).mean() > 0.9  # each point is its own nearest, unless duplicated
    graph = nn.kneighbors_graph(None, 2, mode="distance")
    ref_d, ref_i = reference(data, 2, exclude_self=True)
    assert graph.shape == (300, 300) and graph.nnz == 600
    np.testing.assert_array_equal(graph.indices.reshape(300, 2), ref_i)
    np.testing.assert_allclose(graph.data.reshape(300, 2), ref_d)


def test_bad_arguments():
    with pytest.raises(ValueError, match="only 4 points"):
        exact_knn(np.zeros((5, 2)), 5, exclude_self=True)
    with pytest.raises(ValueError, match="unknown method"):
        exact_knn(np.zeros((5, 2)), 1, method="kd")
    with pytest.raises(ValueError, match="feature counts differ"):
        exact_knn(np.zeros((5, 2)), 1, np.zeros((3, 3)))
