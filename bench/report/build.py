"""Everything a report shows, built from raw runs: tables, figures, warnings, notes.

The HTML and Markdown templates only lay out what :func:`build_report` returns, so both show
the same numbers.
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

from bench import claims as claims_mod
from bench import cost, stats
from bench.netprobe import is_loopback
from bench.records import SchemaError
from bench.report import figures
from bench.report.calibration import calibration_table
from bench.report.locations import location_table
from bench.report.tables import Row, Table, make_table, to_markdown
from bench.store import load_ledger, load_run

if TYPE_CHECKING:
    from bench.report import ReportSettings

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_LISTED = 12

CAPTURES_TEXT = {
    "filesystem": "filesystem only (running processes and memory are lost)",
    "filesystem+memory": "filesystem and memory (running processes survive)",
}
RESTORE_TEXT = {
    "in_place": "in place: the same sandbox is rewound",
    "new_sandbox": "a new sandbox starts from the checkpoint",
}
PAUSE_TEXT = {
    "freeze": "explicit pause; processes and memory survive",
    "stop_start": "stop and start; only the filesystem survives",
    "auto_sleep": "no pause API; sleeps when idle and wakes on use",
    "none": "none",
}


# -- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    run_id: str
    folder: Path
    manifest: dict[str, Any]
    warnings: tuple[str, ...]
    ledger: tuple[dict[str, Any], ...]
    samples: int


@dataclass(frozen=True, kw_only=True)
class RunSet:
    """One or more runs merged: their manifests and one frame of every sample."""

    runs: tuple[RunInfo, ...]
    frame: pd.DataFrame
    merge_warnings: tuple[str, ...] = ()


def load_runs(folders: Sequence[Path]) -> RunSet:
    """Load and merge runs; refuses different schema versions and the same run twice."""
    if not folders:
        raise ValueError("no runs given")
    infos: list[RunInfo] = []
    frames: list[pd.DataFrame] = []
    warnings: list[str] = []
    for folder in folders:
        run = load_run(Path(folder))
        frame = stats.samples_frame(run.samples)
        run_id = run.run_id
        if not frame.empty:
            foreign = set(frame["run_id"].astype(str).unique()) - {run_id}
            if foreign:
                warnings.append(
                    f"{run_id}: samples carry other run ids ({', '.join(sorted(foreign))}); "
                    "they are labelled with the manifest's run id"
                )
                frame["run_id"] = pd.Categorical([run_id] * len(frame))
        ledger, ledger_warnings = load_ledger(Path(folder))
        infos.append(
            RunInfo(
                run_id=run_id,
                folder=Path(folder),
                manifest=run.manifest,
                warnings=tuple(run.warnings) + tuple(ledger_warnings),
                ledger=tuple(ledger),
                samples=len(frame),
            )
        )
        frames.append(frame)
        del run  # the Sample objects are the largest thing in memory; the frame replaces them
    versions = {r.manifest.get("schema_version") for r in infos}
    if len(versions) > 1:
        detail = ", ".join(f"{r.run_id}: {r.manifest.get('schema_version')}" for r in infos)
        raise SchemaError(f"cannot merge runs with different schema versions ({detail})")
    seen: set[str] = set()
    for info in infos:
        if info.run_id in seen:
            raise ValueError(f"run {info.run_id} given twice")
        seen.add(info.run_id)
    if len(frames) == 1:
        merged = frames[0]
    else:
        merged = pd.concat(frames, ignore_index=True)
        for column in ("run_id", "provider", "workload", "operation", "status", "error_type"):
            merged[column] = merged[column].astype("category")
        warnings.extend(_merge_differences(infos))
    return RunSet(runs=tuple(infos), frame=merged, merge_warnings=tuple(warnings))


def _merge_differences(infos: Sequence[RunInfo]) -> list[str]:
    out = []
    checks = {
        "spec": lambda m: m.get("spec"),
        "client host": lambda m: (m.get("client") or {}).get("hostname"),
        "client location": lambda m: (m.get("client") or {}).get("location"),
        "harness version": lambda m: (m.get("harness") or {}).get("version"),
        "connection mode": lambda m: m.get("connection_mode"),
    }
    for name, get in checks.items():
        values = {repr(get(r.manifest)) for r in infos}
        if len(values) > 1:
            out.append(
                f"merged runs differ in {name}: "
                + "; ".join(f"{r.run_id}: {get(r.manifest)}" for r in infos)
            )
    return out


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Warning_:
    kind: str
    text: str


@dataclass(frozen=True, kw_only=True)
class FigureView:
    id: str
    title: str
    caption: str
    filename: str
    data_uri: str


@dataclass(frozen=True, kw_only=True)
class WorkloadSection:
    name: str
    table: Table
    ecdf: FigureView | None
    box: FigureView | None
    #: Latency against state size or concurrency, for the scaling workloads.
    scaling: FigureView | None = None
    #: Open-loop schedule lag (burst, ramp), when the workload records intended starts.
    lag: Table | None = None
    #: Throughput and tail per concurrency level (concurrency_scaling).
    throughput: Table | None = None
    #: What the sandboxes were, seen from inside (probe).
    findings: Table | None = None


@dataclass(frozen=True, kw_only=True)
class Report:
    title: str
    subtitle: str
    generated_at: str
    run_ids: tuple[str, ...]
    glance: Table
    details: Table
    #: TCP connect time from the client to each provider's API endpoint.
    network: Table
    warnings: tuple[Warning_, ...]
    capabilities: Table
    workloads: tuple[WorkloadSection, ...]
    pricing: Table
    pricing_notes: tuple[str, ...]
    operation_costs: Table
    workload_costs: Table
    workload_cost_figure: FigureView | None
    session: Table
    session_scenario: str
    session_assumptions: tuple[str, ...]
    session_figure: FigureView | None
    claims: Table
    comparisons: Table
    method_notes: tuple[str, ...]
    summary_csv: pd.DataFrame
    figures: tuple[FigureView, ...] = field(default_factory=tuple)
    #: Measured against true percentiles (bench/report/calibration.py); None unless a run
    #: folder holds a calibration.json.
    calibration: Table | None = None
    #: Per-location medians and ratios (bench/report/locations.py); None without locations.
    locations: Table | None = None

    def all_tables(self) -> list[Table]:
        tables = [self.glance, self.details, self.network, self.capabilities]
        for w in self.workloads:
            extra = (w.lag, w.throughput, w.findings)
            tables += [w.table] + [t for t in extra if t is not None]
        tables += [
            self.pricing,
            self.operation_costs,
            self.workload_costs,
            self.session,
            self.claims,
            self.comparisons,
        ]
        if self.calibration is not None:
            tables.append(self.calibration)
        return tables + ([self.locations] if self.locations is not None else [])


def _view(fig: figures.FigureFile | None) -> FigureView | None:
    if fig is None:
        return None
    return FigureView(
        id=fig.id,
        title=fig.title,
        caption=fig.caption,
        filename=f"figures/{fig.path.name}",
        data_uri="data:image/svg+xml;base64," + base64.b64encode(fig.svg).decode("ascii"),
    )


def _fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def _fmt_time(iso: str | None) -> str:
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(iso)


def _duration_between(start: str | None, end: str | None) -> str:
    try:
        seconds = (
            datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
        ).total_seconds()
    except (TypeError, ValueError):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def build_report(runset: RunSet, settings: ReportSettings, figures_dir: Path) -> Report:
    frame = runset.frame
    include_warmups = settings.include_warmups
    group_map = stats.groups(frame, include_warmups=include_warmups)
    summary = pd.DataFrame(
        [stats.summarize_group(g, seed=settings.seed) for g in group_map.values()],
        columns=list(stats.SUMMARY_COLUMNS),
    )
    manifests = [r.manifest for r in runset.runs]
    last = manifests[-1]
    providers = sorted({g.provider for g in group_map.values()} | set(_plan_providers(manifests)))
    colors = figures.provider_colors(providers)
    catalog = cost.load_catalog(
        settings.pricing_path, local_rate_usd_per_hour=settings.local_rate_usd_per_hour
    )
    claim_list = claims_mod.load_claims(settings.claims_path)
    spec = cost.spec_shape(last.get("spec"))
    capabilities = _capabilities(manifests)

    # Latency sections, one per workload.
    by_workload: dict[str, dict[str, dict[str, stats.Group]]] = {}
    for g in group_map.values():
        by_workload.setdefault(g.workload, {}).setdefault(g.operation, {})[g.provider] = g
    summary_rows = summary.to_dict("records")
    sections = []
    all_figures: list[FigureView] = []
    for workload, ops in by_workload.items():
        rows = [r for r in summary_rows if r["workload"] == workload]
        ecdf = _view(figures.ecdf_figure(figures_dir, workload, ops, colors))
        box = _view(figures.box_figure(figures_dir, workload, ops, colors))
        scaling = _view(figures.scaling_figure(figures_dir, workload, rows, colors))
        all_figures += [f for f in (ecdf, box, scaling) if f is not None]
        sections.append(
            WorkloadSection(
                name=workload,
                table=_latency_table(workload, rows),
                ecdf=ecdf,
                box=box,
                scaling=scaling,
                lag=_lag_table(frame, workload, include_warmups),
                throughput=_throughput_table(workload, rows),
                findings=_probe_table(frame, workload, include_warmups, last.get("spec") or {}),
            )
        )

    # Costs.
    op_costs = cost.operation_costs(summary, catalog, spec)
    wl_costs = cost.workload_costs(frame, catalog, spec, include_warmups=include_warmups)
    scenario = settings.scenario()
    sessions = cost.session_costs(
        catalog, scenario, spec, providers, summary, frame, include_warmups=include_warmups
    )
    session_fig = _view(
        figures.session_cost_figure(
            figures_dir,
            [(s.provider, s.compute_usd, s.storage_usd, s.snapshot_usd) for s in sessions],
            colors,
            scenario.describe(),
        )
    )
    wl_fig = _view(
        figures.workload_cost_figure(
            figures_dir,
            [(r["provider"], r["workload"], r["usd_p50"]) for r in wl_costs.to_dict("records")],
            colors,
        )
    )
    all_figures += [f for f in (session_fig, wl_fig) if f is not None]

    # Claims and comparisons.
    unsupported = {p: dict(c.get("unsupported") or {}) for p, c in capabilities.items()}
    claim_results = claims_mod.evaluate_claims(
        [c for c in claim_list if c.provider in providers],
        group_map,
        seed=settings.seed,
        unsupported_reasons=unsupported,
        frame=frame,
        include_warmups=include_warmups,
    )
    emulated = emulated_providers(manifests)
    claim_results = [
        replace(
            r,
            verdict=claims_mod.Verdict.NOT_COMPARABLE,
            reason="measured against a loopback emulator, not the provider's service",
        )
        if r.claim.provider in emulated
        else r
        for r in claim_results
    ]
    pairs = stats.compare_providers(group_map, seed=settings.seed)

    summary_csv = summary.merge(
        op_costs[["provider", "workload", "operation", "usd_per_hour", "p50_usd", "p95_usd"]],
        on=["provider", "workload", "operation"],
        how="left",
    )
    summary_csv.insert(0, "runs", " ".join(r.run_id for r in runset.runs))

    run_ids = tuple(r.run_id for r in runset.runs)
    title = "Sandbox benchmark report"
    subtitle = (
        f"{', '.join(providers)} · {len(run_ids)} run{'s' if len(run_ids) > 1 else ''} · "
        f"{_fmt_time(manifests[0].get('started_at'))}"
    )
    return Report(
        title=title,
        subtitle=subtitle,
        generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        run_ids=run_ids,
        glance=_glance_table(providers, summary, sessions, emulated),
        details=_details_table(runset, frame, include_warmups),
        network=_network_table(runset, providers),
        warnings=tuple(_warnings(runset, summary, capabilities, frame, include_warmups)),
        capabilities=_capability_table(providers, capabilities, manifests),
        workloads=tuple(sections),
        pricing=_pricing_table(catalog, providers, spec),
        pricing_notes=tuple(_pricing_notes(catalog, providers)),
        operation_costs=_operation_cost_table(op_costs),
        workload_costs=_workload_cost_table(wl_costs),
        workload_cost_figure=wl_fig,
        session=_session_table(sessions),
        session_scenario=scenario.describe(),
        session_assumptions=tuple(_session_assumptions(sessions)),
        session_figure=session_fig,
        claims=_claims_table(claim_results),
        comparisons=_comparison_table(pairs),
        method_notes=tuple(_method_notes(include_warmups, settings.seed)),
        summary_csv=summary_csv,
        calibration=calibration_table(
            runset.runs, frame, include_warmups=include_warmups, seed=settings.seed
        ),
        locations=location_table(frame, include_warmups=include_warmups, seed=settings.seed),
        figures=tuple(all_figures),
    )


def _plan_providers(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for m in manifests:
        out += list((m.get("plan") or {}).get("providers") or [])
        out += list((m.get("providers") or {}).keys())
    return out


def _capabilities(manifests: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Capabilities per provider; a later run's detection wins over an earlier one's."""
    caps: dict[str, dict[str, Any]] = {}
    for m in manifests:
        for pid, entry in (m.get("providers") or {}).items():
            if isinstance(entry, Mapping) and isinstance(entry.get("capabilities"), Mapping):
                caps[pid] = dict(entry["capabilities"])
    return caps


# -- tables -----------------------------------------------------------------------------------


def _latency_table(workload: str, rows: Sequence[Mapping[str, Any]]) -> Table:
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
            _ci_cell(r, 50),
            stats.format_cell(r, "p90"),
            stats.format_cell(r, "p95"),
            _ci_cell(r, 95),
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


#: Open-loop schedule lag (actual minus intended start) above which the client is flagged as
#: unable to keep its schedule: latencies then include the client's own delay.
SCHEDULE_LAG_WARN_S = 0.010


def _lag_frame(frame: pd.DataFrame, include_warmups: bool) -> pd.DataFrame:
    if "schedule_lag_s" not in frame.columns:
        return frame.iloc[0:0]
    mask = np.isfinite(frame["schedule_lag_s"].to_numpy(dtype=np.float64))
    if not include_warmups:
        mask &= ~frame["warmup"].to_numpy(dtype=bool)
    columns = ["provider", "workload", "schedule_lag_s"]
    if "client_loop_delay_s" in frame.columns:
        columns.append("client_loop_delay_s")
    return frame.loc[mask, columns]


def _loop_delay_max(sub: pd.DataFrame) -> float | None:
    """The longest the client's event loop kept ready work waiting during these open-loop
    schedules (``client_loop_delay_s``); None when no record carries it."""
    if "client_loop_delay_s" not in sub.columns:
        return None
    values = sub["client_loop_delay_s"].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else None


_ROUND = re.compile(r"^round_c(\d+)$")


def _throughput_table(workload: str, rows: Sequence[Mapping[str, Any]]) -> Table | None:
    """Per provider and concurrency level C: sandboxes per second (C / median round time)
    and the p50 and p99 of create and exec at that level."""
    by_key = {(r["provider"], r["operation"]): r for r in rows}
    table_rows = []
    for row in rows:
        match = _ROUND.match(str(row["operation"]))
        if match is None:
            continue
        level, provider = int(match.group(1)), row["provider"]
        p50 = row.get("p50_s", row.get("p50"))
        rate = (
            f"{level / p50:.1f}/s"
            if not stats.is_withheld(row, "p50") and p50 and not math.isnan(p50)
            else "–"
        )
        cells = [provider, str(level), stats.format_cell(row, "p50"), rate]
        for op in (f"create_c{level}", f"exec_c{level}"):
            r = by_key.get((provider, op))
            cells += [stats.format_cell(r, "p50"), stats.format_cell(r, "p99")] if r else ["–"] * 2
        table_rows.append(cells)
    if not table_rows:
        return None
    table_rows.sort(key=lambda cells: (cells[0], int(cells[1])))
    return make_table(
        f"throughput-{workload}",
        (
            "Provider",
            "Concurrency",
            "Round p50",
            "Throughput",
            "Create p50",
            "Create p99",
            "Exec p50",
            "Exec p99",
        ),
        table_rows,
        title=f"{workload}: throughput and tail against concurrency",
        caption="Each round releases C sandboxes at once (create, exec `true`, destroy); "
        "throughput is C divided by the median round time. p99 needs 100 samples.",
        align="lrrrrrrr",
    )


def _lag_table(frame: pd.DataFrame, workload: str, include_warmups: bool) -> Table | None:
    lags = _lag_frame(frame, include_warmups)
    lags = lags[lags["workload"].astype(str) == workload]
    if lags.empty:
        return None
    rows = []
    for provider, sub in lags.groupby(lags["provider"].astype(str), sort=True):
        values = np.sort(sub["schedule_lag_s"].to_numpy(dtype=np.float64))
        n = values.size
        p50 = (
            stats.format_duration(stats.percentile(values, 50))
            if stats.supports(n, 50)
            else (stats.NOT_ENOUGH)
        )
        p95 = (
            stats.format_duration(stats.percentile(values, 95))
            if stats.supports(n, 95)
            else (stats.NOT_ENOUGH)
        )
        delay = _loop_delay_max(sub)
        rows.append(
            [
                provider,
                str(n),
                p50,
                p95,
                stats.format_duration(float(values[-1])),
                "–" if delay is None else stats.format_duration(delay),
            ]
        )
    return make_table(
        f"lag-{workload}",
        ("Provider", "Scheduled starts", "Lag p50", "Lag p95", "Lag max", "Loop delay max"),
        rows,
        title=f"{workload}: open-loop schedule lag",
        caption="Actual minus intended start of each scheduled operation. Latencies are "
        "measured from the intended start, so a client that falls behind shows up here; a "
        f"max lag above {stats.format_duration(SCHEDULE_LAG_WARN_S)} is flagged. Loop delay "
        "max (runs with watch_loop = true): the longest the client's event loop kept ready "
        "work (an answer, a release) waiting during the schedules, read by a timer that fires "
        "every millisecond; above the same threshold, answers queued behind the client's own "
        "work, which is flagged.",
        align="lrrrrr",
    )


def _ci_cell(row: Mapping[str, Any], p: int) -> str:
    if row["n"] == 0:
        return "–"
    if stats.is_withheld(row, f"p{p}"):
        return stats.NOT_ENOUGH
    return stats.format_interval(row[f"p{p}_ci_low_s"], row[f"p{p}_ci_high_s"])


def _pick(summary: pd.DataFrame, provider: str, workload: str, operation: str) -> str:
    rows = summary[
        (summary["provider"] == provider)
        & (summary["workload"] == workload)
        & (summary["operation"] == operation)
    ]
    if rows.empty:
        return "–"
    row = rows.iloc[0].to_dict()
    if row["n"] == 0 and row["unsupported"]:
        return "unsupported"
    return stats.format_cell(row, "p50")


def _glance_table(
    providers: Sequence[str],
    summary: pd.DataFrame,
    sessions: Sequence[cost.SessionCost],
    emulated: set[str] | frozenset[str] = frozenset(),
) -> Table:
    by_provider = {s.provider: s for s in sessions}
    rows = []
    for p in providers:
        sub = summary[summary["provider"] == p]
        attempts = int(sub["attempts"].sum())
        failures = int(sub["failures"].sum())
        session = by_provider.get(p)
        rows.append(
            [
                f"{p} (emulated)" if p in emulated else p,
                _pick(summary, p, "lifecycle", "create"),
                _pick(summary, p, "lifecycle", "ready"),
                _pick(summary, p, "exec", "exec_true"),
                _pick(summary, p, "checkpoint", "checkpoint"),
                _pick(summary, p, "checkpoint", "restore"),
                _pick(summary, p, "pause_resume", "resume"),
                stats.format_percent(failures / attempts) if attempts else "–",
                cost.format_usd(session.total_usd) if session else "–",
            ]
        )
    return make_table(
        "glance",
        (
            "Provider",
            "Create p50",
            "Ready p50",
            "Exec p50",
            "Checkpoint p50",
            "Restore p50",
            "Resume p50",
            "Failure rate",
            "Session cost",
        ),
        rows,
        title="At a glance",
        caption="Medians from the lifecycle, exec, checkpoint and pause_resume workloads; failure "
        "rate over every attempted operation; session cost from the scenario in the cost section.",
        align="lrrrrrrrr",
    )


def _details_table(runset: RunSet, frame: pd.DataFrame, include_warmups: bool) -> Table:
    def client(m: Mapping[str, Any]) -> str:
        c = m.get("client") or {}
        parts = [str(c.get("hostname") or "?")]
        if c.get("location"):
            parts.append(f"location {c['location']}")
        return ", ".join(parts)

    def machine(m: Mapping[str, Any]) -> str:
        c = m.get("client") or {}
        return (
            f"{c.get('platform') or '?'}; kernel {c.get('kernel') or '?'}; "
            f"{c.get('cpus') or '?'} CPUs, {c.get('memory_mb') or '?'} MB; "
            f"Python {c.get('python') or '?'}"
        )

    def harness(m: Mapping[str, Any]) -> str:
        h = m.get("harness") or {}
        sha = str(h.get("git_sha") or "?")[:12]
        dirty = " (uncommitted changes)" if h.get("git_dirty") else ""
        return f"sandbox-bench {h.get('version') or '?'}, git {sha}{dirty}"

    def spec(m: Mapping[str, Any]) -> str:
        s = m.get("spec") or {}
        parts = [f"{s.get('cpus', '?')} vCPU", f"{s.get('memory_mb', '?')} MiB"]
        if s.get("disk_mb"):
            parts.append(f"{s['disk_mb']} MiB disk")
        parts.append(f"template {s.get('template') or 'default'}")
        if s.get("lifetime_s"):
            parts.append(f"lifetime {s['lifetime_s']} s")
        if s.get("max_pids"):
            parts.append(f"max {s['max_pids']} pids")
        return ", ".join(parts)

    def plan(m: Mapping[str, Any]) -> str:
        p = m.get("plan") or {}
        return (
            f"providers {', '.join(p.get('providers') or [])}; workloads "
            f"{', '.join(p.get('workloads') or [])}; {p.get('iterations', '?')} iterations + "
            f"{p.get('warmup', '?')} warmup; concurrency {p.get('concurrency', '?')}; "
            f"{p.get('scheduled_iterations', '?')} scheduled iterations"
        )

    def sdks(m: Mapping[str, Any]) -> str:
        parts = []
        for pid, entry in sorted((m.get("providers") or {}).items()):
            versions = ((entry or {}).get("environment") or {}).get("sdk_versions") or {}
            if versions:
                parts.append(f"{pid}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
            else:
                parts.append(f"{pid}: no SDK")
        return "; ".join(parts) or "–"

    def connections(m: Mapping[str, Any]) -> str:
        parts = [
            f"{pid}: {env['connection']}"
            for pid, entry in sorted((m.get("providers") or {}).items())
            if (env := (entry or {}).get("environment") or {}).get("connection")
        ]
        return "; ".join(parts) or "not recorded (no SDK client)"

    def counts(run_id: str) -> str:
        sub = frame[frame["run_id"] == run_id]
        status = Counter(sub["status"].astype(str))
        warm = int(sub["warmup"].sum())
        warm_text = "included" if include_warmups else "excluded"
        return (
            f"{len(sub):,} samples: {status.get('ok', 0):,} ok, "
            f"{status.get('error', 0) + status.get('timeout', 0):,} failed, "
            f"{status.get('unsupported', 0):,} unsupported, {status.get('skipped', 0):,} "
            f"skipped; {warm:,} warmup samples ({warm_text})"
        )

    fields = [
        ("Status", lambda r: str(r.manifest.get("status") or "?")),
        ("Started", lambda r: _fmt_time(r.manifest.get("started_at"))),
        ("Finished", lambda r: _fmt_time(r.manifest.get("finished_at"))),
        (
            "Wall time",
            lambda r: _duration_between(
                r.manifest.get("started_at"), r.manifest.get("finished_at")
            ),
        ),
        ("Client host", lambda r: client(r.manifest)),
        ("Client machine", lambda r: machine(r.manifest)),
        ("Harness", lambda r: harness(r.manifest)),
        ("Seed", lambda r: str(r.manifest.get("seed", "?"))),
        ("Sandbox spec", lambda r: spec(r.manifest)),
        ("Plan", lambda r: plan(r.manifest)),
        ("Connection mode", lambda r: connections(r.manifest)),
        ("SDK versions", lambda r: sdks(r.manifest)),
        ("Samples", lambda r: counts(r.run_id)),
        ("Folder", lambda r: str(r.folder)),
    ]
    columns = ("", *[r.run_id for r in runset.runs])
    rows = [[name, *[get(r) for r in runset.runs]] for name, get in fields]
    return make_table(
        "details",
        columns,
        rows,
        title="Where, when and how",
        align="l" * len(columns),
    )


def _capability_table(
    providers: Sequence[str],
    capabilities: Mapping[str, Mapping[str, Any]],
    manifests: Sequence[Mapping[str, Any]],
) -> Table:
    rows = []
    for p in providers:
        c = capabilities.get(p)
        if c is None:
            rows.append([p, "not recorded", "–", "–", "–", "–", "–"])
            continue
        ops = set(c.get("operations") or [])
        optional = [o for o in ("checkpoint", "restore", "pause", "resume") if o in ops]
        captures = c.get("checkpoint_captures")
        target = c.get("restore_target")
        unsupported = c.get("unsupported") or {}
        notes = c.get("notes") or {}
        rows.append(
            [
                p,
                ", ".join(optional) or "none of the optional ones",
                CAPTURES_TEXT.get(captures, captures or "no checkpoint"),
                RESTORE_TEXT.get(target, target or "no restore"),
                PAUSE_TEXT.get(c.get("pause_kind") or "none", c.get("pause_kind") or "none"),
                c.get("isolation") or "–",
                "\n".join(f"{op}: {why}" for op, why in unsupported.items())
                + ("\n" if unsupported and notes else "")
                + "\n".join(f"{k}: {v}" for k, v in notes.items())
                or "–",
            ]
        )
    return make_table(
        "capabilities",
        (
            "Provider",
            "Optional operations",
            "A checkpoint captures",
            "Restore lands",
            "Pause",
            "Isolation",
            "Unsupported (why) and notes",
        ),
        rows,
        title="Capabilities",
        caption="As each adapter detected them at the start of the run (from the manifest).",
        align="lllllll",
    )


def _pricing_table(catalog: cost.Catalog, providers: Sequence[str], spec: cost.Shape) -> Table:
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
        caption="From providers/pricing.toml. Check prices again before buying.",
        align="llllllll",
    )


def _pricing_notes(catalog: cost.Catalog, providers: Sequence[str]) -> list[str]:
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


def _operation_cost_table(op_costs: pd.DataFrame) -> Table:
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


def _workload_cost_table(wl_costs: pd.DataFrame) -> Table:
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


def _session_table(sessions: Sequence[cost.SessionCost]) -> Table:
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


def _session_assumptions(sessions: Sequence[cost.SessionCost]) -> list[str]:
    return [f"{s.provider}: " + "; ".join(s.assumptions) + "." for s in sessions]


def _claims_table(results: Sequence[claims_mod.ClaimResult]) -> Table:
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
        "outside, otherwise within; not measured below 5 successful samples.",
        align="lllrrrrll",
    )


def _comparison_table(pairs: pd.DataFrame) -> Table:
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
                _fmt_p(r["p_value"]),
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


# -- warnings ---------------------------------------------------------------------------------


def _limited(kind: str, items: Sequence[str]) -> list[Warning_]:
    out = [Warning_(kind=kind, text=t) for t in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        out.append(Warning_(kind=kind, text=f"… and {len(items) - MAX_LISTED} more"))
    return out


def emulated_providers(manifests: Sequence[Mapping[str, Any]]) -> set[str]:
    """Providers whose endpoint in any run was on this machine: their numbers describe an
    emulator, and the report must not let them pass for the provider's service."""
    found = set()
    for manifest in manifests:
        for pid, entry in (manifest.get("providers") or {}).items():
            endpoint = ((entry or {}).get("environment") or {}).get("endpoint")
            if endpoint and is_loopback(str(endpoint)):
                found.add(pid)
    return found


def _warnings(
    runset: RunSet,
    summary: pd.DataFrame,
    capabilities: Mapping[str, Mapping[str, Any]],
    frame: pd.DataFrame,
    include_warmups: bool,
) -> list[Warning_]:
    out: list[Warning_] = []
    for pid in sorted(emulated_providers([r.manifest for r in runset.runs])):
        out.append(
            Warning_(
                kind="emulated",
                text=f"{pid} ran against a loopback endpoint (an emulator on this machine): its "
                "latencies and costs describe the emulator and the harness, not the provider's "
                "service; claims are not judged",
            )
        )
    for run in runset.runs:
        status = run.manifest.get("status")
        if status != "completed":
            out.append(
                Warning_(
                    kind="run status",
                    text=f"run {run.run_id} is '{status}', not completed: its samples stop "
                    "where the run stopped",
                )
            )
        for w in run.warnings:
            out.append(Warning_(kind="load", text=f"{run.run_id}: {w}"))
        for key in ("warnings", "load_warnings"):
            for w in run.manifest.get(key) or []:
                out.append(Warning_(kind="load", text=f"{run.run_id}: {w}"))
        cluster = run.manifest.get("cluster") or {}
        reruns = cluster.get("reruns") or []
        if reruns:
            kept = int(cluster.get("abandoned_samples") or 0)
            out.append(
                Warning_(
                    kind="rerun",
                    text=f"{run.run_id}: {len(reruns)} iteration(s) ran again after a worker "
                    f"was lost (their records are marked extra.rerun); the {kept} record(s) "
                    "the lost attempts had made are kept apart in "
                    f"{cluster.get('abandoned_file') or 'abandoned.jsonl'}, not in these figures",
                )
            )
        events = Counter(str(e.get("event")) for e in run.ledger)
        for event in sorted(events):
            if "fail" in event or "leak" in event:
                out.append(
                    Warning_(
                        kind="cleanup",
                        text=f"{run.run_id}: ledger records {events[event]} '{event}' event(s); "
                        "see ledger.jsonl and `sandbox-bench reap`",
                    )
                )
    out += [Warning_(kind="merge", text=w) for w in runset.merge_warnings]
    for run in runset.runs:
        if run.samples == 0:
            out.append(Warning_(kind="no data", text=f"run {run.run_id} recorded no samples"))

    rows = summary.to_dict("records")
    small = []
    for r in rows:
        if 0 < r["n"] < stats.min_n_for(50):
            small.append(
                f"{r['provider']}/{r['workload']}/{r['operation']}: n={r['n']}, no percentiles"
            )
    out += _limited("small n", small)
    for p in (95, 99):
        need = stats.min_n_for(p)
        count = sum(1 for r in rows if stats.min_n_for(50) <= r["n"] < need)
        if count:
            out.append(
                Warning_(
                    kind="small n",
                    text=f"p{p} withheld for {count} of {len(rows)} rows with n < {need}",
                )
            )
    failed_mask = frame["status"].isin(["error", "timeout"]).to_numpy(dtype=bool, copy=True)
    if not include_warmups:
        failed_mask &= ~frame["warmup"].to_numpy(dtype=bool)
    failed = frame.loc[failed_mask, ["provider", "workload", "operation", "error_type"]]
    error_kinds: dict[tuple[str, str, str], Counter] = {}
    for key, error_type in zip(
        zip(
            failed["provider"].astype(str),
            failed["workload"].astype(str),
            failed["operation"].astype(str),
            strict=True,
        ),
        failed["error_type"].astype(str),
        strict=True,
    ):
        error_kinds.setdefault(key, Counter())[error_type] += 1
    failing = []
    for r in rows:
        if stats.high_failure_rate(r):
            top = error_kinds.get((r["provider"], r["workload"], r["operation"]), Counter())
            kinds = ", ".join(f"{k} ×{v}" for k, v in top.most_common(2))
            failing.append(
                f"{r['provider']}/{r['workload']}/{r['operation']}: {r['failures']} of "
                f"{r['attempts']} failed ({stats.format_percent(r['failure_rate'])}; {kinds})"
            )
    out += _limited("failures", failing)
    variable = []
    for r in rows:
        if r["n"] >= stats.MIN_N_ANY and r["mean_s"] > 0:
            cv = r["std_s"] / r["mean_s"]
            if cv >= stats.HIGH_CV:
                variable.append(
                    f"{r['provider']}/{r['workload']}/{r['operation']}: coefficient of "
                    f"variation {cv:.2f} (p50 {stats.format_cell(r, 'p50')}, max "
                    f"{stats.format_cell(r, 'max')})"
                )
    out += _limited("high variance", variable)
    if "verified" in frame.columns:
        bad = frame["verified"].eq(False).fillna(False).to_numpy(dtype=bool)
        if bad.any():
            sub = frame[bad]
            keys = Counter(
                zip(sub["provider"].astype(str), sub["workload"].astype(str), strict=True)
            )
            out += _limited(
                "fidelity",
                [
                    f"{p}/{w}: {n} state check(s) failed (restored or resumed state differed)"
                    for (p, w), n in sorted(keys.items())
                ],
            )
    out += _probe_warnings(frame, include_warmups)
    lags = _lag_frame(frame, include_warmups)
    lagging = []
    for (provider, workload), sub in lags.groupby(
        [lags["provider"].astype(str), lags["workload"].astype(str)], sort=True
    ):
        values = np.sort(sub["schedule_lag_s"].to_numpy(dtype=np.float64))
        worst = float(values[-1])
        if worst > SCHEDULE_LAG_WARN_S:
            lagging.append(
                f"{provider}/{workload}: the client started scheduled operations up to "
                f"{stats.format_duration(worst)} late (p50 "
                f"{stats.format_duration(stats.percentile(values, 50))}); latencies include "
                "that delay, so the client may have been the bottleneck"
            )
        delay = _loop_delay_max(sub)
        if delay is not None and delay > SCHEDULE_LAG_WARN_S:
            lagging.append(
                f"{provider}/{workload}: the client's event loop kept ready answers waiting up "
                f"to {stats.format_duration(delay)} (busy with its own work, e.g. its SDK's "
                "per-call CPU), so latencies include the client: split the schedule over "
                "processes or machines (clients = K with --cluster local:K or a Dask cluster)"
            )
    out += _limited("schedule lag", lagging)
    unsupported = []
    for p, c in sorted(capabilities.items()):
        for op, why in (c.get("unsupported") or {}).items():
            unsupported.append(f"{p}: {op} unsupported — {why}")
    out += _limited("unsupported", unsupported)
    return out


def _probe_table(
    frame: pd.DataFrame, workload: str, include_warmups: bool, spec: Mapping[str, Any]
) -> Table | None:
    """Per provider, what the probe workload found inside each new sandbox."""
    if "effective_cpus" not in frame.columns:
        return None
    mask = (frame["workload"].astype(str) == workload).to_numpy(dtype=bool, copy=True)
    mask &= (frame["operation"].astype(str) == "probe").to_numpy(dtype=bool)
    if not include_warmups:
        mask &= ~frame["warmup"].to_numpy(dtype=bool)
    sub = frame.loc[mask]
    seen = sub["effective_cpus"].notna() | sub["recycled"].notna()
    sub = sub.loc[seen.to_numpy(dtype=bool)]
    if sub.empty:
        return None

    def spread(values: pd.Series, unit: str, scale: float = 1.0) -> str:
        v = values.to_numpy(dtype=np.float64) / scale
        v = v[np.isfinite(v)]
        if not v.size:
            return "–"
        low, mid, high = (
            f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
            for x in (np.min(v), np.median(v), np.max(v))
        )
        return f"{mid}{unit}" if low == high else f"{mid}{unit} ({low}–{high})"

    rows = []
    for provider, g in sub.groupby(sub["provider"].astype(str), sort=True):
        boots = g["boot_id"].dropna().astype(str)
        rows.append(
            [
                provider,
                str(len(g)),
                str(int(g["recycled"].eq(True).fillna(False).sum())),
                f"{boots.nunique()} of {len(boots)}" if len(boots) else "–",
                spread(g["effective_cpus"], ""),
                spread(g["effective_memory_mb"], " MiB"),
                spread(g["disk_mb"], " GiB", 1024.0),
                str(int(g["spec_mismatch"].notna().sum())),
            ]
        )
    asked = (
        f"{spec.get('cpus', '?')} vCPU and {spec.get('memory_mb', '?')} MiB"
        if spec
        else "the run's spec"
    )
    return make_table(
        f"findings-{workload}",
        (
            "Provider",
            "Sandboxes probed",
            "Recycled",
            "Distinct boot ids",
            "CPUs seen",
            "Memory seen",
            "Root disk",
            "Below spec",
        ),
        rows,
        title=f"{workload}: what each new sandbox was, seen from inside",
        caption=f"Asked for {asked}. Median (min–max) of what the sandboxes reported: CPUs "
        "and memory are the cgroup limits where the sandbox can read them, else what the "
        "kernel shows; disk is the root filesystem's size. Recycled: the sandbox already held "
        "a marker from an earlier run. One boot id across many sandboxes means they share a "
        "kernel (containers, the local provider); a microVM has its own. Below spec: fewer "
        "than 95 % of the CPUs or 90 % of the memory asked for (flagged under Warnings).",
        align="lrrrrrrr",
    )


def _network_table(runset: RunSet, providers: Sequence[str]) -> Table:
    """TCP connect time from each client (this machine, or each cluster worker) to each
    provider's API endpoint, per run."""
    rows = []
    for run in runset.runs:
        m = run.manifest
        envs = {
            pid: (entry or {}).get("environment") or {}
            for pid, entry in (m.get("providers") or {}).items()
        }
        planned = list((m.get("plan") or {}).get("providers") or providers)
        client = m.get("client") or {}
        # (client, its measurements or None when the run recorded none)
        clients: list[tuple[str, Mapping[str, Any] | None]] = []
        workers = (m.get("cluster") or {}).get("workers") or {}
        for w in sorted(workers.values(), key=lambda w: str(w.get("name"))):
            where = f"worker {w.get('name') or '?'} on {w.get('host') or '?'}"
            clients.append((where + (f" ({w['location']})" if w.get("location") else ""),
                            w.get("network")))  # fmt: skip
        if not workers:
            where = str(client.get("hostname") or "this machine")
            if client.get("location"):
                where += f" ({client['location']})"
            clients.append((where, client.get("network")))
        for where, network in clients:
            for pid in sorted(set(planned) | set(network or {})):
                probe = (network or {}).get(pid)
                if probe is None:
                    # Every provider whose environment names an endpoint is measured
                    # (bench/netprobe.py); a measured run without one for pid had none.
                    note = (
                        "no network endpoint: runs on the client machine"
                        if network is not None and not envs.get(pid, {}).get("endpoint")
                        else "not measured"
                    )
                    rows.append([run.run_id, where, pid, "–", "–", "–", note])
                    continue
                rounds = [x for x in probe.get("tcp_connect_s") or [] if x is not None]
                endpoint = str(probe.get("endpoint") or "?")
                median = probe.get("median_s")
                note = "loopback: an emulator on this machine" if is_loopback(endpoint) else ""
                rows.append(
                    [
                        run.run_id,
                        where,
                        pid,
                        endpoint,
                        "–" if median is None else stats.format_duration(float(median)),
                        str(len(rounds)),
                        "unreachable" if median is None else note,
                    ]
                )
    return make_table(
        "network",
        ("Run", "Client", "Provider", "Endpoint", "TCP connect p50", "Rounds", "Note"),
        rows,
        title="Network round trip to each provider",
        caption="Time to open a TCP connection from the client to each provider's API "
        "endpoint, measured before the run: a floor under every remote call's latency, so runs "
        "made from different places can be read side by side.",
        align="llllrrl",
    )


def _probe_warnings(frame: pd.DataFrame, include_warmups: bool) -> list[Warning_]:
    """Recycled sandboxes and sandboxes that do not honour the spec (the probe workload)."""
    out: list[Warning_] = []
    if frame.empty:
        return out
    keep = np.ones(len(frame), dtype=bool) if include_warmups else ~frame["warmup"].to_numpy(bool)
    if "recycled" in frame.columns:
        recycled = frame["recycled"].eq(True).fillna(False).to_numpy(dtype=bool) & keep
        counts = Counter(frame.loc[recycled, "provider"].astype(str))
        out += _limited(
            "recycled",
            [
                f"{p}: {n} sandbox(es) already held a marker from an earlier run: the provider "
                "handed out used sandboxes, so their create times are not cold starts"
                for p, n in sorted(counts.items())
            ],
        )
    if "spec_mismatch" in frame.columns:
        has = frame["spec_mismatch"].notna().to_numpy(dtype=bool) & keep
        sub = frame.loc[has, ["provider", "spec_mismatch"]]
        items = []
        for provider, rows in sub.groupby(sub["provider"].astype(str), sort=True):
            kinds = Counter(rows["spec_mismatch"].astype(str)).most_common(3)
            items.append(
                f"{provider}: {len(rows)} probe(s) found the sandbox smaller than the spec ("
                + "; ".join(f"{k} ×{v}" for k, v in kinds)
                + "): its timings are not like for like"
            )
        out += _limited("comparability", items)
    return out


def _method_notes(include_warmups: bool, seed: int) -> list[str]:
    return [
        "n counts successful samples only. Failures (error, timeout) are reported beside the "
        "percentiles, never turned into durations; unsupported and skipped operations are "
        "counted apart.",
        "Warmup iterations are "
        + ("included." if include_warmups else "excluded (pass include_warmups to keep them)."),
        "Percentiles use numpy's default linear interpolation (type 7).",
        "A percentile is shown only when n supports it: at least 5 samples and at least one "
        "expected sample above it (p50 needs 5, p90 10, p95 20, p99 100); otherwise the cell "
        "says 'n too small'.",
        "95 % intervals: the distribution-free order-statistic (binomial) interval, whose "
        "coverage is at least 95 % for any continuous distribution, wherever n allows one "
        "(p50 from 6 samples, p95 from 72); below that a percentile bootstrap with "
        f"{stats.BOOTSTRAP_RESAMPLES:,} resamples, seed {seed}. Bootstrap p95 intervals are "
        "optimistic: measured over 1,000 seeded repetitions they covered the truth only about "
        "87 % of the time at n = 50.",
        "Provider comparisons: ratio of medians with a bootstrap interval, and a two-sided "
        "Mann-Whitney U p-value (scipy).",
        f"Warnings flag failure rates above {stats.HIGH_FAILURE_RATE:.0%} (with at least "
        f"{stats.HIGH_FAILURE_MIN} failures), a coefficient of variation (SD / mean) of "
        f"{stats.HIGH_CV} or more, recycled or undersized sandboxes (probe workload) and an "
        f"open-loop client more than {stats.format_duration(SCHEDULE_LAG_WARN_S)} behind its "
        "schedule.",
        "Costs are computed now from the raw durations and providers/pricing.toml; nothing "
        "derived is stored in the results.",
    ]


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
    return env


def render_html(report: Report) -> str:
    return _environment(True).get_template("report.html.j2").render(r=report)


def render_markdown(report: Report) -> str:
    return _environment(False).get_template("report.md.j2").render(r=report)
