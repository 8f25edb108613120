"""augforge's training loop vs a hand-written minimal torch loop: same model, data, batch size, one process.

Both run the same MobileNetV3-Small (alpha 0.5) on the same random 3x32x32 batches of 64 with AdamW,
fp32, no accumulation, and the same number of steps; the time per step is measured after a warm-up.
augforge's loop adds the schedule, the weight-decay groups, the non-finite check, the loss summed over
samples and divided once, and the bookkeeping. Prints both step times and the ratio (target <= 1.05).

    python benchmarks/trainer_overhead.py [--steps 60]
"""

from __future__ import annotations

import argparse
import time

import torch

from augforge.train.loop import TrainConfig, Trainer
from augforge.train.models import create


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(n)]


def plain_loop(data, steps: int) -> float:
    torch.manual_seed(0)
    model = create("mobilenet_v3_small", 10, alpha=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for x, y in data[:5]:  # warm-up
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    start = time.perf_counter()
    for x, y in data[:steps]:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def augforge_loop(data, steps: int) -> float:
    torch.manual_seed(0)
    model = create("mobilenet_v3_small", 10, alpha=0.5)
    trainer = Trainer(model, TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", schedule="cosine"), steps + 5)
    model.train()
    for x, y in data[:5]:
        trainer.optimizer_step([(x, y)])
    start = time.perf_counter()
    for x, y in data[:steps]:
        trainer.optimizer_step([(x, y)])
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = batches(args.steps)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternate, keep the medians
        plain.append(plain_loop(data, args.steps))
        ours.append(augforge_loop(data, args.steps))
    ours.sort()
    plain.sort()
    a, b = ours[len(ours) // 2], plain[len(plain) // 2]
    print(f"plain torch loop {b * 1000:.1f} ms/step, augforge loop {a * 1000:.1f} ms/step, ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
