"""Long-tail learning: every loss against its hand-written formula and its known identities, the deferred
schedules, the priors a run uses (and the combinations refused), post-hoc adjustment, the many / medium /
few-shot split, and evaluate == summary for every option, trained from the CLI on the long-tailed digits."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from augforge.cli import main
from augforge.errors import AugforgeError
from augforge.pipelines.build import build
from augforge.pipelines.stream import open_loader
from augforge.recipe import parse_recipe
from augforge.recipe.long_tail import LossSpec, ShotSpec
from augforge.models import create
from augforge.train.checkpoint import load_checkpoint
from augforge.train.decouple import TAU_NORM_GRID, classifier_of, pick_tau_norm, retrain_classifier, tau_normalized
from augforge.train.long_tail import TAU_GRID, make_criterion, pick_tau, prior_counts, shot_groups, shot_metrics
from augforge.train.loop import TrainConfig
from augforge.train.losses import Criterion, cross_entropy_sum, effective_number_weights, ldam_margins, log_priors
from augforge.train.restore import evaluate_checkpoint

COUNTS = [60, 20, 5]
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.5, 0.4], [1.0, -2.0, 3.0]])
TARGETS = torch.tensor([0, 2, 1, 2])


def _softmax_ce(z: list[float], y: int) -> float:
    """-log softmax(z)_y, written out."""
    return -(z[y] - math.log(sum(math.exp(v) for v in z)))


def test_logit_adjusted_loss_is_cross_entropy_of_the_shifted_logits():
    tau = 1.5
    prior = [n / sum(COUNTS) for n in COUNTS]
    hand = sum(_softmax_ce([z + tau * math.log(p) for z, p in zip(row, prior)], int(y))
               for row, y in zip(LOGITS.tolist(), TARGETS))
    ours = Criterion(LossSpec("logit_adjusted", tau=tau), counts=COUNTS).sum(LOGITS, TARGETS)
    assert float(ours) == pytest.approx(hand, rel=1e-5)


def test_balanced_softmax_is_its_formula_and_logit_adjustment_at_tau_1():
    prior = [n / sum(COUNTS) for n in COUNTS]
    hand = 0.0
    for row, y in zip(LOGITS.tolist(), TARGETS.tolist()):  # Ren et al.: pi_y e^z_y / sum_j pi_j e^z_j
        hand -= math.log(prior[y] * math.exp(row[y]) / sum(p * math.exp(z) for p, z in zip(prior, row)))
    balanced = Criterion(LossSpec("balanced_softmax"), counts=COUNTS).sum(LOGITS, TARGETS)
    adjusted = Criterion(LossSpec("logit_adjusted", tau=1.0), counts=COUNTS).sum(LOGITS, TARGETS)
    assert float(balanced) == pytest.approx(hand, rel=1e-5)
    assert float(balanced) == pytest.approx(float(adjusted), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=12, max_size=12), st.lists(st.integers(0, 2), min_size=4, max_size=4),
       st.lists(st.integers(1, 1000), min_size=3, max_size=3))
def test_logit_adjustment_at_tau_0_and_focal_at_gamma_0_are_cross_entropy(values, labels, counts):
    logits, y = torch.tensor(values).reshape(4, 3), torch.tensor(labels)
    plain = float(cross_entropy_sum(logits, y))
    assert float(Criterion(LossSpec("logit_adjusted", tau=0.0), counts=counts).sum(logits, y)) == \
        pytest.approx(plain, rel=1e-5, abs=1e-5)
    assert float(Criterion(LossSpec("focal", gamma=0.0)).sum(logits, y)) == pytest.approx(plain, rel=1e-5, abs=1e-5)


def test_focal_loss_is_its_formula_and_down_weights_easy_rows():
    gamma = 2.0
    hand = 0.0
    for row, y in zip(LOGITS.tolist(), TARGETS.tolist()):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        hand -= (1 - p) ** gamma * math.log(p)
    focal = Criterion(LossSpec("focal", gamma=gamma))
    assert float(focal.sum(LOGITS, TARGETS)) == pytest.approx(hand, rel=1e-5)
    easy, hard = torch.tensor([[6.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.5, 0.0]])
    zero = torch.tensor([0])
    ratio_easy = float(focal.sum(easy, zero)) / float(cross_entropy_sum(easy, zero))
    ratio_hard = float(focal.sum(hard, zero)) / float(cross_entropy_sum(hard, zero))
    assert ratio_easy < 0.01 < 0.3 < ratio_hard  # (1 - p)^2: an easy row's loss almost vanishes


def test_ldam_subtracts_the_n_to_the_minus_quarter_margin_from_the_true_logit_and_scales():
    max_margin, scale = 0.5, 4.0
    raw = [n ** -0.25 for n in COUNTS]
    margins = [max_margin * r / max(raw) for r in raw]
    assert ldam_margins(COUNTS, max_margin).tolist() == pytest.approx(margins, rel=1e-6)
    assert margins[2] == pytest.approx(max_margin) and margins[0] < margins[1] < margins[2]
    hand = 0.0
    for row, y in zip(LOGITS.tolist(), TARGETS.tolist()):
        shifted = [scale * (z - (margins[y] if j == y else 0.0)) for j, z in enumerate(row)]
        hand += _softmax_ce(shifted, y)
    ours = Criterion(LossSpec("ldam", max_margin=max_margin, scale=scale), counts=COUNTS).sum(LOGITS, TARGETS)
    assert float(ours) == pytest.approx(hand, rel=1e-5)


def test_soft_targets_mix_the_losses_of_their_classes():
    """Mixup's soft targets: a 0.7/0.3 mix is 0.7 of one loss plus 0.3 of the other (the losses are linear in
    the target), for every loss that shifts logits by class only."""
    for spec in (LossSpec("logit_adjusted", tau=1.0), LossSpec("balanced_softmax")):
        loss = Criterion(spec, counts=COUNTS)
        row = LOGITS[:1]
        soft = torch.tensor([[0.7, 0.0, 0.3]])
        mixed = float(loss.sum(row, soft))
        parts = 0.7 * float(loss.sum(row, torch.tensor([0]))) + 0.3 * float(loss.sum(row, torch.tensor([2])))
        assert mixed == pytest.approx(parts, rel=1e-5)


def test_drw_switches_to_effective_number_weights_at_its_epoch():
    beta = 0.999
    raw = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    expected = [w * 3 / sum(raw) for w in raw]
    weights = effective_number_weights(COUNTS, beta)
    assert weights.tolist() == pytest.approx(expected, rel=1e-5) and float(weights.sum()) == pytest.approx(3.0)
    config = parse_recipe({"source": {"path": "digits"}, "train": {
        "epochs": 4, "loss": "ldam", "rebalance": {"mode": "drw", "start": 2, "beta": beta}}}, "r.yaml").train
    criterion = make_criterion(config, COUNTS)
    assert criterion.weights_at(0) is None and criterion.weights_at(1) is None
    assert criterion.weights_at(2).tolist() == pytest.approx(expected, rel=1e-5)
    unweighted = float(criterion.sum(LOGITS, TARGETS, epoch=1))
    weighted = float(criterion.sum(LOGITS, TARGETS, epoch=3))
    by_hand = float(Criterion(LossSpec("ldam"), counts=COUNTS, weights=torch.tensor(expected)).sum(LOGITS, TARGETS))
    assert weighted == pytest.approx(by_hand, rel=1e-6) and weighted != pytest.approx(unweighted)


def test_the_log_priors_count_an_empty_class_as_one_row():
    assert log_priors([3, 0, 1]).tolist() == pytest.approx([math.log(3 / 5), math.log(1 / 5), math.log(1 / 5)])


# -- the recipe: bad parameters and double corrections, one line naming the key --------------------------------


@pytest.mark.parametrize("train, message", [
    ({"loss": {"name": "logit_adjusted", "tau": -1}}, "train.loss.tau: expected a number in [0.0, 10.0], got -1"),
    ({"loss": {"name": "focal", "gamma": -0.5}}, "train.loss.gamma: expected a number in [0.0, 10.0], got -0.5"),
    ({"loss": {"name": "focal", "tau": 1}}, "train.loss.tau: loss focal has no parameter tau"),
    ({"loss": "hinge"}, "train.loss"),
    ({"loss": {"name": "ldam", "scale": 0}}, "train.loss.scale: expected a number in"),
    ({"epochs": 5, "rebalance": {"mode": "drw", "start": 5}}, "train.rebalance.start: epoch 5 is not below train.epochs (5)"),
    ({"rebalance": {"start": 1}}, "train.rebalance.mode: missing"),
    ({"rebalance": {"mode": "drs", "beta": 0.9}}, "train.rebalance.beta: only drw takes beta"),
    ({"loss": "logit_adjusted", "class_weights": "balanced"}, "train.loss: logit_adjusted already corrects"),
    ({"loss": "balanced_softmax", "sampler": "balanced"}, "train.loss: balanced_softmax already corrects"),
    ({"loss": "logit_adjusted", "rebalance": {"mode": "drw", "start": 1}}, "train.loss: logit_adjusted already"),
    ({"posthoc_tau": "auto", "loss": "ldam"}, "train.posthoc_tau: post-hoc adjustment corrects a plainly trained"),
    ({"posthoc_tau": 1.0, "sampler": "balanced"}, "train.posthoc_tau: post-hoc adjustment"),
    ({"posthoc_tau": -0.1}, "train.posthoc_tau: expected a number in [0.0, 10.0]"),
    ({"sampler": "balanced", "rebalance": {"mode": "drs", "start": 1}}, "train.rebalance: train.sampler is balanced"),
    ({"binary": True, "loss": "focal"}, "train.loss: a binary head trains with binary cross-entropy"),
    ({"shots": {"many": 10, "few": 20}}, "train.shots: few (20) is above many (10)"),
    ({"priors": "test"}, "train.priors"),
    ({"decouple": {"mode": "crt", "tau": 1}}, "train.decouple.tau: only tau_norm takes tau"),
    ({"decouple": {"mode": "tau_norm", "tau": -1}}, "train.decouple.tau: expected a number in [0.0, 10.0], got -1"),
    ({"decouple": {"mode": "crt", "epochs": 0}}, "train.decouple.epochs: expected a whole number in [1, 100000]"),
    ({"decouple": {"epochs": 2}}, "train.decouple.mode: missing"),
    ({"decouple": {"mode": "crt"}, "loss": "logit_adjusted"}, "train.decouple: crt re-balances the classifier"),
    ({"decouple": {"mode": "tau_norm"}, "posthoc_tau": 1}, "train.decouple: tau_norm re-balances"),
])
def test_bad_long_tail_options_are_refused_in_one_line_naming_the_key(train, message):
    with pytest.raises(AugforgeError) as caught:
        parse_recipe({"source": {"path": "digits"}, "train": {"epochs": 10, **train}}, "r.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _manifest(train, before=None, strategy="none"):
    names = [str(i) for i in range(len(train))]
    build = {"balance": {"strategy": strategy, "before": dict(zip(names, before))}} if before else {}
    return {"class_names": names, "counts": {"train": dict(zip(names, train))}, "build": build}


def test_priors_of_a_balanced_build_are_refused_unless_the_recipe_asks_for_the_source_counts():
    la = TrainConfig(loss=LossSpec("logit_adjusted"))
    balanced = _manifest([120, 120, 120], before=[120, 40, 8], strategy="over")
    with pytest.raises(AugforgeError, match=r"train.loss needs class priors, but the train split is balanced "
                                            r"\(balance: over made it so\) \(120 to 120 rows"):
        prior_counts(la, balanced)
    source = TrainConfig(loss=LossSpec("logit_adjusted"), priors="source")
    assert prior_counts(source, balanced)[0] == [120, 40, 8]
    assert prior_counts(la, _manifest([300, 60, 12]))[0] == [300, 60, 12]
    assert prior_counts(TrainConfig(), balanced)[0] == [120, 120, 120]  # plain CE needs no priors: no refusal


def test_the_shot_split_follows_the_thresholds_and_averages_recall_per_group():
    names = ["a", "b", "c", "d", "e"]
    groups = shot_groups([500, 101, 100, 20, 19], names, ShotSpec(many=100, few=20))
    assert groups == {"many": ["a", "b"], "medium": ["c", "d"], "few": ["e"]}
    recall = {"a": 1.0, "b": 0.8, "c": 0.5, "d": None, "e": 0.25}
    shots = shot_metrics(recall, groups)
    assert shots["many"]["accuracy"] == pytest.approx(0.9) and shots["medium"]["accuracy"] == 0.5
    assert shots["few"]["accuracy"] == 0.25
    assert shot_metrics(recall, {"many": [], "medium": ["d"], "few": []})["medium"]["accuracy"] is None


def test_pick_tau_takes_the_best_val_score_and_the_smaller_tau_on_ties():
    # two classes, the second rare: the raw logits favour the first; tau >= 1 recovers the rare rows
    counts = [90, 10]
    logits = torch.tensor([[2.0, 0.5]] * 3 + [[3.0, 0.0]] * 3)
    true = np.array([1, 1, 1, 0, 0, 0])
    picked = pick_tau(logits, true, counts, ["a", "b"], "balanced_accuracy")
    gap = math.log(9)  # tau * log(90/10) must exceed 1.5 to flip [2.0, 0.5], and stay below 3.0 not to flip [3, 0]
    assert picked["tau"] == min(t for t in TAU_GRID if 1.5 < t * gap < 3.0)
    assert picked["val"]["0.0"] == 0.5 and picked["val"][str(picked["tau"])] == 1.0


# -- every option trains from the CLI, and evaluate equals its summary --------------------------------------------

LONG_TAIL = {
    "seed": 0,
    "source": {"path": "digits.csv", "label_col": "label", "test_split": 0.25, "val_split": 0.15,
               "imbalance": "longtail", "imbalance_factor": 20},
    "train": {"model": "mlp", "model_options": {"hidden": [64]}, "epochs": 12, "batch_size": 32, "lr": 0.003},
}


@pytest.fixture(scope="module")
def long_tail_data(tmp_path_factory):
    """scikit-learn's digits as 64 pixel features, long-tailed (factor 20; val and test balanced), built once
    for every run here (a features payload: an MLP learns it in seconds)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("lt")
    digits = load_digits()
    table = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    table["label"] = digits.target
    table.to_csv(root / "digits.csv", index=False)
    recipe = {**LONG_TAIL, "source": {**LONG_TAIL["source"], "path": str(root / "digits.csv")}}
    out = root / "data"
    build(parse_recipe(recipe, "lt.yaml"), out)
    return out, recipe


OPTIONS = {
    "ce": {},
    "focal": {"loss": {"name": "focal", "gamma": 1.0}},
    "logit_adjusted": {"loss": {"name": "logit_adjusted", "tau": 1.0}},
    "balanced_softmax": {"loss": "balanced_softmax"},
    "ldam_drw": {"loss": {"name": "ldam", "max_margin": 0.5, "scale": 2.0}, "rebalance": {"mode": "drw", "start": 8}},
    "drs": {"rebalance": {"mode": "drs", "start": 8}},
    "posthoc_auto": {"posthoc_tau": "auto"},
    "crt": {"decouple": {"mode": "crt", "epochs": 3}},
    "tau_norm": {"decouple": {"mode": "tau_norm"}},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_long_tail_option_trains_and_evaluate_equals_the_summary(tmp_path, capsys, long_tail_data, name):
    long_tail_data, base = long_tail_data
    recipe = {**base, "train": {**base["train"], **OPTIONS[name]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--data", str(long_tail_data), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["balanced_accuracy"] > 0.5, name
    assert "test many / medium / few-shot: many" in out
    assert sum(len(g["classes"]) for g in summary["shots"].values()) == 10
    loss = OPTIONS[name].get("loss", "ce")
    assert summary["config"]["loss"]["name"] == (loss if isinstance(loss, str) else loss["name"])
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), str(long_tail_data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "recall", "confusion", "rows", "shots"):
        assert metrics[key] == summary[key], (name, key)
    state = load_checkpoint(run / "model.pt")
    source = state["counts"]["source"]
    assert source[0] > 10 * source[-1] and state["counts"]["priors"] == source  # no balance step: the same counts
    if name == "posthoc_auto":
        assert summary["posthoc"]["tau"] in TAU_GRID and state["posthoc_tau"] == summary["posthoc"]["tau"]
        assert "post-hoc adjustment: tau" in out
        plain = evaluate_checkpoint(run / "model.pt", long_tail_data, adjust=0.0)
        assert {k: plain[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} == \
            summary["posthoc"]["unadjusted"]
    else:
        assert "posthoc" not in summary and metrics["posthoc_tau"] is None
    if name in ("crt", "tau_norm"):
        assert summary["decouple"]["mode"] == name and set(summary["decouple"]["before"]) == {
            "accuracy", "balanced_accuracy", "macro_f1"}
        assert "decoupled the classifier" in out
    if name == "tau_norm":
        assert summary["decouple"]["tau"] in TAU_NORM_GRID and summary["decouple"]["picked_on"]
    if name in ("drs", "ldam_drw"):
        assert "priors: the built train split's rows" in out


def test_drs_draws_balanced_batches_from_its_epoch(long_tail_data):
    long_tail_data = long_tail_data[0]
    loader = open_loader(long_tail_data, 64, balanced_from=1, seed=3)
    labels = loader.dataset.labels()
    counts = [np.bincount(labels[loader.rows_of_epoch(e)], minlength=10) for e in (0, 1)]
    assert counts[0].max() > 8 * counts[0].min()  # epoch 0: the long tail as built
    assert counts[1].max() < 2 * counts[1].min()  # epoch 1: class-balanced draws


# -- decoupled classifier learning -------------------------------------------------------------------------------


def test_tau_norm_divides_each_class_row_by_its_norm_to_the_tau_and_drops_the_bias():
    model = create("mlp", 3, in_channels=4, hidden=[5])
    linear = classifier_of(model)
    assert linear is model.head
    weight = linear.weight.detach().clone()
    for tau in (0.0, 0.5, 1.0):
        normed = classifier_of(tau_normalized(model, tau))
        expected = weight / weight.norm(dim=1, keepdim=True) ** tau
        assert torch.allclose(normed.weight, expected) and float(normed.bias.abs().sum()) == 0.0
    assert torch.equal(model.head.weight, weight)  # the trained model itself is left as it was
    rows = classifier_of(tau_normalized(model, 1.0)).weight.norm(dim=1)
    assert torch.allclose(rows, torch.ones(3))


def test_the_classifier_of_a_two_layer_head_is_its_last_linear():
    model = create("mobilenet_v3_small", 4, in_channels=3, alpha=0.5)
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and classifier_of(model) is linears[-1] and linears[-1].out_features == 4


class _NormedMLP(torch.nn.Module):
    """A backbone with BatchNorm under a Linear head: what cRT must leave alone (weights and statistics)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_crt_retrains_only_the_classifier_on_balanced_draws_and_leaves_the_backbone_as_it_was(long_tail_data):
    data = long_tail_data[0]
    loader = open_loader(data, 32, seed=0)
    torch.manual_seed(0)
    model = _NormedMLP()
    model.train()
    model(torch.randn(64, 64))  # BatchNorm statistics away from their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = retrain_classifier(model, loader, TrainConfig(lr=0.01), epochs=2, seed=1, device="cpu")
    after = out.state_dict()
    head = {k for k in after if k.startswith("head.")}
    assert any("running_mean" in k for k in after)
    assert head and all(torch.equal(after[k], before[k]) for k in after if k not in head)  # backbone, BN stats
    assert all(not torch.equal(after[k], before[k]) for k in head)
    assert loader.sampler == "balanced" and all(p.requires_grad for p in out.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # a copy was trained
    again = retrain_classifier(model, open_loader(data, 32, seed=0), TrainConfig(lr=0.01), epochs=2, seed=1,
                               device="cpu")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in after.items())  # the same seed, the same head


def test_pick_tau_norm_scores_every_tau_as_the_normalised_model_does(long_tail_data):
    data = long_tail_data[0]
    torch.manual_seed(0)
    model = create("mlp", 10, in_channels=64, hidden=[32]).eval()
    val = open_loader(data, 64, split="val", shuffle=False, augment=False)
    picked = pick_tau_norm(model, val, [str(i) for i in range(10)], "balanced_accuracy", "cpu")
    for tau in (0.0, 0.7, 1.5):
        direct = evaluate_checkpoint_free(tau_normalized(model, tau), val)
        assert picked["val"][str(tau)] == pytest.approx(direct, abs=1e-6)  # stored rounded to 6 places
    assert picked["val"][str(picked["tau"])] == max(picked["val"].values())


def evaluate_checkpoint_free(model, loader) -> float:
    from augforge.train.loop import evaluate

    return evaluate(model, loader, [str(i) for i in range(10)])["balanced_accuracy"]
