"""The recipe's ``tune:`` section: the metric ``augforge tune`` optimises and its search space, keyed by
recipe path, list items included (``augment.image[2].degrees``; ``augforge.experiments.tune`` runs the study)."""

from __future__ import annotations

import math

from augforge.checks import RecipeError
from augforge.errors import AugforgeError
from augforge.recipe.changes import parse_path
from augforge.recipe.train import METRICS

KINDS = ("log_uniform", "uniform", "int", "choice")


def _is_path(path: str) -> bool:
    """Whether ``path`` reads as a key path (``augforge.recipe.changes.parse_path``)."""
    try:
        parse_path(path)
    except AugforgeError:
        return False
    return True


def parse_space(tune, where: str = "tune") -> tuple[str, dict]:
    """(metric, {path: (kind, values)}) of a ``tune:`` mapping; errors name their place."""
    if not isinstance(tune, dict) or not isinstance(tune.get("space"), dict) or not tune["space"]:
        raise RecipeError(f"{where}: expected a mapping with a non-empty 'space' (recipe path: {{kind: values}})")
    unknown = sorted(set(tune) - {"metric", "space"})
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; keys: metric, space")
    metric = tune.get("metric", "balanced_accuracy")
    if metric not in METRICS:
        raise RecipeError(f"{where}.metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    space = {}
    for path, spec in tune["space"].items():
        place = f"{where}.space.{path}"
        if not isinstance(path, str) or "." not in path or not _is_path(path):
            raise RecipeError(f"{place}: expected a recipe path like train.lr or augment.image[2].degrees")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise RecipeError(f"{place}: expected one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {spec!r}")
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise RecipeError(f"{place}.choice: expected a non-empty list")
        else:
            ok = isinstance(values, list) and len(values) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            if not ok or values[0] >= values[1]:
                raise RecipeError(f"{place}.{kind}: expected [low, high] with low < high, got {values!r}")
            if kind == "log_uniform" and values[0] <= 0:
                raise RecipeError(f"{place}.log_uniform: the low end must be above 0, got {values[0]}")
            if kind == "int" and not all(float(v).is_integer() for v in values):
                raise RecipeError(f"{place}.int: expected whole numbers, got {values!r}")
        space[path] = (kind, values)
    return metric, space
