"""A workload's own report parts: :class:`WorkloadReport`.

A workload names its parts with its ``report`` class attribute (bench/workloads/base.py):
``"module:ATTRIBUTE"`` or ``"module"`` (then its ``REPORT``), imported only when a report is
built, or the :class:`WorkloadReport` itself. What it holds:

* ``sections``: functions ``(data, workload) -> View | None`` drawn in the workload's own
  part of the Latency section, after its latency table and before its ECDF and box figures
  (what new sandboxes turned out to be, the open-loop schedule lag, the scaling curves);
* ``checks``: functions ``(data) -> iterable of ReportWarning`` added to the Warnings section
  (a check shared by several workloads runs once);
* ``flags``: what those checks flag, in a few words each, for the Method section's list.

For example, a workload module ``bench/workloads/toy.py`` with ``report = "bench.workloads.
toy_report"``, and in that module::

    def spread(data: ReportData, workload: str) -> View | None:
        rows = data.rows_of(workload)
        ...
        return View(title=f"{workload}: spread", blocks=(make_table(...),))

    REPORT = WorkloadReport(sections=(spread,), checks=(too_slow,), flags=("toys too slow",))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.report.registry import load
from bench.workloads import WORKLOADS

if TYPE_CHECKING:
    from bench.report.data import ReportData
    from bench.report.views import ReportWarning, View

WorkloadSection = Callable[["ReportData", str], "View | None"]
Check = Callable[["ReportData"], "Iterable[ReportWarning]"]


@dataclass(frozen=True, kw_only=True)
class WorkloadReport:
    sections: tuple[WorkloadSection, ...] = ()
    checks: tuple[Check, ...] = ()
    flags: tuple[str, ...] = ()


def report_for(workload: str) -> WorkloadReport | None:
    """The registered workload's own report parts (None: it has none, or is not registered)."""
    cls = WORKLOADS.get(workload)
    if cls is None or cls.report is None:
        return None
    # Modules are imported once (sys.modules); resolving again costs a dictionary lookup.
    found: Any = load(cls.report, default_attribute="REPORT")
    if not isinstance(found, WorkloadReport):
        raise TypeError(f"workload {workload}: its report {cls.report!r} is not a WorkloadReport")
    return found


def all_reports() -> list[WorkloadReport]:
    """The report parts of every registered workload, in registry order, each once."""
    seen: list[WorkloadReport] = []
    for name in WORKLOADS:
        found = report_for(name)
        if found is not None and all(found is not s for s in seen):
            seen.append(found)
    return seen


def workload_checks() -> list[Check]:
    """Every registered workload's checks, in registry order, each function once."""
    checks: list[Check] = []
    for found in all_reports():
        checks += [c for c in found.checks if c not in checks]
    return checks


def workload_flags() -> list[str]:
    flags: list[str] = []
    for found in all_reports():
        flags += [f for f in found.flags if f not in flags]
    return flags


__all__ = [
    "Check",
    "WorkloadReport",
    "WorkloadSection",
    "all_reports",
    "report_for",
    "workload_checks",
    "workload_flags",
]
