"""The recipe: one YAML file that says source, clean, balance, augment and output, validated before any work.

Every error names its place in the file, e.g. ``augment.image[2].degrees: expected a number or
[min, max], got 'abc'``. The keys are documented in docs/recipes.md.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augforge.augment.text import Protect
from augforge.errors import AugforgeError
from augforge.train.config import RunSpec, TrainConfig, parse_train

OUTPUT_FORMATS = ("png", "jpeg", "raw")
DEVICES = ("auto", "cpu", "gpu")
COLORS = ("rgb", "gray")
#: the largest image side an op may ask for (a 16k x 16k image is already 768 MB of RGB)
MAX_SIDE = 16384
#: offline: augmented copies are written into the shards; online: the loader draws new ones every epoch
MODES = ("offline", "online")


class RecipeError(AugforgeError):
    """A recipe that cannot be used, with the place in the file that is wrong."""


class Checker:
    """Validates values read from a recipe, naming each one by its path in the file."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, where: str, message: str):
        """Raise a RecipeError for ``where``."""
        raise RecipeError(f"{self.file}: {where}: {message}")

    def mapping(self, value, where: str, allowed: tuple[str, ...]) -> dict:
        """A mapping whose keys are all in ``allowed`` (None is an empty mapping)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping of {', '.join(allowed)}, got {_show(value)}")
        for key in value:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else str(key),
                          f"unknown key; expected one of {', '.join(allowed)}")
        return value

    def number(self, value, where: str, low: float | None = None, high: float | None = None,
               integer: bool = False) -> float:
        """A number (an int when ``integer``) within [low, high]."""
        kind = "a whole number" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(where, f"expected {kind}, got {_show(value)}")
        if not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            self.fail(where, f"expected {kind} in {bounds}, got {value}")
        return value

    def span(self, value, where: str, low: float | None = None, high: float | None = None,
             symmetric: bool = False) -> tuple[float, float]:
        """A number or ``[min, max]``; with ``symmetric`` a number x means ``[-x, x]``, else ``[x, x]``."""
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                self.fail(where, f"expected a number or [min, max], got {_show(value)}")
            a = self.number(value[0], f"{where}[0]", low, high)
            b = self.number(value[1], f"{where}[1]", low, high)
            if a > b:
                self.fail(where, f"min {a} is above max {b}")
            return float(a), float(b)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number or [min, max], got {_show(value)}")
        if symmetric:
            self.number(value, where, 0, high)
            return -float(value), float(value)
        self.number(value, where, low, high)
        return float(value), float(value)

    def size(self, value, where: str) -> tuple[int, int]:
        """An image size: ``N`` (square) or ``[height, width]``, positive whole numbers."""
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                self.fail(where, f"expected a size N or [height, width], got {_show(value)}")
            return (int(self.number(value[0], f"{where}[0]", 1, MAX_SIDE, integer=True)),
                    int(self.number(value[1], f"{where}[1]", 1, MAX_SIDE, integer=True)))
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected a size N or [height, width], got {_show(value)}")
        n = int(self.number(value, where, 1, MAX_SIDE, integer=True))
        return n, n

    def choice(self, value, where: str, options: tuple[str, ...]) -> str:
        """One of ``options``."""
        if value not in options:
            self.fail(where, f"expected one of {', '.join(options)}, got {_show(value)}")
        return value

    def flag(self, value, where: str) -> bool:
        """true or false."""
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {_show(value)}")
        return value

    def text(self, value, where: str) -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {_show(value)}")
        return value

    def strings(self, value, where: str, options: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of strings (each one of ``options`` when given); a single string is a list of one."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            self.fail(where, f"expected a list of strings, got {_show(value)}")
        for i, item in enumerate(items):
            if options is not None and item not in options:
                self.fail(f"{where}[{i}]", f"expected one of {', '.join(options)}, got {_show(item)}")
        return tuple(items)

    def path(self, value, where: str) -> str:
        """A local path (models and embeddings are read from disk, never downloaded)."""
        return self.text(value, where)

    def numbers(self, value, where: str, length: int | None = None) -> tuple[float, ...]:
        """A list of numbers (a single number is a list of one)."""
        items = value if isinstance(value, (list, tuple)) else [value]
        if length is not None and len(items) not in (1, length):
            self.fail(where, f"expected 1 or {length} numbers, got {len(items)}")
        return tuple(float(self.number(v, f"{where}[{i}]")) for i, v in enumerate(items))


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)
    return text if len(text) < 60 else text[:57] + "..."


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


@dataclass(frozen=True)
class ImageOpSpec:
    """One image op of the augment list: its name, validated parameters, probability and place in the file."""

    name: str
    params: dict
    p: float
    where: str


@dataclass(frozen=True)
class AugmentSpec:
    """How many augmented variants each train row gets, and the ops that make them."""

    copies: int = 0
    copies_per_class: dict = field(default_factory=dict)
    mode: str = "offline"
    seed: int | None = None  # the augmentation draws' own seed (None: the recipe's seed)
    keep_original: bool = True
    device: str = "auto"
    color: str = "rgb"
    image: tuple[ImageOpSpec, ...] = ()
    text: tuple[ImageOpSpec, ...] = ()
    protect: Protect = Protect()
    min_words: int = 1

    def copies_for(self, class_name: str) -> int:
        """Augmented variants per row of ``class_name``."""
        return int(self.copies_per_class.get(class_name, self.copies))


@dataclass(frozen=True)
class OutputSpec:
    """Where and how the dataset is written."""

    dir: str | None = None
    format: str = "png"
    quality: int = 95
    shard_rows: int | None = None
    shard_mb: float | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``data`` is the YAML as loaded (stored in the manifest)."""

    file: str
    seed: int
    source: SourceSpec
    drop_duplicates: bool
    strategy: str | None
    augment: AugmentSpec
    output: OutputSpec
    data: dict
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunSpec = field(default_factory=RunSpec)

    def fingerprint_parts(self) -> dict:
        """What in the recipe determines the built rows: not where they are written, nor how they are trained
        on; the source path resolved (a moved recipe naming the same data by another spelling builds the same)."""
        parts = asdict(self)
        for key in ("file", "data", "train", "run"):
            parts.pop(key)
        parts["output"].pop("dir")
        parts["source"]["path"] = resolved(self.source.path)
        if self.augment.mode == "online":  # the ops run in the loader: they do not change the built rows
            parts["augment"]["image"] = ()
        return parts

    @property
    def augment_seed(self) -> int:
        """The seed of the augmentation draws: ``augment.seed``, else the recipe's (which also draws the split
        and the balance), so that augmentation can vary while the split stays."""
        return self.seed if self.augment.seed is None else self.augment.seed

    @property
    def train_ops(self) -> tuple:
        """The image ops the training loader runs every epoch: the augment ops in online mode, then
        ``train.stream``."""
        online = self.augment.image if self.augment.mode == "online" else ()
        return tuple(online) + tuple(self.run.stream)


def resolved(path: str) -> str:
    """An existing path as an absolute path without links or ``..``; anything else (a bundled name) as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path


TOP_KEYS = ("name", "seed", "source", "clean", "balance", "augment", "output", "train", "tune")
SOURCE_KEYS = ("path", "label_col", "text_col", "feature_cols", "id_col", "max_pixels", "test_split", "val_split",
               "imbalance", "imbalance_factor")
AUGMENT_KEYS = ("copies", "mode", "seed", "keep_original", "device", "color", "image", "text", "protect", "min_words")
OUTPUT_KEYS = ("dir", "format", "quality", "shard_rows", "shard_mb")


def _payload_of(source: SourceSpec) -> str:
    """The payload the source will give (image, text, features), read from the spec alone: a text column
    means text; another table, features; a dataset directory says in its manifest; else images."""
    from augforge.datasets.sources.table import TABLE_SUFFIXES

    if source.text_col:
        return "text"
    path = Path(source.path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "features"
    try:
        return str(json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("payload") or "image")
    except (OSError, ValueError, AttributeError):
        return "image"


def _source(c: Checker, value, base: Path) -> SourceSpec:
    raw = c.mapping(value, "source", SOURCE_KEYS)
    if "path" not in raw:
        c.fail("source.path", "missing; give an image folder, a table file, a dataset directory or 'digits'")
    path = c.text(raw["path"], "source.path")
    relative = base / path
    if not Path(path).is_absolute() and relative.exists():
        path = os.path.normpath(relative)
    opt = {k: c.text(raw[k], f"source.{k}") for k in ("label_col", "text_col", "id_col") if raw.get(k) is not None}
    if raw.get("feature_cols") is not None:
        cols = raw["feature_cols"]
        if not isinstance(cols, list) or not all(isinstance(x, str) for x in cols):
            c.fail("source.feature_cols", f"expected a list of column names, got {_show(cols)}")
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


def _copies(c: Checker, value) -> tuple[int, dict]:
    if isinstance(value, dict):
        per_class, default = {}, 0
        for key, n in value.items():
            count = int(c.number(n, f"augment.copies.{key}", 0, 1000, integer=True))
            if key == "default":
                default = count
            else:
                per_class[str(key)] = count
        return default, per_class
    return int(c.number(value, "augment.copies", 0, 1000, integer=True)), {}


def _augment(c: Checker, value) -> AugmentSpec:
    from augforge.augment.image import check_op

    raw = c.mapping(value, "augment", AUGMENT_KEYS)
    copies, per_class = _copies(c, raw.get("copies", 0))
    ops_raw = raw.get("image", [])
    if not isinstance(ops_raw, list):
        c.fail("augment.image", f"expected a list of ops, got {_show(ops_raw)}")
    ops = tuple(check_op(c, op, f"augment.image[{i}]") for i, op in enumerate(ops_raw))
    text_ops = _text_ops(c, raw.get("text", []))
    if ops and text_ops:
        c.fail("augment", "give image ops or text ops, not both")
    if (copies or per_class) and not ops and not text_ops:
        c.fail("augment.image", "copies are asked for but no ops are given (augment.image or augment.text)")
    mode = c.choice(raw.get("mode", "offline"), "augment.mode", MODES)
    if mode == "online" and text_ops:
        c.fail("augment.mode", "online augmentation streams image ops; text variants are built offline")
    if mode == "online" and (copies or per_class):
        c.fail("augment.copies", "online mode draws fresh augmentations every epoch instead of writing copies; "
                                 "remove copies, or set augment.mode: offline")
    protect = c.mapping(raw.get("protect"), "augment.protect", ("numbers", "names", "words", "patterns"))
    for i, pattern in enumerate(protect.get("patterns", []) or []):
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            c.fail(f"augment.protect.patterns[{i}]", f"not a regular expression ({exc})")
    return AugmentSpec(
        copies=copies, copies_per_class=per_class, mode=mode,
        seed=None if raw.get("seed") is None else int(c.number(raw["seed"], "augment.seed", 0, 2**63 - 1,
                                                                integer=True)),
        keep_original=c.flag(raw.get("keep_original", True), "augment.keep_original"),
        device=c.choice(raw.get("device", "auto"), "augment.device", DEVICES),
        color=c.choice(raw.get("color", "rgb"), "augment.color", COLORS),
        image=ops,
        text=text_ops,
        protect=Protect(
            numbers=c.flag(protect.get("numbers", True), "augment.protect.numbers"),
            names=c.flag(protect.get("names", False), "augment.protect.names"),
            words=c.strings(protect.get("words", []), "augment.protect.words"),
            patterns=c.strings(protect.get("patterns", []), "augment.protect.patterns"),
        ),
        min_words=int(c.number(raw.get("min_words", 1), "augment.min_words", 1, 1000, integer=True)),
    )


def _text_ops(c: Checker, value) -> tuple:
    from augforge.augment.image import check_op
    from augforge.augment.text_ops import TEXT_ALIASES, TEXT_OPS

    if not isinstance(value, list):
        c.fail("augment.text", f"expected a list of ops, got {_show(value)}")
    return tuple(check_op(c, op, f"augment.text[{i}]", TEXT_OPS, TEXT_ALIASES) for i, op in enumerate(value))


def _output(c: Checker, value, base: Path) -> OutputSpec:
    raw = c.mapping(value, "output", OUTPUT_KEYS)
    out = {}
    if raw.get("dir") is not None:
        out["dir"] = os.path.normpath(base / c.text(raw["dir"], "output.dir"))
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


def parse_recipe(data: Any, file: str = "<recipe>", base: str | Path = ".") -> Recipe:
    """Validate a loaded recipe mapping; ``base`` is the folder relative paths are taken from."""
    c = Checker(file)
    raw = c.mapping(data, "", TOP_KEYS)
    if raw.get("tune") is not None:  # augforge tune's search space, checked by every command
        from augforge.train.tune import parse_space

        try:
            parse_space(raw["tune"])
        except AugforgeError as exc:  # its message starts with the place (tune.space.train.lr: ...)
            raise RecipeError(f"{c.file}: {exc}") from None
    if not raw:
        c.fail("recipe", "is empty; it needs at least a source")
    base = Path(base)
    clean = c.mapping(raw.get("clean"), "clean", ("drop_duplicates",))
    balance = c.mapping(raw.get("balance"), "balance", ("strategy",))
    strategy = None
    if balance.get("strategy") is not None:
        from augforge.balance.strategy import parse_strategy

        strategy = c.text(balance["strategy"], "balance.strategy")
        try:
            parse_strategy(strategy)
        except AugforgeError as exc:
            c.fail("balance.strategy", str(exc))
    seed = int(c.number(raw.get("seed", 0), "seed", 0, 2**63 - 1, integer=True))
    source = _source(c, raw.get("source"), base)
    train, run = parse_train(c, raw.get("train"), seed, payload=_payload_of(source))
    recipe = Recipe(
        file=file,
        seed=seed,
        source=source,
        drop_duplicates=c.flag(clean.get("drop_duplicates", True), "clean.drop_duplicates"),
        strategy=strategy,
        augment=_augment(c, raw.get("augment")),
        output=_output(c, raw.get("output"), base),
        data=raw,
        train=train,
        run=run,
    )
    from augforge.augment.image import check_op_list

    check_op_list(recipe.train_ops, recipe.augment.color, file, encoded_output=False)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (YAML, loaded with ``safe_load``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(f"{path}: {where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return parse_recipe(data, str(path), path.parent)
