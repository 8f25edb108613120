"""The training loop: explicit, in the spirit of nanoGPT's train.py, not a callback framework.

One optimizer step is ``accumulate`` micro-batches. Their losses are *summed* over samples and divided
by the number of samples of the whole step, so N micro-batches of any sizes give exactly the update of
one batch holding all of them (the schedule counts optimizer steps). Under DDP the gradient all-reduce
runs on the last micro-batch only (``no_sync`` before).

Per step: autocast (bf16 on CPU or GPU, fp16 with a GradScaler on GPU), a non-finite loss stops the
run naming the step (or skips the step when ``nonfinite="skip"``; the weights are then untouched),
gradient clipping, the optimizer, the schedule, the EMA of the weights. Per epoch: SWA snapshots from
``swa_start`` (``torch.optim.swa_utils``: AveragedModel, SWALR), and at the end ``update_bn`` over
the training data so the averaged model's BatchNorm statistics are its own.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from augforge.device import Device, choose_device
from augforge.errors import AugforgeError
from augforge.recipe.train import TrainConfig  # noqa: F401  (re-exported: the loop's settings)
from augforge.train.losses import Criterion, weight_penalty
from augforge.train.metrics import classification_metrics
from augforge.train.optim import build_optimizer
from augforge.train.schedules import build_scheduler


def prepare_input(x):
    """What a model takes: uint8 images become float in [0, 1]; text (ids, lengths) and floats pass."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x


def _to(x, device):
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x


def _forward(model, x):
    return model(*x) if isinstance(x, tuple) else model(x)


class Trainer:
    """Trains ``model`` with ``config``; ``fit`` runs the epochs, ``evaluate`` measures a loader."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, steps_per_epoch: int,
                 device: "str | torch.device | Device" = "cpu", class_weights: torch.Tensor | None = None,
                 criterion: Criterion | None = None) -> None:
        #: the device decision (augforge.device.Device), shared with the loader that feeds this trainer
        self.placement = choose_device(device if not isinstance(device, torch.device) else str(device))
        self.device = self.placement.torch
        self.model, self.config = model.to(self.device), config
        #: the loss (``train.loss``, its priors, the class weights of each epoch); without one, the config's
        #: loss with ``class_weights`` (``train.class_weights: balanced``)
        criterion = criterion or Criterion(config.loss, config.label_smoothing, weights=class_weights,
                                           binary=config.binary)
        self.criterion = criterion.to(self.device)
        #: the model itself, also under DistributedDataParallel (what is averaged, saved and evaluated)
        self.module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        if config.accumulate < 1:
            raise AugforgeError(f"accumulate {config.accumulate}: expected at least 1")
        self.placement.check_precision(config.precision)
        self.optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum,
                                         config.nesterov)
        self.steps_per_epoch = max(1, math.ceil(steps_per_epoch / config.accumulate))
        self.total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.total_steps, warmup=config.warmup,
                                         min_factor=config.min_lr_factor, step_size=config.step_size,
                                         gamma=config.gamma)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.ema = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                 use_buffers=True) \
            if config.ema_decay else None
        self.swa = AveragedModel(self.module) if config.swa_start is not None else None
        self.swa_scheduler = SWALR(self.optimizer, swa_lr=config.swa_lr or config.lr, anneal_epochs=1) \
            if self.swa is not None else None
        self.step, self.epoch, self.skipped = 0, 0, 0
        self.snapshots = 0
        self.last_loss = float("nan")

    def continue_at_epoch_start(self) -> None:
        """After a resume on another world size (another number of steps per epoch): the step count and the
        learning-rate schedule put at the start of the current epoch as this run counts its steps."""
        self.step = self.epoch * self.steps_per_epoch
        self.scheduler.last_epoch = self.step - 1
        with warnings.catch_warnings():  # no optimizer step yet in this process: the schedule is only set
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    # -- one optimizer step ----------------------------------------------------------------------------

    def _autocast(self):
        if self.config.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def optimizer_step(self, micro_batches: list) -> float:
        """One update from ``micro_batches`` [(x, y), ...]: the loss of all their samples, averaged once."""
        model, cfg = self.model, self.config
        total = sum(len(y) for _, y in micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        for i, (x, y) in enumerate(micro_batches):
            x, y = _to(prepare_input(x), self.device), _to(y, self.device)
            sync = i == len(micro_batches) - 1
            no_sync = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    logits = _forward(model, x)
                loss = self.criterion.sum(logits, y, self.epoch) / total
                if (cfg.l1 or cfg.l2) and sync:
                    loss = loss + weight_penalty(model, cfg.l1, cfg.l2)
                if not torch.isfinite(loss):
                    return self._nonfinite(float(loss))
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_value += float(loss.detach())
        if cfg.clip_grad_norm:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.swa is None or self.epoch < (self.config.swa_start or 0):
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        self.step += 1
        self.last_loss = loss_value
        return loss_value

    def _nonfinite(self, value: float) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.nonfinite == "skip":
            self.skipped += 1
            self.step += 1
            return float("nan")
        raise AugforgeError(f"step {self.step} (epoch {self.epoch}): the loss is {value}; the weights were not "
                            "updated. Lower the learning rate, clip gradients (clip_grad_norm), or set "
                            "nonfinite: skip")

    # -- epochs ----------------------------------------------------------------------------------------

    def train_epoch(self, batches: Iterable) -> dict:
        """One pass over ``batches``: optimizer steps of ``accumulate`` micro-batches each."""
        self.model.train()
        group, losses, rows = [], [], 0
        for x, y in batches:
            group.append((x, y))
            rows += len(y)
            if len(group) == self.config.accumulate:
                losses.append(self.optimizer_step(group))
                group = []
        if group:
            losses.append(self.optimizer_step(group))
        if self.swa is not None and self.epoch >= self.config.swa_start and \
                (self.epoch - self.config.swa_start) % self.config.swa_every == 0:
            self.swa.update_parameters(self.module)
            self.snapshots += 1
            self.swa_scheduler.step()
        self.epoch += 1
        finite = [v for v in losses if not math.isnan(v)]
        return {"epoch": self.epoch - 1, "loss": float(np.mean(finite)) if finite else float("nan"), "rows": rows,
                "lr": self.optimizer.param_groups[0]["lr"], "skipped_steps": self.skipped}

    def finish_swa(self, batches: Iterable) -> None:
        """Recompute the averaged model's BatchNorm statistics over the training data (``update_bn``)."""
        if self.swa is not None and self.snapshots:
            update_bn(((_to(prepare_input(x), self.device)) for x, _ in batches), self.swa, device=self.device)

    def final_model(self) -> torch.nn.Module:
        """The model to evaluate and save: the SWA average when it took snapshots, else the EMA, else the model."""
        if self.swa is not None and self.snapshots:
            return self.swa.module
        if self.ema is not None:
            return self.ema.module
        return self.module

    def fit(self, train: Callable[[], Iterable] | Iterable, on_epoch: Callable[[dict], None] | None = None) -> list:
        """All epochs; ``train`` is a re-iterable of (x, y) batches (a loader) or a function returning one."""
        history = []
        source = train if callable(train) else (lambda: train)
        while self.epoch < self.config.epochs:
            record = self.train_epoch(source())
            history.append(record)
            if on_epoch:
                on_epoch(record)
        self.finish_swa(source())
        return history


@torch.no_grad()
def collect_logits(model: torch.nn.Module, batches: Iterable, device="cpu", expect_shape: list | None = None,
                   source: str = "the data") -> tuple[torch.Tensor, np.ndarray, list | None]:
    """(float logits on the CPU, true class indices, the per-sample input shape of image batches or None)
    over ``batches``. With ``expect_shape`` a batch of another shape is refused before the model sees it."""
    model.eval()
    true, outputs, shape = [], [], None
    for x, y in batches:
        if isinstance(x, torch.Tensor):
            shape = list(x.shape[1:])
            if expect_shape is not None and shape != list(expect_shape):
                raise AugforgeError(f"{source}: gives inputs of shape {'x'.join(map(str, shape))}, but the model "
                                    f"was trained and evaluated on {'x'.join(map(str, expect_shape))}; add a "
                                    "resize or center_crop to the training ops, or evaluate on data of that size")
        outputs.append(_forward(model, _to(prepare_input(x), device)).float().cpu())
        true.append(y.argmax(-1) if y.is_floating_point() and y.ndim == 2 else y.long())
    return torch.cat(outputs), torch.cat(true).numpy(), shape


def predictions(logits: torch.Tensor, binary: bool = False, offset: torch.Tensor | None = None) -> np.ndarray:
    """Class indices from logits: the sign of a binary head's one logit, else the argmax of the logits less
    ``offset`` (post-hoc logit adjustment's ``tau * log prior``)."""
    if binary:
        return (logits.reshape(-1) > 0).long().numpy()
    return (logits if offset is None else logits - offset.to(logits.device)).argmax(-1).numpy()


def evaluate(model: torch.nn.Module, batches: Iterable, class_names: list[str], device="cpu",
             binary: bool = False, expect_shape: list | None = None, source: str = "the data",
             offset: torch.Tensor | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class recall and the confusion matrix over ``batches``,
    and ``input_shape``: the per-sample shape of image batches (None for text). ``offset`` is subtracted
    from the logits before the argmax (post-hoc adjustment); ``expect_shape`` refuses batches of another
    shape."""
    logits, true, shape = collect_logits(model, batches, device, expect_shape, source)
    metrics = classification_metrics(true, predictions(logits, binary, offset), class_names)
    metrics["input_shape"] = shape
    return metrics
