"""Write a dataset to an object-store URL (``s3://bucket/prefix``) on a store that has no rename.

``remote_output(out, overwrite)`` wraps any job that writes a dataset directory (ingest, balance, build, on the
local engine or Ray): the job writes into a local staging directory with the ordinary resumable writer, and
every shard it commits goes up to the store at once (whole: a multipart upload completes or nothing is
visible), its checksum in the object's metadata, followed by the job's journal. The manifest goes up last, so a
reader sees the dataset complete or not at all. While the job runs, a lock object (``StoreLock``) keeps a second
writer out.

A killed job resumes from what the store holds, on this machine or another: the store's journal and the shards
it lists are brought back into staging (each verified by its checksum), and the writer carries on after them,
so the result equals an uninterrupted build byte for byte. A failed fresh job removes what it uploaded. The
staging directory is removed once the manifest is up; a build needs local disk for the dataset meanwhile.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from augforge.atomic import write_bytes
from augforge.datasets.checksums import verify_file
from augforge.datasets.manifest import MANIFEST, PROGRESS, SHARDS_DIR
from augforge.datasets.writer import COMMITTED, OtherDataset
from augforge.errors import AugforgeError, OptionError
from augforge.storage.cache import cache_root
from augforge.storage.lock import LOCK, StoreLock
from augforge.storage.objects import ObjectStore, StoreError
from augforge.storage.urls import StoreURL, parse_url, remote

#: the object metadata key that holds a shard's checksum
CHECKSUM = "augforge-checksum"


def output_location(out, option: str = "out"):
    """``out`` checked before any work: a local path (or None) as it is, an ``s3://`` URL parsed (a scheme
    augforge does not write is refused in one line naming ``option``)."""
    if remote(out):
        parse_url(out, option)
    return out


@contextmanager
def remote_output(out, overwrite: bool = False, option: str = "out") -> Iterator:
    """``out`` itself when it is a local path (or None); for a URL, a local staging directory that the job
    writes into while this publishes it (see the module docstring). Errors that name the staging directory
    name the URL instead."""
    if not remote(out):
        yield out
        return
    url = parse_url(out, option)
    store = ObjectStore(url)
    staging = cache_root() / "staging" / url.slug()
    lock = StoreLock(store)
    lock.acquire()
    uploaded: list[str] = []
    try:
        _mirror(store, staging, overwrite)
        token = COMMITTED.set(lambda root, journal: _commit(store, lock, root, journal, uploaded))
        try:
            yield staging
        finally:
            COMMITTED.reset(token)
        _publish(store, lock, staging)
    except BaseException as exc:
        if not (staging / PROGRESS).is_file() and not (staging / MANIFEST).is_file():  # a fresh job that failed
            try:
                for name in [*uploaded, PROGRESS]:
                    store.delete(name)
            except StoreError:  # the store is out of reach: what it holds stays resumable (its journal lists it)
                pass
        if isinstance(exc, AugforgeError):
            raise _renamed(exc, staging, url) from None
        raise
    finally:
        try:
            lock.release()
        except StoreError:  # out of reach: the lock expires by itself
            pass
    shutil.rmtree(staging, ignore_errors=True)


def _mirror(store: ObjectStore, staging: Path, overwrite: bool) -> None:
    """Put into staging what the store holds for this prefix, so that the writer decides as it would locally:
    the manifest (a complete dataset: up to date, or another one), else the journal and its shards (resume),
    else nothing (a fresh write)."""
    for name in (MANIFEST, PROGRESS):
        (staging / name).unlink(missing_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    manifest = store.get(MANIFEST, missing_ok=True)
    if manifest is not None:
        write_bytes(staging / MANIFEST, manifest)
        return
    journal = store.get(PROGRESS, missing_ok=True)
    if journal is None:
        if not overwrite and any(name != LOCK for name in store.names()):
            raise AugforgeError(f"{store.url}: holds objects that are not an augforge dataset; choose an empty "
                                "prefix")
        shutil.rmtree(staging)  # what an earlier job left here belongs to nothing the store holds
        staging.mkdir(parents=True)
        return
    journal = json.loads(journal)
    for entry in journal.get("shards", []):
        local = staging / entry["file"]
        if verify_file(local, entry["checksum"], entry["bytes"]) is None:
            continue  # this machine's staging has it already
        local.parent.mkdir(parents=True, exist_ok=True)
        head = store.head(entry["file"])
        if head is None:
            raise AugforgeError(f"{store.url.child(entry['file'])}: listed in the store's journal but missing; "
                                "pass --overwrite to start again")
        store.read_into(entry["file"], local)
        problem = verify_file(local, entry["checksum"], entry["bytes"])
        if problem:
            local.unlink()
            raise AugforgeError(f"{store.url.child(entry['file'])}: {problem}; the unfinished build cannot be "
                                "resumed from it, pass --overwrite to start again")
    write_bytes(staging / PROGRESS, json.dumps(journal, indent=2).encode() + b"\n")


def _upload_shard(store: ObjectStore, root: Path, entry: dict) -> bool:
    """Shard ``entry`` up to the store unless it holds it already (same size and checksum); True if sent."""
    head = store.head(entry["file"])
    if head and head["size"] == entry["bytes"] and head["metadata"].get(CHECKSUM) == entry["checksum"]:
        return False
    store.put(entry["file"], root / entry["file"], {CHECKSUM: entry["checksum"]})
    return True


def _commit(store: ObjectStore, lock: StoreLock, root: Path, journal: dict, uploaded: list[str]) -> None:
    """After a shard is committed locally: it, then the journal that lists it, go up."""
    lock.renew()
    entry = journal["shards"][-1]
    if not uploaded and len(journal["shards"]) == 1:  # a fresh write: an older dataset here stops being one
        store.delete(MANIFEST)
    if _upload_shard(store, root, entry):
        uploaded.append(entry["file"])
    store.put(PROGRESS, json.dumps(journal, indent=2).encode() + b"\n")


def _publish(store: ObjectStore, lock: StoreLock, staging: Path) -> None:
    """After the job: every shard of the manifest in the store (verified by size and checksum metadata), the
    manifest last, then the journal and shards of an older dataset removed."""
    manifest_bytes = (staging / MANIFEST).read_bytes()
    if store.get(MANIFEST, missing_ok=True) == manifest_bytes:
        return  # up to date: nothing was written
    manifest = json.loads(manifest_bytes)
    for entry in manifest["shards"]:
        lock.renew()
        if not (staging / entry["file"]).is_file():
            head = store.head(entry["file"])
            if head is None or head["metadata"].get(CHECKSUM) != entry["checksum"]:
                raise AugforgeError(f"{store.url.child(entry['file'])}: missing from the store and from staging; "
                                    "rebuild with --overwrite")
            continue
        _upload_shard(store, staging, entry)
    store.put(MANIFEST, manifest_bytes)
    store.delete(PROGRESS)
    keep = {entry["file"] for entry in manifest["shards"]}
    for name in store.names(SHARDS_DIR):
        if name not in keep:
            store.delete(name)


def _renamed(exc: AugforgeError, staging: Path, url: StoreURL) -> AugforgeError:
    """``exc`` with the staging directory named as the URL the user gave."""
    if isinstance(exc, OtherDataset):
        return OtherDataset(str(url), exc.what)
    if isinstance(exc, OptionError):
        exc.values = {k: str(v).replace(str(staging), str(url)) if isinstance(v, (str, Path)) else v
                      for k, v in exc.values.items()}
        exc.args = (exc.render(),)
        return exc
    return AugforgeError(str(exc).replace(str(staging), str(url)))
