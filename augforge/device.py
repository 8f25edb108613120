"""One device decision, shared by the loader, the model, mixed precision and evaluation.

``choose_device("auto" | "cpu" | "cuda")`` returns a ``Device``: where torch tensors and the model live
(``torch``), where DALI decodes and augments (``dali``: ``gpu`` or ``cpu``), and which autocast dtypes
work there. ``augforge train`` makes the decision once and hands the same object to everything, so the
loader never yields batches on a device the model is not on.
"""

from __future__ import annotations

from dataclasses import dataclass

from augforge.errors import AugforgeError


@dataclass(frozen=True)
class Device:
    """Where a run computes: ``kind`` is ``cuda`` or ``cpu``."""

    kind: str
    index: int = 0

    @property
    def torch(self):
        """The ``torch.device``."""
        import torch

        return torch.device(self.kind, self.index) if self.kind == "cuda" else torch.device("cpu")

    @property
    def dali(self) -> str:
        """The device DALI pipelines run on (``mixed`` decoding and GPU ops on ``gpu``)."""
        return "gpu" if self.kind == "cuda" else "cpu"

    @property
    def is_cuda(self) -> bool:
        """Whether the run is on a GPU."""
        return self.kind == "cuda"

    def check_precision(self, precision: str, where: str = "train.precision") -> None:
        """Refuse a precision this device cannot run (fp16 needs a GPU's GradScaler)."""
        if precision == "fp16" and not self.is_cuda:
            raise AugforgeError(f"{where}: fp16 needs a GPU (its GradScaler) and this run is on the CPU; use bf16")

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


def rank_and_world() -> tuple[int, int]:
    """This process's (rank, world size) in torch.distributed's process group; (0, 1) outside one."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def choose_device(requested: "str | Device" = "auto") -> Device:
    """The decision: ``auto`` is the first GPU when CUDA is available, else the CPU; ``cuda`` (or ``gpu``)
    without a GPU is an error rather than a silent fall back."""
    if isinstance(requested, Device):
        return requested
    name = str(requested).lower()
    if name == "auto":
        return Device("cuda") if cuda_available() else Device("cpu")
    if name == "cpu":
        return Device("cpu")
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        if not cuda_available():
            raise AugforgeError(f"device {requested!r}: no CUDA device is available here; use auto or cpu")
        return Device("cuda", int(name.split(":")[1]) if ":" in name else 0)
    raise AugforgeError(f"device {requested!r}: expected auto, cpu or cuda")
