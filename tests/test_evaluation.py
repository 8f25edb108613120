"""Numbers users can trust: evaluation never applies a random op, checkpoints carry their preprocessing,
`augforge evaluate` equals the run's summary, and one device decision serves loader, model and evaluation."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from augforge.augment.image_ops import DETERMINISTIC, OPS, evaluation_ops
from augforge.augment.ops import REQUIRED
from augforge.cli import main
from augforge.device import Device, choose_device
from augforge.errors import AugforgeError
from augforge.pipelines.build import build
from augforge.pipelines.loader_ops import convert_channels, parse_ops
from augforge.pipelines.stream import open_loader
from augforge.recipe import parse_recipe
from augforge.train import run as run_module
from augforge.train.checkpoint import load_checkpoint
from augforge.train.progress import input_bound_hint
from augforge.train.restore import evaluate_checkpoint

GREY = {
    "seed": 0,
    "source": {"path": "digits", "test_split": 0.25, "val_split": 0.1},
    "augment": {"color": "gray"},
    "output": {"format": "png"},
    "train": {"model": "simple_cnn", "epochs": 2, "batch_size": 64, "lr": 0.003,
              "stream": [{"op": "rotate", "degrees": 45}, {"op": "normalize", "mean": [0.5], "std": [0.25]}]},
}
RGB = {
    **GREY,
    "augment": {"color": "rgb"},
    "train": {**GREY["train"], "stream": [
        {"op": "random_resized_crop", "size": 8, "scale": [0.6, 1.0]}, {"op": "hflip", "p": 0.5},
        {"op": "color", "brightness": [0.6, 1.4]}, {"op": "normalize"}]},
}


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.fixture(scope="module")
def grey_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("grey") / "data"
    build(parse_recipe(GREY, "r.yaml"), out)
    return out


# -- 1. random augmentation never reaches evaluation ------------------------------------------------------------


def test_evaluation_loaders_never_apply_random_ops(grey_data):
    ops = GREY["train"]["stream"]
    a = batches(open_loader(grey_data, 64, split="test", ops=ops, seed=1, shuffle=False))
    b = batches(open_loader(grey_data, 64, split="test", ops=ops, seed=2, shuffle=False))
    plain = batches(open_loader(grey_data, 64, split="test", ops=[ops[1]], shuffle=False))
    assert all(torch.equal(x1, x2) and torch.equal(x1, x3) for (x1, _), (x2, _), (x3, _) in zip(a, b, plain))
    loader = open_loader(grey_data, 64, split="test", recipe=parse_recipe(GREY, "r.yaml"))
    assert [op.name for op in loader.ops] == ["normalize"] and not loader.augment
    # the train split augments by default, and not when asked to evaluate
    t1 = batches(open_loader(grey_data, 64, ops=ops, seed=1, shuffle=False))
    t2 = batches(open_loader(grey_data, 64, ops=ops, seed=2, shuffle=False))
    assert any(not torch.equal(x1, x2) for (x1, _), (x2, _) in zip(t1, t2))
    e1 = batches(open_loader(grey_data, 64, ops=ops, seed=1, shuffle=False, augment=False))
    e2 = batches(open_loader(grey_data, 64, ops=ops, seed=2, shuffle=False, augment=False))
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(e1, e2))


def test_evaluation_ops_keep_the_deterministic_part():
    ops = parse_ops([{"op": "pad", "padding": 2}, {"op": "random_crop", "size": 8, "fill": 7},
                     {"op": "random_resized_crop", "size": [6, 4]}, {"op": "grayscale", "p": 0.3},
                     {"op": "rotate", "degrees": 10}, {"op": "resize", "size": 6, "p": 0.5},
                     {"op": "normalize"}], "ops")
    kept = evaluation_ops(ops)
    assert [(op.name, op.params.get("size")) for op in kept] == [
        ("pad", None), ("center_crop", (8, 8)), ("resize", (4, 4)), ("center_crop", (6, 4)), ("normalize", None)]
    assert kept[1].params["fill"] == 7 and all(op.p == 1.0 for op in kept)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(set(OPS) - {"normalize"})), st.sampled_from([0.0, 0.5, 1.0])),
                max_size=6))
def test_evaluation_ops_are_deterministic_and_idempotent(entries):
    raw = []
    for name, p in entries:
        required = {k: 4 for k, prm in OPS[name].params.items() if prm.default is REQUIRED}
        raw.append({"op": name, "p": p, **required})
    ops = parse_ops(raw, "ops")
    kept = evaluation_ops(ops)
    assert all(op.name in DETERMINISTIC and op.p == 1.0 for op in kept)
    assert evaluation_ops(kept) == kept


def test_the_fallback_dataset_does_not_augment_other_splits(grey_data):
    from augforge.pipelines.fallback import FallbackDataset

    ops = [{"op": "rotate", "degrees": 45}, {"op": "hflip"}]
    a, b = (FallbackDataset(grey_data, split="test", ops=ops, seed=s) for s in (1, 2))
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(20))
    plain = FallbackDataset(grey_data, split="test")
    assert all(torch.equal(a[i][0], plain[i][0]) for i in range(20))


# -- 2. checkpoints carry what evaluation needs; evaluate equals the summary --------------------------------------


def _train(tmp_path, recipe, name):
    path = write(tmp_path, recipe, f"{name}.yaml")
    run, data = tmp_path / f"run-{name}", tmp_path / f"data-{name}"
    assert main(["train", str(path), "--run-dir", str(run), "--data", str(data), "--threads", "2"]) == 0
    return run, data, json.loads((run / "summary.json").read_text())


def _evaluate_cli(capsys, checkpoint, data, *extra):
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), str(data), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "recall", "confusion", "rows")


@pytest.mark.parametrize("recipe", [GREY, RGB], ids=["grey", "rgb"])
def test_evaluate_equals_the_summary_for_image_runs_with_stream_ops(tmp_path, capsys, recipe):
    run, data, summary = _train(tmp_path, recipe, "img")
    assert summary["accuracy"] > 0.3 and summary["device"] == "cpu" and summary["threads"] == 2
    metrics = _evaluate_cli(capsys, run / "model.pt", data)
    assert {k: metrics[k] for k in METRICS} == {k: summary[k] for k in METRICS}
    state = load_checkpoint(run / "model.pt")
    channels = 1 if recipe is GREY else 3
    assert state["input"]["channels"] == channels and state["input"]["shape"] == [channels, 8, 8]
    assert [op["op"] for op in state["input"]["ops"]] == (["normalize"] if recipe is GREY else
                                                          ["resize", "center_crop", "normalize"])
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["input"]["ops"] == state["input"]["ops"]
    val = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val"]
    val_now = evaluate_checkpoint(run / "checkpoints" / "last.pt", data, "val")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["epoch"] == 2
    assert val_now["accuracy"] == val["accuracy"]  # last.pt holds the weights validated in the last epoch


def test_a_grey_model_evaluates_on_an_rgb_build_and_back(tmp_path, capsys):
    run, grey, summary = _train(tmp_path, GREY, "grey")
    rgb = tmp_path / "rgb"
    build(parse_recipe({**GREY, "augment": {"color": "rgb"}}, "r.yaml"), rgb)
    on_rgb = _evaluate_cli(capsys, run / "model.pt", rgb)  # RGB converted to the grey the model was trained on
    assert {k: on_rgb[k] for k in METRICS} == {k: summary[k] for k in METRICS}
    # an RGB model on a grey build: grey levels repeated into three channels, as the RGB build holds them
    rgb_run, rgb_data, rgb_summary = _train(tmp_path, {**GREY, "augment": {"color": "rgb"}}, "rgb")
    on_grey = _evaluate_cli(capsys, rgb_run / "model.pt", grey)
    assert {k: on_grey[k] for k in METRICS} == {k: rgb_summary[k] for k in METRICS}


def test_conversions_between_grey_and_rgb():
    grey = torch.randint(0, 256, (2, 5, 4, 1), dtype=torch.uint8)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (2, 5, 4, 3) and torch.equal(rgb[..., 1:2], grey)
    assert torch.equal(convert_channels(rgb, 1), grey)  # luma of a grey pixel is itself
    colour = torch.tensor([[[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]], dtype=torch.uint8)
    assert convert_channels(colour, 1).flatten().tolist() == [76, 150, 29]


def test_evaluate_refuses_what_it_cannot_reproduce(tmp_path, capsys, text_csv):
    run, grey, _ = _train(tmp_path, {**GREY, "train": {**GREY["train"], "epochs": 1}}, "grey")
    folder = tmp_path / "big"  # 16x16 digits: the model saw 8x8, and its preprocessing has no resize
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16), 16 * c + i, dtype=np.uint8)).save(folder / str(c) / f"{i}.png")
    big = tmp_path / "big-data"
    assert main(["ingest", str(folder), str(big), "--test-split", "0.5", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), str(big)]) == 1
    err = capsys.readouterr().err
    assert "shape 1x16x16" in err and "1x8x8" in err and err.count("\n") == 1
    texts = tmp_path / "texts"
    assert main(["ingest", str(text_csv), str(texts), "--text-col", "review", "--label-col", "sentiment",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), str(texts), "--split", "train"]) == 1
    assert "holds text rows" in capsys.readouterr().err
    old = tmp_path / "old.pt"  # a checkpoint of an older augforge: weights and arch, no input spec
    state = load_checkpoint(run / "model.pt")
    torch.save({"model": state["model"], "arch": state["arch"]}, old)
    assert main(["evaluate", str(old), str(grey)]) == 1
    assert "no input spec" in capsys.readouterr().err


@pytest.mark.parametrize("model, tokenizer", [("text_bilstm", "wordpiece"), ("fasttext", "auto"),
                                              ("text_transformer", "auto")])
def test_text_runs_keep_their_encoder_and_evaluate_equals_the_summary(tmp_path, capsys, model, tokenizer):
    csv = tmp_path / "tickets.csv"
    shutil.copy("examples/tickets.csv", csv)
    options = {"text_bilstm": {"vocab_size": 100, "embed_dim": 32, "hidden": 32},
               "text_transformer": {"vocab_size": 120, "d_model": 32, "heads": 2, "layers": 1, "max_len": 16},
               "fasttext": {"embed_dim": 16}}[model]
    recipe = {"seed": 0, "source": {"path": str(csv), "text_col": "text", "label_col": "label",
                                    "test_split": 0.2, "val_split": 0.1},
              "train": {"model": model, "model_options": options, "epochs": 2, "batch_size": 64, "lr": 0.01,
                        "text": {"tokenizer": tokenizer, "buckets": 5000, "max_tokens": 12, "truncate": "head+tail"}}}
    run, data, summary = _train(tmp_path, recipe, "text")
    state = load_checkpoint(run / "model.pt")
    spec = state["input"]["text"]
    assert state["input"]["payload"] == "text" and spec["kind"] == {"fasttext": "hashed", "text_transformer": "bpe"}.get(model, tokenizer)
    size = state["arch"]["options"].get("vocab_size")
    assert size == (5002 if model == "fasttext" else options["vocab_size"])  # the model's ids are the encoder's
    assert summary["text"]["train"]["truncated"] > 0 and summary["text"]["max_tokens"] == 12
    metrics = _evaluate_cli(capsys, run / "model.pt", data)
    assert {k: metrics[k] for k in METRICS} == {k: summary[k] for k in METRICS}
    # another build's train split would fit another tokenizer: evaluate keeps the checkpoint's
    other = tmp_path / "other"
    build(parse_recipe({**recipe, "seed": 5}, "r.yaml"), other)
    kept = open_loader(other, 256, split="test", shuffle=False, text=spec)
    assert kept.encoder.spec() == spec
    old = tmp_path / "old.pt"  # a checkpoint of an older augforge: a word list, no encoder
    torch.save({**state, "input": {"payload": "text", "vocab": ["a", "b"]}}, old)
    assert main(["evaluate", str(old), str(data)]) == 1
    assert "records no text encoder" in capsys.readouterr().err


# -- 3. one device decision ------------------------------------------------------------------------------------


def test_the_device_decision(monkeypatch):
    monkeypatch.setattr("augforge.device.cuda_available", lambda: False)
    assert choose_device("auto") == Device("cpu") and choose_device("auto").dali == "cpu"
    with pytest.raises(AugforgeError, match="no CUDA device"):
        choose_device("cuda")
    with pytest.raises(AugforgeError, match="fp16 needs a GPU"):
        choose_device("auto").check_precision("fp16")
    monkeypatch.setattr("augforge.device.cuda_available", lambda: True)
    gpu = choose_device("auto")
    assert gpu == Device("cuda") and gpu.dali == "gpu" and str(gpu.torch) == "cuda:0" and gpu.is_cuda
    assert choose_device("cuda:1").index == 1 and choose_device(gpu) is gpu
    gpu.check_precision("fp16")


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_loader_model_and_evaluation_share_one_device_object(tmp_path, monkeypatch, device):
    monkeypatch.setattr("augforge.device.cuda_available", lambda: False)
    seen = {}
    real_open, real_trainer = run_module.open_loaders, run_module.Trainer

    def open_loaders(*args):
        seen["loaders"] = real_open(*args)
        return seen["loaders"]

    class Trainer(real_trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainer"] = self

    monkeypatch.setattr(run_module, "open_loaders", open_loaders)
    monkeypatch.setattr(run_module, "Trainer", Trainer)
    recipe = parse_recipe({**GREY, "train": {**GREY["train"], "epochs": 1, "device": device}}, "r.yaml")
    run_module.train_recipe(recipe, tmp_path / "run", data=tmp_path / "data", log=lambda _: None)
    train, val, test = seen["loaders"]
    placement = seen["trainer"].placement
    assert train.device is placement and val.device is placement and test.device is placement
    assert seen["trainer"].device == placement.torch and next(seen["trainer"].module.parameters()).device.type == "cpu"


def test_fp16_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("augforge.device.cuda_available", lambda: False)
    cpu = write(tmp_path, {**GREY, "train": {**GREY["train"], "precision": "fp16", "device": "cpu"}})
    assert main(["train", str(cpu), "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "d")]) == 1
    assert "train.precision: fp16 needs a GPU" in capsys.readouterr().err
    auto = write(tmp_path, {**GREY, "train": {**GREY["train"], "precision": "fp16"}}, "auto.yaml")
    assert main(["train", str(auto), "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "d")]) == 1
    assert "fp16 needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


# -- 5. hints that are true -------------------------------------------------------------------------------------


def test_the_input_bound_hint_is_true_for_the_situation(grey_data, monkeypatch):
    loader = open_loader(grey_data, 64, ops=GREY["train"]["stream"])
    monkeypatch.setattr("augforge.device.cuda_available", lambda: False)
    monkeypatch.setattr("augforge.train.progress.cuda_available", lambda: False)
    hint = input_bound_hint(Device("cpu"), "auto", 1, loader)
    assert "GPU" not in hint and "device" not in hint and "augment.mode: offline" in hint and "rotate" in hint
    monkeypatch.setattr("augforge.train.progress.cuda_available", lambda: True)
    assert "set train.device: auto" in input_bound_hint(Device("cpu"), "cpu", 1, loader)
