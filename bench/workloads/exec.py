"""exec: steady-state command latency on one warm sandbox.

One iteration::

    create | first_exec (until ready) | exec_true x repeats | exec_64k x repeats | destroy

* ``exec_true``: ``true`` as an argv command; the floor of one round trip through the
  provider's exec path (on E2B the SDK wraps every command in ``bash -l -c``).
* ``exec_64k``: a command that prints exactly 65,536 bytes; the byte count is verified
  (``extra.bytes``) and a short or long answer is an ``OutputMismatch`` error.
The ``repeats`` parameter (default 10) sets how many of each an iteration records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.lifecycle import timed_first_exec
from providers.base import Capabilities, ExecResult

if TYPE_CHECKING:
    from bench.runner import IterationContext

OUTPUT_BYTES = 64 * 1024
PRINT_64K = f"head -c {OUTPUT_BYTES} /dev/zero | tr '\\0' x"


def _exactly_64k(result: ExecResult) -> None:
    exit_zero(result)
    if len(result.stdout) != OUTPUT_BYTES or result.stdout.strip(b"x"):
        raise CheckFailed(
            "OutputMismatch",
            f"expected {OUTPUT_BYTES} bytes of 'x', got {len(result.stdout)} bytes",
            bytes=len(result.stdout),
        )


class Exec(Workload):
    name: ClassVar[str] = "exec"
    defaults: ClassVar[dict[str, Any]] = {"repeats": 10}

    def planned_ops(self, caps: Capabilities) -> list[str]:
        repeats = int(self.params["repeats"])
        return [
            "create",
            "first_exec",
            *["exec_true"] * repeats,
            *["exec_64k"] * repeats,
            "destroy",
        ]

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        repeats = int(self.params["repeats"])
        for repeat in range(repeats):
            await ctx.timed(
                "exec_true",
                lambda: ctx.provider.exec(sandbox, ["true"], timeout_s=ctx.timeout_s),
                sandbox=sandbox,
                check=exit_zero,
                extra={"repeat": repeat},
            )
        for repeat in range(repeats):
            await ctx.timed(
                "exec_64k",
                lambda: ctx.provider.exec(sandbox, PRINT_64K, timeout_s=ctx.timeout_s),
                sandbox=sandbox,
                check=_exactly_64k,
                extra={"repeat": repeat, "bytes": OUTPUT_BYTES},
            )
        await ctx.destroy(sandbox)
