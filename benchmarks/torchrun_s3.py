"""`torchrun --nproc_per_node 2` training from `s3://` against the same training from a local copy of the data.

The recipe's dataset is built once into moto's S3 server on 127.0.0.1 (tests/s3_server.py) and copied to a
local directory; the same 2-process run then trains from each, with the same shard-block shuffle (the remote
one through a cache that holds a third of the shards). Printed: both runs' test metrics (they must be equal:
the same rows in the same batches on every rank) and wall times.

    python benchmarks/torchrun_s3.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3_server import s3_workspace  # noqa: E402  (the tests' local S3 endpoint)


def torchrun(recipe: Path, run: Path, data: str, *extra: str) -> float:
    """Wall seconds of a 2-process `augforge train`."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "augforge",
                           "train", str(recipe), "--run-dir", str(run), "--data", data, "--shuffle-block", "2",
                           *extra], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from augforge.cli import main as cli
    from augforge.storage import ObjectStore, parse_url

    with s3_workspace("augforge-torchrun-s3-") as (server, work):
        url = f"s3://{server.bucket()}/digits"
        recipe = work / "r.yaml"
        recipe.write_text(yaml.safe_dump({
            "seed": 0, "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
            "balance": {"strategy": "over"}, "output": {"shard_rows": 200},
            "augment": {"copies": 1, "color": "gray", "image": [{"op": "pad", "padding": 1},
                                                                {"op": "random_crop", "size": 8}]},
            "train": {"model": "simple_cnn", "epochs": args.epochs, "batch_size": 64, "lr": 0.003}}))
        assert cli(["build", str(recipe), "--out", url, "-q"]) == 0
        store = ObjectStore(parse_url(url))
        local = work / "local"
        for name in store.names():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(store.get(name))
        shards = json.loads((local / "manifest.json").read_text())["shards"]
        limit = 3 * max(s["bytes"] for s in shards)
        remote_s = torchrun(recipe, work / "remote", url, "--cache-limit", str(limit), "--predownload", "1")
        local_s = torchrun(recipe, work / "local-run", str(local))
        summaries = [json.loads((work / run / "summary.json").read_text()) for run in ("remote", "local-run")]
        print(f"{len(shards)} shards; the remote run's cache holds 3 ({limit:,} bytes)")
        print("| data | accuracy | balanced accuracy | macro-F1 | wall |\n| --- | --- | --- | --- | --- |")
        for name, summary, wall in (("s3://", summaries[0], remote_s), ("local copy", summaries[1], local_s)):
            print(f"| {name} | {summary['accuracy']:.4f} | {summary['balanced_accuracy']:.4f} | "
                  f"{summary['macro_f1']:.4f} | {wall:.1f} s |")
        same = all(summaries[0][k] == summaries[1][k] for k in ("accuracy", "balanced_accuracy", "macro_f1"))
        print(f"same metrics: {same}; wall ratio s3/local {remote_s / local_s:.2f}")


if __name__ == "__main__":
    main()
