"""The arms of an ablation: the recipe as written, one arm per technique it turns on with exactly that technique
removed (data-side techniques, regularizers, the schedule, and the long-tail options: loss, class weights,
balanced sampler, DRW / DRS, post-hoc adjustment, decoupling), a plain arm with every technique off, and the
user's named overrides (``la=train.loss:logit_adjusted`` switches the loss).

Arms are changes to the recipe by key paths such as ``train.lr`` or ``augment.image[2].degrees``, applied
by ``Recipe.with_changes`` (``augforge.recipe.changes``), so every arm is validated by the recipe checker and
an override naming a key the recipe does not have fails in one line naming the arm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from augforge.augment.image_ops import DETERMINISTIC
from augforge.errors import OptionError
from augforge.models import model_options
from augforge.recipe.changes import REMOVE

@dataclass
class Arm:
    """One arm: its name, what kind it is, and the changes from the baseline recipe (key path, value)."""

    name: str
    kind: str  # baseline | leave-one-out | plain | custom
    changes: list = field(default_factory=list)

    def describe(self) -> list[str]:
        """The recipe diff, one line per change."""
        return [f"{path}: removed" if value is REMOVE else f"{path}: {json.dumps(value)}" for path, value in self.changes]


def parse_override(text: str) -> tuple[str, str, object]:
    """``NAME=key.path:VALUE`` (the value read as YAML) as (name, path, value)."""
    name, sep, rest = text.partition("=")
    path, sep2, raw = rest.partition(":")
    if not sep or not sep2 or not name.strip() or not path.strip():
        raise OptionError("{arms} {text!r}: expected NAME=key.path:VALUE, e.g. lr_x3=train.lr:0.009", text=text)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise OptionError("{arms} {text!r}: the value is not valid YAML ({why})", text=text, why=exc) from None
    return name.strip(), path.strip(), value


def technique_arms(recipe) -> list[Arm]:
    """One leave-one-out arm per technique the recipe turns on (see docs/ablation.md for the list)."""
    arms: list[Arm] = []
    aug, train, run, raw = recipe.augment, recipe.train, recipe.run, recipe.data

    def add(name: str, *changes) -> None:
        taken = {a.name for a in arms}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        arms.append(Arm(unique, "leave-one-out", list(changes)))

    if recipe.strategy:
        add("no-balance", ("balance.strategy", REMOVE))
    for step in ("near_duplicates", "leakage", "label_issues", "outliers"):  # the clean: audit steps
        if getattr(recipe.clean, step) not in ("keep", "warn", "error", "flag"):
            add(f"no-clean-{step.replace('_', '-')}", (f"clean.{step}", REMOVE))
    section = "image" if aug.image else "text"
    ops = aug.image or aug.text
    copies_on = aug.mode == "offline" and bool(aug.copies or aug.copies_per_class)
    for i, op in enumerate(ops):
        steady = _steady_form(op)
        if steady is not None:  # a random crop becomes its centred window: the images keep their shape
            add(f"no-{op.name}", (f"augment.{section}[{i}]", steady))
            continue
        changes = [(f"augment.{section}[{i}]", REMOVE)]
        if len(ops) == 1 and copies_on:  # the last op: its copies go with it
            changes += [("augment.copies", REMOVE), ("augment.keep_original", REMOVE)]
        add(f"no-{op.name}", *changes)
    if copies_on and len(ops) > 1:
        add("no-copies", ("augment.copies", REMOVE), ("augment.keep_original", REMOVE))
    for i, op in enumerate(run.stream):
        if op.name not in DETERMINISTIC or op.p < 1.0:
            steady = _steady_form(op)
            add(f"no-stream-{op.name}", (f"train.stream[{i}]", REMOVE if steady is None else steady))
    for key, name in (("mixup_alpha", "no-mixup"), ("cutmix_alpha", "no-cutmix")):
        if getattr(run, key) > 0:
            add(name, (f"train.{key}", REMOVE))
    for key, name in (("label_smoothing", "no-label-smoothing"), ("warmup", "no-warmup"),
                      ("weight_decay", "no-weight-decay"), ("l1", "no-l1"), ("l2", "no-l2")):
        if getattr(train, key) > 0:
            add(name, (f"train.{key}", REMOVE))
    if train.swa_start is not None:
        add("no-swa", ("train.swa_start", REMOVE), *([("train.swa_lr", REMOVE)] if "swa_lr" in raw.get("train", {})
                                                     else []))
    if train.ema_decay is not None:
        add("no-ema", ("train.ema_decay", REMOVE))
    if train.schedule != "constant":
        add("constant-lr", ("train.schedule", "constant"))
    _long_tail_arms(train, run, add)
    defaults = model_options(run.model)
    if "dropout" in defaults and (run.model_options.get("dropout", defaults["dropout"]) or 0) > 0:
        add("no-dropout", ("train.model_options.dropout", 0.0))
    if run.model_options.get("attention_after"):
        add("no-attention", ("train.model_options.attention_after", REMOVE))
    return arms


def _long_tail_arms(train, run, add) -> None:
    """One arm per long-tail option the recipe turns on: its loss, class weights, balanced sampler, deferred
    schedule, post-hoc adjustment or decoupled classifier, removed (plain cross-entropy, shuffled draws)."""
    if train.loss.name != "ce":
        add(f"no-{train.loss.name.replace('_', '-')}", ("train.loss", REMOVE))
    if train.class_weights != "none":
        add("no-class-weights", ("train.class_weights", REMOVE))
    if run.sampler != "shuffle":
        add("no-balanced-sampler", ("train.sampler", REMOVE))
    if train.rebalance is not None:
        add(f"no-{train.rebalance.mode}", ("train.rebalance", REMOVE))
    if train.posthoc_tau is not None:
        add("no-posthoc", ("train.posthoc_tau", REMOVE))
    if train.decouple is not None:
        add(f"no-{train.decouple.mode.replace('_', '-')}", ("train.decouple", REMOVE))


def _steady_form(op) -> dict | None:
    """The op that takes a random crop's place in its arm, keeping the output shape: random_crop becomes
    center_crop of its size, random_resized_crop a resize to its size; None for every other op."""
    if op.name == "random_crop":
        return {"op": "center_crop", "size": list(op.params["size"]), "fill": op.params["fill"]}
    if op.name == "random_resized_crop":
        return {"op": "resize", "size": list(op.params["size"])}
    return None


def plain_arm(arms: list[Arm]) -> Arm:
    """Every technique off at once: no balance, no augmentation (every augment op and the copies removed), no
    regularizers, constant learning rate."""
    changes = []
    for path, value in (change for arm in arms for change in arm.changes):
        if path.startswith(("augment.image[", "augment.text[")):
            changes += [(path, REMOVE), ("augment.copies", REMOVE), ("augment.keep_original", REMOVE)]
        else:
            changes.append((path, value))
    unique = []
    for change in changes:
        if change not in unique:
            unique.append(change)
    return Arm("plain", "plain", unique)


def build_arms(recipe, overrides: list[str] = (), only: list[str] = (), skip: list[str] = ()) -> list[Arm]:
    """The baseline, the leave-one-out arms, the plain arm, then the overrides (``NAME=path:value``, a name
    repeated adds changes to one arm); ``only``/``skip`` select arms by name (the baseline always runs)."""
    found = technique_arms(recipe)
    arms = [Arm("baseline", "baseline"), *found]
    if found:
        arms.append(plain_arm(found))
    custom: dict[str, Arm] = {}
    for text in overrides:
        name, path, value = parse_override(text)
        if name in {a.name for a in arms}:
            raise OptionError("{arms} {text!r}: {name!r} is already an arm's name; choose another", text=text,
                              name=name)
        custom.setdefault(name, Arm(name, "custom")).changes.append((path, value))
    arms += list(custom.values())
    names = [a.name for a in arms]
    for selector, label in ((only, "only"), (skip, "skip")):
        for name in selector:
            if name not in names:
                raise OptionError("{%s} {name}: no such arm; arms: {arms_list}" % label, name=name,
                                  arms_list=", ".join(names))
    if only:
        arms = [a for a in arms if a.kind == "baseline" or a.name in only]
    arms = [a for a in arms if a.kind == "baseline" or a.name not in skip]
    if len(arms) == 1:
        raise OptionError("{file}: no technique to ablate: the recipe turns on no balance, augmentation, "
                          "regularizer or schedule, and no {arms} were given (e.g. {arms} lr_x3=train.lr:0.009)",
                          file=recipe.file)
    return arms
