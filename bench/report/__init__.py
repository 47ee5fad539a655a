"""Reports: reports/<run_id>/report.html, report.md, figures/ and summary.csv.

``write_report`` loads one or more run folders (:mod:`bench.report.runs`), merges them (each
sample keeps its run id; runs of different schema versions are refused), reads the pricing
catalog and the session scenario each run was made with (or the settings' overrides), and
builds the report from a list of sections (bench/report/registry.py), each a small function
that returns a generic view (bench/report/views.py) or nothing; workloads add their own parts
(``Workload.report``, :class:`WorkloadReport`). It writes:

* ``report.html``: one self-contained file; figures are embedded as SVG data URIs, styles are
  inline, nothing is fetched from the network;
* ``report.md``: the same tables in GitHub-flavoured Markdown, linking the figures;
* ``figures/*.svg``: the figures (matplotlib, Agg backend);
* ``summary.csv``: one row per (provider, workload, operation): the statistics of
  :func:`bench.stats.summarize` plus the cost of one operation at p50 and p95;
* ``comparisons.csv``: every pairwise comparison of providers (the report shows the
  decision-relevant ones first and folds the rest).

Several runs go to ``<out_root>/<first run id>+<number of other runs>/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from bench.report.build import build_report, render_html, render_markdown
from bench.report.data import ReportData
from bench.report.registry import register_section, section_names
from bench.report.runs import RunSet, load_runs
from bench.report.settings import ReportSettings
from bench.report.tables import Row, Table, make_table
from bench.report.views import Figure, Notes, ReportWarning, Severity, Text, View, Warnings
from bench.report.workload import WorkloadReport

__all__ = [
    "Figure",
    "Notes",
    "ReportData",
    "ReportSettings",
    "ReportWarning",
    "Row",
    "RunSet",
    "Severity",
    "Table",
    "Text",
    "View",
    "Warnings",
    "WorkloadReport",
    "load_runs",
    "make_table",
    "register_section",
    "report_dir_name",
    "section_names",
    "write_report",
]


def report_dir_name(run_ids: Sequence[str]) -> str:
    """``<run id>`` for one run, ``<first run id>+<number of other runs>`` for several."""
    if not run_ids:
        raise ValueError("no runs given")
    return run_ids[0] if len(run_ids) == 1 else f"{run_ids[0]}+{len(run_ids) - 1}"


def write_report(
    run_folders: list[Path],
    out_root: Path,
    *,
    settings: ReportSettings | None = None,
) -> Path:
    """Write the report of ``run_folders`` under ``out_root``; returns report.html's path.

    Raises :class:`bench.records.SchemaError` for unreadable or incompatible runs and
    ValueError for bad settings, catalogs or scenarios, each with a one-line message, before
    anything is written.
    """
    settings = settings or ReportSettings()
    runset = load_runs([Path(f) for f in run_folders])
    out = Path(out_root) / report_dir_name([r.run_id for r in runset.runs])
    figures_dir = out / "figures"
    data = ReportData(runset, settings, figures_dir)  # checks pricing and scenario first
    if figures_dir.exists():
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)
    report = build_report(runset, settings, figures_dir, data=data)
    report.summary_csv.to_csv(out / "summary.csv", index=False, float_format="%.9g")
    if report.comparisons_csv is not None:
        report.comparisons_csv.to_csv(out / "comparisons.csv", index=False, float_format="%.9g")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return html_path
