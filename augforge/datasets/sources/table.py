"""Tables: CSV/TSV, Parquet and JSONL read with polars, with a text or feature payload."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from augforge.datasets import schema as S
from augforge.datasets.sources.base import Problem, Source
from augforge.errors import AugforgeError, OptionError, first_line

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def scan_table(path: Path) -> pl.LazyFrame:
    """A lazy polars scan of a CSV/TSV, Parquet or JSONL file."""
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt == "csv":
        return pl.scan_csv(path, infer_schema_length=10_000)
    if fmt == "tsv":
        return pl.scan_csv(path, separator="\t", infer_schema_length=10_000)
    if fmt == "parquet":
        return pl.scan_parquet(path)
    if fmt == "jsonl":
        return pl.scan_ndjson(path, infer_schema_length=10_000)
    raise AugforgeError(f"{path}: unsupported table format; use .csv, .tsv, .parquet or .jsonl")


def _jsonl_key_order(path: Path, names: list[str]) -> list[str]:
    """Columns in the order the first record lists them (polars' inference does not keep it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "{}")
        keys = [k for k in json.loads(first) if k in names]
    except (ValueError, OSError, TypeError):
        return names
    return keys + [n for n in names if n not in keys]


def _read_error(path: Path, exc: Exception) -> AugforgeError:
    text = first_line(exc)
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return AugforgeError(f"{path}: not valid UTF-8 ({text}); re-save the file as UTF-8")
    return AugforgeError(f"{path}: cannot be read as {TABLE_SUFFIXES.get(path.suffix.lower(), 'a table')}: {text}")


class TableSource(Source):
    """Rows of a table; ``label_col`` gives the class, ``text_col`` or ``feature_cols`` the payload.

    Class names are the distinct label values, sorted (numerically for numeric labels).
    Row ids come from ``id_col`` or are the 0-based row number. A ``split`` column,
    when present, is used as the rows' split.
    """

    kind = "table"

    def __init__(
        self,
        path: str | Path,
        label_col: str = "label",
        text_col: str | None = None,
        feature_cols: Sequence[str] | None = None,
        id_col: str | None = None,
    ) -> None:
        path = Path(path)
        super().__init__(str(path))
        if not path.exists():
            raise AugforgeError(f"{path}: no such file or directory")
        self.path = path
        self._lf = scan_table(path)
        try:
            self._schema = self._lf.collect_schema()
        except Exception as exc:
            raise _read_error(path, exc) from None
        if TABLE_SUFFIXES[path.suffix.lower()] == "jsonl":
            order = _jsonl_key_order(path, self._schema.names())
            self._lf = self._lf.select(order)
            self._schema = pl.Schema({name: self._schema[name] for name in order})
        if len(self._schema) == 0:
            raise AugforgeError(f"{path}: the table has no columns")
        self.label_col = label_col
        self.text_col = text_col
        self.id_col = id_col
        self._require(label_col, "label_col")
        if id_col is not None:
            self._require(id_col, "id_col")
        if text_col is not None and feature_cols:
            raise OptionError("give either {text_col} or {feature_cols}, not both")
        if text_col is not None:
            self._require(text_col, "text_col")
            if self._schema[text_col] not in (pl.String, pl.Utf8):
                raise OptionError("{path}: column {column!r} holds {kind}, not text; pick a string column with "
                                  "{text_col}", path=path, column=text_col, kind=self._schema[text_col])
            self.payload = S.TEXT
            self.feature_cols: list[str] = []
            self._drop_empty_texts()
        else:
            self.payload = S.FEATURES
            reserved = {label_col, id_col, S.SPLIT}
            if feature_cols:
                for col in feature_cols:
                    self._require(col, "feature_cols")
                    if not self._schema[col].is_numeric():
                        raise OptionError("{path}: feature column {column!r} holds {kind}, not numbers; drop it "
                                          "from {feature_cols} or use {text_col} for text", path=path, column=col,
                                          kind=self._schema[col])
                self.feature_cols = list(feature_cols)
            else:
                self.feature_cols = [c for c, t in self._schema.items() if c not in reserved and t.is_numeric()]
                self._refuse_broken_numbers([c for c, t in self._schema.items()
                                             if c not in reserved and t in (pl.String, pl.Utf8)])
            if not self.feature_cols:
                if self._lf.select(pl.len()).collect().item() == 0:
                    raise AugforgeError(f"{path}: the table has no rows")
                raise OptionError("{path}: no numeric feature columns besides {label!r}; pass {text_col} for text "
                                  "or {feature_cols}", path=path, label=label_col)

    def _refuse_broken_numbers(self, columns: list[str]) -> None:
        """A text column whose values are mostly numbers has a bad cell: left out of the features, it would be
        dropped silently. Refuse it, naming the column, the row and the value."""
        if not columns:
            return
        raw = self._collect(columns)
        parsed = raw.select([pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in columns])
        for column in columns:
            given = raw[column].is_not_null()
            numbers = parsed[column].is_not_null()
            broken = given & ~numbers
            if broken.any() and numbers.sum() > given.sum() / 2:
                row = int(broken.arg_true()[0])
                raise OptionError("{path}: column {column!r} holds numbers but {value!r} at {where} ({count} such "
                                  "cells); fix them, or name the features with {feature_cols}", path=self.path,
                                  column=column, value=raw[column][row], where=self._where(row),
                                  count=int(broken.sum()))

    #: the source row number column added when rows are dropped (ids and messages keep the file's numbering)
    _ROW = "__augforge_row"
    _rows: np.ndarray | None = None

    def _drop_empty_texts(self) -> None:
        """Empty, whitespace-only and missing texts are dropped here, for every command alike, each listed as
        a problem naming its file line (ingest, build and report show them; ids keep the file's row numbers)."""
        text = pl.col(self.text_col)
        empty = text.is_null() | (text.str.strip_chars() == "")
        indexed = self._lf.with_row_index(self._ROW)
        try:
            dropped = indexed.filter(empty).select(self._ROW).collect().to_series().to_numpy()
            if not len(dropped):
                return
            self._rows = indexed.filter(~empty).select(self._ROW).collect().to_series().to_numpy().astype(np.int64)
        except Exception as exc:
            raise _read_error(self.path, exc) from None
        self._lf = indexed.filter(~empty).drop(self._ROW)
        self.problems += [Problem(f"{self.path} {where}", "empty text; dropped")
                          for where in self._places(dropped.astype(np.int64))]

    def _places(self, rows: np.ndarray) -> list[str]:
        """Where source rows (0-based, before any drop) are in the file: ``line N`` for CSV/TSV (quoted line
        breaks counted) and JSONL, ``row N`` for Parquet."""
        fmt = TABLE_SUFFIXES[self.path.suffix.lower()]
        if fmt == "parquet":
            return [f"row {int(r)}" for r in rows]
        wanted, starts = {int(r) for r in rows}, {}
        with open(self.path, encoding="utf-8", newline="") as fh:
            if fmt == "jsonl":
                record = -1
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        record += 1
                        if record in wanted:
                            starts[record] = number
            else:
                import csv

                reader, end, record = csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), 0, -2
                for fields in reader:
                    start, end = end + 1, reader.line_num
                    if fields:
                        record += 1  # the header is record -1
                        if record in wanted:
                            starts[record] = start
        return [f"line {starts.get(int(r), '?')}" for r in rows]

    def _where(self, position: int) -> str:
        """A row of the (kept) table, as a place in the file."""
        row = int(self._rows[position]) if self._rows is not None else int(position)
        return self._places(np.array([row]))[0]

    def _require(self, column: str, option: str) -> None:
        if column not in self._schema:
            raise OptionError("{path}: no column {column!r} (columns: {columns}); set {%s}" % option, path=self.path,
                              column=column, columns=", ".join(self._schema.names()))

    def _collect(self, columns: list[str]) -> pl.DataFrame:
        try:
            return self._lf.select(columns).collect()
        except Exception as exc:
            raise _read_error(self.path, exc) from None

    @cached_property
    def _label_index(self) -> tuple[list[str], np.ndarray]:
        series = self._collect([self.label_col]).to_series()
        if len(series) == 0:
            raise AugforgeError(f"{self.path}: the table has no rows")
        if series.null_count():
            row = int(series.is_null().arg_true()[0])
            raise AugforgeError(
                f"{self.path}: column {self.label_col!r} is null at {self._where(row)} ({series.null_count()} null "
                "labels); fill or drop those rows"
            )
        if series.dtype.is_float():
            if not (series == series.round(0)).all():
                bad = series.filter(series != series.round(0))[0]
                raise AugforgeError(
                    f"{self.path}: column {self.label_col!r} holds non-integer value {bad}; labels must be "
                    "class names or integers"
                )
            series = series.cast(pl.Int64)
        uniques = series.unique().sort()
        names = [str(v) for v in uniques.to_list()]
        codes = uniques.search_sorted(series).cast(pl.Int64)  # uniques are sorted: a binary search per row
        return names, codes.to_numpy()

    @property
    def class_names(self) -> list[str]:
        return self._label_index[0]

    def labels(self) -> np.ndarray:
        return self._label_index[1]

    @cached_property
    def _ids(self) -> list[str]:
        if self.id_col is None:  # the file's 0-based row numbers, also when empty texts were dropped
            rows = self._rows if self._rows is not None else range(len(self.labels()))
            return [str(int(i)) for i in rows]
        ids = self._collect([self.id_col]).to_series().cast(pl.String)
        if ids.null_count():
            row = int(ids.is_null().arg_true()[0])
            raise AugforgeError(f"{self.path}: column {self.id_col!r} is null at {self._where(row)}")
        dup = ids.filter(ids.is_duplicated())
        if len(dup):
            raise AugforgeError(f"{self.path}: column {self.id_col!r} repeats the id {dup[0]!r}; ids must be unique")
        return ids.to_list()

    def ids(self) -> list[str]:
        return self._ids

    def native_splits(self) -> np.ndarray | None:
        if S.SPLIT not in self._schema:
            return None
        splits = self._collect([S.SPLIT]).to_series().cast(pl.String)
        bad = splits.filter(splits.is_null() | ~splits.is_in(list(S.SPLITS)))
        if len(bad):
            row = int((splits.is_null() | ~splits.is_in(list(S.SPLITS))).arg_true()[0])
            raise AugforgeError(
                f"{self.path}: column 'split' holds {bad[0]!r} at {self._where(row)}; expected train, val or test"
            )
        return S.split_codes(splits)

    @property
    def feature_dim(self) -> int | None:
        return len(self.feature_cols) if self.payload == S.FEATURES else None

    @property
    def _payload_cols(self) -> list[str]:
        return [self.text_col] if self.payload == S.TEXT else self.feature_cols

    def _check_no_nulls(self, frame: pl.DataFrame, positions: np.ndarray) -> None:
        """Refuse null payload values among the selected rows, naming the first one."""
        cols = self._payload_cols
        nulls = frame.select(pl.any_horizontal(pl.col(cols).is_null())).to_series().to_numpy()
        bad = positions[nulls[positions]]
        if len(bad):
            row = int(bad.min())
            col = next(c for c in cols if frame[row, c] is None)
            kind = "text" if self.payload == S.TEXT else "feature"
            raise AugforgeError(f"{self.path}: {kind} column {col!r} is null at {self._where(row)}; fill or drop it")

    def _payload_array(self, frame: pl.DataFrame) -> pa.Array:
        if self.payload == S.TEXT:
            return pa.array(frame.get_column(self.text_col).to_list(), pa.large_string())
        matrix = frame.select(self.feature_cols).to_numpy().astype(np.float32, copy=False)
        flat = pa.array(np.ascontiguousarray(matrix).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, len(self.feature_cols))

    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        positions = np.asarray(positions, dtype=np.int64)
        frame = self._collect(self._payload_cols)
        self._check_no_nulls(frame, positions)
        ids = self.ids()
        labels = self.labels()
        for start in range(0, len(positions), batch_rows):
            chunk = positions[start : start + batch_rows]
            yield pa.record_batch(
                {
                    S.ID: pa.array([ids[i] for i in chunk], pa.string()),
                    S.LABEL: pa.array(labels[chunk], pa.int64()),
                    self.payload: self._payload_array(frame[chunk]),
                }
            )

    def payload_info(self) -> dict:
        if self.payload == S.TEXT:
            return {"text_column": self.text_col}
        return {"feature_names": list(self.feature_cols)}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "label_col": self.label_col,
            "text_col": self.text_col,
            "feature_cols": self.feature_cols or None,
            "id_col": self.id_col,
        }
