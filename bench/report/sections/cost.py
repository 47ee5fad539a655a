"""Cost: the prices used, every scenario on every priced provider, a published example against
the catalog's range, one workload iteration, one operation.

Every provider of the pricing catalog appears, measured or not (its times then come from its
vendor claims, said in the row). A self-hosted provider without a host price is listed as not
costed, never as $0. Where a rate has several sourced values or the billing basis several
readings, costs are ranges (bench/scenarios.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from bench import cost, stats
from bench import scenarios as sc
from bench.report import figures
from bench.report.data import ReportData
from bench.report.decision import STALE_AFTER, ScenarioDecision, decision_of
from bench.report.tables import Row, Table, make_table
from bench.report.views import Notes, Text, View

NOT_COSTED = "not costed"


def _checked(pricing: cost.ProviderPricing, as_of: date) -> str:
    dates = [when for _, when in pricing.last_checked() if when != cost.UNKNOWN_DATE]
    if not dates:
        return pricing.checked
    oldest = min(dates)
    text = pricing.checked if len(set(dates)) == 1 else f"{oldest.isoformat()} – {max(dates)}"
    if as_of - oldest > STALE_AFTER:
        text += f"\n{(as_of - oldest).days} days before this report: check again"
    return text


def _rates_text(pricing: cost.ProviderPricing) -> str:
    if not pricing.priced:
        return "a host price you give (local_usd_per_hour): none given"
    lines = []
    for rate in pricing.rates():
        if len(rate.values) == 1:
            lines.append(f"{rate.item}: {rate.values[0].display}")
            continue
        values = "; ".join(
            f"{v.display} ({v.source.split(':')[0]}, {v.checked})" for v in rate.values
        )
        lines.append(f"{rate.item}: {values}")
    if pricing.snapshot_rate is None:
        lines.append("snapshot storage: not published")
    return "\n".join(lines)


def pricing_table(data: ReportData, providers: Sequence[str], *, label: str, source: str) -> Table:
    catalog = data.catalog
    rows = []
    for p in providers:
        pr = catalog.get(p)
        if pr is None:
            rows.append([p, "not in the catalog"] + ["–"] * 7)
            continue
        basis = (
            "allocated resources while running"
            if pr.billing_basis == "allocated"
            else "actual use, only while active"
        )
        size = data.sizes.get(p)
        own = size.shape if size is not None else data.spec
        if not pr.priced:
            billed = f"{NOT_COSTED}: self-hosted, no host price given (local_usd_per_hour)"
        else:
            parts = []
            for alt in pr.alternatives:
                shape = alt.billed_shape or own
                low = pr.at("low").usd_per_s(shape) * 3600
                high = pr.at("high").usd_per_s(shape) * 3600
                name = f"{alt.name}: " if len(pr.alternatives) > 1 else ""
                parts.append(f"{name}{shape.describe()} → {cost.format_usd_range(low, high)}/h")
            billed = "\n".join(parts)
            if size is not None:
                billed += f"\nsize: {size.source}"
        granularity = f"{pr.granularity_s:g} s; minimum {pr.minimum_s:g} s"
        idle = f"{pr.idle.replace('_', ' ')}; paused/stopped pays {pr.paused_pays}"
        rows.append(
            [
                pr.display_name,
                basis,
                _rates_text(pr),
                billed,
                granularity,
                idle,
                "\n".join(pr.plan_limits[i].describe() for i in range(len(pr.plan_limits))) or "–",
                pr.source,
                _checked(pr, data.as_of),
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
            "Plan limits",
            "Source",
            "Checked",
        ),
        rows,
        title="Prices used",
        caption=f"From {label} ({source}). Where sources disagree every value is listed and "
        "costs are ranges over them; where the billing basis has several readings each is "
        "priced. Check prices again before buying.",
        align="lllllllll",
    )


def pricing_notes(catalog: cost.Catalog, providers: Sequence[str]) -> list[str]:
    notes = []
    for p in providers:
        pr = catalog.get(p)
        if pr is None:
            notes.append(f"{p}: no pricing entry; its costs are not shown.")
            continue
        parts = [pr.basis_note, pr.paused_note]
        if len(pr.alternatives) > 1:
            parts.append(
                "Billing readings: "
                + "; ".join(
                    f"{a.name} ({a.source}){' ' + a.note if a.note else ''}"
                    for a in pr.alternatives
                )
                + "."
            )
        elif pr.billed_shape is not None:
            parts.append(pr.shape_note)
        if pr.sandbox_size is not None and not pr.sandbox_size.from_spec:
            parts.append(f"Sandbox size: {pr.sandbox_size.note} ({pr.sandbox_size.source})")
        if pr.snapshot_note:
            parts.append(f"Snapshots: {pr.snapshot_note}")
        if pr.superseded:
            parts.append(f"Other figures seen: {pr.superseded}")
        if pr.plans:
            parts.append(f"Plans: {pr.plans}")
        notes.append(f"{pr.display_name}: " + " ".join(x for x in parts if x))
    return notes


def example_checks(data: ReportData, providers: Sequence[str]) -> list[str]:
    """Each published cost example of the catalog against the range the catalog gives."""
    out = []
    for p in providers:
        pr = data.catalog.get(p)
        if pr is None or not pr.priced:
            continue
        for example in pr.examples:
            check = sc.check_example(
                example,
                pr,
                data.sizes[p],
                hours_per_month=data.catalog.hours_per_month,
                dearest_snapshot_usd_per_gib_h=data.catalog.dearest_storage_usd_per_gib_h(),
            )
            out.append(check.text())
    return out


def operation_cost_table(op_costs: pd.DataFrame) -> Table:
    rows = []
    for r in op_costs.to_dict("records"):
        priced = bool(r["priced"])
        rows.append(
            [
                r["provider"],
                r["workload"],
                r["operation"],
                r["shape"],
                cost.format_usd(r["usd_per_hour"]) if priced else NOT_COSTED,
                cost.format_usd(r["p50_usd"]) if priced else "–",
                cost.format_usd(r["p95_usd"]) if priced else "–",
            ]
        )
    return make_table(
        "operation-costs",
        ("Provider", "Workload", "Operation", "Billed size", "Per hour", "At p50", "At p95"),
        rows,
        title="Cost of one operation",
        caption="Measured duration × the per-second price of the billed size, at the catalog's "
        "first-listed rates: what the time an operation takes costs on one running sandbox. "
        '"–" where the percentile is withheld or the provider is not costed.',
        align="llllrrr",
    )


def workload_cost_table(wl_costs: pd.DataFrame) -> Table:
    rows = []
    for r in wl_costs.to_dict("records"):
        priced = pd.notna(r["usd_p50"])
        rows.append(
            [
                r["provider"],
                r["workload"],
                str(r["iterations"]),
                stats.format_duration(r["billed_p50_s"]),
                cost.format_usd(r["usd_p50"]) if priced else NOT_COSTED,
                cost.format_usd(r["usd_mean"]) if priced else "–",
                cost.format_usd(r["usd_total"]) if priced else "–",
            ]
        )
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


def _shape_cell(c_price: sc.ScenarioPrice) -> str:
    shapes = {a.billed_shape.describe() for a in c_price.by_alternative}
    return c_price.billed_shape.describe() if len(shapes) == 1 else " or ".join(sorted(shapes))


def _usd(value: float, *, at_least: bool = False) -> str:
    """An amount; "≥ $x" for a lower bound (a nonzero one: "≥ $0" says nothing)."""
    return ("≥ " if at_least and value else "") + cost.format_usd(value)


def _split(unit: sc.UnitCost, *, at_least: bool = False) -> str:
    """The compute cost by what is priced: vCPUs, memory (and a flat per-sandbox rate)."""
    text = f"{_usd(unit.cpu_usd, at_least=at_least)} / {_usd(unit.memory_usd, at_least=at_least)}"
    if unit.sandbox_usd:
        text += f" + {_usd(unit.sandbox_usd, at_least=at_least)} per sandbox"
    return text


def scenario_cost_table(d: ScenarioDecision) -> Table:
    """Every provider's cost of one scenario (the persistent agent's keeps the id
    ``session-costs`` it has had since before scenarios)."""
    kind = d.scenario.kind
    agent = kind.name == "agent"
    unit = kind.unit
    rows = []
    order = [*d.cost_ranking.ranks, *sorted(set(d.costs) - set(d.cost_ranking.ranks))]
    for p in order:
        c = d.costs[p]
        if c.price is None:
            cells = [p, NOT_COSTED, *("–",) * 5, f"{NOT_COSTED}: {c.reason}", *("–",) * 4]
            rows.append(Row(cells=tuple(cells), classes=("",) * 7 + ("muted",)))
            continue
        price = c.price
        primary = price.primary
        idle = (
            " (idle billed)" if agent and "idle time is billed" in "; ".join(primary.notes) else ""
        )
        snapshots = (
            "not published" if price.snapshot_unknown else cost.format_usd(primary.snapshot_usd)
        )
        per_unit = cost.format_usd_range(price.per_unit.low, price.per_unit.high)
        if price.snapshot_unknown:
            per_unit += " + snapshots†"
        plan = (
            "none fits: " + "; ".join(price.plans_too_small)
            if price.no_plan_fits
            else (price.plan.describe() if price.plan is not None else "–")
        )
        month = price.month_with_plan
        # With a time nobody measured or claimed (counted at 0 s), the time-billed parts are
        # lower bounds only.
        bound = price.high_unknown
        cells = [
            p,
            _shape_cell(price),
            ("≥ " if bound else "") + f"{primary.billed_h:.2f} h{idle}",
            _usd(primary.compute_usd, at_least=bound),
            _split(primary, at_least=bound),
            _usd(primary.storage_usd, at_least=bound),
            snapshots,
            per_unit,
            cost.format_usd_range(price.per_day.low, price.per_day.high),
            cost.format_usd_range(month.low, month.high),
            plan,
            c.times_summary,
        ]
        rows.append(cells)
    return make_table(
        "session-costs" if d.scenario.name == sc.SESSION else f"scenario-costs-{d.scenario.name}",
        (
            "Provider",
            "Billed size",
            "Billed compute",
            "Compute",
            "CPU / memory",
            "Storage",
            "Snapshots",
            f"Per {unit}",
            "Per day",
            "Per month (with plan fee)",
            "Plan",
            "Times",
        ),
        rows,
        title=f"Cost: {d.scenario.title}",
        caption=f"Billed compute, compute (split into vCPUs and memory), storage and snapshots "
        f"per {unit} at the catalog's "
        "first-listed rates, first billing reading and the median times; the ranges span every "
        "sourced rate, every billing reading and the times' 95 % intervals. A month is "
        "hours_per_month / 24 days. Times: where the operation times came from (measured here, "
        "or the vendor's claims for providers not measured or measured on an emulator; a time "
        "neither measured nor claimed leaves the upper end unknown, '– ?', and makes the "
        "time-billed parts lower bounds, '≥'). "
        "† snapshot storage price not published: the range counts $0 at its low end and the "
        "dearest storage rate in the catalog at its high end.",
        align="llrrrrrlrrll",
    )


def scenario_assumptions(d: ScenarioDecision) -> list[str]:
    out = []
    for p, c in d.costs.items():
        if c.price is None:
            continue
        notes = list(c.price.notes)
        notes.insert(1, f"the sandbox's own size: {c.price.size.source}")
        if len(c.price.by_alternative) > 1:
            notes.append(
                "billing readings: "
                + "; ".join(
                    f"{a.name} ({a.billed_shape.describe()}): "
                    f"{cost.format_usd_range(a.per_unit.low, a.per_unit.high)} per "
                    f"{d.scenario.kind.unit}"
                    for a in c.price.by_alternative
                )
            )
        if c.price.plans_too_small and not c.price.no_plan_fits:
            notes.append("plans too small: " + "; ".join(c.price.plans_too_small))
        out.append(f"{p}: " + "; ".join(notes) + ".")
    return out


def scenario_view(data: ReportData, d: ScenarioDecision) -> View:
    table = scenario_cost_table(d)
    fig = None
    if d.scenario.name == sc.SESSION:
        rows = [
            (
                p,
                c.price.primary.compute_usd,
                c.price.primary.storage_usd,
                c.price.primary.snapshot_usd,
            )
            for p, c in d.costs.items()
            if c.price is not None
        ]
        fig = data.figure(
            figures.session_cost_figure(
                data.figures_dir,
                rows,
                data.colors,
                d.scenario.describe() + " (at the catalog's first-listed rates and first billing "
                "reading; the table gives the ranges; $x – ?: a lower bound, a time the cost "
                "needs neither measured nor claimed)",
                open_high={p for p, c in d.costs.items() if c.high_unknown},
            )
        )
    return View(
        id=f"cost-{d.scenario.name}" if d.scenario.name != sc.SESSION else "cost-session",
        title=table.title,
        blocks=(
            Text(text=f"Scenario: {d.scenario.describe()} ({d.source or 'the defaults'})."),
            table,
            Notes(items=tuple(scenario_assumptions(d))),
            fig,
        ),
    )


def cost_section(data: ReportData) -> View:
    choice = data.pricing
    providers = sorted(set(data.providers) | set(data.catalog.providers))
    prices = pricing_table(data, providers, label=choice.label, source=choice.source)
    examples = example_checks(data, providers)
    wl_costs = data.workload_costs
    workload = workload_cost_table(wl_costs)
    workload_fig = data.figure(
        figures.workload_cost_figure(
            data.figures_dir,
            [
                (r["provider"], r["workload"], r["usd_p50"])
                for r in wl_costs.to_dict("records")
                if pd.notna(r["usd_p50"])
            ],
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
                blocks=(prices, Notes(items=tuple(pricing_notes(data.catalog, providers)))),
            ),
            View(
                id="cost-examples",
                title="Published examples against the catalog",
                blocks=(Notes(items=tuple(examples)),),
            )
            if examples
            else None,
            *(scenario_view(data, d) for d in decision_of(data).scenarios),
            View(id="cost-workload", title=workload.title, blocks=(workload, workload_fig)),
            View(id="cost-operation", title=operation.title, blocks=(operation,)),
        ),
    )
