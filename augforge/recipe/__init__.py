"""Recipes: the schema of every section (source, clean, balance, augment, output, train, tune), validated
before any work. ``load_recipe`` reads a file; ``parse_recipe`` checks a loaded mapping."""

from augforge.augment.ops import OpSpec
from augforge.checks import Checker, RecipeError
from augforge.recipe.augment import AugmentSpec
from augforge.recipe.output import OutputSpec
from augforge.recipe.parse import Recipe, load_recipe, parse_recipe
from augforge.recipe.source import SourceSpec
from augforge.recipe.train import RunSpec, TextOptions, TrainConfig

#: deprecated name of ``OpSpec`` (it types text ops too), kept for one release
ImageOpSpec = OpSpec

__all__ = ["AugmentSpec", "Checker", "ImageOpSpec", "OpSpec", "OutputSpec", "Recipe", "RecipeError", "RunSpec",
           "SourceSpec", "TextOptions", "TrainConfig", "load_recipe", "parse_recipe"]
