"""Statistics for comparing training arms over paired seeds: bootstrap intervals, sign-flip tests, Holm.

Everything works on the paired differences Δ_s = arm_s − baseline_s of one metric over seeds s (the same
seed fixes initialisation, order and augmentation draws in both arms):

- ``bca_interval``: the bias-corrected and accelerated bootstrap interval of the mean Δ (Efron 1987),
  from ``resamples`` seeded resamples; ``percentile_interval`` is the plain percentile interval; both
  optionally with Hesterberg's small-sample expansion, which ``compare`` uses (on 5–10 seeds the plain
  intervals cover the true Δ only 82–87% of the time, measured in the tests);
- ``sign_flip_pvalue``: the two-sided permutation p-value of the mean under H0 "Δ is symmetric about 0",
  exact (all 2^n sign patterns) up to ``EXACT_MAX`` seeds, Monte Carlo above (with the +1 correction);
- ``holm``: Holm's step-down adjustment of several p-values;
- ``detectable_effect``: the smallest |mean Δ| a paired t-test with this many seeds and this spread
  finds with 80% power at the 5% level;
- ``compare``: all of it for one arm, with the verdict.

Tests check these against scipy's own ``bootstrap`` and ``permutation_test`` and simulate coverage.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

#: sign-flip tests enumerate every sign pattern up to this many seeds (2^16 patterns)
EXACT_MAX = 16
#: the fewest paired seeds a verdict is given for
MIN_SEEDS = 5


def _normal_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[picks].mean(axis=1)


def _tail(level: float, n: int, expand: bool) -> float:
    """The lower tail probability of an interval of ``level``; with ``expand``, Hesterberg's small-sample
    expansion: the tail whose normal quantile, times √(n/(n−1)), is Student's t quantile on n − 1 degrees
    of freedom (the plain bootstrap of a mean covers like a z-interval with the biased sd: too narrow on a
    few seeds)."""
    tail = (1 - level) / 2
    if not expand or n < 2:
        return tail
    from scipy.stats import t

    return _normal_cdf(-math.sqrt(n / (n - 1)) * float(t.ppf(1 - tail, n - 1)))


def percentile_interval(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0,
                        expand: bool = False) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (``expand``: see ``_tail``)."""
    values = np.asarray(values, dtype=np.float64)
    means = _bootstrap_means(values, resamples, seed)
    tail = _tail(level, len(values), expand)
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def bca_interval(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0,
                 expand: bool = False) -> tuple[float, float]:
    """The BCa bootstrap interval of the mean of ``values`` (one sample: the paired differences).

    The bias correction z0 comes from the share of resampled means below the observed mean, the
    acceleration from the jackknife; a sample without spread gives the degenerate interval (x, x).
    ``expand`` widens the tails for few seeds (``_tail``); ``compare`` uses it."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    observed = float(values.mean())
    if n < 2 or np.all(values == values[0]):
        return observed, observed
    # on 2 seeds the expanded tail underflows to 0 (Student's t on 1 degree of freedom); a bootstrap of this
    # many resamples cannot resolve a tail below half a resample anyway, so that is where it stops
    tail = max(_tail(level, n, expand), 0.5 / resamples)
    means = _bootstrap_means(values, resamples, seed)
    below = (np.sum(means < observed) + 0.5 * np.sum(means == observed)) / resamples
    below = min(max(below, 1.0 / resamples), 1 - 1.0 / resamples)
    z0 = _normal_ppf(below)
    jack = (values.sum() - values) / (n - 1)
    spread = jack.mean() - jack
    denominator = 6.0 * float(np.sum(spread ** 2)) ** 1.5
    accel = float(np.sum(spread ** 3)) / denominator if denominator > 0 else 0.0
    bounds = []
    for side in (tail, 1 - tail):
        z = z0 + _normal_ppf(side)
        adjusted = _normal_cdf(z0 + z / (1 - accel * z))
        bounds.append(float(np.quantile(means, adjusted)))
    return bounds[0], bounds[1]


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def sign_flip_pvalue(values, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the mean of ``values`` under random sign flips (H0: symmetric about 0)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    observed = abs(values.mean())
    tolerance = 1e-12 * max(1.0, observed)
    if n <= EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        flipped = np.abs(signs @ values / n)
        return float(np.mean(flipped >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    flipped = np.abs(signs @ values / n)
    return float((np.sum(flipped >= observed - tolerance) + 1) / (resamples + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given), each at most 1."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()


def detectable_effect(values, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean Δ a two-sided paired t-test with ``len(values)`` seeds and this spread detects with
    ``power`` at level ``alpha``: (t_{1-α/2} + t_{power}) · sd / √n on n − 1 degrees of freedom."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return math.inf
    sd = float(values.std(ddof=1))
    return float((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / math.sqrt(n))


@dataclass
class Comparison:
    """One arm against the baseline on one metric (larger is better)."""

    mean_delta: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    p_better: float  # share of bootstrap resamples whose mean Δ is above 0
    detectable: float
    verdict: str
    deltas: list[float]

    def to_dict(self) -> dict:
        """JSON form."""
        return asdict(self)


def compare(arm, baseline, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Paired comparison of ``arm`` against ``baseline`` (one value per seed, same order). The verdict:
    ``helps`` when the interval of the mean Δ lies above 0, ``hurts`` when below, else ``no detectable effect``
    (with the smallest effect these seeds could detect); ``too few seeds`` below ``MIN_SEEDS``. ``p_holm`` is
    filled in by ``adjust``."""
    deltas = np.asarray(arm, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    low, high = bca_interval(deltas, level, resamples, seed, expand=True)
    means = _bootstrap_means(deltas, resamples, seed)
    if len(deltas) < MIN_SEEDS:  # on 3 seeds the interval covers 77% (measured): no verdict
        verdict = "too few seeds"
    elif low > 0:
        verdict = "helps"
    elif high < 0:
        verdict = "hurts"
    else:
        verdict = "no detectable effect"
    p = sign_flip_pvalue(deltas, resamples, seed)
    return Comparison(float(deltas.mean()), low, high, p, p, float(np.mean(means > 0)), detectable_effect(deltas),
                      verdict, deltas.tolist())


def adjust(comparisons: list[Comparison]) -> None:
    """Fill in the Holm-adjusted p-values across arms."""
    for item, adjusted in zip(comparisons, holm([c.p_value for c in comparisons])):
        item.p_holm = adjusted


def noise_floor(p: float, n_test: int) -> float:
    """The binomial standard error √(p(1−p)/n) of an accuracy ``p`` measured on ``n_test`` rows."""
    return math.sqrt(max(p * (1 - p), 0.0) / n_test) if n_test else math.inf
