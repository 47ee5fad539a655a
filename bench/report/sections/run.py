"""Where, when and how the runs were made, and the network round trip to each provider."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bench import stats
from bench.netprobe import is_loopback
from bench.report.data import ReportData
from bench.report.tables import Table, make_table
from bench.report.views import View


def fmt_time(iso: str | None) -> str:
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(iso)


def _duration_between(start: str | None, end: str | None) -> str:
    try:
        seconds = (
            datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
        ).total_seconds()
    except (TypeError, ValueError):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def details_table(data: ReportData) -> Table:
    runset, frame, include_warmups = data.runset, data.frame, data.include_warmups

    def client(m: Mapping[str, Any]) -> str:
        c = m.get("client") or {}
        parts = [str(c.get("hostname") or "?")]
        if c.get("location"):
            parts.append(f"location {c['location']}")
        return ", ".join(parts)

    def machine(m: Mapping[str, Any]) -> str:
        c = m.get("client") or {}
        return (
            f"{c.get('platform') or '?'}; kernel {c.get('kernel') or '?'}; "
            f"{c.get('cpus') or '?'} CPUs, {c.get('memory_mb') or '?'} MB; "
            f"Python {c.get('python') or '?'}"
        )

    def harness(m: Mapping[str, Any]) -> str:
        h = m.get("harness") or {}
        sha = str(h.get("git_sha") or "?")[:12]
        dirty = " (uncommitted changes)" if h.get("git_dirty") else ""
        return f"sandbox-bench {h.get('version') or '?'}, git {sha}{dirty}"

    def spec(m: Mapping[str, Any]) -> str:
        s = m.get("spec") or {}
        parts = [f"{s.get('cpus', '?')} vCPU", f"{s.get('memory_mb', '?')} MiB"]
        if s.get("disk_mb"):
            parts.append(f"{s['disk_mb']} MiB disk")
        parts.append(f"template {s.get('template') or 'default'}")
        if s.get("lifetime_s"):
            parts.append(f"lifetime {s['lifetime_s']} s")
        if s.get("max_pids"):
            parts.append(f"max {s['max_pids']} pids")
        return ", ".join(parts)

    def plan(m: Mapping[str, Any]) -> str:
        p = m.get("plan") or {}
        return (
            f"providers {', '.join(p.get('providers') or [])}; workloads "
            f"{', '.join(p.get('workloads') or [])}; {p.get('iterations', '?')} iterations + "
            f"{p.get('warmup', '?')} warmup; concurrency {p.get('concurrency', '?')}; "
            f"{p.get('scheduled_iterations', '?')} scheduled iterations"
        )

    def sdks(m: Mapping[str, Any]) -> str:
        parts = []
        for pid, entry in sorted((m.get("providers") or {}).items()):
            versions = ((entry or {}).get("environment") or {}).get("sdk_versions") or {}
            if versions:
                parts.append(f"{pid}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
            else:
                parts.append(f"{pid}: no SDK")
        return "; ".join(parts) or "–"

    def connections(m: Mapping[str, Any]) -> str:
        parts = [
            f"{pid}: {env['connection']}"
            for pid, entry in sorted((m.get("providers") or {}).items())
            if (env := (entry or {}).get("environment") or {}).get("connection")
        ]
        return "; ".join(parts) or "not recorded (no SDK client)"

    def counts(run_id: str) -> str:
        # A mask, not a copy of the run's rows: a million rows of ~80 columns would be copied
        # to count two of them.
        mine = (frame["run_id"] == run_id).to_numpy(dtype=bool)
        counted = frame.loc[mine, "status"].value_counts()
        status = Counter({str(k): int(v) for k, v in counted.items()})
        warm = int(frame["warmup"].to_numpy(dtype=bool)[mine].sum())
        n = int(mine.sum())
        warm_text = "included" if include_warmups else "excluded"
        return (
            f"{n:,} samples: {status.get('ok', 0):,} ok, "
            f"{status.get('error', 0) + status.get('timeout', 0):,} failed, "
            f"{status.get('unsupported', 0):,} unsupported, {status.get('skipped', 0):,} "
            f"skipped; {warm:,} warmup samples ({warm_text})"
        )

    fields = [
        ("Status", lambda r: str(r.manifest.get("status") or "?")),
        ("Started", lambda r: fmt_time(r.manifest.get("started_at"))),
        ("Finished", lambda r: fmt_time(r.manifest.get("finished_at"))),
        (
            "Wall time",
            lambda r: _duration_between(
                r.manifest.get("started_at"), r.manifest.get("finished_at")
            ),
        ),
        ("Client host", lambda r: client(r.manifest)),
        ("Client machine", lambda r: machine(r.manifest)),
        ("Harness", lambda r: harness(r.manifest)),
        ("Seed", lambda r: str(r.manifest.get("seed", "?"))),
        ("Sandbox spec", lambda r: spec(r.manifest)),
        ("Plan", lambda r: plan(r.manifest)),
        ("Connection mode", lambda r: connections(r.manifest)),
        ("SDK versions", lambda r: sdks(r.manifest)),
        ("Samples", lambda r: counts(r.run_id)),
        ("Folder", lambda r: str(r.folder)),
    ]
    columns = ("", *[r.run_id for r in runset.runs])
    rows = [[name, *[get(r) for r in runset.runs]] for name, get in fields]
    return make_table(
        "details",
        columns,
        rows,
        title="Where, when and how",
        align="l" * len(columns),
    )


def network_table(data: ReportData) -> Table:
    runset, providers = data.runset, data.providers

    """TCP connect time from each client (this machine, or each cluster worker) to each
    provider's API endpoint, per run."""
    rows = []
    for run in runset.runs:
        m = run.manifest
        envs = {
            pid: (entry or {}).get("environment") or {}
            for pid, entry in (m.get("providers") or {}).items()
        }
        planned = list((m.get("plan") or {}).get("providers") or providers)
        client = m.get("client") or {}
        # (client, its measurements or None when the run recorded none)
        clients: list[tuple[str, Mapping[str, Any] | None]] = []
        workers = (m.get("cluster") or {}).get("workers") or {}
        for w in sorted(workers.values(), key=lambda w: str(w.get("name"))):
            where = f"worker {w.get('name') or '?'} on {w.get('host') or '?'}"
            clients.append((where + (f" ({w['location']})" if w.get("location") else ""),
                            w.get("network")))  # fmt: skip
        if not workers:
            where = str(client.get("hostname") or "this machine")
            if client.get("location"):
                where += f" ({client['location']})"
            clients.append((where, client.get("network")))
        for where, network in clients:
            for pid in sorted(set(planned) | set(network or {})):
                measured = (network or {}).get(pid)
                if measured is None:
                    # Every provider whose environment names an endpoint is measured
                    # (bench/netprobe.py); a measured run without one for pid had none.
                    note = (
                        "no network endpoint: runs on the client machine"
                        if network is not None and not envs.get(pid, {}).get("endpoint")
                        else "not measured"
                    )
                    rows.append([run.run_id, where, pid, "–", "–", "–", note])
                    continue
                rounds = [x for x in measured.get("tcp_connect_s") or [] if x is not None]
                endpoint = str(measured.get("endpoint") or "?")
                median = measured.get("median_s")
                note = "loopback: an emulator on this machine" if is_loopback(endpoint) else ""
                rows.append(
                    [
                        run.run_id,
                        where,
                        pid,
                        endpoint,
                        "–" if median is None else stats.format_duration(float(median)),
                        str(len(rounds)),
                        "unreachable" if median is None else note,
                    ]
                )
    return make_table(
        "network",
        ("Run", "Client", "Provider", "Endpoint", "TCP connect p50", "Rounds", "Note"),
        rows,
        title="Network round trip to each provider",
        caption="Time to open a TCP connection from the client to each provider's API "
        "endpoint, measured before the run: a floor under every remote call's latency, so runs "
        "made from different places can be read side by side.",
        align="llllrrl",
    )


def run(data: ReportData) -> View:
    network = network_table(data)
    return View(
        id="run",
        title="Where, when and how",
        nav="Run",
        blocks=(
            details_table(data),
            View(id="network", title=network.title, blocks=(network,)),
        ),
    )
