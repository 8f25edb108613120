"""Row gathers for shuffled raw batches (augforge.pipelines.gather)."""

import multiprocessing

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.pipelines.gather import copy_rows, gather_rows


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 200), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), seed=st.integers(0, 999))
def test_pieces_land_in_their_places(width, sizes, seed):
    rng = np.random.default_rng(seed)
    sources = [rng.integers(0, 256, size=(n, width), dtype=np.uint8) for n in sizes]
    # every output row comes from one (source, row) pair, the places scattered over the whole buffer
    picks = [(s, int(rng.integers(0, sizes[s]))) for s in range(len(sizes)) for _ in range(int(rng.integers(1, 30)))]
    places = rng.permutation(len(picks))
    out = np.zeros((len(picks), width), dtype=np.uint8)
    pieces = []
    for s, source in enumerate(sources):
        mine = [i for i, (owner, _) in enumerate(picks) if owner == s]
        pieces.append((source, np.array([picks[i][1] for i in mine]), places[mine]))
    gather_rows(out, pieces)
    expected = np.stack([sources[s][r] for s, r in picks])
    assert np.array_equal(out[places], expected)


def test_copy_rows_repeats_rows_and_leaves_the_rest():
    src = np.arange(12, dtype=np.uint8).reshape(4, 3)
    out = np.full((5, 3), 99, dtype=np.uint8)
    copy_rows(out, src, np.array([2, 2, 0]), np.array([4, 0, 1]))
    assert out.tolist() == [[6, 7, 8], [0, 1, 2], [99] * 3, [99] * 3, [6, 7, 8]]


def _gather_in_child(queue):
    src = np.arange(60, dtype=np.uint8).reshape(20, 3)
    out = np.zeros((4, 3), dtype=np.uint8)
    gather_rows(out, [(src, [1, 2], [0, 1]), (src[::-1].copy(), [0, 1], [2, 3])])
    queue.put(out.tolist())


def test_a_forked_child_gathers_with_its_own_pool():
    # the parent's pool exists (its threads do not survive a fork); the child must not wait on them
    gather_rows(np.zeros((2, 1), np.uint8), [(np.ones((1, 1), np.uint8), [0], [0]),
                                             (np.ones((1, 1), np.uint8), [0], [1])])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_gather_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():  # hung on the parent's threads: end it, then fail
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [[3, 4, 5], [6, 7, 8], [57, 58, 59], [54, 55, 56]]
