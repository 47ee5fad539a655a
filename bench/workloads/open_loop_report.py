"""The open-loop workloads' own report parts (burst, ramp): did the client keep its schedule?

Open-loop latencies run from each operation's intended start, so a client that fell behind
its schedule adds its own delay to them. These parts show and flag it:

* ``schedule_lag``: per provider, actual minus intended start (p50, p95, max) and the longest
  the client's event loop kept ready answers waiting (``client_loop_delay_s``, runs with
  ``watch_loop = true``);
* ``lagging_client``: a warning when either exceeds ``stats.SCHEDULE_LAG_WARN_S``.

Imported only when a report is built (``Burst.report``, ``Ramp.report``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import stats
from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import ReportWarning, View, limited
from bench.report.workload import WorkloadReport


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


def schedule_lag(data: ReportData, workload: str) -> View | None:
    """Per provider, how late the client started the workload's scheduled operations."""
    lags = _lag_frame(data.frame, data.include_warmups)
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
    table = make_table(
        f"lag-{workload}",
        ("Provider", "Scheduled starts", "Lag p50", "Lag p95", "Lag max", "Loop delay max"),
        rows,
        title=f"{workload}: open-loop schedule lag",
        caption="Actual minus intended start of each scheduled operation. Latencies are "
        "measured from the intended start, so a client that falls behind shows up here; a "
        f"max lag above {stats.format_duration(stats.SCHEDULE_LAG_WARN_S)} is flagged. Loop delay "
        "max (runs with watch_loop = true): the longest the client's event loop kept ready "
        "work (an answer, a release) waiting during the schedules, read by a timer that fires "
        "every millisecond; above the same threshold, answers queued behind the client's own "
        "work, which is flagged.",
        align="lrrrrr",
    )
    return View(title=table.title, blocks=(table,))


def lagging_client(data: ReportData) -> list[ReportWarning]:
    """A client that started scheduled operations late, or kept ready answers waiting."""
    lags = _lag_frame(data.frame, data.include_warmups)
    lagging = []
    for (provider, workload), sub in lags.groupby(
        [lags["provider"].astype(str), lags["workload"].astype(str)], sort=True
    ):
        values = np.sort(sub["schedule_lag_s"].to_numpy(dtype=np.float64))
        worst = float(values[-1])
        if worst > stats.SCHEDULE_LAG_WARN_S:
            lagging.append(
                f"{provider}/{workload}: the client started scheduled operations up to "
                f"{stats.format_duration(worst)} late (p50 "
                f"{stats.format_duration(stats.percentile(values, 50))}); latencies include "
                "that delay, so the client may have been the bottleneck"
            )
        delay = _loop_delay_max(sub)
        if delay is not None and delay > stats.SCHEDULE_LAG_WARN_S:
            lagging.append(
                f"{provider}/{workload}: the client's event loop kept ready answers waiting up "
                f"to {stats.format_duration(delay)} (busy with its own work, e.g. its SDK's "
                "per-call CPU), so latencies include the client: split the schedule over "
                "processes or machines (clients = K with --cluster local:K or a Dask cluster)"
            )
    return limited("schedule lag", lagging)


REPORT = WorkloadReport(
    sections=(schedule_lag,),
    checks=(lagging_client,),
    flags=(
        "an open-loop client more than "
        f"{stats.format_duration(stats.SCHEDULE_LAG_WARN_S)} behind its schedule",
    ),
)
