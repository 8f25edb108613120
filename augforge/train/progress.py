"""What a run reports while it trains: progress over an epoch's batches, TensorBoard scalars, and what to do
when training waits for data."""

from __future__ import annotations

import os
import time
from pathlib import Path

from augforge.augment.image_ops import DETERMINISTIC
from augforge.device import Device, cuda_available
from augforge.errors import AugforgeError
from augforge.progress import progress_bar
from augforge.train.loop import Trainer

#: Warn when training waited for data more than this share of an epoch.
INPUT_BOUND_WARNING = 0.10


def input_bound_hint(device: Device, requested: str, threads: int, loader) -> str:
    """What to do when training waits for data: true for this run's device, threads and ops."""
    if not device.is_cuda and cuda_available() and loader.payload == "image":
        return (f"a GPU is present but train.device is {requested}; set train.device: auto to decode and "
                "augment there")

    random_ops = [op.name for op in loader.ops if op.name not in DETERMINISTIC or op.p < 1.0]
    tips = []
    if not device.is_cuda and threads < (os.cpu_count() or 1):
        tips.append(f"use more threads (--threads; now {threads})")
    if random_ops and not device.is_cuda:
        tips.append(f"write augmented copies offline (augment.mode: offline) instead of running "
                    f"{', '.join(random_ops)} every epoch")
    if loader.payload == "image" and loader.info.get("encoding") != "raw":
        tips.append("store decoded pixels (output.format: raw) so batches skip decoding")
    tips.append("or raise the batch size")
    return "; ".join(tips)


def open_tensorboard(folder: Path):
    """A TensorBoard writer (the optional extra ``augforge[tensorboard]``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AugforgeError("train.tensorboard: needs the tensorboard package; pip install 'augforge[tensorboard]'") \
            from None
    return SummaryWriter(str(folder))


class EpochProgress:
    """Progress over one epoch's batches: step, loss, learning rate and rows/s. ``bar``: a progress bar on a
    terminal; ``lines``: a log line every ``every`` seconds (for piped output and log files); ``off``."""

    def __init__(self, trainer: Trainer, loader, mode: str, every: float = 30.0, log=print) -> None:
        self.trainer, self.loader, self.mode, self.every, self.log = trainer, loader, mode, every, log

    def __enter__(self):
        if self.mode == "off":
            return self.loader
        if self.mode == "bar":
            self.progress = progress_bar("info")
            self.progress.__enter__()
            self.task = self.progress.add_task(f"epoch {self.trainer.epoch}", total=len(self.loader), info="")
        return self._batches()

    def _status(self, rows: int, started: float) -> str:
        t = self.trainer
        return (f"step {t.step}  loss {t.last_loss:.4f}  lr {t.optimizer.param_groups[0]['lr']:.2e}  "
                f"{rows / max(time.perf_counter() - started, 1e-9):,.0f} rows/s")

    def _batches(self):
        started = last = time.perf_counter()
        rows, total = 0, len(self.loader)
        for done, (x, y) in enumerate(self.loader, 1):
            yield x, y
            rows += len(y)
            if self.mode == "bar":
                self.progress.update(self.task, advance=1, info=self._status(rows, started))
            elif time.perf_counter() - last >= self.every:
                last = time.perf_counter()
                self.log(f"epoch {self.trainer.epoch}: batch {done}/{total}  {self._status(rows, started)}")

    def __exit__(self, *exc):
        if self.mode == "bar":
            self.progress.__exit__(*exc)
