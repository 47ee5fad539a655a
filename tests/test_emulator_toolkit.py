"""The emulator toolkit (bench/emulators/toolkit.py) on the stub backend: no root, no process."""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.emulators import PROTOCOLS, protocol_class
from bench.emulators.cli import BEHAVIOUR
from bench.emulators.toolkit import Box, EmulatorState, Sandboxes, Snapshot, make_app
from providers.base import ExecResult, SandboxSpec
from providers.errors import NotFound, ProviderError
from providers.stub import StubProvider


class _Counting(StubProvider):
    """The stub, counting what it holds; ``fail_exec`` makes every command exit 1."""

    fail_exec = False

    def held(self) -> tuple[int, int]:
        return len(self._boxes), len(self._checkpoints)

    async def exec(self, sandbox, command, *, timeout_s):
        result = await super().exec(sandbox, command, timeout_s=timeout_s)
        return ExecResult(exit_code=1, stdout=b"", stderr=b"no") if self.fail_exec else result


async def test_sandboxes_keep_state_through_every_operation_and_close_leaves_nothing():
    backend = _Counting()
    boxes = Sandboxes(backend)
    await boxes.open()
    box = boxes.add(Box(id="a"))
    await boxes.boot(box, SandboxSpec(), home="/home/x")
    await boxes.write_file(box, "/home/x/f", b"1")
    snap = boxes.add_snapshot(Snapshot(id="s1", source_id="a", names=["first"]))
    assert snap.state == "pending"
    await boxes.take(snap, box)
    assert snap.state == "active" and boxes.find_snapshot("first") is snap
    await boxes.freeze(box)
    await boxes.stop(box)  # thaws, keeps the filesystem only
    assert box.local is None and box.parked is not None and not box.frozen
    with pytest.raises(NotFound):
        await boxes.exec(box, ["true"], timeout_s=1)
    await boxes.start(box)
    assert await boxes.read_file(box, "/home/x/f") == b"1"
    await boxes.write_file(box, "/home/x/f", b"2")
    await boxes.rewind(box, snap.ref)  # in place: the same box, the snapshot's files
    assert await boxes.read_file(box, "/home/x/f") == b"1"
    other = boxes.add(Box(id="b"))
    await boxes.boot(other, source=snap.ref)
    assert [b.id for b in boxes.listed()] == ["a", "b"] and boxes.live() == ["a", "b"]
    await boxes.destroy(other)
    await boxes.destroy(other)  # idempotent
    assert boxes.live() == ["a"] and backend.held() == (1, 1)
    await boxes.close()
    assert boxes.live() == [] and backend.held() == (0, 0)


async def test_a_boot_that_fails_half_way_leaves_no_backend_sandbox():
    backend = _Counting()
    backend.fail_exec = True
    boxes = Sandboxes(backend)
    with pytest.raises(ProviderError, match="mkdir /home/x failed"):
        await boxes.boot(Box(id="a"), home="/home/x")
    assert backend.held() == (0, 0)


def test_protocols_do_every_sandbox_operation_through_the_one_backend_object():
    """What lets one layer (semantic faults) change every emulator at once: no protocol
    reaches the backend provider, a box's backend sandbox, or the registry behind listed()."""
    for name in PROTOCOLS:
        source = Path(inspect.getfile(protocol_class(name))).read_text()
        tree = ast.parse(source)
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attributes & {"backend", "_boxes", "_snapshots", "_checkpoints"}, name
        assert "providers.local" not in source and "provider_class" not in source, name
        # box.local is read only as "is it running", never handed to the backend
        assert "self.local" not in source, name


def _args(**overrides: object) -> argparse.Namespace:
    values = {flag.lstrip("-").replace("-", "_"): kw["default"] for flag, kw in BEHAVIOUR.items()}
    return argparse.Namespace(**{**values, "token": "tok", **overrides})


@pytest.fixture
async def e2b_app():
    protocol = protocol_class("e2b")(Sandboxes(_Counting()), "tok")
    await protocol.sandboxes.open()
    await protocol.startup()
    app = make_app(protocol, EmulatorState.from_args(_args(backend="stub")))
    async with TestClient(TestServer(app)) as client:
        yield client, protocol
    await protocol.shutdown()
    await protocol.sandboxes.close()


async def test_refusals_auth_faults_and_the_admin_api_through_the_middleware(e2b_app):
    client, protocol = e2b_app
    key = {"X-API-KEY": "tok"}
    assert (await client.post("/v2/sandboxes", json={"templateID": "base"})).status == 401
    made = await client.post("/v2/sandboxes", json={"templateID": "base"}, headers=key)
    assert made.status == 201
    sandbox_id = (await made.json())["sandboxID"]
    assert (await (await client.get("/_emulator/sandboxes")).json()) == {"sandboxes": [sandbox_id]}
    gone = await client.get("/sandboxes/nope", headers=key)
    assert gone.status == 404 and (await gone.json())["code"] == 404  # raised deep as Refused
    bad = await client.post(f"/sandboxes/{sandbox_id}/pause", data="{", headers=key)
    assert bad.status == 400 and (await bad.json())["message"] == "Invalid request body"
    queued = await client.post("/_emulator/faults", json={"status": 429, "match": "/v2/"})
    assert queued.status == 200
    limited = await client.get("/v2/sandboxes", headers=key)
    assert limited.status == 429 and limited.headers["Retry-After"] == "1"
    assert (await limited.json()) == {"code": 429, "message": "injected fault 429"}
    calls = (await (await client.get("/_emulator/log")).json())["calls"]
    assert [c["fault"] for c in calls][-1] == "429" and all("t" in c for c in calls)
    assert (await client.delete(f"/sandboxes/{sandbox_id}", headers=key)).status == 204
    assert protocol.sandboxes.live() == []


async def test_a_lifetime_that_passes_ends_the_sandbox(e2b_app):
    client, protocol = e2b_app
    key = {"X-API-KEY": "tok"}
    made = await client.post(
        "/v2/sandboxes", json={"templateID": "base", "timeout": 0}, headers=key
    )
    assert made.status == 201
    for _ in range(40):
        if not protocol.sandboxes.live():
            break
        await asyncio.sleep(0.1)
    assert protocol.sandboxes.live() == []
