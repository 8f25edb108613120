"""FastSMOTE next to imbalanced-learn's SMOTE: same data, same strategy, one process.

Two kinds of data, each with a 10:1 binary imbalance, because an exact neighbour search can only
skip work where the data has structure:

- ``clustered``: each class a mixture of Gaussian clusters (unit spread, centres spread over a
  box 20 wide), the shape of embeddings and of many real feature sets;
- ``overlapping``: scikit-learn's ``make_classification`` (16 informative dimensions, the rest
  noise), where every point is about as far from every other and nothing can be pruned;
- ``wide``: the clustered mixture with the centres spread over a box 4 wide instead of 20, so that
  the clusters overlap (the cells prune little);
- ``many``: the clustered mixture with 50 points per cluster instead of 1,000 (many small clusters).

``--contention N`` runs N busy processes (a Python loop each) during every timed run, as a loaded
machine would: the ratio then says whether ``auto`` stays at least as fast as imbalanced-learn there.

For each it prints both times, the ratio (imbalanced-learn / augforge), peak memory above the
start of each call (measured in a separate, untimed run), and checks that both produce the same
class counts. Each side runs ``--repeat`` times (default 3), alternating, and the medians are
compared, so that neither side alone pays the process's cold start (thread pools, first-touch
page faults).

    python benchmarks/smote.py                      # 400,000 x 32 and 2,000,000 x 64
    python benchmarks/smote.py --sizes 400000x32    # one size
    python benchmarks/smote.py --device cuda        # FastSMOTE on the GPU
    python benchmarks/smote.py --sizes 400000x32 --data clustered,wide,many,overlapping --contention 1
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch
from imblearn.over_sampling import SMOTE
from sklearn.datasets import make_classification

from augforge.balance import FastSMOTE


def clustered(rows: int, features: int, seed: int = 0, points_per_cluster: int = 1000, box: float = 20.0) -> tuple:
    """A 10:1 two-class Gaussian mixture: float32 features, int64 labels (centres uniform in a ``box``-wide cube)."""
    rng = np.random.default_rng(seed)
    minority = rows // 11
    parts, labels = [], []
    for label, count in ((0, rows - minority), (1, minority)):
        clusters = max(1, count // points_per_cluster)
        centres = rng.uniform(-box / 2, box / 2, size=(clusters, features)).astype(np.float32)
        which = rng.integers(0, clusters, size=count)
        parts.append(centres[which] + rng.standard_normal((count, features), dtype=np.float32))
        labels.append(np.full(count, label, dtype=np.int64))
    order = rng.permutation(rows)
    return np.concatenate(parts)[order], np.concatenate(labels)[order]


def overlapping(rows: int, features: int, seed: int = 0) -> tuple:
    """scikit-learn's make_classification with a 10:1 imbalance."""
    X, y = make_classification(n_samples=rows, n_features=features, n_informative=16, weights=[10 / 11],
                               random_state=seed)
    return X.astype(np.float32), y.astype(np.int64)


DATA = {
    "clustered": clustered,
    "overlapping": overlapping,
    "wide": lambda rows, features: clustered(rows, features, box=4.0),
    "many": lambda rows, features: clustered(rows, features, points_per_cluster=50),
}


def _spin(stop) -> None:
    while not stop.is_set():
        pass


class Contention:
    """``n`` busy processes for the duration of a block (none when ``n`` is 0)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for proc in self.procs:
            proc.start()
        time.sleep(0.5 if self.n else 0)  # let them start spinning
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for proc in self.procs:
            proc.join()


class PeakRSS:
    """Peak resident memory of this process above its level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def run(sampler, X, y):
    """Time one fit_resample (no memory sampler running, so it competes for nothing)."""
    start = time.perf_counter()
    Xr, yr = sampler.fit_resample(X, y)
    return time.perf_counter() - start, Xr, yr


def peak_mb(sampler, X, y) -> float:
    """Peak resident memory above the start of one fit_resample, in a separate, untimed run."""
    with PeakRSS() as mem:
        sampler.fit_resample(X, y)
    return mem.mb


def median_run(runs: list) -> tuple:
    """The run with the median time."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``make gpu-check`` parses it in its dry run)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="400000x32,2000000x64", help="ROWSxFEATURES, comma-separated")
    parser.add_argument("--data", default="clustered,overlapping", help="clustered, overlapping or both")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are compared")
    parser.add_argument("--device", default="auto", help="FastSMOTE's device: auto, cpu or cuda")
    parser.add_argument("--contention", type=int, default=0, help="busy processes running beside every timed run")
    parser.add_argument("--fast-only", action="store_true",
                        help="FastSMOTE alone (a size imbalanced-learn would take too long on: no ratio is printed)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, "
          f"competing busy processes: {args.contention}")
    print(f"{'data':<12} {'size':<12} {'imblearn s':>10} {'augforge s':>10} {'ratio':>7} "
          f"{'imblearn MB':>11} {'augforge MB':>11}  counts")
    for size in args.sizes.split(","):
        rows, features = (int(v) for v in size.lower().split("x"))
        for kind in args.data.split(","):
            X, y = DATA[kind](rows, features)
            fast_runs, ref_runs = [], []
            for _ in range(args.repeat):
                with Contention(args.contention):
                    fast_runs.append(run(FastSMOTE(random_state=0, device=args.device), X, y))
                if not args.fast_only:
                    with Contention(args.contention):
                        ref_runs.append(run(SMOTE(random_state=0), X, y))
            t_fast, Xf, yf = median_run(fast_runs)
            if args.fast_only:
                print(f"{kind:<12} {size:<12} {'-':>10} {t_fast:>10.2f} {'-':>7} {'-':>11} {'-':>11}  "
                      f"{np.bincount(yf).tolist()} (FastSMOTE alone, {int(np.sum(y == 1)):,} minority rows)", flush=True)
                del Xf, fast_runs
                continue
            t_ref, Xr, yr = median_run(ref_runs)
            mb_fast = peak_mb(FastSMOTE(random_state=0, device=args.device), X, y)
            mb_ref = peak_mb(SMOTE(random_state=0), X, y)
            same = np.array_equal(np.bincount(yf), np.bincount(yr))
            print(f"{kind:<12} {size:<12} {t_ref:>10.2f} {t_fast:>10.2f} {t_ref / t_fast:>6.1f}x "
                  f"{mb_ref:>11.0f} {mb_fast:>11.0f}  {'equal' if same else 'DIFFER'} {np.bincount(yf).tolist()}",
                  flush=True)
            print(f"{'':<25} runs: imblearn {' / '.join(f'{r[0]:.2f}' for r in ref_runs)}, "
                  f"augforge {' / '.join(f'{r[0]:.3f}' for r in fast_runs)}", flush=True)
            del Xf, Xr, fast_runs, ref_runs


if __name__ == "__main__":
    main()
