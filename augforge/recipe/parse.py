"""The whole recipe: one YAML file that says source, clean, balance, augment, output, train and tune,
validated before any work.

Every error names its place in the file, e.g. ``augment.image[2].degrees: expected a number or
[min, max], got 'abc'``. The keys are documented in docs/recipes.md; each section has its module here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augforge.augment.image_ops import check_op_list
from augforge.balance.instance_strategies import instance_strategy
from augforge.balance.strategy import parse_strategy
from augforge.checks import Checker, RecipeError
from augforge.errors import AugforgeError
from augforge.paths import resolved
from augforge.recipe.augment import AugmentSpec, TargetSpec, parse_augment
from augforge.recipe.changes import apply_changes
from augforge.recipe.clean import CLEAN_KEYS, GUARD_KEYS, CleanSpec, parse_clean
from augforge.recipe.output import OutputSpec, parse_output
from augforge.recipe.source import SourceSpec, parse_source, payload_of
from augforge.recipe.train import RunSpec, TrainConfig, parse_train
from augforge.recipe.tune import parse_space

TOP_KEYS = ("name", "seed", "source", "clean", "balance", "augment", "output", "train", "tune")


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
    clean: CleanSpec = CleanSpec()
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunSpec = field(default_factory=RunSpec)
    base: str = "."  # the folder the recipe's relative paths are taken from (its file's)

    def with_changes(self, changes) -> "Recipe":
        """This recipe with ``changes`` applied (``{key path: value}`` or (path, value) pairs, ``REMOVE`` to
        delete: ``augforge.recipe.changes``), validated again; an error names the path or the recipe key."""
        return parse_recipe(apply_changes(self.data, changes), self.file, self.base)

    def fingerprint_parts(self) -> dict:
        """What in the recipe determines the built rows: not where they are written, nor how they are trained
        on; the source path resolved (a moved recipe naming the same data by another spelling builds the same)."""
        parts = asdict(self)
        for key in ("file", "data", "train", "run", "base"):
            parts.pop(key)
        if not self.clean.active:  # no audit-based cleaning: the rows (and the fingerprint) are as before it existed
            parts.pop("clean")
        else:  # the guard stops a build or lets it write the same rows: not part of what the rows are
            for key in GUARD_KEYS:
                parts["clean"].pop(key)
        parts["output"].pop("dir")
        parts["source"]["path"] = resolved(self.source.path)
        if self.augment.targets == TargetSpec():  # the default policy: fingerprints as before targets existed
            parts["augment"].pop("targets")
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


def parse_recipe(data: Any, file: str = "<recipe>", base: str | Path = ".") -> Recipe:
    """Validate a loaded recipe mapping; ``base`` is the folder relative paths are taken from."""
    c = Checker(file)
    raw = c.mapping(data, "", TOP_KEYS)
    if raw.get("tune") is not None:  # augforge tune's search space, checked by every command
        try:
            parse_space(raw["tune"])
        except AugforgeError as exc:  # its message starts with the place (tune.space.train.lr: ...)
            raise RecipeError(f"{c.file}: {exc}") from None
    if not raw:
        c.fail("recipe", "is empty; it needs at least a source")
    base = Path(base)
    clean = c.mapping(raw.get("clean"), "clean", CLEAN_KEYS)
    balance = c.mapping(raw.get("balance"), "balance", ("strategy",))
    strategy = None
    if balance.get("strategy") is not None:
        strategy = c.text(balance["strategy"], "balance.strategy")
        try:
            if instance_strategy(strategy) is None:  # a row chain (an instance strategy: detection sets)
                parse_strategy(strategy)
        except AugforgeError as exc:
            c.fail("balance.strategy", str(exc))
    seed = int(c.number(raw.get("seed", 0), "seed", 0, 2**63 - 1, integer=True))
    source = parse_source(c, raw.get("source"), base)
    train, run = parse_train(c, raw.get("train"), seed, payload=payload_of(source))
    recipe = Recipe(
        file=file,
        seed=seed,
        source=source,
        drop_duplicates=c.flag(clean.get("drop_duplicates", True), "clean.drop_duplicates"),
        strategy=strategy,
        clean=parse_clean(c, clean),
        augment=parse_augment(c, raw.get("augment")),
        output=parse_output(c, raw.get("output"), base),
        data=raw,
        train=train,
        run=run,
        base=str(base),
    )
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
