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
        assert result["delivered"] == "int8" and result["qat"] is None and result["kept_float"] == {}
        assert code == 0 and result["within"] and result["accuracy_drop_points"] <= 1.0, (name, result)
        assert result["float"]["accuracy"] > 0.5, name  # a model that learned, so the comparison means something
        assert result["int8"]["bytes"] < 0.5 * result["float"]["bytes"]  # int8 weights: measured, not assumed
        assert "QuantizeLinear" in result["qdq_ops"] and result["rows"] == 359
        for side in ("float", "int8"):
            assert result[side]["latency_ms_batch_1"] > 0 and result[side]["latency_ms_batch_64"] > 0
        assert (run / "model.int8.onnx").stat().st_size == result["int8"]["bytes"]
    _keeps_mobilenet_blocks_in_float(capsys, runs["mobilenet"])


def _weights_through_dequantize(graph) -> set[str]:
    """The names of the Conv nodes whose weight input comes out of a DequantizeLinear (int8 weights)."""
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {node.name for node in graph.node if node.op_type == "Conv" and node.input[1] in dequantized}


def _keeps_mobilenet_blocks_in_float(capsys, run):
    """--keep-float depthwise hardswish se: the report counts what stayed float, and the int8 graph has those
    convolutions on float weights while the others are int8."""
    import onnx
    import torch

    from augforge.train.models import create
    from augforge.train.quantize import float_nodes

    code, result, _ = _quantize(capsys, run, "--keep-float", "depthwise", "hardswish,se")
    assert code == 0 and result["within"], result
    model = create("mobilenet_v3_small", 10, alpha=0.5, in_channels=1)
    depthwise = sum(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())
    kept = result["kept_float"]
    assert kept["depthwise"] == depthwise and kept["hardswish"] > 0 and kept["se"] > 0
    graph = onnx.load(str(run / "model.int8.onnx")).graph
    names = float_nodes(graph, ["depthwise", "se"])
    int8_convs = _weights_through_dequantize(graph)
    assert names["depthwise"] and not int8_convs & set(names["depthwise"]) and not int8_convs & set(names["se"])
    assert int8_convs  # the pointwise convolutions are still int8


def test_quantization_aware_fine_tuning_delivers_the_better_int8_model(tmp_path, capsys):
    """--qat-epochs 1: torchao's fake-quantized fine-tuning, exported to an ONNX QDQ model with int8 weights,
    measured like the post-training model; the more accurate of the two is written."""
    import onnx

    run = _train(tmp_path, capsys, "cnn", {"epochs": 2, "batch_size": 32})
    code, result, _ = _quantize(capsys, run, "--qat-epochs", "1")
    assert code == 0 and result["qat"]["epochs"] == 1 and result["qat"]["steps"] == 1437 // 64
    qat, ptq = result["int8_qat"], result["int8"]
    assert qat["accuracy"] > 0.5 and qat["bytes"] < 0.5 * result["float"]["bytes"]
    control = result["float_finetuned"]  # the same epochs without fake quantization: a float-sized model
    assert control["accuracy"] > 0.5 and control["bytes"] > 2 * qat["bytes"]
    assert result["delivered"] == ("int8_qat" if qat["accuracy"] > ptq["accuracy"] else "int8")
    assert (run / "model.int8.onnx").stat().st_size == result[result["delivered"]]["bytes"]
    assert result["accuracy_drop_points"] == 100 * (result["float"]["accuracy"] - result[result["delivered"]]["accuracy"])
    model = onnx.load(str(run / "model.int8.onnx"))
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)  # int8 weights, stored


def test_bad_quantize_options_are_one_line_errors(tmp_path, capsys):
    run = _train(tmp_path, capsys, "cnn", {"epochs": 1, "batch_size": 32})
    assert main(["quantize", str(run), "--keep-float", "attention"]) == 1
    assert "--keep-float attention: expected some of depthwise, hardswish, se" in capsys.readouterr().err
    assert main(["quantize", str(run), "--qat-epochs", "-1"]) == 1
    assert "--qat-epochs -1: expected 0 or more" in capsys.readouterr().err


def test_a_drop_past_the_limit_exits_non_zero(tmp_path, capsys):
    run = _train(tmp_path, capsys, "cnn", {"epochs": 1, "batch_size": 32})
    code, result, err = _quantize(capsys, run, "--max-drop", "-100")  # no int8 model can gain 100 points
    assert code == 1 and not result["within"] and "more than --max-drop -100" in err
