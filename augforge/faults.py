"""Named crash points for the fault-injection tests: ``AUGFORGE_FAULT=point`` (or ``point@N``, its N-th time)
kills the process with SIGKILL when it reaches that point, so that tests choose exactly where a job dies
instead of guessing with sleeps. Without the variable a point costs one dictionary lookup.

Points: ``marked`` (the output directory is marked as augforge's), ``shard`` (a shard and its journal entry
are committed), ``before-manifest`` (every shard is written, the manifest is not), ``manifest-write`` (the
manifest's temporary file is written, not yet renamed), ``ray-unit`` (a Ray worker has started a unit of
work and not returned it).

``AUGFORGE_FAULT_ONCE=FILE`` makes the kill happen once across processes: in the first process that creates
FILE. Ray workers inherit the variables of the driver that starts the Ray instance, so a test can kill
exactly one worker mid-task and watch Ray retry it.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here when ``AUGFORGE_FAULT`` names this point (and, with ``@N``, this is its N-th hit)."""
    spec = os.environ.get("AUGFORGE_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    once = os.environ.get("AUGFORGE_FAULT_ONCE")
    if once:  # across processes: only the one that creates this marker file dies (a retry then runs through)
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
