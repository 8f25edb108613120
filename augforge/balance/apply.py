"""`augforge balance`: resample a dataset's train split with a strategy chain, into a new dataset directory.

Only the train split is resampled; val and test rows pass through untouched, so evaluation
never sees synthetic rows. Feature payloads are interpolated (SMOTE family) or measured
(cleaning samplers) on their vectors; image and text rows can only be copied (``over``: marked
copies that the augmentation stage varies) or dropped (``under``).

Output order: the train rows grouped by the source row they come from (each kept row, then its
copies or the rows interpolated from it), then rows with no single source (cluster centroids),
then the val and test rows in source order. This lets one sequential pass over the source write
the dataset, so memory holds the train features and the resampled ones, not the payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from augforge.balance.copy_paste import paste_counts, paste_resample, parse_copy_paste, plan_copy_paste
from augforge.balance.instance_strategies import instance_strategy
from augforge.balance.instances import instance_classes
from augforge.balance.ml_ros import ml_ros_counts, ml_ros_resample, parse_ml_ros
from augforge.balance.repeat_factor import instance_counts, parse_repeat_factor, repeat_resample
from augforge.balance.resample import INDEX_ONLY, Resampled, check_class_sizes, check_finite, parse_for, resample
from augforge.balance.strategy import Step, project
from augforge.datasets import schema as S
from augforge.datasets.ingest import (READ_BATCH_ROWS, WriteResult, content_parts, manifest_meta, with_provenance,
                                      write_dataset)
from augforge.datasets.plan import Cleaning, RowPlan, plan_rows, recorded
from augforge.datasets.publish import output_location
from augforge.datasets.sources.base import Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.errors import AugforgeError

#: Rows per batch when only ids and provenance are read.
META_BATCH_ROWS = 65_536
#: Prefix of the ``aug`` column of rows made by balancing.
AUG_PREFIX = "balance:"


def needs_vectors(steps: list[Step]) -> bool:
    """Whether any step interpolates or measures features (everything but plain over/under)."""
    return any(step.sampler.name not in INDEX_ONLY or step.options.get("shrinkage") for step in steps)


def read_features(source: Source, positions: np.ndarray) -> np.ndarray:
    """The float32 feature matrix of the source rows at ``positions``, read in one streaming pass."""
    dim = source.feature_dim
    X = np.empty((len(positions), dim), dtype=np.float32)
    at = 0
    for batch in source.read(positions, READ_BATCH_ROWS * 64):
        values = batch.column(S.FEATURES).flatten().to_numpy(zero_copy_only=False)
        X[at : at + batch.num_rows] = values.reshape(batch.num_rows, dim)
        at += batch.num_rows
    return X


def _train_features(source: Source, positions: np.ndarray, stage: Callable[[str], None]) -> np.ndarray:
    """The train rows' features, refused with the column and row named if any is NaN or infinite."""
    stage(f"reading {len(positions):,} feature rows")
    X = read_features(source, positions)
    try:
        check_finite(X, source.payload_info().get("feature_names"), lambda row: source.ids()[int(positions[row])])
    except AugforgeError as exc:
        raise AugforgeError(f"{source.location}: {exc}") from None
    stage(f"resampling {len(positions):,} rows")
    return X


@dataclass
class BalancePlan:
    """Everything decided before rows are written: the resampled train rows and the output order."""

    steps: list[Step]
    train_positions: np.ndarray
    other_positions: np.ndarray
    other_splits: np.ndarray
    result: Resampled
    order: np.ndarray  # output position -> index into result, train rows grouped by origin
    origins: np.ndarray  # sorted unique origins (indices into train_positions)
    counts: np.ndarray  # output rows per unique origin
    orphans: np.ndarray  # indices into result of rows with no single origin
    before: np.ndarray
    after: np.ndarray
    instances: dict | None = None  # an instance strategy's instances per class before and after
    pastes: dict = field(default_factory=dict)  # copy_paste: result index -> its PasteJob


def plan_balance(source: Source, strategy: str | None, *, splits: SplitSpec = SplitSpec(),
                 imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0, knn_backend: str = "auto",
                 on_stage: Callable[[str], None] | None = None, rows: RowPlan | None = None) -> BalancePlan:
    """Resample the train split of ``source`` (labels, and features where the chain needs them).

    ``rows`` replaces the split plan (``plan_rows``) when the caller has already chosen the rows
    (a build drops duplicates first); a ``strategy`` of None keeps the train rows as they are.
    """
    stage = on_stage or (lambda _: None)
    kind = instance_strategy(strategy) if strategy and source.has_targets else None
    if strategy and source.has_targets and kind is None:
        raise AugforgeError(f"{source.location}: strategy {strategy}: a detection or segmentation set's imbalance "
                            "is counted in instances, which resampling whole rows by their rarest class does not "
                            "balance (`augforge report` counts them); use repeat_factor[:t] (repeat-factor "
                            "sampling), copy_paste:N (rare instances pasted) or ml_ros[:P] (image-level labels)")
    steps = parse_for(strategy, source.payload) if strategy and kind is None else []
    rows = rows if rows is not None else plan_rows(source, splits, imbalance, seed)
    is_train = rows.splits == S.TRAIN
    train_positions = rows.positions[is_train]
    if len(train_positions) == 0:
        raise AugforgeError(f"{source.location}: the train split is empty; nothing to balance")
    y = rows.labels[is_train]
    names = list(source.class_names)
    before = np.bincount(y, minlength=len(names))
    instances, pastes = None, {}
    if kind is not None:
        result, instances, pastes = _by_instances(source, kind, strategy, train_positions, y, seed, stage)
    else:
        project(steps, before, names, strategy or "")  # refuses what imbalanced-learn would refuse, before reading
        check_class_sizes(steps, before, names)
        if not needs_vectors(steps):
            if steps and source.payload == S.FEATURES:  # copies of NaN rows are refused as interpolation is
                _train_features(source, train_positions, stage)
            stage(f"resampling {len(y):,} rows")
        # the features are passed straight in: resample() holds the only reference and frees them after step 1
        result = resample(steps, y, names, _train_features(source, train_positions, stage) if needs_vectors(steps)
                          else None, seed=seed, knn_backend=knn_backend)
    key = np.where(result.origin >= 0, result.origin, len(train_positions))
    order = np.argsort(key, kind="stable")
    grouped = result.origin[order]
    origins, counts = np.unique(grouped[grouped >= 0], return_counts=True)
    return BalancePlan(
        steps=steps, train_positions=train_positions, other_positions=rows.positions[~is_train],
        other_splits=rows.splits[~is_train], result=result, order=order, origins=origins, counts=counts,
        orphans=order[len(grouped[grouped >= 0]):], before=before,
        after=np.bincount(result.y, minlength=len(names)), instances=instances, pastes=pastes,
    )


def _by_instances(source: Source, kind: str, strategy: str, train_positions: np.ndarray, y: np.ndarray, seed: int,
                  stage: Callable[[str], None]) -> tuple[Resampled, dict, dict]:
    """An instance strategy (``augforge.balance.instance_strategies``) on the train rows: (the resampled rows,
    the instances per class before and after, copy_paste's jobs by result index)."""
    classes = instance_classes(source)
    if kind == "ml_ros":  # images cloned by their minority image-level labels
        share = parse_ml_ros(strategy)
        stage(f"ML-ROS over the image-level labels of {len(y):,} images (P = {share:g})")
        label_sets = source.image_labels(train_positions)
        if label_sets is None:
            raise AugforgeError(f"{source.location}: strategy {strategy}: ml_ros re-samples image-level labels, "
                                "which this set does not have (LabelMe flags)")
        result = ml_ros_resample(label_sets, y, len(classes), share, seed)
        return result, ml_ros_counts(label_sets, result.origin, classes, share), {}
    train_instances = source.instances(train_positions)
    if kind == "copy_paste":  # rare instances pasted onto copies of the emptiest train images
        target = parse_copy_paste(strategy)
        stage(f"planning copy-paste of rare instances onto {len(y):,} train images")
        ids = source.ids()
        plan = plan_copy_paste(train_instances, source.image_sizes(train_positions),
                               [ids[p] for p in train_positions], classes, target, seed)
        pastes = {len(y) + j: job for j, job in enumerate(plan.jobs)}
        return paste_resample(y, plan, target), paste_counts(train_instances, plan, classes, target), pastes
    threshold = parse_repeat_factor(strategy)  # images repeated by their rarest class's instance share
    stage(f"repeat-factor sampling of {len(y):,} images (t = {threshold:g})")
    result = repeat_resample(train_instances, y, len(classes), threshold, seed)
    return result, instance_counts(train_instances, result.origin, classes, threshold), {}


def _copy_ids(ids: pa.Array, synthetic: np.ndarray, copy_index: np.ndarray) -> pa.Array:
    """Ids of output rows: a source row keeps its id, its j-th synthetic descendant gets ``id~bj``."""
    values = ids.to_pylist()
    return pa.array([f"{v}~b{j}" if s else v for v, s, j in zip(values, synthetic, copy_index)], pa.string())


def _copy_index(plan: BalancePlan) -> np.ndarray:
    """For each output row (in output order), how many synthetic rows of the same origin precede it."""
    syn = plan.result.synthetic[plan.order].astype(np.int64)
    grouped = plan.result.origin[plan.order]
    if len(grouped) == 0:
        return syn
    running = np.cumsum(syn) - syn
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    group_start = np.repeat(running[starts], np.diff(np.r_[starts, len(grouped)]))
    return running - group_start


def _train_batches(source: Source, plan: BalancePlan, skip: int) -> Iterator[pa.RecordBatch]:
    """The train rows in output order, from output row ``skip`` on."""
    res = plan.result
    copy_index = _copy_index(plan)
    ends = np.cumsum(plan.counts)
    first = int(np.searchsorted(ends, skip, side="right"))  # the first origin with rows at or after skip
    done = int(ends[first - 1]) if first else 0
    with_vectors = res.X is not None
    for batch in _source_rows(source, plan.train_positions[plan.origins[first:]], payload=not with_vectors):
        m = batch.num_rows
        reps = plan.counts[first : first + m]
        expanded = with_provenance(batch, np.full(m, S.TRAIN, dtype=np.int8)).take(
            pa.array(np.repeat(np.arange(m), reps)))
        out = slice(done, done + int(reps.sum()))
        yield _patched(expanded, plan.order[out], res, copy_index[out], with_vectors).slice(max(skip - done, 0))
        first += m
        done = out.stop
    if len(plan.orphans) and skip < done + len(plan.orphans):
        yield _orphans(plan, source.schema()).slice(max(skip - done, 0))


def _source_rows(source: Source, positions: np.ndarray, payload: bool) -> Iterator[pa.RecordBatch]:
    """Source rows at ``positions``; without ``payload``, only the id, label and provenance columns
    (the resampled features replace the payload, so it is not read a second time)."""
    if payload:
        return source.read(positions, READ_BATCH_ROWS)
    return source.read_meta(positions, META_BATCH_ROWS)


def _patched(rows: pa.RecordBatch, picked: np.ndarray, res: Resampled, copy_index: np.ndarray,
             with_vectors: bool) -> pa.RecordBatch:
    """Source rows expanded to their output rows, marked where synthetic, with resampled features."""
    synthetic = res.synthetic[picked]
    made = rows.column(S.SYNTHETIC).to_numpy(zero_copy_only=False) | synthetic
    aug = [f"{AUG_PREFIX}{a}" if s else old for s, a, old in zip(synthetic, res.aug[picked],
                                                               rows.column(S.AUG).to_pylist())]
    columns = {name: rows.column(name) for name in rows.schema.names}
    columns[S.ID] = _copy_ids(rows.column(S.ID), synthetic, copy_index)
    columns[S.LABEL] = pa.array(res.y[picked], pa.int64())
    columns[S.SYNTHETIC] = pa.array(made)
    columns[S.AUG] = pa.array(aug, pa.string())
    if with_vectors:
        columns[S.FEATURES] = _vectors(res.X[picked])
    return pa.record_batch(columns)


def _vectors(X: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(X, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, X.shape[1])


def _orphans(plan: BalancePlan, schema: pa.Schema) -> pa.RecordBatch:
    """Rows with no single source row (cluster centroids): new ids, their own source id."""
    res, picked = plan.result, plan.orphans
    ids = pa.array([f"centroid~b{j}" for j in range(len(picked))], pa.string())
    columns = {
        S.ID: ids,
        S.LABEL: pa.array(res.y[picked], pa.int64()),
        S.FEATURES: _vectors(res.X[picked]),
        S.SOURCE_ID: ids,
        S.SYNTHETIC: pa.array(np.ones(len(picked), dtype=bool)),
        S.AUG: pa.array([f"{AUG_PREFIX}{a}" for a in res.aug[picked]], pa.string()),
        S.SPLIT: S.split_names(np.full(len(picked), S.TRAIN)),
    }
    return pa.record_batch([columns[name] for name in schema.names], schema=schema)


def _other_batches(source: Source, plan: BalancePlan, skip: int) -> Iterator[pa.RecordBatch]:
    """The val and test rows, untouched, from row ``skip`` of that part on."""
    done = skip
    for batch in source.read(plan.other_positions[skip:], READ_BATCH_ROWS):
        yield with_provenance(batch, plan.other_splits[done : done + batch.num_rows])
        done += batch.num_rows


def balance_dataset(
    source: Source,
    out: str | Path,
    strategy: str,
    *,
    splits: SplitSpec = SplitSpec(),
    imbalance: ImbalanceSpec = ImbalanceSpec(),
    seed: int = 0,
    knn_backend: str = "auto",
    shard_rows: int | None = None,
    shard_mb: float | None = None,
    overwrite: bool = False,
    on_stage: Callable[[str], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    rows: RowPlan | None = None,
    cleaning: Cleaning | None = None,
) -> tuple[WriteResult, BalancePlan]:
    """Write ``source`` to ``out`` with its train split resampled by ``strategy`` (imbalanced-learn semantics).

    Deterministic for a seed; resumable and safe like ``ingest`` (see ``write_dataset``). ``rows`` and
    ``cleaning``: the rows a build chose, and what that dropped (as ``ingest`` takes them).
    """
    output_location(out)
    if source.has_targets and parse_copy_paste(strategy) is not None:
        raise AugforgeError(f"strategy {strategy}: copy-paste renders new images; run it as a recipe's "
                            "balance.strategy with `augforge build` (which also augments them)")
    plan = plan_balance(source, strategy, splits=splits, imbalance=imbalance, seed=seed, knn_backend=knn_backend,
                        on_stage=on_stage, rows=rows)
    names = list(source.class_names)
    n_train = len(plan.result.y)
    parts = content_parts(source, splits, imbalance, seed, shard_rows, shard_mb, job="balance", strategy=strategy)
    meta = manifest_meta(source, splits, imbalance, seed, balance={
        "strategy": strategy,
        "mode": "interpolate" if plan.result.X is not None else "copies",
        "knn_backend": knn_backend,
        "before": dict(zip(names, plan.before.tolist())),
        "after": dict(zip(names, plan.after.tolist())),
        "synthetic": int(plan.result.synthetic.sum()),
        **({"instances": plan.instances} if plan.instances else {}),
    })
    parts, meta = recorded(parts, meta, cleaning)

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if skip < n_train:
            yield from _train_batches(source, plan, skip)
        yield from _other_batches(source, plan, max(skip - n_train, 0))

    if on_stage:
        on_stage(f"writing {n_train + len(plan.other_positions):,} rows to {out}")
    result = write_dataset(out, source.schema(), names, parts=parts, meta=meta,
                           total_rows=n_train + len(plan.other_positions), batches=batches, shard_rows=shard_rows,
                           shard_mb=shard_mb, overwrite=overwrite, on_rows=on_rows, on_total=on_total)
    return result, plan
