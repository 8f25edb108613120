"""The model commands: export, quantize, models.

Each handler imports its job when it runs (the CLI's lazy dispatch: `augforge --help` loads none of them)."""

from __future__ import annotations

import argparse
import json
import sys

from augforge.cli.options import add_run_options, input_size, option_value
from augforge.deploy.int8_target import SCHEMES as INT8_SCHEMES
from augforge.deploy.int8_target import TARGETS as INT8_TARGETS


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's model to ONNX or torch.export and check it against PyTorch on test batches."""
    from augforge.deploy.export import export_run

    result = export_run(args.run, args.format, args.out, args.data, args.batches)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {result['file']} ({result['bytes'] / 1e6:.2f} MB, {result['format']}); against PyTorch on "
          f"{result['rows']:,} test rows ({result['batches']} batches): max |difference| {result['max_abs_diff']:.2e}, "
          f"{'the same' if result['same_predictions'] else 'DIFFERENT'} predictions")
    if "encoder" in result:
        print(f"wrote {result['encoder']}: the text encoder that makes its input ids (encoder_from_spec)")
    return 0


def add_export(sub) -> None:
    """`augforge export`'s parser."""
    p = sub.add_parser("export", help="export a run's model (ONNX or torch.export) and check it against PyTorch",
                       description="Export RUN_DIR/model.pt to ONNX (run back with ONNX Runtime) or a torch.export "
                                   "program (.pt2), and compare its logits with PyTorch's on real test batches.")
    add_run_options(p, "the file to write (default: RUN_DIR/model.onnx or model.pt2)")
    p.add_argument("--format", default="onnx", choices=["onnx", "pt2"])
    p.add_argument("--batches", type=int, default=4, help="test batches of 64 rows to compare (default 4)")
    p.set_defaults(func=cmd_export)


def cmd_quantize(args: argparse.Namespace) -> int:
    """int8 with ONNX Runtime (static QDQ, per-channel), measured against the float model; exit 1 past --max-drop."""
    from augforge.deploy.quantize import quantize_run

    keep = [b for part in args.keep_float for b in part.split(",") if b]
    log = (lambda _: None) if args.json else (lambda text: print(text, flush=True))
    result = quantize_run(args.run, args.out, args.data, args.calib_batches, args.max_drop, keep_float=keep,
                          qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, target=args.target, scheme=args.scheme,
                          log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':<15} {'accuracy':>9} {'balanced':>9} {'size MB':>8} {'batch 1 ms':>11} {'batch 64 ms':>12}")
        for name in ("float", "int8", "int8_qat", "float_finetuned"):
            if name in result:
                r = result[name]
                print(f"{name:<15} {r['accuracy']:>9.4f} {r['balanced_accuracy']:>9.4f} {r['bytes'] / 1e6:>8.2f} "
                      f"{r['latency_ms_batch_1']:>11.3f} {r['latency_ms_batch_64']:>12.3f}")
        kept = ", ".join(f"{block} ({n} nodes)" for block, n in result["kept_float"].items())
        print(f"wrote {result['file']} ({result['delivered']}); {result['rows']:,} test rows, calibrated on "
              f"{result['calibration_batches']} training batches; accuracy drop "
              f"{result['accuracy_drop_points']:.2f} points" + (f"; kept in float: {kept}" if kept else ""))
        if "float_finetuned" in result:
            print(f"float_finetuned: the float model fine-tuned for the same {result['qat']['epochs']} epoch(s) without "
                  "fake quantization; what the QAT model gains over it is quantization's, the rest the extra "
                  "epochs'")
        scheme = result["scheme"]
        for candidate in scheme["candidates"]:
            agreement = candidate["agreement"]
            print(f"  {candidate['scheme']}: " + (f"agrees with float on {100 * agreement:.2f}% of "
                  f"{scheme['selection_split']} rows; " if agreement is not None else "") + candidate["reason"])
        why = "as asked (--scheme)" if scheme["asked"] != "auto" else "the most agreement with the float model, ties " \
            "to the faster"
        print(f"scheme {scheme['name']} for {scheme['target']} (this CPU: {scheme['host']}): {why}")
        if result["warning"]:
            print(f"warning: {result['warning']}", file=sys.stderr)
    if not result["within"]:
        print(f"augforge quantize: the int8 model loses {result['accuracy_drop_points']:.2f} accuracy points, more "
              f"than --max-drop {result['max_drop']}", file=sys.stderr)
        return 1
    return 0


def add_quantize(sub) -> None:
    """`augforge quantize`'s parser."""
    p = sub.add_parser("quantize", help="int8 quantization (ONNX Runtime, static QDQ) measured against the float model",
                       description="Quantize RUN_DIR/model.pt to int8 (ONNX Runtime static QDQ, per-channel weights), "
                                   "calibrated on training batches, and report accuracy, size and CPU latency next "
                                   "to the float model; exit 1 when accuracy drops more than --max-drop points.")
    add_run_options(p, "the int8 model to write (default: RUN_DIR/model.int8.onnx)")
    p.add_argument("--calib-batches", type=int, default=16, help="training batches of 64 rows to calibrate on")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the int8 model may lose (default 1)")
    p.add_argument("--keep-float", nargs="*", default=[], metavar="BLOCK",
                   help="leave these blocks in float: depthwise, hardswish, se (MobileNetV3's int8 trouble spots)")
    p.add_argument("--qat-epochs", type=int, default=0, metavar="E",
                   help="also fine-tune E epochs with fake quantization (torchao PT2E) and deliver that model when "
                        "it is more accurate than the post-training one")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="the fine-tuning learning rate (default 1e-4)")
    p.add_argument("--target", default="auto", choices=INT8_TARGETS,
                   help="the CPU the int8 model is for (default auto: this one); decides which schemes are measured "
                        "and with which arithmetic (docs/toolchain.md)")
    p.add_argument("--scheme", default="auto", choices=("auto", *INT8_SCHEMES),
                   help="auto (default): measure u8s8, u8s7 and u8u8 and deliver the one closest to the float model; "
                        "or quantize with this one only")
    p.set_defaults(func=cmd_quantize)


def cmd_models(args: argparse.Namespace) -> int:
    """List the models, or summarise one."""
    from rich.console import Console
    from rich.table import Table

    from augforge import models

    out = Console()
    if args.name is None:
        table = Table(title="augforge models")
        table.add_column("name")
        table.add_column("options")
        for name in models.available():
            table.add_row(name, ", ".join(f"{k}={v!r}" for k, v in models.model_options(name).items()))
        out.print(table)
        return 0
    options = dict(option_value(o) for o in args.option)
    model = models.create(args.name, args.num_classes, args.in_channels, **options)
    default = {"tokens": "128", "features": str(args.in_channels)}.get(getattr(model, "input_kind", "image"),
                                                                       f"{args.in_channels}x224x224")
    report = models.summary(model, input_size(args.input_size or default))
    print(report)
    return 0


def add_models(sub) -> None:
    """`augforge models`'s parser."""
    p = sub.add_parser("models", help="list the models, or print one's layers, parameters and MACs",
                       description="Without NAME, list the registered models and their options. With NAME, build it "
                                   "and print a layer summary: output shapes, parameters, MACs.")
    p.add_argument("name", nargs="?", help="a model name from the list")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the head (default 1000)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels, or features for mlp (default 3)")
    p.add_argument("--input-size", help="per-sample input: CxHxW for images (default 3x224x224), T tokens for text "
                                        "models (default 128), F features for mlp")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a model option (repeatable), e.g. --option alpha=0.75 --option attention_after=[-1]")
    p.set_defaults(func=cmd_models)
