"""The audit's checks of a detection or segmentation set's annotations (beside the near-duplicate and leakage
checks of its images): duplicate boxes (two instances of one class whose boxes overlap with IoU above
``DUPLICATE_IOU``), masks that do not cover their box (the mask's own extent over the box, IoU below
``MASK_BOX_IOU``: a box drawn around something else, or a mask cut short), empty masks, and the bad annotations
the reader left out (a box of zero or negative size, a box outside the image, an unknown category), counted by
kind with their lines.
"""

from __future__ import annotations

import numpy as np

from augforge.datasets.sources.base import Source
from augforge.datasets.targets import instance_mask, mask_box

DUPLICATE_IOU = 0.95
MASK_BOX_IOU = 0.9
#: the reader's bad-annotation lines, by kind (a phrase each line holds)
PROBLEM_KINDS = {"box_without_area": "both must be positive", "box_outside_image": "lies outside the",
                 "unknown_category": "unknown category", "short_polygon": "a polygon needs at least 3 points",
                 "mask_of_another_size": "mask is", "keypoint_outside_image": "keypoint lies outside"}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """The IoU of two (x0, y0, x1, y1) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def dense_section(source: Source, show: int = 20) -> dict:
    """The ``annotations`` section of an audit of a source with dense targets (see the module docstring): counts
    and up to ``show`` examples of each finding."""
    positions = np.arange(len(source))
    ids, rows, sizes = source.ids(), source.instances(positions), source.image_sizes(positions)
    duplicates, uncovered, empty = [], [], []
    for row_id, inst, (width, height) in zip(ids, rows, sizes):
        for i in range(len(inst)):
            for j in range(i + 1, len(inst)):
                if inst.classes[i] == inst.classes[j]:
                    iou = box_iou(inst.boxes[i], inst.boxes[j])
                    if iou > DUPLICATE_IOU:
                        duplicates.append({"row": row_id, "instances": [inst.origin[i], inst.origin[j]],
                                           "iou": round(iou, 4)})
            mask = instance_mask(inst, i, height, width)
            if mask is None:
                continue
            extent = mask_box(mask)
            if extent is None:
                empty.append({"row": row_id, "instance": inst.origin[i]})
                continue
            iou = box_iou(extent, inst.boxes[i])
            if iou < MASK_BOX_IOU:
                uncovered.append({"row": row_id, "instance": inst.origin[i], "iou": round(iou, 4),
                                  "box": [round(float(v), 2) for v in inst.boxes[i]],
                                  "mask_box": extent.tolist()})
    problems = [f"{p.path}: {p.reason}" for p in source.problems]
    kinds = {kind: [line for line in problems if phrase in line] for kind, phrase in PROBLEM_KINDS.items()}
    return {"images": len(rows), "instances": int(sum(len(r) for r in rows)),
            "duplicate_boxes": {"count": len(duplicates), "rows": duplicates[:show],
                                "method": f"same class, box IoU > {DUPLICATE_IOU}"},
            "masks_not_covering_their_box": {"count": len(uncovered), "rows": uncovered[:show],
                                             "method": f"the mask's extent against the box, IoU < {MASK_BOX_IOU}"},
            "empty_masks": {"count": len(empty), "rows": empty[:show]},
            "left_out": {kind: {"count": len(lines), "lines": lines[:show]} for kind, lines in kinds.items()}}
