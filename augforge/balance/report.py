"""The balancing report: what `augforge report` prints, as one JSON-able dict (schema in docs/report.md)."""

from __future__ import annotations

import math

from augforge.balance.recommend import recommend
from augforge.balance.stats import ClassStats
from augforge.balance.strategy import parse_strategy, project
from augforge.datasets import schema as S
from augforge.datasets.plan import plan_rows
from augforge.datasets.sources.base import Source
from augforge.datasets.splits import ImbalanceSpec, SplitSpec

REPORT_SCHEMA = "augforge.report/1"


def split_stats(source: Source, split: str = "train", splits: SplitSpec = SplitSpec(),
                imbalance: ImbalanceSpec = ImbalanceSpec(), seed: int = 0) -> ClassStats:
    """Class counts of one split of a source, from its labels alone (no payload is read)."""
    split = S.check_split(split)
    plan = plan_rows(source, splits, imbalance, seed)
    labels = plan.labels if split == S.ALL_SPLITS else plan.labels[plan.splits == S.SPLITS.index(split)]
    return ClassStats.from_labels(labels, source.class_names)


def finite_or_none(value: float) -> float | None:
    """``value`` rounded to 6 places for JSON, or None where it is NaN or infinite."""
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


def _summary(stats: ClassStats) -> dict:
    return {
        "total": stats.total,
        "counts": stats.as_dict(),
        "imbalance_ratio": finite_or_none(stats.imbalance_ratio),
        "entropy": round(stats.entropy, 6),
    }


def build_report(stats: ClassStats, *, source: str, kind: str, payload: str, split: str,
                 problems: list[dict] | None = None, strategy: str | None = None,
                 warnings: list[str] | None = None) -> dict:
    """The report dict: distribution, recommendation, excluded inputs, warnings (classes too small to split),
    and projected counts for ``strategy``."""
    problems = problems or []
    report = {
        "schema": REPORT_SCHEMA,
        "source": source,
        "kind": kind,
        "payload": payload,
        "split": split,
        "num_classes": stats.num_classes,
        **_summary(stats),
        "shares": {name: round(share, 6) for name, share in zip(stats.class_names, stats.shares)},
        "majority": stats.majority if stats.total else None,
        "minority": stats.minority,
        "recommendation": recommend(stats, payload),
        "problems": {"count": len(problems), "items": problems},
        "warnings": list(warnings or []),
    }
    if strategy is not None:
        projection = project(parse_strategy(strategy), stats.counts, list(stats.class_names), strategy)
        after = ClassStats(stats.class_names, tuple(projection.counts))
        if payload != S.FEATURES:
            projection.notes += [
                f"{step.text}: {step.sampler.cls.__name__} interpolates feature vectors; for {payload} rows it needs "
                "a feature column (embeddings), otherwise use 'over' (marked copies varied by augmentation)"
                for step in parse_strategy(strategy) if step.sampler.interpolates
            ]
        report["projected"] = {
            "strategy": projection.strategy,
            **_summary(after),
            "exact": projection.exact,
            "steps": projection.steps,
            "notes": projection.notes,
        }
    return report
