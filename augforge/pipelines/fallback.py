"""The torch fallback of the streaming loader, for machines without DALI."""

from __future__ import annotations

import torch

from augforge.augment.image_ops import check_op_list
from augforge.augment.torch_ops import TorchAugment
from augforge.datasets import schema as S
from augforge.datasets.keys import derive_seed
from augforge.datasets.torch_view import ShardDataset
from augforge.errors import AugforgeError
from augforge.pipelines.loader_ops import resolve_ops


class FallbackDataset(torch.utils.data.Dataset):
    """The torch fallback: one split as a ``torch.utils.data.Dataset`` with the recipe's ops in plain torch.

    For users who cannot install DALI (the loader above is the default). Other splits than train get only
    the ops' deterministic part (``augment``, as the loader). Each item is
    ``(image, label)``; the ops draw from a generator seeded from (seed, epoch, index), so items are
    reproducible in any DataLoader worker. Call ``set_epoch`` for fresh draws every epoch.
    """

    def __init__(self, dataset_dir, *, split: str = "train", recipe=None, ops=None, seed: int = 0,
                 augment: bool | None = None) -> None:
        self.view = ShardDataset(dataset_dir, split=split)
        if self.view.dataset.payload != S.IMAGE:
            raise AugforgeError(f"{dataset_dir}: the torch fallback augments images; this dataset holds "
                                f"{self.view.dataset.payload}")
        augment = split == "train" if augment is None else augment  # evaluation never augments
        resolved, color = resolve_ops(recipe, ops, self.view.dataset.manifest.get("payload_info") or {}, augment)
        self.augment = TorchAugment(resolved)  # refuses the DALI-only policies first, by name
        check_op_list(resolved, color, "fallback ops", encoded_output=False)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: int):
        x, y = self.view[index]
        gen = torch.Generator().manual_seed(
            derive_seed(self.seed, "fallback", self.epoch, index) >> 1)
        return self.augment(x, gen), y
