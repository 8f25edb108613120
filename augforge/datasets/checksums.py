"""Shard checksums: xxh3-128 over the file's bytes."""

from __future__ import annotations

import mmap
from pathlib import Path

import xxhash

ALGORITHM = "xxh3_128"


def file_checksum(path: str | Path) -> str:
    """``"xxh3_128:<hex>"`` of the whole file, read through a memory map."""
    path = Path(path)
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        if path.stat().st_size:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                hasher.update(mm)
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def buffer_checksum(buffer) -> str:
    """``"xxh3_128:<hex>"`` of a buffer (a memory-mapped shard: what a reader then holds, whatever happens to
    the file)."""
    hasher = xxhash.xxh3_128()
    hasher.update(memoryview(buffer))
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def verify_file(path: str | Path, expected_checksum: str, expected_bytes: int) -> str | None:
    """Why the file does not match its manifest entry, or None when it does."""
    path = Path(path)
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != expected_bytes:
        return f"size is {size} bytes, the manifest says {expected_bytes}"
    actual = file_checksum(path)
    if actual != expected_checksum:
        return f"checksum mismatch (file {actual}, manifest {expected_checksum})"
    return None
