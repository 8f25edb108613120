"""The image column of a dataset's memory-mapped shards, read without copies: encoded images as uint8
views for DALI to decode, raw pixels gathered into one batch tensor."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.errors import AugforgeError
from augforge.pipelines.gather import gather_rows
from augforge.pipelines.loader_ops import convert_channels


class ShardImages:
    """The images of one split of ``dataset`` by position; ``info`` is its manifest's payload_info (raw
    pixels need height, width and channels) and ``channels`` what the batches get (1 or 3)."""

    def __init__(self, dataset: Dataset, info: dict, channels: int) -> None:
        self.dataset, self.info, self.channels = dataset, info, channels
        self._binary: dict[int, tuple] = {}  # shard -> (its table, (offsets, values))
        self._pixels: dict[int, tuple] = {}  # shard -> (its table, (rows, H, W, C) pixels as numpy and torch)

    def _current(self, cache: dict, index: int):
        """Shard ``index``'s table from the dataset (marked as used there), and what ``cache`` holds for that
        very table (None when it was unmapped since); views of shards the dataset no longer maps are dropped,
        so that a bounded cache of a remote dataset can let their files go."""
        table = self.dataset.shard(index)
        held = cache.get(index)
        if self.dataset.remote is not None and len(cache) > len(self.dataset.open_shards()):
            for stale in set(cache) - self.dataset.open_shards():
                del cache[stale]
        return table, (held[1] if held is not None and held[0] is table else None)

    def _shard_binary(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``index``'s image column as (offsets, values): views of the memory map, no copy."""
        table, views = self._current(self._binary, index)
        if views is None:
            array = table.column(S.IMAGE).combine_chunks()
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + len(array) + 1]
            views = (offsets, np.frombuffer(array.buffers()[2], dtype=np.uint8))
            self._binary[index] = (table, views)
        return views

    def encoded(self, positions: np.ndarray) -> list[np.ndarray]:
        """The encoded images at ``positions`` as uint8 views of the memory-mapped shards (DALI copies them)."""
        shard_of, local = self.dataset.locate(positions)
        views = {int(index): self._shard_binary(int(index)) for index in np.unique(shard_of)}
        out = []
        for index, row in zip(shard_of.tolist(), local.tolist()):
            offsets, values = views[index]
            out.append(values[offsets[row] : offsets[row + 1]])
        return out

    def _shard_pixels(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        """Shard ``index``'s raw image column as (rows, H, W, C) uint8 views of the memory map, as numpy and
        as torch (no copy)."""
        table, views = self._current(self._pixels, index)
        if views is None:
            shape = (self.info["height"], self.info["width"], self.info["channels"])
            offsets, values = self._shard_binary(index)
            if not np.all(np.diff(offsets) == int(np.prod(shape))):
                raise AugforgeError(f"shard {index}: raw images are not all {'x'.join(map(str, shape))}")
            pixels = values[offsets[0] : offsets[-1]].reshape(len(offsets) - 1, *shape)
            with warnings.catch_warnings():  # the map is read-only, and only ever read from
                warnings.simplefilter("ignore", UserWarning)
                views = (pixels, torch.from_numpy(pixels))
            self._pixels[index] = (table, views)
        return views

    def gather_raw(self, positions: np.ndarray) -> torch.Tensor:
        """The rows at ``positions`` (in this split) as one (N, H, W, C) uint8 tensor, in that order.

        A run of consecutive rows of one shard is one slice copy (by torch, on every core). Otherwise each
        shard's rows are copied straight into their places, one ``gather.copy_rows`` call per shard however
        many batches the positions hold.
        """
        shard_of, local = self.dataset.locate(positions)
        first, first_t = self._shard_pixels(int(shard_of[0]))
        # numpy allocates large arrays on transparent huge pages: writing a fresh batch then faults 2 MB
        # at a time, not 4 KB (a torch.empty batch measured 3-5x slower to fill)
        out = np.empty((len(positions), *first.shape[1:]), dtype=np.uint8)
        out_t = torch.from_numpy(out)
        if shard_of[0] == shard_of[-1] and np.all(np.diff(local) == 1):  # a run
            return convert_channels(out_t.copy_(first_t[local[0] : local[-1] + 1]), self.channels)
        order = np.argsort(shard_of, kind="stable")
        shards = shard_of[order]
        bounds = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), len(order)]
        pieces = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            pixels = self._shard_pixels(int(shards[start]))[0]
            rows = order[start:stop]
            pieces.append((pixels.reshape(len(pixels), -1), local[rows], rows))
        gather_rows(out.reshape(len(positions), -1), pieces)
        return convert_channels(out_t, self.channels)
