"""The e2b adapter, end to end through the real ``e2b`` SDK.

Most tests point the pinned SDK at the loopback emulator (bench/emulators/e2b.py), whose
sandboxes are real local sandboxes (root needed). :class:`TestLiveE2B` runs the same checks
against E2B's cloud when ``E2B_API_KEY`` is set (``pytest -m live``).
"""

from __future__ import annotations

import os
import uuid

import e2b
import pytest

import providers.e2b as e2b_adapter
from bench.emulators.control import Emulator
from providers.base import RUN_LABEL, CheckpointCaptures, Op, PauseKind, RestoreTarget, SandboxSpec
from providers.e2b import E2BProvider
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    QuotaOrRateLimited,
    Unavailable,
)
from tests import adapter_cases as cases

ENV_VARS = ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_DEBUG")

emulator = cases.emulator_fixture("e2b", ENV_VARS)
_opened = cases.opener(E2BProvider)


async def exercise(provider: E2BProvider) -> None:
    """Every interface operation through the SDK, with the fidelity checks the workloads use."""
    run_id = cases.new_run_id(12)
    async with cases.none_left(provider, run_id) as created:
        spec = SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=300)
        sandbox = await provider.create(spec)
        created.append(sandbox)
        # exec: exit codes are data, stdout and stderr arrive separately.
        await cases.exit_codes_and_streams(provider, sandbox, 30)
        big = await provider.exec(sandbox, "head -c 65536 /dev/zero | tr '\\0' x", timeout_s=30)
        assert big.stdout == b"x" * 65536

        # files: byte-exact both ways, 1 KiB and 4 MiB.
        scratch = provider.capabilities().scratch_dir
        _, large = await cases.files_round_trip(
            provider, sandbox, f"{scratch}/sub/small.bin", f"{scratch}/large.bin"
        )
        await cases.missing_file_is_not_found(provider, sandbox, f"{scratch}/missing.bin")

        # checkpoint + restore: a new sandbox with the file as it was at the checkpoint.
        await cases.restored_copy(provider, sandbox, f"{scratch}/large.bin", large, created)

        # pause + resume: a process started before the pause is alive after it.
        start = await provider.exec(
            sandbox,
            f"sleep 600 >/dev/null 2>&1 & echo $! > {scratch}/pid",
            timeout_s=30,
        )
        assert start.exit_code == 0
        await provider.pause(sandbox)
        resumed = await provider.resume(sandbox)
        assert resumed.id == sandbox.id
        alive = await provider.exec(resumed, f"kill -0 $(cat {scratch}/pid)", timeout_s=30)
        assert alive.exit_code == 0

        # list by run label: the source and the restored sandbox.
        await cases.assert_listed(provider, run_id, created)


async def test_every_operation_works_end_to_end_through_the_sdk(emulator: Emulator) -> None:
    await cases.exercised(_opened, exercise)


async def test_per_iteration_connection_gives_each_sandbox_its_own_client(
    emulator: Emulator,
) -> None:
    provider = await _opened({"connection": "per_iteration"})
    try:
        first = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
        second = await provider.create(SandboxSpec(labels={RUN_LABEL: "per-it"}))
        try:
            cases.own_clients(provider, first, second)
            await cases.echo_ids(provider, (first, second), 30)
            ref = await provider.checkpoint(first)
            restored = await provider.restore(ref)
            assert restored.native.client is not first.native.client
            await provider.destroy(restored)
            await provider.delete_checkpoint(ref)
        finally:
            await provider.destroy(first)
            await provider.destroy(second)
        assert provider.environment()["connection"] == "per_iteration"
    finally:
        await provider.close()


async def test_injected_faults_arrive_as_our_error_tree_and_are_not_retried(
    emulator: Emulator,
) -> None:
    provider = await _opened()
    try:
        spec = SandboxSpec(labels={RUN_LABEL: "faults"})
        faults = [
            (401, AuthError),
            (404, NotFound),
            (429, QuotaOrRateLimited),
            (500, Unavailable),
            (503, Unavailable),
        ]
        await cases.faults_raise(
            emulator, faults, [("/v2/sandboxes", lambda: provider.create(spec))]
        )
        sandbox = await provider.create(spec)
        try:
            await cases.faults_raise(emulator, faults, [
                ("/process.Process/Start", lambda: provider.exec(sandbox, "true", timeout_s=30)),
                ("/files", lambda: provider.read_file(sandbox, "/etc/hostname")),
            ])  # fmt: skip
            await emulator.inject(404, match=f"/sandboxes/{sandbox.id}/snapshots")
            with pytest.raises(NotFound):
                await provider.checkpoint(sandbox)
            await emulator.inject(429, match="/v2/sandboxes")
            with pytest.raises(QuotaOrRateLimited):
                await provider.list_sandboxes("faults")
            assert (await provider.exec(sandbox, "true", timeout_s=30)).exit_code == 0
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "sleep 10", timeout_s=0.5)
        finally:
            await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_fork_children_start_from_the_parents_files_and_are_independent(
    emulator: Emulator,
) -> None:
    """One fork call, three children: each has the parent's files as they were, its own id
    and the parent's lifetime and run label; later writes stay where they were made."""
    provider = await _opened()
    run_id = f"fork-{uuid.uuid4().hex[:8]}"
    scratch = provider.capabilities().scratch_dir
    try:
        parent = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=300))
        made = [parent]
        try:
            await provider.write_file(parent, f"{scratch}/at-fork", b"before")
            children = await provider.fork(parent, count=3)
            made += children
            assert len({s.id for s in made}) == 4
            assert all(c.native.lifetime_s == 300 for c in children)
            await provider.write_file(children[0], f"{scratch}/at-fork", b"child0")
            await provider.write_file(parent, f"{scratch}/at-fork", b"after")
            assert [await provider.read_file(c, f"{scratch}/at-fork") for c in children] == [
                b"child0", b"before", b"before",
            ]  # fmt: skip
            assert await provider.read_file(parent, f"{scratch}/at-fork") == b"after"
            await cases.assert_listed(provider, run_id, made)
        finally:
            for sandbox in made:
                await provider.destroy(sandbox)
        assert await emulator.live_sandboxes() == []
    finally:
        await provider.close()


async def test_a_fork_that_fails_leaves_no_child_behind(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = await _opened()
    try:
        parent = await provider.create(SandboxSpec(labels={RUN_LABEL: "fork-fail"}))
        try:
            await emulator.inject(500, match="/fork")
            with pytest.raises(Unavailable):
                await provider.fork(parent, count=2)
            assert await emulator.live_sandboxes() == [parent.id]

            # One of two forks fails on the service's side (its own error in the answer):
            # the one that started is killed and the failure raised as our error.
            original = e2b.AsyncSandbox._cls_fork_sandbox.__func__

            async def second_fails(cls, *args, **kwargs):
                first, second = await original(cls, *args, **kwargs)
                await second.kill()  # as if it had never started
                return [first, e2b.RateLimitException("429: too many forks")]

            monkeypatch.setattr(e2b.AsyncSandbox, "_cls_fork_sandbox", classmethod(second_fails))
            with pytest.raises(QuotaOrRateLimited):
                await provider.fork(parent, count=2)
            assert await emulator.live_sandboxes() == [parent.id]
        finally:
            await provider.destroy(parent)
    finally:
        await provider.close()


async def test_wrong_api_key_is_an_auth_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2B_API_KEY", "not-the-token")
    provider = await _opened()
    try:
        with pytest.raises(AuthError):
            await provider.create(SandboxSpec())
        with pytest.raises(AuthError):
            await provider.list_sandboxes("any")
    finally:
        await provider.close()


async def test_destroying_a_killed_or_unknown_sandbox_is_not_an_error(emulator: Emulator) -> None:
    from providers.base import Sandbox

    provider = await _opened()
    try:
        await cases.ghost_is_not_found(provider, Sandbox(id="doesnotexist0000000", provider="e2b"))
    finally:
        await provider.close()


async def test_lifetime_is_the_sandbox_timeout_after_which_it_is_gone(emulator: Emulator) -> None:
    provider = await _opened()
    try:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "short"}, lifetime_s=1))
        await cases.gone_after_lifetime(provider, sandbox, "short")
        await provider.destroy(sandbox)
    finally:
        await provider.close()


async def test_missing_api_key_is_an_auth_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cases.missing_variable_refused(E2BProvider, monkeypatch, "E2B_API_KEY")


def test_settings_endpoints_capabilities_and_environment_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2B_API_KEY", "e2b_secret_value")
    monkeypatch.setenv("E2B_API_URL", "http://env.example:1")
    with pytest.raises(ValueError, match=r"\[providers.e2b\]: unknown key\(s\) bogus"):
        E2BProvider({"bogus": 1})
    with pytest.raises(ValueError, match="connection"):
        E2BProvider({"connection": "sometimes"})
    provider = E2BProvider(
        {"api_url": "http://user:pw@127.0.0.1:9/api?k=v", "sandbox_url": "http://127.0.0.1:9"}
    )
    env = provider.environment()
    assert env["endpoint"] == "http://127.0.0.1:9/api"  # the setting wins; no credentials
    assert env["sandbox_endpoint"] == "http://127.0.0.1:9"
    assert env["connection"] == "reuse"
    assert "api_responses" in env["sdk_retries"]
    if "set by the adapter" in e2b_adapter._RETRIES_SOURCE:
        assert env["sdk_retries"]["connection_retries_observed"] == 0
    cases.no_secrets(env, "e2b_secret_value")
    caps = provider.capabilities()
    assert caps.operations >= {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM_AND_MEMORY
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.FREEZE
    assert caps.supports(Op.FORK) and caps.fork_keeps is CheckpointCaptures.FILESYSTEM_AND_MEMORY
    assert caps.scratch_dir == "/home/user"
    light = E2BProvider({"checkpoint_mode": "filesystem", "pause_mode": "filesystem"})
    assert light.capabilities().checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert light.capabilities().pause_kind is PauseKind.STOP_START


@pytest.mark.live
class TestLiveE2B:
    """The same checks against E2B's cloud (``pytest -m live``)."""

    @pytest.fixture(autouse=True)
    def _credentials(self) -> None:
        if not os.environ.get("E2B_API_KEY"):
            pytest.skip("set E2B_API_KEY to run the live E2B tests")

    async def test_every_operation_works_against_the_real_service(self) -> None:
        await cases.exercised(_opened, exercise)

    async def test_fork_keeps_files_and_running_processes(self) -> None:
        """E2B's fork keeps memory: a process of the parent runs on in each child."""
        provider = await _opened()
        scratch = provider.capabilities().scratch_dir
        try:
            parent = await provider.create(SandboxSpec(labels={RUN_LABEL: "live-fork"}))
            made = [parent]
            try:
                started = await provider.exec(
                    parent, f"sleep 600 >/dev/null 2>&1 & echo $! > {scratch}/pid", timeout_s=60
                )
                assert started.exit_code == 0
                children = await provider.fork(parent, count=2)
                made += children
                for child in children:
                    alive = await provider.exec(child, f"kill -0 $(cat {scratch}/pid)",
                                                timeout_s=60)  # fmt: skip
                    assert alive.exit_code == 0
            finally:
                for sandbox in made:
                    await provider.destroy(sandbox)
        finally:
            await provider.close()

    async def test_per_iteration_connection_against_the_real_service(self) -> None:
        provider = await _opened({"connection": "per_iteration"})
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "live-per-it"}))
            try:
                result = await provider.exec(sandbox, ["echo", "ok"], timeout_s=60)
                assert result.stdout == b"ok\n"
            finally:
                await provider.destroy(sandbox)
        finally:
            await provider.close()
