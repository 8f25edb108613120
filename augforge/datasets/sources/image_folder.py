"""An image folder ``ROOT/<class name>/*.{jpg,jpeg,png,bmp,webp}``; every image is checked by decoding it."""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from augforge.datasets import schema as S
from augforge.datasets.sources.base import Problem, Source
from augforge.errors import AugforgeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Images with more pixels than this are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 50_000_000


def check_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Decode the image at ``path`` fully; return why it cannot be used, or None when it is fine."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    return f"too large: {width}x{height} pixels exceeds the limit of {max_pixels:,}"
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else None
        if pixels is None or pixels > max_pixels:
            return (f"too large: {f'{pixels:,} pixels ' if pixels else ''}exceeds the limit of {max_pixels:,} "
                    "(--max-pixels)")
        return (f"too large: {pixels:,} pixels exceeds Pillow's decompression-bomb guard "
                f"({Image.MAX_IMAGE_PIXELS:,}), which --max-pixels cannot raise")
    except Exception as exc:  # Pillow raises many types for corrupt data
        return f"unreadable image: {type(exc).__name__}: {exc}"
    return None


def _link_problem(path: Path) -> str:
    """Why a symbolic link in an image folder is not read."""
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return "symbolic link loop; not followed"
    except OSError:
        return "broken symbolic link (its target does not exist)"
    return "link to a folder; not followed (folder links can loop): move or copy the images into the class folder"


def read_image_file(path: Path) -> bytes:
    """An image file's bytes; a file gone or unreadable since it was checked is an error naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AugforgeError(f"{path}: {exc.strerror or exc} (it was readable when the source was listed)") from None


#: image files checked per unit of a distributed check
CHECKS_PER_UNIT = 64


def check_worker(max_pixels: int):
    """The per-worker function of a distributed check: ``check_image`` of each path of a unit."""
    return lambda paths: [check_image(Path(p), max_pixels) for p in paths]


class ImageFolderSource(Source):
    """Class names are the sub-folder names (sorted); ids are paths relative to ROOT.

    Files with other extensions and images that fail to decode are excluded and
    listed in ``problems``; a class folder without images is an error.
    """

    kind = "image_folder"
    payload = S.IMAGE

    def __init__(self, root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 2) -> None:
        root = Path(root)
        super().__init__(str(root))
        if not root.exists():
            raise AugforgeError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise AugforgeError(f"{root}: not a directory")
        self.root = root
        self.max_pixels = max_pixels
        self.workers = max(1, workers)
        #: a distributed engine (``augforge.engine.RayEngine``) that checks the images, else threads
        self.engine = None
        entries = sorted(root.iterdir())
        self._classes = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
        for path in entries:  # what is not a class folder is listed as excluded, never skipped silently
            if path.is_dir() and path.name.startswith("."):
                self.problems.append(Problem(str(path), "hidden folder (its name starts with '.'); not a class"))
            elif not path.is_dir():
                self.problems.append(Problem(str(path), "a file at the root, outside every class folder; "
                                                        f"move it into {root}/<class name>/ to use it"))
        if not self._classes:
            raise AugforgeError(
                f"{root}: no class folders; expected {root}/<class name>/*.jpg (or .jpeg/.png/.bmp/.webp)"
            )

    def __getstate__(self) -> dict:
        """Pickled for distributed workers without the engine (a connection, not data)."""
        return {**self.__dict__, "engine": None}

    @property
    def class_names(self) -> list[str]:
        return list(self._classes)

    @cached_property
    def _index(self) -> tuple[list[Path], np.ndarray]:
        candidates: list[tuple[Path, int]] = []
        for label, name in enumerate(self._classes):
            folder = self.root / name
            found = 0
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(self.root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if path.is_symlink() and not path.is_file():  # never skipped silently
                    self.problems.append(Problem(str(path), _link_problem(path)))
                    continue
                if not path.is_file():
                    continue
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    self.problems.append(Problem(str(path), f"not an image file ({path.suffix or 'no extension'})"))
                    continue
                candidates.append((path, label))
                found += 1
            if found == 0:
                raise AugforgeError(
                    f"{folder}: class folder has no images (.jpg/.jpeg/.png/.bmp/.webp); add images or remove it"
                )
        if self.engine is not None:  # decoding every file dominates: spread it over the engine's workers
            units = [[str(p) for p, _ in candidates[i : i + CHECKS_PER_UNIT]]
                     for i in range(0, len(candidates), CHECKS_PER_UNIT)]
            verdicts = [v for part in self.engine.map_ordered(check_worker, self.max_pixels, units) for v in part]
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                verdicts = list(pool.map(lambda c: check_image(c[0], self.max_pixels), candidates))
        paths, labels = [], []
        for (path, label), verdict in zip(candidates, verdicts):
            if verdict is None:
                paths.append(path)
                labels.append(label)
            else:
                self.problems.append(Problem(str(path), verdict))
        readable = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(self._classes))
        for name, n in zip(self._classes, readable):
            if n == 0:
                first = next(p for p in self.problems if Path(p.path).relative_to(self.root).parts[0] == name)
                raise AugforgeError(
                    f"{self.root / name}: none of its images could be read; fix or remove them "
                    f"(first: {first.path}: {first.reason})"
                )
        return paths, np.asarray(labels, dtype=np.int64)

    def labels(self) -> np.ndarray:
        return self._index[1]

    def ids(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self._index[0]]

    def read(self, positions: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        paths, labels = self._index
        ids = self.ids()
        for start in range(0, len(positions), batch_rows):
            chunk = positions[start : start + batch_rows]
            yield pa.record_batch(
                {
                    S.ID: pa.array([ids[i] for i in chunk], pa.string()),
                    S.LABEL: pa.array(labels[chunk], pa.int64()),
                    S.IMAGE: pa.array([read_image_file(paths[i]) for i in chunk], pa.binary()),
                }
            )

    def payload_info(self) -> dict:
        suffixes = sorted({p.suffix.lower().lstrip(".") for p in self._index[0]})
        return {"encoding": "file", "formats": suffixes}

    def describe(self) -> dict:
        return {**super().describe(), "max_pixels": self.max_pixels}
