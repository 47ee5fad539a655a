"""The vercel adapter, end to end through the real pinned SDK (vercel-sandbox 0.10.0).

Each test starts the loopback emulator (bench/emulators/vercel.py, backed by real local
sandboxes), points the SDK at it with the emulator's ``client_env`` and drives the adapter:
JSON over httpx2, exec as an NDJSON stream, file writes as gzip tar uploads. ``TestLive`` runs
the shared checks against Vercel (``pytest -m live``) when the credentials are set.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.emulators.control import Emulator
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
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
)
from providers.vercel import SCRATCH_DIR, VercelProvider, sandbox_name
from tests import adapter_cases as cases

CREDENTIALS = ("VERCEL_TOKEN", "VERCEL_TEAM_ID", "VERCEL_PROJECT_ID")
ENV_KEYS = (*CREDENTIALS, "VERCEL_SANDBOX_API_URL", "VERCEL_OIDC_TOKEN",
            "VERCEL_OIDC_TOKEN_FILE", "VERCEL_REGION")  # fmt: skip
NAME = re.compile(r"sb-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}")

emulator = cases.emulator_fixture("vercel", ENV_KEYS)
_open = cases.opener(VercelProvider)
_run_id = cases.new_run_id


@pytest.fixture
async def provider(emulator: Emulator) -> AsyncIterator[VercelProvider]:
    opened = await _open()
    try:
        yield opened
    finally:
        await opened.close()


def _calls(calls: list[dict], method: str, pattern: str) -> list[dict]:
    return [c for c in calls if c["method"] == method and re.fullmatch(pattern, c["path"])]


# -- checks shared by the emulator tests and the live tests ----------------------------------


async def check_exec(provider: VercelProvider, sandbox: Sandbox) -> None:
    failed = await provider.exec(sandbox, "echo hello; echo oops >&2; exit 3", timeout_s=30)
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"hello\n", b"oops\n")
    await cases.argv_is_not_resplit(provider, sandbox, 30)  # no shell for argv
    where = await provider.exec(sandbox, ["pwd"], timeout_s=30)
    assert where.stdout == f"{SCRATCH_DIR}\n".encode()
    big = await provider.exec(sandbox, "yes 0123456789abcdef | head -c 65536", timeout_s=30)
    assert big.stdout == (b"0123456789abcdef\n" * 4096)[:65536]
    # Output travels as JSON text: valid UTF-8 survives, other bytes do not (declared).
    binary = await provider.exec(sandbox, "printf '\\000\\377\\001' >&2", timeout_s=30)
    assert binary.stderr.startswith(b"\x00") and binary.stderr.endswith(b"\x01")
    assert binary.stderr != b"\x00\xff\x01"
    with pytest.raises(OperationTimeout):
        await provider.exec(sandbox, "sleep 30", timeout_s=0.5)


async def check_files(provider: VercelProvider, sandbox: Sandbox) -> None:
    large_path = f"{SCRATCH_DIR}/large.bin"
    _, large = await cases.files_round_trip(
        provider, sandbox, f"{SCRATCH_DIR}/sub dir/small 1k.bin", large_path
    )
    await cases.sha_inside(provider, sandbox, large_path, large)
    await cases.missing_file_is_not_found(provider, sandbox, f"{SCRATCH_DIR}/no/such/file")


async def check_checkpoint_restore(provider: VercelProvider, sandbox: Sandbox) -> list[Sandbox]:
    """A new sandbox from the snapshot; the source is usable again afterwards."""
    path, data = f"{SCRATCH_DIR}/state.bin", os.urandom(256 * 1024)
    await provider.write_file(sandbox, path, data)
    made: list[Sandbox] = []
    # The source is written to after the checkpoint: it runs again.
    ref, restored = await cases.restored_copy(provider, sandbox, path, data, made)
    assert ref.sandbox_id == sandbox.id and ref.id
    assert NAME.fullmatch(restored.id)
    return made


async def check_pause_resume(provider: VercelProvider, sandbox: Sandbox) -> None:
    """Stop/start: the filesystem survives, processes do not, the name stays."""
    await provider.write_file(sandbox, f"{SCRATCH_DIR}/kept", b"kept")
    start = f"nohup sleep 600 >/dev/null 2>&1 & echo $! > {SCRATCH_DIR}/pid"
    assert (await provider.exec(sandbox, start, timeout_s=30)).exit_code == 0
    await provider.pause(sandbox)
    resumed = await provider.resume(sandbox)
    assert resumed.id == sandbox.id
    assert await provider.read_file(resumed, f"{SCRATCH_DIR}/kept") == b"kept"
    alive = await provider.exec(resumed, f"kill -0 $(cat {SCRATCH_DIR}/pid)", timeout_s=30)
    assert alive.exit_code != 0, "a process survived stop/start"


async def check_fork(provider: VercelProvider, sandbox: Sandbox) -> list[Sandbox]:
    """Children hold the parent's files as they were at the fork; the parent runs on."""
    await provider.write_file(sandbox, f"{SCRATCH_DIR}/at-fork", b"before")
    children = await provider.fork(sandbox, count=2)
    assert len({c.id for c in children} | {sandbox.id}) == 3
    await provider.write_file(sandbox, f"{SCRATCH_DIR}/at-fork", b"after")  # parent running
    for child in children:
        assert await provider.read_file(child, f"{SCRATCH_DIR}/at-fork") == b"before"
    return children


async def exercise(provider: VercelProvider) -> None:
    run_id = _run_id()
    async with cases.none_left(provider, run_id) as made:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=600))
        made.append(sandbox)
        assert NAME.fullmatch(sandbox.id)
        await check_exec(provider, sandbox)
        await check_files(provider, sandbox)
        made += await check_checkpoint_restore(provider, sandbox)
        await check_pause_resume(provider, sandbox)
        made += await check_fork(provider, sandbox)
        await cases.assert_listed(provider, run_id, made)


# -- emulator tests ---------------------------------------------------------------------------


async def test_every_operation_works_end_to_end_through_the_sdk(provider: VercelProvider):
    await exercise(provider)


async def test_a_checkpoint_resumes_the_sandbox_its_snapshot_stopped(provider, emulator):
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
    try:
        pid = f"nohup sleep 600 >/dev/null 2>&1 & echo $! > {SCRATCH_DIR}/pid"
        assert (await provider.exec(sandbox, pid, timeout_s=30)).exit_code == 0
        before = sandbox.native.sdk.current_session.id
        await emulator.clear_calls()
        ref = await provider.checkpoint(sandbox)
        calls = [f"{c['method']} {c['path']}" for c in await emulator.calls()]
        assert calls == [
            f"POST /api/v2/sandboxes/sessions/{before}/snapshot",
            f"GET /api/v2/sandboxes/{sandbox.id}",  # ?resume=true, inside the checkpoint
        ]
        assert sandbox.native.sdk.current_session.id != before
        # The new session started from the snapshot: files kept, the process gone.
        gone = await provider.exec(sandbox, f"kill -0 $(cat {SCRATCH_DIR}/pid)", timeout_s=30)
        assert gone.exit_code != 0
        await provider.delete_checkpoint(ref)
    finally:
        await provider.destroy(sandbox)


async def test_measured_calls_never_resume_a_stopped_sandbox_on_their_own(provider, emulator):
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
    try:
        await provider.pause(sandbox)
        await emulator.clear_calls()
        with pytest.raises(ProviderError, match="sandbox_stopped"):
            await provider.exec(sandbox, "true", timeout_s=30)
        with pytest.raises(ProviderError, match="sandbox_stopped"):
            await provider.read_file(sandbox, "/etc/hostname")
        # No hidden GET ?resume=true: only the two refused session calls.
        assert [c["method"] for c in await emulator.calls()] == ["POST", "POST"]
        resumed = await provider.resume(sandbox)
        assert (await provider.exec(resumed, "true", timeout_s=30)).exit_code == 0
    finally:
        await provider.destroy(sandbox)


async def test_a_command_cut_short_by_a_stop_fails_without_a_hidden_follow_up(provider):
    """The emulator ends the stream with an in-band sandbox_stopped error; the SDK raises it
    as it is (no logs/wait fallback, no resume)."""
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
    try:
        running = asyncio.create_task(provider.exec(sandbox, "sleep 20", timeout_s=30))
        await asyncio.sleep(0.5)
        await provider.pause(sandbox)
        with pytest.raises(ProviderError) as raised:
            await running
        assert type(raised.value) is ProviderError and "vercel:exec" in str(raised.value)
    finally:
        await provider.destroy(sandbox)


async def test_a_fork_starts_from_the_latest_snapshot_never_the_live_files(provider):
    """What Vercel documents, which the emulator reproduces: fork_sandbox alone seeds the
    child from the last snapshot (here none: the image), so the adapter snapshots first."""
    run_id = _run_id()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
    made = [sandbox]
    try:
        await provider.write_file(sandbox, f"{SCRATCH_DIR}/live", b"live")
        raw = await provider.clients.main.fork_sandbox(
            source_sandbox=sandbox.id, name=sandbox_name(run_id), tags={RUN_LABEL: run_id}
        )
        made.append(Sandbox(id=raw.name, provider="vercel"))
        with pytest.raises(NotFound):
            await provider.read_file(made[-1], f"{SCRATCH_DIR}/live")
        made += await provider.fork(sandbox)
        assert await provider.read_file(made[-1], f"{SCRATCH_DIR}/live") == b"live"
    finally:
        for each in made:
            await provider.destroy(each)
    assert await provider.list_sandboxes(run_id) == []


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthError), (403, AuthError), (404, NotFound), (429, QuotaOrRateLimited),
     (500, Unavailable), (503, Unavailable)],
)  # fmt: skip
async def test_injected_errors_arrive_as_our_classes_after_one_attempt(
    provider, emulator, status, error
):
    spec = SandboxSpec(labels={RUN_LABEL: _run_id()})
    await emulator.clear_calls()
    await emulator.inject(status, match="/v3/sandboxes")
    with pytest.raises(error) as raised:
        await provider.create(spec)
    assert len(_calls(await emulator.calls(), "POST", "/api/v3/sandboxes")) == 1  # no retry
    if status == 429:
        assert raised.value.retry_after_s == 1.0
    sandbox = await provider.create(spec)
    try:
        for match, call in (
            ("/cmd", lambda: provider.exec(sandbox, "true", timeout_s=30)),
            ("/fs/read", lambda: provider.read_file(sandbox, "/etc/hostname")),
            ("/fs/write", lambda: provider.write_file(sandbox, "/tmp/x", b"x")),
            ("/snapshot", lambda: provider.checkpoint(sandbox)),
        ):
            await emulator.clear_calls()
            await emulator.inject(status, match=match)
            with pytest.raises(error):
                await call()
            assert len([c for c in await emulator.calls() if match in c["path"]]) == 1
        await emulator.inject(status, match="/v2/sandboxes")
        with pytest.raises(error):
            await provider.list_sandboxes("any")
    finally:
        await provider.destroy(sandbox)


async def test_wrong_credentials_are_auth_errors(emulator, monkeypatch):
    for key, value in (("VERCEL_TOKEN", "not-the-token"), ("VERCEL_TEAM_ID", "team_other")):
        with monkeypatch.context() as patch:
            patch.setenv(key, value)
            provider = await _open()
            try:
                with pytest.raises(AuthError):
                    await provider.list_sandboxes("any")
            finally:
                await provider.close()
    monkeypatch.setenv("VERCEL_PROJECT_ID", "prj_other")
    provider = await _open()
    try:
        with pytest.raises(NotFound):  # the API answers an unknown project with 404
            await provider.create(SandboxSpec())
    finally:
        await provider.close()


async def test_an_oidc_token_in_the_environment_cannot_win(emulator, monkeypatch):
    """The SDK's own resolver prefers VERCEL_OIDC_TOKEN; the emulator only accepts
    VERCEL_TOKEN, so any call would be refused if the OIDC token were sent."""
    monkeypatch.setenv("VERCEL_OIDC_TOKEN", "oidc.jwt.token")
    provider = await _open()
    try:
        assert await provider.list_sandboxes("any") == []
        assert "VERCEL_OIDC_TOKEN set and ignored" in provider.environment()["credentials"]
    finally:
        await provider.close()


@pytest.mark.parametrize("missing", CREDENTIALS)
async def test_missing_credentials_are_refused_naming_the_variable(monkeypatch, missing):
    for key in CREDENTIALS:
        monkeypatch.setenv(key, "x")
    monkeypatch.delenv(missing)
    with pytest.raises(AuthError, match=missing):
        await VercelProvider({}).open()


async def test_an_unreachable_endpoint_is_unavailable(monkeypatch):
    for key in CREDENTIALS:
        monkeypatch.setenv(key, "x")
    provider = await _open({"api_url": "http://127.0.0.1:9/api"})
    try:
        with pytest.raises(Unavailable):
            await provider.list_sandboxes("any")
    finally:
        await provider.close()


async def test_per_iteration_connection_gives_each_sandbox_its_own_client(emulator):
    provider = await _open({"connection": "per_iteration"})
    try:
        first = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
        second = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
        try:
            cases.own_clients(provider, first, second)
            await cases.echo_ids(provider, (first, second), 30)
        finally:
            await provider.destroy(first)
            await provider.destroy(second)
        assert not provider.clients.owned
    finally:
        await provider.close()


async def test_a_bare_name_is_destroyed_as_the_reaper_does(provider, emulator):
    run_id = _run_id()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
    for name in await provider.list_sandboxes(run_id):
        await provider.destroy(Sandbox(id=name, provider="vercel"))
    assert await emulator.live_sandboxes() == []
    await provider.destroy(sandbox)  # already gone: fine
    await provider.destroy(Sandbox(id="sb-never-existed-00000000", provider="vercel"))


async def test_a_session_past_its_lifetime_stops_but_the_sandbox_stays(provider):
    run_id = _run_id()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=1))
    try:
        await provider.write_file(sandbox, f"{SCRATCH_DIR}/kept", b"kept")
        for _ in range(80):  # looked at without resuming it
            await asyncio.sleep(0.25)
            if (await provider.clients.main.get_sandbox(name=sandbox.id)).status == "stopped":
                break
        else:
            raise AssertionError("the session outlived its execution time limit")
        with pytest.raises(ProviderError, match="sandbox_stopped"):
            await provider.exec(sandbox, "true", timeout_s=30)
        assert await provider.list_sandboxes(run_id) == [sandbox.id]
        resumed = await provider.resume(sandbox)
        assert await provider.read_file(resumed, f"{SCRATCH_DIR}/kept") == b"kept"
    finally:
        await provider.destroy(sandbox)


async def test_the_run_label_and_lifetime_reach_the_api(provider, emulator):
    run_id = _run_id()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=42))
    try:
        info = sandbox.native.sdk
        assert info.tags == {RUN_LABEL: run_id}
        assert info.execution_time_limit.total_seconds() == 42
        assert (info.vcpus, info.memory, info.persistent) == (2, 4096, True)
    finally:
        await provider.destroy(sandbox)


@given(st.text(max_size=200))
def test_sandbox_names_are_short_lowercase_labels_for_any_run_id(run_id):
    name = sandbox_name(run_id)
    assert NAME.fullmatch(name) and len(name) <= 52


def test_capabilities_environment_and_settings_declare_the_semantics(monkeypatch):
    monkeypatch.setenv("VERCEL_TOKEN", "vercel_secret_value")
    monkeypatch.setenv("VERCEL_SANDBOX_API_URL", "http://env.example:1/api")
    monkeypatch.delenv("VERCEL_OIDC_TOKEN", raising=False)
    provider = VercelProvider({"api_url": "http://user:pw@127.0.0.1:9/api?k=v"})
    env = provider.environment()
    assert env["endpoint"] == "http://127.0.0.1:9/api"  # the setting wins; no credentials
    assert env["endpoint_source"] == "api_url setting"
    assert env["sdk_versions"] == {"vercel-sandbox": "0.10.0"}
    assert "control_plane" in env["sdk_retries"] and env["persistent"] is True
    cases.no_secrets(env, "vercel_secret_value")
    assert VercelProvider({}).environment()["endpoint"] == "http://env.example:1/api"
    monkeypatch.delenv("VERCEL_SANDBOX_API_URL")
    assert VercelProvider({}).environment()["endpoint"] == "https://vercel.com/api"
    caps = provider.capabilities()
    assert caps.operations >= {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME, Op.FORK}
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.STOP_START
    assert caps.fork_keeps is CheckpointCaptures.FILESYSTEM
    assert caps.scratch_dir == SCRATCH_DIR
    ephemeral = VercelProvider({"persistent": False}).capabilities()
    assert Op.PAUSE not in ephemeral.operations and ephemeral.unsupported[str(Op.PAUSE)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"persistant": True}, r"\[providers.vercel\]: unknown key\(s\) persistant"),
        ({"connection": "sometimes"}, "connection must be one of"),
        ({"api_url": "ftp://x"}, "api_url must be"),
        ({"vcpus": 3}, "vcpus must be 1 or an even number"),
        ({"vcpus": 0}, "vcpus"),
        ({"persistent": "yes"}, "persistent must be"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"region": 5}, "region must be a string"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    cases.refused_in_one_line(VercelProvider, settings, message)


# -- live tests -------------------------------------------------------------------------------


@pytest.mark.live
class TestLive:
    """The same checks against the real Vercel Sandbox service."""

    @pytest.fixture(autouse=True)
    def _credentials(self) -> None:
        missing = [k for k in CREDENTIALS if not os.environ.get(k)]
        if missing:
            pytest.skip(f"set {', '.join(missing)} to run the live Vercel tests")

    async def test_every_operation_works_against_the_real_service(self):
        await cases.exercised(_open, exercise)

    async def test_a_wrong_token_is_an_auth_error(self, monkeypatch):
        monkeypatch.setenv("VERCEL_TOKEN", "not-a-valid-token")
        provider = await _open()
        try:
            with pytest.raises(AuthError):
                await provider.list_sandboxes(_run_id())
        finally:
            await provider.close()
