"""`augforge tune RECIPE --trials N --out DIR`: hyper-parameter search on Optuna, over the recipe's own keys.

The recipe's ``tune:`` section names the metric and the space, keyed by recipe path::

    tune:
      metric: balanced_accuracy            # or accuracy, macro_f1 (on the validation split)
      space:
        train.lr: {log_uniform: [1.0e-4, 1.0e-2]}
        train.label_smoothing: {uniform: [0.0, 0.2]}
        balance.strategy: {choice: [none, over]}
        augment.copies: {int: [0, 6]}

- TPE samples the space (seeded by the recipe's seed). A median pruner (or ``--pruner hyperband``) is
  fed the validation metric after every epoch and stops trials that fall behind.
- The study lives in a real database: ``DIR/study.db`` (SQLite) by default, or any Optuna storage URL.
  Rerunning the command continues the same study up to ``--trials`` finished trials. Trials that a
  killed process left running are marked failed and run again.
- Trials that share their data settings share one build (``DIR/data/<hash>``); each trial trains in
  ``DIR/trials/<number>``.
- ``DIR/best.yaml`` is the best trial's recipe as plain YAML, without the ``tune:`` section, ready for
  ``augforge train``; ``DIR/trials.csv`` lists every trial.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import xxhash
import yaml

from augforge.atomic import atomic_open
from augforge.checks import RecipeError
from augforge.errors import AugforgeError, OptionError
from augforge.recipe import load_recipe
from augforge.recipe.changes import REMOVE, apply_changes
from augforge.recipe.tune import parse_space
from augforge.experiments.ablate import run_ablation
from augforge.experiments.arms import Arm
from augforge.train.run import train_recipe
from augforge.experiments.tune_report import write_html

PRUNERS = ("median", "hyperband")
#: the median pruner prunes nothing until this many trials finished, nor in a trial's first quarter of epochs
#: (the warm-up's noisy epochs: at 2 startup trials and no warm-up it pruned 17 of 20 digits trials)
STARTUP_TRIALS = 3


def _suggest(trial, path: str, kind: str, values):
    if kind == "log_uniform":
        return trial.suggest_float(path, float(values[0]), float(values[1]), log=True)
    if kind == "uniform":
        return trial.suggest_float(path, float(values[0]), float(values[1]))
    if kind == "int":
        return trial.suggest_int(path, int(values[0]), int(values[1]))
    return trial.suggest_categorical(path, values)


def trial_changes(params: dict) -> list:
    """A trial's parameters as recipe changes (``augforge.recipe.changes``): each ``path: value`` set, the
    ``tune:`` section removed, and ``none`` for balance.strategy removing the key (no balancing)."""
    return [("tune", REMOVE)] + [(path, REMOVE if path == "balance.strategy" and value in ("none", None) else value)
                                 for path, value in params.items()]


def apply(data: dict, params: dict) -> dict:
    """The recipe mapping with the trial's parameters applied (``trial_changes``), not validated."""
    return apply_changes(data, trial_changes(params))


def _data_key(data: dict) -> str:
    """A hash of everything but ``train``: trials equal there share one build."""
    rest = {k: v for k, v in data.items() if k not in ("train", "tune", "output")}
    return xxhash.xxh3_64_hexdigest(json.dumps(rest, sort_keys=True, default=str).encode())


def _check_space(recipe, space: dict, held_out: dict) -> None:
    """Every corner of the space makes a valid recipe; an error names the space's key."""
    for name, (_, values) in space.items():
        for value in values:
            try:
                recipe.with_changes(trial_changes({**held_out, name: value}))
            except AugforgeError as exc:
                why = str(exc).removeprefix(f"{recipe.file}: ")
                raise RecipeError(f"{recipe.file}: tune.space.{name}: {value!r} makes no valid recipe ({why})") \
                    from None


def open_study(name: str, storage: str, seed: int, pruner, log):
    """The Optuna study ``name`` in ``storage`` (a maximising TPE seeded with ``seed``, ``pruner``), created or
    continued; trials a killed run left running are marked failed (and run again)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed run left these
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        log(f"trial {stale.number}: left running by an earlier process; marked failed")
    return study


def _pruner(recipe, pruner: str):
    import optuna

    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=recipe.train.epochs // 4)
    return optuna.pruners.HyperbandPruner()


def _objective(recipe, space: dict, held_out: dict, metric: str, out: Path, log):
    """The study's objective: one trial's recipe (its data in ``out/data/<data hash>``, shared by trials equal
    there) trained in ``out/trials/<number>``, reported to the pruner every epoch; its validation metric."""
    import optuna

    def objective(trial) -> float:
        params = {name: _suggest(trial, name, kind, values) for name, (kind, values) in space.items()}
        changes = trial_changes({**held_out, **params})
        data_dir = (out / "data" / _data_key(apply_changes(recipe.data, changes))).resolve()
        trial_recipe = recipe.with_changes(changes + [("output.dir", str(data_dir))])

        def report(record: dict) -> None:
            value = record.get("val", {}).get(metric)
            if value is None:
                raise AugforgeError(f"tune: metric {metric!r} needs a validation split (source.val_split)")
            trial.report(value, record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {record['epoch']}: {metric} {value:.4f}")

        run_dir = out / "trials" / str(trial.number)
        try:
            summary = train_recipe(trial_recipe, run_dir, log=lambda _: None, on_epoch=report,
                                   resume=run_dir.exists())
        except optuna.TrialPruned as pruned:
            log(f"trial {trial.number}: pruned at {pruned} {json.dumps(params)}")
            raise
        value = summary["val"][metric]  # the delivered model's (SWA / EMA), not the best epoch's
        log(f"trial {trial.number}: validation {metric} {value:.4f} {json.dumps(params)}")
        return value

    return objective


def tune_recipe(path: str | Path, trials: int, out: str | Path, *, storage: str | None = None,
                pruner: str = "median", confirm: int = 0, val_split: float = 0.2, log=print) -> dict:
    """Run (or continue) the study until it has ``trials`` finished trials; write best.yaml, trials.csv and
    study.html. ``confirm`` >= 2 retrains the original and the best recipe over that many paired seeds
    (``DIR/confirm``, reused on a rerun) and compares them on the test split. A recipe without
    ``source.val_split`` is tuned with ``val_split`` of its train split held out for validation; best.yaml
    and the confirmation keep the recipe's own split (the winner trains on every training row). Space keys
    are recipe paths, list items included (``augment.image[2].degrees``)."""
    from optuna.trial import TrialState

    path = Path(path)
    recipe = load_recipe(path)
    raw = recipe.data
    if "tune" not in raw:
        raise RecipeError(f"{path}: has no tune: section (the metric and the search space)")
    metric, space = parse_space(raw["tune"])
    if confirm and confirm < 2:
        raise OptionError("{confirm} {value}: a paired comparison needs at least 2 seeds", value=confirm)
    if not 0 < val_split < 1:
        raise OptionError("{val_split} {value}: expected a fraction between 0 and 1", value=val_split)
    if pruner not in PRUNERS:
        raise OptionError("{pruner} {value!r}: expected one of {choices}", value=pruner, choices=", ".join(PRUNERS))
    held_out = {} if recipe.source.val_split else {"source.val_split": val_split}
    if held_out:
        log(f"tune: {path.name} has no source.val_split; the trials hold out {val_split:g} of the train split "
            "for validation (best.yaml keeps the recipe's split)")
    _check_space(recipe, space, held_out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(recipe.data.get("name") or Path(recipe.file).stem, storage or f"sqlite:///{out / 'study.db'}",
                       recipe.seed, _pruner(recipe, pruner), log)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    objective = _objective(recipe, space, held_out, metric, out, log)
    while len(study.get_trials(deepcopy=False, states=done)) < trials:
        study.optimize(objective, n_trials=1, catch=())
    finished = study.get_trials(deepcopy=False, states=done)
    best = study.best_trial
    with atomic_open(out / "best.yaml") as fh:
        fh.write(yaml.safe_dump(best_recipe(raw, trial_changes(best.params), recipe, out), sort_keys=False))
    records = trial_records(study)
    _write_trials_csv(out / "trials.csv", records, metric, space)
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    summary = {"recipe": str(path), "trials": len(finished), "pruned": pruned,
               "best": {"number": best.number, "value": best.value, "params": best.params},
               "metric": metric, "best_yaml": str(out / "best.yaml"), "study": storage or str(out / "study.db"),
               "html": str(out / "study.html")}
    if confirm:
        summary["confirm"] = confirm_best(recipe, best.params, out / "confirm", confirm, metric, log)
    importances = param_importances(study, recipe.seed)
    summary["importances"] = importances
    write_html(summary, records, importances, out / "study.html", summary.get("confirm"))
    return summary


def _write_trials_csv(path: Path, records: list[dict], metric: str, space: dict) -> None:
    """trials.csv: one row per trial (number, state, value, each parameter)."""
    with atomic_open(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", metric, *space])
        for t in records:
            writer.writerow([t["number"], t["state"], "" if t["value"] is None else t["value"],
                             *(t["params"].get(name, "") for name in space)])


def best_recipe(raw: dict, changes: list, recipe, out: Path) -> dict:
    """best.yaml's mapping: the recipe with the best trial's ``changes`` (``trial_changes``), its source path made
    absolute (a recipe takes it relative to its own file), and its data in the recipe's output.dir when the
    changes leave the data settings as they are, else in ``out/best-data`` (the tuned data must not overwrite the
    original's)."""
    import os

    data = apply_changes(raw, changes)
    same_data = _data_key(data) == _data_key(apply(raw, {}))
    if Path(recipe.source.path).exists():
        data["source"]["path"] = os.path.abspath(recipe.source.path)
    if same_data and (raw.get("output") or {}).get("dir"):
        data["output"]["dir"] = os.path.abspath(recipe.output.dir)
    elif not same_data:
        data.setdefault("output", {})["dir"] = os.path.abspath(out / "best-data")
    return data


def trial_records(study) -> list[dict]:
    """Every trial as {number, state, value, params}; a pruned trial's value is the last one it reported."""
    records = []
    for t in study.get_trials(deepcopy=False):
        value = t.value
        if value is None and t.state.name == "PRUNED" and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        records.append({"number": t.number, "state": t.state.name, "value": value, "params": dict(t.params)})
    return records


def param_importances(study, seed: int) -> dict[str, float] | str:
    """fANOVA importances of the completed trials (seeded, so reruns agree), or why there are none."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {name for name in study.best_trial.params
              if len({repr(t.params.get(name)) for t in complete}) > 1}
    if len(complete) < 3 or not varied:
        return (f"{len(complete)} completed trials with {len(varied)} varied parameters; fANOVA needs 3 "
                "completed trials and a parameter that varies")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return {name: float(v) for name, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


def confirm_best(recipe, params: dict, out: Path, seeds: int, metric: str, log=print) -> dict:
    """Retrain the original recipe and the best trial's over ``seeds`` paired seeds and compare them on the
    test split with ``augforge ablate``'s statistics (BCa interval of the paired Δ, sign-flip p-value)."""
    arms = [Arm("baseline", "baseline"), Arm("tuned", "custom", trial_changes(params)[1:])]
    report = run_ablation(recipe, out, seeds=seeds, metric=metric, arms=arms, log=log)
    tuned = report["arms"][1]
    if tuned["comparison"]:
        c = tuned["comparison"]
        log(f"confirm over {seeds} seeds, test {report['metric']}: tuned {c['mean_delta']:+.4f} "
            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] against the original: {c['verdict']}")
    return report
