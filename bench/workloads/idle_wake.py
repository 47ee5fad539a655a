"""idle_wake: how long the first command takes after a sandbox sat idle.

One iteration::

    create | first_exec | (idle for idle_s, no calls at all) | exec_after_idle | destroy

Providers that sleep on idle (Sprites hibernates after ~30 s) must wake on this exec, so
``exec_after_idle`` is their wake latency; on providers that stay up it is an ordinary exec,
the baseline to read it against. Set ``idle_s`` past the provider's sleep threshold to measure
a wake (the default suite keeps it short). For providers with an explicit pause, the
pause_resume workload's resume is the comparable figure.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import Workload, exit_zero
from bench.workloads.lifecycle import timed_first_exec
from providers.base import Capabilities

if TYPE_CHECKING:
    from bench.runner import IterationContext


class IdleWake(Workload):
    name: ClassVar[str] = "idle_wake"
    defaults: ClassVar[dict[str, Any]] = {"idle_s": 2.0}

    def waits_s(self) -> float:
        return float(self.params["idle_s"])

    def planned_ops(self, caps: Capabilities) -> list[str]:
        return ["create", "first_exec", "exec_after_idle", "destroy"]

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        idle_s = float(self.params["idle_s"])
        await asyncio.sleep(idle_s)
        await ctx.timed(
            "exec_after_idle",
            lambda: ctx.provider.exec(sandbox, ["true"], timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=exit_zero,
            extra={"idle_s": idle_s},
        )
        await ctx.destroy(sandbox)
