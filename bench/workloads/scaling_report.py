"""The scaling workloads' own report parts: latency against state size and concurrency.

* ``curves``: for every scaled operation (bench/workloads/shape.py, ``Scale``) measured at two
  or more values, p50 with its 95 % interval and p95 against the value (checkpoint and
  restore against state size; create, exec and a round against concurrency);
* ``throughput``: per provider and concurrency level C, C divided by the median time of a
  round (the operation declared ``throughput``), beside create's and exec's p50 and p99.

Imported only when a report is built (``CheckpointScaling.report``, ``ConcurrencyScaling.report``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench import stats
from bench.report import figures
from bench.report.data import ReportData
from bench.report.tables import Table, make_table
from bench.report.views import View
from bench.report.workload import WorkloadReport
from bench.workloads.registry import find_operation
from bench.workloads.shape import Scale

#: concurrency_scaling's operations shown beside each round in the throughput table.
COMPANIONS = ("create", "exec")


def curves(data: ReportData, workload: str) -> View | None:
    """p50 (with its interval) and p95 of each scaled operation against its scale."""
    scaled: dict[str, dict[str, list[figures.ScalePoint]]] = {}
    scale: Scale | None = None
    for r in data.rows_of(workload):
        found = find_operation(workload, str(r["operation"]))
        if found is None or found.value is None or not math.isfinite(r["p50_s"]):
            continue
        scale = scale or found.operation.scale
        scaled.setdefault(found.operation.name, {}).setdefault(r["provider"], []).append(
            (float(found.value), r["p50_s"], r["p50_ci_low_s"], r["p50_ci_high_s"], r["p95_s"])
        )
    for by_provider in scaled.values():
        for points in by_provider.values():
            points.sort()
    # Only operations measured at two or more values say anything about scaling.
    scaled = {
        name: by_provider
        for name, by_provider in scaled.items()
        if any(len(points) >= 2 for points in by_provider.values())
    }
    if not scaled or scale is None:
        return None
    figure = figures.scaling_figure(
        data.figures_dir, workload, scaled, data.colors, axis=scale.axis, noun=scale.noun
    )
    return View(blocks=(data.figure(figure),))


def throughput_table(workload: str, rows: Sequence[Mapping[str, Any]]) -> Table | None:
    """Per provider and concurrency level C: sandboxes per second (C / median round time)
    and the p50 and p99 of create and exec at that level."""
    by_key = {(r["provider"], r["operation"]): r for r in rows}
    table_rows = []
    for row in rows:
        found = find_operation(workload, str(row["operation"]))
        if found is None or not found.operation.throughput or found.value is None:
            continue
        level, provider = found.value, row["provider"]
        p50 = row.get("p50_s", row.get("p50"))
        rate = (
            f"{level / p50:.1f}/s"
            if not stats.is_withheld(row, "p50") and p50 and not math.isnan(p50)
            else "–"
        )
        cells = [provider, str(level), stats.format_cell(row, "p50"), rate]
        for op in (Scale.CONCURRENCY.recorded(name, level) for name in COMPANIONS):
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


def throughput(data: ReportData, workload: str) -> View | None:
    table = throughput_table(workload, data.rows_of(workload))
    return None if table is None else View(title=table.title, blocks=(table,))


REPORT = WorkloadReport(sections=(throughput, curves))
