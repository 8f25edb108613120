"""COCO JSON (object detection, instance segmentation, keypoints): ``read_coco`` and ``write_coco``.

Read: ``images`` (id, file_name, width, height), ``categories`` (id, name, and ``keypoints`` names for keypoint
sets), ``annotations`` (image_id, category_id, ``bbox`` [x, y, w, h], ``segmentation`` as polygons or RLE,
compressed or not, ``iscrowd``, ``keypoints`` [x, y, v, ...]). Classes are the categories in the order of their
ids. A bad annotation (unknown image or category id, a box of no size or outside its image, a polygon of fewer
than 3 points, a mask of another size than its image) is skipped and named in one line.

Written: categories numbered from 1 in class order, images from 1 in set order, polygons as polygons and masks
as compressed RLE (``iscrowd`` as read), ``area`` the mask's pixels (the box's for an instance without mask),
``bbox`` from the canonical box.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augforge.atomic import write_json
from augforge.datasets.formats.dense import DenseSet, ImageTargets, keep_valid
from augforge.datasets.targets import Instances, instance_mask, mask_size_problem, rle_encode
from augforge.errors import AugforgeError


def read_coco(path: str | Path, image_root: str | Path | None = None) -> DenseSet:
    """The images, classes and instances of a COCO annotation file; ``image_root``: where ``file_name`` is
    relative to (default: ``images/`` beside the file when there is one, else the file's folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AugforgeError(f"{path}: not a readable COCO JSON file ({error})") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise AugforgeError(f"{path}: not COCO JSON: expected the keys images, annotations and categories")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    names = [str(c["name"]) for c in categories]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise AugforgeError(f"{path}: categories repeat a name ({', '.join(repeated)})")
    class_of = {c["id"]: i for i, c in enumerate(categories)}
    point_names = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
    if len(point_names) > 1:
        raise AugforgeError(f"{path}: categories name different keypoints; one keypoint layout per set is read")
    keypoint_names = list(next(iter(point_names))) if point_names else None
    images = {img["id"]: img for img in data["images"]}
    grouped: dict = {i: [] for i in images}
    problems: list[str] = []
    for ann in data["annotations"]:
        where = f"{path.name}#annotation {ann.get('id', '?')}"
        if ann.get("image_id") not in images:
            problems.append(f"{where}: unknown image id {ann.get('image_id')}")
        elif ann.get("category_id") not in class_of:
            problems.append(f"{where}: unknown category id {ann.get('category_id')}")
        else:
            grouped[ann["image_id"]].append(ann)
    out = []
    for image_id, image in images.items():
        width, height = int(image["width"]), int(image["height"])
        parts = [_instance(ann, class_of, width, height, keypoint_names,
                           f"{path.name}#annotation {ann.get('id', '?')}", problems) for ann in grouped[image_id]]
        parts = [p for p in parts if p is not None]
        instances = Instances.stack(parts, None if keypoint_names is None else len(keypoint_names))
        out.append(ImageTargets(str(image["file_name"]), width, height,
                                keep_valid(instances, width, height, len(names), problems)))
    root = Path(image_root) if image_root else (path.parent / "images" if (path.parent / "images").is_dir()
                                                 else path.parent)
    return DenseSet(names, out, root, problems, keypoint_names)


def _instance(ann: dict, class_of: dict, width: int, height: int, keypoint_names, where: str, problems: list):
    """One annotation's instance (the dict ``Instances.stack`` takes), or None (its line added)."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        problems.append(f"{where}: bbox {bbox!r} is not [x, y, width, height]")
        return None
    x, y, w, h = (float(v) for v in bbox)
    polygons, mask = [], None
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        polygons = [np.asarray(ring, dtype=np.float64) for ring in segmentation]
    elif isinstance(segmentation, dict):
        line = mask_size_problem(segmentation.get("size", (0, 0)), width, height, where)
        if line:
            problems.append(line)
            return None
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE (crowd regions): compress it
            from pycocotools import mask as coco_mask  # the C extension: loaded where masks are read

            counts = coco_mask.frPyObjects(segmentation, height, width)["counts"]
        mask = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    points = None
    if keypoint_names is not None:
        raw = ann.get("keypoints") or [0.0] * (3 * len(keypoint_names))
        if len(raw) != 3 * len(keypoint_names):
            problems.append(f"{where}: {len(raw) // 3} keypoints; the category names {len(keypoint_names)}")
            return None
        points = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    return {"cls": class_of[ann["category_id"]], "box": (x, y, x + w, y + h), "polygons": polygons, "mask": mask,
            "keypoints": points, "crowd": bool(ann.get("iscrowd", 0)), "origin": where}


def write_coco(dense: DenseSet, path: str | Path) -> None:
    """``dense`` as a COCO annotation file at ``path`` (written atomically); image ``file_name`` as in the set."""
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(dense.classes)]
    if dense.keypoint_names is not None:
        for category in categories:
            category["keypoints"] = list(dense.keypoint_names)
            category["skeleton"] = []
    images, annotations = [], []
    for n, image in enumerate(dense.images, start=1):
        images.append({"id": n, "file_name": image.file, "width": image.width, "height": image.height})
        inst = image.instances
        for i in range(len(inst)):
            x0, y0, x1, y1 = inst.boxes[i].tolist()
            mask = instance_mask(inst, i, image.height, image.width)
            ann = {"id": len(annotations) + 1, "image_id": n, "category_id": int(inst.classes[i]) + 1,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(inst.crowd[i]),
                   "area": float(mask.sum()) if mask is not None else (x1 - x0) * (y1 - y0)}
            if inst.polygons[i]:
                ann["segmentation"] = [ring.tolist() for ring in inst.polygons[i]]
            elif inst.masks[i] is not None:
                counts = inst.masks[i] if mask is None else rle_encode(mask)
                ann["segmentation"] = {"size": [image.height, image.width], "counts": counts.decode("ascii")}
            else:
                ann["segmentation"] = []
            if inst.keypoints is not None:
                ann["keypoints"] = inst.keypoints[i].reshape(-1).tolist()
                ann["num_keypoints"] = int((inst.keypoints[i][:, 2] > 0).sum())
            annotations.append(ann)
    write_json(path, {"images": images, "annotations": annotations, "categories": categories})
