"""FastSMOTE: imbalanced-learn's SMOTE, same API and semantics, with an exact torch neighbour search."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from augforge.balance.neighbors import TorchNearestNeighbors

KNN_BACKENDS = ("auto", "cells", "brute", "sklearn")


def neighbours(k: int, backend: str = "auto", device: str = "auto"):
    """An exact nearest-neighbours estimator for ``k`` neighbours.

    ``auto``, ``cells``, ``brute``: ``TorchNearestNeighbors`` with that search method (see
    ``augforge.balance.knn``; ``auto`` on a CPU runs imbalanced-learn's own search below 4e8 query x point
    pairs, and above that prunes by cells where the data allows and otherwise runs the dense torch
    search; on a GPU, cells or the dense search). ``sklearn``: scikit-learn's ``NearestNeighbors`` with its default algorithm, always: the
    estimator imbalanced-learn builds itself.
    """
    if backend in ("auto", "cells", "brute"):
        return TorchNearestNeighbors(n_neighbors=k, device=device, method=backend)
    if backend == "sklearn":
        return NearestNeighbors(n_neighbors=k)
    raise ValueError(f"unknown knn_backend {backend!r}; use one of {', '.join(KNN_BACKENDS)}")


class FastSMOTE(BaseOverSampler):
    """SMOTE with imbalanced-learn's estimator API: ``sampling_strategy``, ``k_neighbors`` (an int or a
    NearestNeighbors-like object), ``random_state``, ``fit_resample``; usable in ``imblearn.pipeline``.

    For the same ``random_state`` and the same neighbour lists it draws exactly what
    ``imblearn.over_sampling.SMOTE`` draws. After ``fit_resample``, ``sample_origin_`` gives, for each
    synthetic row, the input row it was interpolated from and ``sample_neighbor_`` the neighbour.
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "k_neighbors": [Interval(numbers.Integral, 1, None, closed="left"),
                        HasMethods(["kneighbors", "kneighbors_graph"])],
        "knn_backend": [StrOptions(set(KNN_BACKENDS))],
        "device": [str],
    }

    def __init__(self, sampling_strategy="auto", random_state=None, k_neighbors=5, knn_backend="auto",
                 device="auto"):
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.knn_backend = knn_backend
        self.device = device

    def _neighbours(self):
        if isinstance(self.k_neighbors, numbers.Integral):
            return neighbours(self.k_neighbors + 1, self.knn_backend, self.device)
        return clone(self.k_neighbors)

    def _fit_resample(self, X, y):
        from scipy import sparse

        if sparse.issparse(X):
            return self._fit_resample_sparse(X, y)
        X = np.asarray(X)
        plan = [(klass, n) for klass, n in self.sampling_strategy_.items() if n > 0]
        total = len(X) + sum(n for _, n in plan)
        X_out = np.empty((total, X.shape[1]), dtype=X.dtype)  # filled in place: no stacking copies
        y_out = np.empty(total, dtype=y.dtype)
        X_out[: len(X)], y_out[: len(y)] = X, y
        origins, partners, at = [], [], len(X)
        for klass, n_samples in plan:
            members = np.flatnonzero(y == klass)
            X_class = X[members]
            nn = self._neighbours().fit(X_class)
            nns = nn.kneighbors(X_class, return_distance=False)[:, 1:]
            picks, steps = self._draws(nns.size, n_samples)
            rows, cols = np.floor_divide(picks, nns.shape[1]), np.mod(picks, nns.shape[1])
            partner = nns[rows, cols]
            interpolate(X_class, rows, partner, steps, out=X_out[at : at + n_samples])
            y_out[at : at + n_samples] = klass
            origins.append(members[rows])
            partners.append(members[partner])
            at += n_samples
        self.sample_origin_ = np.concatenate(origins) if origins else np.zeros(0, dtype=np.int64)
        self.sample_neighbor_ = np.concatenate(partners) if partners else np.zeros(0, dtype=np.int64)
        return X_out, y_out

    def _draws(self, n_neighbours: int, n_samples: int):
        """imbalanced-learn's draws for one class, in its order, from a fresh generator: (picks, steps)."""
        rng = check_random_state(self.random_state)
        return rng.randint(low=0, high=n_neighbours, size=n_samples), rng.uniform(size=n_samples)

    def _fit_resample_sparse(self, X, y):
        """Sparse input (CSR/CSC), as imbalanced-learn takes it: scikit-learn's exact search on the sparse rows
        (the torch search is dense), the same draws, rows built as sparse ``base + step * (partner - base)``;
        the output keeps the input's format."""
        from scipy import sparse

        fmt = X.format
        X = X.tocsr()
        new_rows, labels, origins, partners = [], [], [], []
        for klass, n_samples in ((k, n) for k, n in self.sampling_strategy_.items() if n > 0):
            members = np.flatnonzero(y == klass)
            X_class = X[members]
            search = NearestNeighbors(n_neighbors=self.k_neighbors + 1, algorithm="brute") \
                if isinstance(self.k_neighbors, numbers.Integral) else clone(self.k_neighbors)
            nns = search.fit(X_class).kneighbors(X_class, return_distance=False)[:, 1:]
            picks, steps = self._draws(nns.size, n_samples)
            rows, cols = np.floor_divide(picks, nns.shape[1]), np.mod(picks, nns.shape[1])
            partner = nns[rows, cols]
            base = X_class[rows]
            new_rows.append(base + sparse.csr_matrix(steps[:, None]).multiply(X_class[partner] - base))
            labels.append(np.full(n_samples, klass, dtype=y.dtype))
            origins.append(members[rows])
            partners.append(members[partner])
        self.sample_origin_ = np.concatenate(origins) if origins else np.zeros(0, dtype=np.int64)
        self.sample_neighbor_ = np.concatenate(partners) if partners else np.zeros(0, dtype=np.int64)
        X_out = sparse.vstack([X, *new_rows], format=fmt).astype(X.dtype)
        return X_out, np.concatenate([y, *labels])


def interpolate(X: np.ndarray, rows: np.ndarray, partner: np.ndarray, steps: np.ndarray, out: np.ndarray,
                chunk: int = 16384) -> np.ndarray:
    """``out[i] = X[rows[i]] + steps[i] * (X[partner[i]] - X[rows[i]])``, with imbalanced-learn's
    arithmetic: the difference in ``X``'s dtype, the step and the sum in float64, then cast to
    ``out``'s dtype. In torch (every core), chunked so temporaries stay small; bit-identical to the
    numpy expression imbalanced-learn evaluates (separate multiply and add, no fused multiply-add)."""
    source = torch.from_numpy(np.ascontiguousarray(X))
    rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    partner_t = torch.from_numpy(np.asarray(partner, dtype=np.int64))
    steps_t = torch.from_numpy(np.asarray(steps, dtype=np.float64))
    for start in range(0, len(rows_t), chunk):
        stop = start + chunk
        base = source.index_select(0, rows_t[start:stop])
        diff = source.index_select(0, partner_t[start:stop]).sub_(base)
        # the cast and store in numpy: one thread first-touches the fresh output pages, where two
        # torch threads faulting on the same huge pages measured 10x slower
        out[start:stop] = base.double().add_(diff.double().mul_(steps_t[start:stop, None])).numpy()
    return out
