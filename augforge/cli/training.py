"""The training commands: train, tune, search-policy, ablate, crossfit, lr-find, evaluate.

Each handler imports its job when it runs (the CLI's lazy dispatch: `augforge --help` loads none of them)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from augforge.cli.options import add_recipe_data_options, add_stream_options, stream_options



def cmd_train(args: argparse.Namespace) -> int:
    """Build or reuse the recipe's dataset, then train and evaluate (the recipe's train section)."""
    from augforge.recipe import load_recipe
    from augforge.train.run import train_recipe

    recipe = load_recipe(args.recipe)  # the whole recipe, train section included, is checked before any work
    if args.seed is not None:  # train.seed from the command line: one recipe, many seeds
        recipe = recipe.with_changes({"train.seed": args.seed})
    if args.run_dir is None:
        from pathlib import Path

        args.run_dir = str(Path("build") / "runs" / Path(args.recipe).stem)
    summary = train_recipe(recipe, args.run_dir, data=args.data, resume=args.resume or args.resume_changed,
                           rebuild=args.rebuild,
                           workers=args.workers, threads=args.threads, log=lambda text: print(text, flush=True),
                           show_progress=sys.stderr.isatty(), resume_changed=args.resume_changed,
                           profile=args.profile_steps if args.profile else None, stream=stream_options(args))
    if not summary:  # a DDP worker other than rank 0: the first process reports
        return 0
    if "accuracy" in summary:
        print(f"test: accuracy {summary['accuracy']:.4f}, balanced accuracy {summary['balanced_accuracy']:.4f}, "
              f"macro-F1 {summary['macro_f1']:.4f} ({summary['rows']:,} rows); wall {summary['wall_s']:.1f} s; "
              f"waiting for data {summary['input_bound']:.0%}")
    print(f"wrote {args.run_dir}/summary.json, metrics.jsonl, model.pt and checkpoints/")
    return 0


def add_train(sub) -> None:
    """`augforge train`'s parser."""
    p = sub.add_parser("train", help="build or reuse the recipe's dataset, then train and evaluate",
                       description="Train with the recipe's train section (docs/training.md): stream the built "
                                   "dataset, evaluate on val each epoch and on test at the end, write RUN_DIR.")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--run-dir", help="where metrics.jsonl, checkpoints/ and summary.json go "
                                     "(default: build/runs/<recipe name>)")
    add_recipe_data_options(p)
    add_stream_options(p)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--resume-changed", action="store_true",
                   help="with --resume: continue even though the train section changed since the checkpoint")
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


def cmd_tune(args: argparse.Namespace) -> int:
    """Search the recipe's tune: space with Optuna; write best.yaml, trials.csv and the study database."""
    from augforge.experiments.tune import tune_recipe

    result = tune_recipe(args.recipe, args.trials, args.out, storage=args.storage, pruner=args.pruner,
                         confirm=args.confirm, val_split=args.val_split, log=lambda text: print(text, flush=True))
    best = result["best"]
    print(f"{result['trials']} finished trials ({result['pruned']} pruned); best: trial {best['number']}, "
          f"{result['metric']} {best['value']:.4f} {json.dumps(best['params'])}")
    print(f"wrote {result['best_yaml']} (augforge train accepts it), trials.csv, {result['html']}; "
          f"study: {result['study']}")
    if "confirm" in result:
        from rich.console import Console

        from augforge.experiments.ablate_report import print_table

        print_table(result["confirm"], Console())
    return 0


def add_tune(sub) -> None:
    """`augforge tune`'s parser."""
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


def cmd_search_policy(args: argparse.Namespace) -> int:
    """Search an augmentation policy under a time budget, confirm it over paired seeds, write best.yaml."""
    from rich.console import Console

    from augforge.experiments.policy_report import print_summary
    from augforge.experiments.policy_search import search_policy

    result = search_policy(args.recipe, args.out, budget_minutes=args.budget_minutes, max_trials=args.max_trials,
                           proxy_epochs=args.proxy_epochs, val_split=args.val_split, metric=args.metric,
                           confirm_seeds=args.confirm_seeds, also=tuple(args.also), jobs=args.jobs,
                           storage=args.storage, log=lambda text: print(text, flush=True))
    print_summary(result, Console())
    print(f"wrote {result['best_yaml']} (augforge train accepts it), {args.out}/search.json, {result['html']}")
    return 0


def add_search_policy(sub) -> None:
    """`augforge search-policy`'s parser."""
    p = sub.add_parser("search-policy", help="search an augmentation policy on your data under a time budget, "
                                             "confirmed against TrivialAugment over paired seeds",
                       description="Score no augmentation, TrivialAugment, AutoAugment's ImageNet policy, a "
                                   "RandAugment (N, M) grid and the recipe's own ops (p and strength by Optuna) on "
                                   "held-out training rows with short runs; then retrain the winner, "
                                   "TrivialAugment, no augmentation and the recipe as written over paired seeds and "
                                   "compare them on the test split (docs/policies.md).")
    p.add_argument("recipe", help="the recipe YAML file (image data)")
    p.add_argument("--out", required=True, help="where study.db, data/, trials/, confirm/, search.json, "
                                                "search.html and best.yaml go; a rerun continues")
    p.add_argument("--budget-minutes", type=float, default=10.0, metavar="M",
                   help="search time (summed over reruns): no new trial starts past it (default 10)")
    p.add_argument("--max-trials", type=int, default=60, metavar="N",
                   help="at most N trained search trials, the 3 fixed candidates included (default 60)")
    p.add_argument("--proxy-epochs", type=int, metavar="E",
                   help="epochs of a search trial that is not pruned (default: the recipe's train.epochs; the "
                        "successive-halving pruner stops most trials after 2, 4 or 10)")
    p.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="for a recipe without source.val_split: the share of the train split the search scores "
                        "on (never the test split; default 0.2)")
    p.add_argument("--metric", default="balanced_accuracy", choices=["balanced_accuracy", "accuracy", "macro_f1"])
    p.add_argument("--confirm-seeds", type=int, default=8, metavar="K",
                   help="paired seeds of the confirmation on the test split (0: none; default 8, the fewest whose "
                        "Holm-adjusted sign-flip test can reach p < 0.05 over 5 comparisons)")
    p.add_argument("--also", action="append", default=[], metavar="POLICY",
                   help="confirm this policy string too (e.g. rand-n2-m9; repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="confirmation runs in parallel processes")
    p.add_argument("--storage", help="an Optuna storage URL instead of OUT/study.db")
    p.set_defaults(func=cmd_search_policy)


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run the recipe's leave-one-out, plain and custom arms over paired seeds and compare each with the baseline."""
    from rich.console import Console

    from augforge.recipe import load_recipe
    from augforge.experiments.ablate import run_ablation
    from augforge.experiments.ablate_report import print_table

    recipe = load_recipe(args.recipe)
    report = run_ablation(recipe, args.out, seeds=args.seeds, overrides=args.arms, only=args.only, skip=args.skip,
                          jobs=args.jobs, metric=args.metric, bootstrap_train=args.bootstrap_train,
                          budget_minutes=args.budget_minutes, workers=args.workers,
                          equal_compute=args.equal_compute, log=lambda text: print(text, flush=True))
    print_table(report, Console(width=220))
    print(f"wrote {os.path.normpath(args.out)}/ablation.json, ablation.html and runs/")
    return 0


def add_ablate(sub) -> None:
    """`augforge ablate`'s parser."""
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
    p.add_argument("--metric", default="balanced_accuracy",
                   help="the metric the verdicts are about: balanced_accuracy (default), accuracy or macro_f1")
    p.add_argument("--bootstrap-train", action="store_true", help="also resample the training rows per seed")
    p.add_argument("--equal-compute", action="store_true",
                   help="every arm trains on as many samples as the baseline (its epochs scaled to its train rows), "
                        "so an arm without copies or balancing is not also given less training")
    p.add_argument("--budget-minutes", type=float, help="start no new run once this much time is spent")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted ablation (the default: finished runs are always reused)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="build workers")
    p.set_defaults(func=cmd_ablate)


def cmd_crossfit(args: argparse.Namespace) -> int:
    """Out-of-fold probabilities of the recipe's model, one training per fold, for ``augforge audit --probs``."""
    from augforge.recipe import load_recipe
    from augforge.experiments.crossfit import crossfit

    recipe = load_recipe(args.recipe)
    crossfit(recipe, args.out, folds=args.folds, data=args.data, rebuild=args.rebuild, workers=args.workers,
             threads=args.threads, log=lambda text: print(text, flush=True))
    print(f"audit with: augforge audit {args.data or recipe.output.dir or os.path.join(args.out, 'data')} "
          f"--probs {args.out}")
    return 0


def add_crossfit(sub) -> None:
    """`augforge crossfit`'s parser."""
    p = sub.add_parser("crossfit", help="out-of-fold probabilities of the recipe's model, for audit --probs",
                       description="Cut the train split into K folds (stratified, a source row's copies in one fold), "
                                   "train the recipe on all folds but one K times, and write every row's probabilities "
                                   "from models that did not train on it (docs/audit.md).")
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--out", required=True, help="where fold-*/, probs.npz and crossfit.json go")
    p.add_argument("--folds", type=int, default=5, help="folds (default 5)")
    add_recipe_data_options(p)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="build workers")
    p.add_argument("--threads", type=int, help="torch threads (default: the recipe's, else all cores)")
    p.set_defaults(func=cmd_crossfit)


def cmd_lr_find(args: argparse.Namespace) -> int:
    """The learning-rate range test on the recipe's data and model."""
    from augforge.recipe import load_recipe
    from augforge.experiments.lr_find import lr_find, plot
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


def add_lr_find(sub) -> None:
    """`augforge lr-find`'s parser."""
    p = sub.add_parser("lr-find", help="sweep the learning rate and suggest an initial one",
                       description="The LR range test on the recipe's data and model: the learning rate grows "
                                   "exponentially over --steps optimizer steps; the smoothed loss is printed and "
                                   "plotted, and the lr where it falls fastest is suggested. Weights are not kept.")
    p.add_argument("recipe", help="the recipe YAML file")
    add_recipe_data_options(p)
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--plot", metavar="PNG", help="write loss vs learning rate to this PNG")
    p.set_defaults(func=cmd_lr_find)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print a checkpoint's metrics on a dataset directory."""
    from augforge.train.restore import evaluate_checkpoint

    from augforge.train.long_tail import shot_line

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, device=args.device, adjust=args.adjust)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        adjusted = f" (logits adjusted post hoc, tau {metrics['posthoc_tau']})" if metrics["posthoc_tau"] else ""
        print(f"{args.data} ({args.split}, {metrics['rows']:,} rows){adjusted}: accuracy {metrics['accuracy']:.4f}, "
              f"balanced accuracy {metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
        if "shots" in metrics:
            print(f"  many / medium / few-shot: {shot_line(metrics['shots'])}")
        for name, recall in metrics["recall"].items():
            print(f"  recall {name}: " + (f"{recall:.4f}" if recall is not None else "undefined (no rows of it here)"))
    return 0


def add_evaluate(sub) -> None:
    """`augforge evaluate`'s parser."""
    p = sub.add_parser("evaluate", help="a checkpoint's metrics on a dataset directory",
                       description="Accuracy, balanced accuracy, macro-F1 and per-class recall of a checkpoint "
                                   "written by augforge train, on a split of a dataset directory.")
    p.add_argument("checkpoint", help="model.pt, checkpoints/best.pt or checkpoints/last.pt")
    p.add_argument("data", help="dataset directory")
    p.add_argument("--split", default="test", help="test (default), val, train or all")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs (default auto: the GPU when present)")
    p.add_argument("--adjust", type=float, default=None, metavar="TAU",
                   help="post-hoc logit adjustment: subtract TAU * log prior (the training priors the checkpoint "
                        "records) from the logits; 0: the plain logits (default: the tau the run delivered with)")
    p.set_defaults(func=cmd_evaluate)
