"""The idle_wake workload's own report part: a warning for slow wakes.

A provider that sleeps on idle (or an emulator told to, ``--misbehave wake-slow``) makes the
first command after an idle wait for its wake. That is latency, not a failure: the call
succeeds, and its time is in the latency table. The warning names it, so a reader does not
take a multi-second ``exec_after_idle`` for a slow command.

Imported only when a report is built (``IdleWake.report``).
"""

from __future__ import annotations

import numpy as np

from bench import stats
from bench.report.data import ReportData
from bench.report.views import ReportWarning, limited
from bench.report.workload import WorkloadReport
from bench.workloads import registry
from bench.workloads.shape import Role

#: A wake whose median takes this long or longer is flagged.
SLOW_WAKE_S = 1.0


def slow_wakes(data: ReportData) -> list[ReportWarning]:
    """Per provider and wake operation (``Role.WAKE``): a median of SLOW_WAKE_S or more."""
    frame = data.measured_frame()
    if frame.empty:
        return []
    # Categorical comparisons (of codes), not a string per row.
    ok = (frame["status"] == "ok").to_numpy(dtype=bool)
    items = []
    for workload, op in registry.with_role(Role.WAKE):
        mask = (frame["workload"] == workload).to_numpy(dtype=bool) & ok
        if not mask.any():
            continue
        mask &= (frame["operation"] == op.name).to_numpy(dtype=bool)
        sub = frame.loc[mask]
        for provider, rows in sub.groupby(stats.text_values(sub["provider"]), sort=True):
            median = float(np.median(rows["duration_s"].to_numpy(dtype=float)))
            if median < SLOW_WAKE_S:
                continue
            idle = rows[op.after_idle].to_numpy(dtype=float) if op.after_idle else np.array([])
            after = f"after {np.nanmedian(idle):g} s idle, " if np.isfinite(idle).any() else ""
            items.append(
                f"{provider}: {after}the first command took {median:.2f} s (median of "
                f"{len(rows)}, {workload}/{op.name}): the sandbox slept and woke slowly; "
                "this is the provider's wake latency, not a failure"
            )
    return limited("slow wake", items)


REPORT = WorkloadReport(checks=(slow_wakes,), flags=("wakes after idle of 1 s or more",))
