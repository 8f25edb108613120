"""Exact k-nearest neighbours in torch: pruned by cells, chunked, certified exact, GPU when present.

Two searches give the same answer:

``brute``: every query against every point. Distances are first computed in float32 with the
matrix-product identity ``|q - x|^2 = |q|^2 + |x|^2 - 2 q.x`` (one GEMM per chunk of queries),
which picks ``k + MARGIN`` candidates per query. The candidates are re-ranked with float64
distances computed from differences, ties broken by index. A bound on the float32 rounding
error then certifies each query: if no non-candidate can be closer than the k-th re-ranked
distance, the answer is exact; the few queries that cannot be certified are recomputed in
float64 over every point. Memory is bounded by ``memory_mb`` per chunk.

``cells``: the points are cut into about ``sqrt(n)`` cells (k-means on a sample); each cell
keeps its centre, its radius and its reach (the distance from the centre within which it holds
k + 1 points). By the triangle inequality each query's k-th neighbour is no farther than
``u = min over cells (|q - centre| + reach)``, and no point of a cell whose centre is farther
than ``u + radius`` can be a neighbour. Queries are taken a cell at a time, and the exact search
(as in ``brute``) runs over the cells that can hold a neighbour of any of them. On data with
structure (clusters: embeddings, many real feature sets) this skips most pairs. Where it would
not (noise-like or overlapping data), ``auto`` sees it from the plan, before any distance
between points is computed, and runs the dense search (torch ``brute``) instead.

``auto`` on a CPU below ``DENSE_TORCH_PAIRS`` query x point pairs runs none of these: it runs the search
imbalanced-learn itself runs, scikit-learn's ``NearestNeighbors`` with its default algorithm (a KD-tree
up to 15 features), on the input's own dtype. Above that it tries the cells, and where they would not
prune it runs that same search again rather than torch's dense one: on a CPU the dense torch search was
0.65-0.7x as fast as scikit-learn's at 36,000 x 32 (docs/benchmarks.md), so ``auto`` is never slower
than imbalanced-learn there. There the neighbour lists are imbalanced-learn's exactly,
tie order and float64 included, so the samplers built on them are bit-identical to imbalanced-learn's.
The torch searches order exactly tied neighbours by index and compute float32 keys from float32 values
(re-ranked in float64): they give imbalanced-learn's lists whenever no two of a query's candidates are
at exactly the same distance and the data are float32 (tested; docs/balance.md states it).

The candidate top-k of long rows works a block of 64 keys at a time (``_smallest``), and on a CPU a
chunk of queries keeps its keys within ``CPU_CHUNK_BYTES`` so that they are selected from the cache:
together that made the dense search 1.2-1.6x faster than scikit-learn's brute force on this project's
2-core machine (it had been 1.4x slower with ``torch.topk`` over chunks sized by memory alone). Large
problems go tile by tile (``CPU_TILE_COLUMNS`` points), merging a running top-c.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from augforge.balance.search_threads import search_threads, torch_threads

#: Extra candidates per query beyond k, re-ranked exactly.
MARGIN = 4
#: float32 unit round-off.
_U32 = 2.0 ** -24
#: ``auto`` runs the dense search when the cell plan still needs more than this share of all pairs.
DENSE_SHARE = 0.25
#: cells per square root of the number of points.
CELLS_PER_ROOT = 0.5
METHODS = ("auto", "cells", "brute")
#: on a CPU, ``auto`` runs imbalanced-learn's own search below this many pairs without trying the cells
DENSE_TORCH_PAIRS = 4e8
#: on a CPU, the keys are computed a tile of (chunk of queries) x (at most CPU_TILE_COLUMNS points) at
#: a time, each tile at most CPU_CHUNK_BYTES of float32 keys, so that it stays in the cache
CPU_CHUNK_BYTES = 12 << 20
CPU_TILE_COLUMNS = 8192
#: a query's own key when it is left out: after every other point, before the padding (+inf)
_SELF_KEY = float(torch.finfo(torch.float32).max)
#: the candidate top-k works block-wise (``_smallest``) on tiles of at least this many blocks per candidate
BLOCKED_TOPK_BLOCKS = 8
TOPK_BLOCK = 64


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is the first CUDA device when one is present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sorted_by_distance_then_index(d: torch.Tensor, k: int, index: torch.Tensor | None = None):
    """The k smallest entries per row, ordered by (distance, index)."""
    if index is None:
        index = torch.arange(d.shape[1], device=d.device).expand_as(d)
    values, order = torch.sort(d, dim=1)
    chosen = order[:, :k]
    # one sort decides every row whose first k + 1 values are distinct; rows with a tie there
    # need the index as the second key: a stable sort by index, then a stable sort by distance
    span = min(k + 1, d.shape[1])
    tied = torch.nonzero((values[:, 1:span] == values[:, : span - 1]).any(1)).flatten()
    if len(tied):
        by_index = torch.argsort(index[tied], dim=1, stable=True)
        by_distance = torch.argsort(torch.gather(d[tied], 1, by_index), dim=1, stable=True)[:, :k]
        chosen = chosen.clone()
        chosen[tied] = torch.gather(by_index, 1, by_distance)
    return torch.gather(d, 1, chosen), torch.gather(index, 1, chosen)


class _TopK(NamedTuple):
    values: torch.Tensor
    indices: torch.Tensor


def _smallest(keys: torch.Tensor, c: int) -> _TopK:
    """``torch.topk(keys, c, largest=False, sorted=True)`` for rows of whole ``TOPK_BLOCK``-wide blocks, with
    far less work on long rows.

    The c blocks with the smallest minima hold the c smallest keys: the c-th smallest key is at most the
    c-th smallest block minimum, so any block holding one of them has a minimum no larger. One vectorized
    minimum per block, a top-k over the minima, a top-k over c blocks. Every key left out is at least the
    c-th value returned, which is what the float32 certification needs.
    """
    q, width = keys.shape
    blocks = keys.view(q, width // TOPK_BLOCK, TOPK_BLOCK)
    chosen = torch.topk(blocks.amin(2), c, dim=1, largest=False, sorted=False).indices
    pooled = torch.gather(blocks, 1, chosen[:, :, None].expand(-1, -1, TOPK_BLOCK)).view(q, c * TOPK_BLOCK)
    values, at = torch.topk(pooled, c, dim=1, largest=False, sorted=True)
    return _TopK(values, torch.gather(chosen, 1, at // TOPK_BLOCK) * TOPK_BLOCK + at % TOPK_BLOCK)


class _Points:
    """Points prepared for searching: original float32 values, centred values and squared norms."""

    def __init__(self, x: torch.Tensor, center: torch.Tensor) -> None:
        self.x = x
        self.xc = x - center
        self.sq = (self.xc * self.xc).sum(1)

    def subset(self, ids: torch.Tensor) -> "_Points":
        """The points ``ids`` (a view with the same centring)."""
        out = _Points.__new__(_Points)
        out.x, out.xc, out.sq = self.x[ids], self.xc[ids], self.sq[ids]
        return out


def _exact_rows(q: torch.Tensor, x: torch.Tensor, x_ids: torch.Tensor, k: int, q_ids: torch.Tensor | None,
                memory_mb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 k-NN of a few queries over ``x`` by direct differences (the fallback path)."""
    q64, x64 = q.double(), x.double()
    rows = max(1, int(memory_mb * 2**20 // (8 * max(len(x64), 1) * 2)))
    dists, idxs = [], []
    for start in range(0, len(q64), rows):
        d = torch.cdist(q64[start : start + rows], x64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        if q_ids is not None:
            d[q_ids[start : start + rows, None] == x_ids[None, :]] = float("inf")
        values, order = _sorted_by_distance_then_index(d, k, x_ids.expand_as(d))
        dists.append(values)
        idxs.append(order)
    return torch.cat(dists), torch.cat(idxs)


def _candidates(qc: torch.Tensor, own: torch.Tensor | None, xc: torch.Tensor, x_sq: torch.Tensor,
                x_ids: torch.Tensor, n: int, c: int, tile: int) -> _TopK:
    """The ``c`` smallest float32 keys ``|x|^2 - 2 q.x`` of each query over the first ``n`` columns, taken
    ``tile`` columns at a time (a running top-c merged with each tile's): the keys of one tile of a chunk
    stay small enough for the cache. Every column left out has a key at least the c-th value returned.

    ``xc``/``x_sq`` may be padded past ``n`` with keys of +inf; a query's own column (``own``) gets the
    largest finite float32, so it is chosen before any padding but after every other point.
    """
    best = None
    for start in range(0, len(x_sq), tile):
        stop = min(start + tile, len(x_sq))
        keys = torch.addmm(x_sq[None, start:stop], qc, xc[start:stop].T, alpha=-2.0)
        real = min(stop, n) - start
        if own is not None:
            keys[:, :real].masked_fill_(own[:, None] == x_ids[None, start : start + real], _SELF_KEY)
        take = min(c, real)
        if (stop - start) % TOPK_BLOCK == 0 and (stop - start) >= BLOCKED_TOPK_BLOCKS * take * TOPK_BLOCK:
            found = _smallest(keys, take)
        else:
            found = torch.topk(keys, take, dim=1, largest=False, sorted=True)
        found = _TopK(found.values, found.indices + start)
        if best is not None:
            values, at = torch.topk(torch.cat([best.values, found.values], 1), c, dim=1, largest=False, sorted=True)
            found = _TopK(values, torch.gather(torch.cat([best.indices, found.indices], 1), 1, at))
        best = found
    return best


def _knn_among(queries: _Points, data: _Points, x_ids: torch.Tensor | None, k: int, q_ids: torch.Tensor | None,
               radius: torch.Tensor, memory_mb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact squared distances and ids of the k nearest of the ``data`` rows ``x_ids`` (None: all) of each query.

    ``q_ids`` (ids of the queries in ``data``) leaves each query out of its own neighbours. ``radius``
    bounds the centred norm of every point, for the rounding-error bound of the float32 keys.
    """
    dev = data.x.device
    if x_ids is None:
        x_ids, xc, x_sq = torch.arange(len(data.x), device=dev), data.xc, data.sq
    else:
        xc, x_sq = data.xc[x_ids], data.sq[x_ids]
    n, nq = len(x_ids), len(queries.x)
    c = min(k + MARGIN, n)
    pad = -n % TOPK_BLOCK  # whole blocks for the block-wise top-k: zero rows whose key is +inf
    xc = torch.cat([xc, xc.new_zeros(pad, xc.shape[1])])
    x_sq = torch.cat([x_sq, x_sq.new_full((pad,), float("inf"))])
    if dev.type == "cpu":  # tiles of keys that stay in the CPU's cache are selected from there
        tile = min(len(x_sq), CPU_TILE_COLUMNS)
        chunk = max(16, CPU_CHUNK_BYTES // (4 * tile))
    else:
        tile, chunk = len(x_sq), max(1, int(memory_mb * 2**20 // (4 * len(x_sq) * 3)))
    out_d = torch.empty(nq, k, dtype=torch.float64, device=dev)
    out_i = torch.empty(nq, k, dtype=torch.long, device=dev)
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        qx, qc, q_sq = queries.x[start:stop], queries.xc[start:stop], queries.sq[start:stop]
        own = None if q_ids is None else q_ids[start:stop]
        # |x|^2 - 2 q.x orders the points like |q - x|^2 does
        cand = _candidates(qc, own, xc, x_sq, x_ids, n, c, tile)
        found = x_ids[cand.indices]
        exact = ((data.x[found].double() - qx[:, None, :].double()) ** 2).sum(-1)  # original values, float64
        if own is not None:
            exact.masked_fill_(found == own[:, None], float("inf"))
        best_d, best_i = _sorted_by_distance_then_index(exact, k, found)
        # rounding error of the float32 keys: |fl(key) - key| <= err; a non-candidate z has
        # key(z) >= last candidate key, so |q - z|^2 >= last + |q|^2 - err
        err = (qx.shape[1] + 4) * _U32 * (2 * q_sq.sqrt() * radius + radius ** 2) * 2
        last = cand.values[:, -1].double() + q_sq.double()
        unsure = (c < n) & (last - err.double() <= best_d[:, -1])
        if unsure.any():
            which = torch.nonzero(unsure).flatten()
            fd, fi = _exact_rows(qx[which], data.x[x_ids], x_ids, k, None if own is None else own[which], memory_mb)
            best_d[which], best_i[which] = fd, fi
        out_d[start:stop], out_i[start:stop] = best_d, best_i
    return out_d, out_i


class _Cells:
    """The points cut into cells: k-means centres on a sample, each point's cell, each cell's radius."""

    def __init__(self, points: _Points, n_cells: int, need: int, seed: int = 0, iterations: int = 8) -> None:
        xc = points.xc
        n = len(xc)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sample = xc[torch.randperm(n, generator=gen)[: min(n, 32 * n_cells)].to(xc.device)]
        centres = self._seeds(sample, n_cells, gen)
        for _ in range(iterations):
            assign = self._nearest(sample, centres)
            sums = torch.zeros_like(centres).index_add_(0, assign, sample)
            sizes = torch.bincount(assign, minlength=len(centres)).to(sums.dtype)
            filled = sizes > 0
            centres[filled] = sums[filled] / sizes[filled, None]  # an empty cell keeps its centre
        self.centres = centres.double()
        self.cell = self._nearest(xc, centres)
        # exact float64 distance of each point to its centre; the cell radius is their maximum
        to_centre = (xc.double() - self.centres[self.cell]).norm(dim=1)
        self.radius = torch.zeros(len(centres), dtype=torch.float64, device=xc.device)
        self.radius.scatter_reduce_(0, self.cell, to_centre, reduce="amax")
        self.order = torch.argsort(self.cell, stable=True)  # point ids grouped by cell
        self.sizes = torch.bincount(self.cell, minlength=len(centres))
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes
        # reach[c]: the distance from the centre within which cell c holds `need` points (inf if it can't)
        grouped = to_centre[self.order]
        self.reach = torch.full((len(centres),), float("inf"), dtype=torch.float64, device=xc.device)
        for c in torch.nonzero(self.sizes >= need).flatten().tolist():
            start, size = int(self.starts[c]), int(self.sizes[c])
            self.reach[c] = torch.kthvalue(grouped[start : start + size], need).values

    @staticmethod
    def _seeds(sample: torch.Tensor, n_cells: int, gen: torch.Generator) -> torch.Tensor:
        """k-means++ seeding: each new centre drawn with probability proportional to squared distance."""
        chosen = [0]
        closest = ((sample - sample[0]) ** 2).sum(1)
        for _ in range(1, n_cells):
            total = float(closest.sum())
            if total <= 0:
                break  # fewer distinct points than cells
            # an inverse-CDF draw: one searchsorted instead of a multinomial, same distribution
            target = torch.rand(1, generator=gen, dtype=torch.float64).item() * total
            pick = min(int(torch.searchsorted(torch.cumsum(closest.double(), 0), target)), len(sample) - 1)
            chosen.append(pick)
            closest = torch.minimum(closest, ((sample - sample[pick]) ** 2).sum(1))
        return sample[chosen].clone()

    @staticmethod
    def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        keys = torch.addmm((centres * centres).sum(1)[None, :], x, centres.T, alpha=-2.0)
        return keys.argmin(1)

    def members(self, cells: torch.Tensor) -> torch.Tensor:
        """Ids of the points in ``cells``."""
        sizes, starts = self.sizes[cells].tolist(), self.starts[cells].tolist()
        return torch.cat([self.order[s : s + z] for s, z in zip(starts, sizes)])

    def distances(self, qc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds on the distances of centred queries to every centre.

        A float32 GEMM gives ``|q|^2 + |c|^2 - 2 q.c`` with a rounding error below
        ``a (|q|^2 + |c|^2)``; folding ``1 -/+ a`` into the norms gives both bounds, one GEMM each.
        """
        centres = self.centres.to(qc.dtype)
        q_sq, c_sq = (qc * qc).sum(1), (centres * centres).sum(1)
        a = 8 * (qc.shape[1] + 4) * _U32  # twice the error bound of the products, sums and the bound itself
        near = torch.addmm((1 - a) * q_sq[:, None], qc, centres.T, alpha=-2.0).add_((1 - a) * c_sq[None, :])
        far = torch.addmm((1 + a) * q_sq[:, None], qc, centres.T, alpha=-2.0).add_((1 + a) * c_sq[None, :])
        return near.clamp_min_(0).sqrt_(), far.clamp_min_(0).sqrt_()


def _cells_knn(queries: _Points, q_ids: torch.Tensor | None, data: _Points, k: int, radius: torch.Tensor,
               memory_mb: float, dense_share: float | None):
    """k-NN by cells (see the module docstring); None when ``dense_share`` is set and pruning falls short."""
    n, nq = len(data.x), len(queries.x)
    dev = data.x.device
    n_cells = max(1, min(n // 8, int(CELLS_PER_ROOT * math.sqrt(n))))
    cells = _Cells(data, n_cells, need=k + (q_ids is not None))
    m = len(cells.sizes)
    # float32 copies rounded outwards, so that the bounds stay on the safe side
    radius_up = torch.nextafter(cells.radius.float(), torch.tensor(float("inf"), device=dev))
    reach_up = torch.nextafter(cells.reach.float(), torch.tensor(float("inf"), device=dev))
    home = torch.empty(nq, dtype=torch.long, device=dev)
    wanted = torch.zeros(m, m, dtype=torch.int32, device=dev)  # home cell -> cells its queries need
    chunk = max(1, int(memory_mb * 2**20 // (m * 4 * 6)))
    for start in range(0, nq, chunk):
        near, far = cells.distances(queries.xc[start : start + chunk])
        # an upper bound on each query's k-th neighbour distance: a cell holding `need` points within
        # `reach` of its centre holds k points (itself aside) within |q - centre| + reach of the query
        bound = (far + reach_up[None, :]).min(1).values
        bound = bound * (1 + 1e-5)  # room for the rounding of the comparison below
        own = near.argmin(1)  # queries are searched a home cell at a time
        home[start : start + chunk] = own
        # a cell can hold a neighbour only if its nearest possible point is within the bound
        possible = near.sub_(radius_up[None, :]) <= bound[:, None]
        wanted.index_add_(0, own, possible.to(torch.int32))
    groups, group_of = torch.unique(home, return_inverse=True)
    # home cells that need the same cells are searched together: same pairs, fewer calls
    wanted, merged = torch.unique(wanted[groups] > 0, dim=0, return_inverse=True)
    group_of = merged[group_of]
    group_size = torch.bincount(group_of, minlength=len(wanted))
    pairs = int((group_size.double() * (wanted.double() @ cells.sizes.double())).sum())
    if dense_share is not None and pairs > dense_share * n * nq:
        return None
    out_d = torch.empty(nq, k, dtype=torch.float64, device=dev)
    out_i = torch.empty(nq, k, dtype=torch.long, device=dev)
    by_group = torch.argsort(group_of, stable=True)
    offsets = (torch.cumsum(group_size, 0) - group_size).tolist()
    for g, (start, count) in enumerate(zip(offsets, group_size.tolist())):
        members = by_group[start : start + count]
        ids = cells.members(torch.nonzero(wanted[g]).flatten())
        own = None if q_ids is None else q_ids[members]
        out_d[members], out_i[members] = _knn_among(queries.subset(members), data, ids, k, own,
                                                    radius, memory_mb)
    return out_d, out_i


def _sklearn_knn(data: np.ndarray, queries: np.ndarray | None, k: int, exclude_self: bool):
    """imbalanced-learn's own search (``auto`` on a CPU for small problems): scikit-learn's
    ``NearestNeighbors`` with its default algorithm, on the data's own dtype; float64 distances, indices."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(data)
    # kneighbors(None) leaves each point out of its own list: only what exclude_self asks for
    dist, idx = nn.kneighbors(None if exclude_self else (data if queries is None else queries), return_distance=True)
    return dist.astype(np.float64), idx.astype(np.int64)


def exact_knn(data, k: int, queries=None, *, exclude_self: bool = False, device: str = "auto",
              memory_mb: float = 256.0, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances and indices of the ``k`` nearest ``data`` rows of each query.

    ``queries`` defaults to ``data``; ``exclude_self`` (only when queries are the data) leaves each
    row out of its own neighbours. ``method`` is ``cells``, ``brute`` or ``auto`` (cells, or the
    dense search when the cells would not prune; see the module docstring). Returns float64
    distances and int64 indices, both ``(n_queries, k)``, ordered by distance then index.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if exclude_self and queries is not None:
        raise ValueError("exclude_self applies only when the queries are the data")
    dev = pick_device(device)
    data = np.asarray(data)
    queries = None if queries is None else np.asarray(queries)
    shape_q = data.shape if queries is None else queries.shape
    if len(shape_q) != 2 or data.ndim != 2 or shape_q[1] != data.shape[1]:
        raise ValueError(f"queries have shape {tuple(shape_q)}, data {tuple(data.shape)}: feature counts differ")
    n, nq = len(data), shape_q[0]
    available = n - (1 if exclude_self else 0)
    if k > available:
        raise ValueError(f"k={k} neighbours requested but only {available} points are available")
    if nq == 0 or k == 0:
        return np.zeros((nq, k)), np.zeros((nq, k), dtype=np.int64)
    if method == "auto" and dev.type == "cpu" and n * nq < DENSE_TORCH_PAIRS:
        return _sklearn_knn(data, queries, k, exclude_self)  # imbalanced-learn's search, its dtype and ties
    x = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=dev)
    q = x if queries is None else torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32), device=dev)
    center = x.mean(0, keepdim=True)  # keys on centred data: smaller norms, smaller rounding error
    points = _Points(x, center)
    query_points = points if queries is None else _Points(q, center)
    radius = points.sq.max().sqrt()
    q_ids = torch.arange(n, device=dev) if exclude_self else None
    result = None
    threads = search_threads() if dev.type == "cpu" else torch.get_num_threads()
    with torch.no_grad(), _no_tf32(), torch_threads(threads):
        if method in ("auto", "cells") and n > 4 * (k + MARGIN):
            result = _cells_knn(query_points, q_ids, points, k, radius, memory_mb,
                                DENSE_SHARE if method == "auto" else None)
        if result is None and not (method == "auto" and dev.type == "cpu"):
            result = _knn_among(query_points, points, None, k, q_ids, radius, memory_mb)
    if result is None:  # auto on a CPU, where the cells would not prune: the dense search is imbalanced-learn's
        return _sklearn_knn(data, queries, k, exclude_self)  # own (faster than torch's there, and bit-identical)
    out_d, out_i = result
    return out_d.sqrt().cpu().numpy(), out_i.cpu().numpy()


class _no_tf32:
    """Keep float32 matmuls in float32 on GPUs that would use TF32."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved
