"""A picture of a detection or segmentation set (``augforge preview-data``): each image with its instances drawn
over it (masks tinted, polygon outlines, boxes, class names, keypoints), next to variants drawn by
``RandomGeometry``, so a person can see that the targets moved with the pixels."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from augforge.augment.target_ops import RandomGeometry
from augforge.balance.instances import instance_classes
from augforge.datasets import schema as S
from augforge.datasets.keys import row_rng
from augforge.datasets.sources.base import Source
from augforge.datasets.targets import Instances, from_columns, instance_mask
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.preview import MIN_CELL, render_grid, save_png

#: one colour per class, cycled (distinct on dark and light photos)
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw_instances(image: np.ndarray, instances: Instances, class_names: list[str], alpha: float = 0.4) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with each instance drawn in its class's colour: its mask tinted (``alpha``), its
    polygon outline, its box, its class name above the box, and its keypoints (filled: visible; hollow: labelled
    but hidden; not drawn: not labelled)."""
    height, width = image.shape[:2]
    out = image.astype(np.float32).copy()
    for i in range(len(instances)):
        mask = instance_mask(instances, i, height, width)
        if mask is not None:
            out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(PALETTE[int(instances.classes[i]) % len(PALETTE)])
    canvas = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for i in range(len(instances)):
        colour = PALETTE[int(instances.classes[i]) % len(PALETTE)]
        for ring in instances.polygons[i]:
            draw.line([tuple(p) for p in np.vstack([ring.reshape(-1, 2), ring.reshape(-1, 2)[:1]])], fill=colour)
        x0, y0, x1, y1 = instances.boxes[i]
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour)  # its last pixel row and column
        draw.text((x0 + 1, max(0, y0 - 11)), class_names[int(instances.classes[i])], fill=colour)
        if instances.keypoints is not None:
            for x, y, v in instances.keypoints[i]:
                if v > 0:
                    draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=colour, fill=colour if v >= 2 else None)
    return np.asarray(canvas)


@dataclass
class DensePreview:
    """The grid, the ids of its rows, and the drawn cells (row by row: the original first)."""

    image: Image.Image
    ids: list[str]
    cells: list[list[np.ndarray]]


def preview_dense(source: Source, n: int = 8, variants: int = 3, geometry: RandomGeometry | None = None,
                  seed: int = 0) -> DensePreview:
    """The first ``n`` images of a source with dense targets, drawn, each next to ``variants`` draws of
    ``geometry`` (seeded from ``seed`` and the row id)."""
    if n < 1 or variants < 0:
        raise OptionError("{n} must be at least 1 and {variants} at least 0")
    if not source.has_targets:
        raise AugforgeError(f"{source.location}: no boxes, masks or keypoints to draw (a classification source); "
                            "`augforge preview RECIPE` shows its augmentations")
    geometry = geometry or RandomGeometry(degrees=15, hflip=0.5, crop_scale=(0.5, 1.0))
    positions = np.arange(min(n, len(source)))
    batch = next(iter(source.read(positions, len(positions))))  # images and their target columns
    names, ids, rows = instance_classes(source), batch.column(S.ID).to_pylist(), from_columns(batch)
    cells = []
    for row_id, encoded, instances in zip(ids, batch.column(S.IMAGE).to_pylist(), rows):
        image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        row = [draw_instances(image, instances, names)]
        for k in range(variants):
            moved = geometry(row_rng(seed, row_id, k, "preview-data"), image, instances).moved
            row.append(draw_instances(moved.image, moved.instances, names))
        cells.append(row)
    cell = max(MIN_CELL, max(max(c.shape[:2]) for row in cells for c in row))
    captions = [f"{row_id} ({len(inst)} instances)" for row_id, inst in zip(ids, rows)]
    return DensePreview(render_grid(cells, captions, cell), ids, cells)


def write_preview_dense(source: Source, out, **options) -> DensePreview:
    """Render ``preview_dense`` (``options`` are its) and save it as PNG at ``out`` (atomically)."""
    result = preview_dense(source, **options)
    save_png(result.image, out)
    return result
