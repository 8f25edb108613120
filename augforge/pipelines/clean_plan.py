"""The recipe's ``clean:`` audit steps in a build (``augforge.recipe.clean``): the planned rows audited as
``augforge audit`` audits a dataset, and the train rows it finds dropped, each listed in the manifest's
problems with its reason; val and test rows are never dropped.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from augforge.audit.clusters import star_clusters
from augforge.audit.labels import label_issues, out_of_fold_probabilities, outlier_scores
from augforge.audit.rows import AuditRows
from augforge.audit.run import OUTLIER_SHARE, near_duplicate_pairs
from augforge.checks import RecipeError
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS
from augforge.datasets.plan import RowPlan
from augforge.datasets.sources.base import Problem, Source, cleaning_step
from augforge.recipe import Recipe


def source_rows(source: Source, rows: RowPlan) -> AuditRows:
    """The planned rows of ``source`` (in plan order) as an audit reads them."""
    ids, values = [], []
    for batch in source.read(rows.positions, READ_BATCH_ROWS):
        ids += [str(v) for v in batch.column(S.ID).to_pylist()]
        column = batch.column(source.payload).to_pylist()
        if source.payload == S.IMAGE:
            values += [np.asarray(Image.open(io.BytesIO(v))) for v in column]
        elif source.payload == S.TEXT:
            values += [str(v) for v in column]
        else:
            values += [np.asarray(v, dtype=np.float32) for v in column]
    if source.payload == S.FEATURES:
        values = np.stack(values)
    splits = [S.SPLITS[int(code)] for code in rows.splits]  # the plan holds split codes
    return AuditRows(source.payload, list(source.class_names), ids, np.asarray(rows.labels), splits, values,
                     str(source.location), [None] * len(ids))


def _duplicate_drops(recipe: Recipe, rows: AuditRows, drop: dict, summary: dict) -> list[str]:
    """Near-duplicate and leakage decisions into ``drop`` (index -> reason); the warnings to record."""
    spec = recipe.clean
    pairs, method, _ = near_duplicate_pairs(rows, spec.radius, spec.threshold, spec.epsilon, recipe.seed, spec.verify)
    summary["near_duplicates_method"] = method
    leaks, warnings = [], []
    for members in star_clusters(pairs, len(rows)):  # each member a near-duplicate of the first, its representative
        held = [i for i in members if rows.splits[i] != "train"]
        train = [i for i in members if rows.splits[i] == "train"]
        if held and train:
            leaks += [(i, held[0]) for i in train]
            if spec.leakage == "drop":
                for i in train:
                    drop.setdefault(i, f"near-twin of {rows.ids[held[0]]} ({rows.splits[held[0]]}); dropped "
                                       "(clean.leakage: drop)")
        if spec.near_duplicates == "drop":  # the representative is kept where it is in train
            for i in train[1:]:
                drop.setdefault(i, f"near-duplicate of {rows.ids[members[0]]}; dropped (clean.near_duplicates: drop)")
    summary["leaking_train_rows"] = len(leaks)
    if leaks and spec.leakage == "error":
        first, twin = leaks[0]
        raise RecipeError(f"{recipe.file}: clean.leakage: {len(leaks)} train row(s) have a near-twin in val or test "
                          f"(first: {rows.ids[first]} ~ {rows.ids[twin]}, {rows.splits[twin]}); set clean.leakage: "
                          "drop to remove them from train, or warn")
    if leaks and spec.leakage == "warn":
        warnings.append(f"clean.leakage: {len(leaks)} train row(s) have a near-twin in val or test (first: "
                        f"{rows.ids[leaks[0][0]]} ~ {rows.ids[leaks[0][1]]}); they were kept")
    return warnings


def _model_drops(recipe: Recipe, rows: AuditRows, drop: dict, summary: dict) -> None:
    """Label-issue and outlier decisions (train rows only) into ``drop`` and ``summary``."""
    spec = recipe.clean
    probs = out_of_fold_probabilities(rows, recipe.seed)
    train = np.array([s == "train" for s in rows.splits])
    if spec.label_issues != "keep":
        found = label_issues(rows.labels, probs)
        flagged = [int(i) for i in found["flagged"] if train[i]]
        names = rows.class_names
        summary["label_issues"] = [{"id": rows.ids[i], "given": names[rows.labels[i]],
                                    "suggested": names[found["suggested"][i]]} for i in flagged]
        if spec.label_issues == "drop":
            for i in flagged:
                drop.setdefault(i, f"label issue: given {names[rows.labels[i]]}, suggested "
                                   f"{names[found['suggested'][i]]}; dropped (clean.label_issues: drop)")
    if spec.outliers == "drop":
        scores = outlier_scores(rows.labels, probs)
        candidates = np.flatnonzero(train)
        count = max(1, int(round(OUTLIER_SHARE * len(candidates))))
        worst = candidates[np.lexsort((candidates, scores[candidates]))[:count]]
        for i in worst.tolist():
            drop.setdefault(i, f"outlier (score {scores[i]:.3f}, the {OUTLIER_SHARE:.0%} least typical train "
                               "rows); dropped (clean.outliers: drop)")


def check_drop_bounds(recipe: Recipe, rows: AuditRows, drop: dict) -> None:
    """The cleaning guard: stop (one line naming the steps, the counts and the key to raise) when the drops are
    more than ``clean.max_drop`` of the train split or ``clean.max_drop_class`` of one class's train rows."""
    spec = recipe.clean
    train = np.array([s == "train" for s in rows.splits])
    if not drop or not train.any():
        return
    steps: dict[str, int] = {}
    for reason in drop.values():  # every reason ends naming its step: (clean.<step>: drop)
        step = cleaning_step(reason)
        steps[step] = steps.get(step, 0) + 1
    by_step = ", ".join(f"{name} {count:,}" for name, count in sorted(steps.items(), key=lambda kv: -kv[1]))
    share = len(drop) / int(train.sum())
    if share > spec.max_drop:
        raise RecipeError(f"{recipe.file}: clean would drop {len(drop):,} of {int(train.sum()):,} train rows "
                          f"({share:.1%}; {by_step}), more than clean.max_drop {spec.max_drop:g}; look at `augforge "
                          "audit` first, then raise clean.max_drop to allow it")
    labels = np.asarray(rows.labels)
    dropped = np.bincount(labels[list(drop)], minlength=len(rows.class_names))
    present = np.bincount(labels[train], minlength=len(rows.class_names))
    shares = np.divide(dropped, present, out=np.zeros(len(present)), where=present > 0)
    worst = int(np.argmax(shares))
    if shares[worst] > spec.max_drop_class:
        raise RecipeError(f"{recipe.file}: clean would drop {int(dropped[worst]):,} of class {rows.class_names[worst]}'s "
                          f"{int(present[worst]):,} train rows ({shares[worst]:.1%}; {by_step} in all), more than "
                          f"clean.max_drop_class {spec.max_drop_class:g}; look at `augforge audit` first, then raise "
                          "clean.max_drop_class to allow it")


def clean_rows(recipe: Recipe, source: Source, rows: RowPlan) -> tuple[RowPlan, list[Problem], dict, list[str]]:
    """(the kept rows, a Problem per dropped row, what each step found and dropped, warnings)."""
    spec = recipe.clean
    audited = source_rows(source, rows)
    drop: dict[int, str] = {}
    summary: dict = {"steps": {k: getattr(spec, k) for k in ("near_duplicates", "leakage", "label_issues",
                                                             "outliers")}}
    warnings = []
    if spec.near_duplicates != "keep" or spec.leakage != "keep":
        warnings = _duplicate_drops(recipe, audited, drop, summary)
    if spec.needs_model:
        _model_drops(recipe, audited, drop, summary)
    summary["dropped"] = len(drop)
    check_drop_bounds(recipe, audited, drop)
    keep = np.ones(len(audited), dtype=bool)
    keep[list(drop)] = False
    problems = [Problem(audited.ids[i], reason) for i, reason in sorted(drop.items())]
    return RowPlan(rows.positions[keep], rows.labels[keep], rows.splits[keep]), problems, summary, warnings
