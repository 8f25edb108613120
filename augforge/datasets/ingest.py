"""`augforge ingest`: a source, split and optionally made imbalanced, written to the shard store."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from augforge.datasets import schema as S
from augforge.datasets.manifest import FORMAT
from augforge.datasets.plan import Cleaning, RowPlan, plan_rows, recorded
from augforge.datasets.publish import output_location, remote_output
from augforge.datasets.sources.base import Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec
from augforge.datasets.writer import DISK_FULL, AlreadyComplete, DatasetWriter
from augforge.engine import open_engine
from augforge.errors import AugforgeError, OptionError
from augforge.paths import resolved

READ_BATCH_ROWS = 1024


def fingerprint(parts: dict) -> str:
    """A short stable hash of everything that determines a dataset's content."""
    return xxhash.xxh3_128_hexdigest(json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode())


def with_provenance(batch: pa.RecordBatch, split_codes: np.ndarray) -> pa.RecordBatch:
    """Add the provenance and split columns a source did not provide (original rows: not synthetic)."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    n = batch.num_rows
    columns.setdefault(S.SOURCE_ID, batch.column(S.ID))
    columns.setdefault(S.SYNTHETIC, pa.array(np.zeros(n, dtype=bool)))
    columns.setdefault(S.AUG, pa.nulls(n, pa.string()))
    columns[S.SPLIT] = S.split_names(split_codes)
    return pa.record_batch(columns)


def content_parts(source: Source, splits: SplitSpec, imbalance: ImbalanceSpec, seed: int, shard_rows: int | None,
                  shard_mb: float | None, **job) -> dict:
    """What determines a written dataset's content (hashed into its fingerprint); ``job`` adds the job's own.
    The source's location is resolved: another spelling of the same path makes the same dataset."""
    described = source.describe()
    described["location"] = resolved(described["location"])
    return {**job, "source": described, "splits": asdict(splits), "imbalance": asdict(imbalance),
            "seed": seed, "shard_rows": shard_rows, "shard_mb": shard_mb}


def manifest_meta(source: Source, splits: SplitSpec, imbalance: ImbalanceSpec, seed: int, **job) -> dict:
    """What a manifest records about where its rows came from; ``job`` adds the job's own keys."""
    return {
        "source": source.describe(),
        "payload_info": source.payload_info(),
        "seed": seed,
        "splits": asdict(splits),
        "imbalance": asdict(imbalance) if imbalance.active else None,
        "recipe": None,
        **job,
        "problems": [p.to_dict() for p in source.problems],
        "warnings": list(source.warnings),
    }


@dataclass
class WriteResult:
    """What writing a dataset directory did."""

    manifest: dict
    written_rows: int
    resumed_rows: int
    up_to_date: bool


def write_dataset(
    out: str | Path,
    schema: pa.Schema,
    class_names: list[str],
    *,
    parts: dict,
    meta: dict,
    total_rows: int,
    batches: Callable[[int], Iterator[pa.RecordBatch]],
    shard_rows: int | None = None,
    shard_mb: float | None = None,
    overwrite: bool = False,
    on_rows: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    learned: Callable[[], dict] | None = None,
) -> WriteResult:
    """Write the deterministic row stream ``batches(skip)`` (rows from ``skip`` on) to ``out``.

    ``parts`` is everything that determines the content (hashed into the fingerprint): an
    interrupted write rerun with the same parts resumes after its last complete shard, a
    complete one is left as it is, a different dataset in ``out`` is refused unless
    ``overwrite``. On an error a fresh ``out`` is removed again. ``learned()`` adds manifest keys known
    only once rows are made (kept across a resume); the manifest is written once, with everything.
    """
    if total_rows == 0:
        raise AugforgeError(f"{out}: no rows to write")
    with remote_output(out, overwrite) as out:
        try:
            writer = DatasetWriter(out, schema, class_names, fingerprint=fingerprint(parts), meta=meta,
                                   shard_rows=shard_rows, shard_mb=shard_mb, overwrite=overwrite, learned=learned)
        except AlreadyComplete as done:
            return WriteResult(done.manifest, 0, 0, up_to_date=True)
        skip = writer.rows_done
        if on_total:
            on_total(total_rows - skip)
        written = 0
        try:
            for batch in batches(skip):
                writer.write(batch)
                written += batch.num_rows
                if on_rows:
                    on_rows(batch.num_rows)
            manifest = writer.close()
        except KeyboardInterrupt:
            writer.release()
            raise  # leave the journal: rerunning the same command resumes
        except OSError as exc:
            writer.abort()
            if exc.errno in DISK_FULL:
                left = "the shards written so far are kept: free space and rerun to resume" if writer.resumed else \
                    "the partial output was removed"
                raise AugforgeError(f"{exc.filename or out}: {os.strerror(exc.errno).lower()} while writing {out}; "
                                    f"{left}") from None
            raise
        except BaseException:
            writer.abort()
            raise
        return WriteResult(manifest, written, skip, up_to_date=False)


def ingest(
    source: Source,
    out: str | Path,
    *,
    splits: SplitSpec = SplitSpec(),
    imbalance: ImbalanceSpec = ImbalanceSpec(),
    seed: int = 0,
    shard_rows: int | None = None,
    shard_mb: float | None = None,
    overwrite: bool = False,
    on_rows: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    engine=None,
    rows: RowPlan | None = None,
    cleaning: Cleaning | None = None,
) -> WriteResult:
    """Write ``source`` to the dataset directory ``out`` (or to an ``s3://`` URL, through
    ``augforge.datasets.publish``), split and optionally made imbalanced.

    Deterministic for a seed and resumable (see ``write_dataset``). ``engine`` (an
    ``augforge.engine.EngineSpec``) checks an image folder's files on Ray; the output is the same.
    ``rows`` replaces the split plan (``plan_rows``) when a build has chosen the rows (``clean:``), and
    ``cleaning`` records what that choice dropped.
    """
    output_location(out)
    with open_engine(engine) as runner:
        if runner is not None:
            if not hasattr(source, "engine"):
                raise OptionError("{engine} ray: ingest distributes the checking of image folders; {location} is a "
                                  "{kind} source (use {engine} local)", location=source.location, kind=source.kind)
            source.engine = runner
        try:
            return _ingest(source, out, splits, imbalance, seed, shard_rows, shard_mb, overwrite, on_rows, on_total,
                           rows, cleaning)
        finally:
            if runner is not None:
                source.engine = None


def _ingest(source, out, splits, imbalance, seed, shard_rows, shard_mb, overwrite, on_rows, on_total, rows,
            cleaning) -> WriteResult:
    """``ingest`` with the engine set on the source."""
    plan: RowPlan = rows if rows is not None else plan_rows(source, splits, imbalance, seed)
    if len(plan.positions) == 0:
        raise AugforgeError(f"{source.location}: no rows to write")
    parts, meta = recorded(content_parts(source, splits, imbalance, seed, shard_rows, shard_mb),
                           manifest_meta(source, splits, imbalance, seed), cleaning)

    def batches(skip: int) -> Iterator[pa.RecordBatch]:
        done = skip
        for batch in source.read(plan.positions[skip:], READ_BATCH_ROWS):
            yield with_provenance(batch, plan.splits[done : done + batch.num_rows])
            done += batch.num_rows

    return write_dataset(out, source.schema(), source.class_names, parts=parts, meta=meta,
                         total_rows=len(plan.positions), batches=batches, shard_rows=shard_rows,
                         shard_mb=shard_mb, overwrite=overwrite, on_rows=on_rows, on_total=on_total)
