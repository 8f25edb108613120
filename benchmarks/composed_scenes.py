"""Composed scenes with exact ground truth for dense targets (tests/test_dense_formats.py and the dense-target
benchmarks): real image texture (crops of scikit-learn's sample photos) on a canvas, objects as non-rectangular
polygons (irregular star-shaped polygons) filled with a crop of the other photo, so that every instance's
polygon, mask (COCO's rasterisation of it), box (the polygon's) and keypoints (its leftmost and rightmost
vertices, named ``left`` and ``right``: a pair a horizontal flip swaps) are known exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from augforge.datasets.formats.dense import DenseSet, ImageTargets
from augforge.datasets.targets import Instances, polygon_box

CLASSES = ["star", "blob", "shard"]
KEYPOINTS = ["left", "right"]


def polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, vertices: int) -> np.ndarray:
    """A flat ring of an irregular star-shaped polygon around (cx, cy)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.45, 1.0, vertices)
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).reshape(-1)


def scene(rng: np.random.Generator, width: int = 96, height: int = 64, objects: int = 4,
          with_keypoints: bool = True, min_radius: float = 6.0, class_weights=None) -> tuple[np.ndarray, Instances]:
    """(an RGB canvas, its instances): ``objects`` polygons inside the frame (radius ``min_radius`` to a third
    of the shorter side), classes drawn at random (with probabilities proportional to ``class_weights``, one
    per class of ``CLASSES``, when given: a long tail)."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    y, x = int(rng.integers(0, china.shape[0] - height)), int(rng.integers(0, china.shape[1] - width))
    canvas = Image.fromarray(china[y : y + height, x : x + width].copy())
    fill = Image.fromarray(flower[y : y + height, x : x + width].copy())
    rings, classes = [], []
    for _ in range(objects):
        radius = float(rng.uniform(min_radius, min(width, height) / 3))
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        ring = polygon(rng, cx, cy, radius, int(rng.integers(5, 10)))
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in ring.reshape(-1, 2)], fill=255)
        canvas.paste(fill, (0, 0), mask)
        rings.append(ring)
        classes.append(int(rng.integers(0, len(CLASSES))) if class_weights is None else
                       int(rng.choice(len(CLASSES), p=np.asarray(class_weights) / np.sum(class_weights))))
    points = None
    if with_keypoints:
        points = np.zeros((objects, 2, 3))
        for i, ring in enumerate(rings):
            xy = ring.reshape(-1, 2)
            points[i, 0, :2], points[i, 1, :2] = xy[xy[:, 0].argmin()], xy[xy[:, 0].argmax()]
            points[i, :, 2] = 2
    boxes = np.stack([polygon_box([r]) for r in rings]) if rings else np.zeros((0, 4))
    return np.asarray(canvas), Instances(np.asarray(classes), boxes, [[r] for r in rings], keypoints=points,
                                         origin=[f"scene#{i}" for i in range(objects)])


def scenes(count: int, seed: int = 0, **options) -> tuple[list[np.ndarray], DenseSet]:
    """``count`` scenes (images and a DenseSet naming them ``scene-NNN.png``), with keypoints unless told."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for n in range(count):
        image, instances = scene(rng, **options)
        images.append(image)
        targets.append(ImageTargets(f"scene-{n:03d}.png", image.shape[1], image.shape[0], instances))
    keypoints = KEYPOINTS if options.get("with_keypoints", True) else None
    from pathlib import Path

    return images, DenseSet(list(CLASSES), targets, Path("."), [], keypoints, [(0, 1)] if keypoints else [])


def write_coco_set(root, count: int, seed: int = 0, **options) -> DenseSet:
    """``count`` scenes written as a COCO set: ``root/images/scene-NNN.png`` and ``root/annotations.json``;
    returns their DenseSet (the truth)."""
    from pathlib import Path

    from augforge.datasets.formats.coco import write_coco

    root = Path(root)
    images, dense = scenes(count, seed, **options)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image, target in zip(images, dense.images):
        Image.fromarray(image).save(root / "images" / target.file)
    write_coco(dense, root / "annotations.json")
    return dense
