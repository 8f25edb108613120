"""The collation part of a loader: what a batch's payload becomes on its way out. Feature rows become a
float32 ``(batch, dim)`` tensor, text rows padded token ids with their lengths (through the loader's text
encoder), and floating image batches the requested dtype (``bfloat16``). Targets beside the label (boxes,
masks, keypoints) will be collated here too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from augforge.datasets import schema as S

#: dtypes a loader may cast floating batches to
DTYPES = (None, "float32", "bfloat16")


class Collate:
    """Batches of one payload (``image``, ``text``, ``features``); ``encoder`` turns texts into ids."""

    def __init__(self, payload: str, encoder=None, dtype: str | None = None) -> None:
        self.payload, self.encoder, self.dtype = payload, encoder, dtype

    def column(self, column: pa.ChunkedArray, rows: int):
        """A feature or text column of ``rows`` rows as the batch's input (a tensor, or (ids, lengths))."""
        if self.payload == S.FEATURES:
            values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            values = values.reshape(rows, -1).astype(np.float32, copy=False)
            return torch.from_numpy(values if values.flags.writeable else values.copy())  # Arrow's memory is read-only
        return self.encoder.encode(column.to_pylist())

    def cast(self, x):
        """A floating batch in the requested dtype (others as they are)."""
        if self.dtype == "bfloat16" and isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(torch.bfloat16)
        return x
