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

import copy
import csv
import io
import json
import math
from pathlib import Path

import xxhash
import yaml

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError
from augforge.recipe import RecipeError

KINDS = ("log_uniform", "uniform", "int", "choice")
METRICS = ("balanced_accuracy", "accuracy", "macro_f1")
PRUNERS = ("median", "hyperband")


def parse_space(tune, where: str = "tune") -> tuple[str, dict]:
    """(metric, {path: (kind, values)}) of a ``tune:`` mapping; errors name their place."""
    if not isinstance(tune, dict) or not isinstance(tune.get("space"), dict) or not tune["space"]:
        raise RecipeError(f"{where}: expected a mapping with a non-empty 'space' (recipe path: {{kind: values}})")
    unknown = sorted(set(tune) - {"metric", "space"})
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; keys: metric, space")
    metric = tune.get("metric", "balanced_accuracy")
    if metric not in METRICS:
        raise RecipeError(f"{where}.metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    space = {}
    for path, spec in tune["space"].items():
        place = f"{where}.space.{path}"
        if not isinstance(path, str) or not all(path.split(".")) or "." not in path:
            raise RecipeError(f"{place}: expected a recipe path like train.lr")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise RecipeError(f"{place}: expected one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {spec!r}")
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise RecipeError(f"{place}.choice: expected a non-empty list")
        else:
            ok = isinstance(values, list) and len(values) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            if not ok or values[0] >= values[1]:
                raise RecipeError(f"{place}.{kind}: expected [low, high] with low < high, got {values!r}")
            if kind == "log_uniform" and values[0] <= 0:
                raise RecipeError(f"{place}.log_uniform: the low end must be above 0, got {values[0]}")
            if kind == "int" and not all(float(v).is_integer() for v in values):
                raise RecipeError(f"{place}.int: expected whole numbers, got {values!r}")
        space[path] = (kind, values)
    return metric, space


def _suggest(trial, path: str, kind: str, values):
    if kind == "log_uniform":
        return trial.suggest_float(path, float(values[0]), float(values[1]), log=True)
    if kind == "uniform":
        return trial.suggest_float(path, float(values[0]), float(values[1]))
    if kind == "int":
        return trial.suggest_int(path, int(values[0]), int(values[1]))
    return trial.suggest_categorical(path, values)


def apply(data: dict, params: dict) -> dict:
    """The recipe mapping with each ``path: value`` set (``none`` for balance.strategy removes it), without
    the ``tune:`` section."""
    out = copy.deepcopy(data)
    out.pop("tune", None)
    for path, value in params.items():
        *parents, key = path.split(".")
        node = out
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise RecipeError(f"tune.space.{path}: {part} is not a mapping in the recipe")
        if path == "balance.strategy" and value in ("none", None):
            node.pop(key, None)
        else:
            node[key] = value
    return out


def _data_key(data: dict) -> str:
    """A hash of everything but ``train``: trials equal there share one build."""
    rest = {k: v for k, v in data.items() if k not in ("train", "tune", "output")}
    return xxhash.xxh3_64_hexdigest(json.dumps(rest, sort_keys=True, default=str).encode())


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def tune_recipe(path: str | Path, trials: int, out: str | Path, *, storage: str | None = None,
                pruner: str = "median", log=print) -> dict:
    """Run (or continue) the study until it has ``trials`` finished trials; write best.yaml and trials.csv."""
    import optuna
    from optuna.trial import TrialState

    from augforge.recipe import load_recipe, parse_recipe
    from augforge.train.run import train_recipe

    path = Path(path)
    recipe = load_recipe(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "tune" not in raw:
        raise RecipeError(f"{path}: has no tune: section (the metric and the search space)")
    metric, space = parse_space(raw["tune"])
    if pruner not in PRUNERS:
        raise AugforgeError(f"--pruner {pruner!r}: expected one of {', '.join(PRUNERS)}")
    for name, (kind, values) in space.items():  # every corner of the space must make a valid recipe
        for value in values:
            parse_recipe(apply(raw, {name: value}), str(path), path.parent)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=recipe.data.get("name") or path.stem, storage=storage or f"sqlite:///{out / 'study.db'}",
        direction="maximize", load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=recipe.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if pruner == "median"
        else optuna.pruners.HyperbandPruner())
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed run left these
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        log(f"trial {stale.number}: left running by an earlier process; marked failed")
    done = (TrialState.COMPLETE, TrialState.PRUNED)

    def objective(trial) -> float:
        params = {name: _suggest(trial, name, kind, values) for name, (kind, values) in space.items()}
        data = apply(raw, params)
        data.setdefault("output", {})["dir"] = str((out / "data" / _data_key(data)).resolve())
        trial_recipe = parse_recipe(data, str(path), path.parent)

        def report(record: dict) -> None:
            value = record.get("val", {}).get(metric)
            if value is None:
                raise AugforgeError(f"tune: metric {metric!r} needs a validation split (source.val_split)")
            trial.report(value, record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {record['epoch']}: {metric} {value:.4f}")

        run_dir = out / "trials" / str(trial.number)
        summary = train_recipe(trial_recipe, run_dir, log=lambda _: None, on_epoch=report,
                               resume=run_dir.exists())
        best_val = max(json.loads(line)["val"][metric]
                       for line in (run_dir / "metrics.jsonl").read_text().splitlines())
        log(f"trial {trial.number}: {metric} {best_val:.4f} (test {summary.get(metric, float('nan')):.4f}) "
            f"{json.dumps(params)}")
        return best_val

    while len(study.get_trials(deepcopy=False, states=done)) < trials:
        study.optimize(objective, n_trials=1, catch=())
    finished = study.get_trials(deepcopy=False, states=done)
    best = study.best_trial
    _write_text(out / "best.yaml", yaml.safe_dump(apply(raw, best.params), sort_keys=False))
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["number", "state", metric, *space])
    for t in study.get_trials(deepcopy=False):
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                         *(t.params.get(name, "") for name in space)])
    _write_text(out / "trials.csv", table.getvalue())
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    return {"trials": len(finished), "pruned": pruned, "best": {"number": best.number, "value": best.value,
                                                                 "params": best.params},
            "metric": metric, "best_yaml": str(out / "best.yaml"), "study": storage or str(out / "study.db")}
