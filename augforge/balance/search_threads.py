"""How many torch threads a CPU neighbour search takes now: the cores other processes leave free."""

from __future__ import annotations

import os

import torch


def _runnable_now() -> int | None:
    """Threads of other processes runnable right now: ``/proc/loadavg``'s count of runnable threads, less
    this process's own (``/proc/self/task/*/stat`` in state R; torch's pool may be spinning)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            total = int(fh.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat", encoding="ascii", errors="replace") as fh:
                    own += fh.read().rpartition(")")[2].split()[0] == "R"
            except OSError:
                continue
        return max(0, total - own)
    except (OSError, ValueError, IndexError):
        return None


def search_threads() -> int:
    """Torch threads for a CPU search now: the cores other work leaves free, at least 1, at most torch's
    setting. Torch's threads wait for each other at every parallel region, so on a machine whose cores
    are busy one thread is far faster than two (a competing process made a 2-thread search 60x slower
    than scikit-learn's single-threaded one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    samples = sorted(n for n in (_runnable_now() for _ in range(3)) if n is not None)
    if not samples:
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), cores - samples[len(samples) // 2]))


class torch_threads:
    """Run a block with ``n`` torch threads, then restore the setting."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n != self.saved:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
