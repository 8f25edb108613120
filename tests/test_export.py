"""`augforge export`: a run's model as ONNX (run back with ONNX Runtime) and torch.export, checked against
PyTorch on real test batches, with dynamic batch sizes and token lengths; refusals in one line."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from augforge.cli import main
from augforge.errors import AugforgeError
from augforge.deploy.export import _export
from augforge.train.restore import evaluate_checkpoint


def _run(tmp_path, capsys, recipe: dict, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--run-dir", str(tmp_path / name)]) == 0
    capsys.readouterr()
    return tmp_path / name


def _export_cli(capsys, run, fmt):
    assert main(["export", str(run), "--format", fmt, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_image_run_exports_to_both_formats_and_matches_pytorch(tmp_path, capsys):
    run = _run(tmp_path, capsys, {"seed": 0, "source": {"path": "digits", "test_split": 0.2},
                                  "output": {"dir": str(tmp_path / "data")},
                                  "train": {"epochs": 1, "batch_size": 32}}, "digits")
    for fmt in ("pt2", "onnx"):
        result = _export_cli(capsys, run, fmt)
        assert result["rows"] == 256 and result["same_predictions"] and result["max_abs_diff"] < 1e-4
        assert (run / f"model.{fmt}").stat().st_size == result["bytes"] > 100_000
    # the files stand alone: other batch sizes, the loader's uint8 images as they come
    from augforge.pipelines.stream import open_loader

    x, _ = next(iter(open_loader(tmp_path / "data", 7, split="test", shuffle=False)))
    program = torch.export.load(str(run / "model.pt2")).module()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert x.dtype == torch.uint8 and np.allclose(program(x).detach().numpy(), onnx_out, atol=1e-4)
    metrics = evaluate_checkpoint(run / "model.pt", tmp_path / "data")
    assert metrics["rows"] == 359  # the export left the checkpoint as it was


def test_a_text_run_exports_with_dynamic_token_lengths(tmp_path, capsys):
    shutil.copy("examples/tickets.csv", tmp_path / "tickets.csv")
    run = _run(tmp_path, capsys, {"seed": 0, "source": {"path": str(tmp_path / "tickets.csv"), "text_col": "text",
                                                         "test_split": 0.3},
                                  "output": {"dir": str(tmp_path / "data")},
                                  "train": {"epochs": 1, "model": "fasttext", "model_options": {"embed_dim": 8},
                                            "text": {"buckets": 4096}}}, "tickets")
    for fmt in ("pt2", "onnx"):
        result = _export_cli(capsys, run, fmt)
        assert result["same_predictions"] and result["max_abs_diff"] < 1e-5
    program = torch.export.load(str(run / "model.pt2")).module()
    ids = torch.randint(2, 4098, (3, 41))
    lengths = torch.tensor([41, 9, 1])
    model_out = program(ids, lengths)
    ids2 = ids.clone()
    ids2[1, 9:] = 0  # padding past a row's length changes nothing
    assert model_out.shape == (3, 4) and torch.allclose(program(ids2, lengths), model_out)


def test_refusals_are_one_line(tmp_path, capsys):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # control flow on a value: torch.export cannot trace it
                return x * 2
            return x

    with pytest.raises(AugforgeError, match="cannot be exported to pt2"):
        _export(DataDependent(), (torch.ones(2, 3),), "pt2", tmp_path / "m.pt2", "toy")
    assert not (tmp_path / "m.pt2").exists()  # nothing half-written
    assert main(["export", str(tmp_path)]) == 1
    assert "no model.pt" in capsys.readouterr().err
