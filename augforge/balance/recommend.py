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
#: ... and in each training fold of a 5-fold cross-validation (4/5 of its rows): ceil(6 * 5 / 4)
SMOTE_MIN_ROWS_CV = 8
#: what to try before any resampling (imbalanced-learn's maintainers' advice), in every recommendation
ALTERNATIVE = ("first try class weights (class_weight='balanced' in scikit-learn, train.class_weights: balanced in "
               "augforge) or a tuned decision threshold: they change no rows; `augforge report --evaluate` "
               "measures them against the strategy on these rows")


#: what to try when a network trains on long-tailed images or text: the loss and the classifier, as measured by
#: benchmarks/long_tail.py (docs/training.md, "Long-tail learning": digits at 50:1, 5 paired seeds, equal compute)
DEEP_TRAINING = ("for a network trained on these rows, also try post-hoc logit adjustment (train.posthoc_tau: auto: "
                 "no rows added, tau picked on val) or train.loss: logit_adjusted: at equal compute over 5 paired "
                 "seeds, on long-tailed WordNet glosses (10:1) they gained +14 and +15 balanced-accuracy points "
                 "over plain cross-entropy where over-sampling with EDA copies gained +0.2, and on the digits "
                 "(50:1) post-hoc adjustment gained +0.9 where over-sampling with augmented copies lost 0.4 "
                 "(docs/training.md); `augforge ablate RECIPE --equal-compute --arms la=balance.strategy:null "
                 "la=train.loss:logit_adjusted` measures them on your data")


def recommend(stats: ClassStats, payload: str) -> dict:
    """A strategy string (or None) with the reason and the alternative, from the class distribution and the
    payload kind; for images and text, what to try in the loss when a network trains on them
    (``deep_training``). Every recommended strategy is one imbalanced-learn accepts for these counts, also
    within the training folds of a 5-fold cross-validation."""
    out = _recommend(stats, payload)
    if out["strategy"]:
        out["alternative"] = ALTERNATIVE
        if payload != S.FEATURES:
            out["deep_training"] = DEEP_TRAINING
    return out


def _recommend(stats: ClassStats, payload: str) -> dict:
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
    if smallest < SMOTE_MIN_ROWS_CV:
        return {"strategy": "over",
                "reason": f"the smallest class has {smallest} rows: SMOTE needs k_neighbors + 1 = {SMOTE_MIN_ROWS} "
                          f"in every training fold ({SMOTE_MIN_ROWS_CV} rows for 5 folds), so random over-sampling "
                          "until it has more data"}
    if heavy:
        return {"strategy": "smote:0.5,under:0.8",
                "reason": f"imbalance {ratio:.1f}:1: SMOTE the minority to half the majority, then under-sample the "
                          "majority to 1.25x the minority, instead of synthesising most of the training set"}
    return {"strategy": "smote",
            "reason": f"imbalance {ratio:.1f}:1 with at least {smallest} rows per class: SMOTE every class up to the "
                      "majority"}
