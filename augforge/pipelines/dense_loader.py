"""The loader of a detection or segmentation dataset: batches of images with their target dicts, as torchvision's
detection models take them, augmented online with the recipe's ops moving boxes, masks and keypoints.

``open_dense_loader(dataset_dir, batch_size, recipe=...)`` (also what ``open_loader`` returns for a dense
dataset) yields ``(images, targets)``: a list of float32 [C, H, W] tensors and a list of dicts (``boxes``,
``labels``, ``iscrowd``, ``area``, and ``masks``, ``keypoints`` where asked and present), on the loader's device
(``augforge.device.choose_device``: the one decision the model and evaluation share). With ``padded`` the
targets come as fixed-shape tensors with a count (``pad_targets``) and the images as one [B, C, H, W] tensor,
which needs every image the same size (end the ops with ``resize`` or a crop).

The row order is ``augforge.pipelines.order.RowOrder``'s (a permutation per (seed, epoch), shared out among
ranks), and each row's draw is seeded from (seed, epoch, row id): an epoch is the same on a rerun, with any
number of ``workers`` (a ``torch.utils.data.DataLoader`` over ``DenseDataset``), and differs between epochs.
On a GPU, DALI moves each batch's pixels, masks and points there (``augforge.augment.dense_dali``; the same
draws, pixels within the kernels' rounding), in the loop's thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from augforge.augment.image_ops import check_image_ops
from augforge.checks import Checker, options_of
from augforge.device import choose_device, rank_and_world
from augforge.balance.repeat_factor import DEFAULT_THRESHOLD, repeat_counts, repeat_factors
from augforge.datasets.targets import TARGET_COLUMNS, from_columns
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.dense_stream import DenseDataset, collate_detection, pad_targets
from augforge.pipelines.loader_options import LoaderOptions
from augforge.pipelines.order import RowOrder, rank_rows
from augforge.recipe import Recipe, load_recipe
from augforge.recipe.augment import TargetSpec

SAMPLERS = ("shuffle", "repeat_factor")
#: what ``open_loader`` may pass on to a dense loader; anything else it was given is refused by name
SHARED_OPTIONS = ("split", "recipe", "ops", "shuffle", "seed", "device", "drop_last", "last", "rank", "world_size",
                  "augment", "verify")


class DenseLoader:
    """Batches of a dense dataset (see the module docstring)."""

    def __init__(self, dataset: DenseDataset, order: RowOrder, device, *, workers: int = 0,
                 padded: bool | int = False, repeat: np.ndarray | None = None) -> None:
        self.dataset, self.order, self.device, self.workers, self.padded = dataset, order, device, workers, padded
        self.repeat = repeat  # repeat-factor sampling: each row's factor (None: every row once an epoch)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.order) if self.repeat is None else len(self.order.batches(self.epoch_rows()))

    def epoch_rows(self) -> np.ndarray:
        """This rank's rows of the current epoch, in order. With repeat-factor sampling each row comes its drawn
        number of times (``repeat_counts``, from (seed, epoch)), shuffled; its k-th copy is index
        ``row + k * len(dataset)``, which ``DenseDataset`` draws on its own (copies differ)."""
        if self.repeat is None:
            return self.order.epoch_rows(self.epoch)
        rng = np.random.default_rng([self.order.seed, self.epoch, 2_002])
        counts = repeat_counts(self.repeat, rng)
        rows = np.repeat(np.arange(len(counts)), counts)
        copy = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = rows + len(counts) * copy
        if self.order.shuffle:
            rows = rng.permutation(rows)
        return rank_rows(rows, self.order.rank, self.order.world_size, self.order.last)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's order and augmentations."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(self.epoch)

    @property
    def rejected(self) -> int:
        """Draws the frame policy refused so far (each drawn again; counted in this process's reads)."""
        return self.dataset.rejected

    def __iter__(self):
        from torch.utils.data import DataLoader

        batches = self.order.batches(self.epoch_rows())
        if self.device.is_cuda and hasattr(self.dataset.augment, "dali_mover"):  # DALI moves each batch on the GPU
            mover = self.dataset.augment.dali_mover(self.order.batch_size, "gpu")
            for rows in batches:
                yield self._finish(*collate_detection(self.dataset.batch(rows, mover)))
            return
        loader = DataLoader(self.dataset, sampler=[b.tolist() for b in batches], batch_size=None,
                            num_workers=self.workers, collate_fn=collate_detection)  # a whole batch per item
        for images, targets in loader:
            yield self._finish(images, targets)

    def _finish(self, images: list, targets: list):
        torch_device = self.device.torch
        images = [image.to(torch_device) for image in images]
        targets = [{k: v.to(torch_device) for k, v in t.items()} for t in targets]
        if not self.padded:
            return images, targets
        import torch

        sizes = sorted({tuple(image.shape) for image in images})
        if len(sizes) > 1:
            raise AugforgeError(f"padded batches need every image the same size; this batch has {sizes[0]} and "
                                f"{sizes[1]}: end the ops with resize or a crop, or leave padded off")
        padded = pad_targets([{k: v.cpu() for k, v in t.items()} for t in targets],
                             None if self.padded is True else int(self.padded))
        return torch.stack(images), {k: v.to(torch_device) for k, v in padded.items()}


@dataclass(frozen=True)
class DenseOptions:
    """What ``open_dense_loader`` takes besides the directory and the batch size: ``split``; the ops, ``recipe``'s
    (a ``Recipe`` or its path: its online ``augment.image`` ops and ``train.stream``, under its
    ``augment.targets``) or ``ops`` (op mappings) under ``targets`` (an ``augforge.recipe.augment.TargetSpec``);
    ``augment`` (default: on the train split only); the order, ``shuffle``, ``seed``, ``last`` (keep | drop |
    pad; ``drop_last`` is ``last="drop"``), ``rank``/``world_size`` (default: torch.distributed's); ``workers``
    (DataLoader processes); ``masks`` (per-instance masks in the targets); ``padded`` (fixed shapes: True, the
    batch's largest count; a number, that many instances); ``device``; ``verify`` (shard checksums); ``sampler``
    (shuffle, or repeat_factor: repeat-factor sampling, ``augforge.balance.repeat_factor``, threshold
    ``repeat_threshold``, drawn each epoch)."""

    split: str = "train"
    recipe: object = None
    ops: object = None
    targets: object = None
    augment: bool | None = None
    shuffle: bool = True
    seed: int = 0
    last: str | None = None
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None
    workers: int = 0
    masks: bool = False
    padded: bool | int = False
    device: object = "auto"
    verify: bool = True
    sampler: str = "shuffle"
    repeat_threshold: float = DEFAULT_THRESHOLD


def open_dense_loader(dataset_dir: str | Path, batch_size: int, **options) -> DenseLoader:
    """A ``DenseLoader`` over ``dataset_dir``; ``options`` are ``DenseOptions``' (a name that is none of them is
    refused in one line)."""
    o = options_of(DenseOptions, options, "open_dense_loader")
    if o.recipe is not None and o.ops is not None:
        raise AugforgeError("give recipe or ops, not both")
    targets = o.targets
    if o.recipe is not None:
        recipe = o.recipe if isinstance(o.recipe, Recipe) else load_recipe(o.recipe)
        op_list, targets = recipe.train_ops, recipe.augment.targets
        if recipe.augment.mode != "online":  # its mosaic is the build's, done already
            targets = replace(targets, mosaic=None, mosaic_p=0.0, copy_paste=None)
    else:
        op_list = check_image_ops(Checker("ops"), list(o.ops or []), "ops")
    augment = o.split == "train" if o.augment is None else o.augment
    batch_ops = targets is not None and (targets.mosaic is not None or targets.copy_paste is not None)
    on = (targets or TargetSpec()).augmenter(op_list) if augment and (op_list or batch_ops) else None
    spec = targets or TargetSpec()
    data = DenseDataset(dataset_dir, o.split, on, seed=o.seed, masks=o.masks, verify=o.verify,
                        mosaic=spec.mosaic if augment else None, mosaic_p=spec.mosaic_p,
                        copy_paste=spec.copy_paste if augment else None)
    if spec.copy_paste is not None:
        spec.copy_paste.wanted(data.classes)  # a class the dataset does not have: one line, before any batch
    if len(data) == 0:
        raise AugforgeError(f"{dataset_dir}: split {o.split!r} has no rows")
    dist_rank, dist_world = rank_and_world()
    order = RowOrder(len(data), batch_size, seed=o.seed, shuffle=o.shuffle,
                     last=o.last or ("drop" if o.drop_last else "keep"), rank=dist_rank if o.rank is None else o.rank,
                     world_size=dist_world if o.world_size is None else o.world_size)
    sampler, threshold = o.sampler, o.repeat_threshold
    if targets is not None and targets.repeat_threshold is not None and augment and sampler == "shuffle":
        sampler, threshold = "repeat_factor", targets.repeat_threshold  # the recipe's augment.targets.sampler
    if sampler not in SAMPLERS:
        raise OptionError("{sampler} " + f"{o.sampler!r}: expected one of {', '.join(SAMPLERS)}")
    repeat = None
    if sampler == "repeat_factor":
        rows = from_columns(data.data.take(np.arange(len(data)), list(TARGET_COLUMNS)))
        repeat = repeat_factors(rows, len(data.classes), threshold)[0]
    return DenseLoader(data, order, choose_device(o.device), workers=o.workers, padded=o.padded, repeat=repeat)


def refuse_unshared(options: dict, dataset_dir) -> None:
    """``open_loader`` on a dense dataset: refuse, by name, an option only classification loaders have."""
    defaults = LoaderOptions()
    for name, value in options.items():
        if name not in SHARED_OPTIONS and value != getattr(defaults, name, None):
            raise AugforgeError(f"{name}: {dataset_dir} is a detection or segmentation dataset, whose loader does not "
                                f"take {name} (it takes {', '.join(SHARED_OPTIONS)}; see open_dense_loader)")


def shared_options(options: dict) -> dict:
    """The options ``open_loader`` passes on to ``open_dense_loader``."""
    return {k: v for k, v in options.items() if k in SHARED_OPTIONS}

