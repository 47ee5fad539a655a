"""fork: many sandboxes from one running sandbox, and whether each is really its own copy.

One iteration, for each level L of (1, ``children``)::

    create | write_state | start_process
           | fork_cL | verify_child_cL x L | isolate_cL | check_isolation_cL x L
           | destroy_child_cL x L
    (next level) ... | destroy

* ``write_state``: ``state_mb`` MiB of random data written to the scratch directory; its
  sha256 is the parent's state.
* ``start_process``: a background loop that keeps a counter in its own memory (a shell
  variable) and writes it to a file in the scratch directory every 20 ms; its value just
  before each fork is read (untimed).
* ``fork_cL``: the provider's fork call for L children at once (``Provider.fork(count=L)``),
  until it returns them. What the children inherit is the provider's declared
  ``fork_keeps`` (filesystem, or filesystem and memory) and ``fork_method`` (copy-on-write or
  copy), both in the records' ``extra``.
* ``verify_child_cL`` (one per child, all at once): the state file's sha256 must be the
  parent's, else a ``FidelityError``; the counter file is read twice 0.3 s apart: a counter
  that advances is a process that came over with the child (``process_kept``), and one that
  starts at least where the parent's was is memory that came with it. Where ``fork_keeps``
  includes memory the process must be there (else ``FidelityError``); where it is
  filesystem only, what was seen is recorded as an observation (the report notes a child
  that kept more than declared).
* ``isolate_cL``: in the first child, the state file is overwritten and a marker file made.
* ``check_isolation_cL`` (one per other child, and one for the parent): the state is still
  the original and the marker absent, else a ``FidelityError``: the copies are not
  independent.
* ``destroy_child_cL``: each child's destroy.

A check that fails is recorded as an error and the iteration goes on to the next step; a call
that fails ends it (every child is destroyed either way). A provider without fork records
``fork_cL`` ``unsupported`` with its declared reason (E2B and Daytona have it in their pinned
SDKs, Vercel forks from a snapshot, the local provider copies the writable layer; Sprites,
Runloop and CodeSandbox have none).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.iteration import CheckFailed, StepFailed
from bench.workloads import kept_state
from bench.workloads.base import Workload, exit_zero
from bench.workloads.shape import Check, Extra, Fidelity, Operation, Scale
from providers.base import Capabilities, CheckpointCaptures, ExecResult, Op, Sandbox
from providers.settings import setting

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bench.iteration import IterationContext


@dataclass(frozen=True, kw_only=True)
class ForkSettings:
    children: int = setting(
        4, help="children of the second fork (the first has one)", minimum=2, maximum=20
    )
    state_mb: int = setting(
        1, help="random data written before the fork", unit="MiB", minimum=1, maximum=65_536
    )


def _scaled(name: str, help: str, checks: tuple[Check, ...] = ()) -> Operation:
    return Operation(name, help=help, scale=Scale.CONCURRENCY, checks=checks)


class Fork(Workload):
    name: ClassVar[str] = "fork"
    requires: ClassVar[frozenset[Op]] = frozenset({Op.FORK})
    Settings: ClassVar[type] = ForkSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        *kept_state.OPERATIONS,
        _scaled("fork", "the provider's fork call for L children at once"),
        _scaled(
            "verify_child",
            "a child's state sha256 and whether the process came along",
            (Check(Fidelity.FORK),),
        ),
        _scaled("isolate", "overwrite the state in the first child, leave a marker"),
        _scaled(
            "check_isolation",
            "another child, or the parent, still has the original",
            (Check(Fidelity.FORK),),
        ),
        _scaled("destroy_child", "a child's destroy"),
        Operation("destroy", help="the parent's destroy"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        kept_state.STATE_MB,
        Extra("children", int, help="children of this fork call"),
        Extra("fork_keeps", str, help="what the provider declares a fork's children inherit"),
        Extra("fork_method", str, help="how the provider declares it makes them"),
        kept_state.PROCESS_KEPT,
        Extra("memory_kept", bool, help="the child's counter went on from the parent's value"),
    )
    report: ClassVar[Any] = "bench.workloads.fork_report"

    def levels(self) -> tuple[int, int]:
        return (1, self.settings.children)

    @property
    def capability_ops(self) -> dict[str, Op]:  # type: ignore[override]
        return {f"fork_c{level}": Op.FORK for level in self.levels()}

    def waits_s(self) -> float:
        return kept_state.COUNTER_GAP_S * len(self.levels())

    def planned_ops(self, caps: Capabilities) -> list[str]:
        ops = ["create", "write_state", "start_process"]
        for level in self.levels():
            ops += [f"fork_c{level}", *[f"verify_child_c{level}"] * level, f"isolate_c{level}"]
            ops += [f"check_isolation_c{level}"] * level + [f"destroy_child_c{level}"] * level
        return [*ops, "destroy"]

    async def run(self, ctx: IterationContext) -> None:
        scratch = ctx.capabilities.scratch_dir.rstrip("/")
        state, counter = f"{scratch}/sandbox-bench-fork.bin", f"{scratch}/sandbox-bench-counter"
        parent = await ctx.create()
        original = await kept_state.write_state_and_start_process(
            ctx, parent, state=state, counter=counter, state_mb=self.settings.state_mb
        )
        rounds = _Rounds(ctx=ctx, parent=parent, state=state, counter=counter, original=original)
        for level in self.levels():
            await rounds.round(level)
        await ctx.destroy(parent)


@dataclass(kw_only=True)
class _Rounds:
    """The fork rounds of one iteration, on one parent."""

    ctx: IterationContext
    parent: Sandbox
    state: str
    counter: str
    original: str

    @property
    def declared(self) -> dict[str, Any]:
        caps = self.ctx.capabilities
        return {"fork_keeps": str(caps.fork_keeps or ""), "fork_method": caps.fork_method}

    async def soft(self, operation: str, call: Callable[[], Awaitable[Any]], **kw: Any) -> None:
        """A timed step whose wrong answer is recorded and passed over (a failed call is not)."""
        try:
            await self.ctx.timed(operation, call, **kw)
        except StepFailed as exc:
            if not isinstance(exc.__cause__, CheckFailed):
                raise

    async def round(self, level: int) -> None:
        ctx, provider, parent = self.ctx, self.ctx.provider, self.parent
        before = await provider.exec(parent, f"cat {self.counter}", timeout_s=ctx.timeout_s)
        text = before.stdout.decode(errors="replace").strip()
        parent_count = int(text) if text.isdigit() else 0
        children: list[Sandbox] = []

        def adopt(made: list[Sandbox]) -> None:
            for child in made:  # tracked before anything else: destroyed whatever happens
                children.append(ctx.track(child))
            if len(made) != level:
                raise CheckFailed("WrongAnswer", f"fork made {len(made)} of {level} children")

        try:
            await ctx.timed(
                f"fork_c{level}",
                lambda: provider.fork(parent, count=level),
                sandbox=parent,
                check=adopt,
                extra={**self.declared, "children": level},
            )
        except StepFailed as exc:
            if not (isinstance(exc.__cause__, CheckFailed) and children):
                raise
        await asyncio.gather(*(self.verify(child, level, parent_count) for child in children))
        if children:
            await self.isolation(children, level)
        for child in children:
            await ctx.destroy(child, f"destroy_child_c{level}")

    async def verify(self, child: Sandbox, level: int, parent_count: int) -> None:
        ctx = self.ctx
        look = kept_state.probe(self.state, self.counter)
        seen: dict[str, Any] = {**self.declared, "children": level}
        keeps_memory = ctx.capabilities.fork_keeps is CheckpointCaptures.FILESYSTEM_AND_MEMORY
        await self.soft(
            f"verify_child_c{level}",
            lambda: ctx.provider.exec(child, look, timeout_s=ctx.timeout_s),
            sandbox=child,
            check=child_check(self.original, parent_count, keeps_memory, seen),
            extra=seen,
        )

    async def isolation(self, children: list[Sandbox], level: int) -> None:
        ctx, state = self.ctx, self.state
        marker = f"{state}.marker-{secrets.token_hex(4)}"
        first, others = children[0], [*children[1:], self.parent]
        await self.soft(
            f"isolate_c{level}",
            lambda: ctx.provider.exec(
                first, f"head -c 4096 /dev/urandom > {state} && touch {marker}",
                timeout_s=ctx.timeout_s,
            ),
            sandbox=first,
            check=exit_zero,
            extra={"children": level},
        )  # fmt: skip

        def untouched(result: ExecResult) -> None:
            text = result.stdout.decode(errors="replace")
            if "marker=absent" not in text:
                raise CheckFailed("FidelityError", "a marker written in another copy is here",
                                  verified=False)  # fmt: skip
            if kept_state.state_digest(result) != self.original:
                raise CheckFailed("FidelityError", "the state changed with another copy's write",
                                  verified=False)  # fmt: skip

        look = f"sha256sum {state}; [ -e {marker} ] && echo marker=present || echo marker=absent"

        async def check(other: Sandbox) -> None:
            await self.soft(
                f"check_isolation_c{level}",
                lambda: ctx.provider.exec(other, look, timeout_s=ctx.timeout_s),
                sandbox=other,
                check=untouched,
                extra={"children": level, "verified": True},
            )

        await asyncio.gather(*(check(other) for other in others))


def child_check(
    original: str, parent_count: int, keeps_memory: bool, extra: dict[str, Any]
) -> Callable[[ExecResult], None]:
    """The check of one child's answer; what it saw goes into ``extra`` (the record's)."""

    def check(result: ExecResult) -> None:
        if kept_state.state_digest(result) != original:
            raise CheckFailed("FidelityError", "the child's state differs from the parent's",
                              verified=False)  # fmt: skip
        seen_counts = kept_state.counts(result)
        seen: dict[str, Any] = {"process_kept": False, "memory_kept": False}
        if len(seen_counts) == 2:  # else no counter file: the process's file did not come along
            seen["process_kept"] = seen_counts[1] > seen_counts[0]
            seen["memory_kept"] = seen["process_kept"] and seen_counts[0] >= parent_count
        if keeps_memory and not seen["memory_kept"]:
            raise CheckFailed(
                "FidelityError",
                "declared to keep memory and processes, but the parent's counting process was "
                f"not running in the child (counter {seen_counts or 'missing'}, parent at "
                f"{parent_count})",
                verified=False,
                **seen,
            )
        extra.update(seen, verified=True)

    return check


__all__ = ["Fork", "ForkSettings", "child_check"]
