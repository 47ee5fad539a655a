"""The report's "Calibration: measured vs true" section.

A calibration run's folder holds ``calibration.json`` (bench/calibration.py): the latency the
emulator was configured to add, written by whoever started it, and the operations that are
exactly one emulator call each. For those operations the section sets the measured
percentiles (with their 95 % intervals) beside the model's true ones. Measured times also
hold the client's and the emulator's own work per call, so ``measured - true`` is expected to
lie between 0 and about that overhead; when the calibration recorded the overhead (measured
against the same emulator with nothing added), an interval that misses ``true + overhead
p50`` is marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench import calibration as calib
from bench import stats
from bench.report.tables import Table, make_table
from bench.report.views import View

if TYPE_CHECKING:
    from bench.report.data import ReportData
    from bench.report.runs import RunInfo

PERCENTILES = (50, 95, 99)


def _delta(measured: float, truth: float) -> str:
    if not (math.isfinite(measured) and math.isfinite(truth)) or truth <= 0:
        return "–"
    diff = measured - truth
    sign = "+" if diff >= 0 else "−"
    return f"{sign}{stats.format_duration(abs(diff))} ({sign}{abs(diff) / truth:.1%})"


def _measured(row: dict[str, Any], p: int, expected: float | None) -> str:
    value = row.get(f"p{p}_s", math.nan)
    if not math.isfinite(value):
        return stats.NOT_ENOUGH
    text = stats.format_duration(value)
    low, high = row.get(f"p{p}_ci_low_s", math.nan), row.get(f"p{p}_ci_high_s", math.nan)
    if math.isfinite(low) and math.isfinite(high):
        text += f" ({stats.format_interval(low, high)})"
        if expected is not None and not low <= expected <= high:
            text += " ✗"
    return text


def _describe(entry: calib.Calibration) -> str:
    model = entry.latency
    parts = []
    if model.fixed_s:
        parts.append(f"{stats.format_duration(model.fixed_s)} fixed")
    if model.median_s and model.p99_s:
        parts.append(
            f"lognormal, median {stats.format_duration(model.median_s)}, "
            f"p99 {stats.format_duration(model.p99_s)}"
        )
    if model.stalls:
        parts.append(
            f"stalls of {stats.format_duration(model.stall_s)} during "
            f"{model.stall_probability:.0%} of the time"
        )
    text = " + ".join(parts) or "nothing added"
    if entry.seed is not None:
        text += f", seed {entry.seed}"
    return text


def calibration_table(
    runs: Sequence[RunInfo], frame: pd.DataFrame, *, include_warmups: bool, seed: int
) -> Table | None:
    """Measured against true percentiles for every run with a ``calibration.json``."""
    rows: list[list[str]] = []
    notes: list[str] = []
    for run in runs:
        try:
            entries = calib.load(run.folder)
        except (OSError, ValueError, KeyError) as exc:
            notes.append(f"{run.run_id}: {calib.CALIBRATION_FILE} unreadable ({exc})")
            continue
        for entry in entries:
            truth = {p: entry.latency.quantile(p) for p in PERCENTILES}
            overhead = (entry.client_overhead_s or {}).get("p50")
            subset = frame[
                (frame["run_id"].astype(str) == run.run_id)
                & (frame["provider"].astype(str) == entry.provider)
                & frame["operation"].astype(str).isin(entry.operations)
            ]
            if subset.empty:
                continue
            summary = stats.summarize(subset, include_warmups=include_warmups, seed=seed)
            for row in summary.to_dict("records"):
                cells = [run.run_id] if len(runs) > 1 else []
                cells += [row["provider"], row["workload"], row["operation"], str(row["n"])]
                for p in PERCENTILES:
                    expected = truth[p] + overhead if overhead is not None else None
                    cells += [
                        stats.format_duration(truth[p]),
                        _measured(row, p, expected),
                        _delta(row.get(f"p{p}_s", math.nan), truth[p]),
                    ]
                rows.append(cells)
            source = f" ({entry.source})" if entry.source else ""
            notes.append(f"{entry.provider}: {_describe(entry)}{source}")
            if entry.client_overhead_s:
                spread = ", ".join(
                    f"{k} {stats.format_duration(v)}" for k, v in entry.client_overhead_s.items()
                )
                notes.append(
                    f"{entry.provider}: client and emulator overhead per call with nothing "
                    f"added: {spread}"
                )
    if not rows:
        return None
    columns = ["Run"] if len(runs) > 1 else []
    columns += ["Provider", "Workload", "Operation", "n"]
    for p in PERCENTILES:
        columns += [f"True p{p}", f"Measured p{p} (95% CI)", f"Δ p{p}"]
    return make_table(
        "calibration",
        columns,
        rows,
        title="Calibration: measured vs true",
        caption=(
            "True percentiles of the latency the emulator added to each call (from the run's "
            f"{calib.CALIBRATION_FILE}), against what the harness measured for the same "
            "operations. Measured times also hold the client's and the emulator's own work per "
            "call, so Δ = measured − true should lie between 0 and about that overhead; ✗ marks "
            "an interval that misses true + the overhead's p50. " + "; ".join(notes) + "."
        ),
        align="l" * (len(columns) - 3 * len(PERCENTILES) - 1) + "r" * (1 + 3 * len(PERCENTILES)),
    )


def calibration(data: ReportData) -> View | None:
    """The section: None unless a run folder holds a calibration."""
    table = calibration_table(
        data.runset.runs, data.frame, include_warmups=data.include_warmups, seed=data.seed
    )
    if table is None:
        return None
    return View(id="calibration", title=table.title, nav="Calibration", blocks=(table,))
