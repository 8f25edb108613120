"""Label issues and outliers by confident learning (cleanlab), on out-of-fold probabilities of a fast model.

The model, per payload, fitted in a stratified k-fold so that every row is scored by a model that did not
see it:

- images: logistic regression on the grey pixels, downsampled to at most 16 x 16;
- text: TF-IDF of word 1-2-grams and character 3-5-grams, then logistic regression;
- features: standardised features, then logistic regression.

cleanlab's ``find_label_issues`` flags the rows whose given label the probabilities contradict;
``get_label_quality_scores`` scores every row (lower: more likely mislabelled), and the suggested label is
the most probable class. Outliers come from cleanlab's ``OutOfDistribution`` on the same probabilities.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from augforge.audit.hashing import image_from_array
from augforge.datasets import schema as S
from augforge.errors import AugforgeError

#: folds of the out-of-fold probabilities (fewer when the smallest class has fewer rows)
FOLDS = 5
#: rows x features below which the fast models fit on one BLAS thread
SMALL_PROBLEM = 20_000_000
#: the side images are downsampled to for the pixel model; the side, cell and orientation bins of its gradient
#: histograms (pixels and histograms: on 5% flipped labels, precision 0.84 / recall 0.78 on glyphs of nine faces
#: and 0.84 / 0.92 on the upscaled digits, against 0.76 / 0.73 and 0.61 / 0.89 from the pixels alone; docs/audit.md)
PIXELS = 16
GRADIENT_SIDE, GRADIENT_CELL, GRADIENT_BINS = 32, 4, 8


def pixel_features(images: list[np.ndarray]) -> np.ndarray:
    """One row per image: its grey pixels in [0, 1] at ``PIXELS`` x ``PIXELS`` (smaller images: at their own
    size, brought to one size when they differ), then ``gradient_histograms`` of it at ``GRADIENT_SIDE``."""
    rows = []
    for image in images:
        grey = image_from_array(image).convert("L")
        if max(grey.size) > PIXELS:
            grey = grey.resize((PIXELS, PIXELS), Image.Resampling.BILINEAR)
        rows.append(np.asarray(grey, dtype=np.float32).ravel() / 255.0)
    widths = {len(r) for r in rows}
    if len(widths) > 1:  # images of several sizes below PIXELS: bring them to one size
        rows = [np.asarray(Image.fromarray((r.reshape(int(len(r) ** 0.5), -1) * 255).astype(np.uint8)).resize(
            (PIXELS, PIXELS)), dtype=np.float32).ravel() / 255.0 for r in rows]
    return np.hstack([np.stack(rows), gradient_histograms(images)])


def gradient_histograms(images: list[np.ndarray], side: int = GRADIENT_SIDE, cell: int = GRADIENT_CELL,
                        bins: int = GRADIENT_BINS) -> np.ndarray:
    """One row per image: histograms of its grey gradients' orientations (``bins`` over 0-180 degrees, weighted
    by magnitude), one per ``cell`` x ``cell`` cell of the image resized to ``side``, each of unit length (as HOG
    describes a shape; Dalal & Triggs 2005, without its block normalisation). A stroke moved by a pixel stays in
    its cell, where raw pixels change."""
    cells = side // cell
    rows, cols = np.meshgrid(np.arange(side) // cell, np.arange(side) // cell, indexing="ij")
    slot = (np.minimum(rows, cells - 1) * cells + np.minimum(cols, cells - 1)) * bins  # (side, side)
    histograms = np.zeros((len(images), cells * cells, bins))
    for start in range(0, len(images), 4096):  # a chunk at a time: memory stays bounded at any row count
        chunk = images[start : start + 4096]
        grey = np.stack([np.asarray(image_from_array(image).convert("L").resize((side, side),
                                                                                 Image.Resampling.BILINEAR),
                                    dtype=np.float32) for image in chunk]) / 255.0
        dy, dx = np.gradient(grey, axis=(1, 2))
        orientation = np.minimum((np.mod(np.arctan2(dy, dx), np.pi) / np.pi * bins).astype(np.int64), bins - 1)
        index = np.arange(len(chunk))[:, None, None] * (cells * cells * bins) + slot[None] + orientation
        counts = np.bincount(index.ravel(), weights=np.hypot(dx, dy).ravel(),
                             minlength=len(chunk) * cells * cells * bins)
        histograms[start : start + len(chunk)] = counts.reshape(len(chunk), cells * cells, bins)
    histograms /= np.linalg.norm(histograms, axis=2, keepdims=True) + 1e-6
    return histograms.reshape(len(images), -1).astype(np.float32)


def _model(payload: str, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.preprocessing import StandardScaler

    linear = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    if payload == S.TEXT:
        words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2)
        return make_pipeline(make_union(words, chars), linear)
    return make_pipeline(StandardScaler(), linear)


def out_of_fold_probabilities(rows, seed: int = 0, features: np.ndarray | None = None) -> np.ndarray:
    """(n, classes) probabilities of each row from a model fitted on the other folds (stratified k-fold);
    ``features`` (e.g. a local model's embeddings) replace the payload's own, with a standardised LR."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels, k = np.asarray(rows.labels), len(rows.class_names)
    counts = np.bincount(labels, minlength=k)
    present = counts[counts > 0]
    if len(present) < 2:
        raise AugforgeError(f"{rows.location}: label issues need at least two classes with rows; found "
                            f"{len(present)}")
    if present.min() < 2:
        lonely = [rows.class_names[i] for i in np.flatnonzero(counts == 1)]
        raise AugforgeError(f"{rows.location}: label issues need at least 2 rows per class (out-of-fold "
                            f"probabilities); class {', '.join(lonely)} has 1")
    x = rows.values if features is None else features
    if rows.payload == S.IMAGE and features is None:
        x = pixel_features(rows.values)
    folds = StratifiedKFold(n_splits=int(min(FOLDS, present.min())), shuffle=True, random_state=seed)
    model = _model(rows.payload if features is None else S.FEATURES, seed)
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    # a small problem runs faster on one BLAS thread: waking threads costs more than they save (measured: a fit on
    # 324 glyphs x 768 features took 0.38 s on 2 threads and 0.05 s on 1, and worse when two processes share 2 cores)
    width = x.shape[1] if getattr(x, "ndim", 1) == 2 else 1_000  # texts: their TF-IDF width is not known yet
    with threadpool_limits(1 if len(x) * width < SMALL_PROBLEM else None):
        probs = cross_val_predict(model, x, labels, cv=folds, method="predict_proba")
    full = np.zeros((len(labels), k))
    full[:, np.flatnonzero(counts > 0)] = probs  # classes without rows get probability 0
    return full


def _present_classes(labels: np.ndarray, probs: np.ndarray):
    """(the classes with rows, labels renumbered over them, probabilities over them): cleanlab wants every
    class it is given to have rows."""
    present = np.flatnonzero(probs.sum(axis=0) > 0)
    remap = np.full(probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    return present, remap[labels], probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)


def label_issues(labels: np.ndarray, probs: np.ndarray) -> dict:
    """cleanlab's findings: ``flagged`` (row indices, worst first), ``scores`` (label quality of every row)
    and ``suggested`` (the most probable class of every row)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    present, given, compact = _present_classes(labels, probs)
    flagged = find_label_issues(given, compact, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(given, compact)
    return {"flagged": np.asarray(flagged, dtype=np.int64), "scores": np.asarray(scores),
            "suggested": present[compact.argmax(axis=1)]}


def outlier_scores(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's out-of-distribution score of every row from its probabilities (lower: less typical)."""
    from cleanlab.outlier import OutOfDistribution

    _, given, compact = _present_classes(labels, probs)
    return np.asarray(OutOfDistribution().fit_score(pred_probs=compact, labels=given, verbose=False))
