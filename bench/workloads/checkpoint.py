"""checkpoint: capture a sandbox's state, change it, restore it, and prove the state came back.

One iteration::

    create | write_state | checkpoint | mutate | restore | first_exec_after_restore | verify
           | delete_checkpoint | destroy [| destroy_restored]

* ``write_state``: an exec that writes ``state_mb`` MiB of random data into the scratch
  directory and prints its sha256 (the checkpointed checksum).
* ``checkpoint``: the provider's checkpoint/snapshot call, until it returns a reference.
* ``mutate``: an exec that appends to the file, so a restore that restores nothing is caught.
* ``restore``: the provider's restore call. Where restore lands is the provider's declared
  semantics: in place (the same sandbox is rewound) or a new sandbox from the checkpoint.
* ``first_exec_after_restore``: from restore's return until the first ``true`` that exits 0.
* ``verify``: an exec of ``sha256sum`` in the restored sandbox; the iteration passes only if it
  equals the checkpointed checksum, else a ``FidelityError`` (``extra.verified`` false).
* ``delete_checkpoint``: frees the checkpoint's storage.
* ``destroy`` / ``destroy_restored``: the original sandbox and, for new-sandbox restores, the
  restored one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bench.workloads.base import CheckFailed, Workload, sha256_of_output
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Extra, Operation, Role
from providers.base import Capabilities, ExecResult, Op, RestoreTarget
from providers.settings import setting

#: The size of the state a checkpoint holds, on the records of the operations that handle it.
STATE_MB = Extra("state_mb", int, unit="MiB", help="size of the state written and checkpointed")


@dataclass(frozen=True, kw_only=True)
class CheckpointSettings:
    state_mb: int = setting(
        16, help="random data written before the checkpoint", unit="MiB", minimum=1,
        maximum=65_536,
    )  # fmt: skip


if TYPE_CHECKING:
    from bench.iteration import IterationContext


class Checkpoint(Workload):
    name: ClassVar[str] = "checkpoint"
    requires: ClassVar[frozenset[Op]] = frozenset({Op.CHECKPOINT, Op.RESTORE})
    capability_ops: ClassVar[dict[str, Op]] = {"checkpoint": Op.CHECKPOINT, "restore": Op.RESTORE}
    Settings: ClassVar[type] = CheckpointSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("write_state", help="write state_mb MiB of random data, print its sha256"),
        Operation("checkpoint", help="the provider's checkpoint call", roles=(Role.CHECKPOINT,)),
        Operation("mutate", help="append to the state, so a restore of nothing is caught"),
        Operation("restore", help="the provider's restore call", roles=(Role.RESTORE,)),
        Operation("first_exec_after_restore", help="restore's return to the first `true`"),
        Operation("verify", help="sha256 of the restored state against the checkpointed one"),
        Operation("delete_checkpoint", help="the provider's call freeing the checkpoint"),
        Operation("destroy", help="the provider's destroy call"),
        Operation(
            "destroy_restored", help="destroy of the restored sandbox (new-sandbox restores)"
        ),
    )
    extras: ClassVar[tuple[Extra, ...]] = (STATE_MB, ATTEMPTS)

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = [op.name for op in self.operations]
        if caps.restore_target is RestoreTarget.IN_PLACE:
            ops.remove("destroy_restored")
        return ops

    async def run(self, ctx: IterationContext) -> None:
        provider = ctx.provider
        state_mb = self.settings.state_mb
        path = f"{ctx.capabilities.scratch_dir.rstrip('/')}/sandbox-bench-state.bin"
        sandbox = await ctx.create()
        digest: dict[str, str] = {}

        def remember(result: ExecResult) -> None:
            digest["before"] = sha256_of_output(result)

        await ctx.timed(
            "write_state",
            lambda: provider.exec(
                sandbox,
                f"head -c {state_mb * 1024 * 1024} /dev/urandom > {path} && sha256sum {path}",
                timeout_s=ctx.timeout_s,
            ),
            sandbox=sandbox,
            check=remember,
            extra={"state_mb": state_mb},
        )
        ref = await ctx.checkpoint(sandbox, extra={"state_mb": state_mb})

        def changed(result: ExecResult) -> None:
            if sha256_of_output(result) == digest["before"]:
                raise CheckFailed("UnexpectedOutput", "mutating the state did not change it")

        await ctx.timed(
            "mutate",
            lambda: provider.exec(
                sandbox, f"echo mutated >> {path} && sha256sum {path}", timeout_s=ctx.timeout_s
            ),
            sandbox=sandbox,
            check=changed,
        )
        restored = await ctx.timed(
            "restore", lambda: provider.restore(ref), sandbox=sandbox, extra={"state_mb": state_mb}
        )
        ctx.track(restored)
        await timed_first_exec(ctx, restored, "first_exec_after_restore")

        def same_state(result: ExecResult) -> None:
            after = sha256_of_output(result)
            if after != digest["before"]:
                raise CheckFailed(
                    "FidelityError",
                    f"restored sha256 {after[:12]} != checkpointed {digest['before'][:12]}",
                    verified=False,
                )

        await ctx.timed(
            "verify",
            lambda: provider.exec(restored, f"sha256sum {path}", timeout_s=ctx.timeout_s),
            sandbox=restored,
            check=same_state,
            extra={"verified": True, "state_mb": state_mb},
        )
        await ctx.delete_checkpoint(ref)
        await ctx.destroy(sandbox)
        if restored.id != sandbox.id:
            await ctx.destroy(restored, "destroy_restored")
