"""`augforge tune`: Optuna's TPE over the recipe's own keys, pruning on the validation metric, a study in
SQLite that survives kill -9, best.yaml that augforge train accepts; the space is validated like the recipe."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from augforge.cli import main
from augforge.errors import AugforgeError
from augforge.recipe import load_recipe, parse_recipe

SPACE = {"metric": "balanced_accuracy",
         "space": {"train.lr": {"choice": [1.0e-6, 0.003]}, "train.label_smoothing": {"uniform": [0.0, 0.2]}}}


def _recipe(tmp_path, epochs=3):
    data = {"name": "tune-digits", "seed": 0,
            "source": {"path": "digits", "test_split": 0.2, "val_split": 0.2, "imbalance": "longtail"},
            "output": {"dir": "built"}, "train": {"epochs": epochs, "batch_size": 64}, "tune": SPACE}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _finished_count(db) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def main_raises(path, out):
    """``tune_recipe`` on ``path`` (its errors raised, not printed)."""
    from augforge.experiments.tune import tune_recipe

    tune_recipe(path, 1, out, log=lambda _: None)


def _finished(out):
    study = optuna.load_study(study_name="tune-digits", storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def test_a_study_prunes_and_writes_a_best_recipe_that_trains(tmp_path, capsys):
    path, out = _recipe(tmp_path), tmp_path / "out"
    assert main(["tune", str(path), "--trials", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    trials = _finished(out)
    assert len(trials) == 5 and any(t.state.name == "PRUNED" for t in trials)  # pruning prunes
    assert "5 finished trials" in printed and len((out / "trials.csv").read_text().splitlines()) == 6
    best = load_recipe(out / "best.yaml")  # plain YAML, no tune section, accepted by train
    assert best.train.lr == 0.003 and "tune" not in yaml.safe_load((out / "best.yaml").read_text())
    assert best.output.dir == str(tmp_path / "built")  # the same data settings: the recipe's own data directory
    assert len(list((out / "data").iterdir())) == 1  # trials that share their data share one build
    assert main(["tune", str(path), "--trials", "5", "--out", str(out)]) == 0  # already done: nothing new
    assert len(_finished(out)) == 5


def test_a_killed_study_resumes_without_losing_finished_trials(tmp_path):
    path, out = _recipe(tmp_path, epochs=4), tmp_path / "out"
    command = [sys.executable, "-m", "augforge", "tune", str(path), "--trials", "6", "--out", str(out)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if _finished_count(out / "study.db") >= 2:  # read-only: the polling never writes to the study
            break
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.value for t in _finished(out)}
    assert 2 <= len(before) < 6
    assert subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0
    after = {t.number: t.value for t in _finished(out)}
    assert len(after) == 6 and all(after[n] == v for n, v in before.items())  # nothing finished was lost


@pytest.mark.parametrize("space, message", [
    ({"space": {"train.lr": {"log_uniform": [0.0, 1.0]}}}, "tune.space.train.lr.log_uniform: the low end"),
    ({"space": {"train.lr": {"uniform": [1.0, 0.5]}}}, "low < high"),
    ({"space": {"lr": {"uniform": [0.1, 0.5]}}}, "tune.space.lr: expected a recipe path"),
    ({"space": {"train.epochs": {"int": [1.5, 3]}}}, "expected whole numbers"),
    ({"space": {"train.lr": {"normal": [0, 1]}}}, "expected one of"),
    ({"metric": "loss", "space": {"train.lr": {"uniform": [0.1, 0.5]}}}, "tune.metric"),
    ({"space": {}}, "non-empty 'space'"),
])
def test_bad_spaces_are_recipe_errors_naming_their_place(space, message):
    with pytest.raises(AugforgeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_recipe({"source": {"path": "digits"}, "tune": space})


def test_confirm_and_the_study_page_in_a_browser(tmp_path, capsys):
    """--confirm retrains the original and the best recipe over paired seeds with ablate's statistics, on the
    test split; study.html shows the history (the best-so-far line), the importances and the confirmation."""
    import json

    import numpy as np
    from PIL import Image
    from test_cli import _chromium

    path, out = _recipe(tmp_path), tmp_path / "out"
    assert main(["tune", str(path), "--trials", "4", "--out", str(out), "--confirm", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "confirm" / "ablation.json").read_text())
    baseline, tuned = report["arms"]
    assert [baseline["name"], tuned["name"]] == ["baseline", "tuned"] and report["seeds"] == 2
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert tuned["changes"] == [f"train.label_smoothing: {json.dumps(best['train']['label_smoothing'])}",
                                f"train.lr: {json.dumps(best['train']['lr'])}"]
    for seed in range(2):  # the tuned run at each seed trained the best recipe, at that seed
        summary = json.loads((out / "confirm" / "runs" / "tuned" / str(seed) / "summary.json").read_text())
        assert summary["balanced_accuracy"] == tuned["runs"][seed]["balanced_accuracy"]
    deltas = [t["balanced_accuracy"] - b["balanced_accuracy"] for t, b in zip(tuned["runs"], baseline["runs"])]
    assert tuned["comparison"]["deltas"] == deltas and "confirm over 2 seeds" in printed
    page = (out / "study.html").read_text()
    assert 'id="history"' in page and 'id="confirm"' in page and "tuned" in page
    assert 'id="importances"' in page and page.count("<tr>") >= 4 + 1 + 3
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1100,900",
                    (out / "study.html").as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    best_line = (np.abs(pixels - [0xD9, 0x5F, 0x02]).sum(axis=2) < 30).sum()  # the best-so-far step line
    assert best_line > 200


def test_best_yaml_keeps_the_recipes_files_and_its_own_data(tmp_path):
    """best.yaml is written elsewhere: a relative source is made absolute, and tuned data settings get their
    own data directory instead of overwriting the original recipe's."""
    from augforge.experiments.tune import best_recipe, trial_changes

    (tmp_path / "sub").mkdir()
    table = tmp_path / "sub" / "rows.csv"
    table.write_text("a,b,label\n1,2,x\n3,4,y\n")
    raw = {"seed": 0, "source": {"path": "rows.csv"}, "output": {"dir": "built"}, "train": {"lr": 0.001},
           "tune": SPACE}
    recipe = parse_recipe(raw, str(tmp_path / "sub" / "r.yaml"), tmp_path / "sub")
    same = best_recipe(raw, trial_changes({"train.lr": 0.01}), recipe, tmp_path / "out")
    assert same["source"]["path"] == str(table) and same["output"]["dir"] == str(tmp_path / "sub" / "built")
    assert same["train"]["lr"] == 0.01 and "tune" not in same
    other = best_recipe(raw, trial_changes({"balance.strategy": "over"}), recipe, tmp_path / "out")
    assert other["output"]["dir"] == str(tmp_path / "out" / "best-data") and other["balance"]["strategy"] == "over"
    assert raw["output"]["dir"] == "built"  # the recipe's own mapping is left as it was


def test_a_space_key_reaches_an_ops_parameter_inside_the_augment_list(tmp_path):
    """``augment.image[0].degrees`` in the space: every trial streams the rotate op at the degrees it drew,
    and best.yaml holds the best trial's value at that path."""
    from augforge.train.checkpoint import load_checkpoint

    data = {"name": "tune-digits", "seed": 0, "source": {"path": "digits", "test_split": 0.2, "val_split": 0.2},
            "augment": {"mode": "online", "color": "gray", "image": [{"op": "rotate", "degrees": 5, "p": 0.5}]},
            "output": {"dir": "built"}, "train": {"epochs": 1, "batch_size": 128},
            "tune": {"space": {"augment.image[0].degrees": {"uniform": [1.0, 40.0]}}}}
    path, out = tmp_path / "recipe.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(data))
    assert main(["tune", str(path), "--trials", "2", "--out", str(out)]) == 0
    trials = _finished(out)
    assert len(trials) == 2
    for trial in trials:
        drawn = trial.params["augment.image[0].degrees"]
        state = load_checkpoint(out / "trials" / str(trial.number) / "checkpoints" / "last.pt")
        (rotate,) = state["settings"]["train.stream"]
        assert rotate["op"] == "rotate" and rotate["degrees"] == pytest.approx([-drawn, drawn])
    best = optuna.load_study(study_name="tune-digits", storage=f"sqlite:///{out / 'study.db'}").best_trial
    written = yaml.safe_load((out / "best.yaml").read_text())
    assert written["augment"]["image"][0]["degrees"] == best.params["augment.image[0].degrees"]
    with pytest.raises(AugforgeError, match=r"tune\.space\.augment\.image\[3\]\.degrees: .* no item \[3\]"):
        data["tune"]["space"] = {"augment.image[3].degrees": {"uniform": [1.0, 40.0]}}
        path.write_text(yaml.safe_dump(data))
        main_raises(path, tmp_path / "bad")
