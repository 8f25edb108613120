"""The local engine against Ray Data on the same image recipe and data, in one process.

Builds the long-tailed digits (balanced with `over`, COPIES augmented copies per row, PNG shards) with:

- the local engine (DALI and encoder threads = the machine's cores);
- `--engine ray` with 1 and 2 workers (a Ray instance started for the job, as the CLI does);

checks that every Ray build is byte-identical to the local one (SOURCE_DATE_EPOCH fixes the manifest's
`created`), and prints each wall time and its ratio to the local one. Then it measures Ray's own costs:
starting and stopping a local instance, and the per-unit scheduling overhead (a map of no-op units
through the same actor pool, per unit, next to the time of one real chunk).

On a 2-core machine this is an overhead measurement, not a speed-up: the local engine already uses both
cores, and Ray's workers compete with the driver for them.

    python benchmarks/distributed_build.py [--copies 16] [--units 200]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import tempfile
import time
from pathlib import Path

from augforge.pipelines.build import CHUNK_ROWS, build
from augforge.engine import EngineSpec, RayEngine
from augforge.recipe import parse_recipe


def recipe(copies: int):
    """The digits recipe of the examples, with ``copies`` augmented copies."""
    return parse_recipe({
        "seed": 0,
        "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
        "balance": {"strategy": "over"},
        "augment": {"copies": copies, "color": "gray", "image": [
            {"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 12, "p": 0.8},
            {"op": "gaussian_blur", "sigma": [0.1, 0.6], "kernel": 3, "p": 0.3}]},
        "output": {"format": "png", "shard_rows": 4096},
    }, "benchmark.yaml")


def same_tree(a: Path, b: Path) -> bool:
    """Every file of the two dataset directories is byte-identical."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def no_op_worker(_state):
    """A worker whose units do nothing: what is left is scheduling."""
    return lambda unit: unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--units", type=int, default=200, help="no-op units for the scheduling overhead")
    args = parser.parse_args()
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    the_recipe = recipe(args.copies)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="augforge-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        local = build(the_recipe, root / "local", workers=cores)
        local_s = time.perf_counter() - started
        train = sum(local.write.manifest["counts"]["train"].values())
        chunks = -(-train // CHUNK_ROWS)
        print(f"{local.write.manifest['num_rows']:,} rows ({train:,} train in {chunks} chunks of {CHUNK_ROWS}), "
              f"{len(local.write.manifest['shards'])} shards; {cores} cores")
        print(f"local engine ({cores} threads): {local_s:.2f} s")
        for workers in (1, 2):
            started = time.perf_counter()
            result = build(the_recipe, root / f"ray{workers}", engine=EngineSpec("ray", workers=workers))
            wall = time.perf_counter() - started
            same = same_tree(root / "local", root / f"ray{workers}")
            print(f"ray, {workers} worker(s): {wall:.2f} s = {wall / local_s:.2f}x local; "
                  f"{result.engine['units']} units on {result.engine['worker_processes']} worker process(es); "
                  f"byte-identical to local: {same}")
    with RayEngine(EngineSpec("ray", workers=2)) as engine:
        started = time.perf_counter()
        engine.connect()  # starts the local instance
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        list(engine.map_ordered(no_op_worker, None, list(range(8))))  # a first map: workers' imports and caches
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        list(engine.map_ordered(no_op_worker, None, list(range(args.units))))
        map_s = time.perf_counter() - started
        started = time.perf_counter()
        list(engine.map_ordered(no_op_worker, None, list(range(2 * args.units))))
        double_s = time.perf_counter() - started
        started = time.perf_counter()
    stop_s = time.perf_counter() - started
    per_unit = (double_s - map_s) / args.units
    print(f"ray instance: {start_s:.2f} s to start, {stop_s:.2f} s to stop; a first map of 8 no-op units "
          f"{first_s:.2f} s")
    print(f"no-op map through 2 actors: {args.units} units {map_s:.2f} s, {2 * args.units} units {double_s:.2f} s: "
          f"{per_unit * 1e3:.1f} ms per unit of scheduling, {map_s - per_unit * args.units:.2f} s fixed "
          "(pool start, dataset planning)")
    print(f"one real chunk ({CHUNK_ROWS} rows) on the local engine takes about {local_s / chunks:.2f} s, so the "
          f"per-unit overhead is {100 * per_unit / (local_s / chunks):.1f}% of a chunk")


if __name__ == "__main__":
    main()
