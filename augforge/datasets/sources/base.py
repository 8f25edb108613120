"""What every source offers: labels and ids cheaply, payload batches on demand."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from augforge.datasets import schema as S


#: how a problem's reason names the recipe's ``clean:`` step that dropped the row: it ends ``(clean.<step>: drop)``
CLEANING_DROP = re.compile(r"\(clean\.(\w+): drop\)$")


@dataclass(frozen=True)
class Problem:
    """An input file or row that was excluded, with the reason."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        """JSON form, as stored in the manifest and the report."""
        return asdict(self)


def cleaning_step(reason: str) -> str | None:
    """The ``clean:`` step a problem's reason says dropped the row (``near_duplicates``, ``leakage``,
    ``label_issues``, ``outliers``), or None for an input excluded for another reason (unreadable, empty, ...)."""
    found = CLEANING_DROP.search(str(reason))
    return found.group(1) if found else None


class Source(ABC):
    """A labelled dataset before it is written to shards.

    ``labels()``, ``ids()`` and ``native_splits()`` are cheap (no payload is read),
    so reports and split planning never touch images or texts. ``read(positions)``
    yields record batches with the columns ``id``, ``label`` and the payload, plus
    any provenance columns the source already carries.
    """

    #: "digits", "image_folder", "table" or "dataset"
    kind: str = ""
    #: one of augforge.datasets.schema.PAYLOADS
    payload: str = ""

    def __init__(self, location: str) -> None:
        self.location = location
        self.problems: list[Problem] = []
        #: what the row plan found worth saying (classes a split leaves without test rows, ...)
        self.warnings: list[str] = []

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Class names; a row's label is an index into this list."""

    @abstractmethod
    def labels(self) -> np.ndarray:
        """int64 label of every row, in source order."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Stable string id of every row, in source order."""

    def native_splits(self) -> np.ndarray | None:
        """Split codes (indices into schema.SPLITS) when the source carries a ``split`` column, else None."""
        return None

    @abstractmethod
    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches of the rows at ``positions`` (source order), at most ``batch_rows`` each."""

    def read_meta(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Like ``read`` without the payload: ``id``, ``label`` and any provenance the source carries."""
        ids, labels = self.ids(), self.labels()
        for start in range(0, len(positions), batch_rows):
            chunk = positions[start : start + batch_rows]
            yield pa.record_batch({S.ID: pa.array([ids[i] for i in chunk], pa.string()),
                                   S.LABEL: pa.array(labels[chunk], pa.int64())})

    @property
    def has_targets(self) -> bool:
        """Whether the rows carry dense targets (boxes, masks, keypoints) beside the image."""
        return False

    def instances(self, positions: np.ndarray) -> list | None:
        """The dense targets (``augforge.datasets.targets.Instances``) of the rows at ``positions``, or None for
        a source without them."""
        return None

    def image_labels(self, positions: np.ndarray) -> list[list[int]] | None:
        """The image-level labels (class indices) of the rows at ``positions`` of a multilabel source, or None
        for a source without them."""
        return None

    def semantic_masks(self, positions: np.ndarray) -> list[bytes] | None:
        """The semantic masks (``augforge.datasets.targets.encode_semantic``'s PNG bytes, or a VOC palette PNG's)
        of the rows at ``positions`` of a semantic segmentation source, without their images; None for another."""
        return None

    def image_sizes(self, positions: np.ndarray) -> list[tuple[int, int]] | None:
        """(width, height) of the images at ``positions`` of a source with dense targets (what their coordinates
        refer to), without decoding them; None for a source without targets."""
        return None

    @property
    def feature_dim(self) -> int | None:
        """Length of the feature vector for a features payload."""
        return None

    def payload_info(self) -> dict:
        """What the manifest records about the payload (encoding, feature names, ...)."""
        return {}

    def describe(self) -> dict:
        """A JSON description of the source and its options, stored in the manifest."""
        return {"kind": self.kind, "location": self.location}

    def schema(self) -> pa.Schema:
        """The shard schema this source's rows are written with."""
        return S.dataset_schema(self.payload, self.feature_dim)

    def __len__(self) -> int:
        return len(self.labels())
