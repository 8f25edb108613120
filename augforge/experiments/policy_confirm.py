"""The confirmation of ``augforge search-policy``: the winner, TrivialAugment, no augmentation and the recipe as
written over paired seeds at equal compute on the recipe's own split (``augforge ablate``'s machinery), with
intervals and Holm-adjusted verdicts, and how far the search's proxy ranking agreed.

Each policy's score is its mean test metric over the paired seeds with a 95% BCa interval (small-sample
expanded, ``augforge.experiments.compare``). The comparisons are TrivialAugment against none, the winner and the
recipe against none and against TrivialAugment; each gets the interval of its mean paired difference and a
sign-flip p-value, Holm-adjusted over all of them. A verdict (``better`` / ``worse``) needs both the interval to
exclude 0 and the adjusted p below 0.05; else ``no detectable difference`` (``too few seeds`` below 5 seeds).
Exact sign-flip p-values are at least 2/2^n on n seeds, so with m comparisons a verdict needs
m·2/2^n < 0.05: ``seeds_for_a_verdict`` says how many seeds that takes, and the command says so before it runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from augforge.experiments.ablate import run_ablation
from augforge.experiments.arms import Arm
from augforge.experiments.compare import MIN_SEEDS, adjust, bca_interval, compare
from augforge.experiments.policy_space import Candidate, policy_candidate

ALPHA = 0.05
AS_WRITTEN = "as-written"


@dataclass(frozen=True)
class ConfirmOptions:
    """``seeds`` paired seeds per policy, ``metric`` on the test split, ``jobs`` parallel runs, ``log``."""

    seeds: int = 8
    metric: str = "balanced_accuracy"
    jobs: int = 1
    log: object = print


def plan_arms(recipe, chosen: Candidate, also: tuple = ()) -> list[tuple[str, Arm]]:
    """(policy, ablate arm) pairs: no augmentation (the baseline arm), TrivialAugment, the search's winner, the
    policies of ``also`` (canonical policy strings) and, when the recipe has image ops, the recipe as written
    (offline copies and all)."""
    none, trivial = policy_candidate(recipe, "none"), policy_candidate(recipe, "trivial")
    arms = [("none", Arm("baseline", "baseline", none.changes)), ("trivial", Arm("trivial", "custom", trivial.changes))]
    keys = {none.key, trivial.key}
    for candidate in [chosen, *(policy_candidate(recipe, text) for text in also)]:
        if candidate.key not in keys:
            keys.add(candidate.key)
            arms.append((candidate.name, Arm(candidate.name, "custom", candidate.changes)))
    if recipe.augment.image:
        arms.append((AS_WRITTEN, Arm(AS_WRITTEN, "custom", [])))
    return arms


def comparison_pairs(policies: list[str]) -> list[tuple[str, str]]:
    """(policy, reference) pairs compared: trivial against none, every other policy against none and trivial."""
    pairs = [("trivial", "none")]
    for name in policies:
        if name not in ("none", "trivial"):
            pairs += [(name, "none"), (name, "trivial")]
    return pairs


def smallest_p(seeds: int, comparisons: int) -> float:
    """The smallest Holm-adjusted sign-flip p-value ``seeds`` paired seeds can give among ``comparisons``."""
    return min(1.0, comparisons * 2.0 / 2 ** seeds)


def seeds_for_a_verdict(comparisons: int) -> int:
    """The fewest seeds whose smallest Holm-adjusted p-value is below ``ALPHA`` (and at least ``MIN_SEEDS``)."""
    return max(MIN_SEEDS, math.ceil(math.log2(comparisons * 2.0 / ALPHA) + 1e-9))


def holm_verdict(comparison) -> str:
    """``better`` / ``worse`` when the interval excludes 0 and the Holm-adjusted p is below ``ALPHA``, else ``no
    detectable difference`` (``too few seeds`` under ``MIN_SEEDS``)."""
    if comparison.verdict == "too few seeds":
        return comparison.verdict
    if comparison.verdict in ("helps", "hurts") and comparison.p_holm < ALPHA:
        return "better" if comparison.verdict == "helps" else "worse"
    return "no detectable difference"


def _scores(report: dict, arms: list[tuple[str, Arm]], metric: str) -> tuple[dict, list[int]]:
    """Per policy its test metric per seed, on the seeds every policy finished."""
    by_arm = {entry["name"]: {run["seed"]: run[metric] for run in entry["runs"]} for entry in report["arms"]}
    per_policy = {policy: by_arm.get(arm.name, {}) for policy, arm in arms}
    seeds = sorted(set.intersection(*(set(v) for v in per_policy.values())))
    return {policy: [values[s] for s in seeds] for policy, values in per_policy.items()}, seeds


def proxy_scores(candidates: list[dict], policies: list[str]) -> tuple[dict, int | None]:
    """Each policy's held-out score at the last epoch every one of them reached in the search (the pruner stops
    candidates at different epochs: they are compared where all were measured), and that epoch (1-based)."""
    curves = {}
    for record in candidates:
        if record["policy"] in policies and record.get("curve") and record["policy"] not in curves:
            curves[record["policy"]] = record["curve"]
    if not curves:
        return {}, None
    epoch = min(len(curve) for curve in curves.values())
    return {name: curve[epoch - 1] for name, curve in curves.items()}, epoch


def agreement(proxy: dict, scores: dict, epoch: int | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """How far the proxy's order of the confirmed policies it scored (at ``epoch``) agrees with their confirmed
    order: Kendall's tau of the two, and the share of bootstrap resamples of the seeds whose confirmed order
    equals the proxy's."""
    names = [name for name in scores if proxy.get(name) is not None]
    if len(names) < 2 or not all(scores[n] for n in names):
        return {"policies": names, "tau": None, "share_same_order": None,
                "note": "fewer than 2 confirmed policies have a proxy score: not measured"}
    from scipy.stats import kendalltau

    means = np.array([np.mean(scores[n]) for n in names])
    table = np.array([scores[n] for n in names])
    tau = kendalltau([proxy[n] for n in names], means).statistic
    proxy_order = np.argsort([-proxy[n] for n in names], kind="stable")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, table.shape[1], size=(resamples, table.shape[1]))
    same = np.mean([np.array_equal(np.argsort(-table[:, p].mean(axis=1), kind="stable"), proxy_order) for p in picks])
    tau = None if math.isnan(tau) else float(tau)
    at = f" after {epoch} epoch{'s' if epoch != 1 else ''}" if epoch else ""
    note = (f"the proxy's order of {len(names)} policies{at} matched the confirmed order in {same:.0%} of seed "
            "resamples")
    if tau is not None and tau <= 0:
        note += (f" (Kendall's tau {tau:+.2f}): on this data the held-out scores{at} did not predict the full "
                 "training's; read the search's ranking with that in mind")
    return {"policies": names, "proxy": [proxy[n] for n in names], "confirmed": means.tolist(), "tau": tau,
            "share_same_order": float(same), "note": note}


def _delta(c) -> str:
    return f"{c.mean_delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"


def conclusion(winner: str, verdicts: dict, comparisons: dict, seeds: int, means: dict) -> str:
    """What the confirmation says, in sentences joined by '; ': the winner against TrivialAugment; TrivialAugment
    against no augmentation when it hurts; any other policy that beats TrivialAugment; the highest mean."""
    trivial_hurts = verdicts.get(("trivial", "none")) == "worse"
    others_better = [name for (name, ref), v in verdicts.items() if ref == "trivial" and v == "better"
                     and name != winner]
    parts = []
    if winner in ("none", "trivial"):
        chose = "no augmentation" if winner == "none" else "TrivialAugment itself"
        parts.append(f"the search chose {chose}; trivial against none: {verdicts.get(('trivial', 'none'), '-')}")
    elif (winner, "trivial") not in comparisons:
        parts.append(f"{winner} was not compared with TrivialAugment (fewer than 2 paired seeds finished)")
    else:
        c, verdict = comparisons[(winner, "trivial")], verdicts[(winner, "trivial")]
        if verdict == "better":
            parts.append(f"{winner} beats TrivialAugment by {_delta(c)} (Holm-adjusted)")
        elif verdict == "worse":
            parts.append(f"{winner} is worse than TrivialAugment by {_delta(c)}")
        elif verdict == "too few seeds":
            parts.append(f"{winner} against TrivialAugment: {_delta(c)} over {seeds} seeds, too few for a verdict "
                         f"(--confirm-seeds {seeds_for_a_verdict(len(comparisons))} or more)")
        else:
            as_good = "" if trivial_hurts or others_better else \
                ": TrivialAugment is as good here and needs no search"
            parts.append(f"{winner} did not beat TrivialAugment detectably ({_delta(c)}; these seeds could detect "
                         f"{c.detectable:.4f}){as_good}")
    if trivial_hurts and winner != "trivial":
        parts.append(f"TrivialAugment hurts here: {_delta(comparisons[('trivial', 'none')])} against no "
                     "augmentation")
    for name in others_better:
        parts.append(f"{name} beats TrivialAugment by {_delta(comparisons[(name, 'trivial')])}")
    if means:
        best = max(means, key=lambda name: means[name])
        parts.append(f"highest confirmed mean: {best} ({means[best]:.4f})")
    return "; ".join(parts)


def confirm_policies(recipe, arms: list[tuple[str, Arm]], out, search: dict, o: ConfirmOptions) -> dict:
    """Train every (policy, arm) over ``o.seeds`` paired seeds (``DIR/confirm``, reused on a rerun), compare them
    on the test split, and return ``confirm`` (cost and runs), ``confirmed`` (per policy: mean, interval,
    verdict), ``comparisons``, ``agreement`` and ``conclusion``."""
    policies = [policy for policy, _ in arms]
    pairs = comparison_pairs(policies)
    runs = len(arms) * o.seeds
    per_run = search["run_overhead_s"] + search["seconds_per_epoch"] * recipe.train.epochs
    estimate = per_run * runs / max(1, o.jobs)
    o.log(f"confirm: {len(arms)} policies ({', '.join(policies)}) x {o.seeds} seeds = {runs} runs of "
          f"{recipe.train.epochs} epochs on the recipe's split, about {estimate / 60:.1f} min (from the search's "
          f"runs: {search['run_overhead_s']:.1f} s to start, {search['seconds_per_epoch']:.1f} s per epoch, with "
          "the held-out rows back in training: a little more)")
    floor = smallest_p(o.seeds, len(pairs))
    if floor >= ALPHA:
        o.log(f"confirm: with {o.seeds} seeds the smallest Holm-adjusted p over {len(pairs)} comparisons is "
              f"{floor:.3f}: no verdict can pass; --confirm-seeds {seeds_for_a_verdict(len(pairs))} or more can")
    begun = time.perf_counter()
    report = run_ablation(recipe, out, seeds=o.seeds, metric=o.metric, arms=[arm for _, arm in arms], jobs=o.jobs,
                          equal_compute=True, log=o.log)
    scores, seeds = _scores(report, arms, o.metric)
    comparisons = {pair: compare(scores[pair[0]], scores[pair[1]], seed=0) for pair in pairs if len(seeds) >= 2}
    adjust(list(comparisons.values()))
    verdicts = {pair: holm_verdict(c) for pair, c in comparisons.items()}
    against = {"none": None, "trivial": "none"}
    confirmed = []
    for policy in policies:
        values = scores[policy]
        low, high = bca_interval(values, expand=True) if len(values) >= 2 else (None, None)
        reference = against.get(policy, "trivial")
        c = comparisons.get((policy, reference))
        confirmed.append({"policy": policy, "mean": float(np.mean(values)) if values else None, "ci_low": low,
                          "ci_high": high, "seeds": len(values), "against": reference,
                          "verdict": "reference" if reference is None else verdicts.get((policy, reference), "-"),
                          "delta": None if c is None else c.mean_delta,
                          "delta_ci": None if c is None else [c.ci_low, c.ci_high],
                          "p_holm": None if c is None else c.p_holm})
    searched = [p for p in policies if p != AS_WRITTEN]  # the recipe as written was not a search candidate
    proxy, epoch = proxy_scores(search["candidates"], searched)
    return {
        "confirm": {"seeds": o.seeds, "paired_seeds": seeds, "runs": report["runs_finished"], "seconds":
                    time.perf_counter() - begun, "estimate_seconds": estimate, "smallest_p": floor,
                    "stopped_by_budget": report["stopped_by_budget"], "ablation": str(out / "ablation.json")},
        "confirmed": confirmed,
        "comparisons": [{"policy": a, "against": b, **c.to_dict(), "verdict": verdicts[(a, b)]}
                        for (a, b), c in comparisons.items()],
        "agreement": {**agreement(proxy, {p: scores[p] for p in searched}, epoch), "epoch": epoch},
        "conclusion": conclusion(search["winner"], verdicts, comparisons, len(seeds),
                                 {e["policy"]: e["mean"] for e in confirmed if e["mean"] is not None}),
    }
