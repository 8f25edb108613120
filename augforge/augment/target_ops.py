"""Random geometry for images with dense targets: one draw per sample (a seeded generator) makes one matrix
(``augforge.augment.target_geometry``) that moves pixels and targets alike, under one frame policy.

``RandomGeometry`` composes, in this order: an object-aware crop (DALI's ``random_bbox_crop`` semantics: a
window whose coverage of at least one instance's box is at least ``min_coverage``) or a random resized crop
(torchvision's scale and ratio ranges), a rotation, a scale, a shift, and a horizontal flip; then the output
size. A draw the frame policy rejects (``on_lost: reject_sample``) is drawn again, up to ``attempts`` times; if
none passes, the sample is returned unchanged (resized to the output size), and ``Drawn.rejected`` counts the
refused draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from augforge.augment.target_geometry import (FramePolicy, Moved, apply, crop_resize, flip_horizontal, rotation,
                                              scaling, translation)
from augforge.datasets.targets import Instances
from augforge.errors import OptionError


@dataclass(frozen=True)
class RandomGeometry:
    """A random geometric transform of an image and its targets (see the module docstring). ``size``: the
    output (width, height), default the input's; ``degrees``: a rotation drawn in [-degrees, degrees];
    ``scale``: a zoom drawn in the range; ``shift``: a translation up to this share of the size; ``hflip``: its
    probability; ``crop_scale``/``crop_ratio``: a random resized crop's area share and aspect ratio ranges
    (None: no crop); ``min_coverage``: make the crop object-aware (a share of some instance's box it must keep);
    ``flip_pairs``: keypoint index pairs a flip swaps."""

    size: tuple[int, int] | None = None
    degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    hflip: float = 0.0
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    min_coverage: float | None = None
    policy: FramePolicy = field(default_factory=FramePolicy)
    flip_pairs: tuple[tuple[int, int], ...] = ()
    attempts: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise OptionError("{hflip} " + f"{self.hflip}: expected a probability in [0, 1]")
        if self.scale[0] <= 0 or self.scale[0] > self.scale[1]:
            raise OptionError("{scale} " + f"{list(self.scale)}: expected [low, high] with 0 < low <= high")
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise OptionError("{crop_scale} " + f"{list(self.crop_scale)}: expected [low, high] in (0, 1]")
        if self.min_coverage is not None and not 0 < self.min_coverage <= 1:
            raise OptionError("{min_coverage} " + f"{self.min_coverage}: expected a share in (0, 1]")

    def draw(self, rng: np.random.Generator, width: int, height: int,
             instances: Instances | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """(the matrix of one draw, the output size) for an input of this size (``instances``: for an
        object-aware crop)."""
        out_w, out_h = self.size or (width, height)
        window = (0.0, 0.0, float(width), float(height))
        if self.crop_scale is not None:
            window = self._window(rng, width, height, instances)
        matrix = crop_resize(window, (out_w, out_h))
        centre = (translation(out_w / 2, out_h / 2), translation(-out_w / 2, -out_h / 2))
        if self.degrees:
            matrix = rotation(float(rng.uniform(-self.degrees, self.degrees)), out_w, out_h) @ matrix
        if self.scale != (1.0, 1.0):
            zoom = float(rng.uniform(*self.scale))
            matrix = centre[0] @ scaling(zoom, zoom) @ centre[1] @ matrix
        if self.shift:
            matrix = translation(float(rng.uniform(-self.shift, self.shift)) * out_w,
                                 float(rng.uniform(-self.shift, self.shift)) * out_h) @ matrix
        if self.hflip and rng.random() < self.hflip:
            matrix = flip_horizontal(out_w) @ matrix
        return matrix, (out_w, out_h)

    def _window(self, rng, width: int, height: int, instances: Instances | None) -> tuple[float, float, float, float]:
        """A random resized crop's window; object-aware: one keeping ``min_coverage`` of some instance's box."""
        boxes = None if instances is None or len(instances) == 0 else instances.boxes
        return draw_window(rng, width, height, self.crop_scale, self.crop_ratio, boxes, self.min_coverage,
                           self.attempts * 5)

    def __call__(self, rng: np.random.Generator, image: np.ndarray, instances: Instances,
                 semantic: np.ndarray | None = None) -> "Drawn":
        """One sample (``semantic``: its class-index map) through a draw (redrawn while the frame policy rejects
        it; see the module docstring)."""
        height, width = image.shape[:2]
        for attempt in range(self.attempts):
            matrix, size = self.draw(rng, width, height, instances)
            moved = apply(image, instances, matrix, size, self.policy, list(self.flip_pairs), semantic=semantic)
            if not moved.rejected:
                return Drawn(moved, attempt)
        size = self.size or (width, height)
        kept = FramePolicy(clip=True, on_lost="keep")
        return Drawn(apply(image, instances, crop_resize((0, 0, width, height), size), size, kept, semantic=semantic),
                     self.attempts)


@dataclass
class Drawn:
    """A sample after ``RandomGeometry``: what ``apply`` made of it, and how many draws were rejected first."""

    moved: Moved
    rejected: int


def draw_window(rng: np.random.Generator, width: int, height: int, scale: tuple[float, float],
                ratio: tuple[float, float], boxes: np.ndarray | None = None, min_coverage: float | None = None,
                tries: int = 50) -> tuple[float, float, float, float]:
    """A random resized crop's window (x0, y0, x1, y1): an area share drawn in ``scale`` and a log-uniform aspect
    in ``ratio`` (torchvision's recipe), placed uniformly; with ``boxes`` and ``min_coverage`` only a window that
    keeps that share of some box counts (DALI's ``random_bbox_crop``). After ``tries`` misses: the whole image."""
    for _ in range(tries):
        area = width * height * float(rng.uniform(*scale))
        aspect = math.exp(float(rng.uniform(math.log(ratio[0]), math.log(ratio[1]))))
        w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
        if w > width or h > height:
            continue
        x0, y0 = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
        window = (x0, y0, x0 + w, y0 + h)
        if min_coverage is None or boxes is None or len(boxes) == 0 or coverage(window, boxes).max() >= min_coverage:
            return window
    return (0.0, 0.0, float(width), float(height))


def coverage(window: tuple[float, float, float, float], boxes: np.ndarray) -> np.ndarray:
    """The share of each box's area inside ``window`` (0 for a box of no area)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    inter = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None) * \
        np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)
