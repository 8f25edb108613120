"""Stratified splits, the long-tail profile, and seeded row keys."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.datasets.schema import TEST, TRAIN, VAL
from augforge.datasets.keys import row_keys, row_rng
from augforge.datasets.splits import ImbalanceSpec, SplitSpec, assign_splits, imbalance_mask, longtail_keep_counts
from augforge.errors import AugforgeError

import pytest


def test_row_keys_depend_on_seed_id_and_purpose_not_order():
    ids = [f"row-{i}" for i in range(100)]
    keys = row_keys(7, ids, "split")
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 100
    assert np.array_equal(row_keys(7, ids[::-1], "split"), keys[::-1])
    assert not np.array_equal(row_keys(8, ids, "split"), keys)
    assert not np.array_equal(row_keys(7, ids, "imbalance"), keys)
    assert row_rng(1, "a", 0).integers(1 << 30) == row_rng(1, "a", 0).integers(1 << 30)
    assert row_rng(1, "a", 0).integers(1 << 30) != row_rng(1, "a", 1).integers(1 << 30)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 60), min_size=1, max_size=8),
       test=st.floats(0, 0.6), val=st.floats(0, 0.35), seed=st.integers(0, 2**32))
def test_assign_splits_is_stratified(counts, test, val, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    keys = row_keys(seed, [str(i) for i in range(len(labels))], "split")
    splits = assign_splits(labels, keys, SplitSpec(test, val))
    for c, n in enumerate(counts):
        mine = splits[labels == c]
        assert (mine == TEST).sum() == round(n * test)
        assert (mine == VAL).sum() == round(n * val)
        assert (mine == TRAIN).sum() == n - round(n * test) - round(n * val)


def test_assign_splits_follows_keys_not_positions():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    keys = np.array([5, 1, 7, 3, 2, 8, 4, 6], dtype=np.uint64)
    splits = assign_splits(labels, keys, SplitSpec(test=0.5))
    assert list(splits) == [TRAIN, TEST, TRAIN, TEST, TEST, TRAIN, TEST, TRAIN]


def test_longtail_keep_counts_follow_cifar_lt():
    counts = np.full(10, 100)
    keep = longtail_keep_counts(counts, 10.0)
    assert keep[0] == 100 and keep[-1] == 10
    assert list(keep) == [round(100 * 0.1 ** (c / 9)) for c in range(10)]
    assert list(longtail_keep_counts(np.array([3, 3, 3]), 1000.0)) == [3, 1, 1]  # every class keeps a row


def test_imbalance_mask_touches_only_rows_in_scope():
    labels = np.repeat(np.arange(3), 40)
    keys = row_keys(0, [str(i) for i in range(120)], "imbalance")
    in_scope = np.arange(120) % 4 != 0  # 30 of each class in scope
    keep = imbalance_mask(labels, keys, in_scope, ImbalanceSpec("longtail", 9.0), 3)
    assert keep[~in_scope].all()
    kept_in_scope = np.bincount(labels[keep & in_scope], minlength=3)
    assert list(kept_in_scope) == [30, 10, round(30 / 9)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(test=1.2), "^test_split 1.2"),
    (dict(test=0.6, val=0.5), "leave nothing for train"),
    (dict(val=-0.1), "^val_split -0.1"),
])
def test_bad_split_specs_are_refused(kwargs, message):
    with pytest.raises(AugforgeError, match=message):
        SplitSpec(**kwargs)


def test_bad_imbalance_specs_are_refused():
    with pytest.raises(AugforgeError, match="unknown profile"):
        ImbalanceSpec("steps")
    with pytest.raises(AugforgeError, match="expected a number >= 1"):
        ImbalanceSpec("longtail", 0.5)


@given(seed=st.integers(0, 2**64 - 1), purpose=st.sampled_from(["augment", "stream", "text", "fallback"]),
       parts=st.lists(st.one_of(st.integers(0, 10**6), st.text(max_size=12)), max_size=3))
def test_derived_seeds_are_the_hash_of_purpose_and_parts(seed, purpose, parts):
    """One function derives every stream's seed; it is xxh3-64 of the NUL-joined purpose and parts under the
    seed, so builds and loaders draw what they drew before it existed (their outputs stay the same bytes)."""
    import xxhash

    from augforge.datasets.keys import derive_seed

    text = "\x00".join([purpose, *map(str, parts)])
    assert derive_seed(seed, purpose, *parts) == xxhash.xxh3_64_intdigest(text.encode(), seed)
    assert derive_seed(seed, purpose, *parts) != derive_seed(seed, purpose + "x", *parts)
