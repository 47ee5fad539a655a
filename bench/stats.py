"""Latency statistics: percentiles, bootstrap intervals, failure rates, provider comparisons.

Pure functions of the raw samples; nothing here is stored back into a run.

Rules (each one is what the report's "how to read this" note summarises):

* **What counts.** ``n`` is the number of ``ok`` samples, the only ones with a duration.
  ``failures`` counts ``error`` and ``timeout``; ``failure_rate`` is failures / attempts, where
  attempts = ok + failures. ``unsupported`` and ``skipped`` are counted apart: an operation the
  provider lacks, or one never attempted because an earlier step of the iteration failed, is
  neither a success nor a failure of that operation. Warmup samples are excluded unless asked.
* **Percentiles.** numpy's default method (``"linear"``, Hyndman & Fan type 7): the p-th
  percentile of sorted values x[0..n-1] is x[h] interpolated linearly, h = (n-1)·p/100.
* **Minimum n.** A percentile is reported only when the sample can support it: at least
  :data:`MIN_N_ANY` (5) samples, and at least one expected sample beyond it, n·(1-p/100) >= 1.
  So p50 needs 5, p90 10, p95 20 and p99 100 samples. Below that the value is NaN and its name
  is listed in the ``withheld`` column ("n too small"), never an extrapolation from the maximum.
  min, max and mean need 1 sample; the standard deviation (ddof=1) needs 2.
* **Confidence intervals.** 95 % intervals for p50 and p95 from order statistics. The plain
  order-statistic interval (asv's ``quantile_ci``): ranks l and u of the sorted sample such
  that the binomial(n, q) probability of the true quantile lying between x(l) and x(u) is at
  least 95 % (:func:`order_statistic_ranks`); its coverage is at least 95 % for any continuous
  distribution, but the binomial's discreteness can push it far above (99.2 % for the median
  at n = 8). So where the plain interval's exact coverage exceeds
  :data:`MAX_PLAIN_COVERAGE` (97.5 %) each end is interpolated between two neighbouring order
  statistics instead (Hettmansperger & Sheather 1986 for the median, Nyblom 1992 for any
  quantile; :func:`interval_plan`): x(r) and x(r+1) whose probabilities of falling below the
  true quantile bracket 97.5 % (lower end) or 2.5 % (upper end), weighted so that the
  probability is exact when the distribution is locally smooth around the quantile. Measured
  over 4,000 seeded repetitions per case (lognormal, and bimodal with the median inside or at
  the steep edge of the fast mode; ``benchmarks/test_interval_coverage_bench.py``): the p50
  interval covered the truth in 94-98 % of samples at every n from 6 to 200, the p95 interval
  in 94-97 % from n = 72 to 400 (tests/test_intervals.py checks 90-99 % at 400 repetitions).
  **An interval is withheld where none exists**: a 95 % interval inside the sample needs a p50
  sample of 6 and a p95 sample of 72 (:func:`min_n_for_interval`); below that the percentile
  is shown without an interval. (The percentile bootstrap used before below those sizes
  cannot reach beyond the sample either: its p95 interval covered the truth 64 % of the time at
  n = 20 and 87 % at n = 50.) An interval is widened to include its own point estimate should
  the interpolation leave it just outside. These intervals are computed, not resampled.
* **Which interval.** Only the one above, for p50 and p95; nothing else is given an interval
  except the ratio of medians (below).
* **Seeds.** Every bootstrap (the ratio of medians) draws from
  ``SeedSequence([seed, crc32(key)])``, so a comparison's interval does not depend on which
  other groups are in the run.
* **Comparisons.** For two providers (or two runs) on one operation: the ratio of medians
  b/a with a 95 % percentile-bootstrap interval (independent bootstrap medians of a and b,
  :data:`BOOTSTRAP_RESAMPLES` each, drawn from the order-statistic distribution: in n draws
  with replacement the k-th smallest drawn index is ceil(n·U(k)), U(k) ~ Beta(k, n-k+1), and
  the next one U(k) + (1-U(k))·Beta(1, n-k); the same distribution as literal resampling,
  which tests check, at O(B) instead of O(B·n) per sample), and a two-sided Mann-Whitney U
  p-value (``scipy.stats.mannwhitneyu``, exact for small samples without ties, else the normal
  approximation with tie correction). Both sides need :data:`MIN_N_RATIO` (10) samples:
  measured over 2,000-4,000 seeded repetitions (same benchmark), the ratio's interval covered
  the true ratio in 95-98 % of samples from n = 10 per side for equal distributions, one twice
  as slow, and lognormal against bimodal; in the hardest case (a bimodal median at the steep
  edge of its fast mode, against lognormal) 93-96 % from n = 10 (92.9 % at n = 12), but only
  90-91 % at n = 6-8, hence the minimum.
* **Warnings.** failure rate above :data:`HIGH_FAILURE_RATE` (5 %) with at least
  :data:`HIGH_FAILURE_MIN` (2) failures (a single failure is shown in the table but is not
  called a high rate); coefficient of variation (std/mean) at or above :data:`HIGH_CV` (1.0:
  the spread is as large as the typical value); an open-loop client that started a scheduled
  operation more than :data:`SCHEDULE_LAG_WARN_S` (10 ms) after its intended start, or whose
  event loop kept ready answers waiting that long (latencies then include the client's delay).
* **Order and columns.** Workloads are listed in the registry's order and each workload's
  operations in the order it declares them (bench/workloads/shape.py); the frame has a column
  per declared extra. Nothing here names a workload or an operation.
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sp_stats

from bench.records import Sample, Status
from bench.workloads import registry
from bench.workloads.shape import Extra

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: Percentiles that get a bootstrap interval.
CI_PERCENTILES: tuple[int, ...] = (50, 95)
MIN_N_ANY = 5
#: Successful samples each side of a ratio of medians needs (module docstring: below 10 its
#: bootstrap interval covered bimodal ratios only about 90 % of the time).
MIN_N_RATIO = 10
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
#: The plain order-statistic interval is used while its exact coverage is at most this; above,
#: the interpolated one (see the module docstring).
MAX_PLAIN_COVERAGE = 0.975
HIGH_FAILURE_RATE = 0.05
HIGH_FAILURE_MIN = 2
HIGH_CV = 1.0

KEYS: tuple[str, str, str] = ("provider", "workload", "operation")
FAILED_STATUSES = frozenset({Status.ERROR, Status.TIMEOUT})

#: Open-loop schedule lag (actual minus intended start) above which the client is flagged as
#: unable to keep its schedule: latencies then include the client's own delay.
SCHEDULE_LAG_WARN_S = 0.010


def is_derived(operation: str, workload: str | None = None) -> bool:
    """True for spans that overlap other samples and must never be summed into a total
    (declared ``derived``: ``ready``, ``round_c10``)."""
    return registry.is_derived(operation, workload)


SUMMARY_COLUMNS: tuple[str, ...] = (
    "provider",
    "workload",
    "operation",
    "attempts",
    "n",
    "failures",
    "failure_rate",
    "unsupported",
    "skipped",
    "min_s",
    "p50_s",
    "p90_s",
    "p95_s",
    "p99_s",
    "max_s",
    "mean_s",
    "std_s",
    "p50_ci_low_s",
    "p50_ci_high_s",
    "p95_ci_low_s",
    "p95_ci_high_s",
    "withheld",
)

#: Columns of :func:`samples_frame` that every frame has, in order; the declared extras
#: (:func:`frame_columns`) come between ``schedule_lag_s`` and ``location``.
BASE_FRAME_COLUMNS: tuple[str, ...] = (
    "run_id",
    "sample_id",
    "provider",
    "workload",
    "operation",
    "iteration",
    "warmup",
    "concurrency",
    "status",
    "duration_s",
    "error_type",
    "schedule_lag_s",
    "location",
)


def frame_columns() -> tuple[str, ...]:
    """The columns of :func:`samples_frame`: the base ones and one per declared extra."""
    extras = [e.name for e in registry.declared_extras() if e.column]
    return (*BASE_FRAME_COLUMNS[:-1], *extras, BASE_FRAME_COLUMNS[-1])


# -- rules ------------------------------------------------------------------------------------


def min_n_for(percentile: float) -> int:
    """Smallest n that supports ``percentile`` (0-100): max(5, ceil(1 / (1 - p/100)))."""
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    tail = 1.0 - percentile / 100.0
    # The tolerance keeps 1/(1-0.99) = 100.00000000000009 from becoming 101.
    return max(MIN_N_ANY, math.ceil(1.0 / tail - 1e-9))


def supports(n: int, percentile: float) -> bool:
    return n >= min_n_for(percentile)


def percentile(sorted_values: np.ndarray, p: float) -> float:
    """numpy's default (linear, type 7) percentile of an already sorted array."""
    return float(np.quantile(sorted_values, p / 100.0, method="linear"))


def group_seed(seed: int, *key: object) -> np.random.SeedSequence:
    """A seed for one group that depends only on the run seed and the group's key."""
    digest = zlib.crc32("\x1f".join(str(k) for k in key).encode("utf-8"))
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, digest])


# -- intervals ------------------------------------------------------------------------------


def bootstrap_quantile_draws(
    sorted_values: np.ndarray,
    q: float,
    rng: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> np.ndarray:
    """``resamples`` draws of the type-7 ``q``-quantile of a bootstrap resample.

    Identical in distribution to ``np.quantile(rng.choice(x, n), q)`` repeated, but drawn from
    the order-statistic distribution (see the module docstring), so the cost is O(resamples).
    ``sorted_values`` may be one sorted sample or a 2-D array of samples of the same size, one
    per row (each row sorted); the draws then have one row per sample.
    """
    x = np.asarray(sorted_values, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    count, n = rows.shape
    if n == 0:
        raise ValueError("no values to bootstrap")
    if n == 1:
        out = np.repeat(rows[:, :1], resamples, axis=1)
        return out[0] if x.ndim == 1 else out
    h = (n - 1) * q
    lo = math.floor(h)
    frac = h - lo
    k = lo + 1  # 1-based rank of the lower order statistic
    shape = (resamples,) if x.ndim == 1 else (count, resamples)
    u_k = rng.beta(k, n - k + 1, size=shape).reshape(count, resamples)
    idx = np.clip(np.ceil(n * u_k).astype(np.int64), 1, n) - 1
    values = np.take_along_axis(rows, idx, axis=1)
    if frac > 0 and k < n:
        u_next = u_k + (1.0 - u_k) * rng.beta(1, n - k, size=shape).reshape(count, resamples)
        idx_next = np.clip(np.ceil(n * u_next).astype(np.int64), 1, n) - 1
        values = values + frac * (np.take_along_axis(rows, idx_next, axis=1) - values)
    return values[0] if x.ndim == 1 else values


def order_statistic_ranks(n: int, q: float) -> tuple[int, int] | None:
    """1-based ranks (l, u) with P(x_(l) <= true q-quantile <= x_(u)) >= CONFIDENCE for any
    continuous distribution, or None when n is too small for such an interval to exist (the
    plain, conservative interval; the report shows the interpolated one, :func:`interval_plan`)."""
    alpha = (1.0 - CONFIDENCE) / 2.0
    low = int(sp_stats.binom.ppf(alpha, n, q))
    high = int(sp_stats.binom.ppf(1.0 - alpha, n, q)) + 1
    for _ in range(3):  # ppf's discreteness can leave coverage a hair short: widen
        if low < 1 or high > n:
            return None
        coverage = sp_stats.binom.cdf(high - 1, n, q) - sp_stats.binom.cdf(low - 1, n, q)
        if coverage >= CONFIDENCE:
            return low, high
        low, high = low - 1, high + 1
    return None


def plain_coverage(n: int, q: float) -> float:
    """Exact coverage of the plain order-statistic interval (NaN when there is none)."""
    ranks = order_statistic_ranks(n, q)
    if ranks is None:
        return float("nan")
    low, high = ranks
    return float(sp_stats.binom.cdf(high - 1, n, q) - sp_stats.binom.cdf(low - 1, n, q))


@dataclass(frozen=True, slots=True)
class IntervalEnd:
    """One end of an interpolated interval: (1 - weight)·x(rank) + weight·x(rank + 1)."""

    #: 1-based rank of the lower of the two order statistics.
    rank: int
    weight: float

    def of(self, rows: np.ndarray) -> np.ndarray:
        """This end for each sorted row of ``rows`` (2-D)."""
        low = rows[:, self.rank - 1]
        if self.weight == 0.0:
            return low
        high = rows[:, self.rank]
        # Between the two order statistics also in floating point: (1 - w)·a + w·a can be an
        # ulp below a (0.975 gave 0.9749999999999999, below the sample's minimum).
        return np.clip(low + self.weight * (high - low), low, high)


def _interval_end(n: int, q: float, tau: float) -> IntervalEnd | None:
    """The interpolated order statistic L with P(L <= true q-quantile) = ``tau`` (Nyblom 1992,
    derived as in the module docstring), or None when the sample is too small for one."""
    # P(x(r) <= xi) = P(at least r of n values fall below xi) = P(Binomial(n, q) >= r).
    ranks = np.arange(1, n + 1)
    below = sp_stats.binom.sf(ranks - 1, n, q)
    meets = np.flatnonzero(below >= tau)
    if meets.size == 0:
        return None
    r = int(ranks[meets[-1]])  # the largest rank that still meets tau: x(r+1) falls short
    if r >= n:
        return None
    p_r, p_next = float(below[r - 1]), float(below[r])
    share = (tau - p_next) / (p_r - p_next)  # of P(B = r) the limit must still catch
    if share >= 1.0:
        return IntervalEnd(rank=r, weight=0.0)
    # Given exactly r values below xi, the gaps from xi down to x(r) and up to x(r+1) are
    # nearly exponential with rates r/q and (n-r)/(1-q) (in units of F); (1-w)x(r) + w x(r+1)
    # <= xi happens with probability c/(c + a/b) for c = (1-w)/w, a = r/q, b = (n-r)/(1-q).
    a, b = r / q, (n - r) / (1.0 - q)
    c = (a / b) * share / (1.0 - share)
    return IntervalEnd(rank=r, weight=1.0 / (1.0 + c))


@functools.lru_cache(maxsize=4096)
def interval_plan(n: int, q: float) -> tuple[IntervalEnd, IntervalEnd] | None:
    """The two ends of the 95 % interval of the ``q``-quantile from n sorted values (see the
    module docstring), or None when n is too small for one (then the interval is withheld)."""
    if not 0.0 < q < 1.0 or n < 2:
        return None
    plain = order_statistic_ranks(n, q)
    if plain is None:
        return None
    if plain_coverage(n, q) <= MAX_PLAIN_COVERAGE:
        return IntervalEnd(rank=plain[0], weight=0.0), IntervalEnd(rank=plain[1], weight=0.0)
    alpha = (1.0 - CONFIDENCE) / 2.0
    low = _interval_end(n, q, 1.0 - alpha)
    high = _interval_end(n, q, alpha)
    if low is None or high is None:
        return None
    return low, high


@functools.lru_cache(maxsize=64)
def min_n_for_interval(percentile: float) -> int:
    """Smallest n from which the ``percentile``'s interval is shown (p50: 6, p95: 72)."""
    n = max(2, min_n_for(percentile))
    while interval_plan(n, percentile / 100.0) is None:
        n += 1
    return n


def quantile_intervals(sorted_rows: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """95 % intervals of the p-th percentile of each sorted row of ``sorted_rows`` (2-D, one
    sample per row, all of the same size): (lows, highs), NaN where withheld."""
    rows = np.asarray(sorted_rows, dtype=np.float64)
    count, n = rows.shape
    plan = interval_plan(n, p / 100.0)
    if plan is None or not supports(n, p):
        nan = np.full(count, np.nan)
        return nan, nan.copy()
    estimate = np.quantile(rows, p / 100.0, axis=1, method="linear")
    return np.minimum(plan[0].of(rows), estimate), np.maximum(plan[1].of(rows), estimate)


def quantile_ci(
    sorted_values: np.ndarray,
    p: float,
    rng: np.random.Generator | None = None,
    resamples: int | None = None,
) -> tuple[float, float]:
    """95 % interval of the p-th percentile (see the module docstring), or (NaN, NaN) where
    it is withheld (n below :func:`min_n_for_interval`).

    ``rng`` and ``resamples`` are not used: the interval is computed, not resampled; they stay
    so that callers written for the earlier bootstrap fallback keep working.
    """
    del rng, resamples
    values = np.asarray(sorted_values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = quantile_intervals(values.reshape(1, -1), p)
    return float(low[0]), float(high[0])


def ratio_of_medians_ci(
    a_sorted: np.ndarray,
    b_sorted: np.ndarray,
    rng_a: np.random.Generator,
    rng_b: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile-bootstrap interval of median(b) / median(a), for one pair of sorted
    samples or for many (2-D, one sample per row, each side of one size): (lows, highs),
    widened to include the ratio of the sample medians; NaN where no draw is finite."""
    a = np.asarray(a_sorted, dtype=np.float64)
    b = np.asarray(b_sorted, dtype=np.float64)
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    draws_a = bootstrap_quantile_draws(a2, 0.5, rng_a, resamples)
    draws_b = bootstrap_quantile_draws(b2, 0.5, rng_b, resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = draws_b / draws_a
        estimate = np.median(b2, axis=1) / np.median(a2, axis=1)
    ratios = np.where(np.isfinite(ratios), ratios, np.nan)
    alpha = (1.0 - CONFIDENCE) / 2.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        low, high = np.nanquantile(ratios, [alpha, 1.0 - alpha], axis=1)
    return np.fmin(low, estimate), np.fmax(high, estimate)


@dataclass(frozen=True, kw_only=True, slots=True)
class RatioResult:
    """Median of b over median of a, with its interval and a Mann-Whitney U p-value."""

    n_a: int
    n_b: int
    median_a_s: float
    median_b_s: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    #: Empty when computed; otherwise why not ("n too small", "median of a is 0").
    reason: str = ""

    @property
    def computed(self) -> bool:
        return not self.reason


def compare_samples(
    a_sorted: np.ndarray,
    b_sorted: np.ndarray,
    *,
    seed: np.random.SeedSequence | int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> RatioResult:
    """Ratio of medians b/a with a bootstrap interval, and a two-sided Mann-Whitney U test."""
    a = np.asarray(a_sorted, dtype=np.float64)
    b = np.asarray(b_sorted, dtype=np.float64)
    n_a, n_b = int(a.size), int(b.size)
    nan = float("nan")
    med_a = percentile(a, 50) if n_a else nan
    med_b = percentile(b, 50) if n_b else nan

    def not_computed(reason: str, p_value: float = nan) -> RatioResult:
        return RatioResult(
            n_a=n_a,
            n_b=n_b,
            median_a_s=med_a,
            median_b_s=med_b,
            ratio=nan,
            ci_low=nan,
            ci_high=nan,
            p_value=p_value,
            reason=reason,
        )

    if n_a < MIN_N_RATIO or n_b < MIN_N_RATIO:
        return not_computed("n too small")
    p_value = float(sp_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    if med_a <= 0:
        return not_computed("median of the baseline is 0", p_value)
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng_a, rng_b = (np.random.default_rng(s) for s in seq.spawn(2))
    ratio = med_b / med_a
    lows, highs = ratio_of_medians_ci(a, b, rng_a, rng_b, resamples)
    low, high = float(lows[0]), float(highs[0])
    return RatioResult(
        n_a=n_a,
        n_b=n_b,
        median_a_s=med_a,
        median_b_s=med_b,
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
    )


# -- frames -----------------------------------------------------------------------------------


def float_column(values: Iterable[Any], n: int) -> np.ndarray:
    """``n`` values as float64: numbers as floats, anything else (None, bools, text) NaN."""
    return np.fromiter(
        (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan
         for v in values),
        np.float64,
        n,
    )  # fmt: skip


def extra_column(extra: Extra, values: Sequence[Any] | None, n: int) -> Any:
    """The frame column of one declared extra from its ``n`` values (None where a sample
    lacks the key), or from ``values=None`` when no sample carries the key at all.

    The rules of :func:`samples_frame`; bench/columnar.py builds the same columns from Arrow
    arrays and falls back to this function for any value type it does not vectorise.
    """
    kind = extra.type
    if values is None:
        if kind in (int, float):
            return np.full(n, np.nan)
        if kind is bool:
            return pd.arrays.BooleanArray(np.zeros(n, bool), np.ones(n, bool))
        return pd.Categorical.from_codes(np.full(n, -1, np.int8), categories=[])
    if kind in (int, float):
        return float_column(values, n)
    if kind is bool:
        return pd.array([v if isinstance(v, bool) else None for v in values], dtype="boolean")
    if kind is list:
        return pd.Categorical(
            ["; ".join(map(str, v)) if isinstance(v, list) and v else None for v in values]
        )
    return pd.Categorical([v if v is None or isinstance(v, str) else str(v) for v in values])


def samples_frame(samples: Iterable[Sample]) -> pd.DataFrame:
    """One row per sample with the columns of :func:`frame_columns`.

    Strings are categoricals (a million samples hold a handful of distinct names);
    ``duration_s`` is NaN unless the status is ok. From the open-loop fields,
    ``schedule_lag_s`` = actual minus intended start (NaN for closed-loop samples).
    ``location`` is the sample's own. Each declared extra is a column by its type: numbers as
    floats (NaN when absent or not a number), booleans as nullable booleans, strings as
    categoricals, lists joined with "; " (missing when absent or empty).
    """
    samples = list(samples)
    n = len(samples)
    extras = [s.extra or {} for s in samples]
    present: set[str] = set()
    for e in extras:
        if e:
            present.update(e)

    def floats(values: Iterable[Any]) -> np.ndarray:
        return float_column(values, n)

    lag = floats(
        (s.actual_start_s - s.intended_start_s)
        if s.actual_start_s is not None and s.intended_start_s is not None
        else None
        for s in samples
    )
    columns: dict[str, Any] = {
        "run_id": pd.Categorical([s.run_id for s in samples]),
        "sample_id": np.fromiter((s.sample_id for s in samples), np.int64, n),
        "provider": pd.Categorical([s.provider for s in samples]),
        "workload": pd.Categorical([s.workload for s in samples]),
        "operation": pd.Categorical([s.operation for s in samples]),
        "iteration": np.fromiter((s.iteration for s in samples), np.int64, n),
        "warmup": np.fromiter((bool(s.warmup) for s in samples), np.bool_, n),
        "concurrency": np.fromiter((s.concurrency for s in samples), np.int64, n),
        "status": pd.Categorical(
            [str(s.status) for s in samples], categories=[str(s) for s in Status]
        ),
        "duration_s": floats(s.duration_s for s in samples),
        "error_type": pd.Categorical([s.error_type for s in samples]),
        "schedule_lag_s": lag,
    }
    for extra in registry.declared_extras():
        if extra.column:
            key = extra.name
            # A key no sample carries costs no pass over a million extras.
            values = [e.get(key) for e in extras] if key in present else None
            columns[key] = extra_column(extra, values, n)
    columns["location"] = pd.Categorical([s.location for s in samples])
    return pd.DataFrame(columns)


def _as_frame(samples: pd.DataFrame | Sequence[Sample]) -> pd.DataFrame:
    if isinstance(samples, pd.DataFrame):
        missing = {"provider", "workload", "operation", "status", "duration_s", "warmup"} - set(
            samples.columns
        )
        if missing:
            raise ValueError(f"samples frame lacks columns: {', '.join(sorted(missing))}")
        return samples
    return samples_frame(samples)


def sort_key(provider: str, workload: str, operation: str) -> tuple[Any, ...]:
    """Display order: provider by name, then workloads in the registry's order and each
    workload's operations in the order it declares them (scaled families by value)."""
    return (
        provider,
        registry.workload_rank(workload),
        registry.operation_rank(workload, operation),
    )


def text_values(column: pd.Series) -> np.ndarray:
    """``column.astype(str).to_numpy()``: an object array of str, NaN where a value is missing.
    A categorical's categories are converted once and taken by code: ``astype(str)`` of a
    categorical of Arrow strings builds a Python string a row (seconds over a million)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.empty(len(column.cat.categories) + 1, dtype=object)
        names[:-1] = [str(c) for c in column.cat.categories]
        names[-1] = np.nan  # code -1: missing
        return names[column.cat.codes.to_numpy()]
    return column.astype(str).to_numpy()


def _status_masks(status: pd.Series) -> tuple[np.ndarray, ...]:
    """Boolean masks ok, failed (error or timeout), unsupported, skipped. From a categorical's
    codes when it is one: comparing a million category codes, not a million strings."""
    if isinstance(status.dtype, pd.CategoricalDtype):
        codes = status.cat.codes.to_numpy()
        names = [str(c) for c in status.cat.categories]

        def mask(*wanted: Status) -> np.ndarray:
            hits = [names.index(str(w)) for w in wanted if str(w) in names]
            return np.isin(codes, hits) if hits else np.zeros(len(codes), bool)

    else:
        text = text_values(status)

        def mask(*wanted: Status) -> np.ndarray:
            return np.isin(text, [str(w) for w in wanted])

    return (
        mask(Status.OK),
        mask(Status.ERROR, Status.TIMEOUT),
        mask(Status.UNSUPPORTED),
        mask(Status.SKIPPED),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Group:
    """One (provider, workload, operation): status counts and the sorted ok durations."""

    provider: str
    workload: str
    operation: str
    ok_sorted_s: np.ndarray
    failures: int
    unsupported: int
    skipped: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.provider, self.workload, self.operation)

    @property
    def n(self) -> int:
        return int(self.ok_sorted_s.size)


def groups(
    samples: pd.DataFrame | Sequence[Sample],
    *,
    include_warmups: bool = False,
    keys: Sequence[str] = KEYS,
) -> dict[tuple[str, ...], Group]:
    """Samples split by ``keys`` (default provider, workload, operation) in display order."""
    frame = _as_frame(samples)
    if not include_warmups:
        frame = frame[~frame["warmup"].to_numpy(dtype=bool)]
    if frame.empty:
        return {}
    durations = frame["duration_s"].to_numpy(dtype=np.float64)
    ok, failed, unsupported, skipped = _status_masks(frame["status"])
    indices = frame.groupby(list(keys), observed=True, sort=False).indices
    result: dict[tuple[str, ...], Group] = {}
    for key, idx in indices.items():
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(str(k) for k in key)
        values = np.sort(durations[idx[ok[idx]]])
        full = dict(zip(keys, key, strict=True))
        result[key] = Group(
            provider=full.get("provider", ""),
            workload=full.get("workload", ""),
            operation=full.get("operation", ""),
            ok_sorted_s=values,
            failures=int(failed[idx].sum()),
            unsupported=int(unsupported[idx].sum()),
            skipped=int(skipped[idx].sum()),
        )
    return dict(sorted(result.items(), key=lambda kv: sort_key(*kv[1].key)))


def summarize_group(group: Group, *, seed: int = 0) -> dict[str, Any]:
    """One summary row (the columns of :data:`SUMMARY_COLUMNS`) for one group.

    ``seed`` is accepted for symmetry with the comparisons; the row's intervals are computed
    from order statistics and do not depend on it."""
    del seed
    x = group.ok_sorted_s
    n = group.n
    attempts = n + group.failures
    nan = float("nan")
    row: dict[str, Any] = {
        "provider": group.provider,
        "workload": group.workload,
        "operation": group.operation,
        "attempts": attempts,
        "n": n,
        "failures": group.failures,
        "failure_rate": group.failures / attempts if attempts else nan,
        "unsupported": group.unsupported,
        "skipped": group.skipped,
        "min_s": float(x[0]) if n else nan,
        "max_s": float(x[-1]) if n else nan,
        "mean_s": float(x.mean()) if n else nan,
        "std_s": float(x.std(ddof=1)) if n >= 2 else nan,
    }
    withheld = []
    for p in PERCENTILES:
        if supports(n, p):
            row[f"p{p}_s"] = percentile(x, p)
        else:
            row[f"p{p}_s"] = nan
            withheld.append(f"p{p}")
    for p in CI_PERCENTILES:
        low, high = quantile_ci(x, p) if supports(n, p) else (nan, nan)
        row[f"p{p}_ci_low_s"] = low
        row[f"p{p}_ci_high_s"] = high
    row["withheld"] = ",".join(withheld)
    return {column: row[column] for column in SUMMARY_COLUMNS}


def summarize(
    samples: pd.DataFrame | Sequence[Sample],
    *,
    include_warmups: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (provider, workload, operation); columns :data:`SUMMARY_COLUMNS`.

    A statistic the sample cannot support is NaN and named in ``withheld``; use
    :func:`format_cell` to print a cell.
    """
    rows = [
        summarize_group(g, seed=seed)
        for g in groups(samples, include_warmups=include_warmups).values()
    ]
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("attempts", "n", "failures", "unsupported", "skipped"):
        frame[column] = frame[column].astype(np.int64)
    return frame


def compare_providers(group_map: Mapping[tuple[str, ...], Group], *, seed: int = 0) -> pd.DataFrame:
    """Every pair of providers on every (workload, operation) both measured.

    Columns: workload, operation, provider_a, provider_b (a < b by name), n_a, n_b,
    p50_a_s, p50_b_s, ratio (median b / median a), ratio_ci_low, ratio_ci_high, p_value,
    reason (empty when computed, else why not).
    """
    by_op: dict[tuple[str, str], dict[str, Group]] = {}
    for g in group_map.values():
        by_op.setdefault((g.workload, g.operation), {})[g.provider] = g
    rows = []
    for (workload, operation), providers in by_op.items():
        names = sorted(providers)
        for i, pa in enumerate(names):
            for pb in names[i + 1 :]:
                a, b = providers[pa], providers[pb]
                if a.n == 0 and b.n == 0:
                    continue
                result = compare_samples(
                    a.ok_sorted_s,
                    b.ok_sorted_s,
                    seed=group_seed(seed, "pair", workload, operation, pa, pb),
                )
                rows.append(
                    {
                        "workload": workload,
                        "operation": operation,
                        "provider_a": pa,
                        "provider_b": pb,
                        "n_a": result.n_a,
                        "n_b": result.n_b,
                        "p50_a_s": result.median_a_s,
                        "p50_b_s": result.median_b_s,
                        "ratio": result.ratio,
                        "ratio_ci_low": result.ci_low,
                        "ratio_ci_high": result.ci_high,
                        "p_value": result.p_value,
                        "reason": result.reason,
                    }
                )
    columns = [
        "workload",
        "operation",
        "provider_a",
        "provider_b",
        "n_a",
        "n_b",
        "p50_a_s",
        "p50_b_s",
        "ratio",
        "ratio_ci_low",
        "ratio_ci_high",
        "p_value",
        "reason",
    ]
    return pd.DataFrame(rows, columns=columns)


# -- formatting -------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """Three significant figures in a unit a person reads at a glance: µs, ms or s."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds == 0:
        return "0 s"
    magnitude = abs(seconds)
    if magnitude < 1e-3:
        value, unit = seconds * 1e6, "µs"
    elif magnitude < 1:
        value, unit = seconds * 1e3, "ms"
    else:
        value, unit = seconds, "s"
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def format_percent(fraction: float | None) -> str:
    if fraction is None or not math.isfinite(fraction):
        return "–"
    if fraction == 0:
        return "0 %"
    if fraction < 0.001:
        return "<0.1 %"
    return f"{fraction * 100:.1f} %"


NOT_ENOUGH = "n too small"


def high_failure_rate(row: Mapping[str, Any]) -> bool:
    """The warning rule: more than 5 % of attempts failed, and at least 2 of them."""
    rate = row.get("failure_rate")
    failures = int(row.get("failures", 0) or 0)
    return (
        failures >= HIGH_FAILURE_MIN
        and rate is not None
        and math.isfinite(rate)
        and rate > HIGH_FAILURE_RATE
    )


def is_withheld(row: Mapping[str, Any], stat: str) -> bool:
    """True if ``stat`` (e.g. ``"p99"``) was withheld for this row because n is too small."""
    name = stat.removesuffix("_s")
    withheld = row.get("withheld") or ""
    return name in str(withheld).split(",")


def format_cell(row: Mapping[str, Any], column: str) -> str:
    """A summary cell as text: durations with units, "n too small" where withheld.

    ``column`` may be given with or without the ``_s`` suffix (``"p50"`` or ``"p50_s"``).
    ``"failures"`` prints the count and, when non-zero, the failure rate.
    """
    name = column.removesuffix("_s")
    n = int(row.get("n", 0) or 0)
    if name == "failures":
        failures = int(row.get("failures", 0) or 0)
        if failures == 0:
            return "0"
        return f"{failures} ({format_percent(row.get('failure_rate'))})"
    if name == "failure_rate":
        return format_percent(row.get("failure_rate"))
    if name in ("n", "attempts", "unsupported", "skipped"):
        return str(int(row.get(name, 0) or 0))
    key = f"{name}_s" if f"{name}_s" in row else name
    if key not in row:
        raise KeyError(f"no column {column!r} in the summary")
    base = name.split("_ci_")[0]
    if n == 0:
        if int(row.get("unsupported", 0) or 0) and not int(row.get("attempts", 0) or 0):
            return "unsupported"
        return "–"
    if is_withheld(row, base):
        return NOT_ENOUGH
    value = row[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_ENOUGH if name == "std" and n < 2 else "–"
    return format_duration(float(value))


def format_interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"{format_duration(low)} – {format_duration(high)}"


def format_ratio(ratio: float) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "–"
    return f"{ratio:.2f}×"
