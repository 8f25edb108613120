"""The one way to change a recipe: ``{key path: value}`` applied to the recipe mapping (the YAML as loaded),
then validated again. The CLI's ``--seed``, ablate's arms and tune's trial parameters all go through it.

A key path is dotted keys with ``[i]`` list indexes: ``train.lr``, ``train.model_options.dropout``,
``augment.image[2].degrees``. A missing mapping on the way is created (``train.model_options`` may be
absent); a list index past the end, or a key below a plain value, is refused in one line naming the path.
``REMOVE`` as the value deletes the key or list item (the recipe's default then applies); list items are
removed from the end first, so several removals in one change set name the original positions.
"""

from __future__ import annotations

import copy
import re
from typing import Iterable, Mapping

from augforge.errors import AugforgeError

#: a change that removes the key (the recipe's default applies)
REMOVE = object()

_PIECE = re.compile(r"([^\[\]]+)((?:\[\d+\])*)")


def parse_path(path: str) -> list:
    """``train.model_options.alpha`` or ``augment.image[2].p`` as a list of keys (str) and indices (int)."""
    parts: list = []
    for piece in str(path).split("."):
        match = _PIECE.fullmatch(piece)
        if not match:
            raise AugforgeError(f"{path!r}: not a key path (e.g. train.lr or augment.image[0].p)")
        parts.append(match.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return parts


def change_list(changes: Mapping | Iterable) -> list[tuple[str, object]]:
    """``changes`` as a list of (path, value) pairs: a mapping's items in order, or the pairs as given."""
    return list(changes.items()) if isinstance(changes, Mapping) else [tuple(pair) for pair in changes]


def apply_changes(data: dict, changes: Mapping | Iterable) -> dict:
    """A copy of the recipe mapping with ``changes`` (a ``{path: value}`` mapping or (path, value) pairs)
    applied in order; ``REMOVE`` deletes, list items are removed from the end first. Not validated: see
    ``Recipe.with_changes``."""
    out = copy.deepcopy(data)
    removals = []
    for path, value in change_list(changes):
        keys = parse_path(path)
        parent = _parent_of(out, keys, path)
        if value is REMOVE:
            removals.append((parent, keys[-1]))
        else:
            parent[keys[-1]] = copy.deepcopy(value)
    for parent, key in sorted(removals, key=lambda r: -r[1] if isinstance(r[1], int) else 0):
        if isinstance(key, int):
            del parent[key]
        else:
            parent.pop(key, None)
    return out


def _parent_of(root: dict, keys: list, path: str):
    """The mapping or list that holds the last key of ``keys``, creating missing mappings on the way."""
    parent = root
    for depth, key in enumerate(keys):
        if isinstance(key, int) and (not isinstance(parent, list) or key >= len(parent)):
            have = f"a list of {len(parent)}" if isinstance(parent, list) else "no list"
            raise AugforgeError(f"{path}: the recipe has no item [{key}] there ({have})")
        if not isinstance(key, int) and not isinstance(parent, dict):
            raise AugforgeError(f"{path}: {key!r} would be inside a value, not a section")
        if depth == len(keys) - 1:
            return parent
        if not isinstance(key, int) and parent.get(key) is None:
            parent[key] = {}
        parent = parent[key]
    return parent
