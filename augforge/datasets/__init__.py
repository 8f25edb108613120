"""Sources, the shard store (writer, reader, manifest, checksums) and ingest."""

from augforge.datasets.ingest import WriteResult, ingest, write_dataset
from augforge.datasets.manifest import is_dataset_dir, read_manifest
from augforge.datasets.plan import RowPlan, plan_rows
from augforge.datasets.reader import Dataset, open_dataset
from augforge.datasets.sources import open_source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec

__all__ = [
    "Dataset",
    "ImbalanceSpec",
    "RowPlan",
    "SplitSpec",
    "WriteResult",
    "ingest",
    "is_dataset_dir",
    "open_dataset",
    "open_source",
    "plan_rows",
    "read_manifest",
    "write_dataset",
]
