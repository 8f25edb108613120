"""`augforge train RECIPE`: build (or reuse) the recipe's dataset, stream it, train, evaluate, write a run.

The run directory holds ``metrics.jsonl`` (one line per epoch: train loss, learning rate, validation
metrics, input-bound share), ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically,
read back with ``weights_only=True``), and ``summary.json`` with the final test metrics under
``accuracy``, ``balanced_accuracy``, ``macro_f1``, the wall time and the input-bound fraction.

The dataset: the recipe's ``output.dir`` (or ``--data``). A complete build of the same recipe is
reused; a missing or interrupted one is built (or resumed); a build of a *different* recipe is refused
unless ``--rebuild`` is given, which rebuilds it.

A run reads top to bottom as nanoGPT's train.py does (``train_recipe``): open the data, start (or resume) the
trainer, train and validate epoch after epoch, then deliver the model (decoupling, post-hoc adjustment, the
final metrics) and write it. Each step is a method of ``Run``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from augforge.atomic import atomic_path, write_json
from augforge.checks import options_of
from augforge.datasets.publish import output_location
from augforge.datasets.reader import Dataset
from augforge.device import Device, choose_device
from augforge.errors import AugforgeError, OptionError
from augforge.paths import local_path
from augforge.pipelines.loader_options import StreamOptions
from augforge.recipe import Recipe
from augforge.storage.urls import remote
from augforge.recipe.train import METRICS, RunSpec, TrainConfig, with_training_rows
from augforge.recipe.settings import training_settings
from augforge.train.checkpoint import check_resume, load_checkpoint, restore_trainer, save_checkpoint
from augforge.train.compute import end_distributed, init_distributed, set_threads
from augforge.train.data import ensure_dataset, open_loaders, text_stats
from augforge.train.decouple import decouple
from augforge.train.long_tail import make_criterion, pick_tau, posthoc_offset, run_counts, shot_groups, shot_line, \
    shot_metrics, uses_long_tail
from augforge.train.loop import Trainer, collect_logits, evaluate
from augforge.train.progress import INPUT_BOUND_WARNING, EpochProgress, input_bound_hint, open_tensorboard
from augforge.train.restore import model_arch, model_from


@dataclass
class RunOptions:
    """How ``train_recipe`` runs a recipe (what it trains is the recipe's): ``data`` (the dataset directory;
    default the recipe's output.dir), ``resume`` (from checkpoints/last.pt; ``resume_changed``: also under changed
    settings), ``rebuild`` (a dataset of another recipe), build ``workers``, torch ``threads``, ``log``,
    ``show_progress`` (a bar rather than lines), ``profile`` (that many steps of the first epoch:
    ``augforge.train.profile``), ``on_epoch`` (called with each epoch's record after its checkpoint is written:
    ``augforge tune`` prunes there), ``train_rows`` (train on these positions of the train split only:
    ``augforge crossfit``'s folds), ``stream`` (how a dataset at an ``s3://`` URL is streamed: ``StreamOptions``,
    its cache and shuffle block)."""

    data: str | Path | None = None
    resume: bool = False
    resume_changed: bool = False
    rebuild: bool = False
    workers: int = 2
    threads: int | None = None
    log: Callable = print
    show_progress: bool = False
    profile: int | None = None
    on_epoch: Callable | None = None
    train_rows: object = None
    stream: StreamOptions | None = None


def train_recipe(recipe: Recipe, run_dir: str | Path, **options) -> dict:
    """Build or reuse the dataset, train with the recipe's ``train:`` section, and write the run directory;
    the summary (``options``: ``RunOptions``).

    One device decision (``train.device``) places the loader's batches, the model, mixed precision and
    every evaluation. Validation and test batches get only the deterministic part of the training ops,
    and the checkpoints carry that preprocessing, so ``evaluate_checkpoint`` reproduces the test metrics."""
    run = Run(recipe, run_dir, options_of(RunOptions, options, "train_recipe"))
    run.open_data()
    run.start()
    while run.trainer.epoch < recipe.train.epochs:
        record = run.train_epoch()
        if run.lead and run.end_epoch(record):  # validated, recorded, checkpointed; True: early stopping
            break
    return run.finish()


class Run:
    """One training run of a recipe in ``run_dir``; ``train_recipe`` calls its steps in order."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, options: RunOptions) -> None:
        self.recipe, self.options, self.config, self.spec_of_run = recipe, options, recipe.train, recipe.run
        self.device = choose_device(recipe.run.device)
        self.device.check_precision(self.config.precision)
        self.threads = set_threads(options.threads or recipe.run.threads)
        self.rank, self.world = init_distributed(self.device)
        self.lead = self.rank == 0  # only the first process builds, logs and writes
        self.log = options.log if self.lead else (lambda _: None)
        self.run_dir = Path(local_path(run_dir, "run_dir"))
        data = options.data or recipe.output.dir or self.run_dir / "data"
        self.data = str(output_location(data, "data")) if remote(data) else Path(data)
        self.started = time.perf_counter()

    def open_data(self) -> None:
        """Build or reuse the dataset; open its loaders; the model's architecture, the input spec, the text
        statistics and the class counts that the long-tail options use."""
        recipe, config, run = self.recipe, self.config, self.spec_of_run
        stream = self.options.stream or StreamOptions()
        manifest = _dataset_for_every_rank(recipe, self.data, self.options.rebuild, self.options.workers, self.log,
                                           self.lead, self.world, stream)
        self.class_names = manifest["class_names"]
        torch.manual_seed(run.seed)
        self.loader, self.val, self.test = open_loaders(recipe, self.data, manifest, self.device,
                                                        self.options.train_rows, stream)
        self.config = config = with_training_rows(config, self.loader.size)
        self.arch = model_arch(run, manifest, config, self.loader.encoder)
        self.spec = self.loader.input_spec()
        self.log(f"device: {self.device}; threads: {self.threads}")
        text = self.loader.encoder is not None
        self.texts = text_stats(self.loader, self.val, self.test, self.log) if text else None
        self.counts = run_counts(config, manifest)
        if uses_long_tail(config):
            self.log(f"priors: {self.counts['what']}: "
                     + ", ".join(f"{n} {c}" for n, c in zip(self.class_names, self.counts["priors"])))
        _check_auto_tau(config, self.val)

    def start(self) -> None:
        """The trainer, fresh or resumed from ``checkpoints/last.pt``; the run's files and profiler."""
        self.trainer = _make_trainer(self.config, self.arch, self.counts["priors"], len(self.loader),
                                     self.device, self.world, self.loader.encoder)
        self.settings = training_settings(self.recipe)
        self.best = None
        self._resume_or_refuse()
        self.files = _RunFiles(self.run_dir, tensorboard=self.lead and self.spec_of_run.tensorboard)
        profile = self.options.profile
        self.profiler = _profiler(self.run_dir, profile, self.device) if profile and self.lead else None
        self.since_best, self.training = 0, time.perf_counter()

    def _resume_or_refuse(self) -> None:
        """Continue from ``checkpoints/last.pt`` (under the same settings unless ``resume_changed``: the best
        score and input spec come back with it), or start in an empty run directory (a directory holding an
        earlier run is refused without ``resume``)."""
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.options.resume and last.is_file():
            state = load_checkpoint(last)
            check_resume(last, state, self.settings, self.options.resume_changed, self.log)
            restore_trainer(self.trainer, state)
            ranks = state["loader"].get("world_size", self.world)
            if ranks != self.world:  # another number of steps per epoch: the schedule continues at this epoch
                self.trainer.continue_at_epoch_start()
                self.log(f"resumed on {self.world} process(es) a run of {ranks}: each epoch is now "
                         f"{self.trainer.steps_per_epoch} steps of a global batch of "
                         f"{self.spec_of_run.batch_size * self.world * self.config.accumulate} rows")
            self.loader.load_state_dict(state["loader"])
            self.best = state.get("best")
            self.spec = state.get("input", self.spec)
            self.log(f"resumed at epoch {self.trainer.epoch}")
        elif self.lead and self.run_dir.exists() and any(self.run_dir.iterdir()) and not self.options.resume:
            raise OptionError("{path}: holds an earlier run; pass {resume} to continue it or choose another "
                              "{run_dir}", path=self.run_dir)
        if self.lead:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def train_epoch(self) -> dict:
        """One pass over the train loader with progress (and the profiler on its first steps); the epoch's
        record with its input-bound share, the world size and the times."""
        progress = ("bar" if self.options.show_progress else "lines") if self.lead else "off"
        profiling = self.profiler is not None and self.profiler.summary is None
        epoch_started = time.perf_counter()
        with EpochProgress(self.trainer, self.loader, progress, self.spec_of_run.log_every, self.log) as batches:
            record = self.trainer.train_epoch(self.profiler.batches(batches) if profiling else batches)
        if profiling:
            from augforge.train.profile import report_lines  # with StepProfiler, only when profiling

            for line in report_lines(self.profiler.finish()):
                self.log(line)
        record["input_bound"] = self.loader.stats()["wait_fraction"]
        record["world_size"] = self.world
        record["train_s"] = time.perf_counter() - epoch_started  # this epoch's training pass
        record["elapsed_s"] = time.perf_counter() - self.training  # training (and validation) time so far
        return record

    def end_epoch(self, record: dict) -> bool:
        """Validate, append the record, write the checkpoints (``best.pt`` when validation improved), log, call
        ``on_epoch``; True when early stopping ends the run."""
        run = self.spec_of_run
        if self.val is not None:
            measured = _evaluate(self.trainer.model, self.val, self.class_names, self.trainer, self.arch)
            self.spec["shape"] = measured.pop("input_shape", None)
            record["val"] = {k: v for k, v in measured.items() if k != "confusion"}
        score = record.get("val", {}).get(run.early_metric)
        improved = score is not None and (self.best is None or score > self.best)
        self.best, self.since_best = (score, 0) if improved else (self.best, self.since_best + 1)
        self.files.record(record)
        extra = {"best": self.best, "arch": self.arch, "input": self.spec, "settings": self.settings,
                 "counts": self.counts, "shots": asdict(run.shots)}
        self.files.checkpoint(self.trainer, self.loader.state_dict(), extra, best_too=improved or self.val is None)
        _log_epoch(record, score, run, self.device, self.threads, self.loader, self.log)
        if self.options.on_epoch is not None:
            self.options.on_epoch(record)
        if run.patience and self.since_best >= run.patience:
            self.log(f"early stopping: {run.early_metric} did not improve for {self.since_best} epochs")
            return True
        return False

    def finish(self) -> dict:
        """The delivered model (SWA / EMA average, decoupled classifier, post-hoc adjustment) measured on val and
        test and written with the summary (first process); the summary ({} on the other ranks)."""
        self.files.close()
        self.trainer.finish_swa(self.loader)
        if not self.lead:
            end_distributed(self.world)
            return {}
        final, stage = self._decoupled(self.trainer.final_model())
        summary = self._summary_head(stage)
        adjust = _posthoc(final, self.val, self.counts["priors"], self.class_names, self.trainer,
                          self.spec_of_run, self.config)
        if adjust is not None:
            summary["posthoc"] = adjust
        offset = None if adjust is None else posthoc_offset(self.counts["priors"], adjust["tau"])
        groups = shot_groups(self.counts["source"], self.class_names, self.spec_of_run.shots)
        summary.update(_final_metrics(final, self.val, self.test, self.class_names, self.trainer, self.arch,
                                      self.spec, offset, groups))
        if adjust is not None and self.test is not None:
            plain = _evaluate(final, self.test, self.class_names, self.trainer, self.arch)
            adjust["unadjusted"] = {k: plain[k] for k in METRICS}
            self.log(f"post-hoc adjustment: tau {adjust['tau']}; test balanced accuracy "
                     f"{plain['balanced_accuracy']:.4f} unadjusted, {summary['balanced_accuracy']:.4f} adjusted")
        if "shots" in summary:
            self.log(f"test many / medium / few-shot: {shot_line(summary['shots'])}")
        with atomic_path(self.run_dir / "model.pt") as tmp:  # the weights to use: SWA / EMA average when configured
            torch.save({"model": final.state_dict(), "arch": self.arch, "input": self.spec, "counts": self.counts,
                        "shots": asdict(self.spec_of_run.shots),
                        "posthoc_tau": None if adjust is None else adjust["tau"]}, tmp)
        write_json(self.run_dir / "summary.json", summary)
        end_distributed(self.world)
        return summary

    def _decoupled(self, final) -> tuple:
        """(the model, the decoupling stage's record or None): ``train.decouple`` re-trains or re-normalises the
        classifier, with the test metrics before it recorded."""
        config = self.config
        if config.decouple is None:
            return final, None
        before = None
        if self.test is not None:
            before = _evaluate(final, self.test, self.class_names, self.trainer, self.arch)
        final, stage = decouple(final, config.decouple, config, self.loader, self.val, self.class_names,
                                self.spec_of_run.early_metric, self.spec_of_run.seed, self.trainer.device)
        if before is not None:
            stage["before"] = {k: before[k] for k in METRICS}
        self.log(f"decoupled the classifier: {stage['mode']}" + (
            f", tau {stage['tau']}" if "tau" in stage else f", {stage['epochs']} epochs on class-balanced draws"))
        return final, stage

    def _summary_head(self, stage: dict | None) -> dict:
        """The summary's run facts: wall time, input-bound share, epochs, model, device, data, config, and the
        cross-fit rows, text statistics, profile and decoupling where they apply."""
        summary = {"wall_s": time.perf_counter() - self.started, "input_bound": self.loader.stats()["wait_fraction"],
                   "epochs": self.trainer.epoch, "model": self.spec_of_run.model, "device": str(self.device),
                   "threads": self.threads, "data": self.data if remote(self.data) else os.path.abspath(self.data), "config": asdict(self.config)}
        if self.options.train_rows is not None:
            summary["train_rows"] = self.loader.size
        if self.texts is not None:
            summary["text"] = self.texts
        if self.profiler is not None:
            summary["profile"] = {k: self.profiler.summary[k] for k in ("steps", "wait_share", "trace")}
        if stage is not None:
            summary["decouple"] = stage
        return summary


def _check_auto_tau(config, val) -> None:
    """``auto`` tau (post-hoc or tau-normalisation) is picked on val: refused in one line without a val split."""
    for key, auto in (("posthoc_tau", config.posthoc_tau == "auto"),
                      ("decouple.tau", config.decouple is not None and config.decouple.tau == "auto"
                       and config.decouple.mode == "tau_norm")):
        if auto and val is None:
            raise AugforgeError(f"train.{key}: auto picks tau on the val split, and the dataset has none; set "
                                "source.val_split, or give tau as a number")


def _dataset_for_every_rank(recipe: Recipe, data, rebuild: bool, workers: int, log, lead: bool,
                            world: int, stream: StreamOptions) -> dict:
    """The first process builds or reuses the data; the others wait for it and read its manifest."""
    manifest = ensure_dataset(recipe, data, rebuild, workers, log) if lead else None
    if world > 1:
        torch.distributed.barrier()  # the others wait for the data
    return manifest if lead else Dataset(data, "all", verify=False, cache=stream.cache).manifest


def _make_trainer(config: TrainConfig, arch: dict, counts: list[int], steps_per_epoch: int,
                  device: Device, world: int, encoder=None) -> Trainer:
    """The model ``arch`` names (pretrained weights where it has them), wrapped for DDP across processes,
    and its trainer: the recipe's loss and class weights on the prior ``counts`` (``make_criterion``). A text
    model takes what its fitted ``encoder`` holds for it (``model_from``)."""
    model = model_from(arch, pretrained=True, encoder=encoder)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model.to(device.torch))
    return Trainer(model, config, steps_per_epoch, device=device, criterion=make_criterion(config, counts))


def _posthoc(final, val, counts: list[int], class_names: list[str], trainer: Trainer, run: RunSpec,
             config) -> dict | None:
    """``train.posthoc_tau``: the given tau, or (``auto``) the one whose adjusted val predictions score best on
    the early-stopping metric; None without post-hoc adjustment."""
    if config.posthoc_tau is None:
        return None
    if config.posthoc_tau != "auto":
        return {"tau": float(config.posthoc_tau), "picked_on": None}
    logits, true, _ = collect_logits(final, val, trainer.device)
    return {**pick_tau(logits, true, counts, class_names, run.early_metric), "picked_on": f"val {run.early_metric}"}


def _profiler(run_dir: Path, steps: int, device: Device):
    """A profiler of the first ``steps`` steps (torch.profiler: imported only when asked for)."""
    from augforge.train.profile import StepProfiler  # torch.profiler and its trace writer

    return StepProfiler(run_dir / "profile", steps, device.torch)


class _RunFiles:
    """What the first process writes every epoch: a line of ``metrics.jsonl``, TensorBoard scalars when
    asked for, ``checkpoints/last.pt`` and, when validation improved, ``best.pt``."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.metrics = run_dir / "metrics.jsonl"
        self.checkpoints = run_dir / "checkpoints"
        self.board = open_tensorboard(run_dir / "tensorboard") if tensorboard else None

    def record(self, record: dict) -> None:
        """Append the epoch's record (and its scalars to TensorBoard)."""
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key in ("loss", "lr", "input_bound"):
                self.board.add_scalar(f"train/{key}", record[key], record["epoch"])
            for key in METRICS:
                if key in record.get("val", {}):
                    self.board.add_scalar(f"val/{key}", record["val"][key], record["epoch"])
            self.board.flush()

    def checkpoint(self, trainer: Trainer, loader_state: dict, extra: dict, best_too: bool) -> None:
        """Write ``last.pt``, and ``best.pt`` too when ``best_too``."""
        save_checkpoint(self.checkpoints / "last.pt", trainer, loader_state, extra)
        if best_too:
            save_checkpoint(self.checkpoints / "best.pt", trainer, loader_state, extra)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.board is not None:
            self.board.close()


def _log_epoch(record: dict, score, run: RunSpec, device: Device, threads: int, loader, log) -> None:
    """The epoch's log line, and a warning with what to do when training waited for data."""
    log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}"
        + (f", val {run.early_metric} {score:.4f}" if score is not None else "")
        + f", waiting for data {record['input_bound']:.0%}")
    if record["input_bound"] > INPUT_BOUND_WARNING:
        log(f"warning: training waited for data {record['input_bound']:.0%} of the time; "
            + input_bound_hint(device, run.device, threads, loader))


def _final_metrics(final, val, test, class_names: list[str], trainer: Trainer, arch: dict, spec: dict,
                   offset=None, groups: dict | None = None) -> dict:
    """The delivered model (SWA / EMA average when configured, its logits less the post-hoc ``offset``) on val
    (under ``val``) and test (at the top level), each with its many / medium / few-shot split (``groups``);
    the test pass records the input shape in ``spec``."""
    out = {}
    if val is not None:
        measured = _evaluate(final, val, class_names, trainer, arch, offset)
        out["val"] = {k: v for k, v in measured.items() if k not in ("confusion", "input_shape")}
        if groups is not None and not arch.get("binary"):
            out["val"]["shots"] = shot_metrics(measured["recall"], groups)
    if test is not None:
        measured = _evaluate(final, test, class_names, trainer, arch, offset)
        spec["shape"] = measured.pop("input_shape", None)
        out.update(measured)
        if groups is not None and not arch.get("binary"):
            out["shots"] = shot_metrics(measured["recall"], groups)
    return out


def _evaluate(model, loader, class_names: list[str], trainer: Trainer, arch: dict, offset=None) -> dict:
    """Metrics of ``model`` on an evaluation loader, on the run's device (with the input shape seen), its
    logits less ``offset`` when given."""
    return evaluate(model, loader, class_names, device=trainer.device, binary=arch.get("binary", False),
                    offset=offset)


def prepare_run(recipe: Recipe, *, data=None, rebuild: bool = False, workers: int = 2, log=print):
    """(TrainConfig, a fresh model, the train loader) for the recipe, building the data when needed."""
    data = Path(data or recipe.output.dir or "build/data")
    manifest = ensure_dataset(recipe, data, rebuild, workers, log)
    device = choose_device(recipe.run.device)
    torch.manual_seed(recipe.run.seed)
    loader = open_loaders(recipe, data, manifest, device)[0]
    arch = model_arch(recipe.run, manifest, recipe.train, loader.encoder)
    config = with_training_rows(recipe.train, loader.size)
    return config, model_from(arch, pretrained=True, encoder=loader.encoder).to(device.torch), loader


