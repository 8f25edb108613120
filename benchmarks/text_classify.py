"""augforge's text models against scikit-learn's TF-IDF + LogisticRegression, on the same splits, over seeds.

For each seed the recipe's source is split with that seed (stratified test and val rows, as ``augforge
build`` does), and every arm trains on that split's train rows and is scored on its test rows:

- ``tfidf_lr``: ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)`` + ``LogisticRegression`` (what
  a user writes in ten lines), and ``tfidf_lr_balanced`` with ``class_weight="balanced"``;
- ``tfidf_char_lr_balanced``: the same with character 3-5-grams added: the peer of issue 42, which the default
  text model must meet; ``peer_*``: the peer changed in one way fastText differs (``PEER_VARIANTS``);
- ``linear``: augforge's ``linear`` model (TF-IDF word 1-2 + char 3-5-grams + logistic regression, trained by
  augforge's loop with its defaults: balanced class weights, ``l2: auto``), ``linear_unweighted``,
  ``linear_sampler`` (the class-balanced sampler instead of class weights) and ``linear_over_eda`` (on the
  ``balance: over`` + EDA build);
- ``fasttext``: augforge's fastText (10 epochs, batch 32, 5% warm-up), no balancing;
- ``fasttext_weights``: with ``train.class_weights: balanced``;
- ``fasttext_sampler``: with ``train.sampler: balanced`` (class-balanced draws each epoch);
- ``fasttext_over_eda``: trained on a build of the same split with ``balance: over`` and EDA variants
  (``--eda-copies`` each), the offline route;
- the fastText study (docs/text.md), each with balanced class weights: ``fasttext_dim100`` (a wider
  bottleneck), ``fasttext_buckets512k`` (2^19 hash buckets), ``fasttext_nochar`` (no character n-grams),
  ``fasttext_sgd`` (fastText's own trainer: plain SGD with a linear decay, 25 epochs, at lr 10 on the batch's
  mean loss, about fastText's per-example 0.3), ``fasttext_epochs25`` and ``fasttext_l2`` (``l2: auto``).

Prints macro-F1 and balanced accuracy as mean ± sample std over the seeds, the mean paired difference of each
arm to the peer (``tfidf_char_lr_balanced``), and the wall time per run (training and prediction, not the
build).

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

#: scikit-learn variants of the peer (word + char TF-IDF, balanced LogisticRegression), each changing one thing
#: fastText does differently: no idf, raw term counts, n-grams hashed into fastText's 131,072 buckets,
#: one norm over word and char n-grams together, and weaker regularisation
PEER_VARIANTS = {
    "peer_noidf": {"use_idf": False},
    "peer_rawtf": {"sublinear_tf": False},
    "peer_hashed131k": {"hashed": 1 << 17},
    "peer_jointnorm": {"joint_norm": True},
    "peer_C10": {"C": 10.0},
}


#: each augforge arm's ``train:`` section (the recipe gives the data; its own ``train:`` section is not used, so
#: that every arm trains as its model's defaults say plus the arm's changes)
LINEAR = {"model": "linear", "batch_size": 32}
FASTTEXT = {"model": "fasttext", "epochs": 10, "batch_size": 32, "warmup": 0.05}
WEIGHTED = {**FASTTEXT, "class_weights": "balanced"}
AUGFORGE_ARMS = {
    "linear": LINEAR,
    "linear_unweighted": {**LINEAR, "class_weights": "none"},
    "linear_sampler": {**LINEAR, "class_weights": "none", "sampler": "balanced"},
    "linear_over_eda": LINEAR,
    "fasttext": FASTTEXT,
    "fasttext_weights": WEIGHTED,
    "fasttext_sampler": {**FASTTEXT, "sampler": "balanced"},
    "fasttext_over_eda": FASTTEXT,
    "fasttext_dim100": {**WEIGHTED, "model_options": {"embed_dim": 100}},
    "fasttext_buckets512k": {**WEIGHTED, "text": {"buckets": 1 << 19}},
    "fasttext_nochar": {**WEIGHTED, "text": {"char_ngrams": 0}},
    "fasttext_sgd": {**WEIGHTED, "optimizer": "sgd", "momentum": 0.0, "lr": 10.0, "schedule": "linear", "warmup": 0,
                     "epochs": 25},
    "fasttext_epochs25": {**WEIGHTED, "epochs": 25},
    "fasttext_l2": {**WEIGHTED, "l2": "auto"},
}
ARMS = ("tfidf_lr", "tfidf_lr_balanced", "tfidf_char_lr_balanced", *PEER_VARIANTS, *AUGFORGE_ARMS)
DEFAULT_ARMS = ("tfidf_char_lr_balanced", "linear", "fasttext", "fasttext_weights")
REFERENCE = "tfidf_char_lr_balanced"


def split_texts(data: Path, split: str) -> tuple[list[str], np.ndarray]:
    """(texts, labels) of one split of a built dataset."""
    ds = Dataset(data, split)
    return ds.texts(), ds.labels()


def linear(data: Path, names: list[str], class_weight, char: bool, *, use_idf: bool = True,
           sublinear_tf: bool = True, hashed: int = 0, joint_norm: bool = False, C: float = 1.0) -> dict:
    """TF-IDF (word 1-2-grams, optionally char_wb 3-5-grams) + LogisticRegression on ``data``'s train split, and
    the variants of ``PEER_VARIANTS``."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import normalize

    x_train, y_train = split_texts(data, "train")
    x_test, y_test = split_texts(data, "test")
    started = time.perf_counter()
    kinds = [("word", (1, 2))] + ([("char_wb", (3, 5))] if char else [])
    norm = None if joint_norm else "l2"
    if hashed:  # ``hashed`` buckets in all, half for each kind (fastText's word and char n-grams share its table)
        vectorizers = [make_pipeline(HashingVectorizer(analyzer=a, ngram_range=g, n_features=hashed // len(kinds),
                                                       alternate_sign=False, norm=None),
                                     TfidfTransformer(use_idf=use_idf, sublinear_tf=sublinear_tf, norm=norm))
                       for a, g in kinds]
    else:
        vectorizers = [TfidfVectorizer(analyzer=a, ngram_range=g, use_idf=use_idf, sublinear_tf=sublinear_tf,
                                       norm=norm) for a, g in kinds]
    a_train = hstack([v.fit_transform(x_train) for v in vectorizers]).tocsr()
    a_test = hstack([v.transform(x_test) for v in vectorizers]).tocsr()
    if joint_norm:
        a_train, a_test = normalize(a_train), normalize(a_test)
    model = LogisticRegression(max_iter=3000, class_weight=class_weight, C=C).fit(a_train, y_train)
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
    data["train"] = {**(train or {}), "seed": seed}
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
        if arm in PEER_VARIANTS:
            out[arm] = linear(data, names, "balanced", True, **PEER_VARIANTS[arm])
            continue
        if arm not in AUGFORGE_ARMS:
            raise SystemExit(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
        over_eda = eda_copies if arm.endswith("_over_eda") else 0
        recipe = recipe_for(base, seed, work / (f"{arm}-{seed}-data" if over_eda else f"plain-{seed}"),
                            train=AUGFORGE_ARMS[arm], over_eda=over_eda)  # the other arms reuse the plain build
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
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
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
