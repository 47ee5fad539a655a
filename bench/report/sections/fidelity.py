"""Fidelity: did each provider do what it answered "ok" to?

A fidelity check compares what a provider said with what it did: the files a restore brought
back, the processes a pause left running, whether a new sandbox was new and of the size asked
for, whether a listing showed a live sandbox, whether a destroyed sandbox was gone. The
workloads declare which operation judges which check (``Operation.checks``,
bench/workloads/shape.py); this module counts them from the records, per provider and kind:

* a record **failed** a check when it carries the check's error class or its flag; it
  **passed** when its call returned and it did not fail; otherwise (the call failed, timed
  out, was skipped) the check was **not judged**;
* ``destroyed`` is judged from each run's ledger, for every destroy the harness made (timed or
  in clean-up, warmups included): it failed when the end-of-run sweep later found that
  sandbox still listed and destroyed it (or could not);
* ``deleted`` likewise for every checkpoint delete the harness made, on providers whose run
  declares that they list checkpoints by run label (``Capabilities.lists_checkpoints``;
  elsewhere nothing could find a checkpoint the provider kept, so it is not counted): it
  failed when the sweep later found that checkpoint still listed.

:func:`results` is computed once per report; the section, the at-a-glance column and the
warning read it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import stats, store
from bench.report.data import ReportData
from bench.report.runs import capabilities_of
from bench.report.tables import Row, Table, make_table
from bench.report.views import ReportWarning, View, limited
from bench.workloads import registry
from bench.workloads.shape import Check, Fidelity

#: Longest failure example shown in a cell.
EXAMPLE_CHARS = 240
#: How many of the earliest failures of a check the examples are taken from.
EXAMPLES_FROM = 50

INTRO = (
    "A provider can answer “ok” and do the wrong thing. These checks compare what it said "
    "with what it did. A failure here is not slowness: it says this operation cannot be "
    "trusted on this provider as measured, so read its latency with that in mind.",
)


@dataclass(kw_only=True)
class Tally:
    """One provider's counts for one kind of check."""

    provider: str
    kind: Fidelity
    workloads: set[str] = field(default_factory=set)
    passed: int = 0
    failed: int = 0
    not_judged: int = 0
    #: The first failure of each error class: class -> text.
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def run(self) -> int:
        return self.passed + self.failed


_CACHE: weakref.WeakKeyDictionary[ReportData, list[Tally]] = weakref.WeakKeyDictionary()


def results(data: ReportData) -> list[Tally]:
    """Every provider's tallies, by provider then kind (computed once per report)."""
    if data not in _CACHE:
        tallies: dict[tuple[str, Fidelity], Tally] = {}
        _from_records(data, tallies)
        _from_ledger(data, tallies)
        order = list(Fidelity)
        _CACHE[data] = sorted(
            (t for t in tallies.values() if t.run or t.not_judged),
            key=lambda t: (t.provider, order.index(t.kind)),
        )
    return _CACHE[data]


def _tally(tallies: dict[tuple[str, Fidelity], Tally], provider: str, kind: Fidelity) -> Tally:
    return tallies.setdefault((provider, kind), Tally(provider=provider, kind=kind))


def _truthy(column: pd.Series) -> np.ndarray:
    """True where a flag extra is set: a true boolean, a non-empty list (joined) or text."""
    if pd.api.types.is_bool_dtype(column):
        return column.fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(column):
        return (column.notna() & column.ne(0)).to_numpy(dtype=bool)
    return (column.notna() & column.astype(str).ne("")).to_numpy(dtype=bool)


def _from_records(data: ReportData, tallies: dict[tuple[str, Fidelity], Tally]) -> None:
    frame = data.measured_frame()
    if frame.empty:
        return
    #: (run id, sample id) -> where to put the error message of a first failure.
    wanted: dict[tuple[str, int], list[tuple[Tally, str, str]]] = {}
    for workload, op, check in registry.fidelity_checks():
        # Categorical comparisons (of codes) over the frame; text only for the rows found.
        mask = (frame["workload"] == workload).to_numpy(dtype=bool, copy=True)
        if not mask.any():
            continue
        if op.scale is None:
            mask &= (frame["operation"] == op.name).to_numpy(dtype=bool)
        else:  # a scaled family (verify_child_c1, verify_child_c4 ...)
            pattern = op.scale.pattern(op.name)
            rows = np.flatnonzero(mask)
            names = stats.text_values(frame["operation"].iloc[rows])
            mask[rows] = [isinstance(n, str) and pattern.match(n) is not None for n in names]
        if not mask.any():
            continue
        sub = frame.loc[mask]
        status, error_type = stats.text_values(sub["status"]), stats.text_values(sub["error_type"])
        failed = _failures(check, sub, status, error_type)
        others = [c.error_type for c in op.checks if c.error_type]
        returned = (status == "ok") | ((status == "error") & np.isin(error_type, others))
        judged = sub.assign(_failed=failed, _returned=returned)
        # Frame order is record order: the first failure is the earliest one.
        for provider, rows in judged.groupby(stats.text_values(judged["provider"]), sort=False):
            tally = _tally(tallies, provider, check.kind)
            tally.workloads.add(workload)
            bad = rows["_failed"].to_numpy(dtype=bool)
            ok = rows["_returned"].to_numpy(dtype=bool) & ~bad
            tally.failed += int(bad.sum())
            tally.passed += int(ok.sum())
            tally.not_judged += int((~bad & ~ok).sum())
            # Examples come from the earliest failures (reading every one of a million
            # failed records for the first of each kind would cost more than it shows).
            for _, row in rows.loc[bad].head(EXAMPLES_FROM).iterrows():
                where = f"{workload}/{op.name} #{row['iteration']}"
                if check.error_type is not None and str(row["error_type"]) == check.error_type:
                    if check.error_type not in tally.examples:
                        tally.examples[check.error_type] = f"{where}: {check.error_type}"
                        key = (str(row["run_id"]), int(row["sample_id"]))
                        wanted.setdefault(key, []).append((tally, check.error_type, where))
                elif check.flag is not None:
                    text = f"{where}: {check.flag}: {row[check.flag]}"
                    tally.examples.setdefault(check.flag, text[:EXAMPLE_CHARS])
    for (run_id, sample_id), message in _messages(data, set(wanted)).items():
        for tally, label, where in wanted[(run_id, sample_id)]:
            tally.examples[label] = f"{where}: {message}"[:EXAMPLE_CHARS]


def _messages(data: ReportData, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The error messages of the samples ``wanted`` ((run id, sample id)), read back from
    each run's samples.jsonl: the frame does not keep messages (a million of them would not
    fit its memory budget), and a handful of first failures are worth one pass."""
    found: dict[tuple[str, int], str] = {}
    for run in data.runset.runs:
        mine = {sid for rid, sid in wanted if rid == run.run_id}
        path = store.samples_path(run.folder)
        if not mine or not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn line: the loader has already warned about it
                sample_id = record.get("sample_id") if isinstance(record, dict) else None
                if sample_id in mine:
                    found[(run.run_id, sample_id)] = str(record.get("error_message") or "")
                    mine.discard(sample_id)
                    if not mine:
                        break
    return found


def _failures(
    check: Check, sub: pd.DataFrame, status: np.ndarray, error_type: np.ndarray
) -> np.ndarray:
    failed = np.zeros(len(sub), dtype=bool)
    if check.error_type is not None:
        failed |= (status == "error") & (error_type == check.error_type)
    if check.flag is not None and check.flag in sub.columns:
        failed |= _truthy(sub[check.flag])
    return failed


@dataclass(frozen=True)
class _Gone:
    """How the ledger shows one kind of resource gone, for the check that judges it."""

    kind: Fidelity
    id_key: str
    done: str
    failed: str
    noun: str
    verb: str
    past: str


_GONE = (
    _Gone(Fidelity.DESTROYED, "sandbox_id", "destroyed", "destroy_failed", "sandbox", "destroy",
          "destroyed"),
    _Gone(Fidelity.DELETED, "checkpoint_id", "checkpoint_deleted", "checkpoint_delete_failed",
          "checkpoint", "delete", "deleted"),
)  # fmt: skip


def _lists_checkpoints(run: Any) -> set[str]:
    """The providers whose capabilities in ``run``'s manifest say they list checkpoints."""
    caps = capabilities_of([run.manifest])
    return {str(pid) for pid, c in caps.items() if c.get("lists_checkpoints") is True}


def _from_ledger(data: ReportData, tallies: dict[tuple[str, Fidelity], Tally]) -> None:
    for run in data.runset.runs:
        listing = _lists_checkpoints(run)
        for gone in _GONE:
            judged: dict[tuple[str, str], Mapping[str, Any]] = {}
            for entry in run.ledger:
                event, by = entry.get("event"), entry.get("by")
                if event not in (gone.done, gone.failed) or entry.get(gone.id_key) is None:
                    continue
                key = (str(entry.get("provider")), str(entry.get(gone.id_key)))
                if gone.kind is Fidelity.DELETED and key[0] not in listing:
                    continue
                if event == gone.done and by != "sweep":
                    if key not in judged:
                        judged[key] = entry
                        tally = _tally(tallies, key[0], gone.kind)
                        tally.passed += 1
                        tally.workloads.add(str(entry.get("workload") or "?"))
                elif by == "sweep" and key in judged:
                    first = judged.pop(key)
                    tally = _tally(tallies, key[0], gone.kind)
                    tally.passed -= 1
                    tally.failed += 1
                    outcome = (
                        f"{gone.past} it" if event == gone.done else f"could not {gone.verb} it"
                    )
                    where = (
                        f"{first.get('workload')} #{first.get('iteration')}"
                        if first.get("workload") is not None
                        else f"by {first.get('by') or 'the run'}"
                    )
                    tally.examples.setdefault(
                        "leak",
                        f"{where}: {gone.noun} {key[1]} answered ok to {gone.verb} and was "
                        f"still listed at the end of the run (the sweep {outcome})",
                    )


def leftovers(data: ReportData) -> dict[str, list[str]]:
    """Per provider, sandboxes the end-of-run sweep found that the harness never destroyed
    (e.g. a create that timed out here but completed there)."""
    found: dict[str, list[str]] = {}
    for run in data.runset.runs:
        destroyed = {
            (str(e.get("provider")), str(e.get("sandbox_id")))
            for e in run.ledger
            if e.get("event") == "destroyed" and e.get("by") != "sweep"
        }
        for e in run.ledger:
            key = (str(e.get("provider")), str(e.get("sandbox_id")))
            if e.get("by") == "sweep" and e.get("event") == "destroyed" and key not in destroyed:
                found.setdefault(key[0], []).append(key[1])
    return found


def failure_rate(data: ReportData, provider: str) -> tuple[int, int]:
    """(failed, run) over every fidelity check of ``provider``."""
    mine = [t for t in results(data) if t.provider == provider]
    return sum(t.failed for t in mine), sum(t.run for t in mine)


def table(data: ReportData, tallies: Sequence[Tally]) -> Table:
    rows = []
    for t in tallies:
        examples = "\n".join(f"[{label}] {text}" for label, text in t.examples.items())
        cells = (
            t.provider,
            f"{t.kind}: {t.kind.help}",
            ", ".join(sorted(t.workloads)),
            str(t.run),
            str(t.passed),
            str(t.failed),
            str(t.not_judged) if t.not_judged else "–",
            examples or "–",
        )
        classes = ("", "", "", "", "", "bad" if t.failed else "", "muted", "")
        rows.append(Row(cells=cells, classes=classes))
    return make_table(
        "fidelity",
        (
            "Provider",
            "Check",
            "Workloads",
            "Run",
            "Passed",
            "Failed",
            "Not judged",
            "First failure of each kind",
        ),
        rows,
        title="Fidelity checks",
        caption="Run = passed + failed. Not judged: the operation that judges the check "
        "failed otherwise, timed out or was skipped (its own failure is in the latency "
        "tables). destroyed is judged from the ledger for every destroy the harness made "
        "(warmups included): failed when the end-of-run sweep still found the sandbox; "
        "deleted likewise for checkpoints, on providers that list them.",
        align="lllrrrrl",
    )


def fidelity(data: ReportData) -> View | None:
    tallies = results(data)
    if not tallies:
        return None
    return View(
        id="fidelity",
        title="Fidelity",
        nav="Fidelity",
        intro=INTRO,
        blocks=(table(data, tallies),),
    )


def fidelity_warnings(data: ReportData) -> list[ReportWarning]:
    """One warning per provider with failed fidelity checks, and sandboxes the sweep found
    that the harness had lost track of."""
    by_provider: dict[str, list[Tally]] = {}
    for t in results(data):
        if t.failed:
            by_provider.setdefault(t.provider, []).append(t)
    items = []
    for provider, failed in sorted(by_provider.items()):
        kinds = ", ".join(f"{t.kind} {t.failed} of {t.run}" for t in failed)
        items.append(
            f"{provider}: fidelity checks failed ({kinds}): the provider answered ok and did "
            "something else; see [Fidelity](#fidelity)"
        )
    out = limited("fidelity", items)
    leaks = [
        f"{t.provider}: {t.failed} sandbox(es) were still listed at the end of the run after "
        "their destroy had answered ok: leaked by the provider (the end-of-run sweep "
        "destroyed them; a cleanup that trusts destroy would not)"
        for t in results(data)
        if t.kind is Fidelity.DESTROYED and t.failed
    ] + [
        f"{t.provider}: {t.failed} checkpoint(s) were still listed at the end of the run "
        "after their delete had answered ok: leaked by the provider (storage billed on; see "
        "the ledger and left_alive for what the sweep could not delete)"
        for t in results(data)
        if t.kind is Fidelity.DELETED and t.failed
    ]
    out += limited("leak", leaks)
    lost = [
        f"{provider}: the end-of-run sweep found {len(ids)} sandbox(es) the harness never "
        f"destroyed (e.g. {ids[0]}): created but lost track of, and destroyed by the sweep"
        for provider, ids in sorted(leftovers(data).items())
    ]
    return out + limited("leftovers", lost)


__all__ = ["Tally", "failure_rate", "fidelity", "fidelity_warnings", "leftovers", "results"]
