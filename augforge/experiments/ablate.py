"""`augforge ablate RECIPE --out DIR`: what each of a recipe's techniques buys, over paired seeds, with intervals.

The arms (``augforge.experiments.arms``) run over seeds 0..N-1. Seed *s* sets ``train.seed`` (initialisation,
order, online draws) and ``augment.seed`` (the offline copies), the same in every arm; the split and the
held-out test rows stay the recipe's. ``bootstrap_train`` also resamples the training rows per seed.

Cost control: the data of an arm is built once per distinct build fingerprint (arms that change only
training share the baseline's) under ``DIR/data/``; each run lives in ``DIR/runs/<arm>/<seed>/`` and is
skipped when its ``run.json`` names the same fingerprint (a rerun after ``kill -9`` repeats nothing that
finished); ``jobs`` trainings run in parallel processes with the torch threads split between them;
``budget_minutes`` stops starting runs once spent.

The statistics (``augforge.experiments.compare``) and the outputs (``augforge.experiments.ablate_report``) follow.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import xxhash

from augforge.atomic import write_json
from augforge.checks import options_of
from augforge.datasets.manifest import read_manifest
from augforge.errors import AugforgeError, OptionError, require_at_least
from augforge.recipe import Recipe
from augforge.recipe.settings import training_settings
from augforge.recipe.train import METRICS
from augforge.experiments.ablate_report import write_html
from augforge.experiments.arms import Arm, build_arms
from augforge.experiments.compare import adjust, compare, noise_floor
from augforge.train.data import ensure_dataset
from augforge.train.run import train_recipe

#: the many / medium / few-shot groups each run reports (augforge.train.long_tail)
SHOTS = ("many", "medium", "few")
#: time-to-target: the first epoch whose validation metric reaches this share of the baseline's final value
TARGET_SHARE = 0.99


@dataclass
class Task:
    """One training run: an arm at a seed."""

    arm: Arm
    seed: int
    recipe: Recipe
    data: Path
    folder: Path
    fingerprint: str


def _fingerprint(value) -> str:
    return xxhash.xxh3_128_hexdigest(json.dumps(value, sort_keys=True, default=str).encode())


def plan_tasks(recipe: Recipe, arms: list[Arm], out: Path, seeds: int, bootstrap_train: bool,
               extra: dict | None = None) -> list[Task]:
    """Every (arm, seed) run, each arm's recipe validated (an override naming no recipe key fails here);
    ``extra`` maps (arm name, seed) to more changes (the epochs of equal compute)."""
    tasks = []
    for arm in arms:
        try:
            aug = recipe.with_changes(arm.changes).augment
        except AugforgeError as exc:
            raise AugforgeError(f"arm {arm.name}: {exc}") from None
        copies = aug.mode == "offline" and bool(aug.image or aug.text) and bool(aug.copies or aug.copies_per_class)
        for seed in range(seeds):
            changes = [*arm.changes, ("train.seed", seed)]
            if copies:  # the arm's offline copies are drawn anew per seed; without copies the build is shared
                changes.append(("augment.seed", seed))
            if bootstrap_train:
                changes.append(("train.bootstrap", seed))
            changes += (extra or {}).get((arm.name, seed), [])
            try:
                arm_recipe = recipe.with_changes(changes)
            except AugforgeError as exc:
                raise AugforgeError(f"arm {arm.name}: {exc}") from None
            build_key = _fingerprint(arm_recipe.fingerprint_parts())
            run_key = _fingerprint({"build": build_key, "train": training_settings(arm_recipe)})
            tasks.append(Task(arm, seed, arm_recipe, out / "data" / build_key[:16], out / "runs" / arm.name / str(seed),
                              run_key))
    return tasks


def _finished(task: Task) -> dict | None:
    """The summary of a run already done with this fingerprint, else None."""
    try:
        done = json.loads((task.folder / "run.json").read_text())
        summary = json.loads((task.folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if done.get("fingerprint") == task.fingerprint else None


def _train(recipe: Recipe, folder: str, data: str, threads: int, name: str) -> dict:
    """One run in this process (also the body of a worker process); an error names the arm and seed."""
    try:
        return train_recipe(recipe, folder, data=data, threads=threads, log=lambda _: None)
    except AugforgeError as exc:
        raise AugforgeError(f"{name}: {exc}") from None


def _curve(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@dataclass(frozen=True)
class AblationOptions:
    """How ``run_ablation`` runs: ``seeds`` paired seeds per arm; the arms (``arms``: given, the first the
    baseline; else ``build_arms`` of the recipe with ``overrides``, ``only``, ``skip``); ``metric`` compared on
    test; ``bootstrap_train`` (each seed also resamples the train rows); ``jobs`` parallel runs; ``workers``
    build workers; ``budget_minutes`` (no new run starts past it); ``equal_compute`` (every arm trains on as
    many samples as the baseline: ``equal_compute_changes``); ``log``."""

    seeds: int = 10
    overrides: tuple = ()
    only: tuple = ()
    skip: tuple = ()
    jobs: int = 1
    metric: str = "balanced_accuracy"
    bootstrap_train: bool = False
    budget_minutes: float | None = None
    workers: int = 2
    arms: list | None = None
    equal_compute: bool = False
    log: object = print


def run_ablation(recipe: Recipe, out: str | Path, **options) -> dict:
    """Run (or reuse) every arm at every seed, compare each arm with the baseline, write ``ablation.json`` and
    ``ablation.html`` into ``out``; the result dict (as written). ``options``: ``AblationOptions``."""
    o = options_of(AblationOptions, options, "run_ablation")
    seeds, metric, jobs, arms, log, bootstrap_train = o.seeds, o.metric, o.jobs, o.arms, o.log, o.bootstrap_train
    if metric not in METRICS:
        raise OptionError("{metric} {value}: expected one of {choices}", value=metric, choices=", ".join(METRICS))
    if seeds < 2:
        raise OptionError("{seeds} {value}: a comparison needs at least 2 seeds (10 by default)", value=seeds)
    require_at_least("jobs", jobs)
    out = Path(out)
    if arms is None:
        arms = build_arms(recipe, o.overrides, o.only, o.skip)
    elif not arms or arms[0].kind != "baseline":
        raise AugforgeError("ablate: the first arm must be the baseline")
    tasks = plan_tasks(recipe, arms, out, seeds, bootstrap_train)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _build_all(tasks, o.workers, log)
    if o.equal_compute:  # the epochs depend on each build's train rows: planned again once they are built
        tasks = plan_tasks(recipe, arms, out, seeds, bootstrap_train, equal_compute_changes(tasks, log))
    results: dict[tuple[str, int], dict] = {}
    todo = []
    for task in tasks:
        summary = _finished(task)
        if summary is None:
            todo.append(task)
        else:
            results[(task.arm.name, task.seed)] = summary
    if results:
        log(f"{len(results)} of {len(tasks)} runs already done (reused)")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    budget = None if o.budget_minutes is None else o.budget_minutes * 60.0
    stopped = _run_tasks(todo, results, jobs, threads, budget, started, len(tasks), log)
    report = _report(recipe, arms, tasks, results, metric, seeds, bootstrap_train, time.perf_counter() - started,
                     stopped)
    report["equal_compute"] = o.equal_compute
    write_json(out / "ablation.json", report)
    write_html(report, out / "ablation.html")
    return report


def _train_rows(data: Path) -> int:
    """The rows of a built dataset's train split (what one epoch draws)."""
    return sum(read_manifest(data)["counts"].get("train", {}).values())


def equal_compute_changes(tasks: list[Task], log) -> dict:
    """Per (arm, seed) the changes that give the arm as many training samples (epochs x train rows) as the
    baseline at that seed: ``train.epochs`` scaled by the ratio of train rows (rounded, at least 1), and the
    epochs that start something (``swa_start``, ``rebalance.start``) scaled with it, kept below the last."""
    base = {t.seed: (t.recipe.train.epochs, _train_rows(t.data)) for t in tasks if t.arm.kind == "baseline"}
    extra = {}
    for task in tasks:
        epochs, rows = base[task.seed]
        own, train = _train_rows(task.data), task.recipe.train
        scaled = max(1, round(epochs * rows / max(1, own)))
        if task.arm.kind == "baseline" or scaled == train.epochs:
            continue
        extra[(task.arm.name, task.seed)] = epoch_changes(train, scaled)
        if task.seed == 0:
            log(f"equal compute: arm {task.arm.name} trains {scaled} epochs on {own:,} rows (the baseline: "
                f"{epochs} on {rows:,})")
    return extra


def epoch_changes(train, epochs: int) -> list:
    """The changes that train ``epochs`` epochs instead of ``train.epochs`` (a ``TrainConfig``), the epochs that
    start something (``swa_start``, ``rebalance.start``) scaled with them and kept below the last."""
    factor = epochs / train.epochs
    changes = [("train.epochs", epochs)]
    if train.swa_start is not None:
        changes.append(("train.swa_start", min(epochs - 1, round(train.swa_start * factor))))
    if train.rebalance is not None:
        changes.append(("train.rebalance.start", min(epochs - 1, round(train.rebalance.start * factor))))
    return changes


def _build_all(tasks: list[Task], workers: int, log) -> None:
    """Each distinct data directory built (or found complete) once, before any training starts."""
    seen = set()
    for task in tasks:
        if task.data in seen:
            continue
        seen.add(task.data)
        ensure_dataset(task.recipe, task.data, False, workers, lambda _: None)
    log(f"data: {len(seen)} build(s) under {tasks[0].data.parent}")


def _run_tasks(todo: list[Task], results: dict, jobs: int, threads: int, budget: float | None, started: float,
               total: int, log) -> bool:
    """Train ``todo`` (``jobs`` at a time), recording each run; True when the budget stopped new runs."""
    done_before = len(results)
    times: list[float] = []

    def record(task: Task, summary: dict, seconds: float) -> None:
        results[(task.arm.name, task.seed)] = summary
        write_json(task.folder / "run.json", {"arm": task.arm.name, "seed": task.seed,
                                               "fingerprint": task.fingerprint})
        times.append(seconds)
        done = len(results)
        left = (total - done) * statistics.mean(times) / jobs
        log(f"[{done}/{total}] {task.arm.name} seed {task.seed}: balanced accuracy "
            f"{summary.get('balanced_accuracy', float('nan')):.4f} ({seconds:.0f} s); about {left / 60:.1f} min left")

    def prepare(task: Task) -> None:
        shutil.rmtree(task.folder, ignore_errors=True)  # a run killed before it finished starts again
        task.folder.parent.mkdir(parents=True, exist_ok=True)

    def over_budget() -> bool:
        return budget is not None and time.perf_counter() - started > budget

    queue = list(todo)
    if jobs == 1:
        while queue and not over_budget():
            task = queue.pop(0)
            prepare(task)
            begun = time.perf_counter()
            record(task, _train(task.recipe, str(task.folder), str(task.data), threads, _label(task)),
                   time.perf_counter() - begun)
    else:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            running = {}
            while queue or running:
                while queue and len(running) < jobs and not over_budget():
                    task = queue.pop(0)
                    prepare(task)
                    running[pool.submit(_train, task.recipe, str(task.folder), str(task.data), threads,
                                        _label(task))] = (task, time.perf_counter())
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task, begun = running.pop(future)
                    record(task, future.result(), time.perf_counter() - begun)
    stopped = bool(queue)
    if stopped:
        log(f"budget spent: {len(results) - done_before} run(s) finished this time, {len(queue)} not started; "
            "rerun the same command to continue")
    return stopped


def _label(task: Task) -> str:
    return f"arm {task.arm.name}, seed {task.seed}"


def _time_to_target(curve: list[dict], metric: str, target: float | None):
    """Seconds of training until the validation metric first reached ``target``; None when it never did."""
    if target is None:
        return None
    for record in curve:
        if record.get("val", {}).get(metric, -1.0) >= target:
            return record.get("elapsed_s")
    return None


def _spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _report(recipe: Recipe, arms: list[Arm], tasks: list[Task], results: dict, metric: str, seeds: int,
            bootstrap_train: bool, wall: float, stopped: bool) -> dict:
    """ablation.json: per arm its runs and spreads, and against the baseline Δ, interval, p-values, verdict."""
    folders = {(t.arm.name, t.seed): t.folder for t in tasks}
    base_runs = {seed: results.get(("baseline", seed)) for seed in range(seeds)}
    targets = {}
    for seed in range(seeds):
        curve = _curve(folders[("baseline", seed)]) if base_runs[seed] else []
        final = curve[-1].get("val", {}).get(metric) if curve else None
        targets[seed] = TARGET_SHARE * final if final is not None else None
    n_test = next((r["rows"] for r in results.values() if r and "rows" in r), 0)
    entries, comparisons = [], []
    for arm in arms:
        runs = []
        for seed in range(seeds):
            summary = results.get((arm.name, seed))
            if summary is None:
                continue
            ttt = _time_to_target(_curve(folders[(arm.name, seed)]), metric, targets[seed])
            reached = None if targets[seed] is None else ttt is not None  # None: no val split to measure on
            curve = _curve(folders[(arm.name, seed)])
            shots = summary.get("shots") or {}
            runs.append({"seed": seed, **{k: summary.get(k) for k in METRICS}, "wall_s": summary.get("wall_s"),
                         "time_to_target_s": ttt, "reached_target": reached,
                         "epochs": summary.get("epochs"), "samples": sum(r.get("rows", 0) for r in curve),
                         **{group: (shots.get(group) or {}).get("accuracy") for group in SHOTS}})
        entry = {"name": arm.name, "kind": arm.kind, "changes": arm.describe(), "runs": runs,
                 "spread": {k: _spread([r[k] for r in runs])
                            for k in (*METRICS, "wall_s", "time_to_target_s", "samples", *SHOTS)},
                 "never_reached_target": sum(r["reached_target"] is False for r in runs),
                 "target_measured": any(r["reached_target"] is not None for r in runs), "comparison": None}
        paired = [s for s in range(seeds) if results.get((arm.name, s)) and base_runs[s]]
        if arm.kind != "baseline" and len(paired) >= 2:
            result = compare([results[(arm.name, s)][metric] for s in paired],
                             [base_runs[s][metric] for s in paired], seed=0)
            entry["comparison"] = result
            entry["paired_seeds"] = paired
            comparisons.append(result)
        entries.append(entry)
    adjust(comparisons)
    for entry in entries:
        if entry["comparison"] is not None:
            entry["comparison"] = entry["comparison"].to_dict()
    base_mean = _spread([r.get("accuracy") for r in base_runs.values() if r])["mean"]
    return {
        "recipe": recipe.file, "metric": metric, "seeds": seeds, "bootstrap_train": bootstrap_train,
        "test_rows": n_test, "noise_floor": noise_floor(base_mean, n_test) if base_mean is not None else None,
        "target_share": TARGET_SHARE, "runs_finished": len(results), "runs_total": len(tasks),
        "stopped_by_budget": stopped, "wall_s": wall, "arms": entries,
    }
