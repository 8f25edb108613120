"""The dense-target commands: ``export-data`` (a detection or segmentation dataset back to COCO, YOLO or VOC) and
``preview-data`` (its images with their targets drawn, and augmented variants).

Each handler imports its job when it runs (the CLI's lazy dispatch: `augforge --help` loads none of them)."""

from __future__ import annotations

import argparse
import json


def cmd_export_data(args: argparse.Namespace) -> int:
    """Write a dense dataset directory's images and targets as COCO, YOLO or VOC."""
    from augforge.datasets.formats.export import export_dense

    result = export_dense(args.dataset, args.out, args.format, args.split)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {result['images']:,} images and {result['instances']:,} instances as {result['format']} to "
          f"{result['out']}")
    lost = {k: v for k, v in result["not_written"].items() if v}
    if lost:
        print(f"{result['format']} cannot hold: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in lost.items())
              + " (written as boxes, or left out)")
    return 0


def add_export_data(sub) -> None:
    """`augforge export-data`'s parser."""
    p = sub.add_parser("export-data", help="write a detection or segmentation dataset as COCO, YOLO or VOC",
                       description="Write the images and targets of a dataset directory ingested from COCO, VOC, "
                                   "YOLO or LabelMe (or built from one) in the format a trainer reads: COCO JSON "
                                   "(detectron2, mmdet, torchvision references), a YOLO folder (ultralytics) or "
                                   "VOC XML. Boxes, polygons, masks and keypoints are written where the format "
                                   "holds them; what it cannot hold is counted.")
    p.add_argument("dataset", help="dataset directory with target columns")
    p.add_argument("out", help="a new (or empty) folder to write")
    p.add_argument("--format", required=True, choices=["coco", "yolo", "voc"])
    p.add_argument("--split", default="all", help="train, val, test or all (default)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_export_data)


def cmd_preview_data(args: argparse.Namespace) -> int:
    """Write a grid of a dense set's images with their targets drawn, next to RandomGeometry variants."""
    from augforge.augment.target_geometry import FramePolicy
    from augforge.augment.target_ops import RandomGeometry
    from augforge.datasets.sources import open_source
    from augforge.pipelines.preview_dense import write_preview_dense

    geometry = RandomGeometry(degrees=args.degrees, hflip=args.hflip,
                              crop_scale=tuple(args.crop_scale) if args.crop_scale else None,
                              policy=FramePolicy(min_visibility=args.min_visibility))
    result = write_preview_dense(open_source(args.source), args.out, n=args.n, variants=args.variants,
                                 geometry=geometry, seed=args.seed)
    width, height = result.image.size
    print(f"wrote {args.out}: {len(result.ids)} images x {args.variants} variants with their targets drawn "
          f"({width}x{height} px)")
    return 0


def add_preview_data(sub) -> None:
    """`augforge preview-data`'s parser."""
    p = sub.add_parser("preview-data", help="draw a detection or segmentation set's boxes, masks and keypoints",
                       description="Render the first N images of a COCO file, a VOC, YOLO or LabelMe folder, or a "
                                   "dataset directory ingested from one, with their instances drawn (masks tinted, "
                                   "polygons, boxes, class names, keypoints), each next to VARIANTS random "
                                   "geometric variants whose targets moved with the pixels, as a PNG.")
    p.add_argument("source", help="a COCO .json, a VOC/YOLO/LabelMe folder, or a dense dataset directory")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--n", type=int, default=6, help="images (default 6)")
    p.add_argument("--variants", type=int, default=3, help="random variants per image (default 3; 0: none)")
    p.add_argument("--degrees", type=float, default=15.0, help="rotation drawn in [-D, D] (default 15)")
    p.add_argument("--hflip", type=float, default=0.5, help="probability of a horizontal flip (default 0.5)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=[0.5, 1.0], metavar=("LOW", "HIGH"),
                   help="random resized crop's area share (default 0.5 1.0)")
    p.add_argument("--min-visibility", type=float, default=0.0,
                   help="drop an instance with less than this share of it left in the frame (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_preview_data)
