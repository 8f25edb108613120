"""Class statistics: counts, shares, imbalance ratio, normalized entropy, minority classes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassStats:
    """The class distribution of one split."""

    class_names: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def from_labels(cls, labels: np.ndarray, class_names: list[str]) -> "ClassStats":
        """Count int labels (indices into ``class_names``)."""
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
        return cls(tuple(class_names), tuple(int(n) for n in counts))

    @property
    def total(self) -> int:
        """Number of rows."""
        return sum(self.counts)

    @property
    def num_classes(self) -> int:
        """Number of classes (including classes with no rows in this split)."""
        return len(self.counts)

    @property
    def shares(self) -> tuple[float, ...]:
        """Fraction of rows in each class."""
        total = self.total
        return tuple(n / total if total else 0.0 for n in self.counts)

    @property
    def imbalance_ratio(self) -> float:
        """Majority count / minority count; ``inf`` when some class has no rows, ``nan`` when empty."""
        if not self.total:
            return math.nan
        smallest = min(self.counts)
        return math.inf if smallest == 0 else max(self.counts) / smallest

    @property
    def entropy(self) -> float:
        """Shannon entropy of the class shares divided by log(num_classes): 1 is perfectly balanced."""
        if self.num_classes < 2 or not self.total:
            return 1.0
        p = np.asarray([s for s in self.shares if s > 0])
        return float(-(p * np.log(p)).sum() / math.log(self.num_classes))

    @property
    def majority(self) -> str:
        """The largest class (first in class order on ties)."""
        return self.class_names[int(np.argmax(self.counts))]

    @property
    def minority(self) -> list[str]:
        """Classes with fewer rows than an equal share (total / num_classes), smallest first."""
        if not self.total:
            return []
        fair = self.total / self.num_classes
        order = sorted(range(self.num_classes), key=lambda i: (self.counts[i], i))
        return [self.class_names[i] for i in order if self.counts[i] < fair]

    def as_dict(self) -> dict[str, int]:
        """Counts keyed by class name."""
        return dict(zip(self.class_names, self.counts))
