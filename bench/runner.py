"""The runner: schedules workload iterations and times every provider call in one place.

* Every provider call goes through :meth:`IterationContext.timed`, which reads
  ``time.perf_counter_ns`` immediately around the awaited call, inside a per-operation
  ``asyncio.timeout`` (no extra task, so the clock measures the call, not the scheduler).
* Every attempt becomes exactly one :class:`bench.records.Sample`, appended and flushed at
  once. A failure is recorded with its status, error class and a null duration; operations of
  an iteration that could not run after a failure are recorded as ``skipped``; operations a
  provider lacks are recorded as ``unsupported``.
* Iterations of all (provider, workload) pairs run in one seeded random order (warmups first,
  flagged), ``concurrency`` at a time.
* Every sandbox an iteration creates is destroyed in ``finally``, also on Ctrl-C, SIGTERM and
  errors, and written to the run's ledger when created and when destroyed.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from bench.records import Sample, Status
from bench.store import utc_now_iso
from bench.workloads.base import CheckFailed, Share, StepFailed, Workload
from providers.base import EXPIRES_LABEL, RUN_LABEL, Capabilities, Provider, Sandbox, SandboxSpec
from providers.errors import AuthError, NotFound, QuotaOrRateLimited

T = TypeVar("T")

#: Longest error message kept in a sample; SDK errors can embed whole response bodies.
MAX_ERROR_CHARS = 500
#: How long cleanup may take per sandbox after an interruption before we give up on it.
CLEANUP_TIMEOUT_S = 60.0


class SampleSink(Protocol):
    def add_sample(self, sample: Sample) -> None: ...

    def add_ledger(self, entry: dict[str, Any]) -> None: ...


@dataclass
class MemorySink:
    """Keeps samples in memory (tests, benchmarks)."""

    samples: list[Sample] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def add_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def add_ledger(self, entry: dict[str, Any]) -> None:
        self.ledger.append(entry)


@dataclass(frozen=True, kw_only=True)
class WorkItem:
    provider: str
    workload: str
    iteration: int
    warmup: bool
    #: Run again after an earlier attempt was cut short (a crash, a lost worker); its samples
    #: carry ``extra["rerun"] = True`` so the earlier partial records stay explainable.
    rerun: bool = False


class SecretScrubber:
    """Replaces secret values (from the given environment variables) in free text."""

    def __init__(self, env_names: Iterable[str]) -> None:
        values = {os.environ.get(name, "") for name in env_names}
        self._secrets = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class Recorder:
    """Numbers samples and hands them to the sink."""

    def __init__(
        self,
        sink: SampleSink,
        *,
        run_id: str,
        concurrency: int,
        location: str | None = None,
        scrub: Callable[[str], str] = str,
        first_sample_id: int = 1,
        origin_ns: int | None = None,
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self.concurrency = concurrency
        self.location = location or None
        self.scrub = scrub
        self._ids = itertools.count(first_sample_id)
        #: The run's monotonic origin: open-loop start times are seconds since this instant.
        #: A cluster worker passes the driver's origin translated to its own clock
        #: (bench/cluster.py), so every client's start times lie on one timeline.
        self.origin_ns = time.perf_counter_ns() if origin_ns is None else origin_ns

    def since_origin_s(self, instant_ns: int) -> float:
        return (instant_ns - self.origin_ns) / 1e9

    def record(
        self,
        item: WorkItem,
        operation: str,
        *,
        status: Status,
        started_at: str,
        duration_s: float | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        sandbox_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        intended_start_s: float | None = None,
        actual_start_s: float | None = None,
    ) -> Sample:
        if error_message is not None:
            error_message = self.scrub(error_message)[:MAX_ERROR_CHARS]
        sample = Sample(
            run_id=self.run_id,
            sample_id=next(self._ids),
            provider=item.provider,
            workload=item.workload,
            operation=operation,
            iteration=item.iteration,
            warmup=item.warmup,
            concurrency=self.concurrency,
            started_at=started_at,
            duration_s=duration_s,
            status=status,
            error_type=error_type,
            error_message=error_message,
            sandbox_id=sandbox_id,
            location=self.location,
            extra={**(extra or {}), "rerun": True} if item.rerun else dict(extra or {}),
            intended_start_s=intended_start_s,
            actual_start_s=actual_start_s,
        )
        self.sink.add_sample(sample)
        return sample


class IterationContext:
    """What a workload sees while it runs one iteration on one provider."""

    def __init__(
        self,
        *,
        item: WorkItem,
        provider: Provider,
        spec: SandboxSpec,
        recorder: Recorder,
        timeout_s: float,
        planned: Sequence[str],
        share: Share | None = None,
    ) -> None:
        self.item = item
        #: This client's part of an iteration split across clients (open-loop workloads on a
        #: cluster); None when this client runs the whole iteration.
        self.share = share
        self.provider = provider
        self.capabilities = provider.capabilities()
        self.spec = spec
        self.recorder = recorder
        self.timeout_s = timeout_s
        self._planned = Counter(planned)
        self._recorded: Counter[str] = Counter()
        self.live: dict[str, Sandbox] = {}

    # -- recording ---------------------------------------------------------------------------

    def _record(self, operation: str, **fields: Any) -> Sample:
        self._recorded[operation] += 1
        return self.recorder.record(self.item, operation, **fields)

    async def timed(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        sandbox: Sandbox | None = None,
        check: Callable[[T], None] | None = None,
        extra: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        intended_ns: int | None = None,
    ) -> T:
        """Run ``call`` once, time it, record it; return its result or raise StepFailed.

        With ``intended_ns`` (open-loop schedules) the duration runs from the intended start,
        not from when the call actually began, so a stalled client or provider cannot hide
        its tail (coordinated omission); both instants are recorded.
        """
        sandbox_id = sandbox.id if sandbox is not None else None
        limit_s = timeout_s or self.timeout_s

        def record(status: Status, **fields: Any) -> None:
            # Built after the call: nothing but the clock reads brackets the awaited call.
            if intended_ns is not None:
                fields["intended_start_s"] = self.recorder.since_origin_s(intended_ns)
                fields["actual_start_s"] = self.recorder.since_origin_s(t0)
            fields.setdefault("extra", extra)
            self._record(
                operation, status=status, started_at=started_at, sandbox_id=sandbox_id, **fields
            )

        started_at = utc_now_iso()
        t0 = time.perf_counter_ns()
        try:
            async with asyncio.timeout(limit_s):
                result = await call()
            t1 = time.perf_counter_ns()
        except asyncio.CancelledError:
            record(
                Status.SKIPPED,
                error_type="Interrupted",
                error_message="the run was interrupted while this operation ran",
            )
            raise
        except TimeoutError as exc:
            # asyncio.timeout raises a bare TimeoutError; adapters raise OperationTimeout.
            error_type = type(exc).__name__ if type(exc) is not TimeoutError else "OperationTimeout"
            record(
                Status.TIMEOUT,
                error_type=error_type,
                error_message=str(exc) or f"no answer within {limit_s:g} s",
            )
            raise StepFailed(operation) from exc
        except Exception as exc:
            record(Status.ERROR, error_type=type(exc).__name__, error_message=str(exc) or repr(exc))
            raise StepFailed(operation) from exc
        if check is not None:
            try:
                check(result)
            except CheckFailed as exc:
                record(
                    Status.ERROR,
                    error_type=exc.error_type,
                    error_message=str(exc),
                    extra={**(extra or {}), **exc.extra},
                )
                raise StepFailed(operation) from exc
        start_ns = t0 if intended_ns is None else intended_ns
        record(Status.OK, duration_s=(t1 - start_ns) / 1e9)
        return result

    def record_span(
        self, operation: str, *, started_at: str, duration_s: float, sandbox: Sandbox | None
    ) -> None:
        """Record an ok span the workload measured across several calls (e.g. time to ready)."""
        self._record(
            operation,
            status=Status.OK,
            started_at=started_at,
            duration_s=duration_s,
            sandbox_id=sandbox.id if sandbox is not None else None,
        )

    def record_unsupported(self, operation: str, reason: str) -> None:
        self._record(
            operation,
            status=Status.UNSUPPORTED,
            started_at=utc_now_iso(),
            error_message=reason,
        )

    def record_missing_as_skipped(self, reason: str, *, error_type: str | None = None) -> None:
        """Give every planned operation that has no record yet a ``skipped`` record."""
        for operation, wanted in self._planned.items():
            for _ in range(wanted - self._recorded[operation]):
                self._record(
                    operation,
                    status=Status.SKIPPED,
                    started_at=utc_now_iso(),
                    error_type=error_type,
                    error_message=reason,
                )

    # -- sandboxes -----------------------------------------------------------------------------

    def _ledger(self, event: str, sandbox: Sandbox, **more: Any) -> None:
        self.recorder.sink.add_ledger(
            {
                "event": event,
                "provider": self.item.provider,
                "sandbox_id": sandbox.id,
                "workload": self.item.workload,
                "iteration": self.item.iteration,
                **more,
            }
        )

    def track(self, sandbox: Sandbox) -> Sandbox:
        """Register a sandbox for guaranteed destruction (create and restore call this)."""
        if sandbox.id not in self.live:
            self._ledger("created", sandbox)
        # A resume may hand back a fresh handle for the same sandbox: keep the newest.
        self.live[sandbox.id] = sandbox
        return sandbox

    async def create(self, operation: str = "create") -> Sandbox:
        sandbox = await self.timed(operation, lambda: self.provider.create(self.spec))
        return self.track(sandbox)

    async def destroy(self, sandbox: Sandbox, operation: str = "destroy") -> None:
        await self.timed(operation, lambda: self.provider.destroy(sandbox), sandbox=sandbox)
        self.live.pop(sandbox.id, None)
        self._ledger("destroyed", sandbox)

    async def cleanup(self) -> None:
        """Destroy (untimed, with retries) whatever is still alive; never raises."""
        for sandbox in list(self.live.values()):
            try:
                await retry_cleanup(lambda sandbox=sandbox: destroy_gone_ok(self.provider, sandbox))
            except BaseException as exc:
                self._ledger("destroy_failed", sandbox, error=f"{type(exc).__name__}: {exc}")
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                continue
            self.live.pop(sandbox.id, None)
            self._ledger("destroyed", sandbox, by="cleanup")


#: Clean-up is never measured, so unlike measured calls it retries: a destroy or listing that
#: meets a passing fault must not leave a sandbox running (and billing) behind.
CLEANUP_ATTEMPTS = 4
CLEANUP_BACKOFF_S = (0.25, 1.0, 2.0)
CLEANUP_MAX_WAIT_S = 10.0


async def retry_cleanup(call: Callable[[], Awaitable[T]]) -> T:
    """``call`` up to CLEANUP_ATTEMPTS times, each bounded by CLEANUP_TIMEOUT_S.

    Credentials that do not work now will not work in a second, so AuthError is not retried;
    a rate limit's Retry-After is honoured (up to CLEANUP_MAX_WAIT_S).
    """
    for attempt in range(CLEANUP_ATTEMPTS):
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                return await call()
        except AuthError:
            raise
        except Exception as exc:
            if attempt == CLEANUP_ATTEMPTS - 1:
                raise
            wait = CLEANUP_BACKOFF_S[min(attempt, len(CLEANUP_BACKOFF_S) - 1)]
            if isinstance(exc, QuotaOrRateLimited) and exc.retry_after_s:
                wait = max(wait, min(exc.retry_after_s, CLEANUP_MAX_WAIT_S))
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def destroy_gone_ok(provider: Provider, sandbox: Sandbox) -> None:
    """Destroy, counting "no such sandbox" as done (destroy is idempotent; a retry after a
    destroy whose answer was lost may find it gone)."""
    try:
        await provider.destroy(sandbox)
    except NotFound:
        return


def expected_records(workload: Workload, caps: Capabilities) -> int:
    """How many samples one complete iteration of ``workload`` writes on a provider."""
    missing = [op for op in workload.requires if not caps.supports(op)]
    if missing:
        return sum(1 for needs in workload.capability_ops.values() if needs in missing)
    return len(workload.planned_ops(caps))


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
            planned=(
                workload.planned_ops(caps)
                if share is None
                else workload.planned_share_ops(caps, share)
            ),
            share=share,
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
        else:
            ctx.record_missing_as_skipped("not attempted")
        finally:
            # Runs after a cancellation too: awaiting inside ``finally`` works until a second
            # cancel arrives, and cleanup() itself bounds each destroy with a timeout.
            await ctx.cleanup()

    async def run(self, plan: Sequence[WorkItem]) -> None:
        # A full cyclic GC over everything imported so far (SDKs, pandas) blocks the event loop
        # for 25-90 ms on a 2-core machine, and that pause lands in whatever call is in flight.
        # Collect once now and freeze the survivors: later collections scan only new objects.
        gc.collect()
        gc.freeze()
        try:
            await self._run(plan)
        finally:
            gc.unfreeze()

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
                await self.run_item(item)
                self.completed.append(item)
                if self.on_item_done is not None:
                    self.on_item_done(item)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, len(plan)) or 1):
                    group.create_task(worker())
        finally:
            await self.sweep()

    async def sweep(self) -> list[tuple[str, str]]:
        """Destroy anything still labelled with this run (e.g. a create that timed out on our
        side but completed on the provider's). Returns what it found; the ledger keeps it."""
        found: list[tuple[str, str]] = []
        for provider_id, provider in self.providers.items():
            try:
                leftovers = await retry_cleanup(
                    lambda provider=provider: provider.list_sandboxes(self.recorder.run_id)
                )
            except Exception as exc:  # noqa: BLE001 - a failed sweep is reported, not fatal
                self.recorder.sink.add_ledger(
                    {"event": "sweep_failed", "provider": provider_id, "error": repr(exc)}
                )
                continue
            for sandbox_id in leftovers:
                found.append((provider_id, sandbox_id))
                entry = {"provider": provider_id, "sandbox_id": sandbox_id}
                handle = Sandbox(id=sandbox_id, provider=provider_id)
                try:
                    await retry_cleanup(
                        lambda provider=provider, handle=handle: destroy_gone_ok(provider, handle)
                    )
                except Exception as exc:  # noqa: BLE001
                    self.recorder.sink.add_ledger(
                        {"event": "destroy_failed", "by": "sweep", "error": repr(exc), **entry}
                    )
                else:
                    self.recorder.sink.add_ledger({"event": "destroyed", "by": "sweep", **entry})
        return found


__all__ = [
    "CheckFailed",
    "IterationContext",
    "MemorySink",
    "Recorder",
    "Runner",
    "SecretScrubber",
    "StepFailed",
    "WorkItem",
    "make_plan",
]
