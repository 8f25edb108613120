"""The text half of `augforge build` (``build_texts``): source -> clean -> balance -> n variants per row -> shards.

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
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from augforge.augment.text import TextAugmenter, build_text_augmenter
from augforge.augment.wordnet import reopen_after_fork
from augforge.augment.words import surface
from augforge.balance.apply import AUG_PREFIX, BalancePlan
from augforge.datasets import schema as S
from augforge.checks import RecipeError
from augforge.datasets.keys import derive_seed
from augforge.datasets.ingest import READ_BATCH_ROWS, WriteResult, content_parts, fingerprint, write_dataset
from augforge.datasets.sources.base import Source
from augforge.datasets.writer import complete_manifest
from augforge.errors import OptionError
from augforge.pipelines.build_plan import AUG_NAME, BuildResult, build_meta, passthrough, plan_outputs, plan_train
from augforge.recipe import Recipe

_SCHEMA = S.dataset_schema(S.TEXT)
#: Source rows per unit of work handed to a worker process.
GROUPS_PER_TASK = 256


def variant_key(seed: int, row_id: str, j: int) -> int:
    """The seed of variant ``j`` of source row ``row_id``."""
    return derive_seed(seed, "text", row_id, j)


_WORKER: dict = {}


def init_variant_worker(augmenter: TextAugmenter, seed: int, forked: bool = True) -> None:
    """Set up a process that makes variants (``make_variants``) with ``augmenter``; a forked one reopens
    WordNet's files, which it must not share with its parent."""
    if forked:
        reopen_after_fork()
    _WORKER["augmenter"], _WORKER["seed"] = augmenter, seed


def make_variants(group_texts: list[tuple[str, str, int]]) -> list[tuple[list[str], int, int]]:
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
    builds it (the same ops fitted on the same corpus); returns ``make_variants``. The TF-IDF model is
    loaded when the augmenter is made, so its folder goes when the augmenter is built."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="augforge-text-worker-") as workdir:
        init_variant_worker(job.augmenter(workdir), job.seed, forked=False)
    return make_variants


@dataclass
class TextStats:
    """What the augmentation dropped."""

    same: int = 0
    rejected: int = 0


class TextTrainRows:
    """Makes the train output rows of a text build, in order, by ``workers`` processes."""

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
        """``make_variants`` of every task, in order, in ``workers`` forked processes (or this one)."""
        augmenter = job.augmenter(self.workdir)
        if self.workers <= 1:
            init_variant_worker(augmenter, job.seed, forked=False)
            return [make_variants(t) for t in tasks]
        # a pool that notices a dead worker (killed, out of memory): multiprocessing.Pool would wait forever
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=init_variant_worker, initargs=(augmenter, job.seed)) as pool:
            try:
                return list(pool.map(make_variants, tasks))
            except BrokenProcessPool:
                raise OptionError("text augmentation: a worker process died (killed, or out of memory?); rerun "
                                  "with fewer {workers} than {n}", n=self.workers) from None

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


def build_texts(recipe: Recipe, source: Source, out: str | Path, *, workers: int, overwrite: bool,
                stage: Callable[[str], None], on_rows, on_total, engine=None) -> BuildResult:
    """The text build of ``augforge.pipelines.build.build`` (``engine``: an open Ray engine, or None)."""
    aug = recipe.augment
    if (aug.copies or aug.copies_per_class) and not aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: copies are asked for but no text ops are given")
    planned = plan_train(recipe, source, stage, "cleaning {:,} texts")
    plan, other_positions, other_splits = planned.balance, planned.other_positions, planned.other_splits
    if not aug.text and (np.asarray(plan.after) > np.asarray(plan.before)).any():
        raise RecipeError(f"{recipe.file}: balance.strategy {recipe.strategy}: a balance copy of a text keeps only "
                          "its augmented variants (a copy identical to its source is dropped), and no augment.text "
                          "ops are given, so no copy would remain; add text ops, or correct the imbalance in the "
                          "loss (train.class_weights: balanced, train.posthoc_tau: auto)")
    names = list(source.class_names)
    parts = content_parts(source, planned.splits, planned.imbalance, recipe.seed, recipe.output.shard_rows,
                          recipe.output.shard_mb, job="build", recipe=recipe.fingerprint_parts())
    done = None if overwrite else complete_manifest(out, fingerprint(parts))
    if done is not None:  # the variants are made before writing: do not make them again for a finished build
        return BuildResult(WriteResult(done, 0, 0, up_to_date=True), plan, planned.duplicates,
                           int(done.get("build", {}).get("augmented", 0)), "cpu")
    corpus = [t for b in source.read(plan.train_positions, READ_BATCH_ROWS * 16) for t in b.column(S.TEXT).to_pylist()]
    stage(f"augmenting {len(plan.origins):,} texts with {f'{workers} process(es)' if engine is None else 'Ray'}")
    with tempfile.TemporaryDirectory(prefix="augforge-text-") as workdir:
        train = TextTrainRows(recipe, source, plan, workers, corpus, workdir)
        table = train.table(engine)

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if skip < table.num_rows:
            yield from table.slice(skip).to_batches(max_chunksize=READ_BATCH_ROWS * 8)
        yield from passthrough(source, other_positions, other_splits, max(skip - table.num_rows, 0))

    after = np.bincount(np.asarray(table.column(S.LABEL)), minlength=len(names))
    meta = build_meta(recipe, source, planned, names, after, "cpu",
                      {"variants_dropped_as_same": train.stats.same,
                       "variants_rejected": train.stats.rejected,
                       "augmented": int(sum(a is not None and a.endswith(AUG_NAME) for a in
                                            table.column(S.AUG).to_pylist()))})
    meta["payload_info"] = source.payload_info()
    stage(f"writing {table.num_rows + len(other_positions):,} rows")
    result = write_dataset(out, source.schema(), names, parts=parts, meta=meta,
                           total_rows=table.num_rows + len(other_positions), batches=batches,
                           shard_rows=recipe.output.shard_rows, shard_mb=recipe.output.shard_mb, overwrite=overwrite,
                           on_rows=on_rows, on_total=on_total)
    return BuildResult(result, plan, planned.duplicates, meta["build"]["augmented"], "cpu")
