"""Cleanup in one place: what a run created, what is still alive, one retry policy, one sweep.

Three callers share everything here, so a sandbox or checkpoint is cleaned the same way
whoever finds it:

* an iteration's own cleanup (:meth:`bench.iteration.IterationContext.cleanup`): what the
  iteration created and did not destroy itself (a failed, cut short or interrupted one);
* the end-of-run sweep (:meth:`bench.runner.Runner.sweep`, and the cluster workers' sweep in
  bench/cluster.py): what the ledger still shows alive, and what the providers list under the
  run's label (a create that completed on the provider after our side gave up);
* ``sandbox-bench reap`` (bench/reap.py): the same for runs that died (``kill -9``).

Resources and the ledger
------------------------
Sandboxes and checkpoints are resources: each is written to the run's ledger (ledger.jsonl,
one JSON object per line, flushed at once) when it is created and when it is gone::

    created              sandbox_id                   a sandbox exists (create, restore, fork)
    destroyed            sandbox_id [by]              it is gone (by: cleanup, sweep, reap)
    destroy_failed       sandbox_id error [by]        a cleanup gave up on it (still alive)
    checkpoint_created   checkpoint_id sandbox_id     a checkpoint exists (of that sandbox)
    checkpoint_deleted   checkpoint_id [by]           it is gone
    checkpoint_delete_failed  checkpoint_id error [by]
    sweep_failed         error                        a provider could not be listed

(every entry also has ``at``, ``provider`` and, from iterations, ``workload`` and
``iteration``). :class:`Alive` replays a ledger into what is still alive. Entries of other
kinds are ignored, so ledgers written before checkpoints were resources still read.

The retry policy
----------------
Cleanup is never measured, so unlike measured calls it retries (:func:`retry`): up to
``attempts`` times, each bounded by ``attempt_timeout_s``, waiting ``backoff_s`` between (a
rate limit's Retry-After instead, up to ``max_wait_s``). Bad credentials (AuthError) and an
operation the provider lacks (Unsupported) are never retried: they will not work in a second.
A delete that meets NotFound is done: destroy and delete are idempotent, and a retry after an
answer that was lost finds the resource gone.

The grace
---------
After an interrupt, cleanup is bounded by a :class:`Grace` (``[run] grace_s``, default 30 s):
every cleanup call and every wait between attempts ends at the grace's deadline at the latest,
and a second signal ends the grace at once. What is still alive then is named (in the ledger as
``destroy_failed``, in the manifest's ``left_alive``) for ``sandbox-bench reap``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from providers.base import CheckpointRef, Deletion, Provider, Sandbox
from providers.errors import AuthError, NotFound, ProtocolError, QuotaOrRateLimited, Unsupported

T = TypeVar("T")

#: Default of ``[run] grace_s``: how long cleanup may go on after the first interrupt.
DEFAULT_GRACE_S = 30.0
#: How many deletes a sweep runs at once (a run at concurrency 50 may leave 50 sandboxes).
SWEEP_PARALLEL = 16
#: The part of the grace the iterations' own cleanup may use; the end-of-run sweep has the
#: rest at least.
ITERATIONS_SHARE = 0.7
#: The shortest time one cleanup attempt is given (a run's per-call timeout bounds it too).
MIN_ATTEMPT_S = 5.0

LedgerWriter = Callable[[dict[str, Any]], None]


class GraceExpired(Exception):
    """Cleanup stopped because the grace after an interrupt ran out (or was skipped)."""


# -- the grace ----------------------------------------------------------------------------------


class Grace:
    """How long cleanup may go on after an interrupt; unbounded until :meth:`start`.

    Lives on one event loop: :meth:`start` and :meth:`skip` must be called on it (a signal
    handler added with ``loop.add_signal_handler``, or ``loop.call_soon_threadsafe``).
    :meth:`part` gives a grace that ends earlier (the iterations' own cleanup ends at
    ITERATIONS_SHARE of it, so a provider whose destroys hang cannot leave the end-of-run
    sweep, which also finds what no ledger knows, without time).
    """

    def __init__(self, grace_s: float = DEFAULT_GRACE_S, *, share: float = 1.0) -> None:
        self.grace_s = grace_s
        self.share = share
        #: The loop time cleanup must end by; None until an interrupt.
        self.deadline: float | None = None
        self.skipped = False
        self._scopes: set[asyncio.Timeout] = set()
        self._parts: list[Grace] = []

    def part(self, share: float) -> Grace:
        """A grace that starts and is skipped with this one but ends after ``share`` of it."""
        for child in self._parts:
            if child.share == share * self.share:
                return child
        child = Grace(self.grace_s, share=share * self.share)
        self._parts.append(child)
        if self.deadline is not None:
            child.deadline = self.deadline
        return child

    @property
    def started(self) -> bool:
        return self.deadline is not None

    @property
    def expired(self) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline

    def remaining_s(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def start(self) -> None:
        """The interrupt: from now on cleanup ends within ``grace_s``."""
        if self.deadline is None:
            self._move(asyncio.get_running_loop().time() + self.grace_s * self.share)
        for child in self._parts:
            child.start()

    def skip(self) -> None:
        """The second interrupt: cleanup ends now."""
        self.skipped = True
        self._move(asyncio.get_running_loop().time())
        for child in self._parts:
            child.skip()

    def _move(self, deadline: float) -> None:
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        for scope in list(self._scopes):
            when = scope.when()
            if when is None or when > self.deadline:
                with contextlib.suppress(RuntimeError):  # a scope that is just ending
                    scope.reschedule(self.deadline)

    @contextlib.asynccontextmanager
    async def bounded(self, timeout_s: float) -> AsyncIterator[None]:
        """``asyncio.timeout(timeout_s)`` that also ends at the grace's deadline, even one
        set (or moved earlier) while the block runs."""
        when = asyncio.get_running_loop().time() + timeout_s
        if self.deadline is not None:
            when = min(when, self.deadline)
        async with asyncio.timeout_at(when) as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but no longer than the grace lasts."""
        with contextlib.suppress(TimeoutError):
            async with self.bounded(seconds):
                await asyncio.Event().wait()


async def through_interrupt(work: Awaitable[T]) -> T:
    """Await cleanup ``work`` to its end even when the awaiting task is cancelled once (the
    first interrupt arriving while an iteration is already cleaning up must not abandon its
    cleanup: the grace bounds it). A second cancellation cancels the work too."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise


# -- the retry policy ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """The one retry policy of every cleanup call (see the module docstring)."""

    attempts: int = 6
    backoff_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    #: The longest Retry-After honoured.
    max_wait_s: float = 10.0
    attempt_timeout_s: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "backoff_s": list(self.backoff_s),
            "max_retry_after_s": self.max_wait_s,
            "attempt_timeout_s": self.attempt_timeout_s,
            "never_retried": ["AuthError", "Unsupported"],
            "not_found": "counts as gone (deletes are idempotent)",
            "end_of_run_sweep": "twice the attempts (bench.cleanup.patient)",
        }


DEFAULT_POLICY = RetryPolicy()
#: ``reap`` has nothing else to do and nobody waiting on it: the same policy, more patient (a
#: delete that takes two calls against a provider failing 30 % of them fails one attempt in
#: two; twelve attempts leave about one in 3,000 behind).
REAP_POLICY = RetryPolicy(attempts=12)


def policy_for(timeout_s: float) -> RetryPolicy:
    """The policy of a run whose calls time out after ``timeout_s``: a cleanup attempt that
    takes longer than a measured call may take (but at least MIN_ATTEMPT_S) is given up and
    tried again, rather than waited for."""
    attempt = min(DEFAULT_POLICY.attempt_timeout_s, max(MIN_ATTEMPT_S, timeout_s))
    return RetryPolicy(
        attempts=DEFAULT_POLICY.attempts,
        backoff_s=DEFAULT_POLICY.backoff_s,
        max_wait_s=DEFAULT_POLICY.max_wait_s,
        attempt_timeout_s=attempt,
    )


def patient(policy: RetryPolicy) -> RetryPolicy:
    """The end-of-run sweep's policy: ``policy`` with twice its attempts (12 by default, as
    reap's). Nothing waits on the sweep but the run's end, and what it gives up on is a
    leftover that costs money until reap runs: against a provider failing 30 % of calls, a
    destroy of a bare id (two calls) failed all six attempts about once in 55 (seen in the
    interrupt tests); twelve leave about one in 3,000. After an interrupt the grace bounds
    the sweep as before."""
    return replace(policy, attempts=2 * policy.attempts)


#: A grace that never starts: cleanup bounded by the policy alone.
NO_GRACE = Grace(float("inf"))


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> T:
    """``call`` under ``policy``, ending by the grace's deadline (GraceExpired then)."""
    for attempt in range(policy.attempts):
        if grace.expired:
            raise GraceExpired("the cleanup grace ran out")
        try:
            async with grace.bounded(policy.attempt_timeout_s):
                return await call()
        except (AuthError, Unsupported, NotFound):
            raise
        except Exception as exc:
            if grace.expired:
                raise GraceExpired("the cleanup grace ran out") from exc
            if attempt == policy.attempts - 1:
                raise
            wait = policy.backoff_s[min(attempt, len(policy.backoff_s) - 1)]
            if isinstance(exc, QuotaOrRateLimited) and exc.retry_after_s:
                wait = max(wait, min(exc.retry_after_s, policy.max_wait_s))
            await grace.sleep(wait)
    raise AssertionError("unreachable")


async def destroy_sandbox(
    provider: Provider,
    sandbox: Sandbox,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> None:
    """Destroy under the policy; NotFound counts as done."""
    with contextlib.suppress(NotFound):
        await retry(lambda: provider.destroy(sandbox), policy=policy, grace=grace)


async def delete_checkpoint(
    provider: Provider,
    ref: CheckpointRef,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> None:
    """Delete a checkpoint under the policy; NotFound counts as done."""
    with contextlib.suppress(NotFound):
        await retry(lambda: provider.delete_checkpoint(ref), policy=policy, grace=grace)


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- what the ledger shows alive ----------------------------------------------------------------


@dataclass
class Alive:
    """What a ledger shows created and not yet gone: (provider, id) -> the creating entry."""

    sandboxes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def apply(self, entry: Mapping[str, Any]) -> None:
        event = entry.get("event")
        provider = str(entry.get("provider"))
        # A failed destroy or delete means alive, also of what no "created" entry names (a
        # sweep found it by label).
        if event in ("created", "destroy_failed") and entry.get("sandbox_id") is not None:
            self.sandboxes.setdefault((provider, str(entry["sandbox_id"])), dict(entry))
        elif event == "destroyed" and entry.get("sandbox_id") is not None:
            self.sandboxes.pop((provider, str(entry["sandbox_id"])), None)
        elif (
            event in ("checkpoint_created", "checkpoint_delete_failed")
            and entry.get("checkpoint_id") is not None
        ):
            self.checkpoints.setdefault((provider, str(entry["checkpoint_id"])), dict(entry))
        elif event == "checkpoint_deleted" and entry.get("checkpoint_id") is not None:
            self.checkpoints.pop((provider, str(entry["checkpoint_id"])), None)

    def __bool__(self) -> bool:
        return bool(self.sandboxes or self.checkpoints)

    def providers(self) -> set[str]:
        return {p for p, _ in self.sandboxes} | {p for p, _ in self.checkpoints}

    def names(self) -> list[dict[str, str]]:
        """What is alive, for the manifest's ``left_alive`` (and reap)."""
        out = [
            {"kind": "sandbox", "provider": p, "id": i, **_host(e)}
            for (p, i), e in sorted(self.sandboxes.items())
        ]
        out += [
            {"kind": "checkpoint", "provider": p, "id": i, **_host(e)}
            for (p, i), e in sorted(self.checkpoints.items())
        ]
        return out

    def summary(self) -> str:
        parts = []
        if self.sandboxes:
            parts.append(f"{len(self.sandboxes)} sandbox(es)")
        if self.checkpoints:
            parts.append(f"{len(self.checkpoints)} checkpoint(s)")
        return " and ".join(parts) or "nothing"


def _host(entry: Mapping[str, Any]) -> dict[str, str]:
    return {"host": str(entry["host"])} if entry.get("host") else {}


def alive_from(entries: Iterable[Mapping[str, Any]]) -> Alive:
    alive = Alive()
    for entry in entries:
        if isinstance(entry, Mapping):
            alive.apply(entry)
    return alive


# -- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep found and did for one provider of one run."""

    run_id: str
    provider: str
    found: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    checkpoints_found: list[str] = field(default_factory=list)
    checkpoints_deleted: list[str] = field(default_factory=list)
    #: What could not be done: a resource id (or "list", "*") -> why.
    failed: dict[str, str] = field(default_factory=dict)


async def list_run(
    provider: Provider,
    run_id: str,
    *,
    checkpoints: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> list[str]:
    """The sandboxes (or, with ``checkpoints``, the checkpoints) the provider lists under
    ``run_id``'s label; ProtocolError when the adapter answers with something else."""
    operation = "list_checkpoints" if checkpoints else "list_sandboxes"
    call = provider.list_checkpoints if checkpoints else provider.list_sandboxes

    async def attempt() -> list[str]:
        return _ids(await call(run_id), provider, operation)

    return await retry(attempt, policy=policy, grace=grace)


def _ids(listed: Any, provider: Provider, operation: str) -> list[str]:
    if not isinstance(listed, list | tuple) or not all(isinstance(i, str) for i in listed):
        raise ProtocolError(
            f"the adapter's {operation} returned {type(listed).__name__}, not a list of ids",
            provider=provider.id,
            operation=operation,
        )
    return list(listed)


async def sweep(
    providers: Mapping[str, Provider],
    run_id: str,
    ledger: LedgerWriter,
    *,
    alive: Alive | None = None,
    wanted: Iterable[str] = (),
    by: str = "sweep",
    listing: bool = True,
    dry_run: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> list[SweepResult]:
    """Destroy what ``alive`` shows and (``listing``) what each provider lists under the run's
    label; every outcome goes to ``ledger``. ``wanted`` names providers to report on even
    when nothing of theirs is known alive (a run's providers, for reap)."""
    alive = alive or Alive()
    wanted = set(wanted)
    ids = sorted(set(providers) | alive.providers() | wanted)
    # Providers are swept at once: one whose calls hang must not hold up the others.
    return list(
        await asyncio.gather(
            *(
                _sweep_provider(
                    provider_id,
                    providers.get(provider_id),
                    run_id,
                    ledger,
                    alive=alive,
                    wanted=provider_id in wanted,
                    by=by,
                    listing=listing,
                    dry_run=dry_run,
                    policy=policy,
                    grace=grace,
                )
                for provider_id in ids
            )
        )
    )


async def _sweep_provider(
    provider_id: str,
    provider: Provider | None,
    run_id: str,
    ledger: LedgerWriter,
    *,
    alive: Alive,
    wanted: bool,
    by: str,
    listing: bool,
    dry_run: bool,
    policy: RetryPolicy,
    grace: Grace,
) -> SweepResult:
    result = SweepResult(run_id=run_id, provider=provider_id)
    sandboxes = {i for p, i in alive.sandboxes if p == provider_id}
    checkpoints = {
        i: str(e.get("sandbox_id") or "")
        for (p, i), e in alive.checkpoints.items()
        if p == provider_id
    }
    if provider is None:
        result.found = sorted(sandboxes)
        result.checkpoints_found = sorted(checkpoints)
        if sandboxes or checkpoints or wanted:
            result.failed["*"] = "provider not available here (credentials or SDK missing)"
        return result
    cleaner = _Cleaner(provider, result, ledger, by=by, policy=policy, grace=grace)
    if listing:
        kinds = [False] + ([True] if provider.capabilities().lists_checkpoints else [])
        for of_checkpoints in kinds:
            what = "list_checkpoints" if of_checkpoints else "list"
            try:
                listed = await list_run(
                    provider, run_id, checkpoints=of_checkpoints, policy=policy, grace=grace
                )
            except Exception as exc:  # noqa: BLE001 - what the ledger shows still gets swept
                result.failed[what] = describe_error(exc)
                ledger({"event": "sweep_failed", "by": by, "provider": provider_id,
                        "listing": "checkpoints" if of_checkpoints else "sandboxes",
                        "error": describe_error(exc)})  # fmt: skip
                continue
            if of_checkpoints:
                for checkpoint_id in listed:
                    checkpoints.setdefault(checkpoint_id, "")
            else:
                sandboxes |= set(listed)
    result.found = sorted(sandboxes)
    result.checkpoints_found = sorted(checkpoints)
    if dry_run:
        return result
    # Sandboxes first: they bill by the second, checkpoints by storage.
    await asyncio.gather(*(cleaner.destroy(s) for s in result.found))
    await asyncio.gather(*(cleaner.delete(c, checkpoints[c]) for c in checkpoints))
    if listing and result.destroyed and "list" not in result.failed:
        await cleaner.confirm(run_id)
    listed_checkpoints = listing and provider.capabilities().lists_checkpoints
    if (
        listed_checkpoints
        and result.checkpoints_deleted
        and "list_checkpoints" not in result.failed
    ):
        await cleaner.confirm(run_id, checkpoints=True)
    result.destroyed.sort()
    result.checkpoints_deleted.sort()
    return result


class _Cleaner:
    """Deletes one provider's resources for a sweep, SWEEP_PARALLEL at a time."""

    def __init__(
        self,
        provider: Provider,
        result: SweepResult,
        ledger: LedgerWriter,
        *,
        by: str,
        policy: RetryPolicy,
        grace: Grace,
    ) -> None:
        self.provider = provider
        self.result = result
        self.ledger = ledger
        self.by = by
        self.policy = policy
        self.grace = grace
        self.gate = asyncio.Semaphore(SWEEP_PARALLEL)

    async def destroy(self, sandbox_id: str) -> None:
        result = self.result
        entry = {"provider": result.provider, "sandbox_id": sandbox_id, "by": self.by}
        async with self.gate:
            try:
                await destroy_sandbox(
                    self.provider,
                    Sandbox(id=sandbox_id, provider=result.provider),
                    policy=self.policy,
                    grace=self.grace,
                )
            except Exception as exc:  # noqa: BLE001 - reported; reap can try again
                result.failed[sandbox_id] = describe_error(exc)
                self.ledger({"event": "destroy_failed", "error": describe_error(exc), **entry})
                return
        result.destroyed.append(sandbox_id)
        self.ledger({"event": "destroyed", **entry})

    async def confirm(self, run_id: str, *, checkpoints: bool = False) -> None:
        """List again: a sandbox whose destroy answered ok (with ``checkpoints``: a checkpoint
        whose delete answered ok) but that is still listed was not destroyed: the provider's
        leak. On a provider that deletes sandboxes asynchronously, a sandbox has until a
        cleanup attempt's time to go; checkpoint deletes are taken as synchronous (no adapter
        declares otherwise)."""
        result = self.result
        done = result.checkpoints_deleted if checkpoints else result.destroyed
        event, key, verb = (
            ("checkpoint_delete_failed", "checkpoint_id", "delete")
            if checkpoints
            else ("destroy_failed", "sandbox_id", "destroy")
        )
        wait = not checkpoints and self.provider.capabilities().deletion is Deletion.ASYNC
        loop = asyncio.get_running_loop()
        patience = loop.time() + (self.policy.attempt_timeout_s if wait else 0.0)
        while True:
            try:
                listed = await list_run(
                    self.provider, run_id, checkpoints=checkpoints, policy=self.policy,
                    grace=self.grace,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - unconfirmed, not disproved: say so
                listing = "checkpoint confirmation" if checkpoints else "confirmation"
                self.ledger({"event": "sweep_failed", "by": self.by, "provider": result.provider,
                             "listing": listing, "error": describe_error(exc)})  # fmt: skip
                return
            still = sorted(set(listed) & set(done))
            if not still or loop.time() >= patience:
                break
            await self.grace.sleep(min(1.0, max(0.05, patience - loop.time())))
        why = f"still listed after its {verb} answered ok: the provider did not {verb} it"
        for resource_id in still:
            done.remove(resource_id)
            result.failed[resource_id] = why
            self.ledger({"event": event, "provider": result.provider, key: resource_id,
                         "error": why, "by": self.by})  # fmt: skip

    async def delete(self, checkpoint_id: str, source: str) -> None:
        result = self.result
        ref = CheckpointRef(id=checkpoint_id, provider=result.provider, sandbox_id=source)
        entry = {"provider": result.provider, "checkpoint_id": checkpoint_id,
                 "sandbox_id": source or None, "by": self.by}  # fmt: skip
        async with self.gate:
            try:
                await delete_checkpoint(self.provider, ref, policy=self.policy, grace=self.grace)
            except Exception as exc:  # noqa: BLE001 - reported; reap can try again
                result.failed[checkpoint_id] = describe_error(exc)
                self.ledger({"event": "checkpoint_delete_failed", "error": describe_error(exc),
                             **entry})  # fmt: skip
                return
        result.checkpoints_deleted.append(checkpoint_id)
        self.ledger({"event": "checkpoint_deleted", **entry})
