"""Feature-row near-duplicates: exact rows (equal bytes), and rows within Euclidean distance ``epsilon`` of
each other, from augforge's exact neighbour search (``augforge.balance.knn``)."""

from __future__ import annotations

import numpy as np

from augforge.balance.knn import exact_knn

#: the neighbours searched per row for the epsilon pairs (a row with more twins than this lists this many)
NEIGHBOURS = 8


def near_feature_pairs(features: np.ndarray, epsilon: float = 0.0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, distance), i < j, of rows within ``epsilon`` (0: exactly equal rows)."""
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if len(x) < 2:
        return []
    if epsilon == 0.0:
        groups: dict[bytes, list[int]] = {}
        for i, row in enumerate(x):
            groups.setdefault(row.tobytes(), []).append(i)
        return [(a, b, 0.0) for members in groups.values() for k, a in enumerate(members) for b in members[k + 1:]]
    k = min(NEIGHBOURS, len(x) - 1)
    distance, index = exact_knn(x, k, exclude_self=True)
    pairs = {}
    for i in range(len(x)):
        for d, j in zip(distance[i], index[i]):
            if d <= epsilon:
                pairs[(min(i, int(j)), max(i, int(j)))] = float(d)
    return sorted((a, b, d) for (a, b), d in pairs.items())
