"""A 200 the SDK cannot read is never taken for an operation done, or for its result.

The emulators' ``malformed`` fault answers a call with a 200 whose body (or framing) the
provider's SDK cannot read, *before* the emulated provider does anything. An adapter that
returns normally after such an answer claims an operation that never happened: a destroy
that leaves the sandbox running (and billing), a checkpoint delete that keeps the snapshot,
a write that wrote nothing, an exec or a read whose result is not the command's or the
file's. That happens when the SDK ignores the body of an endpoint's answer and the
emulator's answer is unreadable only in the body (so the emulator must break what the SDK
does read: ``bench.emulators.toolkit.broken_framing``), and when an adapter swallows the
error.

For every emulated provider and every operation, each call the operation makes is faulted in
turn (the k-th call after the operation starts, counted on a clean run first; at most
MAX_CALLS), on a fresh sandbox. The operation must then either raise our error (the harness
records it and retries) or have really happened, as the emulator's own state says (``GET
/_emulator/sandboxes``: the sandboxes and checkpoints it holds) or a read-back shows. A
create that raised may have made a sandbox; it must then be listed under the run, where the
sweep finds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.emulators.control import Emulator
from providers.base import Op, Provider, Sandbox
from providers.errors import ProviderError
from tests.conftest import EMULATED, Scratch

pytestmark = pytest.mark.parametrize("provider_id", sorted(EMULATED))

#: How many calls of one operation are faulted at most (the first ones: where the state
#: changes; a long poll's hundredth call is like its second).
MAX_CALLS = 6


class _Case(Scratch):
    """What one provider's operation runs on: fresh sandboxes, the emulator's truth, and
    the clean-up of every sandbox and checkpoint made (:class:`tests.conftest.Scratch`)."""

    def __init__(self, provider: Provider, emu: Emulator, run_id: str) -> None:
        super().__init__(provider, run_id)
        self.emu = emu

    async def new_sandbox(self, before: set[str], made: list[Sandbox], raised: bool) -> str | None:
        """What is wrong after a create or restore: raised, it must leave no sandbox that
        the run's listing misses (``before``: the emulator's sandboxes until then); returned,
        its sandbox (``made[0]``) must be one the emulator holds."""
        live = set(await self.emu.live_sandboxes())
        if raised:
            hidden = live - before - set(await self.provider.list_sandboxes(self.run_id))
            return f"raised and left {sorted(hidden)} running, not listed" if hidden else None
        return None if made[0].id in live else "returned a sandbox the emulator does not hold"


Op_ = Callable[[], Awaitable[Any]]
Check = Callable[[bool], Awaitable[str | None]]


async def _create(case: _Case) -> tuple[Op_, Check]:
    before = set(await case.emu.live_sandboxes())
    made: list[Sandbox] = []

    async def op() -> None:
        made.append(await case.fresh())

    return op, lambda raised: case.new_sandbox(before, made, raised)


async def _destroy(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()

    async def check(raised: bool) -> str | None:
        if not raised and sandbox.id in await case.emu.live_sandboxes():
            return "returned as destroyed, and the emulator still holds the sandbox"
        return None

    return (lambda: case.provider.destroy(sandbox)), check


async def _write(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    path = f"{case.provider.capabilities().scratch_dir}/malformed.bin"
    data = b"written under a malformed answer\n"

    async def check(raised: bool) -> str | None:
        if not raised and await case.provider.read_file(sandbox, path) != data:
            return "returned as written, and the file does not hold the data"
        return None

    return (lambda: case.provider.write_file(sandbox, path, data)), check


async def _exec(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    results: list[Any] = []

    async def op() -> None:
        argv = ["sh", "-c", "echo answered; exit 3"]
        results.append(await case.provider.exec(sandbox, argv, timeout_s=30))

    async def check(raised: bool) -> str | None:
        if not raised and (results[0].exit_code, results[0].stdout) != (3, b"answered\n"):
            return f"returned {results[0].exit_code} {results[0].stdout!r}, not 3 b'answered\\n'"
        return None

    return op, check


async def _read(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    path = f"{case.provider.capabilities().scratch_dir}/malformed-read.bin"
    data = bytes(range(256)) * 8
    await case.provider.write_file(sandbox, path, data)
    read: list[bytes] = []

    async def op() -> None:
        read.append(await case.provider.read_file(sandbox, path))

    async def check(raised: bool) -> str | None:
        if not raised and read[0] != data:
            return f"returned {len(read[0])} bytes that are not the file's {len(data)}"
        return None

    return op, check


async def _checkpoint(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    before = set(await case.emu.stored_checkpoints())

    async def op() -> None:
        case.refs.append(await case.provider.checkpoint(sandbox))

    async def check(raised: bool) -> str | None:
        if not raised and not set(await case.emu.stored_checkpoints()) - before:
            return "returned a checkpoint, and the emulator stores none"
        return None

    return op, check


async def _delete_checkpoint(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    ref = await case.provider.checkpoint(sandbox)
    case.refs.append(ref)
    stored = set(await case.emu.stored_checkpoints())

    async def check(raised: bool) -> str | None:
        if not raised and not stored - set(await case.emu.stored_checkpoints()):
            return "returned as deleted, and the emulator still stores the checkpoint"
        return None

    return (lambda: case.provider.delete_checkpoint(ref)), check


async def _restore(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    path = f"{case.provider.capabilities().scratch_dir}/malformed-restore.txt"
    await case.provider.write_file(sandbox, path, b"before the checkpoint\n")
    ref = await case.provider.checkpoint(sandbox)
    case.refs.append(ref)
    # Changed after the checkpoint: a restore in place (sprites) that did not happen shows.
    await case.provider.write_file(sandbox, path, b"after the checkpoint\n")
    before = set(await case.emu.live_sandboxes())
    restored: list[Sandbox] = []

    async def op() -> None:
        restored.append(await case.provider.restore(ref))
        case.made.append(restored[-1])

    async def check(raised: bool) -> str | None:
        wrong = await case.new_sandbox(before, restored, raised)
        if wrong or raised:
            return wrong
        if await case.provider.read_file(restored[0], path) != b"before the checkpoint\n":
            return "returned a sandbox without the checkpoint's file"
        return None

    return op, check


async def _resume(case: _Case) -> tuple[Op_, Check]:
    sandbox = await case.fresh()
    await case.provider.pause(sandbox)
    case.paused.append(sandbox)  # resumed by the clean-up whatever happens
    resumed: list[Sandbox] = []

    async def op() -> None:
        resumed.append(await case.provider.resume(sandbox))

    async def check(raised: bool) -> str | None:
        if raised:
            return None
        answer = await case.provider.exec(resumed[0], ["echo", "awake"], timeout_s=30)
        if (answer.exit_code, answer.stdout) != (0, b"awake\n"):
            return f"returned as resumed, and an exec answered {answer.exit_code}"
        return None

    return op, check


CASES: dict[str, tuple[Callable[[_Case], Awaitable[tuple[Op_, Check]]], Op]] = {
    "create": (_create, Op.CREATE),
    "destroy": (_destroy, Op.DESTROY),
    "write_file": (_write, Op.WRITE_FILE),
    "exec": (_exec, Op.EXEC),
    "read_file": (_read, Op.READ_FILE),
    "checkpoint": (_checkpoint, Op.CHECKPOINT),
    "delete_checkpoint": (_delete_checkpoint, Op.CHECKPOINT),
    "restore": (_restore, Op.RESTORE),
    "resume": (_resume, Op.RESUME),
}


@pytest.mark.parametrize("operation", list(CASES))
async def test_a_malformed_answer_is_an_error_or_the_operation_really_happened(
    open_provider, provider_id, operation
):
    make, needed = CASES[operation]
    async with open_provider(provider_id) as (provider, emu):
        if needed not in provider.capabilities().operations:
            pytest.skip(f"{provider_id} has no {needed}")
        case = _Case(provider, emu, f"malformed-{provider_id}-{operation}")
        try:
            # A clean run: how many calls the operation makes.
            op, check = await make(case)
            await emu.clear_calls()
            await op()
            calls = len(await emu.calls())
            if not calls:  # sprites' delete_checkpoint: checkpoints go with the Sprite
                pytest.skip(f"{provider_id}'s {operation} makes no provider call")
            assert await check(False) is None
            await case.cleanup()
            wrong = []
            for k in range(min(calls, MAX_CALLS)):
                op, check = await make(case)
                await emu.clear_calls()
                await emu.inject(kind="malformed", skip=k)
                raised = False
                try:
                    await op()
                except ProviderError:
                    raised = True
                seen = await emu.calls()
                await emu.clear_faults()  # not consumed when this run made fewer calls
                verdict = await check(raised)
                faulted = [f"{c['method']} {c['path']}" for c in seen if c.get("fault")]
                if verdict is not None:
                    wrong.append(f"call {k + 1} ({', '.join(faulted)}): {verdict}")
                await case.cleanup()
            assert not wrong, f"{provider_id} {operation}: " + "; ".join(wrong)
        finally:
            await emu.clear_faults()
            await case.cleanup()
