"""`augforge crossfit RECIPE --folds K --out DIR`: out-of-fold probabilities of the recipe's own model, for
``augforge audit --probs DIR``.

The train split of the recipe's dataset is cut into K folds, stratified by class and grouped by source row
(a build's augmented and balance copies share their source's fold, so no model sees a copy of a row it
scores). Fold f trains the recipe's ``train:`` section on the other folds (``train_recipe`` with
``train_rows``, in ``DIR/fold-f``) and scores the rows of fold f; val and test rows are scored by every
fold's model and get the mean. Every row is therefore scored by models that never trained on it.

The probabilities are the model's softmax (a binary head: its sigmoid), without post-hoc adjustment: the
audit asks what the model believes of a row, not which class to predict. A crash loses at most the fold in
progress: finished folds keep their ``heldout.npz`` and are not trained again, a fold being trained resumes
from its last checkpoint. ``DIR/plan.json`` pins the dataset and the folds; a directory made for another
dataset or other folds is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from augforge.atomic import write_json
from augforge.audit.probs import CROSSFIT, PROBS, read_probs, write_probs
from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError, OptionError, require_at_least
from augforge.recipe import Recipe
from augforge.train.checkpoint import load_checkpoint
from augforge.train.data import ensure_dataset
from augforge.train.loop import collect_logits
from augforge.train.restore import checkpoint_model_and_loader
from augforge.train.run import train_recipe

#: what a fold leaves behind when it is done: its model's probabilities of the rows it did not see
HELDOUT = "heldout.npz"
PLAN = "plan.json"


def assign_folds(labels: np.ndarray, groups: list, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: stratified by label, a group's rows in one fold (scikit-learn's
    StratifiedGroupKFold, shuffled from ``seed``). Every class needs rows in at least two groups, so that
    each fold's training rows hold it wherever it is scored."""
    from sklearn.model_selection import StratifiedGroupKFold  # scikit-learn: heavy, imported when folds are cut

    require_at_least("folds", folds, 2)
    labels = np.asarray(labels)
    _, group_ids = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    for label in np.unique(labels):
        if len(np.unique(group_ids[labels == label])) < 2:
            raise AugforgeError(f"class {label}: has one source row in train; a cross-fit needs at least two per "
                                "class")
    if len(np.unique(group_ids)) < folds:
        raise OptionError("{folds} {value}: more folds than the train split's {groups} source rows",
                          value=folds, groups=len(np.unique(group_ids)))
    fold = np.full(len(labels), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for number, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, group_ids)):
        fold[held] = number
    return fold


def model_probabilities(logits: torch.Tensor, binary: bool) -> np.ndarray:
    """(rows, classes) probabilities from a model's logits: softmax, or a binary head's sigmoid as [1-p, p]."""
    if binary:
        p = torch.sigmoid(logits.reshape(-1).double())
        return torch.stack([1 - p, p], dim=1).numpy()
    return torch.softmax(logits.double(), dim=-1).numpy()


def _score(model_file: Path, state: dict, data: Path, split: str, rows, device) -> tuple[list[str], np.ndarray]:
    """(ids, probabilities) of a split's ``rows`` (all where None) under a fold's model (``state``: its
    checkpoint, loaded)."""
    model, loader, arch, spec, placement = checkpoint_model_and_loader(model_file, data, split, device, rows=rows,
                                                                       state=state)
    logits, _, _ = collect_logits(model, loader, placement.torch, expect_shape=spec.get("shape"), source=str(data))
    positions = np.arange(len(loader.dataset)) if rows is None else loader.rows
    ids = [str(v) for v in loader.dataset.take(positions, columns=[S.ID]).column(S.ID).to_pylist()]
    return ids, model_probabilities(logits, bool(arch.get("binary")))


def _check_plan(out: Path, plan: dict) -> None:
    """Write ``plan.json``, or refuse a directory whose plan (dataset, folds, seed) is another."""
    path = out / PLAN
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier != plan:
            changed = sorted(k for k in plan if earlier.get(k) != plan[k])
            raise AugforgeError(f"{out}: holds a cross-fit with another {', '.join(changed)}; choose another "
                                "directory or delete it")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, plan)


def crossfit(recipe: Recipe, out: str | Path, *, folds: int = 5, data: str | Path | None = None,
             rebuild: bool = False, workers: int = 2, threads: int | None = None, log=print) -> dict:
    """Train the recipe once per fold and write ``DIR/probs.npz`` and ``DIR/crossfit.json`` (see the module
    docstring); returns the description written to ``crossfit.json``."""
    require_at_least("folds", folds, 2)
    out = Path(out)
    data = Path(data or recipe.output.dir or out / "data")
    manifest = ensure_dataset(recipe, data, rebuild, workers, log)
    train = Dataset(data, "train")
    table = train.take(np.arange(len(train)), columns=[S.ID, S.SOURCE_ID, S.LABEL])
    ids = [str(v) for v in table.column(S.ID).to_pylist()]
    groups = [s if s is not None else i for s, i in zip(table.column(S.SOURCE_ID).to_pylist(), ids)]
    labels = np.asarray(table.column(S.LABEL))
    fold = assign_folds(labels, groups, folds, recipe.run.seed)
    _check_plan(out, {"data": os.path.abspath(data), "fingerprint": manifest.get("fingerprint"), "folds": folds,
                      "seed": recipe.run.seed, "rows": len(ids)})
    held_splits = [s for s in ("val", "test") if s in manifest["counts"]]
    summaries = []
    for number in range(folds):
        fold_dir = out / f"fold-{number}"
        if not (fold_dir / HELDOUT).is_file():
            if not (fold_dir / "model.pt").is_file():
                log(f"fold {number + 1}/{folds}: training on {int((fold != number).sum()):,} of {len(ids):,} rows")
                train_recipe(recipe, fold_dir, data=data, resume=True, workers=workers, threads=threads,
                             log=lambda text, n=number: log(f"  fold {n + 1}: {text}"),
                             train_rows=np.flatnonzero(fold != number))
            model_file = fold_dir / "model.pt"
            state = load_checkpoint(model_file)
            scored = [_score(model_file, state, data, "train", np.flatnonzero(fold == number), recipe.run.device)]
            scored += [_score(model_file, state, data, split, None, recipe.run.device) for split in held_splits]
            marks = [np.full(len(scored[0][0]), number)] + [np.full(len(s[0]), -1) for s in scored[1:]]
            write_probs(fold_dir / HELDOUT, sum((s[0] for s in scored), []), np.concatenate([s[1] for s in scored]),
                        np.concatenate(marks))
        summary = fold_dir / "summary.json"
        summaries.append(json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {})
    description = _combine(out, folds, ids, labels, manifest, recipe, summaries, data)
    log(f"cross-fit: out-of-fold accuracy {description['train_oof']['accuracy']:.4f} on {len(ids):,} train rows; "
        f"wrote {out / PROBS} and {out / CROSSFIT}")
    return description


def _combine(out: Path, folds: int, ids: list[str], labels: np.ndarray, manifest: dict, recipe: Recipe,
             summaries: list[dict], data: Path) -> dict:
    """Gather the folds' held-out probabilities into ``probs.npz`` (held-out splits: the mean over folds)
    and write ``crossfit.json`` last."""
    own: dict[str, tuple[np.ndarray, int]] = {}
    shared: dict[str, list[np.ndarray]] = {}
    for number in range(folds):
        fold_ids, probs, marks = read_probs(out / f"fold-{number}" / HELDOUT)
        for i, p, m in zip(fold_ids.tolist(), probs, marks.tolist()):
            if m >= 0:
                own[i] = (p, m)
            else:
                shared.setdefault(i, []).append(p)
    missing = [i for i in ids if i not in own]
    if missing:
        raise AugforgeError(f"{out}: the folds scored no probabilities for {len(missing):,} train rows (first: "
                            f"{missing[0]}); delete the fold directories and run again")
    held = [i for i in shared if len(shared[i]) == folds]
    all_ids = ids + held
    probs = np.stack([own[i][0] for i in ids] + [np.mean(shared[i], axis=0) for i in held])
    write_probs(out / PROBS, all_ids, probs, [own[i][1] for i in ids] + [-1] * len(held))
    accuracy = float((probs[: len(ids)].argmax(axis=1) == labels).mean())
    description = {"folds": folds, "seed": recipe.run.seed, "model": recipe.run.model, "classes":
                   list(manifest["class_names"]), "data": os.path.abspath(data), "rows": {"train": len(ids),
                   "held_out": len(held)}, "train_oof": {"accuracy": round(accuracy, 6)},
                   "fold_test_accuracy": [s.get("accuracy") for s in summaries], "recipe": recipe.file}
    write_json(out / CROSSFIT, description)
    return description
