"""The codesandbox adapter (Together Sandbox), end to end through the real pinned SDK
(together-sandbox 4.1.1).

Each emulator test starts the loopback emulator (bench/emulators/codesandbox.py, backed by real
local sandboxes), points the SDK at it with the emulator's ``client_env`` and drives the adapter.
``TestLive`` runs the same checks against the real service (``pytest -m live``) when
``TOGETHER_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from together_sandbox import HttpError

from bench.emulators.control import Emulator
from providers.base import REQUIRED_OPS, RUN_LABEL, Op, PauseKind, Sandbox, SandboxSpec
from providers.codesandbox import CodeSandboxProvider
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    SandboxCrashed,
    Unavailable,
    Unsupported,
)
from tests import adapter_cases as cases

ENV_KEYS = ("TOGETHER_API_KEY", "TOGETHER_BASE_URL")
#: On the emulator's VMs (and the CLI quickstart image) /workspace is on the snapshotted disk;
#: /tmp is a private tmpfs there, so a disk-only pause would lose it.
DISK = "/workspace"

emulator = cases.emulator_fixture("codesandbox", ENV_KEYS)
_open = cases.opener(CodeSandboxProvider)
_run_id = cases.new_run_id


def _spec(run_id: str | None = None) -> SandboxSpec:
    return SandboxSpec(labels={RUN_LABEL: run_id or _run_id()})


async def _calls(emu: Emulator, method: str, path: str) -> int:
    return sum(1 for c in await emu.calls() if c["method"] == method and c["path"] == path)


# -- checks shared by the emulator tests and the live tests ----------------------------------


async def check_exec(provider: CodeSandboxProvider, sandbox: Sandbox) -> None:
    failed = await provider.exec(
        sandbox, ["sh", "-c", "echo hello; echo oops >&2; exit 3"], timeout_s=30
    )
    # stdout and stderr come apart (split by the SSE events' type)
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"hello\n", b"oops\n")
    await cases.shell_argv_and_large_output(provider, sandbox)


async def check_files(provider: CodeSandboxProvider, sandbox: Sandbox, folder: str) -> None:
    # Random bytes come back as base64, valid UTF-8 as text: both must be byte-exact.
    binary, large = os.urandom(1024), os.urandom(4 * 1024 * 1024)
    text = "héllo wörld\x00\n\r\n".encode()
    for name, data in (("bin 1k.bin", binary), ("large.bin", large), ("t.txt", text)):
        await provider.write_file(sandbox, f"{folder}/{name}", data)
        assert await provider.read_file(sandbox, f"{folder}/{name}") == data
    await cases.sha_inside(provider, sandbox, f"{folder}/large.bin", large)
    odd = f'{folder}/q"uo\\te ü %2F.txt'  # the path is quoted whole by the SDK
    await provider.write_file(sandbox, odd, b"odd")
    assert await provider.read_file(sandbox, odd) == b"odd"
    await cases.missing_file_is_not_found(provider, sandbox, f"{folder}/no/such/file")


async def check_hibernate(provider: CodeSandboxProvider, sandbox: Sandbox, folder: str) -> Sandbox:
    """pause = terminate with a memory snapshot; resume = a new sandbox from it, with the
    processes intact: the counter stands still while paused, then runs on."""
    counter, start = cases.counter_script(folder)
    assert (await provider.exec(sandbox, start, timeout_s=30)).exit_code == 0
    await asyncio.sleep(0.2)
    before = await cases.read_counter(provider, sandbox, counter)
    await provider.pause(sandbox)
    await asyncio.sleep(1.0)
    resumed = await provider.resume(sandbox)
    assert resumed.id != sandbox.id  # a new sandbox, as the SDK documents
    assert str(resumed.native.sdk.vm_info.status_reason.value) == "restored"
    after = await cases.read_counter(provider, resumed, counter)
    assert after - before < 40, "the counter ran on while the sandbox was hibernated"
    await asyncio.sleep(0.3)
    assert await cases.read_counter(provider, resumed, counter) > after, (
        "the counter did not survive"
    )
    return resumed


# -- emulator tests ---------------------------------------------------------------------------


async def test_create_exec_files_list_and_destroy_round_trip(emulator):
    provider = await _open()

    async def make(run: str) -> Sandbox:
        return await provider.create(_spec(run))

    try:
        # After it, an exec is NotFound: its agent client was closed with it.
        async with cases.round_trip(provider, make, _run_id(), "another-run") as (sandbox, _):
            model = sandbox.native.sdk.vm_info
            assert (model.cpu, model.memory_bytes) == (1.0, 1024**3)  # 512 MiB raised to 1 GiB
            assert model.ttl == SandboxSpec().lifetime_s
            await check_exec(provider, sandbox)
            await check_files(provider, sandbox, "/tmp")
    finally:
        await provider.close()


async def test_an_exec_over_its_timeout_is_killed(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(_spec())
        try:
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "echo $$ > /tmp/pid; exec sleep 30", timeout_s=0.5)
            alive = "kill -0 $(cat /tmp/pid) 2>/dev/null && echo alive || echo gone"
            for _ in range(50):
                if (await provider.exec(sandbox, alive, timeout_s=10)).stdout == b"gone\n":
                    break
                await asyncio.sleep(0.1)
            assert (await provider.exec(sandbox, alive, timeout_s=10)).stdout == b"gone\n"
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_hibernate_keeps_processes_in_a_new_sandbox_and_retires_the_snapshot(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        assert provider.capabilities().pause_kind is PauseKind.FREEZE
        sandbox = await provider.create(_spec(run_id))
        resumed = await check_hibernate(provider, sandbox, "/tmp")
        assert await provider.list_sandboxes(run_id) == [resumed.id]  # the old one ended
        client = provider.clients.main
        snapshot = await client.snapshots.get_by_alias(f"sandbox:{sandbox.id}")
        assert snapshot.memory is True and snapshot.tags.to_dict()[RUN_LABEL] == run_id
        await provider.destroy(resumed)
        await provider.destroy(sandbox)  # ended already; its snapshot is retired now
        with pytest.raises(HttpError) as gone:
            await client.snapshots.get_by_alias(f"sandbox:{sandbox.id}")
        assert gone.value.status == 404
    finally:
        await provider.close()


async def test_disk_pause_keeps_files_and_ends_processes(emulator):
    provider = await _open({"pause_mode": "disk", "scratch_dir": DISK})
    try:
        caps = provider.capabilities()
        assert caps.pause_kind is PauseKind.STOP_START and caps.scratch_dir == DISK
        sandbox = await provider.create(_spec())
        counter, start = cases.counter_script(DISK)
        assert (await provider.exec(sandbox, start, timeout_s=30)).exit_code == 0
        await provider.pause(sandbox)
        resumed = await provider.resume(sandbox)
        try:
            assert str(resumed.native.sdk.vm_info.status_reason.value) == "cold_started"
            first = await cases.read_counter(provider, resumed, counter)  # the file survived
            await asyncio.sleep(0.4)
            assert await cases.read_counter(provider, resumed, counter) == first  # the loop did not
        finally:
            await provider.destroy(resumed)
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_close_retires_the_snapshot_of_a_sandbox_never_destroyed(emulator):
    provider = await _open()
    sandbox = await provider.create(_spec())
    await provider.pause(sandbox)
    await provider.close()  # the frozen VM the snapshot held goes with it
    assert await emulator.live_sandboxes() == []
    assert await _calls(emulator, "POST", "/v1/sandboxes") == 1


async def test_checkpoint_and_fork_are_unsupported_with_reasons(emulator):
    provider = await _open()
    try:
        caps = provider.capabilities()
        assert caps.operations == REQUIRED_OPS | {Op.PAUSE, Op.RESUME}
        for op in ("checkpoint", "restore", "fork"):
            assert "snapshot" in caps.unsupported[op]
        sandbox = Sandbox(id=str(uuid.uuid4()), provider="codesandbox")
        with pytest.raises(Unsupported):
            await provider.checkpoint(sandbox)
        with pytest.raises(Unsupported):
            await provider.fork(sandbox)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("status", "match", "operation", "expected"),
    [
        (401, "/v1/sandboxes", "create", AuthError),
        (403, "/api/v1/execs", "exec", AuthError),
        (404, "/stream/execs/", "exec", NotFound),  # the SSE stream drops it; the hook sees it
        (429, "/v1/sandboxes", "create", QuotaOrRateLimited),
        (429, "/api/v1/files", "write", QuotaOrRateLimited),
        (500, "/api/v1/files", "read", Unavailable),
        (502, "/api/v1/execs", "exec", Unavailable),
        (500, "/v1/sandboxes", "list", Unavailable),
        (503, "/terminate", "pause", Unavailable),
        (503, "/terminate", "destroy", Unavailable),
    ],
)
async def test_injected_errors_arrive_as_our_error_classes_after_one_attempt(
    emulator, status, match, operation, expected
):
    provider = await _open()
    run_id = _run_id()
    sandbox = None
    try:
        if operation != "create":
            sandbox = await provider.create(_spec(run_id))
            await provider.write_file(sandbox, "/tmp/f", b"x")
        calls = cases.operation_calls(
            provider, sandbox, run_id, lambda: provider.create(_spec(run_id)),
            write_to="/tmp/g", read_from="/tmp/f",
        )  # fmt: skip
        # One fault: with the SDK's default retries the second attempt would succeed.
        raised = await cases.one_fault(emulator, "codesandbox", status=status, match=match,
                                 call=calls[operation], expected=expected)  # fmt: skip
        if status == 429:
            assert raised.retry_after_s == 1.0  # from the answer, via the hook
        if sandbox is not None and operation != "pause":
            await cases.still_works(provider, sandbox)
    finally:
        if sandbox is not None:
            await provider.destroy(sandbox)
        for left in await provider.list_sandboxes(run_id):
            await provider.destroy(Sandbox(id=left, provider="codesandbox"))
        await provider.close()


async def test_a_create_whose_answer_is_malformed_is_a_protocol_error(emulator):
    provider = await _open()
    try:
        await emulator.inject(kind="malformed", match="/v1/sandboxes")
        with pytest.raises(ProtocolError):
            await provider.create(_spec())
        assert await emulator.live_sandboxes() == []  # the fault came before the provider
    finally:
        await provider.close()


async def test_a_hung_call_ends_at_call_timeout_s(emulator):
    provider = await _open({"call_timeout_s": 0.5})
    try:
        await emulator.inject(kind="hang", match="/v1/sandboxes")
        with pytest.raises(OperationTimeout):
            await provider.create(_spec())
    finally:
        await provider.close()


async def test_terminate_refused_for_an_ended_sandbox_counts_as_destroyed(emulator):
    """The API's answer to terminating a terminated sandbox is not documented: a 400 or 409
    there is taken as done once GET says it is terminated, never for a running one."""
    provider = await _open()
    try:
        running = await provider.create(_spec())
        await emulator.inject(409, match=f"/v1/sandboxes/{running.id}/terminate")
        with pytest.raises(ProviderError):
            await provider.destroy(running)
        paused = await provider.create(_spec())
        await provider.pause(paused)
        await emulator.inject(400, match=f"/v1/sandboxes/{paused.id}/terminate")
        await provider.destroy(paused)
        await provider.destroy(running)
    finally:
        await provider.close()
    assert await emulator.live_sandboxes() == []


async def test_a_wrong_api_key_is_an_auth_error(emulator, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "not-the-token")
    provider = await _open()
    try:
        with pytest.raises(AuthError):
            await provider.create(_spec())
    finally:
        await provider.close()


async def test_a_missing_api_key_is_an_auth_error_naming_the_variable(monkeypatch):
    await cases.missing_variable_refused(CodeSandboxProvider, monkeypatch, "TOGETHER_API_KEY")


async def test_an_unknown_snapshot_is_not_found(emulator):
    provider = await _open({"snapshot": "no-such@alias"})
    try:
        with pytest.raises(NotFound):
            await provider.create(_spec())
        with pytest.raises(NotFound):
            await provider.create(SandboxSpec(template=str(uuid.uuid4())))
    finally:
        await provider.close()


async def test_per_iteration_connection_gives_each_sandbox_its_own_client(emulator):
    provider = await _open({"connection": "per_iteration"})
    run_id = _run_id()
    try:
        first = await provider.create(_spec(run_id))
        second = await provider.create(_spec(run_id))
        clients = {id(first.native.client), id(second.native.client)}
        cases.own_clients(provider, first, second)
        await provider.pause(second)
        resumed = await provider.resume(second)
        assert id(resumed.native.client) not in clients
        assert sorted(await provider.list_sandboxes(run_id)) == sorted([first.id, resumed.id])
        for sandbox in (first, second, resumed):
            await provider.destroy(sandbox)
        assert provider.clients.owned == set()  # each client closed with its sandbox
    finally:
        await provider.close()


async def test_a_bare_sandbox_id_can_be_destroyed_as_the_reaper_does(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(_spec(run_id))
        await cases.bare_id_destroyed_twice(provider, sandbox, run_id)
        # An id the API does not know (404) is already destroyed.
        await provider.destroy(Sandbox(id=str(uuid.uuid4()), provider="codesandbox"))
    finally:
        await provider.close()


async def test_the_image_setting_builds_one_snapshot_in_open_and_retires_it_in_close(emulator):
    provider = await _open({"image": "python:3.12-slim"})
    image_snapshot = provider._image_snapshot
    try:
        assert image_snapshot and await _calls(emulator, "POST", "/builds") == 1
        sandbox = await provider.create(_spec())
        assert str(sandbox.native.sdk.vm_info.snapshot_id) == image_snapshot
        await provider.destroy(sandbox)
    finally:
        await provider.close()
    assert await _calls(emulator, "POST", f"/v1/snapshots/{image_snapshot}/retire") == 1


def test_capabilities_and_environment_declare_the_semantics(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "secret-key-value")
    monkeypatch.setenv("TOGETHER_BASE_URL", "https://user:pw@together.example?token=x")
    provider = CodeSandboxProvider({})
    caps = provider.capabilities()
    assert caps.pause_kind is PauseKind.FREEZE and caps.scratch_dir == "/tmp"
    assert "NEW id" in caps.notes["resume"] and "memory" in caps.notes["pause"]
    assert caps.notes["stderr"].startswith("separate")
    env = provider.environment()
    assert env["endpoint"] == "https://together.example"
    assert env["sdk_versions"] == {"together-sandbox": "4.1.1"}
    assert "max_attempts=1" in env["sdk_retries"]["calls"]
    assert env["pause_mode"] == "memory" and env["call_timeout_s"] == 300.0
    cases.no_secrets(env, "secret-key-value", "token=x")
    assert provider.new_client()._retry.max_attempts == 1  # what the SDK was really given
    disk = CodeSandboxProvider({"pause_mode": "disk"}).capabilities()
    assert disk.pause_kind is PauseKind.STOP_START and "disk only" in disk.notes["pause"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Sandbox 'x' failed to start (status_reason: 'out_of_capacity').", QuotaOrRateLimited),
        ("Sandbox 'x' failed to start (status_reason: 'internal_error').", Unavailable),
        ("Sandbox 'x' terminated instead of reaching 'running' (status_reason: 'oom_killed')",
         SandboxCrashed),
        ("Sandbox 'x' is still in transient state 'starting' after wait returned.", ProtocolError),
    ],
)  # fmt: skip
def test_lifecycle_failures_the_sdk_raises_as_text_get_their_class(message, expected):
    provider = CodeSandboxProvider({})
    assert isinstance(provider.translate(RuntimeError(message), "create"), expected)


def test_strict_parsing_and_transport_failures_get_their_class():
    provider = CodeSandboxProvider({})
    assert isinstance(provider.translate(KeyError("errors"), "create"), ProtocolError)
    try:
        raise HttpError("api.create_sandbox: ConnectError", 0) from httpx.ConnectError("refused")
    except HttpError as exc:
        assert isinstance(provider.translate(exc, "create"), Unavailable)
    assert isinstance(provider.translate(HttpError("gone", 404), "read_file"), NotFound)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"snapshott": "x"}, r"\[providers.codesandbox\]: unknown key\(s\) snapshott"),
        ({"connection": "sometimes"}, "connection must be one of"),
        ({"pause_mode": "sleep"}, "pause_mode must be one of"),
        ({"snapshot": "a", "image": "b"}, "not both"),
        ({"scratch_dir": "tmp"}, "absolute"),
        ({"call_timeout_s": 0}, "call_timeout_s"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    cases.refused_in_one_line(CodeSandboxProvider, settings, message)


# -- live tests -------------------------------------------------------------------------------


@pytest.mark.live
class TestLive:
    """The same checks against the real Together Sandbox service. They need the snapshot the
    adapter creates from (the ``snapshot`` setting's default alias ``sandbox-bench@base``; see
    the README) and, for the files and hibernate checks, a writable /tmp."""

    @pytest.fixture
    async def provider(self) -> AsyncIterator[CodeSandboxProvider]:
        if not os.environ.get("TOGETHER_API_KEY"):
            pytest.skip("set TOGETHER_API_KEY (and build sandbox-bench@base) to run")
        provider = await _open()
        try:
            yield provider
        finally:
            await provider.close()

    @pytest.fixture
    async def sandbox(self, provider: CodeSandboxProvider) -> AsyncIterator[Sandbox]:
        try:
            sandbox = await provider.create(_spec())
        except NotFound as exc:
            pytest.skip(f"the base snapshot is missing: {exc}")
        try:
            yield sandbox
        finally:
            await provider.destroy(sandbox)

    async def test_exec(self, provider, sandbox):
        await check_exec(provider, sandbox)

    async def test_files(self, provider, sandbox):
        await check_files(provider, sandbox, "/tmp")

    async def test_hibernate_and_resume(self, provider, sandbox):
        resumed = await check_hibernate(provider, sandbox, "/tmp")
        await provider.destroy(resumed)

    async def test_list_and_destroy(self, provider, sandbox):
        run_id = sandbox.native.labels[RUN_LABEL]
        assert sandbox.id in await provider.list_sandboxes(run_id)
        await provider.destroy(sandbox)
        await provider.destroy(sandbox)
        assert sandbox.id not in await provider.list_sandboxes(run_id)
