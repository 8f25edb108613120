"""An existing dataset directory used as a source (to re-shard, report on or rebalance it)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from augforge.datasets import schema as S
from augforge.datasets.reader import Dataset
from augforge.datasets.sources.base import Problem, Source
from augforge.datasets.targets import HEIGHT, IMAGE_LABELS, SEMANTIC, WIDTH, from_columns


class DatasetSource(Source):
    """Every row of a dataset directory, with its split and provenance carried over."""

    kind = "dataset"

    def __init__(self, root: str | Path) -> None:
        super().__init__(str(root))
        self.dataset = Dataset(root, split=S.ALL_SPLITS)
        self.payload = self.dataset.payload
        self.problems = [Problem(**p) for p in self.dataset.manifest.get("problems", [])]

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def labels(self) -> np.ndarray:
        return self.dataset.labels()

    def ids(self) -> list[str]:
        return self.dataset.to_polars([S.ID]).get_column(S.ID).to_list()

    def native_splits(self) -> np.ndarray | None:
        return S.split_codes(self.dataset.to_polars([S.SPLIT]).get_column(S.SPLIT))

    @property
    def feature_dim(self) -> int | None:
        if self.payload != S.FEATURES:
            return None
        return self.dataset.shard_schema.field(S.FEATURES).type.list_size

    def _take(self, positions: np.ndarray, batch_rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
        for start in range(0, len(positions), batch_rows):
            yield from self.dataset.take(positions[start : start + batch_rows], columns).to_batches()

    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        return self._take(positions, batch_rows, [S.ID, S.LABEL, self.payload, S.SOURCE_ID, S.SYNTHETIC, S.AUG,
                                                  *self.dataset.target_columns])

    @property
    def has_targets(self) -> bool:
        return bool(self.dataset.target_columns)

    def instances(self, positions: np.ndarray) -> list | None:
        columns = self.dataset.target_columns
        return from_columns(self.dataset.take(np.asarray(positions, dtype=np.int64), columns)) if columns else None

    def image_labels(self, positions: np.ndarray) -> list[list[int]] | None:
        if IMAGE_LABELS not in self.dataset.target_columns:
            return None
        return self.dataset.take(np.asarray(positions, dtype=np.int64), [IMAGE_LABELS]).column(IMAGE_LABELS).to_pylist()

    def semantic_masks(self, positions: np.ndarray) -> list[bytes] | None:
        if SEMANTIC not in self.dataset.target_columns:
            return None
        return self.dataset.take(np.asarray(positions, dtype=np.int64), [SEMANTIC]).column(SEMANTIC).to_pylist()

    def image_sizes(self, positions: np.ndarray) -> list[tuple[int, int]] | None:
        if not self.has_targets:
            return None
        table = self.dataset.take(np.asarray(positions, dtype=np.int64), [WIDTH, HEIGHT])
        return list(zip(table.column(WIDTH).to_pylist(), table.column(HEIGHT).to_pylist()))

    def schema(self) -> pa.Schema:
        base = S.dataset_schema(self.payload, self.feature_dim)
        targets = [self.dataset.shard_schema.field(name) for name in self.dataset.target_columns]
        return pa.schema([*base, *targets])

    def read_meta(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        return self._take(positions, batch_rows, [S.ID, S.LABEL, S.SOURCE_ID, S.SYNTHETIC, S.AUG])

    def payload_info(self) -> dict:
        return dict(self.dataset.manifest.get("payload_info", {}))

    def describe(self) -> dict:
        return {**super().describe(), "fingerprint": self.dataset.manifest.get("fingerprint")}
