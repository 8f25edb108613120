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

The plan is ``build_plan``'s, the image rows ``image_rows``', the text rows ``text_rows``'; this module picks
the one the source's payload needs. Val and test rows pass through with their pixels unchanged: re-encoded
losslessly for png and raw outputs, their source bytes kept for jpeg.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from augforge.balance.apply import balance_dataset
from augforge.checks import RecipeError
from augforge.datasets import schema as S
from augforge.datasets.ingest import ingest
from augforge.datasets.plan import Cleaning, plan_rows
from augforge.datasets.publish import output_location
from augforge.datasets.sources.base import Source
from augforge.engine import open_engine
from augforge.errors import OptionError, require_at_least
from augforge.pipelines.build_plan import AUG_NAME, CHUNK_ROWS, BuildResult, OutputPlan, drop_duplicates, \
    plan_outputs, recipe_source, recipe_splits
from augforge.pipelines.clean_plan import clean_rows
from augforge.pipelines.dense_rows import build_dense
from augforge.pipelines.image_rows import build_images
from augforge.pipelines.text_rows import build_texts
from augforge.recipe import Recipe

__all__ = ["AUG_NAME", "CHUNK_ROWS", "BuildResult", "OutputPlan", "build", "drop_duplicates", "plan_outputs",
           "recipe_source", "recipe_splits"]


def build(recipe: Recipe, out: str | Path | None = None, *, workers: int = 2, overwrite: bool = False,
          on_stage: Callable[[str], None] | None = None, on_rows: Callable[[int], None] | None = None,
          on_total: Callable[[int], None] | None = None, engine=None) -> BuildResult:
    """Run the recipe's whole chain into the dataset directory ``out`` (default: the recipe's output.dir), or to
    an ``s3://`` URL (``augforge.datasets.publish``: shards go up as they are made, the manifest last).
    ``engine`` (an ``augforge.engine.EngineSpec``) runs the augmentation on Ray instead of here;
    the output is the same bytes."""
    output_location(out)
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
        raise OptionError("{file}: output.dir: missing; set it in the recipe or pass {out}", file=recipe.file)
    require_at_least("workers", workers)
    source = recipe_source(recipe)
    aug = recipe.augment
    if source.has_targets:  # boxes, masks and keypoints move with the pixels
        return build_dense(recipe, source, out, workers=workers, overwrite=overwrite, stage=stage, on_rows=on_rows,
                           on_total=on_total, engine=engine)
    if source.payload == S.TEXT:
        if aug.image:
            raise RecipeError(f"{recipe.file}: augment.image: {source.location} holds text; use augment.text ops")
        return build_texts(recipe, source, out, workers=workers, overwrite=overwrite, stage=stage,
                           on_rows=on_rows, on_total=on_total, engine=engine)
    if source.payload == S.FEATURES:
        if engine is not None:
            raise OptionError("{engine} ray distributes image and text builds; {location} holds feature rows, which "
                              "build here (use {engine} local)", location=source.location)
        return _build_features(recipe, source, out, overwrite=overwrite, stage=stage, on_rows=on_rows,
                               on_total=on_total)
    if source.payload != S.IMAGE:
        raise RecipeError(f"{recipe.file}: source.path: {source.location} holds {source.payload} rows, which a "
                          "build cannot write")
    return build_images(recipe, source, out, workers=workers, overwrite=overwrite, stage=stage, on_rows=on_rows,
                        on_total=on_total, engine=engine)


def _build_features(recipe: Recipe, source: Source, out, *, overwrite: bool, stage, on_rows, on_total) -> BuildResult:
    """A feature table: split, then the balance strategy (SMOTE and the rest interpolate feature rows), no
    augmentation ops (they are image and text ops). The same writer as ``augforge balance`` and ``ingest``."""
    aug = recipe.augment
    if aug.image or aug.text or aug.copies or aug.copies_per_class:
        raise RecipeError(f"{recipe.file}: augment: {source.location} holds feature rows; augment ops are image and "
                          "text ops (rebalance feature rows with balance.strategy, e.g. smote)")
    splits, imbalance = recipe_splits(recipe)
    options = dict(splits=splits, imbalance=imbalance, seed=recipe.seed, shard_rows=recipe.output.shard_rows,
                   shard_mb=recipe.output.shard_mb, overwrite=overwrite, on_rows=on_rows, on_total=on_total)
    if recipe.clean.active:  # the audit's steps on the planned rows; the writer records what they dropped
        stage("planning splits")
        rows = plan_rows(source, splits, imbalance, recipe.seed)
        stage(f"auditing {len(rows.positions):,} rows (clean:)")
        rows, dropped, summary, warnings = clean_rows(recipe, source, rows)
        options.update(rows=rows, cleaning=Cleaning(asdict(recipe.clean), summary, dropped, warnings))
    if recipe.strategy:
        result, plan = balance_dataset(source, out, recipe.strategy, on_stage=stage, **options)
        return BuildResult(result, plan, 0, 0, "cpu")
    stage("writing the feature rows")
    return BuildResult(ingest(source, out, **options), None, 0, 0, "cpu")

