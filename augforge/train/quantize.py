"""`augforge quantize RUN_DIR`: int8 with ONNX Runtime's static QDQ quantization, measured against float.

The path: the run's model is exported to ONNX (``augforge.train.export``), pre-processed (shape
inference, graph optimisation), calibrated on ``--calib-batches`` training batches (min-max of the
activations), and quantized statically to QDQ with per-channel int8 weights and uint8 activations,
ONNX Runtime's current, non-deprecated path on a CPU. (torchao's PT2E flow is the other current path;
it is not installed here, so it was not measured.)

The report puts the int8 model next to the float ONNX model, both run by ONNX Runtime on the test split:
accuracy and balanced accuracy, file size, and CPU latency at batch 1 and batch 64 (median of timed
runs after a warm-up). If the int8 accuracy is more than ``max_drop`` points below the float accuracy,
the command says so and exits non-zero.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError

LATENCY_RUNS = 20
#: the blocks ``--keep-float`` can leave in float (MobileNetV3's known int8 trouble spots)
FLOAT_BLOCKS = ("depthwise", "hardswish", "se")
#: how many nodes past a pooling node a squeeze-excitation's rescaling multiply may lie
SE_DEPTH = 8


def float_nodes(graph, blocks) -> dict[str, list[str]]:
    """The names of the ONNX ``graph``'s nodes in each of ``blocks``: ``depthwise`` convolutions (group > 1),
    ``hardswish`` (HardSwish and HardSigmoid) and ``se``, the squeeze-excitation branches: a global pooling
    node, the nodes it feeds, and the multiply that rescales the pooled tensor's own input."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: dict[str, list[str]] = {block: [] for block in blocks}
    for node in graph.node:
        if "depthwise" in found and node.op_type == "Conv" and any(
                a.name == "group" and a.i > 1 for a in node.attribute):
            found["depthwise"].append(node.name)
        if "hardswish" in found and node.op_type in ("HardSwish", "HardSigmoid"):
            found["hardswish"].append(node.name)
        if "se" in found and node.op_type in ("GlobalAveragePool", "ReduceMean"):
            found["se"] += _excitation(node, consumers)
    return {block: sorted(set(names)) for block, names in found.items()}


def _excitation(pool, consumers: dict) -> list[str]:
    """The nodes from ``pool`` to the multiply that takes the pool's own input, or [] (not an SE branch)."""
    source = pool.input[0]
    frontier, seen, paths = [(pool, [pool.name])], set(), []
    for _ in range(SE_DEPTH):
        following = []
        for node, path in frontier:
            for nxt in (c for out in node.output for c in consumers.get(out, [])):
                if nxt.op_type == "Mul" and source in nxt.input:
                    paths.append(path + [nxt.name])
                elif nxt.name not in seen:
                    seen.add(nxt.name)
                    following.append((nxt, path + [nxt.name]))
        frontier = following
    return [name for path in paths for name in path]


def _feeds(session, inputs: tuple) -> dict:
    return {i.name: np.ascontiguousarray(x.cpu().numpy()) for i, x in zip(session.get_inputs(), inputs)}


def median_ms(call, runs: int = LATENCY_RUNS, warmup: int = 3) -> float:
    """The median wall time of ``call()`` in milliseconds, over ``runs`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _latency_ms(session, inputs: tuple) -> float:
    feeds = _feeds(session, inputs)
    return median_ms(lambda: session.run(None, feeds))


def _batch_of(loader_batches: list[tuple], size: int) -> tuple:
    """``size`` rows cut from the collected test batches (the first input of each kind)."""
    import torch

    parts = [torch.cat([b[i] for b in loader_batches])[:size] for i in range(len(loader_batches[0]))]
    return tuple(parts)


def quantize_run(run: str | Path, out: str | Path | None = None, data: str | Path | None = None,
                 calib_batches: int = 16, max_drop: float = 1.0, keep_float=(), qat_epochs: int = 0,
                 qat_lr: float = 1e-4, log=print) -> dict:
    """Quantize a run's model to int8 and measure it against the float model (see the module docstring).
    ``keep_float`` names blocks of ``FLOAT_BLOCKS`` left in float; ``qat_epochs`` > 0 also fine-tunes with
    fake quantization (``augforge.train.qat``), and alike in float as the control (``float_finetuned``), and
    delivers the QAT model when it is more accurate than the post-training one."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from augforge.pipelines.stream import open_loader
    from augforge.train.export import _inputs, _run_files, export_run
    from augforge.train.run import load_checkpoint, loader_options

    unknown = sorted(set(keep_float) - set(FLOAT_BLOCKS))
    if unknown:
        raise AugforgeError(f"--keep-float {unknown[0]}: expected some of {', '.join(FLOAT_BLOCKS)}")
    if qat_epochs < 0:
        raise AugforgeError(f"--qat-epochs {qat_epochs}: expected 0 or more")
    checkpoint, recorded = _run_files(Path(run))
    data = Path(data) if data else recorded
    if data is None:
        raise AugforgeError(f"{run}: its summary records no data directory; give --data DIR")
    out = Path(out) if out else checkpoint.with_name("model.int8.onnx")
    options = loader_options(load_checkpoint(checkpoint)["input"])
    with tempfile.TemporaryDirectory(prefix="augforge-quantize-") as tmp:
        float_path = Path(tmp) / "model.onnx"
        export_run(checkpoint, "onnx", float_path, data, batches=1)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        session = onnxruntime.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
        train = open_loader(data, 64, split="train", shuffle=True, augment=False, seed=0, **options)

        class Calibration(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(train)
                self.left = calib_batches

            def get_next(self):
                if self.left <= 0:
                    return None
                self.left -= 1
                try:
                    x, _ = next(self.batches)
                except StopIteration:
                    return None
                return _feeds(session, _inputs(x))

        kept = float_nodes(onnx.load(str(prepared)).graph, keep_float)
        ptq_path = Path(tmp) / "model.ptq.onnx"
        try:
            quantize_static(str(prepared), str(ptq_path), Calibration(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=[name for names in kept.values() for name in names])
        except Exception as exc:
            raise AugforgeError(f"{checkpoint}: ONNX Runtime could not quantize it "
                                f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})") from None
        models = {"float": float_path, "int8": ptq_path}
        qat = None
        if qat_epochs:
            from augforge.train.qat import finetune_onnx

            models["int8_qat"] = Path(tmp) / "model.qat.onnx"
            qat = finetune_onnx(checkpoint, data, models["int8_qat"], qat_epochs, qat_lr, log=log)
            models["float_finetuned"] = Path(tmp) / "model.finetuned.onnx"  # the control: same epochs, in float
            finetune_onnx(checkpoint, data, models["float_finetuned"], qat_epochs, qat_lr, quantize=False, log=log)
        test = open_loader(data, 64, split="test", shuffle=False, augment=False, **options)
        report = _measure(models, test)
        delivered = "int8"
        if qat is not None and report["int8_qat"]["accuracy"] > report["int8"]["accuracy"]:
            delivered = "int8_qat"
        with atomic_path(out) as tmp_out:
            shutil.copyfile(models[delivered], tmp_out)
        quantized = sorted({n.op_type for n in onnx.load(str(out)).graph.node
                            if n.op_type in ("QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger")})
    drop = 100.0 * (report["float"]["accuracy"] - report[delivered]["accuracy"])
    return {**report, "file": str(out), "calibration_batches": calib_batches,
            "delivered": delivered, "qat": qat, "kept_float": {k: len(v) for k, v in kept.items()},
            "accuracy_drop_points": drop, "max_drop": max_drop, "within": drop <= max_drop, "qdq_ops": quantized}


def _measure(models: dict[str, Path], test) -> dict:
    """Per model (ONNX Runtime on the CPU): accuracy and balanced accuracy on the test split, file size,
    latency at batch 1 and 64; and ``rows``."""
    import onnxruntime

    from augforge.train.export import _inputs
    from augforge.train.metrics import classification_metrics

    sessions = {name: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for name, path in models.items()}
    truth, preds, kept = [], {name: [] for name in models}, []
    for x, y in test:
        inputs = _inputs(x)
        kept.append(inputs)
        truth.append(y.numpy())
        for name, session in sessions.items():
            preds[name].append(session.run(None, _feeds(session, inputs))[0].argmax(-1))
    truth = np.concatenate(truth)
    report = {"rows": int(len(truth))}
    for name, session in sessions.items():
        metrics = classification_metrics(truth, np.concatenate(preds[name]), test.dataset.class_names)
        report[name] = {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
                        "bytes": models[name].stat().st_size,
                        "latency_ms_batch_1": _latency_ms(session, _batch_of(kept, 1)),
                        "latency_ms_batch_64": _latency_ms(session, _batch_of(kept, 64))}
    return report
