"""checkpoint_scaling and concurrency_scaling: how latency grows with state and with load.

checkpoint_scaling (one sandbox; for each size S in ``sizes_mb``, default 1, 16, 64, 256)::

    create | write_state_Smb | checkpoint_Smb | restore_Smb | verify_Smb | delete_checkpoint_Smb
           | destroy_restored_Smb (new-sandbox restores) | ... next size ... | destroy

Each ``restore_Smb`` is timed from the restore call to its return; ``verify_Smb`` checks the
restored sha256 (``FidelityError`` otherwise). The report draws checkpoint and restore latency
against S: how the cost grows with an agent's working set.

concurrency_scaling (for each level C in ``levels``, default 1, 10, 50, 100)::

    C tasks at once:  create_cC | exec_cC (`true`) | destroy_cC
    round_cC: wall time of the whole round (C / round_cC = throughput)

All C creates of a level are released together (closed-loop within each task), so the p50 and
p99 of ``create_cC`` against C show contention in the provider's control plane.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.store import utc_now_iso
from bench.workloads.base import (
    CheckFailed,
    StepFailed,
    Workload,
    exit_zero,
    sha256_of_output,
)
from bench.workloads.checkpoint import STATE_MB
from bench.workloads.shape import Extra, Operation, Scale
from providers.base import Capabilities, ExecResult, Op, RestoreTarget, Sandbox
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

#: The scaling figures and the throughput table.
REPORT = "bench.workloads.scaling_report"


def _distinct(values: tuple[int, ...], key: str) -> None:
    if not values:
        raise ValueError(f"{key} needs at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"{key} lists a value twice")


@dataclass(frozen=True, kw_only=True)
class CheckpointScalingSettings:
    sizes_mb: tuple[int, ...] = setting(
        (1, 16, 64, 256), help="state sizes, one checkpoint and restore each", unit="MiB",
        minimum=1, maximum=65_536,
    )  # fmt: skip

    def __post_init__(self) -> None:
        _distinct(self.sizes_mb, "sizes_mb")


@dataclass(frozen=True, kw_only=True)
class ConcurrencyScalingSettings:
    levels: tuple[int, ...] = setting(
        (1, 10, 50, 100), help="tasks released together, one round each", minimum=1,
        maximum=10_000,
    )  # fmt: skip

    def __post_init__(self) -> None:
        _distinct(self.levels, "levels")


def _scaled(name: str, help: str, **more: Any) -> Operation:
    return Operation(name, help=help, scale=Scale.STATE_MB, **more)


class CheckpointScaling(Workload):
    name: ClassVar[str] = "checkpoint_scaling"
    requires: ClassVar[frozenset[Op]] = frozenset({Op.CHECKPOINT, Op.RESTORE})
    Settings: ClassVar[type] = CheckpointScalingSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        _scaled("write_state", "write S MiB of random data, print its sha256"),
        _scaled("checkpoint", "the provider's checkpoint call with S MiB of state"),
        _scaled("restore", "the provider's restore call of that checkpoint"),
        _scaled("verify", "sha256 of the restored state against the checkpointed one"),
        _scaled("delete_checkpoint", "the provider's call freeing the checkpoint"),
        _scaled("destroy_restored", "destroy of the restored sandbox (new-sandbox restores)"),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (STATE_MB,)
    report: ClassVar[Any] = REPORT

    @property
    def capability_ops(self) -> dict[str, Op]:  # type: ignore[override]
        ops: dict[str, Op] = {}
        for size in self.settings.sizes_mb:
            ops[f"checkpoint_{size}mb"] = Op.CHECKPOINT
            ops[f"restore_{size}mb"] = Op.RESTORE
        return ops

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = ["create"]
        for size in self.settings.sizes_mb:
            steps = ("write_state", "checkpoint", "restore", "verify", "delete_checkpoint")
            ops += [f"{step}_{size}mb" for step in steps]
            if caps.restore_target is not RestoreTarget.IN_PLACE:
                ops.append(f"destroy_restored_{size}mb")
        return [*ops, "destroy"]

    async def run(self, ctx: IterationContext) -> None:
        provider = ctx.provider
        path = f"{ctx.capabilities.scratch_dir.rstrip('/')}/sandbox-bench-scaling.bin"
        sandbox = await ctx.create()
        for size in self.settings.sizes_mb:
            digest: dict[str, str] = {}

            def remember(result: ExecResult, digest: dict[str, str] = digest) -> None:
                digest["before"] = sha256_of_output(result)

            await ctx.timed(
                f"write_state_{size}mb",
                lambda size=size: provider.exec(
                    sandbox,
                    f"head -c {size * 1024 * 1024} /dev/urandom > {path} && sha256sum {path}",
                    timeout_s=ctx.timeout_s,
                ),
                sandbox=sandbox,
                check=remember,
                extra={"state_mb": size},
            )
            ref = await ctx.checkpoint(sandbox, f"checkpoint_{size}mb", extra={"state_mb": size})
            restored = await ctx.timed(
                f"restore_{size}mb",
                lambda ref=ref: provider.restore(ref),
                sandbox=sandbox,
                extra={"state_mb": size},
            )
            ctx.track(restored)

            def same(result: ExecResult, digest: dict[str, str] = digest) -> None:
                if sha256_of_output(result) != digest["before"]:
                    raise CheckFailed("FidelityError", "restored state differs", verified=False)

            await ctx.timed(
                f"verify_{size}mb",
                lambda restored=restored: provider.exec(
                    restored, f"sha256sum {path}", timeout_s=ctx.timeout_s
                ),
                sandbox=restored,
                check=same,
                extra={"state_mb": size, "verified": True},
            )
            await ctx.delete_checkpoint(ref, f"delete_checkpoint_{size}mb")
            if restored.id != sandbox.id:
                await ctx.destroy(restored, f"destroy_restored_{size}mb")
        await ctx.destroy(sandbox)


class ConcurrencyScaling(Workload):
    name: ClassVar[str] = "concurrency_scaling"
    Settings: ClassVar[type] = ConcurrencyScalingSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="create of one of C sandboxes released together",
                  scale=Scale.CONCURRENCY),
        Operation("exec", help="`true` in that sandbox", scale=Scale.CONCURRENCY),
        Operation("destroy", help="its destroy", scale=Scale.CONCURRENCY),
        Operation(
            "round",
            help="the wall time of the whole round of C tasks",
            scale=Scale.CONCURRENCY,
            derived=True,
            throughput=True,
        ),
    )  # fmt: skip
    extras: ClassVar[tuple[Extra, ...]] = (
        # The Sample has its own ``concurrency`` field (the runner's); this one is the round's.
        Extra("concurrency", int, help="C, the tasks released together", column=False),
        Extra("slot", int, help="the task's place in its round (from 0)"),
    )
    report: ClassVar[Any] = REPORT

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = []
        for level in self.settings.levels:
            ops += [f"create_c{level}", f"exec_c{level}", f"destroy_c{level}"] * level
            ops.append(f"round_c{level}")
        return ops

    async def run(self, ctx: IterationContext) -> None:
        for level in self.settings.levels:

            async def one(slot: int, level: int = level) -> None:
                extra = {"concurrency": level, "slot": slot}
                sandbox: Sandbox = ctx.track(
                    await ctx.timed(
                        f"create_c{level}", lambda: ctx.provider.create(ctx.spec), extra=extra
                    )
                )
                try:
                    await ctx.timed(
                        f"exec_c{level}",
                        lambda: ctx.provider.exec(sandbox, ["true"], timeout_s=ctx.timeout_s),
                        sandbox=sandbox,
                        check=exit_zero,
                        extra=extra,
                    )
                finally:
                    await ctx.destroy(sandbox, f"destroy_c{level}")

            started_at = utc_now_iso()
            t0 = time.perf_counter_ns()
            outcomes = await asyncio.gather(
                *(one(slot) for slot in range(level)), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, StepFailed):
                    raise outcome
            if not any(isinstance(o, StepFailed) for o in outcomes):
                ctx.record_span(
                    f"round_c{level}",
                    started_at=started_at,
                    duration_s=(time.perf_counter_ns() - t0) / 1e9,
                    sandbox=None,
                )
