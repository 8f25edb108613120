"""Dense targets: the instances of one image (class, box, optional polygons or mask, keypoints) in one canonical
form, their Arrow columns beside the image, and the checks every format's reader runs.

**Boxes** are absolute pixel coordinates of two corners, ``(x0, y0, x1, y1)``, float64, on a continuous plane
where the image spans ``[0, W] x [0, H]`` and pixel (row i, column j) covers ``[j, j + 1] x [i, i + 1]``. A box
``w`` pixels wide has ``x1 - x0 = w``. The formats map onto it exactly: COCO's ``[x, y, w, h]`` is ``(x, y, x + w,
y + h)``; Pascal VOC's 1-based pixel indices ``xmin..xmax`` are ``(xmin - 1, ..., xmax)``; YOLO's normalised
centre and size are multiplied by the image's size. It is torchvision's ``XYXY`` and Albumentations'
``pascal_voc`` without VOC's 1-based offset.

**Polygons**, per instance: a list of rings, each a flat ``[x0, y0, x1, y1, ...]`` in the same coordinates (COCO's
``segmentation`` lists). **Masks**, per instance: COCO's compressed run-length encoding (column-major counts, as
pycocotools writes them) at the image's size; an instance with polygons has its mask rasterised from them on
demand (``instance_mask``), so a format's own rasterisation is not stored twice. **Keypoints**, per instance: K
rows of ``(x, y, v)``, v = 0 not labelled, 1 labelled but hidden, 2 visible (COCO's flags); the names of the K
points (and the pairs a horizontal flip swaps) belong to the dataset, not the row.

Each instance carries its **origin** (``file#annotation``), the provenance a later balance or augmentation
step extends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

#: the target columns of a dense dataset's shards, beside ``image``
WIDTH, HEIGHT = "width", "height"
CLASSES, BOXES, POLYGONS, MASKS, KEYPOINTS, CROWD, ORIGIN = (
    "inst_class", "inst_box", "inst_polygon", "inst_mask", "inst_keypoints", "inst_crowd", "inst_origin")
TARGET_COLUMNS = (WIDTH, HEIGHT, CLASSES, BOXES, POLYGONS, MASKS, KEYPOINTS, CROWD, ORIGIN)
#: a semantic segmentation set's extra column: the class of every pixel, a PNG of class indices (grey levels)
SEMANTIC = "semantic"
#: a multilabel set's extra column: the image-level labels of each image (class indices)
IMAGE_LABELS = "image_labels"
#: the class index of a semantic mask's pixels that belong to no class (VOC's void border, "ignore")
IGNORE = 255
#: how far (pixels) a box or a point may lie outside the image before it is a bad annotation: formats round
#: coordinates, and VOC's pixel indices reach the last pixel's far edge
EDGE_TOLERANCE = 1.0


@dataclass
class Instances:
    """The instances of one image. Arrays are aligned on the instance axis; ``polygons[i]`` is an empty list and
    ``masks[i]`` None where instance i has none; ``keypoints`` is (n, K, 3) or None for a dataset without."""

    classes: np.ndarray
    boxes: np.ndarray
    polygons: list[list[np.ndarray]] = field(default_factory=list)
    masks: list[bytes | None] = field(default_factory=list)
    keypoints: np.ndarray | None = None
    crowd: np.ndarray | None = None
    origin: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.classes)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(n)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(n, 4)
        self.polygons = list(self.polygons) or [[] for _ in range(n)]
        self.polygons = [[np.asarray(ring, dtype=np.float64).reshape(-1) for ring in rings] for rings in self.polygons]
        self.masks = list(self.masks) or [None] * n
        self.crowd = np.zeros(n, dtype=bool) if self.crowd is None else np.asarray(self.crowd, dtype=bool).reshape(n)
        self.origin = list(self.origin) or [""] * n
        if self.keypoints is not None:
            points = np.asarray(self.keypoints, dtype=np.float64)
            # (n, K, 3) kept as it is (K survives n = 0); a flat or 2-D array is read as (n, K, 3)
            self.keypoints = points if points.ndim == 3 and len(points) == n else points.reshape(n, -1, 3) if n \
                else np.zeros((0, 0, 3))
        if not (len(self.polygons) == len(self.masks) == len(self.origin) == n):
            raise ValueError("instances: classes, polygons, masks and origin must have one entry per instance")

    def __len__(self) -> int:
        return len(self.classes)

    def select(self, keep) -> "Instances":
        """The instances at ``keep`` (indices or a boolean mask): every field filtered together."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Instances(self.classes[index], self.boxes[index], [self.polygons[i] for i in index],
                         [self.masks[i] for i in index], None if self.keypoints is None else self.keypoints[index],
                         self.crowd[index], [self.origin[i] for i in index])

    @staticmethod
    def stack(parts: list[dict], keypoints: int | None = None) -> "Instances":
        """Instances from one dict per instance, as the format readers make them: ``cls`` and ``box``, and where
        there are some ``polygons``, ``mask``, ``keypoints``, ``crowd`` and ``origin``; ``keypoints``: points per
        instance in a set that has them."""
        if not parts:
            return Instances.empty(keypoints)
        return Instances(np.asarray([p["cls"] for p in parts]), np.asarray([p["box"] for p in parts]),
                         [p.get("polygons", []) for p in parts], [p.get("mask") for p in parts],
                         None if keypoints is None else np.stack([p["keypoints"] for p in parts]),
                         np.asarray([p.get("crowd", False) for p in parts]), [p.get("origin", "") for p in parts])

    @staticmethod
    def concat(parts: list["Instances"]) -> "Instances":
        """The instances of ``parts`` one after the other (keypoints kept when every part has them)."""
        points = None
        if parts and all(p.keypoints is not None for p in parts):
            points = np.concatenate([p.keypoints for p in parts])
        return Instances(np.concatenate([p.classes for p in parts]), np.concatenate([p.boxes for p in parts]),
                         [rings for p in parts for rings in p.polygons], [m for p in parts for m in p.masks], points,
                         np.concatenate([p.crowd for p in parts]), [o for p in parts for o in p.origin])

    @staticmethod
    def empty(keypoints: int | None = None) -> "Instances":
        """No instances (an image of background), with ``keypoints`` points per instance when the set has some."""
        return Instances(np.zeros(0, np.int64), np.zeros((0, 4)),
                         keypoints=None if keypoints is None else np.zeros((0, keypoints, 3)))


def target_fields() -> list[pa.Field]:
    """The Arrow fields of the target columns (one row per image)."""
    return [pa.field(WIDTH, pa.int32(), nullable=False), pa.field(HEIGHT, pa.int32(), nullable=False),
            pa.field(CLASSES, pa.list_(pa.int64()), nullable=False),
            pa.field(BOXES, pa.list_(pa.list_(pa.float64(), 4)), nullable=False),
            pa.field(POLYGONS, pa.list_(pa.list_(pa.list_(pa.float64()))), nullable=False),
            pa.field(MASKS, pa.list_(pa.binary()), nullable=False),
            pa.field(KEYPOINTS, pa.list_(pa.list_(pa.float64())), nullable=False),
            pa.field(CROWD, pa.list_(pa.bool_()), nullable=False),
            pa.field(ORIGIN, pa.list_(pa.string()), nullable=False)]


def is_dense(columns) -> bool:
    """Whether a shard schema's ``columns`` hold dense targets (every instance column; a semantic mask column
    may be beside them)."""
    return set(TARGET_COLUMNS) <= set(columns)


def semantic_field() -> pa.Field:
    """The Arrow field of the semantic mask column (null for an image without one)."""
    return pa.field(SEMANTIC, pa.binary(), nullable=True)


def encode_semantic(labels: np.ndarray) -> bytes:
    """A (H, W) map of class indices (0..254, ``IGNORE``) as PNG bytes (grey levels: compact and lossless)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_semantic(data: bytes) -> np.ndarray:
    """The (H, W) uint8 class-index map of ``encode_semantic``'s bytes (or of a VOC palette PNG)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image if image.mode in ("L", "P") else image.convert("L"), dtype=np.uint8)


def image_labels_field() -> pa.Field:
    """The Arrow field of the image-level labels column."""
    return pa.field(IMAGE_LABELS, pa.list_(pa.int64()), nullable=False)


def to_columns(rows: list[Instances], sizes: list[tuple[int, int]], semantic: list[bytes | None] | None = None,
               image_labels: list[list[int]] | None = None) -> dict[str, pa.Array]:
    """The target columns of images with these instances and (width, height) sizes; ``semantic``: their
    semantic masks (``encode_semantic`` bytes), ``image_labels``: their image-level labels, for a set that has
    them."""
    types = {f.name: f.type for f in target_fields()}
    columns = {WIDTH: [w for w, _ in sizes], HEIGHT: [h for _, h in sizes],
               CLASSES: [r.classes.tolist() for r in rows], BOXES: [r.boxes.tolist() for r in rows],
               POLYGONS: [[[ring.tolist() for ring in rings] for rings in r.polygons] for r in rows],
               MASKS: [list(r.masks) for r in rows],
               KEYPOINTS: [[] if r.keypoints is None else r.keypoints.reshape(len(r), -1).tolist() for r in rows],
               CROWD: [r.crowd.tolist() for r in rows], ORIGIN: [list(r.origin) for r in rows]}
    out = {name: pa.array(values, types[name]) for name, values in columns.items()}
    if semantic is not None:
        out[SEMANTIC] = pa.array(semantic, pa.binary())
    if image_labels is not None:
        out[IMAGE_LABELS] = pa.array(image_labels, pa.list_(pa.int64()))
    return out


def from_columns(table: pa.Table | pa.RecordBatch) -> list[Instances]:
    """The instances of every row of a table or batch with the target columns."""
    data = {name: table.column(name).to_pylist() for name in TARGET_COLUMNS[2:]}
    out = []
    for i in range(table.num_rows):
        n = len(data[CLASSES][i])
        points = data[KEYPOINTS][i]
        out.append(Instances(np.asarray(data[CLASSES][i], np.int64),
                             np.asarray(data[BOXES][i], np.float64).reshape(n, 4),
                             [[np.asarray(ring) for ring in rings] for rings in data[POLYGONS][i]],
                             list(data[MASKS][i]),
                             np.asarray(points, np.float64).reshape(n, -1, 3) if points else None,
                             np.asarray(data[CROWD][i], bool), list(data[ORIGIN][i])))
    return out


def rle_encode(mask: np.ndarray) -> bytes:
    """COCO's compressed RLE counts of a (height, width) boolean mask."""
    from pycocotools import mask as coco_mask  # the C extension: loaded where masks are encoded

    return coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))["counts"]


def rle_decode(counts: bytes, height: int, width: int) -> np.ndarray:
    """The (height, width) boolean mask of COCO compressed RLE ``counts``."""
    from pycocotools import mask as coco_mask  # the C extension: loaded where masks are decoded

    return coco_mask.decode({"size": [height, width], "counts": counts}).astype(bool)


def polygon_mask(rings: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """The (height, width) boolean mask of polygon rings, rasterised as COCO's tools do (pycocotools)."""
    from pycocotools import mask as coco_mask  # the C extension: loaded where polygons are rasterised

    encoded = coco_mask.frPyObjects([np.asarray(r, dtype=np.float64).tolist() for r in rings], height, width)
    return coco_mask.decode(coco_mask.merge(encoded)).astype(bool)


def instance_mask(instances: Instances, i: int, height: int, width: int) -> np.ndarray | None:
    """Instance i's (height, width) mask: its RLE, else its polygons rasterised; None when it has neither."""
    if instances.masks[i] is not None:
        return rle_decode(instances.masks[i], height, width)
    if instances.polygons[i]:
        return polygon_mask(instances.polygons[i], height, width)
    return None


def polygon_box(rings: list[np.ndarray]) -> np.ndarray:
    """The tight (x0, y0, x1, y1) box of polygon rings."""
    points = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in rings])
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight box of a mask's pixels (each pixel its whole square), or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def check_instances(instances: Instances, width: int, height: int, classes: int, where: list[str]) -> list[str]:
    """One line per bad annotation, naming ``where[i]`` (file and annotation): a box of negative or zero width
    or height, a box outside the image (beyond ``EDGE_TOLERANCE``), an unknown class, a polygon ring of fewer
    than 3 points, keypoints outside the image. A mask's size is checked where it is read
    (``mask_size_problem``): the run-length counts do not carry it."""
    problems = []
    for i in range(len(instances)):
        x0, y0, x1, y1 = instances.boxes[i]
        cls = int(instances.classes[i])
        if not 0 <= cls < classes:
            problems.append(f"{where[i]}: unknown category (class index {cls})")
        if not np.isfinite(instances.boxes[i]).all():
            problems.append(f"{where[i]}: box {_fmt(instances.boxes[i])} is not finite")
        elif x1 <= x0 or y1 <= y0:
            problems.append(f"{where[i]}: box {_fmt(instances.boxes[i])} has width {x1 - x0:g} and height "
                            f"{y1 - y0:g}; both must be positive")
        elif x0 < -EDGE_TOLERANCE or y0 < -EDGE_TOLERANCE or x1 > width + EDGE_TOLERANCE or \
                y1 > height + EDGE_TOLERANCE:
            problems.append(f"{where[i]}: box {_fmt(instances.boxes[i])} lies outside the {width}x{height} image")
        for ring in instances.polygons[i]:
            if len(ring) < 6 or len(ring) % 2:
                problems.append(f"{where[i]}: a polygon of {len(ring) // 2} point(s) ({len(ring)} numbers); a "
                                "polygon needs at least 3 points")
        if instances.keypoints is not None:
            labelled = instances.keypoints[i][instances.keypoints[i][:, 2] > 0]
            if ((labelled[:, 0] < -EDGE_TOLERANCE) | (labelled[:, 0] > width + EDGE_TOLERANCE) |
                    (labelled[:, 1] < -EDGE_TOLERANCE) | (labelled[:, 1] > height + EDGE_TOLERANCE)).any():
                problems.append(f"{where[i]}: a labelled keypoint lies outside the {width}x{height} image")
    return problems


def mask_size_problem(size: tuple[int, int], width: int, height: int, where: str) -> str | None:
    """The line for a mask of (height, width) ``size`` on an image of another size, else None."""
    if (int(size[0]), int(size[1])) != (height, width):
        return f"{where}: mask is {int(size[1])}x{int(size[0])}; the image is {width}x{height}"
    return None


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"
