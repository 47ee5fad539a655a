"""The contract every provider adapter honours, run on every registered provider.

``local`` runs for real; ``e2b``, ``daytona`` and ``sprites`` run their real pinned SDKs
against loopback emulators backed by local sandboxes. ``pytest -m live`` runs the cloud
adapters' own live tests against the real services when credentials are present.
"""

from __future__ import annotations

import pytest

from bench.records import Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import DEFAULT_SUITE, WORKLOADS
from providers.base import (
    OPTIONAL_OPS,
    REQUIRED_OPS,
    RUN_LABEL,
    Op,
    PauseKind,
    RestoreTarget,
    SandboxSpec,
)
from providers.errors import NotFound, ProviderError
from tests.conftest import PROVIDER_IDS

pytestmark = pytest.mark.parametrize("provider_id", PROVIDER_IDS)


async def test_capabilities_are_declared_consistently(open_provider, provider_id):
    async with open_provider(provider_id) as (provider, _):
        caps = provider.capabilities()
        assert caps.operations >= REQUIRED_OPS
        for op in OPTIONAL_OPS - caps.operations:
            assert caps.unsupported.get(str(op)), f"{op} missing without a reason"
        if Op.CHECKPOINT in caps.operations:
            assert caps.checkpoint_captures is not None
            assert isinstance(caps.restore_target, RestoreTarget)
        if {Op.PAUSE, Op.RESUME} <= caps.operations:
            assert caps.pause_kind in (PauseKind.FREEZE, PauseKind.STOP_START)
        assert caps.isolation
        assert caps.scratch_dir.startswith("/")
        assert "sdk_versions" in provider.environment()


async def test_basic_operations_round_trip(open_provider, provider_id):
    async with open_provider(provider_id) as (provider, _):
        run_id = f"contract-{provider_id}"
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: run_id}))
        try:
            assert sandbox.id in await provider.list_sandboxes(run_id)
            ok = await provider.exec(sandbox, ["sh", "-c", "echo hello; exit 3"], timeout_s=30)
            assert ok.exit_code == 3
            assert ok.stdout.strip().endswith(b"hello")
            path = f"{provider.capabilities().scratch_dir}/contract.bin"
            data = bytes(range(256)) * 40
            await provider.write_file(sandbox, path, data)
            assert await provider.read_file(sandbox, path) == data
            shown = await provider.exec(sandbox, f"wc -c < {path}", timeout_s=30)
            assert shown.stdout.strip() == str(len(data)).encode()
        finally:
            await provider.destroy(sandbox)
        await provider.destroy(sandbox)  # idempotent
        assert sandbox.id not in await provider.list_sandboxes(run_id)
        with pytest.raises(ProviderError):
            await provider.exec(sandbox, ["true"], timeout_s=10)


async def test_reading_a_missing_file_is_not_found(open_provider, provider_id):
    async with open_provider(provider_id) as (provider, _):
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "contract-missing"}))
        try:
            with pytest.raises(NotFound):
                await provider.read_file(sandbox, "/nonexistent/sandbox-bench/file")
        finally:
            await provider.destroy(sandbox)


async def test_every_workload_records_what_the_semantics_say(open_provider, provider_id):
    """Each workload, once, through the runner: ok where supported (fidelity verified),
    unsupported where the provider lacks the capability, and nothing left alive."""
    async with open_provider(provider_id) as (provider, _):
        caps = provider.capabilities()
        sink = MemorySink()
        run_id = f"contract-run-{provider_id}"
        recorder = Recorder(sink, run_id=run_id, concurrency=1)
        params = {
            "exec": {"repeats": 2},
            "checkpoint": {"state_mb": 2},
            "pause_resume": {"hold_s": 0.3},
        }
        workloads = {name: WORKLOADS[name](params.get(name)) for name in DEFAULT_SUITE}
        runner = Runner(
            providers={provider_id: provider},
            workloads=workloads,
            spec=SandboxSpec(),
            recorder=recorder,
            timeout_s=60,
        )
        plan = make_plan([provider_id], list(workloads), iterations=1, warmup=0, seed=1)
        await runner.run(plan)
        by_workload: dict[str, list] = {}
        for sample in sink.samples:
            by_workload.setdefault(sample.workload, []).append(sample)
        for name, workload in workloads.items():
            samples = by_workload[name]
            missing = [op for op in workload.requires if not caps.supports(op)]
            if missing:
                assert {s.status for s in samples} == {Status.UNSUPPORTED}
                assert {s.operation for s in samples} == {
                    op for op, cap in workload.capability_ops.items() if cap in missing
                }
                continue
            failures = [
                (s.operation, s.error_type, s.error_message)
                for s in samples
                if s.status != Status.OK
            ]
            assert not failures, f"{name}: {failures}"
            assert sorted(s.operation for s in samples) == sorted(workload.planned_ops(caps))
            verified = [s for s in samples if "verified" in s.extra]
            if name in ("checkpoint", "pause_resume", "files"):
                assert verified and all(s.extra["verified"] for s in verified)
        assert await provider.list_sandboxes(run_id) == []
        created = {e["sandbox_id"] for e in sink.ledger if e["event"] == "created"}
        destroyed = {e["sandbox_id"] for e in sink.ledger if e["event"] == "destroyed"}
        assert created and created == destroyed
