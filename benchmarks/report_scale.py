"""How long `augforge report` takes on a large Parquet file, next to loading the table to count it.

augforge reads the label column only (a polars scan); the peer is what a user
would otherwise write: read the whole file (features included) and value_counts
the label. Both run here, in one process, on the same file.

    python benchmarks/report_scale.py [--rows 10000000] [--features 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from augforge.balance import build_report, split_stats
from augforge.datasets import open_source


def make_table(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """A long-tailed 10-class table of float32 features, written in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    weights = 0.1 ** (np.arange(10) / 9)
    weights /= weights.sum()
    labels = rng.choice(10, size=rows, p=weights)
    data = {f"x{i}": rng.standard_normal(rows, dtype=np.float32) for i in range(features)}
    pl.DataFrame({**data, "label": labels}).write_parquet(path, row_group_size=1_000_000)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


STRATEGY = "smote:{9: 1000000},under:{0: 1500000}"


def augforge_report(path: Path, strategy: str | None) -> dict:
    source = open_source(path)
    stats = split_stats(source, "train")
    return build_report(stats, source=str(path), kind=source.kind, payload=source.payload, split="train",
                        strategy=strategy)


def peer_count(path: Path) -> dict:
    frame = pl.read_parquet(path)
    return dict(frame["label"].value_counts().iter_rows())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        # made in a child process, so this process's peak memory is the report's and the peer's alone
        child = multiprocessing.get_context("fork").Process(target=make_table, args=(path, args.rows, args.features))
        build_s, _ = timed(lambda: (child.start(), child.join()))
        size = path.stat().st_size / 1e6
        print(f"table: {args.rows:,} rows x {args.features} float32 features + label, {size:,.0f} MB "
              f"(made in {build_s:.1f} s)")
        ours_s, report = timed(lambda: augforge_report(path, None))
        ours_rss = peak_rss_mb()
        projected_s, projected = timed(lambda: augforge_report(path, STRATEGY))
        peer_s, counts = timed(lambda: peer_count(path))
        peer_rss = peak_rss_mb()
        assert report["total"] == args.rows
        assert all(report["counts"][str(k)] == v for k, v in counts.items())
        print(f"augforge report (counts, shares, entropy, recommendation): {ours_s:.2f} s, "
              f"peak RSS {ours_rss:,.0f} MB")
        print(f"augforge report --strategy '{STRATEGY}' (imbalanced-learn's check_sampling_strategy per step): "
              f"{projected_s:.2f} s")
        print(f"peer: polars read_parquet of the whole table + value_counts: {peer_s:.2f} s, "
              f"peak RSS {peer_rss:,.0f} MB")
        print(f"ratio (peer / augforge report): {peer_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
