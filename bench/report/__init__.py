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
* ``summary.csv`` and ``summary.json``: one row per (provider, workload, operation): the
  statistics of :func:`bench.stats.summarize` plus the cost of one operation at p50 and p95
  (the JSON holds the same rows as records, NaN as null);
* ``decision.csv`` and ``decision.json``: the decision section as data, one row per
  (scenario, provider): latency with its interval, failures, cost ranges, plan, ranks and
  ties, and why a provider is not ranked (a cost's unknown upper end is null, with
  ``cost_high_unknown_because``); the JSON adds each scenario's parameters, the pairs'
  ratios and intervals, the statements and the rules (:mod:`bench.report.decision`).
* ``comparisons.csv``: every pairwise comparison of providers (the report shows, open, each
  provider against the fastest on each decision-relevant operation, and folds the rest).

Several runs go to ``<out_root>/<first run id>+<number of other runs>/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.report.build import build_report, render_html, render_markdown
from bench.report.data import ReportData
from bench.report.decision import Decision, decide_runs, decision_of
from bench.report.registry import register_section, section_names
from bench.report.runs import RunSet, load_runs
from bench.report.settings import ReportSettings
from bench.report.tables import Row, Table, make_table
from bench.report.views import Figure, Notes, ReportWarning, Severity, Text, View, Warnings
from bench.report.workload import WorkloadReport

__all__ = [
    "Decision",
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
    "decide_runs",
    "load_runs",
    "make_table",
    "register_section",
    "report_dir_name",
    "section_names",
    "write_report",
    "write_tables",
]


def report_dir_name(run_ids: Sequence[str]) -> str:
    """``<run id>`` for one run, ``<first run id>+<number of other runs>`` for several."""
    if not run_ids:
        raise ValueError("no runs given")
    return run_ids[0] if len(run_ids) == 1 else f"{run_ids[0]}+{len(run_ids) - 1}"


def write_tables(summary: pd.DataFrame, decision: Decision, out: Path) -> list[Path]:
    """summary.csv/.json and decision.csv/.json in ``out``; returns their paths."""
    paths = [
        out / name for name in ("summary.csv", "summary.json", "decision.csv", "decision.json")
    ]
    summary.to_csv(paths[0], index=False, float_format="%.9g")
    records = json.loads(summary.to_json(orient="records", double_precision=15))
    paths[1].write_text(json.dumps({"rows": records}, indent=1) + "\n", encoding="utf-8")
    rows = pd.DataFrame(decision.rows())
    rows.to_csv(paths[2], index=False, float_format="%.9g")
    paths[3].write_text(
        json.dumps(decision.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    return paths


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
    write_tables(report.summary_csv, decision_of(data), out)
    if report.comparisons_csv is not None:
        report.comparisons_csv.to_csv(out / "comparisons.csv", index=False, float_format="%.9g")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return html_path
