"""The northflank adapter, end to end through the real ``northflank`` SDK.

Most tests point the pinned SDK at the loopback emulator (bench/emulators/northflank.py), whose
services are real local sandboxes (root needed); a few run the emulator in-process on the stub
backend (no root). :class:`TestLiveNorthflank` runs the same checks against Northflank's cloud
when ``NORTHFLANK_API_TOKEN`` and ``NORTHFLANK_PROJECT_ID`` are set (``pytest -m live``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import northflank.endpoint as nf_endpoint
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

import providers.northflank as nf_adapter
from bench.emulators.control import Emulator
from bench.emulators.northflank import NorthflankEmulator
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
    SandboxCrashed,
    Unavailable,
)
from providers.northflank import PLANS, TAG, NorthflankProvider, label_tag, plan_for
from providers.settings import SettingError
from providers.stub import StubProvider
from tests import adapter_cases as cases

ENV_VARS = (
    "NORTHFLANK_API_TOKEN", "NF_API_TOKEN", "NORTHFLANK_API_BASE_URL", "NF_API_HOST", "NF_HOST",
    "NORTHFLANK_PROJECT_ID", "NORTHFLANK_TEAM_ID",
)  # fmt: skip
SCRATCH = "/root"
ROOT = Path(__file__).resolve().parents[1]
FAST = {"poll_interval_s": 0.05}

emulator = cases.emulator_fixture("northflank", ENV_VARS)
_opened = cases.opener(NorthflankProvider, FAST)


async def exercise(provider: NorthflankProvider) -> None:
    """Every interface operation through the SDK, with the checks the workloads make."""
    run_id = cases.new_run_id(12)
    async with cases.none_left(provider, run_id) as created:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=600))
        created.append(sandbox)
        scratch = provider.capabilities().scratch_dir
        # exec: exit codes are data, stdout and stderr arrive apart, argv is not re-split.
        await cases.exit_codes_and_streams(provider, sandbox, 60)
        big = await provider.exec(sandbox, "head -c 200000 /dev/zero | tr '\\0' x", timeout_s=60)
        assert big.stdout == b"x" * 200_000  # several frames

        # files: byte-exact both ways (binary, empty, 4 MiB, new parents); a missing file.
        small, _ = await cases.files_round_trip(
            provider, sandbox, f"{scratch}/small.bin", f"{scratch}/new/dir/large.bin",
            small=bytes(range(256)) * 4,
        )  # fmt: skip
        await provider.write_file(sandbox, f"{scratch}/empty", b"")
        assert await provider.read_file(sandbox, f"{scratch}/empty") == b""
        await cases.missing_file_is_not_found(provider, sandbox, f"{scratch}/missing.bin")

        # checkpoint + restore: a new service with the filesystem as it was.
        await cases.restored_copy(provider, sandbox, f"{scratch}/small.bin", small, created)

        # list by run label: the source and the restored service.
        await cases.assert_listed(provider, run_id, created)


async def test_every_operation_works_end_to_end_through_the_sdk(emulator: Emulator) -> None:
    await cases.exercised(_opened, exercise)


async def test_each_operation_makes_the_calls_its_docstring_says(emulator: Emulator) -> None:
    """create is a POST and polls of the containers, exec and each file call one WebSocket,
    checkpoint a POST and polls of the snapshot, destroy a DELETE and a GET until 404."""
    provider = await _opened()
    try:

        async def calls_of(step, *ids: str) -> list[str]:
            await emulator.clear_calls()
            await step()
            found = [f"{c['method']} {c['path']}" for c in await emulator.calls()]
            for n, each in enumerate(ids):
                found = [c.replace(each, f"ID{n}") for c in found]
            return found

        made: list = []

        async def create() -> None:
            made.append(await provider.create(SandboxSpec(labels={RUN_LABEL: "calls"})))

        calls = await calls_of(create)
        sid = made[0].id
        p, ws = "/v1/projects/prj-emulated/services", "GET /v1/command-exec/projects/prj-emulated"
        assert calls[0] == f"POST {p}/deployment"
        assert calls[1:] and set(calls[1:]) == {f"GET {p}/{sid}/containers"}
        sdk_exec = provider.clients.main.exec.arun_service_command
        for code, status in ((0, "Success"), (3, "Failure")):
            raw = await sdk_exec(project_id="prj-emulated", service_id=sid,
                                 command=["sh", "-c", f"exit {code}"])  # fmt: skip
            assert (raw.exit_code, raw.status) == (code, status)
            assert raw.raw_frames[-1]["data"]["exitCode"] == str(code)  # a string on the wire
        for step in (
            lambda: provider.exec(made[0], "true", timeout_s=30),
            lambda: provider.write_file(made[0], f"{SCRATCH}/f", b"x"),
            lambda: provider.read_file(made[0], f"{SCRATCH}/f"),
        ):
            assert await calls_of(step, sid) == [f"{ws}/services/ID0"]

        async def checkpoint() -> None:
            made.append(await provider.checkpoint(made[0]))

        calls = await calls_of(checkpoint, sid)
        assert calls[0] == f"POST {p}/ID0/snapshots"
        assert set(calls[1:]) == {f"GET /v1/container-snapshots/{made[1].id}"}
        assert await calls_of(lambda: provider.destroy(made[0]), sid) == [
            f"DELETE {p}/ID0",
            f"GET {p}/ID0",
        ]
        await provider.delete_checkpoint(made[1])
    finally:
        await provider.close()


async def test_create_sends_plan_image_tags_and_lifetime_and_restore_keeps_them(
    emulator: Emulator,
) -> None:
    provider = await _opened({"image": "debian:12"})
    try:
        labels = {RUN_LABEL: "sizes", "k": "v w"}
        spec = SandboxSpec(labels=labels, cpus=1.5, memory_mb=3000, disk_mb=5000, lifetime_s=30)
        sandbox = await provider.create(spec)
        restored = None
        try:
            client = sandbox.native.client
            got = (await client.get.service(project_id="prj-emulated", service_id=sandbox.id)).data
            assert got["billing"] == {"deploymentPlan": "nf-compute-200"}  # 2 vCPU / 4 GiB
            deployment = got["deployment"]
            assert deployment["instances"] == 1
            assert deployment["external"] == {"imagePath": "debian:12"}
            assert deployment["docker"]["customCommand"] == "sleep infinity"
            assert deployment["storage"] == {"ephemeralStorage": {"storageSize": 5000}}
            assert sorted(got["tags"]) == sorted([label_tag(k, v) for k, v in labels.items()])
            assert label_tag("k", "v w").startswith("h-")  # a space breaks the tag pattern
            assert got["expiryTime"]  # 30 s asked, the API's least (300 s) sent
            ref = await provider.checkpoint(sandbox)
            restored = await provider.restore(ref)
            again = (
                await client.get.service(project_id="prj-emulated", service_id=restored.id)
            ).data
            assert again["deployment"]["containerSnapshot"] == {"restoreFrom": ref.id}
            assert again["billing"] == got["billing"] and again["tags"] == got["tags"]
            await provider.delete_checkpoint(ref)
        finally:
            await provider.destroy(sandbox)
            if restored is not None:
                await provider.destroy(restored)
    finally:
        await provider.close()


async def test_faults_arrive_as_our_error_tree_and_are_not_retried(emulator: Emulator) -> None:
    provider = await _opened({"request_timeout_s": 1.0})
    try:
        spec = SandboxSpec(labels={RUN_LABEL: "faults"})
        faults = [(401, AuthError), (404, NotFound), (408, OperationTimeout),
                 (429, QuotaOrRateLimited), (500, Unavailable), (503, Unavailable)]  # fmt: skip
        await emulator.clear_calls()
        await cases.faults_raise(
            emulator, faults, [("/services/deployment", lambda: provider.create(spec))]
        )
        for kind, error in (("reset", Unavailable), ("malformed", ProtocolError)):
            await emulator.inject(kind=kind, match="/services/deployment")
            with pytest.raises(error):
                await provider.create(spec)
        posts = [c for c in await emulator.calls() if c["path"].endswith("/deployment")]
        assert len(posts) == len(faults) + 2, "the SDK retried a failed create"
        await emulator.inject(429, match="/services")
        with pytest.raises(QuotaOrRateLimited):
            await provider.list_sandboxes("faults")
        sandbox = await provider.create(spec)
        try:
            await cases.faults_raise(emulator, faults, [
                ("/v1/command-exec/", lambda: provider.exec(sandbox, "true", timeout_s=30)),
                ("/v1/command-exec/", lambda: provider.read_file(sandbox, "/etc/hostname")),
                ("/snapshots", lambda: provider.checkpoint(sandbox)),
            ])  # fmt: skip
            for op in ("exec", "write"):
                await emulator.inject(kind="malformed", match="/v1/command-exec/")
                with pytest.raises(ProtocolError):
                    if op == "exec":
                        await provider.exec(sandbox, "true", timeout_s=30)
                    else:
                        await provider.write_file(sandbox, f"{SCRATCH}/g", b"x")
            await emulator.inject(409, match="/snapshots")
            with pytest.raises(ProviderError) as conflict:
                await provider.checkpoint(sandbox)
            assert type(conflict.value) is ProviderError
            assert (await provider.exec(sandbox, "true", timeout_s=30)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_a_create_whose_answer_times_out_is_sent_once(emulator: Emulator) -> None:
    """The SDK alone sends a create whose answer timed out 4 times (3 retries on any httpx
    error); with the adapter's patch it is sent once, and nothing is created."""
    provider = await _opened({"request_timeout_s": 0.5})
    try:
        assert getattr(nf_endpoint._aretry, "sandbox_bench", False)
        assert provider.environment()["rest_retries_patched"] is True
        await emulator.clear_calls()
        await emulator.inject(kind="hang", match="/services/deployment")
        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            await provider.create(SandboxSpec(labels={RUN_LABEL: "hang"}))
        assert time.monotonic() - started < 3.0
        assert [c["path"] for c in await emulator.calls()] == [
            "/v1/projects/prj-emulated/services/deployment"
        ]
    finally:
        await provider.close()


async def test_an_exec_past_its_timeout_is_an_operation_timeout_at_its_deadline(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "timeout"}))
        try:
            started = time.monotonic()
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "sleep 5", timeout_s=0.5)
            assert time.monotonic() - started < 2.0  # not the SDK's 60 s per message
            assert (await provider.exec(sandbox, "true", timeout_s=30)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_files_are_bounded_by_max_file_mb(emulator: Emulator) -> None:
    provider = await _opened({"max_file_mb": 1})
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "bounded"}))
        try:
            await emulator.clear_calls()
            with pytest.raises(ProviderError, match="max_file_mb"):
                await provider.write_file(sandbox, f"{SCRATCH}/big", b"x" * (1024 * 1024 + 1))
            assert await emulator.calls() == []  # refused before any call
            made = await provider.exec(sandbox, f"head -c 2000000 /dev/zero > {SCRATCH}/big",
                                       timeout_s=30)  # fmt: skip
            assert made.exit_code == 0
            with pytest.raises(ProviderError, match="max_file_mb"):
                await provider.read_file(sandbox, f"{SCRATCH}/big")
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_listing_filters_by_run_tag_over_every_page(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nf_adapter, "LIST_PAGE", 1)
    provider = await _opened()
    try:
        mine = [await provider.create(SandboxSpec(labels={RUN_LABEL: "mine"})) for _ in range(2)]
        other = await provider.create(SandboxSpec(labels={RUN_LABEL: "other"}))
        await emulator.clear_calls()
        assert sorted(await provider.list_sandboxes("mine")) == sorted(s.id for s in mine)
        pages = [c for c in await emulator.calls() if c["path"].endswith("/services")]
        assert len(pages) == 3  # one service a page: client-side filtering sees them all
        for sandbox in (*mine, other):
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_team_routes_are_used_when_a_team_is_set(emulator: Emulator) -> None:
    provider = await _opened({"team_id": "my-team"})
    try:
        await emulator.clear_calls()
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "team"}))
        assert (await provider.exec(sandbox, ["true"], timeout_s=30)).exit_code == 0
        await provider.destroy(sandbox)
        paths = [c["path"] for c in await emulator.calls()]
        assert all("/teams/my-team/" in p for p in paths), paths
        assert any(p.startswith("/v1/command-exec/teams/my-team/") for p in paths)
    finally:
        await provider.close()


async def test_per_iteration_connection_gives_each_service_its_own_client_closed_with_it(
    emulator: Emulator,
) -> None:
    provider = await _opened({"connection": "per_iteration"})
    try:
        await cases.clients_closed_with_their_sandboxes(
            provider, lambda client: client._async_client.is_closed
        )
    finally:
        await provider.close()


async def test_wrong_token_is_an_auth_error_for_rest_and_exec(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = await _opened()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "auth"}))
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", "not-the-token")
    wrong = await _opened()
    try:
        with pytest.raises(AuthError):
            await wrong.create(SandboxSpec())
        with pytest.raises(AuthError):
            await wrong.list_sandboxes("any")
        with pytest.raises(AuthError, match="auth failed"):
            await wrong.exec(Sandbox(id=sandbox.id, provider="northflank"), "true", timeout_s=10)
    finally:
        await wrong.close()
        await provider.destroy(sandbox)
        await provider.close()


async def test_unknown_services_are_not_found_and_destroying_them_is_not_an_error(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        ghost = Sandbox(id="sb-doesnotexist", provider="northflank")
        await cases.ghost_is_not_found(provider, ghost)
        with pytest.raises(NotFound):
            await provider.read_file(ghost, "/etc/hostname")
        with pytest.raises(NotFound):
            await provider.checkpoint(ghost)
    finally:
        await provider.close()


async def test_a_spec_beyond_every_plan_fails_before_any_call(emulator: Emulator) -> None:
    provider = await _opened()
    try:
        await emulator.clear_calls()
        with pytest.raises(ProviderError, match="beyond every plan"):
            await provider.create(SandboxSpec(cpus=16))
        assert await emulator.calls() == []
    finally:
        await provider.close()


class _FailingStub(StubProvider):
    """The stub backend whose sandboxes fail to start."""

    async def create(self, spec: SandboxSpec) -> Sandbox:
        await asyncio.sleep(0.05)
        raise ProviderError("boot failed")


async def test_a_service_whose_container_ends_is_crashed_and_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No root: the emulator in-process on a stub backend whose boots fail."""
    protocol = NorthflankEmulator(Sandboxes(_FailingStub()), "tok")
    async with cases.in_process_emulator(protocol) as app:
        server = TestServer(app)
        await server.start_server()
        try:
            for key in ENV_VARS:
                monkeypatch.delenv(key, raising=False)
            client_env = NorthflankEmulator.client_env(str(server.make_url("")), "tok")
            for key, value in client_env.items():
                monkeypatch.setenv(key, value.rstrip("/"))
            provider = await _opened()
            try:
                with pytest.raises(SandboxCrashed, match="TASK_FAILED"):
                    await provider.create(SandboxSpec(labels={RUN_LABEL: "crash"}))
                assert protocol.sandboxes.live() == []  # the adapter deleted it
            finally:
                await provider.close()
        finally:
            await server.close()


async def test_missing_credentials_are_auth_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ENV_VARS:
        monkeypatch.delenv(key, raising=False)
    assert NorthflankProvider.required_env == ("NORTHFLANK_API_TOKEN", "NORTHFLANK_PROJECT_ID")
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", "t")
    with pytest.raises(AuthError, match="NORTHFLANK_PROJECT_ID"):
        await NorthflankProvider({}).open()
    monkeypatch.delenv("NORTHFLANK_API_TOKEN")
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "p")
    with pytest.raises(AuthError, match="NORTHFLANK_API_TOKEN"):
        await NorthflankProvider({}).open()


@pytest.mark.parametrize("missing", ["NORTHFLANK_API_TOKEN", "NORTHFLANK_PROJECT_ID"])
def test_the_cli_refuses_a_run_without_credentials_in_one_line_with_exit_2(
    tmp_path: Path, missing: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(NORTHFLANK_API_TOKEN="t", NORTHFLANK_PROJECT_ID="p", COLUMNS="400",
               NORTHFLANK_API_BASE_URL="http://127.0.0.1:9", PYTHONPATH=str(ROOT))  # fmt: skip
    del env[missing]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--config", "none", "--providers", "northflank",
         "--workloads", "lifecycle", "--iterations", "1", "--output", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert missing in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not any(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bogus": 1}, r"\[providers.northflank\]: unknown key\(s\) bogus"),
        ({"plan": "nf-compute-9000"}, "plan"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"max_file_mb": 0}, "max_file_mb"),
        ({"scratch_dir": "tmp"}, "scratch_dir"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"connection": "sometimes"}, "connection"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    cases.refused_in_one_line(NorthflankProvider, settings, message, SettingError)


async def test_the_manifest_records_endpoint_plan_and_retries_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", "nf_secret_value")
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "proj")
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", "http://user:pw@127.0.0.1:9/x?k=v")
    provider = await _opened()
    try:
        env = provider.environment()
        assert env["endpoint"] == "http://127.0.0.1:9/x"
        assert env["sdk_versions"] == {"northflank": "2.1.0"}
        assert env["plan_for_default_spec"] == "nf-compute-100-1"
        assert env["rest_retries_patched"] is True
        cases.no_secrets(env, "nf_secret_value", "proj")
    finally:
        await provider.close()


def test_capabilities_declare_filesystem_snapshots_new_services_and_no_pause_or_fork() -> None:
    caps = NorthflankProvider({}).capabilities()
    assert caps.operations >= {Op.CHECKPOINT, Op.RESTORE}
    for op in (Op.PAUSE, Op.RESUME, Op.FORK):
        assert op not in caps.operations and caps.unsupported[str(op)]
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.NONE
    assert caps.scratch_dir == SCRATCH


def test_the_default_spec_runs_on_one_vcpu_and_one_gib() -> None:
    assert plan_for(SandboxSpec()) == "nf-compute-100-1"
    assert plan_for(SandboxSpec(cpus=2, memory_mb=4096)) == "nf-compute-200"
    with pytest.raises(ValueError):
        plan_for(SandboxSpec(cpus=8, memory_mb=50_000))


@given(cpus=st.floats(min_value=0.1, max_value=10), memory_mb=st.integers(16, 50_000))
def test_the_plan_is_the_smallest_covering_the_spec(cpus: float, memory_mb: int) -> None:
    spec = SandboxSpec(cpus=cpus, memory_mb=memory_mb)
    covering = [p for p, (c, m) in PLANS.items() if c >= cpus and m >= memory_mb]
    if not covering:
        with pytest.raises(ValueError):
            plan_for(spec)
        return
    chosen = plan_for(spec)
    assert chosen in covering
    assert all(PLANS[chosen] <= PLANS[p] for p in covering)


@given(key=st.text(min_size=1, max_size=80), value=st.text(max_size=120))
def test_every_label_becomes_a_valid_tag_and_the_same_tag_each_time(key: str, value: str):
    tag = label_tag(key, value)
    assert TAG.fullmatch(tag) and 3 <= len(tag) <= 100
    assert tag == label_tag(key, value)
    assert label_tag(RUN_LABEL, "20261129T120000Z-a1b2c3") == (
        "sandbox-bench-run-20261129T120000Z-a1b2c3"
    )


@pytest.mark.live
class TestLiveNorthflank:
    """The same checks against Northflank's cloud (``pytest -m live``)."""

    @pytest.fixture(autouse=True)
    def _credentials(self) -> None:
        for key in ("NORTHFLANK_API_TOKEN", "NORTHFLANK_PROJECT_ID"):
            if not os.environ.get(key):
                pytest.skip(f"set {key} to run the live Northflank tests")

    async def test_every_operation_works_against_the_real_service(self) -> None:
        await cases.exercised(cases.opener(NorthflankProvider), exercise)

    async def test_a_second_destroy_of_a_real_service_is_not_an_error(self) -> None:
        provider = NorthflankProvider({})
        await provider.open()
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "live-twice"}))
            await provider.destroy(sandbox)
            await provider.destroy(Sandbox(id=sandbox.id, provider="northflank"))
            assert sandbox.id not in await provider.list_sandboxes("live-twice")
        finally:
            await provider.close()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("illegal header line: bytearray(b'Content-Length: x')", ProtocolError),
        ("Server disconnected without sending a response.", Unavailable),
    ],
)
def test_an_answer_httpx_cannot_parse_is_a_protocol_error_and_a_dropped_peer_unavailable(
    message, error
):
    """httpx raises RemoteProtocolError for both; the answer the emulator's malformed DELETE
    sends (a broken header block) is the provider's answer being wrong, not the network."""
    exc = httpx.RemoteProtocolError(message)
    assert type(NorthflankProvider({}).translate(exc, "destroy")) is error
