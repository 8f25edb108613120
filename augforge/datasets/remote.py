"""A dataset at an object-store URL, read through a local cache: the manifest fetched fresh on every open, each
shard downloaded when first needed (or ahead of the reader, ``predownload``), verified by its checksum on
arrival, kept under ``cache_limit`` bytes by evicting the least recently used shards.

Cached shards are named by their checksum as well as their name, so a dataset rebuilt under the same URL never
reads a stale shard. Every process that opens the same URL with the same ``cache_dir`` shares the cache (the
ranks of one node, DALI's reader processes): a shard is downloaded once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from augforge.atomic import atomic_path, write_bytes
from augforge.datasets.checksums import verify_file
from augforge.datasets.manifest import MANIFEST
from augforge.errors import AugforgeError, OptionError
from augforge.storage.cache import META, FileCache, cache_root, parse_size
from augforge.storage.objects import ObjectStore
from augforge.storage.urls import StoreURL, parse_url


@dataclass(frozen=True)
class CacheOptions:
    """How a remote dataset is cached: ``cache_dir`` (default ``$AUGFORGE_CACHE/datasets``), ``cache_limit``
    (bytes, or a size such as ``"20GB"``; None: no limit), ``predownload`` (shards fetched ahead of the reader;
    0: none)."""

    cache_dir: str | None = None
    cache_limit: int | str | None = None
    predownload: int = 2

    def __post_init__(self) -> None:
        parse_size(self.cache_limit)
        if self.predownload < 0:
            raise OptionError("{predownload} {value}: expected 0 or more shards", value=self.predownload)


class RemoteShards:
    """The shards of the dataset at ``url``, through a ``FileCache`` (see the module docstring)."""

    def __init__(self, url: str, options: CacheOptions | None = None) -> None:
        self.options = options or CacheOptions()
        self.url = parse_url(url, "path")
        self.store = ObjectStore(self.url)
        base = Path(self.options.cache_dir) if self.options.cache_dir else cache_root() / "datasets"
        self.cache = FileCache(base / self.url.slug(), parse_size(self.options.cache_limit))
        self.root = self.cache.root
        manifest = self.store.get(MANIFEST, missing_ok=True)
        if manifest is None:
            raise AugforgeError(f"{self.url}: not an augforge dataset (no {MANIFEST}; a build still running or "
                                "killed writes it last)")
        write_bytes(self.root / MANIFEST, manifest)
        self._prefetcher: Prefetcher | None = None

    def local_path(self, entry: dict) -> Path:
        """Where shard ``entry`` (a manifest entry) lives in the cache: its name with its checksum."""
        file = Path(entry["file"])
        digest = str(entry["checksum"]).split(":")[-1][:16]
        return self.cache.path(f"{file.parent}/{file.stem}-{digest}{file.suffix}")

    def fetch(self, entry: dict) -> Path:
        """Shard ``entry`` in the cache, downloaded and verified where it is not there yet."""
        local = self.local_path(entry)
        name = str(local.relative_to(self.cache.root))
        return self.cache.fetch(name, int(entry["bytes"]), lambda tmp: self.store.read_into(entry["file"], tmp),
                                lambda tmp: verify_file(tmp, entry["checksum"], entry["bytes"]),
                                where=str(self.url.child(entry["file"])))

    def meta(self, entry: dict, read: Callable[[], pa.Table]) -> pa.Table:
        """The label and split columns of shard ``entry``: from a small file kept beside the cache (outside its
        limit) once ``read()`` has read them from the shard, so that opening a split or listing its labels
        again downloads nothing."""
        local = self.local_path(entry)
        path = self.cache.root / META / f"{local.stem}.arrow"
        if path.is_file():
            try:
                return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            except (OSError, pa.ArrowInvalid):
                path.unlink(missing_ok=True)  # damaged: read from the shard again
        table = read()
        with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
            ipc.write_table(table)
        return table

    def touch(self, entry: dict) -> None:
        """Mark shard ``entry`` as just used (the least recently used go first)."""
        self.cache.touch(self.local_path(entry))

    def max_open(self, entries: list[dict]) -> int | None:
        """How many shards a reader may hold mapped at once within the limit (None: no limit)."""
        if self.cache.limit is None or not entries:
            return None
        return max(1, self.cache.limit // max(int(e["bytes"]) for e in entries))

    def prefetch(self, entries: list[dict]) -> "Prefetcher | None":
        """Start fetching ``entries`` (in the order the reader will need them) ``predownload`` ahead of it,
        replacing an earlier prefetch; None when ``predownload`` is 0."""
        self.stop_prefetch()
        if self.options.predownload and entries:
            self._prefetcher = Prefetcher(self, entries, self.options.predownload)
        return self._prefetcher

    def stop_prefetch(self) -> None:
        """Stop the background downloads (the one under way finishes)."""
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def used(self, entry: dict) -> None:
        """Tell the prefetcher that the reader has reached shard ``entry``."""
        if self._prefetcher is not None:
            self._prefetcher.reached(entry["file"])


def fetch_file(url: str, option: str = "source") -> Path:
    """The object at ``url`` (a table file) in the local cache (``$AUGFORGE_CACHE/sources``), downloaded whole
    when the cache lacks this version of it (the cached name carries the object's ETag)."""
    parsed = parse_url(url, option)
    folder, _, name = parsed.prefix.rpartition("/")
    parent = StoreURL(parsed.scheme, parsed.bucket, folder)
    store = ObjectStore(parent)
    head = store.head(name)
    if head is None:
        raise AugforgeError(f"{url}: no such object")
    tag = "".join(c for c in str(head["e_tag"] or head["size"]) if c.isalnum())[:16]
    cache = FileCache(cache_root() / "sources" / parent.slug())
    stem, dot, suffix = name.rpartition(".")
    local = f"{stem}-{tag}.{suffix}" if dot else f"{name}-{tag}"
    return cache.fetch(local, head["size"], lambda tmp: store.read_into(name, tmp), where=url)


class Prefetcher:
    """A thread that downloads an epoch's shards in the order of first use, at most ``ahead`` shards beyond the
    one the reader last reached. A failure is kept and raised by the reader's own fetch of that shard."""

    def __init__(self, shards: RemoteShards, entries: list[dict], ahead: int) -> None:
        self.shards, self.entries, self.ahead = shards, entries, ahead
        self.position = {entry["file"]: i for i, entry in reversed(list(enumerate(entries)))}
        self.reader_at = -1
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="augforge-predownload")
        self._thread.start()

    def reached(self, file: str) -> None:
        """The reader uses shard ``file`` now."""
        with self._cv:
            self.reader_at = max(self.reader_at, self.position.get(file, self.reader_at))
            self._cv.notify_all()

    def _run(self) -> None:
        for index, entry in enumerate(self.entries):
            with self._cv:
                while not self._stop and index > self.reader_at + self.ahead:
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    return
            try:
                self.shards.fetch(entry)
            except AugforgeError:
                return  # the reader meets the same error, naming the object, when it gets there

    def stop(self) -> None:
        """Stop after the download under way."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=60)
