"""Cleaning samplers on augforge's exact neighbour search: imbalanced-learn's rules, the same output.

``TomekLinks`` builds its own ``NearestNeighbors(n_neighbors=2)`` and takes no neighbours object, so
``ExactTomekLinks`` runs the same rule on ``augforge.balance.fast_smote.neighbours`` (scikit-learn's
search on small problems, the pruned torch search on large ones or a GPU). The ENN family (ENN,
RENN, AllKNN) take a neighbours object already: ``augforge.balance.strategy`` passes them one.
"""

from __future__ import annotations

import numpy as np
from imblearn.under_sampling import TomekLinks
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import StrOptions

from augforge.balance.fast_smote import KNN_BACKENDS


class ExactTomekLinks(TomekLinks):
    """``imblearn.under_sampling.TomekLinks`` with its neighbour search on augforge's exact backend."""

    _parameter_constraints: dict = {**TomekLinks._parameter_constraints, "knn_backend": [StrOptions(set(KNN_BACKENDS))]}

    def __init__(self, *, sampling_strategy="auto", n_jobs=None, knn_backend="auto"):
        super().__init__(sampling_strategy=sampling_strategy, n_jobs=n_jobs)
        self.knn_backend = knn_backend

    def _fit_resample(self, X, y):
        from augforge.balance.fast_smote import neighbours  # lazy: torch (`augforge report` stays light)

        nearest = neighbours(2, self.knn_backend).fit(X).kneighbors(X, return_distance=False)[:, 1]
        links = self.is_tomek(y, nearest, self.sampling_strategy_)
        self.sample_indices_ = np.flatnonzero(np.logical_not(links))
        return _safe_indexing(X, self.sample_indices_), _safe_indexing(y, self.sample_indices_)
