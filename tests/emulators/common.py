"""What every loopback provider emulator shares.

An emulator is an aiohttp server on 127.0.0.1 speaking one provider's wire protocol, exactly as
that provider's pinned SDK expects it. Each emulated sandbox is a real ``local`` provider
sandbox, so commands really run and checkpoints really restore.

Every emulator:

* runs as its own process: ``python -m tests.emulators.<name> --port 0 --state-dir D
  [--latency-ms X] [--token T]`` and prints ``LISTENING http://127.0.0.1:<port>`` once ready;
* adds ``--latency-ms`` to every provider call (not to the admin endpoints below);
* answers admin endpoints under ``/_emulator/``:
  ``GET /_emulator/sandboxes`` -> ``{"sandboxes": [ids of live sandboxes]}``;
  ``POST /_emulator/faults`` ``{"status": 429, "count": 1, "match": "/sandboxes"}`` -> the next
  ``count`` provider calls whose path contains ``match`` fail with ``status`` and the
  provider's own error body (429 carries ``Retry-After: 1``);
* destroys every sandbox it holds when it gets SIGTERM or SIGINT.

Tests start emulators with :func:`running` and stop them by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

ADMIN_PREFIX = "/_emulator/"

#: Builds the provider-specific error response for an injected or real failure.
ErrorResponder = Callable[[int, str], web.Response]


@dataclass
class Fault:
    status: int
    count: int
    match: str = ""


@dataclass
class EmulatorState:
    """Per-process state shared by an emulator's handlers."""

    latency_s: float = 0.0
    token: str = "test-token"
    faults: list[Fault] = field(default_factory=list)
    live: Callable[[], list[str]] = lambda: []

    def take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.match in path and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)


def make_app(state: EmulatorState, error: ErrorResponder) -> web.Application:
    """An aiohttp app with the latency/fault middleware and the admin endpoints mounted."""

    @web.middleware
    async def emulate(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]):
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        if state.latency_s > 0:
            await asyncio.sleep(state.latency_s)
        fault = state.take_fault(request.path)
        if fault is not None:
            response = error(fault.status, f"injected fault {fault.status}")
            if fault.status == 429:
                response.headers["Retry-After"] = "1"
            return response
        return await handler(request)

    async def list_live(request: web.Request) -> web.Response:
        return web.json_response({"sandboxes": state.live()})

    async def add_fault(request: web.Request) -> web.Response:
        body = await request.json()
        state.faults.append(
            Fault(
                status=int(body["status"]),
                count=int(body.get("count", 1)),
                match=body.get("match", ""),
            )
        )
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[emulate], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_get(ADMIN_PREFIX + "sandboxes", list_live)
    app.router.add_post(ADMIN_PREFIX + "faults", add_fault)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="loopback provider emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--token", default="test-token")
    return parser.parse_args(argv)


async def serve(
    app: web.Application, port: int, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    """Serve on 127.0.0.1 until SIGTERM/SIGINT, then run ``on_shutdown`` (destroy sandboxes)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sockets = site._server.sockets if site._server else []  # aiohttp exposes no public getter
    bound = sockets[0].getsockname()[1] if sockets else port
    print(f"LISTENING http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    try:
        await on_shutdown()
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Emulator:
    """A running emulator process, as seen by a test."""

    name: str
    url: str
    pid: int
    token: str

    async def inject(self, status: int, *, count: int = 1, match: str = "") -> None:
        await _admin_post(self.url, "faults", {"status": status, "count": count, "match": match})

    async def live_sandboxes(self) -> list[str]:
        data = await _admin_get(self.url, "sandboxes")
        return list(data["sandboxes"])


async def _admin_get(url: str, what: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{url}{ADMIN_PREFIX}{what}") as r:
        r.raise_for_status()
        return await r.json()


async def _admin_post(url: str, what: str, body: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}{ADMIN_PREFIX}{what}", data=json.dumps(body)) as r,
    ):
        r.raise_for_status()
        return await r.json()


@contextlib.asynccontextmanager
async def running(
    name: str, state_dir: Path, *, latency_ms: float = 0.0, token: str = "test-token"
) -> AsyncIterator[Emulator]:
    """Start ``tests.emulators.<name>`` as a subprocess; stop it by pid on exit."""
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"tests.emulators.{name}",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--latency-ms",
        str(latency_ms),
        "--token",
        token,
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        text = line.decode().strip()
        if not text.startswith("LISTENING "):
            raise RuntimeError(f"emulator {name} did not start (said {text!r})")
        yield Emulator(name=name, url=text.split(" ", 1)[1], pid=proc.pid, token=token)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
