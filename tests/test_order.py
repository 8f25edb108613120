"""The row order of a loader's epochs (augforge.pipelines.order.RowOrder), tested without a dataset, on grids
of sizes, world sizes, batch sizes and end-of-epoch modes: every row once per epoch (padding and dropping
aside, as stated), equal shares per rank, the batch count from the counts alone, reruns equal, class-balanced
and bootstrap draws as documented."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.errors import AugforgeError
from augforge.pipelines.order import LAST, RowOrder, bootstrap_rows, checked_rows


def _shares(order: RowOrder, epoch: int = 0) -> list[np.ndarray]:
    from dataclasses import replace

    return [replace(order, rank=r).epoch_rows(epoch) for r in range(order.world_size)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), world=st.integers(1, 8), batch=st.integers(1, 64), last=st.sampled_from(LAST),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 50), shuffle=st.booleans())
def test_every_row_once_per_epoch_in_equal_shares(n, world, batch, last, seed, epoch, shuffle):
    order = RowOrder(n, batch, seed=seed, shuffle=shuffle, last=last, world_size=world)
    shares = _shares(order, epoch)
    assert len({len(s) for s in shares}) == 1  # every rank the same number of rows
    every = np.concatenate(shares)
    if last == "drop":
        assert len(every) == (n // world) * world and len(np.unique(every)) == len(every)
    else:  # keep / pad: every row at least once, the padding repeats the epoch's first rows
        assert set(every.tolist()) == set(range(n)) and len(every) == -(-n // world) * world
    for share in shares:
        batches = order.batches(share)
        assert len(batches) == len(order)  # the count from the counts alone
        assert all(np.array_equal(b, np.sort(b)) for b in batches)  # storage order within a batch
        if last == "pad":
            assert all(len(b) == batch for b in batches)
        elif last == "drop":
            assert all(len(b) == batch for b in batches) and sum(map(len, batches)) == len(share) // batch * batch
        else:
            assert np.array_equal(np.sort(np.concatenate(batches)) if batches else share[:0], np.sort(share))
    assert all(np.array_equal(a, b) for a, b in zip(shares, _shares(order, epoch)))  # a rerun is the same


def test_orders_differ_by_epoch_and_seed_and_not_by_world_size_in_their_union():
    one = RowOrder(1000, 10, seed=3)
    assert not np.array_equal(one.epoch_rows(0), one.epoch_rows(1))
    assert not np.array_equal(one.epoch_rows(0), RowOrder(1000, 10, seed=4).epoch_rows(0))
    assert np.array_equal(RowOrder(10, 3, shuffle=False).epoch_rows(7), np.arange(10))
    four = RowOrder(1000, 10, seed=3, world_size=4)  # ranks take every 4th row of the same permutation
    interleaved = np.stack(_shares(four)).T.reshape(-1)
    assert np.array_equal(interleaved, one.epoch_rows(0))


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(1, 60), min_size=2, max_size=6), seed=st.integers(0, 1000))
def test_balanced_draws_come_from_every_class_alike(counts, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    order = RowOrder(len(labels), 8, seed=seed, sampler="balanced", labels=labels)
    drawn = order.epoch_rows(0)
    assert len(drawn) == len(labels) and drawn.min() >= 0 and drawn.max() < len(labels)
    assert np.array_equal(drawn, order.epoch_rows(0))  # a rerun is the same
    if len(labels) >= 30:  # with a few rows two epochs may draw alike
        assert not np.array_equal(drawn, order.epoch_rows(1))


def test_balanced_draws_even_out_a_long_tail():
    labels = np.repeat(np.arange(4), [4000, 400, 40, 4])
    order = RowOrder(len(labels), 64, seed=1, sampler="balanced", labels=labels)
    share = np.bincount(labels[order.epoch_rows(0)], minlength=4) / len(labels)
    assert np.allclose(share, 0.25, atol=0.02)  # 4444 draws: each class about a quarter
    deferred = RowOrder(len(labels), 64, seed=1, balanced_from=2, labels=labels)
    assert np.array_equal(np.sort(deferred.epoch_rows(1)), np.arange(len(labels)))  # a permutation before
    assert np.array_equal(deferred.epoch_rows(2), order.epoch_rows(2))  # class-balanced from epoch 2 on


def test_rows_and_bootstrap_choose_what_epochs_draw_from():
    rows = checked_rows([9, 3, 3, 5, 7], 10, "here")
    assert rows.tolist() == [3, 5, 7, 9]
    order = RowOrder(10, 2, seed=0, rows=rows)
    assert order.size == 4 and sorted(order.epoch_rows(0).tolist()) == [3, 5, 7, 9]
    boot = RowOrder(100, 8, seed=0, bootstrap=7)
    assert np.array_equal(boot.base, bootstrap_rows(100, None, 7)) and len(boot.base) == 100
    assert len(np.unique(boot.base)) < 100  # drawn with replacement
    assert np.array_equal(np.sort(boot.epoch_rows(0)), np.sort(boot.epoch_rows(5)))  # the same resample each epoch
    inner = RowOrder(10, 2, rows=rows, bootstrap=1)
    assert set(inner.base.tolist()) <= {3, 5, 7, 9}  # the resample stays among the chosen rows
    labels = np.arange(10) % 2
    balanced = RowOrder(10, 2, rows=rows, sampler="balanced", labels=labels)
    assert set(balanced.epoch_rows(0).tolist()) <= {3, 5, 7, 9}


def test_an_order_survives_pickling_for_reader_processes():
    labels = np.arange(50) % 3
    order = RowOrder(50, 7, seed=2, sampler="balanced", labels=labels, bootstrap=4, world_size=2, rank=1)
    again = pickle.loads(pickle.dumps(order))
    assert all(np.array_equal(a, b) for a, b in zip(order.batches(order.epoch_rows(3)),
                                                   again.batches(again.epoch_rows(3))))


@pytest.mark.parametrize("settings_, message", [
    ({"batch_size": 0}, "batch_size 0: expected at least 1"),
    ({"last": "wrap"}, "last='wrap': expected one of keep, drop, pad"),
    ({"rank": 2, "world_size": 2}, "rank 2 is outside world_size 2"),
    ({"sampler": "random"}, "sampler='random': expected shuffle or balanced"),
    ({"sampler": "balanced"}, "class-balanced draws need the rows' labels"),
])
def test_bad_settings_are_refused_in_one_line(settings_, message):
    with pytest.raises(AugforgeError, match=message.replace("(", r"\(")):
        RowOrder(**{"n": 10, "batch_size": 4, **settings_})
    with pytest.raises(AugforgeError, match="row position 10 is outside 0..9"):
        checked_rows([1, 10], 10, "here")


def _segment(order: RowOrder, epoch: int, start: int, batches: int | None) -> tuple[list[np.ndarray], int]:
    """What all ranks of ``order`` consume of ``epoch`` from global row ``start``: each rank's first ``batches``
    batches (all where None); and the rows each rank took."""
    from dataclasses import replace

    taken, rows = [], 0
    for rank in range(order.world_size):
        cut = order.batches(replace(order, rank=rank).epoch_rows(epoch, start))
        part = cut if batches is None else cut[:batches]
        taken += part
        rows = sum(len(b) for b in part)
    return taken, rows


KINDS = ("shuffle", "balanced", "deferred", "block", "rows", "bootstrap")


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 250), world=st.sampled_from([1, 2, 3, 4, 8]), resumed_on=st.sampled_from([1, 2, 3, 4, 8]),
       batch=st.integers(1, 16), last=st.sampled_from(LAST), kind=st.sampled_from(KINDS), seed=st.integers(0, 999),
       epoch=st.integers(0, 9), stop=st.floats(0.0, 0.99))
def test_an_epoch_stopped_on_one_world_size_and_resumed_on_another_sees_every_row_once(
        n, world, resumed_on, batch, last, kind, seed, epoch, stop):
    """Ranks consume the interleaved global order, so together they always hold a prefix of it: resumed from
    the rows consumed (``consumed``) on any world size, every row of the epoch comes exactly once, but for
    the padding each segment needs for equal shares (``keep``: at most one row per rank; ``pad``: and the last
    batch's) or the rows ``drop`` leaves out (fewer than a rank and a batch per rank). Every sampler: the
    permutation, class-balanced draws, deferred re-sampling (DRS), shard blocks, a fold's rows, a bootstrap."""
    from dataclasses import replace

    from augforge.pipelines.order import consumed

    labels = np.random.default_rng(seed).integers(0, 3, n)
    extra = {"shuffle": {}, "balanced": {"sampler": "balanced", "labels": labels},
             "deferred": {"balanced_from": 5, "labels": labels},
             "block": {"shards": np.arange(n) // 7, "block": 2}, "rows": {"rows": np.arange(0, n, 2)},
             "bootstrap": {"bootstrap": seed}}[kind]
    before = RowOrder(n, batch, seed=seed, last=last, world_size=world, **extra)
    after = replace(before, world_size=resumed_on)
    whole = before.global_order(epoch)
    assert np.array_equal(whole, after.global_order(epoch))  # the order does not depend on the world size
    per_rank = len(before.batches(before.epoch_rows(epoch)))
    k = int(stop * per_rank)
    if k == per_rank:
        k -= 1
    first, taken = _segment(before, epoch, 0, k)
    samples = consumed(taken, len(whole), world)
    second, _ = _segment(after, epoch, samples, None)
    seen = np.concatenate(first + second) if first + second else np.zeros(0, np.int64)
    expected = np.bincount(whole, minlength=n)
    counts = np.bincount(seen, minlength=n)
    if last == "drop":
        assert np.all(counts <= expected)
        assert expected.sum() - counts.sum() < resumed_on + resumed_on * batch
    else:
        assert np.all(counts >= expected)
        padding = counts.sum() - expected.sum()
        assert padding <= (resumed_on - 1) + (resumed_on * (batch - 1) if last == "pad" else 0)
    assert np.array_equal(np.sort(np.concatenate(first)) if first else np.zeros(0, np.int64),
                          np.sort(whole[:samples]))  # what was consumed is exactly a prefix of the order


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), block=st.integers(1, 5),
       seed=st.integers(0, 999), epoch=st.integers(0, 5))
def test_a_block_shuffle_keeps_each_block_of_shards_together(sizes, block, seed, epoch):
    """Every position once; the order walks blocks of ``block`` shards, never coming back to a shard of an
    earlier block; a rerun is the same, another epoch another order."""
    from augforge.pipelines.order import block_order

    shards = np.repeat(np.arange(len(sizes)), sizes)
    order = block_order(shards, seed, epoch, block)
    assert np.array_equal(np.sort(order), np.arange(len(shards)))
    assert np.array_equal(order, block_order(shards, seed, epoch, block))
    visited = shards[order]
    first_seen = visited[np.sort(np.unique(visited, return_index=True)[1])]
    blocks = [set(first_seen[i:i + block].tolist()) for i in range(0, len(first_seen), block)]
    position_block = {s: b for b, members in enumerate(blocks) for s in members}
    assert np.all(np.diff([position_block[s] for s in visited]) >= 0)  # block by block
