"""`augforge quantize`: int8 (ONNX Runtime static QDQ, per-channel) next to the float model, measured; the
drop check exits non-zero."""

import json

import yaml

from augforge.cli import main


def _train(tmp_path, capsys, name: str, train: dict):
    recipe = {"seed": 0, "source": {"path": "digits", "test_split": 0.2}, "output": {"dir": str(tmp_path / "data")},
              "train": train}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--run-dir", str(tmp_path / name)]) == 0
    capsys.readouterr()
    return tmp_path / name


def _quantize(capsys, run, *extra):
    code = main(["quantize", str(run), "--calib-batches", "8", "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_simple_cnn_and_mobilenet_v3_small_quantize_within_the_drop(tmp_path, capsys):
    runs = {
        "cnn": _train(tmp_path, capsys, "cnn", {"epochs": 2, "batch_size": 32}),
        "mobilenet": _train(tmp_path, capsys, "mobilenet", {
            "model": "mobilenet_v3_small", "model_options": {"alpha": 0.5}, "epochs": 12, "batch_size": 32,
            "lr": 0.002, "stream": [{"op": "resize", "size": 32}]}),
    }
    for name, run in runs.items():
        code, result, _ = _quantize(capsys, run)
        assert code == 0 and result["within"] and result["accuracy_drop_points"] <= 1.0, (name, result)
        assert result["float"]["accuracy"] > 0.5, name  # a model that learned, so the comparison means something
        assert result["int8"]["bytes"] < 0.5 * result["float"]["bytes"]  # int8 weights: measured, not assumed
        assert "QuantizeLinear" in result["qdq_ops"] and result["rows"] == 359
        for side in ("float", "int8"):
            assert result[side]["latency_ms_batch_1"] > 0 and result[side]["latency_ms_batch_64"] > 0
        assert (run / "model.int8.onnx").stat().st_size == result["int8"]["bytes"]


def test_a_drop_past_the_limit_exits_non_zero(tmp_path, capsys):
    run = _train(tmp_path, capsys, "cnn", {"epochs": 1, "batch_size": 32})
    code, result, err = _quantize(capsys, run, "--max-drop", "-100")  # no int8 model can gain 100 points
    assert code == 1 and not result["within"] and "more than --max-drop -100" in err
