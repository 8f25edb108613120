"""Mosaic (YOLOv4): four images with their targets tiled into one, around a random centre.

The output is ``size`` (w, h). A centre is drawn in the middle half of it (``centre``: the share range along each
axis); the four images take the quadrants it makes, top-left, top-right, bottom-left, bottom-right, each
resized (aspect kept, by a factor drawn in ``scale`` of the output's size) and placed with its inner corner on
the centre, so each shows the part of it that falls in its quadrant. Each image goes through one transform onto
its quadrant (``augforge.augment.target_geometry.apply``, its frame the quadrant), under the frame policy: what
leaves a quadrant is clipped, and an instance left below the policy is dropped, kept, or makes the mosaic be
drawn again (``reject_sample``). Pixels outside every image are ``fill``; a semantic map's, ``IGNORE``. The
instances of the second to fourth images get ``mosaic:<row id>#`` before their origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.augment.target_geometry import FramePolicy, Moved, apply, scaling, translation
from augforge.datasets.targets import IGNORE, Instances, rle_decode, rle_encode
from augforge.errors import OptionError


@dataclass(frozen=True)
class MosaicSpec:
    """A mosaic's output ``size`` (w, h), the ``centre`` share range, the images' ``scale`` range (of the output
    size), the border ``fill``, the frame ``policy`` and the ``attempts`` at a mosaic it accepts."""

    size: tuple[int, int] = (640, 640)
    centre: tuple[float, float] = (0.25, 0.75)
    scale: tuple[float, float] = (0.5, 1.0)
    fill: float = 114.0
    policy: FramePolicy = FramePolicy()
    attempts: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.centre[0] <= self.centre[1] < 1:
            raise OptionError("{centre} " + f"{list(self.centre)}: expected [low, high] inside (0, 1)")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise OptionError("{scale} " + f"{list(self.scale)}: expected [low, high] with 0 < low <= high")


def quadrants(width: int, height: int, cx: int, cy: int) -> list[tuple[int, int, int, int]]:
    """The four quadrants (x0, y0, x1, y1) a centre makes: top-left, top-right, bottom-left, bottom-right."""
    return [(0, 0, cx, cy), (cx, 0, width, cy), (0, cy, cx, height), (cx, cy, width, height)]


def quadrant_matrix(k: int, image_size: tuple[int, int], zoom: float,
                    quadrant: tuple[int, int, int, int]) -> np.ndarray:
    """The matrix taking image k (0-3, in quadrant order) of ``image_size`` (w, h), resized by ``zoom``, onto its
    quadrant's own frame, its inner corner on the centre."""
    w, h = image_size[0] * zoom, image_size[1] * zoom
    x0, y0, x1, y1 = quadrant
    left = x1 - w if k in (0, 2) else 0.0  # the left images end at the centre, the right ones start there
    top = y1 - h if k in (0, 1) else 0.0
    left, top = (left - x0 if k in (0, 2) else 0.0), (top - y0 if k in (0, 1) else 0.0)
    return translation(left, top) @ scaling(zoom, zoom)


def mosaic(rng: np.random.Generator, images: list[np.ndarray], instances: list[Instances], ids: list[str],
           spec: MosaicSpec, semantics: list | None = None) -> Moved | None:
    """Four samples tiled into one (see the module docstring); None when every attempt was rejected."""
    out_w, out_h = spec.size
    semantics = semantics or [None] * 4
    for _ in range(spec.attempts):
        cx = int(round(rng.uniform(*spec.centre) * out_w))
        cy = int(round(rng.uniform(*spec.centre) * out_h))
        canvas = np.full((out_h, out_w, images[0].shape[2]), spec.fill, dtype=images[0].dtype)
        labels = np.full((out_h, out_w), IGNORE, np.uint8) if semantics[0] is not None else None
        parts, visibility, lost = [], [], []
        rejected = False
        for k, quadrant in enumerate(quadrants(out_w, out_h, cx, cy)):
            x0, y0, x1, y1 = quadrant
            height, width = images[k].shape[:2]
            zoom = float(rng.uniform(*spec.scale)) * min(out_w / width, out_h / height)
            if x1 <= x0 or y1 <= y0:
                continue
            moved = apply(images[k], instances[k], quadrant_matrix(k, (width, height), zoom, quadrant),
                          (x1 - x0, y1 - y0), spec.policy, fill=spec.fill, semantic=semantics[k])
            if moved.rejected:
                rejected = True
                break
            canvas[y0:y1, x0:x1] = moved.image
            if labels is not None:
                labels[y0:y1, x0:x1] = moved.semantic
            parts.append(_shifted(moved.instances, (x0, y0, x1, y1), (out_w, out_h), None if k == 0 else ids[k]))
            visibility.append(moved.visibility)
            lost.append(moved.lost)
        if not rejected:
            return Moved(canvas, Instances.concat(parts), False, np.concatenate(visibility),
                         np.concatenate(lost), labels)
    return None


def _shifted(instances: Instances, quadrant: tuple[int, int, int, int], size: tuple[int, int],
             row_id: str | None) -> Instances:
    """Instances of a quadrant moved onto the whole canvas of ``size`` (w, h); their origins prefixed with
    ``mosaic:<row id>#`` for an image other than the first."""
    dx, dy, x1, y1 = quadrant
    qw, qh = x1 - dx, y1 - dy
    width, height = size
    masks = []
    for rle in instances.masks:
        if rle is None:
            masks.append(None)
            continue
        full = np.zeros((height, width), bool)
        full[dy : dy + qh, dx : dx + qw] = rle_decode(rle, qh, qw)
        masks.append(rle_encode(full))
    points = None if instances.keypoints is None else instances.keypoints.copy()
    if points is not None:
        points[..., 0] += dx
        points[..., 1] += dy
    polygons = [[ring.reshape(-1, 2) + [dx, dy] for ring in rings] for rings in instances.polygons]
    origin = list(instances.origin) if row_id is None else [f"mosaic:{row_id}#{o}" for o in instances.origin]
    return Instances(instances.classes, instances.boxes + [dx, dy, dx, dy], [[r.ravel() for r in rings]
                                                                            for rings in polygons], masks, points,
                     instances.crowd, origin)

