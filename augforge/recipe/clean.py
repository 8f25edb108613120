"""The recipe's ``clean:`` section beyond exact duplicates: what the build does with what ``augforge audit``
finds (``augforge.pipelines.clean_plan`` applies it).

- ``near_duplicates: keep | drop``: drop all but the first row of each near-duplicate cluster within a split;
- ``leakage: keep | warn | drop | error``: a train row whose near-twin is in val or test: dropped from train,
  listed as a warning, or refused;
- ``label_issues: keep | flag | drop``: train rows cleanlab flags: listed, or dropped;
- ``outliers: keep | drop``: the least typical 1% of the train rows, dropped;
- ``radius`` (images: the hash candidates), ``verify`` (images: the pixel similarity a candidate pair needs,
  ``augforge.audit.verify``), ``threshold`` (texts), ``epsilon`` (features): what counts as a near-duplicate;
- ``max_drop`` (a share of the train split, default 0.05) and ``max_drop_class`` (a share of any one class's
  train rows, default 0.2): the cleaning guard. A build whose cleaning steps would drop more stops in one line
  naming the steps, the counts and the key to raise, and writes nothing. They do not change the rows a build
  writes, so they are not part of its fingerprint.

Val and test rows are never dropped by cleaning: the held-out rows stay the rows the model is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

from augforge.audit.hashing import MAX_RADIUS, RADIUS
from augforge.audit.verify import THRESHOLD

NEAR_DUPLICATES = ("keep", "drop")
LEAKAGE = ("keep", "warn", "drop", "error")
LABEL_ISSUES = ("keep", "flag", "drop")
OUTLIERS = ("keep", "drop")
CLEAN_KEYS = ("drop_duplicates", "near_duplicates", "leakage", "label_issues", "outliers", "radius", "threshold",
              "epsilon", "verify", "max_drop", "max_drop_class")
#: the guard's keys: how much cleaning may drop (they never change the rows a build writes)
GUARD_KEYS = ("max_drop", "max_drop_class")


@dataclass(frozen=True)
class CleanSpec:
    """``clean:`` beyond ``drop_duplicates``."""

    near_duplicates: str = "keep"
    leakage: str = "keep"
    label_issues: str = "keep"
    outliers: str = "keep"
    radius: int = RADIUS
    threshold: float = 0.8
    epsilon: float = 0.0
    verify: float = THRESHOLD
    max_drop: float = 0.05
    max_drop_class: float = 0.2

    @property
    def active(self) -> bool:
        """Whether the build audits its rows at all."""
        return (self.near_duplicates, self.leakage, self.label_issues, self.outliers) != ("keep",) * 4

    @property
    def needs_model(self) -> bool:
        """Whether the build fits the out-of-fold model (label issues, outliers)."""
        return self.label_issues != "keep" or self.outliers != "keep"


def parse_clean(c, raw: dict) -> CleanSpec:
    """The ``clean:`` mapping's audit keys, checked (``drop_duplicates`` is parsed with the recipe)."""
    return CleanSpec(
        near_duplicates=c.choice(raw.get("near_duplicates", "keep"), "clean.near_duplicates", NEAR_DUPLICATES),
        leakage=c.choice(raw.get("leakage", "keep"), "clean.leakage", LEAKAGE),
        label_issues=c.choice(raw.get("label_issues", "keep"), "clean.label_issues", LABEL_ISSUES),
        outliers=c.choice(raw.get("outliers", "keep"), "clean.outliers", OUTLIERS),
        radius=int(c.number(raw.get("radius", RADIUS), "clean.radius", 0, MAX_RADIUS, integer=True)),
        threshold=float(c.number(raw.get("threshold", 0.8), "clean.threshold", 0.01, 1.0)),
        epsilon=float(c.number(raw.get("epsilon", 0.0), "clean.epsilon", 0.0, 1e12)),
        verify=float(c.number(raw.get("verify", THRESHOLD), "clean.verify", 0.01, 1.0)),
        max_drop=float(c.number(raw.get("max_drop", 0.05), "clean.max_drop", 0.0, 1.0)),
        max_drop_class=float(c.number(raw.get("max_drop_class", 0.2), "clean.max_drop_class", 0.0, 1.0)),
    )
