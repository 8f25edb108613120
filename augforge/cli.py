"""The `augforge` command line: one entry point, a sub-command per job."""

from __future__ import annotations

import argparse
import json
import os
import sys

from augforge import __version__
from augforge.errors import AugforgeError
from augforge.train.int8_target import SCHEMES as INT8_SCHEMES
from augforge.train.int8_target import TARGETS as INT8_TARGETS


def _add_source_options(parser: argparse.ArgumentParser) -> None:
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


class RowProgress:
    """A progress bar on stderr for jobs that write rows: stage text, bar, rows done of total, rows/s, ETA.

    Its callbacks (``stage``, ``total``, ``rows``) plug into ingest, balance and build. It stays silent
    with ``quiet`` or when stderr is not a terminal.
    """

    def __init__(self, title: str, quiet: bool) -> None:
        from augforge.progress import progress_bar

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


def _add_output_options(parser: argparse.ArgumentParser, shard_size: bool = True) -> None:
    """Options of every command that writes a dataset directory (a recipe sets its own shard size)."""
    if shard_size:
        size = parser.add_mutually_exclusive_group()
        size.add_argument("--shard-rows", type=int, metavar="N", help="rows per shard")
        size.add_argument("--shard-mb", type=float, metavar="M", help="approximate MB per shard (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different dataset already in OUT")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _source(args: argparse.Namespace):
    from augforge.datasets import open_source

    return open_source(args.source, label_col=args.label_col, text_col=args.text_col,
                       feature_cols=args.feature_cols, id_col=args.id_col, max_pixels=args.max_pixels)


def _specs(args: argparse.Namespace):
    from augforge.datasets import ImbalanceSpec, SplitSpec

    return SplitSpec(args.test_split, args.val_split), ImbalanceSpec(args.imbalance, args.imbalance_factor)


def _engine(args: argparse.Namespace):
    """The --engine, --address, --workers and --gpus-per-worker options as an EngineSpec."""
    from augforge.engine import EngineSpec

    workers = args.workers if args.engine == "ray" else None
    return EngineSpec(args.engine, args.address, workers, args.gpus_per_worker)


def _add_engine_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="where the heavy work runs: here (default) or on Ray Data (pip install 'augforge[ray]'; "
                        "docs/distributed.md); the output is the same bytes")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="--engine ray: the cluster to join (default: start a Ray instance for this job)")
    p.add_argument("--workers", type=int, default=None, help=workers_help)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="--engine ray: GPUs per worker (its DALI pipelines then run on the GPU)")


def cmd_ingest(args: argparse.Namespace) -> int:
    """Write a source to a dataset directory."""
    from rich.console import Console
    from augforge.datasets import ingest

    source = _source(args)
    if args.workers is not None and args.workers < 1:
        raise AugforgeError(f"--workers {args.workers}: expected at least 1")
    if args.workers and hasattr(source, "workers"):
        source.workers = args.workers
    splits, imbalance = _specs(args)
    with RowProgress("ingest", args.quiet) as progress:
        result = ingest(source, args.out, splits=splits, imbalance=imbalance, seed=args.seed,
                        shard_rows=args.shard_rows, shard_mb=args.shard_mb, overwrite=args.overwrite,
                        on_total=progress.total, on_rows=progress.rows, engine=_engine(args))
    manifest = result.manifest
    out = Console()
    _print_written(out, result, args.out)
    if not result.up_to_date and manifest["problems"]:
        out.print(f"[yellow]excluded {len(manifest['problems'])} input(s)[/yellow]; "
                  f"see `augforge report {args.out}`")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print a dataset directory's manifest summary."""
    from rich.console import Console
    from rich.table import Table

    from augforge.datasets import open_dataset

    dataset = open_dataset(args.path, split="all", verify=args.verify)
    if args.verify:
        dataset.verify()
    m = dataset.manifest
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "shards" or args.shards}, indent=2))
        return 0
    out = Console()
    size = sum(s["bytes"] for s in m["shards"])
    out.print(f"[b]{args.path}[/b]: {m['payload']} dataset, {m['num_rows']:,} rows, {len(m['class_names'])} "
              f"classes, {len(m['shards'])} shard(s), {size / 1e6:.2f} MB", highlight=False)
    out.print(f"made by augforge {m['augforge_version']} on {m['created']} from {m['source'].get('kind')} "
              f"{m['source'].get('location')}, seed {m['seed']}", highlight=False)
    if m.get("imbalance"):
        out.print(f"imbalance profile: {m['imbalance']['profile']} (factor {m['imbalance']['factor']})")
    if m.get("balance"):
        b = m["balance"]
        out.print(f"balanced: {b['strategy']} ({b['mode']}), {b['synthetic']:,} synthetic train rows",
                  highlight=False)
    table = Table()
    table.add_column("class")
    splits = list(m["counts"])
    for split in splits:
        table.add_column(split, justify="right")
    for name in m["class_names"]:
        table.add_row(name, *(f"{m['counts'][s][name]:,}" for s in splits))
    out.print(table)
    out.print("columns: " + ", ".join(f"{k} ({v})" for k, v in m["schema"].items()), highlight=False)
    if args.shards:
        for entry in m["shards"]:
            out.print(f"  {entry['file']}: {entry['rows']:,} rows, {entry['bytes']:,} bytes, {entry['checksum']}",
                      highlight=False)
    if m.get("problems"):
        out.print(f"[yellow]{len(m['problems'])} input(s) were excluded[/yellow] (see `augforge report`)")
    if args.verify:
        out.print("checksums: all shards verified")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the balancing report of a dataset directory or any source."""
    from rich.console import Console

    from augforge.atomic import atomic_open
    from augforge.balance import build_report, split_stats
    from augforge.balance.render import render_html, render_terminal

    source = _source(args)
    splits, imbalance = _specs(args)
    stats = split_stats(source, args.split, splits, imbalance, args.seed)
    report = build_report(stats, source=str(args.source), kind=source.kind, payload=source.payload,
                          split=args.split, problems=[p.to_dict() for p in source.problems],
                          strategy=args.strategy, warnings=source.warnings)
    if args.evaluate:  # the strategy given, else the recommendation, measured on these rows
        from augforge.balance.evaluate import evaluate_source

        report["evaluation"] = evaluate_source(source, args.split, args.strategy or report["recommendation"]["strategy"],
                                               splits=splits, imbalance=imbalance, seed=args.seed, folds=args.folds,
                                               classifier=args.classifier)
    if args.html:
        with atomic_open(args.html, "w") as fh:
            fh.write(render_html(report))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render_terminal(report, Console())
        if args.evaluate:
            from augforge.balance.render import render_evaluation

            render_evaluation(report["evaluation"], Console())
        if args.html:
            Console().print(f"wrote {args.html}")
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    """Resample the train split of a source with a strategy chain, into a new dataset directory."""
    from rich.console import Console
    from augforge.balance.apply import balance_dataset
    from augforge.balance.render import render_balance

    source = _source(args)
    splits, imbalance = _specs(args)
    with RowProgress("balance", args.quiet) as progress:
        result, _ = balance_dataset(
            source, args.out, args.strategy, splits=splits, imbalance=imbalance, seed=args.seed,
            knn_backend=args.knn_backend, shard_rows=args.shard_rows, shard_mb=args.shard_mb,
            overwrite=args.overwrite, on_stage=progress.stage, on_total=progress.total, on_rows=progress.rows)
    out = Console()
    render_balance(result.manifest, out)
    _print_written(out, result, args.out)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Run a recipe's chain (source, clean, balance, augment) into a dataset directory."""
    from rich.console import Console

    from augforge.balance.render import render_build
    from augforge.pipelines.build import build
    from augforge.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    with RowProgress("build", args.quiet) as progress:
        threads = args.workers if args.workers is not None else os.cpu_count() or 2
        result = build(recipe, args.out, workers=threads, overwrite=args.overwrite,
                       on_stage=progress.stage, on_total=progress.total, on_rows=progress.rows,
                       engine=_engine(args))
    out = Console()
    render_build(result.write.manifest, out)
    _print_written(out, result.write, args.out or recipe.output.dir)
    if result.engine:
        nodes = result.engine["nodes"]
        out.print(f"Ray: {result.engine['units']} units of work on {len(nodes)} node(s) "
                  f"({', '.join(f'{node[:8]}: {n}' for node, n in nodes.items())}), "
                  f"{result.engine['worker_processes']} worker process(es)", highlight=False)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """Write a grid of source images and their augmented variants."""
    from rich.console import Console

    from augforge.pipelines.preview import print_text_preview, preview_text, write_preview
    from augforge.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if recipe.augment.text:
        print_text_preview(preview_text(recipe, n=args.n, variants=args.variants), Console())
        return 0
    if not args.out:
        raise AugforgeError("--out: image previews are written as a PNG; give its path")
    result = write_preview(recipe, args.out, n=args.n, variants=args.variants)
    width, height = result.image.size
    print(f"wrote {args.out}: {len(result.ids)} source images x {args.variants} variants ({width}x{height} px)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Build or reuse the recipe's dataset, then train and evaluate (the recipe's train section)."""
    from augforge.recipe import load_recipe
    from augforge.train.run import train_recipe

    recipe = load_recipe(args.recipe)  # the whole recipe, train section included, is checked before any work
    if args.seed is not None:  # train.seed from the command line: one recipe, many seeds
        import copy
        from pathlib import Path

        from augforge.recipe import parse_recipe

        data = copy.deepcopy(recipe.data)
        data["train"] = {**(data.get("train") or {}), "seed": args.seed}
        recipe = parse_recipe(data, recipe.file, Path(args.recipe).parent)
    if args.run_dir is None:
        from pathlib import Path

        args.run_dir = str(Path("build") / "runs" / Path(args.recipe).stem)
    summary = train_recipe(recipe, args.run_dir, data=args.data, resume=args.resume or args.resume_changed,
                           rebuild=args.rebuild,
                           workers=args.workers, threads=args.threads, log=lambda text: print(text, flush=True),
                           show_progress=sys.stderr.isatty(), resume_changed=args.resume_changed,
                           profile=args.profile_steps if args.profile else None)
    if not summary:  # a DDP worker other than rank 0: the first process reports
        return 0
    if "accuracy" in summary:
        print(f"test: accuracy {summary['accuracy']:.4f}, balanced accuracy {summary['balanced_accuracy']:.4f}, "
              f"macro-F1 {summary['macro_f1']:.4f} ({summary['rows']:,} rows); wall {summary['wall_s']:.1f} s; "
              f"waiting for data {summary['input_bound']:.0%}")
    print(f"wrote {args.run_dir}/summary.json, metrics.jsonl, model.pt and checkpoints/")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Search the recipe's tune: space with Optuna; write best.yaml, trials.csv and the study database."""
    from augforge.train.tune import tune_recipe

    result = tune_recipe(args.recipe, args.trials, args.out, storage=args.storage, pruner=args.pruner,
                         confirm=args.confirm, val_split=args.val_split, log=lambda text: print(text, flush=True))
    best = result["best"]
    print(f"{result['trials']} finished trials ({result['pruned']} pruned); best: trial {best['number']}, "
          f"{result['metric']} {best['value']:.4f} {json.dumps(best['params'])}")
    print(f"wrote {result['best_yaml']} (augforge train accepts it), trials.csv, {result['html']}; "
          f"study: {result['study']}")
    if "confirm" in result:
        from rich.console import Console

        from augforge.train.ablate_report import print_table

        print_table(result["confirm"], Console())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's model to ONNX or torch.export and check it against PyTorch on test batches."""
    from augforge.train.export import export_run

    result = export_run(args.run, args.format, args.out, args.data, args.batches)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {result['file']} ({result['bytes'] / 1e6:.2f} MB, {result['format']}); against PyTorch on "
          f"{result['rows']:,} test rows ({result['batches']} batches): max |difference| {result['max_abs_diff']:.2e}, "
          f"{'the same' if result['same_predictions'] else 'DIFFERENT'} predictions")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """int8 with ONNX Runtime (static QDQ, per-channel), measured against the float model; exit 1 past --max-drop."""
    from augforge.train.quantize import quantize_run

    keep = [b for part in args.keep_float for b in part.split(",") if b]
    log = (lambda _: None) if args.json else (lambda text: print(text, flush=True))
    result = quantize_run(args.run, args.out, args.data, args.calib_batches, args.max_drop, keep_float=keep,
                          qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, target=args.target, scheme=args.scheme,
                          log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':<15} {'accuracy':>9} {'balanced':>9} {'size MB':>8} {'batch 1 ms':>11} {'batch 64 ms':>12}")
        for name in ("float", "int8", "int8_qat", "float_finetuned"):
            if name in result:
                r = result[name]
                print(f"{name:<15} {r['accuracy']:>9.4f} {r['balanced_accuracy']:>9.4f} {r['bytes'] / 1e6:>8.2f} "
                      f"{r['latency_ms_batch_1']:>11.3f} {r['latency_ms_batch_64']:>12.3f}")
        kept = ", ".join(f"{block} ({n} nodes)" for block, n in result["kept_float"].items())
        print(f"wrote {result['file']} ({result['delivered']}); {result['rows']:,} test rows, calibrated on "
              f"{result['calibration_batches']} training batches; accuracy drop "
              f"{result['accuracy_drop_points']:.2f} points" + (f"; kept in float: {kept}" if kept else ""))
        if "float_finetuned" in result:
            print(f"float_finetuned: the float model fine-tuned for the same {result['qat']['epochs']} epoch(s) without "
                  "fake quantization; what the QAT model gains over it is quantization's, the rest the extra "
                  "epochs'")
        scheme = result["scheme"]
        for candidate in scheme["candidates"]:
            agreement = candidate["agreement"]
            print(f"  {candidate['scheme']}: " + (f"agrees with float on {100 * agreement:.2f}% of "
                  f"{scheme['selection_split']} rows; " if agreement is not None else "") + candidate["reason"])
        why = "as asked (--scheme)" if scheme["asked"] != "auto" else "the most agreement with the float model, ties " \
            "to the faster"
        print(f"scheme {scheme['name']} for {scheme['target']} (this CPU: {scheme['host']}): {why}")
        if result["warning"]:
            print(f"warning: {result['warning']}", file=sys.stderr)
    if not result["within"]:
        print(f"augforge quantize: the int8 model loses {result['accuracy_drop_points']:.2f} accuracy points, more "
              f"than --max-drop {result['max_drop']}", file=sys.stderr)
        return 1
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run the recipe's leave-one-out, plain and custom arms over paired seeds and compare each with the baseline."""
    from rich.console import Console

    from augforge.recipe import load_recipe
    from augforge.train.ablate import run_ablation
    from augforge.train.ablate_report import print_table

    recipe = load_recipe(args.recipe)
    report = run_ablation(recipe, args.out, seeds=args.seeds, overrides=args.arms, only=args.only, skip=args.skip,
                          jobs=args.jobs, metric=args.metric, bootstrap_train=args.bootstrap_train,
                          budget_minutes=args.budget_minutes, workers=args.workers,
                          log=lambda text: print(text, flush=True))
    print_table(report, Console(width=200))
    print(f"wrote {os.path.normpath(args.out)}/ablation.json, ablation.html and runs/")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    """The learning-rate range test on the recipe's data and model."""
    from augforge.recipe import load_recipe
    from augforge.train.lr_find import lr_find, plot
    from augforge.train.run import prepare_run

    recipe = load_recipe(args.recipe)
    config, model, loader = prepare_run(recipe, data=args.data, rebuild=args.rebuild, log=lambda t: print(t))
    result = lr_find(model, loader, config, start=args.start, end=args.end, steps=args.steps)
    step = max(1, len(result.lrs) // 12)
    for lr, loss in list(zip(result.lrs, result.smoothed))[::step]:
        print(f"  lr {lr:9.2e}  loss {loss:.4f}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    print(f"suggested initial lr: {result.suggestion:.2e} ({result.reason})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print a checkpoint's metrics on a dataset directory."""
    from augforge.train.restore import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, device=args.device)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.data} ({args.split}, {metrics['rows']:,} rows): accuracy {metrics['accuracy']:.4f}, "
              f"balanced accuracy {metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
        for name, recall in metrics["recall"].items():
            print(f"  recall {name}: " + (f"{recall:.4f}" if recall is not None else "undefined (no rows of it here)"))
    return 0


def _print_written(out, result, target) -> None:
    """What a job writing a dataset directory did: nothing (it was complete), or the rows and shards it wrote.

    Printed without wrapping, so a long path stays on one line, and without ``..`` segments."""
    manifest = result.manifest
    target = os.path.normpath(str(target))
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


def _add_run_options(p, out_help: str) -> None:
    """The arguments of the commands that take a finished run: the run, --out, --data, --json."""
    p.add_argument("run", help="a run directory (augforge train --run-dir) or a checkpoint file")
    p.add_argument("--out", help=out_help)
    p.add_argument("--data", help="the dataset directory whose test (and train) batches it uses (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _option_value(text: str):
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise AugforgeError(f"--option {text!r}: expected NAME=VALUE, e.g. alpha=0.75 or attention_after=[-1]")
    return key.strip(), yaml.safe_load(raw)


def _input_size(text: str) -> tuple[int, ...]:
    try:
        size = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise AugforgeError(f"--input-size {text!r}: expected sizes joined by x, e.g. 3x224x224, 64 or 128") from None
    if not size or min(size) < 1:
        raise AugforgeError(f"--input-size {text!r}: sizes must be positive")
    return size


def cmd_models(args: argparse.Namespace) -> int:
    """List the models, or summarise one."""
    from rich.console import Console
    from rich.table import Table

    from augforge import models

    out = Console()
    if args.name is None:
        table = Table(title="augforge models")
        table.add_column("name")
        table.add_column("options")
        for name in models.available():
            table.add_row(name, ", ".join(f"{k}={v!r}" for k, v in models.model_options(name).items()))
        out.print(table)
        return 0
    options = dict(_option_value(o) for o in args.option)
    model = models.create(args.name, args.num_classes, args.in_channels, **options)
    default = {"tokens": "128", "features": str(args.in_channels)}.get(getattr(model, "input_kind", "image"),
                                                                       f"{args.in_channels}x224x224")
    report = models.summary(model, _input_size(args.input_size or default))
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="augforge",
        description="Clean, rebalance and augment datasets into Arrow shards; report class imbalance.",
    )
    parser.add_argument("--version", action="version", version=f"augforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ingest", help="write a source (image folder, table, bundled sample) as a dataset directory",
                       description="Write a source to OUT as Arrow shards with a manifest. Rerunning an "
                                   "interrupted ingest resumes it.")
    p.add_argument("source", help="image folder, .csv/.tsv/.parquet/.jsonl file, dataset directory, or 'digits'")
    p.add_argument("out", help="the dataset directory to write")
    _add_source_options(p)
    _add_output_options(p)
    _add_engine_options(p, "image folders: threads checking the files (default 2); --engine ray: worker actors "
                           "(default: every CPU of the cluster)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("inspect", help="summarise a dataset directory's manifest",
                       description="Print a dataset directory's manifest summary.")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--verify", action="store_true", help="check every shard's checksum")
    p.add_argument("--shards", action="store_true", help="list the shards")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("report", help="how imbalanced is the data, and what to do about it",
                       description="Per-class counts and shares, imbalance ratio, normalized entropy, minority "
                                   "classes and a recommended strategy; with --strategy, the projected counts.")
    p.add_argument("source", help="dataset directory, image folder, .csv/.tsv/.parquet/.jsonl file, or 'digits'")
    p.add_argument("--split", default="train", help="train (default), val, test or all")
    p.add_argument("--strategy", help="project counts after a chain, e.g. 'smote:0.5,under:0.8' (imbalanced-learn "
                                      "sampling_strategy semantics)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (schema: docs/report.md)")
    p.add_argument("--html", metavar="FILE", help="also write an HTML page with a bar chart")
    p.add_argument("--evaluate", action="store_true",
                   help="cross-validate no resampling, class weights, a tuned threshold (binary) and the strategy "
                        "(--strategy, else the recommendation) with a simple classifier on these rows")
    p.add_argument("--folds", type=int, default=5, help="--evaluate: stratified folds (default 5)")
    p.add_argument("--classifier", default="logistic", choices=["logistic", "tree"],
                   help="--evaluate: the fixed classifier (default logistic regression)")
    _add_source_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("balance", help="resample the train split with a strategy chain into a new dataset directory",
                       description="Resample the train split of SOURCE with a chain of imbalanced-learn samplers "
                                   "(FastSMOTE for 'smote') and write OUT. Feature rows are interpolated; image "
                                   "and text rows are copied (over) or dropped (under). val/test pass through.")
    p.add_argument("source", help="dataset directory, .csv/.tsv/.parquet/.jsonl file, image folder, or 'digits'")
    p.add_argument("out", help="the dataset directory to write")
    p.add_argument("--strategy", required=True,
                   help="chain of samplers, e.g. 'smote:0.5,under:0.8' or 'over:not majority' (imbalanced-learn "
                        "sampling_strategy semantics)")
    p.add_argument("--knn-backend", default="auto", choices=["auto", "cells", "brute", "sklearn"],
                   help="exact neighbour search of the SMOTE family (default auto: pruned by cells where the "
                        "data allows, on the GPU when present)")
    _add_source_options(p)
    _add_output_options(p)
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("build", help="run a recipe: source -> clean -> balance -> augment -> shards",
                       description="Build the dataset a recipe describes (docs/recipes.md): drop duplicates, balance "
                                   "the train split, write augmented copies through DALI, pass val/test through. "
                                   "Deterministic for the recipe's seed; rerun after a crash to resume.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", help="the dataset directory (default: the recipe's output.dir)")
    _add_engine_options(p, "local: DALI and encoder threads (default: every core); ray: worker actors, one CPU "
                           "each (default: every CPU of the cluster)")
    _add_output_options(p, shard_size=False)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("preview", help="a grid of source images and their augmented variants",
                       description="Image recipes: render N train images (spread over the classes) next to VARIANTS "
                                   "augmented versions each, as a PNG. Text recipes: print N texts and their variants "
                                   "with the changed words highlighted.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", help="the PNG file to write (image recipes); text recipes print to the terminal")
    p.add_argument("--n", type=int, default=8, help="source images (default 8)")
    p.add_argument("--variants", type=int, default=4, help="augmented variants per image (default 4)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("train", help="build or reuse the recipe's dataset, then train and evaluate",
                       description="Train with the recipe's train section (docs/training.md): stream the built "
                                   "dataset, evaluate on val each epoch and on test at the end, write RUN_DIR.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--run-dir", help="where metrics.jsonl, checkpoints/ and summary.json go "
                                     "(default: build/runs/<recipe name>)")
    p.add_argument("--data", help="the dataset directory (default: the recipe's output.dir)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--resume-changed", action="store_true",
                   help="with --resume: continue even though the train section changed since the checkpoint")
    p.add_argument("--rebuild", action="store_true", help="rebuild the dataset when it was built from another recipe")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="build workers")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads for training (default: train.threads, else torch's default of one per "
                        "core; fewer is faster on a loaded machine)")
    p.add_argument("--profile", action="store_true",
                   help="profile the first epoch's steps with torch.profiler: a trace in RUN_DIR/profile/ "
                        "(TensorBoard's profiler plugin, Perfetto), the top operators and the data-wait share")
    p.add_argument("--profile-steps", type=int, default=5, metavar="N",
                   help="--profile: active steps, after 1 waiting and 1 warm-up step (default 5)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="train.seed for this run (initialisation, row order, streamed draws); the split and the "
                        "offline build stay the recipe's seed")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search the recipe's tune: space with Optuna (TPE, pruning, a resumable study)",
                       description="Run Optuna's TPE over the recipe's tune: space (keyed by recipe path), pruning "
                                   "trials on the validation metric after every epoch; the study lives in "
                                   "OUT/study.db (or --storage) and a rerun continues it.")
    p.add_argument("recipe", help="the recipe YAML file, with a tune: section")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should have")
    p.add_argument("--out", required=True, help="where study.db, data/, trials/, best.yaml and trials.csv go")
    p.add_argument("--storage", help="an Optuna storage URL instead of OUT/study.db (sqlite:///..., postgresql://...)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="retrain the original and the best recipe over K paired seeds and compare them on the test "
                        "split (augforge ablate's statistics; OUT/confirm)")
    p.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="for a recipe without source.val_split: the share of the train split the trials hold out "
                        "for validation (best.yaml keeps the recipe's split; default 0.2)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="export a run's model (ONNX or torch.export) and check it against PyTorch",
                       description="Export RUN_DIR/model.pt to ONNX (run back with ONNX Runtime) or a torch.export "
                                   "program (.pt2), and compare its logits with PyTorch's on real test batches.")
    _add_run_options(p, "the file to write (default: RUN_DIR/model.onnx or model.pt2)")
    p.add_argument("--format", default="onnx", choices=["onnx", "pt2"])
    p.add_argument("--batches", type=int, default=4, help="test batches of 64 rows to compare (default 4)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="int8 quantization (ONNX Runtime, static QDQ) measured against the float model",
                       description="Quantize RUN_DIR/model.pt to int8 (ONNX Runtime static QDQ, per-channel weights), "
                                   "calibrated on training batches, and report accuracy, size and CPU latency next "
                                   "to the float model; exit 1 when accuracy drops more than --max-drop points.")
    _add_run_options(p, "the int8 model to write (default: RUN_DIR/model.int8.onnx)")
    p.add_argument("--calib-batches", type=int, default=16, help="training batches of 64 rows to calibrate on")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the int8 model may lose (default 1)")
    p.add_argument("--keep-float", nargs="*", default=[], metavar="BLOCK",
                   help="leave these blocks in float: depthwise, hardswish, se (MobileNetV3's int8 trouble spots)")
    p.add_argument("--qat-epochs", type=int, default=0, metavar="E",
                   help="also fine-tune E epochs with fake quantization (torchao PT2E) and deliver that model when "
                        "it is more accurate than the post-training one")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="the fine-tuning learning rate (default 1e-4)")
    p.add_argument("--target", default="auto", choices=INT8_TARGETS,
                   help="the CPU the int8 model is for (default auto: this one); decides which schemes are measured "
                        "and with which arithmetic (docs/toolchain.md)")
    p.add_argument("--scheme", default="auto", choices=("auto", *INT8_SCHEMES),
                   help="auto (default): measure u8s8, u8s7 and u8u8 and deliver the one closest to the float model; "
                        "or quantize with this one only")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("ablate", help="measure what each technique of a recipe buys, over paired seeds",
                       description="Train the recipe as written (baseline), once more per technique it turns on with "
                                   "that technique removed, once with every technique off (plain), and any --arms, "
                                   "each over the same seeds; print each arm's paired difference to the baseline "
                                   "with a 95%% bootstrap interval and a verdict (docs/ablation.md).")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", required=True, help="where data/, runs/, ablation.json and ablation.html go")
    p.add_argument("--seeds", type=int, default=10, help="paired seeds per arm (default 10)")
    p.add_argument("--arms", nargs="*", default=[], metavar="NAME=PATH:VALUE",
                   help="extra arms by key path, e.g. lr_x3=train.lr:0.009 (a name repeated adds changes to one arm)")
    p.add_argument("--only", nargs="*", default=[], metavar="ARM", help="run only these arms (and the baseline)")
    p.add_argument("--skip", nargs="*", default=[], metavar="ARM", help="leave these arms out")
    p.add_argument("--jobs", type=int, default=1, help="trainings in parallel processes (torch threads are split)")
    p.add_argument("--metric", default="balanced_accuracy", choices=["balanced_accuracy", "accuracy", "macro_f1"],
                   help="the metric the verdicts are about (default balanced_accuracy)")
    p.add_argument("--bootstrap-train", action="store_true", help="also resample the training rows per seed")
    p.add_argument("--budget-minutes", type=float, help="start no new run once this much time is spent")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted ablation (the default: finished runs are always reused)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="build workers")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("lr-find", help="sweep the learning rate and suggest an initial one",
                       description="The LR range test on the recipe's data and model: the learning rate grows "
                                   "exponentially over --steps optimizer steps; the smoothed loss is printed and "
                                   "plotted, and the lr where it falls fastest is suggested. Weights are not kept.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--data", help="the dataset directory (default: the recipe's output.dir)")
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--plot", metavar="PNG", help="write loss vs learning rate to this PNG")
    p.add_argument("--rebuild", action="store_true", help="rebuild the dataset when it was built from another recipe")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("evaluate", help="a checkpoint's metrics on a dataset directory",
                       description="Accuracy, balanced accuracy, macro-F1 and per-class recall of a checkpoint "
                                   "written by augforge train, on a split of a dataset directory.")
    p.add_argument("checkpoint", help="model.pt, checkpoints/best.pt or checkpoints/last.pt")
    p.add_argument("data", help="dataset directory")
    p.add_argument("--split", default="test", help="test (default), val, train or all")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs (default auto: the GPU when present)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the models, or print one's layers, parameters and MACs",
                       description="Without NAME, list the registered models and their options. With NAME, build it "
                                   "and print a layer summary: output shapes, parameters, MACs.")
    p.add_argument("name", nargs="?", help="a model name from the list")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the head (default 1000)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels, or features for mlp (default 3)")
    p.add_argument("--input-size", help="per-sample input: CxHxW for images (default 3x224x224), T tokens for text "
                                        "models (default 128), F features for mlp")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a model option (repeatable), e.g. --option alpha=0.75 --option attention_after=[-1]")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input prints one line and returns a non-zero status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AugforgeError as exc:
        print(f"augforge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"augforge {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        from augforge.datasets.writer import DISK_FULL

        if exc.errno not in DISK_FULL:
            raise
        print(f"augforge {args.command}: error: {exc.filename or 'a file'}: {os.strerror(exc.errno).lower()}; "
              "free space and rerun", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
