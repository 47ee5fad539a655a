"""files: write then read a small and a large file through the provider's file API.

One iteration::

    create | write_1k | read_1k | write_4m | read_4m | destroy

Content is random per iteration and verified byte for byte after each read; a mismatch is a
``ContentMismatch`` error (``extra.verified`` false), never a fast success. Files go to the
provider's scratch directory (``Capabilities.scratch_dir``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar

from bench.workloads.base import CheckFailed, Workload, sha256_hex
from bench.workloads.shape import Extra, Operation

if TYPE_CHECKING:
    from bench.iteration import IterationContext

SIZES = (("1k", 1024), ("4m", 4 * 1024 * 1024))


def _same_as(expected: bytes):
    def check(data: bytes) -> None:
        if data != expected:
            raise CheckFailed(
                "ContentMismatch",
                f"read {len(data)} bytes (sha256 {sha256_hex(data)[:12]}), "
                f"wrote {len(expected)} (sha256 {sha256_hex(expected)[:12]})",
                verified=False,
            )

    return check


class Files(Workload):
    name: ClassVar[str] = "files"
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        *(
            op
            for label, size in SIZES
            for op in (
                Operation(f"write_{label}", help=f"write {size:,} random bytes"),
                Operation(f"read_{label}", help="read them back, compared byte for byte"),
            )
        ),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        Extra("bytes", int, unit="bytes", help="size of the file written or read"),
    )

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        folder = ctx.capabilities.scratch_dir.rstrip("/")
        for label, size in SIZES:
            data = os.urandom(size)
            path = f"{folder}/sandbox-bench-{label}.bin"
            await ctx.timed(
                f"write_{label}",
                lambda path=path, data=data: ctx.provider.write_file(sandbox, path, data),
                sandbox=sandbox,
                extra={"bytes": size},
            )
            await ctx.timed(
                f"read_{label}",
                lambda path=path: ctx.provider.read_file(sandbox, path),
                sandbox=sandbox,
                check=_same_as(data),
                extra={"bytes": size, "verified": True},
            )
        await ctx.destroy(sandbox)
