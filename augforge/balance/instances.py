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
from augforge.datasets.targets import Instances

#: COCO's area ranges (pixels): small < 32^2 <= medium < 96^2 <= large
SMALL, MEDIUM = 32 ** 2, 96 ** 2
SIZES = ("small", "medium", "large")


def instance_section(source: Source, split: str = "train", splits: SplitSpec = SplitSpec(),
                     imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0) -> dict | None:
    """The report's ``instances`` section for one split of a source with dense targets, or None without."""
    plan = plan_rows(source, splits, imbalance, seed)
    positions = plan.positions if split == S.ALL_SPLITS else plan.positions[plan.splits == S.SPLITS.index(split)]
    rows = source.instances(positions)
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


def dense_recommendation(section: dict) -> dict:
    """The report's recommendation for a detection or segmentation source: its rows are images under their
    rarest instance class, so a row strategy's counts are not the instances' (a copied image copies every
    instance in it)."""
    ratio = section["instance_imbalance_ratio"]
    return {"strategy": None,
            "reason": f"a detection or segmentation set: instances per class are imbalanced "
                      f"{'n/a' if ratio is None else f'{ratio:.1f}:1'}; the rows are images, each counted under its "
                      "rarest instance class, and a row strategy (over, under, SMOTE) would copy or drop whole "
                      "images with every instance in them. Instance-level rebalancing (repeat-factor sampling, "
                      "copy-paste of rare instances) is planned; until then, weight the rare classes in your "
                      "detector's loss or sample images by their rarest class in your trainer"}
