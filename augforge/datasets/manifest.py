"""The dataset manifest: what a dataset directory holds, written last and atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

from augforge.errors import AugforgeError
from augforge.paths import local_path

MANIFEST = "manifest.json"
PROGRESS = ".augforge-progress.json"
#: held (fcntl) by the job writing a dataset directory, for the whole job
LOCK = ".augforge.lock"
SHARDS_DIR = "shards"
FORMAT = "augforge.dataset/1"


def is_dataset_dir(path: str | Path) -> bool:
    """Whether ``path`` is a complete dataset directory (it has a manifest)."""
    return (Path(path) / MANIFEST).is_file()


def read_json(path: Path, what: str) -> dict:
    """Load a JSON object, turning every failure into one clear line naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AugforgeError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AugforgeError(f"{path}: not a valid {what} ({exc}); rebuild the dataset") from None
    if not isinstance(data, dict):
        raise AugforgeError(f"{path}: not a valid {what} (expected a JSON object)")
    return data


def read_manifest(root: str | Path) -> dict:
    """Read and check ``root/manifest.json``."""
    root = Path(local_path(root, "path"))
    if not root.exists():
        raise AugforgeError(f"{root}: no such file or directory")
    if not (root / MANIFEST).is_file():
        raise AugforgeError(f"{root}: not an augforge dataset (no {MANIFEST}); create one with `augforge ingest`")
    manifest = read_json(root / MANIFEST, "augforge manifest")
    if manifest.get("format") != FORMAT:
        raise AugforgeError(
            f"{root / MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r}; rebuild it with this augforge"
        )
    for key in ("class_names", "shards", "schema", "payload", "counts"):
        if key not in manifest:
            raise AugforgeError(f"{root / MANIFEST}: missing key {key!r}; rebuild the dataset")
    if not isinstance(manifest["shards"], list):
        raise AugforgeError(f"{root / MANIFEST}: 'shards' is not a list; rebuild the dataset")
    for entry in manifest["shards"]:
        shard_file(root, entry.get("file") if isinstance(entry, dict) else entry, root / MANIFEST)
    return manifest


def shard_file(root: Path, name, listed_in: Path) -> Path:
    """The path of a shard named in a manifest or journal (``listed_in``): ``shards/<name>.arrow``, which must
    resolve inside ``root/shards`` (no ``..``, no absolute path, no link leading out)."""
    root = Path(root)
    if not isinstance(name, str) or not re.fullmatch(rf"{SHARDS_DIR}/[A-Za-z0-9_.-]+\.arrow", name) or \
            (root / name).resolve().parent != (root / SHARDS_DIR).resolve():
        raise AugforgeError(f"{listed_in}: shard {name!r} is not a file inside {root / SHARDS_DIR}; the file was "
                            "damaged or tampered with, rebuild the dataset")
    return root / name


def counts_by_name(manifest: dict, split: str) -> dict[str, int]:
    """Per-class row counts of one split ('all' sums the splits), keyed by class name."""
    totals = dict.fromkeys(manifest["class_names"], 0)
    for name, per_class in manifest["counts"].items():
        if split in ("all", name):
            for cls, n in per_class.items():
                totals[cls] += n
    return totals
