"""Does `clean: {label_issues: drop}` make a better model? Paired seeds through `augforge ablate` (docs/audit.md).

The digits (8x8 images, as a folder of PNGs) and the WordNet glosses (text) get 5% or 15% of their labels
flipped uniformly to another class, test rows included (a real data set's test labels are noisy too). Three
arms per set, over the same seeds and at equal compute (`ablate --equal-compute`: an arm with fewer rows
trains more epochs, so "dropping helps" is not "less data, other schedule"):

- ``noisy``: train on every row as labelled (the baseline);
- ``drop-label-issues``: the build drops the train rows cleanlab flags (``clean.label_issues: drop``);
- ``label-smoothing``: what a user might do instead of cleaning: keep every row, smooth the labels (0.1).

Each run is scored twice on the same test rows: against their given (noisy) labels, which is what ablate
reports, and against their true labels, which only a benchmark that made the noise can know. The paired
differences to the baseline come with BCa intervals (``augforge.experiments.compare``).

    python examples/make_glosses.py
    python benchmarks/clean_effect.py [--seeds 5] [--jobs 2] [--out build/clean-effect]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from sklearn.datasets import load_digits

from augforge.recipe import parse_recipe
from augforge.experiments.ablate import run_ablation
from augforge.experiments.arms import Arm
from augforge.experiments.compare import compare
from augforge.train.loop import collect_logits, predictions
from augforge.train.restore import checkpoint_model_and_loader

ROOT = Path(__file__).resolve().parent.parent


def _flip(labels: np.ndarray, share: float, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, classes, len(chosen))) % classes
    return noisy


def noisy_digits(root: Path, share: float) -> tuple[dict, dict]:
    """A folder of the digits under their noisy labels; (source section, true label name by row id)."""
    digits = load_digits()
    noisy = _flip(digits.target, share, 10)
    folder = root / f"digits-{share}"
    truth = {}
    for i, (image, label) in enumerate(zip(digits.images, noisy)):
        path = folder / f"d{label}" / f"{i:04d}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255 / 16).astype(np.uint8)).save(path)
        truth[f"d{label}/{i:04d}.png"] = f"d{digits.target[i]}"
    return {"path": str(folder)}, truth


def noisy_glosses(root: Path, share: float) -> tuple[dict, dict]:
    """The glosses under noisy labels, as a CSV; (source section, true label by row id)."""
    table = pl.read_csv(ROOT / "build" / "glosses.csv")
    names = sorted(table["label"].unique().to_list())
    true = np.array([names.index(v) for v in table["label"]])
    noisy = _flip(true, share, len(names))
    path = root / f"glosses-{share}.csv"
    table.with_columns(pl.Series("label", [names[v] for v in noisy])).write_csv(path)
    truth = dict(zip(table["id"].to_list(), table["label"].to_list()))
    return {"path": str(path), "text_col": "text", "label_col": "label", "id_col": "id"}, truth


def recipe_of(name: str, source: dict) -> dict:
    """The baseline recipe of a set: no cleaning beyond exact duplicates."""
    base = {"seed": 0, "source": {"test_split": 0.25, "val_split": 0.1, **source}}
    if name == "digits":
        return {**base, "augment": {"color": "gray"}, "output": {"format": "raw"},
                "train": {"model": "simple_cnn", "epochs": 30, "lr": 0.003, "weight_decay": 0.01, "batch_size": 32,
                          "schedule": "cosine", "warmup": 0.05}}
    return {**base, "train": {"model": "fasttext", "epochs": 10, "batch_size": 32, "schedule": "cosine",
                              "warmup": 0.05, "text": {"word_ngrams": 2, "char_ngrams": [3, 5], "max_tokens": 512}}}


ARMS = [Arm("baseline", "baseline"), Arm("drop-label-issues", "custom", [("clean.label_issues", "drop")]),
        Arm("label-smoothing", "custom", [("train.label_smoothing", 0.1)])]


def true_accuracy(run: Path, truth: dict) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of a run's model on its test rows against their true labels."""
    summary = json.loads((run / "summary.json").read_text())
    model, loader, arch, spec, placement = checkpoint_model_and_loader(run / "model.pt", summary["data"], "test")
    logits, _, _ = collect_logits(model, loader, placement.torch)
    predicted = predictions(logits, bool(arch.get("binary")))
    ids = loader.dataset.take(np.arange(len(loader.dataset)), ["id"]).column("id").to_pylist()
    names = arch["class_names"]
    true = np.array([names.index(truth[i]) for i in ids])
    recalls = [float((predicted[true == c] == c).mean()) for c in np.unique(true)]
    return float((predicted == true).mean()), float(np.mean(recalls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--noise", type=float, nargs="*", default=[0.05, 0.15])
    parser.add_argument("--only", nargs="*", default=["digits", "glosses"])
    parser.add_argument("--out", default=str(ROOT / "build" / "clean-effect"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, lines = [], []
    for name in args.only:
        for share in args.noise:
            source, truth = (noisy_digits if name == "digits" else noisy_glosses)(out / "sources", share)
            started = time.perf_counter()
            place = out / f"{name}-{share}"
            report = run_ablation(parse_recipe(recipe_of(name, source), f"{name}.yaml"), place, seeds=args.seeds,
                                  arms=ARMS, jobs=args.jobs, equal_compute=True, metric="accuracy",
                                  log=lambda text: None)
            true = {arm.name: [true_accuracy(place / "runs" / arm.name / str(s), truth) for s in range(args.seeds)]
                    for arm in ARMS}
            lines.append(f"### {name}, {share:.0%} of the labels flipped ({args.seeds} paired seeds, equal compute)")
            lines += ["", "| arm | test acc. (given labels) | test acc. (true labels) | Δ true acc. vs noisy "
                          "[95% CI] | verdict | epochs |", "|---|---|---|---|---|---|"]
            for arm in report["arms"]:
                accuracy = np.array([t[0] for t in true[arm["name"]]])
                base = np.array([t[0] for t in true["baseline"]])
                c = None if arm["name"] == "baseline" else compare(accuracy, base)
                delta = "reference" if c is None else f"{c.mean_delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]"
                lines.append(f"| {'noisy' if arm['name'] == 'baseline' else arm['name']} | "
                             f"{arm['spread']['accuracy']['mean']:.3f} | {accuracy.mean():.3f} ± {accuracy.std(ddof=1):.3f} "
                             f"| {delta} | {'-' if c is None else c.verdict} | {np.mean([r['epochs'] for r in arm['runs']]):.0f} |")
                results.append({"set": name, "noise": share, "arm": arm["name"], "given": arm["spread"]["accuracy"],
                                "true": [t[0] for t in true[arm["name"]]],
                                "true_balanced": [t[1] for t in true[arm["name"]]],
                                "delta": None if c is None else c.to_dict()})
            lines.append("")
            print("\n".join(lines[-len(report["arms"]) - 4:]), f"({time.perf_counter() - started:.0f} s)", flush=True)
    (out / "clean_effect.json").write_text(json.dumps(results, indent=2))
    (out / "clean_effect.md").write_text("\n".join(lines))
    print(f"wrote {out}/clean_effect.json and clean_effect.md")


if __name__ == "__main__":
    main()
