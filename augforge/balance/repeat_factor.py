"""Repeat-factor sampling (Gupta, Dollár and Girshick, LVIS, CVPR 2019): the detection analogue of over-sampling,
counted in instances rather than rows.

For each class c, ``f(c)`` is the share of training images holding at least one (non-crowd) instance of c, and
``r(c) = max(1, sqrt(t / f(c)))`` its repeat factor, ``t`` the threshold (LVIS: 0.001): a class in fewer than a
share ``t`` of the images is repeated. An image's factor is the largest of its classes' (1 for an image without
instances). A fractional factor is rounded stochastically, ``floor(r) + (u < r - floor(r))``, as detectron2's
``RepeatFactorTrainingSampler`` does each epoch: in expectation an image appears ``r`` times.

Offline (``balance.strategy: repeat_factor[:t]``) the rounding is drawn once from the seed and the copies are
written, marked synthetic; in the stream (``open_dense_loader(..., sampler="repeat_factor")``) it is drawn again
each epoch from (seed, epoch). ``project_instances`` gives the instance counts per class a draw leads to: what
``report --strategy`` shows and what the build writes, for the same seed.
"""

from __future__ import annotations

import math

import numpy as np

from augforge.balance.resample import Resampled
from augforge.balance.strategy import instance_step, step_number
from augforge.datasets.targets import Instances
from augforge.errors import AugforgeError

NAME = "repeat_factor"
#: LVIS's threshold
DEFAULT_THRESHOLD = 0.001


def parse_repeat_factor(strategy: str | None) -> float | None:
    """The threshold of a ``repeat_factor[:t]`` strategy, or None for another strategy; a bad threshold is one
    line."""
    value = instance_step(strategy, NAME, "repeat_factor[:t] (t in (0, 1])", key="t")
    return step_number(strategy, value, DEFAULT_THRESHOLD, 1.0, "the threshold t must be a share of the images")


def image_classes(rows: list[Instances]) -> list[set[int]]:
    """Per image, the classes of its non-crowd instances."""
    return [set(inst.classes[~inst.crowd].tolist()) for inst in rows]


def repeat_factors(rows: list[Instances], classes: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(each image's repeat factor, each class's ``r(c)``) over the images ``rows`` (see the module docstring);
    a class in no image has factor 1."""
    present = image_classes(rows)
    if not any(present):
        raise AugforgeError("repeat_factor: no image has an instance to count")
    frequency = np.zeros(classes)
    for found in present:
        frequency[list(found)] += 1
    frequency /= len(rows)
    per_class = np.where(frequency > 0, np.maximum(1.0, np.sqrt(threshold / np.where(frequency > 0, frequency, 1))),
                         1.0)
    per_image = np.array([max((per_class[c] for c in found), default=1.0) for found in present])
    return per_image, per_class


def repeat_counts(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How many times each image appears: ``floor(r) + (u < r - floor(r))``, at least once."""
    whole = np.floor(factors)
    return (whole + (rng.random(len(factors)) < factors - whole)).astype(np.int64)


def repeat_resample(rows: list[Instances], y: np.ndarray, classes: int, threshold: float, seed: int) -> Resampled:
    """The train rows after offline repeat-factor sampling: each image kept, then its copies (``counts - 1``),
    marked synthetic with ``aug`` ``repeat_factor:t``, the rounding drawn from ``seed``."""
    factors, _ = repeat_factors(rows, classes, threshold)
    counts = repeat_counts(factors, np.random.default_rng([seed, 1_001]))
    origin = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    first = np.r_[True, origin[1:] != origin[:-1]]
    aug = np.where(first, None, f"{NAME}:{threshold:g}").astype(object)
    return Resampled(None, np.asarray(y)[origin], origin, ~first, aug)


def project_instances(rows: list[Instances], counts: np.ndarray, classes: int) -> np.ndarray:
    """Instances per class (crowd regions left out) when image i appears ``counts[i]`` times."""
    out = np.zeros(classes, dtype=np.int64)
    for inst, n in zip(rows, counts):
        np.add.at(out, inst.classes[~inst.crowd], int(n))
    return out


def expected_length(factors: np.ndarray) -> int:
    """Images per epoch in expectation (the sum of the factors), rounded up."""
    return int(math.ceil(float(np.sum(factors)) - 1e-9))


def instance_counts(rows: list[Instances], origin: np.ndarray, classes: list[str], threshold: float) -> dict:
    """What a repeat-factor plan does, per class: its factor ``r(c)`` and its instances before and after (image
    i appearing as often as ``origin`` names it), for manifests and ``report --strategy``."""
    _, per_class = repeat_factors(rows, len(classes), threshold)
    before = project_instances(rows, np.ones(len(rows), dtype=np.int64), len(classes))
    after = project_instances(rows, np.bincount(origin, minlength=len(rows)), len(classes))
    return {"strategy": f"{NAME}:{threshold:g}", "images_before": len(rows), "images_after": int(len(origin)),
            "per_class": {name: {"repeat_factor": round(float(per_class[c]), 4), "before": int(before[c]),
                                 "after": int(after[c])} for c, name in enumerate(classes)}}
