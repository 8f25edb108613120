"""Predicted probabilities of a cross-fitted augforge run (``augforge crossfit``): the files it writes and
the audit reads, and the checks that they fit the audited rows.

A cross-fit directory holds ``crossfit.json`` (written last: the classes, folds, dataset and how well the
folds' models did) and ``probs.npz``: ``ids`` (the dataset's row ids), ``probs`` (rows x classes, each row
summing to 1) and ``fold`` (the fold whose model did not see a train row; -1 for val and test rows, whose
probabilities are the mean of every fold's model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError

#: the cross-fit's description, written when every fold is done
CROSSFIT = "crossfit.json"
#: the probabilities of every row of the dataset
PROBS = "probs.npz"


def write_probs(path: str | Path, ids, probs: np.ndarray, fold: np.ndarray) -> None:
    """Write ``ids``, ``probs`` and ``fold`` to ``path`` atomically (NumPy's npz, no pickles)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, ids=np.asarray([str(i) for i in ids], dtype=np.str_), probs=np.asarray(probs, np.float64),
                 fold=np.asarray(fold, np.int64))


def read_probs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, probs, fold) of a file ``write_probs`` wrote; a damaged file is refused in one line."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, probs, fold = data["ids"], data["probs"], data["fold"]
    except (OSError, ValueError, KeyError) as exc:
        raise AugforgeError(f"{path}: not a probabilities file of augforge crossfit ({exc})") from None
    if probs.ndim != 2 or len(probs) != len(ids) or len(fold) != len(ids):
        raise AugforgeError(f"{path}: ids, probs and fold do not have one entry per row")
    return ids, probs, fold


def run_probabilities(run_dir: str | Path, ids: list[str], class_names: list[str]) -> tuple[np.ndarray, dict]:
    """(probabilities of the rows ``ids``, in their order; the cross-fit's description) from a cross-fit
    directory. Refused in one line: a directory that is not a finished cross-fit, other classes, rows the
    cross-fit did not score, probabilities that are not distributions."""
    run_dir = Path(run_dir)
    description = run_dir / CROSSFIT
    if not description.is_file():
        raise AugforgeError(f"{run_dir}: is not a finished cross-fit (no {CROSSFIT}); make one with augforge "
                            f"crossfit RECIPE --folds 5 --out {run_dir}")
    try:
        plan = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AugforgeError(f"{description}: unreadable ({exc})") from None
    if list(plan.get("classes") or []) != list(class_names):
        raise AugforgeError(f"{run_dir}: the run's classes {plan.get('classes')} differ from the audited data's "
                            f"{list(class_names)}")
    run_ids, probs, _ = read_probs(run_dir / PROBS)
    if probs.shape[1] != len(class_names):
        raise AugforgeError(f"{run_dir / PROBS}: has {probs.shape[1]} columns for {len(class_names)} classes")
    where = {str(i): n for n, i in enumerate(run_ids.tolist())}
    missing = [i for i in ids if i not in where]
    if missing:
        raise AugforgeError(f"{run_dir}: has no probabilities for {len(missing):,} of the {len(ids):,} audited rows "
                            f"(first: {missing[0]}); audit the dataset the cross-fit trained on ({plan.get('data')})")
    chosen = probs[[where[i] for i in ids]]
    if not np.all(np.isfinite(chosen)) or np.any(chosen < 0) or not np.allclose(chosen.sum(axis=1), 1.0, atol=1e-4):
        raise AugforgeError(f"{run_dir / PROBS}: rows are not probability distributions (finite, >= 0, summing to 1)")
    return chosen, plan
