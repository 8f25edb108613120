"""The reader part of a loader: one split's rows by position, straight from the memory-mapped shards.

``RowReader`` gives labels, images (encoded views for the decoder, or raw pixels gathered into one tensor)
and table columns (features, texts) for a batch of positions. ``ProcessSource`` is the same reading done in
DALI's reader processes (its parallel external_source): it cuts the epochs with the loader's own
``RowOrder``, so the processes read exactly the batches the loader expects.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.pipelines.order import RowOrder
from augforge.pipelines.shard_images import ShardImages
from augforge.storage.urls import remote

#: raw-pixel batches are made in groups of about this many bytes (one gather or copy per group)
GROUP_BYTES = 8 << 20


class RowReader:
    """One split of a dataset by position: ``channels`` is what image batches get (1 or 3)."""

    def __init__(self, dataset: Dataset, channels: int) -> None:
        self.dataset = dataset
        self.payload = dataset.payload
        #: the manifest's payload_info (raw pixels: height, width, channels; features: their names)
        self.info = dataset.manifest.get("payload_info") or {}
        self.images = ShardImages(dataset, self.info, channels) if self.payload == S.IMAGE else None
        self._labels: np.ndarray | None = None

    @property
    def raw(self) -> bool:
        """Whether the images are stored as raw pixels (no decoding)."""
        return self.info.get("encoding") == "raw"

    def labels(self) -> np.ndarray:
        """Every row's label (read once)."""
        if self._labels is None:
            self._labels = self.dataset.labels()
        return self._labels

    def label_batch(self, positions: np.ndarray) -> torch.Tensor:
        """The int64 labels of ``positions``."""
        return torch.from_numpy(self.labels()[positions])

    def image_inputs(self, positions: np.ndarray) -> list[np.ndarray]:
        """What an image pipeline takes for ``positions``: raw HWC pixel arrays, or encoded bytes as uint8 views."""
        if self.raw:
            return list(self.images.gather_raw(positions).numpy())
        return self.images.encoded(positions)

    def column(self, positions: np.ndarray) -> tuple[pa.ChunkedArray, torch.Tensor]:
        """(the payload column, the int64 labels) of ``positions``, for feature and text rows."""
        table = self.dataset.take(positions, [self.payload, S.LABEL])
        y = torch.from_numpy(table.column(S.LABEL).to_numpy().astype(np.int64, copy=True))
        return table.column(self.payload), y

    def raw_group(self, batch_size: int) -> int:
        """How many raw-pixel batches are made together: about GROUP_BYTES' worth, so that a group is one
        copy in order, one gather call per shard shuffled."""
        row = self.info["height"] * self.info["width"] * self.info["channels"]
        return max(1, GROUP_BYTES // (row * batch_size))


class ProcessSource:
    """The callback of DALI's parallel external_source: batch ``iteration`` of the source's epoch
    ``epoch_idx``, read in a worker process from the memory-mapped shards.

    It holds plain settings only (picklable for spawned workers) and cuts epochs with the loader's ``order``:
    epoch ``start_epoch + epoch_idx``, whose first epoch starts at global row ``start_row`` and batch
    ``start_position`` of that segment.
    """

    def __init__(self, dataset_dir: str, split: str, order: RowOrder, channels: int, start: tuple[int, int, int],
                 cache=None) -> None:
        self.dataset_dir, self.split, self.order, self.channels, self.cache = dataset_dir, split, order, channels, cache
        self.start_epoch, self.start_row, self.start_position = start
        self._reader = self._epoch = self._batches = None
        #: how DALI must start the reader processes: a remote dataset's object-store client runs threads that
        #: a forked child would inherit dead, so those read in spawned processes
        self.start_method = "spawn" if remote(dataset_dir) else None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None, "_epoch": None, "_batches": None}

    def __call__(self, info) -> list[np.ndarray]:
        if self._reader is None:
            self._reader = RowReader(Dataset(self.dataset_dir, self.split, verify=False, cache=self.cache),
                                     self.channels)
        epoch = self.start_epoch + info.epoch_idx
        if epoch != self._epoch:
            start = self.start_row if info.epoch_idx == 0 else 0
            self._epoch, self._batches = epoch, self.order.batches(self.order.epoch_rows(epoch, start))
        index = info.iteration + (self.start_position if info.epoch_idx == 0 else 0)
        if index >= len(self._batches):
            raise StopIteration
        return self._reader.image_inputs(self._batches[index])
