"""A local cache of remote files (a remote dataset's shards): a directory with a size limit, least recently used
files evicted first, every file downloaded whole (a temporary name renamed once complete and verified), and
locks that let the ranks of one node share it (one download per file; a rank waiting for another's download
then uses it).

A killed process leaves at most a temporary file, never a file under a final name; the next ``fetch`` of that
file removes it. A download reserves its whole size when it starts (the size is part of its temporary name), so
concurrent downloads, from threads or from the ranks of a node, never take the cache past its limit. Files are
verified on arrival by the caller's ``verify`` (a checksum against the manifest); a mismatch removes the
download and raises naming the object.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from augforge.atomic import TMP_PREFIX
from augforge.errors import AugforgeError, OptionError

#: the default cache root (``$AUGFORGE_CACHE``, else ``~/.cache/augforge``)
CACHE_ENV = "AUGFORGE_CACHE"
LOCKS = ".locks"
#: small files derived from cached ones (kept outside the limit: they outlive the files they came from)
META = ".meta"
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
         "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def cache_root() -> Path:
    """Where caches live unless a ``cache_dir`` is given: ``$AUGFORGE_CACHE`` or ``~/.cache/augforge``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "augforge")


def parse_size(value, option: str = "cache_limit") -> int | None:
    """A byte count from an int or a string such as ``"20GB"``, ``"512MiB"``; None stays None (no limit)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        text = str(value).strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        number, unit = (float(digits) if digits else -1.0), text[len(digits):]
    if unit not in UNITS or not number > 0:
        raise OptionError("{%s} {value}: expected a size such as 20GB or 512MiB" % option, value=value)
    return int(number * UNITS[unit])


class FileCache:
    """Files of one remote location under ``root`` (``limit`` bytes at most, None for no limit)."""

    def __init__(self, root: str | Path, limit: int | None = None) -> None:
        self.root = Path(root)
        self.limit = limit
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / LOCKS).mkdir(exist_ok=True)
        (self.root / META).mkdir(exist_ok=True)
        self.downloaded: list[str] = []  # names this process downloaded, in order (a warm cache downloads none)
        self.evictions = 0
        self._count = threading.Lock()

    def path(self, name: str) -> Path:
        """Where ``name`` lives in the cache (whether or not it is there)."""
        return self.root / name

    def used(self) -> int:
        """Bytes the cached files (and downloads under way) take."""
        return sum(size for _, size, _ in self._files())

    def fetch(self, name: str, size: int, download: Callable[[Path], object],
              verify: Callable[[Path], str | None] = lambda path: None, where: str | None = None) -> Path:
        """The local path of ``name`` (``size`` bytes): from the cache, marked as just used, or put there by
        ``download(tmp_path)`` after room is made and ``verify(tmp_path)`` finds no problem (else the download
        is removed and the problem raised naming ``where``)."""
        final = self.path(name)
        if self.touch(final):
            return final
        if self.limit is not None and size > self.limit:
            raise OptionError("{cache_limit} {limit} bytes is smaller than {name} ({size} bytes): give at least "
                              "the largest shard's size", limit=self.limit, name=where or name, size=size)
        with self._locked(f"{name}.lock"):
            if self.touch(final):  # another rank downloaded it while this one waited
                return final
            self._remove_stale(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f"{TMP_PREFIX}{final.name}.{size}.{uuid.uuid4().hex[:8]}"
            with self._locked("cache.lock"):  # room made and reserved at once: the reservation is the name
                self._evict(size, keep=final)
                tmp.touch()
            try:
                download(tmp)
                problem = verify(tmp)
                if problem:
                    raise AugforgeError(f"{where or name}: {problem}; the object in the store is damaged "
                                        "(nothing was cached): rebuild or re-upload the dataset")
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            with self._count:
                self.downloaded.append(name)
        return final

    def _evict(self, need: int, keep: Path | None = None) -> None:
        """Evict least recently used files until ``need`` more bytes fit under the limit (the cache lock
        held)."""
        if self.limit is None:
            return
        files = sorted(self._files(), key=lambda entry: entry[2])  # oldest use first
        used = sum(size for _, size, _ in files)
        for path, size, _ in files:
            if used + need <= self.limit:
                break
            if path == keep or path.name.startswith(TMP_PREFIX):
                continue
            path.unlink(missing_ok=True)  # a reader holding it mapped keeps its pages until it lets go
            used -= size
            with self._count:
                self.evictions += 1

    def _files(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of every file in the cache but the locks and the derived files; a download
        under way counts the whole size it reserved (carried in its temporary name)."""
        out = []
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d not in (LOCKS, META)]
            for name in files:
                path = Path(directory) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                size = stat.st_size
                if name.startswith(TMP_PREFIX):
                    reserved = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
                    size = max(size, int(reserved)) if reserved.isdigit() else size
                out.append((path, size, stat.st_mtime))
        return out

    @staticmethod
    def touch(path: Path) -> bool:
        """Mark ``path`` as just used; False when it is not in the cache."""
        try:
            os.utime(path)  # now
            return True
        except FileNotFoundError:
            return False

    @staticmethod
    def _remove_stale(final: Path) -> None:
        """Temporary files of ``final`` that a killed download left (this process holds its lock now)."""
        for leftover in final.parent.glob(f"{TMP_PREFIX}{final.name}.*") if final.parent.exists() else ():
            leftover.unlink(missing_ok=True)

    @contextmanager
    def _locked(self, name: str):
        """An exclusive fcntl lock on ``.locks/<name>`` (shared by every process using this cache)."""
        path = self.root / LOCKS / name.replace("/", "__")
        with open(path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
