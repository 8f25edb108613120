"""The recipe's ``output:`` section: where and how the dataset is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from augforge.checks import Checker
from augforge.paths import is_url
from augforge.storage.urls import parse_url, url_problem

OUTPUT_FORMATS = ("png", "jpeg", "raw")
OUTPUT_KEYS = ("dir", "format", "quality", "shard_rows", "shard_mb")


@dataclass(frozen=True)
class OutputSpec:
    """Where and how the dataset is written."""

    dir: str | None = None
    format: str = "png"
    quality: int = 95
    shard_rows: int | None = None
    shard_mb: float | None = None


def store_url(c: Checker, text: str, key: str) -> str:
    """An ``s3://`` URL at recipe key ``key``, in its canonical spelling; what ``url_problem`` finds is a
    RecipeError naming the key."""
    problem = url_problem(text)
    if problem:
        c.fail(key, f"{text}: {problem}")
    return str(parse_url(text))


def parse_output(c: Checker, value, base: Path) -> OutputSpec:
    """The ``output:`` mapping, checked; a local ``dir`` is taken from ``base`` (the recipe's folder), an
    ``s3://`` URL as it is."""
    raw = c.mapping(value, "output", OUTPUT_KEYS)
    out = {}
    if raw.get("dir") is not None:
        text = c.text(raw["dir"], "output.dir")
        out["dir"] = store_url(c, text, "output.dir") if is_url(text) else os.path.normpath(base / text)
    if "format" in raw:
        out["format"] = c.choice(raw["format"], "output.format", OUTPUT_FORMATS)
    if "quality" in raw:
        out["quality"] = int(c.number(raw["quality"], "output.quality", 1, 100, integer=True))
    if raw.get("shard_rows") is not None and raw.get("shard_mb") is not None:
        c.fail("output", "give shard_rows or shard_mb, not both")
    if raw.get("shard_rows") is not None:
        out["shard_rows"] = int(c.number(raw["shard_rows"], "output.shard_rows", 1, 10**9, integer=True))
    if raw.get("shard_mb") is not None:
        out["shard_mb"] = float(c.number(raw["shard_mb"], "output.shard_mb", 0.001, 1_000_000.0))
    return OutputSpec(**out)
