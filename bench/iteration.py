"""One iteration as a workload sees it: its work item, the recorder, and the one timing point.

* Every provider call goes through :meth:`IterationContext.timed`, which reads
  ``time.perf_counter_ns`` immediately around the awaited call, inside a per-operation
  ``asyncio.timeout`` (no extra task, so the clock measures the call, not the scheduler).
* Every attempt becomes exactly one :class:`bench.records.Sample`, handed to the sink at once.
  A failure is recorded with its status, error class and a null duration (:class:`StepFailed`
  then ends the iteration); a call that returned the wrong thing is a :class:`CheckFailed`.
* Every sandbox an iteration creates is tracked and destroyed by :meth:`IterationContext.cleanup`
  (untimed, with :func:`retry_cleanup`), and written to the run's ledger when created and
  destroyed.

These types live here, not in bench/runner.py, because both the runner and every workload use
them: the workloads import this module, the runner imports the workloads, and nothing imports
back (tests/test_imports.py). ``bench.runner`` re-exports every name.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bench.records import Sample, Status
from bench.store import utc_now_iso
from providers.base import Provider, Sandbox, SandboxSpec
from providers.errors import AuthError, NotFound, QuotaOrRateLimited

T = TypeVar("T")

#: Longest error message kept in a sample; SDK errors can embed whole response bodies.
MAX_ERROR_CHARS = 500
#: How long cleanup may take per sandbox after an interruption before we give up on it.
CLEANUP_TIMEOUT_S = 60.0


class StepFailed(Exception):
    """Raised by ``IterationContext.timed`` after a failed call has been recorded."""


class CheckFailed(Exception):
    """A call returned, but not what the workload needed (e.g. ``true`` exiting non-zero).

    The runner records it as an error under ``error_type`` and discards the duration, because
    the operation did not do its job.
    """

    def __init__(self, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.extra = extra


@dataclass(frozen=True, kw_only=True)
class Share:
    """One client's part of an iteration split across ``count`` clients (open-loop workloads
    on a cluster, bench/cluster.py): slots ``index``, ``index + count``, ... of the schedule,
    which starts at ``start_ns`` (this client's ``time.perf_counter_ns``, translated from the
    driver's common start instant)."""

    index: int
    count: int
    start_ns: int | None = None


class SampleSink(Protocol):
    def add_sample(self, sample: Sample) -> None: ...

    def add_ledger(self, entry: dict[str, Any]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class WorkItem:
    provider: str
    workload: str
    iteration: int
    warmup: bool
    #: Run again after an earlier attempt was cut short (a crash, a lost worker); its samples
    #: carry ``extra["rerun"] = True`` so the earlier partial records stay explainable.
    rerun: bool = False


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
