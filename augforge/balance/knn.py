"""Exact k-nearest neighbours in torch: chunked, certified exact, on the GPU when one is present.

Distances are first computed in float32 with the matrix-product identity
``|q - x|^2 = |q|^2 + |x|^2 - 2 q.x`` (one GEMM per chunk of queries), which picks
``k + margin`` candidates per query. The candidates are re-ranked with float64 distances
computed from differences, ties broken by index as scikit-learn does. A bound on the float32
rounding error then certifies each query: if no non-candidate can be closer than the k-th
re-ranked distance, the answer is exact; the few queries that cannot be certified are
recomputed in float64 over every point. Memory is bounded by ``memory_mb`` per chunk.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator

#: Extra candidates per query beyond k, re-ranked exactly.
MARGIN = 8
#: float32 unit round-off.
_U32 = 2.0 ** -24


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is the first CUDA device when one is present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _exact_rows(queries: torch.Tensor, data: torch.Tensor, k: int, self_index: torch.Tensor | None,
                memory_mb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 k-NN of a few queries over all data by direct differences (the fallback path)."""
    q64, x64 = queries.double(), data.double()
    n = len(x64)
    rows = max(1, int(memory_mb * 2**20 // (8 * max(n, 1) * 2)))
    dists, idxs = [], []
    for start in range(0, len(q64), rows):
        d = torch.cdist(q64[start : start + rows], x64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        if self_index is not None:
            d[torch.arange(len(d)), self_index[start : start + rows]] = float("inf")
        values, order = _sorted_by_distance_then_index(d, k)
        dists.append(values)
        idxs.append(order)
    return torch.cat(dists), torch.cat(idxs)


def _sorted_by_distance_then_index(d: torch.Tensor, k: int, index: torch.Tensor | None = None):
    """The k smallest entries per row, ordered by (distance, index)."""
    if index is None:
        index = torch.arange(d.shape[1], device=d.device).expand_as(d)
    # a stable sort by index, then a stable sort by distance, orders ties by index
    by_index = torch.argsort(index, dim=1, stable=True)
    d_sorted = torch.gather(d, 1, by_index)
    by_distance = torch.argsort(d_sorted, dim=1, stable=True)[:, :k]
    chosen = torch.gather(by_index, 1, by_distance)
    return torch.gather(d, 1, chosen), torch.gather(index, 1, chosen)


def exact_knn(data, k: int, queries=None, *, exclude_self: bool = False, device: str = "auto",
              memory_mb: float = 256.0) -> tuple[np.ndarray, np.ndarray]:
    """Squared-free Euclidean distances and indices of the ``k`` nearest ``data`` rows of each query.

    ``queries`` defaults to ``data``; ``exclude_self`` (only when queries are the data) leaves each row
    out of its own neighbours. Returns float64 distances and int64 indices, both ``(n_queries, k)``,
    ordered by distance then index, exactly as a float64 brute-force search would.
    """
    dev = pick_device(device)
    x = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=dev)
    q = x if queries is None else torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32), device=dev)
    n, nq = len(x), len(q)
    available = n - (1 if exclude_self else 0)
    if k > available:
        raise ValueError(f"k={k} neighbours requested but only {available} points are available")
    if nq == 0 or k == 0:
        return np.zeros((nq, k)), np.zeros((nq, k), dtype=np.int64)
    center = x.mean(0, keepdim=True)
    xc, qcent = x - center, q - center  # float32 keys on centred data: smaller norms, smaller rounding error
    x_sq, q_sq = (xc * xc).sum(1), (qcent * qcent).sum(1)
    radius = x_sq.max().sqrt()
    c = min(k + MARGIN, available)
    chunk = max(1, int(memory_mb * 2**20 // (4 * n * 3)))
    out_d = torch.empty(nq, k, dtype=torch.float64, device=dev)
    out_i = torch.empty(nq, k, dtype=torch.long, device=dev)
    with torch.no_grad(), _no_tf32():
        for start in range(0, nq, chunk):
            stop = min(start + chunk, nq)
            qc = q[start:stop]
            rows = torch.arange(stop - start, device=dev)
            # |x|^2 - 2 q.x orders the data like |q - x|^2 does
            approx = torch.addmm(x_sq[None, :], qcent[start:stop], xc.T, alpha=-2.0)
            self_index = torch.arange(start, stop, device=dev) if exclude_self else None
            if exclude_self:
                approx[rows, self_index] = float("inf")
            cand = torch.topk(approx, c, dim=1, largest=False, sorted=True)
            idx = cand.indices
            exact = ((x[idx].double() - qc[:, None, :].double()) ** 2).sum(-1)  # original values, float64
            best_d, best_i = _sorted_by_distance_then_index(exact, k, idx)
            # rounding error of the float32 keys: |fl(key) - key| <= err; a non-candidate z has
            # key(z) >= last candidate key, so |q - z|^2 >= last + |q|^2 - err
            err = (x.shape[1] + 4) * _U32 * (2 * q_sq[start:stop].sqrt() * radius + radius ** 2) * 2
            last = cand.values[:, -1].double() + q_sq[start:stop].double()
            unsure = (c < available) & (last - err.double() <= best_d[:, -1])
            if unsure.any():
                which = torch.nonzero(unsure).flatten()
                fd, fi = _exact_rows(qc[which], x, k, self_index[which] if exclude_self else None, memory_mb)
                best_d[which], best_i[which] = fd, fi
            out_d[start:stop], out_i[start:stop] = best_d, best_i
    return out_d.sqrt().cpu().numpy(), out_i.cpu().numpy()


class _no_tf32:
    """Keep float32 matmuls in float32 on GPUs that would use TF32."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved


class TorchNearestNeighbors(BaseEstimator):
    """A scikit-learn-compatible exact nearest-neighbour estimator backed by ``exact_knn``.

    Pass it wherever imbalanced-learn takes a neighbours object (``k_neighbors``, ``m_neighbors``,
    ``n_neighbors``): BorderlineSMOTE, ADASYN, SVMSMOTE then search in torch, on the GPU when present.
    """

    def __init__(self, n_neighbors: int = 5, device: str = "auto", memory_mb: float = 256.0) -> None:
        self.n_neighbors = n_neighbors
        self.device = device
        self.memory_mb = memory_mb

    def fit(self, X, y=None):
        """Remember the points to search."""
        self._fit_X = np.ascontiguousarray(np.asarray(X), dtype=np.float32)
        self.n_samples_fit_ = len(self._fit_X)
        self.n_features_in_ = self._fit_X.shape[1]
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """As ``sklearn.neighbors.NearestNeighbors.kneighbors``: with X=None, each point is left out of its own."""
        k = n_neighbors or self.n_neighbors
        if X is None:
            dist, idx = exact_knn(self._fit_X, k, exclude_self=True, device=self.device, memory_mb=self.memory_mb)
        else:
            if k > self.n_samples_fit_:
                raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                                 f"n_samples_fit = {self.n_samples_fit_}, n_samples = {len(X)}")
            dist, idx = exact_knn(self._fit_X, k, np.asarray(X), device=self.device, memory_mb=self.memory_mb)
        return (dist, idx) if return_distance else idx

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """The k-neighbours graph as a CSR matrix (connectivity or distance)."""
        dist, idx = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = idx.shape
        values = np.ones(n_queries * k) if mode == "connectivity" else dist.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix((values, idx.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))
