"""`augforge balance` on a large Parquet file: wall time per stage and peak memory against the data size.

The input is a 10:1 two-class table of float32 features (the clustered data of
benchmarks/smote.py). The job reads the train features once, resamples them with
``smote:0.5,under:0.8`` and writes the dataset directory in one sequential pass, so its
peak memory should stay within a few copies of the feature matrix.

    python benchmarks/balance_scale.py [--rows 2000000] [--features 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from smote import PeakRSS, clustered  # noqa: E402

from augforge.balance.apply import balance_dataset  # noqa: E402
from augforge.datasets import open_dataset, open_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--strategy", default="smote:0.5,under:0.8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        X, y = clustered(args.rows, args.features)
        frame = pl.DataFrame(X, schema=[f"x{i}" for i in range(args.features)])
        frame.with_columns(pl.Series("label", np.where(y == 1, "minority", "majority"))).write_parquet(path)
        data_mb = X.nbytes / 2**20
        del X, y, frame
        stages = []
        start = time.perf_counter()
        with PeakRSS() as mem:
            result, plan = balance_dataset(
                open_source(path), Path(tmp) / "out", args.strategy,
                on_stage=lambda text: stages.append((time.perf_counter() - start, text)))
        wall = time.perf_counter() - start
        for at, text in stages:
            print(f"{at:7.2f} s  {text}")
        counts = open_dataset(Path(tmp) / "out").class_counts()
        print(f"{args.rows:,} x {args.features} float32 ({data_mb:.0f} MB of features), strategy {args.strategy}")
        print(f"train counts {plan.before.tolist()} -> {counts}; wrote {result.manifest['num_rows']:,} rows "
              f"in {len(result.manifest['shards'])} shards")
        print(f"wall {wall:.1f} s ({args.rows / wall:,.0f} input rows/s); peak memory above start "
              f"{mem.mb:,.0f} MB = {mem.mb / data_mb:.1f}x the feature matrix")


if __name__ == "__main__":
    main()
