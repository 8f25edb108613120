"""`augforge train RECIPE --profile`: where a training step's time goes, with ``torch.profiler``.

The first epoch's batches (profiler steps; with ``accumulate`` several make one optimizer step) run
under a wait / warm-up / active schedule (1 / 1 / ``steps``). The
trace of the active steps goes to ``RUN_DIR/profile/`` as a ``*.pt.trace.json`` file: the Chrome trace
format that TensorBoard's profiler plugin (``tensorboard --logdir RUN_DIR/profile``) and Perfetto
(ui.perfetto.dev) open. ``RUN_DIR/profile/summary.json`` and the log give:

- the operators with the most self time (CPU, and CUDA on a GPU), over the active steps;
- the share of those steps' wall time the loop spent waiting for the next batch, with the input-bound
  hint when it is above 10%.

Training itself is unchanged; the profiled steps are slower by the profiler's overhead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from augforge.atomic import write_json

WAIT, WARMUP = 1, 1
TOP = 10
INPUT_BOUND = 0.10


class StepProfiler:
    """Wraps an epoch's batches: profiles ``WAIT + WARMUP + steps`` steps, timing the waits for data."""

    def __init__(self, folder: Path, steps: int = 5, device: torch.device | None = None) -> None:
        self.folder, self.steps = Path(folder), max(1, int(steps))
        self.device = device or torch.device("cpu")
        self.waits: list[float] = []
        self.walls: list[float] = []
        self.summary: dict | None = None

    def batches(self, batches):
        """Yield ``batches`` while profiling the first steps (call ``finish`` after the epoch)."""
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        self.folder.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._profiler = profile(activities=activities,
                                 schedule=schedule(wait=WAIT, warmup=WARMUP, active=self.steps, repeat=1),
                                 on_trace_ready=tensorboard_trace_handler(str(self.folder)))
        total = WAIT + WARMUP + self.steps
        it = iter(batches)
        with self._profiler:
            for step in range(total):
                started = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                waited = time.perf_counter() - started
                yield batch  # the trainer runs the step before asking for the next batch
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if step >= WAIT + WARMUP:
                    self.waits.append(waited)
                    self.walls.append(time.perf_counter() - started)
                self._profiler.step()
        yield from it

    def finish(self) -> dict:
        """Write ``summary.json`` next to the trace and return it."""
        if self.summary is not None:
            return self.summary
        traces = sorted(p.name for p in self.folder.glob("*.pt.trace.json"))
        averages = self._profiler.key_averages() if hasattr(self, "_profiler") and self.walls else []
        cuda = self.device.type == "cuda"
        averages = [e for e in averages if not e.key.startswith("ProfilerStep")]  # the step markers themselves
        rows = sorted(averages, key=lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total,
                      reverse=True)[:TOP]
        total_self = sum(e.self_cpu_time_total for e in averages) or 1.0
        wall = sum(self.walls)
        wait_share = sum(self.waits) / wall if wall else 0.0
        self.summary = {
            "steps": len(self.walls), "trace": traces, "wall_s": wall, "wait_share": wait_share,
            "input_bound": wait_share > INPUT_BOUND,
            "top": [{"name": e.key, "calls": int(e.count), "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_cpu_share": e.self_cpu_time_total / total_self,
                     **({"self_cuda_ms": e.self_device_time_total / 1e3} if cuda else {})} for e in rows],
        }
        write_json(self.folder / "summary.json", self.summary)
        return self.summary


def report_lines(summary: dict) -> list[str]:
    """The log lines of a profile: the top operators, the data-wait share, the hint."""
    lines = [f"profile: {summary['steps']} batches, {summary['wall_s'] * 1e3 / max(summary['steps'], 1):.1f} ms per "
             f"batch, waiting for data {summary['wait_share']:.0%}; trace: {', '.join(summary['trace']) or 'none'}"]
    for row in summary["top"]:
        lines.append(f"  {row['name']:<40} {row['self_cpu_ms']:>9.2f} ms self CPU  ({row['self_cpu_share']:.0%})"
                     f"  {row['calls']} calls")
    if summary["input_bound"]:
        lines.append("  the loop is input-bound: the model waits for batches; raise train.threads or the loader's "
                     "reader_workers, or move the ops to the GPU (train.device: auto)")
    return lines


def load_trace(path: Path) -> dict:
    """A written trace, read back (what Perfetto and TensorBoard's plugin read)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
