"""Per-sample random draws as DALI graph nodes, shared by the image ops and the colour algebra."""

from __future__ import annotations


def uniform(fn, bounds: tuple[float, float]):
    """A per-sample uniform draw in ``bounds``, or the constant when the bounds are equal."""
    low, high = bounds
    return float(low) if low == high else fn.random.uniform(range=[float(low), float(high)])


def coin(fn, types, p: float):
    """A per-sample 0/1 (int32) that is 1 with probability ``p``, or the constant 1 when ``p`` >= 1."""
    return 1 if p >= 1.0 else fn.random.coin_flip(probability=p, dtype=types.INT32)


def per_sample(value, like):
    """``value`` as a per-sample DataNode (``like`` is any DataNode of the graph)."""
    return value if not isinstance(value, (int, float)) else like * 0.0 + float(value)
