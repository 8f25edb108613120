"""Image near-duplicates: a 64-bit difference hash (dHash) per image, and an exact Hamming-radius search
that does not compare all pairs (multi-index hashing).

dHash: the image in grey, resized to 9×8, one bit per pair of horizontal neighbours (left brighter than
right). Resizing, JPEG re-compression and a uniform brightness shift keep most bits; a slight crop moves
a few.

Multi-index hashing (Norouzi et al. 2012): cut the 64 bits into ``radius + 1`` disjoint chunks. Two hashes
within Hamming distance ``radius`` agree exactly on at least one chunk (pigeonhole), so the candidates are
the pairs that share a chunk value, found by sorting each chunk; every candidate is then checked on all 64
bits. The result is exact: every pair within the radius, and no other.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from augforge.errors import AugforgeError

#: the largest radius the search takes: 64 bits in radius + 1 chunks of at least 4 bits each
MAX_RADIUS = 15


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
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)


def _chunks(radius: int) -> list[tuple[int, int]]:
    """(shift, width) of the ``radius + 1`` chunks that cover the 64 bits."""
    count = radius + 1
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    out, shift = [], 0
    for width in widths:
        out.append((shift, width))
        shift += width
    return out


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Every pair (i, j, distance), i < j, of hashes within Hamming ``radius``, exactly, sorted by (i, j)."""
    if not 0 <= radius <= MAX_RADIUS:
        raise AugforgeError(f"radius {radius}: expected 0 to {MAX_RADIUS} bits")
    hashes = np.asarray(hashes, dtype=np.uint64)
    found = []
    for shift, width in _chunks(radius):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends):
            if end - start < 2:
                continue
            members = np.sort(order[start:end])
            i, j = np.triu_indices(len(members), k=1)
            found.append(np.stack([members[i], members[j]], axis=1))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    candidates = np.unique(np.concatenate(found), axis=0)
    distance = hamming(hashes[candidates[:, 0]], hashes[candidates[:, 1]])
    keep = distance <= radius
    return np.column_stack([candidates[keep], distance[keep]]).astype(np.int64)
