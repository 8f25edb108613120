"""A picture of a detection or segmentation set: each image with its instances drawn over it (masks tinted,
polygon outlines, boxes, class names, keypoints), next to augmented variants, so a person can see that the
targets moved with the pixels. ``augforge preview-data`` draws ``RandomGeometry``; ``augforge preview RECIPE`` the
recipe's ops (``preview_recipe_dense``), each variant exactly the one ``build`` writes for that row."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from augforge.augment.target_ops import RandomGeometry
from augforge.balance.instances import instance_classes
from augforge.datasets import schema as S
from augforge.datasets.keys import row_rng
from augforge.datasets.sources.base import Source
from augforge.datasets.targets import IGNORE, SEMANTIC, Instances, decode_semantic, from_columns, instance_mask
from augforge.errors import AugforgeError, OptionError
from augforge.pipelines.dense_rows import PURPOSE, decode_rgb
from augforge.pipelines.preview_grid import MIN_CELL, Preview, pick_rows, render_grid, save_png
from augforge.recipe import Recipe

#: one colour per class, cycled (distinct on dark and light photos)
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw_instances(image: np.ndarray, instances: Instances, class_names: list[str], alpha: float = 0.4,
                   semantic: np.ndarray | None = None) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with each instance drawn in its class's colour: its mask tinted (``alpha``), its
    polygon outline, its box, its class name above the box, and its keypoints (filled: visible; hollow: labelled
    but hidden; not drawn: not labelled). ``semantic``: a class-index map, each class's pixels tinted in its
    colour and each class named at its region's centre (``IGNORE`` pixels left as they are)."""
    height, width = image.shape[:2]
    out = image.astype(np.float32).copy()
    names = []
    if semantic is not None:
        for c in np.unique(semantic):
            if c == IGNORE or c >= len(class_names):
                continue
            where = semantic == c
            out[where] = (1 - alpha) * out[where] + alpha * np.asarray(PALETTE[int(c) % len(PALETTE)])
            ys, xs = np.nonzero(where)
            names.append((int(c), float(xs.mean()), float(ys.mean())))
    for i in range(len(instances)):
        mask = instance_mask(instances, i, height, width)
        if mask is not None:
            out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(PALETTE[int(instances.classes[i]) % len(PALETTE)])
    canvas = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for c, x, y in names:
        draw.text((x, y), class_names[c], fill=PALETTE[c % len(PALETTE)])
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


def preview_dense(source: Source, n: int = 8, variants: int = 3, geometry: RandomGeometry | None = None,
                  seed: int = 0) -> Preview:
    """The first ``n`` images of a source with dense targets, drawn, each next to ``variants`` draws of
    ``geometry`` (seeded from ``seed`` and the row id)."""
    if not source.has_targets:
        raise AugforgeError(f"{source.location}: no boxes, masks or keypoints to draw (a classification source); "
                            "`augforge preview RECIPE` shows its augmentations")
    geometry = geometry or RandomGeometry(degrees=15, hflip=0.5, crop_scale=(0.5, 1.0))
    return _drawn_grid(source, np.arange(min(n, len(source))), n, variants, geometry,
                       lambda row_id, k: row_rng(seed, row_id, k, "preview-data"))


def preview_recipe_dense(recipe: Recipe, source: Source, n: int = 8, variants: int = 4) -> Preview:
    """``n`` train images of a recipe's detection set (spread over the row labels, as ``augforge preview``
    picks them), each next to its first ``variants`` augmented variants: the draws ``build`` makes for them."""
    augment = recipe.augment.targets.augmenter(recipe.augment.image)
    positions, _ = pick_rows(recipe, n)
    first = 1 if recipe.augment.keep_original else 0  # the build's variant numbers: 0 is the kept original
    return _drawn_grid(source, np.asarray(positions, dtype=np.int64), n, variants, augment,
                       lambda row_id, k: row_rng(recipe.augment_seed, row_id, first + k, PURPOSE))


def _drawn_grid(source: Source, positions: np.ndarray, n: int, variants: int, augment, rng_of) -> Preview:
    """The grid of ``positions``' images drawn with their instances, each followed by ``variants`` draws of
    ``augment`` (``rng_of(row id, k)`` seeds draw k)."""
    if n < 1 or variants < 0:
        raise OptionError("{n} must be at least 1 and {variants} at least 0")
    batch = next(iter(source.read(positions, len(positions))))  # images and their target columns
    names, ids, rows = instance_classes(source), batch.column(S.ID).to_pylist(), from_columns(batch)
    maps = [decode_semantic(m) for m in batch.column(SEMANTIC).to_pylist()] if SEMANTIC in batch.schema.names \
        else [None] * len(ids)
    cells = []
    for row_id, encoded, instances, semantic in zip(ids, batch.column(S.IMAGE).to_pylist(), rows, maps):
        image = decode_rgb(encoded)
        row = [draw_instances(image, instances, names, semantic=semantic)]
        for k in range(variants):
            moved = augment(rng_of(row_id, k), image, instances, semantic).moved
            row.append(draw_instances(_displayable(moved.image), moved.instances, names, semantic=moved.semantic))
        cells.append(row)
    cell = max(MIN_CELL, max(max(c.shape[:2]) for row in cells for c in row))
    captions = [f"{row_id} ({len(inst)} instances)" if sem is None else
                f"{row_id} ({len(set(np.unique(sem).tolist()) - {IGNORE})} classes)"
                for row_id, inst, sem in zip(ids, rows, maps)]
    return Preview(render_grid(cells, captions, cell), ids, captions, cells, cell)


def _displayable(image: np.ndarray) -> np.ndarray:
    """A normalized (float) image stretched back to 0..255 for display; uint8 as it is."""
    if image.dtype == np.uint8:
        return image
    low, high = float(image.min()), float(image.max())
    return np.uint8(np.clip((image - low) / max(high - low, 1e-6) * 255, 0, 255))


def write_preview_dense(source: Source, out, **options) -> Preview:
    """Render ``preview_dense`` (``options`` are its) and save it as PNG at ``out`` (atomically)."""
    result = preview_dense(source, **options)
    save_png(result.image, out)
    return result
