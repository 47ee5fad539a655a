"""checkpoint: capture a sandbox's state, change it, restore it, and prove the state came back.

One iteration::

    create | write_state | checkpoint | mutate | restore | first_exec_after_restore | verify
           | delete_checkpoint | destroy [| destroy_restored]

* ``write_state``: an exec that writes ``state_mb`` MiB of random data into the scratch
  directory, split over :data:`STATE_FILES` files, and prints each one's size and sha256
  (the checkpointed state).
* ``checkpoint``: the provider's checkpoint/snapshot call, until it returns a reference.
* ``mutate``: an exec that appends to every file, so a restore that restores nothing is caught.
* ``restore``: the provider's restore call. Where restore lands is the provider's declared
  semantics: in place (the same sandbox is rewound) or a new sandbox from the checkpoint.
* ``first_exec_after_restore``: from restore's return until the first ``true`` that exits 0.
* ``verify``: one exec in the restored sandbox that prints each file's size and sha256 (or
  that it is missing); the iteration passes only if every file is as checkpointed. Else a
  ``FidelityError`` (``extra.verified`` false; a fidelity check of kind ``restore``) whose
  message says what came back: files **missing**, **truncated** (shorter than checkpointed),
  **still mutated** (the change made after the checkpoint is there: nothing was rolled back)
  or **different** (same size or longer, other bytes), with the lists in ``extra``.
* ``delete_checkpoint``: frees the checkpoint's storage.
* ``destroy`` / ``destroy_restored``: the original sandbox and, for new-sandbox restores, the
  restored one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Check, Extra, Fidelity, Operation, Role
from providers.base import Capabilities, ExecResult, Op, RestoreTarget
from providers.settings import setting

#: The size of the state a checkpoint holds, on the records of the operations that handle it.
STATE_MB = Extra("state_mb", int, unit="MiB", help="size of the state written and checkpointed")
#: How many files the state is split over, so a restore can be seen to lose some of them.
STATE_FILES = 4
#: What ``mutate`` appends to each file after the checkpoint.
MUTATION = b"mutated\n"
#: What ``verify`` found, on its record.
RESTORE_EXTRAS: tuple[Extra, ...] = (
    Extra("files_checked", int, help="state files compared after the restore"),
    Extra("files_missing", list, help="state files the restore did not bring back"),
    Extra("files_truncated", list, help="state files shorter than checkpointed"),
    Extra("files_mutated", list, help="state files still holding the post-checkpoint change"),
    Extra("files_different", list, help="state files of other content than checkpointed"),
)


def state_script(paths: list[str], sizes: list[int]) -> str:
    """Write each file with its size of random data, then print ``size sha256 path`` of each."""
    writes = " && ".join(
        f"head -c {size} /dev/urandom > {path}" for path, size in zip(paths, sizes, strict=True)
    )
    return f"{writes} && {list_script(paths)}"


def list_script(paths: list[str]) -> str:
    """Print ``size sha256 path`` per file, or ``missing - path``; exits 0 either way."""
    return (
        f'for f in {" ".join(paths)}; do if [ -f "$f" ]; then '
        'echo "$(wc -c < "$f") $(sha256sum < "$f" | cut -c1-64) $f"; '
        'else echo "missing - $f"; fi; done'
    )


def parse_listing(result: ExecResult, paths: list[str]) -> dict[str, tuple[int, str] | None]:
    """``path -> (size, sha256)``, or None for a missing file, from :func:`list_script`."""
    exit_zero(result)
    found: dict[str, tuple[int, str] | None] = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        size, _, rest = line.strip().partition(" ")
        digest, _, path = rest.partition(" ")
        if path not in paths:
            continue
        if size == "missing":
            found[path] = None
        elif size.isdigit() and len(digest) == 64:
            found[path] = (int(size), digest)
    if set(found) != set(paths):
        raise CheckFailed("UnexpectedOutput", f"not a listing of the state: {result.stdout[:80]!r}")
    return found


def compare_state(
    before: dict[str, tuple[int, str] | None], after: dict[str, tuple[int, str] | None]
) -> dict[str, list[str]]:
    """Each file of ``before`` sorted into missing, truncated, mutated, different (names)."""
    verdict: dict[str, list[str]] = {
        "files_missing": [],
        "files_truncated": [],
        "files_mutated": [],
        "files_different": [],
    }
    for path, was in before.items():
        now, name = after.get(path), path.rsplit("/", 1)[-1]
        assert was is not None
        if now is None:
            verdict["files_missing"].append(name)
        elif now[0] < was[0]:
            verdict["files_truncated"].append(f"{name} ({now[0]:,} of {was[0]:,} bytes)")
        elif now[0] == was[0] + len(MUTATION) and now[1] != was[1]:
            verdict["files_mutated"].append(name)
        elif now != was:
            verdict["files_different"].append(name)
    return verdict


def describe(verdict: dict[str, list[str]], total: int) -> str:
    """One line: how many files came back intact and what happened to the others."""
    bad = sum(len(v) for v in verdict.values())
    words = {
        "files_missing": "missing",
        "files_truncated": "truncated",
        "files_mutated": "still mutated (not rolled back)",
        "files_different": "different",
    }
    parts = [f"{words[k]}: {', '.join(v)}" for k, v in verdict.items() if v]
    return f"restore brought back {total - bad} of {total} files intact; " + "; ".join(parts)


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
        Operation(
            "verify",
            help="size and sha256 of each restored file against the checkpointed ones",
            checks=(Check(Fidelity.RESTORE),),
        ),
        Operation("delete_checkpoint", help="the provider's call freeing the checkpoint"),
        Operation("destroy", help="the provider's destroy call"),
        Operation(
            "destroy_restored", help="destroy of the restored sandbox (new-sandbox restores)"
        ),
    )
    extras: ClassVar[tuple[Extra, ...]] = (STATE_MB, ATTEMPTS, *RESTORE_EXTRAS)

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = [op.name for op in self.operations]
        if caps.restore_target is RestoreTarget.IN_PLACE:
            ops.remove("destroy_restored")
        return ops

    async def run(self, ctx: IterationContext) -> None:
        provider = ctx.provider
        state_mb = self.settings.state_mb
        scratch = ctx.capabilities.scratch_dir.rstrip("/")
        paths = [f"{scratch}/sandbox-bench-state-{i}.bin" for i in range(STATE_FILES)]
        total = state_mb * 1024 * 1024
        sizes = [total // STATE_FILES] * STATE_FILES
        sizes[0] += total - sum(sizes)
        sandbox = await ctx.create()
        state: dict[str, dict[str, tuple[int, str] | None]] = {}

        def remember(result: ExecResult) -> None:
            state["before"] = parse_listing(result, paths)
            found = state["before"]
            written = [entry[0] if (entry := found[p]) else None for p in paths]
            if written != sizes:
                raise CheckFailed("UnexpectedOutput", f"wrote {written} bytes, meant {sizes}")

        await ctx.timed(
            "write_state",
            lambda: provider.exec(sandbox, state_script(paths, sizes), timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=remember,
            extra={"state_mb": state_mb},
        )
        ref = await ctx.checkpoint(sandbox, extra={"state_mb": state_mb})

        def changed(result: ExecResult) -> None:
            now = parse_listing(result, paths)
            if compare_state(state["before"], now)["files_mutated"] != [
                p.rsplit("/", 1)[-1] for p in paths
            ]:
                raise CheckFailed("UnexpectedOutput", "mutating the state did not change it")

        append = " && ".join(f"echo mutated >> {p}" for p in paths)
        await ctx.timed(
            "mutate",
            lambda: provider.exec(
                sandbox, f"{append} && {list_script(paths)}", timeout_s=ctx.timeout_s
            ),
            sandbox=sandbox,
            check=changed,
        )
        restored = await ctx.timed(
            "restore", lambda: provider.restore(ref), sandbox=sandbox, extra={"state_mb": state_mb}
        )
        ctx.track(restored)
        await timed_first_exec(ctx, restored, "first_exec_after_restore")

        verified: dict[str, object] = {"verified": True, "state_mb": state_mb}

        def same_state(result: ExecResult) -> None:
            verdict = compare_state(state["before"], parse_listing(result, paths))
            verified["files_checked"] = len(paths)
            if any(verdict.values()):
                raise CheckFailed(
                    "FidelityError",
                    describe(verdict, len(paths)),
                    **{**verified, **verdict, "verified": False},
                )

        await ctx.timed(
            "verify",
            lambda: provider.exec(restored, list_script(paths), timeout_s=ctx.timeout_s),
            sandbox=restored,
            check=same_state,
            extra=verified,
        )
        await ctx.delete_checkpoint(ref)
        await ctx.destroy(sandbox)
        if restored.id != sandbox.id:
            await ctx.destroy(restored, "destroy_restored")
