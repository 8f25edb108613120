"""`augforge preview`: a grid of source images and their augmented variants, to see a recipe before a build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augforge.augment.backend import image_augmenter
from augforge.augment.image_ops import check_op_list
from augforge.augment.text import build_text_augmenter
from augforge.augment.words import segment
from augforge.datasets import schema as S
from augforge.errors import OptionError
from augforge.pipelines.build_plan import recipe_source
from augforge.pipelines.preview_dense import preview_recipe_dense
from augforge.pipelines.preview_grid import MIN_CELL, Preview, pick_rows, render_grid, save_png
from augforge.pipelines.text_rows import variant_key
from augforge.checks import RecipeError
from augforge.recipe import Recipe


def preview(recipe: Recipe, n: int = 8, variants: int = 4) -> Preview:
    """The first column holds ``n`` source images, the next ``variants`` their augmented versions."""
    if n < 1 or variants < 1:
        raise OptionError("{n} and {variants} must be at least 1")
    aug = recipe.augment
    if not aug.image:
        raise RecipeError(f"{recipe.file}: augment.image: no ops to preview")
    check_op_list(aug.image, aug.color, recipe.file, encoded_output=False)
    source = recipe_source(recipe)
    if source.has_targets:  # the recipe's ops with the boxes, masks and keypoints they move
        return preview_recipe_dense(recipe, source, n, variants)
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
