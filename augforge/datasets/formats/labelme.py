"""LabelMe JSON: ``read_labelme`` (read only; export writes COCO, YOLO or VOC).

A set is a folder of LabelMe ``.json`` files, one per image (``imagePath`` relative to the file, ``imageWidth``,
``imageHeight``, ``shapes``). A shape is an instance when its ``shape_type`` is ``rectangle`` (two corners),
``polygon`` (its box the polygon's) or ``circle`` (centre and a point on the rim: a 32-gon). Shapes sharing a
``group_id`` and a label are one instance (a polygon in parts). Points, lines and line strips are not instances
and are named in the problems. Classes: the labels found, sorted, unless a list is given.

Image-level labels (multilabel): a file's ``flags`` set to true are the image's labels (LabelMe's classification
annotation; ``__ignore__`` is not a label). They share the class list: flag names that are no instance class are
added after the classes, in the order the files declare them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augforge.datasets.formats.dense import DenseSet, ImageTargets, keep_valid
from augforge.datasets.targets import Instances, polygon_box
from augforge.errors import AugforgeError

CIRCLE_POINTS = 32


def read_labelme(root: str | Path, classes: list[str] | None = None) -> DenseSet:
    """The images, classes and instances of a folder of LabelMe files (see the module docstring)."""
    root = Path(root)
    files = sorted(root.rglob("*.json"))
    problems: list[str] = []
    parsed = []
    flag_names: dict = {}  # every flag declared, in the order first seen
    for file in files:
        where_file = file.relative_to(root).as_posix()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            width, height = int(data["imageWidth"]), int(data["imageHeight"])
            image_path = (file.parent / data["imagePath"]).resolve()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            problems.append(f"{where_file}: not a LabelMe file ({type(error).__name__}: {error})")
            continue
        groups: dict = {}
        for n, shape in enumerate(data.get("shapes", []), start=1):
            where = f"{where_file}#shape {n}"
            ring = _ring(shape, where, problems)
            if ring is not None:
                key = (shape.get("label"), shape.get("group_id")) if shape.get("group_id") is not None else n
                groups.setdefault(key, (str(shape.get("label", "")), [], where))[1].append(ring)
        declared = {str(k): on for k, on in (data.get("flags") or {}).items() if k != "__ignore__"}
        flags = [k for k, on in declared.items() if on is True] if declared else None
        parsed.append((image_path, width, height, list(groups.values()), where_file, flags))
        flag_names.update(dict.fromkeys(declared))
    if not parsed:
        raise AugforgeError(f"{root}: no LabelMe .json files")
    names = list(classes) if classes else sorted({label for *_, groups, _, _ in parsed for label, _, _ in groups})
    multilabel = any(p[5] is not None for p in parsed)  # a set whose files declare flags: image-level labels
    names += [flag for flag in flag_names if flag not in names]
    index = {name: i for i, name in enumerate(names)}
    out = []
    for image_path, width, height, groups, where_file, flags in parsed:
        parts = []
        for label, rings, where in groups:
            if label not in index:
                problems.append(f"{where}: unknown category {label!r}")
                continue
            parts.append({"cls": index[label], "box": polygon_box(rings), "polygons": rings, "origin": where})
        instances = Instances.stack(parts)
        try:
            relative = image_path.relative_to(root.resolve()).as_posix()
        except ValueError:
            problems.append(f"{where_file}: imagePath {image_path} lies outside {root}")
            continue
        out.append(ImageTargets(relative, width, height, keep_valid(instances, width, height, len(names), problems),
                                image_labels=[index[f] for f in flags or []] if multilabel else None))
    return DenseSet(names, out, root, problems)


def _ring(shape: dict, where: str, problems: list) -> np.ndarray | None:
    """A shape's polygon ring (flat x, y), or None (its line added) for a shape that is not an instance."""
    kind = shape.get("shape_type") or "polygon"
    points = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return np.array([x0, y0, x1, y0, x1, y1, x0, y1])
    if kind == "circle" and len(points) == 2:
        radius = float(np.hypot(*(points[1] - points[0])))
        angles = np.linspace(0, 2 * np.pi, CIRCLE_POINTS, endpoint=False)
        return np.column_stack([points[0][0] + radius * np.cos(angles),
                                points[0][1] + radius * np.sin(angles)]).reshape(-1)
    if kind == "polygon":
        return points.reshape(-1)  # fewer than 3 points: check_instances names it
    problems.append(f"{where}: a {kind} shape of {len(points)} point(s) is not an instance (rectangle, polygon, "
                    "circle); not read")
    return None
