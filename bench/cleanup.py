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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from providers.base import CheckpointRef, Provider, Sandbox
from providers.errors import AuthError, NotFound, QuotaOrRateLimited, Unsupported

T = TypeVar("T")

#: Default of ``[run] grace_s``: how long cleanup may go on after the first interrupt.
DEFAULT_GRACE_S = 30.0
#: How many deletes a sweep runs at once (a run at concurrency 50 may leave 50 sandboxes).
SWEEP_PARALLEL = 16

LedgerWriter = Callable[[dict[str, Any]], None]


class GraceExpired(Exception):
    """Cleanup stopped because the grace after an interrupt ran out (or was skipped)."""


# -- the grace ----------------------------------------------------------------------------------


class Grace:
    """How long cleanup may go on after an interrupt; unbounded until :meth:`start`.

    Lives on one event loop: :meth:`start` and :meth:`skip` must be called on it (a signal
    handler added with ``loop.add_signal_handler``, or ``loop.call_soon_threadsafe``).
    """

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s
        #: The loop time cleanup must end by; None until an interrupt.
        self.deadline: float | None = None
        self.skipped = False
        self._scopes: set[asyncio.Timeout] = set()

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
            self._move(asyncio.get_running_loop().time() + self.grace_s)

    def skip(self) -> None:
        """The second interrupt: cleanup ends now."""
        self.skipped = True
        self._move(asyncio.get_running_loop().time())

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


# -- the retry policy ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """The one retry policy of every cleanup call (see the module docstring)."""

    attempts: int = 4
    backoff_s: tuple[float, ...] = (0.25, 1.0, 2.0)
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
        }


DEFAULT_POLICY = RetryPolicy()
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
        if event == "created" and entry.get("sandbox_id") is not None:
            self.sandboxes.setdefault((provider, str(entry["sandbox_id"])), dict(entry))
        elif event == "destroyed" and entry.get("sandbox_id") is not None:
            self.sandboxes.pop((provider, str(entry["sandbox_id"])), None)
        elif event == "checkpoint_created" and entry.get("checkpoint_id") is not None:
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
    policy: RetryPolicy = DEFAULT_POLICY,
    grace: Grace = NO_GRACE,
) -> tuple[list[str], list[str] | None]:
    """The sandboxes and (where the provider can list them, else None) checkpoints the
    provider lists under ``run_id``'s label."""
    sandboxes = await retry(lambda: provider.list_sandboxes(run_id), policy=policy, grace=grace)
    checkpoints = None
    if provider.capabilities().lists_checkpoints:
        checkpoints = await retry(
            lambda: provider.list_checkpoints(run_id), policy=policy, grace=grace
        )
    return [str(s) for s in sandboxes], (
        None if checkpoints is None else [str(c) for c in checkpoints]
    )


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
    results: list[SweepResult] = []
    for provider_id in ids:
        result = SweepResult(run_id=run_id, provider=provider_id)
        results.append(result)
        sandboxes = {i for p, i in alive.sandboxes if p == provider_id}
        checkpoints = {
            i: str(e.get("sandbox_id") or "")
            for (p, i), e in alive.checkpoints.items()
            if p == provider_id
        }
        provider = providers.get(provider_id)
        if provider is None:
            result.found = sorted(sandboxes)
            result.checkpoints_found = sorted(checkpoints)
            if sandboxes or checkpoints or provider_id in wanted:
                result.failed["*"] = "provider not available here (credentials or SDK missing)"
            continue
        cleaner = _Cleaner(provider, result, ledger, by=by, policy=policy, grace=grace)
        if listing:
            try:
                listed, listed_checkpoints = await list_run(
                    provider, run_id, policy=policy, grace=grace
                )
            except Exception as exc:  # noqa: BLE001 - what the ledger shows still gets swept
                result.failed["list"] = describe_error(exc)
                ledger({"event": "sweep_failed", "by": by, "provider": provider_id,
                        "error": describe_error(exc)})  # fmt: skip
            else:
                sandboxes |= set(listed)
                for checkpoint_id in listed_checkpoints or ():
                    checkpoints.setdefault(checkpoint_id, "")
        result.found = sorted(sandboxes)
        result.checkpoints_found = sorted(checkpoints)
        if dry_run:
            continue
        # Sandboxes first: they bill by the second, checkpoints by storage.
        await asyncio.gather(*(cleaner.destroy(s) for s in result.found))
        await asyncio.gather(*(cleaner.delete(c, checkpoints[c]) for c in checkpoints))
        result.destroyed.sort()
        result.checkpoints_deleted.sort()
    return results


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
