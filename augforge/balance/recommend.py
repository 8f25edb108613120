"""Which balancing strategy to try first, and why."""

from __future__ import annotations

import math

from augforge.balance.stats import ClassStats
from augforge.datasets import schema as S

#: Below this majority/minority ratio, resampling is not worth its noise.
BALANCED_RATIO = 1.5
#: Above this ratio (binary targets), over-sample part way and trim the majority.
HEAVY_RATIO = 10.0
#: SMOTE's default k_neighbors is 5: a class needs at least k + 1 rows.
SMOTE_MIN_ROWS = 6


def recommend(stats: ClassStats, payload: str) -> dict:
    """A strategy string (or None) with the reason, from the class distribution and the payload kind.

    Every recommended strategy is one imbalanced-learn accepts for these counts.
    """
    ratio = stats.imbalance_ratio
    if stats.num_classes < 2 or math.isnan(ratio):
        return {"strategy": None, "reason": "fewer than two classes with rows: there is nothing to balance"}
    if math.isinf(ratio):
        empty = [n for n, c in zip(stats.class_names, stats.counts) if c == 0]
        return {"strategy": None,
                "reason": f"class {', '.join(empty)} has no rows in this split: no sampler can create a class, "
                          "collect data for it (or check the split)"}
    if ratio < BALANCED_RATIO:
        return {"strategy": None,
                "reason": f"the classes are within {BALANCED_RATIO}x of each other (ratio {ratio:.2f}); resampling "
                          "would add noise, keep stratified splits"}
    smallest = min(stats.counts)
    binary = stats.num_classes == 2
    heavy = binary and ratio > HEAVY_RATIO
    if payload != S.FEATURES:
        if heavy:
            return {"strategy": "over:0.5,under:0.8",
                    "reason": f"imbalance {ratio:.1f}:1 on a binary {payload} task: over-sample the minority to half "
                              "the majority with marked copies that augmentation varies (pixels and tokens cannot "
                              "be interpolated), then under-sample the majority to 1.25x the minority"}
        return {"strategy": "over",
                "reason": f"imbalance {ratio:.1f}:1 on {payload} data: over-sample every class to the majority with "
                          "marked copies that the augmentation stage varies; SMOTE needs a feature column "
                          "(embeddings) for images and text"}
    if smallest < SMOTE_MIN_ROWS:
        return {"strategy": "over",
                "reason": f"the smallest class has {smallest} rows, fewer than SMOTE's k_neighbors + 1 = "
                          f"{SMOTE_MIN_ROWS}: random over-sampling until it has more data"}
    if heavy:
        return {"strategy": "smote:0.5,under:0.8",
                "reason": f"imbalance {ratio:.1f}:1: SMOTE the minority to half the majority, then under-sample the "
                          "majority to 1.25x the minority, instead of synthesising most of the training set"}
    return {"strategy": "smote",
            "reason": f"imbalance {ratio:.1f}:1 with at least {smallest} rows per class: SMOTE every class up to the "
                      "majority"}
