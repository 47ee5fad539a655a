"""Decision: per scenario, which provider is faster and which is cheaper, by how much, and
with what certainty (the data and rules: bench/report/decision.py, bench/decide.py).

:func:`decision_view` turns a :class:`bench.report.decision.Decision` into the view, so a tool
that has a decision (history, a static site) shows it the same way without a report.
"""

from __future__ import annotations

import math

from bench import cost, stats
from bench.report.data import ReportData
from bench.report.decision import RULES, Decision, ScenarioDecision, decision_of
from bench.report.tables import Row, Table, make_table
from bench.report.views import Notes, ReportWarning, Text, View, Warnings

INTRO = (
    "For each scenario, every provider measured or priced, ranked on the latency that matters "
    "for it and on cost. A rank only separates providers whose intervals (latency) or price "
    "ranges (cost) do not overlap; equal ranks are ties. Providers not ranked say why."
)


SNAPSHOT_MARK = "†"
SNAPSHOT_NOTE = (
    f"{SNAPSHOT_MARK} snapshot storage price not published: the range counts $0 to the dearest "
    "storage rate in the catalog"
)


def _latency_cell(d: ScenarioDecision, provider: str) -> str:
    lat = d.latency.get(provider)
    if lat is None:
        return "–"
    if lat.origin == "not measured":
        if lat.claims:
            return "vendor claim, not measured: " + "; ".join(c.split(" (")[0] for c in lat.claims)
        return "not measured"
    if not math.isfinite(lat.p50_s):
        text = f"{stats.NOT_ENOUGH} (n={lat.n})" if lat.n else "no successful samples"
        if not lat.attempts and lat.measured_as:
            text = f"no samples of {lat.measured_as}"
        return text + ("\nemulated, not the provider" if lat.origin == "emulated" else "")
    ci = stats.format_interval(lat.p50_low_s, lat.p50_high_s)
    text = stats.format_duration(lat.p50_s) + (f" ({ci})" if ci else "")
    if lat.origin == "emulated":
        text += "\nemulated, not the provider"
    return text


def _rank_cell(rank: int | None, tied: tuple[str, ...]) -> str:
    if rank is None:
        return "not ranked"
    return str(rank) + (f" (tied with {', '.join(tied)})" if tied else "")


def _cost_cell(d: ScenarioDecision, provider: str) -> str:
    c = d.costs.get(provider)
    if c is None or c.price is None:
        return "not costed"
    month = c.price.month_with_plan
    text = cost.format_usd_range(month.low, month.high)
    if c.price.snapshot_unknown:
        text += f" + snapshots{SNAPSHOT_MARK}"
    return text


def _plan_cell(d: ScenarioDecision, provider: str) -> str:
    c = d.costs.get(provider)
    if c is None or c.price is None:
        return "–"
    p = c.price
    if p.no_plan_fits:
        return "none fits: " + "; ".join(p.plans_too_small)
    if p.plan is not None:
        fee = f"${p.plan.usd_per_month:,.0f}/month" if p.plan.usd_per_month else "no fee"
        text = f"{p.plan.name} ({fee})"
        if p.plans_too_small:
            text += "\ntoo small: " + "; ".join(p.plans_too_small)
        return text
    return "no plan limits in the catalog"


def _notes_cell(d: ScenarioDecision, provider: str) -> str:
    out = []
    lat = d.latency.get(provider)
    if lat is not None and lat.semantics:
        out.append(lat.semantics)
    reason = d.latency_ranking.withheld.get(provider)
    if reason and not (lat and lat.origin == "not measured" and lat.claims):
        out.append(f"latency not ranked: {reason}")
    elif reason:
        out.append("latency not ranked: not measured here")
    c = d.costs.get(provider)
    if c is not None and c.price is not None and c.price.snapshot_unknown:
        out.append(SNAPSHOT_NOTE)
    if c is not None:
        if c.reason:
            out.append(("not costed: " if c.price is None else "cost not ranked: ") + c.reason)
        else:
            if c.high_unknown:
                out.append(f"? no upper end: {c.high_unknown}")
            if c.times_summary not in ("measured", "–"):
                out.append(f"cost times: {c.times_summary}")
    return "\n".join(out) or "–"


def scenario_table(d: ScenarioDecision) -> Table:
    metric = d.scenario.kind.latency.label
    providers = [
        *d.latency_ranking.ranks,
        *sorted(
            (set(d.latency) | set(d.costs)) - set(d.latency_ranking.ranks),
            key=lambda p: (d.cost_ranking.ranks.get(p, 10**6), p),
        ),
    ]
    rows = []
    for p in providers:
        lat = d.latency.get(p)
        failures = (
            f"{lat.failures} of {lat.attempts} ({stats.format_percent(lat.failure_rate)})"
            if lat is not None and lat.attempts
            else "–"
        )
        cells = (
            p,
            _latency_cell(d, p),
            str(lat.n) if lat is not None and lat.origin != "not measured" else "–",
            failures,
            _rank_cell(d.latency_ranking.ranks.get(p), d.latency_ranking.tied_with(p)),
            _cost_cell(d, p),
            _plan_cell(d, p),
            _rank_cell(d.cost_ranking.ranks.get(p), d.cost_ranking.tied_with(p)),
            _notes_cell(d, p),
        )
        muted = lat is not None and lat.origin != "measured"
        classes = ("", "muted" if muted else "", "", "", "", "", "", "", "small")
        rows.append(Row(cells=cells, classes=classes))
    return make_table(
        f"decision-{d.scenario.name}",
        (
            "Provider",
            "p50 (95% CI)",
            "n",
            "Failures",
            "Latency rank",
            "Cost a month",
            "Plan",
            "Cost rank",
            "Notes",
        ),
        rows,
        title=d.scenario.title,
        caption=f"Latency: {metric}, per iteration, successful iterations only; failures count "
        "iterations with a failed step. Cost a month: the range over every sourced rate and "
        "billing reading, with the measured times at their interval's ends and the fee of the "
        "cheapest plan that allows the scenario; '– ?': the upper end is unknown (a time the "
        "cost needs was neither measured nor claimed); details in the Cost section.",
        align="llrrlllll",
    )


def scenario_view(d: ScenarioDecision) -> View:
    statements = [*d.latency_statements(), *d.cost_statements()]
    return View(
        id=f"decision-{d.scenario.name}",
        title=d.scenario.title,
        blocks=(
            Text(text=f"{d.scenario.describe()} ({d.source or 'the defaults'})."),
            scenario_table(d),
            Notes(items=tuple(statements)),
        ),
    )


def decision_view(decision: Decision) -> View:
    """The decision section for any :class:`Decision` (a report's or another tool's)."""
    blocks: list = [Text(text=RULES)]
    if decision.price_warnings:
        names = ", ".join(w.split(":")[0] for w in decision.price_warnings)
        text = (
            f"prices of {names} were last checked more than 90 days before this report "
            "(which ones: Warnings); check them before buying"
        )
        blocks.append(Warnings(items=(ReportWarning(kind="stale price", text=text),)))
    blocks += [scenario_view(d) for d in decision.scenarios]
    return View(
        id="decision", title="Decision", nav="Decision", intro=(INTRO,), blocks=tuple(blocks)
    )


def decision(data: ReportData) -> View:
    return decision_view(decision_of(data))
