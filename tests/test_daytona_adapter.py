"""The daytona adapter, end to end through the real pinned SDK (daytona 0.226.1).

Each test starts the loopback emulator (bench/emulators/daytona.py, backed by real local
sandboxes), points the SDK at it with the emulator's ``client_env`` and drives the adapter.
``TestLive`` runs the same checks against the real service (``pytest -m live``) when
``DAYTONA_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers import daytona as daytona_module
from providers.base import (
    OPTIONAL_OPS,
    REQUIRED_OPS,
    RUN_LABEL,
    CheckpointCaptures,
    CheckpointRef,
    PauseKind,
    RestoreTarget,
    Sandbox,
    SandboxSpec,
)
from providers.daytona import SCRATCH_DIR, DaytonaProvider
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
)
from tests import adapter_cases as cases

ENV_KEYS = ("DAYTONA_API_KEY", "DAYTONA_API_URL", "DAYTONA_USE_DEPRECATED_POLLING")

emulator = cases.emulator_fixture("daytona", ENV_KEYS)
_open = cases.opener(DaytonaProvider)
_run_id = cases.new_run_id


# -- checks shared by the emulator tests and the live tests ----------------------------------


async def check_exec(provider: DaytonaProvider, sandbox: Sandbox) -> None:
    failed = await provider.exec(
        sandbox, ["sh", "-c", "echo hello; echo oops >&2; exit 3"], timeout_s=30
    )
    assert failed.exit_code == 3
    # Daytona returns stdout and stderr combined; the adapter says so and leaves stderr empty.
    assert failed.stdout.splitlines() == [b"hello", b"oops"]
    assert failed.stderr == b""
    await cases.shell_argv_and_large_output(provider, sandbox)


async def check_files(provider: DaytonaProvider, sandbox: Sandbox) -> None:
    large_path = f"{SCRATCH_DIR}/large-4m.bin"
    _, large = await cases.files_round_trip(
        provider, sandbox, f"{SCRATCH_DIR}/sub dir/small 1k.bin", large_path
    )
    await cases.sha_inside(provider, sandbox, large_path, large)
    # Bulk-download parts are matched on the exact requested path: quotes, backslashes,
    # non-ASCII and percent signs must come back unescaped.
    odd = f'{SCRATCH_DIR}/q"uo\\te ü %2F.txt'
    await provider.write_file(sandbox, odd, b"odd")
    assert await provider.read_file(sandbox, odd) == b"odd"
    await cases.missing_file_is_not_found(provider, sandbox, f"{SCRATCH_DIR}/no/such/file")


async def check_checkpoint_restore(provider: DaytonaProvider, sandbox: Sandbox) -> None:
    path = f"{SCRATCH_DIR}/state.bin"
    data = os.urandom(256 * 1024)
    await provider.write_file(sandbox, path, data)
    before = hashlib.sha256(data).hexdigest()
    ref = await provider.checkpoint(sandbox)
    restored: Sandbox | None = None
    try:
        mutated = await provider.exec(
            sandbox, f"echo mutated >> {path} && sha256sum {path}", timeout_s=30
        )
        assert mutated.stdout.split()[0].decode() != before
        restored = await provider.restore(ref)
        assert restored.id != sandbox.id  # Daytona restores into a new sandbox
        after = await provider.exec(restored, f"sha256sum {path}", timeout_s=30)
        assert after.exit_code == 0
        assert after.stdout.split()[0].decode() == before
        assert await provider.read_file(restored, path) == data
    finally:
        await provider.delete_checkpoint(ref)
        await provider.delete_checkpoint(ref)  # idempotent
        if restored is not None:
            await provider.destroy(restored)


COUNTER, START_COUNTER = cases.counter_script(SCRATCH_DIR)


async def _counter(provider: DaytonaProvider, sandbox: Sandbox) -> int:
    return await cases.read_counter(provider, sandbox, COUNTER)


async def check_stop_start(provider: DaytonaProvider, sandbox: Sandbox) -> None:
    """stop/start keeps the filesystem and ends every process."""
    assert (await provider.exec(sandbox, START_COUNTER, timeout_s=30)).exit_code == 0
    await asyncio.sleep(0.2)
    await provider.pause(sandbox)
    resumed = await provider.resume(sandbox)
    assert resumed.id == sandbox.id
    first = await _counter(provider, resumed)  # the file survived
    assert first > 0
    await asyncio.sleep(0.4)
    assert await _counter(provider, resumed) == first  # the loop did not


async def check_freeze(provider: DaytonaProvider, sandbox: Sandbox) -> None:
    """pause/resume keeps processes: the counter stands still while paused, then runs."""
    assert (await provider.exec(sandbox, START_COUNTER, timeout_s=30)).exit_code == 0
    await asyncio.sleep(0.2)
    before = await _counter(provider, sandbox)
    await provider.pause(sandbox)
    await asyncio.sleep(1.0)
    resumed = await provider.resume(sandbox)
    after = await _counter(provider, resumed)
    assert after - before < 40, "the counter ran on while the sandbox was paused"
    await asyncio.sleep(0.3)
    assert await _counter(provider, resumed) > after, "the counter did not survive the pause"


async def check_fork(provider: DaytonaProvider, sandbox: Sandbox, run_id: str) -> None:
    """Children start from the parent's files, carry its run label, and are independent."""
    path = f"{SCRATCH_DIR}/at-fork"
    await provider.write_file(sandbox, path, b"before")
    children = await provider.fork(sandbox, count=2)
    try:
        assert len({sandbox.id, *(c.id for c in children)}) == 3
        await provider.write_file(children[0], path, b"child0")
        await provider.write_file(sandbox, path, b"after")
        assert [await provider.read_file(c, path) for c in children] == [b"child0", b"before"]
        assert await provider.read_file(sandbox, path) == b"after"
        assert {c.id for c in children} <= set(await provider.list_sandboxes(run_id))
    finally:
        for child in children:
            await provider.destroy(child)


# -- emulator tests ---------------------------------------------------------------------------


async def test_create_exec_files_list_and_destroy_round_trip(emulator):
    provider = await _open()

    async def make(run: str) -> Sandbox:
        return await provider.create(SandboxSpec(labels={RUN_LABEL: run}))

    try:
        async with cases.round_trip(provider, make, _run_id(), "another-run") as (sandbox, _):
            await check_exec(provider, sandbox)
            await check_files(provider, sandbox)
    finally:
        await provider.close()


async def test_checkpoint_restores_the_checksum_into_a_new_sandbox(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await check_checkpoint_restore(provider, sandbox)
        finally:
            await provider.destroy(sandbox)
        gone = CheckpointRef(id="sandbox-bench-deleted", provider="daytona", sandbox_id="x")
        with pytest.raises(NotFound):
            await provider.restore(gone)
    finally:
        await provider.close()


async def test_checkpoints_are_listed_by_run_page_by_page(emulator, monkeypatch):
    monkeypatch.setattr(daytona_module, "SNAPSHOT_PAGE", 1)  # every page followed
    provider = await _open()
    runs = [_run_id(), _run_id()]
    try:
        assert provider.capabilities().lists_checkpoints
        boxes = [await provider.create(SandboxSpec(labels={RUN_LABEL: r})) for r in runs]
        try:
            refs = [await provider.checkpoint(boxes[0]), await provider.checkpoint(boxes[0]),
                    await provider.checkpoint(boxes[1])]  # fmt: skip
            assert await provider.list_checkpoints(runs[0]) == sorted(r.id for r in refs[:2])
            assert await provider.list_checkpoints(runs[1]) == [refs[2].id]
            assert await provider.list_checkpoints(_run_id()) == []
            for ref in refs:
                await provider.delete_checkpoint(ref)
            assert await provider.list_checkpoints(runs[0]) == []
        finally:
            for box in boxes:
                await provider.destroy(box)
    finally:
        await provider.close()


async def test_a_snapshot_delete_that_answers_ok_has_deleted_even_under_a_malformed_fault(
    emulator,
):
    """The SDK ignores a snapshot delete's answer (``remove_snapshot`` has no response type),
    and the emulator's faults come before the call is done: its ``malformed`` answer
    there must fail the call, not pass for "deleted" while the snapshot stays (reap and the
    sweeps would count it gone: the interrupt test's leaked checkpoint)."""
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            ref = await provider.checkpoint(sandbox)
            headers = {"Authorization": f"Bearer {emulator.token}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{emulator.url}/api/snapshots/{ref.id}", headers=headers) as got,
            ):
                snapshot_id = (await got.json())["id"]
            # The SDK resolves the name (GET .../snapshots/<name>), then deletes by id: only
            # the DELETE gets the fault.
            await emulator.inject(kind="malformed", match=f"/api/snapshots/{snapshot_id}")
            with pytest.raises(ProviderError):
                await provider.delete_checkpoint(ref)
            assert await provider.list_checkpoints(run_id) == [ref.id]
            await provider.delete_checkpoint(ref)  # as a sweep's retry
            assert await provider.list_checkpoints(run_id) == []
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_restored_sandbox_carries_the_run_label(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        ref = await provider.checkpoint(sandbox)
        restored = await provider.restore(ref)
        try:
            assert sorted(await provider.list_sandboxes(run_id)) == sorted(
                [sandbox.id, restored.id]
            )
        finally:
            await provider.delete_checkpoint(ref)
            await provider.destroy(restored)
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_stop_start_keeps_files_and_ends_processes(emulator):
    provider = await _open()
    try:
        caps = provider.capabilities()
        assert caps.pause_kind is PauseKind.STOP_START
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await check_stop_start(provider, sandbox)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_pause_mode_freezes_a_vm_sandbox_and_keeps_its_processes(emulator):
    provider = await _open({"pause_mode": "pause", "snapshot": "linux-vm"})
    try:
        assert provider.capabilities().pause_kind is PauseKind.FREEZE
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await check_freeze(provider, sandbox)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_pause_mode_on_a_container_sandbox_is_refused_by_the_api(emulator):
    provider = await _open({"pause_mode": "pause"})
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            with pytest.raises(ProviderError, match="not supported for sandbox class container"):
                await provider.pause(sandbox)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_fork_children_start_from_the_parent_and_are_independent(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            await check_fork(provider, sandbox, run_id)
        finally:
            await provider.destroy(sandbox)
        assert await emulator.live_sandboxes() == []
    finally:
        await provider.close()


async def test_a_fork_that_fails_leaves_no_child_behind(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await emulator.inject(500, match="/fork")
            with pytest.raises(Unavailable):
                await provider.fork(sandbox)
            # Of two concurrent forks one is refused: the other child is deleted again.
            await emulator.inject(429, match="/fork")
            with pytest.raises(QuotaOrRateLimited):
                await provider.fork(sandbox, count=2)
            assert await emulator.live_sandboxes() == [sandbox.id]
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_exec_over_its_timeout_raises_operation_timeout(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "sleep 5", timeout_s=0.5)
            assert (await provider.exec(sandbox, ["true"], timeout_s=10)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("status", "match", "operation", "expected"),
    [
        (401, "/api/sandbox", "create", AuthError),
        (403, "/process/execute", "exec", AuthError),
        (404, "/process/execute", "exec", NotFound),
        (429, "/api/sandbox", "create", QuotaOrRateLimited),
        (429, "/files/bulk-upload", "write", QuotaOrRateLimited),
        (500, "/files/bulk-download", "read", Unavailable),
        (503, "/snapshot", "checkpoint", Unavailable),
        (500, "/api/sandbox", "list", Unavailable),
    ],
)
async def test_injected_errors_arrive_as_our_error_classes(
    emulator, status, match, operation, expected
):
    provider = await _open()
    run_id = _run_id()
    sandbox = None
    try:
        if operation != "create":
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        calls = cases.operation_calls(
            provider, sandbox, run_id,
            lambda: provider.create(SandboxSpec(labels={RUN_LABEL: run_id})),
            write_to=f"{SCRATCH_DIR}/f", read_from="/etc/hostname",
        )  # fmt: skip
        raised = await cases.one_fault(emulator, "daytona", status=status, match=match,
                                 call=calls[operation], expected=expected)  # fmt: skip
        if status == 429:
            # The SDK keeps response headers on API errors; its upload path drops them.
            expected_retry = None if operation == "write" else 1.0
            assert raised.retry_after_s == expected_retry
        if sandbox is not None:
            await cases.still_works(provider, sandbox)
    finally:
        if sandbox is not None:
            await provider.destroy(sandbox)
        await provider.close()


async def test_a_wrong_api_key_is_an_auth_error(emulator, monkeypatch):
    monkeypatch.setenv("DAYTONA_API_KEY", "not-the-token")
    provider = await _open()
    try:
        with pytest.raises(AuthError):
            await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
    finally:
        await provider.close()


async def test_a_missing_api_key_is_an_auth_error_naming_the_variable(monkeypatch):
    await cases.missing_variable_refused(DaytonaProvider, monkeypatch, "DAYTONA_API_KEY")


async def test_per_iteration_connection_gives_each_sandbox_its_own_client(emulator):
    provider = await _open({"connection": "per_iteration"})
    run_id = _run_id()
    try:
        first = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        second = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        clients = {id(first.native.client), id(second.native.client)}
        cases.own_clients(provider, first, second)
        for sandbox in (first, second):
            assert (await provider.exec(sandbox, ["echo", "ok"], timeout_s=10)).stdout == b"ok\n"
        await check_stop_start(provider, first)
        ref = await provider.checkpoint(second)
        restored = await provider.restore(ref)
        assert id(restored.native.client) not in clients
        assert sorted(await provider.list_sandboxes(run_id)) == sorted(
            [first.id, second.id, restored.id]
        )
        await provider.delete_checkpoint(ref)
        for sandbox in (first, second, restored):
            await provider.destroy(sandbox)
        assert provider.clients.owned == set()  # each client closed with its sandbox
    finally:
        await provider.close()


async def test_a_bare_sandbox_id_can_be_destroyed_as_the_reaper_does(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        await cases.bare_id_destroyed_twice(provider, sandbox, run_id)
    finally:
        await provider.close()


async def test_the_image_path_sends_the_specs_resources(emulator):
    provider = await _open({"image": "python:3.12-slim"})
    try:
        sandbox = await provider.create(
            SandboxSpec(cpus=1.5, memory_mb=1536, disk_mb=4096, labels={RUN_LABEL: _run_id()})
        )
        try:
            native = sandbox.native.sdk
            assert (native.cpu, native.memory, native.disk) == (2, 2, 4)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


def test_capabilities_and_environment_declare_the_semantics(monkeypatch):
    monkeypatch.setenv("DAYTONA_API_KEY", "secret-key-value")
    monkeypatch.setenv("DAYTONA_API_URL", "https://user:pw@daytona.example/api?token=x")
    provider = DaytonaProvider({})
    caps = provider.capabilities()
    assert caps.operations == REQUIRED_OPS | OPTIONAL_OPS
    assert caps.fork_keeps is CheckpointCaptures.FILESYSTEM
    assert caps.fork_method == "copy-on-write"
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.STOP_START
    assert caps.scratch_dir == "/home/daytona"
    assert "combined" in caps.notes["stderr"]
    env = provider.environment()
    assert env["endpoint"] == "https://daytona.example/api"
    assert env["connection"] == "reuse"
    assert "connection_level" in env["sdk_retries"]
    cases.no_secrets(env, "secret-key-value", "token=x")
    assert DaytonaProvider({"api_url": "http://127.0.0.1:9/api"}).environment()["endpoint"] == (
        "http://127.0.0.1:9/api"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"templte": "x"}, r"\[providers.daytona\]: unknown key\(s\) templte"),
        ({"connection": "sometimes"}, "connection must be one of"),
        ({"pause_mode": "sleep"}, "pause_mode must be one of"),
        ({"snapshot": "a", "image": "b"}, "not both"),
        ({"sdk_timeout_s": 0}, "sdk_timeout_s"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    cases.refused_in_one_line(DaytonaProvider, settings, message)


# -- live tests -------------------------------------------------------------------------------


@pytest.mark.live
class TestLive:
    """The same checks against the real Daytona service."""

    @pytest.fixture
    async def provider(self) -> AsyncIterator[DaytonaProvider]:
        if not os.environ.get("DAYTONA_API_KEY"):
            pytest.skip("set DAYTONA_API_KEY to run")
        provider = await _open()
        try:
            yield provider
        finally:
            await provider.close()

    @pytest.fixture
    async def sandbox(self, provider: DaytonaProvider) -> AsyncIterator[Sandbox]:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            yield sandbox
        finally:
            await provider.destroy(sandbox)

    async def test_exec(self, provider, sandbox):
        await check_exec(provider, sandbox)

    async def test_files(self, provider, sandbox):
        await check_files(provider, sandbox)

    async def test_checkpoint_restore(self, provider, sandbox):
        await check_checkpoint_restore(provider, sandbox)

    async def test_stop_start(self, provider, sandbox):
        await check_stop_start(provider, sandbox)

    async def test_fork(self, provider):
        run_id = _run_id()
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            await check_fork(provider, sandbox, run_id)
        finally:
            await provider.destroy(sandbox)

    async def test_list_and_destroy(self, provider):
        run_id = _run_id()
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            assert sandbox.id in await provider.list_sandboxes(run_id)
        finally:
            await provider.destroy(sandbox)
        await provider.destroy(sandbox)
        assert sandbox.id not in await provider.list_sandboxes(run_id)
