"""The data model: column names and Arrow types shared by every stage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from augforge.errors import AugforgeError

ID = "id"
LABEL = "label"
SOURCE_ID = "source_id"
SYNTHETIC = "synthetic"
AUG = "aug"
SPLIT = "split"

IMAGE = "image"
TEXT = "text"
FEATURES = "features"
PAYLOADS = (IMAGE, TEXT, FEATURES)

SPLITS = ("train", "val", "test")
ALL_SPLITS = "all"
#: In memory a row's split is an int8 code: its index in SPLITS.
TRAIN, VAL, TEST = 0, 1, 2

PROVENANCE_FIELDS = (
    pa.field(SOURCE_ID, pa.string(), nullable=False),
    pa.field(SYNTHETIC, pa.bool_(), nullable=False),
    pa.field(AUG, pa.string(), nullable=True),
    pa.field(SPLIT, pa.string(), nullable=False),
)

#: Columns that describe a row without its payload: cheap to read and count.
META_COLUMNS = (ID, LABEL, SOURCE_ID, SYNTHETIC, AUG, SPLIT)


def payload_field(payload: str, feature_dim: int | None = None) -> pa.Field:
    """The Arrow field of a payload column: encoded image bytes, a string, or float32 features."""
    if payload == IMAGE:
        return pa.field(IMAGE, pa.binary(), nullable=False)
    if payload == TEXT:
        return pa.field(TEXT, pa.large_string(), nullable=False)
    if payload == FEATURES:
        if not feature_dim:
            raise ValueError("a features payload needs its dimension")
        return pa.field(FEATURES, pa.list_(pa.float32(), feature_dim), nullable=False)
    raise ValueError(f"unknown payload kind {payload!r}; expected one of {PAYLOADS}")


def dataset_schema(payload: str, feature_dim: int | None = None) -> pa.Schema:
    """The full schema of a shard: id, label, the payload column, provenance and split."""
    return pa.schema(
        [
            pa.field(ID, pa.string(), nullable=False),
            pa.field(LABEL, pa.int64(), nullable=False),
            payload_field(payload, feature_dim),
            *PROVENANCE_FIELDS,
        ]
    )


def payload_of(schema: pa.Schema) -> str:
    """Which payload column a schema carries."""
    for name in PAYLOADS:
        if name in schema.names:
            return name
    raise ValueError(f"schema has no payload column ({', '.join(PAYLOADS)}): {schema.names}")


def split_names(codes: np.ndarray) -> pa.Array:
    """Split codes (indices into SPLITS) as the Arrow string column stored in shards."""
    return pa.array(np.asarray(SPLITS, dtype=object)[np.asarray(codes, dtype=np.int64)], pa.string())


def split_codes(names: pl.Series) -> np.ndarray:
    """A polars string column of split names as int8 codes; unknown names must be checked before."""
    return names.replace_strict({name: code for code, name in enumerate(SPLITS)}, return_dtype=pl.Int8).to_numpy()


def check_split(split: str | None) -> str:
    """Validate a split selector: 'train', 'val', 'test' or 'all'."""
    split = ALL_SPLITS if split is None else split
    if split not in (*SPLITS, ALL_SPLITS):
        raise AugforgeError(f"unknown split {split!r}; use one of train, val, test, all")
    return split
