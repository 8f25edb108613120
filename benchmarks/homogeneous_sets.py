"""Homogeneous real image sets for the audit's measurements (benchmarks/audit.py, tests/test_audit.py): many
small, similar-looking images, where a 64-bit hash puts most rows near some other row.

- ``digits``: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), upscaled to 32x32;
- ``crops``: textured grey (or colour) crops of scikit-learn's two sample photos, on a grid (no two overlap);
- ``glyphs``: the digits and capital letters of the nine DejaVu faces of distinct design (Debian's
  fonts-dejavu-core, which Chromium brings in), one rendering each, 28x28, labelled by character.

``inject_copies`` adds near-copies of chosen rows (resized, JPEG q70-90, a 1-2 px crop resized back,
brightness +-15%, a small rotation): the ground truth of a near-duplicate search. ``flip_labels`` moves a share
of the labels to another class (uniformly, or each class to one fixed confusable class).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
#: DejaVu faces whose glyphs differ in design: Mono shares Sans' digits, MathTeXGyre reuses Serif's, and the
#: Condensed faces are their families' glyphs narrowed (near-duplicates of content, not distinct glyphs)
FACES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSans-ExtraLight",
         "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic")
GLYPHS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
COPY_KINDS = ("resize", "jpeg", "crop", "brightness", "rotate")


def digits(size: int = 32) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """The digits upscaled to ``size`` (bilinear), grey uint8; their labels; the class names."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = [np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((size, size),
                                                                                    Image.Resampling.BILINEAR))
              for img in data.images]
    return images, data.target.astype(np.int64), [str(d) for d in range(10)]


def crops(size: int = 28, tile: int = 32, min_std: float = 20.0,
          colour: bool = False) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Non-overlapping ``tile`` crops of the two sample photos in grey (``colour``: RGB), resized to ``size``,
    textured ones only (grey std >= ``min_std``: flat sky tiles are true duplicates of each other); labelled by
    photo and third."""
    from sklearn.datasets import load_sample_images

    images, labels = [], []
    for p, photo in enumerate(load_sample_images().images):
        grey = np.asarray(Image.fromarray(photo).convert("L"))
        pixels = photo if colour else grey
        for y in range(0, grey.shape[0] - tile + 1, tile):
            for x in range(0, grey.shape[1] - tile + 1, tile):
                patch = pixels[y : y + tile, x : x + tile]
                if grey[y : y + tile, x : x + tile].std() >= min_std:
                    images.append(np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BILINEAR)))
                    labels.append(p * 3 + min(2, 3 * y // grey.shape[0]))
    return images, np.asarray(labels, dtype=np.int64), [f"{n}-{t}" for n in ("china", "flower")
                                                        for t in ("top", "middle", "bottom")]


def glyphs(size: int = 28, chars: str = GLYPHS) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """``chars`` rendered once in each of FACES, centred, white on black, ``size`` px; labelled by char."""
    images, labels = [], []
    for face in FACES:
        font = ImageFont.truetype(str(FONTS / f"{face}.ttf"), int(size * 0.8))
        for label, char in enumerate(chars):
            canvas = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(canvas)
            left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
            draw.text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), char, fill=255,
                      font=font)
            images.append(np.asarray(canvas))
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64), list(chars)


def near_copy(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A near-copy of a grey uint8 image: ``kind`` one of COPY_KINDS, its strength drawn from ``rng``."""
    pil = Image.fromarray(image)
    h, w = image.shape[:2]
    if kind == "resize":  # stored at another size (as a user's pipeline would re-save it)
        side = int(rng.choice([24, 36, 40]))
        return np.asarray(pil.resize((side, side), Image.Resampling.BILINEAR))
    if kind == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(rng.integers(70, 91)))
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
    if kind == "crop":
        c = int(rng.integers(1, 3))
        return np.asarray(pil.crop((c, c, w - c, h - c)).resize((w, h), Image.Resampling.BILINEAR))
    if kind == "brightness":
        return np.asarray(ImageEnhance.Brightness(pil).enhance(float(rng.choice([0.85, 1.15]))))
    degrees = float(rng.uniform(2, 5)) * float(rng.choice([-1, 1]))
    return np.asarray(pil.rotate(degrees, resample=Image.Resampling.BILINEAR))


def inject_copies(images: list, labels: np.ndarray, count: int, seed: int = 0):
    """(images + ``count`` near-copies of distinct random rows, their labels, the injected pairs (original
    index, copy index), the kind of each copy)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), count, replace=False)
    out, out_labels, pairs, kinds = list(images), list(labels), [], []
    for n, i in enumerate(chosen.tolist()):
        kind = COPY_KINDS[n % len(COPY_KINDS)]
        pairs.append((i, len(out)))
        out.append(near_copy(images[i], kind, rng))
        out_labels.append(labels[i])
        kinds.append(kind)
    return out, np.asarray(out_labels, dtype=np.int64), pairs, kinds


def flip_labels(labels: np.ndarray, share: float, kind: str, classes: int, seed: int = 0) -> tuple[np.ndarray, set]:
    """Labels with ``share`` of them moved to another class (``uniform``: any other; ``class-dependent``: class c
    to c+1), and the moved rows."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    if kind == "uniform":
        noisy[chosen] = (labels[chosen] + rng.integers(1, classes, len(chosen))) % classes
    else:
        noisy[chosen] = (labels[chosen] + 1) % classes
    return noisy, set(chosen.tolist())
