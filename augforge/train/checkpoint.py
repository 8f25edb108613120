"""Checkpoints of a run: written atomically, read with ``weights_only=True``, and the training settings they
record (``augforge.recipe.settings``), so that a resume under other settings is refused naming what changed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from augforge.atomic import atomic_path
from augforge.errors import AugforgeError, OptionError, first_line
from augforge.recipe.settings import default_training_settings
from augforge.train.loop import Trainer


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
        raise AugforgeError(f"{path}: not a readable augforge checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise AugforgeError(f"{path}: not an augforge checkpoint (no model weights in it)")
    return state


def restore_trainer(trainer: Trainer, state: dict) -> None:
    """Put a checkpoint's model, optimizer, schedule, EMA/SWA, counters and RNG state back into ``trainer``."""
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


def check_resume(path: Path, state: dict, settings: dict, allow_changes: bool, log) -> None:
    """Refuse to resume under other training settings (naming them), unless ``allow_changes``."""
    stored = state.get("settings")
    if stored is None:
        if not allow_changes:
            raise OptionError("{path}: records no training settings (an older augforge wrote it), so a resume "
                              "cannot be checked; pass {resume_changed} to continue it anyway", path=path)
        log("resuming a checkpoint that records no training settings")
        return
    # a setting newer than the checkpoint is no change where it holds its default (the old code's behaviour)
    defaults = default_training_settings()
    changed = [k for k in sorted(set(stored) | set(settings))
               if stored.get(k, defaults.get(k)) != settings.get(k)]
    if not changed:
        return
    listed = ", ".join(f"{k}: {json.dumps(stored.get(k))} -> {json.dumps(settings.get(k))}" for k in changed[:6])
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    if not allow_changes:
        raise OptionError("{path}: was trained with other settings ({listed}{more}); pass {resume_changed} to "
                          "continue under the new ones, or use another {run_dir}", path=path, listed=listed, more=more)
    log(f"resuming under changed settings: {listed}{more}")
