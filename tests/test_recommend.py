"""Recommendations: sensible per case, and always a strategy imbalanced-learn accepts."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.balance.recommend import recommend
from augforge.balance.stats import ClassStats
from augforge.balance.strategy import parse_strategy, project


def _stats(counts):
    return ClassStats(tuple(f"c{i}" for i in range(len(counts))), tuple(counts))


def test_cases():
    assert recommend(_stats([100, 90]), "features")["strategy"] is None
    assert recommend(_stats([100, 0]), "features")["strategy"] is None
    assert "c1 has no rows" in recommend(_stats([100, 0]), "features")["reason"]
    assert recommend(_stats([100, 4]), "features")["strategy"] == "over"
    assert recommend(_stats([1000, 50]), "features")["strategy"] == "smote:0.5,under:0.8"
    assert recommend(_stats([300, 100, 40]), "features")["strategy"] == "smote"
    assert recommend(_stats([300, 100, 40]), "image")["strategy"] == "over"
    assert recommend(_stats([1000, 50]), "text")["strategy"] == "over:0.5,under:0.8"


@settings(max_examples=150, deadline=None)
@given(counts=st.lists(st.integers(0, 5000), min_size=1, max_size=12),
       payload=st.sampled_from(["image", "text", "features"]))
def test_recommended_strategy_is_always_accepted_and_improves_balance(counts, payload):
    stats = _stats(counts)
    rec = recommend(stats, payload)
    assert rec["reason"]
    if rec["strategy"] is None:
        return
    after = project(parse_strategy(rec["strategy"]), counts, list(stats.class_names))
    assert ClassStats(stats.class_names, tuple(after.counts)).imbalance_ratio < stats.imbalance_ratio
    assert min(after.counts) >= min(counts) and np.all(np.array(after.counts) > 0)


def test_images_and_text_are_told_to_try_the_loss_with_an_ablation_that_runs():
    """The deep-training advice names an ablation whose arm is a valid recipe on the shipped digits example
    (balance step removed, so the logit-adjusted loss is not refused for uniform priors)."""
    import re

    from augforge.experiments.arms import build_arms
    from augforge.recipe import load_recipe

    image = recommend(_stats([300, 100, 40]), "image")
    assert "train.posthoc_tau: auto" in image["deep_training"] and "train.loss: logit_adjusted" in image["deep_training"]
    assert "deep_training" in recommend(_stats([1000, 50]), "text")
    assert "deep_training" not in recommend(_stats([300, 100, 40]), "features")
    assert "deep_training" not in recommend(_stats([100, 90]), "image")  # balanced: nothing to correct
    arms = re.search(r"--arms ((?:la=\S+ ?)+)", image["deep_training"]).group(1).replace("`", "").split()
    recipe = load_recipe("examples/digits.yaml")
    la = [a for a in build_arms(recipe, arms) if a.name == "la"][0]
    changed = recipe.with_changes(la.changes)
    assert changed.strategy is None and changed.train.loss.name == "logit_adjusted"
