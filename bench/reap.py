"""Find and destroy what runs left alive (after a crash, ``kill -9``, or a grace that ran out).

Two sources, because neither alone is enough: the run's ledger (every sandbox and checkpoint
the harness created, flushed when created and when gone) and the providers' own listing of
sandboxes (and, where a provider can list them, checkpoints) labelled with the run id (a
create that completed on the provider after our side gave up is in no ledger). The work is
:func:`bench.cleanup.sweep`, the same sweep (and retry policy) the runner and the cluster
workers use; every outcome is appended to the run's ledger.

A run that a live process still writes (its lock is held, bench/store.py) is not reaped: its
sandboxes are in use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.cleanup import (
    NO_GRACE,
    REAP_POLICY,
    Grace,
    RetryPolicy,
    SweepResult,
    alive_from,
    sweep,
)
from bench.store import (
    JsonlAppender,
    ResultsUnwritable,
    RunLock,
    ledger_path,
    load_ledger,
    load_manifest,
    utc_now_iso,
)
from providers import provider_class
from providers.base import Provider

#: Kept for callers of the earlier reap (the cleanup module's result type).
ReapResult = SweepResult


def alive_in_ledger(folder: Path) -> dict[str, set[str]]:
    """provider -> sandbox ids the ledger shows created and not destroyed."""
    entries, _ = load_ledger(folder)
    alive: dict[str, set[str]] = {}
    for provider, sandbox_id in alive_from(entries).sandboxes:
        alive.setdefault(provider, set()).add(sandbox_id)
    return alive


async def reap_run(
    folder: Path,
    providers: Mapping[str, Provider],
    *,
    dry_run: bool = False,
    locked: bool = False,
    policy: RetryPolicy = REAP_POLICY,
    grace: Grace = NO_GRACE,
) -> list[SweepResult]:
    """Destroy what ``folder``'s run left alive, with ``providers`` (opened). ``locked``: the
    caller holds the run's lock (a resume); otherwise reap takes it (RunLocked when a live
    process writes the run). A dry run lists and changes nothing."""
    manifest = load_manifest(folder)
    run_id = str(manifest["run_id"])
    entries, _ = load_ledger(folder)
    alive = alive_from(entries)
    wanted = [str(p) for p in (manifest.get("plan") or {}).get("providers") or []]
    lock = None if (locked or dry_run) else RunLock.acquire(folder, purpose="reap")
    ledger: JsonlAppender | None = None
    unwritable: list[str] = []
    try:
        if not dry_run:
            try:
                ledger = JsonlAppender(ledger_path(folder))
            except ResultsUnwritable as exc:
                unwritable.append(str(exc))

        def write(entry: dict[str, Any]) -> None:
            if ledger is None:
                return
            try:
                ledger.append({"at": utc_now_iso(), **entry})
            except ResultsUnwritable as exc:
                unwritable.append(str(exc))

        results = await sweep(
            providers,
            run_id,
            write,
            alive=alive,
            wanted=wanted,
            by="reap",
            dry_run=dry_run,
            policy=policy,
            grace=grace,
        )
    finally:
        if ledger is not None:
            ledger.close()
        if lock is not None:
            lock.release()
    if unwritable and results:
        results[0].failed["ledger"] = f"not updated: {unwritable[0]}"
    return results


def open_for_reaping(
    provider_ids: set[str], settings: Mapping[str, Any]
) -> tuple[dict[str, Provider], dict[str, str]]:
    """Instantiate what can be instantiated, and why the others cannot: a provider without
    SDK or credentials is left out (its runs are reported as not reaped, never silently
    passed over)."""
    providers: dict[str, Provider] = {}
    why: dict[str, str] = {}
    for provider_id in sorted(provider_ids):
        try:
            cls = provider_class(provider_id)
        except (ImportError, KeyError) as exc:
            why[provider_id] = f"adapter unavailable: {exc}"
            continue
        missing = [name for name in cls.required_env if not os.environ.get(name)]
        if missing:
            why[provider_id] = f"credentials missing: {', '.join(missing)}"
            continue
        table = settings.get(provider_id, {}) if isinstance(settings, Mapping) else {}
        try:
            providers[provider_id] = cls(table if isinstance(table, Mapping) else {})
        except Exception as exc:  # noqa: BLE001 - settings this adapter refuses: not reaped
            why[provider_id] = f"settings refused: {type(exc).__name__}: {exc}"
    return providers, why


__all__ = ["ReapResult", "alive_in_ledger", "open_for_reaping", "reap_run"]
