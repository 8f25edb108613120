"""The space ``augforge search-policy`` searches: candidates as recipe changes (``augforge.recipe.changes``).

Every candidate trains online (the loader draws new augmentations every epoch, no copies), so all of them share
one build and train on the same rows per epoch: equal compute. A candidate's ``augment.image`` is the
deterministic part of the recipe's own ops (``evaluation_ops``: resizes and centre crops keep the shapes the
model expects) followed by its policy; ``train.stream`` stays the recipe's.

- ``none``: the deterministic part only (no augmentation);
- ``trivial``, ``autoaug-imagenet``, ``rand-nN-mM``: that policy (``augforge.augment.policy``);
- ``recipe-ops``: the recipe's own image ops (online), each random op with its probability ``p`` and a ``strength`` that
  scales its range parameters away from their neutral value (rotate's degrees, blur's sigma, colour's factors,
  erasing's area, cutout's size), searched by Optuna; as written, p and strength are the recipe's and 1.

The candidates without parameters (none, trivial, autoaug-imagenet: ``FIXED``) are scored first, outside the
sampler's space; the sampler's parameters are ``policy`` (rand or recipe), ``rand.n`` and ``rand.m``, ``op<i>.p`` and
``op<i>.strength``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from augforge.augment.image_ops import DETERMINISTIC, OPS, evaluation_ops
from augforge.augment.ops import op_dicts
from augforge.augment.policy import Policy
from augforge.recipe.changes import REMOVE

#: the RandAugment grid tried first (N ops, magnitude M of 31 bins), spread so that a short budget sees its corners
RAND_GRID = ((2, 9), (1, 5), (3, 14), (1, 14), (3, 5), (2, 5), (2, 14), (1, 9), (3, 9))
RAND_N, RAND_M = (1, 3), (0, 30)
STRENGTH = (0.25, 2.0)
#: per op, the parameters a strength scales and their neutral value (the value that leaves the image as it is)
NEUTRAL = {"rotate": {"degrees": 0.0}, "gaussian_blur": {"sigma": 0.01},
           "color": {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0},
           "random_erasing": {"scale": 0.0}, "cutout": {"size": 1}}
#: ops that shape the image (crops) keep their parameters; flips and the rest get their p searched
SHAPING = ("random_crop", "random_resized_crop")


@dataclass(frozen=True)
class Candidate:
    """One point of the space: its name, the recipe changes that make it, and its identity (equal keys train
    the same)."""

    name: str
    changes: list = field(default_factory=list)
    key: str = ""


def searchable_ops(recipe) -> list[tuple[int, object]]:
    """(index, op) of the recipe's image ops whose probability the search may change: the random ops that do not
    shape the image."""
    return [(i, op) for i, op in enumerate(recipe.augment.image)
            if op.name not in DETERMINISTIC and op.name not in SHAPING and op.name in OPS]


#: the candidates without parameters, scored first and outside the sampler's space
FIXED = ("none", "trivial", "autoaug-imagenet")


def families(recipe) -> list[str]:
    """The families the sampler draws from: RandAugment, and the recipe's own ops when it has random ones."""
    return ["rand"] + (["recipe"] if searchable_ops(recipe) else [])


def _online(image: list) -> list:
    """Changes that train ``image`` (op mappings or policy strings) online, instead of the recipe's ops."""
    return [("augment.mode", "online"), ("augment.copies", REMOVE), ("augment.image", image)]


def _steady(recipe) -> list[dict]:
    return op_dicts(evaluation_ops(recipe.augment.image))


def policy_candidate(recipe, text: str) -> Candidate:
    """The candidate that trains with policy ``text`` (``none``, ``trivial``, ``rand-n2-m9``, ...)."""
    steady = _steady(recipe)
    if text == "none":
        return Candidate("none", _online(steady), "none")
    return Candidate(text, _online(steady + [text]), text)


def _scaled(value, neutral: float, strength: float, param) -> object:
    """``value`` moved away from ``neutral`` by ``strength``, kept within the parameter's bounds (a symmetric
    span's bounds hold its magnitude: rotate's degrees 20 is [-20, 20])."""
    low, high = param.args.get("low"), param.args.get("high")

    def bounded(x):
        x = max(x, low) if low is not None else x
        return min(x, high) if high is not None else x

    def one(v):
        out = neutral + (float(v) - neutral) * strength
        return math.copysign(bounded(abs(out)), out) if param.args.get("symmetric") else bounded(out)

    if isinstance(value, (list, tuple)):
        return [one(v) for v in value]
    scaled = one(value)
    return max(1, int(round(scaled))) if param.args.get("integer") else scaled


def recipe_candidate(recipe, settings: dict, name: str = "recipe-ops") -> Candidate:
    """The recipe's own ops online, each searchable op with ``settings`` ``op<i>.p`` and ``op<i>.strength``
    (missing: the recipe's p and strength 1)."""
    ops = op_dicts(recipe.augment.image)
    for i, op in searchable_ops(recipe):
        strength = float(settings.get(f"op{i}.strength", 1.0))
        ops[i]["p"] = round(float(settings.get(f"op{i}.p", op.p)), 4)
        for key, neutral in NEUTRAL.get(op.name, {}).items():
            ops[i][key] = _scaled(op.params[key], neutral, strength, OPS[op.name].params[key])
    key = "recipe:" + json.dumps(ops, sort_keys=True, default=str)
    return Candidate(name, _online(ops), key)


def written_settings(recipe) -> dict:
    """The Optuna parameters of the recipe's own ops as written (their p, strength 1)."""
    out: dict = {"policy": "recipe"}
    for i, op in searchable_ops(recipe):
        out[f"op{i}.p"] = float(op.p)
        out[f"op{i}.strength"] = 1.0
    return out


def first_trials(recipe) -> list[dict]:
    """The sampler's first trials (after the ``FIXED`` candidates), in order: the recipe's own ops as written,
    then the RandAugment grid."""
    trials = [written_settings(recipe)] if searchable_ops(recipe) else []
    return trials + [{"policy": "rand", "rand.n": n, "rand.m": m} for n, m in RAND_GRID]


def suggest(trial, recipe) -> Candidate:
    """The candidate an Optuna trial draws (or was enqueued with); a trial of a ``FIXED`` candidate names it in
    its ``fixed`` user attribute instead."""
    fixed = getattr(trial, "user_attrs", {}).get("fixed")
    if fixed:
        return policy_candidate(recipe, fixed)
    family = trial.suggest_categorical("policy", families(recipe))
    if family == "rand":
        n = trial.suggest_int("rand.n", *RAND_N)
        m = trial.suggest_int("rand.m", *RAND_M)
        return policy_candidate(recipe, str(Policy("rand", n=n, m=m)))
    settings = {}  # the recipe's own ops: the only other family
    for i, _ in searchable_ops(recipe):
        settings[f"op{i}.p"] = trial.suggest_float(f"op{i}.p", 0.0, 1.0)
        settings[f"op{i}.strength"] = trial.suggest_float(f"op{i}.strength", *STRENGTH, log=True)
    written = recipe_candidate(recipe, {})
    candidate = recipe_candidate(recipe, settings)
    return candidate if candidate.key == written.key else \
        Candidate(f"recipe-ops-t{trial.number}", candidate.changes, candidate.key)
