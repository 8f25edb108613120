"""Class statistics, the balancing report, and samplers by name (imbalanced-learn semantics).

The names below are imported on first use (PEP 562), so that ``augforge report`` and ``inspect`` do not
load torch, scikit-learn and imbalanced-learn, which only the samplers need.
"""

from importlib import import_module

_HOME = {
    "FastSMOTE": "fast_smote",
    "TorchNearestNeighbors": "neighbors",
    "exact_knn": "knn",
    "recommend": "recommend",
    "build_report": "report",
    "split_stats": "report",
    "ClassStats": "stats",
    "SAMPLERS": "strategy",
    "Projection": "strategy",
    "Step": "strategy",
    "parse_strategy": "strategy",
    "project": "strategy",
    "sampler_info": "strategy",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
