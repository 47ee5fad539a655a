"""At a glance, how to read the report, and what each provider can do."""

from __future__ import annotations

from collections.abc import Mapping

from bench import cost, stats
from bench.report.data import ReportData
from bench.report.decision import decision_of
from bench.report.sections.cost import NOT_COSTED
from bench.report.sections.fidelity import failure_rate
from bench.report.tables import Table, make_table
from bench.report.views import Notes, View
from bench.scenarios import SESSION
from bench.workloads import registry
from bench.workloads.shape import Role

#: The at-a-glance columns: the p50 of the operation each role names (the first registered
#: workload that declares it and measured it).
GLANCE_ROLES: tuple[tuple[Role, str], ...] = (
    (Role.CREATE, "Create p50"),
    (Role.READY, "Ready p50"),
    (Role.EXEC, "Exec p50"),
    (Role.CHECKPOINT, "Checkpoint p50"),
    (Role.RESTORE, "Restore p50"),
    (Role.RESUME, "Resume p50"),
    (Role.CPU_SPEED, "CPU (sha256) p50"),
)

CAPTURES_TEXT = {
    "filesystem": "filesystem only (running processes and memory are lost)",
    "filesystem+memory": "filesystem and memory (running processes survive)",
}
RESTORE_TEXT = {
    "in_place": "in place: the same sandbox is rewound",
    "new_sandbox": "a new sandbox starts from the checkpoint",
}
PAUSE_TEXT = {
    "freeze": "explicit pause; processes and memory survive",
    "stop_start": "stop and start; only the filesystem survives",
    "auto_sleep": "no pause API; sleeps when idle and wakes on use",
    "none": "none",
}


#: Footnote markers for what a checkpoint or a resume keeps: the at-a-glance table never puts
#: a memory-keeping operation beside a filesystem-only one without saying so.
MARKS: dict[tuple[Role, str], tuple[str, str]] = {
    (Role.CHECKPOINT, "filesystem"): ("¹", "checkpoint keeps the filesystem only"),
    (Role.CHECKPOINT, "filesystem+memory"): (
        "²",
        "checkpoint keeps the filesystem and memory (running processes)",
    ),
    (Role.RESUME, "freeze"): ("³", "resume of a paused sandbox: memory and processes kept"),
    (Role.RESUME, "stop_start"): (
        "⁴",
        "start of a stopped sandbox: filesystem only, processes must restart",
    ),
}
SNAPSHOT_MARK = (
    "⁵",
    "snapshot storage price not published: left out of the first figure; the range's high "
    "end assumes the dearest storage rate in the catalog",
)
OPEN_MARK = (
    "⁶",
    "a time the cost needs was neither measured nor claimed: its upper end is unknown (?)",
)
#: A cell with no value (a column of nothing but these is left out of the table).
NO_VALUE = "–"


def _pick(rows: Mapping[tuple[str, str, str], dict], provider: str, role: Role) -> str:
    for workload, op in registry.with_role(role):
        row = rows.get((provider, workload, op.name))
        if row is None:
            continue
        if row["n"] == 0 and row["unsupported"]:
            return "unsupported"
        return stats.format_cell(row, "p50")
    return "–"


def _mark(data: ReportData, provider: str, role: Role) -> str:
    caps = data.capabilities.get(provider) or {}
    if role is Role.CHECKPOINT:
        key = caps.get("checkpoint_captures")
    elif role is Role.RESUME:
        key = caps.get("pause_kind")
    else:
        return ""
    found = MARKS.get((role, str(key)))
    return found[0] if found else ""


def _session_cell(data: ReportData, provider: str) -> tuple[str, list[tuple[str, str]]]:
    """The persistent agent's cost per session, as a range, and the marks it carries."""
    agent = next((d for d in decision_of(data).scenarios if d.scenario.name == SESSION), None)
    c = agent.costs.get(provider) if agent is not None else None
    if c is None:
        return NO_VALUE, []
    if c.price is None:
        return NOT_COSTED, []
    p = c.price
    text = cost.format_usd_range(p.per_unit.low, p.per_unit.high)
    marks = []
    if p.high_unknown:  # on the "?" itself: "$0.040 – ?⁶"
        text += OPEN_MARK[0]
        marks.append(OPEN_MARK)
    if p.snapshot_unknown:
        text += f" + snapshots{SNAPSHOT_MARK[0]}"
        marks.append(SNAPSHOT_MARK)
    return text, marks


#: What the caption says of each column after the medians, when the column is shown.
CAPTIONS = {
    "Failure rate": "failure rate over every attempted operation",
    "Fidelity failures": "fidelity failures over every fidelity check run (see Fidelity: the "
    "provider answered ok and did something else)",
    "Agent session cost": "agent session cost: one session of the persistent-agent scenario, "
    "as a range over every sourced price (the Cost section; not costed: a self-hosted "
    "provider without a host price)",
}


def glance_table(data: ReportData) -> tuple[Table, list[str]]:
    """The at-a-glance table and its notes. A column with no value for any provider (say,
    CPU speed when guest_perf did not run) is left out; the others keep their order."""
    rows_by_key = {(r["provider"], r["workload"], r["operation"]): r for r in data.summary_rows}
    summary = data.summary
    rows = []
    used: dict[str, str] = {}
    for p in data.providers:
        sub = summary[summary["provider"] == p]
        attempts = int(sub["attempts"].sum())
        failures = int(sub["failures"].sum())
        cells = []
        for role, _ in GLANCE_ROLES:
            text = _pick(rows_by_key, p, role)
            mark = _mark(data, p, role) if text not in (NO_VALUE, "unsupported") else ""
            if mark:
                used[mark] = next(t for m, t in MARKS.values() if m == mark)
            cells.append(text + mark)
        session, marks = _session_cell(data, p)
        wrong, checked = failure_rate(data, p)
        used.update(marks)
        rows.append(
            [
                f"{p} (emulated)" if p in data.emulated else p,
                *cells,
                stats.format_percent(failures / attempts) if attempts else NO_VALUE,
                f"{stats.format_percent(wrong / checked)} ({wrong} of {checked})"
                if checked
                else NO_VALUE,
                session,
            ]
        )
    columns = ("Provider", *(label for _, label in GLANCE_ROLES), *CAPTIONS)
    keep = [0] + [i for i in range(1, len(columns)) if any(r[i] != NO_VALUE for r in rows)]
    shown = {columns[i] for i in keep}
    sources = list(
        dict.fromkeys(
            w for role, label in GLANCE_ROLES if label in shown for w, _ in registry.with_role(role)
        )
    )
    named = (
        ", ".join(sources[:-1]) + f" and {sources[-1]}" if len(sources) > 1 else "".join(sources)
    )
    parts = [f"medians from the {named} workloads"] if sources else []
    parts += [text for column, text in CAPTIONS.items() if column in shown]
    caption = "; ".join(parts)
    caption = (caption[:1].upper() + caption[1:] + ". ") if caption else ""
    table = make_table(
        "glance",
        tuple(columns[i] for i in keep),
        [[r[i] for i in keep] for r in rows],
        title="At a glance",
        caption=caption + "Marked cells do not mean the same on every provider (notes below the "
        "table): compare them only with that in mind.",
        align="l" + "r" * (len(keep) - 1),
    )
    order = [m for m, _ in MARKS.values()] + [SNAPSHOT_MARK[0], OPEN_MARK[0]]
    notes = [f"{m} {used[m]}" for m in order if m in used]
    return table, notes


def glance(data: ReportData) -> View:
    table, notes = glance_table(data)
    return View(
        id="glance",
        title="At a glance",
        nav="At a glance",
        blocks=(table, Notes(items=tuple(notes)) if notes else None),
    )


HOW_TO_READ = (
    "**p50** is the typical (median) time; **p95** and **p99** are the slow tail: 1 in 20 and "
    "1 in 100 operations took longer. Lower is better.",
    "The **95% CI** beside a percentile is the range the true value most likely lies in given "
    "this many samples. Intervals that do not overlap mean a real difference; for a direct test "
    "of two providers see [Pairwise comparisons](#comparisons).",
    "**n too small** means the run has too few successful samples to estimate that percentile "
    "honestly (p99 needs at least 100); we say so rather than guess.",
    "**Failures** are errors and timeouts; they are counted next to the timings, never averaged "
    "into them. **Not run** lists operations the provider does not support or that were skipped "
    "after an earlier step failed.",
    "**Costs** are measured times × published prices, computed at report time, as ranges "
    "where sources disagree; each scenario states its assumptions. The **Decision** section "
    "ranks providers per scenario and ties them where the data cannot separate them. Vendor "
    "**claims** are judged on the measured median with its interval.",
)


def how_to_read(data: ReportData) -> View:
    return View(
        id="how-to-read",
        title="How to read this",
        nav="How to read this",
        blocks=(Notes(items=HOW_TO_READ, markup=True, style="howto"),),
    )


def capability_table(data: ReportData) -> Table:
    rows = []
    for p in data.providers:
        c = data.capabilities.get(p)
        if c is None:
            rows.append([p, "not recorded", "–", "–", "–", "–", "–"])
            continue
        ops = set(c.get("operations") or [])
        optional = [o for o in ("checkpoint", "restore", "pause", "resume") if o in ops]
        captures = c.get("checkpoint_captures")
        target = c.get("restore_target")
        unsupported = c.get("unsupported") or {}
        notes = c.get("notes") or {}
        rows.append(
            [
                p,
                ", ".join(optional) or "none of the optional ones",
                CAPTURES_TEXT.get(captures, captures or "no checkpoint"),
                RESTORE_TEXT.get(target, target or "no restore"),
                PAUSE_TEXT.get(c.get("pause_kind") or "none", c.get("pause_kind") or "none"),
                c.get("isolation") or "–",
                "\n".join(f"{op}: {why}" for op, why in unsupported.items())
                + ("\n" if unsupported and notes else "")
                + "\n".join(f"{k}: {v}" for k, v in notes.items())
                or "–",
            ]
        )
    return make_table(
        "capabilities",
        (
            "Provider",
            "Optional operations",
            "A checkpoint captures",
            "Restore lands",
            "Pause",
            "Isolation",
            "Unsupported (why) and notes",
        ),
        rows,
        title="Capabilities",
        caption="As each adapter detected them at the start of the run (from the manifest).",
        align="lllllll",
    )


def capabilities(data: ReportData) -> View:
    return View(
        id="capabilities",
        title="Capabilities",
        nav="Capabilities",
        blocks=(capability_table(data),),
    )
