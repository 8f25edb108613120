"""The run fingerprint: every setting of a recipe's ``train:`` section that shapes training, keyed
``train.<key>`` with JSON values. A checkpoint stores it (a resume under other settings is refused naming the
keys that differ), and ``augforge ablate`` reuses a finished run only when its fingerprint is the same."""

from __future__ import annotations

import json
from dataclasses import asdict

from augforge.augment.ops import op_dicts
from augforge.recipe.train import RunSpec, TrainConfig

#: ``train:`` settings that change only logging, the device or the threads: not part of the fingerprint
NOT_TRAINING = ("tensorboard", "log_every", "device", "threads", "shots")


def training_settings(recipe) -> dict:
    """The fingerprint of ``recipe``'s training (a ``Recipe``): its TrainConfig and RunSpec less
    ``NOT_TRAINING``, the streamed ops as the training loader runs them (``Recipe.train_ops``)."""
    run = {k: v for k, v in asdict(recipe.run).items() if k not in NOT_TRAINING}
    run["stream"] = op_dicts(recipe.train_ops)
    return _keyed({**asdict(recipe.train), **run})


def default_training_settings() -> dict:
    """The training settings of an empty recipe, keyed as ``training_settings`` keys them (a setting newer than
    a checkpoint is no change where it holds this default)."""
    return _keyed({**asdict(TrainConfig()), **asdict(RunSpec())})


def _keyed(settings: dict) -> dict:
    """Settings keyed ``train.<key>``, in key order, with JSON values (as checkpoints store them)."""
    return {f"train.{k}": json.loads(json.dumps(v)) for k, v in sorted(settings.items())}
