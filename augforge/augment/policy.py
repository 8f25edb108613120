"""Augmentation policies as values: the strings ``augment.policy``, ``train.stream`` and op lists accept.

Grammar (case-insensitive; parts after the family in any order, each once)::

    none                        no policy
    trivial                     TrivialAugment Wide, 31 magnitude bins (also trivial-wide, trivial-wide-b31)
    trivial-wide-bB             ... with B bins (2..100)
    rand-nN-mM                  RandAugment: N ops (1..14) per image at magnitude M (0..B-1, B = 31 bins)
    rand-nN-mM-mstdS            ... each op's magnitude drawn from N(M, S), clipped to 0..B-1 (timm's mstd)
    rand-nN-mM-bB               ... with B bins
    autoaug-imagenet            AutoAugment's ImageNet policy (also autoaug)

``str(policy)`` is the canonical form (``trivial``, ``rand-n2-m9``, ``rand-n2-m9-mstd0.5``,
``autoaug-imagenet``): parsing it again gives the same policy. Magnitude semantics are in docs/policies.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from augforge.errors import AugforgeError

#: the op names of the three policies in the image op table
POLICY_OPS = ("trivial_augment", "rand_augment", "auto_augment")
DEFAULT_BINS = 31
#: the fill (grey level) of the geometric ops of every policy, as in DALI's auto_aug
DEFAULT_FILL = 128
GRAMMAR = "none, trivial, trivial-wide-bB, rand-nN-mM[-mstdS][-bB], autoaug-imagenet"
_PART = re.compile(r"(mstd|n|m|b)(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Policy:
    """A parsed policy: its family (none, trivial, rand, autoaug) and parameters."""

    family: str
    bins: int = DEFAULT_BINS
    n: int = 0
    m: int = 0
    mstd: float = 0.0

    def __str__(self) -> str:
        if self.family == "trivial":
            return "trivial" if self.bins == DEFAULT_BINS else f"trivial-wide-b{self.bins}"
        if self.family == "rand":
            text = f"rand-n{self.n}-m{self.m}"
            if self.mstd:
                text += f"-mstd{self.mstd:g}"
            return text if self.bins == DEFAULT_BINS else f"{text}-b{self.bins}"
        return "autoaug-imagenet" if self.family == "autoaug" else "none"

    def op_entry(self) -> dict | None:
        """The image op mapping that runs this policy (``{op: rand_augment, n: 2, m: 9, ...}``); None for none."""
        if self.family == "trivial":
            return {"op": "trivial_augment", "bins": self.bins}
        if self.family == "rand":
            return {"op": "rand_augment", "n": self.n, "m": self.m, "bins": self.bins, "mstd": self.mstd}
        if self.family == "autoaug":
            return {"op": "auto_augment", "policy": "imagenet"}
        return None


def _parts(text: str, pieces: list[str], allowed: tuple) -> dict:
    found: dict = {}
    for piece in pieces:
        match = _PART.fullmatch(piece)
        if not match or match.group(1) not in allowed:
            raise AugforgeError(f"{text!r}: unexpected part {piece!r}; policies are {GRAMMAR}")
        key, value = match.groups()
        if key in found:
            raise AugforgeError(f"{text!r}: {key} is given twice")
        if key != "mstd" and "." in value:
            raise AugforgeError(f"{text!r}: {key} must be a whole number, got {value}")
        found[key] = float(value) if key == "mstd" else int(value)
    return found


def _bins(text: str, parts: dict) -> int:
    bins = parts.get("b", DEFAULT_BINS)
    if not 2 <= bins <= 100:
        raise AugforgeError(f"{text!r}: B (magnitude bins) runs 2..100, got {bins}")
    return bins


def parse_policy(text) -> Policy:
    """A policy string as a ``Policy``; one-line ``AugforgeError`` naming the string on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise AugforgeError(f"{text!r}: expected a policy string ({GRAMMAR})")
    clean = text.strip().lower()
    pieces = clean.split("-")
    family = pieces[0]
    if clean == "none":
        return Policy("none")
    if family == "trivial":
        rest = pieces[1:]
        if rest and rest[0] == "wide":
            rest = rest[1:]
        return Policy("trivial", bins=_bins(text, _parts(text, rest, ("b",))))
    if family in ("autoaug", "autoaugment"):
        if pieces[1:] not in ([], ["imagenet"]):
            raise AugforgeError(f"{text!r}: the AutoAugment policy augforge has is autoaug-imagenet")
        return Policy("autoaug")
    if family == "rand":
        parts = _parts(text, pieces[1:], ("n", "m", "mstd", "b"))
        for key in ("n", "m"):
            if key not in parts:
                raise AugforgeError(f"{text!r}: RandAugment needs {key.upper()}, e.g. rand-n2-m9")
        bins = _bins(text, parts)
        if not 1 <= parts["n"] <= 14:
            raise AugforgeError(f"{text!r}: N (ops per image) runs 1..14, got {parts['n']}")
        if not 0 <= parts["m"] <= bins - 1:
            raise AugforgeError(f"{text!r}: M runs 0..{bins - 1} with {bins} bins, got {parts['m']}")
        mstd = parts.get("mstd", 0.0)
        if not 0 <= mstd <= 100:
            raise AugforgeError(f"{text!r}: mstd runs 0..100, got {mstd:g}")
        return Policy("rand", bins=bins, n=parts["n"], m=parts["m"], mstd=mstd)
    raise AugforgeError(f"{text!r}: not a policy; policies are {GRAMMAR}")


def policy_of(op) -> str | None:
    """The canonical policy string of a policy op (an ``OpSpec`` of trivial_augment, rand_augment or
    auto_augment at the default fill and p = 1); None for any other op."""
    if op.name not in POLICY_OPS or op.p < 1.0 or int(op.params.get("fill", DEFAULT_FILL)) != DEFAULT_FILL:
        return None
    prm = op.params
    if op.name == "trivial_augment":
        return str(Policy("trivial", bins=int(prm["bins"])))
    if op.name == "rand_augment":
        return str(Policy("rand", bins=int(prm["bins"]), n=int(prm["n"]), m=int(prm["m"]),
                          mstd=float(prm.get("mstd", 0.0))))
    return str(Policy("autoaug"))
