"""The shard store as a ``torch.utils.data.Dataset``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from augforge.datasets import schema as S
from augforge.paths import is_url


def decode_image(data: bytes) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 CHW tensor (1 channel for grey images, else 3)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("L", "RGB"):
            img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
        pixels = np.asarray(img)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), copy=True, order="C"))


def raw_image(data: bytes, info: dict) -> torch.Tensor:
    """A raw HWC uint8 payload (``encoding: raw`` in the manifest) as a uint8 CHW tensor."""
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(info["height"], info["width"], info["channels"])
    return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))


def to_tensor(payload: str, value, info: dict | None = None):
    """A stored payload value as what a model takes: image tensor, feature tensor, or the text itself.

    ``info`` is the manifest's ``payload_info`` (it says whether images are encoded or raw pixels).
    """
    if payload == S.IMAGE:
        if info and info.get("encoding") == "raw":
            return raw_image(value, info)
        return decode_image(value)
    if payload == S.FEATURES:
        return torch.tensor(value, dtype=torch.float32)
    return value


class ShardDataset(torch.utils.data.Dataset):
    """Rows of one split as ``(payload, label)``: a uint8 CHW image tensor, a float32 feature vector,
    or a string, and an int label. Safe to use with DataLoader workers (shards are reopened per process).
    """

    def __init__(self, root: str | Path, split: str = "train", transform=None, target_transform=None,
                 verify: bool = True, cache=None) -> None:
        self.root = str(root) if is_url(root) else Path(root)
        self.cache = cache  # how a remote dataset is cached (CacheOptions)
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.verify = verify
        self._dataset = None
        self._length = len(self.dataset)

    @property
    def dataset(self):
        """The underlying reader, opened lazily in each process."""
        if self._dataset is None:
            from augforge.datasets.reader import Dataset  # the allowed reader<->torch_view circle

            self._dataset = Dataset(self.root, split=self.split, verify=self.verify, cache=self.cache)
        return self._dataset

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int):
        row = self.dataset[index]
        payload = self.dataset.payload
        x = to_tensor(payload, row[payload], self.dataset.manifest.get("payload_info"))
        y = row[S.LABEL]
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_dataset"] = None
        return state
