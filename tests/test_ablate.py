"""`augforge ablate`: the arms a recipe implies, paired seeds, a no-op arm and a destructive arm, resume after
kill -9, clear errors, and the HTML page in a browser."""

import json
import subprocess
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from augforge.cli import main
from augforge.errors import AugforgeError
from augforge.recipe import load_recipe, parse_recipe
from augforge.experiments.ablate import run_ablation
from augforge.experiments.arms import build_arms
from augforge.recipe.changes import REMOVE, apply_changes
from cli_process import start_cli


def test_the_arms_of_the_digits_example():
    recipe = load_recipe("examples/digits.yaml")
    arms = build_arms(recipe)
    names = [a.name for a in arms]
    assert names == ["baseline", "no-balance", "no-pad", "no-random_crop", "no-rotate", "no-gaussian_blur",
                     "no-copies", "no-label-smoothing", "no-warmup", "no-weight-decay", "no-swa", "constant-lr",
                     "no-dropout", "plain"]
    by = {a.name: a for a in arms}
    assert by["no-random_crop"].changes == [("augment.image[1]", {"op": "center_crop", "size": [8, 8], "fill": 0})]
    assert by["no-swa"].changes == [("train.swa_start", REMOVE), ("train.swa_lr", REMOVE)]
    plain = apply_changes(recipe.data, by["plain"].changes)
    assert "strategy" not in plain["balance"] and plain["augment"]["image"] == [] and "copies" not in plain["augment"]
    assert plain["train"]["schedule"] == "constant" and plain["train"]["model_options"]["dropout"] == 0.0
    assert "label_smoothing" not in plain["train"] and "swa_start" not in plain["train"]
    parse_recipe(plain, recipe.file, "examples")  # every arm is a valid recipe


def test_overrides_selection_and_clear_errors(tmp_path):
    recipe = load_recipe("examples/digits.yaml")
    arms = build_arms(recipe, ["acc=train.accumulate:1", "acc=train.batch_size:128", "a75=train.lr:0.009"],
                      only=["acc", "no-swa"])
    assert [a.name for a in arms] == ["baseline", "no-swa", "acc"]
    assert arms[2].changes == [("train.accumulate", 1), ("train.batch_size", 128)]
    assert [a.name for a in build_arms(recipe, skip=["plain", "no-swa"])][-1] == "no-dropout"
    with pytest.raises(AugforgeError, match="^only nope: no such arm"):
        build_arms(recipe, only=["nope"])
    with pytest.raises(AugforgeError, match="expected NAME=key.path:VALUE"):
        build_arms(recipe, ["lr_x3"])
    with pytest.raises(AugforgeError, match=r"arm typo: .*train\.lrr: unknown key"):
        run_ablation(recipe, tmp_path / "a", seeds=2, overrides=["typo=train.lrr:0.1"], only=["typo"])
    bare = parse_recipe({"source": {"path": "digits", "test_split": 0.25}, "train": {"schedule": "constant",
                         "model_options": {"dropout": 0.0}}}, "bare.yaml")
    with pytest.raises(AugforgeError, match="bare.yaml: no technique to ablate"):
        build_arms(bare)


@pytest.fixture(scope="module")
def features(tmp_path_factory, digits_table):
    root = tmp_path_factory.mktemp("ablate")
    table = root / "digits.parquet"
    digits_table.write_parquet(table)
    return root, table


def feature_recipe(root, table, **train):
    data = {"seed": 0, "source": {"path": str(table), "label_col": "label", "test_split": 0.25, "val_split": 0.15},
            "train": {"model": "mlp", "model_options": {"hidden": [32], "dropout": 0.0, "norm": False},
                      "epochs": 3, "batch_size": 64, "lr": 0.01, "schedule": "constant", **train}}
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def test_a_no_op_arm_shows_no_effect_and_a_destructive_arm_hurts(features, capsys):
    root, table = features
    recipe = feature_recipe(root, table)
    out = root / "run"
    # accumulation 2 at batch 32 makes the updates of batch 64: the same model, so no detectable effect
    assert main(["ablate", str(recipe.file), "--out", str(out), "--seeds", "5", "--jobs", "2",
                 "--arms", "acc2=train.batch_size:32", "acc2=train.accumulate:2", "zero=train.lr:0"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "ablation.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert set(arms) == {"baseline", "acc2", "zero"} and report["runs_finished"] == 15
    acc2, zero = arms["acc2"]["comparison"], arms["zero"]["comparison"]
    assert acc2["verdict"] == "no detectable effect" and abs(acc2["mean_delta"]) < 0.003
    assert zero["verdict"] == "hurts" and zero["ci_high"] < -0.3
    assert arms["baseline"]["spread"]["balanced_accuracy"]["mean"] > 0.85
    assert all(len(a["runs"]) == 5 for a in arms.values())
    assert (out / "runs" / "zero" / "4" / "summary.json").is_file()
    assert "hurts" in printed and "no detectable effect" in printed and "noise floor" in printed
    assert 0 < report["noise_floor"] < 0.03 and report["test_rows"] > 400
    # time to target: the baseline reaches 99% of its own final validation metric, lr 0 never does
    assert arms["baseline"]["never_reached_target"] == 0 and arms["zero"]["never_reached_target"] == 5
    assert len(list((out / "data").iterdir())) == 1  # arms that change only training share the baseline's build


def test_the_budget_stops_new_runs_and_a_rerun_finishes(features, tmp_path):
    root, table = features
    recipe = feature_recipe(root, table, epochs=1)
    stopped = run_ablation(recipe, tmp_path / "a", seeds=5, overrides=["zero=train.lr:0"], budget_minutes=0.0,
                           log=lambda _: None)
    assert stopped["stopped_by_budget"] and stopped["runs_finished"] == 0 and stopped["runs_total"] == 10
    assert all(arm["comparison"] is None for arm in stopped["arms"])
    finished = run_ablation(recipe, tmp_path / "a", seeds=5, overrides=["zero=train.lr:0"], log=lambda _: None)
    assert not finished["stopped_by_budget"] and finished["runs_finished"] == 10


def test_the_html_page_in_a_browser(features, tmp_path):
    from test_cli import _chromium

    root, table = features
    recipe = feature_recipe(root, table, epochs=1)
    report = run_ablation(recipe, tmp_path / "a", seeds=5, overrides=["zero=train.lr:0", "half=train.lr:0.005"],
                          log=lambda _: None)
    page = (tmp_path / "a" / "ablation.html").read_text()
    assert '<img id="forest"' in page and "train.lr: 0" in page and report["arms"][1]["name"] == "zero"
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1100,900",
                    (tmp_path / "a" / "ablation.html").as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    hurts = (np.abs(pixels - [0xD9, 0x5F, 0x02]).sum(axis=2) < 30).sum()  # the "hurts" interval and point
    assert hurts > 50



def _strip(report):
    """The report without what depends on the clock."""
    for arm in report["arms"]:
        for run in arm["runs"]:
            run.pop("wall_s"), run.pop("time_to_target_s")
        arm["spread"].pop("wall_s"), arm["spread"].pop("time_to_target_s")
    report.pop("wall_s")
    return report


def test_resume_after_kill_9_repeats_no_finished_run(features, tmp_path):
    root, table = features
    recipe = feature_recipe(root, table, epochs=1)
    full = tmp_path / "full"
    run_ablation(recipe, full, seeds=5, overrides=["zero=train.lr:0", "half=train.lr:0.005"], log=lambda _: None)
    out = tmp_path / "killed"
    proc = start_cli(["ablate", str(recipe.file), "--out", str(out), "--seeds", "5", "--arms", "zero=train.lr:0",
                      "half=train.lr:0.005"])
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("runs/*/*/run.json"))) < 4:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/run.json")}
    assert 4 <= len(done) < 15 and not (out / "ablation.json").exists()
    assert main(["ablate", str(recipe.file), "--out", str(out), "--seeds", "5", "--resume",
                 "--arms", "zero=train.lr:0", "half=train.lr:0.005"]) == 0
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in done.items())  # finished runs were not repeated
    resumed = json.loads((out / "ablation.json").read_text())
    assert resumed["runs_finished"] == 15
    assert _strip(resumed) == _strip(json.loads((full / "ablation.json").read_text()))


def test_verdicts_read_as_statements_about_the_technique():
    from augforge.experiments.ablate_report import meaning

    def arm(name, kind, verdict):
        return {"name": name, "kind": kind, "comparison": {"verdict": verdict}}

    assert meaning(arm("no-balance", "leave-one-out", "hurts")) == "balance helps"
    assert meaning(arm("no-dropout", "leave-one-out", "helps")) == "dropout hurts"
    assert meaning(arm("constant-lr", "leave-one-out", "no detectable effect")) == "the schedule: no detectable effect"
    assert meaning(arm("plain", "plain", "hurts")) == "the techniques together help"
    assert meaning(arm("lr_x3", "custom", "helps")) == "lr_x3 helps"


def test_seeds_set_the_draws_and_bootstrap_train_resamples_per_seed(tmp_path):
    from augforge.experiments.ablate import plan_tasks

    recipe = load_recipe("examples/digits.yaml")
    arms = build_arms(recipe, only=["no-swa"])
    tasks = plan_tasks(recipe, arms, tmp_path, seeds=3, bootstrap_train=True)
    assert [(t.arm.name, t.seed) for t in tasks] == [(a, s) for a in ("baseline", "no-swa") for s in range(3)]
    assert all(t.recipe.run.seed == t.seed and t.recipe.augment.seed == t.seed and t.recipe.run.bootstrap == t.seed
               for t in tasks)
    assert all(t.recipe.source == recipe.source and t.recipe.seed == recipe.seed for t in tasks)  # the split stays
    by = {(t.arm.name, t.seed): t for t in tasks}
    assert by[("baseline", 1)].data == by[("no-swa", 1)].data != by[("baseline", 2)].data  # shared per seed
    assert by[("baseline", 1)].fingerprint != by[("no-swa", 1)].fingerprint
    plain = plan_tasks(recipe, arms, tmp_path, seeds=2, bootstrap_train=False)
    assert all(t.recipe.run.bootstrap is None for t in plain)
    # an arm without offline copies draws nothing at build time: its seeds share one build
    from augforge.experiments.arms import Arm
    from augforge.recipe.changes import REMOVE

    online = Arm("online", "custom", [("augment.mode", "online"), ("augment.copies", REMOVE)])
    mixed = plan_tasks(recipe, [arms[0], online], tmp_path, seeds=2, bootstrap_train=False)
    by = {(t.arm.name, t.seed): t for t in mixed}
    assert by[("online", 0)].data == by[("online", 1)].data and by[("online", 0)].recipe.augment.seed is None
    assert by[("baseline", 0)].data != by[("baseline", 1)].data  # the recipe's copies are drawn per seed


def test_one_arm_per_long_tail_option_and_switching_the_loss():
    def arms_of(train, balance=None):
        data = {"source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
                "train": {"schedule": "constant", "model_options": {"dropout": 0.0}, "epochs": 6, **train}}
        if balance:
            data["balance"] = {"strategy": balance}
        return {a.name: a for a in build_arms(parse_recipe(data, "lt.yaml"), ["la=train.loss:logit_adjusted"])}

    ldam = arms_of({"loss": {"name": "ldam", "max_margin": 0.4}, "rebalance": {"mode": "drw", "start": 4},
                    "decouple": {"mode": "crt", "epochs": 2}})
    assert list(ldam) == ["baseline", "no-ldam", "no-drw", "no-crt", "plain", "la"]
    assert ldam["no-ldam"].changes == [("train.loss", REMOVE)] and ldam["la"].changes == [
        ("train.loss", "logit_adjusted")]
    assert set(ldam["plain"].changes) >= {("train.loss", REMOVE), ("train.rebalance", REMOVE),
                                           ("train.decouple", REMOVE)}
    assert list(arms_of({"class_weights": "balanced", "sampler": "balanced"})) == [
        "baseline", "no-class-weights", "no-balanced-sampler", "plain", "la"]
    assert list(arms_of({"posthoc_tau": "auto"}))[1] == "no-posthoc"
    assert list(arms_of({"decouple": {"mode": "tau_norm", "tau": 0.5}}))[1] == "no-tau-norm"


def test_equal_compute_gives_every_arm_the_baselines_samples(features, tmp_path, capsys):
    root, table = features
    data = {"seed": 0, "source": {"path": str(table), "label_col": "label", "test_split": 0.25, "val_split": 0.15,
                                  "imbalance": "longtail", "imbalance_factor": 10},
            "balance": {"strategy": "over"},
            "train": {"model": "mlp", "model_options": {"hidden": [32], "dropout": 0.0, "norm": False},
                      "epochs": 2, "batch_size": 64, "lr": 0.01, "schedule": "constant"}}
    path = tmp_path / "lt.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "eq"
    assert main(["ablate", str(path), "--out", str(out), "--seeds", "2", "--equal-compute", "--only", "no-balance"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "ablation.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    base, plain = arms["baseline"]["runs"], arms["no-balance"]["runs"]
    assert report["equal_compute"] and "equal compute: arm no-balance trains" in printed
    built = sorted(sum(json.loads(m.read_text())["counts"]["train"].values())
                   for m in (out / "data").glob("*/manifest.json"))
    fewer, balanced = built  # the balance step adds copies: the arm without it has fewer rows per epoch
    assert all(r["epochs"] == 2 and r["samples"] == 2 * balanced for r in base)
    assert all(r["epochs"] == round(2 * balanced / fewer) > 2 for r in plain)
    assert all(abs(r["samples"] - 2 * balanced) <= fewer / 2 for r in plain)  # equal up to one epoch's rounding
    assert all(r[g] is None or 0.0 <= r[g] <= 1.0 for r in base + plain for g in ("many", "medium", "few"))
    # the shot split counts the source's train rows: the balanced baseline still has its few-shot classes
    assert all(r["few"] is not None for r in base + plain) and "many/med/few" in printed


def _online_rotate_recipe(tmp_path, extra=None) -> str:
    """Digits with one streamed op (rotate by up to 5 degrees), one short epoch: runs cost seconds."""
    data = {"name": "rotate-digits", "seed": 0, "source": {"path": "digits", "test_split": 0.25, "val_split": 0.2},
            "augment": {"mode": "online", "color": "gray", "image": [{"op": "rotate", "degrees": 5, "p": 0.5}]},
            "output": {"dir": "built"}, "train": {"epochs": 1, "batch_size": 128}, **(extra or {})}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_an_arm_changes_an_ops_parameter_inside_the_augment_list(tmp_path):
    """`--arms rot30=augment.image[0].degrees:30` goes through Recipe.with_changes: the arm's runs stream the
    rotate op at 30 degrees, the baseline's at 5, and both share the build (online ops are not in the rows)."""
    from augforge.train.checkpoint import load_checkpoint

    path = _online_rotate_recipe(tmp_path)
    out = tmp_path / "ablate"
    assert main(["ablate", path, "--seeds", "2", "--arms", "rot30=augment.image[0].degrees:30", "--only", "rot30",
                 "--out", str(out)]) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert [a["name"] for a in report["arms"]] == ["baseline", "rot30"]
    for arm, degrees in (("baseline", 5.0), ("rot30", 30.0)):
        for seed in (0, 1):
            state = load_checkpoint(out / "runs" / arm / str(seed) / "checkpoints" / "last.pt")
            (rotate,) = state["settings"]["train.stream"]
            assert rotate["op"] == "rotate" and rotate["degrees"] == [-degrees, degrees]
    assert len(list((out / "data").iterdir())) == 1
