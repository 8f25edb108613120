"""The picture both previews draw (``augforge preview`` of a recipe, ``preview-data`` of a detection set): rows of
images in square cells with a caption each, the rows a recipe's preview picks, and the PNG written atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from augforge.atomic import atomic_path
from augforge.datasets import schema as S
from augforge.datasets.keys import row_keys
from augforge.datasets.plan import plan_rows
from augforge.pipelines.build_plan import recipe_source, recipe_splits
from augforge.recipe import Recipe

#: Cells are at least this many pixels on a side (small images are scaled up, nearest neighbour).
MIN_CELL = 96
GAP = 4
LABEL_HEIGHT = 14


@dataclass
class Preview:
    """The grid and what is in it: per row, the source id and its images (source first)."""

    image: Image.Image
    ids: list[str]
    labels: list[str]
    cells: list[list[np.ndarray]]
    cell: int


def pick_rows(recipe: Recipe, n: int) -> tuple[list[int], list[str]]:
    """``n`` train rows spread over the classes (round robin, seeded by row id): positions and ids."""
    source = recipe_source(recipe)
    splits, imbalance = recipe_splits(recipe)
    rows = plan_rows(source, splits, imbalance, recipe.seed)
    train = rows.positions[rows.splits == S.TRAIN]
    labels = rows.labels[rows.splits == S.TRAIN]
    ids = source.ids()
    keys = row_keys(recipe.seed, [ids[p] for p in train], "preview")
    by_class = [train[labels == c][np.argsort(keys[labels == c], kind="stable")] for c in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(members) for members in by_class):
        picked += [int(members[depth]) for members in by_class if depth < len(members)]
        depth += 1
    picked = sorted(picked[:n])
    return picked, [ids[p] for p in picked]


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return pixels


def render_grid(cells: list[list[np.ndarray]], captions: list[str], cell: int) -> Image.Image:
    """Rows of images on a grey canvas, each scaled to fit a ``cell`` square, with a caption per row."""
    cols = max(len(row) for row in cells)
    width = GAP + cols * (cell + GAP)
    height = GAP + len(cells) * (cell + LABEL_HEIGHT + GAP)
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for r, (row, caption) in enumerate(zip(cells, captions)):
        top = GAP + r * (cell + LABEL_HEIGHT + GAP)
        draw.text((GAP, top), caption, fill=(230, 230, 230))
        for c, pixels in enumerate(row):
            img = Image.fromarray(_to_rgb(pixels))
            scale = cell / max(img.size)
            size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
            img = img.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR)
            canvas.paste(img, (GAP + c * (cell + GAP), top + LABEL_HEIGHT))
    return canvas


def save_png(image: Image.Image, out: str | Path) -> None:
    """``image`` as a PNG file at ``out``, written atomically."""
    with atomic_path(Path(out)) as tmp:
        image.save(tmp, format="PNG")
