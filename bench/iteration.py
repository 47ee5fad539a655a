"""One iteration as a workload sees it: its work item, the recorder, and the one timing point.

* Every provider call goes through :meth:`IterationContext.timed`, which reads
  ``time.perf_counter_ns`` immediately around the awaited call, inside a per-operation
  ``asyncio.timeout`` (no extra task, so the clock measures the call, not the scheduler; a
  checkpoint call runs in a task of its own so an interrupt cannot orphan what it makes, and
  its clock is read inside that task).
* Every attempt becomes exactly one :class:`bench.records.Sample`, handed to the sink at once.
  A failure is recorded with its status, error class and a null duration (:class:`StepFailed`
  then ends the iteration); a call that returned the wrong thing is a :class:`CheckFailed`.
* Every sandbox and checkpoint an iteration creates is tracked, written to the run's ledger
  when created and when gone, and destroyed or deleted by :meth:`IterationContext.cleanup`
  (untimed, with the one retry policy of bench/cleanup.py, bounded by the run's grace after an
  interrupt) if the iteration did not do it itself.
* Whatever a call returns is checked against the interface (:class:`CheckedProvider`): a
  ``create`` that returns no Sandbox is the adapter's ProtocolError, not a crash of ours.

Exceptions and whose fault they are
-----------------------------------
No exception ends a run: whatever a workload, a check or an adapter raises becomes records
(the operation in flight ``error``, the rest of the iteration ``skipped``; the runner does the
rest, bench/runner.py). What the record says depends on whose fault it is (:func:`blame`):

* a :class:`providers.errors.ProviderError` or a timeout: the provider's failure, under its
  class (``Unavailable``, ``OperationTimeout``, ...);
* anything else raised inside an adapter or an SDK -- the innermost frame of its traceback
  that is not the standard library lies in the ``providers`` package, in the module of the
  adapter's class (or a base's), or in an installed distribution (site-packages) -- is an
  adapter bug (an exception it did not translate): its own class name, as
  providers/errors.py says;
* anything else -- raised by the harness's own code (``bench``), a workload or a check, a
  plugin's or a test's -- is a bug of the harness: ``error_type`` ``HarnessError``, and the
  message starts with the original class and says where it was raised. The report lists
  these first (a check of Severity.BUG), so a bug is never read as a provider's failure.

These types live here, not in bench/runner.py, because both the runner and every workload use
them: the workloads import this module, the runner imports the workloads, and nothing imports
back (tests/test_imports.py). ``bench.runner`` re-exports every name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
import sysconfig
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import providers
from bench import cleanup as cleaning
from bench.cleanup import Alive, Grace, GraceExpired, RetryPolicy, describe_error
from bench.records import Sample, Status
from bench.store import ResultsUnwritable, utc_now_iso
from providers.base import CheckpointRef, Deletion, ExecResult, Provider, Sandbox, SandboxSpec
from providers.errors import ProtocolError, ProviderError

T = TypeVar("T")

#: Longest error message kept in a sample; SDK errors can embed whole response bodies.
MAX_ERROR_CHARS = 500
#: The error class of a bug of the harness (see the module docstring).
HARNESS_ERROR = "HarnessError"
#: How long one cleanup attempt may take (the retry policy's attempt timeout).
CLEANUP_TIMEOUT_S = cleaning.DEFAULT_POLICY.attempt_timeout_s
#: First poll interval of the ``gone`` span (providers that delete asynchronously); it grows
#: by half each poll, up to GONE_POLL_MAX_S, so a slow deletion costs few listings.
GONE_POLL_S = 0.05
GONE_POLL_MAX_S = 1.0


class StepFailed(Exception):
    """Raised by ``IterationContext.timed`` after a failed call has been recorded."""


class InputFailed(Exception):
    """The run's own input turned out wrong while it ran (a task's local file changed or
    became unreadable after the config was read): neither the provider's failure nor a bug of
    the harness, so :meth:`IterationContext.timed` records it under the subclass's name."""


class CheckFailed(Exception):
    """A call returned, but not what the workload needed (e.g. ``true`` exiting non-zero).

    The runner records it as an error under ``error_type`` and discards the duration, because
    the operation did not do its job.
    """

    def __init__(self, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.extra = extra


# -- whose fault ------------------------------------------------------------------------------

_BENCH_DIR = str(Path(__file__).resolve().parent) + os.sep
_PROVIDERS_DIR = str(Path(providers.__file__).resolve().parent) + os.sep
_STDLIB_DIRS = tuple(
    str(Path(p).resolve()) + os.sep
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)
_ROOT_DIR = str(Path(_BENCH_DIR).parent) + os.sep


def adapter_files(provider: object) -> frozenset[str]:
    """The source files of ``provider``'s class and its bases: the adapter's own code, where
    ever it lives (a test's double, a plugin's adapter)."""
    return _class_files(type(provider))


@functools.cache
def _class_files(kind: type) -> frozenset[str]:
    found = set()
    for cls in kind.__mro__:
        with contextlib.suppress(TypeError, OSError):
            path = os.path.realpath(inspect.getfile(cls))
            if not path.startswith(_STDLIB_DIRS):
                found.add(path)
    return frozenset(found)


def blame(exc: BaseException, adapters: frozenset[str] = frozenset()) -> tuple[str, str]:
    """("provider" or "harness", where) for an exception that is not a ProviderError: the
    innermost frame of its traceback outside the standard library decides (see the module
    docstring); ``adapters`` are more files of adapter code (:func:`adapter_files`).
    ``where`` is that frame as ``path:line`` (relative to the project)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if frame.filename.startswith("<"):
            continue
        path = os.path.realpath(frame.filename)
        where = f"{path.removeprefix(_ROOT_DIR)}:{frame.lineno}"
        if path in adapters or path.startswith(_PROVIDERS_DIR):
            return "provider", where
        if path.startswith(_BENCH_DIR):
            return "harness", where
        if os.sep + "site-packages" + os.sep in path or os.sep + "dist-packages" + os.sep in path:
            return "provider", where
        if path.startswith(_STDLIB_DIRS):
            continue
        return "harness", where
    return "harness", "unknown"


def harness_error_message(exc: BaseException, where: str) -> str:
    return f"{describe_error(exc)} (a bug of the harness, raised at {where})"


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
        #: What the ledger entries made through :meth:`ledger` show alive.
        self.alive = Alive()
        #: Harness errors no planned operation could carry (an iteration that failed after
        #: recording everything); the session puts them in the manifest.
        self.harness_errors: list[str] = []

    def ledger(self, entry: dict[str, Any]) -> None:
        """One ledger entry to the sink; what is alive is kept up to date."""
        self.alive.apply(entry)
        self.sink.add_ledger(entry)

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


#: What each interface call must return (:class:`CheckedProvider`).
_RETURNS: dict[str, tuple[type, ...]] = {
    "create": (Sandbox,),
    "restore": (Sandbox,),
    "resume": (Sandbox,),
    "exec": (ExecResult,),
    "read_file": (bytes, bytearray, memoryview),
    "checkpoint": (CheckpointRef,),
    "fork": (list,),
    "list_sandboxes": (list,),
    "list_checkpoints": (list,),
}


class CheckedProvider:
    """A provider whose answers are checked against the interface: a call that returns the
    wrong type raises ProtocolError (the adapter's failure, recorded as such) instead of
    failing later inside a check or the harness. Everything else passes through."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    @property
    def inner(self) -> Provider:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        wanted = _RETURNS.get(name)
        if wanted is None or not callable(attr):
            return attr
        inner = self._inner

        async def checked(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if not isinstance(result, wanted) or (
                isinstance(result, ExecResult) and not isinstance(result.exit_code, int)
            ):
                raise ProtocolError(
                    f"the adapter's {name} returned {type(result).__name__}, not "
                    f"{' or '.join(t.__name__ for t in wanted)}",
                    provider=str(getattr(inner, "id", "")),
                    operation=name,
                )
            return result

        return checked


def gone_operation(destroy_operation: str) -> str:
    """The ``gone`` span after a destroy operation: ``destroy`` -> ``gone``,
    ``destroy_restored`` -> ``gone_restored``, any other name -> ``<name>_gone``."""
    if destroy_operation == "destroy":
        return "gone"
    if destroy_operation.startswith("destroy_"):
        return "gone_" + destroy_operation.removeprefix("destroy_")
    return f"{destroy_operation}_gone"


def with_gone(operations: Sequence[str]) -> list[str]:
    """``operations`` with a ``gone`` span after each destroy (asynchronous deletion)."""
    out: list[str] = []
    for operation in operations:
        out.append(operation)
        if operation.startswith("destroy"):
            out.append(gone_operation(operation))
    return out


async def until_gone(provider: Any, sandbox: Sandbox, run_id: str, polls: dict[str, Any]) -> None:
    """Poll the listing of ``run_id`` until ``sandbox`` is no longer in it."""
    interval = GONE_POLL_S
    while True:
        polls["attempts"] = polls.get("attempts", 0) + 1
        if sandbox.id not in await provider.list_sandboxes(run_id):
            return
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, GONE_POLL_MAX_S)


class IterationContext:
    """What a workload sees while it runs one iteration on one provider."""

    #: Timed calls in flight in this process (the runner collects garbage when there are
    #: none, so a collection never lands inside a measured call).
    in_flight: int = 0

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
        grace: Grace | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.item = item
        #: This client's part of an iteration split across clients (open-loop workloads on a
        #: cluster); None when this client runs the whole iteration.
        self.share = share
        #: The adapter, its answers checked (:class:`CheckedProvider`).
        self.provider: Any = CheckedProvider(provider)
        #: The adapter itself (cleanup calls it directly: no answer to check).
        self.adapter = provider
        self._adapter_files = adapter_files(provider)
        self.capabilities = provider.capabilities()
        self.spec = spec
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.grace = grace or cleaning.NO_GRACE
        self.policy = policy or cleaning.DEFAULT_POLICY
        self._planned = Counter(planned)
        self._recorded: Counter[str] = Counter()
        self.live: dict[str, Sandbox] = {}
        #: Checkpoints made and not yet deleted, by id.
        self.checkpoints: dict[str, CheckpointRef] = {}

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
        keep: Callable[[T], Any] | None = None,
    ) -> T:
        """Run ``call`` once, time it, record it; return its result or raise StepFailed.

        With ``intended_ns`` (open-loop schedules) the duration runs from the intended start,
        not from when the call actually began, so a stalled client or provider cannot hide
        its tail (coordinated omission); both instants are recorded.

        ``keep``: the call makes a resource that only its answer names (a checkpoint, which
        most providers cannot list): an interrupt does not abandon it, but lets it finish
        within the grace and hands what it made to ``keep`` (so cleanup deletes it); its
        record still says Interrupted. The call then runs in a task of its own, and the
        clock is read inside that task, around the call alone.
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
        IterationContext.in_flight += 1
        t0 = time.perf_counter_ns()
        try:
            try:
                if keep is None:
                    async with asyncio.timeout(limit_s):
                        result = await call()
                    t1 = time.perf_counter_ns()
                else:
                    result, t0, t1 = await self._finished_despite_interrupt(call, limit_s, keep)
            finally:
                IterationContext.in_flight -= 1
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
        except ResultsUnwritable:
            raise
        except Exception as exc:
            if isinstance(exc, ProviderError | InputFailed):
                record(Status.ERROR, error_type=type(exc).__name__, error_message=str(exc))
            else:
                whose, where = blame(exc, self._adapter_files)
                if whose == "harness":
                    record(
                        Status.ERROR,
                        error_type=HARNESS_ERROR,
                        error_message=harness_error_message(exc, where),
                    )
                else:  # an exception the adapter did not translate: its bug, its class
                    record(
                        Status.ERROR,
                        error_type=type(exc).__name__,
                        error_message=str(exc) or repr(exc),
                    )
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
            except ResultsUnwritable:
                raise
            except Exception as exc:  # a check is harness code: anything else is our bug
                _, where = blame(exc)
                record(
                    Status.ERROR,
                    error_type=HARNESS_ERROR,
                    error_message=harness_error_message(exc, where),
                )
                raise StepFailed(operation) from exc
        start_ns = t0 if intended_ns is None else intended_ns
        record(Status.OK, duration_s=(t1 - start_ns) / 1e9)
        return result

    async def _finished_despite_interrupt(
        self, call: Callable[[], Awaitable[T]], limit_s: float, keep: Callable[[T], Any]
    ) -> tuple[T, int, int]:
        async def measured() -> tuple[T, int, int]:
            start = time.perf_counter_ns()
            async with asyncio.timeout(limit_s):
                answer = await call()
            return answer, start, time.perf_counter_ns()

        inner = asyncio.ensure_future(measured())
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with self.grace.bounded(self.policy.attempt_timeout_s):
                        await asyncio.shield(inner)
            if not inner.done():
                inner.cancel()
            elif not inner.cancelled() and inner.exception() is None:
                with contextlib.suppress(Exception):
                    keep(inner.result()[0])
            raise

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

    def record_escaped(self, exc: BaseException) -> None:
        """An exception escaped the workload outside a timed call (or from recording one):
        the first planned operation without a record gets it (``error``), the rest of the
        iteration is skipped. A bug of ours is a HarnessError (see the module docstring)."""
        if isinstance(exc, ProviderError):
            error_type, message = type(exc).__name__, str(exc)
        else:
            whose, where = blame(exc, self._adapter_files)
            if whose == "harness":
                error_type, message = HARNESS_ERROR, harness_error_message(exc, where)
            else:
                error_type, message = type(exc).__name__, str(exc) or repr(exc)
        pending = next(
            (op for op, wanted in self._planned.items() if self._recorded[op] < wanted), None
        )
        if pending is None:
            if error_type == HARNESS_ERROR:
                self.recorder.harness_errors.append(
                    f"{self.item.provider}/{self.item.workload} iteration {self.item.iteration}: "
                    f"{message}"
                )
            return
        self._record(
            pending,
            status=Status.ERROR,
            started_at=utc_now_iso(),
            error_type=error_type,
            error_message=message,
        )
        self.record_missing_as_skipped(f"not attempted: {pending} failed earlier in the iteration")

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

    # -- sandboxes and checkpoints -------------------------------------------------------------

    def _ledger(self, event: str, *, sandbox_id: str | None, **more: Any) -> None:
        self.recorder.ledger(
            {
                "event": event,
                "provider": self.item.provider,
                "sandbox_id": sandbox_id,
                "workload": self.item.workload,
                "iteration": self.item.iteration,
                **more,
            }
        )

    def track(self, sandbox: Sandbox) -> Sandbox:
        """Register a sandbox for guaranteed destruction (create and restore call this)."""
        if sandbox.id not in self.live:
            self._ledger("created", sandbox_id=sandbox.id)
        # A resume may hand back a fresh handle for the same sandbox: keep the newest.
        self.live[sandbox.id] = sandbox
        return sandbox

    def track_checkpoint(self, ref: CheckpointRef) -> CheckpointRef:
        """Register a checkpoint for guaranteed deletion (:meth:`checkpoint` calls this)."""
        if ref.id not in self.checkpoints:
            self._ledger("checkpoint_created", sandbox_id=ref.sandbox_id, checkpoint_id=ref.id)
        self.checkpoints[ref.id] = ref
        return ref

    async def create(self, operation: str = "create") -> Sandbox:
        sandbox = await self.timed(operation, lambda: self.provider.create(self.spec))
        return self.track(sandbox)

    async def checkpoint(
        self,
        sandbox: Sandbox,
        operation: str = "checkpoint",
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> CheckpointRef:
        """The provider's checkpoint of ``sandbox``, timed as ``operation`` and tracked (a
        checkpoint is a resource: the ledger has it, cleanup deletes it)."""
        ref = await self.timed(
            operation,
            lambda: self.provider.checkpoint(sandbox),
            sandbox=sandbox,
            extra=extra,
            keep=self.track_checkpoint,
        )
        return self.track_checkpoint(ref)

    async def delete_checkpoint(
        self,
        ref: CheckpointRef,
        operation: str = "delete_checkpoint",
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete ``ref``, timed as ``operation``; the ledger says it is gone."""
        await self.timed(operation, lambda: self.provider.delete_checkpoint(ref), extra=extra)
        self.checkpoints.pop(ref.id, None)
        self._ledger("checkpoint_deleted", sandbox_id=ref.sandbox_id, checkpoint_id=ref.id)

    async def destroy(self, sandbox: Sandbox, operation: str = "destroy") -> None:
        """Destroy ``sandbox``, timed as ``operation``. On a provider that deletes
        asynchronously (``Capabilities.deletion``), also how long until its listing no longer
        shows the sandbox: the ``gone`` span (:func:`gone_operation`), when it is planned."""
        await self.timed(operation, lambda: self.provider.destroy(sandbox), sandbox=sandbox)
        self.live.pop(sandbox.id, None)
        self._ledger("destroyed", sandbox_id=sandbox.id)
        gone = gone_operation(operation)
        deletion = getattr(self.capabilities, "deletion", Deletion.SYNC)
        if deletion is Deletion.ASYNC and self._recorded[gone] < self._planned[gone]:
            polls: dict[str, Any] = {}
            await self.timed(
                gone,
                lambda: until_gone(self.provider, sandbox, self.recorder.run_id, polls),
                sandbox=sandbox,
                extra=polls,
            )

    async def cleanup(self) -> None:
        """Destroy (untimed, under the retry policy and the grace) every sandbox still alive,
        then delete every checkpoint; never raises but a cancellation (after recording what
        it could not clean)."""
        cancelled = await self._sweep(
            self.live,
            lambda sandbox: cleaning.destroy_sandbox(
                self.adapter, sandbox, policy=self.policy, grace=self.grace
            ),
            lambda sandbox: (sandbox.id, None),
            ("destroyed", "destroy_failed"),
            None,
        )
        cancelled = await self._sweep(
            self.checkpoints,
            lambda ref: cleaning.delete_checkpoint(
                self.adapter, ref, policy=self.policy, grace=self.grace
            ),
            lambda ref: (ref.sandbox_id, ref.id),
            ("checkpoint_deleted", "checkpoint_delete_failed"),
            cancelled,
        )
        if cancelled is not None:
            raise cancelled

    async def _sweep(
        self,
        held: dict[str, Any],
        clean: Callable[[Any], Awaitable[None]],
        ids: Callable[[Any], tuple[str, str | None]],
        events: tuple[str, str],
        cancelled: asyncio.CancelledError | None,
    ) -> asyncio.CancelledError | None:
        """``clean`` each of ``held`` (sandboxes or checkpoints by id) in turn: one cleaned
        leaves ``held`` and the ledger says so (``events[0]``); one that fails, and every one
        after a cancellation, is recorded as given up (``events[1]``). Returns the
        cancellation (the one given, or one met here), for the caller to raise at the end."""
        done, failed = events
        for key, item in list(held.items()):
            sandbox_id, checkpoint_id = ids(item)
            if cancelled is None:
                try:
                    await clean(item)
                except asyncio.CancelledError as exc:
                    cancelled = exc
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded; the sweep and reap go on
                    self._gave_up(failed, sandbox_id, checkpoint_id, exc)
                    continue
                else:
                    held.pop(key, None)
                    more = {"checkpoint_id": checkpoint_id} if checkpoint_id is not None else {}
                    self._ledger(done, sandbox_id=sandbox_id, **more, by="cleanup")
                    continue
            self._gave_up(failed, sandbox_id, checkpoint_id, cancelled)
        return cancelled

    def _gave_up(
        self, event: str, sandbox_id: str | None, checkpoint_id: str | None, exc: BaseException
    ) -> None:
        if isinstance(exc, GraceExpired):
            why = f"the cleanup grace ({self.grace.grace_s:g} s) ran out"
        elif isinstance(exc, asyncio.CancelledError):
            why = "cleanup was cancelled"
        else:
            why = describe_error(exc)
        more = {"checkpoint_id": checkpoint_id} if checkpoint_id is not None else {}
        # A run failing on its results cannot record this either; reap finds it by label.
        with contextlib.suppress(ResultsUnwritable):
            self._ledger(event, sandbox_id=sandbox_id, error=why, by="cleanup", **more)


async def retry_cleanup(call: Callable[[], Awaitable[T]]) -> T:
    """``call`` under the one cleanup retry policy (bench/cleanup.py)."""
    return await cleaning.retry(call)


async def destroy_gone_ok(provider: Provider, sandbox: Sandbox) -> None:
    """Destroy under the one retry policy, counting "no such sandbox" as done."""
    await cleaning.destroy_sandbox(provider, sandbox)
