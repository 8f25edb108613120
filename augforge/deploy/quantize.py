"""`augforge quantize RUN_DIR`: int8 with ONNX Runtime's static QDQ quantization, measured against float.

The path: the run's model is exported to ONNX (``augforge.deploy.export``), pre-processed (shape
inference, graph optimisation), calibrated on ``--calib-batches`` training batches (min-max of the
activations), and quantized statically to QDQ with per-channel int8 weights and uint8 activations,
ONNX Runtime's current, non-deprecated path on a CPU. (torchao's PT2E flow is the other current path;
it is not installed here, so it was not measured.)

The report puts the int8 model next to the float ONNX model, both run by ONNX Runtime on the test split:
accuracy and balanced accuracy, file size, and CPU latency at batch 1 and batch 64 (median of timed
runs after a warm-up). If the int8 accuracy is more than ``max_drop`` points below the float accuracy,
the command says so and exits non-zero.

The int8 scheme depends on the CPU the model is meant for (``--target``, ``auto`` = this one): ``u8s8``,
``u8s7`` (7-bit weights) or ``u8u8`` are each quantized and compared with the float model on
``SELECTION_ROWS`` rows that are not the test split, each with the target's arithmetic (see
``augforge.deploy.int8_target``); the scheme that agrees most with the float model is delivered, and the
report says which, why, and whether the target is another CPU than this one.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from augforge.atomic import atomic_path
from augforge.datasets.manifest import read_manifest
from augforge.errors import AugforgeError, OptionError, first_line
from augforge.pipelines.stream import open_loader
from augforge.train.checkpoint import load_checkpoint
from augforge.deploy.export import export_run, model_inputs, run_files
from augforge.deploy.int8_predict import predict, session_feeds
from augforge.deploy.int8_target import (choose_scheme, emulator_available, host_cpu, plan_schemes,
                                        resolve_target, target_warning)
from augforge.train.metrics import classification_metrics
from augforge.deploy.qat import finetune_onnx
from augforge.train.restore import loader_options

LATENCY_RUNS = 20
#: the rows (val split, else the first training rows in storage order) on which the schemes are compared
SELECTION_ROWS = 1024
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



#: ONNX Runtime's settings of each scheme: (weight type, reduce_range)
SCHEME_SETTINGS = {"u8s8": ("QInt8", False), "u8s7": ("QInt8", True), "u8u8": ("QUInt8", False)}


def _collect(loader, rows: int | None = None) -> tuple[list[tuple], np.ndarray]:
    """(the model-input tuples of ``loader``'s batches as numpy arrays, their labels), up to ``rows`` rows."""
    batches, labels, seen = [], [], 0
    for x, y in loader:
        batches.append(tuple(np.ascontiguousarray(t.cpu().numpy()) for t in model_inputs(x)))
        labels.append(y.numpy())
        seen += len(labels[-1])
        if rows is not None and seen >= rows:
            break
    return batches, (np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64))


def _quantize(prepared: Path, out: Path, calibration: list[dict], scheme: str, excluded: list[str],
              checkpoint: Path) -> Path:
    """``prepared`` quantized to QDQ (per-channel weights, uint8 activations) with ``scheme``'s settings."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    weight, reduce_range = SCHEME_SETTINGS[scheme]
    try:
        quantize_static(str(prepared), str(out), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, weight_type=getattr(QuantType, weight),
                        activation_type=QuantType.QUInt8, nodes_to_exclude=excluded)
    except Exception as exc:
        raise AugforgeError(f"{checkpoint}: ONNX Runtime could not quantize it "
                            f"({first_line(exc)})") from None
    return out


def _select_scheme(paths: dict[str, Path], float_path: Path, plans: dict, selection: list[tuple]) -> dict:
    """Each measured scheme's agreement with the float model on the selection rows, with its arithmetic."""
    reference = predict({"float": float_path}, selection)["float"]
    agreement = {}
    for scheme, path in paths.items():
        predicted = predict({scheme: path}, selection, plans[scheme].where)[scheme]
        agreement[scheme] = float(np.mean(predicted == reference)) if len(reference) else 1.0
    chosen = choose_scheme(agreement)
    candidates = [{"scheme": p.scheme, "measured": p.where or "not measured", "reason": p.reason,
                   "agreement": agreement.get(p.scheme)} for p in plans.values()]
    return {"name": chosen, "candidates": candidates, "agreement": agreement[chosen]}


def quantize_run(run: str | Path, out: str | Path | None = None, data: str | Path | None = None,
                 calib_batches: int = 16, max_drop: float = 1.0, keep_float=(), qat_epochs: int = 0,
                 qat_lr: float = 1e-4, target: str = "auto", scheme: str = "auto", log=print) -> dict:
    """Quantize a run's model to int8 for the ``target`` CPU and measure it against the float model (see the
    module docstring). ``keep_float`` names blocks of ``FLOAT_BLOCKS`` left in float; ``qat_epochs`` > 0 also
    fine-tunes with fake quantization (``augforge.deploy.qat``), and alike in float as the control
    (``float_finetuned``), and delivers the QAT model when it is more accurate than the post-training one.
    ``scheme`` other than ``auto`` quantizes with that scheme alone (still measured, with the target's
    arithmetic)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization.shape_inference import quant_pre_process

    unknown = sorted(set(keep_float) - set(FLOAT_BLOCKS))
    if unknown:
        raise OptionError("{keep_float} {value}: expected some of {choices}", value=unknown[0],
                          choices=", ".join(FLOAT_BLOCKS))
    if qat_epochs < 0:
        raise OptionError("{qat_epochs} {value}: expected 0 or more", value=qat_epochs)
    host = host_cpu()
    target = resolve_target(target, host)
    every = {p.scheme: p for p in plan_schemes(target, host, emulator_available())}
    if qat_epochs and every["u8s8"].where is None:
        raise OptionError("{qat_epochs} {value}: the QAT model has 8-bit weights, and {reason}", value=qat_epochs,
                          reason=every["u8s8"].reason)
    plans = every
    if scheme != "auto":
        if scheme not in every:
            raise OptionError("{scheme} {value}: expected auto or one of {choices}", value=scheme,
                              choices=", ".join(every))
        if every[scheme].where is None:
            raise OptionError("{scheme} {value}: {reason}", value=scheme, reason=every[scheme].reason)
        plans = {scheme: every[scheme]}
    checkpoint, recorded = run_files(Path(run))
    data = Path(data) if data else recorded
    if data is None:
        raise OptionError("{run}: its summary records no data directory; give {data} DIR", run=run)
    out = Path(out) if out else checkpoint.with_name("model.int8.onnx")
    options = loader_options(load_checkpoint(checkpoint)["input"])
    with tempfile.TemporaryDirectory(prefix="augforge-quantize-") as tmp:
        float_path = Path(tmp) / "model.onnx"
        export_run(checkpoint, "onnx", float_path, data, batches=1)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        session = onnxruntime.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
        train = open_loader(data, 64, split="train", shuffle=True, augment=False, seed=0, **options)
        calibration = [session_feeds(session, inputs) for inputs in _collect(train, 64 * calib_batches)[0]]
        kept = float_nodes(onnx.load(str(prepared)).graph, keep_float)
        excluded = [name for names in kept.values() for name in names]
        paths = {name: _quantize(prepared, Path(tmp) / f"model.{name}.onnx", calibration, name, excluded, checkpoint)
                 for name, plan in plans.items() if plan.where is not None}
        split = "val" if "val" in read_manifest(data).get("counts", {}) else "train"
        selection = open_loader(data, 64, split=split, shuffle=False, augment=False, **options)
        chosen = {**_select_scheme(paths, float_path, plans, _collect(selection, SELECTION_ROWS)[0]),
                  "target": target, "host": host, "selection_split": split, "asked": scheme}
        models = {"float": float_path, "int8": paths[chosen["name"]]}
        where = {"int8": plans[chosen["name"]].where}
        qat = None
        if qat_epochs:
            models["int8_qat"] = Path(tmp) / "model.qat.onnx"
            where["int8_qat"] = every["u8s8"].where
            qat = finetune_onnx(checkpoint, data, models["int8_qat"], qat_epochs, qat_lr, log=log)
            models["float_finetuned"] = Path(tmp) / "model.finetuned.onnx"  # the control: same epochs, in float
            finetune_onnx(checkpoint, data, models["float_finetuned"], qat_epochs, qat_lr, quantize=False, log=log)
        test = open_loader(data, 64, split="test", shuffle=False, augment=False, **options)
        report = _measure(models, test, where)
        delivered = "int8"
        if qat is not None and report["int8_qat"]["accuracy"] > report["int8"]["accuracy"]:
            delivered = "int8_qat"
        with atomic_path(out) as tmp_out:
            shutil.copyfile(models[delivered], tmp_out)
        quantized = sorted({n.op_type for n in onnx.load(str(out)).graph.node
                            if n.op_type in ("QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger")})
    drop = 100.0 * (report["float"]["accuracy"] - report[delivered]["accuracy"])
    return {**report, "file": str(out), "calibration_batches": calib_batches, "scheme": chosen,
            "warning": target_warning(target, host), "delivered": delivered, "qat": qat,
            "kept_float": {k: len(v) for k, v in kept.items()}, "accuracy_drop_points": drop, "max_drop": max_drop,
            "within": drop <= max_drop, "qdq_ops": quantized}


def _measure(models: dict[str, Path], test, where: dict[str, str]) -> dict:
    """Per model: accuracy and balanced accuracy on the test split (ONNX Runtime, with the arithmetic
    ``where`` names for it, this CPU's by default), file size, and this CPU's latency at batch 1 and 64;
    and ``rows``."""
    import onnxruntime

    batches, truth = _collect(test)
    report = {"rows": int(len(truth))}
    first = [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]
    for name, path in models.items():
        predicted = predict({name: path}, batches, where.get(name, "native"))[name]
        metrics = classification_metrics(truth, predicted, test.dataset.class_names)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        latency = {}
        for size in (1, 64):
            feeds = session_feeds(session, tuple(part[:size] for part in first))
            latency[f"latency_ms_batch_{size}"] = median_ms(lambda feeds=feeds: session.run(None, feeds))
        report[name] = {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
                        "bytes": path.stat().st_size, "measured": where.get(name, "native"), **latency}
    return report
