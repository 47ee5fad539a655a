"""Statistics against known distributions and the rules in bench/stats.py's docstring."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats as sp_stats

from bench import stats
from bench.records import Sample, Status


def _sample(i: int, duration: float | None, *, status: str = "ok", **kw) -> Sample:
    return Sample(
        run_id="r",
        sample_id=i,
        provider=kw.pop("provider", "p"),
        workload=kw.pop("workload", "lifecycle"),
        operation=kw.pop("operation", "create"),
        iteration=i,
        warmup=kw.pop("warmup", False),
        concurrency=1,
        started_at="2026-11-28T00:00:00+00:00",
        duration_s=duration,
        status=Status(status),
        error_type="Boom" if status in ("error", "timeout") else None,
        **kw,
    )


def _group(values, *, failures: int = 0) -> stats.Group:
    return stats.Group(
        provider="p",
        workload="w",
        operation="o",
        ok_sorted_s=np.sort(np.asarray(values, dtype=float)),
        failures=failures,
        unsupported=0,
        skipped=0,
    )


def test_minimum_n_rule_is_five_and_one_expected_sample_beyond_the_percentile():
    assert [stats.min_n_for(p) for p in (50, 90, 95, 99)] == [5, 10, 20, 100]
    assert not stats.supports(99, 99)
    assert stats.supports(100, 99)


def test_percentiles_are_numpys_linear_interpolation():
    rng = np.random.default_rng(3)
    values = rng.lognormal(0, 0.7, 257)
    row = stats.summarize_group(_group(values))
    for p in stats.PERCENTILES:
        assert row[f"p{p}_s"] == pytest.approx(np.percentile(values, p), rel=1e-12)
    assert row["min_s"] == values.min()
    assert row["max_s"] == values.max()
    assert row["mean_s"] == pytest.approx(values.mean())
    assert row["std_s"] == pytest.approx(values.std(ddof=1))


@pytest.mark.parametrize(
    ("n", "withheld"),
    [
        (4, "p50,p90,p95,p99"),
        (5, "p90,p95,p99"),
        (19, "p95,p99"),
        (20, "p99"),
        (99, "p99"),
        (100, ""),
    ],
)
def test_a_percentile_is_withheld_below_its_minimum_n(n, withheld):
    row = stats.summarize_group(_group(np.linspace(1, 2, n)))
    assert row["withheld"] == withheld
    for p in stats.PERCENTILES:
        shown = f"p{p}" not in withheld.split(",")
        assert math.isfinite(row[f"p{p}_s"]) == shown
        assert stats.format_cell(row, f"p{p}") != stats.NOT_ENOUGH if shown else True
        if not shown:
            assert stats.format_cell(row, f"p{p}") == stats.NOT_ENOUGH
    # An interval needs more samples than its percentile: p95's from 72, p50's from 6.
    assert math.isfinite(row["p95_ci_low_s"]) == (n >= 72)
    assert math.isfinite(row["p50_ci_low_s"]) == (n >= 6)


def test_intervals_are_withheld_exactly_where_no_95_percent_interval_exists():
    assert (stats.min_n_for_interval(50), stats.min_n_for_interval(95)) == (6, 72)
    for p, n in ((50, 5), (95, 71)):
        assert stats.interval_plan(n, p / 100) is None
        low, high = stats.quantile_ci(np.linspace(1, 2, n), p)
        assert math.isnan(low) and math.isnan(high)
    row = stats.summarize_group(_group(np.linspace(1, 2, 50)))
    assert math.isfinite(row["p95_s"]) and math.isnan(row["p95_ci_low_s"])


def test_the_plain_interval_is_kept_unless_it_is_over_975_percent_and_then_interpolated():
    from scipy.stats import binom

    for n, q in ((6, 0.5), (8, 0.5), (40, 0.5), (72, 0.95), (100, 0.95), (300, 0.95)):
        low, high = stats.interval_plan(n, q)
        if stats.plain_coverage(n, q) <= stats.MAX_PLAIN_COVERAGE:
            assert (low.rank, high.rank) == stats.order_statistic_ranks(n, q)
            assert low.weight == high.weight == 0.0
            continue
        # Interpolated: the lower end's two order statistics bracket 97.5 %, the upper's 2.5 %.
        below = binom.sf(np.array([low.rank, high.rank]) - 1, n, q)  # P(x(r) <= quantile)
        after = binom.sf(np.array([low.rank, high.rank]), n, q)  # P(x(r+1) <= quantile)
        assert below[0] >= 0.975 > after[0]
        assert below[1] >= 0.025 > after[1]
        assert 0 < low.weight < 1 and 0 < high.weight < 1
    assert stats.plain_coverage(8, 0.5) > stats.MAX_PLAIN_COVERAGE  # n = 8 is interpolated


def test_median_and_p95_of_known_distributions_fall_in_their_intervals():
    rng = np.random.default_rng(11)
    cases = [
        (rng.exponential(1.0, 20_000), sp_stats.expon()),
        (rng.uniform(0.0, 1.0, 20_000), sp_stats.uniform()),
        (rng.lognormal(-2.0, 0.5, 20_000), sp_stats.lognorm(s=0.5, scale=math.exp(-2.0))),
    ]
    for values, dist in cases:
        row = stats.summarize_group(_group(values))
        for p in (50, 95):
            truth = dist.ppf(p / 100)
            assert row[f"p{p}_ci_low_s"] <= truth <= row[f"p{p}_ci_high_s"], (p, truth, row)
            assert row[f"p{p}_s"] == pytest.approx(truth, rel=0.05)


def test_the_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    reps, n = 2000, 40
    rows = np.sort(rng.exponential(1.0, (reps, n)), axis=1)
    low, high = stats.quantile_intervals(rows, 50)
    covered = np.mean((low <= math.log(2)) & (math.log(2) <= high))
    # Monte Carlo error at 2,000 repetitions: about ±1 point.
    assert 0.93 <= covered <= 0.97
    # The one-row function gives the same interval as the vectorised one.
    assert stats.quantile_ci(rows[7], 50) == (low[7], high[7])


@pytest.mark.parametrize(("q", "n"), [(0.5, 30), (0.95, 30), (0.9, 7), (0.5, 2)])
def test_order_statistic_draws_match_literal_resampling(q, n):
    rng = np.random.default_rng(21)
    values = np.sort(rng.lognormal(0, 0.6, n))
    literal = np.quantile(values[rng.integers(0, n, size=(20_000, n))], q, axis=1, method="linear")
    direct = stats.bootstrap_quantile_draws(values, q, np.random.default_rng(22), 20_000)
    assert sp_stats.ks_2samp(literal, direct).pvalue > 0.001
    for level in (0.025, 0.5, 0.975):
        assert np.quantile(direct, level) == pytest.approx(np.quantile(literal, level), rel=0.05)


def test_intervals_are_reproducible_for_a_seed_and_independent_of_other_groups():
    rng = np.random.default_rng(8)
    samples = [_sample(i, float(d)) for i, d in enumerate(rng.lognormal(0, 1, 60))]
    samples += [
        _sample(100 + i, float(d), provider="q") for i, d in enumerate(rng.lognormal(0, 1, 60))
    ]
    a = stats.summarize(samples, seed=1)
    b = stats.summarize(samples, seed=1)
    c = stats.summarize(samples, seed=2)
    only_p = stats.summarize([s for s in samples if s.provider == "p"], seed=1)
    pd.testing.assert_frame_equal(a, b)
    ci_columns = ["p50_ci_low_s", "p50_ci_high_s", "p95_ci_low_s", "p95_ci_high_s"]
    # Interval ends are often data points themselves, so only some move with the seed.
    assert not np.array_equal(a[ci_columns].to_numpy(), c[ci_columns].to_numpy())
    assert only_p.loc[0, "p50_ci_low_s"] == a.loc[0, "p50_ci_low_s"]


def test_failures_are_counted_beside_durations_never_as_durations():
    samples = [_sample(i, 1.0 + i / 100) for i in range(10)]
    samples += [
        _sample(20, None, status="error"),
        _sample(21, None, status="timeout"),
        _sample(22, None, status="unsupported"),
        _sample(23, None, status="skipped"),
    ]
    row = stats.summarize(samples).iloc[0].to_dict()
    assert (row["n"], row["attempts"], row["failures"]) == (10, 12, 2)
    assert (row["unsupported"], row["skipped"]) == (1, 1)
    assert row["failure_rate"] == pytest.approx(2 / 12)
    assert row["min_s"] == 1.0
    assert stats.format_cell(row, "failures") == "2 (16.7 %)"


def test_warmups_are_excluded_unless_asked_for():
    samples = [_sample(i, 1.0) for i in range(6)] + [_sample(9, 50.0, warmup=True)]
    assert stats.summarize(samples).loc[0, "max_s"] == 1.0
    assert stats.summarize(samples, include_warmups=True).loc[0, "max_s"] == 50.0


def test_summary_rows_follow_the_runners_order_and_have_the_declared_columns():
    ops = ["destroy", "create", "ready", "first_exec"]
    samples = [_sample(i, 0.1, operation=op) for i, op in enumerate(ops * 5)]
    summary = stats.summarize(samples)
    assert list(summary.columns) == list(stats.SUMMARY_COLUMNS)
    assert list(summary["operation"]) == ["create", "first_exec", "ready", "destroy"]
    assert summary["n"].dtype == np.int64


def test_samples_frame_keeps_one_row_per_sample_with_nan_for_failures():
    samples = [_sample(0, 0.5), _sample(1, None, status="error"), _sample(2, 0.7)]
    samples.append(_sample(3, 0.2, operation="verify", extra={"verified": True}))
    frame = stats.samples_frame(samples)
    assert list(frame.columns) == list(stats.frame_columns())
    assert len(frame) == 4
    assert math.isnan(frame.loc[1, "duration_s"])
    assert frame.loc[3, "verified"] is True or bool(frame.loc[3, "verified"])
    assert pd.isna(frame.loc[0, "verified"])


def test_samples_frame_reads_schedule_lag_and_declared_extras():
    samples = [
        _sample(0, 0.5, intended_start_s=10.0, actual_start_s=10.25),
        _sample(1, 0.4, extra={"idle_s": 45.0}),
        _sample(2, 0.3, extra={"recycled": True, "spec_mismatch": ["cpus 1 < 2", "memory"]}),
        _sample(3, 0.3, extra={"recycled": False, "spec_mismatch": [], "state_mb": 64}),
    ]
    frame = stats.samples_frame(samples)
    assert frame.loc[0, "schedule_lag_s"] == pytest.approx(0.25)
    assert math.isnan(frame.loc[1, "schedule_lag_s"])
    assert frame.loc[1, "idle_s"] == 45.0
    assert bool(frame.loc[2, "recycled"]) and not bool(frame.loc[3, "recycled"])
    assert frame.loc[2, "spec_mismatch"] == "cpus 1 < 2; memory"
    assert pd.isna(frame.loc[3, "spec_mismatch"])
    assert frame.loc[3, "state_mb"] == 64.0


@pytest.mark.parametrize(
    ("failures", "attempts", "high"),
    [(1, 10, False), (2, 10, True), (2, 40, False), (3, 40, True), (0, 0, False)],
)
def test_a_high_failure_rate_needs_more_than_5_percent_and_two_failures(failures, attempts, high):
    rate = failures / attempts if attempts else float("nan")
    assert stats.high_failure_rate({"failures": failures, "failure_rate": rate}) is high


def test_derived_spans_are_recognised_so_they_are_never_summed():
    assert stats.is_derived("ready")
    assert stats.is_derived("round_c10")
    assert not stats.is_derived("create_c10")
    assert not stats.is_derived("create")


def test_an_empty_or_all_failed_group_has_no_statistics():
    samples = [_sample(i, None, status="error") for i in range(5)]
    row = stats.summarize(samples).iloc[0].to_dict()
    assert row["n"] == 0
    assert row["failure_rate"] == 1.0
    assert stats.format_cell(row, "p50") == "–"
    assert stats.summarize([]).empty


def test_comparing_two_shifted_distributions_finds_the_ratio_and_a_small_p_value():
    rng = np.random.default_rng(2)
    a = np.sort(rng.lognormal(0, 0.3, 400))
    b = np.sort(rng.lognormal(math.log(2), 0.3, 400))
    result = stats.compare_samples(a, b, seed=1)
    assert result.computed
    assert result.ci_low <= result.ratio <= result.ci_high
    assert result.ci_low < 2.0 < result.ci_high
    assert result.p_value < 1e-6


def test_comparing_the_same_distribution_rarely_excludes_a_ratio_of_one():
    rng = np.random.default_rng(4)
    excluded = 0
    for i in range(60):
        a, b = np.sort(rng.exponential(1, 80)), np.sort(rng.exponential(1, 80))
        result = stats.compare_samples(a, b, seed=i, resamples=2000)
        excluded += not (result.ci_low <= 1.0 <= result.ci_high)
    assert excluded <= 8  # about 3 expected at 95 %


def test_comparing_with_too_few_samples_says_so():
    result = stats.compare_samples(np.array([1.0, 2.0]), np.arange(1.0, 10.0))
    assert not result.computed
    assert result.reason == "n too small"
    assert math.isnan(result.ratio)


def test_provider_pairs_cover_every_operation_both_measured():
    rng = np.random.default_rng(0)
    samples = []
    for provider, scale in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        for d in rng.lognormal(0, 0.2, 30):
            samples.append(_sample(len(samples), float(d * scale), provider=provider))
    pairs = stats.compare_providers(stats.groups(samples))
    assert list(zip(pairs["provider_a"], pairs["provider_b"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert pairs.loc[0, "ratio"] == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.000123, "123 µs"),
        (0.0123, "12.3 ms"),
        (0.123, "123 ms"),
        (1.234, "1.23 s"),
        (61.0, "61.0 s"),
        (float("nan"), "–"),
    ],
)
def test_durations_print_with_three_significant_figures(seconds, text):
    assert stats.format_duration(seconds) == text


positive_durations = st.lists(
    st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False),
    min_size=0,
    max_size=250,
)


@settings(max_examples=120, deadline=None)
@given(positive_durations, st.integers(min_value=0, max_value=2**31))
# Found in CI: two equal order statistics interpolated to an ulp below the sample's minimum.
@example([1.0] * 6 + [0.975, 0.975], 0)
def test_property_percentiles_are_ordered_intervals_hold_and_small_n_claims_nothing(values, seed):
    row = stats.summarize_group(_group(values), seed=seed)
    n = len(values)
    shown = [row["min_s"]] + [row[f"p{p}_s"] for p in stats.PERCENTILES] + [row["max_s"]]
    finite = [v for v in shown if math.isfinite(v)]
    assert finite == sorted(finite)
    for p in stats.PERCENTILES:
        if n < stats.min_n_for(p):
            assert math.isnan(row[f"p{p}_s"])
            assert f"p{p}" in row["withheld"].split(",")
        else:
            assert math.isfinite(row[f"p{p}_s"])
    for p in stats.CI_PERCENTILES:
        low, high, estimate = row[f"p{p}_ci_low_s"], row[f"p{p}_ci_high_s"], row[f"p{p}_s"]
        if math.isfinite(estimate) and n >= stats.min_n_for_interval(p):
            assert low <= estimate <= high
            assert row["min_s"] <= low and high <= row["max_s"]
        else:
            assert math.isnan(low) and math.isnan(high)


@given(st.lists(st.one_of(st.none(), st.sampled_from(["ok", "error", "é", "", "nan"]))))
@settings(max_examples=60, deadline=None)
def test_text_values_is_astype_str_of_a_categorical_or_not(values):
    for column in (pd.Series(pd.Categorical(values)), pd.Series(values, dtype=object)):
        expected = column.astype(str).to_numpy()
        got = stats.text_values(column)
        assert got.dtype == object and len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert (a == b) if isinstance(b, str) else (isinstance(a, float) and math.isnan(a))
