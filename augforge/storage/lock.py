"""One writer per prefix: a lock object (``.augforge.lock``) holding its owner and an expiry, created with a
conditional put (S3's ``If-None-Match: *``), renewed with ``If-Match`` while the job runs, deleted at its end.
A second writer is refused in one line naming the owner and when the lock expires; a lock left by a killed job
is taken over once it has expired, or at once on the host that wrote it when its process is gone."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

from augforge.errors import AugforgeError
from augforge.storage.objects import ObjectStore

LOCK = ".augforge.lock"
#: seconds a lock lasts without renewal (a killed job's prefix is free again after this)
TTL_ENV = "AUGFORGE_STORE_LOCK_TTL"
DEFAULT_TTL = 900.0
#: owners of the locks this process holds now
_HELD: set[str] = set()


class StoreLock:
    """The lock of ``store``'s prefix for one job: ``acquire()``, ``renew()`` as work is done, ``release()``."""

    def __init__(self, store: ObjectStore, ttl: float | None = None) -> None:
        self.store = store
        self.ttl = float(ttl if ttl is not None else os.environ.get(TTL_ENV, DEFAULT_TTL))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._e_tag: str | None = None
        self._renewed = 0.0

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "created": now, "expires": now + self.ttl}).encode()

    def acquire(self) -> None:
        """Take the lock, or raise naming the job that holds it. An expired lock is replaced (over its ETag,
        so that two jobs taking over the same expired lock cannot both win)."""
        e_tag = self.store.put(LOCK, self._body(), if_absent=True)
        if e_tag is None:
            held = self.store.head(LOCK)
            try:
                state = json.loads(self.store.get(LOCK)) if held else {}
            except (AugforgeError, ValueError):
                state = {}
            expires = float(state.get("expires", 0) or 0)
            if held and expires > time.time() and not _abandoned(str(state.get("owner", ""))):
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
                raise AugforgeError(f"{self.store.url}: another job is writing here ({state.get('owner', '?')}, "
                                    f"its lock expires {when}); wait for it or write elsewhere")
            e_tag = self.store.put(LOCK, self._body(), if_match=held["e_tag"]) if held else \
                self.store.put(LOCK, self._body(), if_absent=True)
            if e_tag is None:
                raise AugforgeError(f"{self.store.url}: another job took over the expired lock first; "
                                    "wait for it or write elsewhere")
        self._e_tag, self._renewed = e_tag, time.monotonic()
        _HELD.add(self.owner)

    def renew(self, every: float | None = None) -> None:
        """Push the expiry forward (at most once per ``every`` seconds, a tenth of the TTL by default); a lock
        that is no longer ours (expired and taken over) ends the job in one line."""
        if self._e_tag is None or time.monotonic() - self._renewed < (self.ttl / 10 if every is None else every):
            return
        e_tag = self.store.put(LOCK, self._body(), if_match=self._e_tag)
        if e_tag is None:
            raise AugforgeError(f"{self.store.url}: this job's lock expired and another job took the prefix; "
                                "stopping before writing more")
        self._e_tag, self._renewed = e_tag, time.monotonic()

    def release(self) -> None:
        """Delete the lock if it is still ours."""
        mine, self._e_tag = self._e_tag, None
        if mine is None:
            return
        _HELD.discard(self.owner)  # first: a store out of reach leaves a lock that this host can take over
        held = self.store.head(LOCK)
        if held and held["e_tag"] == mine:
            self.store.delete(LOCK)


def _abandoned(owner: str) -> bool:
    """Whether a lock of ``owner`` (``host:pid:tag``) was left by a process of this host that is gone, or by
    this process in a job that has ended: then nobody writes under it, whatever its expiry says."""
    host, _, rest = owner.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner not in _HELD
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
