"""The row order of a loader's epochs, as pure functions of (seed, epoch, rank): a permutation or
class-balanced draws, cut into equal per-rank shares and then into batches. ``RowOrder`` holds one loader's
settings of them (picklable: reader processes cut the same epochs). They need no dataset, so they are tested
alone, on grids of sizes, world sizes and batch sizes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from augforge.errors import AugforgeError
from augforge.recipe.train import SAMPLERS

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


def block_order(shards: np.ndarray, seed: int, epoch: int, block: int) -> np.ndarray:
    """The positions 0..len(shards)-1 in a shard-local order for ``epoch``: the shards (``shards[i]`` is
    position i's) permuted from (seed, epoch) and taken ``block`` at a time, the positions of each block's shards
    permuted among themselves. A reader then needs about ``block`` shards at once (what a bounded cache of a
    remote dataset holds), and every position still comes exactly once."""
    rng = np.random.default_rng([int(seed), int(epoch), 0xB10C])
    ids, inverse = np.unique(shards, return_inverse=True)
    rank_of = np.empty(len(ids), dtype=np.int64)
    rank_of[rng.permutation(len(ids))] = np.arange(len(ids))
    group = rank_of[inverse] // int(block)
    members = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[members], np.arange(group.max() + 1 if len(group) else 0), side="left")
    ends = np.r_[starts[1:], len(members)]
    return np.concatenate([rng.permutation(members[a:b]) for a, b in zip(starts, ends)] or
                          [np.zeros(0, np.int64)]).astype(np.int64)


def rank_rows(order: np.ndarray, rank: int, world_size: int, last: str, start: int = 0) -> np.ndarray:
    """This rank's share of an epoch's ``order`` from global position ``start`` on (rows the ranks of an
    interrupted run consumed before it, whatever its world size was): interleaved, so that the ranks together
    always consume a prefix of the order; equal sizes for every rank (also with fewer rows than ranks: a rank
    without a share would hang a DDP step), disjoint but for the padding (the epoch's first rows, cycling)."""
    rest = order[start:]
    if world_size > 1:
        if last == "drop":
            rest = rest[: (len(rest) // world_size) * world_size]
        elif len(rest) % world_size:
            pad = -(-len(rest) // world_size) * world_size - len(rest)
            rest = np.concatenate([rest, np.resize(order, pad)])
    return rest[rank::world_size]


def consumed(rows_taken: int, remaining: int, world_size: int) -> int:
    """Rows of the order the ranks consumed together when each took ``rows_taken`` of a segment that had
    ``remaining`` rows (padding not counted)."""
    return min(int(rows_taken) * world_size, int(remaining))


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


def bootstrap_rows(n: int, rows: np.ndarray | None, bootstrap: int) -> np.ndarray:
    """A bootstrap resample of ``rows`` (of all ``n`` positions where None), drawn once from the seed
    ``bootstrap``, sorted."""
    pool = np.arange(n) if rows is None else rows
    draw = np.random.default_rng([int(bootstrap), 0xB007]).integers(0, len(pool), len(pool))
    return np.sort(pool[draw])


@dataclass(frozen=True, eq=False)
class RowOrder:
    """The epochs of one loader: which positions of the split (``rows``, checked by ``checked_rows``: all where
    None; resampled once with replacement from the seed ``bootstrap``), in which order (``shuffle``d from (seed,
    epoch), or class-balanced draws under the ``balanced`` sampler, or from epoch ``balanced_from`` on), this
    rank's share of them (``rank``/``world_size``, ``last``), cut into batches. ``labels`` (of all ``n`` rows)
    are needed by class-balanced draws only."""

    n: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    last: str = "keep"
    rank: int = 0
    world_size: int = 1
    sampler: str = "shuffle"
    balanced_from: int | None = None
    rows: np.ndarray | None = None
    bootstrap: int | None = None
    labels: np.ndarray | None = None
    shards: np.ndarray | None = None
    block: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise AugforgeError(f"batch_size {self.batch_size}: expected at least 1")
        if self.last not in LAST:
            raise AugforgeError(f"last={self.last!r}: expected one of {', '.join(LAST)}")
        if not 0 <= self.rank < self.world_size:
            raise AugforgeError(f"rank {self.rank} is outside world_size {self.world_size}")
        if self.sampler not in SAMPLERS:
            raise AugforgeError(f"sampler={self.sampler!r}: expected shuffle or balanced")
        if self.labels is None and (self.sampler == "balanced" or self.balanced_from is not None):
            raise AugforgeError("class-balanced draws need the rows' labels")
        if self.block is not None:
            if self.block < 1:
                raise AugforgeError(f"shuffle_block {self.block}: expected at least 1 shard")
            if self.shards is None:
                raise AugforgeError("shuffle_block needs the rows' shards")
            if self.sampler == "balanced" or self.balanced_from is not None:
                raise AugforgeError("shuffle_block: class-balanced draws take rows from every shard at once; use "
                                    "the shuffle sampler, or no shuffle_block (a cache that holds the split)")

    @cached_property
    def base(self) -> np.ndarray | None:
        """The positions epochs draw from: ``rows`` or their bootstrap resample; None for all ``n``."""
        return self.rows if self.bootstrap is None else bootstrap_rows(self.n, self.rows, self.bootstrap)

    @property
    def size(self) -> int:
        """Rows per epoch before the ranks' shares: ``n``, or as many as ``base`` holds."""
        return self.n if self.base is None else len(self.base)

    def global_order(self, epoch: int) -> np.ndarray:
        """The positions (of the ``n``) of ``epoch`` for all ranks together, before they are shared out: the
        same for any world size."""
        if self.sampler == "balanced" or (self.balanced_from is not None and epoch >= self.balanced_from):
            labels = self.labels if self.base is None else self.labels[self.base]
            order = balanced_order(labels, self.seed, epoch)
        elif self.block is not None and self.shuffle:
            order = block_order(self.shards if self.base is None else self.shards[self.base], self.seed, epoch,
                                self.block)
        else:
            order = epoch_order(self.size, self.seed, epoch, self.shuffle)
        return order if self.base is None else self.base[order]

    def epoch_rows(self, epoch: int, start: int = 0) -> np.ndarray:
        """This rank's positions (of the ``n``) for ``epoch``, in order, from global position ``start`` on."""
        return rank_rows(self.global_order(epoch), self.rank, self.world_size, self.last, start)

    def batches(self, rows: np.ndarray) -> list[np.ndarray]:
        """An epoch's rows cut into batches (the last one dropped or padded as ``last`` says); each batch's rows
        sorted into storage order, so that reading them walks the memory map forwards (which rows share a batch
        is what the order decides)."""
        cut = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if cut and len(cut[-1]) < self.batch_size:
            if self.last == "drop":
                cut.pop()
            elif self.last == "pad":
                cut[-1] = np.resize(np.concatenate([cut[-1], rows]), self.batch_size)
        return [np.sort(batch) for batch in cut]

    def __len__(self) -> int:
        """Batches per epoch, from the counts alone (as ``rank_rows`` and ``batches`` cut them)."""
        n, world = self.size, self.world_size
        rows = n // world if self.last == "drop" else -(-n // world)
        return rows // self.batch_size if self.last == "drop" else -(-rows // self.batch_size)
