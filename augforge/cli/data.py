"""The data commands: ingest, inspect, report, balance, build, preview.

Each handler imports its job when it runs (the CLI's lazy dispatch: `augforge --help` loads none of them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from augforge.cli.options import RowProgress, add_engine_options, add_output_options, add_source_options, \
    engine_spec, print_written, source_from, split_specs
from augforge.errors import AugforgeError, require_at_least


def cmd_ingest(args: argparse.Namespace) -> int:
    """Write a source to a dataset directory."""
    from rich.console import Console
    from augforge.datasets import ingest

    source = source_from(args)
    if args.workers is not None:
        require_at_least("workers", args.workers)
    if args.workers and hasattr(source, "workers"):
        source.workers = args.workers
    splits, imbalance = split_specs(args)
    with RowProgress("ingest", args.quiet) as progress:
        result = ingest(source, args.out, splits=splits, imbalance=imbalance, seed=args.seed,
                        shard_rows=args.shard_rows, shard_mb=args.shard_mb, overwrite=args.overwrite,
                        on_total=progress.total, on_rows=progress.rows, engine=engine_spec(args))
    manifest = result.manifest
    out = Console()
    print_written(out, result, args.out)
    if not result.up_to_date and manifest["problems"]:
        out.print(f"[yellow]excluded {len(manifest['problems'])} input(s)[/yellow]; "
                  f"see `augforge report {args.out}`")
    return 0


def add_ingest(sub) -> None:
    """`augforge ingest`'s parser."""
    p = sub.add_parser("ingest", help="write a source (image folder, table, bundled sample) as a dataset directory",
                       description="Write a source to OUT as Arrow shards with a manifest. Rerunning an "
                                   "interrupted ingest resumes it.")
    p.add_argument("source", help="image folder, .csv/.tsv/.parquet/.jsonl file, dataset directory, or 'digits'")
    p.add_argument("out", help="the dataset directory to write")
    add_source_options(p)
    add_output_options(p)
    add_engine_options(p, "image folders: threads checking the files (default 2); --engine ray: worker actors "
                           "(default: every CPU of the cluster)")
    p.set_defaults(func=cmd_ingest)


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


def add_inspect(sub) -> None:
    """`augforge inspect`'s parser."""
    p = sub.add_parser("inspect", help="summarise a dataset directory's manifest",
                       description="Print a dataset directory's manifest summary.")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--verify", action="store_true", help="check every shard's checksum")
    p.add_argument("--shards", action="store_true", help="list the shards")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_inspect)


def cmd_report(args: argparse.Namespace) -> int:
    """Print the balancing report of a dataset directory or any source."""
    from rich.console import Console

    from augforge.atomic import atomic_open
    from augforge.balance import build_report, split_stats
    from augforge.balance.render import render_html, render_terminal

    from augforge.balance.instance_strategies import instance_strategy as instance_kind

    source = source_from(args)
    instance_strategy = source.has_targets and instance_kind(args.strategy) is not None
    if source.has_targets and ((args.strategy and not instance_strategy) or args.evaluate):
        flag = "--strategy" if args.strategy else "--evaluate"
        raise AugforgeError(f"{flag}: {args.source} is a detection or segmentation set; row strategies do not balance "
                            "its instances (the report counts instances per class; --strategy repeat_factor[:t], "
                            "copy_paste:N or ml_ros[:P] projects an instance strategy)")
    splits, imbalance = split_specs(args)
    stats = split_stats(source, args.split, splits, imbalance, args.seed)
    report = build_report(stats, source=str(args.source), kind=source.kind, payload=source.payload,
                          split=args.split, problems=[p.to_dict() for p in source.problems],
                          strategy=None if instance_strategy else args.strategy, warnings=source.warnings)
    if instance_strategy:  # the instances per class the same plan as balance and build would write
        from augforge.balance.apply import plan_balance

        report["instance_projection"] = plan_balance(source, args.strategy, splits=splits, imbalance=imbalance,
                                                     seed=args.seed).instances
    from augforge.balance.instances import (dense_recommendation, image_label_recommendation, image_label_section,
                                            instance_section, semantic_recommendation, semantic_section)

    semantic = semantic_section(source, args.split, splits, imbalance, args.seed)
    instances = instance_section(source, args.split, splits, imbalance, args.seed)
    if semantic is not None:  # a semantic segmentation source: images and pixels per class
        report["semantic"] = semantic
        report["recommendation"] = semantic_recommendation(semantic)
    elif instances is not None:  # a detection or segmentation source: instances per class, box sizes
        report["instances"] = instances
        report["recommendation"] = dense_recommendation(instances)
    image_labels = image_label_section(source, args.split, splits, imbalance, args.seed)
    if image_labels is not None:  # image-level labels (multilabel): images per label, co-occurrence
        report["image_labels"] = image_labels
        if not (instances or {}).get("instances") and semantic is None:  # labels alone: no instance table
            report.pop("instances", None)
            report["recommendation"] = image_label_recommendation(image_labels)
    if args.evaluate:  # the strategy given, else the recommendation, measured on these rows
        from augforge.balance.evaluate import evaluate_source

        report["evaluation"] = evaluate_source(source, args.split, args.strategy or report["recommendation"]["strategy"],
                                               splits=splits, imbalance=imbalance, seed=args.seed, folds=args.folds,
                                               classifier=args.classifier, extra_models=_extra_text_models(args))
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


def _extra_text_models(args: argparse.Namespace) -> tuple:
    """``--fasttext``: augforge's fastText as one more model for ``--evaluate`` to compare on texts."""
    if not args.fasttext:
        return ()
    if args.classifier is not None:
        raise AugforgeError("--fasttext compares fastText with the text models; it cannot be combined with "
                            "--classifier")
    from sklearn.preprocessing import FunctionTransformer

    from augforge.balance.evaluate import CandidateModel
    from augforge.experiments.text_estimator import TrainedTextClassifier, text_column

    return (CandidateModel("fasttext", lambda: FunctionTransformer(text_column),
                           lambda balanced, seed: TrainedTextClassifier("fasttext", "balanced" if balanced else None,
                                                                        seed=seed)),)


def add_report(sub) -> None:
    """`augforge report`'s parser."""
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
    p.add_argument("--fasttext", action="store_true",
                   help="--evaluate on texts: also cross-validate augforge's fastText, trained by augforge's loop in "
                        "every fold (about 10 s a fold per 2,000 texts on 2 cores)")
    p.add_argument("--classifier", choices=["logistic", "tree", "linear"],
                   help="--evaluate: one fixed classifier (default: logistic regression for features; for texts, "
                        "both text models, linear (word + character n-grams) and words (word n-grams only))")
    add_source_options(p)
    p.set_defaults(func=cmd_report)


def cmd_balance(args: argparse.Namespace) -> int:
    """Resample the train split of a source with a strategy chain, into a new dataset directory."""
    from rich.console import Console
    from augforge.balance.apply import balance_dataset
    from augforge.balance.render import render_balance

    source = source_from(args)
    splits, imbalance = split_specs(args)
    with RowProgress("balance", args.quiet) as progress:
        result, _ = balance_dataset(
            source, args.out, args.strategy, splits=splits, imbalance=imbalance, seed=args.seed,
            knn_backend=args.knn_backend, shard_rows=args.shard_rows, shard_mb=args.shard_mb,
            overwrite=args.overwrite, on_stage=progress.stage, on_total=progress.total, on_rows=progress.rows)
    out = Console()
    render_balance(result.manifest, out)
    print_written(out, result, args.out)
    return 0


def add_balance(sub) -> None:
    """`augforge balance`'s parser."""
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
    add_source_options(p)
    add_output_options(p)
    p.set_defaults(func=cmd_balance)


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
                       engine=engine_spec(args))
    out = Console()
    render_build(result.write.manifest, out)
    print_written(out, result.write, args.out or recipe.output.dir)
    if result.engine:
        nodes = result.engine["nodes"]
        out.print(f"Ray: {result.engine['units']} units of work on {len(nodes)} node(s) "
                  f"({', '.join(f'{node[:8]}: {n}' for node, n in nodes.items())}), "
                  f"{result.engine['worker_processes']} worker process(es)", highlight=False)
    return 0


def add_build(sub) -> None:
    """`augforge build`'s parser."""
    p = sub.add_parser("build", help="run a recipe: source -> clean -> balance -> augment -> shards",
                       description="Build the dataset a recipe describes (docs/recipes.md): drop duplicates, balance "
                                   "the train split, write augmented copies through DALI, pass val/test through. "
                                   "Deterministic for the recipe's seed; rerun after a crash to resume.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", help="the dataset directory (default: the recipe's output.dir)")
    add_engine_options(p, "local: DALI and encoder threads (default: every core); ray: worker actors, one CPU "
                           "each (default: every CPU of the cluster)")
    add_output_options(p, shard_size=False)
    p.set_defaults(func=cmd_build)


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


def add_preview(sub) -> None:
    """`augforge preview`'s parser."""
    p = sub.add_parser("preview", help="a grid of source images and their augmented variants",
                       description="Image recipes: render N train images (spread over the classes) next to VARIANTS "
                                   "augmented versions each, as a PNG (detection and segmentation sets: with their "
                                   "boxes, masks and keypoints drawn, each variant the one build writes). Text "
                                   "recipes: print N texts and their variants "
                                   "with the changed words highlighted.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", help="the PNG file to write (image recipes); text recipes print to the terminal")
    p.add_argument("--n", type=int, default=8, help="source images (default 8)")
    p.add_argument("--variants", type=int, default=4, help="augmented variants per image (default 4)")
    p.set_defaults(func=cmd_preview)


def cmd_audit(args: argparse.Namespace) -> int:
    """Near-duplicates, leakage across splits, label issues and outliers of a dataset directory or source."""
    from rich.console import Console

    from augforge.audit.render import render_terminal
    from augforge.audit.run import audit

    splits, imbalance = split_specs(args)
    embed = None
    if args.embed:
        from augforge.experiments.embed import checkpoint_embedder

        embed = checkpoint_embedder(args.embed)
    options = dict(seed=args.seed, threshold=args.threshold, epsilon=args.epsilon, labels=not args.no_labels,
                   html=args.html, show=args.show, cosine=args.cosine,
                   **given(args, "radius", "verify"))  # else the audit's own defaults
    if _audits_with_a_model(args, imbalance):
        from augforge.experiments.audit_model import audit_with_model

        kept = {k: v for k, v in (("test_split", splits.test), ("val_split", splits.val)) if v}
        report = audit_with_model(args.source, recipe=args.recipe, splits=kept,
                                  log=lambda text: print(text, file=sys.stderr),
                                  **given(args, "budget_minutes", "folds"), **options)
    else:
        report = audit(args.source, splits=args.split or None, split_spec=splits, imbalance=imbalance,
                       label_col=args.label_col, text_col=args.text_col, feature_cols=args.feature_cols,
                       id_col=args.id_col, max_pixels=args.max_pixels, probs=args.probs, embed=embed, **options)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render_terminal(report, Console(width=160), args.show)
        if args.html:
            print(f"wrote {args.html}")
    return 0


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` the user gave (not None): the library's defaults stand for the others."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _audits_with_a_model(args: argparse.Namespace, imbalance) -> bool:
    """Whether the label issues come from a cross-fitted CNN: images, label issues on, no probabilities or
    embeddings given, neither --fast nor a --split selection nor an imbalance (the build would not match)."""
    if args.no_labels or args.probs or args.embed or args.fast or args.split or imbalance.profile is not None:
        return False
    from augforge.datasets.manifest import MANIFEST, read_manifest
    from augforge.datasets.sources import open_source

    if (Path(args.source) / MANIFEST).is_file():
        return (read_manifest(Path(args.source)).get("payload") or "image") == "image"
    return Path(args.source).is_dir() and open_source(args.source).payload == "image"


def add_audit(sub) -> None:
    """`augforge audit`'s parser."""
    p = sub.add_parser("audit", help="near-duplicates, train/test leakage, label issues and outliers",
                       description="Near-duplicate clusters within a split (redundancy) and across splits "
                                   "(leakage), label issues by confident learning (cleanlab) and outliers, of a "
                                   "dataset directory or a source (docs/audit.md).")
    p.add_argument("source", help="dataset directory, image folder, .csv/.tsv/.parquet/.jsonl file, or 'digits'")
    p.add_argument("--split", nargs="*", default=[], help="audit only these splits (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (schema: docs/audit.md)")
    p.add_argument("--html", metavar="PAGE", help="also write an HTML page with thumbnails or snippets of the "
                                                  "worst rows of each finding")
    p.add_argument("--radius", type=int, help="images: dHash Hamming radius of a candidate pair "
                                              "(default 14 of 64 bits; candidates are verified on pixels)")
    p.add_argument("--verify", type=float,
                   help="images: the pixel similarity (correlation after alignment) a candidate pair needs to be a "
                        "near-duplicate (default 0.975; docs/audit.md)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="texts: Jaccard similarity of word 3-grams of a near-duplicate (default 0.8)")
    p.add_argument("--epsilon", type=float, default=0.0,
                   help="features: Euclidean distance of a near-duplicate (default 0: equal rows)")
    p.add_argument("--no-labels", action="store_true", help="skip label issues and outliers (no model is fitted)")
    p.add_argument("--fast", action="store_true",
                   help="images: label issues from the fast linear model on grey pixels instead of a cross-fitted CNN")
    p.add_argument("--budget-minutes", type=float, metavar="M",
                   help="images: the cross-fitted CNN gets as many epochs as fit in M minutes here (default 4); "
                        "below 4 epochs the fast model is used, and the report says so")
    p.add_argument("--recipe", metavar="RECIPE", help="images: cross-fit this recipe's model instead of the small "
                                                      "default CNN (its train section as written)")
    p.add_argument("--folds", type=int, help="images: folds of the cross-fitted CNN (default 5)")
    p.add_argument("--probs", metavar="RUN_DIR", help="label issues and outliers from the out-of-fold probabilities "
                                                      "of a cross-fitted run (augforge crossfit) instead of the fast "
                                                      "model")
    p.add_argument("--embed", metavar="MODEL", help="an augforge checkpoint (model.pt): its penultimate features "
                                                    "give embedding neighbours and the label model's inputs")
    p.add_argument("--cosine", type=float, default=0.95,
                   help="with --embed: cosine similarity of an embedding neighbour (default 0.95)")
    p.add_argument("--show", type=int, default=10, help="rows listed per finding (default 10)")
    add_source_options(p)
    p.set_defaults(func=cmd_audit)
