"""Vendor claims against measurements, and pairwise comparisons of providers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from bench import claims as claims_mod
from bench import stats
from bench.report.data import ReportData
from bench.report.tables import Row, Table, make_table
from bench.report.views import Text, View


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def claims_table(results: Sequence[claims_mod.ClaimResult]) -> Table:
    rows = []
    for r in results:
        c = r.claim
        measured = stats.format_duration(r.p50_s) if math.isfinite(r.p50_s) else "–"
        ci = stats.format_interval(r.p50_ci_low_s, r.p50_ci_high_s) or "–"
        if math.isfinite(r.p95_s):
            p95 = stats.format_duration(r.p95_s)
        else:
            p95 = stats.NOT_ENOUGH if r.n else "–"
        where = f"{c.workload}/{c.operation}" if c.workload else c.operation
        verdict = str(r.verdict)
        shown_reason = (claims_mod.Verdict.NOT_MEASURED, claims_mod.Verdict.NOT_COMPARABLE)
        detail = r.reason if r.verdict in shown_reason else c.note
        source = f"“{c.quote}” — {c.source}, {c.date}" + (f"\n{detail}" if detail else "")
        cells = (c.provider, where, c.describe(), measured, ci, p95, str(r.n), verdict, source)
        classes = ("",) * 7 + (f"verdict verdict-{verdict.replace(' ', '-')}", "small")
        rows.append(Row(cells=cells, classes=classes))
    return make_table(
        "claims",
        (
            "Provider",
            "Measured as",
            "Claim",
            "Measured p50",
            "p50 95% CI",
            "Measured p95",
            "n",
            "Verdict",
            "Source, and how we read it",
        ),
        rows,
        title="Vendor claims against measurements",
        caption="Verdict on the median: 'about X' allows X/1.25 to X×1.25, 'under X' 0 to X, "
        "'X to Y' that range; slower or faster only when the median's whole 95 % interval is "
        "outside, otherwise within; not measured below 6 successful samples (the fewest "
        "the median's interval needs).",
        align="lllrrrrll",
    )


def comparison_table(pairs: pd.DataFrame) -> Table:
    rows = []
    for r in pairs.to_dict("records"):
        if r["reason"]:
            ratio = r["reason"]
            ci = "–"
        else:
            ratio = stats.format_ratio(r["ratio"])
            low, high = r["ratio_ci_low"], r["ratio_ci_high"]
            ci = f"{stats.format_ratio(low)} – {stats.format_ratio(high)}"
        rows.append(
            [
                r["workload"],
                r["operation"],
                f"{r['provider_b']} vs {r['provider_a']}",
                stats.format_duration(r["p50_b_s"]),
                stats.format_duration(r["p50_a_s"]),
                ratio,
                ci,
                fmt_p(r["p_value"]),
                f"{r['n_b']} / {r['n_a']}",
            ]
        )
    return make_table(
        "comparisons",
        (
            "Workload",
            "Operation",
            "B vs A",
            "p50 B",
            "p50 A",
            "Median B / A",
            "95% CI",
            "Mann-Whitney p",
            "n B / A",
        ),
        rows,
        title="Pairwise comparisons",
        caption="Ratio of medians: below 1× B is faster than A, above 1× slower. The interval is "
        "a seeded percentile bootstrap; the p-value is a two-sided Mann-Whitney U test (with "
        "many comparisons, expect about 1 in 20 of them under 0.05 by chance alone).",
        align="lllrrrrrr",
    )


def claims(data: ReportData) -> View:
    table = claims_table(data.claim_results)
    return View(
        id="claims",
        title="Vendor claims against measurements",
        nav="Claims",
        blocks=(table if table.rows else Text(text="No claims for these providers."),),
    )


def comparisons(data: ReportData) -> View:
    table = comparison_table(data.pairs)
    return View(
        id="comparisons",
        title="Pairwise comparisons",
        nav="Comparisons",
        blocks=(table if table.rows else Text(text="Only one provider was measured."),),
    )
