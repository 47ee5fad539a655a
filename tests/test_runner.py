"""The runner: ordering, timing records, failures as data, and guaranteed clean-up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from bench.records import Status
from bench.runner import MemorySink, Recorder, Runner, SecretScrubber, WorkItem, make_plan
from bench.workloads import WORKLOADS
from bench.workloads.base import Workload, exit_zero
from providers.base import EXPIRES_LABEL, RUN_LABEL, Capabilities, SandboxSpec


def test_the_plan_is_seeded_interleaved_and_puts_warmups_first():
    kwargs = {"iterations": 5, "warmup": 1, "seed": 7}
    plan = make_plan(["a", "b"], ["x", "y"], **kwargs)
    assert plan == make_plan(["a", "b"], ["x", "y"], **kwargs)
    assert plan != make_plan(["a", "b"], ["x", "y"], iterations=5, warmup=1, seed=8)
    assert len(plan) == 2 * 2 * 6
    assert all(item.warmup for item in plan[:4]) and not any(i.warmup for i in plan[4:])
    pairs = [(i.provider, i.workload) for i in plan[4:]]
    assert pairs != sorted(pairs), "measured iterations should be interleaved, not grouped"


def test_secrets_are_scrubbed_from_messages(monkeypatch):
    monkeypatch.setenv("E2B_API_KEY", "e2b_supersecret_123")
    scrub = SecretScrubber(["E2B_API_KEY", "UNSET_VARIABLE"])
    assert scrub("401: bad key e2b_supersecret_123 sent") == "401: bad key *** sent"


class _FailingCommand(Workload):
    """A workload whose second step fails: exec of a command that exits 7."""

    name: ClassVar[str] = "failing"

    def planned_ops(self, caps: Capabilities) -> list[str]:
        return ["create", "bad_exec", "after", "destroy"]

    async def run(self, ctx) -> None:
        sandbox = await ctx.create()
        await ctx.timed(
            "bad_exec",
            lambda: ctx.provider.exec(sandbox, "exit 7", timeout_s=30),
            sandbox=sandbox,
            check=exit_zero,
        )
        await ctx.timed("after", lambda: ctx.provider.exec(sandbox, "true", timeout_s=30))
        await ctx.destroy(sandbox)


def _runner(provider, workloads, sink, *, timeout_s=60.0, run_id="runner-test"):
    return Runner(
        providers={"local": provider},
        workloads=workloads,
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id=run_id, concurrency=1),
        timeout_s=timeout_s,
    )


async def test_a_failed_operation_is_recorded_with_its_class_and_no_duration(open_provider):
    async with open_provider("local") as (provider, _):
        sink = MemorySink()
        runner = _runner(provider, {"failing": _FailingCommand()}, sink)
        await runner.run(
            [WorkItem(provider="local", workload="failing", iteration=0, warmup=False)]
        )
        by_op = {s.operation: s for s in sink.samples}
        assert by_op["create"].status is Status.OK and by_op["create"].duration_s > 0
        bad = by_op["bad_exec"]
        assert (bad.status, bad.error_type, bad.duration_s) == (Status.ERROR, "NonZeroExit", None)
        assert bad.extra["exit_code"] == 7
        assert by_op["after"].status is Status.SKIPPED and by_op["after"].duration_s is None
        assert by_op["destroy"].status is Status.SKIPPED
        # the sandbox the failed iteration created was still destroyed
        assert await provider.list_sandboxes("runner-test") == []
        assert [e["event"] for e in sink.ledger] == ["created", "destroyed"]


async def test_a_timed_out_operation_is_a_timeout_with_no_duration(open_provider):
    async with open_provider("local") as (provider, _):
        sink = MemorySink()
        runner = _runner(provider, {"lifecycle": WORKLOADS["lifecycle"]()}, sink, timeout_s=1e-6)
        await runner.run(make_plan(["local"], ["lifecycle"], iterations=2, warmup=0, seed=1))
        creates = [s for s in sink.samples if s.operation == "create"]
        assert [s.status for s in creates] == [Status.TIMEOUT, Status.TIMEOUT]
        assert all(s.error_type == "OperationTimeout" and s.duration_s is None for s in creates)
        others = [s for s in sink.samples if s.operation != "create"]
        assert others and all(s.status is Status.SKIPPED for s in others)
        # every scheduled operation has exactly one record
        assert len(sink.samples) == 2 * len(
            WORKLOADS["lifecycle"]().planned_ops(provider.capabilities())
        )
        assert await provider.list_sandboxes("runner-test") == []


async def test_every_sandbox_carries_the_run_label(open_provider):
    async with open_provider("local") as (provider, _):
        sink = MemorySink()
        runner = _runner(provider, {"lifecycle": WORKLOADS["lifecycle"]()}, sink, run_id="lbl")
        labels = runner._spec_for_run().labels
        assert labels[RUN_LABEL] == "lbl"
        assert labels[EXPIRES_LABEL] > f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        await runner.run(make_plan(["local"], ["lifecycle"], iterations=1, warmup=0, seed=1))
        assert all(s.status is Status.OK for s in sink.samples)
        assert {s.sandbox_id for s in sink.samples} != {None}
