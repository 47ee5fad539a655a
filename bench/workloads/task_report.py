"""The report parts of tasks (configured ``task_NAME`` workloads and the built-in agent tasks).

* ``steps``: per provider and step, how many iterations passed, failed, were skipped after an
  earlier failure or were unsupported, and the latest failure's error class with the end of
  its output (the step's ``stderr_tail``, else ``stdout_tail``: scrubbed and bounded when
  recorded), or the tools the sandbox lacked; then, collapsed, the task's definition (each
  step's command, expected exit code and output pattern, timeout), when the workload is
  registered (a run's configured tasks are, from its manifest).

Imported only when a report is built (``TaskWorkload.report``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import View
from bench.report.workload import WorkloadReport
from bench.workloads import WORKLOADS, registry
from bench.workloads.task import TaskWorkload

#: Statuses as the table counts them.
_FAILED = ("error", "timeout")
#: The iteration's own operations, shown with the steps but not defined by the task.
_OWN = ("create", "first_exec", "total", "destroy")
EXCERPT_CHARS = 240


def _excerpt(row: pd.Series) -> str:
    for key in ("stderr_tail", "stdout_tail"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if len(text) <= EXCERPT_CHARS else "…" + text[-(EXCERPT_CHARS - 1) :]
    return ""


def _latest_failure(rows: pd.DataFrame) -> str:
    failed = rows[rows["status"].astype(str).isin(_FAILED)]
    if failed.empty:
        return ""
    last = failed.sort_values("sample_id").iloc[-1]
    error = str(last["error_type"]) if pd.notna(last["error_type"]) else str(last["status"])
    excerpt = _excerpt(last)
    return f"{error}: {excerpt}" if excerpt else error


def _missing_tools(rows: pd.DataFrame) -> str:
    if "missing_tools" not in rows.columns:
        return ""
    found = sorted({str(v) for v in rows["missing_tools"].dropna() if str(v)})
    return "the sandbox has no " + " / ".join(found) if found else ""


def steps(data: ReportData, workload: str) -> View | None:
    """Each step's outcome per provider, the latest failure's output, the task's definition."""
    frame = data.frame
    mask = (frame["workload"].astype(str) == workload).to_numpy(dtype=bool, copy=True)
    if not data.include_warmups:
        mask &= ~frame["warmup"].to_numpy(dtype=bool)
    sub = frame.loc[mask]
    if sub.empty:
        return None
    rows: list[list[str]] = []
    for provider, by_provider in sub.groupby(sub["provider"].astype(str), sort=True):
        missing = _missing_tools(by_provider[by_provider["operation"].astype(str) == "tools"])
        operations = sorted(
            set(by_provider["operation"].astype(str)),
            key=lambda op: registry.operation_rank(workload, op),
        )
        for operation in operations:
            if operation in _OWN:
                continue
            op_rows = by_provider[by_provider["operation"].astype(str) == operation]
            status = op_rows["status"].astype(str)
            unsupported = int((status == "unsupported").sum())
            note = _latest_failure(op_rows)
            if not note and unsupported and missing:
                note = missing
            rows.append(
                [
                    provider,
                    operation,
                    str(int((status == "ok").sum())),
                    str(int(status.isin(_FAILED).sum())),
                    str(int((status == "skipped").sum())),
                    str(unsupported),
                    note,
                ]
            )
    if not rows:
        return None
    outcome = make_table(
        f"steps-{workload}",
        (
            "Provider",
            "Step",
            "Passed",
            "Failed",
            "Skipped",
            "Unsupported",
            "Latest failure, or why unsupported",
        ),
        rows,
        title=f"{workload}: each step's outcome",
        caption="Iterations per step (warmups excluded unless asked for). A step passes when "
        "its exit code is the expected one and its output pattern, if any, is found; after a "
        "failed step the iteration's later steps are skipped. Latest failure: the error class "
        "and the end of the step's stderr (else stdout), scrubbed of secrets; unsupported "
        "steps name the tools the sandbox lacked.",
        align="llrrrrl",
    )
    blocks: list[Any] = [outcome]
    definition = _definition(workload)
    if definition is not None:
        blocks.append(definition)
    return View(title=outcome.title, blocks=tuple(blocks))


def _definition(workload: str) -> View | None:
    cls = WORKLOADS.get(workload)
    if not (isinstance(cls, type) and issubclass(cls, TaskWorkload)):
        return None
    try:
        spec = cls.task_spec()
    except (ValueError, OSError):  # a built-in whose cache is not on this machine
        spec = getattr(cls, "template", None) or cls.task
    if spec is None:
        return None
    rows = [
        [
            step.name,
            " ".join(step.run.split()),
            str(step.exit_code),
            step.output or "–",
            f"{step.timeout_s:g} s" if step.timeout_s is not None else "the run's",
        ]
        for step in spec.steps
    ]
    table = make_table(
        f"definition-{workload}",
        ("Step", "Command", "Exit code", "Output pattern", "Timeout"),
        rows,
        title=f"{workload}: the task",
        caption=(spec.description + ". " if spec.description else "")
        + (f"Requires {', '.join(spec.requires)}. " if spec.requires else "")
        + f"Uploads {sum(max(1, len(u.files)) for u in spec.uploads)} file(s). Each step runs in "
        "the task's folder (or its cwd) with its env, as one exec.",
        align="lllll",
    )
    return View(id=f"{workload}-task", title=table.title, collapsed=True, blocks=(table,))


REPORT = WorkloadReport(sections=(steps,))
