"""`augforge quantize`: int8 (ONNX Runtime static QDQ, per-channel) next to the float model, measured; the
scheme follows the target CPU's arithmetic; the drop check exits non-zero."""

import json
import shutil

import numpy as np
import pytest
import yaml

from augforge.cli import main
from augforge.deploy.int8_target import (EMULATED_CPU, EMULATOR, PROBE_INPUT, arithmetic, cpu_class,
                                        emulator_available, host_cpu, plan_schemes)

MOBILENET = {"model": "mobilenet_v3_small", "model_options": {"alpha": 0.5}, "epochs": 12, "batch_size": 32,
             "lr": 0.005, "stream": [{"op": "resize", "size": 32}]}


def _train(root, name: str, train: dict):
    recipe = {"seed": 0, "source": {"path": "digits", "test_split": 0.2}, "output": {"dir": str(root / "data")},
              "train": train}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--run-dir", str(root / name)]) == 0
    return root / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One simple_cnn (2 epochs) and one MobileNetV3-Small alpha 0.5 run on the digits, trained once for the
    module; each test quantizes its own copy (``_copy``)."""
    root = tmp_path_factory.mktemp("quantize")
    return {"cnn": _train(root, "cnn", {"epochs": 2, "batch_size": 32}), "mobilenet": _train(root, "mobilenet", MOBILENET)}


def _copy(run, tmp_path):
    """A copy of a trained run (its checkpoint and summary, which names the shared data directory)."""
    return shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns("checkpoints", "*.onnx"))


def _quantize(capsys, run, *extra):
    code = main(["quantize", str(run), "--calib-batches", "8", "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _holds(result, name):
    """The int8 model is within a point of the float model, on a model that learned, and is int8-sized."""
    assert result["within"] and result["accuracy_drop_points"] <= 1.0, (name, result)
    assert result["float"]["accuracy"] > 0.9, name  # a model that learned, so the comparison means something
    assert result["int8"]["bytes"] < 0.5 * result["float"]["bytes"]  # int8 weights: measured, not assumed
    assert "QuantizeLinear" in result["qdq_ops"] and result["rows"] == 359


def test_simple_cnn_and_mobilenet_v3_small_quantize_within_the_drop_on_this_cpu(trained, tmp_path, capsys):
    host = host_cpu()
    for name, shared in trained.items():
        run = _copy(shared, tmp_path)
        code, result, _ = _quantize(capsys, run)
        assert code == 0 and result["delivered"] == "int8" and result["qat"] is None and result["kept_float"] == {}
        _holds(result, name)
        scheme = result["scheme"]
        assert scheme["target"] == scheme["host"] == host and result["warning"] is None
        measured = {c["scheme"]: c for c in scheme["candidates"]}
        assert set(measured) == {"u8s8", "u8s7", "u8u8"} and all(c["measured"] == "native" for c in measured.values())
        best = max(c["agreement"] for c in measured.values())
        assert measured[scheme["name"]]["agreement"] == best == scheme["agreement"] and best >= 0.98
        assert scheme["selection_split"] == "train" and result["int8"]["measured"] == "native"
        for side in ("float", "int8"):
            assert result[side]["latency_ms_batch_1"] > 0 and result[side]["latency_ms_batch_64"] > 0
        assert (run / "model.int8.onnx").stat().st_size == result["int8"]["bytes"]
        if name == "mobilenet":
            _keeps_mobilenet_blocks_in_float(capsys, run, scheme["name"])


def test_mobilenet_for_the_other_kind_of_cpu_holds_and_is_measured_with_its_arithmetic(trained, tmp_path, capsys):
    """The target whose u8s8 arithmetic is not this CPU's (avx2 from an exact CPU, vnni from a saturating one):
    u8s8 is measured under the emulator (or left out without it), the exact schemes here; the delivered model
    holds within a point, and the report warns that it was measured on another CPU."""
    host = host_cpu()
    target = "vnni" if arithmetic(host) == "saturating" else "avx2"
    run = _copy(trained["mobilenet"], tmp_path)
    code, result, err = _quantize(capsys, run, "--target", target)
    assert code == 0, err
    _holds(result, "mobilenet")
    scheme = result["scheme"]
    assert scheme["target"] == target and scheme["host"] == host
    assert target in result["warning"] and host in result["warning"]
    u8s8 = next(c for c in scheme["candidates"] if c["scheme"] == "u8s8")
    if emulator_available():
        assert u8s8["measured"] == f"{EMULATOR} -cpu {EMULATED_CPU[arithmetic(target)]}" and u8s8["agreement"] > 0.9
    else:
        assert u8s8["measured"] == "not measured" and u8s8["agreement"] is None
    chosen = next(c for c in scheme["candidates"] if c["scheme"] == scheme["name"])
    assert result["int8"]["measured"] == ("native" if chosen["measured"] == "native" else chosen["measured"])


def _weights_through_dequantize(graph) -> set[str]:
    """The names of the Conv nodes whose weight input comes out of a DequantizeLinear (int8 weights)."""
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {node.name for node in graph.node if node.op_type == "Conv" and node.input[1] in dequantized}


def _keeps_mobilenet_blocks_in_float(capsys, run, scheme: str):
    """--keep-float depthwise hardswish se (with the scheme this CPU's run chose): the report counts what stayed
    float, and the int8 graph has those convolutions on float weights while the others are int8."""
    import onnx
    import torch

    from augforge.models import create
    from augforge.deploy.quantize import float_nodes

    code, result, _ = _quantize(capsys, run, "--keep-float", "depthwise", "hardswish,se", "--scheme", scheme)
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


def test_quantization_aware_fine_tuning_delivers_the_better_int8_model(trained, tmp_path, capsys):
    """--qat-epochs 1: torchao's fake-quantized fine-tuning, exported to an ONNX QDQ model with int8 weights,
    measured like the post-training model; the more accurate of the two is written."""
    import onnx

    run = _copy(trained["cnn"], tmp_path)
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


def test_bad_quantize_options_are_one_line_errors(trained, tmp_path, capsys):
    from augforge.errors import AugforgeError
    from augforge.deploy.quantize import quantize_run

    run = _copy(trained["cnn"], tmp_path)
    assert main(["quantize", str(run), "--keep-float", "attention"]) == 1
    assert "--keep-float attention: expected some of depthwise, hardswish, se" in capsys.readouterr().err
    assert main(["quantize", str(run), "--qat-epochs", "-1"]) == 1
    assert "--qat-epochs -1: expected 0 or more" in capsys.readouterr().err
    with pytest.raises(AugforgeError, match="^target sse4: expected one of auto, avx2, avx512, vnni, arm64"):
        quantize_run(run, target="sse4")
    with pytest.raises(AugforgeError, match="^scheme u8s9: expected auto or one of u8s8, u8s7, u8u8"):
        quantize_run(run, scheme="u8s9")
    with pytest.raises(SystemExit):  # the CLI's choices refuse it before any work
        main(["quantize", str(run), "--target", "riscv"])
    assert "invalid choice: 'riscv'" in capsys.readouterr().err
    assert not (run / "model.int8.onnx").exists()  # nothing half-written


def test_a_drop_past_the_limit_exits_non_zero(trained, tmp_path, capsys):
    run = _copy(trained["cnn"], tmp_path)
    code, result, err = _quantize(capsys, run, "--max-drop", "-100")  # no int8 model can gain 100 points
    assert code == 1 and not result["within"] and "more than --max-drop -100" in err


FLAGS = {  # /proc/cpuinfo flags (abridged) of the CPUs augforge is used on
    "avx2": {"sse4_1", "avx", "avx2", "fma"},                               # AMD Zen 2/3, Intel Haswell..Skylake client
    "avx512": {"avx2", "avx512f", "avx512bw", "avx512vl"},                  # Intel Skylake-SP
    "vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni"},                 # Intel Cascade Lake+, AMD Zen 4
    "avx_vnni": {"avx2", "avx_vnni"},                                       # Intel Alder Lake
    "sse": {"sse4_1", "sse4_2"},                                            # pre-Haswell
}


def test_the_cpu_class_comes_from_the_flags_and_the_machine(tmp_path):
    from augforge.deploy.int8_target import cpu_flags

    assert cpu_class(FLAGS["avx2"], "x86_64") == "avx2"
    assert cpu_class(FLAGS["avx512"], "x86_64") == "avx512"
    assert cpu_class(FLAGS["vnni"], "x86_64") == cpu_class(FLAGS["avx_vnni"], "x86_64") == "vnni"
    assert cpu_class(FLAGS["sse"], "x86_64") == "sse"
    assert cpu_class(set(), "aarch64") == cpu_class({"asimd", "asimddp"}, "arm64") == "arm64"
    assert [arithmetic(c) for c in ("avx2", "avx512", "vnni", "arm64", "sse")] == \
        ["saturating", "saturating", "exact", "exact", "exact"]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_1 avx avx2 fma\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse4_1 avx avx2 fma\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse4_1", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("target", ["avx2", "avx512", "vnni", "arm64"])
@pytest.mark.parametrize("host", ["avx2", "avx512", "vnni", "arm64", "sse"])
@pytest.mark.parametrize("emulator", [True, False])
def test_the_scheme_plan_for_every_target_host_and_emulator(target, host, emulator):
    """The pure decision: u8s7 and u8u8 are exact, so measured here for any target; u8s8 is measured here when
    this CPU adds its products as the target does, emulated when not, and left out without an emulator."""
    plans = {p.scheme: p for p in plan_schemes(target, host, emulator)}
    assert list(plans) == ["u8s8", "u8s7", "u8u8"]
    assert plans["u8s7"].where == plans["u8u8"].where == "native"
    same = (target in ("avx2", "avx512")) == (host in ("avx2", "avx512"))
    if same:
        assert plans["u8s8"].where == "native"
    elif emulator:
        assert plans["u8s8"].where == f"qemu-x86_64 -cpu {'Haswell' if target in ('avx2', 'avx512') else 'Westmere'}"
    else:
        assert plans["u8s8"].where is None and "left out" in plans["u8s8"].reason
    assert target in plans["u8s8"].reason and host in plans["u8s8"].reason


def test_choose_scheme_takes_the_most_agreement_and_breaks_ties_to_the_faster():
    from augforge.deploy.int8_target import choose_scheme

    assert choose_scheme({"u8s8": 0.95, "u8s7": 0.99, "u8u8": 0.99}) == "u8s7"
    assert choose_scheme({"u8s7": 0.98, "u8u8": 0.99}) == "u8u8"
    assert choose_scheme({"u8s8": 1.0, "u8s7": 1.0, "u8u8": 1.0}) == "u8s8"


def _dot_probe(path, weight: int, dtype: str):
    """``dot_probe`` written to ``path``: argmax 0 when the dot product is summed exactly, 1 when lower."""
    from augforge.deploy.int8_target import dot_probe

    path.write_bytes(dot_probe(weight, dtype))
    return path


def test_this_cpu_and_the_emulated_ones_add_int8_products_as_the_plan_says(tmp_path):
    """The plan's premises, on real ONNX Runtime kernels: u8s8 (255 x 127) saturates on this CPU exactly when
    its class is a saturating one, and under each emulated CPU model as that model's arithmetic says; u8s7's
    bound (255 x 64 and x -64) and u8u8 (255 x 255) are exact everywhere."""
    from augforge.deploy.int8_predict import predict

    probes = {"u8s8": _dot_probe(tmp_path / "u8s8.onnx", 127, "int8"),
              "u8s7+": _dot_probe(tmp_path / "u8s7+.onnx", 64, "int8"),
              "u8s7-": _dot_probe(tmp_path / "u8s7-.onnx", -64, "int8"),
              "u8u8": _dot_probe(tmp_path / "u8u8.onnx", 255, "uint8")}
    batch = [(np.array([PROBE_INPUT], np.uint8),)]

    def expected(kind):
        return {"u8s8": [1 if kind == "saturating" else 0], "u8s7+": [0], "u8s7-": [0], "u8u8": [0]}

    here = predict(probes, batch)
    assert {name: p.tolist() for name, p in here.items()} == expected(arithmetic(host_cpu()))
    assert emulator_available(), f"{EMULATOR} is missing: scripts/setup.sh installs Debian's qemu-user (as root)"
    for kind, cpu in EMULATED_CPU.items():
        emulated = predict(probes, batch, f"{EMULATOR} -cpu {cpu}")
        assert {name: p.tolist() for name, p in emulated.items()} == expected(kind), cpu


def test_a_scheme_asked_for_is_the_one_delivered_and_u8s7_weights_keep_their_bound(trained, tmp_path, capsys):
    """--scheme u8s7: only that scheme is quantized and measured, and every int8 convolution weight lies in
    [-64, 64], where 2 x 255 x 64 = 32640 cannot saturate an int16 pair sum."""
    import onnx
    from onnx import numpy_helper

    run = _copy(trained["cnn"], tmp_path)
    code, result, _ = _quantize(capsys, run, "--scheme", "u8s7")
    assert code == 0 and result["within"] and result["scheme"]["name"] == "u8s7"
    assert result["scheme"]["asked"] == "u8s7" and [c["scheme"] for c in result["scheme"]["candidates"]] == ["u8s7"]
    model = onnx.load(str(run / "model.int8.onnx"))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert weights and min(int(w.min()) for w in weights) >= -64 and max(int(w.max()) for w in weights) <= 64
    assert max(int(np.abs(w).max()) for w in weights) == 64  # the bound is used, not a narrower range
