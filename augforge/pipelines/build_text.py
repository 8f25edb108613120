"""The text half of `augforge build`: source -> clean -> balance -> n variants per row -> shards.

- **clean**: empty texts, exact duplicates and duplicates up to whitespace are dropped and listed;
- **balance**: the train split is resampled (``over`` copies, ``under``);
- **augment**: each balanced row yields ``copies + 1`` rows. An original keeps its text in the first;
  a balance copy gets only variants. Variants identical to their source or to an earlier variant of
  the same source (up to whitespace and punctuation: ``augforge.augment.words.surface``), and variants
  that lost a protected token, are dropped and counted;
- **shards**: the shard store's writer, resumable like every build.

The variants of source row ``r`` are drawn in sequence from one generator seeded from (seed, r's id),
so variant ``j`` is fixed by (seed, r's id, j) and the output does not depend on batching or on
``--workers`` (processes share the work in order).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from augforge.augment.text import TextAugmenter, build_text_augmenter
from augforge.augment.words import surface
from augforge.balance.apply import AUG_PREFIX, BalancePlan
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS
from augforge.datasets.sources.base import Source
from augforge.pipelines.build import AUG_NAME, plan_outputs
from augforge.recipe import Recipe

_SCHEMA = S.dataset_schema(S.TEXT)
#: Source rows per unit of work handed to a worker process.
GROUPS_PER_TASK = 256


def variant_key(seed: int, row_id: str, j: int) -> int:
    """The seed of variant ``j`` of source row ``row_id``."""
    return xxhash.xxh3_64_intdigest(f"text\x00{row_id}\x00{j}".encode(), int(seed) & 0xFFFFFFFFFFFFFFFF)


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
        seen, variants, same, lost = {surface(text)}, [], 0, 0
        # variant j: the j-th draw sequence of one generator seeded from (seed, row id)
        for v in augmenter.variants(text, n, variant_key(seed, row_id, 0)):
            if v is None:
                lost += 1
            elif (bare := surface(v)) in seen or not bare:  # differs at most in whitespace or punctuation
                same += 1
            else:
                seen.add(bare)
                variants.append(v)
        out.append((variants, same, lost))
    return out


@dataclass
class TextJob:
    """What a distributed worker needs to vary texts: the ops, the protection, the corpus, the seed."""

    ops: tuple
    protect: object  # augforge.recipe.Protect
    min_words: int
    corpus: list
    seed: int

    def augmenter(self, workdir) -> TextAugmenter:
        """The recipe's text augmenter, its TF-IDF model (if any) fitted on the corpus into ``workdir``."""
        return build_text_augmenter(self.ops, self.protect, self.min_words, self.corpus, workdir)


def text_worker(job: TextJob):
    """The per-actor state of a distributed text build: the augmenter, built from the job as the driver
    builds it (the same ops fitted on the same corpus); returns ``_make_variants``. The TF-IDF model is
    loaded when the augmenter is made, so its folder goes when the augmenter is built."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="augforge-text-worker-") as workdir:
        _init_worker(job.augmenter(workdir), job.seed, forked=False)
    return _make_variants


@dataclass
class TextStats:
    """What the augmentation dropped."""

    same: int = 0
    rejected: int = 0


class TextTrain:
    """The train output rows of a text build, in order, made by ``workers`` processes."""

    def __init__(self, recipe: Recipe, source: Source, plan: BalancePlan, workers: int, corpus: list[str],
                 workdir) -> None:
        self.recipe, self.source, self.plan, self.workers, self.corpus = recipe, source, plan, workers, corpus
        aug = recipe.augment
        self.workdir = workdir
        names = list(source.class_names)
        res = plan.result
        # the same expansion as image builds, one group of output rows per source row
        out = plan_outputs(plan, lambda label: aug.copies_for(names[label]), aug.keep_original, has_ops=True)
        per_group = np.diff(np.r_[0, out.group_end])
        group = np.repeat(np.arange(len(per_group)), per_group)
        #: variants to try per source row; its own text is kept too when one of its outputs is not augmented
        self.variants = np.bincount(group, weights=out.augmented, minlength=len(per_group)).astype(np.int64)
        self.keep = per_group > self.variants
        self.labels = res.y[out.balanced[out.group_end - per_group]]
        # variants of a row that balancing copied are tagged with the balance step as well
        step = np.full(len(per_group), None, dtype=object)
        from_copy = np.flatnonzero(res.synthetic[out.balanced])
        step[group[from_copy]] = res.aug[out.balanced[from_copy]]
        self.tags = [f"{AUG_PREFIX}{st}+{AUG_NAME}" if st else AUG_NAME for st in step]
        self.stats = TextStats()

    def table(self, engine=None) -> pa.Table:
        """Every train output row, in order (variants vary in number, so they are made before writing), by
        ``workers`` local processes or, with an ``engine``, by its workers."""
        rows = [row for batch in self.source.read(self.plan.train_positions[self.plan.origins], READ_BATCH_ROWS * 4)
                for row in batch.to_pylist()]
        work = [(r[S.ID], r[S.TEXT], int(n)) for r, n in zip(rows, self.variants)]
        tasks = [work[i : i + GROUPS_PER_TASK] for i in range(0, len(work), GROUPS_PER_TASK)]
        aug = self.recipe.augment
        job = TextJob(aug.text, aug.protect, aug.min_words, self.corpus, self.recipe.augment_seed)
        results = list(engine.map_ordered(text_worker, job, tasks)) if engine is not None else self._local(job, tasks)
        made = [item for chunk in results for item in chunk]
        batches = [self._batch(rows[at : at + READ_BATCH_ROWS * 4], made[at : at + READ_BATCH_ROWS * 4],
                               range(at, min(at + READ_BATCH_ROWS * 4, len(rows))))
                   for at in range(0, len(rows), READ_BATCH_ROWS * 4)]
        return pa.Table.from_batches(batches) if batches else pa.Table.from_batches([], schema=_SCHEMA)

    def _local(self, job: TextJob, tasks: list) -> list:
        """``_make_variants`` of every task, in order, in ``workers`` forked processes (or this one)."""
        augmenter = job.augmenter(self.workdir)
        if self.workers <= 1:
            _init_worker(augmenter, job.seed, forked=False)
            return [_make_variants(t) for t in tasks]
        pool = multiprocessing.get_context("fork").Pool(self.workers, _init_worker, (augmenter, job.seed))
        try:
            return pool.map(_make_variants, tasks)
        finally:
            pool.close()
            pool.join()

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
            tag = self.tags[g]
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
