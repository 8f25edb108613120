"""Near-duplicate pairs into clusters (union-find), each cluster told apart as redundancy within a split or
leakage across splits (a test or val row whose near-twin is in train or in the other held-out split)."""

from __future__ import annotations

import numpy as np


def clusters_of(pairs, n: int) -> list[list[int]]:
    """Connected components of the pairs (i, j, ...) over rows 0..n-1, each with at least 2 rows, sorted."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for pair in pairs:
        a, b = root(int(pair[0])), root(int(pair[1]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in {int(p[k]) for p in pairs for k in (0, 1)}:
        groups.setdefault(root(i), []).append(i)
    return sorted(sorted(members) for members in groups.values())


def describe_clusters(clusters: list[list[int]], ids: list[str], splits: list[str]) -> list[dict]:
    """Per cluster: its rows (ids and splits), and its kind: ``leakage`` when its rows are in more than one
    split (a test row with a near-twin in train), else ``redundancy``; leaking clusters first, then by size."""
    out = []
    for members in clusters:
        where = sorted({splits[i] for i in members})
        leaks = len(where) > 1
        out.append({"rows": [{"id": ids[i], "split": splits[i]} for i in members], "splits": where,
                    "kind": "leakage" if leaks else "redundancy"})
    return sorted(out, key=lambda c: (c["kind"] != "leakage", -len(c["rows"]), c["rows"][0]["id"]))
