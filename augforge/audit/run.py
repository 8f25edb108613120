"""`augforge audit SOURCE`: near-duplicates (within a split: redundancy; across splits: leakage), label issues
and outliers of a dataset directory or a source, as one report (docs/audit.md has its JSON schema).

- near-duplicates: images by dHash candidates within a Hamming radius (``augforge.audit.hashing``), verified
  on their pixels (``verify``), texts by
  normalised exact match and MinHash LSH over word shingles (``near_text``), feature rows exactly or within
  epsilon (``near_features``), grouped into clusters that do not chain (``clusters``);
- label issues and outliers: cleanlab on out-of-fold probabilities (``labels``).

The report holds no clock time, so the same rows and seed give the same report, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from augforge.audit.clusters import describe_clusters, star_clusters
from augforge.audit.dense import dense_section
from augforge.audit.hashing import RADIUS, hash_images, nearest_pairs, unordered_pairs
from augforge.audit.html import write_html
from augforge.audit.labels import FOLDS, PIXELS, label_issues, out_of_fold_probabilities, outlier_scores
from augforge.audit.near_features import near_feature_pairs
from augforge.audit.near_text import exact_text_pairs, near_text_pairs
from augforge.audit.probs import run_probabilities
from augforge.audit.rows import AuditRows, read_rows
from augforge.audit.verify import CERTAIN, PIXEL_NEIGHBOURS, RATIO, THRESHOLD, pixel_neighbour_pairs, verify_pairs
from augforge.datasets import schema as S
from augforge.datasets.sources import has_dense_targets, open_source
from augforge.datasets.sources.base import cleaning_step
from augforge.errors import OptionError

#: images this small (a side, all of one shape) are compared by their pixels, not by a 64-bit hash
TINY = 16
#: the share of rows the outlier list shows: the least typical ones by cleanlab's score
OUTLIER_SHARE = 0.01
#: below this out-of-fold accuracy of the probabilities' model, the report warns that label issues mix wrong
#: labels with hard rows (measured in docs/audit.md: flagged precision falls with the model's accuracy)
TRUSTED_ACCURACY = 0.85
#: image candidates: each row's nearest hashes within the radius, at most this many (bounded on homogeneous sets)
CANDIDATES = 20
#: above this share of rows with a hash neighbour within the radius, the report calls the set homogeneous
HOMOGENEOUS = 0.05


def _tiny(images: list[np.ndarray]) -> bool:
    """Whether every image is at most TINY pixels a side, all of one shape."""
    shapes = {image.shape for image in images}
    return len(shapes) == 1 and max(next(iter(shapes))[:2]) <= TINY


def near_duplicate_pairs(rows: AuditRows, radius: int, threshold: float, epsilon: float, seed: int,
                         verify: float = THRESHOLD) -> tuple[list, str, dict]:
    """(pairs (i, j, similarity-or-distance), a sentence saying how they were found, what the search measured)
    for the rows' payload. Images: dHash candidates (each row's ``CANDIDATES`` nearest within ``radius``)
    verified on their pixels (``augforge.audit.verify``, similarity at least ``verify``); the facts say how
    many candidates there were and which share of rows had a hash neighbour (homogeneity)."""
    if rows.payload == S.IMAGE and _tiny(rows.values):
        pixels = np.stack([image.reshape(-1) for image in rows.values]).astype(np.float32)
        what = "equal pixels" if epsilon == 0 else f"pixels within Euclidean distance {epsilon} (0-255 scale)"
        return near_feature_pairs(pixels, epsilon), \
            f"images of at most {TINY} px a side, compared by their pixels: {what} (a 64-bit hash of a 9x8 grid " \
            "cannot tell such small images apart)", {}
    if rows.payload == S.IMAGE:
        candidates, has = image_candidates(rows.values, radius)
        candidates = np.asarray(_other_sources(rows, candidates.tolist()), dtype=np.int64).reshape(-1, 3)
        verified, facts = verify_pairs(rows.values, candidates, verify, RATIO)
        facts["hash_neighbour_share"] = round(float(has.mean()), 4)
        facts["homogeneous"] = bool(has.mean() > HOMOGENEOUS)
        return verified, f"candidates: 64-bit dHash within {radius} bits (each row's {CANDIDATES} nearest) and each " \
                         f"row's {PIXEL_NEIGHBOURS} nearest by a 12x12 grey signature (and its centre zoomed); " \
                         f"verified on pixels: similarity >= {verify} after alignment, and {RATIO:g} x each row's " \
                         f"typical candidate distance at most (or similarity >= {CERTAIN})", facts
    if rows.payload == S.TEXT:
        exact = {(int(a), int(b)): 1.0 for a, b in exact_text_pairs(rows.values)}
        exact.update({(a, b): s for a, b, s in near_text_pairs(rows.values, threshold, seed) if (a, b) not in exact})
        return sorted((a, b, s) for (a, b), s in exact.items()), \
            f"normalised exact matches and MinHash LSH over word 3-grams, Jaccard >= {threshold}", {}
    what = "equal rows" if epsilon == 0 else f"rows within Euclidean distance {epsilon}"
    return near_feature_pairs(rows.values, epsilon), f"{what} (exact neighbour search)", {}


def image_candidates(images: list, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate pairs (i, j, hash distance or -1), whether each row has a hash neighbour within ``radius``):
    each row's ``CANDIDATES`` nearest dHashes within the radius, and its nearest by a small grey signature
    (``pixel_neighbour_pairs``); a pair both found is listed once, with its hash distance."""
    hashed, has = nearest_pairs(hash_images(images), radius, CANDIDATES)
    candidates = np.concatenate([hashed, pixel_neighbour_pairs(images)])
    _, _, first = unordered_pairs(candidates[:, 0], candidates[:, 1], len(images))
    return candidates[np.sort(first)], has


def homogeneity_note(facts: dict, radius: int) -> str | None:
    """The report's sentence when the hash cannot tell on this set (most rows have a hash neighbour)."""
    if not facts.get("homogeneous"):
        return None
    return (f"this set is homogeneous: {facts['hash_neighbour_share']:.0%} of rows have a hash neighbour within "
            f"{radius} bits, so a hash match says little here; the {facts['candidates']:,} candidate pairs were "
            f"verified on pixels and {facts['verified']:,} kept")


def _other_sources(rows: AuditRows, pairs) -> list:
    """The pairs whose rows come from different source rows: a build's augmented or balance copies are
    near-duplicates of their own source by design, and are not reported."""
    return [p for p in pairs if rows.sources[p[0]] is None or rows.sources[p[0]] != rows.sources[p[1]]]


def _duplicates_section(rows: AuditRows, pairs, method: str, facts: dict | None = None, radius: int = 0) -> dict:
    pairs = _other_sources(rows, pairs)
    clusters = describe_clusters(star_clusters(pairs, len(rows)), rows.ids, rows.splits)
    leaking: dict[str, int] = {}
    for cluster in clusters:
        if cluster["kind"] == "leakage":
            for row in cluster["rows"]:
                if row["split"] != "train":
                    leaking[row["split"]] = leaking.get(row["split"], 0) + 1
    section = {"method": method, "pairs": len(pairs), "clusters": clusters,
               "redundant_rows": sum(len(c["rows"]) - 1 for c in clusters if c["kind"] == "redundancy"),
               "leaking_rows": dict(sorted(leaking.items()))}
    if facts:
        section["candidates"] = facts["candidates"]
        section["hash_neighbour_share"] = facts["hash_neighbour_share"]
        note = homogeneity_note(facts, radius)
        if note:
            section["note"] = note
    return section


def embedding_pairs(embeddings: np.ndarray, cosine: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine similarity) of rows whose embeddings are at least ``cosine`` similar: the exact
    neighbour search on unit vectors, where cosine c is Euclidean distance sqrt(2 - 2c)."""
    x = np.asarray(embeddings, dtype=np.float64)
    unit = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    radius = float(np.sqrt(max(0.0, 2.0 - 2.0 * cosine))) + 1e-6
    return [(a, b, round(1.0 - d * d / 2.0, 6)) for a, b, d in near_feature_pairs(unit, radius)
            if 1.0 - d * d / 2.0 >= cosine - 1e-6]


def _probabilities(rows: AuditRows, seed: int, run_dir, embedded_by: str | None) -> tuple[np.ndarray, str]:
    """(out-of-sample probabilities of every row, what made them): a cross-fitted augforge run's, or the
    fast model's out-of-fold ones (on the local model's embeddings when there are some)."""
    if run_dir is not None:
        probs, plan = run_probabilities(run_dir, rows.ids, rows.class_names)
        return probs, f"{plan['folds']}-fold out-of-fold probabilities of augforge run {run_dir} (model " \
                      f"{plan['model']}; val and test rows: the mean of the folds' models)"
    if rows.embeddings is not None:
        return out_of_fold_probabilities(rows, seed, rows.embeddings), \
            f"{FOLDS}-fold out-of-fold probabilities of standardised embeddings ({embedded_by}) + logistic regression"
    model = {S.IMAGE: f"logistic regression on grey pixels (at most {PIXELS}x{PIXELS}) and gradient histograms",
             S.TEXT: "TF-IDF (word 1-2-grams, character 3-5-grams) + logistic regression",
             S.FEATURES: "standardised features + logistic regression"}[rows.payload]
    return out_of_fold_probabilities(rows, seed), f"{FOLDS}-fold out-of-fold probabilities of {model}"


def model_accuracy_warning(accuracy: float, flagged: int, rows: int) -> str | None:
    """The report's warning when the probabilities' own out-of-fold accuracy is too low for confident learning to
    tell wrong labels from hard rows (below ``TRUSTED_ACCURACY``)."""
    if accuracy >= TRUSTED_ACCURACY:
        return None
    return (f"the model behind these probabilities is right on only {accuracy:.0%} of rows out of fold; at that "
            f"accuracy confident learning flags hard rows along with wrong labels ({flagged:,} of {rows:,} flagged): "
            "look at them before dropping any, or give stronger probabilities (augforge crossfit RECIPE, then "
            "--probs)")


def _label_sections(rows: AuditRows, seed: int, run_dir=None, embedded_by: str | None = None) -> tuple[dict, dict]:
    probs, made_by = _probabilities(rows, seed, run_dir, embedded_by)
    accuracy = float(np.mean(probs.argmax(axis=1) == np.asarray(rows.labels)))
    found = label_issues(rows.labels, probs)
    names = rows.class_names
    flagged = [{"id": rows.ids[i], "split": rows.splits[i], "given": names[rows.labels[i]],
                "suggested": names[found["suggested"][i]], "score": round(float(found["scores"][i]), 6)}
               for i in found["flagged"].tolist()]
    method = f"cleanlab find_label_issues on {made_by}"
    scores = outlier_scores(rows.labels, probs)
    count = max(1, int(round(OUTLIER_SHARE * len(rows))))
    order = np.lexsort((np.arange(len(rows)), scores))[:count]
    outliers = [{"id": rows.ids[i], "split": rows.splits[i], "label": names[rows.labels[i]],
                 "score": round(float(scores[i]), 6)} for i in order.tolist()]
    issues = {"method": method, "model_accuracy": round(accuracy, 4), "count": len(flagged), "rows": flagged}
    warning = model_accuracy_warning(accuracy, len(flagged), len(rows))
    if warning:
        issues["warning"] = warning
    return (issues,
            {"method": f"cleanlab OutOfDistribution on the same probabilities; the {OUTLIER_SHARE:.0%} least "
                       "typical rows", "rows": outliers})


@dataclass(frozen=True)
class NearOptions:
    """What counts as a near-duplicate: ``radius`` (image hash candidates, bits), ``verify`` (the pixel
    similarity a candidate pair needs), ``threshold`` (text Jaccard), ``epsilon`` (feature and tiny-image
    distance), ``cosine`` (embedding neighbours); each checked, an error naming the option."""

    radius: int = RADIUS
    threshold: float = 0.8
    epsilon: float = 0.0
    verify: float = THRESHOLD
    cosine: float = 0.95

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise OptionError("{epsilon} {value}: expected a distance of 0 or more", value=self.epsilon)
        if not 0.0 < self.threshold <= 1.0:
            raise OptionError("{threshold} {value}: expected a Jaccard similarity in (0, 1]", value=self.threshold)
        if not -1.0 <= self.cosine <= 1.0:
            raise OptionError("{cosine} {value}: expected a cosine similarity in [-1, 1]", value=self.cosine)
        if not 0.0 < self.verify <= 1.0:
            raise OptionError("{verify} {value}: expected a pixel similarity in (0, 1]", value=self.verify)


#: the ``audit`` keywords that are ``NearOptions``
NEAR_KEYS = {f.name for f in fields(NearOptions)}


def audit(path, *, splits: list[str] | None = None, seed: int = 0, labels: bool = True, html=None, show: int = 10,
          probs=None, embed=None, **options) -> dict:
    """The audit report of a dataset directory or source (see the module docstring). ``options``: the
    ``NearOptions`` (radius, verify, threshold, epsilon, cosine), then ``read_rows``' (a source's split and
    imbalance specs, its table columns). ``html``: also write the page (``augforge.audit.html``) with ``show``
    rows per finding. ``probs``: a cross-fit directory (``augforge crossfit``) whose probabilities replace the
    fast model's. ``embed``: a function (dataset directory, split) -> embeddings
    (``augforge.experiments.embed.checkpoint_embedder``): rows at least ``cosine`` similar are reported as
    ``embedding_neighbours``, and the label model is fitted on the embeddings."""
    near = NearOptions(**{key: options.pop(key) for key in list(options) if key in NEAR_KEYS})
    if probs is not None and not labels:
        raise OptionError("{probs}: label issues are turned off, so the run's probabilities would go unused")
    rows = read_rows(path, splits, seed=seed, embed=embed, **options)
    if len(rows) == 0:
        raise OptionError("{path}: has no rows to audit", path=path)
    pairs, method, facts = near_duplicate_pairs(rows, near.radius, near.threshold, near.epsilon, seed, near.verify)
    report = {"source": rows.location, "payload": rows.payload, "rows": len(rows), "seed": seed,
              "splits": {s: rows.splits.count(s) for s in dict.fromkeys(rows.splits)},
              "classes": rows.class_names,
              "near_duplicates": _duplicates_section(rows, pairs, method, facts, near.radius),
              "unreadable": [{"path": p.get("path"), "reason": p.get("reason")} for p in rows.problems
                             if cleaning_step(p.get("reason")) is None]}
    embedded_by = None if embed is None else getattr(embed, "description", "a local model")
    if rows.embeddings is not None:
        report["embedding_neighbours"] = _duplicates_section(
            rows, embedding_pairs(rows.embeddings, near.cosine), f"cosine similarity >= {near.cosine} of "
                                                                 f"{embedded_by} (exact neighbour search)")
    dense = isinstance(path, (str, Path)) and has_dense_targets(path)
    if dense:  # the annotations themselves: duplicate boxes, masks against boxes, what the reader left out
        report["annotations"] = dense_section(open_source(path))
    if labels and dense:  # a row's label is its rarest instance class: no label to check
        report["near_duplicates"]["note"] = " ".join(filter(None, (
            report["near_duplicates"].get("note"), "label issues are not checked on a detection or segmentation "
            "set (a row's label is its rarest instance class, not an annotation); images are checked for "
            "near-duplicates and leakage")))
    elif labels:
        report["label_issues"], report["outliers"] = _label_sections(rows, seed, probs, embedded_by)
    if html is not None:
        write_html(report, rows, html, show)
    return report

