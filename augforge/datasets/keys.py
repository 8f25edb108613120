"""Seeded keys: every random choice derives from (seed, purpose, what it is for: a row id, a chunk, a rank)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import xxhash


def row_keys(seed: int, ids: Iterable[str], purpose: str) -> np.ndarray:
    """A uint64 key for each id, stable across runs, machines and row order.

    ``purpose`` decorrelates independent choices made on the same rows (the split
    draw and the imbalance draw, say).
    """
    salt = f"{purpose}\x00".encode()
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(salt + i.encode(), seed) for i in ids), dtype=np.uint64)


def row_rng(seed: int, row_id: str, copy: int = 0, purpose: str = "") -> np.random.Generator:
    """A numpy Generator seeded from (seed, row id, copy index, purpose)."""
    key = xxhash.xxh3_128_intdigest(f"{purpose}\x00{row_id}\x00{copy}".encode(), int(seed) & 0xFFFFFFFFFFFFFFFF)
    return np.random.default_rng(key)


def derive_seed(seed: int, purpose: str, *parts) -> int:
    """A uint64 seed for one independent random stream: xxh3-64 of ``purpose`` and ``parts`` (joined by NUL),
    seeded with ``seed``. ``derive_seed(seed, "augment", chunk)`` seeds a build chunk's pipeline, say."""
    text = "\x00".join([purpose, *map(str, parts)])
    return xxhash.xxh3_64_intdigest(text.encode(), int(seed) & 0xFFFFFFFFFFFFFFFF)
