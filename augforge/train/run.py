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
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from augforge.atomic import atomic_path, write_json
from augforge.augment.mix import MixConfig
from augforge.errors import AugforgeError
from augforge.recipe import Recipe
from augforge.train.loop import TrainConfig, Trainer, evaluate

TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig)) + (
    "model", "model_options", "batch_size", "seed", "mixup_alpha", "cutmix_alpha", "mix_prob", "stream",
    "early_stopping_metric", "early_stopping_patience", "tensorboard")
INPUT_BOUND_WARNING = 0.10


def train_config(recipe: Recipe) -> tuple[TrainConfig, dict]:
    """The recipe's ``train:`` section as a TrainConfig, plus the run options (model, batch size, ...)."""
    from augforge.recipe import Checker

    raw = dict(recipe.data.get("train") or {})
    c = Checker(recipe.file)
    c.mapping(raw, "train", TRAIN_KEYS)
    defaults = TrainConfig()
    values = {}
    for f in fields(TrainConfig):
        if f.name in raw:
            default = getattr(defaults, f.name)
            value = raw[f.name]
            if isinstance(default, bool):
                value = c.flag(value, f"train.{f.name}")
            elif isinstance(default, (int, float)) and not isinstance(value, bool):
                value = c.number(value, f"train.{f.name}", 0)
            values[f.name] = value
    config = TrainConfig(**values)
    run = {
        "model": raw.get("model", "simple_cnn"),
        "model_options": dict(raw.get("model_options") or {}),
        "batch_size": int(c.number(raw.get("batch_size", 64), "train.batch_size", 1, integer=True)),
        "seed": int(c.number(raw.get("seed", recipe.seed), "train.seed", 0, integer=True)),
        "mix": MixConfig(float(raw.get("mixup_alpha", 0.0)), float(raw.get("cutmix_alpha", 0.0)),
                         float(raw.get("mix_prob", 1.0))),
        "stream": list(raw.get("stream") or []),
        "early_metric": raw.get("early_stopping_metric", "balanced_accuracy"),
        "patience": raw.get("early_stopping_patience"),
        "tensorboard": c.flag(raw.get("tensorboard", False), "train.tensorboard"),
    }
    return config, run


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
    """A checkpoint, read with ``weights_only=True`` (no pickled code runs)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise AugforgeError(f"{path}: not a readable augforge checkpoint ({str(exc).splitlines()[0]})") from None


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


def train_recipe(recipe: Recipe, run_dir: str | Path, *, data: str | Path | None = None, resume: bool = False,
                 rebuild: bool = False, workers: int = 2, log=print, show_progress: bool = False) -> dict:
    """Build or reuse the dataset, train with the recipe's ``train:`` section, and write the run directory."""
    from augforge.pipelines.stream import open_loader

    config, run = train_config(recipe)
    rank, world = _init_distributed()
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
    torch.manual_seed(run["seed"])
    loader = open_loader(data, run["batch_size"], ops=run["stream"] or None, seed=run["seed"], mix=run["mix"])
    whole = {"rank": 0, "world_size": 1, "shuffle": False, "ops": run["stream"] or None}  # evaluation: every row
    val = open_loader(data, 256, split="val", **whole) if "val" in manifest["counts"] else None
    test = open_loader(data, 256, split="test", **whole) if "test" in manifest["counts"] else None
    arch = _arch(run, manifest)
    model = model_from(arch)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    trainer = Trainer(model, config, len(loader))
    checkpoints = run_dir / "checkpoints"
    best, since_best = None, 0
    if resume and (checkpoints / "last.pt").is_file():
        state = load_checkpoint(checkpoints / "last.pt")
        _restore(trainer, state)
        loader.load_state_dict(state["loader"])
        best = state.get("best")
        log(f"resumed at epoch {trainer.epoch}")
    elif lead and run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise AugforgeError(f"{run_dir}: holds an earlier run; pass --resume to continue it or choose another "
                            "--run-dir")
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    board = _tensorboard(run_dir / "tensorboard") if (lead and run["tensorboard"]) else None
    while trainer.epoch < config.epochs:
        with _EpochProgress(trainer, loader, enabled=lead and show_progress) as batches:
            record = trainer.train_epoch(batches)
        stats = loader.stats()
        record["input_bound"] = stats["wait_fraction"]
        record["world_size"] = world
        if not lead:
            continue
        if val is not None:
            record["val"] = {k: v for k, v in evaluate(trainer.model, val, class_names).items() if k != "confusion"}
        score = record.get("val", {}).get(run["early_metric"])
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
        save_checkpoint(checkpoints / "last.pt", trainer, loader.state_dict(), {"best": best, "arch": arch})
        if improved or val is None:
            save_checkpoint(checkpoints / "best.pt", trainer, loader.state_dict(), {"best": best, "arch": arch})
        log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}"
            + (f", val {run['early_metric']} {score:.4f}" if score is not None else "")
            + f", waiting for data {record['input_bound']:.0%}")
        if record["input_bound"] > INPUT_BOUND_WARNING:
            log(f"warning: training waited for data {record['input_bound']:.0%} of the time; move augmentation to "
                "the GPU (device: auto), add DALI threads, or pre-build augmented shards")
        if run["patience"] and since_best >= int(run["patience"]):
            log(f"early stopping: {run['early_metric']} did not improve for {since_best} epochs")
            break
    if board is not None:
        board.close()
    trainer.finish_swa(loader)
    if not lead:
        _end_distributed(world)
        return {}
    final = trainer.final_model()
    with atomic_path(run_dir / "model.pt") as tmp:  # the weights to use: SWA / EMA average when configured
        torch.save({"model": final.state_dict(), "arch": arch}, tmp)
    summary = {"wall_s": time.perf_counter() - started, "input_bound": loader.stats()["wait_fraction"],
               "epochs": trainer.epoch, "model": run["model"], "config": asdict(config)}
    if test is not None:
        summary.update({k: v for k, v in evaluate(final, test, class_names).items()})
    write_json(run_dir / "summary.json", summary)
    _end_distributed(world)
    return summary


def _tensorboard(folder: Path):
    """A TensorBoard writer (the optional extra ``augforge[tensorboard]``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AugforgeError("train.tensorboard: needs the tensorboard package; pip install 'augforge[tensorboard]'") \
            from None
    return SummaryWriter(str(folder))


class _EpochProgress:
    """A progress bar over one epoch's batches: step, loss, learning rate and rows/s (terminal only)."""

    def __init__(self, trainer: Trainer, loader, enabled: bool) -> None:
        self.trainer, self.loader, self.enabled = trainer, loader, enabled

    def __enter__(self):
        if not self.enabled:
            return self.loader
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
        self.progress.__enter__()
        self.task = self.progress.add_task(f"epoch {self.trainer.epoch}", total=len(self.loader), info="")
        return self._batches()

    def _batches(self):
        started, rows = time.perf_counter(), 0
        for x, y in self.loader:
            yield x, y
            rows += len(y)
            t = self.trainer
            self.progress.update(self.task, advance=1, info=(
                f"step {t.step}  loss {t.last_loss:.4f}  lr {t.optimizer.param_groups[0]['lr']:.2e}  "
                f"{rows / max(time.perf_counter() - started, 1e-9):,.0f} rows/s"))

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)


def _init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); (rank, world size)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _end_distributed(world: int) -> None:
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _data(recipe: Recipe, data: Path, rebuild: bool, workers: int, log) -> dict:
    """Build the recipe's dataset into ``data``, or reuse it; the manifest."""
    from augforge.pipelines.build import build

    result = build(recipe, data, workers=workers, overwrite=rebuild)
    log(f"data: {data} ({'reused' if result.write.up_to_date else 'built'}, "
        f"{result.write.manifest['num_rows']:,} rows)")
    return result.write.manifest


def _arch(run: dict, manifest: dict) -> dict:
    """What rebuilds the model: name, options, classes and input channels."""
    return {"name": run["model"], "options": run["model_options"], "num_classes": len(manifest["class_names"]),
            "in_channels": (manifest.get("payload_info") or {}).get("channels", 3),
            "class_names": manifest["class_names"]}


def model_from(arch: dict) -> torch.nn.Module:
    """A fresh model as ``arch`` (stored in every checkpoint) describes it."""
    from augforge.train.models import create

    return create(arch["name"], arch["num_classes"], in_channels=arch["in_channels"], **arch["options"])


def prepare_run(recipe: Recipe, *, data=None, rebuild: bool = False, workers: int = 2, log=print):
    """(TrainConfig, a fresh model, the train loader) for the recipe, building the data when needed."""
    from augforge.pipelines.stream import open_loader

    config, run = train_config(recipe)
    data = Path(data or recipe.output.dir or "build/data")
    manifest = _data(recipe, data, rebuild, workers, log)
    torch.manual_seed(run["seed"])
    arch = _arch(run, manifest)
    model = model_from(arch)
    return config, model, open_loader(data, run["batch_size"], ops=run["stream"] or None, seed=run["seed"])


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test") -> dict:
    """Metrics of a checkpoint (``model.pt``, ``best.pt`` or ``last.pt``) on a dataset directory's split."""
    from augforge.pipelines.stream import open_loader

    state = load_checkpoint(Path(checkpoint))
    arch = state.get("arch")
    if not arch:
        raise AugforgeError(f"{checkpoint}: has no model description (arch); was it written by augforge train?")
    model = model_from(arch)
    model.load_state_dict(state["model"])
    loader = open_loader(data, 256, split=split, shuffle=False)
    if loader.dataset.class_names != arch["class_names"]:
        raise AugforgeError(f"{data}: classes {loader.dataset.class_names} differ from the checkpoint's "
                            f"{arch['class_names']}")
    return evaluate(model, loader, arch["class_names"])
