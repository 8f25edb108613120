"""What a run computes with: torch's threads, and the process group torchrun describes."""

from __future__ import annotations

import os

import torch

from augforge.device import Device, rank_and_world
from augforge.errors import require_at_least


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads: ``threads`` when given, else torch's default (one per core)."""
    if threads is not None:
        require_at_least("threads", threads)
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def init_distributed(device: Device) -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.is_cuda else "gloo")
    return rank_and_world()


def end_distributed(world: int) -> None:
    """Wait for every process, then leave the process group (nothing outside one)."""
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
