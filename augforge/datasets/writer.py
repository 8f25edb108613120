"""Write record batches into a dataset directory: atomic shards, a resume journal, the manifest last."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augforge import __version__
from augforge.atomic import TMP_PREFIX, atomic_open, atomic_path, write_json
from augforge.datasets import schema as S
from augforge.datasets.checksums import file_checksum, verify_file
from augforge.datasets.manifest import FORMAT, LOCK, MANIFEST, PROGRESS, SHARDS_DIR, read_json, shard_file
from augforge.errors import AugforgeError, OptionError
from augforge.faults import fault_point

DEFAULT_SHARD_MB = 64.0
#: called with (root, journal) after each shard is committed and the journal lists it: how a remote output
#: uploads shards as they are made (``augforge.datasets.publish``); None for a local one
COMMITTED: ContextVar[Callable[[Path, dict], None] | None] = ContextVar("augforge_shard_committed", default=None)


class OtherDataset(AugforgeError):
    """The directory holds a different dataset (complete or not); the job's own option replaces it."""

    def __init__(self, root: Path, what: str, flag: str = "--overwrite") -> None:
        self.root, self.what = root, what
        super().__init__(self.with_flag(flag))

    def with_flag(self, flag: str) -> str:
        """The message, naming the option of the command that was run (``--overwrite``, ``--rebuild``)."""
        return f"{self.root}: {self.what}; pass {flag} to replace it or choose another directory"


class AlreadyComplete(Exception):
    """The directory already holds the complete dataset this writer would produce."""

    def __init__(self, manifest: dict) -> None:
        super().__init__("dataset already complete")
        self.manifest = manifest


def row_nbytes(batch: pa.RecordBatch) -> np.ndarray:
    """Approximate bytes of each row: variable-length values by length, fixed-width by width."""
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        kind = column.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_string(kind) \
                or pa.types.is_large_string(kind):
            lengths = pc.fill_null(pc.binary_length(column), 0)
            sizes += np.asarray(lengths, dtype=np.int64) + 8
        elif pa.types.is_fixed_size_list(kind):
            sizes += kind.list_size * max(kind.value_type.bit_width // 8, 1)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):  # targets: the column's bytes by list length
            lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0), dtype=np.int64)
            share = lengths / max(1, int(lengths.sum()))
            sizes += (share * column.nbytes).astype(np.int64) + 8
        else:
            sizes += max(kind.bit_width // 8, 1)
    return sizes


class DatasetWriter:
    """Cut an ordered stream of rows into shards of ``shard_rows`` rows or about ``shard_mb`` MB.

    Shard boundaries depend only on the row sequence, so a build resumed from the
    journal writes the same shards as an uninterrupted one. Each shard is written
    to a temporary name, checksummed and renamed; the journal ``.augforge-progress.json``
    lists committed shards; ``close()`` writes ``manifest.json`` last.
    """

    def __init__(
        self,
        root: str | Path,
        schema: pa.Schema,
        class_names: list[str],
        *,
        fingerprint: str,
        meta: dict | None = None,
        shard_rows: int | None = None,
        shard_mb: float | None = None,
        overwrite: bool = False,
        learned=None,
    ) -> None:
        if shard_rows is not None and shard_rows < 1:
            raise OptionError("{shard_rows} {value}: expected a positive number of rows", value=shard_rows)
        if shard_mb is not None and not shard_mb > 0:
            raise OptionError("{shard_mb} {value}: expected a positive size in MB", value=shard_mb)
        if shard_rows is None and shard_mb is None:
            shard_mb = DEFAULT_SHARD_MB
        self.root = Path(root)
        self.schema = schema
        self.class_names = list(class_names)
        self.fingerprint = fingerprint
        self.meta = dict(meta or {})
        #: ``learned()`` gives manifest keys only known once rows are written (a raw image shape): kept in the
        #: journal with every shard, so a resumed write that makes no more rows still has them
        self.learned = learned or (lambda: {})
        self._learned: dict = {}
        self.shard_rows = shard_rows
        self.shard_bytes = int(shard_mb * 1_000_000) if shard_mb is not None else None
        self.shards: list[dict] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._created_root = False
        self._resumed = False
        self._prepare(overwrite)

    # -- directory state -------------------------------------------------------------------------

    @property
    def rows_done(self) -> int:
        """Rows already committed to shards (the producer skips this many on resume)."""
        return sum(entry["rows"] for entry in self.shards)

    @property
    def resumed(self) -> bool:
        """Whether this writer picked up an interrupted build."""
        return self._resumed

    def _prepare(self, overwrite: bool) -> None:
        """Take the directory: created if missing, locked for the whole job, then resumed, replaced or
        refused; a new write marks it as augforge's (an empty journal) before anything else is created."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise AugforgeError(f"{root}: exists and is not a directory; choose another output path")
        done = None if overwrite else complete_manifest(root, self.fingerprint)
        if done is not None:  # complete and the same: a read, no lock needed
            raise AlreadyComplete(done)
        self._created_root = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            fresh = self._take(overwrite)
            if fresh:
                write_json(root / PROGRESS, {"fingerprint": self.fingerprint, "shards": [], "learned": {}})
                fault_point("marked")
        except BaseException:  # refused, or a journal that cannot be resumed: the lock goes with it
            self._unlock()
            raise
        (root / SHARDS_DIR).mkdir(exist_ok=True)

    def _take(self, overwrite: bool) -> bool:
        """Under the lock: resume the same unfinished write, replace another dataset (``overwrite``) or refuse
        it; True when the write starts afresh."""
        root = self.root
        if (root / MANIFEST).is_file():
            old = read_json(root / MANIFEST, "augforge manifest")
            if old.get("fingerprint") == self.fingerprint and not overwrite:
                raise AlreadyComplete(old)
            if not overwrite:
                raise OtherDataset(root, f"holds another dataset (from "
                                         f"{old.get('source', {}).get('location', '?')})")
        elif (root / PROGRESS).is_file():
            journal = read_json(root / PROGRESS, "augforge progress journal")
            if journal.get("fingerprint") == self.fingerprint and not overwrite:
                self._resume(journal)
                return False
            if not overwrite:
                raise OtherDataset(root, "holds an unfinished build of different input")
        elif any(not _leftover(path) for path in root.iterdir()):
            raise AugforgeError(
                f"{root}: directory is not empty and is not an augforge dataset; choose an empty or new directory"
            )
        # another dataset to replace, or a new directory, or what a job killed before its mark left there
        self._clear()
        return True

    def _lock(self) -> None:
        """Hold an exclusive fcntl lock on ``root/.augforge.lock`` until close or abort; another job holding it is
        named in one line. The file is checked to still be the one locked (a job may remove it as it ends)."""
        import fcntl

        path = self.root / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise AugforgeError(f"{self.root}: another augforge job is writing it ({holder}); wait for it to "
                                    "finish or choose another directory") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        """Give the lock up and remove its file (a finished directory holds only the dataset)."""
        fd = getattr(self, "_lock_fd", None)
        if fd is None:
            return
        (self.root / LOCK).unlink(missing_ok=True)
        os.close(fd)
        self._lock_fd = None

    def _clear(self) -> None:
        """Remove an old dataset: manifest first, so the directory is never taken for complete."""
        (self.root / MANIFEST).unlink(missing_ok=True)
        (self.root / PROGRESS).unlink(missing_ok=True)
        shutil.rmtree(self.root / SHARDS_DIR, ignore_errors=True)
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Temporary files a killed job left beside the manifest and the journal."""
        for path in self.root.glob(TMP_PREFIX + "*"):
            path.unlink(missing_ok=True)

    def _resume(self, journal: dict) -> None:
        shards_dir = self.root / SHARDS_DIR
        for entry in journal.get("shards", []):
            problem = verify_file(shard_file(self.root, entry["file"], self.root / PROGRESS), entry["checksum"],
                                  entry["bytes"])
            if problem:
                raise AugforgeError(
                    f"{self.root / entry['file']}: {problem}; the unfinished build cannot be resumed, "
                    "pass --overwrite to start again"
                )
        self.shards = list(journal.get("shards", []))
        self._learned = dict(journal.get("learned") or {})
        listed = {Path(entry["file"]).name for entry in self.shards}
        for path in shards_dir.iterdir() if shards_dir.exists() else ():
            if path.name not in listed:  # a shard renamed after the last journal entry, or a temp file
                path.unlink()
        self._remove_temporaries()
        self._resumed = bool(self.shards)

    # -- writing ---------------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        """Append rows; full shards are written as soon as they are complete."""
        try:
            batch = pa.RecordBatch.from_arrays([batch.column(n) for n in self.schema.names], schema=self.schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise AugforgeError(f"rows do not match the dataset schema ({exc})") from None
        sizes = row_nbytes(batch)
        start = 0
        while start < batch.num_rows:
            take = batch.num_rows - start
            if self.shard_rows is not None:
                take = min(take, self.shard_rows - self._pending_rows)
            if self.shard_bytes is not None:
                room = self.shard_bytes - self._pending_bytes
                cumulative = np.cumsum(sizes[start : start + take])
                crossing = int(np.searchsorted(cumulative, room, side="left"))
                if crossing < take:
                    take = crossing + 1  # the row that reaches the limit closes the shard
            self._pending.append(batch.slice(start, take))
            self._pending_rows += take
            self._pending_bytes += int(sizes[start : start + take].sum())
            start += take
            if (self.shard_rows is not None and self._pending_rows >= self.shard_rows) or (
                self.shard_bytes is not None and self._pending_bytes >= self.shard_bytes
            ):
                self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema).combine_chunks()
        # A take rebuilds every buffer at its exact size, so equal rows give equal bytes however the
        # incoming batches were sliced (an all-null column may otherwise carry an unused values buffer).
        table = table.take(pa.array(np.arange(table.num_rows)))
        name = f"part-{len(self.shards):05d}.arrow"
        final = self.root / SHARDS_DIR / name
        with atomic_path(final) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, self.schema) as ipc:
                ipc.write_table(table)
            checksum = file_checksum(tmp)
            size = tmp.stat().st_size
        self.shards.append(
            {
                "file": f"{SHARDS_DIR}/{name}",
                "rows": table.num_rows,
                "bytes": size,
                "checksum": checksum,
                "counts": self._counts(table),
            }
        )
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        journal = {"fingerprint": self.fingerprint, "shards": self.shards, "learned": self._learn()}
        write_json(self.root / PROGRESS, journal)
        listener = COMMITTED.get()
        if listener is not None:
            listener(self.root, journal)
        fault_point("shard")

    def _learn(self) -> dict:
        """What the producer has learned so far, over what the journal had."""
        self._learned = {**self._learned, **self.learned()}
        return self._learned

    def _counts(self, table: pa.Table) -> dict[str, dict[str, int]]:
        labels = table.column(S.LABEL).to_numpy()
        splits = np.asarray(table.column(S.SPLIT).to_pylist(), dtype=object)
        out = {}
        for split in S.SPLITS:
            per_class = np.bincount(labels[splits == split], minlength=len(self.class_names))
            if per_class.sum():
                out[split] = {name: int(n) for name, n in zip(self.class_names, per_class)}
        return out

    def close(self) -> dict:
        """Write the last shard and the manifest; return the manifest."""
        self._flush()
        counts: dict[str, dict[str, int]] = {}
        for entry in self.shards:
            for split, per_class in entry["counts"].items():
                into = counts.setdefault(split, dict.fromkeys(self.class_names, 0))
                for name, n in per_class.items():
                    into[name] += n
        manifest = {
            "format": FORMAT,
            "augforge_version": __version__,
            "created": created_time(),
            "fingerprint": self.fingerprint,
            "payload": S.payload_of(self.schema),
            "schema": {field.name: str(field.type) for field in self.schema},
            "class_names": self.class_names,
            "num_rows": self.rows_done,
            "counts": {split: counts[split] for split in S.SPLITS if split in counts},
            **_merged(self.meta, self._learn()),
            "shards": self.shards,
        }
        fault_point("before-manifest")
        with atomic_open(self.root / MANIFEST) as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
            fh.flush()
            fault_point("manifest-write")
        (self.root / PROGRESS).unlink(missing_ok=True)
        self._unlock()
        return manifest

    def release(self) -> None:
        """Stop without undoing anything (an interrupt): the journal stays, and the same job resumes."""
        self._unlock()

    def abort(self) -> None:
        """Undo a failed write: a fresh build leaves nothing behind, a resumed one keeps its journal."""
        for path in (self.root / SHARDS_DIR).glob(TMP_PREFIX + "*"):
            path.unlink(missing_ok=True)
        self._remove_temporaries()
        if not self._resumed:
            self._clear()
        self._unlock()
        if not self._resumed and self._created_root and self.root.exists() and not any(self.root.iterdir()):
            self.root.rmdir()


def created_time() -> str:
    """The manifest's ``created``: now (UTC), or ``SOURCE_DATE_EPOCH`` when set (the reproducible-builds
    convention), so that two builds of the same recipe can be byte-identical, manifest included."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise AugforgeError(f"SOURCE_DATE_EPOCH={epoch!r}: expected whole seconds since 1970") from None
    else:
        moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def _merged(meta: dict, learned: dict) -> dict:
    """``meta`` with ``learned`` laid over it, mappings merged one level deep (payload_info gains keys)."""
    out = dict(meta)
    for key, value in learned.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def complete_manifest(root: str | Path, fingerprint: str) -> dict | None:
    """The manifest of ``root`` when it is a complete dataset with this fingerprint, else None (a read only)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path, "augforge manifest")
    return manifest if manifest.get("fingerprint") == fingerprint else None


def _leftover(path: Path) -> bool:
    """What a job killed before marking its directory can have left there: the lock, temporary files, an empty
    shards folder."""
    if path.name == LOCK or path.name.startswith(TMP_PREFIX):
        return True
    return path.name == SHARDS_DIR and path.is_dir() and not any(path.iterdir())


#: errno values of a full disk or file-size limit
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
