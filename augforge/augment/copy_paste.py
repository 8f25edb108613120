"""Copy-paste of instances (Ghiasi et al., CVPR 2021): an instance cut out of one image by its mask, scaled, and
pasted onto another, which updates the instances it covers.

A paste is planned from the targets alone (``plan_paste``: masks, not pixels), so what a balance step promises
(``report --strategy``) is decided before any image is read, and rendered later (``render_paste``) from the two
images. Placement: a scale drawn in ``PastePolicy.scale`` (the pasted instance must fit the recipient), a
position drawn uniformly where its box fits inside the recipient. The recipient's instances under the paste:

- each keeps what the paste leaves of its mask (its polygons become that mask, RLE), its box the mask's extent,
  its keypoints under the paste hidden (v 2 -> 1);
- an instance with only a box keeps it (the share hidden is measured on the box's pixels);
- one covered beyond ``max_occlusion`` (the share of its mask hidden; all of it, always) is, by ``on_covered``,
  dropped with its class, mask and keypoints (``drop_instance``), or the placement is refused and drawn again
  (``reject_paste``; after ``attempts`` the paste is given up and counted);
- the pasted instance's mask is its donor mask moved (nearest pixel), its box that mask's extent, its keypoints
  moved, and its ``origin`` names the donor: ``paste:<donor row id>#<donor instance origin>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.augment.target_geometry import scaling, transform_points, translation, warp_image
from augforge.datasets.targets import Instances, instance_mask, mask_box, rle_encode
from augforge.errors import AugforgeError, OptionError

ON_COVERED = ("drop_instance", "reject_paste")


@dataclass(frozen=True)
class PastePolicy:
    """How a paste is placed and what it may cover (see the module docstring)."""

    scale: tuple[float, float] = (0.5, 1.5)
    max_occlusion: float = 0.5
    on_covered: str = "drop_instance"
    attempts: int = 10

    def __post_init__(self) -> None:
        if self.on_covered not in ON_COVERED:
            raise OptionError("{on_covered} " + f"{self.on_covered!r}: expected one of {', '.join(ON_COVERED)}")
        if not 0.0 <= self.max_occlusion <= 1.0:
            raise OptionError("{max_occlusion} " + f"{self.max_occlusion}: expected a share in [0, 1]")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise OptionError("{scale} " + f"{list(self.scale)}: expected [low, high] with 0 < low <= high")


def pasteable(instances: Instances, i: int) -> bool:
    """Whether instance i can be pasted: not a crowd region, and cut out by a mask or polygons."""
    return not instances.crowd[i] and (bool(instances.polygons[i]) or instances.masks[i] is not None)


@dataclass
class Paste:
    """A planned paste: the donor instance's mask placed by ``matrix`` (donor -> recipient pixels) onto the
    recipient, and the recipient's instances after it (``instances``; None: the paste was given up)."""

    matrix: np.ndarray
    mask: np.ndarray  # the pasted pixels, recipient-sized
    instances: Instances | None
    dropped: int  # recipient instances covered beyond the policy and dropped
    refused: int  # placements refused (reject_paste) before this one


def plan_paste(rng: np.random.Generator, recipient: Instances, size: tuple[int, int], donor: Instances,
               index: int, donor_size: tuple[int, int], donor_id: str, policy: PastePolicy = PastePolicy()) -> Paste:
    """Place donor instance ``index`` (its image ``donor_size`` (w, h)) on a recipient of ``size`` (w, h) with
    ``recipient`` instances (see the module docstring). Needs the donor instance's mask or polygons."""
    width, height = size
    source = instance_mask(donor, index, donor_size[1], donor_size[0])
    if source is None or not source.any():
        raise OptionError(f"instance {donor.origin[index]!r} of {donor_id!r} has no mask or polygon to paste")
    x0, y0, x1, y1 = mask_box(source)
    masks = [instance_mask(recipient, i, height, width) for i in range(len(recipient))]
    refused = 0
    for _ in range(policy.attempts):
        zoom = float(rng.uniform(*policy.scale))
        zoom = min(zoom, width / (x1 - x0), height / (y1 - y0))  # the instance must fit the recipient
        w, h = (x1 - x0) * zoom, (y1 - y0) * zoom
        left, top = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
        matrix = translation(left, top) @ scaling(zoom, zoom) @ translation(-x0, -y0)
        pasted = warp_image(source.astype(np.uint8), matrix, size, nearest=True).astype(bool)
        if not pasted.any():
            refused += 1
            continue
        hidden = np.array([_hidden(m, box, pasted) for m, box in zip(masks, recipient.boxes)])
        covered = (hidden > policy.max_occlusion) | (hidden >= 1.0)  # nothing left of it: always covered
        if covered.any() and policy.on_covered == "reject_paste":
            refused += 1
            continue
        out = _after_paste(recipient, masks, pasted, covered, donor, index, matrix, donor_id)
        return Paste(matrix, pasted, out, int(covered.sum()), refused)
    return Paste(np.eye(3), np.zeros((height, width), bool), None, 0, refused)


def _hidden(mask: np.ndarray | None, box: np.ndarray, pasted: np.ndarray) -> float:
    """The share of an instance the pasted pixels hide: of its mask, or of its box's pixels without one."""
    if mask is None:
        x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        region = pasted[y0 : int(np.ceil(box[3])), x0 : int(np.ceil(box[2]))]
        return float(region.mean()) if region.size else 0.0
    return float((mask & pasted).sum() / max(mask.sum(), 1))


def _after_paste(recipient: Instances, masks: list, pasted: np.ndarray, covered: np.ndarray, donor: Instances,
                 index: int, matrix: np.ndarray, donor_id: str) -> Instances:
    """The recipient's instances after a paste: the covered ones dropped, the others cut by the pasted mask, the
    pasted instance appended."""
    keep = [i for i in range(len(recipient)) if not covered[i]]
    boxes, polygons, rle, points = [], [], [], None if recipient.keypoints is None else recipient.keypoints.copy()
    for i in keep:
        mask = masks[i]
        if mask is None or not (mask & pasted).any():  # untouched: as it was
            boxes.append(recipient.boxes[i])
            polygons.append(recipient.polygons[i])
            rle.append(recipient.masks[i])
            continue
        left = mask & ~pasted
        boxes.append(mask_box(left) if left.any() else np.zeros(4))
        polygons.append([])
        rle.append(rle_encode(left))
    if points is not None:
        xs = np.clip(points[..., 0].astype(int), 0, pasted.shape[1] - 1)
        ys = np.clip(points[..., 1].astype(int), 0, pasted.shape[0] - 1)
        points[..., 2] = np.where(pasted[ys, xs] & (points[..., 2] == 2), 1, points[..., 2])
        points = points[keep]
    kept = Instances(recipient.classes[keep], np.asarray(boxes).reshape(-1, 4), polygons, rle, points,
                     recipient.crowd[keep], [recipient.origin[i] for i in keep])
    donor_points = None
    if kept.keypoints is not None:
        k = kept.keypoints.shape[1]
        donor_points = np.zeros((1, k, 3)) if donor.keypoints is None or donor.keypoints.shape[1] != k else \
            donor.keypoints[index : index + 1].copy()
        donor_points[0, :, :2] = transform_points(donor_points[0, :, :2], matrix)
    new = Instances(donor.classes[index : index + 1], mask_box(pasted)[None], [[]], [rle_encode(pasted)],
                    donor_points, np.zeros(1, bool), [f"paste:{donor_id}#{donor.origin[index]}"])
    return Instances.concat([kept, new])


def render_paste(recipient_image: np.ndarray, donor_image: np.ndarray, paste: Paste) -> np.ndarray:
    """The recipient's pixels with the donor's pasted where ``paste.mask`` says (the donor moved by the same
    matrix, bilinear)."""
    height, width = recipient_image.shape[:2]
    moved = warp_image(donor_image, paste.matrix, (width, height))
    out = recipient_image.copy()
    out[paste.mask] = moved[paste.mask]
    return out


@dataclass(frozen=True)
class CopyPasteSpec:
    """Copy-paste as an augmentation op: with probability ``p`` a sample gets up to ``max_instances`` instances
    of other samples pasted (of the ``classes`` named, all when empty), placed by ``policy``."""

    p: float = 0.5
    max_instances: int = 3
    classes: tuple[str, ...] = ()
    policy: PastePolicy = PastePolicy()

    def wanted(self, class_names: list[str]) -> set[int]:
        """The indices of the classes pasted (every class when none is named); a name that is no class is one
        line naming it."""
        unknown = sorted(set(self.classes) - set(class_names))
        if unknown:
            raise AugforgeError(f"augment.targets.copy_paste.classes: no class {unknown[0]!r}; classes: "
                                f"{', '.join(class_names)}")
        return {class_names.index(name) for name in self.classes} or set(range(len(class_names)))


def paste_from(rng: np.random.Generator, image: np.ndarray, instances: Instances, donors: list, spec: CopyPasteSpec,
               class_names: list[str], semantic: np.ndarray | None = None):
    """``image`` and ``instances`` (and ``semantic``: the pasted pixels take the pasted class) with up to
    ``spec.max_instances`` instances of the ``donors`` ((image, instances, row id) each) pasted, in turn, each on
    what the previous left. (image, instances, semantic, pastes made)."""
    wanted = spec.wanted(class_names)
    pool = [(d, i) for d, (_, inst, _) in enumerate(donors) for i in range(len(inst))
            if pasteable(inst, i) and int(inst.classes[i]) in wanted]
    height, width = image.shape[:2]
    made = 0
    for _ in range(min(spec.max_instances, len(pool))):
        d, i = pool[int(rng.integers(len(pool)))]
        donor_image, donor, donor_id = donors[d]
        paste = plan_paste(rng, instances, (width, height), donor, i, (donor_image.shape[1], donor_image.shape[0]),
                           donor_id, spec.policy)
        if paste.instances is None:
            continue
        image, instances, made = render_paste(image, donor_image, paste), paste.instances, made + 1
        if semantic is not None:
            semantic = semantic.copy()
            semantic[paste.mask] = int(donor.classes[i])
    return image, instances, semantic, made
