"""Find and destroy sandboxes that runs left alive (after a crash or ``kill -9``).

Two sources, because neither alone is enough: the run's ledger (every sandbox the harness
created, flushed when created and when destroyed) and the provider's own listing of
sandboxes labelled with the run id (a create that completed on the provider after our side
gave up is in no ledger).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from bench.store import JsonlAppender, ledger_path, load_ledger, load_manifest, utc_now_iso
from providers import provider_class
from providers.base import Provider, Sandbox

REAP_TIMEOUT_S = 60.0


@dataclass
class ReapResult:
    run_id: str
    provider: str
    found: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def alive_in_ledger(folder: Path) -> dict[str, set[str]]:
    """provider -> sandbox ids the ledger shows created and not destroyed."""
    entries, _ = load_ledger(folder)
    alive: dict[str, set[str]] = {}
    for entry in entries:
        ids = alive.setdefault(entry.get("provider", ""), set())
        if entry.get("event") == "created":
            ids.add(entry["sandbox_id"])
        elif entry.get("event") == "destroyed":
            ids.discard(entry["sandbox_id"])
    return alive


async def reap_run(
    folder: Path, providers: dict[str, Provider], *, dry_run: bool = False
) -> list[ReapResult]:
    manifest = load_manifest(folder)
    run_id = str(manifest["run_id"])
    alive = alive_in_ledger(folder)
    ledger = JsonlAppender(ledger_path(folder))
    results = []
    try:
        for provider_id in manifest.get("plan", {}).get("providers", []):
            result = ReapResult(run_id=run_id, provider=provider_id)
            results.append(result)
            provider = providers.get(provider_id)
            if provider is None:
                result.failed["*"] = "provider not available here (credentials or SDK missing)"
                continue
            found = set(alive.get(provider_id, set()))
            try:
                async with asyncio.timeout(REAP_TIMEOUT_S):
                    found |= set(await provider.list_sandboxes(run_id))
            except Exception as exc:  # noqa: BLE001 - the ledger alone still gets reaped
                result.failed["list"] = f"{type(exc).__name__}: {exc}"
            result.found = sorted(found)
            for sandbox_id in result.found:
                if dry_run:
                    continue
                try:
                    async with asyncio.timeout(REAP_TIMEOUT_S):
                        await provider.destroy(Sandbox(id=sandbox_id, provider=provider_id))
                except Exception as exc:  # noqa: BLE001 - report it and go on with the rest
                    result.failed[sandbox_id] = f"{type(exc).__name__}: {exc}"
                    continue
                result.destroyed.append(sandbox_id)
                ledger.append(
                    {
                        "at": utc_now_iso(),
                        "event": "destroyed",
                        "by": "reap",
                        "provider": provider_id,
                        "sandbox_id": sandbox_id,
                    }
                )
    finally:
        ledger.close()
    return results


def open_for_reaping(provider_ids: set[str], settings: dict[str, dict]) -> dict[str, Provider]:
    """Instantiate what can be instantiated; a provider without SDK or credentials is left
    out (its runs are reported as not reaped, never silently passed over)."""
    import os

    providers: dict[str, Provider] = {}
    for provider_id in sorted(provider_ids):
        try:
            cls = provider_class(provider_id)
        except (ImportError, KeyError):
            continue
        if any(not os.environ.get(name) for name in cls.required_env):
            continue
        try:
            providers[provider_id] = cls(settings.get(provider_id, {}))
        except (ValueError, TypeError):  # settings this adapter refuses: reported as not reaped
            continue
    return providers
