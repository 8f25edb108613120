"""FastSMOTE: imbalanced-learn's SMOTE, same API and semantics, with an exact torch neighbour search."""

from __future__ import annotations

import numbers

import numpy as np
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from augforge.balance.knn import TorchNearestNeighbors, pick_device


def neighbours(k: int, backend: str = "auto", device: str = "auto"):
    """A nearest-neighbours estimator for ``k`` neighbours.

    ``torch``: ``TorchNearestNeighbors`` (exact, chunked, GPU when present). ``sklearn``: scikit-learn's
    brute force. ``auto``: torch on a GPU; on a CPU scikit-learn's brute force, measured faster there
    (docs/benchmarks.md).
    """
    if backend == "auto":
        backend = "torch" if pick_device(device).type == "cuda" else "sklearn"
    if backend == "torch":
        return TorchNearestNeighbors(n_neighbors=k, device=device)
    if backend == "sklearn":
        return NearestNeighbors(n_neighbors=k, algorithm="brute")
    raise ValueError(f"unknown knn_backend {backend!r}; use auto, torch or sklearn")


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
        "knn_backend": [StrOptions({"auto", "torch", "sklearn"})],
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
        X = np.asarray(X)
        X_parts, y_parts, origins, partners = [X.copy()], [y.copy()], [], []
        for klass, n_samples in self.sampling_strategy_.items():
            if n_samples == 0:
                continue
            members = np.flatnonzero(y == klass)
            X_class = X[members]
            nn = self._neighbours().fit(X_class)
            nns = nn.kneighbors(X_class, return_distance=False)[:, 1:]
            # imbalanced-learn's draws, in its order, from a fresh generator per class
            rng = check_random_state(self.random_state)
            picks = rng.randint(low=0, high=nns.size, size=n_samples)
            steps = rng.uniform(size=n_samples)[:, np.newaxis]
            rows, cols = np.floor_divide(picks, nns.shape[1]), np.mod(picks, nns.shape[1])
            partner = nns[rows, cols]
            X_new = (X_class[rows] + steps * (X_class[partner] - X_class[rows])).astype(X.dtype)
            X_parts.append(X_new)
            y_parts.append(np.full(n_samples, klass, dtype=y.dtype))
            origins.append(members[rows])
            partners.append(members[partner])
        self.sample_origin_ = np.concatenate(origins) if origins else np.zeros(0, dtype=np.int64)
        self.sample_neighbor_ = np.concatenate(partners) if partners else np.zeros(0, dtype=np.int64)
        return np.vstack(X_parts), np.hstack(y_parts)
