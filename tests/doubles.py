"""A provider double that misbehaves on demand, for tests of what sits above the providers.

:class:`Chaos` keeps its sandboxes and checkpoints as names (like providers/stub.py) and, per
call, does what its script says: succeed, raise any exception (the provider error tree, or a
bug's TypeError, KeyError, ...), hang far past any timeout, return the wrong type, or do the
work and then fail or hang (a create that completed on the provider while our side gave up:
an orphan only the listing by label finds). It remembers every sandbox and checkpoint it ever
made, so a test can ask what is still alive after the harness is done.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers import base
from providers.base import CheckpointRef, Deletion, ExecResult, Sandbox, SandboxSpec
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    QuotaOrRateLimited,
    SandboxCrashed,
    Unavailable,
)

#: What a call may do. "late_*": the work is done, then the call fails or hangs.
ACTIONS = (
    "ok",
    "hang",
    "wrong_type",
    "late_error",
    "late_hang",
    "Unavailable",
    "QuotaOrRateLimited",
    "AuthError",
    "NotFound",
    "OperationTimeout",
    "ProtocolError",
    "SandboxCrashed",
    "TypeError",
    "KeyError",
    "RuntimeError",
    "OSError",
    "ValueError",
    "AttributeError",
)
_ERRORS: dict[str, Callable[[str], BaseException]] = {
    "Unavailable": lambda op: Unavailable("503", provider="chaos", operation=op),
    "QuotaOrRateLimited": lambda op: QuotaOrRateLimited(
        "429", provider="chaos", operation=op, retry_after_s=0.01
    ),
    "AuthError": lambda op: AuthError("401", provider="chaos", operation=op),
    "NotFound": lambda op: NotFound("404", provider="chaos", operation=op),
    "OperationTimeout": lambda op: OperationTimeout("slow", provider="chaos", operation=op),
    "ProtocolError": lambda op: ProtocolError("garbled", provider="chaos", operation=op),
    "SandboxCrashed": lambda op: SandboxCrashed("died", provider="chaos", operation=op),
    "TypeError": lambda op: TypeError(f"{op}: unsupported operand"),
    "KeyError": lambda op: KeyError(op),
    "RuntimeError": lambda op: RuntimeError(f"{op}: event loop is closed"),
    "OSError": lambda op: OSError(104, "Connection reset by peer"),
    "ValueError": lambda op: ValueError(f"{op}: bad json"),
    "AttributeError": lambda op: AttributeError(f"'NoneType' object has no attribute {op!r}"),
}
#: A hang lasts this long: far beyond any timeout the tests use.
HANG_S = 3600.0


@dataclass
class Box:
    labels: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    #: The sandbox's "state": a command that writes (``>``) changes it; ``sha256sum`` prints
    #: its digest, so a checkpoint and restore bring the same digest back.
    state: int = 0
    #: Sizes of the files a command wrote with ``head -c SIZE ... > PATH`` (the checkpoint
    #: workload's state), which its listing prints.
    sizes: dict[str, int] = field(default_factory=dict)


class Chaos(base.Provider):
    """Misbehaves as ``script`` says: ``script(operation, n)`` names the action of the n-th
    call (from 0) of ``operation``; the default always succeeds."""

    id: ClassVar[str] = "stub"

    def __init__(
        self,
        script: Callable[[str, int], str] | None = None,
        *,
        deletion: Deletion = Deletion.SYNC,
        lists_checkpoints: bool = True,
        gone_after_polls: int = 0,
    ) -> None:
        super().__init__({})
        self.script = script or (lambda operation, n: "ok")
        self.deletion = deletion
        self.lists = lists_checkpoints
        self.gone_after_polls = gone_after_polls
        self.boxes: dict[str, Box] = {}
        self.checkpoints: dict[str, tuple[str, dict[str, str], int]] = {}
        self.made: list[str] = []
        self.made_checkpoints: list[str] = []
        #: Sandboxes whose destroy answered ok and did nothing.
        self.lies: set[str] = set()
        self._target: set[str] = set()
        #: Deleted asynchronously, still listed for this many more listings.
        self.fading: dict[str, int] = {}
        self._calls: dict[str, itertools.count[int]] = {}
        self._ids = itertools.count(1)

    def capabilities(self) -> base.Capabilities:
        return base.Capabilities(
            operations=base.REQUIRED_OPS | (base.OPTIONAL_OPS - {base.Op.FORK}),
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.FREEZE,
            deletion=self.deletion,
            lists_checkpoints=self.lists,
            isolation="none: a test double",
            unsupported={str(base.Op.FORK): "the double does not fork"},
        )

    # -- the script ---------------------------------------------------------------------------

    async def _act(self, operation: str, work: Callable[[], Any], wrong: Any = 42) -> Any:
        n = next(self._calls.setdefault(operation, itertools.count()))
        action = self.script(operation, n)
        if action == "ok":
            return work()
        if action == "lie":  # answers ok and does nothing
            return None
        if action == "hang":
            await asyncio.sleep(HANG_S)
        if action == "wrong_type":
            if wrong is None and operation == "destroy":  # the right type: a lie
                self.lies.update(self._target)
            return wrong
        if action == "late_error":
            work()
            raise Unavailable("answer lost after the work was done", provider="chaos",
                              operation=operation)  # fmt: skip
        if action == "late_hang":
            work()
            await asyncio.sleep(HANG_S)
        raise _ERRORS[action](operation)

    def alive(self) -> set[str]:
        return set(self.boxes) | set(self.fading)

    # -- required operations --------------------------------------------------------------------

    def _new(self, labels: dict[str, str], files: dict[str, bytes] | None = None) -> Sandbox:
        sandbox_id = f"chaos-{next(self._ids)}"
        self.boxes[sandbox_id] = Box(labels=dict(labels), files=dict(files or {}))
        self.made.append(sandbox_id)
        return Sandbox(id=sandbox_id, provider=self.id)

    def _box(self, sandbox: Sandbox) -> Box:
        try:
            return self.boxes[sandbox.id]
        except KeyError:
            raise NotFound(f"no sandbox {sandbox.id}", provider="chaos") from None

    async def create(self, spec: SandboxSpec) -> Sandbox:
        return await self._act("create", lambda: self._new(dict(spec.labels)), wrong=None)

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> ExecResult:
        def run() -> ExecResult:
            box = self._box(sandbox)
            text = str(command)
            if ">" in text:
                box.state = next(self._ids)
            for size, path in re.findall(r"head -c (\d+) /dev/urandom > (\S+)", text):
                box.sizes[path] = int(size)
            for path in re.findall(r"echo mutated >> (\S+)", text):
                box.sizes[path] = box.sizes.get(path, 0) + len(b"mutated\n")
            out = b""
            listed = re.search(r"for f in (.*?); do", text)
            if listed:  # the checkpoint workload's listing: "size sha256 path" per file
                out = b"".join(
                    f"{box.sizes.get(path, 0)} "
                    f"{hashlib.sha256(f'{box.state} {path}'.encode()).hexdigest()} "
                    f"{path}\n".encode()
                    for path in listed.group(1).split()
                )
            elif "sha256sum" in text:
                out = hashlib.sha256(str(box.state).encode()).hexdigest().encode() + b" f\n"
            return ExecResult(exit_code=0, stdout=out, stderr=b"")

        return await self._act("exec", run, wrong="0")

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        def write() -> None:
            self._box(sandbox).files[path] = bytes(data)

        await self._act("write_file", write, wrong=None)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        def read() -> bytes:
            files = self._box(sandbox).files
            if path not in files:
                raise NotFound(f"no file {path}", provider="chaos")
            return files[path]

        return await self._act("read_file", read, wrong="text, not bytes")

    async def destroy(self, sandbox: Sandbox) -> None:
        def destroy() -> None:
            self.lies.discard(sandbox.id)
            if self.boxes.pop(sandbox.id, None) is not None and self.deletion is Deletion.ASYNC:
                self.fading[sandbox.id] = self.gone_after_polls

        self._target = {sandbox.id}
        await self._act("destroy", destroy, wrong=None)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        def listing() -> list[str]:
            found = [i for i, b in self.boxes.items() if b.labels.get(base.RUN_LABEL) == run_id]
            for sandbox_id, left in list(self.fading.items()):
                found.append(sandbox_id)
                if left <= 0:
                    del self.fading[sandbox_id]
                else:
                    self.fading[sandbox_id] = left - 1
            return sorted(found)

        return await self._act("list_sandboxes", listing, wrong="chaos-1")

    # -- optional operations --------------------------------------------------------------------

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        def take() -> CheckpointRef:
            box = self._box(sandbox)
            ref_id = f"chaos-ck-{next(self._ids)}"
            self.checkpoints[ref_id] = (sandbox.id, dict(box.labels), (box.state, dict(box.sizes)))
            self.made_checkpoints.append(ref_id)
            return CheckpointRef(id=ref_id, provider=self.id, sandbox_id=sandbox.id)

        return await self._act("checkpoint", take, wrong={"id": "x"})

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        def restore() -> Sandbox:
            if ref.id not in self.checkpoints:
                raise NotFound(f"no checkpoint {ref.id}", provider="chaos")
            _, labels, (state, sizes) = self.checkpoints[ref.id]
            restored = self._new(labels)
            self.boxes[restored.id].state = state
            self.boxes[restored.id].sizes = dict(sizes)
            return restored

        return await self._act("restore", restore, wrong=ref)

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        await self._act("delete_checkpoint", lambda: self.checkpoints.pop(ref.id, None))

    async def list_checkpoints(self, run_id: str) -> list[str]:
        def listing() -> list[str]:
            return sorted(
                i for i, (_, labels, _) in self.checkpoints.items()
                if labels.get(base.RUN_LABEL) == run_id
            )  # fmt: skip

        return await self._act("list_checkpoints", listing, wrong=None)

    async def pause(self, sandbox: Sandbox) -> None:
        await self._act("pause", lambda: self._box(sandbox))

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        def resume() -> Sandbox:
            self._box(sandbox)
            return sandbox

        return await self._act("resume", resume, wrong=None)


def scripted(actions: Sequence[str]) -> Callable[[str, int], str]:
    """A script that plays ``actions`` in turn over every call, whatever the operation."""
    turn = itertools.count()

    def script(operation: str, n: int) -> str:
        return actions[next(turn) % len(actions)] if actions else "ok"

    return script
