"""What the adapter tests (tests/test_*_adapter.py) share: the emulator fixture, opening a
provider, the checks every adapter must pass in the same words (exec, files, checkpoint and
restore, faults arriving as our error tree, per-iteration clients, nothing left behind), and
the settings and credential refusals. Each test file keeps what is its provider's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.emulators.control import Emulator
from bench.emulators.toolkit import EmulatorState, make_app
from providers.base import RUN_LABEL, CheckpointRef, Provider, Sandbox, SandboxSpec
from providers.errors import AuthError, NotFound, ProviderError
from tests.conftest import emulator_env

P = TypeVar("P", bound=Provider)

#: (status, our error) pairs a fault test injects one by one.
Faults = Sequence[tuple[int, type[BaseException]]]


# -- fixtures and opening ---------------------------------------------------------------------


def emulator_fixture(provider_id: str, clear: Sequence[str]) -> Any:
    """The ``emulator`` fixture of a provider's tests: its emulator running with the client
    variables set (``clear`` removed first); it must hold no sandboxes at the end."""

    @pytest.fixture
    async def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
        folder = tmp_path / f"{provider_id}-emu"
        async with emulator_env(provider_id, folder, monkeypatch, clear=clear) as emu:
            yield emu

    return emulator


def opener(cls: type[P], defaults: Mapping[str, Any] | None = None) -> Callable[..., Awaitable[P]]:
    """``await opened(settings)``: a ``cls`` made with ``defaults`` and ``settings``, opened."""

    async def opened(settings: dict | None = None) -> P:
        provider = cls({**(defaults or {}), **(settings or {})})
        await provider.open()
        return provider

    return opened


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_run_id(digits: int = 8) -> str:
    return f"test-{uuid.uuid4().hex[:digits]}"


# -- what every adapter does alike ------------------------------------------------------------


async def argv_is_not_resplit(provider: Provider, sandbox: Sandbox, timeout_s: float) -> None:
    """An argv reaches the command as it is: no shell splitting or expansion."""
    argv = await provider.exec(
        sandbox, ["printf", "%s|", "a b", "it's", "$HOME"], timeout_s=timeout_s
    )
    assert (argv.exit_code, argv.stdout) == (0, b"a b|it's|$HOME|")


async def exit_codes_and_streams(provider: Provider, sandbox: Sandbox, timeout_s: float) -> None:
    """Exit codes are data, stdout and stderr arrive apart, an argv is quoted."""
    ok = await provider.exec(sandbox, "echo out; echo err >&2", timeout_s=timeout_s)
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, b"out\n", b"err\n")
    failed = await provider.exec(sandbox, "echo partial; exit 7", timeout_s=timeout_s)
    assert (failed.exit_code, failed.stdout) == (7, b"partial\n")
    await argv_is_not_resplit(provider, sandbox, timeout_s)


async def shell_argv_and_large_output(provider: Provider, sandbox: Sandbox) -> None:
    """An argv is quoted, a string goes to a shell, 64 KiB of output arrives whole."""
    await argv_is_not_resplit(provider, sandbox, 30)
    shell = await provider.exec(sandbox, "x=4; echo $((x * 2)) && false", timeout_s=30)
    assert (shell.exit_code, shell.stdout) == (1, b"8\n")
    big = await provider.exec(sandbox, "yes 0123456789abcdef | head -c 65536", timeout_s=30)
    assert (big.exit_code, big.stdout) == (0, (b"0123456789abcdef\n" * 4096)[:65536])


async def files_round_trip(
    provider: Provider,
    sandbox: Sandbox,
    small_path: str,
    large_path: str,
    small: bytes | None = None,
) -> tuple[bytes, bytes]:
    """A small file (1 KiB of random bytes unless given) and 4 MiB written and read back
    byte-exact; returns (small, large)."""
    small = os.urandom(1024) if small is None else small
    large = os.urandom(4 * 1024 * 1024)
    await provider.write_file(sandbox, small_path, small)
    await provider.write_file(sandbox, large_path, large)
    assert await provider.read_file(sandbox, small_path) == small
    assert sha(await provider.read_file(sandbox, large_path)) == sha(large)
    return small, large


async def sha_inside(provider: Provider, sandbox: Sandbox, path: str, data: bytes) -> None:
    """``sha256sum`` in the sandbox sees what was written: the bytes landed on its disk."""
    shown = await provider.exec(sandbox, f"sha256sum {path}", timeout_s=30)
    assert shown.stdout.split()[0].decode() == sha(data)


async def missing_file_is_not_found(provider: Provider, sandbox: Sandbox, path: str) -> None:
    with pytest.raises(NotFound):
        await provider.read_file(sandbox, path)


async def restored_copy(
    provider: Provider, sandbox: Sandbox, path: str, data: bytes, made: list[Sandbox]
) -> tuple[CheckpointRef, Sandbox]:
    """Checkpoint ``sandbox`` (``path`` holds ``data``), overwrite ``path``, restore: a new
    sandbox (appended to ``made`` at once) has ``data``, the source keeps the overwrite; the
    checkpoint is deleted, twice (idempotent). Returns the checkpoint and the new sandbox."""
    ref = await provider.checkpoint(sandbox)
    await provider.write_file(sandbox, path, b"mutated")
    restored = await provider.restore(ref)
    made.append(restored)
    assert restored.id != sandbox.id
    assert sha(await provider.read_file(restored, path)) == sha(data)
    assert await provider.read_file(sandbox, path) == b"mutated"
    await provider.delete_checkpoint(ref)
    await provider.delete_checkpoint(ref)  # idempotent
    return ref, restored


def counter_script(folder: str) -> tuple[str, str]:
    """(the counter file, the command starting a loop that counts into it every 10 ms and
    returns once the file is there)."""
    counter = f"{folder}/counter"
    start = (
        f"nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > {counter}.tmp; "
        f"mv {counter}.tmp {counter}; sleep 0.01; done' >/dev/null 2>&1 &\n"
        f"for _ in $(seq 300); do [ -s {counter} ] && break; sleep 0.01; done; cat {counter}"
    )
    return counter, start


async def read_counter(provider: Provider, sandbox: Sandbox, counter: str) -> int:
    result = await provider.exec(sandbox, f"cat {counter}", timeout_s=30)
    assert result.exit_code == 0, result
    return int(result.stdout.strip())


# -- faults -----------------------------------------------------------------------------------


async def faults_raise(
    emulator: Emulator, faults: Faults, steps: Sequence[tuple[str, Callable[[], Awaitable[Any]]]]
) -> None:
    """For each (status, error) of ``faults``, each step in turn: one fault of that status on
    the step's path, and its call raises our ``error`` (one fault only: an SDK retry would
    pass, so this also says the call was not retried)."""
    for status, error in faults:
        for match, call in steps:
            await emulator.inject(status, match=match)
            with pytest.raises(error):
                await call()


async def one_fault(
    emulator: Emulator,
    provider_id: str,
    *,
    status: int,
    match: str,
    call: Callable[[], Awaitable[Any]],
    expected: type[ProviderError],
) -> ProviderError:
    """One fault of ``status`` on ``match``: ``call`` raises ``expected``, naming the provider,
    with the SDK's exception chained. Returns the error, for the provider's own checks."""
    await emulator.inject(status, match=match)
    with pytest.raises(expected) as raised:
        await call()
    assert raised.value.provider == provider_id
    assert raised.value.__cause__ is not None  # the SDK's exception is chained
    return raised.value


def operation_calls(
    provider: Provider,
    sandbox: Sandbox | None,
    run_id: str,
    make: Callable[[], Awaitable[Sandbox]],
    *,
    write_to: str,
    read_from: str,
    ref: CheckpointRef | None = None,
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each operation a parametrized fault test names, as a call on ``sandbox``."""
    return {
        "create": make,
        "exec": lambda: provider.exec(sandbox, ["true"], timeout_s=10),
        "write": lambda: provider.write_file(sandbox, write_to, b"x"),
        "read": lambda: provider.read_file(sandbox, read_from),
        "checkpoint": lambda: provider.checkpoint(sandbox),
        "restore": lambda: provider.restore(ref),
        "list": lambda: provider.list_sandboxes(run_id),
        "pause": lambda: provider.pause(sandbox),
        "destroy": lambda: provider.destroy(sandbox),
    }


async def still_works(provider: Provider, sandbox: Sandbox) -> None:
    """The fault was one-shot: the sandbox runs a command again."""
    assert (await provider.exec(sandbox, ["true"], timeout_s=10)).exit_code == 0


# -- clients, listings and what is left behind ------------------------------------------------


def own_clients(provider: Any, *sandboxes: Sandbox) -> None:
    """Per-iteration connection: each sandbox has its own client, none the provider's main."""
    clients = [s.native.client for s in sandboxes]
    assert len({id(c) for c in clients}) == len(clients)
    assert all(c is not provider.clients.main for c in clients)


async def echo_ids(provider: Provider, sandboxes: Iterable[Sandbox], timeout_s: float) -> None:
    for sandbox in sandboxes:
        result = await provider.exec(sandbox, ["echo", sandbox.id], timeout_s=timeout_s)
        assert result.stdout == f"{sandbox.id}\n".encode()


async def clients_closed_with_their_sandboxes(
    provider: Any, is_closed: Callable[[Any], bool], timeout_s: float = 30
) -> None:
    """Per-iteration connection: two sandboxes, each with its own client (none the main
    one); each answers, and destroying it closes its client; the main client stays open."""
    first = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
    second = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
    clients = [first.native.client, second.native.client]
    own_clients(provider, first, second)
    for sandbox in (first, second):
        await echo_ids(provider, [sandbox], timeout_s)
        await provider.destroy(sandbox)
    assert all(is_closed(client) for client in clients)
    assert not is_closed(provider.clients.main)


async def assert_listed(provider: Provider, run_id: str, sandboxes: Iterable[Sandbox]) -> None:
    """Listing by run label finds exactly ``sandboxes``."""
    assert sorted(await provider.list_sandboxes(run_id)) == sorted(s.id for s in sandboxes)


@contextlib.asynccontextmanager
async def none_left(provider: Provider, run_id: str) -> AsyncIterator[list[Sandbox]]:
    """A list to put each sandbox the block makes in: all are destroyed on the way out; after
    a block that ended well, destroyed again (idempotent) and the run lists none."""
    made: list[Sandbox] = []
    try:
        yield made
    finally:
        for each in made:
            await provider.destroy(each)
    for each in made:
        await provider.destroy(each)  # idempotent
    assert await provider.list_sandboxes(run_id) == []


@contextlib.asynccontextmanager
async def round_trip(
    provider: Provider, make: Callable[[str], Awaitable[Sandbox]], run_id: str, other_run: str
) -> AsyncIterator[tuple[Sandbox, Sandbox]]:
    """A sandbox of ``run_id`` and one of ``other_run`` (``make(run)`` creates): the run lists
    only its own; both destroyed on the way out, the first again (idempotent); then the run
    lists none and an exec in the destroyed sandbox is NotFound."""
    sandbox = await make(run_id)
    other = await make(other_run)
    try:
        assert await provider.list_sandboxes(run_id) == [sandbox.id]
        yield sandbox, other
    finally:
        await provider.destroy(sandbox)
        await provider.destroy(other)
    await provider.destroy(sandbox)  # idempotent
    assert await provider.list_sandboxes(run_id) == []
    with pytest.raises(NotFound):
        await provider.exec(sandbox, ["true"], timeout_s=10)


async def bare_id_destroyed_twice(provider: Provider, sandbox: Sandbox, run_id: str) -> None:
    """What the reaper does: destroy by id alone (a fresh handle), twice; the run lists none."""
    for _ in range(2):
        await provider.destroy(Sandbox(id=sandbox.id, provider=sandbox.provider))
    assert await provider.list_sandboxes(run_id) == []


async def ghost_is_not_found(provider: Provider, ghost: Sandbox) -> None:
    """Destroying a sandbox the service does not know is not an error; using it is NotFound."""
    await provider.destroy(ghost)
    with pytest.raises(NotFound):
        await provider.exec(ghost, "true", timeout_s=5)


async def gone_after_lifetime(provider: Provider, sandbox: Sandbox, label: str) -> None:
    """``sandbox`` (made with lifetime_s=1 and run ``label``) is listed, then within 5 s is
    not, and an exec in it is NotFound."""
    assert await provider.list_sandboxes(label) == [sandbox.id]
    for _ in range(50):
        if not await provider.list_sandboxes(label):
            break
        await asyncio.sleep(0.1)
    assert await provider.list_sandboxes(label) == []
    with pytest.raises(NotFound):
        await provider.exec(sandbox, "true", timeout_s=5)


@contextlib.asynccontextmanager
async def in_process_emulator(protocol: Any) -> AsyncIterator[Any]:
    """``protocol`` (an emulator on a ``Sandboxes`` backend, token "tok") started in this
    process; yields its aiohttp app; shut down and its backend closed on the way out."""
    await protocol.sandboxes.open()
    await protocol.startup()
    try:
        yield make_app(protocol, EmulatorState(token="tok", backend="stub"))
    finally:
        await protocol.shutdown()
        await protocol.sandboxes.close()


# -- settings and credentials -----------------------------------------------------------------


def refused_in_one_line(
    cls: type[Provider],
    settings: dict,
    message: str,
    error: type[Exception] = ValueError,
) -> None:
    """Bad ``settings`` are refused with ``error`` matching ``message``, in one line."""
    with pytest.raises(error, match=message) as refused:
        cls(settings)
    assert "\n" not in str(refused.value)


async def missing_variable_refused(
    cls: type[Provider], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Without ``variable`` in the environment, open is an AuthError naming it."""
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(AuthError, match=variable):
        await cls({}).open()


def no_secrets(env: Mapping[str, Any], *secrets: str) -> None:
    """The manifest's environment holds none of ``secrets`` (nor a URL's password "pw")."""
    dumped = json.dumps(env)
    for secret in (*secrets, "pw"):
        assert secret not in dumped, secret


async def exercised(
    opened: Callable[[], Awaitable[P]], exercise: Callable[[P], Awaitable[None]]
) -> None:
    """``exercise`` (every operation, with its checks) on a provider ``opened()`` gives,
    closed afterwards whatever happens."""
    provider = await opened()
    try:
        await exercise(provider)
    finally:
        await provider.close()
