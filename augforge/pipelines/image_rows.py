"""The image half of `augforge build`: the train rows augmented chunk by chunk (locally or on the engine's
workers), val/test rows re-encoded losslessly, all encoded to the recipe's payload format.

Determinism: output rows are cut into chunks of ``CHUNK_ROWS``; chunk ``c`` is augmented by a fresh DALI
pipeline seeded from (recipe seed, c). A chunk's output depends only on the recipe and its rows, so two builds
are identical, and a build resumed after ``kill -9`` (from the chunk holding its first missing row) equals an
uninterrupted one.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from augforge.augment.backend import backend_version, image_augmenter
from augforge.augment.image import resolve_device
from augforge.augment.image_ops import OPS_VERSION, check_op_list
from augforge.balance.apply import AUG_PREFIX, BalancePlan
from augforge.datasets import schema as S
from augforge.datasets.keys import derive_seed
from augforge.datasets.ingest import READ_BATCH_ROWS, content_parts, write_dataset
from augforge.datasets.sources.base import Source
from augforge.checks import RecipeError
from augforge.errors import AugforgeError
from augforge.pipelines.build_plan import AUG_NAME, CHUNK_ROWS, BuildResult, OutputPlan, build_meta, passthrough, \
    plan_outputs, plan_train
from augforge.recipe import Recipe


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



class ImageTrainRows:
    """Makes the train output rows of an image build chunk by chunk (see the module docstring)."""

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
        seed = derive_seed(self.recipe.augment_seed, "augment", start // CHUNK_ROWS)
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
    writer = ImageTrainRows(job.recipe, job.source, job.plan, job.outputs, encoder, 1)

    def run(unit: tuple[str, int]) -> tuple[pa.RecordBatch, tuple | None]:
        kind, at = unit
        if kind == "train":
            return writer.chunk(at), encoder.shape
        span = slice(at, at + READ_BATCH_ROWS)
        batch = next(passthrough(job.source, job.other_positions[span], job.other_splits[span], 0, writer.lossless))
        return batch, encoder.shape

    return run


def distributed_rows(engine, job: ChunkJob, encoder: Encoder, skip: int) -> Iterator[pa.RecordBatch]:
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




def build_images(recipe: Recipe, source: Source, out: str | Path, *, workers: int, overwrite: bool,
                 stage: Callable[[str], None], on_rows, on_total, engine) -> BuildResult:
    """The image build of ``augforge.pipelines.build.build`` (``engine``: an open Ray engine, or None)."""
    aug = recipe.augment
    if aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: {source.location} holds images; use augment.image ops")
    offline = aug.image if aug.mode == "offline" else ()  # online: the loader runs the ops every epoch
    check_op_list(aug.image, aug.color, recipe.file, encoded_output=bool(offline))
    planned = plan_train(recipe, source, stage, "cleaning: hashing {:,} rows")
    plan, other_positions, other_splits = planned.balance, planned.other_positions, planned.other_splits
    names = list(source.class_names)
    outputs = plan_outputs(plan, lambda label: aug.copies_for(names[label]), aug.keep_original, bool(offline))
    encoder = Encoder(recipe.output.format, recipe.output.quality, workers)
    train = ImageTrainRows(recipe, source, plan, outputs, encoder, workers)
    n_train = len(outputs.balanced)
    after = np.bincount(plan.result.y[outputs.balanced], minlength=len(names))

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if engine is not None:
            job = ChunkJob(recipe, source, plan, outputs, other_positions, other_splits)
            yield from distributed_rows(engine, job, encoder, skip)
            return
        if skip < n_train:
            yield from train.rows(skip)
        yield from passthrough(source, other_positions, other_splits, max(skip - n_train, 0), train.lossless)

    parts = content_parts(source, planned.splits, planned.imbalance, recipe.seed, recipe.output.shard_rows,
                          recipe.output.shard_mb, job="build", recipe=recipe.fingerprint_parts(),
                          images=backend_version(), ops_version=OPS_VERSION, chunk_rows=CHUNK_ROWS)
    meta = build_meta(recipe, source, planned, names, after, train.device,
                      {"augmented": int(outputs.augmented.sum()), "images": backend_version()})
    meta["payload_info"] = {"encoding": recipe.output.format, "channels": 1 if aug.color == "gray" else 3,
                            **({"quality": recipe.output.quality} if recipe.output.format == "jpeg" else {})}

    def raw_shape() -> dict:
        """raw payloads are read back with their shape: it goes into the one manifest write."""
        if recipe.output.format != "raw" or encoder.shape is None:
            return {}
        height, width, channels = encoder.shape
        return {"payload_info": {"height": height, "width": width, "channels": channels}}

    where = train.device if engine is None else "Ray"
    stage(f"augmenting and writing {n_train + len(other_positions):,} rows ({where})")
    try:
        result = write_dataset(out, source.schema(), names, parts=parts, meta=meta,
                               total_rows=n_train + len(other_positions), batches=batches,
                               shard_rows=recipe.output.shard_rows, shard_mb=recipe.output.shard_mb,
                               overwrite=overwrite, on_rows=on_rows, on_total=on_total, learned=raw_shape)
    finally:
        encoder.close()
    return BuildResult(result, plan, planned.duplicates, int(outputs.augmented.sum()), train.device)
