"""The cleaning samplers on augforge's exact neighbour search, next to imbalanced-learn's own, same data.

Tomek links and edited nearest neighbours (ENN) search the neighbours of every row, not only of the
minority: at 100,000 rows that is 10^10 pairs. augforge runs imbalanced-learn's rules
(``ExactTomekLinks``; ``EditedNearestNeighbours`` with augforge's neighbours object) on its exact search:
the cell-pruned torch search where the data has structure, imbalanced-learn's own search elsewhere.
Prints both times (medians of ``--repeat`` alternating runs), the ratio, and whether the kept rows are
identical.

    python benchmarks/cleaning.py [--sizes 100000x32] [--data clustered,overlapping] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from imblearn.under_sampling import EditedNearestNeighbours, TomekLinks

from augforge.balance.strategy import parse_strategy
from smote import DATA


def timed(sampler, X, y):
    """(seconds, X out, y out) of one fit_resample."""
    started = time.perf_counter()
    X_out, y_out = sampler.fit_resample(X, y)
    return time.perf_counter() - started, X_out, y_out


def main() -> None:
    """Time both sides on each size and kind of data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000x32")
    parser.add_argument("--data", default="clustered,overlapping")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'sampler':<8} {'data':<12} {'size':<11} {'imblearn s':>10} {'augforge s':>10} {'ratio':>7}  output")
    for size in args.sizes.split(","):
        rows, features = (int(v) for v in size.lower().split("x"))
        for kind in args.data.split(","):
            X, y = DATA[kind](rows, features)
            for name, peer in (("tomek", TomekLinks), ("enn", EditedNearestNeighbours)):
                ours, theirs = [], []
                for _ in range(args.repeat):
                    ours.append(timed(parse_strategy(name)[0].build(["0", "1"]), X, y))
                    theirs.append(timed(peer(), X, y))
                same = np.array_equal(ours[-1][1], theirs[-1][1]) and np.array_equal(ours[-1][2], theirs[-1][2])
                t_ours = statistics.median(r[0] for r in ours)
                t_theirs = statistics.median(r[0] for r in theirs)
                print(f"{name:<8} {kind:<12} {size:<11} {t_theirs:>10.2f} {t_ours:>10.2f} {t_theirs / t_ours:>6.1f}x  "
                      f"{'identical' if same else 'DIFFERENT'} ({len(ours[-1][2]):,} rows kept)", flush=True)


if __name__ == "__main__":
    main()
