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
from augforge.device import Device, choose_device, cuda_available
from augforge.errors import AugforgeError
from augforge.augment.image_ops import DETERMINISTIC
from augforge.augment.ops import op_dicts
from augforge.recipe import Recipe
from augforge.recipe.train import RunSpec, TrainConfig
from augforge.train.loop import Trainer, evaluate

INPUT_BOUND_WARNING = 0.10


def save_checkpoint(path: Path, trainer: Trainer, loader_state: dict, extra: dict) -> None:
    """Model, optimizer, schedule, EMA/SWA and loader state, written to a temporary name and renamed."""
    state = {
        "model": trainer.module.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "swa": trainer.swa.state_dict() if trainer.swa is not None else None,
        "swa_scheduler": trainer.swa_scheduler.state_dict() if trainer.swa_scheduler is not None else None,
        "trainer": {"step": trainer.step, "epoch": trainer.epoch, "skipped": trainer.skipped,
                    "snapshots": trainer.snapshots},
        "loader": loader_state,
        "rng": torch.get_rng_state(),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, read with ``weights_only=True`` (no pickled code runs); any file that is not one is
    refused in one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise AugforgeError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickler raises many kinds on garbage; weights_only ran no code
        if isinstance(exc, MemoryError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AugforgeError(f"{path}: not a readable augforge checkpoint ({first})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise AugforgeError(f"{path}: not an augforge checkpoint (no model weights in it)")
    return state


def _restore(trainer: Trainer, state: dict) -> None:
    trainer.module.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
    if trainer.swa is not None and state.get("swa") is not None:
        trainer.swa.load_state_dict(state["swa"])
        trainer.swa_scheduler.load_state_dict(state["swa_scheduler"])
    for key, value in state["trainer"].items():
        setattr(trainer, key, value)
    torch.set_rng_state(state["rng"])


def training_settings(recipe: Recipe) -> dict:
    """Every setting of the ``train:`` section that shapes training, keyed ``train.<key>`` (JSON values); a
    checkpoint stores them, and a resume under other settings is refused naming the keys that differ.
    Settings that only change logging (tensorboard, log_every) and the device and threads are left out."""

    run = {k: v for k, v in asdict(recipe.run).items() if k not in ("tensorboard", "log_every", "device", "threads")}
    run["stream"] = op_dicts(recipe.train_ops)
    return _keyed({**asdict(recipe.train), **run})


def _keyed(settings: dict) -> dict:
    """Settings keyed ``train.<key>``, in key order, with JSON values (as checkpoints store them)."""
    return {f"train.{k}": json.loads(json.dumps(v)) for k, v in sorted(settings.items())}


def _default_settings() -> dict:
    """The training settings of an empty recipe, keyed as ``training_settings`` keys them."""
    from augforge.recipe.train import RunSpec, TrainConfig

    return _keyed({**asdict(TrainConfig()), **asdict(RunSpec())})


def _check_resume(path: Path, state: dict, settings: dict, allow_changes: bool, log) -> None:
    """Refuse to resume under other training settings (naming them), unless ``allow_changes``."""
    stored = state.get("settings")
    if stored is None:
        if not allow_changes:
            raise AugforgeError(f"{path}: records no training settings (an older augforge wrote it), so a resume "
                                "cannot be checked; pass --resume-changed to continue it anyway")
        log("resuming a checkpoint that records no training settings")
        return
    # a setting newer than the checkpoint is no change where it holds its default (the old code's behaviour)
    defaults = _default_settings()
    changed = [k for k in sorted(set(stored) | set(settings))
               if stored.get(k, defaults.get(k)) != settings.get(k)]
    if not changed:
        return
    listed = ", ".join(f"{k}: {json.dumps(stored.get(k))} -> {json.dumps(settings.get(k))}" for k in changed[:6])
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    if not allow_changes:
        raise AugforgeError(f"{path}: was trained with other settings ({listed}{more}); pass --resume-changed to "
                            "continue under the new ones, or use another --run-dir")
    log(f"resuming under changed settings: {listed}{more}")


def train_recipe(recipe: Recipe, run_dir: str | Path, *, data: str | Path | None = None, resume: bool = False,
                 rebuild: bool = False, workers: int = 2, threads: int | None = None, log=print,
                 show_progress: bool = False, resume_changed: bool = False, profile: int | None = None,
                 on_epoch=None) -> dict:
    """Build or reuse the dataset, train with the recipe's ``train:`` section, and write the run directory.

    One device decision (``train.device``) places the loader's batches, the model, mixed precision and
    every evaluation. Validation and test batches get only the deterministic part of the training ops,
    and the checkpoints carry that preprocessing, so ``evaluate_checkpoint`` reproduces the test metrics.
    ``profile``: profile that many steps of the first epoch (``augforge.train.profile``). ``on_epoch``:
    called with each epoch's record after its checkpoint is written (``augforge tune`` prunes there)."""
    config, run = recipe.train, recipe.run
    device = choose_device(run.device)
    device.check_precision(config.precision)
    threads = _set_threads(threads or run.threads)
    rank, world = _init_distributed(device)
    lead = rank == 0  # only the first process builds, logs and writes
    log = log if lead else (lambda _: None)
    run_dir = Path(run_dir)
    data = Path(data or recipe.output.dir or run_dir / "data")
    started = time.perf_counter()
    if lead:
        manifest = _data(recipe, data, rebuild, workers, log)
    if world > 1:
        torch.distributed.barrier()  # the others wait for the data
    if not lead:
        from augforge.datasets.manifest import read_manifest

        manifest = read_manifest(data)
    class_names = manifest["class_names"]
    torch.manual_seed(run.seed)
    loader, val, test = open_loaders(recipe, data, manifest, device)
    arch = _arch(run, manifest, config, loader.encoder)
    spec = loader.input_spec()
    log(f"device: {device}; threads: {threads}")
    text_stats = _text_stats(loader, val, test, log) if loader.encoder is not None else None
    model = model_from(arch, pretrained=True)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model.to(device.torch))
    weights = None
    if config.class_weights == "balanced":
        from augforge.train.losses import balanced_class_weights

        weights = balanced_class_weights([manifest["counts"]["train"].get(n, 0) for n in class_names])
    trainer = Trainer(model, config, len(loader), device=device, class_weights=weights)
    checkpoints = run_dir / "checkpoints"
    best, since_best = None, 0
    settings = training_settings(recipe)
    if resume and (checkpoints / "last.pt").is_file():
        state = load_checkpoint(checkpoints / "last.pt")
        _check_resume(checkpoints / "last.pt", state, settings, resume_changed, log)
        _restore(trainer, state)
        loader.load_state_dict(state["loader"])
        best = state.get("best")
        spec = state.get("input", spec)
        log(f"resumed at epoch {trainer.epoch}")
    elif lead and run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise AugforgeError(f"{run_dir}: holds an earlier run; pass --resume to continue it or choose another "
                            "--run-dir")
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    board = _tensorboard(run_dir / "tensorboard") if (lead and run.tensorboard) else None
    progress = "bar" if show_progress else "lines"
    training = time.perf_counter()
    profiler = None
    if profile and lead:
        from augforge.train.profile import StepProfiler

        profiler = StepProfiler(run_dir / "profile", profile, device.torch)
    while trainer.epoch < config.epochs:
        epoch_started = time.perf_counter()
        with _EpochProgress(trainer, loader, progress if lead else "off", run.log_every, log) as batches:
            if profiler is not None and profiler.summary is None:
                batches = profiler.batches(batches)
            record = trainer.train_epoch(batches)
        if profiler is not None and profiler.summary is None:
            from augforge.train.profile import report_lines

            for line in report_lines(profiler.finish()):
                log(line)
        stats = loader.stats()
        record["input_bound"] = stats["wait_fraction"]
        record["world_size"] = world
        record["train_s"] = time.perf_counter() - epoch_started  # this epoch's training pass
        record["elapsed_s"] = time.perf_counter() - training  # training (and validation) time so far
        if not lead:
            continue
        if val is not None:
            measured = _evaluate(trainer.model, val, class_names, trainer, arch)
            spec["shape"] = measured.pop("input_shape", None)
            record["val"] = {k: v for k, v in measured.items() if k != "confusion"}
        score = record.get("val", {}).get(run.early_metric)
        improved = score is not None and (best is None or score > best)
        if improved:
            best, since_best = score, 0
        else:
            since_best += 1
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if board is not None:
            for key in ("loss", "lr", "input_bound"):
                board.add_scalar(f"train/{key}", record[key], record["epoch"])
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                if key in record.get("val", {}):
                    board.add_scalar(f"val/{key}", record["val"][key], record["epoch"])
            board.flush()
        extra = {"best": best, "arch": arch, "input": spec, "settings": settings}
        save_checkpoint(checkpoints / "last.pt", trainer, loader.state_dict(), extra)
        if improved or val is None:
            save_checkpoint(checkpoints / "best.pt", trainer, loader.state_dict(), extra)
        log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}"
            + (f", val {run.early_metric} {score:.4f}" if score is not None else "")
            + f", waiting for data {record['input_bound']:.0%}")
        if record["input_bound"] > INPUT_BOUND_WARNING:
            log(f"warning: training waited for data {record['input_bound']:.0%} of the time; "
                + input_bound_hint(device, run.device, threads, loader))
        if on_epoch is not None:
            on_epoch(record)
        if run.patience and since_best >= run.patience:
            log(f"early stopping: {run.early_metric} did not improve for {since_best} epochs")
            break
    if board is not None:
        board.close()
    trainer.finish_swa(loader)
    if not lead:
        _end_distributed(world)
        return {}
    final = trainer.final_model()
    summary = {"wall_s": time.perf_counter() - started, "input_bound": loader.stats()["wait_fraction"],
               "epochs": trainer.epoch, "model": run.model, "device": str(device), "threads": threads,
               "data": os.path.abspath(data),
               "config": asdict(config)}
    if text_stats is not None:
        summary["text"] = text_stats
    if profiler is not None:
        summary["profile"] = {k: profiler.summary[k] for k in ("steps", "wait_share", "trace")}
    if val is not None:  # the delivered model (SWA / EMA average when configured) on the validation split
        measured = _evaluate(final, val, class_names, trainer, arch)
        summary["val"] = {k: v for k, v in measured.items() if k not in ("confusion", "input_shape")}
    if test is not None:
        measured = _evaluate(final, test, class_names, trainer, arch)
        spec["shape"] = measured.pop("input_shape", None)
        summary.update(measured)
    with atomic_path(run_dir / "model.pt") as tmp:  # the weights to use: SWA / EMA average when configured
        torch.save({"model": final.state_dict(), "arch": arch, "input": spec}, tmp)
    write_json(run_dir / "summary.json", summary)
    _end_distributed(world)
    return summary


def open_loaders(recipe: Recipe, data: Path, manifest: dict, device: Device):
    """(train, val, test) loaders of a built dataset: the train loader runs the recipe's training ops
    (``Recipe.train_ops``), mixing and its sampler; val and test (None where the data has no such split)
    only the deterministic part, in storage order, on every row. Text splits share one encoder, made for
    the recipe's model (``text_encoder``)."""
    from augforge.pipelines.stream import open_loader

    run = recipe.run
    ops = recipe.train_ops or None
    text = text_encoder(run, data) if manifest.get("payload") == "text" else None
    loader = open_loader(data, run.batch_size, ops=ops, seed=run.seed, mix=run.mix(), device=device, text=text,
                         bootstrap=run.bootstrap, sampler=run.sampler)
    whole = {"rank": 0, "world_size": 1, "shuffle": False, "ops": ops, "augment": False, "device": device,
             "text": loader.encoder}
    val = open_loader(data, 256, split="val", **whole) if "val" in manifest["counts"] else None
    test = open_loader(data, 256, split="test", **whole) if "test" in manifest["counts"] else None
    return loader, val, test


def text_encoder(run: RunSpec, data: Path):
    """The text encoder of a run: ``train.text`` for its model (fastText: hashed n-grams; a text_encoder:
    its own tokenizer; others: a tokenizer trained on the train split, as large as the model's
    ``vocab_size`` unless ``train.text.vocab_size`` says), truncating to at most the model's ``max_len``."""
    from dataclasses import replace

    from augforge.datasets.reader import Dataset
    from augforge.pipelines.text_encoding import fit_encoder
    from augforge.models import model_options

    defaults = {**model_options(run.model), **run.model_options}
    options = run.text
    if isinstance(defaults.get("max_len"), int):
        options = replace(options, max_tokens=min(options.max_tokens, defaults["max_len"]))
    if run.model == "text_encoder":
        from augforge.models.text_encoder import local_config

        limit = local_config(defaults.get("path")).get("max_position_embeddings")
        options = replace(options, path=str(defaults.get("path") or ""),
                          max_tokens=min(options.max_tokens, int(limit or options.max_tokens)))
    kind = options.kind_for(run.model)
    texts = Dataset(data, "train", verify=False).texts() if kind in ("bpe", "wordpiece", "word") else []
    size = run.model_options.get("vocab_size")
    return fit_encoder(options, run.model, texts, size if isinstance(size, int) else None)


def _text_stats(loader, val, test, log) -> dict:
    """Token counts per split before truncation, and how many rows each split truncates (logged)."""
    from augforge.pipelines.text_encoding import lengths_summary

    out = {"encoder": loader.encoder.kind, "vocab_size": loader.encoder.vocab_size,
           "max_tokens": loader.encoder.options.max_tokens, "truncate": loader.encoder.options.truncate}
    for name, split in (("train", loader), ("val", val), ("test", test)):
        if split is None:
            continue
        texts = split.dataset.texts()
        out[name] = lengths_summary(split.encoder, texts)
        if out[name]["truncated"]:
            log(f"text: {out[name]['truncated']:,} of {len(texts):,} {name} rows are longer than "
                f"{out['max_tokens']:,} tokens and were truncated ({out['truncate']}; longest {out[name]['max']:,})")
    return out


def _evaluate(model, loader, class_names: list[str], trainer: Trainer, arch: dict) -> dict:
    """Metrics of ``model`` on an evaluation loader, on the run's device (with the input shape seen)."""
    return evaluate(model, loader, class_names, device=trainer.device, binary=arch.get("binary", False))


def _set_threads(threads: int | None) -> int:
    """torch's intra-op threads: ``threads`` when given, else torch's default (one per core)."""
    if threads is not None:
        if threads < 1:
            raise AugforgeError(f"--threads {threads}: expected at least 1")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


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


def _tensorboard(folder: Path):
    """A TensorBoard writer (the optional extra ``augforge[tensorboard]``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AugforgeError("train.tensorboard: needs the tensorboard package; pip install 'augforge[tensorboard]'") \
            from None
    return SummaryWriter(str(folder))


class _EpochProgress:
    """Progress over one epoch's batches: step, loss, learning rate and rows/s. ``bar``: a progress bar on a
    terminal; ``lines``: a log line every ``every`` seconds (for piped output and log files); ``off``."""

    def __init__(self, trainer: Trainer, loader, mode: str, every: float = 30.0, log=print) -> None:
        self.trainer, self.loader, self.mode, self.every, self.log = trainer, loader, mode, every, log

    def __enter__(self):
        if self.mode == "off":
            return self.loader
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
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


def _init_distributed(device: Device) -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.is_cuda else "gloo")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _end_distributed(world: int) -> None:
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _data(recipe: Recipe, data: Path, rebuild: bool, workers: int, log) -> dict:
    """Build the recipe's dataset into ``data``, or reuse it; the manifest."""
    from augforge.datasets.writer import OtherDataset
    from augforge.pipelines.build import build

    try:
        result = build(recipe, data, workers=workers, overwrite=rebuild)
    except OtherDataset as exc:  # train and lr-find replace it with --rebuild
        raise AugforgeError(exc.with_flag("--rebuild")) from None
    log(f"data: {os.path.normpath(data)} ({'reused' if result.write.up_to_date else 'built'}, "
        f"{result.write.manifest['num_rows']:,} rows)")
    for warning in result.write.manifest.get("warnings") or []:
        log(f"warning: {warning}")
    return result.write.manifest


def _arch(run: RunSpec, manifest: dict, config: TrainConfig, encoder=None) -> dict:
    """What rebuilds the model: name, options, classes, input channels (or features), binary head. A text
    model's ``vocab_size`` and ``pad_id`` are its encoder's."""
    from augforge.models import model_options

    info = manifest.get("payload_info") or {}
    in_channels = len(info.get("feature_names") or ()) if manifest.get("payload") == "features" else \
        info.get("channels", 3)
    options = dict(run.model_options)
    if encoder is not None:
        known = model_options(run.model)
        options.update({k: v for k, v in (("vocab_size", encoder.vocab_size), ("pad_id", encoder.pad_id))
                        if k in known})
    if run.model == "text_encoder":  # the architecture travels with the weights: evaluation needs no directory
        from augforge.models.text_encoder import local_config

        options["config"] = local_config(options.get("path"))
    return {"name": run.model, "options": options, "num_classes": len(manifest["class_names"]),
            "in_channels": int(in_channels or 3), "class_names": manifest["class_names"],
            "binary": bool(config.binary)}


def model_from(arch: dict, pretrained: bool = False) -> torch.nn.Module:
    """A fresh model as ``arch`` (stored in every checkpoint) describes it. ``pretrained``: a text_encoder
    loads its directory's weights (to train); otherwise its stored config rebuilds it (to load weights into)."""
    from augforge.models import create

    options = dict(arch["options"])
    if pretrained:
        options.pop("config", None)
    return create(arch["name"], arch["num_classes"], in_channels=arch["in_channels"], **options)


def prepare_run(recipe: Recipe, *, data=None, rebuild: bool = False, workers: int = 2, log=print):
    """(TrainConfig, a fresh model, the train loader) for the recipe, building the data when needed."""
    data = Path(data or recipe.output.dir or "build/data")
    manifest = _data(recipe, data, rebuild, workers, log)
    device = choose_device(recipe.run.device)
    torch.manual_seed(recipe.run.seed)
    loader = open_loaders(recipe, data, manifest, device)[0]
    arch = _arch(recipe.run, manifest, recipe.train, loader.encoder)
    return recipe.train, model_from(arch, pretrained=True).to(device.torch), loader


def loader_options(spec: dict) -> dict:
    """The loader options that feed a model as its checkpoint's input spec says: a text model's encoder, an
    image model's deterministic ops and colour mode."""
    return {"text": {"text": spec.get("text")}, "image": {"ops": spec.get("ops") or None,
                                                          "color": spec.get("color")}}.get(spec["payload"], {})


def checkpoint_model_and_loader(checkpoint: str | Path, data: str | Path, split: str = "test", device="auto",
                                batch_size: int = 256):
    """(model, loader, arch, input spec, device) of a checkpoint on a dataset directory's split: the model
    rebuilt and loaded, the loader feeding it as training fed evaluation (the checkpoint's input spec).
    Data that cannot be made to fit (another payload, other classes, another width) is refused in one line."""
    from augforge.pipelines.stream import open_loader

    path = Path(checkpoint)
    state = load_checkpoint(path)
    arch, spec = state.get("arch"), state.get("input")
    if not isinstance(arch, dict) or not {"name", "num_classes", "class_names"} <= set(arch):
        raise AugforgeError(f"{path}: has no model description (arch); was it written by augforge train?")
    if not isinstance(spec, dict) or "payload" not in spec:
        raise AugforgeError(f"{path}: has no input spec (preprocessing); it was written by an older augforge "
                            "train, which did not record it: retrain to evaluate it reproducibly")
    try:
        model = model_from({"in_channels": 3, "options": {}, **arch})
        model.load_state_dict(state["model"])
    except (AugforgeError, RuntimeError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AugforgeError(f"{path}: the weights do not fit model {arch.get('name')!r} ({first})") from None
    placement = choose_device(device)
    if spec["payload"] == "text" and not isinstance(spec.get("text"), dict):
        raise AugforgeError(f"{path}: records no text encoder (an older augforge stored a word list); retrain it to "
                            "evaluate it reproducibly")
    loader = open_loader(data, batch_size, split=split, shuffle=False, augment=False, device=placement,
                         **loader_options(spec))
    if loader.payload != spec["payload"]:
        raise AugforgeError(f"{data}: holds {loader.payload} rows; {path} was trained on {spec['payload']}")
    if loader.dataset.class_names != arch["class_names"]:
        raise AugforgeError(f"{data}: classes {loader.dataset.class_names} differ from the checkpoint's "
                            f"{arch['class_names']}")
    if spec["payload"] == "features" and spec.get("dim") and loader.input_spec()["dim"] != spec["dim"]:
        raise AugforgeError(f"{data}: rows have {loader.input_spec()['dim']} features; {path} was trained on "
                            f"{spec['dim']}")
    return model.to(placement.torch).eval(), loader, arch, spec, placement


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test", device="auto") -> dict:
    """Metrics of a checkpoint (``model.pt``, ``best.pt`` or ``last.pt``) on a dataset directory's split.

    The checkpoint's input spec decides the preprocessing: the deterministic part of the training ops,
    the colour mode (grey and RGB data are converted to what the model was trained on) and the text
    encoder (tokenizer and truncation). Data that cannot be made to fit (another payload, other classes,
    another input shape) is refused in one line."""
    model, loader, arch, spec, placement = checkpoint_model_and_loader(checkpoint, data, split, device)
    metrics = evaluate(model, loader, arch["class_names"], device=placement.torch,
                       binary=arch.get("binary", False), expect_shape=spec.get("shape"), source=str(data))
    metrics.pop("input_shape", None)
    return metrics
