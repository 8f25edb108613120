"""The augmenter part of a loader: its image ops through the backend's pipeline (DALI's, or the torch one
where DALI is absent: ``augforge.augment.backend``), then mixing (mixup / cutmix) of whole batches.

Random ops and mixing run only where ``augment`` is on (the train split by default); evaluation loaders get
the deterministic part of the ops (``evaluation_ops``) and no mixing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from augforge.augment.backend import image_augmenter
from augforge.augment.image_ops import check_op_list, evaluation_ops
from augforge.augment.mix import MixConfig, mix_batch
from augforge.datasets.keys import derive_seed
from augforge.device import Device


def channels_of(color: str) -> int:
    """Channels of image batches in a colour mode: 1 for gray, else 3."""
    return 1 if color == "gray" else 3


@dataclass(eq=False)
class BatchAugment:
    """A loader's ops (already reduced to their deterministic part where ``augment`` is off), its colour mode,
    mixing, and what seeds them: (``seed``, ``rank``) for the pipeline's draws, (seed, rank, epoch, batch) for
    mixing. ``batch_size``, ``threads`` and ``fuse`` configure the pipeline (``ImageAugmenter``)."""

    ops: tuple
    color: str
    device: Device
    augment: bool
    seed: int = 0
    rank: int = 0
    mix: MixConfig = field(default_factory=MixConfig)
    batch_size: int = 1
    threads: int = 1
    fuse: bool = True
    pipeline: object = field(default=None, init=False)  # built on first use, kept across epochs

    def __post_init__(self) -> None:
        if not self.augment:
            self.mix = MixConfig()

    @property
    def channels(self) -> int:
        """Channels of the image batches (the colour mode's, whatever the stored images have)."""
        return channels_of(self.color)

    def evaluation_ops(self) -> tuple:
        """The deterministic part of the ops: what evaluation feeds a model trained on these batches."""
        return evaluation_ops(self.ops)

    def needed(self, raw: bool) -> bool:
        """Whether images need the pipeline: raw pixels without ops are a plain copy."""
        return bool(self.ops) or not raw

    def open(self, raw: bool, source=None, source_workers: int = 0):
        """The image pipeline (built once, seeded from seed and rank); ``source``: DALI's parallel external
        source reading in ``source_workers`` processes, else batches are handed in."""
        if self.pipeline is None:
            check_op_list(self.ops, self.color, "loader ops", encoded_output=False)
            self.pipeline = image_augmenter(self.ops, seed=derive_seed(self.seed, "stream", self.rank), decoded=raw,
                                            source=source, source_workers=source_workers, color=self.color,
                                            device=self.device.dali, batch_size=self.batch_size,
                                            threads=self.threads, fuse=self.fuse)
        return self.pipeline

    def close(self) -> None:
        """Close the pipeline (its reader processes too); the next ``open`` builds a new one."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def mixed(self, x, y, num_classes: int, epoch: int, index: int):
        """Batch ``index`` of ``epoch`` mixed as the config says (soft labels), or (x, y) as they are."""
        if not self.mix.active:
            return x, y
        rng = np.random.default_rng([self.seed, self.rank, epoch, index])
        x, y, _ = mix_batch(x, y, num_classes, self.mix, rng)
        return x, y
