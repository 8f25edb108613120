"""ML-ROS (Charte, Rivera, del Jesus and Herrera, Neurocomputing 2015): random over-sampling for multilabel sets,
by label.

Each label's imbalance ratio is ``IRLbl(l) = max_k n(k) / n(l)`` (``n``: images holding the label) and ``MeanIR``
their mean over the labels present. The labels above ``MeanIR`` are the minority bag. Until ``P`` times the
images have been added, each bag label in turn gets one clone of a random image holding it (every label of that
image counted again), and leaves the bag once its ``IRLbl`` is at most ``MeanIR`` (computed once, before
cloning, as the paper's algorithm does). ``balance.strategy: ml_ros[:P]`` (P default 0.25) writes the clones,
marked synthetic; ``report --strategy`` projects the images per label it writes.
"""

from __future__ import annotations

import numpy as np

from augforge.balance.resample import Resampled
from augforge.balance.strategy import instance_step, step_number
from augforge.errors import AugforgeError

NAME = "ml_ros"
DEFAULT_SHARE = 0.25


def parse_ml_ros(strategy: str | None) -> float | None:
    """The share ``P`` of an ``ml_ros[:P]`` strategy, or None for another strategy."""
    value = instance_step(strategy, NAME, "ml_ros[:P] (P: the share of images to add, in (0, 10])")
    return step_number(strategy, value, DEFAULT_SHARE, 10.0, "ml_ros's P is the share of images to add")


def label_counts(label_sets: list[list[int]], labels: int) -> np.ndarray:
    """Images holding each label."""
    counts = np.zeros(labels, dtype=np.int64)
    for found in label_sets:
        counts[sorted(set(found))] += 1
    return counts


def imbalance_ratios(counts: np.ndarray) -> np.ndarray:
    """``IRLbl`` per label (inf for a label no image holds)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.where(counts > 0, counts.max() / np.where(counts > 0, counts, 1), np.inf)


def mean_ir(counts: np.ndarray) -> float:
    """``MeanIR``: the mean ``IRLbl`` over the labels present."""
    ratios = imbalance_ratios(counts)
    return float(ratios[np.isfinite(ratios)].mean())


def ml_ros_clones(label_sets: list[list[int]], labels: int, share: float, seed: int) -> list[int]:
    """The images cloned, in order (indices into ``label_sets``; see the module docstring)."""
    counts = label_counts(label_sets, labels)
    if not counts.any():
        raise AugforgeError("ml_ros: no image has an image-level label")
    target = int(round(share * len(label_sets)))
    mean = mean_ir(counts)
    ratios = imbalance_ratios(counts)
    bag = [label for label in range(labels) if np.isfinite(ratios[label]) and ratios[label] > mean]
    holders = {label: [i for i, found in enumerate(label_sets) if label in found] for label in bag}
    rng = np.random.default_rng([seed, 5_005])
    clones: list[int] = []
    while len(clones) < target and bag:
        for label in list(bag):
            i = holders[label][int(rng.integers(len(holders[label])))]
            clones.append(i)
            counts[sorted(set(label_sets[i]))] += 1
            if counts.max() / counts[label] <= mean:
                bag.remove(label)
            if len(clones) == target:
                break
    return clones


def ml_ros_resample(label_sets: list[list[int]], y: np.ndarray, labels: int, share: float, seed: int) -> Resampled:
    """The train rows after ML-ROS: every row, then the clones (marked synthetic, ``aug`` ``ml_ros:P``)."""
    clones = np.asarray(ml_ros_clones(label_sets, labels, share, seed), dtype=np.int64)
    origin = np.concatenate([np.arange(len(label_sets), dtype=np.int64), clones])
    synthetic = np.r_[np.zeros(len(label_sets), bool), np.ones(len(clones), bool)]
    aug = np.array([None] * len(label_sets) + [f"{NAME}:{share:g}"] * len(clones), dtype=object)
    return Resampled(None, np.asarray(y)[origin], origin, synthetic, aug)


def ml_ros_counts(label_sets: list[list[int]], origin: np.ndarray, class_names: list[str], share: float) -> dict:
    """Images per label before and after, and ``MeanIR`` before and after (``report --strategy``)."""
    before = label_counts(label_sets, len(class_names))
    after = label_counts([label_sets[i] for i in origin], len(class_names))
    return {"strategy": f"{NAME}:{share:g}", "images_before": len(label_sets), "images_after": int(len(origin)),
            "per_class": {name: {"before": int(before[c]), "after": int(after[c])}
                          for c, name in enumerate(class_names)},
            "mean_ir_before": round(mean_ir(before), 4), "mean_ir_after": round(mean_ir(after), 4)}
