"""The recipe's ``augment:`` section: how many variants each train row gets, and the ops that make them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from augforge.augment.copy_paste import ON_COVERED, CopyPasteSpec, PastePolicy
from augforge.augment.dense_ops import DenseAugment
from augforge.augment.image_ops import check_image_ops
from augforge.augment.mosaic import MosaicSpec
from augforge.augment.ops import OpSpec, check_op
from augforge.augment.target_geometry import ON_LOST, FramePolicy
from augforge.augment.text import Protect
from augforge.augment.text_ops import TEXT_ALIASES, TEXT_OPS
from augforge.balance.repeat_factor import parse_repeat_factor
from augforge.checks import Checker, show_value
from augforge.errors import AugforgeError

DEVICES = ("auto", "cpu", "gpu")
COLORS = ("rgb", "gray")
#: offline: augmented copies are written into the shards; online: the loader draws new ones every epoch
MODES = ("offline", "online")
AUGMENT_KEYS = ("copies", "mode", "seed", "keep_original", "device", "color", "image", "policy", "text", "protect",
                "min_words", "targets")
TARGET_KEYS = ("clip", "min_visibility", "min_area", "min_width", "min_height", "on_lost", "flip_pairs",
               "min_coverage", "attempts", "mosaic", "copy_paste", "sampler")
MOSAIC_KEYS = ("p", "size", "scale", "centre", "fill")
COPY_PASTE_KEYS = ("p", "max_instances", "classes", "scale", "max_occlusion", "on_covered", "attempts")


@dataclass(frozen=True)
class TargetSpec:
    """``augment.targets``: how geometry treats the boxes, masks and keypoints of a detection or segmentation set
    (the frame ``policy``: ``augforge.augment.target_geometry.FramePolicy``, whose fields the recipe names
    directly; keypoint ``flip_pairs``, ``min_coverage`` for object-aware crops, and the ``attempts`` at a draw
    the policy accepts)."""

    policy: FramePolicy = FramePolicy()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    min_coverage: float | None = None
    attempts: int = 10
    mosaic: MosaicSpec | None = None  # four samples tiled into one, with probability mosaic_p
    mosaic_p: float = 0.0
    copy_paste: CopyPasteSpec | None = None  # instances of other samples pasted (augforge.augment.copy_paste)
    repeat_threshold: float | None = None  # sampler: repeat_factor[:t], the stream's repeat-factor sampling

    def augmenter(self, ops):
        """The ``augforge.augment.dense_ops.DenseAugment`` of ``ops`` under this policy."""
        return DenseAugment(tuple(ops), self.policy, self.flip_pairs, self.min_coverage, self.attempts)


@dataclass(frozen=True)
class AugmentSpec:
    """How many augmented variants each train row gets, and the ops that make them."""

    copies: int = 0
    copies_per_class: dict = field(default_factory=dict)
    mode: str = "offline"
    seed: int | None = None  # the augmentation draws' own seed (None: the recipe's seed)
    keep_original: bool = True
    device: str = "auto"
    color: str = "rgb"
    image: tuple[OpSpec, ...] = ()
    text: tuple[OpSpec, ...] = ()
    protect: Protect = Protect()
    min_words: int = 1
    targets: TargetSpec = TargetSpec()

    def copies_for(self, class_name: str) -> int:
        """Augmented variants per row of ``class_name``."""
        return int(self.copies_per_class.get(class_name, self.copies))


def _copies(c: Checker, value) -> tuple[int, dict]:
    if isinstance(value, dict):
        per_class, default = {}, 0
        for key, n in value.items():
            count = int(c.number(n, f"augment.copies.{key}", 0, 1000, integer=True))
            if key == "default":
                default = count
            else:
                per_class[str(key)] = count
        return default, per_class
    return int(c.number(value, "augment.copies", 0, 1000, integer=True)), {}


def parse_augment(c: Checker, value) -> AugmentSpec:
    """The ``augment:`` mapping, checked: copies, mode, the image or the text ops and their options."""
    raw = c.mapping(value, "augment", AUGMENT_KEYS)
    copies, per_class = _copies(c, raw.get("copies", 0))
    policy = raw.get("policy")
    ops = _with_policy(check_image_ops(c, raw.get("image", []), "augment.image"),
                       () if policy is None else check_image_ops(c, policy, "augment.policy"))
    text_ops = _text_ops(c, raw.get("text", []))
    if ops and text_ops:
        c.fail("augment", "give image ops or text ops, not both")
    targets = _targets(c, raw.get("targets"))
    if (copies or per_class) and not ops and not text_ops and targets.mosaic is None \
            and targets.copy_paste is None:
        c.fail("augment.image", "copies are asked for but no ops are given (augment.image or augment.text)")
    mode = c.choice(raw.get("mode", "offline"), "augment.mode", MODES)
    if mode == "online" and text_ops:
        c.fail("augment.mode", "online augmentation streams image ops; text variants are built offline")
    if mode == "online" and (copies or per_class):
        c.fail("augment.copies", "online mode draws fresh augmentations every epoch instead of writing copies; "
                                 "remove copies, or set augment.mode: offline")
    protect = c.mapping(raw.get("protect"), "augment.protect", ("numbers", "names", "words", "patterns"))
    for i, pattern in enumerate(protect.get("patterns", []) or []):
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            c.fail(f"augment.protect.patterns[{i}]", f"not a regular expression ({exc})")
    return AugmentSpec(
        copies=copies, copies_per_class=per_class, mode=mode,
        seed=None if raw.get("seed") is None else int(c.number(raw["seed"], "augment.seed", 0, 2**63 - 1,
                                                                integer=True)),
        keep_original=c.flag(raw.get("keep_original", True), "augment.keep_original"),
        device=c.choice(raw.get("device", "auto"), "augment.device", DEVICES),
        color=c.choice(raw.get("color", "rgb"), "augment.color", COLORS),
        image=ops,
        text=text_ops,
        protect=Protect(
            numbers=c.flag(protect.get("numbers", True), "augment.protect.numbers"),
            names=c.flag(protect.get("names", False), "augment.protect.names"),
            words=c.strings(protect.get("words", []), "augment.protect.words"),
            patterns=c.strings(protect.get("patterns", []), "augment.protect.patterns"),
        ),
        min_words=int(c.number(raw.get("min_words", 1), "augment.min_words", 1, 1000, integer=True)),
        targets=targets,
    )


def _targets(c: Checker, value) -> TargetSpec:
    """``augment.targets``, checked."""
    raw = c.mapping(value, "augment.targets", TARGET_KEYS)
    where = "augment.targets."

    def share(key: str, default):
        return default if raw.get(key) is None else float(c.number(raw[key], where + key, 0.0, 1.0))

    def pixels(key: str) -> float:
        return float(c.number(raw.get(key, 0.0), where + key, 0.0, 1e9))

    pairs = raw.get("flip_pairs", []) or []
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        c.fail(where + "flip_pairs", f"expected a list of [left, right] keypoint indices, got {show_value(pairs)}")
    flip_pairs = tuple((int(c.number(a, where + "flip_pairs", 0, 10_000, integer=True)),
                        int(c.number(b, where + "flip_pairs", 0, 10_000, integer=True))) for a, b in pairs)
    policy = FramePolicy(clip=c.flag(raw.get("clip", True), where + "clip"),
                         min_visibility=share("min_visibility", 0.0), min_area=pixels("min_area"),
                         min_width=pixels("min_width"), min_height=pixels("min_height"),
                         on_lost=c.choice(raw.get("on_lost", "drop_instance"), where + "on_lost", ON_LOST))
    mosaic, mosaic_p = _mosaic(c, raw.get("mosaic"), policy)
    return TargetSpec(policy=policy, flip_pairs=flip_pairs, min_coverage=share("min_coverage", None),
                      mosaic=mosaic, mosaic_p=mosaic_p, copy_paste=_copy_paste(c, raw.get("copy_paste")),
                      repeat_threshold=_sampler(c, raw.get("sampler")),
                      attempts=int(c.number(raw.get("attempts", 10), where + "attempts", 1, 1000, integer=True)))


def _mosaic(c: Checker, value, policy: FramePolicy) -> tuple[MosaicSpec | None, float]:
    """``augment.targets.mosaic`` (p, size [h, w], scale, centre, fill), checked: (its spec, its probability)."""
    if value is None:
        return None, 0.0
    where = "augment.targets.mosaic"
    raw = c.mapping(value, where, MOSAIC_KEYS)
    if "size" not in raw:
        c.fail(where + ".size", "missing; a mosaic needs its output size [h, w]")
    h, w = c.size(raw["size"], where + ".size")
    spec = MosaicSpec(size=(int(w), int(h)),
                      scale=tuple(c.span(raw.get("scale", [0.5, 1.0]), where + ".scale", low=0.01, high=10.0)),
                      centre=tuple(c.span(raw.get("centre", [0.25, 0.75]), where + ".centre", low=0.05, high=0.95)),
                      fill=float(c.number(raw.get("fill", 114), where + ".fill", 0, 255)), policy=policy)
    return spec, float(c.number(raw.get("p", 1.0), where + ".p", 0.0, 1.0))


def _sampler(c: Checker, value) -> float | None:
    """``augment.targets.sampler``: ``repeat_factor[:t]`` (the stream draws repeat factors each epoch): its t."""
    if value is None:
        return None
    try:
        threshold = parse_repeat_factor(c.text(value, "augment.targets.sampler"))
    except AugforgeError as exc:
        c.fail("augment.targets.sampler", str(exc))
    if threshold is None:
        c.fail("augment.targets.sampler", f"{value!r}: the stream's sampler of a detection set is repeat_factor[:t]")
    return threshold


def _copy_paste(c: Checker, value) -> CopyPasteSpec | None:
    """``augment.targets.copy_paste`` (p, max_instances, classes, scale, max_occlusion, on_covered, attempts)."""
    if value is None:
        return None
    where = "augment.targets.copy_paste"
    raw = c.mapping(value, where, COPY_PASTE_KEYS)
    policy = PastePolicy(scale=tuple(c.span(raw.get("scale", [0.5, 1.5]), where + ".scale", low=0.01, high=10.0)),
                         max_occlusion=float(c.number(raw.get("max_occlusion", 0.5), where + ".max_occlusion", 0, 1)),
                         on_covered=c.choice(raw.get("on_covered", "drop_instance"), where + ".on_covered", ON_COVERED),
                         attempts=int(c.number(raw.get("attempts", 10), where + ".attempts", 1, 1000, integer=True)))
    return CopyPasteSpec(p=float(c.number(raw.get("p", 0.5), where + ".p", 0.0, 1.0)),
                         max_instances=int(c.number(raw.get("max_instances", 3), where + ".max_instances", 1, 100,
                                                    integer=True)),
                         classes=tuple(c.strings(raw.get("classes", []), where + ".classes")), policy=policy)


def _with_policy(ops: tuple, policy: tuple) -> tuple:
    """``augment.policy``'s op placed after the image ops, before a closing ``normalize``."""
    if ops and ops[-1].name == "normalize":
        return ops[:-1] + policy + ops[-1:]
    return ops + policy


def _text_ops(c: Checker, value) -> tuple:
    if not isinstance(value, list):
        c.fail("augment.text", f"expected a list of ops, got {show_value(value)}")
    return tuple(check_op(c, op, f"augment.text[{i}]", TEXT_OPS, TEXT_ALIASES) for i, op in enumerate(value))
