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

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Extra, Operation, Role
from providers.base import Capabilities, ExecResult
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

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


@dataclass(frozen=True, kw_only=True)
class ExecSettings:
    repeats: int = setting(
        10, help="how many of each command one iteration records", minimum=1, maximum=10_000
    )


class Exec(Workload):
    name: ClassVar[str] = "exec"
    Settings: ClassVar[type] = ExecSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
        Operation("exec_true", help="`true` on the warm sandbox", roles=(Role.EXEC,)),
        Operation("exec_64k", help="a command printing exactly 65,536 bytes, verified"),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        ATTEMPTS,
        Extra("repeat", int, help="which of the iteration's repeats (from 0)"),
        Extra("bytes", int, unit="bytes", help="bytes the command printed (or was to print)"),
    )

    def planned_ops(self, caps: Capabilities) -> list[str]:
        repeats = self.settings.repeats
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
        repeats = self.settings.repeats
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
