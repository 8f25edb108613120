"""The text half of `augforge build`: source -> clean -> balance -> n variants per row -> shards.

- **clean**: empty texts, exact duplicates and duplicates up to whitespace are dropped and listed;
- **balance**: the train split is resampled (``over`` copies, ``under``);
- **augment**: each balanced row yields ``copies + 1`` rows. An original keeps its text in the first;
  a balance copy gets only variants. Variants identical to their source or to an earlier variant of
  the same source, and variants that lost a protected token, are dropped and counted;
- **shards**: the shard store's writer, resumable like every build.

The variants of source row ``r`` are drawn in sequence from one generator seeded from (seed, r's id),
so variant ``j`` is fixed by (seed, r's id, j) and the output does not depend on batching or on
``--workers`` (processes share the work in order).
"""

from __future__ import annotations

import multiprocessing
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from augforge.augment.text import TextAugmenter, build_text_augmenter
from augforge.balance.apply import AUG_PREFIX, BalancePlan, plan_balance
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS
from augforge.datasets.plan import RowPlan
from augforge.datasets.sources.base import Problem, Source
from augforge.recipe import Recipe

_SCHEMA = S.dataset_schema(S.TEXT)
#: Source rows per unit of work handed to a worker process.
GROUPS_PER_TASK = 256
AUG_NAME = "augment"


def drop_text_duplicates(source: Source, rows: RowPlan) -> tuple[RowPlan, list[Problem], int]:
    """Drop empty texts and texts equal to an earlier one up to whitespace; list each (returns the count too)."""
    seen: dict[str, str] = {}
    keep = np.ones(len(rows.positions), dtype=bool)
    problems, at, duplicates = [], 0, 0
    for batch in source.read(rows.positions, READ_BATCH_ROWS * 16):
        for i, (row_id, text) in enumerate(zip(batch.column(S.ID).to_pylist(), batch.column(S.TEXT).to_pylist())):
            key = " ".join(text.split())
            if not key:
                keep[at + i] = False
                problems.append(Problem(row_id, "empty text; dropped"))
            elif key in seen:
                keep[at + i] = False
                duplicates += 1
                same = "exact" if text == seen[key][1] else "whitespace-normalized"
                problems.append(Problem(row_id, f"{same} duplicate of {seen[key][0]}; dropped"))
            else:
                seen[key] = (row_id, text)
        at += batch.num_rows
    return RowPlan(rows.positions[keep], rows.labels[keep], rows.splits[keep]), problems, duplicates


def variant_key(seed: int, row_id: str, j: int) -> int:
    """The seed of variant ``j`` of source row ``row_id``."""
    return xxhash.xxh3_64_intdigest(f"text\x00{row_id}\x00{j}".encode(), int(seed) & 0xFFFFFFFFFFFFFFFF)


@dataclass
class Group:
    """One source row's outputs to make: its text, its balanced copies and the variants wanted."""

    row: dict
    keep: bool  # the original text is one of the outputs
    copies: int  # balance copies of it (each adds copies + 1 variants)
    variants: int  # augmented variants to try


_WORKER: dict = {}


def _init_worker(augmenter: TextAugmenter, seed: int, forked: bool = True) -> None:
    from augforge.augment.wordnet import reopen_after_fork

    if forked:
        reopen_after_fork()
    _WORKER["augmenter"], _WORKER["seed"] = augmenter, seed


def _make_variants(group_texts: list[tuple[str, str, int]]) -> list[tuple[list[str], int, int]]:
    """For each (row id, text, n): its distinct variants, and how many were dropped as same / unprotected."""
    augmenter, seed = _WORKER["augmenter"], _WORKER["seed"]
    out = []
    for row_id, text, n in group_texts:
        seen, variants, same, lost = {text}, [], 0, 0
        rng = random.Random(variant_key(seed, row_id, 0))  # variant j: the j-th draw sequence of this generator
        for _ in range(n):
            v = augmenter.variant(text, rng)
            if v is None:
                lost += 1
            elif v in seen or not v.strip():
                same += 1
            else:
                seen.add(v)
                variants.append(v)
        out.append((variants, same, lost))
    return out


@dataclass
class TextStats:
    """What the augmentation dropped."""

    same: int = 0
    rejected: int = 0


class TextTrain:
    """The train output rows of a text build, in order, made by ``workers`` processes."""

    def __init__(self, recipe: Recipe, source: Source, plan: BalancePlan, workers: int, corpus: list[str],
                 workdir) -> None:
        self.recipe, self.source, self.plan, self.workers = recipe, source, plan, workers
        aug = recipe.augment
        protect = aug.protect
        self.augmenter = build_text_augmenter(aug.text, protect, aug.min_words, corpus, workdir)
        names = list(source.class_names)
        res = plan.result
        grouped = res.origin[plan.order]
        self.copies = np.bincount(np.searchsorted(plan.origins, grouped[res.synthetic[plan.order]]),
                                  minlength=len(plan.origins))
        originals = np.zeros(len(plan.origins), dtype=bool)
        originals[np.searchsorted(plan.origins, grouped[~res.synthetic[plan.order]])] = True
        self.has_original = originals
        labels = res.y[plan.order]
        first = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1] if len(grouped) else np.zeros(0, dtype=np.int64)
        self.labels = labels[first]
        k = np.array([aug.copies_for(names[int(c)]) for c in self.labels], dtype=np.int64)
        rows_per = self.copies + self.has_original
        keep = self.has_original & aug.keep_original
        self.variants = rows_per * (k + (1 if aug.keep_original else 0)) - keep
        self.keep = keep
        self.stats = TextStats()
        self.step_text = {int(o): a for o, a in zip(res.origin, res.aug) if a is not None}

    def table(self) -> pa.Table:
        """Every train output row, in order (variants vary in number, so they are made before writing)."""
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(self.workers, _init_worker, (self.augmenter, self.recipe.seed)) if self.workers > 1 else None
        if pool is None:
            _init_worker(self.augmenter, self.recipe.seed, forked=False)
        batches, at = [], 0
        try:
            for batch in self.source.read(self.plan.train_positions[self.plan.origins], READ_BATCH_ROWS * 4):
                rows = batch.to_pylist()
                span = range(at, at + len(rows))
                at += len(rows)
                work = [(r[S.ID], r[S.TEXT], int(n)) for r, n in zip(rows, self.variants[span.start : span.stop])]
                tasks = [work[i : i + GROUPS_PER_TASK] for i in range(0, len(work), GROUPS_PER_TASK)]
                results = pool.map(_make_variants, tasks) if pool else [_make_variants(t) for t in tasks]
                batches.append(self._batch(rows, [item for chunk in results for item in chunk], span))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        return pa.Table.from_batches(batches) if batches else pa.Table.from_batches([], schema=_SCHEMA)

    def _batch(self, rows: list[dict], made, groups) -> pa.RecordBatch:
        ids, labels, texts, sources, synthetic, augs = [], [], [], [], [], []
        for row, (variants, same, lost), g in zip(rows, made, groups):
            self.stats.same += same
            self.stats.rejected += lost
            source_id = row.get(S.SOURCE_ID) or row[S.ID]
            label = int(self.labels[g])
            if self.keep[g]:
                ids.append(row[S.ID])
                labels.append(label)
                texts.append(row[S.TEXT])
                sources.append(source_id)
                synthetic.append(bool(row.get(S.SYNTHETIC)))
                augs.append(row.get(S.AUG))
            step = self.step_text.get(int(self.plan.origins[g]))
            tag = f"{AUG_PREFIX}{step}+{AUG_NAME}" if step and self.copies[g] else AUG_NAME
            for j, text in enumerate(variants, start=1):
                ids.append(f"{row[S.ID]}~a{j}")
                labels.append(label)
                texts.append(text)
                sources.append(source_id)
                synthetic.append(True)
                augs.append(tag)
        return pa.record_batch({
            S.ID: pa.array(ids, pa.string()), S.LABEL: pa.array(labels, pa.int64()),
            S.TEXT: pa.array(texts, pa.large_string()), S.SOURCE_ID: pa.array(sources, pa.string()),
            S.SYNTHETIC: pa.array(synthetic, pa.bool_()), S.AUG: pa.array(augs, pa.string()),
            S.SPLIT: S.split_names(np.full(len(ids), S.TRAIN)),
        })


def plan_text_balance(source: Source, recipe: Recipe, rows: RowPlan) -> BalancePlan:
    """The balanced train split of a text build."""
    return plan_balance(source, recipe.strategy, seed=recipe.seed, rows=rows)
