"""Streaming from shards, in one process on the same shards:

1. online augmentation: ``augforge.pipelines.stream`` (DALI) vs a torch DataLoader running
   Albumentations over the same shards (``--workers`` worker processes), images/s and the ratio.
   The work is that of benchmarks/image_augment.py: JPEG decode -> random resized crop 224 -> flip ->
   colour jitter -> normalize, float32 NCHW batches of 64.
2. reading pre-decoded uint8 shards (32x32x3, raw) into batches vs reading the same shard bytes raw
   from the page cache (a plain file read after a warm-up read), as a share of that bandwidth.

    pip install '.[bench]'
    python benchmarks/stream.py [--images 512] [--raw-rows 200000] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).parent))
from image_augment import RECIPE, AlbumentationsDataset, make_jpegs  # noqa: E402

from augforge.datasets import open_dataset  # noqa: E402
from augforge.datasets.ingest import write_dataset  # noqa: E402
from augforge.datasets.schema import dataset_schema  # noqa: E402
from augforge.pipelines.stream import open_loader  # noqa: E402

BATCH = 64


def write_images(out: Path, payloads: list[bytes], shape=None) -> None:
    """A one-class dataset directory of the given image payloads (raw pixels when ``shape`` is given)."""
    n = len(payloads)

    def batches(skip):
        for start in range(skip, n, 8192):
            stop = min(start + 8192, n)
            ids = [f"r{i}" for i in range(start, stop)]
            yield pa.record_batch({"id": ids, "label": pa.array(np.zeros(stop - start, np.int64)),
                                   "image": pa.array(payloads[start:stop], pa.binary()), "source_id": ids,
                                   "synthetic": pa.array(np.zeros(stop - start, bool)),
                                   "aug": pa.nulls(stop - start, pa.string()),
                                   "split": pa.array(["train"] * (stop - start))})

    meta = {"payload_info": {"encoding": "raw", "height": shape[0], "width": shape[1], "channels": shape[2]}
            if shape else {"encoding": "jpeg"}}
    write_dataset(out, dataset_schema("image"), ["only"], parts={"n": n, "raw": bool(shape)}, meta=meta,
                  total_rows=n, batches=batches)


class ShardAlbumentations(AlbumentationsDataset):
    """The peer over the shards: each worker reads its rows from the memory-mapped dataset directory."""

    def __init__(self, root: Path) -> None:
        super().__init__([])
        self.root, self.ds = root, None
        self.n = len(open_dataset(root))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.ds is None:
            self.ds = open_dataset(self.root, verify=False)
        self.jpegs = {i: self.ds[i]["image"]}
        return super().__getitem__(i)


def online(root: Path, epochs: int, workers: int, device: str, reader_workers: int = 0) -> tuple[float, float, float]:
    """(augforge img/s, peer img/s, augforge wait fraction)."""
    loader = open_loader(root, BATCH, ops=RECIPE, device=device, threads=workers, reader_workers=reader_workers)
    for _ in loader:  # warm up: one epoch
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for x, _ in loader:
            seen += len(x)
    ours = seen / (time.perf_counter() - start)
    wait = loader.stats()["wait_fraction"]
    import cv2

    cv2.setNumThreads(1)
    peer_loader = torch.utils.data.DataLoader(ShardAlbumentations(root), batch_size=BATCH, shuffle=True,
                                              num_workers=workers, persistent_workers=True, prefetch_factor=4)
    for _ in peer_loader:
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for x in peer_loader:
            seen += len(x)
    return ours, seen / (time.perf_counter() - start), wait


def raw_read(root: Path, batch: int, repeats: int = 3) -> tuple[float, float, float]:
    """(augforge MB/s into uint8 NCHW batches in order, shuffled; raw page-cache MB/s of the same files).

    Each figure is the median of ``repeats`` epochs (or full reads): this VM's page cache is sometimes
    reclaimed under a run, and a single epoch can be 3x slow on either side."""
    shards = sorted((root / "shards").glob("*.arrow"))
    for path in shards:  # warm the page cache
        path.read_bytes()
    buffer = bytearray(16 << 20)  # read into one reused buffer: the page cache's copy bandwidth
    raws = []
    for _ in range(repeats):
        start, total = time.perf_counter(), 0
        for path in shards:
            with open(path, "rb", buffering=0) as fh:
                while got := fh.readinto(buffer):
                    total += got
        raws.append(total / (time.perf_counter() - start) / 1e6)
    rates = []
    for shuffle in (False, True):
        loader = open_loader(root, batch, shuffle=shuffle, verify=False)
        for _ in loader:  # map the shards and warm up
            pass
        epochs = []
        for _ in range(repeats):
            start, pixels = time.perf_counter(), 0
            for x, _ in loader:
                pixels += x.numel()
            epochs.append(pixels / (time.perf_counter() - start) / 1e6)
        rates.append(float(np.median(epochs)))
    return rates[0], rates[1], float(np.median(raws))


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``make gpu-check`` parses it in its dry run)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--raw-rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reader-workers", type=int, default=0,
                        help="augforge reads through DALI's parallel external_source with this many processes "
                             "(0: one thread feeds DALI)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_root = Path(tmp) / "jpegs"
        write_images(jpeg_root, make_jpegs(args.images))
        ours, peer, wait = online(jpeg_root, args.epochs, args.workers, args.device, args.reader_workers)
        print(f"online augmentation ({args.workers} workers, {args.reader_workers} reader processes): "
              f"augforge {ours:,.0f} img/s (waiting "
              f"{wait:.0%} of the time), Albumentations + DataLoader {peer:,.0f} img/s, ratio {ours / peer:.2f}x")
        raw_root = Path(tmp) / "raw"
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, size=(args.raw_rows, 32, 32, 3), dtype=np.uint8)
        write_images(raw_root, [p.tobytes() for p in pixels], shape=(32, 32, 3))
        del pixels
        for batch in (256, 1024):
            in_order, shuffled, raw_mb = raw_read(raw_root, batch)
            print(f"raw uint8 32x32x3 shards ({args.raw_rows:,} rows), batches of {batch}: augforge "
                  f"{in_order:,.0f} MB/s in order, {shuffled:,.0f} MB/s shuffled; page-cache read {raw_mb:,.0f} "
                  f"MB/s; {in_order / raw_mb:.0%} / {shuffled / raw_mb:.0%} of raw bandwidth")


if __name__ == "__main__":
    main()
