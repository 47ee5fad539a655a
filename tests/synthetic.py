"""Synthetic run folders for the stats, cost, claims and report tests and the report benchmark.

Durations are seeded lognormal draws per (provider, operation), with a few failures, the
unsupported operations each provider really lacks, and a manifest shaped like the CLI's.
Synthetic data is for tests only; it is never shipped as results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.records import SCHEMA_VERSION, Sample, Status
from bench.store import RunWriter, samples_path
from providers.base import (
    Capabilities,
    CheckpointCaptures,
    Op,
    PauseKind,
    RestoreTarget,
)

PROVIDERS: tuple[str, ...] = ("daytona", "e2b", "local", "sprites")
WORKLOADS: tuple[str, ...] = ("lifecycle", "exec", "files", "checkpoint", "pause_resume")
#: Further workloads make_run can write (pass them in ``workloads``).
EXTRA_WORKLOADS: tuple[str, ...] = (
    "idle_wake",
    "probe",
    "burst",
    "checkpoint_scaling",
    "concurrency_scaling",
)
SCALING_SIZES_MB: tuple[int, ...] = (1, 16, 64)
SCALING_LEVELS: tuple[int, ...] = (1, 5)

#: Operations of one iteration, in order; (name, repeats).
OPERATIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "lifecycle": (("create", 1), ("first_exec", 1), ("ready", 1), ("destroy", 1)),
    "exec": (
        ("create", 1),
        ("first_exec", 1),
        ("exec_true", 10),
        ("exec_64k", 10),
        ("destroy", 1),
    ),
    "files": (
        ("create", 1),
        ("write_1k", 1),
        ("read_1k", 1),
        ("write_4m", 1),
        ("read_4m", 1),
        ("destroy", 1),
    ),
    "checkpoint": (
        ("create", 1),
        ("write_state", 1),
        ("checkpoint", 1),
        ("mutate", 1),
        ("restore", 1),
        ("first_exec_after_restore", 1),
        ("verify", 1),
        ("destroy", 1),
        ("destroy_restored", 1),
    ),
    # An agent task (bench/workloads/agent_tasks.py): its steps, then destroy ("total" is
    # derived from the timestamps, like "ready").
    "git_clone": (
        ("create", 1),
        ("first_exec", 1),
        ("tools", 1),
        ("upload", 1),
        ("clone", 1),
        ("verify", 1),
        ("destroy", 1),
    ),
    "pause_resume": (
        ("create", 1),
        ("start_counter", 1),
        ("pause", 1),
        ("resume", 1),
        ("first_exec_after_resume", 1),
        ("verify", 1),
        ("destroy", 1),
    ),
}

#: Capabilities a workload needs (the runner records only these as unsupported without them).
REQUIRES: dict[str, tuple[str, ...]] = {
    "checkpoint": ("checkpoint", "restore"),
    "pause_resume": ("pause", "resume"),
}

#: Median seconds per operation for each provider (made up, roughly the published shapes).
MEDIANS_S: dict[str, dict[str, float]] = {
    "sprites": {"create": 1.4, "checkpoint": 0.35, "restore": 0.9, "destroy": 0.3},
    "e2b": {"create": 0.45, "checkpoint": 1.2, "restore": 0.6, "pause": 2.0, "resume": 0.9},
    "daytona": {"create": 0.2, "checkpoint": 2.5, "restore": 0.8, "pause": 1.5, "resume": 1.2},
    "local": {"create": 0.05, "checkpoint": 0.08, "restore": 0.06, "pause": 0.01, "resume": 0.01},
}
DEFAULT_MEDIAN_S = {
    "first_exec": 0.12,
    "ready": 0.62,  # make_run derives it as create + first_exec
    "exec_true": 0.04,
    "exec_64k": 0.06,
    "write_1k": 0.03,
    "read_1k": 0.03,
    "write_4m": 0.3,
    "read_4m": 0.25,
    "write_state": 0.2,
    "mutate": 0.05,
    "first_exec_after_restore": 0.3,
    "verify": 0.06,
    "destroy": 0.15,
    "destroy_restored": 0.15,
    "start_counter": 0.06,
    "first_exec_after_resume": 0.08,
    "tools": 0.04,
    "upload": 0.08,
    "clone": 0.35,
    "create": 0.5,
    "checkpoint": 0.5,
    "restore": 0.5,
    "pause": 0.5,
    "resume": 0.5,
}
LOCAL_MULTIPLIER = 0.2  # the local provider has no network round trip


def median_s(provider: str, operation: str) -> float:
    table = MEDIANS_S.get(provider, {})
    if operation in table:
        return table[operation]
    base = DEFAULT_MEDIAN_S.get(operation, 0.1)
    return base * (LOCAL_MULTIPLIER if provider == "local" else 1.0)


def capabilities(provider: str) -> dict[str, Any]:
    """A Capabilities.to_dict() like the real adapter's (semantics from research)."""
    required = {Op.CREATE, Op.EXEC, Op.WRITE_FILE, Op.READ_FILE, Op.DESTROY, Op.LIST}
    if provider == "sprites":
        caps = Capabilities(
            operations=frozenset(required | {Op.CHECKPOINT, Op.RESTORE}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.IN_PLACE,
            pause_kind=PauseKind.AUTO_SLEEP,
            isolation="Firecracker microVM",
            unsupported={
                "pause": "no pause API: Sprites hibernate after ~30 s idle and wake on use",
                "resume": "no resume API: the next exec wakes a hibernated Sprite",
            },
        )
    elif provider == "e2b":
        caps = Capabilities(
            operations=frozenset(required | {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM_AND_MEMORY,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE,
            isolation="Firecracker microVM",
        )
    elif provider == "daytona":
        caps = Capabilities(
            operations=frozenset(required | {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.STOP_START,
            isolation="container",
            notes={"exec": "stderr is merged into stdout"},
        )
    else:
        caps = Capabilities(
            operations=frozenset(required | {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE,
            isolation="Linux namespaces + overlayfs + cgroup v2",
        )
    return caps.to_dict()


def manifest(
    run_id: str,
    *,
    providers: Sequence[str],
    workloads: Sequence[str],
    iterations: int,
    warmup: int,
    seed: int,
    status: str = "completed",
    spec: Mapping[str, Any] | None = None,
    hostname: str = "bench-client-1",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": status,
        "started_at": "2026-11-28T10:00:00.000000+00:00",
        "finished_at": "2026-11-28T10:42:00.000000+00:00",
        "harness": {"version": "0.1.0", "git_sha": "0123456789abcdef", "git_dirty": False},
        "client": {
            "hostname": hostname,
            "location": "fra",
            "platform": "Linux-6.1-x86_64",
            "kernel": "6.1.0",
            "python": "3.11.2",
            "cpus": 2,
            "memory_mb": 8192,
        },
        "seed": seed,
        "config": {"iterations": iterations, "warmup": warmup, "synthetic": True},
        "spec": dict(
            spec
            or {
                "cpus": 2.0,
                "memory_mb": 1024,
                "disk_mb": None,
                "template": None,
                "lifetime_s": 900,
                "max_pids": 512,
            }
        ),
        "plan": {
            "providers": list(providers),
            "workloads": list(workloads),
            "iterations": iterations,
            "warmup": warmup,
            "concurrency": 1,
            "scheduled_iterations": len(providers) * len(workloads) * (iterations + warmup),
        },
        "providers": {
            p: {
                "capabilities": capabilities(p),
                "environment": {"sdk_versions": {f"{p}-sdk": "1.2.3"}},
            }
            for p in providers
        },
        "connection_mode": "reuse",
        **dict(extra or {}),
    }


@dataclass(frozen=True, kw_only=True)
class Step:
    """One planned record of an iteration."""

    operation: str
    #: Operation whose median it uses (``checkpoint`` for ``checkpoint_64mb``).
    base: str
    factor: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Open-loop steps: seconds the client started late (actual minus intended start).
    lag_s: float | None = None


def steps(workload: str, *, exec_repeats: int, idle_s: float, lag_s: float) -> list[Step]:
    """The records one iteration of ``workload`` makes, in order (as the runner's workloads)."""
    if workload in OPERATIONS:
        out = []
        for op, repeats in OPERATIONS[workload]:
            count = exec_repeats if repeats > 1 else 1
            out += [Step(operation=op, base=op) for _ in range(count)]
        return out
    if workload == "idle_wake":
        return [
            Step(operation="create", base="create"),
            Step(operation="first_exec", base="first_exec"),
            Step(operation="exec_after_idle", base="exec_true", extra={"idle_s": idle_s}),
            Step(operation="destroy", base="destroy"),
        ]
    if workload == "probe":
        return [
            Step(operation="create", base="create"),
            Step(operation="probe", base="exec_64k"),
            Step(operation="destroy", base="destroy"),
        ]
    if workload == "burst":
        size = 5
        return (
            [
                Step(operation="create", base="create", extra={"slot": i}, lag_s=lag_s * i)
                for i in range(size)
            ]
            + [Step(operation="first_exec", base="first_exec") for _ in range(size)]
            + [Step(operation="destroy", base="destroy") for _ in range(size)]
        )
    if workload == "checkpoint_scaling":
        out = [Step(operation="create", base="create")]
        for size in SCALING_SIZES_MB:
            factor = 1 + size / 16
            extra = {"state_mb": size}
            for op in ("write_state", "checkpoint", "restore", "verify", "delete_checkpoint"):
                out.append(Step(operation=f"{op}_{size}mb", base=op, factor=factor, extra=extra))
        return [*out, Step(operation="destroy", base="destroy")]
    if workload == "concurrency_scaling":
        out = []
        for level in SCALING_LEVELS:
            factor = 1 + level / 10
            for op in ("create", "exec", "destroy"):
                base = "exec_true" if op == "exec" else op
                out += [
                    Step(operation=f"{op}_c{level}", base=base, factor=factor) for _ in range(level)
                ]
            out.append(Step(operation=f"round_c{level}", base="create", factor=2 * factor))
        return out
    raise ValueError(f"no synthetic plan for workload {workload!r}")


def _iteration_records(
    rng: np.random.Generator,
    provider: str,
    workload: str,
    *,
    sigma: float,
    failure_rate: float,
    scale: Mapping[str, float],
    exec_repeats: int,
    idle_s: float = 1.0,
    lag_s: float = 0.0,
    spec_mismatch: Sequence[str] = (),
) -> Iterable[tuple[str, str, float | None, str | None, dict[str, Any], float | None]]:
    """(operation, status, duration_s, error_type, extra, lag_s) for one iteration."""
    caps = capabilities(provider)
    failed = False
    create_s = first_exec_s = None
    missing = [op for op in REQUIRES.get(workload, ()) if op in caps["unsupported"]]
    if missing:
        # As the runner does: only the missing capability operations are recorded.
        for operation in missing:
            yield operation, "unsupported", None, None, {}, None
        return
    for step in steps(workload, exec_repeats=exec_repeats, idle_s=idle_s, lag_s=lag_s):
        operation = step.operation
        extra = dict(step.extra)
        if operation == "verify" or operation.startswith("verify_"):
            extra["verified"] = True
        if operation == "probe":
            extra.update(
                recycled=False,
                spec_mismatch=list(spec_mismatch),
                # A provider below spec shows 1 of the 2 CPUs asked for; each sandbox has its
                # own kernel (boot id) except on local, which shares the host's.
                effective_cpus=1.0 if spec_mismatch else 2.0,
                effective_memory_mb=2048,
                disk_mb=10240,
                boot_id="host" if provider == "local" else f"{int(rng.integers(1 << 62)):016x}",
            )
        if operation in caps["unsupported"]:
            yield operation, "unsupported", None, None, {}, None
            continue
        if operation.startswith("destroy_restored") and caps["restore_target"] == "in_place":
            continue
        if operation == "ready":
            if create_s is None or first_exec_s is None:
                yield operation, "skipped", None, None, {}, None
            else:
                yield operation, "ok", create_s + first_exec_s, None, {}, None
            continue
        if failed and not operation.startswith("destroy"):
            yield operation, "skipped", None, None, {}, step.lag_s
            continue
        if rng.random() < failure_rate:
            failed = True
            kind = (
                ("timeout", "OperationTimeout") if rng.random() < 0.3 else ("error", "Unavailable")
            )
            yield operation, kind[0], None, kind[1], extra, step.lag_s
            continue
        median = median_s(provider, step.base) * scale.get(provider, 1.0) * step.factor
        duration = float(median * math.exp(sigma * rng.standard_normal()))
        if operation == "create":
            create_s = duration
        elif operation == "first_exec":
            first_exec_s = duration
        yield operation, "ok", duration, None, extra, step.lag_s


def make_run(
    root: Path,
    run_id: str = "20261128T100000Z-aaaaaa",
    *,
    providers: Sequence[str] = PROVIDERS,
    workloads: Sequence[str] = WORKLOADS,
    iterations: int = 20,
    warmup: int = 1,
    seed: int = 0,
    sigma: float = 0.3,
    failure_rate: float = 0.01,
    scale: Mapping[str, float] | None = None,
    exec_repeats: int = 10,
    status: str = "completed",
    manifest_extra: Mapping[str, Any] | None = None,
    hostname: str = "bench-client-1",
    idle_s: float = 1.0,
    lag_s: float = 0.0,
    spec_mismatch: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write a synthetic run folder through RunWriter and Sample; returns the folder.

    ``idle_s`` is the idle_wake workload's idle; ``lag_s`` the schedule lag of the n-th
    burst create (n × lag_s); ``spec_mismatch`` what the probe reports per provider.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / run_id
    writer = RunWriter(
        folder,
        manifest(
            run_id,
            providers=providers,
            workloads=workloads,
            iterations=iterations,
            warmup=warmup,
            seed=seed,
            status=status,
            extra=manifest_extra,
            hostname=hostname,
        ),
    )
    sample_id = 0
    try:
        for iteration in range(-warmup, iterations):
            for workload in workloads:
                for provider in providers:
                    records = _iteration_records(
                        rng,
                        provider,
                        workload,
                        sigma=sigma,
                        failure_rate=failure_rate,
                        scale=scale or {},
                        exec_repeats=exec_repeats,
                        idle_s=idle_s,
                        lag_s=lag_s,
                        spec_mismatch=(spec_mismatch or {}).get(provider, ()),
                    )
                    for operation, status_, duration, error_type, extra, lag in records:
                        intended = None if lag is None else 10.0 + sample_id * 1e-3
                        writer.add_sample(
                            Sample(
                                run_id=run_id,
                                sample_id=sample_id,
                                provider=provider,
                                workload=workload,
                                operation=operation,
                                iteration=iteration + warmup,
                                warmup=iteration < 0,
                                concurrency=1,
                                started_at="2026-11-28T10:00:01.000000+00:00",
                                duration_s=duration,
                                status=Status(status_),
                                error_type=error_type,
                                error_message=(
                                    capabilities(provider)["unsupported"].get(operation)
                                    if status_ == "unsupported"
                                    else ("synthetic failure" if error_type else None)
                                ),
                                sandbox_id=f"{provider}-{iteration}",
                                extra=extra,
                                intended_start_s=intended,
                                actual_start_s=None if lag is None else intended + lag,
                            )
                        )
                        sample_id += 1
    finally:
        writer.close()
    return folder


def write_large_run(
    root: Path,
    n_samples: int,
    run_id: str = "20261128T120000Z-bbbbbb",
    *,
    providers: Sequence[str] = PROVIDERS,
    workloads: Sequence[str] = WORKLOADS,
    seed: int = 0,
    sigma: float = 0.4,
    failure_rate: float = 0.005,
) -> Path:
    """About ``n_samples`` samples in a run folder, written fast for the benchmark.

    The manifest goes through RunWriter; the sample lines are written in bulk with the exact
    dict shape of ``Sample.to_json_dict()`` (a test checks the two agree), because building
    and flushing a million Sample objects one by one would dominate the benchmark's set-up.
    """
    rng = np.random.default_rng(seed)
    ops = [(w, op) for w in workloads for op, _ in OPERATIONS[w]]
    per_iteration = len(ops) * len(providers)
    iterations = max(1, math.ceil(n_samples / per_iteration))
    folder = Path(root) / run_id
    writer = RunWriter(
        folder,
        manifest(
            run_id,
            providers=providers,
            workloads=workloads,
            iterations=iterations,
            warmup=0,
            seed=seed,
        ),
    )
    writer.close()
    written = 0
    with samples_path(folder).open("w", encoding="utf-8") as fh:
        for provider in providers:
            caps = capabilities(provider)
            for workload, operation in ops:
                count = min(iterations, n_samples - written)
                if count <= 0:
                    break
                unsupported = operation in caps["unsupported"]
                durations = median_s(provider, operation) * np.exp(
                    sigma * rng.standard_normal(count)
                )
                fails = rng.random(count) < failure_rate
                lines = []
                for i in range(count):
                    if unsupported:
                        status, duration, error_type = "unsupported", None, None
                    elif fails[i]:
                        status, duration, error_type = "error", None, "Unavailable"
                    else:
                        status, duration, error_type = "ok", float(durations[i]), None
                    lines.append(
                        json.dumps(
                            sample_dict(
                                run_id=run_id,
                                sample_id=written + i,
                                provider=provider,
                                workload=workload,
                                operation=operation,
                                iteration=i,
                                status=status,
                                duration_s=duration,
                                error_type=error_type,
                            ),
                            separators=(",", ":"),
                        )
                    )
                fh.write("\n".join(lines) + "\n")
                written += count
    return folder


def sample_dict(
    *,
    run_id: str,
    sample_id: int,
    provider: str,
    workload: str,
    operation: str,
    iteration: int,
    status: str,
    duration_s: float | None,
    error_type: str | None = None,
    warmup: bool = False,
) -> dict[str, Any]:
    """The JSON object RunWriter writes for such a Sample (same keys, same order)."""
    return {
        "run_id": run_id,
        "sample_id": sample_id,
        "provider": provider,
        "workload": workload,
        "operation": operation,
        "iteration": iteration,
        "warmup": warmup,
        "concurrency": 1,
        "started_at": "2026-11-28T12:00:01.000000+00:00",
        "duration_s": duration_s,
        "status": status,
        "intended_start_s": None,
        "actual_start_s": None,
        "error_type": error_type,
        "error_message": "synthetic failure" if error_type else None,
        "sandbox_id": f"{provider}-{iteration}",
        "location": None,
        "extra": {},
    }


__all__ = [
    "EXTRA_WORKLOADS",
    "OPERATIONS",
    "PROVIDERS",
    "SCHEMA_VERSION",
    "WORKLOADS",
    "capabilities",
    "make_run",
    "manifest",
    "median_s",
    "sample_dict",
    "write_large_run",
]
