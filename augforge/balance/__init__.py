"""Class statistics, the balancing report, and samplers by name (imbalanced-learn semantics)."""

from augforge.balance.recommend import recommend
from augforge.balance.report import build_report, split_stats
from augforge.balance.stats import ClassStats
from augforge.balance.strategy import SAMPLERS, Projection, Step, parse_strategy, project, sampler_info

__all__ = [
    "SAMPLERS",
    "ClassStats",
    "Projection",
    "Step",
    "build_report",
    "parse_strategy",
    "project",
    "recommend",
    "sampler_info",
    "split_stats",
]
