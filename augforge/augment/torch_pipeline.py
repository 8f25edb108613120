"""The image pipeline without DALI: ``ImageAugmenter``'s interface over PIL decoding and the torch ops.

Where ``nvidia-dali`` has no wheel (macOS, Windows) or is not installed, ``augforge.augment.backend`` hands
out this pipeline instead of the DALI one. It takes the same op list and gives the same shapes and dtypes:
HWC uint8 arrays from ``augment``, NCHW batches from ``batch_tensor`` (float32 after ``normalize``). The
random draws follow the same distributions from a generator seeded with ``seed``, so reruns are equal,
but the pixels differ from DALI's (``augforge.augment.torch_ops``). It runs on the CPU; on a GPU machine
its batches are moved to the device, so that the loader's batches are where the device decision says.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from augforge.augment.image import ImagePipeline
from augforge.augment.torch_ops import TorchAugment
from augforge.errors import AugforgeError


def decode_as(data, color: str) -> torch.Tensor:
    """Encoded image bytes (or a uint8 array of them) decoded to a uint8 CHW tensor: 1 channel for
    ``color`` ``gray``, else 3 (as DALI's decoder gives them)."""
    buffer = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        with Image.open(io.BytesIO(buffer)) as img:
            pixels = np.asarray(img.convert("L" if color == "gray" else "RGB"))
    except (OSError, ValueError) as exc:
        raise AugforgeError(f"an image could not be decoded ({exc})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # a writable copy: PIL's array is read-only


class TorchImageAugmenter(ImagePipeline):
    """Runs a list of ops over encoded images (or HWC uint8 pixels, ``decoded``) with the torch ops, in
    order; the interface of ``augforge.augment.image.ImageAugmenter`` (its ``source`` readers excepted)."""

    def __init__(self, ops, *, source=None, **options) -> None:
        if source is not None:
            raise AugforgeError("reader_workers: reader processes feed DALI's parallel external_source, and DALI "
                                "is not installed; use reader_workers: 0")
        super().__init__(ops, **options)
        self._augment = TorchAugment(() if self.decode_only else self.ops)  # refuses the DALI-only policies
        self._generator = torch.Generator().manual_seed(self.seed)

    def _image(self, item) -> torch.Tensor:
        """One input as a uint8 CHW tensor."""
        if self.decoded:
            array = np.asarray(item)
            if array.ndim != 3:
                raise AugforgeError(f"expected HWC uint8 pixels, got an array of shape {array.shape}")
            return torch.from_numpy(array.transpose(2, 0, 1).copy())  # shards are mapped read-only
        return decode_as(item, self.color)

    def _outputs(self, batch: list) -> list[torch.Tensor]:
        """Each input decoded and augmented, CHW (uint8, or float32 after normalize)."""
        return [self._augment(self._image(item), self._generator) for item in batch]

    def augment(self, encoded: list) -> list[np.ndarray]:
        """Decode and augment ``encoded`` (a list of bytes or uint8 arrays); outputs in the same order, HWC
        uint8 (CHW float32 after ``normalize``), as ``ImageAugmenter.augment`` gives them."""
        out = []
        for image in self._outputs(list(encoded)):
            out.append(np.ascontiguousarray(image.numpy() if self.chw else image.permute(1, 2, 0).numpy()))
        return out

    def batch_tensor(self, batch: list) -> torch.Tensor:
        """One batch as one tensor: NHWC uint8, or NCHW float32 after ``normalize`` (``chw``); on the GPU
        when the device decision is ``gpu``."""
        images = self._outputs(batch)
        if len({tuple(image.shape) for image in images}) > 1:
            raise AugforgeError("the ops give images of different sizes; end them with resize or a crop to "
                                "batch them as one tensor")
        out = torch.stack(images) if self.chw else torch.stack(images).permute(0, 2, 3, 1)
        return out.to("cuda") if self.device == "gpu" else out

    def next_batch(self):
        """Only DALI's parallel readers produce batches on their own; this pipeline is always fed."""
        raise AugforgeError("this pipeline has no source; feed it with batch_tensor")

    def close(self) -> None:
        """Nothing to release (no threads of its own)."""
