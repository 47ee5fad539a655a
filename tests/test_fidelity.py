"""Providers that answer "ok" and do the wrong thing are caught and reported as what they are.

The emulators' semantic faults (``--misbehave``, :class:`bench.emulators.toolkit.Misbehaving`)
make a provider misbehave behind correct answers. Here:

* on the stub backend, in this process (fast, no root): what each fault does to the
  emulated sandboxes, and that the emulator itself still ends what it pretended to keep;
* against each emulator (every emulated provider of the registry, :data:`PROVIDERS`; local
  backend, real SDKs), one emulator process per provider for the whole module (started when
  its first test needs it), its faults switched through the admin API: a run of
  ``checkpoint,pause_resume,probe,lifecycle`` in each fault completes, records the failure
  under its class with a message that says what happened, leaves no sandbox on the
  emulator, and its report shows the failure in the fidelity table and the at-a-glance
  column; a faithful emulator passes every check. A fault the provider's semantics give
  nothing to act on (:data:`NOT_APPLICABLE`, each with its reason, checked against the
  adapters' declared capabilities) must leave a clean run. By default the fault runs cover
  every fault on e2b, daytona and sprites and, on the other emulators, the faults whose
  effect goes through their own protocol code (:data:`OWN_CODE`); ``SANDBOX_BENCH_FIDELITY=
  full`` runs every applicable pair (see :func:`_cases`). A provider registered without its
  rows in the per-provider tables here fails :func:`test_every_emulated_provider_has_its_rows`
  (and each of its runs) naming the table to fill, rather than going untested;
* the report's reading of the ledger (a destroy that answered ok, then the sweep found the
  sandbox) on a synthetic run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest
import pytest_asyncio

from bench.config import build_config
from bench.emulators import MISBEHAVIOURS, PROTOCOLS, misbehaviours
from bench.emulators.control import Emulator, running
from bench.emulators.toolkit import Box, Misbehaving, SemanticFaults, Snapshot
from bench.records import RunStatus
from bench.report import ReportSettings, checks, write_report
from bench.report.data import ReportData
from bench.report.runs import load_runs
from bench.report.sections.fidelity import fidelity_warnings, results
from bench.session import run_session
from bench.store import ledger_path, load_ledger, load_run
from bench.workloads.checkpoint import compare_state, describe
from bench.workloads.shape import Fidelity
from providers import provider_class
from providers.base import RUN_LABEL, Capabilities, Op, PauseKind, Sandbox, SandboxSpec
from providers.errors import OperationTimeout, ProviderError
from providers.stub import StubProvider
from tests.conftest import EMULATED, PROVIDER_IDS, needs_root
from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[1]
#: Every emulated provider, from the registry: a new one is in every table check and run here.
PROVIDERS = tuple(p for p in PROVIDER_IDS if p in EMULATED)
WORKLOADS = ("checkpoint", "pause_resume", "probe", "lifecycle")
#: The spec asks for every CPU this process may use: a sandbox pinned to half shows fewer.
CPUS = len(os.sched_getaffinity(0))
#: Short SDK timeouts, so a snapshot that stays pending costs seconds. Vercel sizes by its own
#: ``vcpus`` (1 or even), not by the spec: as many as the spec asks for (at least). Northflank's
#: one wait bound covers create and destroy too: 10 s leaves a loaded machine's boots room;
#: its polls (create, snapshot, destroy) come 0.1 s apart instead of 0.5 s.
#: Every provider of :data:`PROVIDERS` needs a row (``{}`` if the defaults do).
ADAPTER: dict[str, dict[str, Any]] = {
    "e2b": {"request_timeout_s": 3.0},
    "daytona": {"sdk_timeout_s": 3.0},
    "sprites": {"checkpoint_timeout_s": 3.0},
    "runloop": {"snapshot_timeout_s": 3.0},
    "codesandbox": {},
    "vercel": {"request_timeout_s": 3.0, "vcpus": CPUS if CPUS == 1 or CPUS % 2 == 0 else CPUS + 1},
    "modal": {"checkpoint_timeout_s": 3.0},
    "northflank": {"request_timeout_s": 5.0, "wait_timeout_s": 10.0, "poll_interval_s": 0.1},
}
#: Adapter settings that make a fault reachable: e2b stops (rather than freezes) with a
#: filesystem pause; daytona freezes only VM-class sandboxes. (runloop and vercel stop by
#: default, codesandbox freezes by default: its memory hibernate.)
REACH = {
    ("e2b", "stop-keeps"): {"pause_mode": "filesystem"},
    ("daytona", "pause-runs"): {"pause_mode": "pause", "snapshot": "linux-vm-emulated"},
}
NO_PAUSE = "no pause API: pause_resume records pause and resume unsupported"
NO_CHECKPOINT = (
    "no checkpoint of a running sandbox: checkpoint records checkpoint and restore unsupported"
)
STOPS = "its pause is a stop/start (STOP_START): the emulator never freezes, so nothing to fake"
UNLISTED = (
    "its checkpoints cannot be listed by run label: nothing can find a snapshot kept after its "
    "delete answered ok, so the deleted check is not judged (the emulator deletes it at stop)"
)
#: The faults a provider's semantics give nothing to act on, and why: the run must be clean
#: (:func:`test_the_not_applicable_table_matches_what_the_adapters_declare` checks each
#: reason against the adapter's capabilities).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("sprites", "pause-runs"): NO_PAUSE,
    ("sprites", "stop-keeps"): NO_PAUSE,
    ("modal", "pause-runs"): NO_PAUSE,
    ("modal", "stop-keeps"): NO_PAUSE,
    ("northflank", "pause-runs"): NO_PAUSE,
    ("northflank", "stop-keeps"): NO_PAUSE,
    ("runloop", "pause-runs"): STOPS,
    ("vercel", "pause-runs"): STOPS,
    ("codesandbox", "stop-keeps"): (
        "its pause (hibernate, FREEZE by default) is a terminate keeping the frozen VM, its "
        "resume a new sandbox on it: no stop/start to keep processes through"
    ),
    ("codesandbox", "restore-empty"): NO_CHECKPOINT,
    ("codesandbox", "restore-partial"): NO_CHECKPOINT,
    ("codesandbox", "snapshot-pending"): NO_CHECKPOINT
    + " (a memory hibernate keeps the VM itself, never its snapshot's files)",
    ("codesandbox", "delete-leaks"): NO_CHECKPOINT,
    **{(p, "delete-leaks"): UNLISTED
       for p in ("e2b", "sprites", "runloop", "vercel", "modal", "northflank")},
}  # fmt: skip
#: Run by default on the emulators added after the first three: the faults whose effect goes
#: through each one's own protocol code (the three rules of toolkit ``Misbehaving``: hold the
#: box's lock before destroying, ask the sandboxes whether a destroyed one is gone, wait for
#: ``built`` after ``take``; and its own pause, restore and listing paths). Not by default
#: there: restore-empty (the same restore path as restore-partial, which shows more: missing
#: and truncated files), and create-recycled, create-undersized and wake-slow (they act in the
#: toolkit's boot and exec, alike for every emulator; the spec mapping and exec path they rely
#: on are in each faithful run). Those run by default on e2b, daytona and sprites, and on
#: every emulator with ``SANDBOX_BENCH_FIDELITY=full``.
OWN_CODE = frozenset(
    {"pause-runs", "stop-keeps", "restore-partial", "snapshot-pending", "destroy-leaks",
     "list-omits"}
)  # fmt: skip
FIRST = ("e2b", "daytona", "sprites")
FULL = os.environ.get("SANDBOX_BENCH_FIDELITY", "") == "full"
WAKE_S = 2.0
#: A pause held long enough that a counter left running shows plainly, even when a loaded
#: machine slows the counter down while it is held.
HOLD_S = 1.5
#: Longer holds where the time outside the hold is long: codesandbox's hibernate captures the
#: filesystem (the local backend holds the processes meanwhile) and its resume is a create, so
#: the bound a frozen counter may reach is close to what a running one shows in 1.5 s.
HOLD = {("codesandbox", "pause-runs"): 3.0}


@dataclass(frozen=True)
class Expect:
    """What a fault must leave in the records: one record of (workload, operation) with this
    status and error class whose message (or flag) holds ``text``; the fidelity check of
    ``kind`` failed (None: no check fails)."""

    kind: Fidelity | None
    workload: str
    operation: str
    status: str
    error_type: str | None
    text: str


RESTORED = "restore brought back"
EXPECT: dict[str, Expect] = {
    "pause-runs": Expect(
        Fidelity.PAUSE, "pause_resume", "verify", "error", "FidelityError",
        "pause did not freeze: the counter advanced",
    ),
    "stop-keeps": Expect(
        Fidelity.PAUSE, "pause_resume", "verify", "error", "FidelityError",
        "processes survived stop/start: the counter advanced",
    ),
    "restore-empty": Expect(
        Fidelity.RESTORE, "checkpoint", "verify", "error", "FidelityError",
        f"{RESTORED} 0 of 4 files intact; missing: sandbox-bench-state-0.bin, "
        "sandbox-bench-state-1.bin, sandbox-bench-state-2.bin, sandbox-bench-state-3.bin",
    ),
    "restore-partial": Expect(
        Fidelity.RESTORE, "checkpoint", "verify", "error", "FidelityError",
        f"{RESTORED} 1 of 4 files intact; missing: sandbox-bench-state-0.bin, "
        "sandbox-bench-state-2.bin; truncated: sandbox-bench-state-1.bin (131,072 of 262,144 "
        "bytes)",
    ),
    "snapshot-pending": Expect(
        None, "checkpoint", "checkpoint", "timeout", "OperationTimeout", ""
    ),
    "create-recycled": Expect(
        Fidelity.FRESH, "probe", "probe", "error", "RecycledSandbox",
        "create handed out a used sandbox: it already held the marker a sandbox of this run left",
    ),
    "create-undersized": Expect(
        Fidelity.SPEC, "probe", "probe", "ok", None, f"cpus {CPUS // 2} < {CPUS}"
    ),
    "destroy-leaks": Expect(
        Fidelity.DESTROYED, "lifecycle", "destroy", "ok", None,
        "answered ok to destroy and was still listed at the end of the run (the sweep "
        "destroyed it)",
    ),
    "delete-leaks": Expect(
        Fidelity.DELETED, "checkpoint", "delete_checkpoint", "ok", None,
        "answered ok to delete and was still listed at the end of the run (the sweep "
        "deleted it)",
    ),
    "list-omits": Expect(
        Fidelity.LISTED, "probe", "listed", "error", "FidelityError",
        "the listing by run label omits live sandbox",
    ),
    "wake-slow": Expect(None, "idle_wake", "exec_after_idle", "ok", None, ""),
}  # fmt: skip
#: What a fault may also cause, on any provider, depending on which iteration gets which
#: sandbox: a recycled sandbox keeps its processes, so one an earlier pause_resume iteration
#: left still runs its counter loop; a second loop then writes the same counter file and the
#: pause check of that iteration may fail too (a true consequence of the fault).
ALSO: dict[str, tuple[tuple[str, str, str], Fidelity]] = {
    "create-recycled": (("pause_resume", "verify", "FidelityError"), Fidelity.PAUSE),
}


# -- the faults themselves, on the stub backend --------------------------------------------------


@contextlib.asynccontextmanager
async def stub_sandboxes(*modes: str, **timing: float) -> AsyncIterator[Misbehaving]:
    sandboxes = Misbehaving(StubProvider({}), SemanticFaults(modes=frozenset(modes), **timing))
    await sandboxes.open()
    try:
        yield sandboxes
    finally:
        await sandboxes.close()
        assert sandboxes.backend._boxes == {}, "the emulator left backend sandboxes behind"


async def booted(sandboxes: Misbehaving, name: str) -> Box:
    box = Box(id=name)
    await sandboxes.boot(box, SandboxSpec())
    return sandboxes.add(box)


def test_fault_names_are_checked_once_and_a_bad_one_is_refused_in_one_line():
    assert misbehaviours("list-omits, pause-runs,,none") == ("pause-runs", "list-omits")
    assert misbehaviours(["destroy-leaks"]) == ("destroy-leaks",) and misbehaviours("") == ()
    with pytest.raises(ValueError, match="unknown semantic fault 'nosuch'"):
        misbehaviours("pause-runs,nosuch")
    with pytest.raises(ValueError, match="wake_s must be between 0 and 3600"):
        SemanticFaults().set(modes=("wake-slow",), wake_s=-1)
    faults = SemanticFaults()
    with pytest.raises(ValueError):
        faults.set(modes="nosuch", wake_s=5)
    assert faults.to_dict() == {"misbehave": [], "wake_s": 3.0, "wake_after_s": 1.0}
    done = subprocess.run(
        [sys.executable, "-m", "bench.emulators", "e2b", "--backend", "stub",
         "--misbehave", "pause-runs,nosuch"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown semantic fault 'nosuch'" in done.stderr


@pytest.mark.parametrize("provider", ["sprites", "modal"])  # modal serves on its own
async def test_the_emulate_option_starts_an_emulator_with_its_faults_on(tmp_path, provider):
    options = ["--backend", "stub", "--wake-s", "0.5"]
    async with running(provider, tmp_path, misbehave=("wake-slow", "list-omits"),
                       extra_args=options) as emu:  # fmt: skip
        config = await emu.config()
        assert config["misbehave"] == ["list-omits", "wake-slow"] and config["wake_s"] == 0.5


async def test_with_no_fault_on_the_sandboxes_are_faithful():
    async with stub_sandboxes() as sandboxes:
        box = await booted(sandboxes, "a")
        await sandboxes.freeze(box)
        assert sandboxes.backend._boxes[box.local.id].paused
        await sandboxes.thaw(box)
        await sandboxes.destroy(box)
        assert sandboxes.get("a") is None and sandboxes.backend._boxes == {}


async def test_destroy_leaks_keeps_the_sandbox_until_a_second_destroy_or_the_end():
    async with stub_sandboxes("destroy-leaks") as sandboxes:
        box, other = await booted(sandboxes, "a"), await booted(sandboxes, "b")
        await sandboxes.destroy(box)
        assert sandboxes.get("a") is box and [b.id for b in sandboxes.listed()] == ["a", "b"]
        assert box.local is not None and box.local.id in sandboxes.backend._boxes
        await sandboxes.destroy(box)  # asked again (the harness's sweep): gone for real
        assert sandboxes.get("a") is None and box.local is None
        await sandboxes.destroy(other)  # pretended; the emulator's close destroys it


async def test_delete_leaks_keeps_a_snapshot_until_a_second_delete_but_not_a_failed_take():
    async with stub_sandboxes("delete-leaks") as sandboxes:
        box = await booted(sandboxes, "a")
        snap = await sandboxes.capture(Snapshot(id="s1", source_id="a"), box)
        assert snap.ref is not None and snap.ref.id in sandboxes.backend._checkpoints
        await sandboxes.drop_snapshot(snap)  # answered ok, kept
        assert sandboxes.find_snapshot("s1") is snap and not snap.dropped
        assert snap.ref.id in sandboxes.backend._checkpoints
        await sandboxes.drop_snapshot(snap)  # asked again (the harness's sweep): gone
        assert sandboxes.find_snapshot("s1") is None and sandboxes.backend._checkpoints == {}
        # The emulator's own undoing of a snapshot is not a client's delete: never kept.
        other = sandboxes.add_snapshot(Snapshot(id="s2", source_id="a"))
        await sandboxes.drop_snapshot(other, asked=False)
        assert sandboxes.find_snapshot("s2") is None
        await sandboxes.destroy(box)


async def test_list_omits_the_newest_sandbox_and_the_truth_still_shows_it():
    async with stub_sandboxes("list-omits") as sandboxes:
        for name in ("a", "b", "c"):
            await booted(sandboxes, name)
            await asyncio.sleep(0.001)  # distinct creation times
        assert [b.id for b in sandboxes.listed()] == ["a", "b"]
        assert sandboxes.live() == ["a", "b", "c"]
        await sandboxes.apply(modes=())
        assert [b.id for b in sandboxes.listed()] == ["a", "b", "c"]


async def test_create_recycled_hands_back_the_last_destroyed_sandbox_until_switched_off():
    async with stub_sandboxes("create-recycled") as sandboxes:
        first = await booted(sandboxes, "a")
        used = first.local
        await sandboxes.destroy(first)
        assert sandboxes.get("a") is None and used.id in sandboxes.backend._boxes
        second = await booted(sandboxes, "b")
        assert second.local == used, "the new sandbox is the old one"
        await sandboxes.destroy(second)
        await sandboxes.apply(modes=())  # the kept one goes with the fault
        assert sandboxes.backend._boxes == {}
        third = await booted(sandboxes, "c")
        assert third.local != used
        await sandboxes.destroy(third)


async def test_pause_runs_and_stop_keeps_answer_without_touching_the_processes():
    async with stub_sandboxes("pause-runs", "stop-keeps") as sandboxes:
        box = await booted(sandboxes, "a")
        local = box.local
        await sandboxes.freeze(box)
        assert box.frozen and not sandboxes.backend._boxes[local.id].paused
        await sandboxes.thaw(box)
        await sandboxes.stop(box)
        assert box.local == local and box.parked is not None, "stopped, still running"
        await sandboxes.apply(modes=())  # switched off: a stop it kept is still taken back
        await sandboxes.start(box)
        assert box.local == local and box.parked is None
        await sandboxes.destroy(box)


async def test_snapshot_pending_stays_pending_and_a_checkpoint_gives_way_when_wanted():
    async with stub_sandboxes("snapshot-pending") as sandboxes:
        box = await booted(sandboxes, "a")
        snap = Snapshot(id="s1", source_id="a")
        await sandboxes.take(snap, box)
        assert snap.state == "pending"
        async with box.lock:  # as a protocol holds it around a checkpoint
            stuck = asyncio.ensure_future(sandboxes.checkpoint(box))
            await asyncio.sleep(0.3)
            assert not stuck.done(), "a checkpoint that never completes"
            destroy = asyncio.ensure_future(box.lock.acquire())  # a destroy wants the box
            with pytest.raises(ProviderError, match="never completed"):
                await stuck
        await destroy
        box.lock.release()
        stalled = asyncio.ensure_future(sandboxes.built(snap, box))
        await asyncio.sleep(0.15)
        sandboxes.stopping.set()  # the emulator stops: nothing waits forever
        with pytest.raises(ProviderError):
            await asyncio.wait_for(stalled, 5)
        await sandboxes.destroy(box)


async def test_wake_slow_delays_the_first_call_after_an_idle_once_for_every_caller():
    async with stub_sandboxes("wake-slow", wake_s=0.3, wake_after_s=0.2) as sandboxes:
        box = await booted(sandboxes, "a")
        started = time.monotonic()
        await sandboxes.exec(box, ["true"], timeout_s=5)
        assert time.monotonic() - started < 0.2, "not idle yet: no wake"
        await asyncio.sleep(0.25)
        started = time.monotonic()
        await asyncio.gather(*(sandboxes.exec(box, ["true"], timeout_s=5) for _ in range(3)))
        assert 0.3 <= time.monotonic() - started < 0.55, "one wake, shared by the calls"
        await sandboxes.destroy(box)


async def test_northflank_gives_up_a_pending_snapshot_and_a_leaked_delete_ends_its_wait(
    tmp_path, monkeypatch
):
    """Northflank's snapshot has a pending state (``scheduled``): under snapshot-pending the
    adapter's wait ends at its bound and it deletes the snapshot (the emulator's delete never
    waits for one that will not come); a delete that leaks answers ok and the service's GET
    says gone (the adapter's wait for the deletion ends), while the listing shows it until a
    second delete, as the sweep's, ends it. Stub backend: no root."""
    faults = ("snapshot-pending", "destroy-leaks")
    options = ["--backend", "stub"]
    async with running("northflank", tmp_path, misbehave=faults, extra_args=options) as emu:
        for key, value in emu.client_env().items():
            monkeypatch.setenv(key, value)
        provider = provider_class("northflank")({"wait_timeout_s": 1.0, "poll_interval_s": 0.05})
        await provider.open()
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "nf-faults"}))
            with pytest.raises(OperationTimeout):
                await provider.checkpoint(sandbox)
            calls = await emu.calls()
            deleted = [c["path"] for c in calls if c["method"] == "DELETE"
                       and "/container-snapshots/" in c["path"]]  # fmt: skip
            assert len(deleted) == 1, "the snapshot given up is deleted"
            headers = {"Authorization": f"Bearer {emu.token}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(emu.url + deleted[0], headers=headers) as answer,
            ):
                assert answer.status == 404, "the emulator dropped the pending snapshot"
            await provider.destroy(sandbox)  # answers ok, and its GET says gone
            assert await provider.list_sandboxes("nf-faults") == [sandbox.id]
            assert await emu.live_sandboxes() == [sandbox.id]
            await provider.destroy(Sandbox(id=sandbox.id, provider="northflank"))  # the sweep's
            assert await provider.list_sandboxes("nf-faults") == []
            assert await emu.live_sandboxes() == []
        finally:
            await provider.close()


async def test_daytona_deletes_a_snapshot_whose_wait_it_gave_up(tmp_path, monkeypatch):
    """Under snapshot-pending Daytona's snapshot never becomes active: the adapter's wait ends
    at its bound, and it deletes the snapshot it asked for (no ref is returned, so nothing else
    would). Stub backend: no root."""
    options = ["--backend", "stub"]
    async with running("daytona", tmp_path, misbehave=("snapshot-pending",),
                       extra_args=options) as emu:  # fmt: skip
        for key, value in emu.client_env().items():
            monkeypatch.setenv(key, value)
        provider = provider_class("daytona")({**ADAPTER["daytona"], "sdk_timeout_s": 1.0})
        await provider.open()
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "dt-faults"}))
            with pytest.raises(OperationTimeout):
                await provider.checkpoint(sandbox)
            calls = await emu.calls()
            made = [c["path"] for c in calls if c["method"] == "POST" and "snapshot" in c["path"]]
            deleted = [c["path"] for c in calls
                       if c["method"] == "DELETE" and "/snapshots/" in c["path"]]  # fmt: skip
            assert made and len(deleted) == 1, (made, deleted)
            await provider.destroy(sandbox)
        finally:
            await provider.close()


def test_the_restore_verdict_says_which_files_are_missing_truncated_mutated_or_different():
    before = {f"/s/f{i}": (100, str(i) * 64) for i in range(5)}
    after = {
        "/s/f0": None,
        "/s/f1": (50, "x" * 64),
        "/s/f2": (108, "y" * 64),
        "/s/f3": (100, "z" * 64),
        "/s/f4": (100, "4" * 64),
    }
    verdict = compare_state(before, after)
    assert verdict == {
        "files_missing": ["f0"],
        "files_truncated": ["f1 (50 of 100 bytes)"],
        "files_mutated": ["f2"],
        "files_different": ["f3"],
    }
    assert describe(verdict, 5) == (
        "restore brought back 1 of 5 files intact; missing: f0; truncated: f1 (50 of 100 "
        "bytes); still mutated (not rolled back): f2; different: f3"
    )


# -- the report's reading of the ledger ---------------------------------------------------------


def test_a_destroy_the_sweep_later_found_alive_is_a_leak_and_a_lost_sandbox_is_a_leftover(
    tmp_path,
):
    folder = make_run(
        tmp_path, providers=("e2b",), workloads=("probe",), iterations=6, warmup=0,
        failure_rate=0.0, spec_mismatch={"e2b": ["cpus 1 < 2"]},
    )  # fmt: skip
    entries = [
        {"event": "destroyed", "provider": "e2b", "sandbox_id": "kept", "workload": "probe",
         "iteration": 3},
        {"event": "destroyed", "provider": "e2b", "sandbox_id": "gone", "workload": "probe",
         "iteration": 4},
        {"event": "destroyed", "by": "cleanup", "provider": "e2b", "sandbox_id": "also-gone"},
        {"event": "destroyed", "by": "sweep", "provider": "e2b", "sandbox_id": "kept"},
        {"event": "destroyed", "by": "sweep", "provider": "e2b", "sandbox_id": "lost"},
    ]  # fmt: skip
    with ledger_path(folder).open("w") as out:
        out.writelines(f"{json.dumps(e)}\n" for e in entries)
    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    tallies = {t.kind: t for t in results(data)}
    destroyed = tallies[Fidelity.DESTROYED]
    assert (destroyed.run, destroyed.passed, destroyed.failed) == (3, 2, 1)
    assert "probe #3: sandbox kept answered ok to destroy" in destroyed.examples["leak"]
    assert (tallies[Fidelity.SPEC].run, tallies[Fidelity.SPEC].failed) == (6, 6)
    assert tallies[Fidelity.FRESH].failed == 0
    texts = [w.text for w in fidelity_warnings(data)]
    assert any("spec 6 of 6, destroyed 1 of 3" in t for t in texts)
    assert any("found 1 sandbox(es) the harness never destroyed (e.g. lost)" in t for t in texts)
    assert any(t.startswith("e2b: 1 sandbox(es) were still listed") for t in texts)


def test_a_checkpoint_delete_the_sweep_later_found_listed_is_a_leak_where_checkpoints_list(
    tmp_path,
):
    folder = make_run(
        tmp_path, providers=("e2b", "sprites"), workloads=("probe",), iterations=6, warmup=0,
        failure_rate=0.0,
    )  # fmt: skip
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["providers"]["e2b"]["capabilities"]["lists_checkpoints"] = True
    manifest["providers"]["sprites"]["capabilities"]["lists_checkpoints"] = False
    path.write_text(json.dumps(manifest))
    entries = [
        {"event": "checkpoint_deleted", "provider": "e2b", "checkpoint_id": "kept",
         "workload": "checkpoint", "iteration": 2},
        {"event": "checkpoint_deleted", "provider": "e2b", "checkpoint_id": "gone",
         "workload": "checkpoint", "iteration": 3},
        {"event": "checkpoint_deleted", "by": "sweep", "provider": "e2b",
         "checkpoint_id": "kept"},
        {"event": "checkpoint_delete_failed", "by": "sweep", "provider": "e2b",
         "checkpoint_id": "kept", "error": "still listed after its delete answered ok"},
        # Sprites does not list checkpoints: nothing could have found one it kept.
        {"event": "checkpoint_deleted", "provider": "sprites", "checkpoint_id": "s1",
         "workload": "checkpoint", "iteration": 0},
    ]  # fmt: skip
    with ledger_path(folder).open("w") as out:
        out.writelines(f"{json.dumps(e)}\n" for e in entries)
    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    tallies = {(t.provider, t.kind): t for t in results(data)}
    deleted = tallies[("e2b", Fidelity.DELETED)]
    assert (deleted.run, deleted.passed, deleted.failed) == (2, 1, 1)
    assert deleted.examples["leak"] == (
        "checkpoint #2: checkpoint kept answered ok to delete and was still listed at the end "
        "of the run (the sweep deleted it)"
    )
    assert ("sprites", Fidelity.DELETED) not in tallies
    texts = [w.text for w in fidelity_warnings(data)]
    assert any(t.startswith("e2b: 1 checkpoint(s) were still listed") for t in texts), texts
    assert any("deleted 1 of 2" in t for t in texts), texts


# -- every fault, through each emulator --------------------------------------------------------


#: The module's emulators: ``await emulators(provider)`` starts that provider's one on first use.
Emulators = Callable[[str], Awaitable[Emulator]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def emulators(tmp_path_factory) -> AsyncIterator[Emulators]:
    """One emulator per provider (local backend) for the module, started when a test first
    needs it, its variables set; at the end each must hold nothing, in its API and in its
    backend's state directory."""
    needs_root()
    root = tmp_path_factory.mktemp("fidelity-emulators")
    patch = pytest.MonkeyPatch()
    started: dict[str, Emulator] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:

            async def emulator(provider: str) -> Emulator:
                if provider not in started:
                    emu = await stack.enter_async_context(running(provider, root))
                    for key, value in emu.client_env().items():
                        patch.setenv(key, value)
                    started[provider] = emu
                return started[provider]

            yield emulator
            for emu in started.values():
                await emu.misbehave()
                assert await emu.live_sandboxes() == [] and emu.local_sandboxes() == []
    finally:
        patch.undo()


def adapter_settings(provider: str) -> dict[str, Any]:
    """``provider``'s row of :data:`ADAPTER`; a provider without one fails, saying so."""
    if provider not in ADAPTER:
        pytest.fail(
            f"{provider}: no row in ADAPTER (tests/test_fidelity.py): give it the adapter "
            "settings of these runs (short timeouts, {} if its defaults do)",
            pytrace=False,
        )
    return ADAPTER[provider]


def capabilities(provider: str, mode: str | None = None) -> Capabilities:
    """What the adapter declares with the settings the runs here give it."""
    settings = {**adapter_settings(provider), **REACH.get((provider, mode or ""), {})}
    return provider_class(provider)(settings).capabilities()


async def run(
    tmp_path: Path, provider: str, workloads: tuple[str, ...], *, iterations: int = 1,
    settings: Mapping[str, Any] | None = None, hold_s: float = HOLD_S,
) -> tuple[Path, RunStatus]:  # fmt: skip
    data = {
        "run": {"providers": [provider], "workloads": list(workloads), "iterations": iterations,
                "warmup": 0, "timeout_s": 15, "seed": 1, "output": str(tmp_path / "results")},
        "spec": {"cpus": CPUS},
        "workloads": {"pause_resume": {"hold_s": hold_s}, "checkpoint": {"state_mb": 1},
                      "idle_wake": {"idle_s": 1.5}},
        "providers": {provider: {**adapter_settings(provider), **(settings or {})}},
    }  # fmt: skip
    return await run_session(build_config(data, {}))


def report(tmp_path: Path, folder: Path) -> tuple[str, ReportData]:
    sections = ("glance", "warnings", "fidelity")
    out = write_report([folder], tmp_path / "reports", settings=ReportSettings(sections=sections))
    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    return (out.parent / "report.md").read_text(), data


def glance_cell(markdown: str, provider: str) -> str:
    """The at-a-glance table's "Fidelity failures" cell of ``provider``."""
    lines = markdown.split("## At a glance", 1)[1].splitlines()
    table = [line for line in lines[: lines.index("", 2)] if line.startswith("| ")]
    column = [c.strip() for c in table[0].split("|")].index("Fidelity failures")
    row = next(r for r in table[1:] if r.startswith(f"| {provider}"))
    return [c.strip() for c in row.split("|")][column]


async def assert_nothing_left(emu: Emulator) -> None:
    assert await emu.live_sandboxes() == [], "the emulator still holds sandboxes"
    assert emu.local_sandboxes() == [], "backend sandboxes are left in the state directory"


def unjudged(caps: Capabilities) -> set[Fidelity]:
    """The checks a provider's runs cannot judge: those of the operations it lacks."""
    lacks = {Fidelity.PAUSE: Op.PAUSE, Fidelity.RESTORE: Op.CHECKPOINT}
    # Fork is judged by the fork workload, which these runs leave out (the e2b emulator's
    # children cannot inherit processes); tests/test_buyer_workloads.py judges it.
    lacking = {kind for kind, op in lacks.items() if op not in caps.operations}
    # A checkpoint's delete is judged only where checkpoints can be listed by run label.
    unlisted = set() if caps.lists_checkpoints else {Fidelity.DELETED}
    return lacking | unlisted | {Fidelity.FORK}


@pytest.mark.timeout(240)
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_faithful_emulator_passes_every_fidelity_check(emulators, tmp_path, provider):
    emu = await emulators(provider)
    folder, status = await run(tmp_path, provider, (*WORKLOADS, "idle_wake"))
    assert status is RunStatus.COMPLETED
    failed = [s for s in load_run(folder).samples if s.status in ("error", "timeout", "skipped")]
    assert failed == []
    markdown, data = report(tmp_path, folder)
    tallies = {t.kind: t for t in results(data)}
    assert set(tallies) == set(Fidelity) - unjudged(capabilities(provider))
    assert all(t.run > 0 and t.failed == 0 and t.not_judged == 0 for t in tallies.values())
    checked = sum(t.run for t in tallies.values())
    assert glance_cell(markdown, provider) == f"0 % (0 of {checked})"
    assert "**fidelity**" not in markdown and "slow wake" not in markdown
    await assert_nothing_left(emu)


def _cases() -> list[Any]:
    """Every (provider, fault) pair. By default: every pair on e2b, daytona and sprites (as
    before the other emulators came), and on the others the applicable faults of
    :data:`OWN_CODE`; the rest are skipped, with ``SANDBOX_BENCH_FIDELITY=full`` as the way to
    run them (the reasons of their :data:`NOT_APPLICABLE` pairs are checked without a run)."""
    light = pytest.mark.skipif(
        not FULL, reason="not in the default subset: SANDBOX_BENCH_FIDELITY=full runs it"
    )
    cases = []
    for mode in MISBEHAVIOURS:
        for provider in PROVIDERS:
            default = provider in FIRST or (
                mode in OWN_CODE and (provider, mode) not in NOT_APPLICABLE
            )
            cases.append(pytest.param(provider, mode, marks=() if default else (light,)))
    return cases


def test_every_emulated_provider_has_its_rows():
    """The per-provider tables here cover every emulated provider of the registry (and only
    those), and every fault has its expectation: a provider or fault added without them fails
    here, naming the table to fill, instead of going untested."""
    assert set(PROVIDERS) == set(PROTOCOLS), "each emulated provider has its emulator"
    missing = [p for p in PROVIDERS if p not in ADAPTER]
    assert not missing, (
        f"no row in ADAPTER (tests/test_fidelity.py) for {', '.join(missing)}: give each the "
        "adapter settings of these runs (short timeouts; {} if its defaults do), then its "
        "NOT_APPLICABLE reasons (see test_the_not_applicable_table_matches_what_the_adapters_"
        "declare)"
    )
    tables = {"ADAPTER": set(ADAPTER), "NOT_APPLICABLE": {p for p, _ in NOT_APPLICABLE},
              "REACH": {p for p, _ in REACH}, "HOLD": {p for p, _ in HOLD}}  # fmt: skip
    for table, rows in tables.items():
        assert rows <= set(PROVIDERS), f"{table} has rows of no emulated provider"
    assert set(EXPECT) == set(MISBEHAVIOURS), "EXPECT needs a row for each semantic fault"


def test_the_not_applicable_table_matches_what_the_adapters_declare():
    """Each reason a fault does not apply is what the adapter declares, and each fault that
    does apply meets the semantics it needs (a pause that freezes, or one that stops): a
    provider whose adapter lacks what a fault acts on, and has no reason for it, fails here
    naming NOT_APPLICABLE."""
    wanted = {"pause-runs": PauseKind.FREEZE, "stop-keeps": PauseKind.STOP_START}
    fill = "; if the fault cannot act on it, give its reason in NOT_APPLICABLE (this file)"
    for provider in PROVIDERS:
        for mode in MISBEHAVIOURS:
            caps, reason = capabilities(provider, mode), NOT_APPLICABLE.get((provider, mode))
            pauses = Op.PAUSE in caps.operations and Op.RESUME in caps.operations
            checkpoints = Op.CHECKPOINT in caps.operations and Op.RESTORE in caps.operations
            where = f"{provider} {mode}"
            if reason == NO_PAUSE:
                assert not pauses, where
            elif reason == STOPS:
                assert pauses and caps.pause_kind is PauseKind.STOP_START, where
            elif reason is not None and reason.startswith(NO_CHECKPOINT):
                assert not checkpoints, where
            elif reason == UNLISTED:
                assert checkpoints and not caps.lists_checkpoints, where
            elif reason is not None:  # codesandbox: its hibernate freezes, never stops
                assert pauses and caps.pause_kind is PauseKind.FREEZE, where
            elif mode in wanted:
                kind = wanted[mode]
                assert pauses and caps.pause_kind is kind, f"{where}: no {kind} pause{fill}"
            elif mode.startswith(("restore-", "snapshot-")):
                assert checkpoints, f"{where}: no checkpoint and restore{fill}"
            elif mode == "delete-leaks":
                assert checkpoints and caps.lists_checkpoints, f"{where}: no listing{fill}"


@pytest.mark.timeout(240)
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("provider", "mode"), _cases())
async def test_each_semantic_fault_is_recorded_as_what_it_is(emulators, tmp_path, provider, mode):
    if mode == "create-undersized" and CPUS < 2:
        pytest.skip("one CPU: a sandbox cannot be pinned to fewer")
    emu, expect = await emulators(provider), EXPECT[mode]
    workloads = (*WORKLOADS, "idle_wake") if mode == "wake-slow" else WORKLOADS
    # Two iterations for recycling: at least one create then follows a destroy.
    iterations = 2 if mode == "create-recycled" else 1
    await emu.misbehave(mode, wake_s=WAKE_S, wake_after_s=1.0)
    try:
        folder, status = await run(
            tmp_path, provider, workloads, iterations=iterations,
            settings=REACH.get((provider, mode)), hold_s=HOLD.get((provider, mode), HOLD_S),
        )  # fmt: skip
    finally:
        await emu.misbehave()  # faithful again (a recycled sandbox kept goes now)
    assert status is RunStatus.COMPLETED, "the run must complete (exit 0)"
    samples = load_run(folder).samples
    failures = [s for s in samples if s.status in ("error", "timeout")]
    markdown, data = report(tmp_path, folder)
    tallies = {t.kind: t for t in results(data)}
    await assert_nothing_left(emu)

    if (provider, mode) in NOT_APPLICABLE:  # nothing the fault could act on: a clean run
        assert failures == [] and all(t.failed == 0 for t in tallies.values())
        if NOT_APPLICABLE[provider, mode] == NO_PAUSE:
            paused = {s.status for s in samples if s.operation in ("pause", "resume")}
            assert paused == {"unsupported"}
        return
    # Only the fault's own failure is recorded, under its class (and what ALSO allows).
    wanted = (expect.workload, expect.operation, expect.error_type)
    also_failure, also_kind = ALSO.get(mode, (wanted, None))
    assert {(s.workload, s.operation, s.error_type) for s in failures} <= {wanted, also_failure}
    hits = [
        s
        for s in samples
        if (s.workload, s.operation, s.status, s.error_type)
        == (expect.workload, expect.operation, expect.status, expect.error_type)
    ]
    seen = [(s.status, s.error_type, s.extra) for s in samples if s.operation == expect.operation]
    assert hits, f"no {expect.status} {expect.error_type} {expect.operation} record: {seen}"
    if expect.error_type is not None:
        assert any(expect.text in (s.error_message or "") for s in hits), hits[0].error_message
    if mode == "create-undersized":
        assert any(expect.text in (s.extra.get("spec_mismatch") or []) for s in hits)
    if mode == "wake-slow":
        assert all(s.duration_s >= WAKE_S for s in hits)
        assert "**slow wake**" in markdown and "woke slowly" in markdown
    if mode == "snapshot-pending":  # the restore was never reached: not judged, not failed
        assert tallies[Fidelity.RESTORE].not_judged >= 1
        assert tallies[Fidelity.RESTORE].failed == 0
    if mode == "destroy-leaks":
        ledger, _ = load_ledger(folder)
        destroyed = {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"
                     and e.get("by") != "sweep"}  # fmt: skip
        swept = {e["sandbox_id"] for e in ledger if e.get("by") == "sweep"}
        # A pause that ended the sandbox (codesandbox: its resume is a new sandbox) left
        # nothing for its later destroy to keep.
        paused = {s.sandbox_id for s in samples if s.operation == "pause" and s.status == "ok"}
        ended = paused - {s.sandbox_id for s in samples if s.operation == "verify"}
        assert destroyed and swept == destroyed - ended, "the sweep found every sandbox kept"
        assert f"**leak**: {provider}: {len(swept)} sandbox(es) were still listed" in markdown
    if mode == "delete-leaks":
        ledger, _ = load_ledger(folder)
        deleted = {e["checkpoint_id"] for e in ledger if e["event"] == "checkpoint_deleted"
                   and e.get("by") != "sweep"}  # fmt: skip
        swept = {e["checkpoint_id"] for e in ledger if e["event"] == "checkpoint_deleted"
                 and e.get("by") == "sweep"}  # fmt: skip
        assert deleted and swept == deleted, "the sweep found every checkpoint kept"
        assert f"**leak**: {provider}: {len(swept)} checkpoint(s) were still listed" in markdown

    failing = {kind for kind, t in tallies.items() if t.failed}
    assert failing - {also_kind} == ({expect.kind} if expect.kind else set())
    if expect.kind is None:
        assert glance_cell(markdown, provider).startswith("0 % (0 of ")
        return
    tally = tallies[expect.kind]
    assert tally.failed >= 1 and expect.text in " ".join(tally.examples.values())
    assert not glance_cell(markdown, provider).startswith("0 %")
    fidelity_part = markdown.split("## Fidelity", 1)[1]
    start = f"| {provider} | {expect.kind}:"
    row = next(r for r in fidelity_part.splitlines() if r.startswith(start))
    assert f"| {tally.run} | {tally.passed} | {tally.failed} |" in row and expect.text in row
    warning = f"**fidelity**: {provider}: fidelity checks failed ("
    assert warning in markdown and f"{expect.kind} {tally.failed} of {tally.run}" in markdown


@pytest.mark.asyncio(loop_scope="module")
async def test_the_admin_api_switches_faults_and_refuses_an_unknown_one(emulators):
    emu = await emulators("e2b")
    config = await emu.misbehave("list-omits", "pause-runs", wake_s=0.5)
    assert config["misbehave"] == ["pause-runs", "list-omits"] and config["wake_s"] == 0.5
    with pytest.raises(aiohttp.ClientResponseError) as refused:
        await emu.configure(misbehave=["nosuch"])
    assert refused.value.status == 400
    assert (await emu.config())["misbehave"] == ["pause-runs", "list-omits"], "nothing changed"
    config = await emu.misbehave(wake_s=3.0)
    assert config["misbehave"] == [] and config["wake_s"] == 3.0


def test_a_failed_state_check_warns_only_where_the_operation_declares_no_fidelity_check(
    tmp_path,
):
    """``extra.verified`` false is a warning of its own only for operations that declare no
    check (those are counted in the Fidelity section instead), scaled families included:
    fork's verify_child_c4 is verify_child, which declares one; checkpoint_scaling's
    verify_64mb declares none."""
    folder = make_run(tmp_path, providers=("e2b",), workloads=("probe",), iterations=2, warmup=0)
    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    rows = [
        ("e2b", "fork", "verify_child_c4"),
        ("e2b", "checkpoint", "verify"),
        ("e2b", "checkpoint_scaling", "verify_64mb"),
        ("e2b", "checkpoint_scaling", "verify_64mb"),
    ]
    data.frame = pd.DataFrame(
        {
            "run_id": pd.Categorical([data.run_ids[0]] * len(rows)),
            "sample_id": range(len(rows)),
            "provider": pd.Categorical([p for p, _, _ in rows]),
            "workload": pd.Categorical([w for _, w, _ in rows]),
            "operation": pd.Categorical([o for _, _, o in rows]),
            "iteration": 0,
            "warmup": False,
            "status": pd.Categorical(["ok"] * len(rows)),
            "error_type": pd.Categorical([None] * len(rows)),
            "verified": pd.array([False] * len(rows), dtype="boolean"),
        }
    )
    texts = [w.text for w in checks.fidelity(data) if "state check" in w.text]
    assert texts == [
        "e2b/checkpoint_scaling: 2 state check(s) failed (restored or resumed state differed)"
    ]
