"""lifecycle: how long a sandbox takes to exist, to be usable, and to go away.

One iteration, on a fresh sandbox::

    t0        create() returns           first `true` exits 0          destroy() returns
    |-------- create --------|--------- first_exec ---------|          |-- destroy --|
    |------------------------- ready ------------------------|

* ``create``: the provider's create call, until it says the sandbox exists.
* ``first_exec``: from create's return until the first ``true`` that exits 0. Providers whose
  create returns before the sandbox can run commands show it here; attempts that fail while
  the sandbox is not ready yet are retried every 50 ms (their count is in ``extra.attempts``).
* ``ready``: create's start to first successful exec's end, one span on the same clock
  (PerfKit's "time to create" versus "time to ready").
* ``destroy``: the provider's destroy call.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar

from bench.store import utc_now_iso
from bench.workloads.base import Workload, exit_zero
from bench.workloads.shape import Extra, Operation, Role
from providers.base import ExecResult, Provider, Sandbox
from providers.errors import NotFound, SandboxCrashed, Unavailable

if TYPE_CHECKING:
    from bench.iteration import IterationContext

#: Errors that mean "not ready yet" while waiting for the first exec.
_NOT_READY = (Unavailable, NotFound, SandboxCrashed)
_RETRY_INTERVAL_S = 0.05


async def exec_until_ready(
    provider: Provider, sandbox: Sandbox, *, timeout_s: float, attempts: dict[str, Any]
) -> ExecResult:
    """Exec ``true`` until it exits 0; the caller's timeout bounds the whole wait."""
    tries = 0
    while True:
        tries += 1
        attempts["attempts"] = tries
        try:
            result = await provider.exec(sandbox, ["true"], timeout_s=timeout_s)
        except _NOT_READY:
            await asyncio.sleep(_RETRY_INTERVAL_S)
            continue
        if result.exit_code == 0:
            return result
        await asyncio.sleep(_RETRY_INTERVAL_S)


async def timed_first_exec(
    ctx: IterationContext,
    sandbox: Sandbox,
    operation: str = "first_exec",
    *,
    extra: dict[str, Any] | None = None,
) -> ExecResult:
    """Time :func:`exec_until_ready` as ``operation``; the attempts go in ``extra.attempts``."""
    extra = {} if extra is None else extra
    return await ctx.timed(
        operation,
        lambda: exec_until_ready(ctx.provider, sandbox, timeout_s=ctx.timeout_s, attempts=extra),
        sandbox=sandbox,
        check=exit_zero,
        extra=extra,
    )


#: ``first_exec``'s extra: how many execs it took (``exec_until_ready``'s retries + 1).
ATTEMPTS = Extra("attempts", int, help="execs of `true` until the first that exited 0")


class Lifecycle(Workload):
    name: ClassVar[str] = "lifecycle"
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call", roles=(Role.CREATE,)),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
        Operation(
            "ready",
            help="create's start to the first successful exec's end",
            derived=True,
            roles=(Role.READY,),
        ),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (ATTEMPTS,)

    async def run(self, ctx: IterationContext) -> None:
        started_at = utc_now_iso()
        t0 = time.perf_counter_ns()
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        ctx.record_span(
            "ready",
            started_at=started_at,
            duration_s=(time.perf_counter_ns() - t0) / 1e9,
            sandbox=sandbox,
        )
        await ctx.destroy(sandbox)
