"""Image near-duplicates: a 64-bit difference hash (dHash) per image, and an exact Hamming-radius search
that does not compare all pairs (multi-index hashing).

dHash: the image in grey, resized to 9×8, one bit per pair of horizontal neighbours (left brighter than
right). Resizing, JPEG re-compression and a uniform brightness shift keep most bits; a slight crop moves
a few.

Multi-index hashing (Norouzi et al. 2012): cut the 64 bits into m disjoint chunks. Two hashes within
Hamming distance ``radius`` are within ``radius // m`` on at least one chunk (pigeonhole), so the candidates
are found by looking up each chunk value with its few-bit variations in that chunk's sorted table; every
candidate is then checked on all 64 bits. m is chosen for the least expected work (``chunk_count``). Where
the hashes cluster so much that the lookups would check more than a tenth of all pairs (many near-twins per
image), every pair is compared instead, a block at a time. Either way the result is exact: every pair
within the radius, and no other.
"""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
from PIL import Image

from augforge.errors import AugforgeError

#: the largest radius the search takes (beyond it, "near" stops meaning the same picture for a 64-bit hash)
MAX_RADIUS = 16
#: the audit's default radius for candidates (verification keeps the near-duplicates among them)
RADIUS = 14


def image_from_array(image: np.ndarray) -> Image.Image:
    """An HxW or HxWxC uint8 array as a PIL image (a single channel axis dropped)."""
    return Image.fromarray(image.squeeze() if image.ndim == 3 and image.shape[2] == 1 else image)


def dhash(image) -> int:
    """The 64-bit difference hash of an image (PIL image, encoded bytes, or an HxW[xC] uint8 array)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(image)))
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, :-1] > grey[:, 1:]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hash_images(images) -> np.ndarray:
    """The dHash of every image, as uint64."""
    return np.fromiter((dhash(image) for image in images), dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances between uint64 arrays (element by element)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def _chunks(count: int) -> list[tuple[int, int]]:
    """(shift, width) of ``count`` near-equal chunks that cover the 64 bits."""
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    out, shift = [], 0
    for width in widths:
        out.append((shift, width))
        shift += width
    return out


def _masks(width: int, bits: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``bits`` bits set."""
    masks = [0]
    for k in range(1, bits + 1):
        masks += [sum(1 << b for b in combo) for combo in itertools.combinations(range(width), k)]
    return np.asarray(masks, dtype=np.uint64)


def chunk_count(n: int, radius: int) -> int:
    """The number of chunks with the least expected work for ``n`` uniform hashes: lookups (masks per chunk
    times rows) plus candidate checks (rows squared over 2^width per mask)."""
    def cost(m: int) -> float:
        width, bits = 64 // m, radius // m
        masks = sum(math.comb(width, k) for k in range(bits + 1))
        return m * masks * n * (1.0 + n / 2.0 ** width)

    return min(range(1, radius + 2), key=cost)


#: entries of one block of the all-pairs comparison (rows x hashes)
BLOCK_ENTRIES = 1 << 24
#: share of all pairs above which the chunk lookups would check more candidates than comparing all pairs costs
ALL_PAIRS_SHARE = 0.1


def all_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """The same result as ``near_pairs`` by comparing every pair, a block of rows at a time (popcount)."""
    n = len(hashes)
    block = max(1, BLOCK_ENTRIES // max(1, n))  # rows per block: at most BLOCK_ENTRIES distances at a time
    found = []
    for start in range(0, n - 1, block):
        rows = hashes[start : start + block]
        distance = np.bitwise_count(rows[:, None] ^ hashes[None, start:])  # this block against itself and later
        i, j = np.nonzero(distance <= radius)
        keep = j > i
        i, j = i[keep], j[keep]
        found.append(np.column_stack([i + start, j + start, distance[i, j]]))
    out = np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), dtype=np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def _candidate_share(hashes: np.ndarray, m: int, radius: int) -> float:
    """The expected share of all pairs the chunk lookups would check: exact chunk collisions (sum of squared
    bucket sizes) times the masks per chunk."""
    n = len(hashes)
    total = 0.0
    for shift, width in _chunks(m):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        _, sizes = np.unique(keys, return_counts=True)
        masks = sum(math.comb(width, k) for k in range(radius // m + 1))
        total += float((sizes.astype(np.float64) ** 2).sum() - n) / 2 * masks
    return total / (n * (n - 1) / 2)


#: chunks up to this many bits get a dense table of bucket starts (a gather per lookup, not a binary search)
DENSE_BITS = 24


def _bucket_lookup(sorted_keys: np.ndarray, width: int):
    """A function from query keys to (first position in ``sorted_keys``, how many equal it)."""
    if width <= DENSE_BITS:
        counts = np.bincount(sorted_keys, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        return lambda query: (starts[query], counts[query])

    def search(query):
        low = np.searchsorted(sorted_keys, query, "left")
        return low, np.searchsorted(sorted_keys, query, "right") - low

    return search


def nearest_pairs(hashes: np.ndarray, radius: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (i, j, distance), i < j, each among the ``cap`` nearest hashes within ``radius`` of i or of j (ties
    by index); whether each row has any hash within ``radius``). Bounded: at most ``cap`` pairs a row, whatever
    the radius admits on a homogeneous set. Sparse hashes go through ``near_pairs``; where they cluster, every
    row is compared with all the others a block at a time, and only its ``cap`` nearest are kept."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(n, dtype=bool)
    if not 0 <= radius <= MAX_RADIUS:
        raise AugforgeError(f"radius {radius}: expected 0 to {MAX_RADIUS} bits")
    m = chunk_count(n, radius)
    if _candidate_share(hashes, m, radius) <= ALL_PAIRS_SHARE:
        pairs = near_pairs(hashes, radius)
        has = np.zeros(n, dtype=bool)
        has[pairs[:, 0]] = has[pairs[:, 1]] = True
        return cap_per_row(pairs, n, cap), has
    block = max(1, BLOCK_ENTRIES // (4 * n))  # four int64 arrays of block x n at a time
    found, has = [], np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        distance = np.bitwise_count(hashes[rows, None] ^ hashes[None, :]).astype(np.int64)
        distance[np.arange(len(rows)), rows] = 99  # not its own neighbour
        has[rows] = (distance <= radius).any(axis=1)
        k = min(cap, n - 1)
        key = distance * n + np.arange(n)  # the nearest first, ties by index
        nearest = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(key, axis=1)[:, :k]
        near = distance[np.arange(len(rows))[:, None], nearest]
        i, j = np.nonzero(near <= radius)
        found.append(np.column_stack([rows[i], nearest[i, j], near[i, j]]))
    pairs = np.concatenate(found).astype(np.int64)
    first, second, keep = unordered_pairs(pairs[:, 0], pairs[:, 1], n)
    return np.column_stack([first, second, pairs[keep, 2]]), has


def unordered_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a[k], b[k]) of rows 0..n-1 as (low, high, the index k kept): each unordered pair once, the first
    of its occurrences, sorted by (low, high)."""
    low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    _, keep = np.unique(low * n + high, return_index=True)
    return low[keep], high[keep], keep


def cap_per_row(pairs: np.ndarray, n: int, cap: int) -> np.ndarray:
    """The pairs (i, j, distance) among the ``cap`` nearest of i or of j (distance, then index), sorted."""
    if len(pairs) == 0:
        return pairs
    keep = np.zeros(len(pairs), dtype=bool)
    for own, other in ((0, 1), (1, 0)):
        order = np.lexsort((pairs[:, other], pairs[:, 2], pairs[:, own]))
        rows = pairs[order, own]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")
        keep[order[rank < cap]] = True
    kept = pairs[keep]
    return kept[np.lexsort((kept[:, 1], kept[:, 0]))]


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Every pair (i, j, distance), i < j, of hashes within Hamming ``radius``, exactly, sorted by (i, j).

    Multi-index hashing: with the bits cut into m chunks, two hashes within ``radius`` are within
    ``radius // m`` of each other on at least one chunk (else the distance would exceed radius). Each chunk is
    sorted once; every hash looks up its chunk value with each mask of at most ``radius // m`` bits
    (``searchsorted``), and every candidate is checked on all 64 bits."""
    if not 0 <= radius <= MAX_RADIUS:
        raise AugforgeError(f"radius {radius}: expected 0 to {MAX_RADIUS} bits")
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 3), dtype=np.int64)
    m = chunk_count(n, radius)
    if _candidate_share(hashes, m, radius) > ALL_PAIRS_SHARE:  # clustered hashes: comparing all pairs is cheaper
        return all_pairs(hashes, radius)
    found = []
    for shift, width in _chunks(m):
        keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)  # a bijection: equality is all a lookup needs
        order = np.argsort(keys, kind="stable")
        lookup = _bucket_lookup(keys[order], width)
        for mask in _masks(width, radius // m).astype(np.int64):
            low, counts = lookup(keys ^ mask)
            total = int(counts.sum())
            if total == 0:
                continue
            i = np.repeat(np.arange(n), counts)
            within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            j = order[np.repeat(low, counts) + within]
            keep = i < j
            i, j = i[keep], j[keep]
            close = np.bitwise_count(hashes[i] ^ hashes[j]) <= radius  # checked now: few survive
            found.append(i[close].astype(np.int64) * n + j[close])
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    unique = np.unique(np.concatenate(found))
    first, second = unique // n, unique % n
    return np.column_stack([first, second, hamming(hashes[first], hashes[second])]).astype(np.int64)
