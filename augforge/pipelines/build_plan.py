"""What every build plans before it makes a row: the recipe's source and splits, exact duplicates dropped,
the balance plan of the train split, the expansion of each balanced row into its output rows, and the manifest
keys that record it all. Image and text builds (``image_rows``, ``text_rows``) share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from augforge.augment.ops import op_dicts
from augforge.balance.apply import BalancePlan, plan_balance
from augforge.checks import RecipeError
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS, WriteResult, manifest_meta, with_provenance
from augforge.datasets.plan import RowPlan, plan_rows
from augforge.datasets.sources import open_source
from augforge.datasets.sources.base import Problem, Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.pipelines.clean_plan import clean_rows
from augforge.recipe import Recipe

#: Output rows per augmentation chunk (one seeded DALI pipeline each).
CHUNK_ROWS = 2048
#: ``aug`` of augmented rows.
AUG_NAME = "augment"


def recipe_source(recipe: Recipe) -> Source:
    """The source a recipe names, with its table or image-folder options."""
    spec = recipe.source
    return open_source(spec.path, label_col=spec.label_col, text_col=spec.text_col,
                       feature_cols=list(spec.feature_cols) if spec.feature_cols else None, id_col=spec.id_col,
                       max_pixels=spec.max_pixels)


def recipe_splits(recipe: Recipe) -> tuple[SplitSpec, ImbalanceSpec]:
    """The split and imbalance options of a recipe's source."""
    spec = recipe.source
    return SplitSpec(spec.test_split, spec.val_split), ImbalanceSpec(spec.imbalance, spec.imbalance_factor)


def _content_key(value) -> tuple[bytes, bytes] | None:
    """(comparison key, exact key) of a payload value: texts compare up to whitespace, images and features by
    their bytes; None for an empty text."""
    if isinstance(value, str):
        normal = " ".join(value.split())
        if not normal:
            return None
        return xxhash.xxh3_128_digest(normal.encode()), xxhash.xxh3_128_digest(value.encode())
    data = bytes(value) if isinstance(value, bytes) else np.asarray(value, dtype=np.float32).tobytes()
    digest = xxhash.xxh3_128_digest(data)
    return digest, digest


def drop_duplicates(source: Source, rows: RowPlan) -> tuple[RowPlan, list[Problem], int]:
    """Drop rows whose payload repeats an earlier row's (xxh3-128 of the bytes; texts up to whitespace) and
    empty texts, listing each. Returns the kept rows, the problems and the number of duplicates."""
    seen: dict[bytes, tuple[str, bytes]] = {}  # comparison key -> (first row id, its exact key)
    keep = np.ones(len(rows.positions), dtype=bool)
    problems, at, duplicates = [], 0, 0
    for batch in source.read(rows.positions, READ_BATCH_ROWS):
        payload = batch.column(source.payload)
        for i, (row_id, value) in enumerate(zip(batch.column(S.ID).to_pylist(), payload.to_pylist())):
            key = _content_key(value)
            if key is None:
                keep[at + i] = False
                problems.append(Problem(row_id, "empty text; dropped"))
            elif key[0] in seen:
                keep[at + i] = False
                duplicates += 1
                first_id, exact = seen[key[0]]
                kind = "exact" if exact == key[1] else "whitespace-normalized"
                problems.append(Problem(row_id, f"{kind} duplicate of {first_id}; dropped"))
            else:
                seen[key[0]] = (row_id, key[1])
        at += batch.num_rows
    return RowPlan(rows.positions[keep], rows.labels[keep], rows.splits[keep]), problems, duplicates


@dataclass
class OutputPlan:
    """The train output rows, in order: which balanced row each comes from and whether it is augmented."""

    balanced: np.ndarray  # index into the balance result
    augmented: np.ndarray  # bool
    variant: np.ndarray  # per origin: 0 for the kept original, then 1, 2, ... for every augmented row
    group_end: np.ndarray  # per origin (in plan.origins order): one past its last output row


def plan_outputs(plan: BalancePlan, copies: Callable[[int], int], keep_original: bool, has_ops: bool) -> OutputPlan:
    """Expand every balanced train row into its output rows (see the module docstring)."""
    res = plan.result
    order = plan.order[: len(plan.order) - len(plan.orphans)]
    labels = res.y[order]
    per_label = np.array([copies(int(label)) for label in range(int(labels.max(initial=0)) + 1)], dtype=np.int64)
    is_copy = res.synthetic[order]
    n_out = per_label[labels] + (1 if keep_original else 0)
    if not has_ops:
        n_out = np.minimum(n_out, 1)  # nothing varies a row: it is kept (or copied) once
    balanced = np.repeat(order, n_out)
    first = np.zeros(len(balanced), dtype=bool)
    first[(np.cumsum(n_out) - n_out)[n_out > 0]] = True
    plain = np.repeat(~is_copy & keep_original, n_out) & first
    augmented = ~plain if has_ops else np.zeros(len(balanced), dtype=bool)
    # origin groups, aligned with plan.origins: where each one's output rows end
    row_group = np.searchsorted(plan.origins, res.origin[order])
    per_group = np.bincount(row_group, weights=n_out, minlength=len(plan.origins)).astype(np.int64)
    group_end = np.cumsum(per_group)
    variant = np.arange(len(balanced)) - np.repeat((group_end - per_group)[row_group], n_out)
    return OutputPlan(balanced, augmented, variant, group_end)



@dataclass
class BuildResult:
    """What a build did."""

    write: WriteResult
    plan: BalancePlan
    duplicates: int
    augmented: int
    device: str
    engine: dict | None = None  # a distributed build's units per node and worker processes


def _check_copies(recipe: Recipe, source: Source) -> None:
    """Per-class copies must name real classes, and without originals every class needs a copy."""
    aug = recipe.augment
    unknown = sorted(set(aug.copies_per_class) - set(source.class_names))
    if unknown:
        raise RecipeError(f"{recipe.file}: augment.copies.{unknown[0]}: no such class; classes: "
                          f"{', '.join(source.class_names)}")
    if not aug.keep_original:
        empty = [n for n in source.class_names if aug.copies_for(n) < 1]
        if empty:
            raise RecipeError(f"{recipe.file}: augment.copies: with keep_original false every class needs at least "
                              f"one copy; class {empty[0]!r} would get no rows")


def passthrough(source: Source, positions: np.ndarray, splits: np.ndarray, skip: int,
                 convert=None) -> Iterator[pa.RecordBatch]:
    """Val/test rows from row ``skip`` on, with provenance, optionally converted (``convert(batch)``)."""
    done = skip
    for batch in source.read(positions[skip:], READ_BATCH_ROWS):
        batch = with_provenance(batch, splits[done : done + batch.num_rows])
        done += batch.num_rows
        yield convert(batch) if convert else batch



@dataclass
class TrainPlan:
    """What image and text builds plan alike (``plan_train``)."""

    splits: SplitSpec
    imbalance: ImbalanceSpec
    balance: BalancePlan
    problems: list[Problem]
    duplicates: int
    other_positions: np.ndarray  # the val/test rows, in output order
    other_splits: np.ndarray
    cleaning: dict | None = None  # what the clean: audit steps found and dropped (augforge.pipelines.clean_plan)
    warnings: tuple = ()


def plan_train(recipe: Recipe, source: Source, stage: Callable[[str], None], cleaning: str) -> TrainPlan:
    """What image and text builds plan alike: the copies checked, the splits, the rows (exact duplicates
    dropped when the recipe says so, announced by ``cleaning`` formatted with the row count), and the
    balance plan of the train split."""
    _check_copies(recipe, source)
    splits, imbalance = recipe_splits(recipe)
    stage("planning splits")
    rows = plan_rows(source, splits, imbalance, recipe.seed)
    problems: list[Problem] = list(source.problems)
    duplicates = 0
    if recipe.drop_duplicates:
        stage(cleaning.format(len(rows.positions)))
        rows, dropped, duplicates = drop_duplicates(source, rows)
        problems += dropped
    cleaning, warnings = None, []
    if recipe.clean.active:
        stage(f"auditing {len(rows.positions):,} rows (clean:)")
        rows, dropped, cleaning, warnings = clean_rows(recipe, source, rows)
        problems += dropped
    stage("balancing the train split")
    plan = plan_balance(source, recipe.strategy, seed=recipe.seed, rows=rows)
    others = rows.splits != S.TRAIN
    return TrainPlan(splits, imbalance, plan, problems, duplicates, rows.positions[others], rows.splits[others],
                     cleaning, tuple(warnings))


def build_meta(recipe: Recipe, source: Source, planned: TrainPlan, names: list[str], after: np.ndarray,
               device: str, extra: dict) -> dict:
    """The manifest keys of a build: the recipe, and what each stage did."""
    aug = recipe.augment
    ops = aug.image or aug.text
    plan = planned.balance
    meta = manifest_meta(source, planned.splits, planned.imbalance, recipe.seed, build={
        "recipe_file": recipe.file,
        "device": device,
        "copies": {n: aug.copies_for(n) for n in names},
        "keep_original": aug.keep_original,
        "mode": aug.mode,
        "ops": op_dicts(ops),
        "duplicates_dropped": planned.duplicates,
        "balance": {"strategy": recipe.strategy, "before": dict(zip(names, plan.before.tolist())),
                    "after": dict(zip(names, plan.after.tolist())),
                    **({"instances": plan.instances} if plan.instances else {})},
        "after_augment": dict(zip(names, after.tolist())),
        **({"cleaning": planned.cleaning} if planned.cleaning is not None else {}),
        **extra,
    })
    meta["recipe"] = recipe.data
    meta["problems"] = [p.to_dict() for p in planned.problems]
    meta["warnings"] = list(source.warnings) + list(planned.warnings)
    return meta
