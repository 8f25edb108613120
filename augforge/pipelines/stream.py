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
Raw-pixel batches without ops are a memory copy each: they are made when asked, in the consumer's
thread, in groups of about ``GROUP_BYTES`` (one copy or gather per group). ``stats()`` reports how
long the consumer waited for each batch.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import torch

from augforge.augment.backend import image_augmenter
from augforge.augment.image_ops import check_op_list, evaluation_ops
from augforge.augment.mix import MixConfig, mix_batch
from augforge.augment.ops import op_dicts
from augforge.datasets import schema as S
from augforge.datasets.keys import derive_seed
from augforge.datasets.reader import Dataset
from augforge.device import choose_device, rank_and_world
from augforge.errors import AugforgeError
from augforge.pipelines.fallback import FallbackDataset  # noqa: F401  (its documented path until the next release)
from augforge.pipelines.loader_ops import resolve_ops
from augforge.pipelines.shard_images import ShardImages
from augforge.pipelines.order import LAST, balanced_order, checked_rows, epoch_order, rank_rows
from augforge.pipelines.text_encoding import encoder_from_spec, fit_encoder
from augforge.recipe.train import TextOptions

_DONE = object()
#: raw-pixel batches are made in groups of about this many bytes (one gather or copy per group)
GROUP_BYTES = 8 << 20


def _text_encoder(text, dataset_dir):
    """The loader's text encoder: ``text`` itself (an encoder), one restored from a checkpoint's spec (a
    dict), or one made from ``TextOptions`` (default: fastText's hashed n-grams), trained on the train
    split's texts where it learns."""
    if isinstance(text, dict):
        return encoder_from_spec(text)
    if text is not None and not isinstance(text, TextOptions):
        return text
    options = text or TextOptions()
    return fit_encoder(options, "fasttext", Dataset(dataset_dir, "train", verify=False).texts(), None)


class Loader:
    """Batches of one split of a dataset directory, epoch after epoch (see the module docstring)."""

    def __init__(self, dataset_dir, batch_size: int, *, split: str = "train", recipe=None, ops=None,
                 shuffle: bool = True, seed: int = 0, device: str = "auto", drop_last: bool = False,
                 last: str | None = None, dtype: str | None = None, rank: int | None = None,
                 world_size: int | None = None, mix: MixConfig | None = None, prefetch: int = 2,
                 threads: int | None = None, reader_workers: int = 0, verify: bool = True,
                 fuse: bool = True, augment: bool | None = None, color: str | None = None,
                 text=None, bootstrap: int | None = None, sampler: str = "shuffle",
                 balanced_from: int | None = None, rows=None) -> None:
        if batch_size < 1:
            raise AugforgeError(f"batch_size {batch_size}: expected at least 1")
        last = last or ("drop" if drop_last else "keep")
        if last not in LAST:
            raise AugforgeError(f"last={last!r}: expected one of {', '.join(LAST)}")
        self.dataset = Dataset(dataset_dir, split=split, verify=verify)
        if len(self.dataset) == 0:
            raise AugforgeError(f"{dataset_dir}: split {split!r} has no rows")
        dist_rank, dist_world = rank_and_world()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise AugforgeError(f"rank {self.rank} is outside world_size {self.world_size}")
        self.batch_size, self.shuffle, self.seed, self.last = batch_size, shuffle, seed, last
        #: whether random ops (and mixing) run: by default on the train split only; evaluation never augments
        self.augment = split == "train" if augment is None else bool(augment)
        self.mix = (mix or MixConfig()) if self.augment else MixConfig()
        self.prefetch = max(1, prefetch)
        if reader_workers < 0:
            raise AugforgeError(f"reader_workers {reader_workers}: expected 0 (a thread feeds DALI) or more")
        self.reader_workers = reader_workers
        self.epoch, self.position = 0, 0
        if sampler not in ("shuffle", "balanced"):
            raise AugforgeError(f"sampler={sampler!r}: expected shuffle or balanced")
        #: ``balanced``: each epoch draws its rows with replacement, every class equally often (train only)
        self.sampler = sampler if self.augment else "shuffle"
        #: deferred re-sampling (``train.rebalance: drs``): class-balanced draws from this epoch on (train only)
        self.balanced_from = balanced_from if self.augment else None
        #: ``bootstrap``: the split's rows resampled with replacement once, from that seed (every epoch then
        #: shuffles the resample), for estimates that include the variance of the training rows
        self.bootstrap = bootstrap
        #: ``rows``: the positions of the split this loader covers (all of them by default), e.g. the training
        #: folds of a cross-fit; bootstrap resamples among them
        self.rows = None if rows is None else checked_rows(rows, len(self.dataset), f"{dataset_dir} split {split!r}")
        self._base = self.rows
        if bootstrap is not None:
            pool = np.arange(len(self.dataset)) if self.rows is None else self.rows
            draw = np.random.default_rng([int(bootstrap), 0xB007]).integers(0, len(pool), len(pool))
            self._base = np.sort(pool[draw])
        self.payload = self.dataset.payload
        if reader_workers and self.payload != S.IMAGE:
            raise AugforgeError(f"reader_workers: {dataset_dir} holds {self.payload} rows; reader processes feed "
                                "DALI, which only image datasets go through")
        self.info = self.dataset.manifest.get("payload_info") or {}
        self.num_classes = len(self.dataset.class_names)
        self._ops, self.color = resolve_ops(recipe, ops, self.info, self.augment, color)
        #: the device decision (augforge.device); image batches come out where its DALI pipeline runs
        self.device = choose_device(device)
        self._augmenter_args = dict(color=self.color, device=self.device.dali, batch_size=batch_size,
                                    threads=threads or max(1, torch.get_num_threads()), fuse=fuse)
        self.dtype = dtype
        #: text rows: the encoder that turns them into ids (shared by a run's train, val and test loaders)
        self.encoder = _text_encoder(text, dataset_dir) if self.payload == S.TEXT else None
        self._pipeline = None  # the image pipeline (augment.backend), built on first use, kept across epochs
        self._source_next: tuple[int, int] | None = None  # (epoch, position) the parallel source reads next
        self.images = ShardImages(self.dataset, self.info, self.channels)
        self._labels: np.ndarray | None = None
        self._waits: list[float] = []
        self._rows_out = 0
        self._started: float | None = None

    # -- configuration -------------------------------------------------------------------------------

    @property
    def ops(self) -> tuple:
        """The image ops this loader runs on every batch."""
        return self._ops

    @property
    def channels(self) -> int:
        """Channels of the image batches (the colour mode's, whatever the stored images have)."""
        return 1 if self.color == "gray" else 3

    def input_spec(self) -> dict:
        """What evaluation needs to feed a model as this loader feeds it (JSON, stored in checkpoints): the
        payload, and for images the colour mode and the deterministic part of the ops, for text the
        encoder (tokenizer, n-gram settings, truncation), for features their width."""
        spec: dict = {"payload": self.payload}
        if self.payload == S.IMAGE:
            spec.update(color=self.color, channels=self.channels, ops=op_dicts(evaluation_ops(self._ops)))
        elif self.payload == S.TEXT:
            spec["text"] = self.encoder.spec()
        else:
            spec["dim"] = len(self.info.get("feature_names") or ())
        return spec

    # -- epochs ---------------------------------------------------------------------------------------

    def rows_of_epoch(self, epoch: int | None = None) -> np.ndarray:
        """This rank's positions (in the split) for ``epoch``, in order."""
        epoch = self.epoch if epoch is None else epoch
        balanced = self.sampler == "balanced" or (self.balanced_from is not None and epoch >= self.balanced_from)
        if balanced:  # over the bootstrap resample's labels when there is one
            labels = self._labels_all() if self._base is None else self._labels_all()[self._base]
            order = balanced_order(labels, self.seed, epoch)
        else:
            order = epoch_order(self.size, self.seed, epoch, self.shuffle)
        if self._base is not None:
            order = self._base[order]
        return rank_rows(order, self.rank, self.world_size, self.last)

    def _batches_of(self, rows: np.ndarray) -> list[np.ndarray]:
        """The epoch's rows cut into batches; each batch's rows sorted into storage order, so that reading
        them walks the memory map forwards (which rows share a batch is what the shuffle decides)."""
        cut = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if cut and len(cut[-1]) < self.batch_size:
            if self.last == "drop":
                cut.pop()
            elif self.last == "pad":
                cut[-1] = np.resize(np.concatenate([cut[-1], rows]), self.batch_size)
        return [np.sort(batch) for batch in cut]

    @property
    def size(self) -> int:
        """Rows per epoch before the ranks' shares: the split's, its ``rows``' or its bootstrap resample's."""
        return len(self.dataset) if self._base is None else len(self._base)

    def __len__(self) -> int:
        """Batches per epoch, from the counts alone (as ``rank_rows`` and ``_batches_of`` cut them)."""
        n, world = self.size, self.world_size
        rows = n // world if self.last == "drop" else -(-n // world)
        return rows // self.batch_size if self.last == "drop" else -(-rows // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        """Where the loader is: the epoch and how many of its batches were consumed."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields the batches not yet consumed."""
        for key in ("seed", "world_size", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise AugforgeError(f"loader state has {key}={state.get(key)!r}, this loader {getattr(self, key)!r}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # -- producing batches ----------------------------------------------------------------------------

    def _augmenter(self):
        """The image pipeline (DALI's, or the torch one where DALI is absent: ``augforge.augment.backend``),
        built once per loader (seeded from seed and rank) and kept across epochs."""
        if self.payload != S.IMAGE or (not self._ops and self.info.get("encoding") == "raw"):
            return None
        if self._pipeline is None:
            check_op_list(self._ops, self._augmenter_args["color"], "loader ops", encoded_output=False)
            seed = derive_seed(self.seed, "stream", self.rank)
            raw = self.info.get("encoding") == "raw"
            source = None
            if self.reader_workers:
                source = _BatchReader(str(self.dataset.root), self._reader_config(), self.epoch, self.position, raw)
                self._source_next = (self.epoch, self.position)
            self._pipeline = image_augmenter(self._ops, seed=seed, decoded=raw, source=source,
                                             source_workers=self.reader_workers, **self._augmenter_args)
        return self._pipeline

    def _reader_config(self) -> dict:
        """What a reader process needs to cut the same epochs into the same batches."""
        return dict(batch_size=self.batch_size, split=self.dataset.split, shuffle=self.shuffle, seed=self.seed,
                    last=self.last, rank=self.rank, world_size=self.world_size, verify=False, color=self.color,
                    device="cpu", bootstrap=self.bootstrap, rows=self.rows)

    def _make_raw(self, batches: list[np.ndarray], index: int) -> list[tuple]:
        """Raw-pixel batches without ops, ``index``, ``index + 1``, ...: a list of (x, y). The group is one
        gather (one copy in order), cut into batches that are views of it."""
        xs = torch.split(self.images.gather_raw(np.concatenate(batches)), [len(b) for b in batches])
        labels = self._labels_all()
        return [self._finish(x.permute(0, 3, 1, 2), torch.from_numpy(labels[b]), index + i)
                for i, (x, b) in enumerate(zip(xs, batches))]

    def _raw_group(self) -> int:
        """How many raw-pixel batches are made together: about GROUP_BYTES' worth, so that a group is one
        copy in order, one gather call per shard shuffled."""
        row = self.info["height"] * self.info["width"] * self.info["channels"]
        return max(1, GROUP_BYTES // (row * self.batch_size))

    def _make_one(self, positions: np.ndarray, augmenter, index: int):
        if self.payload == S.IMAGE:  # straight from the memory-mapped shards: no Arrow take, no Python bytes
            y = torch.from_numpy(self._labels_all()[positions])
            if augmenter.decoded:
                x = augmenter.batch_tensor(list(self.images.gather_raw(positions).numpy()))
            else:
                x = augmenter.batch_tensor(self.images.encoded(positions))
            if not augmenter.chw:
                x = x.permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
            return self._finish(x, y, index)
        table = self.dataset.take(positions, [self.payload, S.LABEL])
        y = torch.from_numpy(table.column(S.LABEL).to_numpy().astype(np.int64, copy=True))
        column = table.column(self.payload)
        if self.payload == S.FEATURES:
            values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            values = values.reshape(len(positions), -1).astype(np.float32, copy=False)
            x = torch.from_numpy(values if values.flags.writeable else values.copy())  # Arrow's memory is read-only
        elif self.payload == S.TEXT:
            x = self.encoder.encode(column.to_pylist())
        return self._finish(x, y, index)

    def _labels_all(self) -> np.ndarray:
        if self._labels is None:
            self._labels = self.dataset.labels()
        return self._labels

    def _finish(self, x, y, index: int):
        if self.dtype == "bfloat16" and x.is_floating_point():
            x = x.to(torch.bfloat16)
        if self.mix.active and self.payload == S.IMAGE:
            rng = np.random.default_rng([self.seed, self.rank, self.epoch, index])
            x, y, _ = mix_batch(x, y, self.num_classes, self.mix, rng)
        return x, y

    def _produce(self, batches: list[np.ndarray], start: int, out: queue.Queue, stop: threading.Event) -> None:
        try:
            augmenter = self._augmenter()
            for index in range(start, len(batches)):
                if stop.is_set():
                    return
                out.put([self._make_one(batches[index], augmenter, index)])
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

    def _from_workers(self, batches: list[np.ndarray], augmenter):
        """Batches read by DALI's parallel external_source (``reader_workers`` processes, reading ahead) and
        augmented by the pipeline; labels are looked up here from the same cut of the epoch."""
        labels = self._labels_all()
        for index in range(self.position, len(batches)):
            x = augmenter.next_batch()
            if x is None or len(x) != len(batches[index]):
                raise AugforgeError(f"the reader processes gave batch {index} of epoch {self.epoch} out of step")
            if not augmenter.chw:
                x = x.permute(0, 3, 1, 2)
            self._source_next = (self.epoch, index + 1)
            yield [self._finish(x, torch.from_numpy(labels[batches[index]]), index)]
        if augmenter.next_batch() is not None:  # the source ends its epoch here, and the pipeline resets
            raise AugforgeError(f"the reader processes gave more batches than epoch {self.epoch} has")
        self._source_next = (self.epoch + 1, 0)

    def _inline(self, batches: list[np.ndarray]):
        """Groups of raw-pixel batches made when asked, in the consumer's thread: each is a memory copy,
        which a hand-over between threads would cost more than it hides."""
        group = self._raw_group()
        for index in range(self.position, len(batches), group):
            yield self._make_raw(batches[index : index + group], index)

    def __iter__(self):
        batches = self._batches_of(self.rows_of_epoch())
        if self._started is None:
            self._started = time.perf_counter()
        if self._source_next not in (None, (self.epoch, self.position)):
            self._pipeline.close()  # its source's workers read ahead from elsewhere: start them afresh
            self._pipeline, self._source_next = None, None
        augmenter = self._augmenter() if self.payload == S.IMAGE else None
        if self.payload == S.IMAGE and augmenter is None:
            items = self._inline(batches)
        elif augmenter is not None and augmenter.source is not None:
            items = self._from_workers(batches, augmenter)
        else:
            items = self._from_thread(batches)
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
            self.epoch, self.position = self.epoch + 1, 0
        finally:
            items.close()

    def stats(self) -> dict:
        """Waits for each batch, rows/s, and the share of wall time the consumer spent waiting."""
        wall = time.perf_counter() - self._started if self._started else 0.0
        waits = np.asarray(self._waits)
        return {"batches": int(len(waits)), "wait_s_total": float(waits.sum()),
                "wait_ms_mean": float(waits.mean() * 1000) if len(waits) else 0.0,
                "wait_ms_p95": float(np.percentile(waits, 95) * 1000) if len(waits) else 0.0,
                "rows_per_s": self._rows_out / wall if wall else 0.0,
                "wait_fraction": float(waits.sum() / wall) if wall else 0.0}


class _BatchReader:
    """The callback of DALI's parallel external_source: batch ``iteration`` of the source's epoch
    ``epoch_idx``, read in a worker process from the memory-mapped shards.

    It holds plain settings only (picklable for spawned workers) and cuts epochs exactly as the loader
    does: epoch ``start_epoch + epoch_idx``, whose first epoch starts at batch ``start_position``.
    """

    def __init__(self, dataset_dir: str, config: dict, start_epoch: int, start_position: int, raw: bool) -> None:
        self.dataset_dir, self.config, self.raw = dataset_dir, config, raw
        self.start_epoch, self.start_position = start_epoch, start_position
        self._loader = self._epoch = self._batches = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loader": None, "_epoch": None, "_batches": None}

    def __call__(self, info) -> list[np.ndarray]:
        if self._loader is None:
            self._loader = Loader(self.dataset_dir, **self.config)  # no ops: reads, never augments
        epoch = self.start_epoch + info.epoch_idx
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._loader._batches_of(self._loader.rows_of_epoch(epoch))
        index = info.iteration + (self.start_position if info.epoch_idx == 0 else 0)
        if index >= len(self._batches):
            raise StopIteration
        positions = self._batches[index]
        return list(self._loader.images.gather_raw(positions).numpy()) if self.raw else self._loader.images.encoded(positions)


def open_loader(dataset_dir: str | Path, batch_size: int, *, split: str = "train", recipe=None, shuffle: bool = True,
                seed: int = 0, device: str = "auto", drop_last: bool = False, **options) -> Loader:
    """A ``Loader`` over ``dataset_dir`` (see ``Loader`` for the other options: ops, last, dtype, rank,
    world_size, mix, prefetch, threads, reader_workers, fuse: False runs DALI's own CPU ops instead of the
    fused pass)."""
    return Loader(dataset_dir, batch_size, split=split, recipe=recipe, shuffle=shuffle, seed=seed, device=device,
                  drop_last=drop_last, **options)
