"""``TorchNearestNeighbors``: scikit-learn's neighbours estimator API over augforge's exact torch search, for
imbalanced-learn's samplers to take as ``k_neighbors``, ``m_neighbors`` or ``n_neighbors``."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator

from augforge.balance.knn import exact_knn


class TorchNearestNeighbors(BaseEstimator):
    """A scikit-learn-compatible exact nearest-neighbour estimator backed by ``exact_knn``.

    Pass it wherever imbalanced-learn takes a neighbours object (``k_neighbors``, ``m_neighbors``,
    ``n_neighbors``): BorderlineSMOTE, ADASYN, SVMSMOTE then search in torch, on the GPU when present.
    """

    def __init__(self, n_neighbors: int = 5, device: str = "auto", memory_mb: float = 256.0,
                 method: str = "auto", n_jobs: int | None = None) -> None:
        self.n_neighbors = n_neighbors
        #: accepted as scikit-learn's (imbalanced-learn's cleaning samplers set it); the search sizes its own threads
        self.n_jobs = n_jobs
        self.device = device
        self.memory_mb = memory_mb
        self.method = method

    def fit(self, X, y=None):
        """Remember the points to search."""
        self._fit_X = np.asarray(X)  # its own dtype: the small search is imbalanced-learn's, on it
        self.n_samples_fit_ = len(self._fit_X)
        self.n_features_in_ = self._fit_X.shape[1]
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """As ``sklearn.neighbors.NearestNeighbors.kneighbors``: with X=None, each point is left out of its own."""
        k = n_neighbors or self.n_neighbors
        options = dict(device=self.device, memory_mb=self.memory_mb, method=self.method)
        if X is None:
            dist, idx = exact_knn(self._fit_X, k, exclude_self=True, **options)
        else:
            if k > self.n_samples_fit_:
                raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                                 f"n_samples_fit = {self.n_samples_fit_}, n_samples = {len(X)}")
            dist, idx = exact_knn(self._fit_X, k, np.asarray(X), **options)
        return (dist, idx) if return_distance else idx

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """The k-neighbours graph as a CSR matrix (connectivity or distance)."""
        dist, idx = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = idx.shape
        values = np.ones(n_queries * k) if mode == "connectivity" else dist.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix((values, idx.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))
