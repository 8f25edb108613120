"""Detection and segmentation rows as PyTorch expects them: ``DenseDataset`` (a map-style dataset over a dense
dataset directory, with an augmentation (``RandomGeometry``, or a recipe's ops as ``DenseAugment``) drawn per
row and epoch), ``collate_detection`` (a list of images and
a list of target dicts, as torchvision's detection models take them) and ``pad_targets`` (fixed shapes with a
count, for users who want them).

A target dict holds ``boxes`` (float32 [N, 4], x0 y0 x1 y1 in pixels), ``labels`` (int64 [N]), ``iscrowd``
(int64 [N]), ``area`` (float32 [N]: the mask's pixels, else the box's), ``masks`` (uint8 [N, H, W], when asked
and the instances have polygons or masks), ``keypoints`` (float32 [N, K, 3], for a set with keypoints) and
``semantic`` (int64 [H, W] class indices, 255 where no class, for a semantic segmentation set) and
``image_labels`` (float32 [C] multi-hot, for a set with image-level labels).
Each draw is seeded from (seed, epoch, row), so an epoch is the same on a rerun and differs between epochs.
``augforge.pipelines.dense_loader`` batches it (the ``Loader`` of a dense dataset).
"""

from __future__ import annotations

import numpy as np

from augforge.augment.copy_paste import paste_from
from augforge.augment.mosaic import mosaic
from augforge.datasets import schema as S
from augforge.datasets.keys import row_rng
from augforge.datasets.reader import Dataset
from augforge.datasets.targets import (IMAGE_LABELS, SEMANTIC, Instances, decode_semantic, from_columns,
                                       instance_mask, is_dense)
from augforge.pipelines.dense_rows import decode_rgb
from augforge.errors import AugforgeError


class DenseDataset:
    """Rows of a dense dataset directory's ``split`` as (image float32 [C, H, W] in [0, 1], or what the ops'
    ``normalize`` makes; target dict); ``augment`` (a callable ``(rng, image, instances) -> Drawn``:
    ``RandomGeometry``, ``DenseAugment``) drawn per row and epoch (``set_epoch``), else the rows as stored."""

    def __init__(self, path, split: str = "train", augment=None, seed: int = 0, masks: bool = False,
                 verify: bool = True, mosaic=None, mosaic_p: float = 0.0, copy_paste=None) -> None:
        self.data = Dataset(path, split, verify=verify)
        if not is_dense(self.data.target_columns):
            raise AugforgeError(f"{path}: a classification dataset (no target columns); DenseDataset reads "
                                "detection and segmentation datasets")
        self.augment, self.seed, self.masks, self.epoch = augment, seed, masks, 0
        self.mosaic, self.mosaic_p = mosaic, mosaic_p  # a MosaicSpec: batch samples tiled four into one
        self.copy_paste = copy_paste  # a CopyPasteSpec: instances of the batch's other samples pasted
        #: the categories the targets index (without the rows' ``(no instances)`` label)
        self.classes = list((self.data.manifest.get("payload_info") or {}).get("targets", {}).get("classes")
                            or self.data.class_names)
        self.rejected = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next rows' transforms for this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def _split(self, index: int) -> tuple[int, int]:
        """(row, copy) of an index: past ``len()``, index ``row + k * len()`` is row's k-th repeated copy."""
        return int(index) % len(self.data), int(index) // len(self.data)

    def __getitem__(self, index):
        """One row's (image, target); a list of indices: the batch of them (``batch``), as the loader asks."""
        return self.batch(index) if isinstance(index, list) else self.batch([index])[0]

    def _pastes(self, indices, ids: list[str], images: list, targets: list, maps: list):
        """Each sample, with the spec's probability, gets instances of the batch's other samples pasted (as they
        were before any paste), seeded from (seed, epoch, the batch's rows)."""
        rng = np.random.default_rng([self.seed, self.epoch, 6_006, *map(int, indices)])
        out_images, out_targets, out_maps = list(images), list(targets), list(maps)
        for i in range(len(images)):
            if rng.random() >= self.copy_paste.p:
                continue
            donors = [(images[j], targets[j], ids[j]) for j in range(len(images)) if j != i]
            out_images[i], out_targets[i], out_maps[i], _ = paste_from(rng, images[i], targets[i], donors,
                                                                       self.copy_paste, self.classes, maps[i])
        return out_images, out_targets, out_maps

    def _mosaics(self, indices, ids: list[str], images: list, targets: list, maps: list):
        """``batch_mosaics`` seeded from (seed, epoch, the batch's rows)."""
        rng = np.random.default_rng([self.seed, self.epoch, 4_004, *map(int, indices)])
        return batch_mosaics(rng, ids, images, targets, maps, self.mosaic, self.mosaic_p)

    def batch(self, indices, mover=None) -> list:
        """The (image, target) pairs of rows ``indices``, read together; ``mover`` (a ``DaliMover``) moves their
        draws in one DALI run (``DenseAugment.batch``)."""
        rows_copies = [self._split(i) for i in indices]
        rows = self.data.take([r for r, _ in rows_copies], [S.ID, S.IMAGE, *self.data.target_columns])
        images = [decode_rgb(data) for data in rows.column(S.IMAGE).to_pylist()]
        targets = from_columns(rows)
        maps = [decode_semantic(m) for m in rows.column(SEMANTIC).to_pylist()] if SEMANTIC in rows.schema.names \
            else [None] * len(images)
        flags = rows.column(IMAGE_LABELS).to_pylist() if IMAGE_LABELS in rows.schema.names else [None] * len(images)
        if self.augment is not None:
            rngs = [row_rng(self.seed, row_id, copy, f"dense-geometry-epoch-{self.epoch}")
                    for row_id, (_, copy) in zip(rows.column(S.ID).to_pylist(), rows_copies)]
            drawn = self.augment.batch(rngs, images, targets, mover, maps) if mover is not None else \
                [self.augment(rng, image, inst, sem) for rng, image, inst, sem in zip(rngs, images, targets, maps)]
            self.rejected += sum(d.rejected for d in drawn)
            images, targets = [d.moved.image for d in drawn], [d.moved.instances for d in drawn]
            maps = [d.moved.semantic for d in drawn]
            if self.copy_paste is not None and self.copy_paste.p > 0 and len(images) > 1:
                images, targets, maps = self._pastes(indices, rows.column(S.ID).to_pylist(), images, targets, maps)
            if self.mosaic is not None and self.mosaic_p > 0 and len(images) > 1:
                images, targets, maps = self._mosaics(indices, rows.column(S.ID).to_pylist(), images, targets, maps)
        out = []
        for image, inst, sem, labels in zip(images, targets, maps, flags):
            target = detection_target(inst, image.shape[0], image.shape[1], self.masks)
            if sem is not None:
                target["semantic"] = semantic_tensor(sem)
            if labels is not None:  # multi-hot over the classes: what a sigmoid / BCE loss takes
                target["image_labels"] = multi_hot(labels, len(self.classes))
            out.append((image_tensor(image), target))
        return out


def batch_mosaics(rng: np.random.Generator, ids: list[str], images: list, targets: list, maps: list, spec, p: float):
    """Each sample of a batch, with probability ``p``, tiled with three others of the batch drawn by ``rng``
    (``augforge.augment.mosaic``); the others as they were before any tiling. (images, targets, maps)."""
    out_images, out_targets, out_maps = list(images), list(targets), list(maps)
    for i in range(len(images)):
        if rng.random() >= p:
            continue
        others = [j for j in range(len(images)) if j != i]
        picked = [i, *rng.choice(others, 3, replace=len(others) < 3).tolist()]
        tiled = mosaic(rng, [images[j] for j in picked], [targets[j] for j in picked], [ids[j] for j in picked],
                       spec, [maps[j] for j in picked] if maps[i] is not None else None)
        if tiled is not None:
            out_images[i], out_targets[i], out_maps[i] = tiled.image, tiled.instances, tiled.semantic
    return out_images, out_targets, out_maps


def image_tensor(image: np.ndarray):
    """An (H, W, C) uint8 image as a float32 [C, H, W] tensor in [0, 1]; a float image (normalized by the ops)
    as it is, CHW."""
    import torch  # torch: heavy, loaded when rows are turned into tensors

    if image.dtype != np.uint8:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)


def multi_hot(labels: list[int], classes: int):
    """Image-level labels as a float32 [classes] multi-hot vector."""
    import torch  # torch: heavy, loaded when rows are turned into tensors

    out = torch.zeros(classes, dtype=torch.float32)
    out[list(labels)] = 1.0
    return out


def semantic_tensor(labels: np.ndarray):
    """A class-index map as the int64 [H, W] tensor segmentation losses take (``IGNORE``, 255, where no class:
    pass it as ``ignore_index``)."""
    import torch  # torch: heavy, loaded when rows are turned into tensors

    return torch.from_numpy(np.ascontiguousarray(labels)).long()


def detection_target(instances: Instances, height: int, width: int, masks: bool = False) -> dict:
    """The target dict of one image (see the module docstring)."""
    import torch  # torch: heavy, loaded when rows are turned into tensors

    n = len(instances)
    rasters = [instance_mask(instances, i, height, width) for i in range(n)]
    boxes = instances.boxes
    area = np.array([r.sum() if r is not None else (b[2] - b[0]) * (b[3] - b[1]) for r, b in zip(rasters, boxes)])
    target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(n, 4),
              "labels": torch.as_tensor(instances.classes, dtype=torch.int64),
              "iscrowd": torch.as_tensor(instances.crowd, dtype=torch.int64),
              "area": torch.as_tensor(area, dtype=torch.float32).reshape(n)}
    if masks and any(r is not None for r in rasters):
        target["masks"] = torch.as_tensor(np.stack([r if r is not None else np.zeros((height, width), bool)
                                                    for r in rasters]).reshape(n, height, width), dtype=torch.uint8)
    if instances.keypoints is not None:
        target["keypoints"] = torch.as_tensor(instances.keypoints, dtype=torch.float32)
    return target


def collate_detection(batch: list) -> tuple[list, list]:
    """(images, targets) of a batch of (image, target) pairs: lists, since images and instance counts differ
    (torchvision's detection models take exactly this)."""
    return [image for image, _ in batch], [target for _, target in batch]


def pad_targets(targets: list[dict], max_instances: int | None = None) -> dict:
    """Fixed-shape targets: ``boxes`` [B, M, 4] (zeros where padded), ``labels`` [B, M] (-1 where padded) and
    ``count`` [B]; M is ``max_instances`` or the batch's largest count. More instances than M is an error (no
    instance is dropped silently)."""
    import torch  # torch: heavy, loaded when rows are turned into tensors

    counts = [len(t["labels"]) for t in targets]
    m = max(counts, default=0) if max_instances is None else max_instances
    if max(counts, default=0) > m:
        raise AugforgeError(f"an image has {max(counts)} instances, more than max_instances {m}; raise it")
    boxes = torch.zeros(len(targets), m, 4)
    labels = torch.full((len(targets), m), -1, dtype=torch.int64)
    for b, target in enumerate(targets):
        boxes[b, : counts[b]] = target["boxes"]
        labels[b, : counts[b]] = target["labels"]
    padded = {"boxes": boxes, "labels": labels, "count": torch.as_tensor(counts, dtype=torch.int64)}
    for key in ("semantic", "image_labels"):  # a semantic set's maps [B, H, W]; multi-hot labels [B, C]
        if targets and all(key in t for t in targets):
            padded[key] = torch.stack([t[key] for t in targets])
    return padded
