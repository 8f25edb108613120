"""Shards from an S3 endpoint through augforge's cache against local disk and against MosaicML Streaming, on the
same rows, in one process.

The endpoint is moto's S3 server on 127.0.0.1 (tests/s3_server.py; no network here), so the store's own speed
is a single-threaded Python server's: what this measures is augforge's overhead around the transfers, and how
it compares with the peer's through the same server. Rows: RANDOM 64x64 crops of scikit-learn's two sample
photos, PNG-encoded (real photo texture, about 8 KB a row).

Measured, each a full pass over every row's image bytes (Dataset.iter_batches for augforge):

- writing: `augforge ingest` to a local directory, and to s3:// (staging + upload, the manifest last);
- reading: local disk (checksums verified on first read, and not), s3:// cold (an empty cache: downloads,
  each shard verified on arrival), s3:// warm (the shards in the cache), s3:// through a cache that holds a
  quarter of the shards (shard-block shuffle of 1 shard, a shuffled loader pass);
- the checksum verification alone (xxh3-128 over every shard);
- MosaicML Streaming (where it imports): MDSWriter on the same rows, uploaded to the same server;
  StreamingDataset cold and warm over the same rows. Streaming pins numpy, torch and torchvision releases that
  would replace this environment's: install it apart (pip install --no-deps --target DIR mosaicml-streaming
  brotli python-snappy zstd catalogue) and pass --mds-path DIR; its vision module imports torchvision, which
  has no CPU wheel here, so a stand-in module satisfies that import (nothing of it is used);
- the object-store client: whole-shard GETs through obstore (augforge's) and through s3fs where it imports
  (--s3fs-path DIR, installed apart for the same reason: its aiobotocore pins an older botocore).

    python benchmarks/object_store.py [--rows 12000] [--mds-path DIR] [--s3fs-path DIR]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3_server import S3Server, s3_workspace  # noqa: E402  (the tests' local S3 endpoint)


def make_folder(root: Path, rows: int, seed: int = 0) -> None:
    """``rows`` random 64x64 PNG crops of the sample photos in an image folder (class = photo)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for i in range(rows):
        p = i % len(photos)
        photo = photos[p]
        y, x = rng.integers(0, photo.shape[0] - 64), rng.integers(0, photo.shape[1] - 64)
        folder = root / f"photo{p}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[y : y + 64, x : x + 64]).save(folder / f"{i:06d}.png")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def read_all(location, **options) -> int:
    """Bytes of every row's image, one full pass (augforge's Dataset), each row's image as a Python bytes
    object, as a row-by-row reader (and MosaicML Streaming's samples) hands it over."""
    from augforge.datasets.reader import Dataset

    dataset = Dataset(location, "all", **options)
    return sum(len(value) for batch in dataset.iter_batches(["image"]) for value in batch.column(0).to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--mds-path", help="a directory where mosaicml-streaming was installed apart")
    parser.add_argument("--s3fs-path", help="a directory where s3fs was installed apart")
    args = parser.parse_args()

    from augforge.datasets.checksums import file_checksum
    from augforge.datasets.remote import CacheOptions
    from augforge.cli import main as cli
    from augforge.pipelines.stream import open_loader

    with s3_workspace("augforge-object-store-") as (server, work):
        make_folder(work / "photos", args.rows)
        bucket = server.bucket()
        url = f"s3://{bucket}/photos"
        results = []
        write_local, _ = timed(lambda: cli(["ingest", str(work / "photos"), str(work / "local"), "--shard-mb", "8",
                                            "-q"]))
        write_s3, _ = timed(lambda: cli(["ingest", str(work / "photos"), url, "--shard-mb", "8", "-q"]))
        shards = sorted((work / "local" / "shards").glob("*.arrow"))
        total = sum(p.stat().st_size for p in shards)
        print(f"{args.rows:,} rows, {len(shards)} shards, {total / 1e6:.1f} MB; moto's S3 server on 127.0.0.1")
        print(f"write: local {write_local:.2f} s, s3:// {write_s3:.2f} s ({write_s3 / write_local:.2f}x)")

        local_verified, nbytes = timed(lambda: read_all(work / "local"))
        local_plain, _ = timed(lambda: read_all(work / "local", verify=False))
        checksums, _ = timed(lambda: [file_checksum(p) for p in shards])
        cache = CacheOptions(cache_dir=str(work / "c1"))
        cold, _ = timed(lambda: read_all(url, cache=cache))
        warm, _ = timed(lambda: read_all(url, cache=cache))
        results += [("augforge, local disk, checksums verified", local_verified),
                    ("augforge, local disk, no verification", local_plain),
                    ("augforge, s3:// cold (download + verify on arrival)", cold),
                    ("augforge, s3:// warm (cache)", warm)]
        limit = 2 * max(p.stat().st_size for p in shards) + 1

        def bounded():
            loader = open_loader(url, 256, cache_dir=str(work / "c2"), cache_limit=limit, shuffle_block=1,
                                 predownload=1, ops=[])
            return sum(len(y) for _, y in loader)

        def bounded_local():
            return sum(len(y) for _, y in open_loader(work / "local", 256, shuffle_block=1, ops=[]))

        results += [("augforge loader, local disk, block shuffle, decoded", timed(bounded_local)[0]),
                    ("augforge loader, s3:// cache of 2 shards, block shuffle, decoded", timed(bounded)[0])]

        mds = mds_passes(args, work, server, bucket) if args.mds_path else []
        results += mds
        print(f"checksum verification alone: {checksums * 1000:.1f} ms for {total / 1e6:.1f} MB "
              f"({total / 1e9 / checksums:.1f} GB/s, from the page cache)")
        base = local_plain
        print("\n| reader | pass | rows/s | MB/s | vs local disk |\n| --- | --- | --- | --- | --- |")
        for name, seconds in results:
            print(f"| {name} | {seconds:.3f} s | {args.rows / seconds:,.0f} | {nbytes / 1e6 / seconds:.0f} | "
                  f"{seconds / base:.2f}x |")
        clients(args, server, bucket, shards)


def mds_passes(args, work: Path, server: S3Server, bucket: str) -> list[tuple[str, float]]:
    """MosaicML Streaming on the same rows: written as MDS, uploaded, read cold and warm."""
    sys.path.insert(0, args.mds_path)
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional"):  # streaming.vision imports these; nothing uses them here
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules.setdefault(name, module)
    sys.modules["torchvision.datasets"].VisionDataset = object
    sys.modules["torchvision.transforms.functional"].to_tensor = None
    os.environ["S3_ENDPOINT_URL"] = server.endpoint
    from streaming import MDSWriter, StreamingDataset

    from augforge.datasets.reader import Dataset

    rows = Dataset(work / "local", "all", verify=False)
    remote = f"s3://{bucket}/mds"
    with MDSWriter(out=(str(work / "mds-out"), remote), columns={"image": "bytes", "label": "int"},
                   size_limit="8mb") as writer:
        for batch in rows.iter_batches(["image", "label"]):
            for image, label in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                writer.write({"image": image, "label": label})

    def read(local: str) -> int:
        data = StreamingDataset(remote=remote, local=local, shuffle=False, batch_size=256)
        return sum(len(sample["image"]) for sample in data)

    cold, _ = timed(lambda: read(str(work / "mds-cache")))
    warm, _ = timed(lambda: read(str(work / "mds-cache")))
    import streaming

    return [(f"MosaicML Streaming {streaming.__version__}, s3:// cold", cold),
            (f"MosaicML Streaming {streaming.__version__}, s3:// warm", warm)]


def clients(args, server: S3Server, bucket: str, shards: list[Path]) -> None:
    """Whole-shard GETs of the same objects: obstore (augforge's client) and s3fs."""
    from augforge.storage import ObjectStore, parse_url

    store = ObjectStore(parse_url(f"s3://{bucket}/photos"))
    names = [f"shards/{p.name}" for p in shards]
    total = sum(p.stat().st_size for p in shards)
    rates = {}
    for attempt in range(2):
        seconds, _ = timed(lambda: [store.get(n) for n in names])
        rates.setdefault("obstore", []).append(total / 1e6 / seconds)
    if args.s3fs_path:
        sys.path.insert(0, args.s3fs_path)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, key=server.env["AWS_ACCESS_KEY_ID"],
                               secret=server.env["AWS_SECRET_ACCESS_KEY"])
        for attempt in range(2):
            seconds, _ = timed(lambda: [fs.cat_file(f"{bucket}/photos/{n}") for n in names])
            rates.setdefault(f"s3fs {s3fs.__version__}", []).append(total / 1e6 / seconds)
    print("\nwhole-shard GETs, MB/s (two passes):")
    for name, values in rates.items():
        print(f"  {name}: {', '.join(f'{v:.0f}' for v in values)}")


if __name__ == "__main__":
    main()
