"""YOLO txt (ultralytics layout): ``read_yolo`` and ``write_yolo``.

A set is a folder with ``images/`` (any depth) and ``labels/`` mirroring it, one ``.txt`` per image (none: an
image without objects), and the class names in ``data.yaml`` (``names``: a list or an {index: name} mapping) or
``classes.txt`` (one per line). A line is ``class cx cy w h`` (a box; normalised centre and size) or ``class x1
y1 x2 y2 ... xn yn`` with n >= 3 (a polygon, normalised; its box is the polygon's), and with ``kpt_shape: [K,
3]`` in ``data.yaml``, ``class cx cy w h`` followed by K ``x y v`` triples (normalised). Coordinates become
canonical boxes by the image's size, read from its header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from augforge.atomic import atomic_open
from augforge.datasets.formats.dense import DenseSet, ImageTargets, image_size, keep_valid
from augforge.datasets.targets import Instances, polygon_box
from augforge.errors import AugforgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_yolo(root: str | Path) -> DenseSet:
    """The images, classes and instances of a YOLO folder (see the module docstring)."""
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise AugforgeError(f"{root}: not a YOLO folder: no images/ in it")
    names, keypoints = _names(root)
    files = sorted(f for f in images_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    problems: list[str] = []
    out = []
    for file in files:
        relative = file.relative_to(images_dir)
        width, height = image_size(file)
        label = root / "labels" / relative.with_suffix(".txt")
        parts = []
        if label.is_file():
            for number, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    part = _instance(line, width, height, keypoints, f"{label.relative_to(root)}:{number}", problems)
                    if part is not None:
                        parts.append(part)
        instances = Instances.stack(parts, keypoints)
        out.append(ImageTargets(relative.as_posix(), width, height,
                                keep_valid(instances, width, height, len(names), problems)))
    return DenseSet(names, out, images_dir, problems, None if keypoints is None else [str(k) for k in range(keypoints)])


def _names(root: Path) -> tuple[list[str], int | None]:
    """(class names, keypoints per instance or None) from data.yaml or classes.txt."""
    config = root / "data.yaml"
    if config.is_file():
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        raw = data.get("names")
        names = [str(raw[k]) for k in sorted(raw)] if isinstance(raw, dict) else [str(n) for n in raw or []]
        shape = data.get("kpt_shape")
        if shape is not None and (len(shape) != 2 or int(shape[1]) != 3):
            raise AugforgeError(f"{config}: kpt_shape {shape} is not [K, 3]; only keypoints with visibility are read")
        keypoints = None if shape is None else int(shape[0])
    elif (root / "classes.txt").is_file():
        names = [n.strip() for n in (root / "classes.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
        keypoints = None
    else:
        raise AugforgeError(f"{root}: no data.yaml or classes.txt naming the classes")
    if not names:
        raise AugforgeError(f"{root}: no class names in data.yaml or classes.txt")
    return names, keypoints


def _instance(line: str, width: int, height: int, keypoints: int | None, where: str, problems: list):
    """One label line's instance (the dict ``Instances.stack`` takes), or None (its line added to problems)."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        problems.append(f"{where}: not numbers: {line.strip()!r}")
        return None
    cls, numbers = values[0], values[1:]
    if cls != int(cls):
        problems.append(f"{where}: class {cls:g} is not an integer")
        return None
    scale = np.array([width, height], dtype=np.float64)
    polygons, points = [], None
    if keypoints is not None:
        if len(numbers) != 4 + 3 * keypoints:
            problems.append(f"{where}: {len(numbers)} numbers after the class; a box and {keypoints} keypoints "
                            f"are {4 + 3 * keypoints}")
            return None
        points = np.asarray(numbers[4:], dtype=np.float64).reshape(-1, 3)
        points[:, :2] *= scale
    if len(numbers) == 4 or keypoints is not None:
        cx, cy, w, h = numbers[:4]
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * np.tile(scale, 2)
    elif len(numbers) >= 6 and len(numbers) % 2 == 0:
        ring = (np.asarray(numbers).reshape(-1, 2) * scale).reshape(-1)
        polygons, box = [ring], polygon_box([ring])
    else:
        problems.append(f"{where}: {len(numbers)} numbers after the class; a box has 4, a polygon at least 6 "
                        "(an even count)")
        return None
    return {"cls": int(cls), "box": box, "polygons": polygons, "keypoints": points, "origin": where}


def write_yolo(dense: DenseSet, root: str | Path) -> None:
    """``dense``'s labels as a YOLO folder at ``root``: ``labels/<image>.txt`` (a polygon where an instance has
    one, else its box; keypoints with ``kpt_shape``) and ``data.yaml``. The images go to ``images/`` (the
    caller copies them). YOLO has one polygon per instance and no crowd regions: an instance of several rings
    is written with its first, and crowd regions are left out (``export_problems`` counts both)."""
    root = Path(root)
    keypoints = None if dense.keypoint_names is None else len(dense.keypoint_names)
    for image in dense.images:
        scale = np.array([image.width, image.height], dtype=np.float64)
        lines = []
        inst = image.instances
        for i in range(len(inst)):
            if inst.crowd[i]:
                continue  # YOLO has no crowd regions
            x0, y0, x1, y1 = inst.boxes[i] / np.tile(scale, 2)
            if inst.polygons[i] and keypoints is None:
                numbers = [v for ring in inst.polygons[i][:1] for v in (ring.reshape(-1, 2) / scale).reshape(-1)]
            else:
                numbers = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
                if keypoints is not None:
                    points = inst.keypoints[i].copy()
                    points[:, :2] /= scale
                    numbers += points.reshape(-1).tolist()
            lines.append(" ".join([str(int(inst.classes[i]))] + [f"{v:.10g}" for v in numbers]))
        label = root / "labels" / Path(image.file).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(label) as fh:
            fh.write("".join(line + "\n" for line in lines))
    config = {"path": ".", "train": "images", "val": "images", "names": dict(enumerate(dense.classes))}
    if keypoints is not None:
        config["kpt_shape"] = [keypoints, 3]
        config["flip_idx"] = _flip_index(keypoints, dense.flip_pairs)
    with atomic_open(root / "data.yaml") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)


def _flip_index(keypoints: int, pairs: list[tuple[int, int]]) -> list[int]:
    """ultralytics' flip_idx: for each keypoint, the one it becomes under a horizontal flip."""
    index = list(range(keypoints))
    for a, b in pairs:
        index[a], index[b] = b, a
    return index
