"""`make gpu-check`: every GPU-only test and the GPU benchmarks, in one call, into one results file.

    python scripts/gpu_check.py [--out DIR] [--dry-run] [--python PY]

On a machine with a CUDA GPU it runs the steps below in order, each under its own time limit, and
writes ``gpu-check.json`` and ``gpu-check.md`` (the GPU named, each step's exit code, wall time and the
lines that carry its numbers) to ``--out`` (default ``$OUT`` where set, else ``build/gpu-check``). A step
that fails is recorded and the next one runs. Without a GPU (or with ``--dry-run``) it runs nothing: it
proves that every step's command line parses (pytest collects the GPU tests, each benchmark's own
parser takes its arguments, the recipe loads), says in one line that there is no GPU, and exits 0.
``scripts/gpu-check.sh`` installs what the run needs first (from an offline bundle on an air-gapped
machine: ``scripts/gpu_bundle.py``). The results files are rewritten after every step, so a check cut
short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the whole check, the installs included, must end within this many seconds (the GPU machine's lease is short)
BUDGET_S = 480


def train_recipe(work: Path) -> dict:
    """A short MobileNetV3-Small run on the digits on the GPU with bf16 autocast: the stream into training
    steps (the run reports how long it waited for data) and AMP, end to end through ``augforge train``."""
    return {"seed": 0, "source": {"path": "digits", "test_split": 0.2}, "output": {"dir": str(work / "digits")},
            "train": {"model": "mobilenet_v3_small", "model_options": {"alpha": 0.5}, "epochs": 3, "batch_size": 128,
                      "lr": 0.005, "precision": "bf16", "device": "cuda", "stream": [{"op": "resize", "size": 32}]}}


@dataclass
class Step:
    """One command of the check: ``argv`` after the Python, its time limit, and how a dry run parses it
    (``pytest``: collect only; ``benchmark``: the script's ``build_parser``; ``augforge``: the CLI's parser)."""

    name: str
    argv: list[str]
    limit_s: int
    parse: str
    keep: tuple[str, ...] = field(default=())  # output lines that carry the numbers (substrings)


def gpu_test_files() -> list[str]:
    """The test modules that hold tests marked ``gpu``: only these are collected on the GPU machine, whose image
    lacks what other modules import (Ray, transformers)."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in path.read_text(encoding="utf-8"))


def steps(work: Path) -> list[Step]:
    """The check's steps, in order of value; ``work`` holds their data."""
    recipe = work / "train-bf16.yaml"
    return [
        Step("gpu tests", ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs", *gpu_test_files()],
             150, "pytest", ("passed", "failed", "error")),
        Step("image augmentation", ["benchmarks/image_augment.py", "--device", "gpu", "--images", "1024", "--epochs",
                                    "2", "--repeats", "2", "--workers", "8"], 90, "benchmark", ("img/s", "ratio")),
        Step("stream into training", ["benchmarks/stream.py", "--device", "gpu", "--images", "1024", "--epochs", "2",
                                      "--raw-rows", "100000", "--workers", "8"], 70, "benchmark",
             ("online augmentation", "raw uint8")),
        Step("dense targets, DALI on the GPU", ["benchmarks/dense_geometry.py", "--device", "gpu", "--images", "400",
                                                "--workers", "8", "--no-tightness", "--out",
                                                str(work / "dense-geometry.json")], 45, "benchmark",
             ("augforge_gpu",)),
        Step("FastSMOTE vs imbalanced-learn", ["benchmarks/smote.py", "--device", "cuda", "--sizes", "2200000x32",
                                               "--data", "clustered", "--repeat", "1"], 60, "benchmark",
             ("clustered", "cuda")),
        Step("FastSMOTE at 1,000,000 minority rows", ["benchmarks/smote.py", "--device", "cuda", "--sizes",
                                                       "11000000x32", "--data", "clustered", "--repeat", "1",
                                                       "--fast-only"], 40, "benchmark", ("clustered",)),
        Step("training loop, AMP bf16", ["benchmarks/trainer_overhead.py", "--device", "cuda", "--precision", "bf16",
                                         "--steps", "60"], 30, "benchmark", ("ms/step",)),
        Step("MobileNetV3 training, AMP bf16", ["-m", "augforge", "train", str(recipe), "--run-dir",
                                                str(work / "run-bf16")], 60, "augforge", ("test:", "epoch", "device")),
    ]


def gpu_name(python: str) -> str | None:
    """The CUDA GPU ``python``'s torch sees, or None."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    return name or None


def dry_run(plan: list[Step], python: str) -> list[str]:
    """Each step's command line parsed without running it; returns one line per step (raises on the first
    that does not parse)."""
    lines = []
    for step in plan:
        if step.parse == "pytest":
            done = subprocess.run([python, *step.argv, "--collect-only"], cwd=ROOT, capture_output=True, text=True)
            collected = [line for line in done.stdout.splitlines() if "collected" in line or "selected" in line]
            if done.returncode != 0 or not collected:
                raise SystemExit(f"gpu-check: {step.name}: pytest could not collect ({done.stdout[-500:]})")
            lines.append(f"{step.name}: {collected[-1].strip()}")
        elif step.parse == "benchmark":
            script = ROOT / step.argv[0]
            spec = importlib.util.spec_from_file_location(f"gpu_check_{script.stem}", script)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(script.parent))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(script.parent))
            args = module.build_parser().parse_args(step.argv[1:])
            lines.append(f"{step.name}: {step.argv[0]} {vars(args)}")
        else:
            from augforge.cli import build_parser
            from augforge.recipe import parse_recipe

            args = build_parser().parse_args(step.argv[2:])
            parse_recipe(train_recipe(Path(step.argv[3]).parent))
            lines.append(f"{step.name}: augforge {args.command} (recipe valid)")
    return lines


def run_step(step: Step, python: str, log) -> dict:
    """Run one step under its limit; its exit code, wall time and the lines that carry its numbers."""
    started = time.perf_counter()
    try:
        done = subprocess.run([python, *step.argv], cwd=ROOT, capture_output=True, text=True, timeout=step.limit_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = "timeout"
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    wall = time.perf_counter() - started
    kept = [line.rstrip() for line in out.splitlines() if any(key in line for key in step.keep)]
    log(f"gpu-check: {step.name}: exit {code} in {wall:.0f} s")
    return {"step": step.name, "command": " ".join(["python", *step.argv]), "exit": code, "wall_s": round(wall, 1),
            "lines": kept[-20:], "tail": out.splitlines()[-15:]}


def write_results(out: Path, gpu: str, results: list[dict]) -> tuple[Path, Path]:
    """gpu-check.json and gpu-check.md under ``out`` (each written whole, then renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"gpu": gpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "steps": results}
    lines = [f"# make gpu-check on {gpu}", "", f"{record['date']}", "", "| step | exit | wall s | numbers |",
             "| --- | --- | --- | --- |"]
    for r in results:
        numbers = "<br>".join(line.replace("|", "/") for line in r["lines"]) or "-"
        lines.append(f"| {r['step']} | {r['exit']} | {r['wall_s']} | {numbers} |")
    paths = (out / "gpu-check.json", out / "gpu-check.md")
    for path, text in zip(paths, (json.dumps(record, indent=2), "\n".join(lines) + "\n")):
        partial = path.with_name(path.name + ".part")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    return paths


def main(argv=None) -> int:
    """Parse the options, then the dry run (no GPU) or the whole check."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu-check"))
    parser.add_argument("--dry-run", action="store_true", help="parse every step, run none, even on a GPU")
    parser.add_argument("--python", default=sys.executable, help="the Python with augforge and CUDA torch")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = out / "work"
    plan = steps(work)
    gpu = None if args.dry_run else gpu_name(args.python)
    if gpu is None:
        lines = dry_run(plan, args.python)
        why = "--dry-run" if args.dry_run else "no CUDA GPU on this machine"
        print(f"gpu-check: {why}; dry run: all {len(plan)} steps parse ({'; '.join(lines)})")
        return 0
    print(f"gpu-check: {gpu}; {len(plan)} steps, at most {sum(s.limit_s for s in plan)} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "train-bf16.yaml").write_text(json.dumps(train_recipe(work)), encoding="utf-8")  # JSON is YAML
    started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())  # gpu-check.sh's start: installs count
    deadline = started + BUDGET_S
    results = []
    for step in plan:  # in order of value; the results files are rewritten after every step
        if time.time() + step.limit_s > deadline:
            results.append({"step": step.name, "command": " ".join(step.argv), "exit": "skipped: over the budget",
                            "wall_s": 0, "lines": [], "tail": []})
        else:
            results.append(run_step(step, args.python, lambda text: print(text, flush=True)))
        paths = write_results(out, gpu, results)
    print(f"gpu-check: wrote {paths[0]} and {paths[1]}")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
