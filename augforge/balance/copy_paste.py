"""Copy-paste as a balance step (``balance.strategy: copy_paste:N``): rare instances pasted onto other training
images until every class that has instances holds at least ``N`` of them (or the step gives up).

The plan is made from the train split's targets alone (``augforge.augment.copy_paste.plan_paste``), seeded, so
``report --strategy`` shows exactly the instances the build writes. Each new synthetic row is a copy of a
recipient with up to ``PASTES_PER_IMAGE`` instances of one class pasted, each planned on what the previous left
(their origins name the donor row and instance). Rarest classes first; a donor is drawn among the class's
non-crowd instances that have a mask or polygons; a recipient among the train images with the fewest instances
(a new row copies the recipient's instances too: the emptiest images, and several pastes a row, add the least to
the other classes); a donor's own image is never its recipient. Only train rows are donors or recipients:
val and test never feed a paste. A class that cannot reach ``N`` within ``MAX_PASTES_PER_INSTANCE`` tries per
missing instance (pastes given up, instances its own pastes cover) is left short, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from augforge.augment.copy_paste import Paste, PastePolicy, pasteable, plan_paste
from augforge.balance.resample import Resampled
from augforge.balance.strategy import instance_step
from augforge.datasets.targets import Instances
from augforge.errors import AugforgeError

NAME = "copy_paste"
#: tries per missing instance before a class is left short
MAX_PASTES_PER_INSTANCE = 4
#: instances of one class pasted onto one new row (fewer copies of the recipients' own instances per paste)
PASTES_PER_IMAGE = 3


def parse_copy_paste(strategy: str | None) -> int | None:
    """The target count of a ``copy_paste:N`` strategy, or None for another strategy."""
    value = instance_step(strategy, NAME, "copy_paste:N (N instances per class at least)")
    if value is None:
        return None
    try:
        target = int(value)
    except ValueError:
        target = 0
    if target < 1:
        raise AugforgeError(f"strategy {strategy!r}: copy_paste needs N, the instances every class should reach "
                            "(copy_paste:200)")
    return target


@dataclass
class PasteJob:
    """One planned synthetic row: the recipient (an index into the train rows) and its pastes in order, each
    (donor row, donor instance, the paste planned on the instances the previous pastes left)."""

    recipient: int
    pastes: list[tuple[int, int, Paste]]

    @property
    def instances(self) -> Instances:
        """The row's instances after its last paste."""
        return self.pastes[-1][2].instances


@dataclass
class CopyPastePlan:
    """The jobs, in the order their rows are written, and what the plan could not do."""

    jobs: list[PasteJob] = field(default_factory=list)
    given_up: int = 0  # pastes whose every placement the policy refused
    dropped: int = 0  # recipient instances the pastes covered beyond the policy
    short: dict = field(default_factory=dict)  # class -> instances it still lacks


def _counts(rows: list[Instances], classes: int) -> np.ndarray:
    out = np.zeros(classes, dtype=np.int64)
    for inst in rows:
        np.add.at(out, inst.classes[~inst.crowd], 1)
    return out


def plan_copy_paste(rows: list[Instances], sizes: list[tuple[int, int]], ids: list[str], class_names: list[str],
                    target: int, seed: int, policy: PastePolicy = PastePolicy()) -> CopyPastePlan:
    """The pastes that bring every class with instances to ``target`` (see the module docstring)."""
    k = len(class_names)
    counts = _counts(rows, k)
    donors = {c: [(r, i) for r, inst in enumerate(rows) for i in range(len(inst))
                  if inst.classes[i] == c and pasteable(inst, i)] for c in range(k)}
    fewest = np.array([int((~inst.crowd).sum()) for inst in rows])
    recipients = np.flatnonzero(fewest == fewest.min())
    rng = np.random.default_rng([seed, 3_003])
    plan = CopyPastePlan()
    for c in np.argsort(counts, kind="stable"):
        missing = target - int(counts[c])
        if counts[c] == 0 or missing <= 0:
            continue
        if not donors[c]:
            plan.short[class_names[c]] = missing
            continue
        tries = MAX_PASTES_PER_INSTANCE * missing
        while counts[c] < target and tries > 0:
            q = int(recipients[int(rng.integers(len(recipients)))])
            current, pastes = rows[q], []
            for _ in range(PASTES_PER_IMAGE):  # up to this many of the class's instances onto one recipient
                if counts[c] + sum(p[2].instances.classes[-1] == c for p in pastes) >= target or tries <= 0:
                    break
                tries -= 1
                r, i = donors[c][int(rng.integers(len(donors[c])))]
                if r == q:
                    continue
                paste = plan_paste(rng, current, sizes[q], rows[r], i, sizes[r], ids[r], policy)
                if paste.instances is None:
                    plan.given_up += 1
                    continue
                plan.dropped += paste.dropped
                pastes.append((r, i, paste))
                current = paste.instances
            if pastes:
                counts += _counts([current], k)
                plan.jobs.append(PasteJob(q, pastes))
        if counts[c] < target:
            plan.short[class_names[c]] = int(target - counts[c])
    return plan


def paste_resample(y: np.ndarray, plan: CopyPastePlan, target: int) -> Resampled:
    """The train rows after the step: every row kept, then one synthetic row per job (its origin the recipient,
    ``aug`` ``copy_paste:N``)."""
    recipients = np.array([job.recipient for job in plan.jobs], dtype=np.int64)
    origin = np.concatenate([np.arange(len(y), dtype=np.int64), recipients])
    synthetic = np.r_[np.zeros(len(y), bool), np.ones(len(recipients), bool)]
    aug = np.array([None] * len(y) + [f"{NAME}:{target}"] * len(recipients), dtype=object)
    return Resampled(None, np.asarray(y)[origin], origin, synthetic, aug)


def paste_counts(rows: list[Instances], plan: CopyPastePlan, class_names: list[str], target: int) -> dict:
    """Instances per class before and after the step, and what it could not do (``report --strategy``)."""
    before = _counts(rows, len(class_names))
    after = before + _counts([job.instances for job in plan.jobs], len(class_names))
    return {"strategy": f"{NAME}:{target}", "images_before": len(rows), "images_after": len(rows) + len(plan.jobs),
            "per_class": {name: {"before": int(before[c]), "after": int(after[c])}
                          for c, name in enumerate(class_names)},
            "pastes": sum(len(job.pastes) for job in plan.jobs), "pastes_given_up": plan.given_up,
            "instances_dropped_by_occlusion": plan.dropped,
            "short": plan.short}
