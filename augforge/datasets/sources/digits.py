"""The bundled real sample: scikit-learn's 1,797 handwritten 8x8 digits, as PNG images."""

from __future__ import annotations

import io
from functools import cached_property
from typing import Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from augforge.datasets import schema as S
from augforge.datasets.sources.base import Source
from augforge.errors import AugforgeError

#: sklearn's digits hold intensities 0..16; they are stored as 8-bit grey levels.
DIGITS_MAX = 16


def digits_to_uint8(images: np.ndarray) -> np.ndarray:
    """Scale sklearn's 0..16 intensities to 0..255 grey levels (invertible by ``uint8_to_digits``)."""
    return np.rint(np.asarray(images, dtype=np.float64) * 255.0 / DIGITS_MAX).astype(np.uint8)


def uint8_to_digits(pixels: np.ndarray) -> np.ndarray:
    """Recover sklearn's 0..16 intensities from stored grey levels."""
    return np.rint(np.asarray(pixels, dtype=np.float64) * DIGITS_MAX / 255.0)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array (grey) or HxWx3 array (RGB) as PNG bytes, deterministically."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` gives them, (images (1797, 8, 8) float64, int64 targets), read
    from the package's own ``datasets/data/digits.csv.gz`` without importing scikit-learn."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise AugforgeError("the bundled digits come with scikit-learn, which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


class DigitsSource(Source):
    """scikit-learn's ``load_digits``: 10 classes, 1,797 rows, ids ``digits-0000`` ..."""

    kind = "digits"
    payload = S.IMAGE

    def __init__(self) -> None:
        super().__init__("digits")

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, 8, 8) float, targets): the file ``load_digits`` reads, read the same way but without
        importing scikit-learn (a second of start-up for ``augforge report digits``)."""
        return read_digits()

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in range(10)]

    def labels(self) -> np.ndarray:
        return self._data[1]

    def ids(self) -> list[str]:
        return [f"digits-{i:04d}" for i in range(len(self._data[1]))]

    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        ids = self.ids()
        labels = self.labels()
        pixels = digits_to_uint8(self._data[0])
        for start in range(0, len(positions), batch_rows):
            chunk = positions[start : start + batch_rows]
            yield pa.record_batch(
                {
                    S.ID: pa.array([ids[i] for i in chunk], pa.string()),
                    S.LABEL: pa.array(labels[chunk], pa.int64()),
                    S.IMAGE: pa.array([encode_png(pixels[i]) for i in chunk], pa.binary()),
                }
            )

    def payload_info(self) -> dict:
        return {"encoding": "png", "height": 8, "width": 8, "channels": 1,
                "note": "grey level = round(sklearn intensity * 255 / 16)"}
