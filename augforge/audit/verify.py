"""Image near-duplicate candidates verified on their pixels, and clusters that do not chain.

A hash match is a candidate, not a finding: on a set of small, similar images (digits, glyphs, product
photos, cells) most 64-bit dHashes lie within a few bits of some other row's. Each candidate pair is therefore
compared on the decoded pixels: both images in grey at ``SIDE`` x ``SIDE`` (a pair of different sizes at the
smaller one's detail: a copy stored smaller is blurrier once enlarged, and alignment cannot undo blur), the
first aligned onto the second
by the similarity transform (scale, rotation, shift, within ``BOUNDS``) that maximises their correlation
(gradient steps from the identity, as ECC image alignment does; Evangelidis & Psarakis 2008), and the
correlation of the aligned pixels (centre crop, brightness and contrast factored out) is the pair's
similarity. A near-copy (resized, re-encoded, brightened, cropped by a pixel or two, turned a few degrees)
aligns back to almost 1; a distinct image of the same kind does not.

A pair is verified when its similarity is at least ``threshold`` and it stands out from both rows'
neighbourhoods: its distance (1 - similarity) is at most ``RATIO`` times each row's median distance to its
candidates, for rows with at least ``DENSE`` candidates. On a homogeneous set every row has close neighbours,
and only a much closer one is a copy; a row with few candidates (a sparse set, or a row whose only candidates
are its own copies) has no neighbourhood to stand out from, and the threshold alone decides.

The candidates are the dHash pairs (``augforge.audit.hashing``) and, since a small zoom moves a dHash by many
bits, each row's nearest neighbours by a small grey signature (``pixel_neighbour_pairs``). The verified pairs
are then grouped without chaining (``augforge.audit.clusters``).
"""

from __future__ import annotations

import numpy as np

from augforge.audit.hashing import unordered_pairs

#: side of the grey images compared, and the border left out of the correlation (pixels an alignment moves in)
SIDE = 32
MARGIN = 3
#: the alignment's bounds: log-scale, angle (radians), shift (a fraction of half the side)
BOUNDS = (0.2, 0.12, 0.15)
#: gradient steps of the alignment
STEPS = 20
#: the similarity a verified pair reaches at least, and how much closer than each row's typical candidate it is
THRESHOLD = 0.985
RATIO = 0.08
#: rows with at least this many candidates are in a dense neighbourhood, where the ratio test applies
DENSE = 8
#: pairs aligned at once (memory: about 40 kB each)
CHUNK = 2048
#: the second candidate source: each row's nearest neighbours by a small grey signature of this side, this many
SIGNATURE, PIXEL_NEIGHBOURS = 12, 5


def grey_pixels(images: list[np.ndarray], side: int = SIDE, through: list[int | None] | None = None):
    """(n, 1, side, side) float32 grey pixels in [0, 1] (a torch tensor), each image resized bilinearly;
    ``through[i]``: first brought down to that size (a side), so that it carries no more detail than the image
    it is compared with."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs
    from PIL import Image

    rows = []
    for n, image in enumerate(images):
        pil = Image.fromarray(image.squeeze() if image.ndim == 3 and image.shape[2] == 1 else image).convert("L")
        coarse = None if through is None else through[n]
        if coarse is not None and coarse < min(pil.size):
            pil = pil.resize((coarse, coarse), Image.Resampling.BILINEAR)
        rows.append(np.asarray(pil.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(rows)[:, None] if rows else np.zeros((0, 1, side, side), np.float32))


def _unit(x):
    """Rows of ``x`` flattened, centred and scaled to unit length (constant rows stay 0)."""
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def aligned_similarity(first, second, steps: int = STEPS) -> np.ndarray:
    """Per pair of images (``first[i]``, ``second[i]``: (n, 1, side, side) tensors): the correlation of the
    second's pixels with the first's, the first aligned onto the second (the best bounded similarity transform
    found in ``steps`` steps)."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    crop = slice(MARGIN, first.shape[-1] - MARGIN)
    scale_bound, angle_bound, shift_bound = BOUNDS
    b = _unit(second[:, :, crop, crop])
    params = torch.zeros(len(first), 4, requires_grad=True)  # log-scale, angle, shift x, shift y
    optimizer = torch.optim.Adam([params], lr=0.02)
    best = torch.full((len(first),), -1.0)
    for step in range(steps + 1):
        scale = torch.exp(params[:, 0].clamp(-scale_bound, scale_bound))
        angle = params[:, 1].clamp(-angle_bound, angle_bound)
        shift = params[:, 2:].clamp(-shift_bound, shift_bound)
        cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, list(first.shape), align_corners=False)
        warped = torch.nn.functional.grid_sample(first, grid, align_corners=False, padding_mode="border")
        similarity = (_unit(warped[:, :, crop, crop]) * b).sum(1)
        best = torch.maximum(best, similarity.detach())
        if step == steps:
            break
        optimizer.zero_grad()
        (-similarity.sum()).backward()
        optimizer.step()
    return best.numpy()


def pair_similarity(images: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``aligned_similarity`` of the pairs (first[i], second[i]) of ``images``, a chunk at a time; a pair of
    images of different sizes is compared at the smaller one's detail (the larger brought down to its size)."""
    import torch  # torch: heavy, loaded when an image audit verifies pairs

    pixels = grey_pixels(images)
    sides = np.asarray([min(image.shape[:2]) for image in images])
    out = np.zeros(len(first), dtype=np.float32)
    for start in range(0, len(first), CHUNK):
        a = np.asarray(first[start : start + CHUNK], dtype=np.int64)
        b = np.asarray(second[start : start + CHUNK], dtype=np.int64)
        left, right = pixels[torch.from_numpy(a)].clone(), pixels[torch.from_numpy(b)].clone()
        for k in np.flatnonzero(sides[a] != sides[b]).tolist():
            small = int(min(sides[a[k]], sides[b[k]]))
            if sides[a[k]] > small:
                left[k] = grey_pixels([images[a[k]]], through=[small])[0]
            else:
                right[k] = grey_pixels([images[b[k]]], through=[small])[0]
        with torch.enable_grad():
            out[start : start + len(a)] = aligned_similarity(left, right)
    return out


def pixel_neighbour_pairs(images: list[np.ndarray], k: int = PIXEL_NEIGHBOURS) -> np.ndarray:
    """Candidate pairs (i, j, -1), i < j, from each row's ``k`` nearest rows by a ``SIGNATURE`` x ``SIGNATURE``
    grey signature (centred, unit length: cosine neighbours, exact search). A small zoom moves a dHash by many
    bits (a 1-2 px crop resized back: 14 to 17 bits measured) but barely moves this signature, so copies the
    hash ranks past a homogeneous row's 20 nearest are candidates here."""
    from augforge.balance.knn import exact_knn  # torch: loaded when pairs are verified, not when recipes parse

    n = len(images)
    if n < 2:
        return np.zeros((0, 3), dtype=np.int64)
    x = grey_pixels(images, side=SIGNATURE).flatten(1).numpy().astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    k = min(k, n - 1)
    _, index = exact_knn(np.ascontiguousarray(x, dtype=np.float32), k, exclude_self=True)
    low, high, _ = unordered_pairs(np.repeat(np.arange(n), k), np.asarray(index, dtype=np.int64).reshape(-1), n)
    return np.column_stack([low, high, np.full(len(low), -1)])


def verify_pairs(images: list[np.ndarray], pairs: np.ndarray, threshold: float = THRESHOLD,
                 ratio: float = RATIO) -> tuple[list[tuple[int, int, float]], dict]:
    """(the verified pairs (i, j, similarity), what the verification measured) of candidate ``pairs`` (rows of
    (i, j, ...)): the pixel similarity after alignment, at least ``threshold``, and the pair's distance at most
    ``ratio`` times each row's median distance to its candidates."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, pairs.shape[1] if len(pairs) else 3)
    if len(pairs) == 0:
        return [], {"candidates": 0, "verified": 0, "threshold": threshold, "ratio": ratio}
    similarity = pair_similarity(images, pairs[:, 0], pairs[:, 1])
    distance = 1.0 - similarity.astype(np.float64)
    typical = _median_by_row(pairs[:, 0], pairs[:, 1], distance, len(images))
    keep = (similarity >= threshold) & (distance <= ratio * typical[pairs[:, 0]]) \
        & (distance <= ratio * typical[pairs[:, 1]])
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
