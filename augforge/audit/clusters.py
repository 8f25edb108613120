"""Near-duplicate pairs into clusters that do not chain, each told apart as redundancy within a split or leakage
across splits (a test or val row whose near-twin is in train or in the other held-out split).

Clusters are stars: the row with the most near-duplicate partners is a representative, its partners join it,
and so on among the rows left. Every member is a near-duplicate of its representative: A~B and B~C put A and
C together only through B's cluster, never a chain A~B~C~D into one group (connected components did that, and
on a homogeneous set one cluster took 88% of the rows)."""

from __future__ import annotations



def star_clusters(pairs, n: int) -> list[list[int]]:
    """Clusters of verified pairs (i, j, ...) over rows 0..n-1 that do not chain: the row with the most partners
    (ties: the lower index) takes its partners not yet taken, then the next among the rows left; each cluster
    (at least 2 rows) starts with its representative, its other members sorted."""
    partners: dict[int, set[int]] = {}
    for pair in pairs:
        a, b = int(pair[0]), int(pair[1])
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    taken: set[int] = set()
    clusters = []
    for row in sorted(partners, key=lambda r: (-len(partners[r]), r)):
        if row in taken:
            continue
        members = sorted(partners[row] - taken)
        if members:
            clusters.append([row, *members])
            taken.update(members)
            taken.add(row)
    return clusters


def describe_clusters(clusters: list[list[int]], ids: list[str], splits: list[str]) -> list[dict]:
    """Per cluster: its representative (its first row), its rows (ids and splits), and its kind: ``leakage``
    when its rows are in more than one split (a test row with a near-twin in train), else ``redundancy``;
    leaking clusters first, then by size."""
    out = []
    for members in clusters:
        where = sorted({splits[i] for i in members})
        leaks = len(where) > 1
        out.append({"representative": ids[members[0]], "rows": [{"id": ids[i], "split": splits[i]} for i in members],
                    "splits": where, "kind": "leakage" if leaks else "redundancy"})
    return sorted(out, key=lambda c: (c["kind"] != "leakage", -len(c["rows"]), c["rows"][0]["id"]))
