"""Geometry with dense targets: box tightness after rotation, and throughput against Albumentations.

1. **Tightness.** Composed scenes (benchmarks/composed_scenes.py: irregular star-shaped polygons) rotated by
   15, 30 and 45 degrees. The exact box is the extent of the rotated polygon clipped to the frame. Compared
   with it (IoU, mean over instances): augforge's box from the polygon, augforge's box from an RLE mask of it,
   the corner method (the box's four corners rotated; augforge on box-only instances), and Albumentations'
   ``Rotate`` with ``BboxParams`` (its default box rotation) on the same images.
2. **Throughput.** Images with about 10 instances and masks, from a dataset ingested from COCO: horizontal flip
   (p 0.5) + random resized crop to 128x128 + rotation up to 30 degrees + colour jitter (brightness, contrast,
   saturation 0.8-1.2), in a DataLoader with the same number of workers: augforge's ``DenseDataset`` with the
   recipe ops (``DenseAugment``) against Albumentations (``Compose`` with ``BboxParams(format="pascal_voc")``
   and masks) reading the same shards. Rows/s and the ratio, in one run. ``--device gpu`` adds augforge's
   loader on the GPU (DALI moves each batch: ``augforge.augment.dense_dali``).

    python benchmarks/dense_geometry.py [--images 400] [--workers 2] [--device cpu|gpu]
                                        [--out build/dense-geometry.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import composed_scenes  # noqa: E402

from augforge.augment.target_geometry import FramePolicy, apply, clip_polygon, rotation, transform_points  # noqa: E402
from augforge.datasets.reader import Dataset  # noqa: E402
from augforge.datasets.targets import (TARGET_COLUMNS, Instances, from_columns, instance_mask,  # noqa: E402
                                       polygon_box, polygon_mask, rle_encode)
from augforge.pipelines.dense_rows import decode_rgb  # noqa: E402
from augforge.pipelines.dense_stream import (DenseDataset, collate_detection, detection_target,  # noqa: E402
                                             image_tensor)


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def tightness(scenes: int = 40) -> list[dict]:
    """Mean IoU with the exact rotated-polygon box, per angle and method."""
    import albumentations as A

    w, h = 192, 128
    rng = np.random.default_rng(0)
    out = []
    samples = [composed_scenes.scene(rng, w, h, objects=4, with_keypoints=False, min_radius=12) for _ in range(scenes)]
    for degrees in (15, 30, 45):
        matrix = rotation(degrees, w, h)
        scores = {"augforge (polygon)": [], "augforge (RLE mask)": [], "corners (box only)": [],
                  "albumentations Rotate": []}
        rotate = A.Compose([A.Rotate(limit=(degrees, degrees), border_mode=0, p=1.0)],
                           bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.0,
                                                    clip=True))
        for image, inst in samples:
            moved = apply(image, inst, matrix, (w, h), FramePolicy(on_lost="keep"))
            masks = Instances(inst.classes, inst.boxes, [], [rle_encode(polygon_mask(r, h, w)) for r in inst.polygons])
            from_masks = apply(image, masks, matrix, (w, h), FramePolicy(on_lost="keep")).instances
            corners = apply(image, Instances(inst.classes, inst.boxes), matrix, (w, h),
                            FramePolicy(on_lost="keep")).instances
            alb = rotate(image=image, bboxes=inst.boxes.tolist(), labels=list(range(len(inst))))
            alb_boxes = dict(zip(alb["labels"], alb["bboxes"]))
            # its turn, as a matrix: whichever direction's warp matches the image it returned
            turn = min((rotation(sign * degrees, w, h) for sign in (1, -1)), key=lambda m: np.abs(
                apply(image, Instances.empty(), m, (w, h)).image.astype(float) - alb["image"]).mean())
            for i in range(len(inst)):
                clipped = [c for c in (clip_polygon(transform_points(r, matrix), w, h) for r in inst.polygons[i])
                           if len(c) >= 3]
                if not clipped:
                    continue
                exact = polygon_box([c.reshape(-1) for c in clipped])
                scores["augforge (polygon)"].append(_iou(moved.instances.boxes[i], exact))
                scores["augforge (RLE mask)"].append(_iou(from_masks.boxes[i], exact))
                scores["corners (box only)"].append(_iou(corners.boxes[i], exact))
                if i in alb_boxes:
                    other = [c for c in (clip_polygon(transform_points(r, turn), w, h) for r in inst.polygons[i])
                             if len(c) >= 3]
                    if other:
                        scores["albumentations Rotate"].append(_iou(alb_boxes[i], polygon_box(
                            [c.reshape(-1) for c in other])))
        out.append({"degrees": degrees, **{k: round(float(np.mean(v)), 3) for k, v in scores.items()},
                    "instances": len(scores["augforge (polygon)"])})
        print(json.dumps(out[-1]), flush=True)
    return out


class AlbumentationsRows:
    """The same shards as DenseDataset, augmented by Albumentations with boxes and masks."""

    def __init__(self, path, transform) -> None:
        self.data, self.transform = Dataset(path, "all"), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        import torch

        row = self.data.take([int(index)], ["image", *TARGET_COLUMNS])
        image = decode_rgb(row.column("image")[0].as_py())
        inst = from_columns(row)[0]
        h, w = image.shape[:2]
        masks = [instance_mask(inst, i, h, w).astype(np.uint8) for i in range(len(inst))]
        out = self.transform(image=image, masks=masks, bboxes=inst.boxes.tolist(), labels=inst.classes.tolist())
        kept = Instances(np.asarray(out["labels"], np.int64), np.asarray(out["bboxes"], np.float64).reshape(-1, 4))
        target = detection_target(kept, 128, 128)
        # its masks as the same uint8 tensor (Albumentations does not drop the masks of the boxes it drops)
        target["masks"] = torch.as_tensor(np.stack(out["masks"]) if out["masks"] else np.zeros((0, 128, 128)),
                                          dtype=torch.uint8)
        return image_tensor(out["image"]), target


OPS = [{"op": "hflip", "p": 0.5}, {"op": "random_resized_crop", "size": [128, 128], "scale": [0.3, 1.0]},
       {"op": "rotate", "degrees": 30},
       {"op": "color", "brightness": [0.8, 1.2], "contrast": [0.8, 1.2], "saturation": [0.8, 1.2]}]


def throughput(images: int, workers: int, tmp: Path, device: str = "cpu") -> dict:
    """Rows/s of augforge and Albumentations through a DataLoader, flip + random resized crop + rotate +
    colour; on ``device`` gpu also augforge's loader with DALI on the GPU."""
    import albumentations as A
    import torch

    from augforge.augment.dense_ops import DenseAugment
    from augforge.pipelines.dense_loader import open_dense_loader
    from augforge.pipelines.loader_ops import parse_ops

    composed_scenes.write_coco_set(tmp, images, seed=5, width=256, height=192, objects=10, with_keypoints=False)
    subprocess.run([sys.executable, "-m", "augforge", "ingest", str(tmp / "annotations.json"), str(tmp / "data"),
                    "--quiet"], check=True)
    ours = DenseDataset(tmp / "data", "all", masks=True, augment=DenseAugment(parse_ops(OPS, "ops")))
    theirs = AlbumentationsRows(tmp / "data", A.Compose(
        [A.HorizontalFlip(p=0.5), A.RandomResizedCrop(size=(128, 128), scale=(0.3, 1.0), p=1.0),
         A.Rotate(limit=30, border_mode=0, p=1.0),
         A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=1.0)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"])))
    result = {"images": images, "instances_per_image": 10, "workers": workers}
    if device == "gpu":  # the batch path: DALI warps each batch's pixels and masks on the GPU
        loader = open_dense_loader(tmp / "data", 64, split="all", ops=OPS, augment=True, masks=True, device="cuda")
        list(loader)  # warm-up: DALI's pipeline and CUDA context
        started = time.perf_counter()
        seen = sum(len(images) for images, _ in loader)
        torch.cuda.synchronize()
        result["augforge_gpu"] = round(seen / (time.perf_counter() - started), 1)
    for name, rows in (("augforge", ours), ("albumentations", theirs)):
        loader = torch.utils.data.DataLoader(rows, batch_size=16, num_workers=workers, collate_fn=collate_detection)
        started = time.perf_counter()
        seen = sum(len(batch[0]) for batch in loader)
        result[name] = round(seen / (time.perf_counter() - started), 1)
    result["ratio"] = round(result["augforge"] / result["albumentations"], 2)
    print(json.dumps(result), flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line (``make gpu-check``'s dry run parses its step with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--no-tightness", action="store_true", help="throughput only (the GPU check's step)")
    parser.add_argument("--out", default=str(ROOT / "build" / "dense-geometry.json"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"tightness": None if args.no_tightness else tightness(),
                  "throughput": throughput(args.images, args.workers, Path(tmp), args.device)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
