"""Instance statistics of a detection or segmentation source, for ``augforge report``: instances and images per
class, crowd regions, and the box sizes in COCO's area ranges (small below 32x32 pixels, medium below 96x96,
large above), measured on the box (COCO's evaluation measures a segmented instance by its mask's pixels: a
box is larger, so a few instances near a boundary fall one range higher here)."""

from __future__ import annotations

import numpy as np

from augforge.datasets import schema as S
from augforge.datasets.plan import plan_rows
from augforge.datasets.sources.base import Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.datasets.targets import IGNORE, Instances, decode_semantic

#: COCO's area ranges (pixels): small < 32^2 <= medium < 96^2 <= large
SMALL, MEDIUM = 32 ** 2, 96 ** 2
SIZES = ("small", "medium", "large")


def _split_positions(source: Source, split: str, splits: SplitSpec, imbalance: ImbalanceSpec,
                     seed: int) -> np.ndarray:
    """The source positions of one split (or all) as the report plans them."""
    plan = plan_rows(source, splits, imbalance, seed)
    return plan.positions if split == S.ALL_SPLITS else plan.positions[plan.splits == S.SPLITS.index(split)]


def instance_section(source: Source, split: str = "train", splits: SplitSpec = SplitSpec(),
                     imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0) -> dict | None:
    """The report's ``instances`` section for one split of a source with dense targets, or None without."""
    rows = source.instances(_split_positions(source, split, splits, imbalance, seed))
    if rows is None:
        return None
    return instance_stats(rows, instance_classes(source))


def instance_classes(source: Source) -> list[str]:
    """The classes instances index: the categories (without the images' ``(no instances)`` label)."""
    targets = source.payload_info().get("targets", {})
    return list(targets.get("classes") or source.class_names)


def instance_stats(rows: list[Instances], class_names: list[str]) -> dict:
    """Instances, images and COCO box sizes per class over ``rows`` (one Instances per image)."""
    k = len(class_names)
    instances, images, crowd = np.zeros(k, np.int64), np.zeros(k, np.int64), 0
    sizes = np.zeros((k, 3), np.int64)
    for inst in rows:
        present = np.zeros(k, bool)
        for i in range(len(inst)):
            c = int(inst.classes[i])
            if inst.crowd[i]:
                crowd += 1
                continue
            instances[c] += 1
            present[c] = True
            x0, y0, x1, y1 = inst.boxes[i]
            area = (x1 - x0) * (y1 - y0)
            sizes[c, 0 if area < SMALL else 1 if area < MEDIUM else 2] += 1
        images += present
    positive = instances[instances > 0]
    return {"images": len(rows), "images_without_instances": sum(1 for r in rows if len(r) == 0),
            "instances": int(instances.sum()), "crowd_regions": crowd,
            "per_class": {name: {"instances": int(instances[c]), "images": int(images[c]),
                                 **{size: int(sizes[c, s]) for s, size in enumerate(SIZES)}}
                          for c, name in enumerate(class_names)},
            "box_sizes": {size: int(sizes[:, s].sum()) for s, size in enumerate(SIZES)},
            "instance_imbalance_ratio": float(positive.max() / positive.min()) if len(positive) else None,
            "area": "box area (x1 - x0) * (y1 - y0) in pixels; COCO ranges: small < 32^2 <= medium < 96^2 <= large"}


def semantic_section(source: Source, split: str = "train", splits: SplitSpec = SplitSpec(),
                     imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0) -> dict | None:
    """The report's ``semantic`` section for one split of a semantic segmentation source (None for another):
    per class the images holding it and its pixels (and share of the labelled pixels), the ``IGNORE`` pixels,
    the pixel imbalance ratio, and median-frequency class weights (Eigen and Fergus, 2015: the median of the
    classes' frequencies over each class's frequency, a class's frequency being its pixels over the pixels of
    the images that hold it), the usual weights of a segmentation loss."""
    if not (source.payload_info().get("targets") or {}).get("semantic"):
        return None
    masks = source.semantic_masks(_split_positions(source, split, splits, imbalance, seed))  # no image is read
    names = instance_classes(source)
    k = len(names)
    pixels, images, image_pixels, ignored, total = np.zeros(k), np.zeros(k, np.int64), np.zeros(k), 0, 0
    for data in masks:
        labels = decode_semantic(data)
        counts = np.bincount(labels.ravel(), minlength=256)
        present = counts[:k] > 0
        pixels += counts[:k]
        images += present
        image_pixels += present * labels.size
        ignored += int(counts[IGNORE])
        total += labels.size
    labelled = max(pixels.sum(), 1)
    frequency = np.where(image_pixels > 0, pixels / np.maximum(image_pixels, 1), 0.0)
    median = float(np.median(frequency[frequency > 0])) if (frequency > 0).any() else 0.0
    positive = pixels[pixels > 0]
    return {"images": len(masks), "pixels": int(total), "ignored_pixels": ignored,
            "per_class": {name: {"images": int(images[c]), "pixels": int(pixels[c]),
                                 "share": round(float(pixels[c] / labelled), 6),
                                 "median_frequency_weight": round(median / frequency[c], 4) if frequency[c] else None}
                          for c, name in enumerate(names)},
            "pixel_imbalance_ratio": float(positive.max() / positive.min()) if len(positive) else None}


def image_label_section(source: Source, split: str = "train", splits: SplitSpec = SplitSpec(),
                        imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0, pairs: int = 10) -> dict | None:
    """The report's ``image_labels`` section for one split of a multilabel source (None for another): images per
    label, labels per image (mean), images without a label, the label imbalance ratio, and the ``pairs`` label
    pairs found together most often (co-occurrence: images holding both)."""
    if not (source.payload_info().get("targets") or {}).get("image_labels"):
        return None
    rows = source.image_labels(_split_positions(source, split, splits, imbalance, seed))  # no image is read
    names = instance_classes(source)
    k = len(names)
    together = np.zeros((k, k), np.int64)
    for labels in rows:
        present = np.zeros(k, bool)
        present[list(labels)] = True
        together += np.outer(present, present)
    images = np.diag(together)
    positive = images[images > 0]
    upper = [(int(together[a, b]), names[a], names[b]) for a in range(k) for b in range(a + 1, k) if together[a, b]]
    return {"images": len(rows), "images_without_labels": sum(1 for labels in rows if not labels),
            "labels_per_image": round(float(np.mean([len(labels) for labels in rows])) if rows else 0.0, 4),
            "per_label": {name: int(images[c]) for c, name in enumerate(names)},
            "label_imbalance_ratio": float(positive.max() / positive.min()) if len(positive) else None,
            "co_occurrence": [{"labels": [a, b], "images": n}
                              for n, a, b in sorted(upper, key=lambda t: -t[0])[:pairs]]}


def image_label_recommendation(section: dict) -> dict:
    """The report's recommendation for a multilabel source without instances: its imbalance is per label."""
    ratio = section["label_imbalance_ratio"]
    return {"strategy": None,
            "reason": "a multilabel set: images per label are imbalanced "
                      f"{'n/a' if ratio is None else f'{ratio:.1f}:1'}; a row strategy would copy or drop every "
                      "label of an image together (each row is counted "
                      "under its rarest label). Weight the labels in the loss (BCE's pos_weight: negatives over "
                      "positives per label)"}


def semantic_recommendation(section: dict) -> dict:
    """The report's recommendation for a semantic segmentation source: its imbalance is in pixels."""
    ratio = section["pixel_imbalance_ratio"]
    return {"strategy": None,
            "reason": f"a semantic segmentation set: pixels per class are imbalanced "
                      f"{'n/a' if ratio is None else f'{ratio:.1f}:1'}; a row strategy would copy or drop whole "
                      "images with every class in them. Weight the classes in the segmentation loss (the "
                      "median-frequency weights are listed per class) and pass 255 as its ignore_index"}


def dense_recommendation(section: dict) -> dict:
    """The report's recommendation for a detection or segmentation source: its rows are images under their
    rarest instance class, so a row strategy's counts are not the instances' (a copied image copies every
    instance in it)."""
    ratio = section["instance_imbalance_ratio"]
    return {"strategy": None,
            "reason": f"a detection or segmentation set: instances per class are imbalanced "
                      f"{'n/a' if ratio is None else f'{ratio:.1f}:1'}; the rows are images, each counted under its "
                      "rarest instance class, and a row strategy (over, under, SMOTE) would copy or drop whole "
                      "images with every instance in them. Balance by instances instead: repeat_factor:t repeats "
                      "the images of classes in fewer than a share t of the images, copy_paste:N pastes rare "
                      "instances onto other images until each class holds N (--strategy projects either; "
                      "balance.strategy writes it)"}
