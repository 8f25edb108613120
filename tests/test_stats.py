"""Class statistics."""

import math

import numpy as np
import pytest

from augforge.balance.stats import ClassStats


def test_values_on_a_known_distribution():
    stats = ClassStats.from_labels(np.repeat([0, 1, 2, 3], [50, 25, 15, 10]), ["a", "b", "c", "d"])
    assert stats.total == 100 and stats.counts == (50, 25, 15, 10)
    assert stats.shares == (0.5, 0.25, 0.15, 0.1)
    assert stats.imbalance_ratio == 5.0
    p = np.array([0.5, 0.25, 0.15, 0.1])
    assert stats.entropy == pytest.approx(-(p * np.log(p)).sum() / math.log(4))
    assert stats.majority == "a" and stats.minority == ["d", "c"]


def test_balanced_and_degenerate_distributions():
    balanced = ClassStats.from_labels(np.repeat([0, 1], 7), ["x", "y"])
    assert balanced.imbalance_ratio == 1.0 and balanced.entropy == pytest.approx(1.0) and balanced.minority == []
    missing = ClassStats.from_labels(np.array([0, 0, 1]), ["x", "y", "z"])
    assert math.isinf(missing.imbalance_ratio) and missing.minority == ["z"]  # y holds exactly a fair share
    assert missing.entropy == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3))
    empty = ClassStats.from_labels(np.zeros(0, dtype=np.int64), ["x", "y"])
    assert math.isnan(empty.imbalance_ratio) and empty.minority == []
