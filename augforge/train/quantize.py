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

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from augforge.errors import AugforgeError

LATENCY_RUNS = 20


def _feeds(session, inputs: tuple) -> dict:
    return {i.name: np.ascontiguousarray(x.cpu().numpy()) for i, x in zip(session.get_inputs(), inputs)}


def _latency_ms(session, inputs: tuple) -> float:
    feeds = _feeds(session, inputs)
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _batch_of(loader_batches: list[tuple], size: int) -> tuple:
    """``size`` rows cut from the collected test batches (the first input of each kind)."""
    import torch

    parts = [torch.cat([b[i] for b in loader_batches])[:size] for i in range(len(loader_batches[0]))]
    return tuple(parts)


def quantize_run(run: str | Path, out: str | Path | None = None, data: str | Path | None = None,
                 calib_batches: int = 16, max_drop: float = 1.0) -> dict:
    """Quantize a run's model to int8 and measure it against the float model (see the module docstring)."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from augforge.pipelines.stream import open_loader
    from augforge.train.export import _inputs, _run_files, export_run
    from augforge.train.metrics import classification_metrics

    checkpoint, recorded = _run_files(Path(run))
    data = Path(data) if data else recorded
    if data is None:
        raise AugforgeError(f"{run}: its summary records no data directory; give --data DIR")
    out = Path(out) if out else checkpoint.with_name("model.int8.onnx")
    with tempfile.TemporaryDirectory(prefix="augforge-quantize-") as tmp:
        float_path = Path(tmp) / "model.onnx"
        export_run(checkpoint, "onnx", float_path, data, batches=1)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        session = onnxruntime.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
        from augforge.train.run import load_checkpoint, loader_options

        options = loader_options(load_checkpoint(checkpoint)["input"])
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

        try:
            quantize_static(str(prepared), str(out) + ".tmp", Calibration(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
        except Exception as exc:
            raise AugforgeError(f"{checkpoint}: ONNX Runtime could not quantize it "
                                f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})") from None
        Path(str(out) + ".tmp").replace(out)
        int8 = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        test = open_loader(data, 64, split="test", shuffle=False, augment=False, **options)
        names = test.dataset.class_names
        truth, preds, kept = [], {"float": [], "int8": []}, []
        for x, y in test:
            inputs = _inputs(x)
            kept.append(inputs)
            truth.append(y.numpy())
            for name, model in (("float", session), ("int8", int8)):
                preds[name].append(model.run(None, _feeds(model, inputs))[0].argmax(-1))
        truth = np.concatenate(truth)
        report = {}
        for name, model, path in (("float", session, float_path), ("int8", int8, out)):
            metrics = classification_metrics(truth, np.concatenate(preds[name]), names)
            report[name] = {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
                            "bytes": path.stat().st_size,
                            "latency_ms_batch_1": _latency_ms(model, _batch_of(kept, 1)),
                            "latency_ms_batch_64": _latency_ms(model, _batch_of(kept, 64))}
    drop = 100.0 * (report["float"]["accuracy"] - report["int8"]["accuracy"])
    import onnx

    quantized = sorted({n.op_type for n in onnx.load(str(out)).graph.node
                        if n.op_type in ("QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger")})
    return {**report, "file": str(out), "rows": int(len(truth)), "calibration_batches": calib_batches,
            "accuracy_drop_points": drop, "max_drop": max_drop, "within": drop <= max_drop, "qdq_ops": quantized}
