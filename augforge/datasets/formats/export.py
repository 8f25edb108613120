"""A dense dataset directory written back as COCO, YOLO or VOC (``augforge export-data``), so its images and
targets go to the trainer a user already has (detectron2, mmdet, torchvision references: COCO; ultralytics:
YOLO; VOC tools).

The images are written byte for byte as stored (an augmented build's rows as it encoded them), under a file
name made from the row's id; the annotations from the target columns. The output goes to a temporary folder
beside ``out`` and is renamed into place at the end: an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from augforge.atomic import write_bytes
from augforge.datasets import schema as S
from augforge.datasets.formats.coco import write_coco
from augforge.datasets.formats.dense import DenseSet, ImageTargets
from augforge.datasets.formats.voc import write_voc
from augforge.datasets.formats.yolo import write_yolo
from augforge.datasets.reader import Dataset
from augforge.datasets.sources.image_folder import IMAGE_EXTENSIONS
from augforge.datasets.formats.semantic import write_semantic
from augforge.datasets.targets import (HEIGHT, IMAGE_LABELS, SEMANTIC, WIDTH, decode_semantic, from_columns,
                                       is_dense)
from augforge.errors import AugforgeError, OptionError

FORMATS = ("coco", "yolo", "voc")
#: where each format keeps its images, under the output folder
IMAGE_DIRS = {"coco": "images", "yolo": "images", "voc": "JPEGImages"}


def export_dense(dataset: str | Path, out: str | Path, fmt: str, split: str = S.ALL_SPLITS) -> dict:
    """Write the rows of ``split`` of a dense dataset directory to ``out`` in ``fmt``; returns what was
    written (images, instances, what the format could not hold)."""
    if fmt not in FORMATS:
        raise OptionError("{format} " + f"{fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AugforgeError(f"{out}: exists and is not empty; export into a new folder")
    data = Dataset(dataset, S.check_split(split))
    if not is_dense(data.target_columns):
        raise AugforgeError(f"{dataset}: a classification dataset (no target columns); export-data writes detection "
                            "and segmentation datasets (ingested from COCO, VOC, YOLO, LabelMe or semantic masks)")
    semantic = SEMANTIC in data.target_columns
    if semantic and fmt != "voc":
        raise AugforgeError(f"{dataset}: holds semantic masks (a class per pixel), which {fmt} does not; export it "
                            "with --format voc (SegmentationClassPNG/ palette masks beside JPEGImages/)")
    targets = data.manifest.get("payload_info", {}).get("targets", {})
    table = data.take(np.arange(len(data)), [S.ID, S.IMAGE, *data.target_columns])
    ids, images = table.column(S.ID).to_pylist(), table.column(S.IMAGE).to_pylist()
    rows = from_columns(table)
    widths, heights = table.column(WIDTH).to_pylist(), table.column(HEIGHT).to_pylist()
    names = _file_names(ids, images)
    dense = DenseSet(list(targets.get("classes") or data.class_names),
                     [ImageTargets(name, w, h, inst) for name, w, h, inst in zip(names, widths, heights, rows)],
                     out / IMAGE_DIRS[fmt], keypoint_names=targets.get("keypoint_names"),
                     flip_pairs=[tuple(p) for p in targets.get("flip_pairs", [])])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, data_bytes in zip(names, images):
            path = staging / IMAGE_DIRS[fmt] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, data_bytes)
        if semantic:
            write_semantic(dense, staging, [decode_semantic(m) for m in table.column(SEMANTIC).to_pylist()])
        if not semantic or any(len(r) for r in rows):  # (a VOC folder of masks alone has no Annotations/)
            {"coco": lambda: write_coco(dense, staging / "annotations.json"),
             "yolo": lambda: write_yolo(dense, staging), "voc": lambda: write_voc(dense, staging)}[fmt]()
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    losses = _losses(dense, fmt)
    if IMAGE_LABELS in table.schema.names:  # no format written here holds image-level labels
        losses["image_labels"] = sum(len(labels) for labels in table.column(IMAGE_LABELS).to_pylist())
    return {"images": len(rows), "instances": sum(len(r) for r in rows), "semantic_masks": len(rows) if semantic else 0,
            "format": fmt, "out": str(out), "not_written": losses}


def _file_names(ids: list[str], images: list[bytes]) -> list[str]:
    """A relative file name per row: its id where that is a safe relative image path, else the id with unsafe
    characters replaced and the extension of the image's own format; names made unique."""
    from PIL import Image

    names, seen = [], set()
    for row_id, data in zip(ids, images):
        parts = Path(row_id).parts
        safe = (not Path(row_id).is_absolute() and ".." not in parts and
                Path(row_id).suffix.lower() in IMAGE_EXTENSIONS)
        name = row_id if safe else re.sub(r"[^A-Za-z0-9._-]+", "_", row_id).strip("._") or "image"
        if not safe:
            with Image.open(io.BytesIO(data)) as image:
                name += "." + (image.format or "png").lower().replace("jpeg", "jpg")
        stem, suffix, n = str(Path(name).with_suffix("")), Path(name).suffix, 1
        while name in seen:
            n += 1
            name = f"{stem}-{n}{suffix}"
        seen.add(name)
        names.append(name)
    return names


def _losses(dense: DenseSet, fmt: str) -> dict:
    """What ``fmt`` cannot hold, counted: VOC keeps boxes only; YOLO one polygon an instance and no crowd."""
    instances = [image.instances for image in dense.images]
    polygons = sum(1 for inst in instances for rings in inst.polygons if rings)
    masks = sum(1 for inst in instances for i in range(len(inst)) if inst.masks[i] is not None and not inst.polygons[i])
    keypoints = sum(len(inst) for inst in instances if inst.keypoints is not None)
    if fmt == "voc":
        return {"polygons": polygons, "masks": masks, "keypoint_sets": keypoints}
    if fmt == "yolo" and dense.keypoint_names is not None:  # a pose line holds a box and keypoints only
        return {"crowd_regions": int(sum(inst.crowd.sum() for inst in instances)), "polygons": polygons,
                "masks": masks}
    if fmt == "yolo":
        return {"crowd_regions": int(sum(inst.crowd.sum() for inst in instances)), "masks": masks,
                "extra_polygon_rings": sum(max(0, len(rings) - 1) for inst in instances for rings in inst.polygons)}
    return {}
