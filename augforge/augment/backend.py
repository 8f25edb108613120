"""Which pipeline runs the image ops: DALI where it is installed, the torch ops where it is not.

DALI ships Linux wheels only, so augforge depends on it only there (an environment marker in
pyproject.toml). ``image_augmenter`` builds ``ImageAugmenter`` (DALI) when ``nvidia.dali`` imports and
``TorchImageAugmenter`` otherwise, and says so once on stderr. ``AUGFORGE_IMAGE_BACKEND=torch`` picks the
torch pipeline even where DALI is installed.
"""

from __future__ import annotations

import functools
import os
import sys

from augforge.augment.image import ImageAugmenter
from augforge.augment.torch_pipeline import TorchImageAugmenter
from augforge.errors import AugforgeError

#: the environment variable that forces a backend (``dali`` or ``torch``); unset: DALI when it imports
BACKEND_VARIABLE = "AUGFORGE_IMAGE_BACKEND"
_announced: list[bool] = []


@functools.lru_cache(maxsize=1)
def _dali_version() -> str | None:
    try:
        import nvidia.dali
    except ImportError:
        return None
    return str(nvidia.dali.__version__)


def image_backend() -> str:
    """``dali`` or ``torch``: the pipeline this process runs image ops with."""
    wanted = os.environ.get(BACKEND_VARIABLE, "").strip().lower()
    if wanted not in ("", "dali", "torch"):
        raise AugforgeError(f"{BACKEND_VARIABLE}={wanted}: expected dali or torch")
    if wanted == "dali" and _dali_version() is None:
        raise AugforgeError(f"{BACKEND_VARIABLE}=dali: nvidia.dali does not import here; "
                            "pip install nvidia-dali-cuda130 (Linux only)")
    if wanted == "torch" or _dali_version() is None:
        return "torch"
    return "dali"


def backend_version() -> str:
    """The image backend with its version (``dali 2.0.0``, ``torch 2.13.0``): part of a build's fingerprint,
    since the two give different pixels."""
    if image_backend() == "dali":
        return f"dali {_dali_version()}"
    import torch

    return f"torch {torch.__version__}"


def image_augmenter(ops, **options):
    """The image pipeline for ``ops`` (``ImageAugmenter``'s keyword options): DALI's, or the torch one where
    DALI is absent, announced once per process on stderr."""
    if image_backend() == "dali":
        return ImageAugmenter(ops, **options)
    if not _announced:
        _announced.append(True)
        why = "as asked" if os.environ.get(BACKEND_VARIABLE) else "nvidia.dali is not installed"
        print(f"augforge: images go through the torch ops on the CPU ({why}); pixels differ from DALI's",
              file=sys.stderr, flush=True)
    return TorchImageAugmenter(ops, **options)
