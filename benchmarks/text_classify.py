"""augforge's text models against scikit-learn's TF-IDF + LogisticRegression, on the same splits, over seeds.

For each seed the recipe's source is split with that seed (stratified test and val rows, as ``augforge
build`` does), and every arm trains on that split's train rows and is scored on its test rows:

- ``tfidf_lr``: ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)`` + ``LogisticRegression`` (what
  a user writes in ten lines), and ``tfidf_lr_balanced`` with ``class_weight="balanced"``;
- ``tfidf_char_lr_balanced``: the same with character 3-5-grams added (a stronger linear peer);
- ``fasttext``: augforge's default text model, the recipe's ``train:`` section, no balancing;
- ``fasttext_weights``: with ``train.class_weights: balanced``;
- ``fasttext_sampler``: with ``train.sampler: balanced`` (class-balanced draws each epoch);
- ``fasttext_over_eda``: trained on a build of the same split with ``balance: over`` and EDA variants
  (``--eda-copies`` each), the offline route.

Prints macro-F1 and balanced accuracy as mean ± sample std over the seeds, the mean paired difference
of each arm to ``tfidf_lr_balanced``, and the wall time per run (training and prediction, not the build).

    python examples/make_glosses.py
    python benchmarks/text_classify.py --recipe examples/glosses.yaml --seeds 5
    python benchmarks/text_classify.py --recipe examples/text.yaml --seeds 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from augforge.datasets.reader import Dataset
from augforge.pipelines.build import build
from augforge.recipe import parse_recipe
from augforge.train.metrics import classification_metrics
from augforge.train.run import train_recipe

ARMS = ("tfidf_lr", "tfidf_lr_balanced", "tfidf_char_lr_balanced", "fasttext", "fasttext_weights",
        "fasttext_sampler", "fasttext_over_eda")
REFERENCE = "tfidf_lr_balanced"


def split_texts(data: Path, split: str) -> tuple[list[str], np.ndarray]:
    """(texts, labels) of one split of a built dataset."""
    ds = Dataset(data, split)
    return ds.texts(), ds.labels()


def linear(data: Path, names: list[str], class_weight, char: bool) -> dict:
    """TF-IDF (word 1-2-grams, optionally char 3-5-grams) + LogisticRegression on ``data``'s train split."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = split_texts(data, "train")
    x_test, y_test = split_texts(data, "test")
    started = time.perf_counter()
    vectorizers = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)]
    if char:
        vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True))
    a_train = hstack([v.fit_transform(x_train) for v in vectorizers]).tocsr()
    a_test = hstack([v.transform(x_test) for v in vectorizers]).tocsr()
    model = LogisticRegression(max_iter=3000, class_weight=class_weight).fit(a_train, y_train)
    metrics = classification_metrics(y_test, model.predict(a_test), names)
    return {**metrics, "wall_s": time.perf_counter() - started}


def recipe_for(base: dict, seed: int, out: Path, *, over_eda: int = 0, train: dict | None = None):
    """The recipe of one arm and seed: no balancing or augmentation unless ``over_eda`` copies are asked."""
    data = copy.deepcopy(base)
    data["seed"] = seed
    data.pop("balance", None)
    data.pop("augment", None)
    data.pop("clean", None)
    if over_eda:
        data["balance"] = {"strategy": "over"}
        data["augment"] = {"copies": over_eda, "text": [{"op": "eda"}]}
    data["output"] = {"dir": str(out)}
    data["train"] = {**base.get("train", {}), **(train or {}), "seed": seed}
    return parse_recipe(data, base.get("_file", "recipe.yaml"))


def run_seed(base: dict, seed: int, work: Path, arms: list[str], eda_copies: int) -> dict[str, dict]:
    """Every arm on one seed's split."""
    plain = recipe_for(base, seed, work / f"plain-{seed}")
    build(plain, work / f"plain-{seed}")
    data = work / f"plain-{seed}"
    names = Dataset(data, "test").class_names
    out = {}
    for arm in arms:
        if arm.startswith("tfidf"):
            out[arm] = linear(data, names, "balanced" if arm.endswith("balanced") else None, "_char_" in arm)
            continue
        extra = {"fasttext_weights": {"class_weights": "balanced"},
                 "fasttext_sampler": {"sampler": "balanced"}}.get(arm, {})
        recipe = recipe_for(base, seed, work / f"{arm}-{seed}-data", train=extra,
                            over_eda=eda_copies if arm == "fasttext_over_eda" else 0)
        summary = train_recipe(recipe, work / f"{arm}-{seed}", log=lambda _: None)
        out[arm] = {**summary, "wall_s": summary["wall_s"]}
    return out


def describe(values: list[float]) -> str:
    """mean ± sample std."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    """Run the arms over the seeds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="examples/glosses.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--eda-copies", type=int, default=2)
    args = parser.parse_args()
    path = Path(args.recipe).resolve()
    base = yaml.safe_load(path.read_text(encoding="utf-8"))
    base["source"]["path"] = str((path.parent / base["source"]["path"]).resolve())
    arms = args.arms.split(",")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="augforge-text-bench-") as tmp:
        for seed in range(args.seeds):
            for arm, metrics in run_seed(base, seed, Path(tmp), arms, args.eda_copies).items():
                results[arm].append(metrics)
            print(f"seed {seed}: " + ", ".join(f"{a} {results[a][-1]['macro_f1']:.3f}" for a in arms), flush=True)
    print(f"\n{path.name}, {args.seeds} seeds (a new stratified split per seed; every arm on the same split)")
    print(f"{'arm':<24} {'macro-F1':>15} {'balanced acc.':>15} {'d macro-F1 vs ' + REFERENCE:>34} {'s/run':>7}")
    reference = [r["macro_f1"] for r in results.get(REFERENCE, [])]
    for arm in arms:
        f1 = [r["macro_f1"] for r in results[arm]]
        bal = [r["balanced_accuracy"] for r in results[arm]]
        diff = describe([a - b for a, b in zip(f1, reference)]) if reference else "n/a"
        wall = statistics.mean(r["wall_s"] for r in results[arm])
        print(f"{arm:<24} {describe(f1):>15} {describe(bal):>15} {diff:>34} {wall:>7.1f}")


if __name__ == "__main__":
    main()
