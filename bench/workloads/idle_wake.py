"""idle_wake: how long the first command takes after a sandbox sat idle.

One iteration::

    create | first_exec | (idle for idle_s, no calls at all) | exec_after_idle | destroy

Providers that sleep on idle (Sprites hibernates after ~30 s) must wake on this exec, so
``exec_after_idle`` is their wake latency; on providers that stay up it is an ordinary exec,
the baseline to read it against. Set ``idle_s`` past the provider's sleep threshold to measure
a wake (the default suite keeps it short). For providers with an explicit pause, the
pause_resume workload's resume is the comparable figure. A wake of a second or more is named
in the report's warnings (bench/workloads/idle_wake_report.py): it is latency, not a failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import Workload, exit_zero
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Extra, Operation, Role
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext


@dataclass(frozen=True, kw_only=True)
class IdleWakeSettings:
    idle_s: float = setting(
        2.0,
        help="seconds the sandbox sits idle before exec_after_idle (past the provider's sleep "
        "threshold to measure a wake)",
        unit="s",
        minimum=0.001,
        maximum=86_400,
    )


class IdleWake(Workload):
    name: ClassVar[str] = "idle_wake"
    Settings: ClassVar[type] = IdleWakeSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
        Operation(
            "exec_after_idle",
            help="`true` after idle_s without any call: the wake of a provider that slept",
            roles=(Role.WAKE,),
            after_idle="idle_s",
        ),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        ATTEMPTS,
        Extra("idle_s", float, unit="s", help="how long the sandbox sat idle before the exec"),
    )

    #: A warning for wakes of a second or more.
    report: ClassVar[Any] = "bench.workloads.idle_wake_report"

    def waits_s(self) -> float:
        return self.settings.idle_s

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        idle_s = self.settings.idle_s
        await asyncio.sleep(idle_s)
        await ctx.timed(
            "exec_after_idle",
            lambda: ctx.provider.exec(sandbox, ["true"], timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=exit_zero,
            extra={"idle_s": idle_s},
        )
        await ctx.destroy(sandbox)
