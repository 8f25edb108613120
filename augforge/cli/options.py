"""What several commands share: option groups, their conversion to library specs, the row-progress bar,
and the line a job that wrote a dataset directory prints."""

from __future__ import annotations

import argparse
import os

from augforge.errors import AugforgeError
from augforge.paths import is_url
from augforge.progress import progress_bar


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """The source and split options of ingest, report and balance."""
    group = parser.add_argument_group("source options")
    group.add_argument("--label-col", help="table sources: the class column (default: label)")
    group.add_argument("--text-col", help="table sources: a text column to use as the payload")
    group.add_argument("--feature-cols", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                       help="table sources: comma-separated feature columns (default: every numeric column "
                            "but the label)")
    group.add_argument("--id-col", help="table sources: a column of unique row ids (default: the row number)")
    group.add_argument("--max-pixels", type=int, help="image folders: refuse images with more pixels than this")
    group.add_argument("--test-split", type=float, default=0.0, metavar="F",
                       help="fraction of each class held out as the test split (stratified)")
    group.add_argument("--val-split", type=float, default=0.0, metavar="F",
                       help="fraction of each class held out as the validation split (stratified)")
    group.add_argument("--imbalance", choices=["longtail"],
                       help="make the train split long-tailed (after the split is taken), for demos and tests")
    group.add_argument("--imbalance-factor", type=float, default=10.0, metavar="F",
                       help="majority/minority ratio of the long-tail profile (default 10)")
    group.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")


def add_output_options(parser: argparse.ArgumentParser, shard_size: bool = True) -> None:
    """Options of every command that writes a dataset directory (a recipe sets its own shard size)."""
    if shard_size:
        size = parser.add_mutually_exclusive_group()
        size.add_argument("--shard-rows", type=int, metavar="N", help="rows per shard")
        size.add_argument("--shard-mb", type=float, metavar="M", help="approximate MB per shard (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different dataset already in OUT")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_engine_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    """--engine, --address, --workers and --gpus-per-worker."""
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="where the heavy work runs: here (default) or on Ray Data (pip install 'augforge[ray]'; "
                        "docs/distributed.md); the output is the same bytes")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="--engine ray: the cluster to join (default: start a Ray instance for this job)")
    p.add_argument("--workers", type=int, default=None, help=workers_help)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="--engine ray: GPUs per worker (its DALI pipelines then run on the GPU)")


def add_recipe_data_options(p) -> None:
    """The arguments of the commands that build or reuse a recipe's dataset: --data and --rebuild."""
    p.add_argument("--data", help="the dataset directory or s3:// URL (default: the recipe's output.dir)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the dataset when it was built from another recipe")


def add_run_options(p, out_help: str) -> None:
    """The arguments of the commands that take a finished run: the run, --out, --data, --json."""
    p.add_argument("run", help="a run directory (augforge train --run-dir) or a checkpoint file")
    p.add_argument("--out", help=out_help)
    p.add_argument("--data", help="the dataset directory whose test (and train) batches it uses (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


class RowProgress:
    """A progress bar on stderr for jobs that write rows: stage text, bar, rows done of total, rows/s, ETA.

    Its callbacks (``stage``, ``total``, ``rows``) plug into ingest, balance and build. It stays silent
    with ``quiet`` or when stderr is not a terminal.
    """

    def __init__(self, title: str, quiet: bool) -> None:
        self._progress = progress_bar("rate", quiet=quiet, terminal_only=True)
        self._task = self._progress.add_task(title, total=None, rate="")

    def __enter__(self) -> "RowProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def stage(self, text: str) -> None:
        """Show what the job is doing now."""
        self._progress.update(self._task, description=text)

    def total(self, n: int) -> None:
        """Rows the writing stage will produce."""
        self._progress.update(self._task, total=n, completed=0)

    def rows(self, n: int) -> None:
        """``n`` more rows written."""
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} rows/s" if speed else "")


def source_from(args: argparse.Namespace):
    """The source the command's SOURCE and table/image options name."""
    from augforge.datasets import open_source

    return open_source(args.source, label_col=args.label_col, text_col=args.text_col,
                       feature_cols=args.feature_cols, id_col=args.id_col, max_pixels=args.max_pixels)


def split_specs(args: argparse.Namespace):
    """The split and imbalance options as (SplitSpec, ImbalanceSpec)."""
    from augforge.datasets import ImbalanceSpec, SplitSpec

    return SplitSpec(args.test_split, args.val_split), ImbalanceSpec(args.imbalance, args.imbalance_factor)


def engine_spec(args: argparse.Namespace):
    """The --engine, --address, --workers and --gpus-per-worker options as an EngineSpec."""
    from augforge.engine import EngineSpec

    workers = args.workers if args.engine == "ray" else None
    return EngineSpec(args.engine, args.address, workers, args.gpus_per_worker)


def option_value(text: str):
    """A --option NAME=VALUE as (name, YAML value)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise AugforgeError(f"--option {text!r}: expected NAME=VALUE, e.g. alpha=0.75 or attention_after=[-1]")
    return key.strip(), yaml.safe_load(raw)


def input_size(text: str) -> tuple[int, ...]:
    """An --input-size (CxHxW, T or F) as a tuple of positive ints."""
    try:
        size = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise AugforgeError(f"--input-size {text!r}: expected sizes joined by x, e.g. 3x224x224, 64 or 128") from None
    if not size or min(size) < 1:
        raise AugforgeError(f"--input-size {text!r}: sizes must be positive")
    return size


def add_stream_options(p) -> None:
    """The arguments that say how a dataset at an s3:// URL is streamed: its local cache and shuffle block."""
    g = p.add_argument_group("streaming from s3:// (docs/storage.md)")
    g.add_argument("--cache-dir", help="where remote shards are cached (default: $AUGFORGE_CACHE/datasets)")
    g.add_argument("--cache-limit", metavar="SIZE", help="most bytes the cache holds, e.g. 20GB (default: no limit)")
    g.add_argument("--predownload", type=int, default=2, metavar="N", help="shards fetched ahead of the reader")
    g.add_argument("--shuffle-block", type=int, metavar="N",
                   help="shuffle N shards at a time (what lets a cache smaller than the split serve a shuffled "
                        "epoch); default: one shuffle over the whole split")


def stream_options(args):
    """``StreamOptions`` from ``add_stream_options``' arguments."""
    from augforge.datasets.remote import CacheOptions
    from augforge.pipelines.loader_options import StreamOptions

    return StreamOptions(CacheOptions(args.cache_dir, args.cache_limit, args.predownload), args.shuffle_block)


def print_written(out, result, target) -> None:
    """What a job writing a dataset directory did: nothing (it was complete), or the rows and shards it wrote.

    Printed without wrapping, so a long path stays on one line, and without ``..`` segments."""
    manifest = result.manifest
    target = str(target) if is_url(target) else os.path.normpath(str(target))
    if result.up_to_date:
        out.print(f"{target}: already holds this dataset ({manifest['num_rows']:,} rows); nothing to do",
                  soft_wrap=True, highlight=False)
        return
    resumed = f" (resumed after {result.resumed_rows:,} rows)" if result.resumed_rows else ""
    per_split = ", ".join(f"{split} {sum(c.values()):,}" for split, c in manifest["counts"].items())
    out.print(f"wrote {manifest['num_rows']:,} rows ({per_split}) in {len(manifest['shards'])} shard(s) "
              f"to {target}{resumed}", soft_wrap=True, highlight=False)
    for warning in manifest.get("warnings") or []:
        out.print(f"warning: {warning}", soft_wrap=True, highlight=False, markup=False)
