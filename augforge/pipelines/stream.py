"""Stream batches from a dataset directory into PyTorch: memory-mapped shards -> DALI -> torch tensors.

``open_loader(dataset_dir, batch_size, ...)`` returns a ``Loader``; a plain loop works::

    loader = open_loader("build/digits-aug", 128, recipe="examples/digits.yaml")
    for x, y in loader:
        ...

What each payload yields:

- images: NCHW tensors. uint8 by default; float32 (or bf16) normalized when the ops end with
  ``normalize``. Decoding and the ops run in one DALI pipeline: in CPU-only mode here, with ``mixed``
  decoding, GPU ops and tensors already on the device when a GPU is present. Raw uint8 shards skip
  decoding.
- features: float32 ``(batch, dim)`` tensors.
- text: ``((token_ids, lengths), y)``. The ids come from a text encoder
  (``augforge.pipelines.text_encoding``): given, restored from a checkpoint's spec, or made when the
  loader opens (``text=TextOptions(...)``; by default fastText's hashed n-grams; a tokenizer is trained
  on the train split). Texts are truncated to ``max_tokens``; ids are padded per batch.

Labels are int64, or float soft labels with mixup/cutmix.

Epochs:

- The row order is a permutation drawn from (seed, epoch), across and within shards. Every row of the
  split comes exactly once per epoch (padding aside, see ``last``).
- ``rank``/``world_size`` (read from torch.distributed when it is initialized) give disjoint,
  equal-sized partitions. The rows are padded to a multiple of ``world_size`` by repeating the first
  ones, or truncated with ``last="drop"``.
- ``state_dict()``/``load_state_dict()`` resume mid-epoch: the restored loader yields exactly the batches
  of that epoch that were not yet consumed.

A background thread feeds DALI, which decodes and augments, up to ``prefetch`` batches ahead; with
``reader_workers=N`` DALI's parallel external_source reads the shards in N processes instead.

The loader is made of parts, each tested on its own: the row order (``augforge.pipelines.order.RowOrder``:
pure, no dataset), the reader (``row_reader``: shards -> payload rows, in a thread or reader processes), the
augmenter (``batch_augment``: ops -> backend -> mixing) and the collation (``collate``: text encoding, dtype).
``open_loader`` checks its options (``loader_options.LoaderOptions``) and composes them.
Raw-pixel batches without ops are a memory copy each: they are made when asked, in the consumer's
thread, in groups of about ``GROUP_BYTES`` (one copy or gather per group). ``stats()`` reports how
long the consumer waited for each batch.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from augforge.augment.ops import op_dicts
from augforge.checks import options_of
from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.datasets.remote import CacheOptions
from augforge.datasets.sources import has_dense_targets
from augforge.errors import AugforgeError
from augforge.pipelines.batch_augment import BatchAugment
from augforge.pipelines.collate import Collate
from augforge.pipelines.dense_loader import open_dense_loader, refuse_unshared, shared_options
from augforge.pipelines.fallback import FallbackDataset  # noqa: F401  (its documented path until the next release)
from augforge.pipelines.loader_options import LoaderOptions, loader_parts
from augforge.pipelines.order import RowOrder, consumed
from augforge.pipelines.row_reader import ProcessSource, RowReader
from augforge.storage.urls import remote

_DONE = object()


class Loader:
    """Batches of one split of a dataset directory, epoch after epoch (see the module docstring), composed of
    its ``reader``, ``order``, ``augment`` (the augmenter) and ``collate`` parts; ``open_loader`` makes them."""

    def __init__(self, reader: RowReader, order: RowOrder, augment: BatchAugment, collate: Collate, *,
                 prefetch: int = 2, reader_workers: int = 0) -> None:
        self.reader, self.order, self.augmenter, self.collate = reader, order, augment, collate
        self.prefetch = max(1, prefetch)
        self.reader_workers = reader_workers
        #: the epoch, the global rows consumed before this segment of it began (an elastic resume), and the
        #: batches this rank consumed since
        self.epoch, self.start, self.position = 0, 0, 0
        self._source_next: tuple | None = None  # (epoch, start, position) the reader processes read next
        self._waits: list[float] = []
        self._rows_out = 0
        self._started: float | None = None

    # -- what it reads and how ------------------------------------------------------------------------

    @property
    def dataset(self):
        """The split's ``Dataset``."""
        return self.reader.dataset

    @property
    def payload(self) -> str:
        """image, text or features."""
        return self.reader.payload

    @property
    def info(self) -> dict:
        """The manifest's payload_info."""
        return self.reader.info

    @property
    def num_classes(self) -> int:
        """Classes of the dataset (the width of soft labels)."""
        return len(self.dataset.class_names)

    @property
    def encoder(self):
        """Text rows: the encoder that turns them into ids (shared by a run's train, val and test loaders)."""
        return self.collate.encoder

    @property
    def ops(self) -> tuple:
        """The image ops this loader runs on every batch."""
        return self.augmenter.ops

    @property
    def color(self) -> str:
        """The colour mode of image batches (rgb or gray)."""
        return self.augmenter.color

    @property
    def channels(self) -> int:
        """Channels of the image batches (the colour mode's, whatever the stored images have)."""
        return self.augmenter.channels

    @property
    def device(self):
        """The device decision (augforge.device); image batches come out where its DALI pipeline runs."""
        return self.augmenter.device

    @property
    def augment(self) -> bool:
        """Whether random ops (and mixing) run: by default on the train split only; evaluation never augments."""
        return self.augmenter.augment

    @property
    def sampler(self) -> str:
        """shuffle, or balanced (class-balanced draws with replacement, train only)."""
        return self.order.sampler

    def set_sampler(self, sampler: str) -> None:
        """Draw the next epochs with ``sampler`` (cRT retrains the classifier on class-balanced draws)."""
        self.order = replace(self.order, sampler=sampler, labels=self.reader.labels())

    @property
    def rows(self) -> np.ndarray | None:
        """The positions of the split this loader covers (None: all of them)."""
        return self.order.rows

    @property
    def size(self) -> int:
        """Rows per epoch before the ranks' shares: the split's, its ``rows``' or its bootstrap resample's."""
        return self.order.size

    @property
    def batch_size(self) -> int:
        """Rows per batch."""
        return self.order.batch_size

    @property
    def seed(self) -> int:
        """The seed of the row order and the draws."""
        return self.order.seed

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self.order.rank

    @property
    def world_size(self) -> int:
        """How many processes share each epoch."""
        return self.order.world_size

    def input_spec(self) -> dict:
        """What evaluation needs to feed a model as this loader feeds it (JSON, stored in checkpoints): the
        payload, and for images the colour mode and the deterministic part of the ops, for text the
        encoder (tokenizer, n-gram settings, truncation), for features their width."""
        spec: dict = {"payload": self.payload}
        if self.payload == S.IMAGE:
            spec.update(color=self.color, channels=self.channels, ops=op_dicts(self.augmenter.evaluation_ops()))
        elif self.payload == S.TEXT:
            spec["text"] = self.encoder.spec()
        else:
            spec["dim"] = len(self.info.get("feature_names") or ())
        return spec

    # -- epochs ---------------------------------------------------------------------------------------

    def rows_of_epoch(self, epoch: int | None = None) -> np.ndarray:
        """This rank's positions (in the split) for ``epoch`` (default: the current one, from where its segment
        starts), in order."""
        if epoch is None:
            return self.order.epoch_rows(self.epoch, self.start)
        return self.order.epoch_rows(epoch)

    def __len__(self) -> int:
        """Batches per epoch, from the counts alone."""
        return len(self.order)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.start, self.position = int(epoch), 0, 0

    def samples_consumed(self) -> int:
        """Rows of the current epoch's global order that all ranks together have consumed (padding aside)."""
        # every batch but an epoch's last is full, and ``consumed`` caps the last at the rows left
        return self.start + consumed(self.position * self.batch_size, self.order.size - self.start, self.world_size)

    def state_dict(self) -> dict:
        """Where the loader is: the epoch, the rows all ranks consumed of it (``samples``), and this rank's
        batches since its segment began (``start``, ``position``)."""
        return {"epoch": self.epoch, "samples": self.samples_consumed(), "start": self.start,
                "position": self.position, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields what the epoch has not yet given. With the
        same world size and batch size, exactly the batches not yet consumed; with others (a run stopped on 4
        ranks, resumed on 2 or 8), the rows of the epoch's order after the ``samples`` consumed, shared out
        among the new ranks: over the whole epoch every row comes once, but for the padding each segment needs
        to give every rank equal batches (``last="drop"`` drops those rows instead)."""
        if state.get("seed") != self.seed:
            raise AugforgeError(f"loader state has seed={state.get('seed')!r}, this loader {self.seed!r}")
        self.epoch = int(state["epoch"])
        same = state.get("world_size") == self.world_size and state.get("batch_size") == self.batch_size
        if same:
            self.start, self.position = int(state.get("start", 0)), int(state["position"])
        elif "samples" in state:
            self.start, self.position = int(state["samples"]), 0
        else:
            raise AugforgeError("loader state has no 'samples' (it predates elastic resume): resume it with its own "
                                f"world_size {state.get('world_size')} and batch_size {state.get('batch_size')}")

    # -- producing batches ----------------------------------------------------------------------------

    def _pipeline(self):
        """The image pipeline (``BatchAugment.open``), with reader processes as its source when asked for;
        None where images need none (raw pixels without ops) and for other payloads."""
        if self.payload != S.IMAGE or not self.augmenter.needed(self.reader.raw):
            return None
        if self.augmenter.pipeline is None and self.reader_workers:
            source = ProcessSource(self.dataset.location, self.dataset.split, self.order, self.channels,
                                   (self.epoch, self.start, self.position), self.dataset.cache_options)
            self._source_next = (self.epoch, self.start, self.position)
            return self.augmenter.open(self.reader.raw, source, self.reader_workers)
        return self.augmenter.open(self.reader.raw)

    def _finish(self, x, y, index: int):
        """A batch's last steps: the dtype cast, then mixing (images)."""
        x = self.collate.cast(x)
        if self.payload == S.IMAGE:
            x, y = self.augmenter.mixed(x, y, self.num_classes, self.epoch, index)
        return x, y

    def _make_one(self, positions: np.ndarray, pipeline, index: int):
        """Batch ``index``: its rows read, augmented (images) or collated (features, text)."""
        if self.payload == S.IMAGE:  # straight from the memory-mapped shards: no Arrow take, no Python bytes
            x = pipeline.batch_tensor(self.reader.image_inputs(positions))
            if not pipeline.chw:
                x = x.permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
            return self._finish(x, self.reader.label_batch(positions), index)
        column, y = self.reader.column(positions)
        return self._finish(self.collate.column(column, len(positions)), y, index)

    def _make_raw(self, batches: list[np.ndarray], index: int) -> list[tuple]:
        """Raw-pixel batches without ops, ``index``, ``index + 1``, ...: a list of (x, y). The group is one
        gather (one copy in order), cut into batches that are views of it."""
        xs = torch.split(self.reader.images.gather_raw(np.concatenate(batches)), [len(b) for b in batches])
        return [self._finish(x.permute(0, 3, 1, 2), self.reader.label_batch(b), index + i)
                for i, (x, b) in enumerate(zip(xs, batches))]

    def _produce(self, batches: list[np.ndarray], start: int, out: queue.Queue, stop: threading.Event) -> None:
        try:
            pipeline = self._pipeline()
            for index in range(start, len(batches)):
                if stop.is_set():
                    return
                out.put([self._make_one(batches[index], pipeline, index)])
            out.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(exc)

    def _from_thread(self, batches: list[np.ndarray]):
        """Batches (in lists of one) made ``prefetch`` ahead by a background thread (decoding, augmenting,
        Arrow)."""
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(batches, self.position, out, stop), daemon=True)
        worker.start()
        try:
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    out.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)

    def _from_workers(self, batches: list[np.ndarray], pipeline):
        """Batches read by DALI's parallel external_source (``reader_workers`` processes, reading ahead) and
        augmented by the pipeline; labels are looked up here from the same cut of the epoch."""
        for index in range(self.position, len(batches)):
            x = pipeline.next_batch()
            if x is None or len(x) != len(batches[index]):
                raise AugforgeError(f"the reader processes gave batch {index} of epoch {self.epoch} out of step")
            if not pipeline.chw:
                x = x.permute(0, 3, 1, 2)
            self._source_next = (self.epoch, self.start, index + 1)
            yield [self._finish(x, self.reader.label_batch(batches[index]), index)]
        if pipeline.next_batch() is not None:  # the source ends its epoch here, and the pipeline resets
            raise AugforgeError(f"the reader processes gave more batches than epoch {self.epoch} has")
        self._source_next = (self.epoch + 1, 0, 0)

    def _inline(self, batches: list[np.ndarray]):
        """Groups of raw-pixel batches made when asked, in the consumer's thread: each is a memory copy,
        which a hand-over between threads would cost more than it hides."""
        group = self.reader.raw_group(self.batch_size)
        for index in range(self.position, len(batches), group):
            yield self._make_raw(batches[index : index + group], index)

    def _items(self, batches: list[np.ndarray]):
        """The epoch's batches, in groups (lists), from where they are made."""
        if self._source_next not in (None, (self.epoch, self.start, self.position)):
            self.augmenter.close()  # its source's workers read ahead from elsewhere: start them afresh
            self._source_next = None
        pipeline = self._pipeline()
        if self.payload == S.IMAGE and pipeline is None:
            return self._inline(batches)
        if pipeline is not None and pipeline.source is not None:
            return self._from_workers(batches, pipeline)
        return self._from_thread(batches)

    def __iter__(self):
        batches = self.order.batches(self.rows_of_epoch())
        if self.dataset.remote is not None and self.reader_workers == 0:  # fetch shards ahead of the reader
            self.dataset.remote.prefetch(self.shards_in_order(batches[self.position:]))
        if self._started is None:
            self._started = time.perf_counter()
        items = self._items(batches)
        try:
            while True:
                waited = time.perf_counter()
                item = next(items, _DONE)
                self._waits.append(time.perf_counter() - waited)
                if item is _DONE:
                    break
                for n, (x, y) in enumerate(item):
                    if n:
                        self._waits.append(0.0)  # the rest of a group was ready with its first batch
                    self.position += 1
                    self._rows_out += len(y)
                    yield x, y
            self.epoch, self.start, self.position = self.epoch + 1, 0, 0
        finally:
            items.close()

    def shards_in_order(self, batches: list[np.ndarray]) -> list[dict]:
        """The manifest entries of the shards ``batches`` read, in the order they are first needed."""
        if not batches:
            return []
        shards = self.dataset.locate(np.concatenate(batches))[0]
        first = np.unique(shards, return_index=True)[1]
        entries = self.dataset.manifest["shards"]
        return [entries[int(shards[i])] for i in np.sort(first)]

    def stats(self) -> dict:
        """Waits for each batch, rows/s, and the share of wall time the consumer spent waiting."""
        wall = time.perf_counter() - self._started if self._started else 0.0
        waits = np.asarray(self._waits)
        return {"batches": int(len(waits)), "wait_s_total": float(waits.sum()),
                "wait_ms_mean": float(waits.mean() * 1000) if len(waits) else 0.0,
                "wait_ms_p95": float(np.percentile(waits, 95) * 1000) if len(waits) else 0.0,
                "rows_per_s": self._rows_out / wall if wall else 0.0,
                "wait_fraction": float(waits.sum() / wall) if wall else 0.0}


def is_dense(dataset_dir: str | Path, cache_dir: str | None = None) -> bool:
    """Whether ``dataset_dir`` is a detection or segmentation dataset (its manifest names its targets): a local
    one by its manifest alone (``has_dense_targets``), one at a URL through the cache."""
    if not remote(dataset_dir):
        return has_dense_targets(dataset_dir)
    manifest = Dataset(dataset_dir, "all", verify=False, cache=CacheOptions(cache_dir)).manifest
    return bool((manifest.get("payload_info") or {}).get("targets"))


def open_loader(dataset_dir: str | Path, batch_size: int, **options) -> Loader:
    """A ``Loader`` over ``dataset_dir``: ``options`` are ``LoaderOptions``' (split, recipe or ops, shuffle,
    seed, device, last / drop_last, dtype, rank, world_size, mix, prefetch, threads, reader_workers, verify,
    fuse, augment, color, text, bootstrap, sampler, balanced_from, rows); a name that is none of them is
    refused in one line. A detection or segmentation dataset gets its own loader
    (``augforge.pipelines.dense_loader``: images with target dicts), with the options the two share."""
    checked = options_of(LoaderOptions, options, "open_loader")
    if is_dense(dataset_dir, options.get("cache_dir")):
        refuse_unshared(options, dataset_dir)
        return open_dense_loader(dataset_dir, batch_size, **shared_options(options))
    return Loader(**loader_parts(dataset_dir, batch_size, checked))
