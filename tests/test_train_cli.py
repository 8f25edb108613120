"""`augforge train` and `augforge evaluate`: a run directory, checkpoints, resume after kill -9."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import yaml

from augforge.cli import main
from augforge.train.checkpoint import load_checkpoint
from cli_process import start_cli

RECIPE = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "val_split": 0.1, "imbalance": "longtail"},
    "balance": {"strategy": "over"},
    "augment": {"copies": 1, "color": "gray", "image": [{"op": "pad", "padding": 1}, {"op": "random_crop", "size": 8}]},
    "train": {"model": "simple_cnn", "epochs": 3, "batch_size": 64, "accumulate": 2, "lr": 0.003,
              "schedule": "cosine", "warmup": 0.1, "label_smoothing": 0.1, "swa_start": 2},
}


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_writes_a_run_directory_and_evaluate_agrees(tmp_path, capsys):
    recipe = write(tmp_path, {**RECIPE, "train": {**RECIPE["train"], "tensorboard": True}})
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run), "--data", str(tmp_path / "data")]) == 0
    summary = json.loads((run / "summary.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "wall_s", "input_bound"):
        assert key in summary
    assert summary["accuracy"] > 0.7 and summary["epochs"] == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "balanced_accuracy" in json.loads(lines[-1])["val"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 3 and len(events.Scalars("val/balanced_accuracy")) == 3
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True
    assert state["trainer"]["epoch"] == 3 and state["trainer"]["snapshots"] == 1
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), str(tmp_path / "data"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(summary["accuracy"])
    assert main(["train", str(recipe), "--run-dir", str(run), "--data", str(tmp_path / "data")]) == 1
    assert "pass --resume" in capsys.readouterr().err
    state["loader"]["world_size"] = 4  # as if written by a 4-process run: its schedule counted other steps
    torch.save(state, run / "checkpoints" / "last.pt")
    assert main(["train", str(recipe), "--run-dir", str(run), "--data", str(tmp_path / "data"), "--resume"]) == 0
    assert "resumed on 1 process(es) a run of 4: each epoch is now" in capsys.readouterr().out



def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path):
    data = {**RECIPE, "train": {**RECIPE["train"], "epochs": 4, "swa_start": None}}
    recipe = write(tmp_path, data)
    run = lambda out, *extra: start_cli(  # noqa: E731
        ["train", str(recipe), "--run-dir", str(out), "--data", str(tmp_path / "data"), *extra])
    assert run(tmp_path / "full").wait(timeout=300) == 0
    proc = run(tmp_path / "killed")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 200
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert run(tmp_path / "killed", "--resume").wait(timeout=300) == 0
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_bad_train_sections(tmp_path, capsys):
    recipe = write(tmp_path, {**RECIPE, "train": {"epochs": 2, "optimiser": "sgd"}})
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "r")]) == 1
    assert "train.optimiser: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_lr_find_sweeps_suggests_and_plots(tmp_path, capsys):
    from PIL import Image

    from augforge.train.loop import TrainConfig
    from augforge.experiments.lr_find import lr_find
    from augforge.models import create

    recipe = write(tmp_path, RECIPE)
    png = tmp_path / "lr.png"
    assert main(["lr-find", str(recipe), "--data", str(tmp_path / "data"), "--steps", "40", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "suggested initial lr" in out
    with Image.open(png) as img:
        assert img.size == (700, 400)
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0).long()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    model = create("mlp", 2, in_channels=6)
    before = [p.clone() for p in model.parameters()]
    result = lr_find(model, batches, TrainConfig(optimizer="sgd"), start=1e-4, end=10, steps=60)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the sweep used a copy
    assert result.lrs == sorted(result.lrs) and 1e-4 <= result.suggestion <= 10
    assert min(result.smoothed) < result.smoothed[0]


def test_torchrun_ddp_with_two_cpu_processes_streaming_from_s3(tmp_path):
    """Two processes train from an s3:// dataset (moto's server on 127.0.0.1) that rank 0 builds there: both
    ranks stream it through one shared cache that holds half the shards (a shard-block shuffle), each its
    half of every epoch."""
    from augforge.storage import ObjectStore, parse_url
    from s3_server import S3Server

    data = {**RECIPE, "source": {"path": "digits", "test_split": 0.25, "imbalance": "longtail"},
            "output": {"shard_rows": 200},  # about 40 KB a shard: the cache holds 3 of them
            "train": {"model": "simple_cnn", "epochs": 2, "batch_size": 64, "lr": 0.003, "swa_start": 1}}
    recipe = write(tmp_path, data)
    run = tmp_path / "run"
    server = S3Server()
    before = server.activate()
    try:
        url = f"s3://{server.bucket()}/data"
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                               "augforge", "train", str(recipe), "--run-dir", str(run), "--data", url,
                               "--cache-dir", str(tmp_path / "cache"), "--cache-limit", "150KB", "--shuffle-block",
                               "2", "--predownload", "1"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, [line for line in proc.stderr.splitlines() if "augforge" in line][:6]
        manifest = json.loads(ObjectStore(parse_url(url)).get("manifest.json"))
    finally:
        server.stop()
        server.deactivate(before)
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["world_size"] == 2 for r in records)
    assert records[0]["rows"] == -(-sum(manifest["counts"]["train"].values()) // 2)  # each rank its half
    assert summary["accuracy"] > 0.8 and summary["data"] == url
    cached = [p for p in (tmp_path / "cache").rglob("*.arrow") if ".meta" not in p.parts]
    assert 0 < sum(p.stat().st_size for p in cached) <= 150_000


def test_early_stopping_and_the_data_cache(tmp_path, capsys):
    data = {**RECIPE, "train": {**RECIPE["train"], "epochs": 8, "lr": 0.03, "schedule": "constant", "swa_start": None,
                                "early_stopping_patience": 1}}
    recipe = write(tmp_path, data)
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "a"), "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "built" in out
    scores = [json.loads(line)["val"]["balanced_accuracy"]
              for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    best, expected = scores[0], len(scores)
    for epoch, score in enumerate(scores[1:], start=1):  # the rule: stop at the first epoch without improvement
        if score <= best:
            expected = epoch + 1
            break
        best = score
    assert len(scores) == expected and (("early stopping" in out) == (expected < 8))
    short = {**data, "train": {**data["train"], "epochs": 1}}  # training settings are not part of the data
    again = write(tmp_path, short, "b.yaml")
    assert main(["train", str(again), "--run-dir", str(tmp_path / "b"), "--data", str(tmp_path / "data")]) == 0
    assert "reused" in capsys.readouterr().out
    changed = write(tmp_path, {**short, "augment": {**data["augment"], "copies": 2}}, "c.yaml")
    assert main(["train", str(changed), "--run-dir", str(tmp_path / "c"), "--data", str(tmp_path / "data")]) == 1
    assert "pass --rebuild" in capsys.readouterr().err  # train's own option (it has no --overwrite)
    assert main(["train", str(changed), "--run-dir", str(tmp_path / "c"), "--data", str(tmp_path / "data"),
                 "--rebuild"]) == 0


def test_progress_reaches_logs_when_the_output_is_not_a_terminal():
    from augforge.train.loop import TrainConfig, Trainer
    from augforge.train.progress import EpochProgress

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
    trainer = Trainer(model, TrainConfig(epochs=1), len(data))
    lines = []
    with EpochProgress(trainer, data, "lines", every=0.0, log=lines.append) as batches:
        trainer.train_epoch(batches)
    assert [line.split("  ")[0] for line in lines] == [f"epoch 0: batch {i}/5" for i in range(1, 6)]
    assert all("loss" in line and "rows/s" in line for line in lines)
    quiet = []
    with EpochProgress(trainer, data, "lines", every=3600.0, log=quiet.append) as batches:
        trainer.train_epoch(batches)
    assert quiet == []
