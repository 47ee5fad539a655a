"""Latency: per workload, one table, the workload's own parts, an ECDF and a box plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench import stats
from bench.report import figures
from bench.report.data import ReportData
from bench.report.tables import Row, Table, make_table
from bench.report.views import Text, View
from bench.report.workload import report_for

INTRO = (
    "One table and two figures per workload. Durations are measured on the client with a "
    "monotonic clock around each provider call."
)


def latency_table(workload: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    columns = (
        "Provider",
        "Operation",
        "n",
        "Failures",
        "Not run",
        "p50",
        "p50 95% CI",
        "p90",
        "p95",
        "p95 95% CI",
        "p99",
        "Max",
        "Mean ± SD",
    )
    built = []
    for r in rows:
        not_run = []
        if r["unsupported"]:
            not_run.append("unsupported")
        if r["skipped"]:
            not_run.append(f"{r['skipped']} skipped")
        if r["n"] == 0 and r["unsupported"] and not r["attempts"]:
            cells = [r["provider"], r["operation"], "0", "–", ", ".join(not_run)] + ["–"] * 8
            built.append(Row(cells=tuple(cells), classes=("",) * 4 + ("muted",)))
            continue
        mean_sd = stats.format_cell(r, "mean")
        if r["n"] >= 2:
            mean_sd += f" ± {stats.format_cell(r, 'std')}"
        cells = [
            r["provider"],
            r["operation"],
            str(r["n"]),
            stats.format_cell(r, "failures"),
            ", ".join(not_run) or "–",
            stats.format_cell(r, "p50"),
            ci_cell(r, 50),
            stats.format_cell(r, "p90"),
            stats.format_cell(r, "p95"),
            ci_cell(r, 95),
            stats.format_cell(r, "p99"),
            stats.format_cell(r, "max"),
            mean_sd,
        ]
        failure_class = "bad" if stats.high_failure_rate(r) else ""
        classes = tuple(
            "muted" if c == stats.NOT_ENOUGH else (failure_class if i == 3 else "")
            for i, c in enumerate(cells)
        )
        built.append(Row(cells=tuple(cells), classes=classes))
    return make_table(
        f"latency-{workload}",
        columns,
        built,
        title=f"{workload}",
        align="llrrlrrrrrrrr",
    )


def ci_cell(row: Mapping[str, Any], p: int) -> str:
    if row["n"] == 0:
        return "–"
    if stats.is_withheld(row, f"p{p}"):
        return stats.NOT_ENOUGH
    text = stats.format_interval(row[f"p{p}_ci_low_s"], row[f"p{p}_ci_high_s"])
    return text or f"{stats.NOT_ENOUGH} (needs {stats.min_n_for_interval(p)})"


def workload_view(data: ReportData, workload: str) -> View:
    """One workload's part: its table, its own sections (``Workload.report``), its figures."""
    ops = data.by_workload[workload]
    own = report_for(workload)
    parts = [section(data, workload) for section in own.sections] if own is not None else []
    return View(
        id=f"workload-{workload}",
        title=workload,
        blocks=(
            latency_table(workload, data.rows_of(workload)),
            *parts,
            data.figure(figures.ecdf_figure(data.figures_dir, workload, ops, data.colors)),
            data.figure(figures.box_figure(data.figures_dir, workload, ops, data.colors)),
        ),
    )


def latency(data: ReportData) -> View:
    workloads = list(data.by_workload)
    return View(
        id="latency",
        title="Latency",
        nav="Latency",
        intro=(INTRO,),
        blocks=(
            Text(text="No samples were recorded.") if not workloads else None,
            *(workload_view(data, w) for w in workloads),
        ),
    )
