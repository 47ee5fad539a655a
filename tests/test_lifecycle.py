"""The iteration lifecycle: nothing escapes, nothing leaks, nothing lingers.

In-process tests (no root, no network) over the stub provider and :class:`tests.doubles.Chaos`:
the iteration boundary (any exception becomes records; a bug of ours is a HarnessError and the
report lists it first), checkpoints as resources, the one cleanup policy and the grace, the
``gone`` span of providers that delete asynchronously, the one-writer lock, and the space a
resume needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench.cleanup import (
    Alive,
    Grace,
    GraceExpired,
    RetryPolicy,
    alive_from,
    retry,
    sweep,
)
from bench.iteration import HARNESS_ERROR, CheckFailed, blame
from bench.reap import reap_run
from bench.records import Status
from bench.runner import (
    MemorySink,
    Recorder,
    Runner,
    WorkItem,
    expected_records,
    make_plan,
    planned_operations,
    remaining_plan,
)
from bench.store import RunLock, RunLocked, RunWriter, load_ledger
from bench.workloads import WORKLOADS
from bench.workloads.base import Workload
from bench.workloads.shape import Operation
from providers.base import Deletion, Sandbox, SandboxSpec
from providers.errors import AuthError, NotFound, QuotaOrRateLimited, Unavailable, Unsupported
from providers.local import cgroups
from providers.stub import StubProvider
from tests.doubles import Chaos

FAST = RetryPolicy(attempts=3, backoff_s=(0.0,), max_wait_s=0.05, attempt_timeout_s=0.5)


def _runner(provider, workloads, sink=None, *, timeout_s=5.0, concurrency=1, run_id="lc"):
    sink = sink or MemorySink()
    return Runner(
        providers={"stub": provider},
        workloads=workloads,
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id=run_id, concurrency=concurrency),
        timeout_s=timeout_s,
        concurrency=concurrency,
        policy=FAST,
    )


def _item(workload: str, iteration: int = 0) -> WorkItem:
    return WorkItem(provider="stub", workload=workload, iteration=iteration, warmup=False)


# -- no exception ends a run ------------------------------------------------------------------


class _BadCheck(Workload):
    """Its check raises TypeError the way pause_resume's did (issue 12): ``verified`` given
    twice to CheckFailed."""

    name: ClassVar[str] = "bad_check"
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="create"),
        Operation("verify", help="a check that is buggy"),
        Operation("after", help="never reached"),
        Operation("destroy", help="destroy"),
    )

    async def run(self, ctx) -> None:
        sandbox = await ctx.create()
        observed: dict[str, Any] = {"verified": True, "advance": 7}

        def check(result) -> None:
            raise CheckFailed("FidelityError", "frozen?", verified=False, **observed)

        await ctx.timed(
            "verify",
            lambda: ctx.provider.exec(sandbox, "true", timeout_s=5),
            sandbox=sandbox,
            check=check,
        )
        await ctx.timed("after", lambda: ctx.provider.exec(sandbox, "true", timeout_s=5))
        await ctx.destroy(sandbox)


class _RaisesOutside(Workload):
    """A bug outside any timed call: a KeyError between two operations."""

    name: ClassVar[str] = "raises_outside"
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="create"),
        Operation("exec", help="never reached"),
        Operation("destroy", help="destroy"),
    )

    async def run(self, ctx) -> None:
        sandbox = await ctx.create()
        {}["missing"]
        await ctx.timed("exec", lambda: ctx.provider.exec(sandbox, "true", timeout_s=5))
        await ctx.destroy(sandbox)


async def test_a_check_that_raises_a_type_error_is_a_harness_error_and_the_run_goes_on():
    stub = StubProvider()
    workloads = {"bad_check": _BadCheck(), "lifecycle": WORKLOADS["lifecycle"]()}
    sink = MemorySink()
    runner = _runner(stub, workloads, sink)
    plan = make_plan(["stub"], list(workloads), iterations=3, warmup=0, seed=2)
    await runner.run(plan)
    bad = [s for s in sink.samples if s.workload == "bad_check"]
    verify = [s for s in bad if s.operation == "verify"]
    assert [s.error_type for s in verify] == [HARNESS_ERROR] * 3
    assert all(s.status is Status.ERROR and s.duration_s is None for s in verify)
    message = verify[0].error_message or ""
    assert message.startswith("TypeError: ") and "multiple values for keyword argument" in message
    assert "tests/test_lifecycle.py" in message  # where the bug is
    assert {s.status for s in bad if s.operation in ("after", "destroy")} == {Status.SKIPPED}
    # the run went on: every lifecycle iteration completed, every sandbox was destroyed
    life = [s for s in sink.samples if s.workload == "lifecycle"]
    assert len(life) == 3 * 4 and all(s.status is Status.OK for s in life)
    assert await stub.list_sandboxes("lc") == []
    assert alive_from(sink.ledger).sandboxes == {}


async def test_an_exception_outside_a_timed_call_errors_the_next_operation_and_skips_the_rest():
    stub = StubProvider()
    sink = MemorySink()
    await _runner(stub, {"raises_outside": _RaisesOutside()}, sink).run([_item("raises_outside")])
    by_op = {s.operation: s for s in sink.samples}
    assert by_op["create"].status is Status.OK
    assert (by_op["exec"].status, by_op["exec"].error_type) == (Status.ERROR, HARNESS_ERROR)
    assert by_op["exec"].error_message.startswith("KeyError: 'missing'")
    assert by_op["destroy"].status is Status.SKIPPED
    assert await stub.list_sandboxes("lc") == []


async def test_what_an_adapter_raises_untranslated_is_its_own_class_not_a_harness_error():
    def script(operation: str, n: int) -> str:
        return "KeyError" if operation == "exec" else "ok"

    chaos = Chaos(script)
    sink = MemorySink()
    await _runner(chaos, {"lifecycle": WORKLOADS["lifecycle"]()}, sink).run([_item("lifecycle")])
    first = next(s for s in sink.samples if s.operation == "first_exec")
    assert (first.status, first.error_type) == (Status.ERROR, "KeyError")
    assert chaos.alive() == set()


async def test_the_end_of_run_sweep_tries_twice_as_often_as_an_iterations_cleanup():
    """An iteration's cleanup gives up after FAST's three attempts; the sweep that follows
    has six (bench.cleanup.patient), so a provider that fails the next four destroys as
    well is still cleaned by the run, not left for reap."""

    def script(operation: str, n: int) -> str:
        # call 0: the timed destroy; 1-3: the iteration's cleanup; 4-7: the sweep's first four
        return "Unavailable" if operation == "destroy" and n < 8 else "ok"

    chaos = Chaos(script)
    sink = MemorySink()
    runner = _runner(chaos, {"lifecycle": WORKLOADS["lifecycle"]()}, sink)
    await runner.run([_item("lifecycle")])
    assert chaos.alive() == set()
    kinds = [(e["event"], e.get("by")) for e in sink.ledger if e["event"].startswith("destroy")]
    assert kinds == [("destroy_failed", "cleanup"), ("destroyed", "sweep")], kinds
    assert not alive_from(sink.ledger)


async def test_a_wrong_answer_from_an_adapter_is_a_protocol_error():
    def script(operation: str, n: int) -> str:
        return "wrong_type" if operation == "create" else "ok"

    chaos = Chaos(script)
    sink = MemorySink()
    await _runner(chaos, {"lifecycle": WORKLOADS["lifecycle"]()}, sink).run([_item("lifecycle")])
    create = next(s for s in sink.samples if s.operation == "create")
    assert create.error_type == "ProtocolError"
    assert "returned NoneType, not Sandbox" in (create.error_message or "")


def test_blame_tells_the_harness_from_an_adapter():
    def ours() -> None:
        raise TypeError("bug")

    with pytest.raises(TypeError) as caught:
        ours()
    assert blame(caught.value)[0] == "harness"
    import json as stdlib_json

    with pytest.raises(ValueError) as parsed:
        stdlib_json.loads("{")  # raised in the standard library, called by this file: ours
    assert blame(parsed.value)[0] == "harness"

    async def adapter_bug() -> None:
        await Chaos(lambda op, n: "TypeError").exec(Sandbox(id="x", provider="stub"), "true",
                                                     timeout_s=1)  # fmt: skip

    with pytest.raises(TypeError) as raised:
        asyncio.run(adapter_bug())
    from bench.iteration import adapter_files

    assert blame(raised.value, adapter_files(Chaos()))[0] == "provider"


# -- the report lists harness bugs first and warns of leftovers ---------------------------------


def test_the_report_puts_harness_errors_first_and_warns_of_what_was_left(tmp_path):
    from bench.config import build_config
    from bench.report.checks import collect
    from bench.report.data import ReportData
    from bench.report.runs import load_runs
    from bench.report.settings import ReportSettings
    from bench.session import LocalExecutor, run_session

    class Leaky(StubProvider):
        async def destroy(self, sandbox):
            raise Unavailable("503", provider="stub", operation="destroy")

        async def list_sandboxes(self, run_id):
            raise Unavailable("503", provider="stub", operation="list")

    WORKLOADS["bad_check"] = _BadCheck
    try:
        config = build_config(
            {"run": {"providers": ["stub"], "workloads": ["lifecycle", "bad_check"],
                     "iterations": 2, "warmup": 0, "output": str(tmp_path), "seed": 1}}
        )  # fmt: skip
        import bench.cleanup

        policy_for = bench.cleanup.policy_for
        bench.cleanup.policy_for = lambda timeout_s: FAST
        try:
            folder, _ = asyncio.run(run_session(config, LocalExecutor(config, {"stub": Leaky()})))
        finally:
            bench.cleanup.policy_for = policy_for
        data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
        found = collect(data)
    finally:
        del WORKLOADS["bad_check"]
    assert found[0].severity == "bug" and found[0].kind == "harness bug"
    assert "bad_check/verify" in found[0].text and "TypeError" in found[0].text
    leftovers = [w for w in found if w.kind == "leftovers"]
    assert (
        leftovers
        and "4 sandbox(es)" in leftovers[0].text
        and "sandbox-bench reap" in (leftovers[0].text)
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["left_alive"]) == 4


# -- checkpoints are resources ----------------------------------------------------------------


async def test_checkpoints_are_in_the_ledger_and_a_failed_iteration_deletes_them():
    def script(operation: str, n: int) -> str:
        return "Unavailable" if operation == "restore" else "ok"

    chaos = Chaos(script, lists_checkpoints=False)
    sink = MemorySink()
    workloads = {"checkpoint": WORKLOADS["checkpoint"]({"state_mb": 1})}
    await _runner(chaos, workloads, sink).run([_item("checkpoint")])
    events = [(e["event"], e.get("by")) for e in sink.ledger]
    assert ("checkpoint_created", None) in events
    assert ("checkpoint_deleted", "cleanup") in events
    assert chaos.checkpoints == {} and chaos.made_checkpoints
    created = next(e for e in sink.ledger if e["event"] == "checkpoint_created")
    assert created["checkpoint_id"] == chaos.made_checkpoints[0]
    assert created["sandbox_id"] and created["workload"] == "checkpoint"


async def test_a_completed_checkpoint_iteration_records_the_deletion_once():
    chaos = Chaos()
    sink = MemorySink()
    workloads = {"checkpoint": WORKLOADS["checkpoint"]({"state_mb": 1})}
    await _runner(chaos, workloads, sink).run([_item("checkpoint")])
    assert {s.status for s in sink.samples} == {Status.OK}
    deleted = [e for e in sink.ledger if e["event"] == "checkpoint_deleted"]
    assert [e["event"] for e in sink.ledger].count("checkpoint_created") == len(deleted) == 1
    assert deleted[0].get("by") is None  # by the workload's own timed delete
    assert chaos.checkpoints == {} and chaos.alive() == set()


async def test_a_checkpoint_still_listed_after_its_delete_answered_ok_is_named_not_lost():
    """A provider whose checkpoint delete answers ok and does nothing: the sweep finds the
    checkpoint by its label, deletes it again (the same lie), lists again and says so; the
    checkpoint stays alive in the ledger for reap, and the run goes on."""

    def script(operation: str, n: int) -> str:
        return "lie" if operation == "delete_checkpoint" else "ok"

    chaos = Chaos(script, lists_checkpoints=True)
    sink = MemorySink()
    workloads = {"checkpoint": WORKLOADS["checkpoint"]({"state_mb": 1})}
    runner = _runner(chaos, workloads, sink)
    await runner.run([_item("checkpoint"), _item("checkpoint", 1)])
    assert all(s.status is Status.OK for s in sink.samples)  # the lie is not a failed call
    assert len(chaos.checkpoints) == 2 and chaos.alive() == set()
    failed = [e for e in sink.ledger if e["event"] == "checkpoint_delete_failed"]
    assert sorted(e["checkpoint_id"] for e in failed) == sorted(chaos.checkpoints)
    assert all(e["by"] == "sweep" and "the provider did not delete it" in e["error"]
               for e in failed)  # fmt: skip
    assert set(alive_from(sink.ledger).checkpoints) == {("stub", i) for i in chaos.checkpoints}
    # An honest provider's deletes are confirmed without a word.
    honest, quiet = Chaos(lists_checkpoints=True), MemorySink()
    await _runner(honest, workloads, quiet).run([_item("checkpoint")])
    assert honest.checkpoints == {} and not alive_from(quiet.ledger)
    assert not [e for e in quiet.ledger if e["event"] in ("checkpoint_delete_failed",
                                                           "sweep_failed")]  # fmt: skip


async def test_reap_deletes_checkpoints_the_ledger_shows_alive_and_listed_ones(tmp_path):
    chaos = Chaos(lists_checkpoints=True)
    folder = tmp_path / "run-1"
    writer = RunWriter(folder, {"run_id": "run-1", "status": "running",
                                "plan": {"providers": ["stub"], "workloads": []}})  # fmt: skip
    spec = SandboxSpec(labels={"sandbox-bench-run": "run-1"})
    box = await chaos.create(spec)
    ref = await chaos.checkpoint(box)
    orphan_box = await chaos.create(spec)
    orphan = await chaos.checkpoint(orphan_box)  # in no ledger: only the listing finds it
    writer.add_ledger({"event": "created", "provider": "stub", "sandbox_id": box.id})
    writer.add_ledger({"event": "checkpoint_created", "provider": "stub",
                       "checkpoint_id": ref.id, "sandbox_id": box.id})  # fmt: skip
    writer.close()
    [result] = await reap_run(folder, {"stub": chaos}, policy=FAST)
    assert sorted(result.checkpoints_deleted) == sorted([ref.id, orphan.id])
    assert sorted(result.destroyed) == sorted([box.id, orphan_box.id])
    assert chaos.checkpoints == {} and chaos.boxes == {}
    ledger, _ = load_ledger(folder)
    assert not alive_from(ledger)


# -- one cleanup policy and the grace ---------------------------------------------------------


async def test_cleanup_retries_passing_failures_honours_retry_after_and_never_auth():
    calls: list[float] = []
    policy = RetryPolicy(attempts=4, backoff_s=(0.0,), max_wait_s=0.2, attempt_timeout_s=1.0)

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Unavailable("503")
        if len(calls) == 2:
            raise QuotaOrRateLimited("429", retry_after_s=0.15)
        return "done"

    assert await retry(flaky, policy=policy) == "done" and len(calls) == 3
    assert calls[2] - calls[1] >= 0.14  # Retry-After honoured (up to max_wait_s)
    for error in (AuthError("401"), Unsupported("no"), NotFound("404")):
        count: list[int] = []

        async def refused(error: Exception = error, count: list[int] = count) -> None:
            count.append(1)
            raise error

        with pytest.raises(type(error)):
            await retry(refused, policy=policy)
        assert len(count) == 1

    attempts = []

    async def always() -> None:
        attempts.append(1)
        raise Unavailable("503")

    with pytest.raises(Unavailable):
        await retry(always, policy=policy)
    assert len(attempts) == 4  # bounded


async def test_the_grace_bounds_a_hanging_cleanup_and_a_second_interrupt_ends_it_at_once():
    policy = RetryPolicy(attempts=3, backoff_s=(0.0,), attempt_timeout_s=60.0)

    async def hang() -> None:
        await asyncio.sleep(3600)

    grace = Grace(0.3)
    t0 = time.monotonic()
    task = asyncio.ensure_future(retry(hang, policy=policy, grace=grace))
    await asyncio.sleep(0.05)
    grace.start()  # an interrupt arrives while the call hangs
    with pytest.raises(GraceExpired):
        await task
    assert 0.3 <= time.monotonic() - t0 < 1.0

    grace = Grace(30.0)
    grace.start()
    task = asyncio.ensure_future(retry(hang, policy=policy, grace=grace))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    grace.skip()  # the second interrupt
    with pytest.raises(GraceExpired):
        await task
    assert time.monotonic() - t0 < 0.2


async def test_a_sweep_reports_a_sandbox_still_listed_after_its_destroy_answered_ok():
    def script(operation: str, n: int) -> str:
        return "wrong_type" if operation == "destroy" else "ok"  # answers ok, does nothing

    chaos = Chaos(script)
    box = await chaos.create(SandboxSpec(labels={"sandbox-bench-run": "r"}))
    ledger: list[dict] = []
    [result] = await sweep({"stub": chaos}, "r", ledger.append, policy=FAST)
    assert box.id in result.failed and "still listed" in result.failed[box.id]
    assert alive_from(ledger).sandboxes.keys() == {("stub", box.id)}


# -- quiet between iterations: the gone span ---------------------------------------------------


async def test_an_asynchronous_deletion_is_measured_until_the_sandbox_is_gone():
    chaos = Chaos(deletion=Deletion.ASYNC, gone_after_polls=2)
    workload = WORKLOADS["lifecycle"]()
    caps = chaos.capabilities()
    assert planned_operations(workload, caps) == [
        "create", "first_exec", "ready", "destroy", "gone"
    ]  # fmt: skip
    assert expected_records(workload, caps) == 5
    sink = MemorySink()
    await _runner(chaos, {"lifecycle": workload}, sink).run([_item("lifecycle")])
    gone = next(s for s in sink.samples if s.operation == "gone")
    assert gone.status is Status.OK and gone.duration_s > 0
    assert gone.extra["attempts"] == 4  # still listed by three listings, gone at the fourth
    assert chaos.alive() == set()
    # a resume counts gone among the iteration's records
    assert remaining_plan(
        [_item("lifecycle")], sink.samples, workloads={"lifecycle": workload},
        capabilities={"stub": caps},
    ) == []  # fmt: skip


async def test_a_synchronous_provider_has_no_gone_span():
    stub = StubProvider()
    assert "gone" not in planned_operations(WORKLOADS["lifecycle"](), stub.capabilities())


# -- one writer per run ---------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = RunLock.acquire(folder)
    holder = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from bench.store import RunLock, RunLocked\n"
         "try:\n    RunLock.acquire(Path(sys.argv[1]))\nexcept RunLocked as e:\n"
         "    print(e); sys.exit(3)", str(folder)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    assert holder.returncode == 3, holder.stderr
    assert f"pid {os.getpid()}" in holder.stdout and "second writer is refused" in holder.stdout
    lock.release()
    assert not (folder / ".lock").exists()
    # A writer killed with its lock file left behind: the lock is stale (no flock, pid gone).
    dead = subprocess.run(
        [sys.executable, "-c", "import os, sys; from pathlib import Path; "
         "from bench.store import RunLock\n"
         "RunLock.acquire(Path(sys.argv[1])); os._exit(9)", str(folder)],
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    assert dead.returncode == 9 and (folder / ".lock").exists()
    taken = RunLock.acquire(folder)
    assert taken.stale is not None and taken.stale["pid"] != os.getpid()
    taken.release()


def test_a_lock_left_by_another_host_is_not_taken_silently(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "x"}))
    with pytest.raises(RunLocked, match="cannot be checked from here"):
        RunLock.acquire(folder)


# -- what a resume needs ----------------------------------------------------------------------


def test_a_resume_that_would_not_fit_says_what_to_free(tmp_path, monkeypatch):
    import bench.session as session_module
    from bench.session import NoSpace, check_space_to_resume
    from bench.store import load_run

    folder = tmp_path / "run"
    writer = RunWriter(folder, {"run_id": "run", "status": "running"})
    stub_sample = {
        "run_id": "run", "provider": "stub", "workload": "lifecycle", "operation": "create",
        "iteration": 0, "warmup": False, "concurrency": 1, "started_at": "t",
        "duration_s": 0.1, "status": "ok",
    }  # fmt: skip
    from bench.records import Sample

    for i in range(20):
        writer.add_sample(Sample.from_json_dict({**stub_sample, "sample_id": i, "iteration": i}))
    writer.close()
    earlier = load_run(folder)
    monkeypatch.setattr(session_module, "free_bytes", lambda folder: 10_000)
    with pytest.raises(NoSpace, match=r"free at least \d+\.\d MiB there, then resume again"):
        check_space_to_resume(folder, earlier, planned=1000)
    monkeypatch.setattr(session_module, "free_bytes", lambda folder: 10**12)
    check_space_to_resume(folder, earlier, planned=1000)


def test_alive_replays_a_ledger_of_sandboxes_and_checkpoints():
    alive = alive_from(
        [
            {"event": "created", "provider": "p", "sandbox_id": "a"},
            {"event": "created", "provider": "p", "sandbox_id": "b"},
            {"event": "destroyed", "provider": "p", "sandbox_id": "a"},
            {
                "event": "checkpoint_created",
                "provider": "p",
                "checkpoint_id": "c",
                "sandbox_id": "b",
            },
            {"event": "destroy_failed", "provider": "q", "sandbox_id": "z", "by": "sweep"},
            {"event": "something new", "provider": "p"},
            "not an entry",
        ]
    )
    assert isinstance(alive, Alive)
    assert set(alive.sandboxes) == {("p", "b"), ("q", "z")}
    assert set(alive.checkpoints) == {("p", "c")}
    assert alive.summary() == "2 sandbox(es) and 1 checkpoint(s)"


async def test_a_local_destroy_returns_only_when_the_sandbox_is_gone(open_provider):
    """Quiet between iterations on local: when ctx.destroy returns, the sandbox's directory,
    overlay mount, cgroups and processes are gone and the listing no longer shows it."""
    async with open_provider("local") as (provider, _):
        sink = MemorySink()
        runner = Runner(
            providers={"local": provider},
            workloads={"lifecycle": WORKLOADS["lifecycle"]()},
            spec=SandboxSpec(),
            recorder=Recorder(sink, run_id="quiet", concurrency=1),
            timeout_s=30,
        )
        ctx_box: dict[str, Any] = {}

        class Watch(Workload):
            name: ClassVar[str] = "watch"
            operations: ClassVar[tuple[Operation, ...]] = (
                Operation("create", help="create"),
                Operation("destroy", help="destroy"),
            )

            async def run(self, ctx) -> None:
                sandbox = await ctx.create()
                folder = provider.sandboxes_dir / sandbox.id
                assert folder.is_dir()
                # its cgroups' paths as the provider planned them (not a walk of the whole
                # hierarchy: other tests' cgroups come and go during a walk)
                groups = cgroups.plan(provider.host.cgroups, sandbox.id).all_dirs
                assert groups and all(os.path.isdir(d) for d in groups)
                await ctx.destroy(sandbox)
                ctx_box["gone"] = (
                    not folder.exists(),
                    str(folder) not in Path("/proc/self/mountinfo").read_text(),
                    not any(os.path.exists(d) for d in groups),
                    sandbox.id not in await provider.list_sandboxes("quiet"),
                )

        runner.workloads = {"watch": Watch()}
        await runner.run([WorkItem(provider="local", workload="watch", iteration=0, warmup=False)])
        assert [s.status for s in sink.samples] == [Status.OK, Status.OK]
        assert ctx_box["gone"] == (True, True, True, True)
