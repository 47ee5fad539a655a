"""A report from raw runs: the chosen sections' views, the summary CSV, and rendering.

:func:`build_report` asks each section of the registry (bench/report/registry.py) that the
settings choose for its view, in report order; sections that have nothing to show return None
and are left out (with their entry in the table of contents). The HTML and Markdown templates
only lay out those generic views (bench/report/views.py), so both show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd

from bench.report.data import ReportData
from bench.report.registry import SECTIONS, load
from bench.report.runs import RunInfo, RunSet, emulated_providers, load_runs
from bench.report.sections.run import fmt_time
from bench.report.settings import ReportSettings
from bench.report.tables import Table, to_markdown
from bench.report.views import FOLD_ROWS, Figure, View, inline_html
from bench.stats import SCHEDULE_LAG_WARN_S

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True, kw_only=True)
class Report:
    title: str
    subtitle: str
    generated_at: str
    run_ids: tuple[str, ...]
    #: The top-level sections, in report order.
    sections: tuple[View, ...]
    #: One row per (provider, workload, operation): statistics and the cost of one operation.
    summary_csv: pd.DataFrame
    #: Every pairwise comparison of providers (None when the section is not shown).
    comparisons_csv: pd.DataFrame | None = None

    def all_tables(self) -> list[Table]:
        return [t for view in self.sections for t in view.tables()]

    def figures(self) -> list[Figure]:
        return [f for view in self.sections for f in view.figures()]


def summary_csv(data: ReportData) -> pd.DataFrame:
    """The summary statistics with the cost of one operation at p50 and p95 beside them."""
    op_costs = data.operation_costs
    table = data.summary.merge(
        op_costs[["provider", "workload", "operation", "usd_per_hour", "p50_usd", "p95_usd"]],
        on=["provider", "workload", "operation"],
        how="left",
    )
    table.insert(0, "runs", " ".join(data.run_ids))
    return table


def build_views(data: ReportData) -> tuple[View, ...]:
    """Each chosen section's view, in report order."""
    views = []
    for name, ref in SECTIONS.items():
        if not data.settings.shows(name):
            continue
        view = load(ref, default_attribute=name)(data)
        if view is not None:
            views.append(view)
    return tuple(views)


def build_report(
    runset: RunSet, settings: ReportSettings, figures_dir: Path, *, data: ReportData | None = None
) -> Report:
    data = data or ReportData(runset, settings, figures_dir)
    run_ids = data.run_ids
    subtitle = (
        f"{', '.join(data.providers)} · {len(run_ids)} run{'s' if len(run_ids) > 1 else ''} · "
        f"{fmt_time(data.manifests[0].get('started_at'))}"
    )
    return Report(
        title="Sandbox benchmark report",
        subtitle=subtitle,
        generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        run_ids=run_ids,
        sections=build_views(data),
        summary_csv=summary_csv(data),
        comparisons_csv=data.pairs if settings.shows("comparisons") else None,
    )


# -- rendering --------------------------------------------------------------------------------


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["markdown_table"] = to_markdown
    env.globals["fold_rows"] = FOLD_ROWS
    env.filters["inline"] = lambda text: markupsafe.Markup(inline_html(str(text)))
    return env


def render_html(report: Report) -> str:
    return _environment(True).get_template("report.html.j2").render(r=report)


def render_markdown(report: Report) -> str:
    return _environment(False).get_template("report.md.j2").render(r=report)


__all__ = [
    "SCHEDULE_LAG_WARN_S",
    "Report",
    "RunInfo",
    "RunSet",
    "build_report",
    "emulated_providers",
    "load_runs",
    "render_html",
    "render_markdown",
    "summary_csv",
]
