"""The runner: schedules workload iterations; every provider call is timed in one place.

* Every provider call goes through :meth:`IterationContext.timed` (bench/iteration.py, with the
  other types workloads and the runner share; this module re-exports them): one
  ``time.perf_counter_ns`` read on each side of the awaited call, inside a per-operation
  ``asyncio.timeout``.
* Every attempt becomes exactly one :class:`bench.records.Sample`, appended and flushed at
  once. A failure is recorded with its status, error class and a null duration; operations of
  an iteration that could not run after a failure are recorded as ``skipped``; operations a
  provider lacks are recorded as ``unsupported``.
* No exception ends a run: whatever a workload, a check or an adapter raises ends only its
  iteration, as records (bench/iteration.py says whose fault each is; a bug of ours is a
  ``HarnessError``). Only a cancellation (an interrupt) and results that cannot be written
  (:class:`bench.store.ResultsUnwritable`) stop the run.
* Iterations of all (provider, workload) pairs run in one seeded random order (warmups first,
  flagged), ``concurrency`` at a time.
* Every sandbox and checkpoint an iteration creates is destroyed in ``finally``, also on
  Ctrl-C, SIGTERM and errors, and written to the run's ledger when created and when gone; the
  end-of-run sweep (bench/cleanup.py) destroys what is still alive and what the providers list
  under the run's label. After an interrupt all of it is bounded by the run's grace.

Quiet between iterations (:data:`QUIET_POLICY`, recorded in the manifest): an iteration ends
only when its teardown has returned (destroy and delete calls are awaited; on a provider that
deletes asynchronously, its ``gone`` span waits until the listing no longer shows the
sandbox), so the next iteration of the same slot starts on a quiet provider. The harness's own
work stays outside timed spans: records are flushed right after each span ends, and the cyclic
garbage collector runs only between iterations, never on its own inside a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import cleanup as cleaning
from bench.cleanup import Grace, RetryPolicy, SweepResult
from bench.iteration import (
    CLEANUP_TIMEOUT_S,
    HARNESS_ERROR,
    MAX_ERROR_CHARS,
    CheckFailed,
    IterationContext,
    Recorder,
    SampleSink,
    Share,
    StepFailed,
    WorkItem,
    destroy_gone_ok,
    retry_cleanup,
    with_gone,
)
from bench.records import Sample
from bench.store import ResultsUnwritable
from bench.workloads.base import Workload
from providers.base import EXPIRES_LABEL, RUN_LABEL, Capabilities, Deletion, Provider, SandboxSpec

#: What the manifest says happens between iterations (see the module docstring).
QUIET_POLICY = {
    "teardown": "each iteration ends when its destroy and delete calls have returned; the next "
    "iteration of the same slot starts after that (with concurrency > 1 other slots run on)",
    "asynchronous_deletion": "on providers whose Capabilities.deletion is 'async' the `gone` "
    "span after each destroy polls list_sandboxes until the sandbox is no longer listed",
    "records": "appended and flushed right after each span ends, outside it",
    "gc": "automatic collection off during the run; a collection runs between iterations when "
    "no timed call is in flight (or after GC_EVERY iterations without such a moment)",
    "client_cpu": "with [run] cpu_latency = hold (default) the client's idle CPUs poll while "
    "iterations run, so that a neighbour's idleness weighs less on the next call's wake-ups "
    "(a small effect on the machine measured, see README); what was obtained is in "
    "client.cpu_latency",
}
#: Iterations after which a collection runs even if timed calls are always in flight.
GC_EVERY = 50
#: After an interrupt, how much longer than their part of the grace the iterations' cleanup
#: is waited for before the sweep starts.
ITERATION_MARGIN_S = 0.5


@dataclass
class MemorySink:
    """Keeps samples in memory (tests, benchmarks)."""

    samples: list[Sample] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def add_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def add_ledger(self, entry: dict[str, Any]) -> None:
        self.ledger.append(entry)


class SecretScrubber:
    """Replaces secret values (from the given environment variables) in free text."""

    def __init__(self, env_names: Iterable[str]) -> None:
        values = {os.environ.get(name, "") for name in env_names}
        self._secrets = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def planned_operations(
    workload: Workload, caps: Capabilities, share: Share | None = None
) -> list[str]:
    """Every operation one iteration (or one client's share of it) records on a provider
    with ``caps``: the workload's own, and a ``gone`` span after each destroy where the
    provider deletes asynchronously."""
    ops = workload.planned_ops(caps) if share is None else workload.planned_share_ops(caps, share)
    if getattr(caps, "deletion", Deletion.SYNC) is Deletion.ASYNC:
        ops = with_gone(ops)
    return ops


def expected_records(workload: Workload, caps: Capabilities) -> int:
    """How many samples one complete iteration of ``workload`` writes on a provider."""
    missing = [op for op in workload.requires if not caps.supports(op)]
    if missing:
        return sum(1 for needs in workload.capability_ops.values() if needs in missing)
    return len(planned_operations(workload, caps))


def remaining_plan(
    plan: Sequence[WorkItem],
    samples: Iterable[Sample],
    *,
    workloads: Mapping[str, Workload],
    capabilities: Mapping[str, Capabilities],
) -> list[WorkItem]:
    """The items of ``plan`` a crashed or interrupted run has not completed, in plan order.

    An item is complete when it has all its records and none says it was interrupted. One
    with some records is run again as a re-run (its samples marked), so the earlier partial
    records stay as what they were: real attempts.
    """
    counts: Counter[tuple[str, str, int, bool]] = Counter()
    interrupted: set[tuple[str, str, int, bool]] = set()
    for sample in samples:
        key = (sample.provider, sample.workload, sample.iteration, sample.warmup)
        counts[key] += 1
        if sample.error_type == "Interrupted":
            interrupted.add(key)
    remaining = []
    for item in plan:
        key = (item.provider, item.workload, item.iteration, item.warmup)
        wanted = expected_records(workloads[item.workload], capabilities[item.provider])
        if counts[key] >= wanted and key not in interrupted:
            continue
        remaining.append(replace(item, rerun=counts[key] > 0))
    return remaining


def make_plan(
    providers: Sequence[str],
    workloads: Sequence[str],
    *,
    iterations: int,
    warmup: int,
    seed: int,
) -> list[WorkItem]:
    """All iterations, warmups first, each group in one seeded random order."""
    rng = random.Random(seed)
    warm = [
        WorkItem(provider=p, workload=w, iteration=i, warmup=True)
        for p in providers
        for w in workloads
        for i in range(warmup)
    ]
    measured = [
        WorkItem(provider=p, workload=w, iteration=i, warmup=False)
        for p in providers
        for w in workloads
        for i in range(iterations)
    ]
    rng.shuffle(warm)
    rng.shuffle(measured)
    return warm + measured


class Runner:
    """Runs a plan of work items against opened providers."""

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        workloads: Mapping[str, Workload],
        spec: SandboxSpec,
        recorder: Recorder,
        timeout_s: float,
        concurrency: int = 1,
        on_item_done: Callable[[WorkItem], None] | None = None,
        admit: Callable[[WorkItem], bool] | None = None,
        grace: Grace | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.providers = providers
        self.workloads = workloads
        self.spec = spec
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.on_item_done = on_item_done
        #: Asked before each iteration starts (the budget cap); False stops all scheduling.
        self.admit = admit
        self.stopped_by_admit = False
        self.completed: list[WorkItem] = []
        #: Bounds cleanup after an interrupt (the session starts it); unbounded otherwise.
        self.grace = grace or Grace(cleaning.DEFAULT_GRACE_S)
        #: The iterations' own cleanup ends earlier, so the sweep keeps time after it.
        self.iteration_grace = self.grace.part(cleaning.ITERATIONS_SHARE)
        self.policy = policy or cleaning.policy_for(timeout_s)
        #: Timed calls in flight (the garbage collector waits for a moment without any).
        self._iterations_since_gc = 0
        self.sweep_results: list[SweepResult] = []

    def _spec_for_run(self) -> SandboxSpec:
        expires = datetime.now(UTC) + timedelta(seconds=self.spec.lifetime_s)
        labels = {
            **self.spec.labels,
            RUN_LABEL: self.recorder.run_id,
            EXPIRES_LABEL: f"{expires:%Y%m%dT%H%M%SZ}",
        }
        return SandboxSpec(
            cpus=self.spec.cpus,
            memory_mb=self.spec.memory_mb,
            disk_mb=self.spec.disk_mb,
            template=self.spec.template,
            lifetime_s=self.spec.lifetime_s,
            max_pids=self.spec.max_pids,
            labels=labels,
        )

    async def run_item(self, item: WorkItem, *, share: Share | None = None) -> None:
        """Run one iteration (or, with ``share``, this client's part of it)."""
        provider = self.providers[item.provider]
        workload = self.workloads[item.workload]
        caps = provider.capabilities()
        missing = [op for op in workload.requires if not caps.supports(op)]
        if missing:
            ctx = IterationContext(
                item=item,
                provider=provider,
                spec=self._spec_for_run(),
                recorder=self.recorder,
                timeout_s=self.timeout_s,
                planned=(),
                grace=self.iteration_grace,
                policy=self.policy,
            )
            for operation, needs in workload.capability_ops.items():
                if needs in missing:
                    reason = caps.unsupported.get(str(needs), f"{item.provider} has no {needs}")
                    ctx.record_unsupported(operation, reason)
            return
        ctx = IterationContext(
            item=item,
            provider=provider,
            spec=self._spec_for_run(),
            recorder=self.recorder,
            timeout_s=self.timeout_s,
            planned=planned_operations(workload, caps, share),
            share=share,
            grace=self.iteration_grace,
            policy=self.policy,
        )
        try:
            await workload.run(ctx)
        except StepFailed as exc:
            ctx.record_missing_as_skipped(f"not attempted: {exc} failed earlier in the iteration")
        except asyncio.CancelledError:
            # "Interrupted" also when no call was in flight (a hold, an idle wait): a resume
            # runs such an iteration again (remaining_plan).
            ctx.record_missing_as_skipped(
                "not attempted: the run was interrupted", error_type="Interrupted"
            )
            raise
        except ResultsUnwritable:
            raise  # nothing more can be recorded: the run stops (after cleanup, below)
        except Exception as exc:  # noqa: BLE001 - no exception ends a run: it becomes records
            ctx.record_escaped(exc)
        else:
            ctx.record_missing_as_skipped("not attempted")
        finally:
            # Runs after a cancellation too, and goes on when the interrupt arrives during it:
            # every cleanup call is bounded by the retry policy and, after an interrupt, by
            # the grace (a second interrupt ends the grace, not the cleanup's records).
            await cleaning.through_interrupt(ctx.cleanup())

    async def run(self, plan: Sequence[WorkItem]) -> None:
        # A full cyclic GC over everything imported so far (SDKs, pandas) blocks the event loop
        # for 25-90 ms on a 2-core machine, and that pause lands in whatever call is in flight.
        # Collect once now and freeze the survivors; then collect only between iterations.
        gc.collect()
        gc.freeze()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._run(plan)
        finally:
            if was_enabled:
                gc.enable()
            gc.unfreeze()

    def _between_iterations(self) -> None:
        """The harness's own work between iterations, outside every timed span."""
        self._iterations_since_gc += 1
        quiet = not IterationContext.in_flight
        if quiet or self._iterations_since_gc >= GC_EVERY:
            gc.collect(1)
            self._iterations_since_gc = 0

    async def _run(self, plan: Sequence[WorkItem]) -> None:
        queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if self.stopped_by_admit or (self.admit is not None and not self.admit(item)):
                    self.stopped_by_admit = True
                    return
                try:
                    await self.run_item(item)
                    self.completed.append(item)
                    if self.on_item_done is not None:
                        self.on_item_done(item)
                except ResultsUnwritable:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug around the iteration (an
                    # adapter's capabilities(), a callback): said in the manifest, run goes on
                    self.recorder.harness_errors.append(
                        f"{item.provider}/{item.workload} iteration {item.iteration}: "
                        f"{cleaning.describe_error(exc)}"
                    )
                self._between_iterations()

        tasks = [
            asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(plan)) or 1)
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
            if failed:  # results that cannot be written: stop the others, then say why
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                raise failed[0]
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await self._let_iterations_clean_up(tasks)
            raise
        finally:
            await cleaning.through_interrupt(self.sweep())

    async def _let_iterations_clean_up(self, tasks: Sequence[asyncio.Future[None]]) -> None:
        """After an interrupt: wait for the cancelled iterations to clean up, but no longer
        than their part of the grace (and a little): an SDK that holds on to a cancelled call
        must not hold the run. What such an iteration still holds is in the ledger, swept
        next and, if still alive, named for reap."""
        if not self.grace.started:
            await asyncio.wait(tasks)
            return
        limit = (self.iteration_grace.remaining_s() or 0.0) + ITERATION_MARGIN_S
        with contextlib.suppress(TimeoutError):
            async with self.grace.bounded(limit):
                await asyncio.wait(tasks)

    async def sweep(self) -> list[tuple[str, str]]:
        """Destroy what the ledger shows alive (an iteration's cleanup that gave up) and
        anything the providers list under this run's label (e.g. a create that timed out on
        our side but completed on the provider's), checkpoints included; the ledger keeps
        every outcome. Returns the sandboxes found."""

        def ledger(entry: dict) -> None:
            with contextlib.suppress(ResultsUnwritable):  # failing already: reap will do
                self.recorder.ledger(entry)

        self.sweep_results = await cleaning.sweep(
            self.providers,
            self.recorder.run_id,
            ledger,
            alive=self.recorder.alive,
            policy=cleaning.patient(self.policy),
            grace=self.grace,
        )
        return [(r.provider, s) for r in self.sweep_results for s in r.found]


__all__ = [
    "CLEANUP_TIMEOUT_S",
    "GC_EVERY",
    "HARNESS_ERROR",
    "MAX_ERROR_CHARS",
    "QUIET_POLICY",
    "CheckFailed",
    "IterationContext",
    "MemorySink",
    "Recorder",
    "Runner",
    "SampleSink",
    "SecretScrubber",
    "Share",
    "StepFailed",
    "WorkItem",
    "destroy_gone_ok",
    "expected_records",
    "make_plan",
    "planned_operations",
    "remaining_plan",
    "retry_cleanup",
]
