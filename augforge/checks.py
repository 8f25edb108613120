"""The recipe checker: one exception for a bad recipe and the typed reads that name each value's place.

Every section parser (``augforge.recipe``) and every op table (``augforge.augment.ops``) checks its values
through a ``Checker``, so that an error reads ``FILE: augment.image[2].degrees: expected a number ...``.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields

from augforge.errors import AugforgeError

#: the largest image side an op may ask for (a 16k x 16k image is already 768 MB of RGB)
MAX_SIDE = 16384


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
            self.fail(where, f"expected a mapping of {', '.join(allowed)}, got {show_value(value)}")
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
            self.fail(where, f"expected {kind}, got {show_value(value)}")
        if not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            self.fail(where, f"expected {kind} in {bounds}, got {value}")
        return value

    def span(self, value, where: str, low: float | None = None, high: float | None = None,
             symmetric: bool = False) -> tuple[float, float]:
        """A number or ``[min, max]``; with ``symmetric`` a number x means ``[-x, x]``, else ``[x, x]``, and the
        bounds of a symmetric span hold its magnitude (``degrees: [-10, 10]`` is within 0..360)."""
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                self.fail(where, f"expected a number or [min, max], got {show_value(value)}")
            if symmetric:
                low = None if high is None else -high
            a = self.number(value[0], f"{where}[0]", low, high)
            b = self.number(value[1], f"{where}[1]", low, high)
            if a > b:
                self.fail(where, f"min {a} is above max {b}")
            return float(a), float(b)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number or [min, max], got {show_value(value)}")
        if symmetric:
            self.number(value, where, 0, high)
            return -float(value), float(value)
        self.number(value, where, low, high)
        return float(value), float(value)

    def size(self, value, where: str) -> tuple[int, int]:
        """An image size: ``N`` (square) or ``[height, width]``, positive whole numbers."""
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                self.fail(where, f"expected a size N or [height, width], got {show_value(value)}")
            return (int(self.number(value[0], f"{where}[0]", 1, MAX_SIDE, integer=True)),
                    int(self.number(value[1], f"{where}[1]", 1, MAX_SIDE, integer=True)))
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected a size N or [height, width], got {show_value(value)}")
        n = int(self.number(value, where, 1, MAX_SIDE, integer=True))
        return n, n

    def choice(self, value, where: str, options: tuple[str, ...]) -> str:
        """One of ``options``."""
        if value not in options:
            self.fail(where, f"expected one of {', '.join(options)}, got {show_value(value)}")
        return value

    def flag(self, value, where: str) -> bool:
        """true or false."""
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {show_value(value)}")
        return value

    def text(self, value, where: str) -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {show_value(value)}")
        return value

    def strings(self, value, where: str, options: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of strings (each one of ``options`` when given); a single string is a list of one."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            self.fail(where, f"expected a list of strings, got {show_value(value)}")
        for i, item in enumerate(items):
            if options is not None and item not in options:
                self.fail(f"{where}[{i}]", f"expected one of {', '.join(options)}, got {show_value(item)}")
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


def show_value(value) -> str:
    """``value`` as JSON (a repr for other objects), cut to 60 characters: how errors quote what they got."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def options_of(cls, options: dict, where: str):
    """``cls(**options)`` for an options dataclass (``LoaderOptions``, ``RunOptions``, ``AblationOptions``); a
    keyword that is none of its fields is refused in one line naming ``where`` and listing the options."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise AugforgeError(f"{where}: unknown option {unknown[0]!r}; options: {', '.join(sorted(names))}")
    return cls(**options)
