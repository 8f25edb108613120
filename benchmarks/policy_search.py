"""Augmentation policy search on the real image sets here: TrivialAugment, the best RandAugment (N, M), the
searched policy, the hand-written recipe and no augmentation, at equal compute over paired seeds.

Sets (all made from data installed packages ship, nothing downloaded):

- ``digits``: examples/digits.yaml as written (scikit-learn's digits, 8x8 grey, long tail 10:1, 4 offline copies);
- ``crops-grey`` / ``crops-colour``: 16-px tiles of scikit-learn's two sample photos resized to 24x24, textured
  ones only, labelled by photo and third (6 classes, 267:20), in grey and in colour;
- ``glyphs``: the digits and capitals in nine DejaVu faces, 28x28 grey (36 classes, 9 rows each).

Each set: ``augforge search-policy`` with ``--budget-minutes`` of search (proxy: the recipe's epochs on 80% of
the train split, scored on the other 20%, successive halving stopping most trials after 2, 4 or 10 epochs),
then the confirmation over ``--seeds`` paired seeds on the test split, the best RandAugment grid point of the
search confirmed as well (``--also``). Prints each policy's test balanced accuracy with its
interval, its difference to TrivialAugment with the Holm-adjusted verdict, and the search's and the
confirmation's wall time.

    python benchmarks/policy_search.py [--sets digits crops-grey] [--budget-minutes 4] [--seeds 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from homogeneous_sets import crops, glyphs  # noqa: E402

from augforge.experiments.policy_search import search_policy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def image_folder(root: Path, images, labels, names) -> Path:
    """The images as PNG files in one folder per class."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


def folder_recipe(folder: Path, colour: bool, size: int) -> dict:
    """A hand-written recipe for a small-image folder: a shift by 2 px, a small rotation (and colour jitter
    for colour images), 2 offline copies, a small CNN."""
    ops = [{"op": "pad", "padding": 2}, {"op": "random_crop", "size": size},
           {"op": "rotate", "degrees": 10, "p": 0.5}]
    if colour:
        ops.append({"op": "color", "brightness": [0.8, 1.2], "contrast": [0.8, 1.2], "saturation": [0.7, 1.3],
                    "p": 0.5})
    return {"name": folder.name, "seed": 0, "source": {"path": str(folder), "test_split": 0.3},
            "augment": {"copies": 2, "color": "rgb" if colour else "gray", "image": ops},
            "output": {"dir": str(folder.parent / f"{folder.name}-built"), "format": "png"},
            "train": {"model": "simple_cnn", "epochs": 15, "batch_size": 64, "lr": 0.003, "weight_decay": 0.05,
                      "schedule": "cosine", "warmup": 0.05}}


def recipes(work: Path, sets: list[str]) -> dict[str, Path]:
    """Each set's recipe file."""
    out = {}
    for name in sets:
        if name == "digits":
            out[name] = ROOT / "examples" / "digits.yaml"
            continue
        if name.startswith("crops"):
            colour = name == "crops-colour"
            data, size = crops(size=24, tile=16, colour=colour), 24
        else:
            colour, (data, size) = False, (glyphs(), 28)
        folder = image_folder(work / name, *data)
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(folder_recipe(folder, colour, size)))
        out[name] = path
    return out


def best_rand(search: dict) -> str | None:
    """The best RandAugment grid or TPE point the search scored to the end."""
    rand = [r for r in search["candidates"] if r["state"] == "COMPLETE" and (r["policy"] or "").startswith("rand-")]
    return max(rand, key=lambda r: r["value"])["policy"] if rand else None


def main() -> None:
    """Search and confirm on every set; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["digits", "crops-grey", "crops-colour", "glyphs"])
    parser.add_argument("--budget-minutes", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--work", help="keep the studies here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, path in recipes(work, args.sets).items():
            out = work / f"{name}-search"
            first = search_policy(path, out, budget_minutes=args.budget_minutes, confirm_seeds=0, log=lambda _: None)
            rand = best_rand(first["search"])
            result = search_policy(path, out, budget_minutes=args.budget_minutes, confirm_seeds=args.seeds,
                                   also=(rand,) if rand else (), log=lambda _: None)
            s, c = result["search"], result["confirm"]
            print(f"\n## {name}: search {s['seconds'] / 60:.1f} min ({s['trials']} trials, {s['pruned']} pruned, "
                  f"{s['val_rows']} held-out rows), proxy winner {s['winner']} {s['winner_value']:.4f} "
                  f"± {s['standard_error'] or 0:.4f}; best RandAugment on the proxy {rand}; confirmation "
                  f"{c['seconds'] / 60:.1f} min, {len(c['paired_seeds'])} paired seeds")
            print("| policy | test balanced accuracy [95% CI] | Δ [95% CI] | Holm p | verdict |")
            print("|---|---|---|---|---|")
            for e in result["confirmed"]:
                delta = "-" if e["delta"] is None else \
                    f"{e['delta']:+.4f} [{e['delta_ci'][0]:+.4f}, {e['delta_ci'][1]:+.4f}] vs {e['against']}"
                p = "-" if e["p_holm"] is None else f"{e['p_holm']:.3f}"
                print(f"| {e['policy']} | {e['mean']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}] | {delta} | {p} | "
                      f"{e['verdict']} |")
            print(f"conclusion: {result['conclusion']}; {result['agreement']['note']}")


if __name__ == "__main__":
    main()
