"""Image near-duplicate candidates verified on their pixels, and clusters that do not chain.

A hash match is a candidate, not a finding: on a set of small, similar images (digits, glyphs, product
photos, cells) most 64-bit dHashes lie within a few bits of some other row's. Each candidate pair is therefore
compared on the decoded pixels: both images in grey at ``SIDE`` x ``SIDE`` (a pair of different sizes at the
smaller one's detail, and again with the smaller one also taken through the larger size and back: a copy
stored at another size went through one such resampling, and alignment cannot undo the blur it adds), the
first aligned onto the second
by the similarity transform (scale, rotation, shift, within ``BOUNDS``) that maximises their correlation
(gradient steps from the identity, as ECC image alignment does; Evangelidis & Psarakis 2008), and the
correlation of the aligned pixels (centre crop, brightness and contrast factored out) is the pair's
similarity. A near-copy (resized, re-encoded, brightened, cropped by a pixel or two, turned a few degrees)
aligns back to almost 1; a distinct image of the same kind does not.

A pair is verified when its similarity is at least ``threshold`` and it stands out from both rows'
neighbourhoods: its distance (1 - similarity) is at most ``RATIO`` times each row's median distance to its
candidates, for rows with at least ``DENSE`` candidates, or its similarity is ``CERTAIN``. On a homogeneous set
every row has close neighbours, and only a much closer one is a copy; a row with few candidates (a sparse set,
or a row whose only candidates are its own copies) has no neighbourhood to stand out from, and the threshold
alone decides.

The candidates are the dHash pairs (``augforge.audit.hashing``) and, since a small zoom moves a dHash by many
bits, each row's nearest neighbours by a small grey signature (``pixel_neighbour_pairs``). The verified pairs
are then grouped without chaining (``augforge.audit.clusters``).
"""

from __future__ import annotations

import numpy as np

from augforge.audit.hashing import image_from_array, unordered_pairs

#: side of the grey images compared, and the border left out of the correlation (pixels an alignment moves in)
SIDE = 32
MARGIN = 3
#: the alignment's bounds: log-scale, angle (radians), shift (a fraction of half the side)
BOUNDS = (0.2, 0.12, 0.15)
#: gradient steps of the alignment, and the zooms (log-scale) it may start from, the best of them tried first
STEPS = 20
SCALE_STARTS = (-0.16, -0.08, 0.0, 0.08, 0.16)
#: the similarity a verified pair reaches at least, how much closer than each row's typical candidate it is, and
#: the similarity above which it need not be (a copy whose brightening saturated, among rows that are all alike)
THRESHOLD = 0.975
RATIO = 0.04
CERTAIN = 0.997
#: rows with at least this many candidates are in a dense neighbourhood, where the ratio test applies
DENSE = 8
#: pairs aligned at once (memory: about 40 kB each)
CHUNK = 2048
#: the second candidate source: each row's nearest neighbours by a small grey signature of this side, this many,
#: and the nearest to its centre enlarged by each of ZOOMS (a crop of 1/14 or 1/7 of the side resized back)
SIGNATURE, PIXEL_NEIGHBOURS = 12, 5
ZOOMS, ZOOMED_NEIGHBOURS = (1.08, 1.17), 2


def grey_pixels(images: list[np.ndarray], side: int = SIDE, through: list[tuple[int, ...]] | None = None):
    """(n, 1, side, side) float32 grey pixels in [0, 1] (a torch tensor), each image resized bilinearly;
    ``through[i]``: the sides it is first resized to, in turn (square), so that it carries no more detail than
    the image it is compared with."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs
    from PIL import Image

    rows = []
    for n, image in enumerate(images):
        pil = image_from_array(image).convert("L")
        for stop in () if through is None else through[n]:
            pil = pil.resize((stop, stop), Image.Resampling.BILINEAR)
        rows.append(np.asarray(pil.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(rows)[:, None] if rows else np.zeros((0, 1, side, side), np.float32))


def _unit(x):
    """Rows of ``x`` flattened, centred and scaled to unit length (constant rows stay 0)."""
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _transformed(images, params, bounds=BOUNDS):
    """``images`` warped by the similarity transforms ``params`` (rows of log-scale, angle, shift x, shift y),
    each clamped to its bound."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    scale_bound, angle_bound, shift_bound = bounds
    scale = torch.exp(params[:, 0].clamp(-scale_bound, scale_bound))
    angle = params[:, 1].clamp(-angle_bound, angle_bound)
    shift = params[:, 2:].clamp(-shift_bound, shift_bound)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, align_corners=False, padding_mode="border")


def aligned_similarity(first, second, steps: int = STEPS) -> np.ndarray:
    """Per pair of images (``first[i]``, ``second[i]``: (n, 1, side, side) tensors): the correlation of the
    second's pixels with the first's, the first aligned onto the second (the best bounded similarity transform
    found in ``steps`` steps). The steps start from the best of ``SCALE_STARTS`` (a zoom of 15% or more is
    outside the basin gradient steps from the identity reach: a 2 px crop of a 28 px image resized back)."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    crop = slice(MARGIN, first.shape[-1] - MARGIN)
    target = _unit(second[:, :, crop, crop])
    best, start = start_similarity(first, second)
    params = start.requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=0.02)
    for step in range(steps + 1):
        similarity = (_unit(_transformed(first, params)[:, :, crop, crop]) * target).sum(1)
        best = torch.maximum(best, similarity.detach())
        if step == steps:
            break
        optimizer.zero_grad()
        (-similarity.sum()).backward()
        optimizer.step()
    return best.numpy()


def start_similarity(first, second):
    """(the best correlation over ``SCALE_STARTS``, the transforms that reach it) per pair: forward passes only,
    the alignment's starting point."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    crop = slice(MARGIN, first.shape[-1] - MARGIN)
    target = _unit(second[:, :, crop, crop])
    start = torch.zeros(len(first), 4)  # log-scale, angle, shift x, shift y
    best = torch.full((len(first),), -1.0)
    with torch.no_grad():
        for log_scale in SCALE_STARTS:
            trial = torch.zeros(len(first), 4)
            trial[:, 0] = log_scale
            similarity = (_unit(_transformed(first, trial)[:, :, crop, crop]) * target).sum(1)
            better = similarity > best
            best = torch.where(better, similarity, best)
            start[better, 0] = log_scale
    return best, start


def pair_similarity(images: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``aligned_similarity`` of the pairs (first[i], second[i]) of ``images``, a chunk at a time. A pair of
    images of different sizes is compared at the smaller one's detail: the larger brought down to its size, or
    the smaller one also taken through the larger size and back (as a copy stored larger was), whichever
    correlates better at the alignment's start. Which of the two is the copy is not known, and each way
    matches one of them."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    pixels = grey_pixels(images)
    sides = np.asarray([min(image.shape[:2]) for image in images])
    out = np.zeros(len(first), dtype=np.float32)
    for start in range(0, len(first), CHUNK):
        a = np.asarray(first[start : start + CHUNK], dtype=np.int64)
        b = np.asarray(second[start : start + CHUNK], dtype=np.int64)
        left, right = pixels[torch.from_numpy(a)].clone(), pixels[torch.from_numpy(b)].clone()
        sized = np.flatnonzero(sides[a] != sides[b])
        if len(sized):
            ways = [[_resampled_pair(images, int(a[k]), int(b[k]), sides, roundtrip) for k in sized.tolist()]
                    for roundtrip in (False, True)]
            down, round_trip = ([torch.stack([pair[n] for pair in way]) for n in (0, 1)] for way in ways)
            better = start_similarity(*round_trip)[0] > start_similarity(*down)[0]
            index = torch.from_numpy(sized)
            left[index] = torch.where(better[:, None, None, None], round_trip[0], down[0])
            right[index] = torch.where(better[:, None, None, None], round_trip[1], down[1])
        with torch.enable_grad():
            out[start : start + len(a)] = aligned_similarity(left, right)
    return out


def _resampled_pair(images: list[np.ndarray], i: int, j: int, sides: np.ndarray, roundtrip: bool):
    """Grey pixels of images i and j (of different sizes) at the smaller one's detail; ``roundtrip``: the
    smaller one first enlarged to the larger one's size."""
    small, large = sorted((int(sides[i]), int(sides[j])))
    path = {small: ((large, small) if roundtrip else ()), large: (small,)}
    pixels = grey_pixels([images[i], images[j]], through=[path[int(sides[i])], path[int(sides[j])]])
    return pixels[0], pixels[1]


def pixel_neighbour_pairs(images: list[np.ndarray], k: int = PIXEL_NEIGHBOURS, zoomed: int = ZOOMED_NEIGHBOURS,
                          zooms: tuple[float, ...] = ZOOMS) -> np.ndarray:
    """Candidate pairs (i, j, -1), i < j: each row's ``k`` nearest rows by a ``SIGNATURE`` x ``SIGNATURE`` grey
    signature (centred, unit length: cosine neighbours, exact search), and the ``zoomed`` nearest rows to the
    signature of each row's centre enlarged by each of ``zooms``. A small zoom moves a dHash by many bits (a 1-2
    px crop resized back: 14 to 17 bits measured) and, on a homogeneous set, moves the plain signature past
    close to a hundred distinct neighbours (the upscaled digits); the zoomed signature of the original is the
    copy's, so the copy is its nearest row."""
    from augforge.balance.knn import exact_knn  # torch: loaded when pairs are verified, not when recipes parse

    n = len(images)
    if n < 2:
        return np.zeros((0, 3), dtype=np.int64)
    signatures = _signatures(images)
    _, index = exact_knn(signatures, min(k, n - 1), exclude_self=True)
    first, second = [np.repeat(np.arange(n), index.shape[1])], [index.reshape(-1)]
    for zoom in zooms:
        _, index = exact_knn(signatures, min(zoomed + 1, n), queries=_signatures(images, zoom))
        first.append(np.repeat(np.arange(n), index.shape[1]))
        second.append(index.reshape(-1))
    a, b = np.concatenate(first), np.asarray(np.concatenate(second), dtype=np.int64)
    low, high, _ = unordered_pairs(a[a != b], b[a != b], n)
    return np.column_stack([low, high, np.full(len(low), -1)])


def _signatures(images: list[np.ndarray], zoom: float = 1.0) -> np.ndarray:
    """(n, SIGNATURE ** 2) float32 rows: each image's grey signature (its centre enlarged ``zoom`` times first),
    centred and of unit length."""
    cut = []
    for image in images:
        h, w = image.shape[:2]
        dy, dx = round(h * (1 - 1 / zoom) / 2), round(w * (1 - 1 / zoom) / 2)
        cut.append(image[dy : h - dy, dx : w - dx] if zoom > 1 else image)
    x = grey_pixels(cut, side=SIGNATURE).flatten(1).numpy().astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    return np.ascontiguousarray(x, dtype=np.float32)


def verify_pairs(images: list[np.ndarray], pairs: np.ndarray, threshold: float = THRESHOLD,
                 ratio: float = RATIO) -> tuple[list[tuple[int, int, float]], dict]:
    """(the verified pairs (i, j, similarity), what the verification measured) of candidate ``pairs`` (rows of
    (i, j, ...)): the pixel similarity after alignment, at least ``threshold``, and the pair's distance at most
    ``ratio`` times each row's median distance to its candidates, unless the similarity is ``CERTAIN``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, pairs.shape[1] if len(pairs) else 3)
    if len(pairs) == 0:
        return [], {"candidates": 0, "verified": 0, "threshold": threshold, "ratio": ratio}
    similarity = pair_similarity(images, pairs[:, 0], pairs[:, 1])
    distance = 1.0 - similarity.astype(np.float64)
    typical = _median_by_row(pairs[:, 0], pairs[:, 1], distance, len(images))
    stands_out = (distance <= ratio * typical[pairs[:, 0]]) & (distance <= ratio * typical[pairs[:, 1]])
    keep = (similarity >= threshold) & (stands_out | (similarity >= max(threshold, CERTAIN)))
    verified = [(int(i), int(j), round(float(s), 6)) for (i, j), s, k in zip(pairs[:, :2], similarity, keep) if k]
    return verified, {"candidates": int(len(pairs)), "verified": len(verified), "threshold": threshold,
                      "ratio": ratio}


def _median_by_row(first: np.ndarray, second: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Each row's median of ``values`` over the pairs it is in; inf for a row in fewer than ``DENSE``."""
    rows = np.concatenate([first, second])
    both = np.concatenate([values, values])
    order = np.lexsort((both, rows))
    rows, both = rows[order], both[order]
    out = np.full(n, np.inf)
    starts = np.searchsorted(rows, np.arange(n), "left")
    ends = np.searchsorted(rows, np.arange(n), "right")
    has = ends - starts >= DENSE
    low = (starts + ends - 1) // 2
    high = (starts + ends) // 2
    out[has] = (both[low[has]] + both[high[has]]) / 2.0
    return out
