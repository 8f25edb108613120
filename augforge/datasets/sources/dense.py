"""A detection or segmentation set (COCO JSON, a VOC, YOLO or LabelMe folder) as a source: one row per image,
its instances in the target columns beside it (``augforge.datasets.targets``).

The row's ``label`` is the image's **rarest instance class**: the class of its instances with the fewest
instances in the whole set (crowd regions count only in an image without other instances). The train/val/test
split is stratified on it, so an image holding a rare class is spread over the splits like a rare class's
rows, not left to chance. An image without instances has the label ``(no instances)``, a class name added
after the categories only when such images exist; the instances' own classes index the categories alone.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from augforge.datasets import schema as S
from augforge.datasets.formats.coco import read_coco
from augforge.datasets.formats.dense import DenseSet
from augforge.datasets.formats.labelme import read_labelme
from augforge.datasets.formats.voc import read_voc
from augforge.datasets.formats.yolo import read_yolo
from augforge.datasets.sources.base import Problem, Source
from augforge.datasets.sources.image_folder import DEFAULT_MAX_PIXELS, check_image, read_image_file
from augforge.datasets.formats.semantic import read_semantic, semantic_dirs
from augforge.datasets.targets import (IGNORE, Instances, image_labels_field, semantic_field, target_fields,
                                       to_columns)
from augforge.errors import AugforgeError

#: the label of an image without instances
NO_INSTANCES = "(no instances)"
FORMATS = ("coco", "voc", "yolo", "labelme", "semantic")


def dense_format(path: Path) -> str | None:
    """Which annotation format ``path`` holds (a COCO ``.json`` file, or a folder with VOC's ``Annotations/*.xml``,
    YOLO's ``images/``, ``labels/`` and ``data.yaml`` or ``classes.txt``, semantic masks (``JPEGImages/`` or
    ``images/`` beside ``SegmentationClassPNG/``, ``SegmentationClass/`` or ``masks/``), or LabelMe ``.json``
    files beside images), or None."""
    if path.is_file():
        return "coco" if path.suffix.lower() == ".json" else None
    if not path.is_dir():
        return None
    if (path / "Annotations").is_dir() and any((path / "Annotations").glob("*.xml")):
        return "voc"
    if (path / "images").is_dir() and (path / "labels").is_dir() and \
            ((path / "data.yaml").is_file() or (path / "classes.txt").is_file()):
        return "yolo"  # (an image folder with classes named images and labels has neither file)
    if semantic_dirs(path) is not None:
        return "semantic"
    first = next(iter(sorted(path.glob("*.json"))), None)
    if first is not None and _is_labelme(first):
        return "labelme"
    return None


def _is_labelme(path: Path) -> bool:
    """Whether a JSON file is a LabelMe annotation (it has ``shapes`` and ``imagePath``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "shapes" in data and "imagePath" in data


class DenseSource(Source):
    """Images with instances, from one of ``FORMATS``; bad annotations and unreadable images are listed in
    ``problems`` (one line each, naming file and annotation) and left out."""

    kind = "dense"
    payload = S.IMAGE

    def __init__(self, path: str | Path, format: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        path = Path(path)
        super().__init__(str(path))
        self.format = format or dense_format(path)
        if self.format not in FORMATS:
            raise AugforgeError(f"{path}: not a COCO file or a VOC, YOLO, LabelMe or semantic mask folder")
        readers = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo, "labelme": read_labelme,
                   "semantic": read_semantic}
        self.dense: DenseSet = readers[self.format](path)
        self.max_pixels = max_pixels
        for line in self.dense.problems:
            where, _, reason = line.partition(": ")
            self.problems.append(Problem(where, reason))
        self.instance_counts = self.dense.instance_counts()

    @cached_property
    def _index(self) -> list[int]:
        """The images that decode, in set order (the others are problems)."""
        paths = [self.dense.image_root / image.file for image in self.dense.images]
        with ThreadPoolExecutor(2) as pool:
            verdicts = list(pool.map(lambda p: "no such file" if not p.is_file() else check_image(p, self.max_pixels),
                                     paths))
        keep = []
        for n, (path, verdict) in enumerate(zip(paths, verdicts)):
            if verdict is None:
                keep.append(n)
            else:
                self.problems.append(Problem(str(path), verdict))
        if not keep:
            raise AugforgeError(f"{self.location}: none of its {len(paths)} images could be read "
                                f"(first: {self.problems[-len(paths)].path}: {self.problems[-len(paths)].reason})")
        return keep

    @cached_property
    def class_names(self) -> list[str]:
        empty = any(not self.dense.images[n].label_classes() for n in self._index)
        return list(self.dense.classes) + ([NO_INSTANCES] if empty else [])

    @cached_property
    def _labels(self) -> np.ndarray:
        counts = np.asarray(self.instance_counts, dtype=np.int64)
        labels = []
        for n in self._index:
            classes = self.dense.images[n].label_classes()
            labels.append(len(self.dense.classes) if len(classes) == 0 else
                          int(min(classes, key=lambda c: (counts[c], c))))
        return np.asarray(labels, dtype=np.int64)

    def labels(self) -> np.ndarray:
        return self._labels

    def ids(self) -> list[str]:
        return [self.dense.images[n].file for n in self._index]

    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        ids, labels = self.ids(), self.labels()
        for start in range(0, len(positions), batch_rows):
            chunk = positions[start : start + batch_rows]
            images = [self.dense.images[self._index[i]] for i in chunk]
            encoded = [read_image_file(self.dense.image_root / image.file) for image in images]
            semantic = self.semantic_masks(chunk)
            flags = [list(im.image_labels or []) for im in images] if self.dense.multilabel else None
            yield pa.record_batch({S.ID: pa.array([ids[i] for i in chunk], pa.string()),
                                   S.LABEL: pa.array(labels[chunk], pa.int64()),
                                   S.IMAGE: pa.array(encoded, pa.binary()),
                                   **to_columns([im.instances for im in images], [(im.width, im.height)
                                                                                   for im in images], semantic, flags)})

    @property
    def has_targets(self) -> bool:
        return True

    def instances(self, positions: np.ndarray) -> list[Instances]:
        return [self.dense.images[self._index[i]].instances for i in np.asarray(positions, dtype=np.int64)]

    def image_labels(self, positions: np.ndarray) -> list[list[int]] | None:
        if not self.dense.multilabel:
            return None
        return [list(self.dense.images[self._index[i]].image_labels or []) for i in np.asarray(positions, np.int64)]

    def semantic_masks(self, positions: np.ndarray) -> list[bytes] | None:
        if not self.dense.semantic:
            return None
        return [(self.dense.mask_root / self.dense.images[self._index[i]].semantic).read_bytes()
                for i in np.asarray(positions, dtype=np.int64)]

    def image_sizes(self, positions: np.ndarray) -> list[tuple[int, int]]:
        images = [self.dense.images[self._index[i]] for i in np.asarray(positions, dtype=np.int64)]
        return [(image.width, image.height) for image in images]

    def schema(self) -> pa.Schema:
        extra = ([semantic_field()] if self.dense.semantic else []) + \
            ([image_labels_field()] if self.dense.multilabel else [])
        return pa.schema([*S.dataset_schema(S.IMAGE), *target_fields(), *extra])

    def payload_info(self) -> dict:
        return {"encoding": "file", "targets": {
            "format": self.format, "classes": list(self.dense.classes), "keypoint_names": self.dense.keypoint_names,
            "flip_pairs": [list(p) for p in self.dense.flip_pairs],
            **({"semantic": {"ignore": IGNORE, "encoding": "png class indices"}} if self.dense.semantic else {}),
            **({"image_labels": True} if self.dense.multilabel else {}),
            "box": "x0 y0 x1 y1, absolute pixels, the image spanning [0, width] x [0, height]"}}

    def describe(self) -> dict:
        return {**super().describe(), "format": self.format, "max_pixels": self.max_pixels}

