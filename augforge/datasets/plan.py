"""Which source rows go into a dataset, and in which split: decided before any payload is read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.datasets import schema as S
from augforge.datasets.keys import row_keys
from augforge.datasets.sources.base import Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec, assign_splits, imbalance_mask, split_warnings
from augforge.errors import OptionError


@dataclass
class RowPlan:
    """The kept source rows (ascending positions), with their labels and split codes (schema.SPLITS index)."""

    positions: np.ndarray
    labels: np.ndarray
    splits: np.ndarray


@dataclass
class Cleaning:
    """What a build's ``clean:`` audit did to its planned rows, for a writer to record: ``spec`` (part of the
    dataset's fingerprint), ``summary`` (the manifest's ``build.cleaning``), a Problem per dropped row, and
    warnings."""

    spec: dict
    summary: dict
    problems: list
    warnings: list


def recorded(parts: dict, meta: dict, cleaning: Cleaning | None) -> tuple[dict, dict]:
    """(content parts, manifest meta) with ``cleaning`` recorded in both; unchanged without it."""
    if cleaning is None:
        return parts, meta
    meta = {**meta, "build": {**(meta.get("build") or {}), "cleaning": cleaning.summary},
            "problems": meta["problems"] + [p.to_dict() for p in cleaning.problems],
            "warnings": meta["warnings"] + list(cleaning.warnings)}
    return {**parts, "clean": cleaning.spec}, meta


def plan_rows(source: Source, splits: SplitSpec = SplitSpec(), imbalance: ImbalanceSpec = ImbalanceSpec(),
              seed: int = 0) -> RowPlan:
    """Assign splits (stratified, seeded by row id) and apply the imbalance profile to the train split.

    The split is taken before the imbalance profile, so val and test keep the
    source's class balance. Row ids are read only when a seeded choice needs them.
    """
    labels = source.labels()
    native = source.native_splits()
    if native is not None and splits.active:
        raise OptionError("{location}: already has a split column; drop {test_split}/{val_split} or the column",
                          location=source.location)
    ids = source.ids() if (splits.active or imbalance.active) else None
    if native is not None:
        split_of = native
    else:
        keys = row_keys(seed, ids, "split") if splits.active else None
        split_of = assign_splits(labels, keys, splits)
    #: classes the split leaves unmeasured (ingest, build and report show these lines)
    source.warnings = split_warnings(labels, split_of, source.class_names, splits, native is not None)
    if imbalance.active:
        keep = imbalance_mask(labels, row_keys(seed, ids, "imbalance"), split_of == S.TRAIN, imbalance,
                              len(source.class_names))
        positions = np.flatnonzero(keep)
        return RowPlan(positions, labels[positions], split_of[positions])
    return RowPlan(np.arange(len(labels), dtype=np.int64), labels, split_of)
