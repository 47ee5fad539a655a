"""A provider that passes every call to a real one, with hooks that make it misbehave.

For the semantic-fault tests of the guest_perf, fork and sleep_persist workloads: the calls
really run (on the local provider), and a hook changes one answer the way a faulty provider
or a broken sandbox image would (a wrong digest, a lying clock, a missing tool, a fork whose
children are empty or shared, a pause that kills processes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from providers.base import (
    Capabilities,
    CheckpointRef,
    Command,
    ExecResult,
    Provider,
    Sandbox,
    SandboxSpec,
)

ExecHook = Callable[[Command, ExecResult], ExecResult]


class Wrapped(Provider):
    """``inner``'s behaviour, except where a hook says otherwise."""

    id = "wrapped"

    def __init__(
        self,
        inner: Provider,
        *,
        exec_hook: ExecHook | None = None,
        after_create: Callable[[Provider, Sandbox], Awaitable[None]] | None = None,
        fork: Callable[[Provider, Sandbox, int], Awaitable[list[Sandbox]]] | None = None,
        after_pause: Callable[[Provider, Sandbox], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__({})
        self.inner = inner
        self.exec_hook = exec_hook
        self.after_create = after_create
        self.fork_hook = fork
        self.after_pause = after_pause

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    async def create(self, spec: SandboxSpec) -> Sandbox:
        sandbox = await self.inner.create(spec)
        if self.after_create is not None:
            await self.after_create(self.inner, sandbox)
        return sandbox

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        result = await self.inner.exec(sandbox, command, timeout_s=timeout_s)
        return self.exec_hook(command, result) if self.exec_hook is not None else result

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        await self.inner.write_file(sandbox, path, data)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        return await self.inner.read_file(sandbox, path)

    async def destroy(self, sandbox: Sandbox) -> None:
        await self.inner.destroy(sandbox)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        return await self.inner.list_sandboxes(run_id)

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        return await self.inner.checkpoint(sandbox)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        return await self.inner.restore(ref)

    async def pause(self, sandbox: Sandbox) -> None:
        await self.inner.pause(sandbox)
        if self.after_pause is not None:
            await self.after_pause(self.inner, sandbox)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        return await self.inner.resume(sandbox)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        if self.fork_hook is not None:
            return await self.fork_hook(self.inner, sandbox, count)
        return await self.inner.fork(sandbox, count=count)


def replace_output(result: ExecResult, old: bytes, new: bytes) -> ExecResult:
    return ExecResult(
        exit_code=result.exit_code, stdout=result.stdout.replace(old, new), stderr=result.stderr
    )


def text_of(command: Any) -> str:
    return command if isinstance(command, str) else " ".join(command)
