"""`augforge search-policy RECIPE --budget-minutes M --out DIR`: which augmentation policy, at which strength, for
this data and this budget, chosen on held-out training rows and confirmed over paired seeds.

1. **Search** (``DIR/study.db``, resumable). Candidates (``augforge.experiments.policy_space``): no augmentation,
   TrivialAugment, the recipe's own ops as written, AutoAugment's ImageNet policy and a RandAugment (N, M)
   grid first, then Optuna's TPE over RandAugment's (N, M) and the recipe's ops (each op's p and strength).
   Each trial trains up to ``--proxy-epochs`` epochs (the recipe's) with the recipe's seed (the same for every
   candidate) and is scored on ``--val-split`` of the train split (the recipe's own validation split where it
   has one; never the test split); a successive-halving pruner stops the trials that fall behind after 2, 4, 10,
   ... epochs. No new trial starts once ``--budget-minutes`` of search time are spent (summed over reruns). The
   winner is the best proxy score; the binomial standard error of that score says which candidates it cannot
   be told from.
2. **Confirm** (``DIR/confirm``, ``augforge ablate``'s machinery: ``augforge.experiments.policy_confirm``): the
   winner, TrivialAugment, no augmentation and the recipe as written, each at the recipe's full epochs on its
   own split, over ``--confirm-seeds`` paired seeds at equal compute, scored on the test split.
3. **Write** ``DIR/search.json``, ``DIR/search.html`` and ``DIR/best.yaml`` (the winner's recipe).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from augforge.atomic import atomic_open, write_json
from augforge.augment.policy import parse_policy
from augforge.checks import RecipeError, options_of
from augforge.datasets.manifest import read_manifest
from augforge.errors import AugforgeError, OptionError
from augforge.experiments.ablate import epoch_changes
from augforge.experiments.compare import noise_floor
from augforge.experiments.policy_confirm import ConfirmOptions, confirm_policies, plan_arms
from augforge.experiments.policy_report import write_html
from augforge.experiments.policy_space import FIXED, first_trials, policy_candidate, suggest
from augforge.experiments.tune import best_recipe, open_study, trial_records
from augforge.recipe import load_recipe
from augforge.recipe.source import payload_of
from augforge.recipe.train import METRICS
from augforge.train.data import ensure_dataset
from augforge.recipe.changes import REMOVE
from augforge.train.run import train_recipe

#: the successive-halving pruner's rungs: after 2, 4, 10, ... epochs (its steps 1, 3, 9 count epochs from 0); a
#: third of the trials go on at each
REDUCTION = 3
#: the search ends when the sampler proposes this many already-scored candidates in a row
MAX_REPEATS = 20


@dataclass(frozen=True)
class SearchOptions:
    """How ``search_policy`` runs: ``budget_minutes`` of search; at most ``max_trials`` trained trials; each
    ``proxy_epochs`` long at most (None: the recipe's own; the pruner stops most trials far earlier);
    ``val_split`` held out of train where the recipe has no validation split; ``metric``; ``confirm_seeds`` (0:
    no confirmation); ``also``: more policy strings to confirm (e.g. the best RandAugment point when another
    candidate won); ``jobs`` parallel confirm runs; ``storage`` (an Optuna URL; default ``DIR/study.db``);
    ``log``."""

    budget_minutes: float = 10.0
    max_trials: int = 60
    proxy_epochs: int | None = None
    val_split: float = 0.2
    metric: str = "balanced_accuracy"
    confirm_seeds: int = 8
    also: tuple = ()
    jobs: int = 1
    storage: str | None = None
    log: object = print


def _check(recipe, o: SearchOptions) -> None:
    if payload_of(recipe.source) != "image":
        raise RecipeError(f"{recipe.file}: search-policy searches image augmentation policies; this recipe's "
                          f"source gives {payload_of(recipe.source)} rows")
    if o.metric not in METRICS:
        raise OptionError("{metric} {value}: expected one of {choices}", value=o.metric, choices=", ".join(METRICS))
    if not o.budget_minutes > 0:
        raise OptionError("{budget_minutes} {value}: expected minutes above 0", value=o.budget_minutes)
    if not 0 < o.val_split < 1:
        raise OptionError("{val_split} {value}: expected a fraction between 0 and 1", value=o.val_split)
    if o.confirm_seeds == 1 or o.confirm_seeds < 0:
        raise OptionError("{confirm_seeds} {value}: a paired comparison needs at least 2 seeds (0: no "
                          "confirmation)", value=o.confirm_seeds)
    for text in o.also:
        try:
            parse_policy(text)
        except AugforgeError as exc:
            raise OptionError("{also} {why}", why=str(exc)) from None
    if o.proxy_epochs is not None and not 1 <= o.proxy_epochs <= recipe.train.epochs:
        raise OptionError("{proxy_epochs} {value}: expected 1 to the recipe's train.epochs ({epochs})",
                          value=o.proxy_epochs, epochs=recipe.train.epochs)


def _proxy_changes(recipe, o: SearchOptions) -> list:
    """The changes every search trial shares: the held-out validation rows and the proxy's epochs."""
    changes = [] if recipe.source.val_split else [("source.val_split", o.val_split)]
    epochs = o.proxy_epochs or recipe.train.epochs
    return changes + epoch_changes(recipe.train, epochs) + [("train.early_stopping_patience", REMOVE)]


class _Search:
    """The search phase: the study, its objective and its budget."""

    def __init__(self, recipe, out: Path, o: SearchOptions) -> None:
        import optuna

        self.recipe, self.out, self.o, self.log = recipe, out, o, o.log
        self.shared = _proxy_changes(recipe, o)
        self.epochs = dict(self.shared)["train.epochs"]
        storage = o.storage or f"sqlite:///{out / 'study.db'}"
        self.study = open_study("search-policy", storage, recipe.seed,
                                optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION),
                                self.log)
        self.storage = storage
        base = recipe.with_changes(self.shared + policy_candidate(recipe, "none").changes)
        self.data = out / "data"
        ensure_dataset(base, self.data, False, 2, lambda _: None)
        self.val_rows = sum(read_manifest(self.data)["counts"].get("val", {}).values())

    def spent(self) -> float:
        """Search seconds spent so far, over every run of the command."""
        return float(self.study.user_attrs.get("search_s", 0.0))

    def _train(self, trial, candidate) -> float:
        """Train ``candidate`` for the proxy's epochs as ``trial``, reporting every epoch to the pruner; its
        validation score (a candidate already scored is not trained again: its score)."""
        import optuna

        trial.set_user_attr("policy", candidate.name)
        trial.set_user_attr("key", candidate.key)
        for done in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if done.user_attrs.get("key") == candidate.key:
                trial.set_user_attr("same_as", done.number)
                return float(done.value)
        metric = self.o.metric
        trial_recipe = self.recipe.with_changes(self.shared + candidate.changes)

        def report(record: dict) -> None:
            value = record.get("val", {}).get(metric)
            trial.report(value, record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {record['epoch'] + 1}: {metric} {value:.4f}")

        run_dir = self.out / "trials" / str(trial.number)
        begun = time.perf_counter()
        try:
            summary = train_recipe(trial_recipe, run_dir, data=str(self.data), log=lambda _: None, on_epoch=report)
        except optuna.TrialPruned as pruned:
            self.log(f"trial {trial.number} {candidate.name}: pruned at {pruned}")
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - begun)
        value = float(summary["val"][metric])
        self.log(f"trial {trial.number} {candidate.name}: {metric} {value:.4f} on {self.val_rows} held-out rows "
                 f"({time.perf_counter() - begun:.0f} s)")
        return value

    def objective(self, trial) -> float:
        """The sampler's objective: the candidate the trial draws, trained and scored."""
        return self._train(trial, suggest(trial, self.recipe))

    def _fixed(self, name: str) -> None:
        """One ``FIXED`` candidate as a trial of its own (ask and tell: outside the sampler's space)."""
        import optuna
        from optuna.trial import TrialState

        trial = self.study.ask()
        trial.set_user_attr("fixed", name)
        try:
            value = self._train(trial, policy_candidate(self.recipe, name))
        except optuna.TrialPruned:
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        self.study.tell(trial, value)

    def _timed(self, step) -> None:
        begun = time.perf_counter()
        try:
            step()
        finally:
            self.study.set_user_attr("search_s", self.spent() + time.perf_counter() - begun)

    def _requeue_failed(self) -> None:
        """A sampler trial a killed process left behind (marked failed) is drawn again with the same parameters,
        unless a trial with them is waiting or finished."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        alive = [t.params for t in trials if t.state != TrialState.FAIL]
        waiting = [t.system_attrs.get("fixed_params") for t in trials if t.state == TrialState.WAITING]
        for t in trials:
            if t.state == TrialState.FAIL and t.params and t.params not in alive and t.params not in waiting:
                self.study.enqueue_trial(t.params)
                waiting.append(t.params)

    def run(self) -> None:
        """The fixed candidates, then the sampler's trials, until the budget or ``max_trials`` trained trials are
        spent (or the sampler only proposes candidates already scored); a rerun continues the same study."""
        from optuna.trial import TrialState

        budget = self.o.budget_minutes * 60.0
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        for name in FIXED:
            done = any(t.user_attrs.get("fixed") == name for t in self.study.get_trials(deepcopy=False,
                                                                                         states=finished))
            if not done and self.spent() < budget:
                self._timed(lambda: self._fixed(name))
        if not self.study.user_attrs.get("enqueued"):  # once per study: a rerun continues where it stopped
            for params in first_trials(self.recipe):
                self.study.enqueue_trial(params, skip_if_exists=True)
            self.study.set_user_attr("enqueued", True)
        self._requeue_failed()
        repeats = 0
        while self.spent() < budget and repeats < MAX_REPEATS:
            trained = [t for t in self.study.get_trials(deepcopy=False, states=finished)
                       if t.user_attrs.get("same_as") is None]
            if len(trained) >= self.o.max_trials:
                break
            self._timed(lambda: self.study.optimize(self.objective, n_trials=1, catch=()))
            last = self.study.get_trials(deepcopy=False)[-1]
            repeats = repeats + 1 if last.user_attrs.get("same_as") is not None else 0
        if repeats >= MAX_REPEATS:
            self.log(f"search: the sampler proposed {MAX_REPEATS} candidates in a row that were already scored; "
                     "the space is covered")
        elif self.spent() >= budget:
            self.log(f"search: the budget ({self.o.budget_minutes:g} min) is spent; rerun with a larger "
                     "--budget-minutes to continue the study")

    def summary(self) -> dict:
        """The candidates with their proxy scores, the winner and the candidates it cannot be told from."""
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        records = []
        for record in trial_records(self.study):  # a pruned trial's value: the last one it reported
            if record["state"] not in ("COMPLETE", "PRUNED"):
                continue
            t = trials[record["number"]]
            curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
            records.append({**record, "policy": t.user_attrs.get("policy"), "epochs": len(curve) or None,
                            "curve": curve, "same_as": t.user_attrs.get("same_as"),
                            "seconds": t.user_attrs.get("seconds")})
        complete = [r for r in records if r["state"] == "COMPLETE" and r["same_as"] is None]
        if not complete:
            raise AugforgeError("search-policy: no trial finished within the budget; raise --budget-minutes")
        best = max(complete, key=lambda r: (r["value"], -r["number"]))
        se = noise_floor(best["value"], self.val_rows) if 0 <= best["value"] <= 1 else None
        tied = [r["policy"] for r in complete if r is not best and se is not None and r["value"] >= best["value"]
                - 2 * se]
        overhead, per_epoch = run_cost([(r["epochs"], r["seconds"]) for r in records if r["seconds"] and r["epochs"]])
        return {"trials": len(records), "pruned": sum(r["state"] == "PRUNED" for r in records),
                "repeats": sum(r["same_as"] is not None for r in records), "seconds": self.spent(),
                "budget_minutes": self.o.budget_minutes, "proxy_epochs": self.epochs, "val_rows": self.val_rows,
                "winner": best["policy"], "winner_trial": best["number"], "winner_value": best["value"],
                "standard_error": se, "tied_with_winner": tied, "run_overhead_s": overhead,
                "seconds_per_epoch": per_epoch,
                "study": self.storage, "candidates": records}


def run_cost(runs: list[tuple[int, float]]) -> tuple[float, float]:
    """(start-up seconds, seconds per epoch) of a training run, fitted by least squares to (epochs, seconds) of
    the search's runs; with one epoch count only, everything is put on the epochs."""
    import numpy as np

    if not runs:
        return 0.0, 0.0
    epochs, seconds = np.array(runs, dtype=np.float64).T
    if len(set(epochs.tolist())) < 2:
        return 0.0, float(seconds.sum() / epochs.sum())
    slope, intercept = np.polyfit(epochs, seconds, 1)
    if slope <= 0:
        return 0.0, float(seconds.sum() / epochs.sum())
    return max(0.0, float(intercept)), float(slope)


def search_policy(path: str | Path, out: str | Path, **options) -> dict:
    """Search (or continue searching) a policy for the recipe at ``path`` under a time budget, confirm the
    winner against TrivialAugment and no augmentation over paired seeds, and write ``search.json``,
    ``search.html`` and ``best.yaml`` into ``out``; the result dict (as written). ``options``: ``SearchOptions``."""
    o = options_of(SearchOptions, options, "search_policy")
    recipe = load_recipe(path)
    _check(recipe, o)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    search = _Search(recipe, out, o)
    o.log(f"search: up to {o.budget_minutes:g} min ({search.spent() / 60:.1f} spent), {search.epochs} epochs per "
          f"trial, scored on {search.val_rows} held-out training rows ({o.metric})")
    search.run()
    result = {"recipe": str(path), "metric": o.metric, "search": search.summary()}
    winner = result["search"]["winner"]
    best_trial = search.study.get_trials(deepcopy=False)[result["search"]["winner_trial"]]
    chosen = suggest(_Replay(best_trial), recipe)
    o.log(f"search: winner {winner} ({o.metric} {result['search']['winner_value']:.4f} on the held-out rows)")
    arms = plan_arms(recipe, chosen, tuple(str(parse_policy(text)) for text in o.also))
    if o.confirm_seeds:
        result.update(confirm_policies(recipe, arms, out / "confirm", result["search"],
                                       ConfirmOptions(seeds=o.confirm_seeds, metric=o.metric, jobs=o.jobs, log=o.log)))
    with atomic_open(out / "best.yaml") as fh:
        fh.write(yaml.safe_dump(best_recipe(recipe.data, chosen.changes, recipe, out), sort_keys=False))
    result["best_yaml"] = str(out / "best.yaml")
    result["html"] = str(out / "search.html")
    write_json(out / "search.json", result)
    write_html(result, out / "search.html")
    return result


class _Replay:
    """A finished trial replayed through ``suggest`` (which asks a trial for each parameter)."""

    def __init__(self, trial) -> None:
        self.params, self.number, self.user_attrs = trial.params, trial.number, trial.user_attrs

    def suggest_categorical(self, name, choices):
        """The finished trial's value."""
        return self.params[name]

    def suggest_int(self, name, low, high):
        """The finished trial's value."""
        return self.params[name]

    def suggest_float(self, name, low, high, log=False):
        """The finished trial's value."""
        return self.params[name]
