"""Class statistics, the balancing report, and samplers by name (imbalanced-learn semantics)."""

from augforge.balance.fast_smote import FastSMOTE
from augforge.balance.knn import TorchNearestNeighbors, exact_knn
from augforge.balance.recommend import recommend
from augforge.balance.report import build_report, split_stats
from augforge.balance.stats import ClassStats
from augforge.balance.strategy import SAMPLERS, Projection, Step, parse_strategy, project, sampler_info

__all__ = [
    "SAMPLERS",
    "ClassStats",
    "FastSMOTE",
    "Projection",
    "Step",
    "TorchNearestNeighbors",
    "build_report",
    "exact_knn",
    "parse_strategy",
    "project",
    "recommend",
    "sampler_info",
    "split_stats",
]
