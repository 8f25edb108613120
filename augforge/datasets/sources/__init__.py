"""Sources: where rows come from before they become shards."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from augforge.datasets.manifest import MANIFEST, is_dataset_dir, read_manifest
from augforge.datasets.remote import fetch_file
from augforge.datasets.sources.base import Problem, Source
from augforge.datasets.sources.dataset import DatasetSource
from augforge.datasets.sources.dense import DenseSource, dense_format
from augforge.datasets.sources.digits import DigitsSource
from augforge.datasets.sources.image_folder import DEFAULT_MAX_PIXELS, ImageFolderSource
from augforge.datasets.sources.table import TABLE_SUFFIXES, TableSource
from augforge.errors import AugforgeError, OptionError
from augforge.storage.objects import ObjectStore
from augforge.storage.urls import parse_url, remote

#: Samples shipped with installed packages, usable by name.
BUNDLED = {"digits": DigitsSource}


def has_dense_targets(spec: str | Path) -> bool:
    """Whether ``spec`` names a detection or segmentation set (a COCO / VOC / YOLO / LabelMe layout, or a dataset
    directory with target columns), told from its layout or manifest without reading its images."""
    if remote(spec):
        return open_source(spec).has_targets
    path = Path(spec)
    if path.is_dir() and is_dataset_dir(path):
        return bool((read_manifest(path).get("payload_info") or {}).get("targets"))
    return path.exists() and dense_format(path) is not None


def open_source(
    spec: str | Path,
    *,
    label_col: str | None = None,
    text_col: str | None = None,
    feature_cols: Sequence[str] | None = None,
    id_col: str | None = None,
    max_pixels: int | None = None,
) -> Source:
    """Resolve ``spec`` to a source: a dataset directory, an image folder, a table file, or a bundled name.

    Table options (``label_col``, ``text_col``, ``feature_cols``, ``id_col``) apply to
    table files only; ``max_pixels`` to image folders only. Giving one to another kind of
    source is an error, since it would silently do nothing.
    """
    table_opts = {"label_col": label_col, "text_col": text_col, "feature_cols": feature_cols, "id_col": id_col}
    if remote(spec):
        return _remote_source(str(spec), table_opts, max_pixels)
    path = Path(spec)

    def refuse(options: dict, kind: str) -> None:
        given = [name for name, value in options.items() if value]
        if given:
            raise OptionError(", ".join(f"{{{name}}}" for name in given) + " do(es) not apply to {kind} {spec}",
                              kind=kind, spec=spec)

    if path.exists():
        if path.is_dir():
            refuse(table_opts, "the directory")
            if is_dataset_dir(path):
                refuse({"max_pixels": max_pixels}, "the dataset directory")
                return DatasetSource(path)
            if dense_format(path):
                return DenseSource(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
            return ImageFolderSource(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        if dense_format(path):  # a COCO annotation file
            refuse({**table_opts}, "the COCO file")
            return DenseSource(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        if path.suffix.lower() in TABLE_SUFFIXES:
            refuse({"max_pixels": max_pixels}, "the table")
            return TableSource(path, label_col=label_col or "label", text_col=text_col,
                               feature_cols=feature_cols, id_col=id_col)
        raise AugforgeError(
            f"{path}: not a dataset directory, image folder, COCO file, or table (.csv/.tsv/.parquet/.jsonl)"
        )
    if str(spec) in BUNDLED:
        refuse({**table_opts, "max_pixels": max_pixels}, "the bundled sample")
        return BUNDLED[str(spec)]()
    raise AugforgeError(
        f"{spec}: no such file or directory (bundled samples: {', '.join(sorted(BUNDLED))})"
    )


def _remote_source(url: str, table_opts: dict, max_pixels) -> Source:
    """A source at an ``s3://`` URL: a dataset (a prefix with a manifest), read through the shard cache, or a
    table file, downloaded into the cache; an image folder is read locally only."""
    parsed = parse_url(url, "source")
    if any(parsed.prefix.lower().endswith(suffix) for suffix in TABLE_SUFFIXES):
        if max_pixels:
            raise OptionError("{max_pixels} does not apply to the table {spec}", spec=url)
        source = TableSource(fetch_file(url), label_col=table_opts["label_col"] or "label",
                             text_col=table_opts["text_col"], feature_cols=table_opts["feature_cols"],
                             id_col=table_opts["id_col"])
        source.location = url
        return source
    given = [name for name, value in {**table_opts, "max_pixels": max_pixels}.items() if value]
    if given:
        raise OptionError(", ".join(f"{{{name}}}" for name in given) + " do(es) not apply to the dataset {spec}",
                          spec=url)
    if ObjectStore(parsed).get(MANIFEST, missing_ok=True) is None:  # a missing bucket says so here
        raise AugforgeError(f"{url}: neither an augforge dataset (no {MANIFEST}) nor a table "
                            f"({'/'.join(TABLE_SUFFIXES)}); image folders are read from local paths only")
    return DatasetSource(url)


__all__ = ["BUNDLED", "DatasetSource", "DenseSource", "DigitsSource", "ImageFolderSource", "Problem", "Source",
           "TableSource", "open_source"]
