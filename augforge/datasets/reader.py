"""Read a dataset directory: memory-mapped shards, verified checksums, one split at a time."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from augforge.datasets import schema as S
from augforge.datasets.checksums import buffer_checksum, verify_file
from augforge.datasets.manifest import MANIFEST, counts_by_name, read_manifest, shard_file
from augforge.datasets.remote import CacheOptions, RemoteShards
from augforge.datasets.targets import IMAGE_LABELS, SEMANTIC, TARGET_COLUMNS
from augforge.errors import AugforgeError
from augforge.paths import local_path
from augforge.storage.urls import remote


class Dataset:
    """A dataset directory seen through one split (``'train'`` by default, ``'all'`` for every row).

    Shards are memory-mapped on first use; with ``verify=True`` each shard's size
    and checksum are checked against the manifest the first time it is read, and a
    damaged shard is reported by name.

    ``root`` may be an object-store URL (``s3://bucket/prefix``): the shards are then read through a local cache
    (``cache``: ``CacheOptions``; see ``augforge.datasets.remote``), verified as they arrive, and at most as many
    stay mapped as the cache limit holds.
    """

    def __init__(self, root: str | Path, split: str = "train", verify: bool = True,
                 cache: CacheOptions | None = None) -> None:
        #: where the dataset is, as the user named it (a path or a URL): what worker processes reopen
        self.location = str(root)
        self.remote = RemoteShards(self.location, cache) if remote(root) else None
        self.root = self.remote.root if self.remote else Path(local_path(root, "path"))
        self.cache_options = cache
        self.manifest = read_manifest(self.root)
        self.split = S.check_split(split)
        self.verify_checksums = verify
        self._tables: OrderedDict[int, pa.Table] = OrderedDict()
        self._max_open = self.remote.max_open(self.manifest["shards"]) if self.remote else None
        self._verified: set[int] = set()
        shards = self.manifest["shards"]
        self._shard_rows = np.array([int(s["rows"]) for s in shards], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._shard_rows)]).astype(np.int64)
        self._rows = self._select_rows()

    # -- metadata --------------------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        """Class names; labels index into this list."""
        return list(self.manifest["class_names"])

    @property
    def payload(self) -> str:
        """The payload column: 'image', 'text' or 'features'."""
        return self.manifest["payload"]

    @property
    def num_shards(self) -> int:
        """How many shard files the dataset has."""
        return len(self._shard_rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Dataset({self.location!r}, split={self.split!r}, rows={len(self)}, payload={self.payload!r})"

    def class_counts(self) -> dict[str, int]:
        """Rows per class name in this split, counted from the label column."""
        counts = np.bincount(self.labels(), minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}

    def manifest_counts(self) -> dict[str, int]:
        """Rows per class name in this split, as the manifest records them."""
        return counts_by_name(self.manifest, self.split)

    # -- shards ----------------------------------------------------------------------------------

    def _shard_path(self, index: int) -> Path:
        entry = self.manifest["shards"][index]
        if self.remote:
            return self.remote.fetch(entry)  # verified on arrival, and by ``_check`` as a local file
        return shard_file(self.root, entry["file"], self.root / MANIFEST)

    def verify(self) -> None:
        """Check every shard's size and checksum now; raise naming the first damaged shard."""
        for index in range(self.num_shards):
            self._check(index)

    def _check(self, index: int) -> None:
        if index in self._verified:
            return
        entry = self.manifest["shards"][index]
        problem = verify_file(self._shard_path(index), entry["checksum"], entry["bytes"])
        if problem:
            raise AugforgeError(f"{self._shard_path(index)}: {problem}; the shard is damaged, rebuild the dataset")
        self._verified.add(index)

    def shard(self, index: int) -> pa.Table:
        """The whole shard ``index`` as a memory-mapped Arrow table (all splits)."""
        table = self._tables.get(index)
        if self.remote:
            self.remote.used(self.manifest["shards"][index])
            if table is not None:  # still mapped here: marked as used in the cache too, so it is evicted last
                self._tables.move_to_end(index)
                self.remote.touch(self.manifest["shards"][index])
        if table is None:
            if self.verify_checksums and not self.remote:
                self._check(index)
            path, source = self._remote_map(index) if self.remote else (self._shard_path(index), None)
            try:
                table = pa.ipc.open_file(source if source is not None else pa.memory_map(str(path), "r")).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                raise AugforgeError(f"{path}: cannot be read as an Arrow shard ({exc}); rebuild the dataset") from None
            if table.num_rows != self._shard_rows[index]:
                raise AugforgeError(
                    f"{path}: holds {table.num_rows} rows, the manifest says {self._shard_rows[index]}; "
                    "rebuild the dataset"
                )
            self._tables[index] = table
            if self._max_open is not None and len(self._tables) > self._max_open:
                self._tables.popitem(last=False)  # unmapped: the cache may evict its file
        return table

    def _remote_map(self, index: int) -> tuple[Path, pa.Buffer]:
        """A remote shard's cached file, mapped (once mapped, the cache may evict the file: the pages stay),
        checked against its checksum here when ``verify`` (it was on arrival, too). A file another process
        evicted between its fetch and its mapping is fetched again."""
        entry = self.manifest["shards"][index]
        for _ in range(3):
            path = self.remote.fetch(entry)
            try:
                with pa.memory_map(str(path), "r") as mapped:
                    buffer = mapped.read_buffer()
                break
            except FileNotFoundError:
                continue
        else:
            raise AugforgeError(f"{path}: evicted from the cache three times before it could be read; raise "
                                "cache_limit (the ranks sharing it need their shards at once)")
        if self.verify_checksums and index not in self._verified:
            if buffer_checksum(buffer) != entry["checksum"]:
                raise AugforgeError(f"{path}: checksum mismatch with the manifest; the cached shard is damaged, "
                                    "delete it and read again")
            self._verified.add(index)
        return path, buffer

    def _meta(self, index: int) -> pa.Table:
        """Shard ``index``'s label and split columns (a remote shard's from the cache's small copy of them)."""
        read = lambda: self.shard(index).select([S.LABEL, S.SPLIT])  # noqa: E731
        return self.remote.meta(self.manifest["shards"][index], read) if self.remote else read()

    def open_shards(self) -> set[int]:
        """The shards mapped now (all read so far; at most as many as a remote dataset's cache limit holds)."""
        return set(self._tables)

    def _select_rows(self) -> np.ndarray:
        """Global row numbers of this split, in shard order."""
        total = int(self._offsets[-1])
        if self.split == S.ALL_SPLITS:
            return np.arange(total, dtype=np.int64)
        parts = []
        for index, entry in enumerate(self.manifest["shards"]):
            in_split = sum(entry.get("counts", {}).get(self.split, {}).values())
            if in_split == 0:
                continue
            start = self._offsets[index]
            if in_split == entry["rows"]:
                parts.append(np.arange(start, start + entry["rows"], dtype=np.int64))
                continue
            mask = pc.equal(self._meta(index).column(S.SPLIT), self.split)
            parts.append(start + np.flatnonzero(np.asarray(mask)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        return shard, rows - self._offsets[shard]

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where this split's rows at ``positions`` (0..len-1) live: (shard index, row within the shard)."""
        return self._locate(self._rows[np.asarray(positions, dtype=np.int64)])

    # -- rows ------------------------------------------------------------------------------------

    def iter_batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of this split's rows, shard by shard, with the chosen columns."""
        shard_of, local = self._locate(self._rows)
        for index in np.unique(shard_of):
            table = self.shard(int(index))
            if columns is not None:
                table = table.select(list(columns))
            picked = local[shard_of == index]
            if len(picked) != table.num_rows:
                table = table.take(pa.array(picked))
            yield from table.to_batches()

    def take(self, indices: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows at positions ``indices`` of this split (any order, repeats allowed) as one table."""
        positions = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        positions = np.where(positions < 0, positions + n, positions)
        shard_of, local = self._locate(self._rows[positions])
        names = list(columns) if columns is not None else self.shard_schema.names
        pieces, order = [], []
        for index in np.unique(shard_of):
            hit = np.flatnonzero(shard_of == index)
            pieces.append(self.shard(int(index)).select(names).take(pa.array(local[hit])))
            order.append(hit)
        if not pieces:
            return self.shard_schema.empty_table().select(names)
        table = pa.concat_tables(pieces)
        return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))

    def __getitem__(self, index: int) -> dict:
        return self.take([index]).to_pylist()[0]

    @property
    def shard_schema(self) -> pa.Schema:
        """The Arrow schema every shard carries."""
        return self.shard(0).schema if self.num_shards else pa.schema([])

    @property
    def target_columns(self) -> list[str]:
        """The dense target columns (``augforge.datasets.targets``) its rows carry, the semantic mask column
        included where there is one: none for classification."""
        return [name for name in (*TARGET_COLUMNS, SEMANTIC, IMAGE_LABELS) if name in self.shard_schema.names]

    def labels(self) -> np.ndarray:
        """int64 labels of this split, in row order."""
        if self.remote:  # from the small copies of the label columns: no shard downloaded again
            shard_of, local = self._locate(self._rows)
            chunks = [np.asarray(self._meta(int(i)).column(S.LABEL))[local[shard_of == i]] for i in np.unique(shard_of)]
        else:
            chunks = [np.asarray(b.column(0)) for b in self.iter_batches([S.LABEL])]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)

    def texts(self) -> list[str]:
        """The texts of this split, in row order (a text dataset's payload)."""
        if self.payload != S.TEXT:
            raise AugforgeError(f"{self.root}: holds {self.payload} rows, not text")
        return [t for b in self.iter_batches([S.TEXT]) for t in b.column(0).to_pylist()]

    def to_polars(self, columns: Sequence[str] = S.META_COLUMNS) -> pl.DataFrame:
        """The non-payload columns of this split as a polars DataFrame (nothing is decoded)."""
        schema = pa.schema([self.shard_schema.field(c) for c in columns])
        return pl.from_arrow(pa.Table.from_batches(list(self.iter_batches(columns)), schema=schema))

    def torch_dataset(self, transform=None, target_transform=None):
        """This split as a ``torch.utils.data.Dataset`` yielding ``(payload, label)``."""
        from augforge.datasets.torch_view import ShardDataset  # lazy: torch; the allowed reader<->torch_view circle

        return ShardDataset(self.location, split=self.split, transform=transform, target_transform=target_transform,
                            verify=self.verify_checksums, cache=self.cache_options)


def open_dataset(path: str | Path, split: str = "train", verify: bool = True,
                 cache: CacheOptions | None = None) -> Dataset:
    """Open a dataset directory written by ``augforge ingest`` (or any augforge job), or the dataset at an
    ``s3://`` URL (through the local cache ``cache`` describes), for one split."""
    return Dataset(path, split=split, verify=verify, cache=cache)
