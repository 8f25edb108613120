"""`augforge preview`: a grid of source images and their augmented variants, to see a recipe before a build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from augforge.atomic import atomic_path
from augforge.augment.backend import image_augmenter
from augforge.augment.image_ops import check_op_list
from augforge.augment.text import build_text_augmenter
from augforge.augment.words import segment
from augforge.datasets import schema as S
from augforge.datasets.keys import row_keys
from augforge.datasets.plan import plan_rows
from augforge.errors import OptionError
from augforge.pipelines.build_plan import recipe_source, recipe_splits
from augforge.pipelines.text_rows import variant_key
from augforge.checks import RecipeError
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


def preview(recipe: Recipe, n: int = 8, variants: int = 4) -> Preview:
    """The first column holds ``n`` source images, the next ``variants`` their augmented versions."""
    if n < 1 or variants < 1:
        raise OptionError("{n} and {variants} must be at least 1")
    aug = recipe.augment
    if not aug.image:
        raise RecipeError(f"{recipe.file}: augment.image: no ops to preview")
    check_op_list(aug.image, aug.color, recipe.file, encoded_output=False)
    source = recipe_source(recipe)
    if source.payload != S.IMAGE:
        raise RecipeError(f"{recipe.file}: source.path: {source.location} holds {source.payload} rows, not images")
    positions, ids = pick_rows(recipe, n)
    batch = next(iter(source.read(np.asarray(positions, dtype=np.int64), len(positions))))
    encoded = batch.column(S.IMAGE).to_pylist()
    labels = [source.class_names[i] for i in batch.column(S.LABEL).to_pylist()]
    originals = image_augmenter((), color=aug.color, decode_only=True).augment(encoded)
    augmenter = image_augmenter(aug.image, color=aug.color, device=aug.device, seed=recipe.seed)
    varied = augmenter.augment([e for e in encoded for _ in range(variants)])
    if any(v.dtype != np.uint8 for v in varied):  # after normalize: back to 0..255 for display
        varied = [_denormalize(v, aug.image[-1].params) for v in varied]
    cells = [[originals[i], *varied[i * variants : (i + 1) * variants]] for i in range(len(encoded))]
    biggest = max(max(p.shape[:2]) for row in cells for p in row)
    cell = max(MIN_CELL, biggest)
    captions = [f"{row_id} ({label})" for row_id, label in zip(ids, labels)]
    return Preview(render_grid(cells, captions, cell), ids, labels, cells, cell)


def _denormalize(chw: np.ndarray, params: dict) -> np.ndarray:
    mean = np.asarray(params["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(params["std"], dtype=np.float32)[:, None, None]
    return np.clip((chw * std + mean) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)


@dataclass
class TextPreview:
    """Source texts and their variants (None where a variant was dropped for a protected token)."""

    ids: list[str]
    labels: list[str]
    texts: list[str]
    variants: list[list[str | None]]


def preview_text(recipe: Recipe, n: int = 8, variants: int = 4) -> TextPreview:
    """``n`` train texts (spread over the classes) and ``variants`` variants each, as the build makes them."""
    aug = recipe.augment
    if not aug.text:
        raise RecipeError(f"{recipe.file}: augment.text: no ops to preview")
    source = recipe_source(recipe)
    positions, ids = pick_rows(recipe, n)
    batch = next(iter(source.read(np.asarray(positions, dtype=np.int64), len(positions))))
    texts = batch.column(S.TEXT).to_pylist()
    labels = [source.class_names[i] for i in batch.column(S.LABEL).to_pylist()]
    augmenter = build_text_augmenter(aug.text, aug.protect, aug.min_words, corpus=texts)
    made = []
    for row_id, text in zip(ids, texts):  # the build's first variants of each row
        made.append(augmenter.variants(text, variants, variant_key(recipe.seed, row_id, 0)))
    return TextPreview(ids, labels, texts, made)


def highlight(source: str, variant: str) -> str:
    """``variant`` as rich markup, every token that differs from ``source`` (words and punctuation alike) in
    bold yellow; the variant's own spacing is kept."""
    import difflib

    from rich.markup import escape

    a = segment(source)[0]
    b, seps = segment(variant)
    changed = [True] * len(b)
    for op, _, _, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            changed[j1:j2] = [False] * (j2 - j1)
    out = [escape(seps[0])]
    for token, hot, sep in zip(b, changed, seps[1:]):
        out.append(f"[bold yellow]{escape(token)}[/bold yellow]" if hot else escape(token))
        out.append(escape(sep))
    return "".join(out)


def print_text_preview(result: TextPreview, console) -> None:
    """A terminal table: each source text, then its variants with the changed words highlighted."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_lines=True)
    table.add_column("row")
    table.add_column("text / variants")
    for row_id, label, text, made in zip(result.ids, result.labels, result.texts, result.variants):
        lines = [f"[b]{escape(text)}[/b]"] + [highlight(text, v) if v is not None else
                                              "[dim](dropped: a protected token was lost)[/dim]" for v in made]
        table.add_row(f"{escape(row_id)}\n({escape(label)})", "\n".join(lines))
    console.print(table)


def write_preview(recipe: Recipe, out: str | Path, n: int = 8, variants: int = 4) -> Preview:
    """Render the preview and save it as PNG at ``out`` (atomically)."""
    result = preview(recipe, n, variants)
    save_png(result.image, out)
    return result


def save_png(image: Image.Image, out: str | Path) -> None:
    """``image`` as a PNG file at ``out``, written atomically."""
    with atomic_path(Path(out)) as tmp:
        image.save(tmp, format="PNG")
