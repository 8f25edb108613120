"""Stratified split assignment and the long-tail imbalance profile, both seeded per row id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.datasets import schema as S
from augforge.errors import OptionError


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of each class that go to the test and validation splits (the rest is train)."""

    test: float = 0.0
    val: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("test_split", self.test), ("val_split", self.val)):
            if not 0.0 <= value < 1.0:
                raise OptionError("{%s} {value}: expected a fraction in [0, 1)" % name, value=value)
        if self.test + self.val >= 1.0:
            raise OptionError("{test_split} {test} + {val_split} {val} leave nothing for train; keep their sum below 1",
                              test=self.test, val=self.val)

    @property
    def active(self) -> bool:
        """Whether any row leaves the train split."""
        return self.test > 0 or self.val > 0


@dataclass(frozen=True)
class ImbalanceSpec:
    """A synthetic imbalance profile applied to the train split (for demos and tests).

    ``longtail``: class ``c`` of ``C`` (in class order) keeps ``round(n_c * factor ** (-c / (C - 1)))``
    of its training rows, as in CIFAR-LT; at least one row of every class is kept.
    """

    profile: str | None = None
    factor: float = 10.0

    def __post_init__(self) -> None:
        if self.profile not in (None, "longtail"):
            raise OptionError("{imbalance} {value!r}: unknown profile; the only profile is 'longtail'",
                              value=self.profile)
        if not self.factor >= 1.0:
            raise OptionError("{imbalance_factor} {value}: expected a number >= 1", value=self.factor)

    @property
    def active(self) -> bool:
        """Whether the profile removes rows."""
        return self.profile is not None


def _rank_within_class(labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each row among the rows of its class, ordered by key (ties by position)."""
    order = np.lexsort((np.arange(len(keys)), keys, labels))
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[order] = np.arange(len(labels)) - starts
    return ranks


def assign_splits(labels: np.ndarray, keys: np.ndarray, spec: SplitSpec) -> np.ndarray:
    """Assign a split code (schema.TRAIN/VAL/TEST) per row, stratified by class.

    Within each class the rows are ordered by their seeded key; the first
    ``round(n_c * test)`` go to test, the next ``round(n_c * val)`` to val.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), S.TRAIN, dtype=np.int8)
    if not spec.active or len(labels) == 0:
        return out
    ranks = _rank_within_class(labels, keys)
    counts = np.bincount(labels)
    n_test = np.rint(counts * spec.test).astype(np.int64)[labels]
    n_val = np.rint(counts * spec.val).astype(np.int64)[labels]
    out[ranks < n_test] = S.TEST
    out[(ranks >= n_test) & (ranks < n_test + n_val)] = S.VAL
    return out


def rows_needed(fraction: float) -> int:
    """The fewest rows a class needs for ``assign_splits`` to give it one row of a split of ``fraction``."""
    if fraction <= 0:
        return 0
    n = 1
    while np.rint(n * fraction) < 1:
        n += 1
    return n


def split_warnings(labels: np.ndarray, split_of: np.ndarray, class_names: list[str], spec: SplitSpec,
                   native: bool = False) -> list[str]:
    """One line per class that is present but gets no test (or val) rows: it is trained on and never
    measured, so its recall is undefined. Without a split, classes below what a 20% test split needs."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    out = []
    if not spec.active and not native:
        need = rows_needed(0.2)
        return [f"class {name!r} has {int(n)} row{'s' if n != 1 else ''}: too few for a stratified split (a 20% "
                f"test split needs {need} rows per class for one test row); add rows, merge it or drop it"
                for name, n in zip(class_names, counts) if 0 < n < need]
    wanted = [(S.TEST, "test", spec.test), (S.VAL, "val", spec.val)]
    for code, name, fraction in wanted:
        if fraction <= 0 and not native:
            continue
        held = np.bincount(np.asarray(labels)[split_of == code], minlength=len(class_names))
        if native and not held.any():
            continue
        for cls, total, got in zip(class_names, counts, held):
            if total and not got:
                out.append(f"class {cls!r} ({int(total)} row{'s' if total != 1 else ''}) gets no {name} rows: its "
                           f"{name} metrics will be undefined" + (f"; a {fraction:.0%} split needs "
                                                                   f"{rows_needed(fraction)} rows per class"
                                                                   if not native else ""))
    return out


def longtail_keep_counts(counts: np.ndarray, factor: float) -> np.ndarray:
    """How many rows each class keeps under the long-tail profile."""
    counts = np.asarray(counts, dtype=np.int64)
    n_classes = len(counts)
    if n_classes < 2:
        return counts.copy()
    exponents = np.arange(n_classes) / (n_classes - 1)
    keep = np.rint(counts * factor ** (-exponents)).astype(np.int64)
    return np.minimum(counts, np.maximum(keep, np.minimum(counts, 1)))


def imbalance_mask(labels: np.ndarray, keys: np.ndarray, in_scope: np.ndarray, spec: ImbalanceSpec,
                   num_classes: int) -> np.ndarray:
    """Boolean mask of the rows kept by the imbalance profile; rows out of scope are always kept."""
    keep = np.ones(len(labels), dtype=bool)
    if not spec.active:
        return keep
    scoped = np.flatnonzero(in_scope)
    scoped_labels = np.asarray(labels, dtype=np.int64)[scoped]
    counts = np.bincount(scoped_labels, minlength=num_classes)
    keep_counts = longtail_keep_counts(counts, spec.factor)
    ranks = _rank_within_class(scoped_labels, keys[scoped])
    keep[scoped] = ranks < keep_counts[scoped_labels]
    return keep
