"""Class predictions of ONNX models on saved batches: in this process, or in a child process under
``qemu-x86_64 -cpu MODEL``, which computes the int8 kernels with that CPU's arithmetic (see
``augforge.deploy.int8_target``). ``python -m augforge.deploy.int8_predict DIR`` is the child's side; it imports
only numpy and ONNX Runtime, so that its start under emulation stays short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from augforge.errors import AugforgeError

SPEC = "spec.json"
INPUTS = "inputs.npz"
PREDICTIONS = "predictions.npz"


def session_feeds(session, inputs: tuple) -> dict:
    """ONNX Runtime feeds of a model's positional ``inputs`` (tensors or arrays), by the session's input names."""
    arrays = (x if isinstance(x, np.ndarray) else x.cpu().numpy() for x in inputs)
    return {i.name: np.ascontiguousarray(a) for i, a in zip(session.get_inputs(), arrays)}


def predict_here(models: dict[str, str | Path], batches: list[tuple]) -> dict[str, np.ndarray]:
    """Per model, the argmax class of every row of ``batches`` (tuples of the model's inputs), by ONNX Runtime
    on this CPU."""
    import onnxruntime

    predictions = {}
    for name, path in models.items():
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        parts = [session.run(None, session_feeds(session, inputs))[0].argmax(-1) for inputs in batches]
        predictions[name] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return predictions


def predict(models: dict[str, str | Path], batches: list[tuple], where: str = "native") -> dict[str, np.ndarray]:
    """``predict_here`` of numpy ``batches`` where ``where`` is ``native``; otherwise ``where`` is an emulator's command line
    (``qemu-x86_64 -cpu Haswell``) that runs this Python on this module, with the batches passed as files."""
    if where == "native":
        return predict_here(models, batches)

    with tempfile.TemporaryDirectory(prefix="augforge-int8-") as tmp:
        folder = Path(tmp)
        arrays = {f"b{i}_{j}": x for i, inputs in enumerate(batches) for j, x in enumerate(inputs)}
        np.savez(folder / INPUTS, **arrays)
        spec = {"models": {name: str(path) for name, path in models.items()}, "batches": len(batches),
                "arity": len(batches[0]) if batches else 0}
        (folder / SPEC).write_text(json.dumps(spec), encoding="utf-8")
        command = [*where.split(), sys.executable, "-m", "augforge.deploy.int8_predict", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip() and "TCG doesn't support" not in line]
            raise AugforgeError(f"{where}: the emulated int8 run failed ({lines[-1] if lines else done.returncode})")
        with np.load(folder / PREDICTIONS) as stored:
            return {name: stored[name] for name in models}


def main(folder: str) -> None:
    """The child's side of ``predict``: read the spec and batches from ``folder``, write the predictions."""
    root = Path(folder)
    spec = json.loads((root / SPEC).read_text(encoding="utf-8"))
    with np.load(root / INPUTS) as stored:
        batches = [tuple(stored[f"b{i}_{j}"] for j in range(spec["arity"])) for i in range(spec["batches"])]
    predictions = predict_here(spec["models"], batches)
    partial = root / (PREDICTIONS + ".part")
    with open(partial, "wb") as handle:
        np.savez(handle, **predictions)
    os.replace(partial, root / PREDICTIONS)


if __name__ == "__main__":
    main(sys.argv[1])
