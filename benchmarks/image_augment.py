"""Online image augmentation throughput: augforge's DALI pipeline vs Albumentations + torch DataLoader.

The same recipe on the same JPEGs, in one process: JPEG decode -> random resized crop 224 ->
horizontal flip (p 0.5) -> colour jitter -> normalize, into float32 NCHW batches of 64. The peer
is what users otherwise write: a torch Dataset that decodes with OpenCV and applies an
Albumentations Compose, in a DataLoader with one worker per core.

    pip install '.[bench]'                 # albumentations
    python benchmarks/image_augment.py [--images 512] [--epochs 3] [--workers N]

Prints images/s for each (the median of --repeats alternating runs) and the ratio (augforge / peer).
Also prints augforge with DALI's own ops instead of its fused CPU pass (``fuse=False``), and JPEG decode
alone (PIL, one core) as the reference the issue quotes.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from augforge.augment.image import ImageAugmenter, resolve_device
from augforge.recipe import parse_recipe

BATCH = 64
RECIPE = [
    # cv2.INTER_LINEAR in Albumentations does not antialias either: the same work on both sides
    {"op": "random_resized_crop", "size": 224, "scale": [0.08, 1.0], "antialias": False},
    {"op": "hflip", "p": 0.5},
    {"op": "color", "brightness": [0.6, 1.4], "contrast": [0.6, 1.4], "saturation": [0.6, 1.4], "hue": [-18, 18]},
    {"op": "normalize"},
]


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` 400x300 JPEGs (quality 90): random crops of scikit-learn's two real photos."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out = []
    for i in range(count):
        photo = photos[i % 2]
        y, x = rng.integers(0, photo.shape[0] - 300), rng.integers(0, photo.shape[1] - 400)
        buf = io.BytesIO()
        Image.fromarray(photo[y : y + 300, x : x + 400]).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def augforge_rate(jpegs: list[bytes], epochs: int, workers: int, device: str, fuse: bool = True) -> float:
    """Images/s of augforge's pipeline, batches handed over as float32 NCHW torch tensors (``fuse``: the fused
    CPU pass for resize, flip, colour and normalize; else DALI's own ops)."""
    ops = parse_recipe({"source": {"path": "digits"}, "augment": {"copies": 1, "image": RECIPE}}).augment.image
    augmenter = ImageAugmenter(ops, device=device, seed=0, batch_size=BATCH, threads=workers, fuse=fuse)
    next(augmenter.augment_batches(jpegs[:BATCH]))  # build the pipeline and warm up
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in augmenter.augment_batches(jpegs):
            assert batch.shape[1:] == (3, 224, 224)
            seen += len(batch)
    return seen / (time.perf_counter() - start)


class AlbumentationsDataset(torch.utils.data.Dataset):
    """JPEG bytes decoded with OpenCV and augmented with an Albumentations Compose."""

    def __init__(self, jpegs: list[bytes]) -> None:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2

        self.jpegs = jpegs
        self.transform = A.Compose([
            A.RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=1.0),
            A.Normalize(),
            ToTensorV2(),
        ])

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, i: int):
        import cv2

        image = cv2.imdecode(np.frombuffer(self.jpegs[i], dtype=np.uint8), cv2.IMREAD_COLOR)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return self.transform(image=image)["image"]


def peer_rate(jpegs: list[bytes], epochs: int, workers: int) -> float:
    """Images/s of Albumentations in a torch DataLoader with ``workers`` worker processes."""
    import cv2

    cv2.setNumThreads(1)
    loader = torch.utils.data.DataLoader(AlbumentationsDataset(jpegs), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, persistent_workers=True, prefetch_factor=4)
    for batch in loader:  # start the workers and warm up
        break
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            assert batch.shape[1:] == (3, 224, 224)
            seen += len(batch)
    return seen / (time.perf_counter() - start)


def torchvision_gpu_rate(jpegs: list[bytes], epochs: int) -> float | None:
    """Images/s of torchvision's v2 transforms on the GPU (nvJPEG decode with ``decode_jpeg(device='cuda')``,
    then per-image random resized crop, flip, colour jitter, normalize, stacked), or None where torchvision
    or a GPU is absent."""
    try:
        import torchvision
        from torchvision.transforms import v2
    except Exception:  # noqa: BLE001 - absent, or built for another torch ("operator ... does not exist")
        return None
    if not torch.cuda.is_available():
        return None
    transform = v2.Compose([v2.RandomResizedCrop(224, scale=(0.08, 1.0), antialias=False), v2.RandomHorizontalFlip(),
                            v2.ColorJitter(0.4, 0.4, 0.4, 0.05), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]

    def batches():
        for start in range(0, len(encoded), BATCH):
            images = torchvision.io.decode_jpeg(encoded[start : start + BATCH], device="cuda")
            yield torch.stack([transform(image) for image in images])

    next(batches())  # warm up nvJPEG and the kernels
    torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in batches():
            assert batch.shape[1:] == (3, 224, 224)
            seen += len(batch)
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def decode_rate(jpegs: list[bytes]) -> float:
    """JPEG decode alone with PIL on one core."""
    start = time.perf_counter()
    for data in jpegs:
        Image.open(io.BytesIO(data)).convert("RGB").load()
    return len(jpegs) / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``make gpu-check`` parses it in its dry run)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="threads / DataLoader workers")
    parser.add_argument("--device", default="auto", help="augforge's device: auto, cpu or gpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the medians are compared")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    jpegs = make_jpegs(args.images)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; augforge device: {device}; "
          f"{args.images} JPEGs 400x300, {args.epochs} epochs, batch {BATCH}, {args.workers} workers")
    decode = decode_rate(jpegs)
    # alternate the two, and keep each one's median run: the machine's noise hits both alike
    ours_runs, own_runs, peer_runs, vision_runs = [], [], [], []
    for _ in range(args.repeats):
        ours_runs.append(augforge_rate(jpegs, args.epochs, args.workers, device))
        if device == "cpu":
            own_runs.append(augforge_rate(jpegs, args.epochs, args.workers, device, fuse=False))
        peer_runs.append(peer_rate(jpegs, args.epochs, args.workers))
        if device == "gpu" and (rate := torchvision_gpu_rate(jpegs, args.epochs)) is not None:
            vision_runs.append(rate)
    ours, peer = float(np.median(ours_runs)), float(np.median(peer_runs))

    def runs(rates):
        return ", ".join(f"{r:.0f}" for r in rates)

    print(f"runs (img/s): augforge {runs(ours_runs)}; Albumentations {runs(peer_runs)}"
          + (f"; augforge with DALI's own ops {runs(own_runs)}" if own_runs else ""))
    print(f"JPEG decode alone (PIL, 1 core):          {decode:8.0f} img/s")
    print(f"Albumentations + DataLoader ({args.workers} workers): {peer:8.0f} img/s")
    if own_runs:
        own = float(np.median(own_runs))
        print(f"augforge, DALI's own ops (fuse=False):     {own:8.0f} img/s  ({own / peer:.2f}x)")
    if vision_runs:
        vision = float(np.median(vision_runs))
        print(f"torchvision v2 on the GPU (nvJPEG):        {vision:8.0f} img/s  ({vision / peer:.2f}x)")
    print(f"augforge (DALI {device}):                   {ours:8.0f} img/s")
    print(f"ratio augforge / Albumentations:          {ours / peer:8.2f}x")


if __name__ == "__main__":
    main()
