"""The rows an audit reads: every split of a dataset directory (or of a source, ingested into a temporary
dataset first), with their ids, labels, splits and payload values."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from augforge.datasets import schema as S
from augforge.datasets.ingest import ingest
from augforge.datasets.manifest import MANIFEST
from augforge.datasets.reader import Dataset
from augforge.datasets.sources import open_source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.errors import AugforgeError
from augforge.storage.urls import remote


@dataclass
class AuditRows:
    """The audited rows, in split order (train, val, test): payload values, ids, labels and splits."""

    payload: str
    class_names: list[str]
    ids: list[str]
    labels: np.ndarray
    splits: list[str]
    values: list  # image: HxWxC uint8 arrays; text: strings; features: an (n, d) float array
    location: str
    sources: list  # each row's source_id: a build's augmented copies and balance copies share their source's
    embeddings: np.ndarray | None = None  # (rows, dims) from a local model (``--embed``), in the same order
    problems: list = field(default_factory=list)  # inputs that could not be read: {path, reason}, as ingest lists

    def __len__(self) -> int:
        return len(self.ids)


def _images(column: list, info: dict) -> list[np.ndarray]:
    """Decoded images: encoded files, or raw pixels of the manifest's height x width x channels."""
    if info.get("encoding") == "raw":
        shape = (info["height"], info["width"], info["channels"])
        return [np.frombuffer(value, dtype=np.uint8).reshape(shape) for value in column]
    return [np.asarray(Image.open(io.BytesIO(value))) for value in column]


def read_dataset(root, splits: list[str] | None = None, embed=None) -> AuditRows:
    """Every row of the dataset directory's (or ``s3://`` URL's) ``splits`` (default: all it has); ``embed``
    (dataset directory, split) -> embeddings of that split's rows in storage order, when given."""
    manifest = Dataset(root, "all", verify=False).manifest
    present = [s for s in S.SPLITS if s in manifest["counts"]]
    chosen = splits or present
    for split in chosen:
        if split not in present:
            raise AugforgeError(f"{root}: has no split {split!r}; its splits: {', '.join(present)}")
    payload, info = manifest.get("payload") or S.IMAGE, manifest.get("payload_info") or {}
    ids, labels, names, values, sources = [], [], [], [], []
    for split in chosen:
        dataset = Dataset(root, split=split)
        table = dataset.take(np.arange(len(dataset)), columns=[S.ID, S.LABEL, S.SOURCE_ID, payload])
        ids += [str(v) for v in table.column(S.ID).to_pylist()]
        sources += [None if v is None else str(v) for v in table.column(S.SOURCE_ID).to_pylist()]
        labels.append(np.asarray(table.column(S.LABEL)))
        names += [split] * table.num_rows
        column = table.column(payload).to_pylist()
        if payload == S.IMAGE:
            values += _images(column, info)
        elif payload == S.TEXT:
            values += [str(v) for v in column]
        else:
            values += [np.asarray(v, dtype=np.float32) for v in column]
    if payload == S.FEATURES:
        values = np.stack(values) if values else np.zeros((0, 0), np.float32)
    embeddings = None if embed is None else np.concatenate([embed(root, split) for split in chosen])
    if embeddings is not None and len(embeddings) != len(ids):
        raise AugforgeError(f"{root}: the model embedded {len(embeddings):,} rows of {len(ids):,}")
    return AuditRows(payload, list(manifest["class_names"]), ids, np.concatenate(labels) if labels else
                     np.zeros(0, np.int64), names, values, str(root), sources, embeddings,
                     list(manifest.get("problems") or []))


def read_rows(path: str | Path, splits: list[str] | None = None, *, split_spec: SplitSpec = SplitSpec(),
              imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0, embed=None, **source_options) -> AuditRows:
    """The rows of a dataset directory, or of any source ``augforge ingest`` reads, split as ``split_spec``
    says (without one, all rows are in ``train``), read through a temporary dataset; ``embed``: as
    ``read_dataset`` takes it."""
    path = str(path) if remote(path) else Path(path)
    if not remote(path) and (path / MANIFEST).is_file():
        return read_dataset(path, splits, embed)
    source = open_source(str(path), **source_options)
    if source.kind == "dataset":  # a dataset at an s3:// URL
        return read_dataset(path, splits, embed)
    with tempfile.TemporaryDirectory(prefix="augforge-audit-") as tmp:
        ingest(source, Path(tmp) / "data", splits=split_spec, imbalance=imbalance, seed=seed)
        rows = read_dataset(Path(tmp) / "data", splits, embed)
    rows.location = str(path)
    return rows
