"""Shared fixtures: every registered provider, ready to use.

``local`` is the real local provider (root needed for the full capability set); the cloud
providers are their real adapters and pinned SDKs pointed at loopback emulators
(tests/emulators/), each emulator a separate process stopped by pid when the test ends.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from providers import provider_class
from providers.base import Provider

#: Every provider the contract suite covers.
PROVIDER_IDS = ("local", "e2b", "daytona", "sprites")
EMULATED = frozenset(PROVIDER_IDS) - {"local"}


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local provider's full capability set needs root")


@pytest.fixture
async def open_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An async context factory: ``async with open_provider("e2b") as (provider, emulator)``.

    ``emulator_args`` are more emulator options (latency model, faults, seed, backend: see
    :func:`tests.emulators.common.emulator_args`)."""
    import contextlib

    from tests.emulators.common import running

    @contextlib.asynccontextmanager
    async def factory(
        provider_id: str,
        settings: dict | None = None,
        latency_ms: float = 0.0,
        emulator_args: Sequence[str] = (),
    ) -> AsyncIterator[tuple[Provider, object | None]]:
        needs_root()
        if provider_id == "local":
            provider = provider_class("local")(
                {"state_dir": str(tmp_path / "local-state"), **(settings or {})}
            )
            await provider.open()
            try:
                yield provider, None
            finally:
                await provider.close()
            return
        module = importlib.import_module(f"tests.emulators.{provider_id}")
        async with running(
            provider_id,
            tmp_path / f"{provider_id}-emu",
            latency_ms=latency_ms,
            extra_args=emulator_args,
        ) as emu:
            for key, value in module.client_env(emu).items():
                monkeypatch.setenv(key, value)
            provider = provider_class(provider_id)(settings or {})
            await provider.open()
            try:
                yield provider, emu
            finally:
                await provider.close()
            assert await emu.live_sandboxes() == [], "the emulator still holds sandboxes"

    return factory
