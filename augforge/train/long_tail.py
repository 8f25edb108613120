"""Long-tail learning around the loop: which class counts a run's priors come from, the criterion they make
(``train.loss``, ``train.class_weights``, ``train.rebalance``), post-hoc logit adjustment with its tau picked
on the val split, and the many / medium / few-shot split of the per-class metrics.

The counts: ``train.priors: train`` takes the built train split's rows per class (after the recipe's balance
step and its copies); ``source`` takes the train split as the source had it, before balancing (the
manifest's ``build.balance.before``). The shot split always uses the source's train rows: a class is
few-shot by the real rows it has, not by the copies a balance step made of them.
"""

from __future__ import annotations

import numpy as np
import torch

from augforge.errors import AugforgeError
from augforge.recipe.long_tail import ShotSpec
from augforge.recipe.train import TrainConfig
from augforge.train.losses import Criterion, balanced_class_weights, effective_number_weights, log_priors
from augforge.train.metrics import classification_metrics

#: the taus ``train.posthoc_tau: auto`` tries on the val split (Menon et al. report tau = 1 as the default)
TAU_GRID = tuple(round(0.25 * i, 2) for i in range(13))  # 0.0 .. 3.0
#: train counts whose largest class is at most this many times the smallest count as balanced
BALANCED_RATIO = 1.05


def balance_record(manifest: dict) -> dict:
    """What a dataset's balance step recorded (strategy, counts before and after): a build's
    ``build.balance``, or ``balance`` of a dataset ``augforge balance`` wrote; {} without one."""
    return ((manifest.get("build") or {}).get("balance") or manifest.get("balance") or {})


def source_counts(manifest: dict) -> list[int]:
    """The train split's rows per class before the recipe's balance step (and its copies), in class order."""
    names = manifest["class_names"]
    before = balance_record(manifest).get("before")
    counts = before if before else manifest["counts"].get("train", {})
    return [int(counts.get(name, 0)) for name in names]


def train_counts(manifest: dict) -> list[int]:
    """The built train split's rows per class, in class order."""
    counts = manifest["counts"].get("train", {})
    return [int(counts.get(name, 0)) for name in manifest["class_names"]]


def prior_counts(config: TrainConfig, manifest: dict) -> tuple[list[int], str]:
    """(counts, what they are) of ``train.priors``. Options that use the priors on a train split the build has
    balanced are refused (the priors would be uniform: the option would do nothing, or correct twice) unless
    the recipe says ``priors: source``."""
    if config.priors == "source":
        return source_counts(manifest), "the source's train rows before balancing (train.priors: source)"
    counts = train_counts(manifest)
    users = [key for key, on in (("loss", config.loss.uses_priors), ("rebalance", config.rebalance is not None),
                                 ("posthoc_tau", config.posthoc_tau is not None)) if on]
    present = [n for n in counts if n > 0]
    if users and present and max(present) <= BALANCED_RATIO * min(present):
        strategy = balance_record(manifest).get("strategy")
        why = f" (balance: {strategy} made it so)" if strategy and strategy != "none" else ""
        raise AugforgeError(f"train.{users[0]} needs class priors, but the train split is balanced{why} "
                            f"({min(present)} to {max(present)} rows per class): its priors are uniform, and on "
                            "re-balanced data the imbalance would be corrected twice; drop the balance step, or set "
                            "train.priors: source to use the source's counts")
    return counts, "the built train split's rows (train.priors: train)"


def uses_long_tail(config: TrainConfig) -> bool:
    """Whether any option of the run needs the class priors (a long-tail loss, DRW/DRS, post-hoc adjustment)."""
    return config.loss.uses_priors or config.rebalance is not None or config.posthoc_tau is not None


def run_counts(config: TrainConfig, manifest: dict) -> dict:
    """What a checkpoint records of the class counts: ``priors`` (``prior_counts``), ``source`` (the shot
    split's), and ``what`` the priors are."""
    priors, what = prior_counts(config, manifest)
    return {"priors": priors, "source": source_counts(manifest), "what": what}


def make_criterion(config: TrainConfig, counts) -> Criterion:
    """The run's loss: ``train.loss`` with the priors of ``counts``, fixed balanced class weights
    (``train.class_weights``) or DRW's effective-number weights from ``train.rebalance.start``."""
    weights = balanced_class_weights(counts) if config.class_weights == "balanced" else None
    rebalance = config.rebalance
    deferred = (rebalance.start, effective_number_weights(counts, rebalance.beta)) \
        if rebalance is not None and rebalance.mode == "drw" else None
    return Criterion(config.loss, config.label_smoothing, counts=counts, weights=weights, deferred=deferred,
                     binary=config.binary)


def posthoc_offset(counts, tau: float) -> torch.Tensor:
    """What post-hoc adjustment subtracts from the logits: ``tau * log prior`` per class."""
    return tau * log_priors(counts)


def pick_tau(logits: torch.Tensor, true: np.ndarray, counts, class_names: list[str], metric: str) -> dict:
    """The tau of ``TAU_GRID`` whose adjusted val predictions score best on ``metric`` (the smaller tau on a
    tie); {"tau": best, "val": {tau: score}}."""
    scores = {}
    for tau in TAU_GRID:
        pred = (logits - posthoc_offset(counts, tau)).argmax(-1).numpy()
        scores[tau] = classification_metrics(true, pred, class_names)[metric]
    best = max(TAU_GRID, key=lambda t: (scores[t], -t))
    return {"tau": best, "val": {str(t): round(float(s), 6) for t, s in scores.items()}}


def shot_groups(counts, class_names: list[str], shots: ShotSpec) -> dict[str, list[str]]:
    """Classes by their train rows: many (> shots.many), few (< shots.few), medium (the rest)."""
    groups = {"many": [], "medium": [], "few": []}
    for name, n in zip(class_names, counts):
        groups["many" if n > shots.many else "few" if n < shots.few else "medium"].append(name)
    return groups


def shot_metrics(recall: dict, groups: dict[str, list[str]]) -> dict:
    """Per group: its classes and their mean recall (the accuracy of the group on a balanced test split;
    None for a group without classes or without test rows)."""
    out = {}
    for group, names in groups.items():
        values = [recall[n] for n in names if recall.get(n) is not None]
        out[group] = {"classes": names, "accuracy": float(np.mean(values)) if values else None}
    return out


def shot_line(shots: dict) -> str:
    """``many 0.981 (2 classes) / medium ... / few ...`` for the log."""
    parts = []
    for group in ("many", "medium", "few"):
        entry = shots[group]
        value = "n/a" if entry["accuracy"] is None else f"{entry['accuracy']:.3f}"
        parts.append(f"{group} {value} ({len(entry['classes'])} classes)")
    return " / ".join(parts)


def deferred_sampling(config: TrainConfig) -> int | None:
    """The epoch from which ``train.rebalance: drs`` draws class-balanced batches (None without it)."""
    rebalance = config.rebalance
    return rebalance.start if rebalance is not None and rebalance.mode == "drs" else None
