"""The recipe's image ops on images with dense targets (boxes, polygons, masks, keypoints): what each op does to
the targets, and one callable that runs an op list on a sample.

What each op does to targets:

- **geometry** (``random_resized_crop``, ``random_crop``, ``center_crop``, ``resize``, ``pad``, ``rotate``,
  ``hflip``, ``vflip``): each draws a 3x3 matrix on the current size; the list's matrices compose into **one
  transform per sample**, applied once to pixels, polygons, masks, keypoints and boxes
  (``augforge.augment.target_geometry.apply``) under the frame policy; a semantic map (a class per pixel) moves
  by its nearest pixel, ``IGNORE`` where the frame holds nothing of the input. With ``min_coverage`` the crops are
  object-aware (DALI's ``random_bbox_crop`` semantics: the window keeps at least that share of some instance's
  box);
- **pixel** ops (``color``, ``grayscale``, ``gaussian_blur``, ``normalize``): targets unchanged;
- **occluding** ops (``random_erasing``, ``cutout``): boxes, polygons and masks unchanged (the object is still
  there, hidden), a semantic map's erased pixels set to ``IGNORE`` (no class to see there); each instance's
  visibility is multiplied by the share of its mask (else its box) left unerased, keypoints under the rectangle go
  from v=2 (visible) to v=1 (labelled, hidden), and an instance hidden beyond ``min_visibility`` is lost under the
  policy's ``on_lost``;
- ``auto_augment``, ``rand_augment``, ``trivial_augment``: **refused by name** on dense data (their shear,
  translate and rotate sub-ops move pixels inside the policy, where targets cannot follow).

Order: the geometry ops form one transform, applied first; the pixel and occluding ops follow in the list's
order. A colour op written before a crop therefore runs after it, with the same result (they act per pixel),
except that colour now reaches the fill of a padded or rotated border too.
The pixel ops are ``augforge.augment.torch_ops``' (one seeded ``torch.Generator`` per sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from augforge.augment.target_geometry import (FramePolicy, Moved, apply, box_corners, crop_resize,
                                              flip_horizontal, flip_vertical, rotation, transform_points, translation)
from augforge.augment.target_ops import Drawn, coverage, draw_window
from augforge.datasets.targets import IGNORE, Instances, instance_mask, polygon_box
from augforge.errors import AugforgeError

GEOMETRY_OPS = ("random_resized_crop", "random_crop", "center_crop", "resize", "pad", "rotate", "hflip", "vflip")
PIXEL_OPS = ("color", "grayscale", "gaussian_blur", "normalize")
OCCLUDING_OPS = ("random_erasing", "cutout")
#: refused on dense data, with the reason
REFUSED_OPS = {name: "its shear, translate and rotate sub-ops move pixels inside the policy, where boxes, masks and "
                     "keypoints cannot follow; compose rotate / random_resized_crop / hflip with color instead"
               for name in ("auto_augment", "rand_augment", "trivial_augment")}


def check_dense_ops(ops, file: str) -> None:
    """Refuse, in one line naming the op's place in ``file``, an op that cannot carry dense targets."""
    for op in ops:
        if op.name in REFUSED_OPS:
            raise AugforgeError(f"{file}: {op.where}.op: {op.name} is refused on a detection or segmentation set: "
                                f"{REFUSED_OPS[op.name]}")
        if op.name not in GEOMETRY_OPS + PIXEL_OPS + OCCLUDING_OPS:
            raise AugforgeError(f"{file}: {op.where}.op: {op.name} has no definition for dense targets")


def _size(prm) -> tuple[int, int]:
    """An op's ``size`` ([h, w]) as (w, h)."""
    h, w = prm["size"]
    return int(w), int(h)


def op_matrix(op, rng: np.random.Generator, width: int, height: int, instances: Instances | None = None,
              min_coverage: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """One geometry op's draw on an input ``width`` x ``height``: (its matrix, the output (w, h)).
    ``instances``: the targets already in this input's coordinates (for an object-aware crop)."""
    prm = op.params
    boxes = None if instances is None or min_coverage is None or len(instances) == 0 else instances.boxes
    if op.name == "random_resized_crop":
        window = draw_window(rng, width, height, prm["scale"], prm["ratio"], boxes, min_coverage)
        return crop_resize(window, _size(prm)), _size(prm)
    if op.name in ("random_crop", "center_crop"):
        w, h = _size(prm)
        best, best_share = None, -1.0
        for _ in range(50 if boxes is not None and op.name == "random_crop" else 1):
            left = (width - w) / 2 if op.name == "center_crop" else float(rng.uniform(0, 1)) * (width - w)
            top = (height - h) / 2 if op.name == "center_crop" else float(rng.uniform(0, 1)) * (height - h)
            window = (round(left), round(top), round(left) + w, round(top) + h)
            share = 1.0 if boxes is None else float(coverage(window, boxes).max())
            if share > best_share:
                best, best_share = window, share
            if share >= (min_coverage or 0.0):
                break
        return translation(-best[0], -best[1]), (w, h)  # no window keeps min_coverage: the one that keeps most
    if op.name == "resize":
        w, h = _size(prm)
        if prm["keep_aspect"]:
            short = min(w, h) / min(width, height)
            w, h = max(1, round(width * short)), max(1, round(height * short))
        return crop_resize((0, 0, width, height), (w, h)), (w, h)
    if op.name == "pad":
        n = int(prm["padding"])
        return translation(n, n), (width + 2 * n, height + 2 * n)
    if op.name == "rotate":
        low, high = prm["degrees"]
        angle = float(rng.uniform(low, high))
        if not prm["expand"]:
            return rotation(angle, width, height), (width, height)
        c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        out = (math.ceil(width * c + height * s - 1e-6), math.ceil(width * s + height * c - 1e-6))
        return rotation(angle, width, height, out), out
    if op.name == "hflip":
        return flip_horizontal(width), (width, height)
    if op.name == "vflip":
        return flip_vertical(height), (width, height)
    raise AugforgeError(f"{op.where}.op: {op.name} is not a geometry op")


@dataclass(frozen=True)
class DenseAugment:
    """The recipe's op list on one (image, instances) sample (see the module docstring), under the frame
    ``policy``; ``flip_pairs``: keypoint index pairs a reflection swaps; ``min_coverage``: object-aware crops;
    ``attempts``: draws tried while ``on_lost: reject_sample`` refuses them (then the input, unchanged)."""

    ops: tuple
    policy: FramePolicy = FramePolicy()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    min_coverage: float | None = None
    attempts: int = 10

    def __post_init__(self) -> None:
        check_dense_ops(self.ops, "augment")

    def geometry(self, rng: np.random.Generator, width: int, height: int,
                 instances: Instances) -> tuple[np.ndarray, tuple[int, int]]:
        """One draw of the geometry ops, composed: (the matrix, the output (w, h)). Each op's coin (its ``p``) is
        drawn first, then its parameters."""
        matrix, size = np.eye(3), (width, height)
        for op in self.ops:
            if op.name not in GEOMETRY_OPS or not _coin(rng, op.p):
                continue
            moved = _moved_boxes(instances, matrix) if self.min_coverage is not None else None
            step, size = op_matrix(op, rng, size[0], size[1], moved, self.min_coverage)
            matrix = step @ matrix
        return matrix, size

    def __call__(self, rng: np.random.Generator, image: np.ndarray, instances: Instances,
                 semantic: np.ndarray | None = None) -> Drawn:
        """One sample (``semantic``: its class-index map, in a semantic set) through the ops; ``Drawn.rejected``
        counts the draws the frame policy refused."""
        return self._from_attempt(rng, image, instances, 0, semantic)

    def batch(self, rngs: list, images: list[np.ndarray], instances: list[Instances], mover=None,
              semantics: list | None = None) -> list[Drawn]:
        """Samples through the ops, each with its own generator. ``mover`` (an
        ``augforge.augment.dense_dali.DaliMover``) moves every sample's first draw in one DALI run; a draw the
        policy rejects is drawn again on the CPU path. Each result is what calling this on the same generator
        gives, its pixels and masks from DALI's kernels."""
        semantics = semantics or [None] * len(images)
        if mover is None:
            return [self(rng, image, inst, sem) for rng, image, inst, sem in zip(rngs, images, instances, semantics)]
        if mover.fill != self._fill():
            raise AugforgeError(f"the DALI mover fills borders with {mover.fill}, the ops with {self._fill()}: "
                                "make it with DenseAugment.dali_mover")
        draws = [self.geometry(rng, image.shape[1], image.shape[0], inst)
                 for rng, image, inst in zip(rngs, images, instances)]
        parts = mover.move(images, instances, [m for m, _ in draws], [size for _, size in draws], semantics)
        out = []
        for rng, image, inst, sem, (matrix, size), part in zip(rngs, images, instances, semantics, draws, parts):
            moved = apply(image, inst, matrix, size, self.policy, list(self.flip_pairs), fill=self._fill(),
                          parts=part)
            moved = moved if moved.rejected else self._pixels(rng, moved)
            out.append(Drawn(moved, 0) if not moved.rejected else self._from_attempt(rng, image, inst, 1, sem))
        return out

    def dali_mover(self, batch_size: int, device: str = "cpu", threads: int = 1):
        """An ``augforge.augment.dense_dali.DaliMover`` for ``batch`` (``device``: 'cpu' or 'gpu'), with the
        ops' border fill."""
        from augforge.augment.dense_dali import DaliMover  # DALI: loaded where a DALI backend is asked for

        return DaliMover(batch_size, device, self._fill(), threads)

    def _from_attempt(self, rng: np.random.Generator, image: np.ndarray, instances: Instances, first: int,
                      semantic: np.ndarray | None = None) -> Drawn:
        """Draws from attempt ``first`` on until the policy accepts one; none: the input, unchanged."""
        height, width = image.shape[:2]
        for attempt in range(first, self.attempts):
            matrix, size = self.geometry(rng, width, height, instances)
            moved = apply(image, instances, matrix, size, self.policy, list(self.flip_pairs), fill=self._fill(),
                          semantic=semantic)
            if not moved.rejected:
                moved = self._pixels(rng, moved)
                if not moved.rejected:
                    return Drawn(moved, attempt)
        kept = FramePolicy(clip=True, on_lost="keep")
        return Drawn(apply(image, instances, np.eye(3), (width, height), kept, semantic=semantic), self.attempts)

    def _fill(self) -> float:
        """The border value of the geometry (the first geometry op with a ``fill``)."""
        return next((float(op.params["fill"]) for op in self.ops if op.name in GEOMETRY_OPS and "fill" in op.params),
                    0.0)

    def _pixels(self, rng: np.random.Generator, moved: Moved) -> Moved:
        """The pixel and occluding ops, in order, on a moved sample."""
        import torch  # torch: heavy, loaded when pixels are augmented

        from augforge.augment.torch_ops import TORCH_OPS, erase_window  # torch: loaded when pixels are augmented

        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        pixels = torch.from_numpy(np.ascontiguousarray(moved.image)).permute(2, 0, 1)
        instances, visibility, lost = moved.instances, moved.visibility.copy(), moved.lost.copy()
        semantic = None if moved.semantic is None else moved.semantic.copy()
        alive = np.flatnonzero(~lost) if self.policy.on_lost == "drop_instance" else np.arange(len(lost))
        for op in self.ops:
            if op.name in GEOMETRY_OPS or not _coin(rng, op.p):
                continue
            if op.name in PIXEL_OPS:
                pixels = TORCH_OPS[op.name](pixels, op.params, gen)
                continue
            h, w = pixels.shape[-2:]
            rect = erase_rect(op, rng, w, h)
            pixels = erase_window(pixels, rect[1], rect[0], rect[3] - rect[1], rect[2] - rect[0], op.params["fill"])
            if semantic is not None:  # erased pixels show no class
                semantic[rect[1] : rect[3], rect[0] : rect[2]] = IGNORE
            instances, hidden = occlude(instances, rect, w, h)
            visibility[alive] *= 1.0 - hidden
            newly = (visibility[alive] < max(self.policy.min_visibility, 1e-12)) & ~lost[alive]
            if newly.any():
                if self.policy.on_lost == "reject_sample":
                    return Moved(None, None, True, visibility, lost, None)
                lost[alive[newly]] = True
                if self.policy.on_lost == "drop_instance":
                    instances = instances.select(~newly)
                    alive = alive[~newly]
        if pixels.dtype != torch.uint8 and not (self.ops and self.ops[-1].name == "normalize"):
            pixels = pixels.round().clamp(0, 255).to(torch.uint8)
        return Moved(pixels.permute(1, 2, 0).numpy(), instances, False, visibility, lost, semantic)


def _coin(rng: np.random.Generator, p: float) -> bool:
    """An op's coin: always heads at p = 1 (no draw spent), else one uniform draw."""
    return p >= 1.0 or float(rng.random()) < p


def _moved_boxes(instances: Instances, matrix: np.ndarray) -> Instances:
    """Instances with only their boxes, moved by ``matrix`` (corner extents): what an object-aware crop later in
    the list sees."""
    boxes = [polygon_box([transform_points(box_corners(box), matrix)]) for box in instances.boxes]
    return Instances(instances.classes, np.array(boxes).reshape(-1, 4))


def erase_rect(op, rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """An occluding op's rectangle (x0, y0, x1, y1), whole pixels clipped to the image: random erasing draws an
    area share and log-aspect (torchvision's recipe), cutout a square centred at a random point."""
    prm = op.params
    if op.name == "cutout":
        s = float(prm["size"])
        cx, cy = float(rng.uniform(0, 1)) * width, float(rng.uniform(0, 1)) * height
        x0, y0, x1, y1 = cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2
    else:
        side = math.sqrt(float(rng.uniform(*prm["scale"])) * width * height)
        root = math.exp(float(rng.uniform(math.log(prm["ratio"][0]), math.log(prm["ratio"][1]))) / 2)
        h, w = min(side * root, height), min(side / root, width)
        y0, x0 = float(rng.uniform(0, 1)) * (height - h), float(rng.uniform(0, 1)) * (width - w)
        x1, y1 = x0 + w, y0 + h
    return (max(round(x0), 0), max(round(y0), 0), min(round(x1), width), min(round(y1), height))


def occlude(instances: Instances, rect: tuple[int, int, int, int], width: int,
            height: int) -> tuple[Instances, np.ndarray]:
    """(instances with keypoints under ``rect`` hidden (v 2 -> 1), the share of each instance the rectangle
    hides): measured on its mask or polygons, else its box."""
    x0, y0, x1, y1 = rect
    hidden = np.zeros(len(instances))
    for i in range(len(instances)):
        mask = instance_mask(instances, i, height, width)
        if mask is not None:
            total = mask.sum()
            hidden[i] = mask[y0:y1, x0:x1].sum() / total if total else 0.0
        else:
            hidden[i] = coverage((x0, y0, x1, y1), instances.boxes[i : i + 1])[0]
    if instances.keypoints is not None and len(instances):
        points = instances.keypoints.copy()
        under = (points[..., 0] >= x0) & (points[..., 0] < x1) & (points[..., 1] >= y0) & (points[..., 1] < y1)
        points[..., 2] = np.where(under & (points[..., 2] == 2), 1, points[..., 2])
        instances = Instances(instances.classes, instances.boxes, instances.polygons, instances.masks, points,
                              instances.crowd, instances.origin)
    return instances, hidden
