"""Two current int8 paths on the same trained runs, in one process: ONNX Runtime's static QDQ (what
`augforge quantize` ships) against torchao's PT2E flow (``prepare_pt2e``/``convert_pt2e`` with the x86
inductor quantizer, then ``torch.compile`` with freezing, which lowers to oneDNN int8 kernels).

Both calibrate on the same 16 training batches of 64 rows and are scored on the same test split. For each
run it prints accuracy, and the median CPU latency at batch 1 and batch 64 of the float and int8 models of
each path, and the ratio torchao / ONNX Runtime of the int8 latencies. torchao's compiled model is built per
batch size (static shapes): with a dynamic batch, inductor's int8 convolution lowering fails on torch 2.13 /
torchao 0.18 with a stride assertion.

    python benchmarks/quantize_paths.py RUN_DIR [RUN_DIR ...] [--data DIR]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from augforge.pipelines.stream import open_loader
from augforge.deploy.export import AsTrained, model_inputs, run_files
from augforge.deploy.qat import _torchao
from augforge.deploy.quantize import median_ms, quantize_run
from augforge.train.checkpoint import load_checkpoint
from augforge.train.restore import checkpoint_model_and_loader, loader_options

RUNS = 20


def latency_ms(model, x) -> float:
    """Median of RUNS timed calls after 5 warm-up calls, without autograd."""
    with torch.no_grad():
        return median_ms(lambda: model(x), RUNS, warmup=5)


def torchao_path(run: Path, data: Path) -> dict:
    """torchao PT2E int8: accuracy of the converted model on the test split, and compiled latencies."""
    import torch._inductor.config as inductor

    x86, _, convert_pt2e, _ = _torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    checkpoint, _ = run_files(run)
    model, test, _, _, _ = checkpoint_model_and_loader(checkpoint, data, "test", device="cpu", batch_size=64)
    model = AsTrained(model).eval()
    options = loader_options(load_checkpoint(checkpoint)["input"])
    train = open_loader(data, 64, split="train", shuffle=True, augment=False, seed=0, **options)
    calibration = [model_inputs(x)[0] for _, (x, _) in zip(range(16), train)]
    test_batches = [(model_inputs(x)[0], y) for x, y in test]
    rows = torch.cat([x for x, _ in test_batches])
    inductor.freezing = True
    result = {}
    for size in (1, 64):
        example = rows[:size]
        graph = torch.export.export(model, (example,)).module()
        prepared = prepare_pt2e(graph, x86.X86InductorQuantizer().set_global(
            x86.get_default_x86_inductor_quantization_config()))
        for batch in calibration:
            for start in range(0, len(batch), size):
                prepared(batch[start:start + size])
        converted = convert_pt2e(prepared)
        if size == 64:  # accuracy of the converted model over the whole test split (a short batch padded to 64)
            hits = 0
            with torch.no_grad():
                for x, y in test_batches:
                    padded = torch.cat([x, x[:1].expand(64 - len(x), *x.shape[1:])]) if len(x) < 64 else x
                    hits += int((converted(padded)[: len(y)].argmax(-1) == y).sum())
            result["accuracy"] = hits / len(rows)
        result[f"float_ms_batch_{size}"] = latency_ms(torch.compile(torch.export.export(model, (example,)).module()),
                                                      example)
        result[f"int8_ms_batch_{size}"] = latency_ms(torch.compile(converted), example)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, help="the runs' data directory, when their summaries record none")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    for run in args.runs:
        ort = quantize_run(run, run / "bench.int8.onnx", args.data, max_drop=100.0, log=lambda _: None)
        data = args.data or run_files(run)[1]
        tao = torchao_path(run, data)
        print(f"{run}: {ort['rows']} test rows")
        print(f"  ONNX Runtime QDQ  accuracy float {ort['float']['accuracy']:.4f}  int8 {ort['int8']['accuracy']:.4f}")
        print(f"  torchao PT2E      int8 accuracy {tao['accuracy']:.4f}")
        for size in (1, 64):
            o_float, o_int8 = ort["float"][f"latency_ms_batch_{size}"], ort["int8"][f"latency_ms_batch_{size}"]
            t_float, t_int8 = tao[f"float_ms_batch_{size}"], tao[f"int8_ms_batch_{size}"]
            print(f"  batch {size:>2}: ONNX Runtime float {o_float:.3f} ms  int8 {o_int8:.3f} ms | "
                  f"torchao+inductor float {t_float:.3f} ms  int8 {t_int8:.3f} ms | "
                  f"int8 torchao / ONNX Runtime = {t_int8 / o_int8:.2f}x")
        (run / "bench.int8.onnx").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
