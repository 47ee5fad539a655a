"""The runloop adapter, end to end through the real ``runloop-api-client`` SDK.

Most tests point the pinned SDK at the loopback emulator (bench/emulators/runloop.py), whose
devboxes are real local sandboxes (root needed). :class:`TestLiveRunloop` runs the same checks
against Runloop's cloud when ``RUNLOOP_API_KEY`` is set (``pytest -m live``).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

import providers.runloop as runloop_adapter
from bench.emulators.control import Emulator
from bench.emulators.runloop import RunloopEmulator
from bench.emulators.toolkit import Sandboxes
from providers.base import (
    RUN_LABEL,
    CheckpointCaptures,
    Op,
    PauseKind,
    RestoreTarget,
    Sandbox,
    SandboxSpec,
)
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
)
from providers.runloop import RunloopProvider, custom_size
from providers.settings import SettingError
from providers.stub import StubProvider
from tests import adapter_cases as cases

ENV_VARS = ("RUNLOOP_API_KEY", "RUNLOOP_BASE_URL", "RUNLOOP_CUSTOM_HEADERS", "RUNLOOP_LOG")
SCRATCH = "/home/user"

emulator = cases.emulator_fixture("runloop", ENV_VARS)
_opened = cases.opener(RunloopProvider)


async def exercise(provider: RunloopProvider) -> None:
    """Every interface operation through the SDK, with the checks the workloads make."""
    run_id = cases.new_run_id(12)
    async with cases.none_left(provider, run_id) as created:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=600))
        created.append(sandbox)
        # exec: exit codes are data, stdout and stderr arrive apart, argv is quoted.
        await cases.exit_codes_and_streams(provider, sandbox, 60)
        # Past 100 lines the SDK fetches the whole output from the SSE stream.
        many = await provider.exec(sandbox, "seq 1 250; seq 1 120 >&2", timeout_s=60)
        assert many.stdout.splitlines() == [str(i).encode() for i in range(1, 251)]
        assert len(many.stderr.splitlines()) == 120

        # files: byte-exact both ways, binary and 4 MiB.
        small, large = await cases.files_round_trip(
            provider, sandbox, f"{SCRATCH}/small.bin", f"{SCRATCH}/large.bin",
            small=bytes(range(256)) * 4,
        )  # fmt: skip
        await cases.missing_file_is_not_found(provider, sandbox, f"{SCRATCH}/missing.bin")

        # checkpoint + restore: a new devbox with the disk as it was at the checkpoint.
        await cases.restored_copy(provider, sandbox, f"{SCRATCH}/large.bin", large, created)

        # suspend + resume: same id, the disk survives, a process started before does not.
        start = f"nohup sleep 600 >/dev/null 2>&1 & echo $! > {SCRATCH}/pid"
        assert (await provider.exec(sandbox, start, timeout_s=60)).exit_code == 0
        await provider.pause(sandbox)
        resumed = await provider.resume(sandbox)
        assert resumed.id == sandbox.id
        assert await provider.read_file(resumed, f"{SCRATCH}/small.bin") == small
        alive = await provider.exec(resumed, f"kill -0 $(cat {SCRATCH}/pid)", timeout_s=60)
        assert alive.exit_code != 0, "a process survived suspend/resume"

        # list by run label: the source and the restored devbox.
        await cases.assert_listed(provider, run_id, created)


async def test_every_operation_works_end_to_end_through_the_sdk(emulator: Emulator) -> None:
    await cases.exercised(_opened, exercise)


async def test_each_operation_makes_the_calls_its_docstring_says(emulator: Emulator) -> None:
    """create waits in one call, checkpoint is the one blocking call (no 1 s status polling),
    pause is suspend plus a wait, exec is a start plus a wait, destroy is one call."""
    provider = await _opened()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "calls"}))

        async def calls_of(step) -> list[str]:
            await emulator.clear_calls()
            await step()
            calls = await emulator.calls()
            return [f"{c['method']} {c['path'].replace(sandbox.id, 'ID')}" for c in calls]

        exec_calls = await calls_of(lambda: provider.exec(sandbox, "true", timeout_s=30))
        assert exec_calls[0] == "POST /v1/devboxes/ID/execute_async"  # then its long-poll:
        assert len(exec_calls) == 2 and exec_calls[1].endswith("/wait_for_status")
        refs = []

        async def checkpoint() -> None:
            refs.append(await provider.checkpoint(sandbox))

        assert await calls_of(checkpoint) == ["POST /v1/devboxes/ID/snapshot_disk"]
        assert await calls_of(lambda: provider.pause(sandbox)) == [
            "POST /v1/devboxes/ID/suspend",
            "POST /v1/devboxes/ID/wait_for_status",
        ]
        assert await calls_of(lambda: provider.resume(sandbox)) == [
            "POST /v1/devboxes/ID/resume",
            "POST /v1/devboxes/ID/wait_for_status",
        ]
        assert await calls_of(lambda: provider.destroy(sandbox)) == [
            "POST /v1/devboxes/ID/shutdown"
        ]
        restored = []

        async def restore() -> None:
            restored.append(await provider.restore(refs[0]))

        assert await calls_of(restore) == ["POST /v1/devboxes/create_and_await_running"]
        await provider.destroy(restored[0])
        await provider.delete_checkpoint(refs[0])
    finally:
        await provider.close()


async def test_create_sends_labels_size_and_lifetime_and_restore_keeps_them(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        labels = {RUN_LABEL: "sizes", "k": "v"}
        spec = SandboxSpec(labels=labels, cpus=2, memory_mb=3000, disk_mb=5000, lifetime_s=1234)
        sandbox = await provider.create(spec)
        restored = None
        try:
            view = await sandbox.native.client.devboxes.retrieve(sandbox.id)
            assert view.status == "running"
            assert view.metadata == labels
            launch = view.launch_parameters
            assert (launch.custom_cpu_cores, launch.custom_gb_memory) == (2, 4)
            assert (launch.custom_disk_size, launch.keep_alive_time_seconds) == (6, 1234)
            ref = await provider.checkpoint(sandbox)
            restored = await provider.restore(ref)
            again = await restored.native.client.devboxes.retrieve(restored.id)
            assert again.metadata == labels and again.snapshot_id == ref.id
            assert again.launch_parameters.custom_gb_memory == 4
            await provider.delete_checkpoint(ref)
        finally:
            await provider.destroy(sandbox)
            if restored is not None:
                await provider.destroy(restored)
    finally:
        await provider.close()


async def test_faults_arrive_as_our_error_tree_and_are_not_retried(emulator: Emulator) -> None:
    provider = await _opened()
    try:
        spec = SandboxSpec(labels={RUN_LABEL: "faults"})
        faults = [
            (401, AuthError),
            (404, NotFound),
            (408, OperationTimeout),
            (429, QuotaOrRateLimited),
            (500, Unavailable),
            (503, Unavailable),
        ]
        await emulator.clear_calls()
        # One fault only: with the SDK's retries on (5 by default) the next try would pass.
        create = ("/create_and_await_running", lambda: provider.create(spec))
        await cases.faults_raise(emulator, faults, [create])
        creates = [c for c in await emulator.calls() if c["path"].endswith("await_running")]
        assert len(creates) == len(faults), "the SDK retried a failed create"
        await emulator.inject(429, match="/v1/devboxes")
        with pytest.raises(QuotaOrRateLimited) as limited:
            await provider.list_sandboxes("faults")
        assert limited.value.retry_after_s == 1.0
        sandbox = await provider.create(spec)
        try:
            await cases.faults_raise(emulator, faults, [
                ("/execute_async", lambda: provider.exec(sandbox, "true", timeout_s=30)),
                ("/download_file", lambda: provider.read_file(sandbox, "/etc/hostname")),
                ("/snapshot_disk", lambda: provider.checkpoint(sandbox)),
            ])  # fmt: skip
            await emulator.inject(409, match="/suspend")
            with pytest.raises(ProviderError) as conflict:
                await provider.pause(sandbox)
            assert type(conflict.value) is ProviderError
            await emulator.inject(kind="malformed", match="/download_file")
            with pytest.raises(ProtocolError):
                await provider.read_file(sandbox, "/etc/hostname")
            assert (await provider.exec(sandbox, "true", timeout_s=30)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_an_exec_past_its_timeout_is_killed_and_is_an_operation_timeout(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "timeout"}))
        try:
            late = f"{SCRATCH}/late"
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, f"sleep 2 && touch {late}", timeout_s=0.5)
            assert any(c["path"].endswith("/kill") for c in await emulator.calls())
            await asyncio.sleep(2.5)
            gone = await provider.exec(sandbox, f"test -e {late}", timeout_s=30)
            assert gone.exit_code == 1, "the command ran on after its timeout"
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_listing_filters_by_run_label_and_status_over_every_page(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runloop_adapter, "LIST_PAGE", 1)
    provider = await _opened()
    try:
        mine = [await provider.create(SandboxSpec(labels={RUN_LABEL: "mine"})) for _ in range(2)]
        other = await provider.create(SandboxSpec(labels={RUN_LABEL: "other"}))
        await provider.destroy(mine[1])
        await emulator.clear_calls()
        assert await provider.list_sandboxes("mine") == [mine[0].id]
        pages = [c for c in await emulator.calls() if c["path"] == "/v1/devboxes"]
        assert len(pages) >= 3  # one devbox a page, the shut-down one included
        raw = [v.id async for v in provider.clients.main.devboxes.list()]
        assert mine[1].id in raw  # the API lists it; the adapter filters it out
        for sandbox in (mine[0], other):
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_per_iteration_connection_gives_each_devbox_its_own_client_closed_with_it(
    emulator: Emulator,
) -> None:
    provider = await _opened({"connection": "per_iteration"})
    try:
        await cases.clients_closed_with_their_sandboxes(provider, lambda client: client.is_closed())
    finally:
        await provider.close()


async def test_wrong_api_key_is_an_auth_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNLOOP_API_KEY", "not-the-token")
    provider = await _opened()
    try:
        with pytest.raises(AuthError):
            await provider.create(SandboxSpec())
        with pytest.raises(AuthError):
            await provider.list_sandboxes("any")
    finally:
        await provider.close()


async def test_unknown_devboxes_are_not_found_and_destroying_them_is_not_an_error(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        ghost = Sandbox(id="dbx_doesnotexist", provider="runloop")
        await cases.ghost_is_not_found(provider, ghost)
        with pytest.raises(NotFound):
            await provider.pause(ghost)
    finally:
        await provider.close()


async def test_a_spec_beyond_runloops_sizes_fails_before_any_call(emulator: Emulator) -> None:
    provider = await _opened()
    try:
        await emulator.clear_calls()
        with pytest.raises(ProviderError, match="beyond Runloop"):
            await provider.create(SandboxSpec(cpus=32))
        assert await emulator.calls() == []
    finally:
        await provider.close()


async def test_missing_api_key_is_an_auth_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cases.missing_variable_refused(RunloopProvider, monkeypatch, "RUNLOOP_API_KEY")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bogus": 1}, r"\[providers.runloop\]: unknown key\(s\) bogus"),
        ({"resource_size": "HUGE"}, "resource_size"),
        ({"pool_shards": 0}, "pool_shards"),
        ({"request_timeout_s": -1}, "request_timeout_s"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"connection": "sometimes"}, "connection"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    cases.refused_in_one_line(RunloopProvider, settings, message, SettingError)


async def test_client_has_retries_off_and_its_own_unsharded_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNLOOP_API_KEY", "rl_secret_value")
    monkeypatch.setenv("RUNLOOP_BASE_URL", "http://user:pw@127.0.0.1:9/x?k=v")
    provider = await _opened()
    try:
        client = provider.clients.main
        assert client.max_retries == 0 and client._uses_shared_pool is False
        assert (client._api_pool.shards, client._background_pool.shards) == (1, 1)
        assert client._transfer_pool.shards == 1
        env = provider.environment()
        assert env["endpoint"] == "http://127.0.0.1:9/x"
        assert env["sdk_retries"]["observed_max_retries"] == 0
        assert env["sdk_versions"] == {"runloop-api-client": "3.0.0"}
        cases.no_secrets(env, "rl_secret_value")
    finally:
        await provider.close()


class _SlowStub(StubProvider):
    """The stub backend with a create that takes a while, and a count of what it holds."""

    async def create(self, spec: SandboxSpec) -> Sandbox:
        await asyncio.sleep(0.3)
        return await super().create(spec)


@pytest.mark.parametrize("client_gives_up", [False, True])
async def test_a_shutdown_during_the_boot_leaves_nothing(client_gives_up: bool) -> None:
    """No root: the emulator on the stub backend, driven over HTTP. A devbox shut down while it
    boots (the runner's sweep after its create timed out) is gone once the boot ends, whether
    or not its create's client is still waiting."""
    backend = _SlowStub()
    protocol = RunloopEmulator(Sandboxes(backend), "tok")
    auth = {"Authorization": "Bearer tok"}
    async with cases.in_process_emulator(protocol) as app, TestClient(TestServer(app)) as client:
        create = asyncio.ensure_future(
            client.post("/v1/devboxes/create_and_await_running", json={}, headers=auth)
        )
        await asyncio.sleep(0.1)
        listed = await (await client.get("/v1/devboxes", headers=auth)).json()
        (booting,) = listed["devboxes"]
        assert booting["status"] == "provisioning"
        if client_gives_up:
            create.cancel()
        gone = await client.post(f"/v1/devboxes/{booting['id']}/shutdown", headers=auth)
        assert (await gone.json())["status"] == "shutdown"
        await asyncio.gather(create, return_exceptions=True)
        await asyncio.sleep(0.4)
        assert protocol.sandboxes.live() == [] and backend._boxes == {}
        again = await client.get(f"/v1/devboxes/{booting['id']}", headers=auth)
        assert (await again.json())["status"] == "shutdown"


def test_capabilities_declare_disk_snapshots_new_devboxes_and_stop_start_pause() -> None:
    caps = RunloopProvider({}).capabilities()
    assert caps.operations >= {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}
    assert Op.FORK not in caps.operations and caps.unsupported[str(Op.FORK)]
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.STOP_START
    assert caps.scratch_dir == SCRATCH


def test_the_default_spec_is_sent_as_one_vcpu_and_two_gib() -> None:
    assert custom_size(SandboxSpec()) == {
        "resource_size_request": "CUSTOM_SIZE",
        "custom_cpu_cores": 1,
        "custom_gb_memory": 2,
    }
    with pytest.raises(ValueError):
        custom_size(SandboxSpec(cpus=1, memory_mb=65 * 1024))
    with pytest.raises(ValueError):
        custom_size(SandboxSpec(disk_mb=70 * 1024))


@given(
    cpus=st.floats(min_value=0.1, max_value=16),
    memory_mb=st.integers(min_value=16, max_value=64 * 1024),
    disk_mb=st.one_of(st.none(), st.integers(min_value=1, max_value=64 * 1024)),
)
def test_a_custom_size_is_on_runloops_grid_and_never_below_the_spec(cpus, memory_mb, disk_mb):
    spec = SandboxSpec(cpus=cpus, memory_mb=memory_mb, disk_mb=disk_mb)
    try:
        size = custom_size(spec)
    except ValueError:
        # Only when the memory needs more than 16 CPUs' worth or the grid's top.
        assert memory_mb > 64 * 1024 or memory_mb / 1024 > 8 * 16
        return
    cpu, memory = size["custom_cpu_cores"], size["custom_gb_memory"]
    assert cpu in (0.5, 1) or (cpu % 2 == 0 and cpu <= 16)
    assert memory == 1 or (memory % 2 == 0 and memory <= 64)
    assert 2 * cpu <= memory <= 8 * cpu
    assert cpu >= cpus and memory * 1024 >= memory_mb
    if disk_mb is None:
        assert "custom_disk_size" not in size
    else:
        disk = size["custom_disk_size"]
        assert disk % 2 == 0 and 2 <= disk <= 64 and disk * 1024 >= disk_mb


@pytest.mark.live
class TestLiveRunloop:
    """The same checks against Runloop's cloud (``pytest -m live``)."""

    @pytest.fixture(autouse=True)
    def _credentials(self) -> None:
        if not os.environ.get("RUNLOOP_API_KEY"):
            pytest.skip("set RUNLOOP_API_KEY to run the live Runloop tests")

    async def test_every_operation_works_against_the_real_service(self) -> None:
        await cases.exercised(_opened, exercise)

    async def test_a_second_shutdown_of_a_real_devbox_is_not_an_error(self) -> None:
        provider = await _opened()
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "live-twice"}))
            await provider.destroy(sandbox)
            await provider.destroy(Sandbox(id=sandbox.id, provider="runloop"))
            assert sandbox.id not in await provider.list_sandboxes("live-twice")
        finally:
            await provider.close()
