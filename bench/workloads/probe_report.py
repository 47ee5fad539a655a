"""The probe workload's own report parts: what each new sandbox was, seen from inside.

* ``findings``: per provider, sandboxes probed, recycled ones, distinct boot ids, the CPUs,
  memory and root disk they saw, and how many were below the spec (in probe's latency part);
* ``sandbox_warnings``: recycled sandboxes (their create times are not cold starts) and
  sandboxes smaller than the spec (their timings are not like for like).

Imported only when a report is built (``Probe.report``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import ReportWarning, View, limited
from bench.report.workload import WorkloadReport

#: The operation whose records carry what the probe saw.
PROBE = "probe"


def findings(data: ReportData, workload: str) -> View | None:
    """Per provider, what the probe workload found inside each new sandbox."""
    frame, include_warmups, spec = data.frame, data.include_warmups, data.spec_table
    if "effective_cpus" not in frame.columns:
        return None
    mask = (frame["workload"].astype(str) == workload).to_numpy(dtype=bool, copy=True)
    mask &= (frame["operation"].astype(str) == PROBE).to_numpy(dtype=bool)
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
    table = make_table(
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
    return View(title=table.title, blocks=(table,))


def sandbox_warnings(data: ReportData) -> list[ReportWarning]:
    """Recycled sandboxes and sandboxes that do not honour the spec (the probe workload)."""
    frame, include_warmups = data.frame, data.include_warmups
    out: list[ReportWarning] = []
    if frame.empty:
        return out
    keep = np.ones(len(frame), dtype=bool) if include_warmups else ~frame["warmup"].to_numpy(bool)
    if "recycled" in frame.columns:
        recycled = frame["recycled"].eq(True).fillna(False).to_numpy(dtype=bool) & keep
        counts = Counter(frame.loc[recycled, "provider"].astype(str))
        out += limited(
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
        out += limited("comparability", items)
    return out


REPORT = WorkloadReport(
    sections=(findings,),
    checks=(sandbox_warnings,),
    flags=("recycled or undersized sandboxes (probe workload)",),
)
