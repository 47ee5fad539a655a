"""guest_perf's own report parts: speed inside the sandbox, and what a unit of work costs.

* ``speed``: per provider, beside the size it is billed at, the median (min–max over
  iterations) of each rate guest_perf measured inside the sandbox: sha256 on one process,
  pure-Python loop, the speed-up on P processes, memory copy, sequential write with fsync,
  random 4 KiB reads and durable writes, DNS and HTTPS times; "unsupported" (with the reason
  under the table) where the sandbox lacked a tool or a route;
* ``price_performance``: dollars per unit of work: the provider's price per second of the
  billed shape (``cost.ProviderPricing.usd_per_s`` of ``shape_for`` the run's spec) divided by
  the median rate: $ per billion SHA-256 blocks (64 bytes each: 64 GB hashed) on one process
  and on all P processes, $ per billion Python loop iterations, $ per TB (10^12 bytes)
  written and fsynced.
  A provider is not priced when the catalog has no entry for it, when its rate is $0 (the
  self-hosted local provider unless ``[pricing] local_usd_per_hour`` is set), or when it was
  measured through an emulator (the speed is this machine's, not the provider's);
* ``cpu_warnings``: a sandbox that delivers fewer CPUs than it is billed for (``nproc`` under
  the billed vCPUs, or the speed-up on P processes well under min(P, billed vCPUs)), one whose
  ``nproc`` shows more CPUs than it delivers (``make -j$(nproc)`` then oversubscribes it), and
  providers measured with different memory or disk methods (not like for like).

Imported only when a report is built (``GuestPerf.report``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from bench import cost, stats
from bench.report.data import ReportData
from bench.report.tables import make_table
from bench.report.views import Notes, ReportWarning, Severity, View, limited
from bench.report.workload import WorkloadReport

#: SHA-256 blocks (64 bytes) in one MiB.
BLOCKS_PER_MIB = (1 << 20) / 64
#: Least share of the expected speed-up before a sandbox is said to under-deliver CPUs.
DELIVERED_SHARE = 0.8


# -- reading the records (shared with the fork and sleep_persist report parts) ----------------


def records(data: ReportData, workload: str, operation: str) -> pd.DataFrame:
    """The counted records of one operation of ``workload`` (warmups out unless asked)."""
    frame = data.measured_frame()
    if frame.empty:
        return frame
    # Categorical comparisons (of codes), not a string per row.
    mask = (frame["workload"] == workload).to_numpy(dtype=bool, copy=True)
    if mask.any():
        mask &= (frame["operation"] == operation).to_numpy(dtype=bool)
    return frame.loc[mask]


def by_provider(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if rows.empty:
        return {}
    return {str(p): g for p, g in rows.groupby(stats.text_values(rows["provider"]), sort=True)}


def ok_values(rows: pd.DataFrame, column: str) -> np.ndarray:
    if rows.empty or column not in rows.columns:
        return np.array([], dtype=np.float64)
    ok = rows[rows["status"].astype(str) == "ok"]
    values = ok[column].to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def median(rows: pd.DataFrame, column: str) -> float | None:
    values = ok_values(rows, column)
    return float(np.median(values)) if values.size else None


def spread(values: np.ndarray, fmt: Callable[[float], str]) -> str:
    """The median, and the range when it is not one value."""
    low, mid, high = (fmt(float(x)) for x in (values.min(), np.median(values), values.max()))
    return mid if low == high else f"{mid} ({low}–{high})"


def outcome(
    rows: pd.DataFrame,
    column: str,
    fmt: Callable[[float], str],
    reasons: dict[str, str],
    why: str | None = None,
) -> str:
    """A cell: the spread of ``column`` over ok records, else why there is none (``why``, an
    unsupported measurement's reason, is numbered into ``reasons``, listed under the table)."""
    values = ok_values(rows, column)
    if values.size:
        return spread(values, fmt)
    if rows.empty:
        return "–"
    status = rows["status"].astype(str)
    if (status == "unsupported").all():
        if not why:
            return "unsupported"
        mark = reasons.setdefault(why, f"[{len(reasons) + 1}]")
        return f"unsupported {mark}"
    failed = int(status.isin(("error", "timeout")).sum())
    if failed:
        kinds = sorted({str(e) for e in rows["error_type"].dropna()})
        return f"failed ×{failed} ({', '.join(kinds) or 'error'})"
    return "not run"


def not_measured(inspect: pd.DataFrame) -> dict[str, str]:
    """Operation -> why the sandbox could not make it, as ``inspect`` recorded it (the
    ``not_measured`` extra: "op: reason" items joined with "; " in the frame)."""
    if inspect.empty or "not_measured" not in inspect.columns:
        return {}
    found: dict[str, str] = {}
    for text in inspect["not_measured"].dropna().astype(str):
        for item in text.split("; "):
            op, _, why = item.partition(": ")
            if why:
                found[op] = why
    return found


def label(data: ReportData, provider: str) -> str:
    return f"{provider} (emulated)" if provider in data.emulated else provider


def _sig(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _millions(x: float) -> str:
    return f"{x / 1e6:.3g} M"


def _ms(x: float) -> str:
    return f"{x * 1e3:.3g} ms"


# -- billed size and price --------------------------------------------------------------------


def billed(data: ReportData, provider: str) -> tuple[cost.Shape, str, cost.ProviderPricing | None]:
    """(billed shape, how it was chosen, the provider's pricing or None)."""
    pricing = data.catalog.get(provider)
    if pricing is None:
        return data.spec, "the run's spec; no catalog entry", None
    shape = pricing.shape_for(data.spec)
    source = "run spec" if shape == data.spec and pricing.billed_shape is None else "fixed"
    return shape, source, pricing


def not_priced(data: ReportData, provider: str) -> str | None:
    """Why ``provider``'s work is not priced, or None when it is."""
    if provider in data.emulated:
        return "measured on an emulator: the speed is this machine's, not the provider's"
    shape, _, pricing = billed(data, provider)
    if pricing is None:
        return "no published price in the pricing catalog"
    if pricing.usd_per_s(shape) <= 0:
        return "its catalog rate is $0 per hour (for local, set [pricing] local_usd_per_hour)"
    return None


# -- sections ---------------------------------------------------------------------------------


#: guest_perf's measurements (and inspect), as the report's tables read them.
OPERATIONS = (
    "inspect",
    "cpu_sha256",
    "cpu_python",
    "cpu_parallel",
    "mem_bandwidth",
    "disk_seq_write",
    "disk_rand_read",
    "disk_rand_write",
    "net_dns",
    "net_https",
)


def _columns(data: ReportData, workload: str) -> dict[str, dict[str, pd.DataFrame]]:
    return {op: by_provider(records(data, workload, op)) for op in OPERATIONS}


def _reason_notes(reasons: dict[str, str]) -> Notes | None:
    if not reasons:
        return None
    return Notes(items=tuple(f"{mark} {reason}" for reason, mark in reasons.items()))


def speed(data: ReportData, workload: str) -> View | None:
    """The rates measured inside each provider's sandboxes, beside the billed size."""
    cols = _columns(data, workload)
    providers = sorted({p for per in cols.values() for p in per})
    if not providers:
        return None
    empty = pd.DataFrame()
    reasons: dict[str, str] = {}

    def cell(op: str, provider: str, column: str, fmt: Callable[[float], str]) -> str:
        why = not_measured(cols["inspect"].get(provider, empty)).get(op)
        why = f"{provider}: {why}" if why else None
        return outcome(cols[op].get(provider, empty), column, fmt, reasons, why)

    cpu_rows, io_rows = [], []
    for p in providers:
        shape, source, _ = billed(data, p)
        inspect = cols["inspect"].get(p, empty)
        models = sorted({str(m) for m in inspect.get("cpu_model", pd.Series()).dropna()})
        parallel = cols["cpu_parallel"].get(p, empty)
        procs = ok_values(parallel, "processes")
        cpu_rows.append(
            [
                label(data, p),
                f"{shape.describe()} ({source})",
                cell("inspect", p, "nproc", lambda x: f"{x:g}"),
                "; ".join(models) or "–",
                cell("cpu_sha256", p, "sha256_mib_per_s", _sig),
                cell("cpu_python", p, "py_loops_per_s", _millions),
                spread(procs, lambda x: f"{x:g}") if procs.size else "–",
                cell("cpu_parallel", p, "speedup", lambda x: f"{x:.2f}×"),
                cell("mem_bandwidth", p, "mem_gib_per_s", lambda x: f"{x:.3g}"),
            ]
        )
        io_rows.append(
            [
                label(data, p),
                cell("disk_seq_write", p, "seq_write_mib_per_s", _sig),
                cell("disk_rand_read", p, "rand_read_iops", _sig)
                + _cached(cols["disk_rand_read"].get(p, empty)),
                cell("disk_rand_write", p, "rand_write_iops", _sig),
                cell("net_dns", p, "dns_s", _ms),
                cell("net_https", p, "https_s", _ms),
            ]
        )
    settings = _settings(data, workload)
    cpu = make_table(
        f"speed-cpu-{workload}",
        ("Provider", "Billed size", "CPUs seen", "CPU model", "sha256, 1 process (MiB/s)",
         "Python loop (iterations/s)", "Processes", "Speed-up", "Memory copy (GiB/s)"),
        cpu_rows,
        title=f"{workload}: CPU and memory speed inside the sandbox",
        caption="Median (min–max) over iterations, each timed by a clock inside the sandbox. "
        f"sha256 of {settings.get('cpu_mb', '?')} MiB of zeros on one process; the Python "
        f"loop of {_count(settings.get('py_loops'))} iterations in the sandbox's own python3; "
        "the same sha256 on P processes at once, its speed-up over one process being the CPUs "
        "the sandbox really delivers (compare with the billed vCPUs); memory: a buffer of "
        f"{settings.get('mem_mb', '?')} MiB copied, each byte counted once. Billed size: the "
        "catalog's fixed shape, else the run's spec. Higher is faster.",
        align="llrlrrrrr",
    )  # fmt: skip
    io = make_table(
        f"speed-io-{workload}",
        ("Provider", "Sequential write + fsync (MiB/s)", "Random 4 KiB reads (IOPS)",
         "Random 4 KiB writes + fdatasync (IOPS)", "DNS", "HTTPS fetch"),
        io_rows,
        title=f"{workload}: disk and network inside the sandbox",
        caption=f"Median (min–max) over iterations. {settings.get('write_mb', '?')} MiB "
        "written in 1 MiB writes then fsynced (the fsync inside the time); reads with O_DIRECT "
        "where the filesystem allows it, else (marked) after asking the kernel to drop the "
        "file from the page cache, which a memory-backed filesystem (tmpfs) cannot do: such "
        "reads come from memory; "
        "each write followed by fdatasync; all in the provider's scratch directory. DNS and "
        "HTTPS are the tools' own times inside the sandbox (curl's time_total: DNS, connect, "
        "TLS, transfer); a sandbox without a route out records them unsupported, never a time.",
        align="lrrrrr",
    )  # fmt: skip
    return View(
        id=f"speed-{workload}",
        title="Speed inside the sandbox",
        blocks=(cpu, io, _reason_notes(reasons)),
    )


def _cached(rows: pd.DataFrame) -> str:
    """A mark on random-read figures measured without O_DIRECT (see the table's caption)."""
    if rows.empty or "io_direct" not in rows.columns:
        return ""
    direct = rows["io_direct"].dropna()
    return " (not O_DIRECT)" if len(direct) and not direct.astype(bool).all() else ""


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _settings(data: ReportData, workload: str) -> dict:
    """The workload's parameters as the last run resolved them (defaults filled in)."""
    plan = data.last.get("plan") or {}
    return dict((plan.get("workload_params") or {}).get(workload) or {})


def price_performance(data: ReportData, workload: str) -> View | None:
    """Dollars per unit of work at each provider's price for its billed shape."""
    cols = _columns(data, workload)
    providers = sorted({p for per in cols.values() for p in per})
    if not providers:
        return None
    empty = pd.DataFrame()
    rows = []
    for p in providers:
        shape, _, pricing = billed(data, p)
        why = not_priced(data, p)
        if why is not None or pricing is None:
            rows.append([label(data, p), shape.describe(), f"not priced: {why}", "–", "–", "–",
                         "–"])  # fmt: skip
            continue
        usd_s = pricing.usd_per_s(shape)

        def per(
            op: str, column: str, units_per_rate: float, usd_s: float = usd_s, p: str = p
        ) -> str:
            rate = median(cols[op].get(p, empty), column)
            if rate is None or rate <= 0:
                return "–"
            return cost.format_usd(usd_s / (rate * units_per_rate))

        rows.append(
            [
                label(data, p),
                shape.describe(),
                f"{cost.format_usd(usd_s * 3600)}/h",
                per("cpu_sha256", "sha256_mib_per_s", BLOCKS_PER_MIB / 1e9),
                per("cpu_parallel", "parallel_mib_per_s", BLOCKS_PER_MIB / 1e9),
                per("cpu_python", "py_loops_per_s", 1e-9),
                per("disk_seq_write", "seq_write_mib_per_s", (1 << 20) / 1e12),
            ]
        )
    table = make_table(
        f"price-performance-{workload}",
        ("Provider", "Billed shape", "Price", "$ per billion sha256 blocks, 1 process",
         "$ per billion sha256 blocks, all processes", "$ per billion Python loop iterations",
         "$ per TB written (fsynced)"),
        rows,
        title=f"{workload}: price-performance",
        caption="What a unit of work costs: the provider's price per second for the billed "
        "shape (the catalog's fixed shape, else the run's spec) divided by the median rate "
        "measured inside its sandboxes. One process pays for the whole shape while using one "
        "CPU; all processes is the parallel rate. A SHA-256 block is 64 bytes (a billion of "
        "them: 64 GB hashed); a TB is 10^12 bytes. Not priced: no catalog price, a $0 rate, "
        "or an emulator's speed (this machine's hardware), which says nothing of the "
        "provider's.",
        align="llrrrrr",
    )  # fmt: skip
    return View(id=f"price-performance-{workload}", title=table.title, blocks=(table,))


# -- warnings ---------------------------------------------------------------------------------


def cpu_warnings(data: ReportData) -> Iterable[ReportWarning]:
    """Sandboxes that deliver fewer CPUs than billed or than nproc shows; mixed methods."""
    from bench.workloads import WORKLOADS

    out: list[ReportWarning] = []
    names = [w for w, cls in WORKLOADS.items() if cls.report == "bench.workloads.guest_perf_report"]
    for workload in names:
        parallel = by_provider(records(data, workload, "cpu_parallel"))
        short, oversold = [], []
        for p, rows in parallel.items():
            if p in data.emulated:
                continue  # this machine's CPUs, not the provider's
            speedup, procs, nproc = (median(rows, c) for c in ("speedup", "processes", "nproc"))
            if speedup is None or procs is None:
                continue
            shape, _, _ = billed(data, p)
            expected = min(procs, shape.cpus)
            if nproc and nproc < 0.95 * shape.cpus:
                short.append(
                    f"{p}: the sandbox shows {nproc:g} CPUs (nproc) of the {shape.cpus:g} vCPUs "
                    f"it is billed for, and {procs:g} processes ran {speedup:.2f}× as fast as one"
                )
            elif expected >= 1.5 and speedup < DELIVERED_SHARE * expected:
                short.append(
                    f"{p}: {procs:g} processes ran {speedup:.2f}× as fast as one: the sandbox "
                    f"delivers about {speedup:.1f} of the {shape.cpus:g} vCPUs it is billed for"
                )
            if nproc and nproc >= 1.5 * max(speedup, 1.0) and procs >= nproc:
                oversold.append(
                    f"{p}: nproc shows {nproc:g} CPUs but {procs:g} processes ran only "
                    f"{speedup:.2f}× as fast as one (a CPU quota): sizing parallel work by "
                    "nproc (make -j$(nproc)) oversubscribes it"
                )
        out += limited("cpus delivered", short)
        out += limited("nproc", oversold, Severity.NOTE)
        for column, what in (("mem_method", "memory"), ("io_method", "sequential write")):
            frame = data.measured_frame()
            if column not in frame.columns:
                continue
            sub = frame[(frame["workload"] == workload) & frame[column].notna()]
            groups = sub.groupby(stats.text_values(sub["provider"]), sort=True)
            methods = {str(p): sorted({str(m) for m in g[column]}) for p, g in groups}
            if len({m for ms in methods.values() for m in ms}) > 1:
                detail = "; ".join(f"{p}: {', '.join(ms)}" for p, ms in methods.items())
                out.append(
                    ReportWarning(
                        kind="comparability",
                        text=f"{workload}: the {what} figures were measured with different "
                        f"methods ({detail}; a sandbox without python3 falls back to dd): not "
                        "like for like",
                    )
                )
    return out


REPORT = WorkloadReport(
    sections=(speed, price_performance),
    checks=(cpu_warnings,),
    flags=("sandboxes delivering fewer CPUs than billed or than nproc shows (guest_perf)",),
)
