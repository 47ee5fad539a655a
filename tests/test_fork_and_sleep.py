"""The fork and sleep_persist workloads against providers that get it wrong.

Each fault is made by a real local provider whose answer one hook changes (tests/
wrapped_provider.py): a fork whose children are fresh empty sandboxes, one whose children are
the same sandbox twice, one that makes fewer children than asked; a pause that kills the
sandbox's processes although it is declared to freeze them, a resume that loses the state.
The workloads must record each as an error of the right kind, go on where they can, and leave
nothing alive.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.records import Sample, Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import WORKLOADS
from bench.workloads.sleep_persist import expectation
from providers import provider_class
from providers.base import PauseKind, Provider, Sandbox, SandboxSpec
from providers.errors import Unavailable
from tests.wrapped_provider import Wrapped

RUN = "fork-sleep-test"


async def run(provider: Provider, workload: str, params: dict[str, Any]) -> list[Sample]:
    sink = MemorySink()
    runner = Runner(
        providers={"local": provider},
        workloads={workload: WORKLOADS[workload](params)},
        spec=SandboxSpec(cpus=1, memory_mb=512),
        recorder=Recorder(sink, run_id=RUN, concurrency=1),
        timeout_s=60,
    )
    await runner.run(make_plan(["local"], [workload], iterations=1, warmup=0, seed=1))
    assert await provider.list_sandboxes(RUN) == []  # nothing left alive, whatever happened
    return sink.samples


def outcomes(samples: list[Sample]) -> Counter:
    return Counter((s.operation, s.status, s.error_type) for s in samples)


# -- fork -------------------------------------------------------------------------------------


async def test_a_fork_whose_children_start_empty_fails_their_state_check(open_provider):
    async def empty(inner: Provider, parent: Sandbox, count: int) -> list[Sandbox]:
        spec = SandboxSpec(labels={"sandbox-bench-run": RUN})
        return [await inner.create(spec) for _ in range(count)]

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, fork=empty), "fork", {"children": 2})
    seen = outcomes(samples)
    assert seen[("verify_child_c1", Status.ERROR, "FidelityError")] == 1
    assert seen[("verify_child_c2", Status.ERROR, "FidelityError")] == 2
    assert seen[("destroy_child_c2", Status.OK, None)] == 2 and seen[("destroy", Status.OK, None)]
    failed = next(s for s in samples if s.operation == "verify_child_c1")
    assert "differs from the parent's" in failed.error_message and not failed.extra["verified"]


async def test_children_that_share_one_sandbox_fail_the_independence_check(open_provider):
    async def shared(inner: Provider, parent: Sandbox, count: int) -> list[Sandbox]:
        [child] = await inner.fork(parent, count=1)
        return [child] * count  # "count" children that are one and the same

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, fork=shared), "fork", {"children": 3})
    seen = outcomes(samples)
    # The first child overwrote the state: its "siblings" see the change, the parent does not.
    assert seen[("check_isolation_c3", Status.ERROR, "FidelityError")] == 2
    assert seen[("check_isolation_c3", Status.OK, None)] == 1
    assert seen[("check_isolation_c1", Status.OK, None)] == 1  # one child: only the parent
    assert seen[("destroy", Status.OK, None)] == 1


async def test_a_fork_that_makes_fewer_children_is_an_error_and_they_are_destroyed(
    open_provider,
):
    async def short(inner: Provider, parent: Sandbox, count: int) -> list[Sandbox]:
        return await inner.fork(parent, count=max(1, count - 1))

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, fork=short), "fork", {"children": 3})
    seen = outcomes(samples)
    assert seen[("fork_c1", Status.OK, None)] == 1
    assert seen[("fork_c3", Status.ERROR, "WrongAnswer")] == 1
    # The two children it did make are still checked, then destroyed.
    assert seen[("verify_child_c3", Status.OK, None)] == 2
    assert seen[("destroy_child_c3", Status.OK, None)] == 2
    failed = next(s for s in samples if s.operation == "fork_c3")
    assert failed.error_message == "fork made 2 of 3 children" and failed.duration_s is None


async def test_a_fork_that_fails_ends_the_iteration_and_leaves_nothing(open_provider):
    async def broken(inner: Provider, parent: Sandbox, count: int) -> list[Sandbox]:
        raise Unavailable("fork backend unavailable")

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, fork=broken), "fork", {"children": 2})
    seen = outcomes(samples)
    assert seen[("fork_c1", Status.ERROR, "Unavailable")] == 1
    assert seen[("fork_c2", Status.SKIPPED, None)] == 1 and seen[("destroy", Status.SKIPPED, None)]


def test_providers_without_fork_record_only_unsupported_forks():
    for pid in ("sprites", "runloop", "codesandbox", "modal", "northflank"):
        provider = provider_class(pid)({})
        fork = WORKLOADS["fork"]({"children": 3})
        caps = provider.capabilities()
        assert fork.capability_ops == {"fork_c1": "fork", "fork_c3": "fork"}
        assert not caps.supports("fork") and caps.unsupported["fork"], pid


# -- sleep_persist ----------------------------------------------------------------------------


async def test_a_freeze_that_kills_processes_is_a_fidelity_error(open_provider):
    async def kill_all(inner: Provider, sandbox: Sandbox) -> None:
        await inner.resume(sandbox)  # kill needs a running sandbox; the idle then follows
        await inner.exec(sandbox, "pkill -f 'while true' || true", timeout_s=30)
        await inner.pause(sandbox)

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, after_pause=kill_all), "sleep_persist",
                            {"idle_s": 0.1})  # fmt: skip
    [verify] = [s for s in samples if s.operation == "verify"]
    assert (verify.status, verify.error_type) == (Status.ERROR, "FidelityError")
    assert verify.extra["file_kept"] is True and verify.extra["process_kept"] is False
    assert "should be survives, but it did not run" in verify.error_message
    assert [s.status for s in samples if s.operation == "destroy"] == [Status.SKIPPED]


async def test_a_resume_that_loses_the_state_is_a_fidelity_error(open_provider):
    async def lose(inner: Provider, sandbox: Sandbox) -> None:
        await inner.resume(sandbox)
        await inner.exec(sandbox, "rm -f /root/sandbox-bench-sleep.bin", timeout_s=30)
        await inner.pause(sandbox)

    async with open_provider("local") as (local, _):
        samples = await run(Wrapped(local, after_pause=lose), "sleep_persist", {"idle_s": 0.1})
    [verify] = [s for s in samples if s.operation == "verify"]
    assert (verify.status, verify.error_type) == (Status.ERROR, "FidelityError")
    assert verify.extra["file_kept"] is False and "gone or changed" in verify.error_message


async def test_idle_mode_never_pauses_and_pause_mode_needs_a_pause(open_provider):
    async with open_provider("local") as (local, _):
        idle = await run(local, "sleep_persist", {"idle_s": 0.1, "mode": "idle"})
    assert [s.operation for s in idle] == [
        "create", "write_state", "start_process", "wake", "verify", "destroy",
    ]  # fmt: skip
    assert all(s.status == Status.OK for s in idle)
    sprites = provider_class("sprites")({})
    workload = WORKLOADS["sleep_persist"]({"mode": "pause"})
    assert workload.planned_ops(sprites.capabilities()) == ["pause", "resume"]
    sink = MemorySink()
    runner = Runner(
        providers={"sprites": sprites},  # never opened: nothing is called on it
        workloads={"sleep_persist": workload},
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id=RUN, concurrency=1),
        timeout_s=60,
    )
    await runner.run(make_plan(["sprites"], ["sleep_persist"], iterations=1, warmup=0, seed=1))
    assert [(s.operation, s.status) for s in sink.samples] == [
        ("pause", Status.UNSUPPORTED),
        ("resume", Status.UNSUPPORTED),
    ]
    assert all("no pause API" in s.error_message for s in sink.samples)


def test_what_a_process_should_do_follows_the_declared_semantics():
    assert expectation(PauseKind.FREEZE, paused=True) == "survives"
    assert expectation(PauseKind.STOP_START, paused=True) == "gone"
    assert expectation(PauseKind.AUTO_SLEEP, paused=False) == "depends"
    assert expectation(PauseKind.NONE, paused=False) == "survives"
    assert expectation(PauseKind.FREEZE, paused=False) == "survives"  # idle, never paused
