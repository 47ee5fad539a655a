"""Vendor claims: the data file, the claim bands and the verdict rule."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from bench import claims, stats
from bench.claims import Claim, ClaimKind, Verdict
from bench.workloads import WORKLOADS, registry
from providers import REGISTRY

#: Every registered provider except the stub (which is not a sandbox and has no claims).
KNOWN_PROVIDERS = set(REGISTRY) - {"stub"}


def _claim(kind: str, low: float, high: float | None = None, **kw) -> Claim:
    return Claim(
        provider=kw.pop("provider", "p"),
        operation=kw.pop("operation", "create"),
        workload=kw.pop("workload", "lifecycle"),
        kind=ClaimKind(kind),
        low_s=low,
        high_s=low if high is None else high,
        quote="q",
        source="s",
        date="2026-01-01",
    )


def _groups(values, *, provider="p", workload="lifecycle", operation="create", unsupported=0):
    group = stats.Group(
        provider=provider,
        workload=workload,
        operation=operation,
        ok_sorted_s=np.sort(np.asarray(values, dtype=float)),
        failures=0,
        unsupported=unsupported,
        skipped=0,
    )
    return {group.key: group}


def test_the_claims_file_loads_and_every_claim_names_its_source_and_date():
    loaded = claims.load_claims()
    assert len(loaded) >= 6
    for claim in loaded:
        assert claim.provider in KNOWN_PROVIDERS
        # Every claim names an operation some registered workload declares (its own, when
        # the claim names the workload), so it can be measured at all.
        assert claim.workload is None or claim.workload in WORKLOADS
        assert registry.declares(claim.workload, claim.operation), claim
        assert claim.source.strip() and claim.quote.strip()
        date.fromisoformat(claim.date)
    by_key = {(c.provider, c.operation): c for c in loaded}
    assert by_key[("sprites", "checkpoint")].band_s == pytest.approx((0.24, 0.375))
    assert by_key[("daytona", "create")].kind is ClaimKind.AT_MOST


@pytest.mark.parametrize(
    ("claim", "band"),
    [
        (_claim("approx", 0.3), (0.24, 0.375)),
        (_claim("at_most", 1.0), (0.0, 1.0)),
        (_claim("range", 1.0, 2.0), (1.0, 2.0)),
    ],
)
def test_each_kind_of_claim_becomes_a_band(claim, band):
    assert claim.band_s == pytest.approx(band)


@pytest.mark.parametrize(
    ("ci", "verdict"),
    [
        ((0.30, 0.40), Verdict.WITHIN),  # overlaps the band's top
        ((0.10, 0.20), Verdict.FASTER),  # wholly below 0.24
        ((0.38, 0.50), Verdict.SLOWER),  # wholly above 0.375
        ((0.10, 0.60), Verdict.WITHIN),  # wide interval: cannot tell, so no miss is claimed
        ((0.375, 0.375), Verdict.WITHIN),  # on the edge counts as within
    ],
)
def test_verdict_rule_uses_the_whole_interval_of_the_median(ci, verdict):
    assert claims.verdict_for(_claim("approx", 0.3).band_s, ci) is verdict


def test_a_measured_median_near_the_claim_is_within():
    rng = np.random.default_rng(1)
    result = claims.evaluate_claims(
        [_claim("approx", 0.3)], _groups(0.3 * np.exp(0.2 * rng.standard_normal(200)))
    )[0]
    assert result.verdict is Verdict.WITHIN
    assert result.p50_ci_low_s <= result.p50_s <= result.p50_ci_high_s
    assert result.p50_s == pytest.approx(0.3, rel=0.1)
    assert math.isfinite(result.p95_s)


def test_a_clearly_slower_median_is_slower_and_a_clearly_faster_one_is_faster():
    rng = np.random.default_rng(2)
    slow = 0.45 * np.exp(0.3 * rng.standard_normal(100))
    fast = 0.05 * np.exp(0.3 * rng.standard_normal(100))
    e2b_create = _claim("approx", 0.1)
    assert claims.evaluate_claims([e2b_create], _groups(slow))[0].verdict is Verdict.SLOWER
    assert claims.evaluate_claims([e2b_create], _groups(fast))[0].verdict is Verdict.FASTER
    # Beating an "under X" claim is within it, never "faster".
    under = _claim("at_most", 0.09)
    assert claims.evaluate_claims([under], _groups(fast))[0].verdict is Verdict.WITHIN


def test_a_noisy_small_sample_near_the_claim_is_not_called_a_miss():
    # 6 samples whose median is 0.42 s against "about 0.3 s": the interval is wide enough
    # to reach the band, so the verdict stays within.
    values = [0.2, 0.3, 0.4, 0.44, 0.6, 0.9]
    result = claims.evaluate_claims([_claim("approx", 0.3)], _groups(values))[0]
    assert result.p50_s == pytest.approx(0.42)
    assert result.verdict is Verdict.WITHIN


@pytest.mark.parametrize(
    ("groups", "reasons", "expected"),
    [
        ({}, {}, "no create samples for p in the lifecycle workload"),
        (_groups([0.1, 0.2]), {}, "n too small (n=2, the median needs 5)"),
        (_groups([]), {"p": {"create": "no API"}}, "unsupported: create: no API"),
    ],
)
def test_not_measured_says_why(groups, reasons, expected):
    result = claims.evaluate_claims([_claim("approx", 0.3)], groups, unsupported_reasons=reasons)
    assert result[0].verdict is Verdict.NOT_MEASURED
    assert result[0].reason == expected
    assert math.isnan(result[0].p50_ci_low_s)


def test_a_wake_claim_on_a_provider_without_pause_is_not_measured_with_the_reason():
    claim = _claim(
        "range",
        0.1,
        0.5,
        provider="sprites",
        workload="pause_resume",
        operation="first_exec_after_resume",
    )
    result = claims.evaluate_claims(
        [claim], {}, unsupported_reasons={"sprites": {"pause": "no pause API"}}
    )[0]
    assert result.verdict is Verdict.NOT_MEASURED
    assert result.reason == "unsupported: pause: no pause API"


def test_a_claim_without_a_workload_pools_every_workload_that_records_the_operation():
    groups = {
        **_groups([1.0] * 5, workload="lifecycle"),
        **_groups([3.0] * 5, workload="exec"),
    }
    claim = _claim("approx", 2.0, workload=None)
    result = claims.evaluate_claims([claim], groups)[0]
    assert result.n == 10
    assert result.p50_s == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"provider": "p", "operation": "o", "kind": "approx", "quote": "q", "source": "s"},
            "missing 'date'",
        ),
        (
            {
                "provider": "p",
                "operation": "o",
                "kind": "soon",
                "quote": "q",
                "source": "s",
                "date": "d",
            },
            "kind must be one of",
        ),
        (
            {
                "provider": "p",
                "operation": "o",
                "kind": "range",
                "low_s": 2,
                "high_s": 1,
                "quote": "q",
                "source": "s",
                "date": "d",
            },
            "above high_s",
        ),
        (
            {
                "provider": "p",
                "operation": "o",
                "kind": "approx",
                "value_s": "fast",
                "quote": "q",
                "source": "s",
                "date": "d",
            },
            "must be a number",
        ),
    ],
)
def test_a_malformed_claim_is_refused_with_a_one_line_message(entry, message):
    with pytest.raises(ValueError, match=message) as info:
        claims.parse_claim(entry)
    assert "\n" not in str(info.value)
