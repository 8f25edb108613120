"""`augforge build`: source -> clean -> balance -> augment -> shards, from one recipe, offline.

Stages:

1. **source**: the recipe's source, split (stratified, seeded) and, for demos, made long-tailed.
2. **clean**: exact duplicates by content hash are dropped (the first occurrence is kept) and listed
   in the manifest; unreadable images were already excluded and listed by the source.
3. **balance**: the train split is resampled with the recipe's strategy; image rows are copied
   (``over``) or dropped (``under``), the copies marked synthetic.
4. **augment**: each train row after balancing yields ``copies + 1`` rows (``copies`` without
   ``keep_original``). An original row keeps its pixels in the first of them; a balance copy,
   identical to its source, gets only augmented variants, so the balance is kept exactly.
5. **shards**: the shard store's atomic, resumable writer.

Determinism: output rows are cut into chunks of ``CHUNK_ROWS``; chunk ``c`` is augmented by a
fresh DALI pipeline seeded from (recipe seed, c). A chunk's output depends only on the recipe and
its rows, so two builds are identical, and a build resumed after ``kill -9`` (from the chunk
holding its first missing row) equals an uninterrupted one.

Val and test rows pass through with their pixels unchanged: re-encoded losslessly for png and raw
outputs, their source bytes kept for jpeg.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import xxhash
from PIL import Image

from augforge.augment.backend import backend_version, image_augmenter
from augforge.augment.image import resolve_device
from augforge.augment.image_ops import OPS_VERSION, check_op_list
from augforge.augment.ops import op_dicts
from augforge.balance.apply import AUG_PREFIX, BalancePlan, plan_balance
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS, WriteResult, content_parts, fingerprint, manifest_meta, \
    with_provenance, write_dataset
from augforge.datasets.plan import RowPlan, plan_rows
from augforge.datasets.sources import open_source
from augforge.datasets.sources.base import Problem, Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.datasets.writer import complete_manifest
from augforge.errors import AugforgeError
from augforge.checks import RecipeError
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


class Encoder:
    """Decoded pixels to the recipe's payload encoding: png, jpeg (quality) or raw HWC uint8 bytes."""

    def __init__(self, fmt: str, quality: int, threads: int) -> None:
        self.fmt = fmt
        self.quality = quality
        self.shape: tuple[int, ...] | None = None
        self._pool = ThreadPoolExecutor(max(1, threads))

    def encode_one(self, pixels: np.ndarray) -> bytes:
        """One image's payload bytes."""
        image = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
        if self.fmt == "raw":
            return np.ascontiguousarray(pixels).tobytes()
        buf = io.BytesIO()
        if self.fmt == "png":
            Image.fromarray(image).save(buf, format="PNG", compress_level=6)
        else:
            Image.fromarray(image).save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()

    def encode(self, images: list[np.ndarray], ids: list[str]) -> list[bytes]:
        """Payloads of ``images`` (raw needs every image the same shape; the row is named if not)."""
        if self.fmt == "raw":
            for pixels, row_id in zip(images, ids):
                if self.shape is None:
                    self.shape = pixels.shape
                elif pixels.shape != self.shape:
                    raise AugforgeError(
                        f"row {row_id!r} is {'x'.join(map(str, pixels.shape))} but output.format raw needs every "
                        f"image {'x'.join(map(str, self.shape))}; end augment.image with resize or center_crop, "
                        "or use png"
                    )
        return list(self._pool.map(self.encode_one, images))

    def close(self) -> None:
        """Stop the encoding threads."""
        self._pool.shutdown()


@dataclass
class BuildResult:
    """What a build did."""

    write: WriteResult
    plan: BalancePlan
    duplicates: int
    augmented: int
    device: str
    engine: dict | None = None  # a distributed build's units per node and worker processes


class _TrainWriter:
    """Produces the train output rows chunk by chunk (see the module docstring)."""

    def __init__(self, recipe: Recipe, source: Source, plan: BalancePlan, out: OutputPlan, encoder: Encoder,
                 threads: int) -> None:
        self.recipe, self.source, self.plan, self.out, self.encoder = recipe, source, plan, out, encoder
        self.threads = threads
        self.device = resolve_device(recipe.augment.device)
        self.decoder = image_augmenter((), color=recipe.augment.color, device=self.device, threads=threads,
                                       decode_only=True)

    def _group_of(self, row: int) -> int:
        """The origin group (index into plan.origins) of output row ``row``."""
        return int(np.searchsorted(self.out.group_end, row, side="right"))

    def rows(self, skip: int) -> Iterator[pa.RecordBatch]:
        """Output rows from ``skip`` on, a chunk per batch; the source is read once, in order."""
        total = len(self.out.balanced)
        origins = self.plan.origins
        first = (skip // CHUNK_ROWS) * CHUNK_ROWS
        loaded = self._group_of(first)
        reader = iter(self.source.read(self.plan.train_positions[origins[loaded:]], READ_BATCH_ROWS))
        cache: dict[int, dict] = {}  # origin -> its source row, for the groups of the current chunk
        for start in range(first, total, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, total)
            last = self._group_of(stop - 1)
            while loaded <= last:
                for row in next(reader).to_pylist():
                    cache[int(origins[loaded])] = row
                    loaded += 1
            yield self._chunk(start, stop, cache).slice(max(skip - start, 0))
            for origin in [o for o in cache if o < origins[last]]:
                del cache[origin]

    def chunk(self, index: int) -> pa.RecordBatch:
        """Chunk ``index`` on its own, reading just its source rows: what a distributed worker runs. Equal to
        the same chunk of ``rows``."""
        start = index * CHUNK_ROWS
        stop = min(start + CHUNK_ROWS, len(self.out.balanced))
        first, last = self._group_of(start), self._group_of(stop - 1)
        origins = self.plan.origins[first : last + 1]
        rows = [row for batch in self.source.read(self.plan.train_positions[origins], READ_BATCH_ROWS)
                for row in batch.to_pylist()]
        return self._chunk(start, stop, {int(o): row for o, row in zip(origins, rows)})

    def _chunk(self, start: int, stop: int, cache: dict[int, dict]) -> pa.RecordBatch:
        res, out = self.plan.result, self.out
        picked = out.balanced[start:stop]
        origin = res.origin[picked]
        rows = [cache[int(o)] for o in origin]
        augmented = out.augmented[start:stop]
        images: list = [None] * len(rows)
        seed = int(xxhash.xxh3_64_intdigest(f"augment\x00{start // CHUNK_ROWS}".encode(), self.recipe.augment_seed))
        aug_index = np.flatnonzero(augmented)
        if len(aug_index):
            augmenter = image_augmenter(self.recipe.augment.image, color=self.recipe.augment.color,
                                        device=self.device, seed=seed, threads=self.threads)
            for i, pixels in zip(aug_index, augmenter.augment([rows[i][S.IMAGE] for i in aug_index])):
                images[i] = pixels
            augmenter.close()
        plain_index = np.flatnonzero(~augmented)
        ids = []
        for i, row in enumerate(rows):
            variant = int(out.variant[start + i])
            ids.append(row[S.ID] if variant == 0 and not augmented[i] else f"{row[S.ID]}~a{variant}")
        payloads = self._plain_payloads([rows[i] for i in plain_index], [ids[i] for i in plain_index])
        encoded = self.encoder.encode([images[i] for i in aug_index], [ids[i] for i in aug_index])
        payload: list = [None] * len(rows)
        for i, data in zip(plain_index, payloads):
            payload[i] = data
        for i, data in zip(aug_index, encoded):
            payload[i] = data
        from_copy = res.synthetic[picked]
        aug = []
        for i, row in enumerate(rows):
            if augmented[i]:
                aug.append(f"{AUG_PREFIX}{res.aug[picked[i]]}+{AUG_NAME}" if from_copy[i] else AUG_NAME)
            elif from_copy[i]:
                aug.append(f"{AUG_PREFIX}{res.aug[picked[i]]}")
            else:
                aug.append(row.get(S.AUG))
        return pa.record_batch({
            S.ID: pa.array(ids, pa.string()),
            S.LABEL: pa.array(res.y[picked], pa.int64()),
            S.IMAGE: pa.array(payload, pa.binary()),
            S.SOURCE_ID: pa.array([row.get(S.SOURCE_ID) or row[S.ID] for row in rows], pa.string()),
            S.SYNTHETIC: pa.array([bool(row.get(S.SYNTHETIC)) or bool(a) or bool(c)
                                   for row, a, c in zip(rows, augmented, from_copy)]),
            S.AUG: pa.array(aug, pa.string()),
            S.SPLIT: S.split_names(np.full(len(rows), S.TRAIN)),
        })

    def lossless(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Val/test images re-encoded without loss (png, raw); jpeg output keeps their source bytes."""
        if self.encoder.fmt == "jpeg":
            return batch
        pixels = self.decoder.augment(batch.column(S.IMAGE).to_pylist())
        columns = {n: batch.column(n) for n in batch.schema.names}
        columns[S.IMAGE] = pa.array(self.encoder.encode(pixels, batch.column(S.ID).to_pylist()), pa.binary())
        return pa.record_batch(columns)

    def _plain_payloads(self, rows: list[dict], ids: list[str]) -> list[bytes]:
        """Rows kept as they are: their bytes for jpeg output, losslessly re-encoded pixels otherwise."""
        if not rows:
            return []
        if self.encoder.fmt == "jpeg":
            return [row[S.IMAGE] for row in rows]
        return self.encoder.encode(self.decoder.augment([row[S.IMAGE] for row in rows]), ids)


@dataclass
class ChunkJob:
    """What a distributed worker needs: the recipe, the source, the plans, and the val/test rows."""

    recipe: Recipe
    source: Source
    plan: BalancePlan
    outputs: OutputPlan
    other_positions: np.ndarray
    other_splits: np.ndarray


def chunk_worker(job: ChunkJob) -> Callable[[tuple[str, int]], tuple[pa.RecordBatch, tuple | None]]:
    """The per-actor state of a distributed image build (one decoder, one encoder, one thread). The returned
    function makes a unit, ``("train", chunk index)`` or ``("other", first val/test row)``, and returns it with
    the raw shape its images had (None for png/jpeg)."""
    encoder = Encoder(job.recipe.output.format, job.recipe.output.quality, 1)
    writer = _TrainWriter(job.recipe, job.source, job.plan, job.outputs, encoder, 1)

    def run(unit: tuple[str, int]) -> tuple[pa.RecordBatch, tuple | None]:
        kind, at = unit
        if kind == "train":
            return writer.chunk(at), encoder.shape
        span = slice(at, at + READ_BATCH_ROWS)
        batch = next(_passthrough(job.source, job.other_positions[span], job.other_splits[span], 0, writer.lossless))
        return batch, encoder.shape

    return run


def _distributed_rows(engine, job: ChunkJob, encoder: Encoder, skip: int) -> Iterator[pa.RecordBatch]:
    """Every output row from ``skip`` on: the train chunks, then the val/test rows a batch at a time, made on
    the engine's workers and received in order."""
    n_train = len(job.outputs.balanced)
    units = [("train", c) for c in range(skip // CHUNK_ROWS, -(-n_train // CHUNK_ROWS))] if skip < n_train else []
    units += [("other", at) for at in range(max(skip - n_train, 0), len(job.other_positions), READ_BATCH_ROWS)]
    for (kind, at), (batch, shape) in zip(units, engine.map_ordered(chunk_worker, job, units)):
        if shape is not None:  # raw output: every worker's images must share the first one's shape
            if encoder.shape is None:
                encoder.shape = shape
            elif tuple(shape) != tuple(encoder.shape):
                raise AugforgeError(
                    f"row {batch.column(S.ID)[0].as_py()!r} is {'x'.join(map(str, shape))} but output.format raw "
                    f"needs every image {'x'.join(map(str, encoder.shape))}; end augment.image with resize or "
                    "center_crop, or use png")
        yield batch.slice(max(skip - at * CHUNK_ROWS, 0)) if kind == "train" else batch


def build(recipe: Recipe, out: str | Path | None = None, *, workers: int = 2, overwrite: bool = False,
          on_stage: Callable[[str], None] | None = None, on_rows: Callable[[int], None] | None = None,
          on_total: Callable[[int], None] | None = None, engine=None) -> BuildResult:
    """Run the recipe's whole chain into the dataset directory ``out`` (default: the recipe's output.dir).
    ``engine`` (an ``augforge.engine.EngineSpec``) runs the augmentation on Ray instead of here;
    the output is the same bytes."""
    from augforge.engine import open_engine

    with open_engine(engine) as runner:
        result = _build(recipe, out, workers=workers, overwrite=overwrite, on_stage=on_stage, on_rows=on_rows,
                        on_total=on_total, engine=runner)
        if runner is not None:
            result.engine = {"name": "ray", "units": sum(runner.nodes.values()), "nodes": dict(runner.nodes),
                             "worker_processes": len(runner.processes)}
    return result


def _build(recipe: Recipe, out, *, workers: int, overwrite: bool, on_stage, on_rows, on_total,
           engine) -> BuildResult:
    """``build`` with the engine opened (None: local)."""
    stage = on_stage or (lambda _: None)
    out = out or recipe.output.dir
    if not out:
        raise RecipeError(f"{recipe.file}: output.dir: missing; set it in the recipe or pass --out")
    if workers < 1:
        raise AugforgeError(f"--workers {workers}: expected at least 1")
    source = recipe_source(recipe)
    aug = recipe.augment
    if source.payload == S.TEXT:
        if aug.image:
            raise RecipeError(f"{recipe.file}: augment.image: {source.location} holds text; use augment.text ops")
        return _build_text(recipe, source, out, workers=workers, overwrite=overwrite, stage=stage,
                           on_rows=on_rows, on_total=on_total, engine=engine)
    if source.payload == S.FEATURES:
        if engine is not None:
            raise AugforgeError(f"--engine ray distributes image and text builds; {source.location} holds feature "
                                "rows, which build here (use --engine local)")
        return _build_features(recipe, source, out, overwrite=overwrite, stage=stage, on_rows=on_rows,
                               on_total=on_total)
    if source.payload != S.IMAGE:
        raise RecipeError(f"{recipe.file}: source.path: {source.location} holds {source.payload} rows, which a "
                          "build cannot write")
    if aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: {source.location} holds images; use augment.image ops")
    offline = aug.image if aug.mode == "offline" else ()  # online: the loader runs the ops every epoch
    check_op_list(aug.image, aug.color, recipe.file, encoded_output=bool(offline))
    splits, imbalance, plan, problems, duplicates, other_positions, other_splits = _plan_train(
        recipe, source, stage, "cleaning: hashing {:,} rows")
    names = list(source.class_names)
    outputs = plan_outputs(plan, lambda label: aug.copies_for(names[label]), aug.keep_original, bool(offline))
    encoder = Encoder(recipe.output.format, recipe.output.quality, workers)
    train = _TrainWriter(recipe, source, plan, outputs, encoder, workers)
    n_train = len(outputs.balanced)
    after = np.bincount(plan.result.y[outputs.balanced], minlength=len(names))

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if engine is not None:
            job = ChunkJob(recipe, source, plan, outputs, other_positions, other_splits)
            yield from _distributed_rows(engine, job, encoder, skip)
            return
        if skip < n_train:
            yield from train.rows(skip)
        yield from _passthrough(source, other_positions, other_splits, max(skip - n_train, 0), train.lossless)

    parts = content_parts(source, splits, imbalance, recipe.seed, recipe.output.shard_rows, recipe.output.shard_mb,
                          job="build", recipe=recipe.fingerprint_parts(), images=backend_version(),
                          ops_version=OPS_VERSION, chunk_rows=CHUNK_ROWS)
    meta = _build_meta(recipe, source, splits, imbalance, plan, names, after, duplicates, problems,
                       train.device, {"augmented": int(outputs.augmented.sum()), "images": backend_version()})
    meta["payload_info"] = {"encoding": recipe.output.format, "channels": 1 if aug.color == "gray" else 3,
                            **({"quality": recipe.output.quality} if recipe.output.format == "jpeg" else {})}
    def raw_shape() -> dict:
        """raw payloads are read back with their shape: it goes into the one manifest write."""
        if recipe.output.format != "raw" or encoder.shape is None:
            return {}
        height, width, channels = encoder.shape
        return {"payload_info": {"height": height, "width": width, "channels": channels}}

    stage(f"augmenting and writing {n_train + len(other_positions):,} rows ({train.device if engine is None else 'Ray'})")
    try:
        result = write_dataset(out, source.schema(), names, parts=parts, meta=meta,
                               total_rows=n_train + len(other_positions), batches=batches,
                               shard_rows=recipe.output.shard_rows, shard_mb=recipe.output.shard_mb,
                               overwrite=overwrite, on_rows=on_rows, on_total=on_total, learned=raw_shape)
    finally:
        encoder.close()
    return BuildResult(result, plan, duplicates, int(outputs.augmented.sum()), train.device)


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


def _passthrough(source: Source, positions: np.ndarray, splits: np.ndarray, skip: int,
                 convert=None) -> Iterator[pa.RecordBatch]:
    """Val/test rows from row ``skip`` on, with provenance, optionally converted (``convert(batch)``)."""
    done = skip
    for batch in source.read(positions[skip:], READ_BATCH_ROWS):
        batch = with_provenance(batch, splits[done : done + batch.num_rows])
        done += batch.num_rows
        yield convert(batch) if convert else batch


def _plan_train(recipe: Recipe, source: Source, stage, cleaning: str):
    """What image and text builds plan alike: the copies checked, the splits, the rows (exact duplicates
    dropped when the recipe says so, announced by ``cleaning`` formatted with the row count), and the
    balance plan of the train split. Returns (splits, imbalance, plan, problems, duplicates, val/test
    positions, their splits)."""
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
    stage("balancing the train split")
    plan = plan_balance(source, recipe.strategy, seed=recipe.seed, rows=rows)
    others = rows.splits != S.TRAIN
    return splits, imbalance, plan, problems, duplicates, rows.positions[others], rows.splits[others]


def _build_text(recipe: Recipe, source: Source, out, *, workers: int, overwrite: bool, stage, on_rows,
                on_total, engine=None) -> BuildResult:
    """The text build (augforge.pipelines.build_text)."""
    import tempfile

    from augforge.pipelines.build_text import TextTrain

    aug = recipe.augment
    if (aug.copies or aug.copies_per_class) and not aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: copies are asked for but no text ops are given")
    splits, imbalance, plan, problems, duplicates, other_positions, other_splits = _plan_train(
        recipe, source, stage, "cleaning {:,} texts")
    names = list(source.class_names)
    parts = content_parts(source, splits, imbalance, recipe.seed, recipe.output.shard_rows, recipe.output.shard_mb,
                          job="build", recipe=recipe.fingerprint_parts())
    done = None if overwrite else complete_manifest(out, fingerprint(parts))
    if done is not None:  # the variants are made before writing: do not make them again for a finished build
        return BuildResult(WriteResult(done, 0, 0, up_to_date=True), plan, duplicates,
                           int(done.get("build", {}).get("augmented", 0)), "cpu")
    corpus = [t for b in source.read(plan.train_positions, READ_BATCH_ROWS * 16) for t in b.column(S.TEXT).to_pylist()]
    stage(f"augmenting {len(plan.origins):,} texts with {f'{workers} process(es)' if engine is None else 'Ray'}")
    with tempfile.TemporaryDirectory(prefix="augforge-text-") as workdir:
        train = TextTrain(recipe, source, plan, workers, corpus, workdir)
        table = train.table(engine)

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if skip < table.num_rows:
            yield from table.slice(skip).to_batches(max_chunksize=READ_BATCH_ROWS * 8)
        yield from _passthrough(source, other_positions, other_splits, max(skip - table.num_rows, 0))

    after = np.bincount(np.asarray(table.column(S.LABEL)), minlength=len(names))
    meta = _build_meta(recipe, source, splits, imbalance, plan, names, after, duplicates, problems, "cpu",
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
    return BuildResult(result, plan, duplicates, meta["build"]["augmented"], "cpu")


def _build_features(recipe: Recipe, source: Source, out, *, overwrite: bool, stage, on_rows, on_total) -> BuildResult:
    """A feature table: split, then the balance strategy (SMOTE and the rest interpolate feature rows), no
    augmentation ops (they are image and text ops). The same writer as ``augforge balance`` and ``ingest``."""
    from augforge.balance.apply import balance_dataset
    from augforge.datasets.ingest import ingest

    aug = recipe.augment
    if aug.image or aug.text or aug.copies or aug.copies_per_class:
        raise RecipeError(f"{recipe.file}: augment: {source.location} holds feature rows; augment ops are image and "
                          "text ops (rebalance feature rows with balance.strategy, e.g. smote)")
    splits, imbalance = recipe_splits(recipe)
    options = dict(splits=splits, imbalance=imbalance, seed=recipe.seed, shard_rows=recipe.output.shard_rows,
                   shard_mb=recipe.output.shard_mb, overwrite=overwrite, on_rows=on_rows, on_total=on_total)
    if recipe.strategy:
        result, plan = balance_dataset(source, out, recipe.strategy, on_stage=stage, **options)
        return BuildResult(result, plan, 0, 0, "cpu")
    stage("writing the feature rows")
    return BuildResult(ingest(source, out, **options), None, 0, 0, "cpu")


def _build_meta(recipe: Recipe, source: Source, splits, imbalance, plan: BalancePlan, names: list[str],
                after: np.ndarray, duplicates: int, problems: list[Problem], device: str, extra: dict) -> dict:
    """The manifest keys of a build: the recipe, and what each stage did."""
    aug = recipe.augment
    ops = aug.image or aug.text
    meta = manifest_meta(source, splits, imbalance, recipe.seed, build={
        "recipe_file": recipe.file,
        "device": device,
        "copies": {n: aug.copies_for(n) for n in names},
        "keep_original": aug.keep_original,
        "mode": aug.mode,
        "ops": op_dicts(ops),
        "duplicates_dropped": duplicates,
        "balance": {"strategy": recipe.strategy, "before": dict(zip(names, plan.before.tolist())),
                    "after": dict(zip(names, plan.after.tolist()))},
        "after_augment": dict(zip(names, after.tolist())),
        **extra,
    })
    meta["recipe"] = recipe.data
    meta["problems"] = [p.to_dict() for p in problems]
    meta["warnings"] = list(source.warnings)
    return meta
