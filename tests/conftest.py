"""Shared fixtures: every registered provider, ready to use.

``local`` is the real local provider (root needed for the full capability set); the cloud
providers are their real adapters and pinned SDKs pointed at loopback emulators
(bench/emulators/), each emulator a separate process stopped by pid when the test ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bench.emulators.control import Emulator, running
from providers import REGISTRY, provider_class
from providers.base import RUN_LABEL, Provider, Sandbox, SandboxSpec
from providers.errors import ProviderError

#: Every provider the contract suite covers: the registry's, less the stub (sandboxes that are
#: only names), so a provider registered is a provider tested, with no list here to forget.
PROVIDER_IDS = tuple(p for p in REGISTRY if p != "stub")
#: The cloud providers, each tested against its loopback emulator (bench/emulators/).
EMULATED = frozenset(PROVIDER_IDS) - {"local"}


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local provider's full capability set needs root")


@contextlib.asynccontextmanager
async def emulator_env(
    provider_id: str,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    clear: Sequence[str] = (),
    latency_ms: float = 0.0,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Emulator]:
    """Run ``provider_id``'s emulator with its client variables set (after removing ``clear``
    from the environment); on the way out, it must hold no sandboxes."""
    needs_root()
    for key in clear:
        monkeypatch.delenv(key, raising=False)
    async with running(provider_id, folder, latency_ms=latency_ms, extra_args=extra_args) as emu:
        for key, value in emu.client_env().items():
            monkeypatch.setenv(key, value)
        yield emu
        assert await emu.live_sandboxes() == [], "the emulator still holds sandboxes"


@pytest.fixture
async def open_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An async context factory: ``async with open_provider("e2b") as (provider, emulator)``.

    ``emulator_args`` are more emulator options (latency model, faults, seed, backend: see
    :func:`bench.emulators.control.emulator_args`)."""

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
        async with emulator_env(
            provider_id,
            tmp_path / f"{provider_id}-emu",
            monkeypatch,
            latency_ms=latency_ms,
            extra_args=emulator_args,
        ) as emu:
            provider = provider_class(provider_id)(settings or {})
            await provider.open()
            try:
                yield provider, emu
            finally:
                await provider.close()

    return factory


class Scratch:
    """What a fault test makes on one provider under ``run_id``: sandboxes (:meth:`fresh`, and
    any other it appends to ``made``) and checkpoints (``refs``), all removed by
    :meth:`cleanup` (the paused ones resumed first), as are any left listed under the run."""

    def __init__(self, provider: Provider, run_id: str) -> None:
        self.provider, self.run_id = provider, run_id
        self.refs: list = []
        self.made: list[Sandbox] = []
        self.paused: list[Sandbox] = []

    async def fresh(self) -> Sandbox:
        sandbox = await self.provider.create(SandboxSpec(labels={RUN_LABEL: self.run_id}))
        self.made.append(sandbox)
        return sandbox

    async def cleanup(self) -> None:
        for ref in self.refs:
            with contextlib.suppress(ProviderError):
                await self.provider.delete_checkpoint(ref)
        for sandbox in self.paused:
            with contextlib.suppress(ProviderError):
                await self.provider.resume(sandbox)
        for sandbox in self.made:
            with contextlib.suppress(ProviderError):
                await self.provider.destroy(sandbox)
        for sandbox_id in await self.provider.list_sandboxes(self.run_id):
            with contextlib.suppress(ProviderError):
                await self.provider.destroy(Sandbox(id=sandbox_id, provider=self.provider.id))
        self.refs, self.made, self.paused = [], [], []
