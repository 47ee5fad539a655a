"""``sandbox-bench emulate``: where each emulator listens, what to export, and a clean stop.

The stub backend needs no root, so most of these run anywhere; the one that checks that a
stop destroys real sandboxes uses the local backend (root).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.emulators import PROTOCOLS
from bench.emulators.control import HEADER_RE
from providers.local.provider import SANDBOX_ID
from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[1]

#: What each emulator prints after its header line; ``{url}`` is its URL.
EXPORTS = {
    "e2b": [
        "export E2B_API_KEY=tok",
        "export E2B_API_URL={url}",
        "export E2B_SANDBOX_URL={url}",
    ],
    "daytona": [
        "export DAYTONA_API_KEY=tok",
        "export DAYTONA_API_URL={url}/api",
        "export DAYTONA_USE_DEPRECATED_POLLING=true",
    ],
    "sprites": [
        "export SPRITES_TOKEN=tok",
        "export SPRITES_API_URL={url}",
        "export SPRITES_CLIENT_SIGNALS=off",
    ],
    "runloop": ["export RUNLOOP_API_KEY=tok", "export RUNLOOP_BASE_URL={url}"],
    "codesandbox": [
        "export TOGETHER_API_KEY=tok",
        "export TOGETHER_BASE_URL={url}",
    ],
    "vercel": [
        "export VERCEL_TOKEN=tok",
        "export VERCEL_TEAM_ID=team_emulated",
        "export VERCEL_PROJECT_ID=prj_emulated",
        "export VERCEL_SANDBOX_API_URL={url}/api",
    ],
    "modal": [
        "export MODAL_SERVER_URL={url}",
        "export MODAL_TOKEN_ID=ak-sandbox-bench",
        "export MODAL_TOKEN_SECRET=tok",
        "export MODAL_DISABLE_API_PROXY=1",
    ],
    "northflank": [
        "export NORTHFLANK_API_TOKEN=tok",
        "export NORTHFLANK_API_BASE_URL={url}",
        "export NORTHFLANK_PROJECT_ID=prj-emulated",
    ],
}


async def _emulate(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "emulate", *argv,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().rstrip("\n")


async def _blocks(proc: asyncio.subprocess.Process, names: list[str]) -> dict[str, dict]:
    """Each emulator's header facts and export lines, in order, then the ready line."""
    found = {}
    for name in names:
        header = await _line(proc)
        match = HEADER_RE.match(header)
        assert match and match["name"] == name, header
        pid = int(header.split("(pid ", 1)[1].split(",", 1)[0])
        exports = [await _line(proc) for _ in EXPORTS[name]]
        found[name] = {"url": match["url"], "pid": pid, "exports": exports}
    assert (await _line(proc)).startswith("# ready; Ctrl-C or SIGTERM stops")
    return found


async def _admin(url: str, what: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_emulator/{what}") as r:
        r.raise_for_status()
        return await r.json()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _stopped(proc: asyncio.subprocess.Process, sig: int) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), 120)


@pytest.mark.parametrize("name", sorted(EXPORTS))
async def test_one_emulator_prints_its_url_and_export_lines_and_stops_on_sigterm(tmp_path, name):
    proc = await _emulate(name, "--backend", "stub", "--token", "tok", "--state-dir", str(tmp_path))
    try:
        block = (await _blocks(proc, [name]))[name]
        url = block["url"]
        assert url.startswith("http://127.0.0.1:") and block["pid"] == proc.pid
        assert block["exports"] == [line.format(url=url) for line in EXPORTS[name]]
        assert (await _admin(url, "config"))["backend"] == "stub"
        assert (await _admin(url, "sandboxes")) == {"sandboxes": [], "checkpoints": []}
    finally:
        assert await _stopped(proc, signal.SIGTERM) == 0


async def test_all_runs_every_emulator_in_its_own_process_and_ctrl_c_stops_them(tmp_path):
    proc = await _emulate(
        "all", "--backend", "stub", "--token", "tok", "--state-dir", str(tmp_path)
    )
    try:
        blocks = await _blocks(proc, list(PROTOCOLS))
        pids = {b["pid"] for b in blocks.values()}
        assert len(pids) == len(PROTOCOLS) and proc.pid not in pids
        assert all(_alive(pid) for pid in pids)
        for name, block in blocks.items():
            assert block["exports"] == [x.format(url=block["url"]) for x in EXPORTS[name]]
            assert (await _admin(block["url"], "sandboxes")) == {"sandboxes": [], "checkpoints": []}
    finally:
        assert await _stopped(proc, signal.SIGINT) == 0
    assert not any(_alive(pid) for pid in pids)


async def test_when_one_emulator_dies_the_others_are_stopped_and_the_exit_is_1(tmp_path):
    proc = await _emulate("e2b,sprites", "--backend", "stub", "--state-dir", str(tmp_path))
    try:
        blocks = await _blocks(proc, ["e2b", "sprites"])
        os.kill(blocks["sprites"]["pid"], signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 120) == 1
        assert proc.stderr is not None
        assert "emulator sprites stopped unexpectedly" in (await proc.stderr.read()).decode()
        assert not _alive(blocks["e2b"]["pid"])
    finally:
        await _stopped(proc, signal.SIGTERM)


async def test_emulators_whose_starter_is_killed_stop_by_themselves(tmp_path):
    proc = await _emulate("e2b,daytona", "--backend", "stub", "--state-dir", str(tmp_path))
    try:
        pids = [b["pid"] for b in (await _blocks(proc, ["e2b", "daytona"])).values()]
        proc.kill()  # SIGKILL: the starter cleans nothing up itself
        await proc.wait()
        for _ in range(100):
            if not any(_alive(pid) for pid in pids):
                break
            await asyncio.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        await _stopped(proc, signal.SIGTERM)


async def test_a_stop_destroys_every_sandbox_the_emulators_hold(tmp_path):
    needs_root()
    proc = await _emulate("all", "--token", "tok", "--state-dir", str(tmp_path))
    try:
        urls = {
            name: block["url"] for name, block in (await _blocks(proc, list(PROTOCOLS))).items()
        }
        async with aiohttp.ClientSession() as session:
            made = [
                session.post(f"{urls['e2b']}/v2/sandboxes", headers={"X-API-KEY": "tok"},
                             json={"templateID": "base"}),
                session.post(f"{urls['sprites']}/v1/sprites", json={"name": "kept-alive"},
                             headers={"Authorization": "Bearer tok"}),
                session.post(f"{urls['daytona']}/api/sandbox", json={},
                             headers={"Authorization": "Bearer tok"}),
                session.post(f"{urls['runloop']}/v1/devboxes/create_and_await_running",
                             json={}, headers={"Authorization": "Bearer tok"}),
                session.post(f"{urls['codesandbox']}/v1/sandboxes", headers={"Authorization":
                             "Bearer tok"}, json={"snapshot_alias": "sandbox-bench@base",
                             "cpu": 1, "memory_bytes": 2**30}),
                session.post(f"{urls['vercel']}/api/v3/sandboxes?teamId=team_emulated",
                             json={"projectId": "prj_emulated"},
                             headers={"Authorization": "Bearer tok"}),
                session.post(f"{urls['northflank']}/v1/projects/p/services/deployment",
                             headers={"Authorization": "Bearer tok"}, json={"name": "kept-alive",
                             "billing": {"deploymentPlan": "nf-compute-20"}, "deployment":
                             {"instances": 1, "external": {"imagePath": "ubuntu:24.04"}}}),
            ]  # fmt: skip
            for call in made:
                async with call as answer:
                    assert answer.status in (200, 201), await answer.text()
        await _modal_sandbox(urls["modal"], "tok")
        for name, url in urls.items():
            for _ in range(100):  # daytona and vercel boot in the background
                if len(_local_sandboxes(tmp_path / name)) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len((await _admin(url, "sandboxes"))["sandboxes"]) == 1, name
            assert len(_local_sandboxes(tmp_path / name)) == 1, name
    finally:
        assert await _stopped(proc, signal.SIGTERM) == 0
    for name in PROTOCOLS:
        assert _local_sandboxes(tmp_path / name) == [], name


async def _modal_sandbox(url: str, token: str) -> None:
    """One sandbox through Modal's gRPC control plane, with the SDK's own message types."""
    from grpclib.client import Channel
    from modal_proto import api_grpc, api_pb2

    host, port = url.removeprefix("http://").split(":")
    channel = Channel(host, int(port))
    try:
        stub, md = api_grpc.ModalClientStub(channel), {"x-modal-token-secret": token}
        app = await stub.AppGetOrCreate(
            api_pb2.AppGetOrCreateRequest(app_name="kept-alive", object_creation_type=1),
            metadata=md,
        )
        image = await stub.ImageGetOrCreate(
            api_pb2.ImageGetOrCreateRequest(app_id=app.app_id, image=api_pb2.Image()), metadata=md
        )
        definition = api_pb2.Sandbox(image_id=image.image_id)
        await stub.SandboxCreateV2(
            api_pb2.SandboxCreateV2Request(app_id=app.app_id, definition=definition), metadata=md
        )
    finally:
        channel.close()


def _local_sandboxes(state: Path) -> list[str]:
    root = state / "local" / "sandboxes"
    return (
        sorted(e.name for e in root.iterdir() if SANDBOX_ID.match(e.name)) if root.is_dir() else []
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "no emulator for 'nope'"),
        (["e2b,e2b"], "name each provider once"),
        (["e2b", "--fault-rate", "2"], "--fault-rate: must be between 0 and 1"),
        (["e2b", "--fault-kinds", "boom"], "unknown fault kind 'boom'"),
        (["e2b", "--latency-median-ms", "5"], "needs both median and p99"),
        (["e2b", "--port", "70000"], "--port: must be between 0 and 65535"),
        (["all", "--port", "65535"], "do not all exist"),
    ],
)
def test_bad_options_are_refused_in_one_line_with_exit_2(argv, message):
    # COLUMNS: bench/cli.py's argparse errors go through rich, which wraps at the terminal's
    # width (80 without one); the line itself is one line.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "emulate", *argv, "--backend", "stub"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


async def test_a_port_in_use_is_refused_in_one_line_with_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await _emulate("e2b", "--backend", "stub", "--port", str(port))
        code = await asyncio.wait_for(proc.wait(), 60)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
    assert code == 2 and f"cannot listen on port {port}" in err and err.count("\n") == 1, err


def test_the_export_lines_quote_what_a_shell_would_split():
    from bench.emulators.toolkit import announce

    lines = announce("e2b", "http://127.0.0.1:1", "a b'c", backend="stub", state_dir=Path("/x"))
    assert lines[1] == "export E2B_API_KEY='a b'\"'\"'c'"
    assert json.dumps(lines)  # plain text, no control characters
