"""A folder of semantic masks (a class per pixel): ``read_semantic`` and ``write_semantic``.

A set is a folder with the images in ``JPEGImages/`` or ``images/`` and, under the same file stems, PNG masks in
``SegmentationClassPNG/``, ``SegmentationClass/`` or ``masks/`` (Pascal VOC's and labelme2voc's layout): each
pixel's value is its class index (a palette PNG's indices, or grey levels), ``255`` marking pixels of no class
(VOC's void border: ``augforge.datasets.targets.IGNORE``). The class names come from ``class_names.txt``,
``classes.txt`` or ``labels.txt`` (one per line, in index order; labelme's leading ``__ignore__`` line is
skipped), else ``class_<k>`` for each index found. At most 255 classes.

Bad input is one line each naming the file: a mask without its image (or an image without its mask), a mask of
another size than its image, a class index beyond the names, a colour (RGB) mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augforge.atomic import write_bytes
from augforge.datasets.formats.dense import DenseSet, ImageTargets, image_size
from augforge.datasets.targets import IGNORE, Instances, decode_semantic
from augforge.errors import AugforgeError

IMAGE_DIRS = ("JPEGImages", "images")
MASK_DIRS = ("SegmentationClassPNG", "SegmentationClass", "masks")
NAME_FILES = ("class_names.txt", "classes.txt", "labels.txt")
def _palette() -> list[int]:
    """VOC's colour map: index k's bits spread over the high bits of red, green and blue; void light grey."""
    colours = []
    for k in range(256):
        r = g = b = 0
        code = k
        for shift in range(7, -1, -1):
            r |= ((code >> 0) & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        colours += [r, g, b]
    colours[3 * IGNORE : 3 * IGNORE + 3] = [224, 224, 192]
    return colours


def semantic_dirs(root: Path) -> tuple[Path, Path] | None:
    """(image folder, mask folder) of a semantic segmentation layout under ``root``, or None."""
    images = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    masks = next((root / d for d in MASK_DIRS if (root / d).is_dir() and any((root / d).glob("*.png"))), None)
    return (images, masks) if images is not None and masks is not None else None


def _class_names(root: Path) -> list[str] | None:
    for name in NAME_FILES:
        if (root / name).is_file():
            lines = [line.strip() for line in (root / name).read_text(encoding="utf-8").splitlines() if line.strip()]
            return lines[1:] if lines and lines[0] == "__ignore__" else lines
    return None


def read_semantic(root: str | Path) -> DenseSet:
    """The images, classes and semantic masks of a folder (see the module docstring)."""
    root = Path(root)
    dirs = semantic_dirs(root)
    if dirs is None:
        raise AugforgeError(f"{root}: not a semantic segmentation folder: it needs {' or '.join(IMAGE_DIRS)}/ and "
                            f"PNG masks in {' or '.join(MASK_DIRS)}/")
    image_dir, mask_dir = dirs
    names = _class_names(root)
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    problems, out = [], []
    largest = -1
    for mask_path in sorted(mask_dir.glob("*.png")):
        where = str(mask_path.relative_to(root))
        if mask_path.stem not in images:
            problems.append(f"{where}: no image {mask_path.stem}.* in {image_dir.name}/")
            continue
        image_path = images.pop(mask_path.stem)
        try:
            mask = decode_semantic(mask_path.read_bytes()) if _is_indexed(mask_path) else None
            width, height = image_size(image_path)
        except (OSError, AugforgeError) as error:
            problems.append(f"{where}: not a readable mask and image ({error})")
            continue
        if mask is None:
            problems.append(f"{where}: a colour mask; convert it to class indices (a palette or grey-level PNG)")
            continue
        if mask.shape != (height, width):
            problems.append(f"{where}: mask of {mask.shape[1]}x{mask.shape[0]} for an image of {width}x{height}")
            continue
        values, counts = np.unique(mask, return_counts=True)
        regions = {int(v): int(c) for v, c in zip(values, counts) if v != IGNORE}
        beyond = [v for v in regions if names is not None and v >= len(names)]
        if beyond:
            problems.append(f"{where}: class index {beyond[0]} beyond the {len(names)} class names")
            continue
        largest = max([largest, *regions])
        out.append(ImageTargets(str(image_path.relative_to(image_dir)), width, height, Instances.empty(),
                                semantic=str(mask_path.relative_to(root)), regions=regions))
    for stem, path in images.items():
        problems.append(f"{path.relative_to(root)}: no mask {stem}.png in {mask_dir.name}/")
    classes = names if names is not None else [f"class_{k}" for k in range(largest + 1)]
    if len(classes) > IGNORE:
        raise AugforgeError(f"{root}: {len(classes)} classes; semantic masks hold at most {IGNORE} (index {IGNORE} "
                            "marks pixels of no class)")
    return DenseSet(classes, out, image_dir, problems, mask_root=root)


def _is_indexed(path: Path) -> bool:
    """Whether a PNG holds class indices (palette or grey levels), not colours."""
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in ("P", "L")


def write_semantic(dense: DenseSet, root: str | Path, masks: list[np.ndarray]) -> None:
    """Write ``dense``'s masks (``masks``, one (H, W) class-index map per image, in order) as VOC palette PNGs in
    ``root/SegmentationClassPNG/`` under the images' stems, and the class names in ``root/class_names.txt``.
    The images are the caller's to write (into ``JPEGImages/``)."""
    import io

    from PIL import Image

    root = Path(root)
    palette = _palette()
    for image, labels in zip(dense.images, masks):
        picture = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
        picture.putpalette(palette)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        write_bytes(root / "SegmentationClassPNG" / f"{Path(image.file).stem}.png", buffer.getvalue())
    write_bytes(root / "class_names.txt", ("\n".join(dense.classes) + "\n").encode("utf-8"))
