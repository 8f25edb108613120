"""The dense half of `augforge build`: a detection or segmentation set's train rows augmented with their boxes,
polygons, masks and keypoints (``augforge.augment.dense_ops.DenseAugment``, under ``augment.targets``' frame
policy), val/test rows passed through as they are.

Each augmented row is drawn from its own generator, seeded from (augment seed, row id, variant): a row's output
depends on nothing else, so two builds are byte-identical and a build resumed after ``kill -9`` equals an
uninterrupted one. On a GPU (``augment.device``: auto finds it) DALI moves each chunk's pixels, masks and points
(``augforge.augment.dense_dali``); its pixels differ from the CPU path's by the kernels' rounding. Kept originals
and val/test rows keep their source bytes; augmented rows are encoded in ``output.format`` (png or jpeg). An
augmented copy keeps its origin's ``label`` (the rarest instance class of the origin image: the split and balance
unit), while its targets are what the geometry left.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from augforge.augment.copy_paste import paste_from, pasteable, render_paste
from augforge.augment.image import resolve_device
from augforge.augment.mosaic import mosaic
from augforge.augment.target_geometry import Moved
from augforge.balance.apply import AUG_PREFIX
from augforge.balance.instance_strategies import instance_strategy
from augforge.balance.instances import instance_classes
from augforge.augment.image_ops import OPS_VERSION, check_op_list
from augforge.checks import RecipeError
from augforge.datasets import schema as S
from augforge.datasets.ingest import READ_BATCH_ROWS, content_parts, write_dataset
from augforge.datasets.keys import row_rng
from augforge.datasets.sources.base import Source
from augforge.datasets.targets import (IMAGE_LABELS, SEMANTIC, decode_semantic, encode_semantic, from_columns,
                                       to_columns)
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.build_plan import AUG_NAME, BuildResult, build_meta, passthrough, plan_outputs, plan_train
from augforge.pipelines.image_rows import Encoder
from augforge.recipe import Recipe

#: output rows read and augmented together (each row is still seeded on its own)
DENSE_CHUNK_ROWS = 64
#: the purpose string of the per-row draws (part of the seed: changing it changes every augmented row)
PURPOSE = "dense-augment"
MOSAIC_PURPOSE = "dense-mosaic"
PASTE_PURPOSE = "dense-copy-paste"


def check_dense_recipe(recipe: Recipe, source: Source) -> None:
    """Refuse, in one line naming the recipe key, what a dense build cannot do."""
    aug = recipe.augment
    try:
        by_instances = instance_strategy(recipe.strategy) is not None
    except AugforgeError as exc:
        raise RecipeError(f"{recipe.file}: balance.strategy: {exc}") from None
    if recipe.strategy and not by_instances:
        raise RecipeError(f"{recipe.file}: balance.strategy: {recipe.strategy} resamples whole rows by their label; "
                          f"{source.location} is a detection or segmentation set, whose imbalance is counted in "
                          "instances (`augforge report` shows them): use repeat_factor[:t], copy_paste:N or "
                          "ml_ros[:P]")
    if aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: {source.location} holds images; use augment.image ops")
    if aug.color == "gray":
        raise RecipeError(f"{recipe.file}: augment.color: gray is not supported for detection and segmentation sets "
                          "(their images are read as RGB); remove it")
    if recipe.output.format == "raw":
        raise RecipeError(f"{recipe.file}: output.format: raw needs every image the same size; a detection set keeps "
                          "its images' sizes: use png or jpeg")
    check_op_list(aug.image, aug.color, recipe.file, encoded_output=aug.mode == "offline" and bool(aug.image))
    try:
        aug.targets.augmenter(aug.image)
    except AugforgeError as exc:
        raise RecipeError(f"{recipe.file}: {str(exc).removeprefix('augment: ')}") from None


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes as (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class DenseTrainRows:
    """The train output rows of a dense build, a chunk at a time (see the module docstring)."""

    def __init__(self, recipe: Recipe, source: Source, plan, outputs, encoder: Encoder) -> None:
        self.recipe, self.source, self.plan, self.outputs, self.encoder = recipe, source, plan, outputs, encoder
        self.targets = recipe.augment.targets
        self.augment = self.targets.augmenter(recipe.augment.image)
        ids = source.ids()
        self.ids = [ids[int(p)] for p in plan.train_positions]  # train row ids, in train order
        self.classes = instance_classes(source)
        self.donor_rows = self._donor_rows(source, plan)
        self.device = resolve_device(recipe.augment.device)  # 'gpu': DALI moves pixels, masks and points there
        self.mover = self.augment.dali_mover(DENSE_CHUNK_ROWS, "gpu") if self.device == "gpu" else None
        self.made = 0  # augmented rows made by this run (a resumed build counts from where it resumed)
        self.rejected = 0  # draws the frame policy refused (each redrawn)
        self.lost = 0  # instances dropped or kept as lost by the policy

    def _donor_rows(self, source: Source, plan) -> list[int]:
        """The train rows the copy-paste op may take instances from: those holding a wanted class (any class when
        none is named) with a mask or polygons. Train rows only: val and test never feed a paste."""
        spec = self.targets.copy_paste
        if spec is None:
            return []
        try:
            wanted = spec.wanted(self.classes)
        except AugforgeError as exc:
            raise RecipeError(f"{self.recipe.file}: {exc}") from None
        rows = source.instances(plan.train_positions)
        return [r for r, inst in enumerate(rows)
                if any(int(inst.classes[i]) in wanted and pasteable(inst, i) for i in range(len(inst)))]

    def rows(self, skip: int) -> Iterator[pa.RecordBatch]:
        """Output rows from ``skip`` on."""
        total = len(self.outputs.balanced)
        for start in range(skip, total, DENSE_CHUNK_ROWS):
            yield self._chunk(start, min(start + DENSE_CHUNK_ROWS, total))

    def _chunk(self, start: int, stop: int) -> pa.RecordBatch:
        res, out = self.plan.result, self.outputs
        picked = out.balanced[start:stop]
        origin = res.origin[picked]
        jobs = [self.plan.pastes.get(int(p)) for p in picked]  # copy_paste rows: their planned paste
        tiles = self._tiles(start, picked, origin)  # augmented rows tiled into a mosaic: (rng, 3 other rows)
        donors = self._paste_donors(start, picked, origin)  # augmented rows given pastes: (rng, a donor row)
        extra = [r for job in jobs if job is not None for r, _, _ in job.pastes] + \
            [o for _, others in tiles.values() for o in others] + [d for _, d in donors.values()]
        unique = np.unique(np.r_[origin, extra].astype(np.int64))
        read = pa.Table.from_batches(list(self.source.read(self.plan.train_positions[unique], READ_BATCH_ROWS)))
        by_origin = dict(zip(unique.tolist(), read.to_pylist()))
        targets = dict(zip(unique.tolist(), from_columns(read)))
        semantic, multilabel = SEMANTIC in read.schema.names, IMAGE_LABELS in read.schema.names
        wanted = [k for k in range(len(origin)) if out.augmented[start + k]]
        bases = [self._base(by_origin[int(o)], targets[int(o)], job, by_origin, bool(out.augmented[start + k]))
                 for k, (o, job) in enumerate(zip(origin, jobs))]
        drawn = dict(zip(wanted, self.augment.batch(
            [row_rng(self.recipe.augment_seed, by_origin[origin[k]][S.ID], int(out.variant[start + k]), PURPOSE)
             for k in wanted],
            [bases[k][0] for k in wanted], [bases[k][1] for k in wanted],
            self.mover, [decode_semantic(by_origin[origin[k]][SEMANTIC]) for k in wanted] if semantic else None)
            if wanted else []))
        for k, (rng, d) in donors.items():  # instances of another train row, as it is, pasted on the sample
            moved = drawn[k].moved
            image, found, labels, _ = paste_from(rng, moved.image, moved.instances,
                                                 [(decode_rgb(by_origin[d][S.IMAGE]), targets[d], by_origin[d][S.ID])],
                                                 self.targets.copy_paste, self.classes, moved.semantic)
            drawn[k].moved = Moved(image, found, False, moved.visibility, moved.lost, labels)
        for k, (rng, others) in tiles.items():  # the augmented sample with three train rows as they are
            moved = drawn[k].moved
            tiled = mosaic(rng, [moved.image, *(decode_rgb(by_origin[o][S.IMAGE]) for o in others)],
                           [moved.instances, *(targets[o] for o in others)],
                           [by_origin[int(origin[k])][S.ID], *(by_origin[o][S.ID] for o in others)],
                           self.targets.mosaic, [moved.semantic, *(decode_semantic(by_origin[o][SEMANTIC])
                                                                   for o in others)] if semantic else None)
            if tiled is not None:
                drawn[k].moved = Moved(tiled.image, tiled.instances, False, moved.visibility, moved.lost,
                                       tiled.semantic)
        ids, payloads, instances, sizes, augs, synthetic, maps = [], [], [], [], [], [], []
        for k, o in enumerate(origin.tolist()):
            row, variant, augmented = by_origin[o], int(out.variant[start + k]), k in drawn
            copy = res.synthetic[picked[k]]
            if augmented:
                self.made += 1
                self.rejected += drawn[k].rejected
                self.lost += int(drawn[k].moved.lost.sum())
                image, found = drawn[k].moved.image, drawn[k].moved.instances
                payloads.append(self.encoder.encode_one(image))
                maps.append(encode_semantic(drawn[k].moved.semantic) if semantic else None)
            else:  # kept as it is (a pasted row: its rendered pixels)
                image, found = bases[k]
                payloads.append(row[S.IMAGE] if jobs[k] is None else self.encoder.encode_one(image))
                maps.append(row.get(SEMANTIC))
            instances.append(found)
            sizes.append((image.shape[1], image.shape[0]) if image is not None else (row["width"], row["height"]))
            ids.append(row[S.ID] if variant == 0 and not augmented else f"{row[S.ID]}~a{variant}")
            step = f"{AUG_PREFIX}{res.aug[picked[k]]}" if copy else None
            augs.append("+".join(filter(None, (step, AUG_NAME if augmented else None))) or row.get(S.AUG))
            synthetic.append(bool(row.get(S.SYNTHETIC)) or augmented or bool(copy))
        return pa.record_batch({
            S.ID: pa.array(ids, pa.string()),
            S.LABEL: pa.array(res.y[picked], pa.int64()),
            S.IMAGE: pa.array(payloads, pa.binary()),
            S.SOURCE_ID: pa.array([by_origin[o].get(S.SOURCE_ID) or by_origin[o][S.ID] for o in origin.tolist()],
                                  pa.string()),
            S.SYNTHETIC: pa.array(synthetic),
            S.AUG: pa.array(augs, pa.string()),
            S.SPLIT: S.split_names(np.full(len(ids), S.TRAIN)),
            **to_columns(instances, sizes, maps if semantic else None,  # image-level labels: what the origin has
                         [by_origin[o][IMAGE_LABELS] for o in origin.tolist()] if multilabel else None),
        })

    def _row_draws(self, start: int, picked: np.ndarray, origin: np.ndarray, purpose: str, p: float, pick) -> dict:
        """The augmented rows of a chunk an op of probability ``p`` takes: output index -> (the row's generator,
        ``pick(generator, its train row)``), each seeded from (augment seed, row id, variant, ``purpose``)."""
        draws = {}
        for k in range(len(picked)):
            if not self.outputs.augmented[start + k]:
                continue
            rng = row_rng(self.recipe.augment_seed, self.ids[int(origin[k])], int(self.outputs.variant[start + k]),
                          purpose)
            if rng.random() < p:
                draws[k] = (rng, pick(rng, int(origin[k])))
        return draws

    def _tiles(self, start: int, picked: np.ndarray, origin: np.ndarray) -> dict:
        """The rows a mosaic tiles (``augment.targets.mosaic``): output index -> (its generator, three other
        train rows drawn by it)."""
        spec = self.targets
        if spec.mosaic is None or spec.mosaic_p <= 0:
            return {}
        n = len(self.plan.train_positions)
        return self._row_draws(start, picked, origin, MOSAIC_PURPOSE, spec.mosaic_p,
                               lambda rng, _: rng.choice(n, 3, replace=n < 4).tolist())

    def _paste_donors(self, start: int, picked: np.ndarray, origin: np.ndarray) -> dict:
        """The rows the copy-paste op pastes onto (``augment.targets.copy_paste``): output index -> (its
        generator, a donor train row holding a wanted class, another than its own when there is one)."""
        spec = self.targets.copy_paste
        if spec is None or spec.p <= 0 or not self.donor_rows:
            return {}

        def donor(rng, own: int) -> int:
            choices = [d for d in self.donor_rows if d != own] or self.donor_rows
            return choices[int(rng.integers(len(choices)))]

        return self._row_draws(start, picked, origin, PASTE_PURPOSE, spec.p, donor)

    def _base(self, row: dict, instances, job, by_origin: dict, decode: bool):
        """(pixels, instances) an output row starts from: its source row's, or for a copy_paste row the
        recipient with the donor instance pasted (``render_paste``). Pixels are decoded only where needed
        (``decode``: the row is augmented): None for a row kept as it is."""
        if job is None:
            return (decode_rgb(row[S.IMAGE]) if decode else None), instances
        image = decode_rgb(row[S.IMAGE])
        for donor, _, paste in job.pastes:  # in planned order: each on what the previous left
            image = render_paste(image, decode_rgb(by_origin[donor][S.IMAGE]), paste)
        return image, job.instances


def build_dense(recipe: Recipe, source: Source, out: str | Path, *, workers: int, overwrite: bool,
                stage: Callable[[str], None], on_rows, on_total, engine) -> BuildResult:
    """The dense build of ``augforge.pipelines.build.build`` (see the module docstring)."""
    if engine is not None:
        raise OptionError("{engine} ray distributes image and text builds; {location} is a detection or "
                          "segmentation set, which builds here (use {engine} local)", location=source.location)
    check_dense_recipe(recipe, source)
    aug = recipe.augment
    offline = aug.image if aug.mode == "offline" else ()
    tiled = aug.mode == "offline" and ((aug.targets.mosaic is not None and aug.targets.mosaic_p > 0) or
                                       (aug.targets.copy_paste is not None and aug.targets.copy_paste.p > 0))
    planned = plan_train(recipe, source, stage, "cleaning: hashing {:,} rows")
    plan = planned.balance
    names = list(source.class_names)
    outputs = plan_outputs(plan, lambda label: aug.copies_for(names[label]), aug.keep_original,
                           bool(offline) or tiled)
    encoder = Encoder(recipe.output.format, recipe.output.quality, workers)
    train = DenseTrainRows(recipe, source, plan, outputs, encoder)
    n_train, others = len(outputs.balanced), planned.other_positions

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        if skip < n_train:
            yield from train.rows(skip)
        yield from passthrough(source, others, planned.other_splits, max(skip - n_train, 0))

    parts = content_parts(source, planned.splits, planned.imbalance, recipe.seed, recipe.output.shard_rows,
                          recipe.output.shard_mb, job="build-dense", recipe=recipe.fingerprint_parts(),
                          ops_version=OPS_VERSION, chunk_rows=DENSE_CHUNK_ROWS)
    after = np.bincount(plan.result.y[outputs.balanced], minlength=len(names))
    meta = build_meta(recipe, source, planned, names, after, train.device, {"augmented": int(outputs.augmented.sum())})
    meta["payload_info"] = source.payload_info()

    def policy_counts() -> dict:
        """What the frame policy did, known once every row is made: into the one manifest write."""
        build = dict(meta["build"])
        build["targets"] = {"augmented_rows_counted": train.made, "rejected_draws": train.rejected,
                            "lost_instances": train.lost}
        return {"build": build}

    stage(f"augmenting and writing {n_train + len(others):,} rows with their targets ({train.device})")
    try:
        result = write_dataset(out, source.schema(), names, parts=parts, meta=meta, total_rows=n_train + len(others),
                               batches=batches, shard_rows=recipe.output.shard_rows, shard_mb=recipe.output.shard_mb,
                               overwrite=overwrite, on_rows=on_rows, on_total=on_total, learned=policy_counts)
    finally:
        encoder.close()
    return BuildResult(result, plan, planned.duplicates, int(outputs.augmented.sum()), train.device)
