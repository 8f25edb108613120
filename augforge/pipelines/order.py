"""The row order of a loader's epochs, as pure functions of (seed, epoch, rank): a permutation or
class-balanced draws, cut into equal per-rank shares. They need no dataset, so they are tested alone."""

from __future__ import annotations

import numpy as np

from augforge.errors import AugforgeError

#: What a loader does with the last rows when the split does not divide by the world size.
LAST = ("keep", "drop", "pad")


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The positions 0..n-1 in the order of ``epoch``: a permutation drawn from (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)


def balanced_order(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """An epoch of class-balanced draws: ``len(labels)`` positions drawn with replacement from (seed, epoch),
    each class equally likely, each row equally likely within its class."""
    rng = np.random.default_rng([int(seed), int(epoch), 0xBA1A])
    classes, inverse = np.unique(labels, return_inverse=True)
    members = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[members], np.arange(len(classes)))
    sizes = np.bincount(inverse, minlength=len(classes))
    pick = rng.integers(0, len(classes), len(labels))
    within = (rng.random(len(labels)) * sizes[pick]).astype(np.int64)
    return members[starts[pick] + within].astype(np.int64)


def rank_rows(order: np.ndarray, rank: int, world_size: int, last: str) -> np.ndarray:
    """This rank's share of an epoch's order: equal sizes for every rank, disjoint but for the padding."""
    n = len(order)
    if world_size > 1:
        if last == "drop":
            order = order[: (n // world_size) * world_size]
        elif n % world_size:
            order = np.concatenate([order, order[: world_size - n % world_size]])
    return order[rank::world_size]


def checked_rows(rows, n: int, where: str) -> np.ndarray:
    """``rows`` as sorted, distinct int64 positions in 0..n-1, at least one; anything else is refused in one
    line naming ``where``."""
    positions = np.asarray(rows)
    if positions.ndim != 1 or (positions.size and not np.issubdtype(positions.dtype, np.integer)):
        raise AugforgeError(f"{where}: rows must be a list of row positions (integers)")
    positions = np.unique(positions.astype(np.int64))
    if positions.size == 0:
        raise AugforgeError(f"{where}: rows selects no row")
    if positions[0] < 0 or positions[-1] >= n:
        bad = positions[0] if positions[0] < 0 else positions[-1]
        raise AugforgeError(f"{where}: row position {bad} is outside 0..{n - 1}")
    return positions
