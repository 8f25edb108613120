"""Classification metrics from a confusion matrix: accuracy, balanced accuracy, macro-F1, per-class recall."""

from __future__ import annotations

import numpy as np


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]``: rows of class i predicted as j."""
    return np.bincount(np.asarray(true) * num_classes + np.asarray(pred),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(true, pred, class_names: list[str]) -> dict:
    """accuracy, balanced_accuracy (mean recall over classes present), macro_f1, per-class recall, confusion.

    A class with no rows here has no recall: it is None (undefined), not 0, and it is left out of the
    balanced accuracy and the macro-F1; ``undefined`` lists such classes."""
    k = len(class_names)
    cm = confusion_matrix(true, pred, k)
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros(k), where=present)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    total = int(cm.sum())
    return {
        "accuracy": float(hits.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "recall": {name: float(r) if p else None for name, r, p in zip(class_names, recall, present)},
        "undefined": [name for name, p in zip(class_names, present) if not p],
        "confusion": cm.tolist(),
        "rows": total,
    }
