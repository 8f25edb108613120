"""Geometry applied to an image and its dense targets alike: one transform per sample (a 3x3 matrix from input
to output pixel coordinates, in the canonical continuous plane of ``augforge.datasets.targets``) moves the
pixels, box corners, polygons, masks and keypoints, then one frame policy decides what leaves the frame.

Boxes after the transform are recomputed from what the instance has, tightest first:

1. **polygons**: the transformed rings, clipped to the frame (Sutherland-Hodgman); the box is the clipped
   polygon's extent, and visibility its area over the transformed polygon's (shoelace);
2. **a mask** (RLE): the mask warped with the image (bilinear, then at least half covered: on thin shapes
   closer to the exact moved shape than the nearest pixel); the box is the warped mask's extent, and
   visibility its pixels over the original's times the transform's area scale;
3. **only a box**: its four corners transformed, their extent clipped (**loose** under rotation: the box of a
   rotated box, as Albumentations and torchvision do), visibility the clipped area over the unclipped.

A reflection (a horizontal flip, or any transform with a negative determinant) swaps the keypoints of each
``flip_pairs`` pair (left and right), as a mirror swaps a person's hands. A keypoint that leaves the frame keeps
its moved coordinates and gets visibility 0 (not labelled in this image) instead of disappearing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.datasets.targets import IGNORE, Instances, mask_box, polygon_box, rle_decode, rle_encode
from augforge.errors import OptionError

ON_LOST = ("drop_instance", "reject_sample", "keep")
#: a warped mask's pixel belongs to the instance when at least half covered; an exact half (a tie, common when
#: scaling by simple ratios) counts as covered on every backend, whatever its float rounding
MASK_COVERED = 0.5 - 1e-3


@dataclass(frozen=True)
class FramePolicy:
    """What happens to an instance the transform moves (partly) out of the frame. An instance is **lost** when
    its visibility (area kept / area before) is below ``min_visibility``, its clipped area below ``min_area``
    pixels, its clipped width or height below ``min_width`` / ``min_height``, or nothing of it is left.
    ``on_lost``: ``drop_instance`` (its class, box, mask and keypoints go together), ``reject_sample`` (the
    transform is refused for this sample: ``apply`` says so and the caller draws again or keeps the input),
    ``keep``. ``clip: False`` keeps boxes as transformed, beyond the frame (visibility is still measured)."""

    clip: bool = True
    min_visibility: float = 0.0
    min_area: float = 0.0
    min_width: float = 0.0
    min_height: float = 0.0
    on_lost: str = "drop_instance"

    def __post_init__(self) -> None:
        if self.on_lost not in ON_LOST:
            raise OptionError("{on_lost} " + f"{self.on_lost!r}: expected one of {', '.join(ON_LOST)}")
        if not 0.0 <= self.min_visibility <= 1.0:
            raise OptionError("{min_visibility} " + f"{self.min_visibility}: expected a share in [0, 1]")


def flip_horizontal(width: float) -> np.ndarray:
    """The matrix mirroring x in an image ``width`` wide: x -> width - x."""
    return np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]])


def flip_vertical(height: float) -> np.ndarray:
    """The matrix mirroring y in an image ``height`` high."""
    return np.array([[1.0, 0, 0], [0, -1, height], [0, 0, 1]])


def rotation(degrees: float, width: float, height: float, out: tuple[float, float] | None = None) -> np.ndarray:
    """Rotation by ``degrees`` (counter-clockwise on screen) about the image's centre, landing in the centre of
    an output of ``out`` (width, height; default the input's size)."""
    out_w, out_h = out or (width, height)
    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    turn = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])  # y points down: a screen-CCW turn
    return translation(out_w / 2, out_h / 2) @ turn @ translation(-width / 2, -height / 2)


def translation(dx: float, dy: float) -> np.ndarray:
    """The matrix moving every point by (dx, dy)."""
    return np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])


def scaling(sx: float, sy: float) -> np.ndarray:
    """The matrix scaling x by ``sx`` and y by ``sy`` about the origin (the top-left corner)."""
    return np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0]])


def crop_resize(box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The matrix taking the window ``box`` (x0, y0, x1, y1) of the input onto an output of ``size`` (w, h):
    crop, resize and random_resized_crop are this with their windows."""
    x0, y0, x1, y1 = box
    return scaling(size[0] / (x1 - x0), size[1] / (y1 - y0)) @ translation(-x0, -y0)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], nearest: bool = False,
               fill: float = 0.0) -> np.ndarray:
    """``image`` ((H, W) or (H, W, C), any dtype) resampled onto an output of ``size`` (w, h): each output
    pixel's centre mapped back through ``matrix`` (bilinear, or ``nearest``); outside the input: ``fill``."""
    import torch  # torch: heavy, loaded when a sample is warped

    h, w = image.shape[:2]
    out_w, out_h = size
    inverse = np.linalg.inv(matrix)
    u, v = np.arange(out_w) + 0.5, (np.arange(out_h) + 0.5)[:, None]  # output pixel centres, broadcast
    depth = inverse[2, 0] * u + inverse[2, 1] * v + inverse[2, 2]
    grid = np.empty((1, out_h, out_w, 2), dtype=np.float32)
    grid[0, :, :, 0] = 2 * (inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]) / depth / w - 1
    grid[0, :, :, 1] = 2 * (inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]) / depth / h - 1
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(h, w, -1)).permute(2, 0, 1)[None]
    warped = torch.nn.functional.grid_sample(
        pixels - fill, torch.from_numpy(grid),
        mode="nearest" if nearest else "bilinear", padding_mode="zeros", align_corners=False) + fill
    out = warped[0].permute(1, 2, 0).numpy().reshape((out_h, out_w) + image.shape[2:])
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype)


def box_corners(box) -> np.ndarray:
    """The four (x, y) corners of an (x0, y0, x1, y1) box, clockwise from the top-left."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(n, 2) points through the 3x3 ``matrix`` (homogeneous division included: perspective works too)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    moved = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return moved[:, :2] / moved[:, 2:3]


def clip_polygon(ring: np.ndarray, width: float, height: float) -> np.ndarray:
    """An (n, 2) polygon clipped to the frame [0, width] x [0, height] (Sutherland-Hodgman); (0, 2) if none of it
    is inside."""
    points = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if len(points) and points.min() >= 0 and points[:, 0].max() <= width and points[:, 1].max() <= height:
        return points  # all inside: the clip would return every vertex as it is
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if len(points) == 0:
            break
        inside = points[:, axis] <= bound if keep_below else points[:, axis] >= bound
        out = []
        for k in range(len(points)):
            current, previous = points[k], points[k - 1]
            if inside[k] != inside[k - 1]:
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = previous + t * (current - previous)
                crossing[axis] = bound  # exactly on the edge, not a rounding error beyond it
                out.append(crossing)
            if inside[k]:
                out.append(current)
        points = np.asarray(out).reshape(-1, 2)
    return points


def polygon_area(points: np.ndarray) -> float:
    """The area of an (n, 2) polygon (shoelace; the absolute value)."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    # the shoelace sum x_i y_(i+1) - y_i x_(i+1), the last vertex closing on the first (np.roll, without its cost)
    return float(abs(np.dot(x[:-1], y[1:]) + x[-1] * y[0] - np.dot(y[:-1], x[1:]) - y[-1] * x[0]) / 2)


@dataclass
class Parts:
    """A sample moved by a transform, before the frame policy: the warped image, and per instance its moved
    polygon rings (where it has polygons), its warped mask (float in [0, 1], where it has only an RLE mask), its
    moved box corners, and the moved keypoints (n, K, 2). A backend makes them (``move_parts`` here;
    ``augforge.augment.dense_dali`` on DALI) and ``apply`` judges them."""

    image: np.ndarray
    rings: list[list[np.ndarray]]
    masks: list[np.ndarray | None]
    corners: np.ndarray
    keypoints: np.ndarray | None
    semantic: np.ndarray | None = None  # the class-index map, warped by its nearest pixel (outside: IGNORE)


def parts_points(instances: Instances) -> np.ndarray:
    """Every point a transform moves, as one (m, 2) array: the polygon vertices, then the box corners, then the
    keypoints (``split_points`` takes a moved copy apart again)."""
    points = [ring.reshape(-1, 2) for rings in instances.polygons for ring in rings]
    points += [box_corners(box) for box in instances.boxes]
    if instances.keypoints is not None and len(instances):
        points.append(instances.keypoints[:, :, :2].reshape(-1, 2))
    return np.concatenate(points).astype(np.float64) if points else np.zeros((0, 2))


def split_points(instances: Instances,
                 moved: np.ndarray) -> tuple[list[list[np.ndarray]], np.ndarray, np.ndarray | None]:
    """(rings, corners (n, 4, 2), keypoints (n, K, 2) or None) of ``parts_points``' layout, moved."""
    at, rings = 0, []
    for own in instances.polygons:
        rings.append([])
        for ring in own:
            count = len(ring) // 2
            rings[-1].append(moved[at : at + count])
            at += count
    n = len(instances)
    corners = moved[at : at + 4 * n].reshape(n, 4, 2)
    at += 4 * n
    keypoints = None if instances.keypoints is None else moved[at:].reshape(n, instances.keypoints.shape[1], 2)
    return rings, corners, keypoints


def mask_stack(instances: Instances, width: int, height: int) -> tuple[np.ndarray, list[int]]:
    """The masks a transform warps (instances with an RLE mask and no polygon) as one (H, W, k) float32 array,
    and which instances they are (k = 0: a (H, W, 0) array)."""
    which = [i for i in range(len(instances)) if not instances.polygons[i] and instances.masks[i] is not None]
    stack = np.zeros((height, width, len(which)), dtype=np.float32)
    for k, i in enumerate(which):
        stack[:, :, k] = rle_decode(instances.masks[i], height, width)
    return stack, which


def move_parts(image: np.ndarray, instances: Instances, matrix: np.ndarray, size: tuple[int, int],
               fill: float = 0.0, semantic: np.ndarray | None = None) -> Parts:
    """The ``Parts`` of a sample on the CPU: pixels and masks by ``warp_image``, points by ``transform_points``,
    a ``semantic`` class-index map by its nearest pixel (a class is never blended into another)."""
    height, width = image.shape[:2]
    rings, corners, keypoints = split_points(instances, transform_points(parts_points(instances), matrix))
    stack, which = mask_stack(instances, width, height)
    masks: list = [None] * len(instances)
    if which:
        warped = warp_image(stack, matrix, size).reshape(size[1], size[0], len(which))
        for k, i in enumerate(which):
            masks[i] = warped[:, :, k]
    moved_semantic = None if semantic is None else warp_image(semantic, matrix, size, nearest=True, fill=IGNORE)
    return Parts(warp_image(image, matrix, size, fill=fill), rings, masks, corners, keypoints, moved_semantic)


@dataclass
class Moved:
    """What ``apply`` made of a sample: the output image and instances, whether the frame policy rejected
    the transform (then both are None), and per input instance its visibility and whether it was lost."""

    image: np.ndarray | None
    instances: Instances | None
    rejected: bool
    visibility: np.ndarray
    lost: np.ndarray
    semantic: np.ndarray | None = None  # the moved class-index map of a semantic set


def apply(image: np.ndarray, instances: Instances, matrix: np.ndarray, size: tuple[int, int],
          policy: FramePolicy = FramePolicy(), flip_pairs: list[tuple[int, int]] | None = None,
          fill: float = 0.0, parts: Parts | None = None, semantic: np.ndarray | None = None) -> Moved:
    """``image`` and its ``instances`` (and ``semantic``, a class-index map) through the transform ``matrix``
    onto an output of ``size`` (w, h), with the frame ``policy`` (see the module docstring). ``parts``: the
    sample already moved by a backend (default: ``move_parts``)."""
    height, width = image.shape[:2]
    out_w, out_h = size
    parts = parts or move_parts(image, instances, matrix, size, fill, semantic)
    n = len(instances)
    boxes, visibility = np.zeros((n, 4)), np.zeros(n)
    polygons, masks = [], []
    determinant = np.linalg.det(matrix[:2, :2])  # its size: the area scale; its sign: a reflection or not
    for i in range(n):
        box, vis, rings, mask = _judge_instance(instances, i, parts, (width, height), (out_w, out_h),
                                                abs(determinant), policy.clip)
        boxes[i], visibility[i] = box, vis
        polygons.append(rings)
        masks.append(mask)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    clipped = np.column_stack([np.clip(boxes[:, [0, 2]], 0, out_w), np.clip(boxes[:, [1, 3]], 0, out_h)])
    clipped_w, clipped_h = clipped[:, 1] - clipped[:, 0], clipped[:, 3] - clipped[:, 2]
    lost = (visibility <= 0) | (visibility < policy.min_visibility) | (clipped_w * clipped_h < policy.min_area) \
        | (clipped_w < policy.min_width) | (clipped_h < policy.min_height) | (widths <= 0) | (heights <= 0)
    if policy.on_lost == "reject_sample" and lost.any():
        return Moved(None, None, True, visibility, lost)
    points = None
    if instances.keypoints is not None:
        points = instances.keypoints.copy()
        points[:, :, :2] = parts.keypoints
        outside = (points[..., 0] < 0) | (points[..., 0] > out_w) | (points[..., 1] < 0) | (points[..., 1] > out_h)
        points[..., 2] = np.where(outside, 0, points[..., 2])
        if flip_pairs and determinant < 0:  # a reflection: left and right trade places
            for a, b in flip_pairs:
                points[:, [a, b]] = points[:, [b, a]]
    moved = Instances(instances.classes, boxes, polygons, masks, points, instances.crowd, instances.origin)
    if policy.on_lost == "drop_instance":
        moved = moved.select(~lost)
    return Moved(parts.image, moved, False, visibility, lost, parts.semantic)


def _judge_instance(instances: Instances, i: int, parts: Parts, size_in: tuple[int, int],
                    size_out: tuple[int, int], scale: float, clip: bool):
    """(box, visibility, polygon rings, RLE mask) of instance i after the transform (see the module docstring)."""
    out_w, out_h = size_out
    if instances.polygons[i]:
        moved = parts.rings[i]
        kept = [clip_polygon(ring, out_w, out_h) for ring in moved]
        kept = [ring for ring in kept if len(ring) >= 3]
        before = sum(polygon_area(ring) for ring in moved)
        visibility = sum(polygon_area(ring) for ring in kept) / before if before > 0 else 0.0
        extent = kept if clip else moved
        box = polygon_box(extent) if extent else np.zeros(4)
        return box, visibility, [ring.reshape(-1) for ring in (kept if clip else moved)], None
    if parts.masks[i] is not None:
        warped = parts.masks[i] >= MASK_COVERED  # bilinear, then half covered: closer to the exact shape than nearest
        before = rle_decode(instances.masks[i], size_in[1], size_in[0]).sum() * scale
        box = mask_box(warped)
        visibility = float(warped.sum() / before) if before > 0 else 0.0
        return (np.zeros(4) if box is None else box), min(1.0, visibility), [], rle_encode(warped)
    full = polygon_box([parts.corners[i]])
    inside = np.array([max(full[0], 0), max(full[1], 0), min(full[2], out_w), min(full[3], out_h)])
    area = (full[2] - full[0]) * (full[3] - full[1])
    kept = max(0.0, inside[2] - inside[0]) * max(0.0, inside[3] - inside[1])
    visibility = kept / area if area > 0 else 0.0
    return (inside if clip and kept > 0 else full if not clip else np.zeros(4)), visibility, [], None
