"""Reports: reports/<run_id>/report.html, report.md, figures/ and summary.csv.

``write_report`` loads one or more run folders (``bench.store.load_run``), merges them (each
sample keeps its run id; runs of different schema versions are refused), computes statistics
(:mod:`bench.stats`), costs (:mod:`bench.cost`) and claim verdicts (:mod:`bench.claims`) from
the raw samples, and writes:

* ``report.html``: one self-contained file; figures are embedded as SVG data URIs, styles are
  inline, nothing is fetched from the network;
* ``report.md``: the same tables in GitHub-flavoured Markdown, linking the figures;
* ``figures/*.svg``: the figures (matplotlib, Agg backend);
* ``summary.csv``: one row per (provider, workload, operation): the statistics of
  :func:`bench.stats.summarize` plus the cost of one operation at p50 and p95.

Several runs go to ``<out_root>/<first run id>+<number of other runs>/``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cost import SessionScenario
from bench.report.build import RunSet, build_report, load_runs, render_html, render_markdown

__all__ = ["ReportSettings", "RunSet", "load_runs", "report_dir_name", "write_report"]


@dataclass(frozen=True, kw_only=True)
class ReportSettings:
    """What a report includes and the assumptions of its cost scenario."""

    include_warmups: bool = False
    #: Seed of every bootstrap interval in the report.
    seed: int = 0
    #: The session scenario (see :class:`bench.cost.SessionScenario`).
    hours: float = 4.0
    active_fraction: float = 0.15
    checkpoints: int = 4
    resumes: int = 4
    disk_gib: float = 5.0
    snapshot_gib: float = 1.0
    #: Price of a local (self-hosted) sandbox-hour; None keeps the catalog's figure (0).
    local_rate_usd_per_hour: float | None = None
    #: Catalog overrides; None means providers/pricing.toml and providers/claims.toml.
    pricing_path: Path | None = None
    claims_path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"report seed must be a non-negative integer, got {self.seed!r}")
        rate = self.local_rate_usd_per_hour
        if rate is not None and (not math.isfinite(rate) or rate < 0):
            raise ValueError(f"local rate must be a non-negative USD amount per hour, got {rate}")
        self.scenario()  # validates the scenario fields with one-line messages

    def scenario(self) -> SessionScenario:
        return SessionScenario(
            hours=self.hours,
            active_fraction=self.active_fraction,
            checkpoints=self.checkpoints,
            resumes=self.resumes,
            disk_gib=self.disk_gib,
            snapshot_gib=self.snapshot_gib,
        )


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
    ValueError for bad settings or catalogs, each with a one-line message.
    """
    settings = settings or ReportSettings()
    runset = load_runs([Path(f) for f in run_folders])
    out = Path(out_root) / report_dir_name([r.run_id for r in runset.runs])
    figures_dir = out / "figures"
    if figures_dir.exists():
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)
    report = build_report(runset, settings, figures_dir)
    report.summary_csv.to_csv(out / "summary.csv", index=False, float_format="%.9g")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return html_path
