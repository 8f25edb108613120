"""Pascal VOC XML: ``read_voc`` and ``write_voc``.

A set is a folder with ``Annotations/*.xml`` and the images in ``JPEGImages/`` (or where each file's
``<filename>`` says, relative to that folder). An ``<object>`` has ``<name>``, ``<bndbox>`` with 1-based pixel
indices ``xmin ymin xmax ymax`` (canonical ``(xmin - 1, ymin - 1, xmax, ymax)``), ``<difficult>`` (read as
crowd: ignored by VOC's evaluation as COCO ignores crowd regions). Classes: the names found, sorted, unless a
list is given.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


from augforge.atomic import write_bytes
from augforge.datasets.formats.dense import DenseSet, ImageTargets, keep_valid
from augforge.datasets.targets import Instances
from augforge.errors import AugforgeError


def read_voc(root: str | Path, classes: list[str] | None = None) -> DenseSet:
    """The images, classes and instances of a VOC folder (see the module docstring)."""
    root = Path(root)
    files = sorted((root / "Annotations").glob("*.xml"))
    if not files:
        raise AugforgeError(f"{root}: not a VOC folder: no Annotations/*.xml")
    parsed, problems = [], []
    for file in files:
        try:
            tree = ET.parse(file).getroot()
            size = tree.find("size")
            width, height = int(size.findtext("width")), int(size.findtext("height"))
        except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
            problems.append(f"{file.relative_to(root)}: not a VOC annotation with a <size> ({error})")
            continue
        objects = []
        for n, obj in enumerate(tree.findall("object"), start=1):
            where = f"{file.relative_to(root)}#object {n}"
            try:
                box = obj.find("bndbox")
                xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                problems.append(f"{where}: no <bndbox> with numbers xmin, ymin, xmax, ymax")
                continue
            objects.append((str(obj.findtext("name", "")).strip(), (xmin - 1, ymin - 1, xmax, ymax),
                            obj.findtext("difficult", "0").strip() == "1", where))
        parsed.append((tree.findtext("filename", file.with_suffix(".jpg").name), width, height, objects))
    names = list(classes) if classes else sorted({o[0] for *_, objects in parsed for o in objects})
    index = {name: i for i, name in enumerate(names)}
    out = []
    for filename, width, height, objects in parsed:
        known = []
        for name, box, difficult, where in objects:
            if name not in index:
                problems.append(f"{where}: unknown category {name!r}")
            else:
                known.append({"cls": index[name], "box": box, "crowd": difficult, "origin": where})
        instances = Instances.stack(known)
        out.append(ImageTargets(filename, width, height, keep_valid(instances, width, height, len(names), problems)))
    images = root / "JPEGImages"
    return DenseSet(names, out, images if images.is_dir() else root, problems)


def write_voc(dense: DenseSet, root: str | Path) -> None:
    """``dense``'s boxes as VOC XML files in ``root/Annotations/`` (one per image, named after it); polygons,
    masks and keypoints have no place in VOC's detection XML and are not written. Boxes are written as 1-based
    pixel indices (``xmin = x0 + 1``), rounded to whole pixels as VOC's tools expect."""
    annotations = Path(root) / "Annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for image in dense.images:
        top = ET.Element("annotation")
        ET.SubElement(top, "filename").text = Path(image.file).name
        size = ET.SubElement(top, "size")
        for key, value in (("width", image.width), ("height", image.height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        inst = image.instances
        for i in range(len(inst)):
            obj = ET.SubElement(top, "object")
            ET.SubElement(obj, "name").text = dense.classes[int(inst.classes[i])]
            ET.SubElement(obj, "difficult").text = "1" if inst.crowd[i] else "0"
            box = ET.SubElement(obj, "bndbox")
            x0, y0, x1, y1 = inst.boxes[i].tolist()
            for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                ET.SubElement(box, key).text = f"{round(value)}"
        ET.indent(top)
        write_bytes(annotations / f"{Path(image.file).stem}.xml", ET.tostring(top, encoding="utf-8"))
