"""`augforge train RECIPE`: build (or reuse) the recipe's dataset, stream it, train, evaluate, write a run.

The run directory holds ``metrics.jsonl`` (one line per epoch: train loss, learning rate, validation
metrics, input-bound share), ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically,
read back with ``weights_only=True``), and ``summary.json`` with the final test metrics under
``accuracy``, ``balanced_accuracy``, ``macro_f1``, the wall time and the input-bound fraction.

The dataset: the recipe's ``output.dir`` (or ``--data``). A complete build of the same recipe is
reused; a missing or interrupted one is built (or resumed); a build of a *different* recipe is refused
unless ``--rebuild`` is given, which rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from augforge.atomic import atomic_path, write_json
from augforge.datasets.manifest import read_manifest
from augforge.device import Device, choose_device
from augforge.errors import AugforgeError, OptionError
from augforge.recipe import Recipe
from augforge.recipe.train import METRICS, RunSpec
from augforge.train.checkpoint import check_resume, load_checkpoint, restore_trainer, save_checkpoint, \
    training_settings
from augforge.train.compute import end_distributed, init_distributed, set_threads
from augforge.train.data import ensure_dataset, open_loaders, text_stats
from augforge.train.decouple import decouple
from augforge.train.long_tail import make_criterion, pick_tau, posthoc_offset, run_counts, shot_groups, shot_line, \
    shot_metrics, uses_long_tail
from augforge.train.loop import Trainer, collect_logits, evaluate
from augforge.train.progress import INPUT_BOUND_WARNING, EpochProgress, input_bound_hint, open_tensorboard
from augforge.train.restore import model_arch, model_from


def train_recipe(recipe: Recipe, run_dir: str | Path, *, data: str | Path | None = None, resume: bool = False,
                 rebuild: bool = False, workers: int = 2, threads: int | None = None, log=print,
                 show_progress: bool = False, resume_changed: bool = False, profile: int | None = None,
                 on_epoch=None, train_rows=None) -> dict:
    """Build or reuse the dataset, train with the recipe's ``train:`` section, and write the run directory.

    One device decision (``train.device``) places the loader's batches, the model, mixed precision and
    every evaluation. Validation and test batches get only the deterministic part of the training ops,
    and the checkpoints carry that preprocessing, so ``evaluate_checkpoint`` reproduces the test metrics.
    ``profile``: profile that many steps of the first epoch (``augforge.train.profile``). ``on_epoch``:
    called with each epoch's record after its checkpoint is written (``augforge tune`` prunes there).
    ``train_rows``: train on these positions of the train split only (``augforge crossfit``'s folds)."""
    config, run = recipe.train, recipe.run
    device = choose_device(run.device)
    device.check_precision(config.precision)
    threads = set_threads(threads or run.threads)
    rank, world = init_distributed(device)
    lead = rank == 0  # only the first process builds, logs and writes
    log = log if lead else (lambda _: None)
    run_dir = Path(run_dir)
    data = Path(data or recipe.output.dir or run_dir / "data")
    started = time.perf_counter()

    manifest = _dataset_for_every_rank(recipe, data, rebuild, workers, log, lead, world)
    class_names = manifest["class_names"]
    torch.manual_seed(run.seed)
    loader, val, test = open_loaders(recipe, data, manifest, device, train_rows)
    arch = model_arch(run, manifest, config, loader.encoder)
    spec = loader.input_spec()
    log(f"device: {device}; threads: {threads}")
    texts = text_stats(loader, val, test, log) if loader.encoder is not None else None

    counts = run_counts(config, manifest)
    if uses_long_tail(config):
        log(f"priors: {counts['what']}: " + ", ".join(f"{n} {c}" for n, c in zip(class_names, counts["priors"])))
    for key, auto in (("posthoc_tau", config.posthoc_tau == "auto"),
                      ("decouple.tau", config.decouple is not None and config.decouple.tau == "auto"
                       and config.decouple.mode == "tau_norm")):
        if auto and val is None:
            raise AugforgeError(f"train.{key}: auto picks tau on the val split, and the dataset has none; set "
                                "source.val_split, or give tau as a number")
    trainer = _make_trainer(recipe, arch, counts["priors"], len(loader), device, world)
    settings = training_settings(recipe)
    best, spec = _resume_or_start(trainer, loader, run_dir, resume, resume_changed, settings, spec, lead, log)
    files = _RunFiles(run_dir, tensorboard=lead and run.tensorboard)
    profiler = _profiler(run_dir, profile, device) if profile and lead else None
    progress = ("bar" if show_progress else "lines") if lead else "off"
    since_best, training = 0, time.perf_counter()
    while trainer.epoch < config.epochs:
        record = _train_epoch(trainer, loader, progress, run.log_every, profiler, log, world, training)
        if not lead:
            continue
        if val is not None:
            measured = _evaluate(trainer.model, val, class_names, trainer, arch)
            spec["shape"] = measured.pop("input_shape", None)
            record["val"] = {k: v for k, v in measured.items() if k != "confusion"}
        score = record.get("val", {}).get(run.early_metric)
        improved = score is not None and (best is None or score > best)
        best, since_best = (score, 0) if improved else (best, since_best + 1)
        files.record(record)
        extra = {"best": best, "arch": arch, "input": spec, "settings": settings, "counts": counts,
                 "shots": asdict(run.shots)}
        files.checkpoint(trainer, loader.state_dict(), extra, best_too=improved or val is None)
        _log_epoch(record, score, run, device, threads, loader, log)
        if on_epoch is not None:
            on_epoch(record)
        if run.patience and since_best >= run.patience:
            log(f"early stopping: {run.early_metric} did not improve for {since_best} epochs")
            break
    files.close()
    trainer.finish_swa(loader)
    if not lead:
        end_distributed(world)
        return {}

    final = trainer.final_model()
    stage = None
    if config.decouple is not None:
        before = _evaluate(final, test, class_names, trainer, arch) if test is not None else None
        final, stage = decouple(final, config.decouple, config, loader, val, class_names, run.early_metric,
                                run.seed, trainer.device)
        if before is not None:
            stage["before"] = {k: before[k] for k in METRICS}
        log(f"decoupled the classifier: {stage['mode']}" + (f", tau {stage['tau']}" if "tau" in stage else
                                                           f", {stage['epochs']} epochs on class-balanced draws"))
    summary = {"wall_s": time.perf_counter() - started, "input_bound": loader.stats()["wait_fraction"],
               "epochs": trainer.epoch, "model": run.model, "device": str(device), "threads": threads,
               "data": os.path.abspath(data), "config": asdict(config)}
    if train_rows is not None:
        summary["train_rows"] = loader.size
    if texts is not None:
        summary["text"] = texts
    if profiler is not None:
        summary["profile"] = {k: profiler.summary[k] for k in ("steps", "wait_share", "trace")}
    if stage is not None:
        summary["decouple"] = stage
    adjust = _posthoc(final, val, counts["priors"], class_names, trainer, run, config)
    if adjust is not None:
        summary["posthoc"] = adjust
    offset = None if adjust is None else posthoc_offset(counts["priors"], adjust["tau"])
    groups = shot_groups(counts["source"], class_names, run.shots)
    summary.update(_final_metrics(final, val, test, class_names, trainer, arch, spec, offset, groups))
    if adjust is not None and test is not None:
        plain = _evaluate(final, test, class_names, trainer, arch)
        adjust["unadjusted"] = {k: plain[k] for k in METRICS}
        log(f"post-hoc adjustment: tau {adjust['tau']}; test balanced accuracy {plain['balanced_accuracy']:.4f} "
            f"unadjusted, {summary['balanced_accuracy']:.4f} adjusted")
    if "shots" in summary:
        log(f"test many / medium / few-shot: {shot_line(summary['shots'])}")
    with atomic_path(run_dir / "model.pt") as tmp:  # the weights to use: SWA / EMA average when configured
        torch.save({"model": final.state_dict(), "arch": arch, "input": spec, "counts": counts,
                    "shots": asdict(run.shots), "posthoc_tau": None if adjust is None else adjust["tau"]}, tmp)
    write_json(run_dir / "summary.json", summary)
    end_distributed(world)
    return summary


def _dataset_for_every_rank(recipe: Recipe, data: Path, rebuild: bool, workers: int, log, lead: bool,
                            world: int) -> dict:
    """The first process builds or reuses the data; the others wait for it and read its manifest."""
    manifest = ensure_dataset(recipe, data, rebuild, workers, log) if lead else None
    if world > 1:
        torch.distributed.barrier()  # the others wait for the data
    return manifest if lead else read_manifest(data)


def _make_trainer(recipe: Recipe, arch: dict, counts: list[int], steps_per_epoch: int, device: Device,
                  world: int) -> Trainer:
    """The model the recipe names (pretrained weights where it has them), wrapped for DDP across processes,
    and its trainer: the recipe's loss and class weights on the prior ``counts`` (``make_criterion``)."""
    model = model_from(arch, pretrained=True)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model.to(device.torch))
    return Trainer(model, recipe.train, steps_per_epoch, device=device,
                   criterion=make_criterion(recipe.train, counts))


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


def _resume_or_start(trainer: Trainer, loader, run_dir: Path, resume: bool, resume_changed: bool,
                     settings: dict, spec: dict, lead: bool, log) -> tuple:
    """Continue from ``checkpoints/last.pt`` (under the same settings unless ``resume_changed``), or start in
    an empty run directory. Returns (best validation score so far, the input spec)."""
    last = run_dir / "checkpoints" / "last.pt"
    best = None
    if resume and last.is_file():
        state = load_checkpoint(last)
        check_resume(last, state, settings, resume_changed, log)
        restore_trainer(trainer, state)
        loader.load_state_dict(state["loader"])
        best = state.get("best")
        spec = state.get("input", spec)
        log(f"resumed at epoch {trainer.epoch}")
    elif lead and run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise OptionError("{path}: holds an earlier run; pass {resume} to continue it or choose another {run_dir}",
                          path=run_dir)
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
    return best, spec


def _profiler(run_dir: Path, steps: int, device: Device):
    """A profiler of the first ``steps`` steps (torch.profiler: imported only when asked for)."""
    from augforge.train.profile import StepProfiler  # torch.profiler and its trace writer

    return StepProfiler(run_dir / "profile", steps, device.torch)


def _train_epoch(trainer: Trainer, loader, progress: str, every: float, profiler, log, world: int,
                 training: float) -> dict:
    """One pass over the train loader with progress (and the profiler on its first steps); the epoch's
    record with its input-bound share, the world size, and the times (``training``: when training began)."""
    epoch_started = time.perf_counter()
    with EpochProgress(trainer, loader, progress, every, log) as batches:
        if profiler is not None and profiler.summary is None:
            batches = profiler.batches(batches)
        record = trainer.train_epoch(batches)
    if profiler is not None and profiler.summary is None:
        from augforge.train.profile import report_lines  # with StepProfiler, only when profiling

        for line in report_lines(profiler.finish()):
            log(line)
    record["input_bound"] = loader.stats()["wait_fraction"]
    record["world_size"] = world
    record["train_s"] = time.perf_counter() - epoch_started  # this epoch's training pass
    record["elapsed_s"] = time.perf_counter() - training  # training (and validation) time so far
    return record


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
    return recipe.train, model_from(arch, pretrained=True).to(device.torch), loader


