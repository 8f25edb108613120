"""Instance-level rebalancing on long-tailed composed scenes: counts per class after each strategy, and the time
per 1,000 images of copy-paste and mosaic against a plain reference written the way a user would.

1. **Counts.** 400 composed scenes (benchmarks/composed_scenes.py: real photo crops, star-shaped objects with
   exact masks), 3 objects each, classes drawn 50 : 7 : 0.72 (1,059 : 120 : 21 instances: a 50:1 imbalance).
   Instances per class
   before and after repeat-factor sampling (t = 0.1 and 0.3) and copy-paste (N = the middle class's count and
   the largest's), as ``report --strategy`` projects them (the build writes the same, tests/test_copy_paste.py);
   for copy-paste also the pastes given up and the recipient instances dropped by the occlusion policy. Both
   sides of the speed runs are warmed up first (torch's import is not the work).
2. **Copy-paste speed.** 1,000 pastes of a random instance onto a random image: augforge (``plan_paste`` +
   ``render_paste``: mask warp, occlusion of every instance, boxes, provenance) against a reference in plain
   PIL + numpy (the donor cut by its mask and resized with PIL, pasted with ``Image.paste``, each covered
   instance's mask cut and its box recomputed with ``np.nonzero``), on the same pairs and scales.
3. **Mosaic speed.** 1,000 mosaics of 4 images to 256x256: augforge's ``mosaic`` (one transform per quadrant,
   polygons clipped, boxes from them, the frame policy) against a reference (PIL resize and paste, boxes by their
   corners, clipped with numpy).

    python benchmarks/instance_balance.py [--images 400] [--runs 1000] [--out build/instance-balance.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import composed_scenes  # noqa: E402

from augforge.augment.copy_paste import PastePolicy, plan_paste, render_paste  # noqa: E402
from augforge.augment.mosaic import MosaicSpec, mosaic  # noqa: E402
from augforge.balance.copy_paste import paste_counts, plan_copy_paste  # noqa: E402
from augforge.balance.repeat_factor import instance_counts, repeat_resample  # noqa: E402
from augforge.datasets.targets import instance_mask  # noqa: E402

WEIGHTS = [50, 7, 0.72]  # with seed 11: 1,059 : 120 : 21 instances, a 50:1 imbalance


def counts(images: int) -> dict:
    """Instances per class after each strategy on a 50:1 long tail."""
    _, dense = composed_scenes.scenes(images, seed=11, objects=3, class_weights=WEIGHTS, with_keypoints=False)
    rows = [t.instances for t in dense.images]
    sizes = [(t.width, t.height) for t in dense.images]
    ids = [t.file for t in dense.images]
    names = list(composed_scenes.CLASSES)
    y = np.zeros(len(rows), dtype=np.int64)
    out = {}
    for t in (0.1, 0.3):
        result = repeat_resample(rows, y, len(names), t, seed=0)
        out[f"repeat_factor:{t:g}"] = instance_counts(rows, result.origin, names, t)
    before = out["repeat_factor:0.1"]["per_class"]
    for target in sorted({before[names[1]]["before"], before[names[0]]["before"]}):
        plan = plan_copy_paste(rows, sizes, ids, names, target, seed=0)
        out[f"copy_paste:{target}"] = paste_counts(rows, plan, names, target)
    for name, section in out.items():
        print(json.dumps({"strategy": name, "images": section["images_after"],
                          **{c: f"{v['before']} -> {v['after']}" for c, v in section["per_class"].items()},
                          **{k: section[k] for k in ("pastes", "pastes_given_up", "instances_dropped_by_occlusion")
                             if k in section}}), flush=True)
    return out


def reference_paste(image, instances, donor_image, donor, index, zoom, left, top):
    """A paste the way a user writes it with PIL and numpy."""
    height, width = image.shape[:2]
    mask = instance_mask(donor, index, donor_image.shape[0], donor_image.shape[1])
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    size = (max(1, int(round((x1 - x0) * zoom))), max(1, int(round((y1 - y0) * zoom))))
    piece = Image.fromarray(donor_image[y0:y1, x0:x1]).resize(size, Image.BILINEAR)
    cut = Image.fromarray((mask[y0:y1, x0:x1] * 255).astype(np.uint8)).resize(size, Image.NEAREST)
    canvas = Image.fromarray(image)
    canvas.paste(piece, (int(left), int(top)), cut)
    pasted = np.zeros((height, width), bool)
    region = np.asarray(cut) > 0
    h = min(region.shape[0], height - int(top))
    w = min(region.shape[1], width - int(left))
    pasted[int(top) : int(top) + h, int(left) : int(left) + w] = region[:h, :w]
    boxes = []
    for i in range(len(instances)):
        left_mask = instance_mask(instances, i, height, width) & ~pasted
        ys, xs = np.nonzero(left_mask)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None)
    return np.asarray(canvas), boxes


def paste_speed(runs: int) -> dict:
    """Seconds per 1,000 pastes, augforge and the reference, on the same pairs."""
    rng = np.random.default_rng(3)
    scenes = [composed_scenes.scene(rng, objects=4, min_radius=8.0, with_keypoints=False) for _ in range(64)]
    pairs = [(int(rng.integers(64)), int(rng.integers(64)), int(rng.integers(4))) for _ in range(runs)]
    policy = PastePolicy(scale=(0.8, 1.2), max_occlusion=0.7)
    for a, b, i in pairs[:5]:  # warm-up, both sides (torch's import and first kernels are not the work)
        paste = plan_paste(np.random.default_rng(0), scenes[a][1], (96, 64), scenes[b][1], i, (96, 64), "d", policy)
        reference_paste(scenes[a][0], scenes[a][1], scenes[b][0], scenes[b][1], i, 1.0, 0, 0)
    started = time.perf_counter()
    given_up = dropped = 0
    draws = []
    for n, (a, b, i) in enumerate(pairs):
        paste = plan_paste(np.random.default_rng(n), scenes[a][1], (96, 64), scenes[b][1], i, (96, 64), "d", policy)
        draws.append(paste.matrix)
        if paste.instances is None:
            given_up += 1
            continue
        dropped += paste.dropped
        render_paste(scenes[a][0], scenes[b][0], paste)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    for (a, b, i), matrix in zip(pairs, draws):
        reference_paste(scenes[a][0], scenes[a][1], scenes[b][0], scenes[b][1], i, matrix[0, 0],
                        max(matrix[0, 2], 0), max(matrix[1, 2], 0))
    theirs = time.perf_counter() - started
    result = {"pastes": runs, "augforge_s_per_1000": round(ours / runs * 1000, 2),
              "reference_s_per_1000": round(theirs / runs * 1000, 2), "ratio": round(theirs / ours, 2),
              "given_up_share": round(given_up / runs, 4), "dropped_per_paste": round(dropped / runs, 4)}
    print(json.dumps(result), flush=True)
    return result


def reference_mosaic(images, instances, size, cx, cy):
    """A mosaic the way a user writes it: PIL resize and paste, boxes by their corners, clipped."""
    width, height = size
    canvas = Image.new("RGB", size, (114, 114, 114))
    boxes = []
    for k, (image, inst) in enumerate(zip(images, instances)):
        zoom = min(width / image.shape[1], height / image.shape[0]) * 0.75
        w, h = int(image.shape[1] * zoom), int(image.shape[0] * zoom)
        left = cx - w if k in (0, 2) else cx
        top = cy - h if k in (0, 1) else cy
        canvas.paste(Image.fromarray(image).resize((w, h), Image.BILINEAR), (left, top))
        moved = inst.boxes * zoom + [left, top, left, top]
        qx0, qy0 = (0, 0) if k == 0 else (cx, 0) if k == 1 else (0, cy) if k == 2 else (cx, cy)
        qx1, qy1 = (cx, cy) if k == 0 else (width, cy) if k == 1 else (cx, height) if k == 2 else (width, height)
        clipped = np.column_stack([np.clip(moved[:, 0], qx0, qx1), np.clip(moved[:, 1], qy0, qy1),
                                   np.clip(moved[:, 2], qx0, qx1), np.clip(moved[:, 3], qy0, qy1)])
        boxes.append(clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])])
    return np.asarray(canvas), np.concatenate(boxes)


def mosaic_speed(runs: int) -> dict:
    """Seconds per 1,000 mosaics of 4 images to 256x256, augforge and the reference."""
    rng = np.random.default_rng(5)
    scenes = [composed_scenes.scene(rng, objects=4, min_radius=8.0, with_keypoints=False) for _ in range(64)]
    picks = [rng.integers(64, size=4).tolist() for _ in range(runs)]
    spec = MosaicSpec(size=(256, 256), scale=(0.75, 0.75))
    for pick in picks[:5]:  # warm-up, both sides
        mosaic(np.random.default_rng(0), [scenes[j][0] for j in pick], [scenes[j][1] for j in pick], list("abcd"), spec)
        reference_mosaic([scenes[j][0] for j in pick], [scenes[j][1] for j in pick], (256, 256), 128, 128)
    started = time.perf_counter()
    for n, pick in enumerate(picks):
        mosaic(np.random.default_rng(n), [scenes[j][0] for j in pick], [scenes[j][1] for j in pick], list("abcd"),
               spec)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    for pick in picks:
        reference_mosaic([scenes[j][0] for j in pick], [scenes[j][1] for j in pick], (256, 256), 128, 128)
    theirs = time.perf_counter() - started
    result = {"mosaics": runs, "augforge_s_per_1000": round(ours / runs * 1000, 2),
              "reference_s_per_1000": round(theirs / runs * 1000, 2), "ratio": round(theirs / ours, 2)}
    print(json.dumps(result), flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "build" / "instance-balance.json"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    result = {"counts": counts(args.images), "copy_paste": paste_speed(args.runs), "mosaic": mosaic_speed(args.runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
