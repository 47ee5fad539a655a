"""burst and ramp: open-loop create schedules that cannot hide a stall.

A closed-loop client sends the next request only when the previous one returned, so when the
provider stalls the client stops asking and the stall shows up once instead of in every request
that should have been sent meanwhile (coordinated omission, Gil Tene / wrk2). These two
workloads fix each create's start time in advance and measure from that intended start:

burst (``size`` creates released at one instant t0)::

    t0 ─┬─ create #1 ──────────┤ first_exec ┤            ... destroy #1
        ├─ create #2 ─────────────────┤ first_exec ┤     ... destroy #2
        └─ create #N ───────┤ first_exec ┤               ... destroy #N
    create latency = end - t0 (intended), whatever the client's own lag in starting it

ramp (``rate_per_s`` creates per second for ``duration_s``)::

    t0     t0+1/R   t0+2/R   ...      each create i is due at t0 + i/R, sent then even if
    |─c1─────|──c2──────|──c3───...   earlier ones have not returned; latency = end - due

Every create record keeps ``intended_start_s`` and ``actual_start_s`` (seconds since the run's
monotonic origin); actual minus intended is the client's schedule lag, which the report shows
so a run whose client could not keep up is flagged rather than believed. ``first_exec`` is
closed-loop per sandbox (from create's return; ``first_exec = false`` leaves it out, for a
burst of creates alone). Every sandbox is destroyed at the end. Each create can also record
``client_loop_delay_s`` (``watch_loop = true``): the longest the client's event loop had kept
ready work (an answer, a release) waiting since the schedule began (see :class:`_LoopDelay`,
and why it is off by default); a long wait means the client, not the provider, was queueing
answers, and the report says so.

Several clients (``clients = K``, on a cluster: bench/cluster.py): one iteration's slots are
dealt round-robin to K workers (worker j takes slots j, j+K, ...), and all K compute the same
schedule from one common start instant that the driver picks on its wall clock and each worker
translates to its own monotonic clock with its measured clock offset (recorded in the
manifest). So 1,000 creates can be released together from several machines; the intended
starts of all K clients lie on one timeline, to within the offsets' uncertainty. One machine
can be a cluster too: ``--cluster local:K`` starts K worker processes here, so an SDK's per-call
CPU is spread over K event loops and cores. Without a cluster the whole iteration runs from
this one client, whatever ``clients`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import Share, StepFailed, Workload, exit_zero
from bench.workloads.lifecycle import exec_until_ready
from bench.workloads.shape import Extra, Operation
from providers.base import Capabilities, Sandbox
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

#: Lead time between planning the schedule and its first instant, so every task is waiting.
LEAD_S = 0.05


#: The last stretch before a release is waited out by yielding to the loop instead of by a
#: timer: asyncio's timers fire up to a millisecond late (epoll waits in whole milliseconds),
#: and that lateness would be added to every open-loop latency.
SPIN_S = 0.0015


async def _sleep_until(instant_ns: int) -> None:
    delay = (instant_ns - time.perf_counter_ns()) / 1e9 - SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while time.perf_counter_ns() < instant_ns:  # noqa: ASYNC110 - no event marks an instant
        await asyncio.sleep(0)


class _LoopDelay:
    """How long the client's event loop kept ready work waiting while a schedule ran
    (``watch_loop = true``).

    A timer callback re-arms itself every ``PERIOD_S`` and notes how late it runs: when the
    loop is busy (an SDK's per-call CPU on a hundred answers that came back together, say),
    the callback waits in the same queue as those answers, so its worst lateness is how long a
    ready answer or release could wait for the client (the event-loop delay monitors of
    Node.js and aiomonitor work the same way). Each create records the worst so far when it
    returns (``extra["client_loop_delay_s"]``), and the report flags a client that kept
    answers waiting over 10 ms. The loop's timer granularity adds up to about 1 ms to a
    reading.

    It is off by default because watching perturbs what it watches: on the 2-core machine of
    issue 6 any timer wake-up during a 100-create burst, even a single one while the client
    only waited for answers, added 1.3-3 ms to the median create (benchmarks/
    test_burst_bench.py, A/B runs with and without it). Turn it on to diagnose a client that
    may be the bottleneck, not for the figures themselves.
    """

    PERIOD_S: ClassVar[float] = 0.001

    def __init__(self) -> None:
        self.worst_s = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due_ns = 0

    def _tick(self) -> None:
        late_s = (time.perf_counter_ns() - self._due_ns) / 1e9
        if late_s > self.worst_s:
            self.worst_s = late_s
        self._arm()

    def _arm(self) -> None:
        self._due_ns = time.perf_counter_ns() + int(self.PERIOD_S * 1e9)
        self._handle = asyncio.get_running_loop().call_later(self.PERIOD_S, self._tick)

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


@dataclass(frozen=True, kw_only=True)
class _OpenLoopSettings:
    clients: int = setting(
        1, help="cluster workers that share one iteration's schedule", minimum=1, maximum=4_096
    )
    first_exec: bool = setting(True, help="time each sandbox's first `true` after its create")
    watch_loop: bool = setting(
        False, help="record how long the client's event loop kept ready answers waiting"
    )


@dataclass(frozen=True, kw_only=True)
class BurstSettings(_OpenLoopSettings):
    size: int = setting(10, help="creates released at one instant", minimum=1, maximum=100_000)


@dataclass(frozen=True, kw_only=True)
class RampSettings(_OpenLoopSettings):
    rate_per_s: float = setting(
        10.0, help="creates per second", unit="1/s", minimum=0.001, maximum=100_000
    )
    duration_s: float = setting(
        2.0, help="how long the ramp releases creates", unit="s", minimum=0.001, maximum=86_400
    )


class _OpenLoop(Workload):
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="intended start (the schedule's instant) to create's return"),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
        Operation("destroy", help="the provider's destroy call, after the whole schedule"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        Extra("slot", int, help="the create's place in the schedule (from 0)"),
        Extra(
            "client_loop_delay_s",
            float,
            unit="s",
            help="longest the client's event loop had kept ready work waiting (watch_loop)",
        ),
    )
    #: The schedule-lag table and the lagging-client warnings.
    report: ClassVar[Any] = "bench.workloads.open_loop_report"

    def _schedule(self, start_ns: int) -> list[int]:
        raise NotImplementedError

    def _count(self) -> int:
        raise NotImplementedError

    def clients(self) -> int:
        return self.settings.clients

    def _slots(self, share: Share | None) -> range:
        if share is None:
            return range(self._count())
        return range(share.index, self._count(), share.count)

    def _ops(self, n: int) -> list[str]:
        execs = ["first_exec"] * n if self.settings.first_exec else []
        return ["create"] * n + execs + ["destroy"] * n

    def planned_ops(self, caps: Capabilities) -> list[str]:
        return self._ops(self._count())

    def planned_share_ops(self, caps: Capabilities, share: Share) -> list[str]:
        return self._ops(len(self._slots(share)))

    async def run(self, ctx: IterationContext) -> None:
        # No cyclic GC while a schedule runs: one collection stalls the loop for tens of ms and
        # would show up as lag in every slot due meanwhile (measured: issue 6 calibration).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._run_schedule(ctx)
        finally:
            if was_enabled:
                gc.enable()

    async def _run_schedule(self, ctx: IterationContext) -> None:
        share = ctx.share
        if share is not None and share.start_ns is not None:
            start_ns = share.start_ns  # the common instant, on this client's clock
        else:
            start_ns = time.perf_counter_ns() + int(LEAD_S * 1e9)
        full = self._schedule(start_ns)
        schedule = {i: full[i] for i in self._slots(share)}
        loop_delay = _LoopDelay() if self.settings.watch_loop else None

        async def one(index: int, due_ns: int) -> Sandbox | None:
            await _sleep_until(due_ns)
            info: dict[str, Any] = {"slot": index}

            async def create_and_read_delay() -> Sandbox:
                sandbox = await ctx.provider.create(ctx.spec)
                assert loop_delay is not None
                info["client_loop_delay_s"] = round(loop_delay.worst_s, 6)
                return sandbox

            # Nothing but the provider's call inside the timed span unless the loop is watched.
            create = (
                create_and_read_delay
                if loop_delay is not None
                else lambda: ctx.provider.create(ctx.spec)
            )
            try:
                sandbox = await ctx.timed("create", create, intended_ns=due_ns, extra=info)
            except StepFailed:
                return None
            ctx.track(sandbox)
            if not self.settings.first_exec:
                return sandbox
            with contextlib.suppress(StepFailed):
                await ctx.timed(
                    "first_exec",
                    lambda: exec_until_ready(
                        ctx.provider, sandbox, timeout_s=ctx.timeout_s, attempts={}
                    ),
                    sandbox=sandbox,
                    check=exit_zero,
                    extra={"slot": index},
                )
            return sandbox

        if loop_delay is not None:
            loop_delay.start()
        try:
            created = await asyncio.gather(*(one(i, due) for i, due in schedule.items()))
        finally:
            if loop_delay is not None:
                loop_delay.stop()
        for sandbox in created:
            if sandbox is not None:
                try:
                    await ctx.destroy(sandbox)
                except StepFailed:
                    continue


class Burst(_OpenLoop):
    name: ClassVar[str] = "burst"
    Settings: ClassVar[type] = BurstSettings

    def _count(self) -> int:
        return self.settings.size

    def _schedule(self, start_ns: int) -> list[int]:
        return [start_ns] * self._count()


class Ramp(_OpenLoop):
    name: ClassVar[str] = "ramp"
    Settings: ClassVar[type] = RampSettings

    def _count(self) -> int:
        return max(1, round(self.settings.rate_per_s * self.settings.duration_s))

    def _schedule(self, start_ns: int) -> list[int]:
        step_ns = 1e9 / self.settings.rate_per_s
        return [start_ns + round(i * step_ns) for i in range(self._count())]
