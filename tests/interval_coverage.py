"""Seeded simulation of every interval the report shows: how often it covers the truth.

Shared by the light test (tests/test_intervals.py) and the heavy benchmark
(benchmarks/test_interval_coverage_bench.py). Samples are drawn as a 2-D array (one sample per
row) and the intervals come from the same vectorised functions the report calls
(:func:`bench.stats.quantile_intervals`, :func:`bench.stats.ratio_of_medians_ci`), so the
simulation measures the report's own method.

Distributions (latency-like, in seconds):

* ``lognormal``: median 0.5 s, sigma 0.6;
* ``bimodal``: 70 % fast (a warm pool, median 0.1 s) and 30 % slow (a cold start, median
  1 s), each lognormal with sigma 0.2: the median falls in the fast mode, the p95 in the slow
  one;
* ``bimodal_edge``: the same shape with 55 % fast, which puts the median near the upper edge
  of the fast mode, where the density falls steeply (the hard case for an interval that
  assumes the density is locally flat).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sp_stats

from bench import stats

FAST_S, SLOW_S, MODE_SIGMA = 0.1, 1.0, 0.2
LOGNORMAL_MEDIAN_S, LOGNORMAL_SIGMA = 0.5, 0.6


@dataclass(frozen=True)
class Distribution:
    name: str
    draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
    cdf: Callable[[float], float]

    def quantile(self, q: float) -> float:
        return float(optimize.brentq(lambda x: self.cdf(x) - q, 1e-6, 1e3, xtol=1e-12))


def _lognormal_cdf(x: float, median: float, sigma: float) -> float:
    return float(sp_stats.norm.cdf((math.log(x) - math.log(median)) / sigma))


def _bimodal(name: str, fast_share: float) -> Distribution:
    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        fast = rng.random(shape) < fast_share
        return np.where(
            fast,
            rng.lognormal(math.log(FAST_S), MODE_SIGMA, shape),
            rng.lognormal(math.log(SLOW_S), MODE_SIGMA, shape),
        )

    def cdf(x: float) -> float:
        return fast_share * _lognormal_cdf(x, FAST_S, MODE_SIGMA) + (
            1 - fast_share
        ) * _lognormal_cdf(x, SLOW_S, MODE_SIGMA)

    return Distribution(name, draw, cdf)


DISTRIBUTIONS: dict[str, Distribution] = {
    "lognormal": Distribution(
        "lognormal",
        lambda rng, shape: rng.lognormal(math.log(LOGNORMAL_MEDIAN_S), LOGNORMAL_SIGMA, shape),
        lambda x: _lognormal_cdf(x, LOGNORMAL_MEDIAN_S, LOGNORMAL_SIGMA),
    ),
    "bimodal": _bimodal("bimodal", 0.70),
    "bimodal_edge": _bimodal("bimodal_edge", 0.55),
}


def percentile_coverage(dist: Distribution, p: float, n: int, reps: int, seed: int) -> float:
    """Share of ``reps`` seeded samples of size n whose p-th percentile interval holds the
    true percentile (NaN when the report withholds the interval at this n)."""
    rng = np.random.default_rng([seed, n, int(p * 10)])
    rows = np.sort(dist.draw(rng, (reps, n)), axis=1)
    low, high = stats.quantile_intervals(rows, p)
    if np.isnan(low).all():
        return float("nan")
    truth = dist.quantile(p / 100.0)
    return float(np.mean((low <= truth) & (truth <= high)))


def ratio_coverage(
    dist_a: Distribution,
    dist_b: Distribution,
    scale_b: float,
    n: int,
    reps: int,
    seed: int,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
) -> float:
    """Share of ``reps`` seeded pairs (n per side; b's draws multiplied by ``scale_b``) whose
    interval of median(b) / median(a) holds the true ratio."""
    rng = np.random.default_rng([seed, n, 7])
    a = np.sort(dist_a.draw(rng, (reps, n)), axis=1)
    b = np.sort(dist_b.draw(rng, (reps, n)), axis=1) * scale_b
    low, high = stats.ratio_of_medians_ci(
        a, b, np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2]), resamples
    )
    truth = scale_b * dist_b.quantile(0.5) / dist_a.quantile(0.5)
    return float(np.mean((low <= truth) & (truth <= high)))


#: (a, b, scale of b) pairs for the ratio: equal distributions, one twice as slow, and a
#: lognormal against a bimodal one.
RATIO_CASES: tuple[tuple[str, str, float], ...] = (
    ("lognormal", "lognormal", 1.0),
    ("bimodal", "bimodal", 2.0),
    ("lognormal", "bimodal", 1.0),
    ("bimodal_edge", "lognormal", 1.5),
)
