"""The sleep_persist workload's own report parts: what survived the idle, and what it cost.

* ``persistence``: per provider, how it was idled (its pause call, or no call at all) and its
  declared semantics, the idle, the wake's and the resume's p50, how often the state file and
  the running process survived, what the declaration (and, for a provider that sleeps on
  idle, its published sleep threshold) says should have happened, and what the idle period
  costs under the provider's billing rules (the pricing catalog's ``idle``,
  ``paused_pays``, ``sleeps_after_s`` and storage tiers), for the measured idle and per idle
  hour;
* ``sleep_warnings``: an auto-sleeping provider whose process survived an idle past its
  published sleep threshold (it did not sleep, or its sleep keeps processes), or died in a
  shorter one.

The idle cost, for ``idle`` seconds at the billed shape's price per second ``r`` and the
session scenario's disk (``disk_gib``, less each tier's free allowance):

* paused (the provider's pause): compute ``r x idle`` only if a paused sandbox pays in full
  (``paused_pays = full``), else none; storage tiers billed ``always`` for the whole idle;
* idle without a pause, on a provider that sleeps on idle: compute for the part of the idle
  before its sleep threshold (an upper bound where only active use is billed), nothing after;
  ``always`` tiers for the whole idle, ``running`` tiers while awake;
* idle without a pause otherwise: compute and every storage tier for the whole idle.

Imported only when a report is built (``SleepPersist.report``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bench import cost, stats
from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import ReportWarning, Severity, View, limited
from bench.report.workload import WorkloadReport
from bench.workloads.guest_perf_report import billed, by_provider, label, median, records

HOUR_S = 3600.0


def idle_cost(
    pricing: cost.ProviderPricing, shape: cost.Shape, idle_s: float, *, paused: bool,
    disk_gib: float,
) -> tuple[float, str]:  # fmt: skip
    """(dollars, the rule applied) for ``idle_s`` idle seconds (see the module docstring)."""
    rate = pricing.usd_per_s(shape)
    if paused:
        awake_s = idle_s if pricing.paused_pays == "full" else 0.0
        rule = f"paused: pays {pricing.paused_pays}"
    elif pricing.idle == "auto_sleep":
        threshold = pricing.sleeps_after_s
        awake_s = idle_s if threshold is None else min(idle_s, threshold)
        rule = (
            f"asleep after {threshold:g} s: compute until then"
            if threshold is not None
            else "sleeps on idle (threshold not published): compute for the whole idle"
        )
    else:
        awake_s = idle_s
        rule = "no pause: full price while idle"
    storage = 0.0
    for tier in pricing.storage:
        gib = max(0.0, disk_gib - tier.free_gib)
        hours = {"always": idle_s, "running": awake_s}.get(tier.billed, 0.0) / HOUR_S
        storage += gib * hours * tier.usd_per_gib_h
    return rate * awake_s + storage, rule


IDLED_BY = {"pause": "its pause call", "idle": "no call"}


def _last(rows: pd.DataFrame, column: str) -> str | None:
    """The last recorded value of ``column`` (None when no record carries it)."""
    if column not in rows.columns:
        return None
    values = rows[column].dropna()
    return str(values.iloc[-1]) if len(values) else None


def _share(rows: pd.DataFrame, column: str) -> str:
    if rows.empty or column not in rows.columns:
        return "–"
    seen = rows[column].dropna()
    return f"{int(seen.astype(bool).sum())} of {len(seen)}" if len(seen) else "–"


def expected_text(expected: str, idle_s: float | None, threshold: float | None) -> str:
    """What should have happened to the process, in words."""
    if expected == "survives":
        return "survives"
    if expected == "gone":
        return "gone (only files survive)"
    if threshold is None or idle_s is None:
        return "unknown (sleep threshold not published)"
    if idle_s >= threshold:
        return f"gone if it slept (idle ≥ its {threshold:g} s sleep)"
    return f"survives (idle shorter than its {threshold:g} s sleep)"


def _p50(data: ReportData, workload: str, provider: str, operation: str) -> str:
    for row in data.rows_of(workload):
        if row["provider"] == provider and row["operation"] == operation:
            if row["n"] == 0 and row["unsupported"]:
                return "unsupported"
            return stats.format_cell(row, "p50")
    return "–"


def persistence(data: ReportData, workload: str) -> View | None:
    verify = by_provider(records(data, workload, "verify"))
    pauses = by_provider(records(data, workload, "pause"))
    providers = sorted(set(verify) | set(pauses))
    if not providers:
        return None
    disk_gib = data.scenario.disk_gib
    rows = []
    for p in providers:
        checks = verify.get(p, pd.DataFrame())
        if checks.empty:  # pause mode on a provider without pause
            why = ((data.capabilities.get(p) or {}).get("unsupported") or {}).get("pause")
            rows.append([label(data, p), f"unsupported: {why or 'no pause'}", *["–"] * 8])
            continue
        mode = _last(checks, "sleep_mode")
        kind = _last(checks, "pause_kind") or (data.capabilities.get(p) or {}).get("pause_kind")
        expected = _last(checks, "expected_process")
        idle_values = checks["idle_s"].to_numpy(dtype=np.float64)
        idle_values = idle_values[np.isfinite(idle_values)]
        idle = float(np.median(idle_values)) if idle_values.size else None
        shape, _, pricing = billed(data, p)
        threshold = pricing.sleeps_after_s if pricing is not None else None
        if pricing is None or idle is None or mode is None:
            here = hour = "not priced: no catalog entry" if pricing is None else "–"
        else:
            paused = mode == "pause"
            usd, rule = idle_cost(pricing, shape, idle, paused=paused, disk_gib=disk_gib)
            per_hour, _ = idle_cost(pricing, shape, HOUR_S, paused=paused, disk_gib=disk_gib)
            here, hour = f"{cost.format_usd(usd)} ({rule})", cost.format_usd(per_hour)
        rows.append(
            [
                label(data, p),
                f"{IDLED_BY.get(mode or '', 'not measured')} ({kind or '?'})",
                f"{idle:g} s" if idle is not None else "–",
                _p50(data, workload, p, "wake"),
                _p50(data, workload, p, "resume") if mode == "pause" else "–",
                _share(checks, "file_kept"),
                _share(checks, "process_kept"),
                expected_text(expected, idle, threshold) if expected else "–",
                here,
                hour,
            ]
        )
    table = make_table(
        f"persistence-{workload}",
        ("Provider", "Idled by (declared)", "Idle", "Wake p50", "Resume p50", "File kept",
         "Process survived", "Expected of the process", "Cost of this idle",
         "Cost per idle hour"),
        rows,
        title=f"{workload}: what survived the idle, and what the idle costs",
        caption="Each iteration wrote random data and started a process counting in memory, "
        "then paused the sandbox with the provider's call (where it has one) or made no call "
        "at all for the idle, then woke it with a command (Wake: that first command, after the "
        "resume when paused). File kept: the data was intact; process survived: the counter "
        "still advanced. Expected: from the declared semantics (a freeze keeps processes, a "
        "stop keeps only files) and, for a provider that sleeps on idle, its published sleep "
        "threshold against the idle. Cost at the billed shape under the catalog's idle rules "
        f"(storage at the scenario's {disk_gib:g} GiB of disk); where only active use is "
        "billed, awake idle is counted in full (an upper bound).",
        align="llrrrrrlrr",
    )  # fmt: skip
    return View(id=f"persistence-{workload}", title=table.title, blocks=(table,))


def sleep_warnings(data: ReportData) -> Iterable[ReportWarning]:
    """Auto-sleeping providers whose process outcome contradicts their sleep threshold."""
    from bench.workloads import WORKLOADS

    out: list[ReportWarning] = []
    for workload, cls in WORKLOADS.items():
        if cls.report != "bench.workloads.sleep_persist_report":
            continue
        items = []
        for p, rows in by_provider(records(data, workload, "verify")).items():
            if "expected_process" not in rows.columns:
                continue
            depends = rows[rows["expected_process"].astype(str) == "depends"]
            pricing = data.catalog.get(p)
            threshold = pricing.sleeps_after_s if pricing is not None else None
            if depends.empty or threshold is None:
                continue
            idle = median(depends.assign(status="ok"), "idle_s")
            kept = depends["process_kept"].dropna().astype(bool)
            if idle is None or kept.empty:
                continue
            if idle >= threshold and kept.any():
                items.append(
                    f"{p}: idled {idle:g} s, past its published {threshold:g} s sleep, yet "
                    f"the process survived {int(kept.sum())} of {len(kept)} time(s): it did "
                    "not sleep, or its sleep keeps processes"
                )
            if idle < threshold and not kept.all():
                items.append(
                    f"{p}: idled {idle:g} s, short of its {threshold:g} s sleep, yet the "
                    f"process died {int((~kept).sum())} of {len(kept)} time(s)"
                )
        out += limited("sleep", items, Severity.WARNING)
    return out


REPORT = WorkloadReport(
    sections=(persistence,),
    checks=(sleep_warnings,),
    flags=("auto-sleeping sandboxes whose processes contradict their sleep (sleep_persist)",),
)
