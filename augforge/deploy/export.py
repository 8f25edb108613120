"""`augforge export RUN_DIR --format onnx|pt2`: the trained model as a file other runtimes load, checked.

- ``pt2``: ``torch.export`` (an ``ExportedProgram`` saved with ``torch.export.save``), loadable with
  ``torch.export.load`` without augforge's code.
- ``onnx``: ``torch.onnx.export`` (the dynamo exporter, opset from torch), run back with ONNX Runtime.

The exported model takes what the loader yields, as evaluation feeds it: uint8 NCHW images (converted
to [0, 1] inside the graph, as the training loop converts them), float images after a ``normalize``
op, feature rows, or a text model's (ids, lengths). The batch dimension (and a text model's sequence
length) stays dynamic. A text model's encoder (``augforge.pipelines.text_encoding``: the tokenizer, the hashing
settings or the TF-IDF vocabularies) is written beside it as JSON (``MODEL.encoder.json``); its
``encoder_from_spec`` makes the ids the exported model takes. The exported model is run on
real test batches of the run's data, fed as evaluation feeds the model (the checkpoint's input spec),
next to the PyTorch model, and the largest absolute difference of the logits is reported. A model that
cannot be exported fails in one line naming the operator the exporter refused, where it names one.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from augforge.atomic import atomic_path, write_json
from augforge.errors import AugforgeError, OptionError, first_line
from augforge.train.loop import prepare_input
from augforge.train.restore import checkpoint_model_and_loader

FORMATS = ("onnx", "pt2")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
_OP = re.compile(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+|prim::\w+)")


@contextmanager
def quiet_loggers(*names: str):
    """Raise these loggers to ERROR for the block: torchao's import-time chatter (GPU kernels a CPU build
    cannot load), torch's deprecation and exporter notices."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_files(run: Path) -> tuple[Path, Path | None]:
    """(checkpoint, the run's data directory as its summary records it) of a run directory or checkpoint."""
    if run.is_file():
        return run, None
    checkpoint = run / "model.pt"
    if not checkpoint.is_file():
        raise AugforgeError(f"{run}: no model.pt; give a run directory written by augforge train, or a checkpoint")
    try:
        data = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError):
        data = None
    return checkpoint, Path(data) if data else None


class AsTrained(torch.nn.Module):
    """The model behind the training loop's input conversion (uint8 images to float in [0, 1])."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, lengths=None):
        x = prepare_input(x)  # the loop's own conversion, traced into the graph
        return self.model(x) if lengths is None else self.model(x, lengths)


def model_inputs(x) -> tuple:
    """The model's positional inputs of a batch: (images,), (features,) or (ids, lengths)."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def dynamic_shapes(inputs: tuple) -> tuple:
    """``torch.export`` dynamic shapes of ``inputs``: any batch size, and any token count for text."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    if len(inputs) == 2:  # text: ids (batch, tokens) and lengths (batch,)
        tokens = torch.export.Dim("tokens", min=1, max=1 << 20)
        return ({0: batch, 1: tokens}, {0: batch})
    return ({0: batch},)


def _refusal(exc: Exception, fmt: str, name: str) -> AugforgeError:
    text = str(exc)
    op = _OP.search(text)
    first = first_line(exc, 300)
    where = f"operator {op.group(1)}" if op else first
    return AugforgeError(f"model {name!r} cannot be exported to {fmt}: {where}"
                         + (f" ({first})" if op and op.group(1) not in first else ""))


def _export(model, example: tuple, fmt: str, out: Path, name: str):
    """Write the exported model to ``out``; a callable running it on numpy-free torch inputs."""
    import warnings

    shapes = dynamic_shapes(example)
    quiet = warnings.catch_warnings()
    quiet.__enter__()
    warnings.simplefilter("ignore")  # the exporters' deprecation chatter
    try:
        if fmt == "pt2":
            program = torch.export.export(model, example, dynamic_shapes=shapes)
            with atomic_path(out) as tmp:
                torch.export.save(program, str(tmp))
            loaded = torch.export.load(str(out)).module()
            return lambda *xs: loaded(*xs)
        import onnxruntime

        with atomic_path(out) as tmp, quiet_loggers("torch.onnx"):
            torch.onnx.export(model, example, str(tmp), dynamo=True, dynamic_shapes=shapes, verbose=False,
                              external_data=False)
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: torch.from_numpy(session.run(None, {n: x.cpu().numpy() for n, x in zip(names, xs)})[0])
    except ImportError as exc:
        raise OptionError("{format} onnx needs {package}: pip install 'augforge[export]'", package=exc.name) from None
    except AugforgeError:
        raise
    except Exception as exc:  # the exporters raise many kinds; one line naming the operator
        raise _refusal(exc, fmt, name) from None
    finally:
        quiet.__exit__(None, None, None)


def export_run(run: str | Path, fmt: str = "onnx", out: str | Path | None = None, data: str | Path | None = None,
               batches: int = 4) -> dict:
    """Export a run's model (``model.pt``) and check it against PyTorch on ``batches`` test batches."""
    if fmt not in FORMATS:
        raise OptionError("{format} {value!r}: expected one of {choices}", value=fmt, choices=", ".join(FORMATS))
    checkpoint, recorded = run_files(Path(run))
    data = Path(data) if data else recorded
    if data is None:
        raise OptionError("{run}: its summary records no data directory; give {data} DIR", run=run)
    model, loader, arch, spec, _ = checkpoint_model_and_loader(checkpoint, data, "test", device="cpu", batch_size=64)
    model = AsTrained(model).eval()
    out = Path(out) if out else checkpoint.with_suffix(SUFFIX[fmt])
    batches_seen = []
    for x, _ in loader:
        batches_seen.append(model_inputs(x))
        if len(batches_seen) == batches:
            break
    with torch.no_grad():
        run_exported = _export(model, batches_seen[0], fmt, out, arch["name"])
        worst, rows = 0.0, 0
        for inputs in batches_seen:
            expected = model(*inputs).float()
            got = run_exported(*inputs).float()
            if got.shape != expected.shape:
                raise AugforgeError(f"{out}: the exported model gives shape {tuple(got.shape)}, PyTorch "
                                    f"{tuple(expected.shape)}")
            worst = max(worst, float((got - expected).abs().max()))
            rows += len(expected)
        same_argmax = all(np.array_equal(model(*i).argmax(-1).numpy(), run_exported(*i).argmax(-1).numpy())
                          for i in batches_seen)
    result = {"format": fmt, "file": str(out), "bytes": out.stat().st_size, "batches": len(batches_seen),
              "rows": rows, "max_abs_diff": worst, "same_predictions": bool(same_argmax)}
    if spec["payload"] == "text":  # the ids' maker: without it the exported model cannot be fed
        encoder = out.with_suffix(".encoder.json")
        write_json(encoder, spec["text"])
        result["encoder"] = str(encoder)
    return result
