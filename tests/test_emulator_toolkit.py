"""The emulator toolkit (bench/emulators/toolkit.py) on the stub backend: no root, no process."""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from bench.emulators import PROTOCOLS, protocol_class
from bench.emulators import toolkit as kit
from bench.emulators.cli import BEHAVIOUR
from bench.emulators.toolkit import (
    Box,
    EmulatorState,
    Job,
    Misbehaving,
    Protocol,
    Sandboxes,
    SemanticFaults,
    Snapshot,
    make_app,
)
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
    held = await (await client.get("/_emulator/sandboxes")).json()
    assert held == {"sandboxes": [sandbox_id], "checkpoints": []}
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
    # skip: the first matching call passes, the second gets the fault
    await client.post("/_emulator/faults", json={"status": 503, "match": "/v2/", "skip": 1})
    assert (await client.get("/v2/sandboxes", headers=key)).status == 200
    assert (await client.get("/v2/sandboxes", headers=key)).status == 503
    # a queued fault dropped before any call meets it
    await client.post("/_emulator/faults", json={"status": 503, "match": "/v2/"})
    assert (await client.delete("/_emulator/faults")).status == 200
    assert (await client.get("/v2/sandboxes", headers=key)).status == 200
    for wrong in ({"status": 503, "skip": -1}, {"status": 503, "count": 0}, {"kind": "x"}):
        assert (await client.post("/_emulator/faults", json=wrong)).status == 400
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


# -- the helpers the protocols share --------------------------------------------------------------


class _Blocking(_Counting):
    """The stub, where a command naming ``block`` runs until the toolkit's kill script (sent
    when its call is cancelled) ends it, as a signal would (exit -9)."""

    def __init__(self) -> None:
        super().__init__()
        self.killed = asyncio.Event()

    async def exec(self, sandbox, command, *, timeout_s):
        if "block" in command:
            await asyncio.wait_for(self.killed.wait(), timeout_s)
            return ExecResult(exit_code=-9, stdout=b"", stderr=b"")
        if any("kill -s KILL" in part for part in command):
            self.killed.set()
        return await super().exec(sandbox, command, timeout_s=timeout_s)


async def _running_box(backend: _Counting, semantics: SemanticFaults | None = None):
    boxes = Misbehaving(backend, semantics or SemanticFaults())
    await boxes.open()
    box = boxes.add(Box(id="a"))
    await boxes.boot(box)
    return boxes, box


async def test_a_job_runs_in_the_background_and_a_kill_or_the_shutdown_ends_it():
    boxes, box = await _running_box(_Blocking())
    protocol = Protocol(boxes, "tok")
    await protocol.startup()
    done = protocol.run_job(box, Job(id="1"), ["true"])
    assert (await done.wait()) is not None and done.result.exit_code == 0
    assert done.ended and done.error is None and not protocol.jobs
    blocked = protocol.run_job(box, Job(id="2"), ["block"])
    await asyncio.sleep(0.05)
    assert not blocked.ended and protocol.jobs == {blocked}
    await protocol.kill_jobs([blocked, done])
    assert blocked.ended and blocked.result is None
    assert isinstance(blocked.error, asyncio.CancelledError) and not protocol.jobs
    unborn = protocol.run_job(box, Job(id="3"), ["block"])
    await protocol.kill_jobs([unborn])  # killed before it began: it ends all the same
    assert unborn.ended and await unborn.wait() is None and not protocol.jobs
    boxes.backend.killed.clear()
    left = protocol.run_job(box, Job(id="4"), ["block"])
    await asyncio.sleep(0.05)
    await protocol.shutdown()  # kills what still runs, so it never waits for a deadline
    assert left.ended and left.result is None and boxes.backend.killed.is_set()
    await boxes.close()


async def test_unless_kills_the_work_when_its_client_goes_first():
    boxes, box = await _running_box(_Blocking())
    gone = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, gone.set_result, None)
    work = boxes.exec(box, ["block"], timeout_s=30, kill_on_cancel=True)
    assert await kit.unless(work, gone) is None and boxes.backend.killed.is_set()
    still = asyncio.get_running_loop().create_future()
    result = await kit.unless(boxes.exec(box, ["true"], timeout_s=5), still)
    assert result is not None and result.exit_code == 0 and not still.done()
    with pytest.raises(NotFound):
        await kit.unless(boxes.exec(Box(id="never-booted"), ["true"], timeout_s=5), still)
    await boxes.close()


async def test_changes_wake_waiters_and_a_wait_can_run_out():
    changes = kit.Changes()
    state = {"n": 0}
    assert not await changes.until(lambda: state["n"] == 1, timeout_s=0.05)
    waiting = asyncio.ensure_future(changes.until(lambda: state["n"] == 2))
    for n in (1, 2):
        await asyncio.sleep(0.01)
        state["n"] = n
        changes.notify()
    assert await asyncio.wait_for(waiting, 1)


@given(
    keys=st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=30),
    limit=st.integers(min_value=1, max_value=7),
)
def test_following_the_cursors_yields_every_item_once_in_order(keys, limit):
    ordered, offset = [], 0
    while offset is not None:
        page, offset = kit.offset_page(keys, offset, limit)
        assert len(page) <= limit and (offset is None or page)
        ordered += page
    assert ordered == keys
    seen, after = [], ""
    while after is not None:
        page, after = kit.keyset_page(reversed(keys), lambda k: k, after, limit)
        assert len(page) <= limit
        seen += page
    assert seen == sorted(keys)


def test_output_framing_exit_status_and_deadlines():
    result = ExecResult(exit_code=-9, stdout=b"abcde", stderr=b"")
    assert kit.outputs(result, 2) == [("stdout", b"ab"), ("stdout", b"cd"), ("stdout", b"e")]
    assert kit.outputs(ExecResult(exit_code=0, stdout=b"", stderr=b"x")) == [("stderr", b"x")]
    assert kit.chunks("", 3) == [] and kit.chunks("abcd", 3) == ["abc", "d"]
    assert kit.exit_status(-9) == 137 == kit.KILLED and kit.exit_status(3) == 3
    assert kit.deadline_s(1500, unit_s=0.001) == 1.5
    assert kit.deadline_s(None) == kit.deadline_s(0) == kit.deadline_s("5") == kit.NO_DEADLINE_S
    assert kit.strings({1: True}) == {"1": "True"} and kit.text(b"a\xff") == "a\ufffd"
    assert kit.resolve("x/../y", "/home/u") == "/home/u/y" and kit.resolve("/t/", "/h") == "/t"


async def test_destroy_says_whether_the_sandbox_is_gone():
    semantics = SemanticFaults(modes=frozenset({"destroy-leaks"}))
    boxes, box = await _running_box(_Counting(), semantics)
    assert await boxes.destroy(box) is False and boxes.get("a") is box  # spared, still listed
    assert await boxes.destroy(box) is True and boxes.live() == []
    await boxes.close()


async def test_capture_drops_a_snapshot_it_could_not_take_and_a_held_box_goes_with_its_snapshot():
    boxes, box = await _running_box(_Counting())
    kept = await boxes.capture(Snapshot(id="s1", source_id="a", names=["n"]), box, usable=True)
    assert kept.state == "active" and boxes.find_snapshot("n") is kept
    newer = await boxes.capture(Snapshot(id="s2", source_id="a", names=["n"]), box)
    assert boxes.find_snapshot("n") is newer and kept.names == []  # a name moves
    held = await boxes.capture(Snapshot(id="s3", source_id="a"), box, hold=True)
    assert held.held is box and box.frozen
    await boxes.drop_snapshot(held)
    assert held.held is None and boxes.live() == [] and boxes.backend.held()[0] == 0
    other = boxes.add(Box(id="b"))
    await boxes.boot(other)
    boxes.backend.checkpoint = _fails
    with pytest.raises(ProviderError, match="disk full"):
        await boxes.capture(Snapshot(id="s4", source_id="b"), other)
    assert boxes.find_snapshot("s4") is None
    await boxes.close()


async def test_a_snapshot_dropped_before_its_take_began_leaves_no_copy():
    """A protocol that lists a snapshot while pending (Daytona) registers it and takes it in
    the background: a delete handled before that take began (in the same turn of the loop)
    must not leave the copy the take then makes behind every record of it."""
    boxes, box = await _running_box(_Counting())
    snap = boxes.add_snapshot(Snapshot(id="s1", source_id="a", names=["n"]))
    taking = asyncio.ensure_future(boxes.take(snap, box))  # scheduled, not begun
    await boxes.drop_snapshot(snap)
    await taking
    assert boxes.find_snapshot("n") is None and boxes.backend.held() == (1, 0)
    await boxes.close()


async def _fails(sandbox):
    raise ProviderError("disk full")


async def test_a_usable_capture_under_snapshot_pending_fails_once_the_sandbox_is_wanted():
    semantics = SemanticFaults(modes=frozenset({"snapshot-pending"}))
    boxes, box = await _running_box(_Counting(), semantics)

    async def snapshot() -> None:
        async with box.lock:
            await boxes.capture(Snapshot(id="s", source_id="a"), box, usable=True)

    taking = asyncio.ensure_future(snapshot())
    await asyncio.sleep(0.2)
    assert not taking.done()
    protocol = Protocol(boxes, "tok")
    assert await protocol.destroy(box)  # waits for the lock, which the stalled call gives up
    with pytest.raises(ProviderError, match="never completed"):
        await taking
    assert boxes.find_snapshot("s") is None and boxes.live() == []
    await boxes.close()


async def test_a_stop_that_keeps_nothing_starts_anew_and_a_gone_box_does_not_start():
    boxes, box = await _running_box(_Counting())
    await boxes.write_file(box, "/f", b"1")
    await boxes.stop(box, keep=False)
    assert box.local is None and box.parked is None
    await boxes.start(box, SandboxSpec(), home="/home/x")
    with pytest.raises(NotFound):
        await boxes.read_file(box, "/f")  # a new sandbox: the files went with the stop
    box.extend(None)
    assert box.end_at is None
    await boxes.stop(box)
    await boxes.destroy(box)
    with pytest.raises(NotFound, match="gone"):
        await boxes.start(box)
    assert boxes.backend.held() == (0, 0)
    await boxes.close()


class _Toy(Protocol):
    """The protocol helpers over HTTP: bodies, fields, lookups, query integers, JSON answers,
    self-authenticated paths and malformed answers by path."""

    name = "toy"
    self_authenticated = ("/open/",)
    malformed_answers = (("/raw", kit.undecodable_gzip),)

    def error(self, status, message):
        return web.json_response({"error": message}, status=status)

    def routes(self, router):
        router.add_post("/things", self.make)
        router.add_get("/things", self.page)
        router.add_get("/things/{id}", self.one)
        router.add_get("/open/x", self.open)
        router.add_get("/raw", self.open)

    async def make(self, request):
        body = await self.body(request)
        name = self.required(body, "name")
        tags, env = self.objects(body, tags={}, env={"A": "1"})
        return {"name": name, "tags": kit.strings(tags), "env": env}

    async def page(self, request):
        limit, offset = self.query_ints(request, limit=2, cursor=0)
        return [limit, offset]

    async def one(self, request):
        box = self.lookup(Box, request.match_info["id"], "no such thing")
        return {"id": box.id}

    async def open(self, request):
        return {"open": True}


async def test_protocol_helpers_answer_the_apis_own_refusals():
    boxes = Sandboxes(_Counting())
    protocol = _Toy(boxes, "tok")
    await boxes.open()
    await protocol.startup()
    boxes.add(Box(id="b1"))
    app = make_app(protocol, EmulatorState.from_args(_args(backend="stub")))
    auth = {"Authorization": "Bearer tok"}
    async with TestClient(TestServer(app)) as client:

        async def call(method, path, **kw):
            answer = await client.request(method, path, headers=auth, **kw)
            return answer.status, await answer.json()

        made = await call("POST", "/things", json={"name": "n", "tags": {"k": 2}, "env": None})
        assert made == (200, {"name": "n", "tags": {"k": "2"}, "env": {"A": "1"}})
        assert await call("POST", "/things", data="[") == (400, {"error": "invalid JSON body"})
        assert await call("POST", "/things", json={}) == (400, {"error": "name is required"})
        bad = await call("POST", "/things", json={"name": "n", "env": []})
        assert bad == (400, {"error": "tags and env must be objects"})
        assert await call("GET", "/things?limit=5") == (200, [5, 0])
        refused = (400, {"error": "limit and cursor must be integers"})
        assert await call("GET", "/things?cursor=x") == refused
        assert await call("GET", "/things/b1") == (200, {"id": "b1"})
        assert await call("GET", "/things/nope") == (404, {"error": "no such thing"})
        assert (await client.get("/things")).status == 401
        assert (await client.get("/open/x")).status == 200  # checks its own credentials
        await client.post("/_emulator/faults", json={"kind": "malformed", "count": 2})
        raw = await client.get("/raw", headers=auth)
        assert raw.headers["Content-Encoding"] == "gzip"
        with pytest.raises(aiohttp.ClientPayloadError):
            await raw.read()
        other = await client.get("/things", headers=auth)
        assert await other.read() == b'{"injected": "malformed'
    await protocol.shutdown()
    await boxes.close()
