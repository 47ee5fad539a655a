"""The fork workload's own report parts: what a fork's children really got.

* ``children``: per provider, what it declares a fork keeps and how it makes the copies, the
  p50 of a fork of one child and of N, and what the checks found: children holding the
  parent's state, children in which the parent's process was running (against the
  declaration), and copies that stayed independent; or why the provider cannot fork;
* ``fork_warnings``: children that kept a running process although the provider declares
  forks filesystem-only (more than declared: the declaration is wrong, or the service
  changed), and children that lost it although memory is declared (also errors).

Imported only when a report is built (``Fork.report``).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from bench import stats
from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import ReportWarning, Severity, View, limited
from bench.report.workload import WorkloadReport
from bench.workloads.guest_perf_report import by_provider, label
from bench.workloads.registry import find_operation
from bench.workloads.shape import Scale

KEEPS_TEXT = {"filesystem": "filesystem only", "filesystem+memory": "filesystem, memory, processes"}


def _family(data: ReportData, workload: str, name: str) -> pd.DataFrame:
    """Every counted record of the scaled operation ``name`` (all its levels)."""
    frame = data.measured_frame()
    if frame.empty:
        return frame
    pattern = Scale.CONCURRENCY.pattern(name)
    # The workload's rows first (a categorical comparison), then names matched on those only.
    rows = frame.loc[(frame["workload"] == workload).to_numpy(dtype=bool)]
    names = stats.text_values(rows["operation"])
    return rows.loc[[isinstance(n, str) and pattern.match(n) is not None for n in names]]


def _count(rows: pd.DataFrame, column: str | None = None) -> str:
    """ "k of n": checks that passed (or, with ``column``, records where it is true)."""
    if rows.empty:
        return "–"
    status = rows["status"].astype(str)
    attempted = rows[status.isin(("ok", "error"))]
    if attempted.empty:
        return "–"
    if column is None:
        return f"{int((attempted['status'].astype(str) == 'ok').sum())} of {len(attempted)}"
    seen = attempted[column].dropna() if column in attempted.columns else pd.Series()
    return f"{int(seen.astype(bool).sum())} of {len(seen)}" if len(seen) else "–"


def children(data: ReportData, workload: str) -> View | None:
    """Per provider: declared semantics, fork times, and what each check found."""
    summary = data.rows_of(workload)
    forks: dict[str, dict[int, dict]] = {}
    for row in summary:
        found = find_operation(workload, str(row["operation"]))
        if found is not None and found.operation.name == "fork" and found.value is not None:
            forks.setdefault(str(row["provider"]), {})[found.value] = row
    verify = by_provider(_family(data, workload, "verify_child"))
    isolation = by_provider(_family(data, workload, "check_isolation"))
    providers = sorted(set(forks) | set(verify))
    if not providers:
        return None
    levels = sorted({level for per in forks.values() for level in per})
    rows = []
    for p in providers:
        caps = data.capabilities.get(p) or {}
        keeps = caps.get("fork_keeps")
        per = forks.get(p, {})
        unsupported = per and all(r["n"] == 0 and r["unsupported"] for r in per.values())
        if unsupported or (not keeps and p not in verify):
            why = (caps.get("unsupported") or {}).get("fork", "the provider cannot fork")
            rows.append([label(data, p), f"unsupported: {why}", *["–"] * (len(levels) + 3)])
            continue
        declared = KEEPS_TEXT.get(keeps or "", keeps or "not declared")
        method = caps.get("fork_method") or "method not stated"
        cells = [stats.format_cell(per[level], "p50") if level in per else "–" for level in levels]
        checks = verify.get(p, pd.DataFrame())
        rows.append(
            [
                label(data, p),
                f"{declared} ({method})",
                *cells,
                _count(checks),
                _count(checks, "process_kept"),
                _count(isolation.get(p, pd.DataFrame())),
            ]
        )
    table = make_table(
        f"fork-children-{workload}",
        ("Provider", "A fork keeps (declared)", *(f"Fork of {n} p50" for n in levels),
         "Children checked OK", "Process came along", "Copies independent"),
        rows,
        title=f"{workload}: what the children got",
        caption="Before each fork the parent wrote random data and started a process that "
        "counts in memory into a file. Children checked OK: the child had the parent's data "
        "and, where memory is declared kept, the parent's process still counting from where "
        "it was (else a fidelity error). Process came along: children in which that process "
        "was running. Copies independent: after the first child overwrote the data, the other "
        "children and the parent still had the original and not its marker. Fork p50 is the "
        "provider's fork call for that many children at once, until it returned them.",
        align="ll" + "r" * (len(levels) + 3),
    )  # fmt: skip
    return View(id=f"fork-children-{workload}", title=table.title, blocks=(table,))


def fork_warnings(data: ReportData) -> Iterable[ReportWarning]:
    """Children that kept more, or less, than the provider declares a fork keeps."""
    from bench.workloads import WORKLOADS

    out: list[ReportWarning] = []
    for workload, cls in WORKLOADS.items():
        if cls.report != "bench.workloads.fork_report":
            continue
        more, less = [], []
        for p, rows in by_provider(_family(data, workload, "verify_child")).items():
            if "process_kept" not in rows.columns:
                continue
            keeps = (data.capabilities.get(p) or {}).get("fork_keeps")
            kept = int(rows["process_kept"].eq(True).fillna(False).sum())
            lost = int(rows["process_kept"].eq(False).fillna(False).sum())
            if keeps == "filesystem" and kept:
                more.append(
                    f"{p}: {kept} fork child(ren) had the parent's running process although the "
                    "provider declares forks filesystem-only: the declaration undersells it, "
                    "or the service changed"
                )
            if keeps == "filesystem+memory" and lost:
                note = " (an emulator, which cannot copy processes)" if p in data.emulated else ""
                less.append(
                    f"{p}: {lost} fork child(ren) lacked the parent's running process although "
                    f"memory is declared kept{note}"
                )
        out += limited("fork", more, Severity.NOTE)
        out += limited("fork", less)
    return out


REPORT = WorkloadReport(
    sections=(children,),
    checks=(fork_warnings,),
    flags=("fork children that kept more or less than declared (fork workload)",),
)
