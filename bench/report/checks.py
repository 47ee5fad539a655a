"""Warnings: a list of small checks, each returning zero or more warnings.

A check is ``(data: ReportData) -> Iterable[ReportWarning]``. The Warnings section runs
:data:`CHECKS_BEFORE`, then every registered workload's own checks (``Workload.report``, each
function once), then :data:`CHECKS_AFTER`, and lists what they found most severe first (the
order of the checks within a severity). Adding a check: write the function and add it to one
of the two lists.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from bench import stats
from bench.cleanup import alive_from
from bench.iteration import HARNESS_ERROR
from bench.report.data import ReportData
from bench.report.decision import decision_of
from bench.report.sections.fidelity import fidelity_warnings
from bench.report.views import ReportWarning, Severity, Text, View, Warnings, limited
from bench.report.workload import workload_checks
from bench.workloads import registry


def harness_errors(data: ReportData) -> Iterable[ReportWarning]:
    """Bugs of the harness (``HarnessError`` records, bench/iteration.py), listed before
    everything else: a bug of ours must never be read as a provider's failure."""
    frame = data.frame
    found: list[str] = []
    if not frame.empty and "error_type" in frame.columns:
        mask = (frame["error_type"] == HARNESS_ERROR).to_numpy(dtype=bool)
        if mask.any():
            sub = frame.loc[mask, ["run_id", "provider", "workload", "operation"]].astype(str)
            counts = Counter(map(tuple, sub.to_numpy().tolist()))
            first = _first_messages(data, {k[0] for k in counts})
            for (run_id, provider, workload, operation), n in sorted(counts.items()):
                message = first.get((run_id, provider, workload, operation), "")
                found.append(
                    f"{provider}/{workload}/{operation}: {n} record(s) of a bug in the harness, "
                    f"not the provider (run {run_id}){': ' + message if message else ''}"
                )
    for run in data.runset.runs:
        found += [f"{run.run_id}: {e}" for e in run.manifest.get("harness_errors") or []]
    yield from limited("harness bug", found, severity=Severity.BUG)


def _first_messages(data: ReportData, run_ids: set[str]) -> dict[tuple[str, ...], str]:
    """The first HarnessError message per (run, provider, workload, operation), read from the
    samples files (the frame has no messages; these records are rare)."""
    first: dict[tuple[str, ...], str] = {}
    for run in data.runset.runs:
        if run.run_id not in run_ids:
            continue
        try:
            with (Path(run.folder) / "samples.jsonl").open("rb") as fh:
                for line in fh:
                    if HARNESS_ERROR.encode() not in line:
                        continue
                    with contextlib.suppress(ValueError):
                        s = json.loads(line)
                        key = (run.run_id, s["provider"], s["workload"], s["operation"])
                        first.setdefault(key, str(s.get("error_message") or "")[:300])
        except (OSError, KeyError, TypeError):
            continue
    return first


def leftovers(data: ReportData) -> Iterable[ReportWarning]:
    """Sandboxes and checkpoints a run left alive (its ledger shows them created and never
    destroyed or deleted), and why a failed run failed."""
    for run in data.runset.runs:
        alive = alive_from(run.ledger)
        if alive:
            yield ReportWarning(
                kind="leftovers",
                text=f"{run.run_id}: the ledger shows {alive.summary()} never destroyed "
                f"(they may still cost money): run `sandbox-bench reap {run.run_id}`",
            )
        failure = run.manifest.get("failure")
        if failure:
            yield ReportWarning(kind="run status", text=f"{run.run_id} failed: {failure}")


def emulated(data: ReportData) -> Iterable[ReportWarning]:
    for pid in sorted(data.emulated):
        yield ReportWarning(
            kind="emulated",
            text=f"{pid} ran against a loopback endpoint (an emulator on this machine): its "
            "latencies and costs describe the emulator and the harness, not the provider's "
            "service; claims are not judged",
        )


def runs(data: ReportData) -> Iterable[ReportWarning]:
    """Per run: a status other than completed, load warnings, re-runs, failed cleanups."""
    for run in data.runset.runs:
        status = run.manifest.get("status")
        if status != "completed":
            yield ReportWarning(
                kind="run status",
                text=f"run {run.run_id} is '{status}', not completed: its samples stop "
                "where the run stopped",
            )
        for w in run.warnings:
            yield ReportWarning(kind="load", text=f"{run.run_id}: {w}")
        for key in ("warnings", "load_warnings"):
            for w in run.manifest.get(key) or []:
                yield ReportWarning(kind="load", text=f"{run.run_id}: {w}")
        cluster = run.manifest.get("cluster") or {}
        reruns = cluster.get("reruns") or []
        if reruns:
            kept = int(cluster.get("abandoned_samples") or 0)
            yield ReportWarning(
                kind="rerun",
                text=f"{run.run_id}: {len(reruns)} iteration(s) ran again after a worker "
                f"was lost (their records are marked extra.rerun); the {kept} record(s) "
                "the lost attempts had made are kept apart in "
                f"{cluster.get('abandoned_file') or 'abandoned.jsonl'}, not in these figures",
            )
        events = Counter(str(e.get("event")) for e in run.ledger)
        for event in sorted(events):
            if "fail" in event or "leak" in event:
                yield ReportWarning(
                    kind="cleanup",
                    text=f"{run.run_id}: ledger records {events[event]} '{event}' event(s); "
                    "see ledger.jsonl and `sandbox-bench reap`",
                )


def merged(data: ReportData) -> Iterable[ReportWarning]:
    for w in data.runset.merge_warnings:
        yield ReportWarning(kind="merge", text=w)


def configuration(data: ReportData) -> Iterable[ReportWarning]:
    """Runs priced with different catalogs or made with different session scenarios."""
    for w in (*data.pricing.warnings, *data.scenario_choice.warnings):
        yield ReportWarning(kind="merge", text=w)


def no_data(data: ReportData) -> Iterable[ReportWarning]:
    for run in data.runset.runs:
        if run.samples == 0:
            yield ReportWarning(kind="no data", text=f"run {run.run_id} recorded no samples")


def small_n(data: ReportData) -> Iterable[ReportWarning]:
    rows = data.summary_rows
    small = [
        f"{r['provider']}/{r['workload']}/{r['operation']}: n={r['n']}, no percentiles"
        for r in rows
        if 0 < r["n"] < stats.min_n_for(50)
    ]
    yield from limited("small n", small)
    for p in (95, 99):
        need = stats.min_n_for(p)
        count = sum(1 for r in rows if stats.min_n_for(50) <= r["n"] < need)
        if count:
            yield ReportWarning(
                kind="small n",
                text=f"p{p} withheld for {count} of {len(rows)} rows with n < {need}",
            )


def failures(data: ReportData) -> Iterable[ReportWarning]:
    frame = data.frame
    failed_mask = frame["status"].isin(["error", "timeout"]).to_numpy(dtype=bool, copy=True)
    if not data.include_warmups:
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
    for r in data.summary_rows:
        if stats.high_failure_rate(r):
            top = error_kinds.get((r["provider"], r["workload"], r["operation"]), Counter())
            kinds = ", ".join(f"{k} ×{v}" for k, v in top.most_common(2))
            failing.append(
                f"{r['provider']}/{r['workload']}/{r['operation']}: {r['failures']} of "
                f"{r['attempts']} failed ({stats.format_percent(r['failure_rate'])}; {kinds})"
            )
    yield from limited("failures", failing)


def high_variance(data: ReportData) -> Iterable[ReportWarning]:
    variable = []
    for r in data.summary_rows:
        if r["n"] >= stats.MIN_N_ANY and r["mean_s"] > 0:
            cv = r["std_s"] / r["mean_s"]
            if cv >= stats.HIGH_CV:
                variable.append(
                    f"{r['provider']}/{r['workload']}/{r['operation']}: coefficient of "
                    f"variation {cv:.2f} (p50 {stats.format_cell(r, 'p50')}, max "
                    f"{stats.format_cell(r, 'max')})"
                )
    yield from limited("high variance", variable)


def fidelity(data: ReportData) -> Iterable[ReportWarning]:
    """Failed fidelity checks per provider (the Fidelity section) and sandboxes the sweep
    found that the harness had lost; then state checks of operations that declare no fidelity
    check (``extra.verified`` false), per provider and workload."""
    yield from fidelity_warnings(data)
    frame = data.frame
    if "verified" not in frame.columns:
        return
    bad = frame["verified"].eq(False).fillna(False).to_numpy(dtype=bool)
    if not bad.any():
        return
    # Only the failed rows are looked at: a million rows a pass would cost seconds.
    sub = frame.loc[bad, ["provider", "workload", "operation"]].astype(str)
    keys: Counter[tuple[str, str]] = Counter()
    for (provider, workload, operation), n in Counter(
        zip(sub["provider"], sub["workload"], sub["operation"], strict=True)
    ).items():
        # A scaled family (fork's verify_child_c1, _c4 ...) declares its checks once.
        found = registry.find_operation(workload, operation)
        if found is None or not found.operation.checks:
            keys[(provider, workload)] += n
    if not keys:
        return
    yield from limited(
        "fidelity",
        [
            f"{p}/{w}: {n} state check(s) failed (restored or resumed state differed)"
            for (p, w), n in sorted(keys.items())
        ],
    )


def unsupported(data: ReportData) -> Iterable[ReportWarning]:
    items = [
        f"{p}: {op} unsupported — {why}"
        for p, c in sorted(data.capabilities.items())
        for op, why in (c.get("unsupported") or {}).items()
    ]
    yield from limited("unsupported", items)


def stale_prices(data: ReportData) -> Iterable[ReportWarning]:
    """Prices of the providers the report costs, last read more than 90 days before it."""
    for text in decision_of(data).price_warnings:
        yield ReportWarning(kind="stale price", text=text)


def plan_limits(data: ReportData) -> Iterable[ReportWarning]:
    """Scenarios no published plan of a provider allows (concurrency, session length)."""
    for d in decision_of(data).scenarios:
        for provider, c in d.costs.items():
            if c.price is not None and c.price.no_plan_fits:
                yield ReportWarning(
                    kind="plan limits",
                    text=f"{d.scenario.name} on {provider}: no published plan allows it ("
                    + "; ".join(c.price.plans_too_small)
                    + ")",
                    severity=Severity.NOTE,
                )


Check = Callable[[ReportData], Iterable[ReportWarning]]

#: Checks before the workloads' own, in the order their warnings are listed.
CHECKS_BEFORE: tuple[Check, ...] = (
    harness_errors,
    emulated,
    runs,
    leftovers,
    merged,
    configuration,
    no_data,
    small_n,
    failures,
    high_variance,
    fidelity,
)
#: Checks after the workloads' own.
CHECKS_AFTER: tuple[Check, ...] = (unsupported, stale_prices, plan_limits)


def all_checks() -> list[Check]:
    return [*CHECKS_BEFORE, *workload_checks(), *CHECKS_AFTER]


def collect(data: ReportData) -> list[ReportWarning]:
    """Every check's warnings, most severe first (stable within a severity)."""
    found = [w for check in all_checks() for w in check(data)]
    return sorted(found, key=lambda w: w.severity.rank)


def warnings(data: ReportData) -> View:
    found = collect(data)
    return View(
        id="warnings",
        title="Warnings",
        nav="Warnings",
        blocks=(Warnings(items=tuple(found)) if found else Text(text="None."),),
    )


__all__ = ["CHECKS_AFTER", "CHECKS_BEFORE", "Severity", "all_checks", "collect", "warnings"]
