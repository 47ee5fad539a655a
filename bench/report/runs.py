"""Loading runs for a report: manifests, ledgers and one frame of every sample.

Several runs merge into one :class:`RunSet` (each sample keeps its run id); runs of different
schema versions, or the same run twice, are refused; differences that change how the numbers
read (spec, client host and location, harness version, connection mode) become warnings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import columnar, stats
from bench.netprobe import is_loopback
from bench.records import SchemaError
from bench.store import load_ledger
from bench.workloads.task import register_from_manifest


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    run_id: str
    folder: Path
    manifest: dict[str, Any]
    warnings: tuple[str, ...]
    ledger: tuple[dict[str, Any], ...]
    samples: int


@dataclass(frozen=True, kw_only=True)
class RunSet:
    """One or more runs merged: their manifests and one frame of every sample."""

    runs: tuple[RunInfo, ...]
    frame: pd.DataFrame
    merge_warnings: tuple[str, ...] = ()


def load_runs(folders: Sequence[Path]) -> RunSet:
    """Load and merge runs; refuses different schema versions and the same run twice."""
    if not folders:
        raise ValueError("no runs given")
    infos: list[RunInfo] = []
    frames: list[pd.DataFrame] = []
    warnings: list[str] = []
    for folder in folders:
        # From the run's Parquet copy when it matches its JSONL, else parsed from the JSONL
        # and its Parquet copy written for the next command (bench/columnar.py).
        run = columnar.load(Path(folder), columns=columnar.FRAME_SOURCE_COLUMNS, save=True)
        # The run's configured tasks (task_NAME), so their steps report in order, their span
        # as derived, their extras as columns.
        register_from_manifest(run.manifest)
        frame = run.frame()
        run_id = run.run_id
        if not frame.empty:
            foreign = set(stats.text_values(frame["run_id"].drop_duplicates())) - {run_id}
            if foreign:
                warnings.append(
                    f"{run_id}: samples carry other run ids ({', '.join(sorted(foreign))}); "
                    "they are labelled with the manifest's run id"
                )
                frame["run_id"] = pd.Categorical([run_id] * len(frame))
        ledger, ledger_warnings = load_ledger(Path(folder))
        infos.append(
            RunInfo(
                run_id=run_id,
                folder=Path(folder),
                manifest=run.manifest,
                warnings=tuple(run.warnings) + tuple(ledger_warnings),
                ledger=tuple(ledger),
                samples=len(frame),
            )
        )
        frames.append(frame)
        del run  # the Arrow table; the frame replaces it
    versions = {r.manifest.get("schema_version") for r in infos}
    if len(versions) > 1:
        detail = ", ".join(f"{r.run_id}: {r.manifest.get('schema_version')}" for r in infos)
        raise SchemaError(f"cannot merge runs with different schema versions ({detail})")
    seen: set[str] = set()
    for info in infos:
        if info.run_id in seen:
            raise ValueError(f"run {info.run_id} given twice")
        seen.add(info.run_id)
    if len(frames) == 1:
        merged = frames[0]
    else:
        merged = pd.concat(frames, ignore_index=True)
        for column in ("run_id", "provider", "workload", "operation", "status", "error_type"):
            merged[column] = merged[column].astype("category")
        warnings.extend(_merge_differences(infos))
    return RunSet(runs=tuple(infos), frame=merged, merge_warnings=tuple(warnings))


def _merge_differences(infos: Sequence[RunInfo]) -> list[str]:
    out = []
    checks = {
        "spec": lambda m: m.get("spec"),
        "client host": lambda m: (m.get("client") or {}).get("hostname"),
        "client location": lambda m: (m.get("client") or {}).get("location"),
        "harness version": lambda m: (m.get("harness") or {}).get("version"),
        "connection mode": lambda m: m.get("connection_mode"),
    }
    for name, get in checks.items():
        values = {repr(get(r.manifest)) for r in infos}
        if len(values) > 1:
            out.append(
                f"merged runs differ in {name}: "
                + "; ".join(f"{r.run_id}: {get(r.manifest)}" for r in infos)
            )
    return out


def plan_providers(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for m in manifests:
        out += list((m.get("plan") or {}).get("providers") or [])
        out += list((m.get("providers") or {}).keys())
    return out


def capabilities_of(manifests: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Capabilities per provider; a later run's detection wins over an earlier one's."""
    caps: dict[str, dict[str, Any]] = {}
    for m in manifests:
        for pid, entry in (m.get("providers") or {}).items():
            if isinstance(entry, Mapping) and isinstance(entry.get("capabilities"), Mapping):
                caps[pid] = dict(entry["capabilities"])
    return caps


def emulated_providers(manifests: Sequence[Mapping[str, Any]]) -> set[str]:
    """Providers whose endpoint in any run was on this machine: their numbers describe an
    emulator, and the report must not let them pass for the provider's service."""
    found = set()
    for manifest in manifests:
        for pid, entry in (manifest.get("providers") or {}).items():
            endpoint = ((entry or {}).get("environment") or {}).get("endpoint")
            if endpoint and is_loopback(str(endpoint)):
                found.add(pid)
    return found
