"""Row gathers from memory-mapped shards into one output buffer: numba-compiled, on every core.

A shuffled group of raw-pixel batches takes rows from every shard at random places. numpy's ``take``
gathers one shard's rows into one contiguous piece, so a group of batches needed one call per (batch,
shard) piece. ``copy_rows`` puts a shard's rows straight into their places anywhere in the group's
buffer, so a group needs one call per shard. The calls run without the GIL, in a small thread pool: a
gather over file-backed pages waits on memory latency, which more threads hide.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

#: most threads a gather uses
MAX_THREADS = 8


@njit(cache=True, nogil=True)
def copy_rows(out: np.ndarray, src: np.ndarray, src_rows: np.ndarray, dst_rows: np.ndarray) -> None:
    """``out[dst_rows[i]] = src[src_rows[i]]`` for every i; ``out`` and ``src`` are (rows, bytes) uint8."""
    width = src.shape[1]
    for i in range(src_rows.shape[0]):
        dest, source = out[dst_rows[i]], src[src_rows[i]]
        for k in range(width):
            dest[k] = source[k]


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, min(MAX_THREADS, os.cpu_count() or 1)), thread_name_prefix="augforge-gather")


# a forked child (DALI's reader processes) inherits the pool object but none of its threads: it makes its own
os.register_at_fork(after_in_child=_pool.cache_clear)


def gather_rows(out: np.ndarray, pieces: list) -> None:
    """Fill ``out`` ((rows, bytes) uint8) from ``pieces``, each (source (rows, bytes) uint8, source rows, out
    rows), one piece per pool thread at a time."""
    calls = [(out, source, np.ascontiguousarray(src, dtype=np.int64), np.ascontiguousarray(dst, dtype=np.int64))
             for source, src, dst in pieces]
    if len(calls) == 1:
        copy_rows(*calls[0])
        return
    for future in [_pool().submit(copy_rows, *call) for call in calls]:
        future.result()
