"""The sprites adapter, end to end through the real pinned SDK (sprites-py 0.7.2).

Each test starts the loopback emulator (bench/emulators/sprites.py, backed by real local
sandboxes), points the SDK at it with the emulator's ``client_env`` and drives the adapter: REST
over httpx, exec over the SDK's WebSocket framing, checkpoints as NDJSON streams. ``TestLive``
runs the same checks against the real service (``pytest -m live``) when ``SPRITES_TOKEN`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from bench.emulators.control import Emulator
from providers.base import (
    REQUIRED_OPS,
    RUN_LABEL,
    CheckpointCaptures,
    CheckpointRef,
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
    QuotaOrRateLimited,
    Unavailable,
    Unsupported,
)
from providers.sprites import SCRATCH_DIR, SpritesProvider, run_prefix, sprite_name
from tests import adapter_cases as cases

ENV_KEYS = ("SPRITES_TOKEN", "SPRITES_API_URL", "SPRITES_CLIENT_SIGNALS")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

emulator = cases.emulator_fixture("sprites", ENV_KEYS)
_open = cases.opener(SpritesProvider)
_run_id = cases.new_run_id


async def _raw(emu: Emulator, method: str, path: str, **kwargs) -> httpx.Response:
    """A request straight to the emulator, past the SDK (to look at what the API holds)."""
    headers = {"Authorization": f"Bearer {emu.token}"}
    async with httpx.AsyncClient(base_url=emu.url, headers=headers) as client:
        return await client.request(method, path, **kwargs)


# -- checks shared by the emulator tests and the live tests ----------------------------------


async def check_exec(provider: SpritesProvider, sandbox: Sandbox) -> None:
    failed = await provider.exec(
        sandbox, ["sh", "-c", "echo hello; echo oops >&2; exit 3"], timeout_s=30
    )
    # Sprites keeps the streams apart (stream ids 1 and 2 on the WebSocket).
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"hello\n", b"oops\n")
    await cases.shell_argv_and_large_output(provider, sandbox)
    missing = await provider.exec(sandbox, "no-such-command-here", timeout_s=30)
    assert missing.exit_code == 127 and missing.stderr
    binary = await provider.exec(sandbox, "printf '\\000\\377\\001' >&2", timeout_s=30)
    assert binary.stderr == b"\x00\xff\x01"


async def check_files(provider: SpritesProvider, sandbox: Sandbox) -> None:
    large_path = f"{SCRATCH_DIR}/large-4m.bin"
    _, large = await cases.files_round_trip(
        provider, sandbox, f"{SCRATCH_DIR}/sub dir/small 1k.bin", large_path
    )
    await cases.sha_inside(provider, sandbox, large_path, large)
    odd = f"{SCRATCH_DIR}/q&u=o?te ü %2F#.txt"  # query-string characters in the path
    await provider.write_file(sandbox, odd, b"odd")
    assert await provider.read_file(sandbox, odd) == b"odd"
    await cases.missing_file_is_not_found(provider, sandbox, f"{SCRATCH_DIR}/no/such/file")


async def check_checkpoint_restore(provider: SpritesProvider, sandbox: Sandbox) -> None:
    """Restore is in place: the same Sprite comes back with the checkpointed bytes."""
    path = f"{SCRATCH_DIR}/state.bin"
    data = os.urandom(256 * 1024)
    await provider.write_file(sandbox, path, data)
    before = hashlib.sha256(data).hexdigest()
    ref = await provider.checkpoint(sandbox)
    assert ref.sandbox_id == sandbox.id and ref.id
    mutate = f"echo mutated >> {path} && touch {SCRATCH_DIR}/later && sha256sum {path}"
    mutated = await provider.exec(sandbox, mutate, timeout_s=30)
    assert mutated.stdout.split()[0].decode() != before
    restored = await provider.restore(ref)
    assert restored is sandbox  # in place: the same handle
    after = await _until_ok(provider, restored, f"sha256sum {path}")
    assert after.stdout.split()[0].decode() == before
    assert await provider.read_file(restored, path) == data
    gone = await provider.exec(restored, f"test -e {SCRATCH_DIR}/later", timeout_s=30)
    assert gone.exit_code == 1  # written after the checkpoint: rewound away
    await provider.delete_checkpoint(ref)  # a no-op on Sprites, and idempotent
    await provider.delete_checkpoint(ref)


async def _until_ok(provider: SpritesProvider, sandbox: Sandbox, command: str):
    """Sprites restores asynchronously: the first exec may land while it comes back."""
    for _ in range(60):
        try:
            result = await provider.exec(sandbox, command, timeout_s=30)
        except Unavailable:
            await asyncio.sleep(0.5)
            continue
        if result.exit_code == 0:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{command!r} never succeeded after restore")


COUNTER, START_COUNTER = cases.counter_script(SCRATCH_DIR)


async def _counter(provider: SpritesProvider, sandbox: Sandbox) -> int:
    return await cases.read_counter(provider, sandbox, COUNTER)


async def check_restore_stops_processes(provider: SpritesProvider, sandbox: Sandbox) -> None:
    assert (await provider.exec(sandbox, START_COUNTER, timeout_s=30)).exit_code == 0
    ref = await provider.checkpoint(sandbox)  # live: the loop keeps running
    await asyncio.sleep(0.2)
    running_before = await _counter(provider, sandbox)
    await asyncio.sleep(0.2)
    assert await _counter(provider, sandbox) > running_before
    await provider.restore(ref)
    await _until_ok(provider, sandbox, f"test -s {COUNTER}")
    first = await _counter(provider, sandbox)
    await asyncio.sleep(0.4)
    assert await _counter(provider, sandbox) == first, "a process survived the restore"


# -- emulator tests ---------------------------------------------------------------------------


async def test_create_exec_files_list_and_destroy_round_trip(emulator):
    provider = await _open()
    run_id = _run_id()

    async def make(run: str) -> Sandbox:
        return await provider.create(SandboxSpec(labels={RUN_LABEL: run}))

    try:
        # The other run's names share this run's prefix; its label keeps it out (cases.round_trip
        # checks the listing).
        async with cases.round_trip(provider, make, run_id, run_id + "-other") as (sandbox, other):
            assert sandbox.id.startswith(run_prefix(run_id)) and DNS_LABEL.fullmatch(sandbox.id)
            assert other.id.startswith(run_prefix(run_id))
            await check_exec(provider, sandbox)
            await check_files(provider, sandbox)
        with pytest.raises(NotFound):
            await provider.read_file(sandbox, "/etc/hostname")
    finally:
        await provider.close()


async def test_checkpoint_restores_in_place_with_the_checksum(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await check_checkpoint_restore(provider, sandbox)
            with pytest.raises(NotFound):
                await provider.restore(
                    CheckpointRef(id="v999", provider="sprites", sandbox_id=sandbox.id)
                )
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_restore_stops_running_processes(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            await check_restore_stops_processes(provider, sandbox)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_the_checkpoint_id_is_the_one_just_taken_not_just_the_newest(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            path = f"{SCRATCH_DIR}/generation"
            refs = []
            for generation in (b"one", b"two", b"three"):
                await provider.write_file(sandbox, path, generation)
                refs.append(await provider.checkpoint(sandbox))
            assert [r.id for r in refs] == ["v1", "v2", "v3"]
            await provider.restore(refs[1])
            assert (await _until_ok(provider, sandbox, f"cat {path}")).stdout == b"two"
            await provider.restore(refs[0])
            assert (await _until_ok(provider, sandbox, f"cat {path}")).stdout == b"one"
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_pause_and_resume_are_unsupported_with_the_reason(emulator):
    provider = await _open()
    try:
        caps = provider.capabilities()
        assert caps.pause_kind is PauseKind.AUTO_SLEEP
        assert Op.PAUSE not in caps.operations and Op.RESUME not in caps.operations
        assert "no pause API" in caps.unsupported["pause"]
        assert "no pause API" in caps.unsupported["resume"]
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            with pytest.raises(Unsupported, match="sleep when idle"):
                await provider.pause(sandbox)
            with pytest.raises(Unsupported, match="sleep when idle"):
                await provider.resume(sandbox)
            assert (await provider.exec(sandbox, ["true"], timeout_s=10)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_exec_over_its_timeout_raises_operation_timeout_and_stops_the_command(emulator):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        try:
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "sleep 7", timeout_s=0.5)
            await asyncio.sleep(0.5)
            left = await provider.exec(sandbox, "ps -eo args | grep -c '^sleep 7'", timeout_s=10)
            assert left.stdout.strip() == b"0"
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("status", "match", "operation", "expected", "retry_after"),
    [
        (401, "/v1/sprites", "create", AuthError, None),
        (403, "/exec", "exec", AuthError, None),
        (401, "/fs/write", "write", AuthError, None),
        (404, "/exec", "exec", NotFound, None),
        (429, "/v1/sprites", "create", QuotaOrRateLimited, 1.0),
        (429, "/exec", "exec", QuotaOrRateLimited, 1.0),
        (429, "/fs/write", "write", QuotaOrRateLimited, 1.0),
        (500, "/fs/read", "read", Unavailable, None),
        (503, "/checkpoint", "checkpoint", Unavailable, None),
        (429, "/checkpoints", "checkpoint", QuotaOrRateLimited, 1.0),
        (500, "/restore", "restore", Unavailable, None),
        (500, "/v1/sprites", "list", Unavailable, None),
        (502, "/v1/sprites", "destroy", Unavailable, None),
    ],
)
async def test_injected_errors_arrive_as_our_error_classes(
    emulator, status, match, operation, expected, retry_after
):
    provider = await _open()
    run_id = _run_id()
    sandbox = None
    try:
        if operation != "create":
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        ref = await provider.checkpoint(sandbox) if operation == "restore" else None
        calls = cases.operation_calls(
            provider, sandbox, run_id,
            lambda: provider.create(SandboxSpec(labels={RUN_LABEL: run_id})),
            write_to=f"{SCRATCH_DIR}/f", read_from="/etc/hostname", ref=ref,
        )  # fmt: skip
        raised = await cases.one_fault(emulator, "sprites", status=status, match=match,
                                 call=calls[operation], expected=expected)  # fmt: skip
        assert raised.operation == operation.replace("write", "write_file").replace(
            "read", "read_file"
        ).replace("list", "list_sandboxes")
        if expected is QuotaOrRateLimited:
            assert raised.retry_after_s == retry_after
        if sandbox is not None:  # the sprite still works
            await cases.still_works(provider, sandbox)
    finally:
        if sandbox is not None:
            await provider.destroy(sandbox)
        await provider.close()


async def test_a_wrong_token_is_an_auth_error(emulator, monkeypatch):
    provider = await _open()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        monkeypatch.setenv("SPRITES_TOKEN", "not-the-token")
        wrong = await _open()
        try:
            with pytest.raises(AuthError):
                await wrong.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
            bare = Sandbox(id=sandbox.id, provider="sprites")
            with pytest.raises(AuthError):
                await wrong.exec(bare, ["true"], timeout_s=10)
            with pytest.raises(AuthError):
                await wrong.read_file(bare, "/etc/hostname")
        finally:
            await wrong.close()
        await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_a_missing_token_is_an_auth_error_naming_the_variable(monkeypatch):
    await cases.missing_variable_refused(SpritesProvider, monkeypatch, "SPRITES_TOKEN")


async def test_an_unreachable_endpoint_is_unavailable(monkeypatch):
    monkeypatch.setenv("SPRITES_TOKEN", "x")
    provider = await _open({"api_url": "http://127.0.0.1:9"})
    try:
        with pytest.raises(Unavailable):
            await provider.create(SandboxSpec(labels={RUN_LABEL: _run_id()}))
        with pytest.raises(Unavailable):
            await provider.exec(
                Sandbox(id="sb-x-00000000", provider="sprites"), ["true"], timeout_s=5
            )
    finally:
        await provider.close()


async def test_per_iteration_connection_gives_each_sprite_its_own_client(emulator):
    provider = await _open({"connection": "per_iteration"})
    run_id = _run_id()
    try:
        first = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        second = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        cases.own_clients(provider, first, second)
        for sandbox in (first, second):
            assert (await provider.exec(sandbox, ["echo", "ok"], timeout_s=10)).stdout == b"ok\n"
        await check_checkpoint_restore(provider, second)
        assert sorted(await provider.list_sandboxes(run_id)) == sorted([first.id, second.id])
        for sandbox in (first, second):
            await provider.destroy(sandbox)
        assert provider.clients.owned == set()  # each client closed with its sprite
    finally:
        await provider.close()


async def test_a_bare_sprite_name_can_be_destroyed_as_the_reaper_does(emulator):
    provider = await _open()
    run_id = _run_id()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        await cases.bare_id_destroyed_twice(provider, sandbox, run_id)
    finally:
        await provider.close()


async def test_the_spec_and_labels_reach_the_api(emulator):
    provider = await _open({"region": "ord"})
    run_id = _run_id()
    try:
        spec = SandboxSpec(
            cpus=1.5, memory_mb=768, disk_mb=3000, labels={RUN_LABEL: run_id, "team": "x"}
        )
        sandbox = await provider.create(spec)
        try:
            info = (await _raw(emulator, "GET", f"/v1/sprites/{sandbox.id}")).json()
            assert info["config"] == {"ram_mb": 768, "cpus": 2, "region": "ord", "storage_gb": 3}
            assert info["labels"] == [f"{RUN_LABEL}={run_id}", "team=x"]
            assert sandbox.native.sdk.labels == info["labels"]
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()
    quiet = await _open({"send_spec": False})
    try:
        sandbox = await quiet.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        info = (await _raw(emulator, "GET", f"/v1/sprites/{sandbox.id}")).json()
        assert info["config"] == {}
        await quiet.destroy(sandbox)
    finally:
        await quiet.close()


async def test_an_unlabelled_listing_falls_back_to_the_exact_name_prefix(emulator):
    provider = await _open()
    run_id = _run_id()
    prefix = run_prefix(run_id)
    names = [f"{prefix}0123abcd", f"{prefix}extra-0123abcd", f"{prefix}zz"]
    try:
        for name in names:
            made = await _raw(emulator, "POST", "/v1/sprites", json={"name": name})
            assert made.status_code == 201
        assert await provider.list_sandboxes(run_id) == [names[0]]
    finally:
        for name in names:
            await provider.destroy(Sandbox(id=name, provider="sprites"))
        await provider.close()


def test_sprite_names_are_dns_labels_for_any_run_id():
    for run_id in ("20261128T130000Z-abc123", "", "--", "ÜBER run/ü 42", "x" * 200, "a_b.c"):
        name = sprite_name(run_id)
        assert DNS_LABEL.fullmatch(name) and len(name) <= 52, name
        assert name.startswith(run_prefix(run_id))
        assert re.fullmatch(r"[0-9a-f]{8}", name.removeprefix(run_prefix(run_id)))
    assert run_prefix("20261128T130000Z-abc123") == "sb-20261128t130000z-abc123-"
    assert sprite_name("r") != sprite_name("r")


def test_capabilities_and_environment_declare_the_semantics(monkeypatch):
    monkeypatch.setenv("SPRITES_TOKEN", "secret-token-value")
    monkeypatch.setenv("SPRITES_API_URL", "https://user:pw@sprites.example/?token=x")
    provider = SpritesProvider({})
    caps = provider.capabilities()
    assert caps.operations == REQUIRED_OPS | {Op.CHECKPOINT, Op.RESTORE}
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.IN_PLACE
    assert caps.pause_kind is PauseKind.AUTO_SLEEP
    assert caps.scratch_dir == "/home/sprite"
    assert "separate" in caps.notes["stderr"]
    assert "8 vCPU / 4 GB" in caps.notes["resources"]
    env = provider.environment()
    assert env["endpoint"] == "https://sprites.example/"
    assert env["connection"] == "reuse"
    assert env["sdk_retries"].startswith("none")
    assert "client_signals" in env
    cases.no_secrets(env, "secret-token-value", "token=x")
    assert SpritesProvider({"api_url": "http://127.0.0.1:9"}).environment()["endpoint"] == (
        "http://127.0.0.1:9"
    )
    assert SpritesProvider({}).environment()["endpoint"] == "https://sprites.example/"
    monkeypatch.delenv("SPRITES_API_URL")
    assert SpritesProvider({}).environment()["endpoint"] == "https://api.sprites.dev"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"templte": "x"}, r"\[providers.sprites\]: unknown key\(s\) templte"),
        ({"connection": "sometimes"}, "connection must be one of"),
        ({"api_url": "ftp://x"}, "api_url must be"),
        ({"wait_for_capacity": "yes"}, "wait_for_capacity must be"),
        ({"send_spec": 1}, "send_spec must be"),
        ({"sdk_timeout_s": 0}, "sdk_timeout_s"),
        ({"checkpoint_timeout_s": "long"}, "checkpoint_timeout_s"),
        ({"region": 5}, "region must be a string"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    cases.refused_in_one_line(SpritesProvider, settings, message)


# -- live tests -------------------------------------------------------------------------------


@pytest.mark.live
class TestLive:
    """The same checks against the real Sprites service."""

    @pytest.fixture
    async def provider(self) -> AsyncIterator[SpritesProvider]:
        if not os.environ.get("SPRITES_TOKEN"):
            pytest.skip("set SPRITES_TOKEN to run")
        provider = await _open()
        try:
            yield provider
        finally:
            await provider.close()

    @pytest.fixture
    async def sandbox(self, provider: SpritesProvider) -> AsyncIterator[Sandbox]:
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

    async def test_restore_stops_processes(self, provider, sandbox):
        await check_restore_stops_processes(provider, sandbox)

    async def test_pause_is_unsupported(self, provider, sandbox):
        with pytest.raises(Unsupported):
            await provider.pause(sandbox)

    async def test_list_and_destroy(self, provider):
        run_id = _run_id()
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            assert sandbox.id in await provider.list_sandboxes(run_id)
        finally:
            await provider.destroy(sandbox)
        await provider.destroy(sandbox)
        assert sandbox.id not in await provider.list_sandboxes(run_id)

    async def test_a_wrong_token_is_an_auth_error(self, monkeypatch):
        if not os.environ.get("SPRITES_TOKEN"):
            pytest.skip("set SPRITES_TOKEN to run")
        monkeypatch.setenv("SPRITES_TOKEN", "not-a-valid-token")
        provider = await _open()
        try:
            with pytest.raises(AuthError):
                await provider.list_sandboxes(_run_id())
        finally:
            await provider.close()
