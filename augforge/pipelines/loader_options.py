"""Every option of ``open_loader``, checked in one place, and the parts of a loader they make: the row order
(``augforge.pipelines.order.RowOrder``), the reader (``row_reader.RowReader``), the augmenter
(``batch_augment.BatchAugment``) and the collation (``collate.Collate``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from augforge.augment.mix import MixConfig
from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.datasets.remote import CacheOptions
from augforge.device import choose_device, rank_and_world
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.batch_augment import BatchAugment, channels_of
from augforge.pipelines.collate import DTYPES, Collate
from augforge.pipelines.loader_ops import resolve_ops
from augforge.pipelines.order import RowOrder, checked_rows
from augforge.pipelines.row_reader import RowReader
from augforge.pipelines.text_encoding import fitting_texts, text_encoder_for
from augforge.recipe.train import SAMPLERS


@dataclass(frozen=True)
class LoaderOptions:
    """What ``open_loader`` takes besides the directory and the batch size.

    - which rows: ``split``; ``rows`` (positions of the split: a cross-fit's folds); ``bootstrap`` (the rows
      resampled with replacement once, from that seed);
    - their order: ``shuffle``, ``seed``, ``sampler`` (shuffle | balanced: class-balanced draws), ``balanced_from``
      (deferred re-sampling: balanced from that epoch on), ``rank``/``world_size`` (default: torch.distributed's),
      ``last`` (keep | drop | pad; ``drop_last`` is ``last="drop"``);
    - augmentation: ``recipe`` (its training ops) or ``ops`` (op mappings), ``augment`` (random ops and mixing;
      default: on the train split only), ``color`` (rgb | gray), ``mix`` (MixConfig), ``fuse`` (False runs DALI's
      own CPU ops instead of the fused pass), ``threads``, ``device`` (the device decision);
    - reading: ``prefetch`` batches ahead, ``reader_workers`` (DALI reader processes; 0: a thread), ``verify``
      (shard checksums); a dataset at an ``s3://`` URL through a local cache: ``cache_dir``, ``cache_limit``
      (bytes or "20GB"), ``predownload`` (shards fetched ahead), and ``shuffle_block`` (shards shuffled
      together: what lets a cache smaller than the split serve a shuffled epoch);
    - collation: ``dtype`` (bfloat16 for floating batches), ``text`` (an encoder, a checkpoint's spec, or
      TextOptions; default: fastText's hashed n-grams).
    """

    split: str = "train"
    recipe: object = None
    ops: object = None
    shuffle: bool = True
    seed: int = 0
    device: object = "auto"
    drop_last: bool = False
    last: str | None = None
    dtype: str | None = None
    rank: int | None = None
    world_size: int | None = None
    mix: MixConfig | None = None
    prefetch: int = 2
    threads: int | None = None
    reader_workers: int = 0
    verify: bool = True
    fuse: bool = True
    augment: bool | None = None
    color: str | None = None
    text: object = None
    bootstrap: int | None = None
    sampler: str = "shuffle"
    balanced_from: int | None = None
    rows: object = None
    cache_dir: str | None = None
    cache_limit: int | str | None = None
    predownload: int = 2
    shuffle_block: int | None = None

    def __post_init__(self) -> None:
        if self.reader_workers < 0:
            raise AugforgeError(f"reader_workers {self.reader_workers}: expected 0 (a thread feeds DALI) or more")
        if self.sampler not in SAMPLERS:
            raise AugforgeError(f"sampler={self.sampler!r}: expected shuffle or balanced")
        if self.dtype not in DTYPES:
            raise AugforgeError(f"dtype={self.dtype!r}: expected bfloat16, float32 or none")

    @property
    def augments(self) -> bool:
        """Whether random ops, mixing and the sampler run: by default on the train split only."""
        return self.split == "train" if self.augment is None else bool(self.augment)


@dataclass(frozen=True)
class StreamOptions:
    """How a run streams a dataset at an ``s3://`` URL: its local ``cache`` (``CacheOptions``: the loader options
    of the same names) and ``shuffle_block``."""

    cache: CacheOptions = CacheOptions()
    shuffle_block: int | None = None

    def loader_options(self, shuffled: bool = True) -> dict:
        """``open_loader``'s keyword arguments for these (``shuffle_block`` only for a shuffled loader)."""
        out = asdict(self.cache)
        return {**out, "shuffle_block": self.shuffle_block} if shuffled else out


def loader_parts(dataset_dir: str | Path, batch_size: int, options: LoaderOptions) -> dict:
    """The parts of a loader over ``dataset_dir`` (``Loader``'s keyword arguments): reader, order, augmenter,
    collation, and how the rows are read (``prefetch``, ``reader_workers``)."""
    cache = CacheOptions(options.cache_dir, options.cache_limit, options.predownload)
    dataset = Dataset(dataset_dir, split=options.split, verify=options.verify, cache=cache)
    if len(dataset) == 0:
        raise AugforgeError(f"{dataset_dir}: split {options.split!r} has no rows")
    if options.reader_workers and dataset.payload != S.IMAGE:
        raise AugforgeError(f"reader_workers: {dataset_dir} holds {dataset.payload} rows; reader processes feed "
                            "DALI, which only image datasets go through")
    info = dataset.manifest.get("payload_info") or {}
    ops, color = resolve_ops(options.recipe, options.ops, info, options.augments, options.color)
    reader = RowReader(dataset, channels_of(color))
    order = row_order(reader, batch_size, options)
    augment = BatchAugment(ops, color, choose_device(options.device), options.augments, seed=options.seed,
                           rank=order.rank, mix=options.mix or MixConfig(), batch_size=batch_size,
                           threads=options.threads or max(1, torch.get_num_threads()), fuse=options.fuse)
    encoder = None
    if dataset.payload == S.TEXT:
        encoder = text_encoder_for(options.text, train_texts=lambda: fitting_texts(dataset_dir, cache=cache))
    return dict(reader=reader, order=order, augment=augment, collate=Collate(dataset.payload, encoder, options.dtype),
                prefetch=options.prefetch, reader_workers=options.reader_workers)


def row_order(reader: RowReader, batch_size: int, options: LoaderOptions) -> RowOrder:
    """The loader's ``RowOrder``: its rows (``rows``, ``bootstrap``), this rank's share, and a sampler (the train
    split's only: evaluation reads every row once, shuffled or not)."""
    dist_rank, dist_world = rank_and_world()
    rank = dist_rank if options.rank is None else options.rank
    world = dist_world if options.world_size is None else options.world_size
    sampler = options.sampler if options.augments else "shuffle"
    balanced_from = options.balanced_from if options.augments else None
    where = f"{reader.dataset.root} split {options.split!r}"
    rows = None if options.rows is None else checked_rows(options.rows, len(reader.dataset), where)
    needs_labels = sampler == "balanced" or balanced_from is not None
    block = options.shuffle_block
    shards = reader.dataset.locate(np.arange(len(reader.dataset)))[0] if block is not None else None
    order = RowOrder(len(reader.dataset), batch_size, seed=options.seed, shuffle=options.shuffle,
                     last=options.last or ("drop" if options.drop_last else "keep"), rank=rank, world_size=world,
                     sampler=sampler, balanced_from=balanced_from, rows=rows, bootstrap=options.bootstrap,
                     labels=reader.labels() if needs_labels else None, shards=shards, block=block)
    check_cache_fits(reader.dataset, order)
    return order


def check_cache_fits(dataset: Dataset, order: RowOrder) -> None:
    """Refuse, in one line, a shuffled epoch of a remote dataset that its cache cannot hold: a global shuffle
    needs every shard of the split at once, a block shuffle ``block`` shards (and the ones predownloaded)."""
    limit = dataset.remote.cache.limit if dataset.remote else None
    if limit is None or not order.shuffle:
        return
    entries = dataset.manifest["shards"]
    shard_of = order.shards if order.shards is not None else dataset.locate(np.arange(len(dataset)))[0]
    used = np.unique(shard_of).tolist()
    largest = max(int(entries[i]["bytes"]) for i in used)
    fits = limit // largest
    if order.block is None and sum(int(entries[i]["bytes"]) for i in used) > limit:
        raise OptionError("{cache_limit} {limit} bytes holds {fits} of the {n} shards this split reads, and a "
                          "shuffled epoch reads them all at once: set {shuffle_block} to at most {fits} (shards "
                          "shuffled together) or raise {cache_limit}", limit=limit, fits=fits, n=len(used))
    if order.block is not None and order.block + dataset.remote.options.predownload > fits:
        raise OptionError("{shuffle_block} {block} plus {predownload} {ahead} shards must fit in {cache_limit} "
                          "({limit} bytes holds {fits} shards of up to {largest} bytes)", block=order.block,
                          ahead=dataset.remote.options.predownload, limit=limit, fits=fits, largest=largest)
