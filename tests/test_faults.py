"""Faults are data: injected failures become records of the right class, and nothing leaks.

Each cloud adapter runs its real SDK against its loopback emulator (bench/emulators/), which
injects faults before the call reaches the emulated provider (the operation is never
performed): 500 and 503, 429 with Retry-After, a reset connection, a hang longer than the
client's timeout, and a 200 whose body the SDK cannot read.

* ``test_each_fault_kind_is_recorded_as_its_class``: one fault at a time on one operation,
  timed by :meth:`bench.runner.IterationContext.timed` exactly as the runner times it; the
  sample must carry the class the fault means (:data:`EXPECTED`).
* ``test_each_fault_kind_on_checkpoints_and_pauses_is_recorded_as_its_class``: the same for
  checkpoint, delete_checkpoint, restore, pause and resume, whose first call is faulted
  whatever its path; a sample recorded ok must come from the SDK retrying the faulted call
  (the emulator's call log shows it again), never from an answer taken for success.
* ``test_a_fault_mid_operation_is_an_error_or_a_retry``: the same operations with a 500, a 429
  or a reset on each of their next calls (polls, follow-ups) in turn: an error in the middle of
  an operation is never taken for its end.
* ``test_a_run_with_faults_on_a_fifth_of_calls_completes_and_leaks_nothing``: a whole run
  through :class:`bench.runner.Runner` with faults on 20 % of all calls (the emulator's seeded
  share, every kind): it completes; every scheduled operation has exactly one record; every
  failure carries one of the fault classes; no sandbox is left on the emulator or in its local
  state directory after the runner's clean-up and end-of-run sweep.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

import bench.runner as runner_module
from bench.emulators import FAULT_KINDS
from bench.emulators.control import emulator_args
from bench.records import Status
from bench.runner import IterationContext, MemorySink, Recorder, Runner, WorkItem, make_plan
from bench.workloads import WORKLOADS
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from tests.conftest import EMULATED, PROVIDER_IDS, Scratch

#: The class each fault kind must be recorded as.
EXPECTED = {
    "500": "Unavailable",
    "503": "Unavailable",
    "429": "QuotaOrRateLimited",
    "reset": "Unavailable",
    "hang": "OperationTimeout",
    "malformed": "ProtocolError",
}
FAULT_CLASSES = frozenset(EXPECTED.values())

#: Path fragments that select one operation's call on each emulator (the destroy fragment
#: gets the sandbox id appended).
MATCH = {
    "e2b": {
        "create": "/v2/sandboxes",
        "exec": "/process.Process/Start",
        "write": "/files",
        "read": "/files",
        "destroy": "/sandboxes/",
        "list": "/v2/sandboxes",
    },
    "daytona": {
        "create": "/api/sandbox",
        "exec": "/process/execute",
        "write": "/files/bulk-upload",
        "read": "/files/bulk-download",
        "destroy": "/api/sandbox/",
        "list": "/api/sandbox",
    },
    "sprites": {
        "create": "/v1/sprites",
        "exec": "/exec",
        "write": "/fs/write",
        "read": "/fs/read",
        "destroy": "/v1/sprites/",
        "list": "/v1/sprites",
    },
    "runloop": {
        "create": "/v1/devboxes/create_and_await_running",
        "exec": "/execute_async",
        "write": "/upload_file",
        "read": "/download_file",
        "destroy": "/v1/devboxes/",
        "list": "/v1/devboxes",
    },
    "codesandbox": {
        "create": "/v1/sandboxes",
        "exec": "/api/v1/execs",
        "write": "/api/v1/files",
        "read": "/api/v1/files",
        "destroy": "/v1/sandboxes/",
        "list": "/v1/sandboxes",
    },
    "vercel": {
        "create": "/v3/sandboxes",
        "exec": "/cmd",
        "write": "/fs/write",
        "read": "/fs/read",
        "destroy": "/v2/sandboxes/",
        "list": "/v2/sandboxes",
    },
    # gRPC paths; the emulator matches faults against "<method path>/<sandbox id>".
    "modal": {
        "create": "/modal.client.ModalClient/SandboxCreateV2",
        "exec": "TaskCommandRouter/TaskExecStart/",
        "write": "TaskCommandRouter/TaskExecStart/",
        "read": "TaskCommandRouter/TaskExecStart/",
        "destroy": "/modal.client.ModalClient/SandboxTerminateV2/",
        "list": "/modal.client.ModalClient/SandboxListV2",
    },
    "northflank": {
        "create": "/services/deployment",
        "exec": "/v1/command-exec/",
        "write": "/v1/command-exec/",
        "read": "/v1/command-exec/",
        "destroy": "/services/",
        "list": "/services",
    },
}
#: Calls the SDK itself retries after a reset (daytona's shared aiohttp session retries
#: connection errors on GET and DELETE, and cannot be told not to): a single reset there is
#: absorbed and the operation succeeds. See providers/daytona.py SDK_RETRIES.
ABSORBED = {("daytona", "reset", "destroy"), ("daytona", "reset", "list"),
            ("daytona", "reset", "delete_checkpoint")}  # fmt: skip
#: The operations beyond :data:`MATCH`'s, faulted at their first call (whatever its path).
STATEFUL_OPS = ("checkpoint", "delete_checkpoint", "restore", "pause", "resume")
#: Modal's SDK retries 500 (INTERNAL), 503 (UNAVAILABLE) and reset streams on every call (3
#: times on the control plane, 10 on the router) and cannot be told not to: a single one is
#: absorbed. test_modal_adapter.py checks that each retry shows in the emulator's call log.
ABSORBED |= {("modal", kind, op) for kind in ("500", "503", "reset")
             for op in (*MATCH["modal"], *STATEFUL_OPS)}  # fmt: skip
#: Short client timeouts, so a hang costs little; the emulator's hang outlasts them.
SETTINGS = {
    "e2b": {"request_timeout_s": 2.0},
    "daytona": {"sdk_timeout_s": 2.0},
    "sprites": {"sdk_timeout_s": 2.0},
    "runloop": {"request_timeout_s": 2.0, "wait_timeout_s": 2.0},
    "codesandbox": {"call_timeout_s": 2.0},
    "vercel": {"request_timeout_s": 2.0, "file_timeout_s": 2.0},
    "modal": {"call_timeout_s": 2.0},
    "northflank": {"request_timeout_s": 2.0, "file_timeout_s": 2.0, "poll_interval_s": 0.05},
}
HANG_S = 5.0
#: Every emulated provider, from the registry (tests/conftest.py): each needs its MATCH and
#: SETTINGS rows above (:func:`rows`).
CLOUDS = tuple(p for p in PROVIDER_IDS if p in EMULATED)


def rows(provider_id: str) -> tuple[dict[str, str], dict[str, float]]:
    """``provider_id``'s rows of :data:`MATCH` and :data:`SETTINGS`; a provider without them
    fails, naming the table to fill (never skipped)."""
    for table, found in (("MATCH", MATCH), ("SETTINGS", SETTINGS)):
        if provider_id not in found:
            pytest.fail(f"{provider_id}: no row in {table} (tests/test_faults.py)", pytrace=False)
    return MATCH[provider_id], SETTINGS[provider_id]


def test_every_emulated_provider_has_its_rows():
    """A provider registered (providers.REGISTRY) without its rows here fails, naming the
    table: what selects each operation's call on its emulator (MATCH, every operation the
    fault tests drive) and its short client timeouts (SETTINGS)."""
    ops = {"create", "exec", "write", "read", "destroy", "list"}
    for table, found in (("MATCH", MATCH), ("SETTINGS", SETTINGS)):
        missing = [p for p in CLOUDS if p not in found]
        assert not missing, f"no row in {table} (tests/test_faults.py) for {', '.join(missing)}"
        assert set(found) <= set(CLOUDS), f"{table} has rows of no emulated provider"
    wrong = {p: sorted(ops ^ set(MATCH[p])) for p in CLOUDS if set(MATCH[p]) != ops}
    assert not wrong, f"MATCH rows must name exactly {sorted(ops)}: {wrong}"


def _context(provider, sink: MemorySink, timeout_s: float) -> IterationContext:
    return IterationContext(
        item=WorkItem(provider=provider.id, workload="faults", iteration=0, warmup=False),
        provider=provider,
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="faults", concurrency=1),
        timeout_s=timeout_s,
        planned=(),
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("provider_id", CLOUDS)
async def test_each_fault_kind_is_recorded_as_its_class(open_provider, provider_id):
    run_id = f"kinds-{uuid.uuid4().hex[:8]}"
    spec = SandboxSpec(labels={RUN_LABEL: run_id})
    options = emulator_args(hang_s=HANG_S)
    match, settings = rows(provider_id)
    async with open_provider(provider_id, settings, emulator_args=options) as (
        provider,
        emu,
    ):
        sink = MemorySink()
        outcomes: dict[tuple[str, str], tuple[str, str | None]] = {}
        for kind in FAULT_KINDS:
            # A hang costs the whole timeout: try it on fewer operations.
            ops = ("create", "exec", "destroy") if kind == "hang" else tuple(match)
            for op in ops:
                sandbox = None if op == "create" else await provider.create(spec)
                if op == "read":
                    await provider.write_file(sandbox, "/tmp/f", b"data")
                where = match[op] + (sandbox.id if op == "destroy" else "")
                await emu.inject(kind=kind, match=where)
                calls = {
                    "create": lambda: provider.create(spec),
                    "exec": lambda sb=sandbox: provider.exec(sb, ["true"], timeout_s=1.0),
                    "write": lambda sb=sandbox: provider.write_file(sb, "/tmp/g", b"x"),
                    "read": lambda sb=sandbox: provider.read_file(sb, "/tmp/f"),
                    "destroy": lambda sb=sandbox: provider.destroy(sb),
                    "list": lambda: provider.list_sandboxes(run_id),
                }
                ctx = _context(provider, sink, timeout_s=1.5)
                try:
                    result = await ctx.timed(op, calls[op])
                except runner_module.StepFailed:
                    result = None
                sample = sink.samples[-1]
                outcomes[(kind, op)] = (str(sample.status), sample.error_type)
                if isinstance(result, Sandbox):
                    await provider.destroy(result)
                if sandbox is not None:
                    await provider.destroy(sandbox)
                for left in await provider.list_sandboxes(run_id):
                    await provider.destroy(Sandbox(id=left, provider=provider_id))
        wrong = {}
        for (kind, op), (status, error_type) in outcomes.items():
            if (provider_id, kind, op) in ABSORBED and status == "ok":
                continue
            want_status = "timeout" if kind == "hang" else "error"
            if (status, error_type) != (want_status, EXPECTED[kind]):
                wrong[f"{kind} on {op}"] = f"{status} {error_type}"
        assert not wrong, f"{provider_id}: faults recorded as the wrong class: {wrong}"
        assert await emu.live_sandboxes() == []


def _local_leftovers(emu) -> list[str]:
    return emu.local_sandboxes()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider_id", CLOUDS)
async def test_a_run_with_faults_on_a_fifth_of_calls_completes_and_leaks_nothing(
    open_provider, provider_id
):
    options = emulator_args(fault_rate=0.2, hang_s=HANG_S, seed=5)
    _, settings = rows(provider_id)
    async with open_provider(provider_id, settings, emulator_args=options) as (
        provider,
        emu,
    ):
        workloads = {name: WORKLOADS[name]() for name in ("lifecycle", "exec", "files")}
        plan = make_plan([provider_id], list(workloads), iterations=6, warmup=0, seed=5)
        sink = MemorySink()
        run_id = f"faults-{uuid.uuid4().hex[:8]}"
        runner = Runner(
            providers={provider_id: provider},
            workloads=workloads,
            spec=SandboxSpec(),
            recorder=Recorder(sink, run_id=run_id, concurrency=3),
            timeout_s=3.0,
            concurrency=3,
        )
        started = time.monotonic()
        await asyncio.wait_for(runner.run(plan), timeout=150)
        elapsed = time.monotonic() - started

        # It completed, and every scheduled operation has exactly one record.
        assert len(runner.completed) == len(plan)
        caps = provider.capabilities()
        planned = Counter()
        for item in plan:
            for op in workloads[item.workload].planned_ops(caps):
                planned[(item.workload, item.iteration, op)] += 1
        recorded = Counter((s.workload, s.iteration, s.operation) for s in sink.samples)
        assert recorded == planned
        assert len(sink.samples) == sum(len(workloads[i.workload].planned_ops(caps)) for i in plan)

        # Faults really happened, and every failure carries a fault's class.
        calls = await emu.calls()
        injected = Counter(c["fault"] for c in calls if c["fault"])
        assert sum(injected.values()) >= 0.1 * len(calls), injected
        failures = [s for s in sink.samples if s.status in (Status.ERROR, Status.TIMEOUT)]
        assert failures, "20 % of calls faulted but nothing failed"
        stray = Counter(s.error_type for s in failures if s.error_type not in FAULT_CLASSES)
        assert not stray, f"failures of classes no fault explains: {stray}"
        for s in failures:
            assert s.duration_s is None
            assert (s.status is Status.TIMEOUT) == (s.error_type == "OperationTimeout")

        # Nothing is left alive: not on the emulator, not in its local state directory.
        leaked = await emu.live_sandboxes()
        local = _local_leftovers(emu)
        assert leaked == [], f"the emulator still holds {leaked} ({elapsed:.1f} s run)"
        assert local == [], f"local sandboxes left in the emulator's state dir: {local}"


#: Kinds tried on them (a hang costs the whole timeout: covered on create, exec and destroy).
STATEFUL_KINDS = ("500", "503", "429", "reset", "malformed")
#: Of the later calls (polls, follow-ups), how many are faulted in turn, after the first,
#: and by which kinds.
LATER_CALLS = 3
MIDWAY_KINDS = ("500", "429", "reset")


class _Stateful(Scratch):
    """Runs one of :data:`STATEFUL_OPS` at a time on a fresh sandbox, timed as the runner
    times it, with a fault on its k-th call; what it made goes at :meth:`cleanup`."""

    def __init__(self, provider, emu, run_id: str) -> None:
        super().__init__(provider, run_id)
        self.emu = emu
        self.sink = MemorySink()
        needs = {"checkpoint": Op.CHECKPOINT, "delete_checkpoint": Op.CHECKPOINT,
                 "restore": Op.RESTORE, "pause": Op.PAUSE, "resume": Op.RESUME}  # fmt: skip
        self.ops = [o for o in STATEFUL_OPS if needs[o] in provider.capabilities().operations]

    async def run(self, op: str, kind: str | None, skip: int = 0) -> tuple[str, str] | None:
        """(status, class) of ``op`` with call ``skip`` faulted by ``kind`` (None: no fault):
        "ok, the faulted call never retried" when it was recorded ok although the call the
        fault hit was never made again; None when the operation made no such call."""
        provider = self.provider
        sandbox = await self.fresh()
        if op in ("pause", "resume"):
            self.paused.append(sandbox)  # resumed by the clean-up whatever happens
        ref = None
        if op in ("delete_checkpoint", "restore"):
            ref = await provider.checkpoint(sandbox)
            self.refs.append(ref)
        if op == "resume":
            await provider.pause(sandbox)
        calls = {
            "checkpoint": lambda: provider.checkpoint(sandbox),
            "delete_checkpoint": lambda: provider.delete_checkpoint(ref),
            "restore": lambda: provider.restore(ref),
            "pause": lambda: provider.pause(sandbox),
            "resume": lambda: provider.resume(sandbox),
        }
        await self.emu.clear_calls()
        if kind is not None:
            await self.emu.inject(kind=kind, skip=skip)  # whatever the call's path
        ctx = _context(provider, self.sink, timeout_s=5.0)
        try:
            result = await ctx.timed(op, calls[op])
        except runner_module.StepFailed:
            result = None
        await self.emu.clear_faults()  # not consumed if the operation made fewer calls
        if isinstance(result, Sandbox):
            self.made.append(result)
        elif result is not None and op == "checkpoint":
            self.refs.append(result)
        seen = await self.emu.calls()
        faulted = [i for i, c in enumerate(seen) if c.get("fault")]
        if kind is not None and not faulted:
            return None
        sample = self.sink.samples[-1]
        status = str(sample.status)
        if faulted and status == "ok":
            hit = seen[faulted[0]]
            if not any((c["method"], c["path"]) == (hit["method"], hit["path"])
                       for c in seen[faulted[0] + 1 :]):  # fmt: skip
                return "ok, the faulted call never retried", ""
        return status, sample.error_type or ""

    async def calls_made(self, op: str) -> int:
        """How many calls ``op`` makes on a clean run."""
        assert await self.run(op, None) == ("ok", "")
        return len(await self.emu.calls())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider_id", CLOUDS)
async def test_each_fault_kind_on_checkpoints_and_pauses_is_recorded_as_its_class(
    open_provider, provider_id
):
    """checkpoint, delete_checkpoint, restore, pause and resume, each with the first call it
    makes faulted by each kind: the sample carries the kind's class, or the SDK retried the
    call (:data:`ABSORBED`, and the call log shows the retry) and the operation is recorded
    ok; nothing is left behind."""
    _, settings = rows(provider_id)
    async with open_provider(provider_id, settings) as (provider, emu):
        case = _Stateful(provider, emu, f"stateful-{uuid.uuid4().hex[:8]}")
        outcomes: dict[tuple[str, str], tuple[str, str]] = {}
        try:
            for op in case.ops:
                for kind in STATEFUL_KINDS:
                    found = await case.run(op, kind)
                    if found is not None:  # e.g. sprites' delete_checkpoint makes no call
                        outcomes[(kind, op)] = found
        finally:
            await case.cleanup()
        wrong = {}
        for (kind, op), (status, error_type) in outcomes.items():
            if (provider_id, kind, op) in ABSORBED and status == "ok":
                continue
            if (status, error_type) != ("error", EXPECTED[kind]):
                wrong[f"{kind} on {op}"] = f"{status} {error_type}"
        assert outcomes, "no operation was faulted"
        assert not wrong, f"{provider_id}: faults recorded as the wrong class: {wrong}"
        assert await emu.live_sandboxes() == []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider_id", CLOUDS)
async def test_a_fault_mid_operation_is_an_error_or_a_retry(open_provider, provider_id):
    """The same operations with a later call (a poll, a follow-up: the second to the
    fourth, counted on a clean run) answered 500, 429 or reset in turn: recorded as the
    fault's class, or ok only where the SDK or the adapter made that call again (the call
    log shows it); a provider's error in the middle of an operation is never taken for its
    end."""
    _, settings = rows(provider_id)
    async with open_provider(provider_id, settings) as (provider, emu):
        case = _Stateful(provider, emu, f"midway-{uuid.uuid4().hex[:8]}")
        wrong, tried = {}, 0
        try:
            for op in case.ops:
                made = await case.calls_made(op)
                for k in range(1, min(made, 1 + LATER_CALLS)):
                    for kind in MIDWAY_KINDS:
                        found = await case.run(op, kind, skip=k)
                        if found is None:
                            continue
                        tried += 1
                        if found not in (("error", EXPECTED[kind]), ("ok", "")):
                            wrong[f"{kind} on call {k + 1} of {op}"] = " ".join(found).strip()
        finally:
            await case.cleanup()
        assert not wrong, f"{provider_id}: {wrong}"
        assert await emu.live_sandboxes() == []
        if not tried:
            pytest.skip(f"{provider_id}: each of these operations makes one call")
