"""`augforge audit`: detection quality on injected noise and duplicates, and scale (docs/audit.md).

1. Label issues. The digits (as 64 pixel features) and the WordNet glosses (text) get 5% and 15% of their
   labels flipped, either uniformly (to any other class) or class-dependently (each class to one fixed
   confusable class). The flagged rows are scored against the flipped ones (precision, recall), next to what
   a user would do without confident learning: flag every row whose out-of-fold prediction disagrees with its
   label (same probabilities). Then the digits again with the probabilities of ``augforge crossfit`` (an MLP,
   5 folds) next to the fast model's (``crossfit_noise``).
2. Image near-duplicates. Textured crops of the sample photos, each with a resized, a JPEG, a brightened and
   a 2-pixel-cropped copy, audited at the default radius: precision and recall of the injected pairs.
   Then the homogeneous sets (``homogeneous_sets.py``: digits upscaled to 32 px, grey photo crops, glyphs of
   nine faces) with 2% injected near-copies: the verified pairs against the hash pairs clustered as connected
   components (the audit before verification), and label issues at 5% and 15% noise on each, with the fast
   model's own out-of-fold accuracy.
3. Scale. dHash + the exact radius search over N images (random crops and transforms of the photos), next
   to the all-pairs comparison it replaces (timed on a sample, extrapolated). MinHash LSH over M texts
   (glosses with words dropped and swapped). Time and peak memory (ru_maxrss).

    python examples/make_glosses.py
    python benchmarks/audit.py [--images 100000] [--texts 100000] [--parts label_noise ...] [--out F]
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageEnhance
from sklearn.datasets import load_digits, load_sample_images

from augforge.audit.clusters import star_clusters
from augforge.audit.hashing import hamming, hash_images, near_pairs
from augforge.audit.verify import verify_pairs
from augforge.audit.labels import label_issues, out_of_fold_probabilities
from augforge.audit.near_text import near_text_pairs
from augforge.audit.rows import read_rows
from augforge.audit.run import RADIUS, audit, image_candidates

sys.path.insert(0, str(Path(__file__).resolve().parent))
import homogeneous_sets as homogeneous  # noqa: E402  (the sets, shared with tests/test_audit.py)

ROOT = Path(__file__).resolve().parent.parent


def _flip(labels: np.ndarray, share: float, kind: str, classes: int, seed: int) -> tuple[np.ndarray, set]:
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    if kind == "uniform":
        noisy[chosen] = (labels[chosen] + rng.integers(1, classes, len(chosen))) % classes
    else:  # class-dependent: every class to its one confusable neighbour
        noisy[chosen] = (labels[chosen] + 1) % classes
    return noisy, set(chosen.tolist())


def _score(flagged: set, truth: set) -> dict:
    hits = len(flagged & truth)
    return {"flagged": len(flagged), "precision": hits / len(flagged) if flagged else 0.0,
            "recall": hits / len(truth) if truth else 0.0}


def label_noise(tmp: Path) -> list[dict]:
    """Precision and recall of cleanlab's flags, and of "prediction disagrees with the label"."""
    digits = load_digits()
    sets = {"digits": (pl.DataFrame({f"p{i}": digits.data[:, i] for i in range(64)}), digits.target, None)}
    glosses = ROOT / "build" / "glosses.csv"
    if glosses.is_file():
        table = pl.read_csv(glosses)
        names = sorted(table["label"].unique().to_list())
        sets["glosses"] = (table.select("text"), np.array([names.index(v) for v in table["label"]]), "text")
    out = []
    for name, (frame, labels, text_col) in sets.items():
        classes = int(labels.max()) + 1
        for share in (0.05, 0.15):
            for kind in ("uniform", "class-dependent"):
                noisy, truth = _flip(labels, share, kind, classes, seed=0)
                path = tmp / f"{name}-{kind}-{share}.csv"
                frame.with_columns(pl.Series("label", [f"c{v}" for v in noisy])).write_csv(path)
                rows = read_rows(path, label_col="label", text_col=text_col)
                probs = out_of_fold_probabilities(rows, seed=0)
                found = label_issues(rows.labels, probs)  # the ids are the CSV's row numbers
                flagged = {int(rows.ids[i]) for i in found["flagged"]}
                disagree = {int(rows.ids[i]) for i in np.flatnonzero(probs.argmax(1) != rows.labels)}
                out.append({"set": name, "noise": share, "kind": kind, "rows": len(rows),
                            "cleanlab": _score(flagged, truth), "disagree": _score(disagree, truth)})
                print(json.dumps(out[-1]), flush=True)
    return out


def crossfit_noise(tmp: Path) -> list[dict]:
    """The same flipped digits (64 pixel features), with the probabilities of ``augforge crossfit`` (5 folds of
    an MLP trained by the recipe) instead of the fast model's: how much a better model's probabilities buy."""
    import yaml

    from augforge.recipe import load_recipe
    from augforge.experiments.crossfit import crossfit

    digits = load_digits()
    frame = pl.DataFrame({f"p{i}": digits.data[:, i] for i in range(64)})
    out = []
    for share in (0.05, 0.15):
        noisy, truth = _flip(digits.target, share, "uniform", 10, seed=0)
        path = tmp / f"crossfit-{share}.csv"
        frame.with_columns(pl.Series("label", [f"c{v}" for v in noisy]),
                           pl.Series("id", [str(i) for i in range(len(noisy))])).write_csv(path)
        recipe = tmp / f"crossfit-{share}.yaml"
        recipe.write_text(yaml.safe_dump({"seed": 0, "source": {"path": str(path), "label_col": "label", "id_col": "id"},
                                          "output": {"dir": str(tmp / f"crossfit-{share}-data")},
                                          "train": {"model": "mlp", "model_options": {"hidden": [128]}, "epochs": 20,
                                                    "batch_size": 32, "lr": 0.003, "weight_decay": 0.01}}))
        started = time.perf_counter()
        crossfit(load_recipe(recipe), tmp / f"crossfit-{share}-run", folds=5, log=lambda _: None)
        seconds = time.perf_counter() - started
        scores = {}
        for name, run in (("fast model", None), ("crossfit MLP", tmp / f"crossfit-{share}-run")):
            report = audit(tmp / f"crossfit-{share}-data", probs=run, seed=0)
            scores[name] = _score({int(r["id"]) for r in report["label_issues"]["rows"]}, truth)
        out.append({"set": "digits", "noise": share, "kind": "uniform", "crossfit_s": seconds, **scores})
        print(json.dumps(out[-1]), flush=True)
    return out


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=35)
    side = image.shape[0]
    return {"resized": np.asarray(pil.resize((side * 3 // 4,) * 2, Image.Resampling.BILINEAR)),
            "jpeg": np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")),
            "brighter": np.asarray(ImageEnhance.Brightness(pil).enhance(1.25)), "cropped": image[2:-2, 2:-2]}


def image_duplicates(tmp: Path) -> dict:
    """Precision and recall of the injected copies, per kind, at the default radius."""
    crops = [photo[r : r + 64, c : c + 64] for photo in load_sample_images().images
             for r in range(0, 363, 64) for c in range(0, 576, 64) if photo[r : r + 64, c : c + 64].std() > 45]
    root = tmp / "photos" / "all"
    root.mkdir(parents=True)
    injected = {}
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(root / f"o{i:03d}.png")
        for kind, variant in _variants(crop).items():
            Image.fromarray(variant).save(root / f"o{i:03d}-{kind}.png")
            injected[f"all/o{i:03d}-{kind}.png"] = (f"all/o{i:03d}.png", kind)
    report = audit(root.parent, labels=False)
    cluster_of = {r["id"]: n for n, c in enumerate(report["near_duplicates"]["clusters"]) for r in c["rows"]}
    recall = {}
    for kind in ("resized", "jpeg", "brighter", "cropped"):
        pairs = [(a, o) for a, (o, k) in injected.items() if k == kind]
        recall[kind] = sum(a in cluster_of and cluster_of.get(a) == cluster_of.get(o) for a, o in pairs) / len(pairs)
    wrong = sum(sum("-" not in r["id"] for r in c["rows"]) > 1 for c in report["near_duplicates"]["clusters"])
    return {"originals": len(crops), "copies": len(injected), "recall": recall,
            "clusters_joining_two_originals": wrong, "radius": RADIUS}


SETS = {"digits-32px": homogeneous.digits, "photo-crops-28px": homogeneous.crops, "glyphs-28px": homogeneous.glyphs}
#: the same kinds of image at other sizes and in colour, with injection seeds the defaults were not chosen on
HELD_OUT = {"digits-24px": functools.partial(homogeneous.digits, 24),
            "photo-crops-colour-28px": functools.partial(homogeneous.crops, colour=True),
            "photo-crops-24px-of-40px": functools.partial(homogeneous.crops, 24, 40),
            "glyphs-24px": functools.partial(homogeneous.glyphs, 24),
            "glyphs-40px": functools.partial(homogeneous.glyphs, 40)}


def _pr(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth))


def homogeneous_duplicates(tmp: Path) -> list[dict]:
    """Per homogeneous set with 2% injected copies (seeds 0 to 4; the held-out variants: 5 and 6): the hash pairs
    as connected components (radius 10, the audit before verification) and the verified pairs in star clusters
    (the audit now), with the pairs found that were not injected and the kinds of copy missed."""
    out = []
    runs = [(name, maker, seed) for name, maker in SETS.items() for seed in range(5)]
    runs += [(name, maker, seed) for name, maker in HELD_OUT.items() for seed in (5, 6)]
    for name, maker, seed in runs:
        images, labels, _ = maker()
        images, labels, pairs, kinds = homogeneous.inject_copies(images, labels, max(12, len(images) // 50), seed)
        truth = {frozenset(p) for p in pairs}
        hashes = hash_images(images)
        old = near_pairs(hashes, 10)
        components = _components(old, len(images))
        started = time.perf_counter()
        candidates, has = image_candidates(images, RADIUS)
        verified, facts = verify_pairs(images, candidates)
        seconds = time.perf_counter() - started
        clusters = star_clusters(verified, len(images))
        found = {frozenset((c[0], m)) for c in clusters for m in c[1:]}
        before_p, before_r = _pr({frozenset((int(a), int(b))) for a, b, _ in old}, truth)
        p, r = _pr(found, truth)
        out.append({"set": name, "seed": seed, "rows": len(images), "injected": len(pairs),
                    "hash_neighbour_share": round(float(has.mean()), 3),
                    "before": {"pairs": len(old), "precision": round(before_p, 3), "recall": round(before_r, 3),
                               "largest_cluster": max(map(len, components), default=0),
                               "redundant_share": round(sum(len(c) - 1 for c in components) / len(images), 3)},
                    "after": {"candidates": facts["candidates"], "pairs": len(verified), "precision": round(p, 3),
                              "recall": round(r, 3), "largest_cluster": max(map(len, clusters), default=0),
                              "redundant_share": round(sum(len(c) - 1 for c in clusters) / len(images), 3),
                              "seconds": round(seconds, 1),
                              "not_injected": sorted(sorted(map(int, f)) for f in found - truth),
                              "missed": [k for p, k in zip(pairs, kinds) if frozenset(p) not in found]}})
        print(json.dumps(out[-1]), flush=True)
    return out


def _components(pairs, n: int) -> list[list[int]]:
    """Connected components of the pairs (the clustering before star clusters), for the comparison."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, *_ in pairs:
        parent[root(int(a))] = root(int(b))
    groups: dict[int, list[int]] = {}
    for i in {int(v) for p in pairs for v in p[:2]}:
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def homogeneous_labels(tmp: Path) -> list[dict]:
    """Label issues on the homogeneous sets at 5% and 15% noise (uniform, class-dependent; noise seeds 0 to 3),
    with the default fast model: precision, recall, and the model's own out-of-fold accuracy (the report shows
    it, and warns below 0.85)."""
    from augforge.audit.rows import AuditRows

    out = []
    for name, maker in SETS.items():
        images, labels, names = maker()
        for share, kind, noise_seed in itertools.product((0.05, 0.15), ("uniform", "class-dependent"), range(4)):
            noisy, truth = homogeneous.flip_labels(labels, share, kind, len(names), seed=noise_seed)
            rows = AuditRows("image", names, [str(i) for i in range(len(images))], noisy,
                             ["train"] * len(images), images, name, [None] * len(images))
            probs = out_of_fold_probabilities(rows, seed=0)
            flagged = set(label_issues(noisy, probs)["flagged"].tolist())
            out.append({"set": name, "noise": share, "kind": kind, "noise_seed": noise_seed,
                        "model_accuracy": round(float((probs.argmax(1) == noisy).mean()), 3),
                        **{k: round(v, 3) if isinstance(v, float) else v for k, v in _score(flagged, truth).items()}})
            print(json.dumps(out[-1]), flush=True)
    return out


#: the cross-fit's budget per set (minutes): the digits have 5x the rows
CNN_BUDGET = {"digits-32px": 3.0, "photo-crops-28px": 1.5, "glyphs-28px": 1.5}


def homogeneous_cnn(tmp: Path) -> list[dict]:
    """What ``augforge audit FOLDER`` reports on the homogeneous sets with 5% of the labels flipped uniformly:
    the cross-fitted CNN and the fast linear model measured out of fold on the same rows, the better one's
    label issues scored against the flipped rows, and the time the whole audit took."""
    from augforge.experiments.audit_model import audit_with_model

    out = []
    for name, maker in SETS.items():
        images, labels, names = maker()
        noisy, truth = homogeneous.flip_labels(labels, 0.05, "uniform", len(names), seed=0)
        folder = tmp / f"cnn-{name}"
        ids = {}
        for i, (image, label) in enumerate(zip(images, noisy)):
            (folder / names[int(label)]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / names[int(label)] / f"r{i:05d}.png")
            ids[f"{names[int(label)]}/r{i:05d}.png"] = i
        started = time.perf_counter()
        report = audit_with_model(folder, budget_minutes=CNN_BUDGET[name], seed=0, log=lambda _: None)
        section = report["label_issues"]
        flagged = {ids[row["id"]] for row in section["rows"]}
        out.append({"set": name, "models_compared": section.get("models_compared"),
                    "method": section["method"], "seconds": round(time.perf_counter() - started, 1),
                    **{k: round(v, 3) if isinstance(v, float) else v for k, v in _score(flagged, truth).items()}})
        print(json.dumps(out[-1]), flush=True)
    return out


def _random_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` images made from the two photos: random textured crops (32-96 px), flipped or turned by quarter
    turns, with their channels permuted and their contrast changed. Overlapping crops are true near-twins."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out = []
    while len(out) < n:
        photo = photos[rng.integers(0, 2)]
        side = int(rng.integers(32, 96))
        r, c = int(rng.integers(0, 427 - side)), int(rng.integers(0, 640 - side))
        crop = photo[r : r + side, c : c + side]
        if crop.std() < 30:  # flat sky and wall patches all look alike
            continue
        crop = np.rot90(crop[:, ::-1] if rng.random() < 0.5 else crop, int(rng.integers(0, 4)))
        crop = crop[:, :, rng.permutation(3)].astype(np.float32)
        crop = np.clip((crop - crop.mean()) * rng.uniform(0.6, 1.6) + crop.mean(), 0, 255)
        out.append(np.ascontiguousarray(crop.astype(np.uint8)))
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_scale(n: int) -> dict:
    """dHash, the capped candidate search (the audit's radius) and the pixel verification over ``n`` images;
    the plain radius search at 10 bits against all pairs (timed on 5,000, extrapolated)."""
    images = _random_crops(n)
    started = time.perf_counter()
    hashes = hash_images(images)
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    pairs = near_pairs(hashes, 10)
    searched = time.perf_counter() - started
    naive = _all_pairs_seconds(hashes[:5000]) * (n * (n - 1) / 2) / (5000 * 4999 / 2)
    started = time.perf_counter()
    candidates, has = image_candidates(images, RADIUS)
    candidate_s = time.perf_counter() - started
    started = time.perf_counter()
    verified, _ = verify_pairs(images, candidates)
    verify_s = time.perf_counter() - started
    return {"images": n, "hash_s": hashed, "search_s": searched, "pairs": len(pairs),
            "all_pairs_s_extrapolated": naive, "search_speedup": naive / searched,
            "candidates": len(candidates), "candidate_s": candidate_s, "verified": len(verified),
            "verify_s": verify_s, "hash_neighbour_share": float(has.mean()), "peak_mb": _peak_mb()}


def random_hash_scale(n: int) -> dict:
    """The radius search over ``n`` uniformly random 64-bit hashes (no skew, few true pairs): how the search
    scales where chunk values spread, against all pairs timed on 5,000 and extrapolated."""
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    started = time.perf_counter()
    pairs = near_pairs(hashes, 10)
    searched = time.perf_counter() - started
    naive = _all_pairs_seconds(hashes[:5000]) * (n * (n - 1) / 2) / (5000 * 4999 / 2)
    return {"hashes": n, "search_s": searched, "pairs": len(pairs), "all_pairs_s_extrapolated": naive,
            "search_speedup": naive / searched}


def _all_pairs_seconds(sample: np.ndarray) -> float:
    """Seconds to compare every pair of ``sample`` (vectorised popcount, one row against the rest)."""
    started = time.perf_counter()
    for i in range(len(sample) - 1):
        hamming(np.full(len(sample) - i - 1, sample[i], dtype=np.uint64), sample[i + 1:])
    return time.perf_counter() - started


def text_scale(m: int) -> dict:
    """MinHash LSH over ``m`` texts made from the glosses (words dropped or swapped)."""
    glosses = ROOT / "build" / "glosses.csv"
    with open(glosses, newline="", encoding="utf-8") as fh:
        base = [row["text"] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(0)
    texts = []
    for i in range(m):
        words = base[i % len(base)].split()
        if i >= len(base) and len(words) > 3:
            drop = int(rng.integers(0, len(words)))
            words = words[:drop] + words[drop + 1:]
            a, b = rng.integers(0, len(words), 2)
            words[a], words[b] = words[b], words[a]
        texts.append(" ".join(words))
    started = time.perf_counter()
    pairs = near_text_pairs(texts, 0.8)
    return {"texts": m, "seconds": time.perf_counter() - started, "pairs": len(pairs), "peak_mb": _peak_mb()}


PARTS = ("label_noise", "crossfit_noise", "image_duplicates", "homogeneous_duplicates", "homogeneous_labels",
         "homogeneous_cnn", "image_scale", "random_hash_scale", "text_scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS), help="what to run (default: all)")
    parser.add_argument("--out", default=str(ROOT / "build" / "audit-bench.json"))
    args = parser.parse_args()
    runs = {"label_noise": label_noise, "crossfit_noise": crossfit_noise, "image_duplicates": image_duplicates,
            "homogeneous_duplicates": homogeneous_duplicates, "homogeneous_labels": homogeneous_labels,
            "homogeneous_cnn": homogeneous_cnn,
            "image_scale": lambda _: image_scale(args.images), "random_hash_scale": lambda _: random_hash_scale(1_000_000),
            "text_scale": lambda _: text_scale(args.texts)}
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            if part == "text_scale" and not (ROOT / "build" / "glosses.csv").is_file():
                print("text_scale: skipped (run examples/make_glosses.py first)", file=sys.stderr)
                continue
            result[part] = runs[part](Path(tmp))
            print(json.dumps(result[part]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
