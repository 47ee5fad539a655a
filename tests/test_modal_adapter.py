"""The modal adapter, end to end through the real ``modal`` SDK (1.6.4, gRPC over grpclib).

Most tests point the pinned SDK at the loopback emulator (bench/emulators/modal.py), whose
sandboxes are real local sandboxes (root needed). :class:`TestLiveModal` runs the same checks
against Modal when ``MODAL_TOKEN_ID`` and ``MODAL_TOKEN_SECRET`` are set (``pytest -m live``).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modal._resources import convert_fn_config_to_resources_config

import providers.modal as modal_adapter
from bench.calibration import LatencyModel
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
    ProtocolError,
    QuotaOrRateLimited,
    Unavailable,
    Unsupported,
)
from providers.modal import ModalProvider
from tests import adapter_cases as cases

ENV_VARS = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_SERVER_URL", "MODAL_SANDBOX_V2")
CREATE = "/modal.client.ModalClient/SandboxCreateV2"
EXEC = "TaskCommandRouter/TaskExecStart"

emulator = cases.emulator_fixture("modal", ENV_VARS)
_opened = cases.opener(ModalProvider)


async def exercise(provider: ModalProvider) -> None:
    """Every interface operation through the SDK, with the fidelity checks the workloads use."""
    run_id = cases.new_run_id(12)
    async with cases.none_left(provider, run_id) as created:
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}, lifetime_s=300))
        created.append(sandbox)
        # exec: exit codes are data, stdout and stderr arrive apart and byte-exact.
        await cases.exit_codes_and_streams(provider, sandbox, 30)
        raw = await provider.exec(sandbox, ["printf", "\\377\\376x"], timeout_s=30)
        assert raw.stdout == b"\xff\xfex"
        big = await provider.exec(sandbox, "head -c 65536 /dev/zero | tr '\\0' x", timeout_s=30)
        assert big.stdout == b"x" * 65536

        # files (each an exec of Modal's fs-tools): byte-exact both ways, 1 KiB and 4 MiB.
        scratch = provider.capabilities().scratch_dir
        _, large = await cases.files_round_trip(
            provider, sandbox, f"{scratch}/sub/small.bin", f"{scratch}/large.bin"
        )
        await cases.missing_file_is_not_found(provider, sandbox, f"{scratch}/missing.bin")

        # checkpoint + restore: a new sandbox with the file as it was; the source runs on.
        ref, _ = await cases.restored_copy(
            provider, sandbox, f"{scratch}/large.bin", large, created
        )
        assert ref.id.startswith("im-")

        with pytest.raises(Unsupported):
            await provider.pause(sandbox)

        # list by run label (a Modal tag): the source and the restored sandbox.
        await cases.assert_listed(provider, run_id, created)
    with pytest.raises(NotFound):
        await provider.exec(sandbox, ["true"], timeout_s=10)


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
            assert first.native.client is not second.native.client
            assert os.environ["MODAL_TOKEN_SECRET"] not in repr(first.native)  # client included
            await cases.echo_ids(provider, (first, second), 30)
            ref = await provider.checkpoint(first)
            restored = await provider.restore(ref)
            assert restored.native.client is not first.native.client
            await provider.destroy(restored)
            await provider.delete_checkpoint(ref)
        finally:
            await provider.destroy(first)
            await provider.destroy(second)
        assert provider.clients.owned == set()
        assert provider.environment()["connection"] == "per_iteration"
    finally:
        await provider.close()


async def test_the_sdk_retries_transient_failures_and_the_emulator_log_shows_each_retry(
    emulator: Emulator,
) -> None:
    """Modal's retries cannot be switched off: one 503 is absorbed (and logged as a retry);
    more than the SDK's 3 control-plane retries surface as Unavailable."""
    provider = await _opened()
    try:
        await emulator.clear_calls()
        await emulator.inject(503, match=CREATE)
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "retries"}))
        try:
            creates = [c for c in await emulator.calls() if c["path"] == CREATE]
            assert [(c["fault"], c["retry_attempt"]) for c in creates] == [("503", 0), (None, 1)]
            await emulator.inject(500, match=EXEC)
            assert (await provider.exec(sandbox, ["true"], timeout_s=30)).exit_code == 0
            starts = [c for c in await emulator.calls() if c["path"].endswith("/TaskExecStart")]
            assert [c["fault"] for c in starts] == ["500", None]  # the router retried too
            assert all(c["sandbox"] == sandbox.id for c in starts)
        finally:
            await provider.destroy(sandbox)
        await emulator.inject(503, match=CREATE, count=4)
        with pytest.raises(Unavailable):
            await provider.create(SandboxSpec(labels={RUN_LABEL: "retries"}))
        assert await provider.list_sandboxes("retries") == []
    finally:
        await provider.close()


async def test_faults_the_sdk_does_not_retry_arrive_as_our_error_tree(emulator: Emulator) -> None:
    provider = await _opened({"call_timeout_s": 1.0})
    try:
        spec = SandboxSpec(labels={RUN_LABEL: "faults"})
        for status, error in [(401, AuthError), (404, NotFound), (429, QuotaOrRateLimited)]:
            await emulator.inject(status, match=CREATE)
            with pytest.raises(error) as caught:
                await provider.create(spec)
            if status == 429:  # RESOURCE_EXHAUSTED with an RPCRetryPolicy, not slept on
                assert caught.value.retry_after_s == 1.0
        await emulator.inject(kind="malformed", match=CREATE)
        with pytest.raises(ProtocolError):
            await provider.create(spec)
        sandbox = await provider.create(spec)
        try:
            await emulator.inject(429, match=EXEC)
            with pytest.raises(QuotaOrRateLimited):
                await provider.exec(sandbox, "true", timeout_s=30)
            await emulator.inject(429, match=EXEC)  # the filesystem API rewraps it; kept
            with pytest.raises(QuotaOrRateLimited):
                await provider.read_file(sandbox, "/etc/hostname")
            await emulator.inject(kind="malformed", match=EXEC)
            with pytest.raises(ProtocolError):
                await provider.write_file(sandbox, "/root/f", b"x")
            await emulator.configure(hang_s=5.0)
            await emulator.inject(kind="hang", match="/SandboxListV2")
            started = time.monotonic()
            with pytest.raises(OperationTimeout):
                await provider.list_sandboxes("faults")
            assert time.monotonic() - started < 4.0  # call_timeout_s bounds the SDK's wait
            with pytest.raises(OperationTimeout):
                await provider.exec(sandbox, "sleep 10", timeout_s=1)
            assert (await provider.exec(sandbox, "true", timeout_s=30)).exit_code == 0
        finally:
            await provider.destroy(sandbox)
        assert await provider.list_sandboxes("faults") == []
    finally:
        await provider.close()


async def test_the_toolkit_latency_applies_per_rpc_in_both_modes(emulator: Emulator) -> None:
    """The emulator's latency model acts on the gRPC calls its --latency-match names."""
    provider = await _opened()
    try:
        listing = "/modal.client.ModalClient/SandboxListV2"
        for mode in ("added", "total"):
            await emulator.configure(
                latency=LatencyModel(fixed_s=0.2), latency_match=f"POST {listing}",
                latency_mode=mode,
            )  # fmt: skip
            await emulator.clear_calls()
            assert await provider.list_sandboxes(f"latency-{mode}") == []
            calls = await emulator.calls()
            lists = [c for c in calls if c["path"] == listing]
            assert lists and all(c["added_s"] == pytest.approx(0.2) for c in lists)
            assert all(c["answered_s"] >= 0.2 for c in lists), mode
            assert all(c["added_s"] == 0 for c in calls if c["path"] != listing)
    finally:
        await provider.close()


async def test_wrong_token_is_an_auth_error_at_open(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "not-the-token")
    provider = ModalProvider({})
    with pytest.raises(AuthError):
        await provider.open()
    assert provider.clients.main is None  # nothing left open


async def test_unknown_or_ended_sandboxes(emulator: Emulator) -> None:
    provider = await _opened()
    try:
        # Nothing to destroy is not an error.
        await cases.ghost_is_not_found(provider, Sandbox(id="sb-" + "0" * 26, provider="modal"))
        # The lifetime is Modal's sandbox timeout: it ends, is no longer listed, exec fails.
        short = await provider.create(SandboxSpec(labels={RUN_LABEL: "short"}, lifetime_s=1))
        await cases.gone_after_lifetime(provider, short, "short")
        with pytest.raises(NotFound):  # also found by id only: Modal says "already finished"
            await provider.exec(Sandbox(id=short.id, provider="modal"), "true", timeout_s=5)
        await provider.destroy(short)
    finally:
        await provider.close()


async def test_missing_credentials_are_an_auth_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.setenv("MODAL_TOKEN_ID", "ak-x")
        monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-y")
        monkeypatch.delenv(name)
        with pytest.raises(AuthError, match=name):
            await ModalProvider({}).open()


def test_the_spec_maps_to_physical_cores_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 Modal core = 2 vCPU: the spec's vCPUs are halved; limits equal requests unless burst."""
    spec = SandboxSpec(cpus=2.0, memory_mb=1024)
    exact = ModalProvider({})._shape(spec)
    assert exact == {"cpu": (1.0, 1.0), "memory": (1024, 1024)}
    wire = convert_fn_config_to_resources_config(gpu=None, **exact)  # what the SDK sends
    assert (wire.milli_cpu, wire.milli_cpu_max, wire.memory_mb, wire.memory_mb_max) == (
        1000, 1000, 1024, 1024,
    )  # fmt: skip
    assert ModalProvider({"burst": True})._shape(spec) == {"cpu": 1.0, "memory": 1024}
    assert ModalProvider({})._shape(SandboxSpec(cpus=0.1))["cpu"] == (0.125, 0.125)


@given(
    cpus=st.floats(min_value=0.1, max_value=256),
    memory=st.integers(min_value=16, max_value=262_144),
)
def test_every_spec_is_sent_as_half_as_many_cores_with_equal_limits(cpus: float, memory: int):
    shape = ModalProvider({})._shape(SandboxSpec(cpus=cpus, memory_mb=memory))
    wire = convert_fn_config_to_resources_config(gpu=None, **shape)
    assert wire.milli_cpu == wire.milli_cpu_max == int(1000 * max(0.125, cpus / 2))
    assert wire.memory_mb == wire.memory_mb_max == memory


def test_the_catalog_prices_a_physical_core_as_two_vcpus() -> None:
    from bench.cost import Shape, load_catalog

    pricing = load_catalog().get("modal")
    assert pricing is not None and pricing.billing_basis == "allocated"
    # 1 physical core (the spec's 2 vCPU) and 1 GiB for one second, at the per-core rate.
    assert pricing.usd_per_s(Shape(cpus=2, memory_gib=1)) == pytest.approx(0.00003942 + 0.00000667)


def test_settings_capabilities_and_environment_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-id")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-modal-secret-value")
    monkeypatch.setenv("MODAL_SERVER_URL", "http://127.0.0.1:9,http://127.0.0.1:10")
    with pytest.raises(ValueError, match=r"\[providers.modal\]: unknown key\(s\) bogus"):
        ModalProvider({"bogus": 1})
    with pytest.raises(ValueError, match="MODAL_SERVER_URL"):
        ModalProvider({"api_url": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="checkpoint_ttl_s"):
        ModalProvider({"checkpoint_ttl_s": 1})
    provider = ModalProvider({})
    env = provider.environment()
    assert env["endpoint"] == "http://127.0.0.1:9"
    assert env["server_urls"] == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    assert env["sdk_versions"]["modal"] == "1.6.4"
    assert "control_plane" in env["sdk_retries"]
    if "set by the adapter" in modal_adapter._THROTTLE_SOURCE:
        assert env["sdk_retries"]["max_throttle_wait_observed"] == 0
    assert "as-modal-secret-value" not in json.dumps(env)
    caps = provider.capabilities()
    assert caps.operations >= {Op.CHECKPOINT, Op.RESTORE}
    assert not caps.operations & {Op.PAUSE, Op.RESUME, Op.FORK}
    assert "persistent" in caps.unsupported[str(Op.PAUSE)]
    assert caps.checkpoint_captures is CheckpointCaptures.FILESYSTEM
    assert caps.restore_target is RestoreTarget.NEW_SANDBOX
    assert caps.pause_kind is PauseKind.NONE
    assert caps.scratch_dir == "/root"


@pytest.mark.live
class TestLiveModal:
    """The same checks against Modal (``pytest -m live``); it bills the workspace."""

    @pytest.fixture(autouse=True)
    def _credentials(self) -> None:
        if not (os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET")):
            pytest.skip("set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET to run the live Modal tests")

    async def test_every_operation_works_against_the_real_service(self) -> None:
        await cases.exercised(_opened, exercise)

    async def test_per_iteration_connection_against_the_real_service(self) -> None:
        provider = await _opened({"connection": "per_iteration"})
        try:
            sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "live-per-it"}))
            try:
                result = await provider.exec(sandbox, ["echo", "ok"], timeout_s=120)
                assert result.stdout == b"ok\n"
            finally:
                await provider.destroy(sandbox)
        finally:
            await provider.close()
