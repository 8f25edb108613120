"""The data of a run: the recipe's dataset built or reused, its train/val/test loaders, and a text run's
encoder and token statistics."""

from __future__ import annotations

import os
from pathlib import Path

from augforge.datasets.sources import has_dense_targets
from augforge.datasets.writer import OtherDataset
from augforge.device import Device
from augforge.errors import AugforgeError
from augforge.paths import is_url
from augforge.pipelines.build import build
from augforge.pipelines.loader_options import StreamOptions
from augforge.pipelines.stream import open_loader
from augforge.pipelines.text_encoding import fitting_texts, lengths_summary, text_encoder_for
from augforge.recipe import Recipe
from augforge.train.long_tail import deferred_sampling


def ensure_dataset(recipe: Recipe, data: Path, rebuild: bool, workers: int, log) -> dict:
    """Build the recipe's dataset into ``data``, or reuse it; the manifest. A detection or segmentation set is
    refused before anything is built: the trainer trains classifiers."""
    if has_dense_targets(recipe.source.path):
        raise AugforgeError(f"{recipe.file}: source.path: {recipe.source.path} is a detection or segmentation set; "
                            "augforge's trainer trains image, text and feature classifiers: build it with `augforge "
                            "build` and stream it into your detection loop with open_loader (docs/dense.md)")
    try:
        result = build(recipe, data, workers=workers, overwrite=rebuild)
    except OtherDataset as exc:  # train and lr-find replace it with --rebuild
        raise AugforgeError(exc.with_flag("--rebuild")) from None
    log(f"data: {data if is_url(data) else os.path.normpath(data)} ({'reused' if result.write.up_to_date else 'built'}, "
        f"{result.write.manifest['num_rows']:,} rows)")
    for warning in result.write.manifest.get("warnings") or []:
        log(f"warning: {warning}")
    return result.write.manifest


def open_loaders(recipe: Recipe, data, manifest: dict, device: Device, train_rows=None,
                 stream: StreamOptions | None = None):
    """(train, val, test) loaders of a built dataset: the train loader runs the recipe's training ops
    (``Recipe.train_ops``), mixing and its sampler; val and test (None where the data has no such split)
    only the deterministic part, in storage order, on every row. Text splits share one encoder, made for
    the recipe's model (``text_encoder_for``) and fitted on the rows it trains on (``fitting_texts``).
    ``train_rows``: the train positions to train on (a cross-fit's training folds); all by default. ``stream``:
    how a dataset at a URL is cached and shuffled."""
    stream = stream or StreamOptions()
    run = recipe.run
    ops = recipe.train_ops or None
    text = None
    if manifest.get("payload") == "text":  # train.text for the run's model, fitted on the rows it trains on
        text = text_encoder_for(run.text, run.model, run.model_options,
                                lambda: fitting_texts(data, train_rows, stream.cache))
    loader = open_loader(data, run.batch_size, ops=ops, seed=run.seed, mix=run.mix(), device=device, text=text,
                         bootstrap=run.bootstrap, sampler=run.sampler,
                         balanced_from=deferred_sampling(recipe.train), rows=train_rows, **stream.loader_options())
    whole = {"rank": 0, "world_size": 1, "shuffle": False, "ops": ops, "augment": False, "device": device,
             "text": loader.encoder, **stream.loader_options(shuffled=False)}
    val = open_loader(data, 256, split="val", **whole) if "val" in manifest["counts"] else None
    test = open_loader(data, 256, split="test", **whole) if "test" in manifest["counts"] else None
    return loader, val, test


def text_stats(loader, val, test, log) -> dict:
    """Token counts per split before truncation, and how many rows each split truncates (logged)."""
    out = {"encoder": loader.encoder.kind, "vocab_size": loader.encoder.vocab_size,
           "max_tokens": loader.encoder.options.max_tokens, "truncate": loader.encoder.options.truncate}
    for name, split in (("train", loader), ("val", val), ("test", test)):
        if split is None:
            continue
        texts = split.dataset.texts()
        out[name] = lengths_summary(split.encoder, texts)
        if out[name]["truncated"]:
            log(f"text: {out[name]['truncated']:,} of {len(texts):,} {name} rows are longer than "
                f"{out['max_tokens']:,} tokens and were truncated ({out['truncate']}; longest {out[name]['max']:,})")
    return out
