"""Image near-duplicates: a 64-bit difference hash (dHash) per image, and an exact Hamming-radius search
that does not compare all pairs (multi-index hashing).

dHash: the image in grey, resized to 9×8, one bit per pair of horizontal neighbours (left brighter than
right). Resizing, JPEG re-compression and a uniform brightness shift keep most bits; a slight crop moves
a few.

Multi-index hashing (Norouzi et al. 2012): cut the 64 bits into m disjoint chunks. Two hashes within
Hamming distance ``radius`` are within ``radius // m`` on at least one chunk (pigeonhole), so the candidates
are found by looking up each chunk value with its few-bit variations in that chunk's sorted table; every
candidate is then checked on all 64 bits. m is chosen for the least expected work (``chunk_count``). The
result is exact: every pair within the radius, and no other.
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
    found = []
    for shift, width in _chunks(m):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for mask in _masks(width, radius // m):
            query = keys ^ mask
            low = np.searchsorted(sorted_keys, query, "left")
            counts = np.searchsorted(sorted_keys, query, "right") - low
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
