"""Offline copies, online augmentation and plain training at equal compute, over several seeds.

Three arms on one recipe (default examples/digits.yaml), the same split and the same test rows:

- offline: the recipe as written, ``copies`` augmented variants written into the shards, ``epochs`` epochs;
- online: ``augment.mode: online``, no copies, the same ops drawn fresh every epoch, ``epochs x (copies + 1)``
  epochs, so that both see the same number of training rows (equal compute);
- plain: no augmentation at all, the same number of epochs as online (what a user does without augforge).

``train.seed`` varies over the seeds (initialisation, order, online draws); the build's seed, and so the
split and the offline copies, stays the recipe's. Prints test accuracy and balanced accuracy as mean ± std
(sample std) and the paired differences to plain, with the wall time per run.

    python benchmarks/augment_mode.py [--recipe examples/digits.yaml] [--seeds 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import yaml

from augforge.recipe import parse_recipe
from augforge.train.run import train_recipe


def arms(data: dict) -> dict[str, dict]:
    """The three arms' recipe mappings."""
    aug, train = data["augment"], data["train"]
    factor = int(aug.get("copies", 0)) + 1
    online = copy.deepcopy(data)
    online["augment"] = {k: v for k, v in aug.items() if k not in ("copies", "keep_original")}
    online["augment"]["mode"] = "online"
    online["train"] = {**train, "epochs": train["epochs"] * factor}
    if train.get("swa_start") is not None:
        online["train"]["swa_start"] = train["swa_start"] * factor
    plain = copy.deepcopy(online)
    plain["augment"] = {"color": aug.get("color", "rgb")}
    return {"offline": data, "online": online, "plain": plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="examples/digits.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    path = Path(args.recipe)
    data = yaml.safe_load(path.read_text())
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arm in arms(data).items():
            for seed in range(args.seeds):
                arm = {**arm, "train": {**arm["train"], "seed": seed}}
                recipe = parse_recipe(arm, str(path), path.parent)
                summary = train_recipe(recipe, Path(tmp) / name / str(seed), data=Path(tmp) / f"data-{name}",
                                       threads=args.threads, log=lambda _: None)
                results.setdefault(name, []).append(summary)
                print(f"{name:8s} seed {seed}: accuracy {summary['accuracy']:.4f}, balanced accuracy "
                      f"{summary['balanced_accuracy']:.4f}, {summary['wall_s']:.1f} s", flush=True)

    def spread(values):
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    print(f"\n{'arm':8s} {'accuracy':>17s} {'balanced acc.':>17s} {'Δ bal. acc. vs plain':>22s} {'s/run':>7s}")
    plain = [s["balanced_accuracy"] for s in results["plain"]]
    for name, runs in results.items():
        bal = [s["balanced_accuracy"] for s in runs]
        delta = [a - b for a, b in zip(bal, plain)]
        print(f"{name:8s} {spread([s['accuracy'] for s in runs]):>17s} {spread(bal):>17s} {spread(delta):>22s} "
              f"{statistics.mean(s['wall_s'] for s in runs):7.1f}")


if __name__ == "__main__":
    main()
