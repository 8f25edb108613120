"""Where the heavy work of `augforge build` and `augforge ingest` runs: here (``local``) or on Ray Data (``ray``).

The driver (this process) plans everything a build plans: splits, duplicate removal, the balance and
the output rows of every chunk. An engine only maps a pure function over the units of work (an image
chunk: read, decode, augment, encode; a batch of texts to vary; a batch of image files to check) and
hands the results back **in order**; the driver writes the shards and the manifest, as the local build
does. A unit's result depends only on the plan and the unit (its seeds come from the recipe seed and
the unit's rows), never on the worker, the order in which units finish or a retry, so a Ray build is
byte-identical to a local one.

On Ray, each worker is an actor of a Ray Data actor pool (``map_batches`` with ``ActorPoolStrategy``)
that builds its state once (a DALI pipeline's settings, the text augmenter) and then runs units. A
worker process that dies is restarted and its unit retried by Ray; a unit that fails by itself (a
source file gone, an image that no longer decodes) ends the map with the unit's own error, naming the
input, with no retry.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from augforge.errors import AugforgeError, OptionError, first_line, require_at_least
from augforge.faults import fault_point

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineSpec:
    """How a job runs: ``local`` (this process and its threads / processes) or ``ray`` (a cluster at
    ``address``, or a Ray instance started for the job), with ``workers`` actors of ``gpus_per_worker``
    GPUs each (default: one actor per CPU of the cluster)."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise OptionError("{engine} {value!r}: expected one of {choices}", value=self.name,
                              choices=", ".join(ENGINES))
        if self.name == "local" and (self.address or self.gpus_per_worker):
            raise OptionError("{address} and {gpus_per_worker} need {engine} ray")
        if self.workers is not None:
            require_at_least("workers", self.workers)
        if self.gpus_per_worker < 0:
            raise OptionError("{gpus_per_worker} {value}: expected 0 or more", value=self.gpus_per_worker)

    @property
    def distributed(self) -> bool:
        """True for an engine other than this process."""
        return self.name != "local"


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise OptionError("{engine} ray needs Ray Data: pip install 'augforge[ray]'") from None
    return ray


class _Actor:
    """One Ray Data actor: builds the worker once from the pickled state, then runs pickled units."""

    def __init__(self, make_worker: Callable[[Any], Callable[[Any], Any]], state: list) -> None:
        import ray

        self.run = make_worker(pickle.loads(ray.get(state[0])))  # the state's object, put once by the driver
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        results = []
        for blob in batch["unit"]:
            fault_point("ray-unit")
            try:
                outcome = ("ok", self.run(pickle.loads(blob)))
            except AugforgeError as exc:
                outcome = ("error", str(exc))
            except Exception as exc:  # a unit's own failure: reported once, not retried
                outcome = ("error", f"{type(exc).__name__}: {exc}")
            results.append(pickle.dumps((outcome, self.node, os.getpid())))
        return {"index": batch["index"], "result": results}


class RayEngine:
    """A connection to Ray for one job (a context manager): ``map_ordered`` runs units on an actor pool.

    Without an address, a Ray instance is started for the job and stopped when it ends, leaving no
    process behind; with one (``auto`` or ``HOST:PORT``), the job joins that cluster and leaves it
    running."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.nodes: Counter = Counter()  # units per node id
        self.processes: set[tuple[str, int]] = set()  # (node id, pid) of the workers that returned a unit
        self._ray = None

    def __enter__(self) -> "RayEngine":
        _import_ray()  # a missing Ray is an error before any work, not after the planning
        return self

    def connect(self):
        """Ray, connected on first use (a build that is already complete starts nothing)."""
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                      configure_logging=True)
        try:
            if self.spec.address:
                ray.init(address=self.spec.address, **kwargs)
            else:
                ray.init(num_cpus=self.spec.workers or os.cpu_count() or 1,
                         num_gpus=None if self.spec.gpus_per_worker else 0, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.spec.address or "a local instance"
            raise OptionError("{engine} ray: could not connect to {where}: {why}", where=where,
                              why=first_line(exc)) from None
        self._ray = ray
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        return ray

    def __exit__(self, *exc) -> None:
        if self._ray is not None:
            self._ray.shutdown()

    def workers(self) -> int:
        """The actor pool's size: ``--workers``, else the cluster's CPUs (at least 1)."""
        if self.spec.workers:
            return self.spec.workers
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def map_ordered(self, make_worker: Callable[[Any], Callable[[Any], Any]], state: Any,
                    units: Sequence[Any]) -> Iterator[Any]:
        """``make_worker(state)`` once per actor, then its result called on every unit; yields the results
        in the units' order. A unit's error ends the map as an AugforgeError with the unit's message."""
        if not units:
            return
        ray = self.connect()
        items = [{"index": i, "unit": pickle.dumps(u)} for i, u in enumerate(units)]
        pool = min(self.workers(), len(items))
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _Actor, fn_constructor_kwargs={"make_worker": make_worker, "state": [ray.put(pickle.dumps(state))]},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=1,
            num_gpus=self.spec.gpus_per_worker or None)
        expected = 0
        for row in _rows(ray, dataset):
            (status, value), node, pid = pickle.loads(row["result"])
            if int(row["index"]) != expected:
                raise OptionError("{engine} ray: unit {unit} came back before unit {expected}", unit=row["index"],
                                  expected=expected)
            expected += 1
            if status == "error":
                raise AugforgeError(value)
            self.nodes[node] += 1
            self.processes.add((node, pid))
            yield value


def _rows(ray, dataset) -> Iterator[dict]:
    """The dataset's rows; Ray's own failures (a worker that cannot start, a lost object) as one line."""
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        first = first_line(exc, 300)
        raise OptionError("{engine} ray: {kind}: {first}", kind=type(exc).__name__, first=first) from None


def open_engine(spec: EngineSpec | None):
    """A context manager for the spec's engine: a ``RayEngine``, or None for the local engine."""
    from contextlib import nullcontext

    if spec is None or not spec.distributed:
        return nullcontext(None)
    return RayEngine(spec)
