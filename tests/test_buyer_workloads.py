"""guest_perf, fork and sleep_persist through the real runner on every provider, and their report.

One module-scoped run: the local provider and each cloud adapter against its loopback emulator
(real local sandboxes behind them), the three workloads with small parameters, written to a
real run folder. Each provider's records are then checked against what it declares (and what
its emulator can and cannot do), and the report is built from the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.emulators.control import running
from bench.records import Sample, Status
from bench.report import ReportSettings, write_report
from bench.runner import Recorder, Runner, make_plan
from bench.store import RunWriter, load_run
from bench.workloads import WORKLOADS
from providers import provider_class
from providers.base import SandboxSpec
from tests.conftest import PROVIDER_IDS, needs_root
from tests.report_parsing import html_tables, markdown_tables
from tests.synthetic import manifest

#: Small enough that the whole module runs in well under a minute on 2 busy cores.
PARAMS: dict[str, dict[str, Any]] = {
    "guest_perf": {"cpu_mb": 4, "py_loops": 50_000, "mem_mb": 4, "mem_repeats": 2,
                   "write_mb": 4, "io_file_mb": 4, "read_ops": 100, "write_ops": 10},
    "fork": {"children": 2},
    "sleep_persist": {"idle_s": 0.2},
}  # fmt: skip
SPEC = {"cpus": 1.0, "memory_mb": 1024, "disk_mb": None, "template": None, "lifetime_s": 900,
        "max_pids": 512}  # fmt: skip
#: Providers whose fork keeps memory by declaration, but whose emulator copies files only.
MEMORY_FORKS = {"e2b"}
NO_FORK = {"sprites", "runloop", "codesandbox", "modal", "northflank"}


async def _run(folder: Path) -> None:
    names = list(PARAMS)
    saved = dict(os.environ)
    async with contextlib.AsyncExitStack() as stack:
        providers, emulators = {}, []
        try:
            for pid in PROVIDER_IDS:
                if pid == "local":
                    state = folder.parent / "local-state"
                    providers[pid] = provider_class("local")({"state_dir": str(state)})
                else:
                    emu = await stack.enter_async_context(running(pid, folder.parent / pid))
                    emulators.append(emu)
                    os.environ.update(emu.client_env())
                    providers[pid] = provider_class(pid)({})
                await providers[pid].open()
            meta = manifest(folder.name, providers=PROVIDER_IDS, workloads=names, iterations=1,
                            warmup=0, seed=3, spec=SPEC)  # fmt: skip
            meta["providers"] = {
                p: {"capabilities": pr.capabilities().to_dict(), "environment": pr.environment()}
                for p, pr in providers.items()
            }
            workloads = {n: WORKLOADS[n](PARAMS[n]) for n in names}
            meta["plan"]["workload_params"] = {n: w.params for n, w in workloads.items()}
            writer = RunWriter(folder, meta)
            try:
                runner = Runner(
                    providers=providers,
                    workloads=workloads,
                    spec=SandboxSpec(cpus=1, memory_mb=1024),
                    recorder=Recorder(writer, run_id=folder.name, concurrency=1),
                    timeout_s=60,
                )
                await runner.run(make_plan(list(PROVIDER_IDS), names, iterations=1, warmup=0,
                                           seed=3))  # fmt: skip
                # Every sandbox and fork child was destroyed by the workloads themselves.
                assert await providers["local"].list_sandboxes(folder.name) == []
                for emu in emulators:
                    assert await emu.live_sandboxes() == [], emu.name
            finally:
                writer.close()
        finally:
            for provider in providers.values():
                await provider.close()
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="module")
def buyer_run(tmp_path_factory) -> Iterator[Path]:
    needs_root()
    folder = tmp_path_factory.mktemp("buyer") / "20261130T000000Z-buyer"
    asyncio.run(_run(folder))
    yield folder


def _samples(folder: Path, provider: str, workload: str) -> list[Sample]:
    return [s for s in load_run(folder).samples
            if s.provider == provider and s.workload == workload]  # fmt: skip


def _by_op(samples: list[Sample]) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for s in samples:
        found.setdefault(s.operation, []).append(s)
    return found


@pytest.mark.parametrize("provider", PROVIDER_IDS)
def test_guest_perf_measures_every_resource_and_says_why_not_for_the_network(buyer_run, provider):
    ops = _by_op(_samples(buyer_run, provider, "guest_perf"))
    planned = [op.name for op in WORKLOADS["guest_perf"].operations]
    assert list(ops) == planned  # one record each, in the declared order
    measured = ["cpu_sha256", "cpu_python", "cpu_parallel", "mem_bandwidth", "disk_seq_write",
                "disk_rand_read", "disk_rand_write"]  # fmt: skip
    for op in ["inspect", *measured, "cpu_kernel", "destroy"]:
        assert [s.status for s in ops[op]] == [Status.OK], (op, ops[op][0].error_message)
    for op in measured:
        [s] = ops[op]
        assert 0 < s.extra["kernel_s"] <= s.duration_s * 1.05 + 0.05, op  # inside the exec
    [sha] = ops["cpu_sha256"]
    assert ops["cpu_kernel"][0].duration_s == pytest.approx(sha.extra["kernel_s"])
    assert sha.extra["sha256_mib_per_s"] == pytest.approx(4 / sha.extra["kernel_s"])
    [parallel] = ops["cpu_parallel"]
    assert parallel.extra["processes"] == max(2, parallel.extra["nproc"])  # spec 1, nproc 2+
    assert parallel.extra["speedup"] == pytest.approx(
        parallel.extra["parallel_mib_per_s"] / sha.extra["sha256_mib_per_s"]
    )
    assert ops["mem_bandwidth"][0].extra["mem_method"] == "python_memcpy"
    # The sandboxes behind every provider here have only lo: no route, so no time at all.
    for op in ("net_dns", "net_https"):
        [s] = ops[op]
        assert s.status == Status.UNSUPPORTED and s.duration_s is None
        assert "no network interface besides lo" in s.error_message
    assert any(item.startswith("net_dns: no route") for item in
               ops["inspect"][0].extra["not_measured"])  # fmt: skip


@pytest.mark.parametrize("provider", PROVIDER_IDS)
def test_fork_children_hold_the_state_and_are_independent_or_fork_is_unsupported(
    buyer_run, provider
):
    samples = _samples(buyer_run, provider, "fork")
    if provider in NO_FORK:
        assert [(s.operation, s.status) for s in samples] == [
            ("fork_c1", Status.UNSUPPORTED),
            ("fork_c2", Status.UNSUPPORTED),
        ]
        assert all(s.error_message for s in samples)
        return
    counts = Counter((s.operation, s.status) for s in samples)
    assert counts[("fork_c1", Status.OK)] == counts[("fork_c2", Status.OK)] == 1
    assert counts[("check_isolation_c1", Status.OK)] == 1  # the parent
    assert counts[("check_isolation_c2", Status.OK)] == 2  # the other child and the parent
    assert counts[("destroy_child_c2", Status.OK)] == 2 and counts[("destroy", Status.OK)] == 1
    verify = [s for s in samples if s.operation.startswith("verify_child")]
    assert len(verify) == 3 and all(s.extra["process_kept"] is False for s in verify)
    if provider in MEMORY_FORKS:
        # Declared to keep memory (the vendor's semantics); the emulator copies files only,
        # so the process check fails, truthfully, while the file check passes.
        assert {(s.status, s.error_type) for s in verify} == {(Status.ERROR, "FidelityError")}
        assert all("not running in the child" in s.error_message for s in verify)
    else:
        assert all(s.status == Status.OK and s.extra["verified"] for s in verify)


EXPECTED_PROCESS = {
    "local": ("pause", True),
    "e2b": ("pause", True),
    "codesandbox": ("pause", True),
    "daytona": ("pause", False),
    "runloop": ("pause", False),
    "vercel": ("pause", False),
    "sprites": ("idle", True),  # no sleep in 0.2 s (nor ever, in its emulator)
    "modal": ("idle", True),  # no pause, no sleep: it just runs on
    "northflank": ("idle", True),  # no pause (scaling to zero loses the processes): runs on
}


@pytest.mark.parametrize("provider", PROVIDER_IDS)
def test_sleep_persist_keeps_the_file_and_the_process_as_declared(buyer_run, provider):
    ops = _by_op(_samples(buyer_run, provider, "sleep_persist"))
    mode, kept = EXPECTED_PROCESS[provider]
    assert ("pause" in ops) == (mode == "pause")
    assert all(s.status == Status.OK for group in ops.values() for s in group)
    [verify] = ops["verify"]
    assert verify.extra["sleep_mode"] == mode
    assert verify.extra["file_kept"] is True and verify.extra["process_kept"] is kept
    assert ops["wake"][0].extra["idle_s"] == 0.2


def test_the_report_shows_speed_price_performance_fork_and_persistence(buyer_run, tmp_path):
    settings = ReportSettings(local_rate_usd_per_hour=0.10)
    report = write_report([buyer_run], tmp_path / "reports", settings=settings)
    html = report.read_text(encoding="utf-8")
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    tables = dict(html_tables(html))
    assert len(markdown_tables(md)) == len(html_tables(html))
    glance = tables["table-glance"]
    column = glance[0].index("CPU (sha256) p50")
    assert all(row[column] != "–" for row in glance[1:])  # every provider ran the kernel

    speed = {r[0]: r for r in tables["table-speed-cpu-guest_perf"][1:]}
    assert speed["local"][1] == "1 vCPU / 1 GiB (run spec)"
    assert speed["sprites (emulated)"][1] == "8 vCPU / 4 GiB (fixed)"
    assert speed["codesandbox (emulated)"][1].endswith("no catalog entry)")
    io = {r[0]: r for r in tables["table-speed-io-guest_perf"][1:]}
    assert io["local"][4].startswith("unsupported [")  # DNS, with its reason listed below
    assert "no network interface besides lo" in md

    price = {r[0]: r for r in tables["table-price-performance-guest_perf"][1:]}
    assert price["local"][2] == "$0.100/h" and price["local"][3].startswith("$")
    assert price["e2b (emulated)"][2].startswith("not priced: measured on an emulator")
    assert price["codesandbox (emulated)"][2].startswith("not priced: measured on an emulator")

    forks = {r[0]: r for r in tables["table-fork-children-fork"][1:]}
    assert forks["local"][1] == "filesystem only (copy)" or forks["local"][1].startswith(
        "filesystem only"
    )
    assert forks["local"][-3:] == ["3 of 3", "0 of 3", "3 of 3"]
    assert forks["e2b (emulated)"][-3:] == ["0 of 3", "0 of 3", "3 of 3"]
    assert forks["sprites (emulated)"][1].startswith("unsupported: ")
    assert "lacked the parent's running process although memory is declared kept" in md

    persist = {r[0]: r for r in tables["table-persistence-sleep_persist"][1:]}
    assert persist["daytona (emulated)"][5:8] == ["1 of 1", "0 of 1", "gone (only files survive)"]
    assert persist["sprites (emulated)"][7] == "survives (idle shorter than its 30 s sleep)"
    assert "asleep after 30 s" in persist["sprites (emulated)"][8]
    assert persist["e2b (emulated)"][8] == "$0 (paused: pays nothing)"
    assert persist["local"][9] == "$0.100"  # a paused local sandbox still holds the host
    assert persist["codesandbox (emulated)"][8].startswith("not priced")


def test_a_run_whose_every_create_failed_still_reports(tmp_path):
    """Nothing measured (each iteration's create failed, the rest skipped): the three report
    parts say so instead of failing."""
    from providers.stub import StubProvider
    from tests.wrapped_provider import Wrapped

    class NoCapacity(Wrapped):
        async def create(self, spec):
            raise RuntimeError("no capacity")

    provider = NoCapacity(StubProvider())
    folder = tmp_path / "results" / "20261130T010000Z-nocap"
    names = list(PARAMS)
    meta = manifest(folder.name, providers=("stub",), workloads=names, iterations=2, warmup=0,
                    seed=1, spec=SPEC)  # fmt: skip
    meta["providers"] = {"stub": {"capabilities": provider.capabilities().to_dict(),
                                  "environment": {}}}  # fmt: skip
    workloads = {n: WORKLOADS[n](PARAMS[n]) for n in names}
    meta["plan"]["workload_params"] = {n: w.params for n, w in workloads.items()}
    writer = RunWriter(folder, meta)
    try:
        runner = Runner(providers={"stub": provider}, workloads=workloads, spec=SandboxSpec(),
                        recorder=Recorder(writer, run_id=folder.name, concurrency=1),
                        timeout_s=30)  # fmt: skip
        asyncio.run(runner.run(make_plan(["stub"], names, iterations=2, warmup=0, seed=1)))
    finally:
        writer.close()
    report = write_report([folder], tmp_path / "reports")
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    [speed] = tables["table-speed-cpu-guest_perf"][1:]
    assert speed[4] == "not run"  # sha256: only skipped records
    [price] = tables["table-price-performance-guest_perf"][1:]
    assert price[2].startswith("not priced")
    [persist] = tables["table-persistence-sleep_persist"][1:]
    assert persist[1] == "not measured (freeze)" and persist[5:8] == ["–"] * 3
    assert persist[8] == "not priced: no catalog entry"  # the stub has no price
    [fork] = tables["table-fork-children-fork"][1:]
    assert fork[-3:] == ["–", "–", "–"]


def test_fork_children_are_judged_by_the_fork_fidelity_check(buyer_run, tmp_path):
    """Children of the e2b emulator lack the parent's process although e2b declares memory
    kept: the report's fidelity check ``fork`` fails for e2b and passes where forks are real
    copies as declared (local, daytona, vercel: filesystem only)."""
    from bench.report import ReportData
    from bench.report.runs import load_runs
    from bench.report.sections.fidelity import results
    from bench.workloads.shape import Fidelity

    data = ReportData(load_runs([buyer_run]), ReportSettings(), tmp_path / "figures")
    fork = {t.provider: t for t in results(data) if t.kind is Fidelity.FORK}
    assert set(fork) == set(PROVIDER_IDS) - NO_FORK
    assert fork["e2b"].failed >= 1 and "verify_child" in " ".join(fork["e2b"].examples.values())
    for provider in set(fork) - MEMORY_FORKS:
        tally = fork[provider]
        assert tally.failed == 0 and tally.passed == tally.run > 0, provider
