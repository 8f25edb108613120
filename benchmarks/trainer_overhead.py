"""augforge's training loop vs a hand-written minimal torch loop: same model, data, batch size, one process.

Both run the same MobileNetV3-Small (alpha 0.5) on the same random 3x32x32 batches of 64 with AdamW,
fp32, no accumulation, and the same number of steps; the time per step is measured after a warm-up.
augforge's loop adds the schedule, the weight-decay groups, the non-finite check, the loss summed over
samples and divided once, and the bookkeeping. Prints both step times and the ratio (target <= 1.05).

    python benchmarks/trainer_overhead.py [--steps 60]
    python benchmarks/trainer_overhead.py --device cuda --precision bf16    # AMP bf16 on a GPU (make gpu-check)

With ``--precision bf16`` both loops run under ``torch.autocast`` with bfloat16 (the plain loop as the
PyTorch AMP recipe writes it), on ``--device`` (``auto``: the GPU when present, augforge's device decision).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from augforge.device import choose_device
from augforge.train.loop import TrainConfig, Trainer
from augforge.models import create


def batches(n: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(64, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (64,), generator=g).to(device))
            for _ in range(n)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(data, steps: int, device: torch.device, precision: str) -> float:
    torch.manual_seed(0)
    model = create("mobilenet_v3_small", 10, alpha=0.5).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(x, y):
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with cast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for x, y in data[:5]:  # warm-up
        step(x, y)
    _synchronize(device)
    start = time.perf_counter()
    for x, y in data[:steps]:
        step(x, y)
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def augforge_loop(data, steps: int, device: torch.device, precision: str) -> float:
    torch.manual_seed(0)
    model = create("mobilenet_v3_small", 10, alpha=0.5)
    config = TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", schedule="cosine", precision=precision)
    trainer = Trainer(model, config, steps + 5, device=str(device))
    model.train()
    for x, y in data[:5]:
        trainer.optimizer_step([(x, y)])
    _synchronize(device)
    start = time.perf_counter()
    for x, y in data[:steps]:
        trainer.optimizer_step([(x, y)])
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``make gpu-check`` parses it in its dry run)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (the GPU when present), cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    device = choose_device(args.device).torch
    data = batches(args.steps, device)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternate, keep the medians
        plain.append(plain_loop(data, args.steps, device, args.precision))
        ours.append(augforge_loop(data, args.steps, device, args.precision))
    ours.sort()
    plain.sort()
    a, b = ours[len(ours) // 2], plain[len(plain) // 2]
    print(f"{device} {args.precision}: plain torch loop {b * 1000:.1f} ms/step, augforge loop {a * 1000:.1f} ms/step, "
          f"ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
