"""The dense-target commands: ``export-data`` (a detection or segmentation dataset back to COCO, YOLO or VOC).

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
