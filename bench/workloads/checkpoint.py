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

from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import CheckFailed, Workload, sha256_of_output
from bench.workloads.lifecycle import timed_first_exec
from providers.base import Capabilities, ExecResult, Op, RestoreTarget

if TYPE_CHECKING:
    from bench.runner import IterationContext


class Checkpoint(Workload):
    name: ClassVar[str] = "checkpoint"
    requires: ClassVar[frozenset[Op]] = frozenset({Op.CHECKPOINT, Op.RESTORE})
    capability_ops: ClassVar[dict[str, Op]] = {"checkpoint": Op.CHECKPOINT, "restore": Op.RESTORE}
    defaults: ClassVar[dict[str, Any]] = {"state_mb": 16}

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = [
            "create",
            "write_state",
            "checkpoint",
            "mutate",
            "restore",
            "first_exec_after_restore",
            "verify",
            "delete_checkpoint",
            "destroy",
        ]
        if caps.restore_target is not RestoreTarget.IN_PLACE:
            ops.append("destroy_restored")
        return ops

    async def run(self, ctx: IterationContext) -> None:
        provider = ctx.provider
        state_mb = int(self.params["state_mb"])
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
        ref = await ctx.timed(
            "checkpoint",
            lambda: provider.checkpoint(sandbox),
            sandbox=sandbox,
            extra={"state_mb": state_mb},
        )

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
        await ctx.timed("delete_checkpoint", lambda: provider.delete_checkpoint(ref))
        await ctx.destroy(sandbox)
        if restored.id != sandbox.id:
            await ctx.destroy(restored, "destroy_restored")
