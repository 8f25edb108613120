"""The image audit's default label model: a small CNN cross-fitted on the user's images within a time budget,
whose out-of-fold probabilities feed cleanlab (``augforge audit`` without ``--probs`` or ``--fast``).

A linear model on 16x16 grey pixels is too weak for most image sets: where it is right on few rows out of
fold, confident learning flags hard rows along with wrong labels (one row in five on a set of small product
photos). So, for images, ``audit_with_model``:

1. builds the source into a work directory with a small recipe (``simple_cnn`` on 32x32 inputs, AdamW, cosine
   schedule; or the user's recipe with ``recipe=``), the split and seed the audit uses;
2. times a few training steps of the model on this machine and gives it as many epochs as the budget fits
   over ``folds`` folds (``MIN_EPOCHS`` to ``MAX_EPOCHS``); when even ``MIN_EPOCHS`` do not fit, it says so
   and the audit falls back to the fast linear model;
3. cross-fits it (``augforge.experiments.crossfit``), measures the fast linear model's out-of-fold accuracy on
   the same rows, and audits the build with the probabilities of whichever is right on more rows out of fold
   (a CNN from scratch needs rows: on glyphs with 9 images a class the linear model wins). The report names
   the model, both accuracies (``models_compared``) and the cross-fit's time.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from augforge.audit.labels import out_of_fold_probabilities
from augforge.audit.probs import run_probabilities
from augforge.audit.rows import read_rows
from augforge.audit.run import audit
from augforge.datasets.reader import Dataset
from augforge.datasets.sources import has_dense_targets
from augforge.datasets.sources.image_folder import IMAGE_EXTENSIONS
from augforge.errors import OptionError
from augforge.experiments.crossfit import crossfit
from augforge.recipe import Recipe, load_recipe, parse_recipe
from augforge.train.data import ensure_dataset

#: the default budget of the cross-fit (minutes, on the machine it runs on)
BUDGET_MINUTES = 4.0
#: epochs the budget must fit for the CNN to be worth it, and the most it is given
MIN_EPOCHS, MAX_EPOCHS = 4, 20
#: the default model's input side and batch size
SIDE, BATCH = 32, 64
#: wall time of an epoch per timed training step: loading, scoring and the epoch's validation on top
OVERHEAD = 1.6


def default_recipe(source: str, work: Path, seed: int, color: str, epochs: int, splits: dict) -> Recipe:
    """The audit's small CNN: ``simple_cnn`` on ``SIDE`` x ``SIDE`` inputs in ``color``, ``epochs`` epochs."""
    return parse_recipe({"seed": seed, "source": {"path": str(source), **splits},
                         "augment": {"color": color}, "output": {"dir": str(work / "data"), "format": "png"},
                         "train": {"model": "simple_cnn", "epochs": epochs, "batch_size": BATCH, "lr": 0.003,
                                   "optimizer": "adamw", "weight_decay": 0.01, "schedule": "cosine", "warmup": 0.1,
                                   "stream": [{"op": "resize", "size": [SIDE, SIDE]}], "threads": None}},
                        str(work / "audit-model.yaml"), work)


def seconds_per_step(channels: int, classes: int, steps: int = 4) -> float:
    """Wall seconds of one training step of the default model on a batch, timed here (after one warm-up)."""
    import torch  # torch: heavy, loaded when the CNN is timed

    from augforge.models import create  # with torch

    model = create("simple_cnn", classes, in_channels=channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(BATCH, channels, SIDE, SIDE), torch.randint(0, classes, (BATCH,))
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def epochs_for_budget(train_rows: int, folds: int, budget_minutes: float, step_seconds: float) -> int:
    """Epochs per fold the budget fits (capped at ``MAX_EPOCHS``); below ``MIN_EPOCHS`` the CNN does not fit."""
    steps = math.ceil(train_rows * (folds - 1) / folds / BATCH)
    epoch_seconds = steps * step_seconds * OVERHEAD
    return min(MAX_EPOCHS, int(budget_minutes * 60 / (folds * max(epoch_seconds, 1e-6))))


def color_of(source) -> str:
    """gray when a sample of the source's images (a dataset directory's or an image folder's) are all
    single-channel, else rgb."""
    import io

    from PIL import Image

    path = Path(source)
    if (path / "manifest.json").is_file():
        train = Dataset(path, "train", verify=False)
        sample = [Image.open(io.BytesIO(v)) for v in
                  train.take(np.arange(min(32, len(train))), columns=["image"]).column("image").to_pylist()]
    else:
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        sample = []
        for file in files[:32]:
            try:
                sample.append(Image.open(file))
            except OSError:  # an unreadable file: ingest lists it, the colour is told by the others
                continue
    return "gray" if sample and all(image.mode in ("L", "I;16", "1") for image in sample) else "rgb"


def audit_with_model(source, *, budget_minutes: float = BUDGET_MINUTES, recipe=None, folds: int = 5, seed: int = 0,
                     splits: dict | None = None, work=None, log=print, **audit_options) -> dict:
    """The audit of an image ``source`` (an image folder or dataset directory) with label issues from a
    cross-fitted CNN (see the module docstring); ``audit_options`` are ``audit``'s. The report's source is
    ``source``; its label section names the model, its out-of-fold accuracy and the budget."""
    if budget_minutes <= 0:
        raise OptionError("{budget_minutes} {value}: expected minutes above 0", value=budget_minutes)
    if not audit_options.get("labels", True) or has_dense_targets(source):  # no labels for a model to check
        return audit(source, seed=seed, **audit_options)
    with tempfile.TemporaryDirectory(prefix="augforge-audit-model-") as tmp:
        work = Path(work or tmp)
        splits = splits or {}
        color = color_of(source)
        chosen = default_recipe(source, work, seed, color, MAX_EPOCHS, splits) if recipe is None else \
            _user_recipe(recipe, work, splits)
        data = Path(chosen.output.dir)
        manifest = ensure_dataset(chosen, data, False, 2, lambda _: None)  # the build the folds and the audit share
        rows, classes = sum(manifest["counts"]["train"].values()), len(manifest["class_names"])
        if recipe is None:
            epochs = epochs_for_budget(rows, folds, budget_minutes,
                                       seconds_per_step(1 if color == "gray" else 3, classes))
            if epochs < MIN_EPOCHS:
                log(f"audit: {budget_minutes:g} minutes fit {epochs} epoch(s) of the CNN over {folds} folds of "
                    f"{rows:,} rows here (at least {MIN_EPOCHS} needed); label issues come from the fast linear "
                    "model (raise --budget-minutes for the CNN)")
                report = audit(data, seed=seed, **audit_options)
                report["source"] = str(source)
                return report
            chosen = chosen.with_changes({"train.epochs": epochs})
        started = time.perf_counter()
        log(f"audit: cross-fitting {chosen.run.model} ({chosen.train.epochs} epochs x {folds} folds, {rows:,} train "
            f"rows; budget {budget_minutes:g} min) for the label issues")
        crossfit(chosen, work / "crossfit", folds=folds, data=data, log=lambda _: None)
        seconds = round(time.perf_counter() - started, 1)
        compared = out_of_fold_accuracies(data, work / "crossfit", chosen.run.model, seed)
        use_cnn = compared[chosen.run.model] >= compared["logistic regression"]  # the better out-of-fold model
        if not use_cnn:
            log(f"audit: the linear model is right on more rows out of fold ({compared['logistic regression']:.1%}) "
                f"than {chosen.run.model} ({compared[chosen.run.model]:.1%}) on this set; its probabilities are used")
        report = audit(data, seed=seed, probs=work / "crossfit" if use_cnn else None, **audit_options)
        report["source"] = str(source)
        if "label_issues" in report:
            report["label_issues"].update(models_compared=compared, model_seconds=seconds)
        return report


def out_of_fold_accuracies(data: Path, run_dir: Path, model: str, seed: int) -> dict[str, float]:
    """{model: the cross-fit's out-of-fold accuracy, "logistic regression": the fast model's}, both on every row
    of the dataset directory (as the report states a model's accuracy)."""
    rows = read_rows(data)
    probs, _ = run_probabilities(run_dir, rows.ids, rows.class_names)
    fast = out_of_fold_probabilities(rows, seed)
    return {name: round(float((p.argmax(axis=1) == rows.labels).mean()), 4)
            for name, p in ((model, probs), ("logistic regression", fast))}


def _user_recipe(recipe, work: Path, splits: dict) -> Recipe:
    """The user's recipe (a path or a Recipe), building into the work directory's data."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    return recipe.with_changes({"output.dir": str(work / "recipe-data"),
                                **{f"source.{k}": v for k, v in splits.items()}})
