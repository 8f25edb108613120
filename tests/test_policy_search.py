"""`augforge search-policy`: a search on held-out training rows under a budget, a resumable study, the same
scores for the same seed, a confirmation over paired seeds with Holm-adjusted verdicts, and best.yaml that trains.

The budgets are tiny (2-epoch trials on the digits, 2 confirmation seeds): the tests assert behaviour, not
accuracy. The verdict rules are checked on constructed scores."""

import json
import os

import numpy as np
import optuna
import pytest
import yaml

from augforge.augment.backend import BACKEND_VARIABLE
from augforge.cli import main
from augforge.datasets import open_dataset
from augforge.experiments import policy_confirm as pc
from augforge.experiments.compare import Comparison
from augforge.experiments.policy_search import run_cost, search_policy
from augforge.recipe import load_recipe

RECIPE = {
    "name": "policy-digits", "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail", "imbalance_factor": 10},
    "augment": {"copies": 1, "color": "gray", "image": [
        {"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 12, "p": 0.5}]},
    "output": {"dir": "built", "format": "png"},
    "train": {"model": "simple_cnn", "epochs": 2, "batch_size": 128, "lr": 0.003},
}


def _recipe(tmp_path, **changes):
    data = json.loads(json.dumps(RECIPE))
    data.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _test_ids(folder) -> list:
    rows = open_dataset(folder).to_polars()
    return sorted(rows.filter(rows["split"] == "test")["id"].to_list())


def _finished(out) -> list:
    study = optuna.load_study(study_name="search-policy", storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.fixture(scope="module")
def torch_policies():
    """The module runs its searches on the torch policies (no DALI graph to build per run on 8x8 digits: the
    search's logic is the same on both backends); ``test_the_search_runs_on_dali`` runs one on DALI."""
    before = os.environ.get(BACKEND_VARIABLE)
    os.environ[BACKEND_VARIABLE] = "torch"
    yield
    if before is None:
        del os.environ[BACKEND_VARIABLE]
    else:
        os.environ[BACKEND_VARIABLE] = before


@pytest.fixture(scope="module")
def searched(tmp_path_factory, torch_policies):
    """One search with its confirmation (3 fixed candidates, the recipe's ops as written and 1 grid point, then
    2 seeds x 5 policies: none, trivial, the winner or rand-n1-m5 asked for with --also, as written), and its
    log."""
    root = tmp_path_factory.mktemp("policy")
    path, out, lines = _recipe(root), root / "out", []
    result = search_policy(path, out, budget_minutes=10, max_trials=5, proxy_epochs=2, confirm_seeds=2,
                           also=("rand-m5-n1",), log=lines.append)
    return path, out, result, lines


def test_the_winner_is_chosen_on_held_out_training_rows_and_confirmed_against_trivial_and_none(searched):
    path, out, result, lines = searched
    s = result["search"]
    scored = [r for r in s["candidates"] if r["state"] == "COMPLETE" and r["same_as"] is None]
    assert {"none", "trivial", "autoaug-imagenet", "recipe-ops"} <= {r["policy"] for r in s["candidates"]}
    assert s["winner_value"] == max(r["value"] for r in scored)  # the best proxy score, nothing else
    assert s["winner"] == next(r["policy"] for r in scored if r["number"] == s["winner_trial"])
    # the proxy's rows: a validation split carved from train; the test rows are the confirmation's test rows
    counts = json.loads((out / "data" / "manifest.json").read_text())["counts"]
    assert s["val_rows"] == sum(counts["val"].values()) > 0
    for folder in (out / "confirm" / "data").iterdir():  # the confirmation trains on the recipe's own split
        assert "val" not in json.loads((folder / "manifest.json").read_text())["counts"]
        assert _test_ids(folder) == _test_ids(out / "data")
    confirmed = {e["policy"]: e for e in result["confirmed"]}
    assert {"none", "trivial", "as-written", "rand-n1-m5"} <= set(confirmed) and s["winner"] in confirmed
    for entry in result["confirmed"]:
        assert {"policy", "mean", "ci_low", "ci_high", "verdict"} <= set(entry)
        assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"] and entry["seeds"] == 2
    assert confirmed["none"]["verdict"] == "reference" and confirmed["trivial"]["against"] == "none"
    assert confirmed["trivial"]["verdict"] == "too few seeds"  # 2 seeds: no verdict, said so
    for c in result["comparisons"]:
        assert c["p_holm"] >= c["p_value"] and len(c["deltas"]) == 2
    ablation = json.loads((out / "confirm" / "ablation.json").read_text())
    assert ablation["equal_compute"] and ablation["seeds"] == 2
    base = next(a for a in ablation["arms"] if a["name"] == "baseline")["runs"]  # none is ablate's baseline arm
    assert np.mean([r[result["metric"]] for r in base]) == pytest.approx(confirmed["none"]["mean"], abs=1e-12)
    # the cost was said before the confirmation started, with the warning that 2 seeds cannot give a verdict
    said = "\n".join(lines)
    assert "x 2 seeds = " in said and "runs of 2 epochs" in said and "no verdict can pass" in said
    assert json.loads((out / "search.json").read_text())["confirmed"] == result["confirmed"]
    page = (out / "search.html").read_text()
    assert 'id="confirmed"' in page and 'id="candidates"' in page and result["conclusion"].split(" ")[0] in page


def test_best_yaml_trains_the_winner_online_on_the_recipes_own_split(searched, tmp_path):
    path, out, result, _ = searched
    best = load_recipe(out / "best.yaml")
    assert best.source.val_split in (None, 0, 0.0) and best.train.epochs == 2  # the recipe's settings
    assert best.augment.mode == "online" and best.augment.copies == 0
    names = [op.name for op in best.augment.image]
    winner = result["search"]["winner"]
    if winner in ("trivial", "autoaug-imagenet") or winner.startswith("rand-"):
        assert names[-1] in ("trivial_augment", "auto_augment", "rand_augment")
    assert main(["train", str(out / "best.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rows"] > 0


def test_a_rerun_continues_the_study_and_reuses_the_confirmation(searched):
    path, out, result, _ = searched
    before = _finished(out)
    # what kill -9 mid-trial leaves: a sampler trial running in the database (the next grid point, rand-n1-m5)
    study = optuna.load_study(study_name="search-policy", storage=f"sqlite:///{out / 'study.db'}")
    stale = study.ask()
    stale_params = {"policy": stale.suggest_categorical("policy", ["rand", "recipe"]),
                    "rand.n": stale.suggest_int("rand.n", 1, 3), "rand.m": stale.suggest_int("rand.m", 0, 30)}
    assert stale_params == {"policy": "rand", "rand.n": 1, "rand.m": 5}
    lines = []
    again = search_policy(path, out, budget_minutes=10, max_trials=6, proxy_epochs=2, confirm_seeds=2,
                          also=("rand-n1-m5",), log=lines.append)
    after = _finished(out)
    assert len(after) == len(before) + 1 == 6  # one more sampler trial, nothing repeated
    assert [t.params for t in after[3:5]] == [{"policy": "recipe", "op2.p": 0.5, "op2.strength": 1.0},
                                              {"policy": "rand", "rand.n": 2, "rand.m": 9}]  # the first trials, once
    for t in before:
        assert after[t.number].value == t.value and after[t.number].params == t.params
    assert sum(t.user_attrs.get("fixed") == "none" for t in after) == 1  # the fixed candidates are not rerun
    every = optuna.load_study(study_name="search-policy", storage=f"sqlite:///{out / 'study.db'}").trials
    assert every[stale.number].state.name == "FAIL" and any("left running by an earlier process" in line
                                                             for line in lines)
    assert any(t.state.name == "WAITING" and t.system_attrs.get("fixed_params") == stale_params for t in every)
    if again["search"]["winner"] == result["search"]["winner"]:
        assert any("runs already done (reused)" in line for line in lines)
        assert again["confirmed"] == result["confirmed"]


def test_the_same_seed_gives_the_same_scores(searched, tmp_path):
    path, out, result, _ = searched
    fresh = search_policy(path, tmp_path / "again", budget_minutes=10, max_trials=0, proxy_epochs=2, confirm_seeds=0,
                          log=lambda _: None)
    first = {r["policy"]: r["value"] for r in result["search"]["candidates"] if r["number"] < 3}
    second = {r["policy"]: r["value"] for r in fresh["search"]["candidates"]}
    assert first == second and set(first) == {"none", "trivial", "autoaug-imagenet"}
    assert "confirmed" not in fresh and (tmp_path / "again" / "best.yaml").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--confirm-seeds", "1"], "--confirm-seeds 1: a paired comparison needs at least 2 seeds"),
    (["--proxy-epochs", "9"], "--proxy-epochs 9: expected 1 to the recipe's train.epochs (2)"),
    (["--budget-minutes", "0"], "--budget-minutes 0.0: expected minutes above 0"),
    (["--val-split", "1.5"], "--val-split 1.5: expected a fraction between 0 and 1"),
    (["--also", "rand-n2-m99"], "--also 'rand-n2-m99': M runs 0..30 with 31 bins, got 99"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, capsys, argv, message):
    path = _recipe(tmp_path)
    assert main(["search-policy", str(path), "--out", str(tmp_path / "o"), *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "study.db").exists()


def test_a_text_recipe_is_refused(tmp_path, capsys, text_csv):
    path = _recipe(tmp_path, source={"path": str(text_csv), "text_col": "review", "label_col": "sentiment"},
                   augment={}, output={"dir": "built"}, train={})
    assert main(["search-policy", str(path), "--out", str(tmp_path / "o")]) != 0
    assert "search-policy searches image augmentation policies; this recipe's source gives text rows" in \
        capsys.readouterr().err


def _comparison(verdict: str, p_holm: float, n: int = 8) -> Comparison:
    return Comparison(0.01, 0.005, 0.02, p_holm, p_holm, 0.99, 0.01, verdict, [0.01] * n)


def test_holm_verdicts_need_the_interval_and_the_adjusted_p():
    assert pc.holm_verdict(_comparison("helps", 0.01)) == "better"
    assert pc.holm_verdict(_comparison("hurts", 0.04)) == "worse"
    assert pc.holm_verdict(_comparison("helps", 0.06)) == "no detectable difference"  # the interval alone: not enough
    assert pc.holm_verdict(_comparison("no detectable effect", 0.01)) == "no detectable difference"
    assert pc.holm_verdict(_comparison("too few seeds", 0.01, n=3)) == "too few seeds"
    assert pc.seeds_for_a_verdict(5) == 8 and pc.seeds_for_a_verdict(3) == 7 and pc.seeds_for_a_verdict(1) == 6
    for m in (1, 3, 5):  # the fewest seeds whose smallest adjusted p passes, and one fewer does not
        n = pc.seeds_for_a_verdict(m)
        assert pc.smallest_p(n, m) < pc.ALPHA and (n - 1 < 5 or pc.smallest_p(n - 1, m) >= pc.ALPHA)
    assert pc.comparison_pairs(["none", "trivial", "rand-n2-m9", "as-written"]) == [
        ("trivial", "none"), ("rand-n2-m9", "none"), ("rand-n2-m9", "trivial"), ("as-written", "none"),
        ("as-written", "trivial")]


def test_the_proxy_agreement_measures_the_order_with_its_uncertainty():
    rng = np.random.default_rng(0)
    clear = {"none": list(0.90 + rng.normal(0, 0.002, 8)), "trivial": list(0.95 + rng.normal(0, 0.002, 8)),
             "rand-n1-m5": list(0.93 + rng.normal(0, 0.002, 8))}
    proxy = {"none": 0.80, "trivial": 0.88, "rand-n1-m5": 0.85}
    agreed = pc.agreement(proxy, clear)
    assert agreed["tau"] == pytest.approx(1.0) and agreed["share_same_order"] > 0.99
    reversed_proxy = {"none": 0.9, "trivial": 0.8, "rand-n1-m5": 0.85}
    disagreed = pc.agreement(reversed_proxy, clear, epoch=2)
    assert disagreed["tau"] == pytest.approx(-1.0) and disagreed["share_same_order"] < 0.01
    assert "after 2 epochs matched" in disagreed["note"] and "did not predict the full training's" in disagreed["note"]
    assert "did not predict" not in agreed["note"]
    same = list(0.90 + rng.normal(0, 0.02, 8))
    close = {"none": same, "trivial": same[::-1]}  # equal means: only the seeds' noise orders them
    share = pc.agreement({"none": 0.8, "trivial": 0.81}, close)["share_same_order"]
    assert 0.3 < share < 0.7  # the order of two equal policies is a coin flip over seed resamples
    assert pc.agreement({"none": 0.8}, clear)["tau"] is None


def test_the_confirmation_cost_model_fits_start_up_and_epochs():
    assert run_cost([(1, 3.0), (3, 5.0), (3, 5.2), (1, 2.8)]) == pytest.approx((1.8, 1.1))
    assert run_cost([(2, 4.0), (2, 6.0)]) == (0.0, 2.5)
    assert run_cost([]) == (0.0, 0.0)


def test_the_search_runs_on_dali(tmp_path, monkeypatch):
    monkeypatch.setenv(BACKEND_VARIABLE, "dali")
    train = {**RECIPE["train"], "epochs": 1, "batch_size": 32}  # one epoch of small batches: enough to learn a bit
    result = search_policy(_recipe(tmp_path, train=train), tmp_path / "o", budget_minutes=10, max_trials=0,
                           proxy_epochs=1, confirm_seeds=0, log=lambda _: None)
    scored = {r["policy"]: r["value"] for r in result["search"]["candidates"]}
    assert set(scored) == {"none", "trivial", "autoaug-imagenet"} and all(0 < v <= 1 for v in scored.values())
    assert scored["trivial"] != scored["none"]  # DALI's TrivialAugment changed what the model saw


def test_the_conclusion_says_what_the_seeds_support():
    def verdicts(v, trivial="better"):
        return {("rand-n2-m9", "trivial"): v, ("trivial", "none"): trivial}

    comparisons = {("rand-n2-m9", "trivial"): _comparison("helps", 0.01), ("trivial", "none"): _comparison("helps",
                                                                                                         0.01)}
    means = {"none": 0.90, "trivial": 0.93, "rand-n2-m9": 0.94}
    assert pc.conclusion("rand-n2-m9", verdicts("better"), comparisons, 8, means) == (
        "rand-n2-m9 beats TrivialAugment by +0.0100 [+0.0050, +0.0200] (Holm-adjusted); highest confirmed mean: "
        "rand-n2-m9 (0.9400)")
    assert "is worse than TrivialAugment" in pc.conclusion("rand-n2-m9", verdicts("worse"), comparisons, 8, means)
    few = pc.conclusion("rand-n2-m9", verdicts("too few seeds"), comparisons, 2, means)
    assert "too few for a verdict (--confirm-seeds 7 or more)" in few and "as good" not in few
    same = pc.conclusion("rand-n2-m9", verdicts("no detectable difference"), comparisons, 8, means)
    assert "did not beat TrivialAugment detectably" in same and "could detect 0.0100" in same
    assert "TrivialAugment is as good here and needs no search" in same
    # TrivialAugment worse than no augmentation: never "as good", and said
    hurt = pc.conclusion("rand-n2-m9", verdicts("no detectable difference", trivial="worse"), comparisons, 8,
                         {"none": 0.64, "trivial": 0.50, "rand-n2-m9": 0.55})
    assert "as good" not in hurt and "TrivialAugment hurts here" in hurt and hurt.endswith("none (0.6400)")
    other = {**verdicts("no detectable difference"), ("as-written", "trivial"): "better"}
    beaten = pc.conclusion("rand-n2-m9", other, {**comparisons, ("as-written", "trivial"): _comparison("helps", 0.01)},
                           8, means)
    assert "as-written beats TrivialAugment" in beaten and "as good" not in beaten
    assert pc.conclusion("trivial", verdicts("-"), comparisons, 8, means).startswith(
        "the search chose TrivialAugment itself; trivial against none: better")


def test_the_recipe_ops_strength_scales_their_ranges_within_bounds():
    from augforge.experiments.policy_space import recipe_candidate, searchable_ops
    from augforge.recipe import parse_recipe

    recipe = parse_recipe({"source": {"path": "digits"}, "augment": {"copies": 1, "image": [
        {"op": "random_crop", "size": 8}, {"op": "rotate", "degrees": 20, "p": 0.7},
        {"op": "color", "brightness": [0.7, 1.3], "hue": [-10, 10]}, {"op": "cutout", "size": 6},
        {"op": "rotate", "degrees": [-300, 300]}]}}, "r.yaml")
    assert [i for i, _ in searchable_ops(recipe)] == [1, 2, 3, 4]  # the crop shapes the image: left alone

    def ops(strength, p=0.3):
        settings = {f"op{i}.{k}": v for i, _ in searchable_ops(recipe) for k, v in (("strength", strength), ("p", p))}
        return recipe.with_changes(recipe_candidate(recipe, settings).changes).augment.image

    weak, strong = ops(0.25), ops(2.0)
    assert weak[1].params["degrees"] == (-5.0, 5.0) and strong[1].params["degrees"] == (-40.0, 40.0)
    assert weak[2].params["brightness"] == pytest.approx((0.925, 1.075)) and strong[2].params["hue"] == (-20, 20)
    assert weak[3].params["size"] == 2 and strong[3].params["size"] == 11
    assert strong[4].params["degrees"] == (-360.0, 360.0)  # clipped at the parameter's bound, sign kept
    assert all(op.p == 0.3 for op in weak[1:]) and weak[0] == recipe.augment.image[0]
    written = recipe_candidate(recipe, {})
    assert recipe.with_changes(written.changes).augment.image == recipe.augment.image  # as written: unchanged


def test_the_proxy_is_compared_where_every_confirmed_policy_was_measured():
    candidates = [{"policy": "none", "curve": [0.5, 0.6, 0.7, 0.8]}, {"policy": "trivial", "curve": [0.4, 0.65]},
                  {"policy": "trivial", "curve": []}, {"policy": "rand-n1-m5", "curve": [0.3, 0.5, 0.9]},
                  {"policy": "autoaug-imagenet", "curve": [0.1]}]
    scores, epoch = pc.proxy_scores(candidates, ["none", "trivial", "rand-n1-m5"])
    assert epoch == 2 and scores == {"none": 0.6, "trivial": 0.65, "rand-n1-m5": 0.5}  # autoaug: not confirmed
    assert pc.proxy_scores([], ["none"]) == ({}, None)
