"""What every annotation format reads into: a set of images, each with its size and instances, the class names,
the keypoint names and the flip pairs, and the bad annotations found (one line each, naming file and
annotation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from augforge.datasets.targets import Instances, check_instances
from augforge.errors import AugforgeError


@dataclass
class ImageTargets:
    """One image: its file (relative to the set's image root), size and instances; in a semantic segmentation
    set, its mask file (``semantic``, relative to the set's root) and the pixels of each class it holds
    (``regions``)."""

    file: str
    width: int
    height: int
    instances: Instances
    semantic: str | None = None
    regions: dict[int, int] | None = None
    image_labels: list[int] | None = None  # a multilabel set: the image-level labels (class indices)

    def label_classes(self) -> list[int]:
        """The classes a row label is chosen from: its regions' in a semantic set, else its instances' (crowd
        regions only in an image without others), else its image-level labels."""
        if self.regions is not None:
            return sorted(self.regions)
        inst = self.instances
        classes = inst.classes[~inst.crowd] if (~inst.crowd).any() else inst.classes
        return classes.tolist() or sorted(self.image_labels or [])


@dataclass
class DenseSet:
    """An annotated image set. ``problems``: bad annotations (skipped, each one line naming file and
    annotation); ``keypoint_names`` and ``flip_pairs`` (index pairs a horizontal flip swaps) when instances have
    keypoints."""

    classes: list[str]
    images: list[ImageTargets]
    image_root: Path
    problems: list[str] = field(default_factory=list)
    keypoint_names: list[str] | None = None
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    mask_root: Path | None = None  # a semantic segmentation set: where its masks are (None: not one)

    @property
    def multilabel(self) -> bool:
        """Whether the set's images carry image-level labels."""
        return any(image.image_labels is not None for image in self.images)

    @property
    def semantic(self) -> bool:
        """Whether the set's images carry semantic masks (a class per pixel)."""
        return self.mask_root is not None

    def instance_counts(self) -> list[int]:
        """Instances per class over the whole set (crowd regions included); in a semantic set, the images that
        hold the class (a class's region of an image counts as one), and so for image-level labels."""
        counts = [0] * len(self.classes)
        for image in self.images:
            for c in (list(image.regions or {}) + image.instances.classes.tolist() + list(image.image_labels or [])):
                counts[c] += 1
        return counts


def keep_valid(instances: Instances, width: int, height: int, classes: int, problems: list[str]) -> Instances:
    """The instances without the bad ones (``check_instances``, naming each by its origin), whose lines are
    added to ``problems``."""
    bad = set()
    for i in range(len(instances)):
        lines = check_instances(instances.select([i]), width, height, classes, [instances.origin[i]])
        if lines:
            bad.add(i)
            problems.extend(lines)
    return instances.select([i for i in range(len(instances)) if i not in bad]) if bad else instances


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header; one line naming the file when it does not open."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as error:
        raise AugforgeError(f"{path}: not a readable image ({error})") from None
