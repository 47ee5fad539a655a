"""Cost: the prices used, an agent session, one workload iteration, one operation."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench import cost, stats
from bench.report import figures
from bench.report.data import ReportData
from bench.report.tables import Table, make_table
from bench.report.views import Notes, Text, View


def pricing_table(
    catalog: cost.Catalog, providers: Sequence[str], spec: cost.Shape, *, label: str, source: str
) -> Table:
    rows = []
    for p in providers:
        pr = catalog.get(p)
        if pr is None:
            rows.append([p, "not in the catalog"] + ["–"] * 6)
            continue
        basis = (
            "allocated resources while running"
            if pr.billing_basis == "allocated"
            else "actual use, only while active"
        )
        shape = pr.shape_for(spec)
        rates = "\n".join(f"{item}: {text}" for item, text in pr.rate_rows)
        granularity = f"{pr.granularity_s:g} s; minimum {pr.minimum_s:g} s"
        idle = f"{pr.idle.replace('_', ' ')}; paused/stopped pays {pr.paused_pays}"
        rows.append(
            [
                pr.display_name,
                basis,
                rates,
                f"{shape.describe()} → {cost.format_usd(pr.usd_per_s(shape) * 3600)}/h",
                granularity,
                idle,
                pr.source,
                pr.checked,
            ]
        )
    return make_table(
        "pricing",
        (
            "Provider",
            "Billing basis",
            "Rates (as published)",
            "Billed size → price while running",
            "Granularity",
            "Idle",
            "Source",
            "Checked",
        ),
        rows,
        title="Prices used",
        caption=f"From {label} ({source}). Check prices again before buying.",
        align="llllllll",
    )


def pricing_notes(catalog: cost.Catalog, providers: Sequence[str]) -> list[str]:
    notes = []
    for p in providers:
        pr = catalog.get(p)
        if pr is None:
            notes.append(f"{p}: no pricing entry; its costs are not shown.")
            continue
        parts = [pr.basis_note, pr.paused_note]
        if pr.billed_shape is not None:
            parts.append(pr.shape_note)
        if pr.snapshot_note:
            parts.append(f"Snapshots: {pr.snapshot_note}")
        if pr.superseded:
            parts.append(f"Other figures seen: {pr.superseded}")
        if pr.plans:
            parts.append(f"Plans: {pr.plans}")
        notes.append(f"{pr.display_name}: " + " ".join(x for x in parts if x))
    return notes


def operation_cost_table(op_costs: pd.DataFrame) -> Table:
    rows = []
    for r in op_costs.to_dict("records"):
        rows.append(
            [
                r["provider"],
                r["workload"],
                r["operation"],
                r["shape"],
                cost.format_usd(r["usd_per_hour"]) if r["priced"] else "not priced",
                cost.format_usd(r["p50_usd"]),
                cost.format_usd(r["p95_usd"]),
            ]
        )
    return make_table(
        "operation-costs",
        ("Provider", "Workload", "Operation", "Billed size", "Per hour", "At p50", "At p95"),
        rows,
        title="Cost of one operation",
        caption="Measured duration × the per-second price of the billed size: what the time an "
        'operation takes costs on one running sandbox. "–" where the percentile is withheld.',
        align="llllrrr",
    )


def workload_cost_table(wl_costs: pd.DataFrame) -> Table:
    rows = [
        [
            r["provider"],
            r["workload"],
            str(r["iterations"]),
            stats.format_duration(r["billed_p50_s"]),
            cost.format_usd(r["usd_p50"]),
            cost.format_usd(r["usd_mean"]),
            cost.format_usd(r["usd_total"]),
        ]
        for r in wl_costs.to_dict("records")
    ]
    return make_table(
        "workload-costs",
        (
            "Provider",
            "Workload",
            "Iterations",
            "Billed time p50",
            "Cost p50",
            "Cost mean",
            "Whole run",
        ),
        rows,
        title="Cost of one workload iteration",
        caption="Sum of the iteration's successful operation times on one sandbox (the derived "
        "'ready' span excluded), rounded up to the billing granularity: a lower bound, since "
        "the harness's own gaps and a restored second sandbox are not billed here.",
        align="llrrrrr",
    )


def session_table(sessions: Sequence[cost.SessionCost]) -> Table:
    rows = []
    for s in sessions:
        rows.append(
            [
                s.provider,
                s.shape.describe(),
                f"{s.compute_h:.2f} h" + (" (idle billed)" if s.idle_billed else ""),
                cost.format_usd(s.compute_usd),
                cost.format_usd(s.storage_usd),
                "unknown" if s.snapshot_usd is None else cost.format_usd(s.snapshot_usd),
                cost.format_usd(s.total_usd) + (" + snapshots" if s.snapshot_usd is None else ""),
                stats.format_duration(s.wait_s),
            ]
        )
    return make_table(
        "session-costs",
        (
            "Provider",
            "Billed size",
            "Billed compute",
            "Compute",
            "Storage",
            "Snapshots",
            "Total",
            "Waiting on checkpoints and resumes",
        ),
        rows,
        title="Cost of an agent session",
        align="llrrrrrr",
    )


def session_assumptions(sessions: Sequence[cost.SessionCost]) -> list[str]:
    return [f"{s.provider}: " + "; ".join(s.assumptions) + "." for s in sessions]


def cost_section(data: ReportData) -> View:
    choice = data.pricing
    prices = pricing_table(
        data.catalog, data.providers, data.spec, label=choice.label, source=choice.source
    )
    sessions = data.sessions
    scenario = data.scenario
    session = session_table(sessions)
    session_fig = data.figure(
        figures.session_cost_figure(
            data.figures_dir,
            [(s.provider, s.compute_usd, s.storage_usd, s.snapshot_usd) for s in sessions],
            data.colors,
            scenario.describe(),
        )
    )
    wl_costs = data.workload_costs
    workload = workload_cost_table(wl_costs)
    workload_fig = data.figure(
        figures.workload_cost_figure(
            data.figures_dir,
            [(r["provider"], r["workload"], r["usd_p50"]) for r in wl_costs.to_dict("records")],
            data.colors,
        )
    )
    operation = operation_cost_table(data.operation_costs)
    return View(
        id="cost",
        title="Cost",
        nav="Cost",
        blocks=(
            View(
                id="cost-prices",
                title=prices.title,
                blocks=(prices, Notes(items=tuple(pricing_notes(data.catalog, data.providers)))),
            ),
            View(
                id="cost-session",
                title=session.title,
                blocks=(
                    Text(text=f"Scenario: {scenario.describe()} ({data.scenario_choice.source})."),
                    session,
                    Notes(items=tuple(session_assumptions(sessions))),
                    session_fig,
                ),
            ),
            View(id="cost-workload", title=workload.title, blocks=(workload, workload_fig)),
            View(id="cost-operation", title=operation.title, blocks=(operation,)),
        ),
    )
