"""The recipe's ``source:`` section: where rows come from, how they are split and (for demos) made
imbalanced."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from augforge.checks import Checker, show_value
from augforge.datasets.sources.table import TABLE_SUFFIXES
from augforge.paths import is_url
from augforge.recipe.output import store_url

SOURCE_KEYS = ("path", "label_col", "text_col", "feature_cols", "id_col", "max_pixels", "test_split", "val_split",
               "imbalance", "imbalance_factor")


@dataclass(frozen=True)
class SourceSpec:
    """Where rows come from, and how they are split and (for demos) made imbalanced."""

    path: str
    label_col: str | None = None
    text_col: str | None = None
    feature_cols: tuple[str, ...] | None = None
    id_col: str | None = None
    max_pixels: int | None = None
    test_split: float = 0.0
    val_split: float = 0.0
    imbalance: str | None = None
    imbalance_factor: float = 10.0


def payload_of(source: SourceSpec) -> str:
    """The payload the source will give (image, text, features), read from the spec alone: a text column
    means text; another table, features; a dataset directory says in its manifest; else images."""
    if source.text_col:
        return "text"
    path = Path(source.path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "features"
    try:
        return str(json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("payload") or "image")
    except (OSError, ValueError, AttributeError):
        return "image"


def parse_source(c: Checker, value, base: Path) -> SourceSpec:
    """The ``source:`` mapping, checked; a relative path is taken from ``base`` (the recipe's folder)."""
    raw = c.mapping(value, "source", SOURCE_KEYS)
    if "path" not in raw:
        c.fail("source.path", "missing; give an image folder, a table file, a dataset directory or 'digits'")
    path = c.text(raw["path"], "source.path")
    if is_url(path):  # a table or a dataset in an object store
        path = store_url(c, path, "source.path")
    elif not Path(path).is_absolute() and (base / path).exists():
        path = os.path.normpath(base / path)
    opt = {k: c.text(raw[k], f"source.{k}") for k in ("label_col", "text_col", "id_col") if raw.get(k) is not None}
    if raw.get("feature_cols") is not None:
        cols = raw["feature_cols"]
        if not isinstance(cols, list) or not all(isinstance(x, str) for x in cols):
            c.fail("source.feature_cols", f"expected a list of column names, got {show_value(cols)}")
        opt["feature_cols"] = tuple(cols)
    if raw.get("max_pixels") is not None:
        opt["max_pixels"] = int(c.number(raw["max_pixels"], "source.max_pixels", 1, 10**12, integer=True))
    for key in ("test_split", "val_split"):
        if key in raw:
            opt[key] = float(c.number(raw[key], f"source.{key}", 0.0, 0.9))
    if opt.get("test_split", 0) + opt.get("val_split", 0) >= 1:
        c.fail("source", "test_split + val_split must leave rows for training")
    if raw.get("imbalance") is not None:
        opt["imbalance"] = c.choice(raw["imbalance"], "source.imbalance", ("longtail",))
    if "imbalance_factor" in raw:
        opt["imbalance_factor"] = float(c.number(raw["imbalance_factor"], "source.imbalance_factor", 1.0, 10_000.0))
    return SourceSpec(path=path, **opt)
