"""Vendor claims against measurements. (The pairwise comparisons of providers, once here,
are in :mod:`bench.report.sections.latency`; ``comparisons`` is kept importable from here
for the registry's "bench.report.sections.claims:comparisons".)"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench import claims as claims_mod
from bench import stats
from bench.report.data import ReportData
from bench.report.sections.latency import comparison_table, comparisons, fmt_p
from bench.report.tables import Row, Table, make_table
from bench.report.views import Text, View

__all__ = ["claims", "claims_table", "comparison_table", "comparisons", "fmt_p"]


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


def claims(data: ReportData) -> View:
    table = claims_table(data.claim_results)
    return View(
        id="claims",
        title="Vendor claims against measurements",
        nav="Claims",
        blocks=(table if table.rows else Text(text="No claims for these providers."),),
    )
