"""The one op schema, shared by image and text ops: a parameter, an op's definition, a validated op.

An op table (``augforge.augment.image_ops.OPS``, ``augforge.augment.text_ops.TEXT_OPS``) maps names to
``OpDef``s; ``check_op`` validates a recipe entry (``{op: name, p: ..., <params>}``) against a table into an
``OpSpec``, each parameter read by the ``augforge.checks.Checker`` method its ``Param`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

#: the default of a parameter an op entry must give
REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A parameter of an op: how it is checked (a ``Checker`` method and its arguments) and its default."""

    kind: str
    default: object = REQUIRED
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpDef:
    """An op: its parameters, how it is built (an image op's DALI graph), and what it needs."""

    name: str
    params: dict
    build: Callable
    rgb: bool = False  # needs three channels
    float_output: bool = False  # produces float pixels (normalize): last, and not for encoded shards
    own_coin: bool = False  # draws its own per-sample coin for p (no DALI conditional needed)
    summary: str = ""


@dataclass(frozen=True)
class OpSpec:
    """One op of a recipe's list (image or text): its name, validated parameters, probability and place in
    the file."""

    name: str
    params: dict
    p: float
    where: str


def check_op(checker, raw, where: str, table: dict, aliases: dict) -> OpSpec:
    """Validate one op entry of a recipe (``{op: name, p: ..., <params>}``) against the op ``table`` (names
    also found through ``aliases``) into an ``OpSpec``, with the recipe ``Checker`` ``checker``."""
    if not isinstance(raw, dict) or "op" not in raw:
        checker.fail(where, f"expected a mapping with 'op' (one of {', '.join(table)}), got {raw!r}")
    name = aliases.get(str(raw["op"]).lower(), str(raw["op"]).lower())
    if name not in table:
        checker.fail(f"{where}.op", f"unknown op {raw['op']!r}; known: {', '.join(table)}")
    spec = table[name]
    params = {}
    for key in raw:
        if key not in ("op", "p") and key not in spec.params:
            known = ", ".join([*spec.params, "p"])
            checker.fail(f"{where}.{key}", f"{name} has no parameter {key!r}; it takes {known}")
    for key, param in spec.params.items():
        if key not in raw:
            if param.default is REQUIRED:
                checker.fail(f"{where}.{key}", f"missing; {name} needs {key}")
            params[key] = param.default
            continue
        params[key] = getattr(checker, param.kind)(raw[key], f"{where}.{key}", **param.args)
    p = float(checker.number(raw.get("p", 1.0), f"{where}.p", 0.0, 1.0))
    return OpSpec(name, params, p, where)


def op_dicts(ops) -> list[dict]:
    """Ops as recipe mappings (``{op, p, <params>}``, tuples as lists): JSON for manifests and checkpoints, and
    read back by ``check_op``."""
    return [{"op": op.name, "p": op.p, **{k: list(v) if isinstance(v, tuple) else v for k, v in op.params.items()}}
            for op in ops]
