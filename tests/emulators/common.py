"""What every loopback provider emulator shares.

An emulator is an aiohttp server on 127.0.0.1 speaking one provider's wire protocol, exactly as
that provider's pinned SDK expects it. Each emulated sandbox is a real ``local`` provider
sandbox, so commands really run and checkpoints really restore.

Every emulator:

* runs as its own process: ``python -m tests.emulators.<name> --port 0 --state-dir D
  [--latency-ms X] [--token T] [options below]`` and prints ``LISTENING http://127.0.0.1:<port>``
  once ready;
* adds latency to every provider call (not to the admin endpoints below): ``--latency-ms``
  (constant), plus a seeded lognormal draw (``--latency-median-ms``, ``--latency-p99-ms``),
  plus server-wide stalls (``--stall-prob``: the share of time the server is frozen,
  ``--stall-ms``: the length of one freeze). The model and its true percentiles are defined once,
  in :mod:`bench.calibration`. ``--latency-match "POST /v2/sandboxes"`` limits all of it to the
  calls with that method and exactly that path (``*`` at the end: that prefix), e.g. to give a
  known latency to creates only. ``--latency-mode added`` (the default) holds a call for its
  latency and then handles it, so the server's time is the latency plus its own work;
  ``--latency-mode total`` handles the call at once and holds its answer (the moment its
  headers would be sent) until arrival + latency, so the server's time from arrival to answer
  is the latency itself whenever its own work fits inside it: a ground truth that does not
  move with the emulator's load. A faulted call is always held first, as in ``added``;
* injects faults on a seeded share of provider calls: ``--fault-rate R`` (0..1) and
  ``--fault-kinds 500,503,429,reset,hang,malformed`` (the default: all of them, drawn with equal
  probability). The kinds, each **before** the call reaches the emulated provider (so the
  operation is never performed, whatever the client concludes):

  - ``500``, ``503``, ``429``: that status with the provider's own error body (429 carries
    ``Retry-After: 1``);
  - ``reset``: the TCP connection is reset (RST) without an answer;
  - ``hang``: no answer for ``--hang-s`` (default 30 s, meant to be longer than the client's
    timeout), then a reset; a hang ends early when the emulator shuts down, so it always stops;
  - ``malformed``: 200 with a body the provider's SDK cannot read for that endpoint (each
    emulator passes its own :data:`Malformer`; the default is truncated JSON).

  ``--seed S`` seeds the fault draws, the latency draws and the stall schedule (three separate
  generators), so the same sequence of calls meets the same faults and latencies; with
  concurrent clients, which call comes first is up to the scheduler;
* ``--backend stub`` replaces the local sandboxes with :class:`StubBackend` (no processes: every
  command exits 0 with no output, files are kept in memory), for runs that measure the harness
  against a known latency and nothing else; the default is ``local``;
* answers admin endpoints under ``/_emulator/`` (never delayed, never faulted):
  ``GET /_emulator/sandboxes`` -> ``{"sandboxes": [ids of live sandboxes]}``;
  ``POST /_emulator/faults`` ``{"status": 429, "count": 1, "match": "/sandboxes"}`` (or
  ``{"kind": "reset", ...}``) -> the next ``count`` provider calls whose path contains
  ``match`` get that fault (before any random one);
  ``GET /_emulator/config`` -> ``{"latency": {...}, "latency_match", "latency_mode",
  "faults": {"rate", "kinds", "hang_s"}, "seed", "backend"}``; ``POST /_emulator/config`` with
  any of ``latency`` (a whole :class:`bench.calibration.LatencyModel`), ``latency_match``,
  ``latency_mode``, ``faults`` (``rate``, ``kinds``, ``hang_s``) and
  ``seed`` (re-seeds all three generators) changes them at run time;
  ``GET /_emulator/log`` -> ``{"calls": [{"t", "at", "method", "path", "added_s", "fault",
  "handled_s", "answered_s"}]}``, every provider call since start (or since
  ``DELETE /_emulator/log``): its arrival (``t``: seconds since the emulator started;
  ``at``: the host's monotonic clock, which ``time.perf_counter`` in another process on Linux
  reads too), the latency it was given (draw plus any stall), its fault if any, when the
  handler returned (``handled_s``, seconds after arrival; for a streamed answer, when the
  stream ended) and when its answer's headers went out (``answered_s``, seconds after
  arrival; absent when no answer was sent);
* destroys every sandbox it holds when it gets SIGTERM or SIGINT.

Tests start emulators with :func:`running` and stop them by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import io
import json
import os
import random
import secrets
import shlex
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.calibration import LatencyModel, StallSchedule
from providers.base import (
    OPTIONAL_OPS,
    REQUIRED_OPS,
    Capabilities,
    CheckpointCaptures,
    CheckpointRef,
    Command,
    ExecResult,
    Op,
    PauseKind,
    Provider,
    RestoreTarget,
    Sandbox,
    SandboxSpec,
)
from providers.errors import NotFound

ADMIN_PREFIX = "/_emulator/"
#: Every fault kind, in the order ``--fault-kinds`` lists them by default.
FAULT_KINDS = ("500", "503", "429", "reset", "hang", "malformed")
LATENCY_MODES = ("added", "total")
BACKENDS = ("local", "stub")
#: How many provider calls ``GET /_emulator/log`` keeps (oldest dropped first).
LOG_LIMIT = 200_000

#: Builds the provider-specific error response for an injected or real failure.
ErrorResponder = Callable[[int, str], web.Response]
#: Builds a 200 answer the provider's SDK cannot read, for the endpoint of ``request``.
Malformer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    kind: str
    count: int
    match: str = ""


def fault_kind(value: object) -> str:
    """A fault kind: ``reset``, ``hang``, ``malformed`` or an HTTP error status (400-599)."""
    kind = str(value).strip().lower()
    if kind in FAULT_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599):
        return kind
    raise ValueError(
        f"unknown fault kind {value!r} (known: reset, hang, malformed, or a status 400-599)"
    )


def _seeded(seed: int, stream: str) -> random.Random:
    return random.Random(f"{stream}:{seed}")


@dataclass
class EmulatorState:
    """Per-process state shared by an emulator's handlers."""

    latency_s: float = 0.0
    token: str = "test-token"
    faults: list[Fault] = field(default_factory=list)
    live: Callable[[], list[str]] = lambda: []
    #: The whole latency model; ``latency_s`` is its constant part (kept for old callers).
    latency: LatencyModel | None = None
    #: ``"METHOD /path"`` (``*`` at the end for a prefix): only those calls get latency.
    latency_match: str = ""
    #: ``"added"``: a call is held for its draw, then handled, so the server's time is the draw
    #: plus its own work. ``"total"``: the call is handled at once and its answer held until
    #: arrival + draw, so the server's time is exactly the draw (when its own work fits in it).
    latency_mode: str = "added"
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    hang_s: float = 30.0
    seed: int = 0
    backend: str = "local"
    origin_s: float = field(default_factory=time.monotonic)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_LIMIT))
    #: Per connection (transport), when the bytes of its current request began to arrive.
    wire_arrivals: dict[Any, float] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.latency_mode not in LATENCY_MODES:
            raise ValueError(f"latency mode must be one of {', '.join(LATENCY_MODES)}")
        if self.latency is None:
            self.latency = LatencyModel(fixed_s=self.latency_s)
        self.set_faults(rate=self.fault_rate, kinds=self.fault_kinds, hang_s=self.hang_s)
        self.reseed(self.seed)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmulatorState:
        """The state ``parse_args`` describes (every emulator's ``_main`` uses this)."""
        latency = LatencyModel(
            fixed_s=args.latency_ms / 1000.0,
            median_s=args.latency_median_ms / 1000.0 if args.latency_median_ms else None,
            p99_s=args.latency_p99_ms / 1000.0 if args.latency_p99_ms else None,
            stall_probability=args.stall_prob,
            stall_s=args.stall_ms / 1000.0,
        )
        return cls(
            latency_s=latency.fixed_s,
            token=args.token,
            latency=latency,
            latency_match=args.latency_match,
            latency_mode=args.latency_mode,
            fault_rate=args.fault_rate,
            fault_kinds=tuple(args.fault_kinds),
            hang_s=args.hang_s,
            seed=args.seed,
            backend=args.backend,
        )

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self._fault_rng = _seeded(self.seed, "faults")
        self._latency_rng = _seeded(self.seed, "latency")
        self.set_latency(self.latency or LatencyModel())

    def set_latency(self, model: LatencyModel) -> None:
        self.latency = model
        self.latency_s = model.fixed_s
        self.stalls = StallSchedule(model, _seeded(self.seed, "stalls"), time.monotonic())

    def set_faults(
        self,
        *,
        rate: float | None = None,
        kinds: Sequence[str] | None = None,
        hang_s: float | None = None,
    ) -> None:
        if rate is not None:
            if not 0 <= float(rate) <= 1:
                raise ValueError("the fault rate must be in [0, 1]")
            self.fault_rate = float(rate)
        if kinds is not None:
            chosen = tuple(fault_kind(k) for k in kinds)
            if not chosen:
                raise ValueError("name at least one fault kind")
            self.fault_kinds = chosen
        if hang_s is not None:
            if not float(hang_s) > 0:
                raise ValueError("hang_s must be > 0")
            self.hang_s = float(hang_s)

    def config(self) -> dict[str, Any]:
        assert self.latency is not None
        return {
            "latency": self.latency.to_dict(),
            "latency_match": self.latency_match,
            "latency_mode": self.latency_mode,
            "faults": {
                "rate": self.fault_rate,
                "kinds": list(self.fault_kinds),
                "hang_s": self.hang_s,
            },
            "seed": self.seed,
            "backend": self.backend,
        }

    def take_fault(self, path: str) -> Fault | None:
        """The fault for a provider call on ``path``: a queued one first, else a random one."""
        for fault in self.faults:
            if fault.match in path and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        if self.fault_rate > 0 and self._fault_rng.random() < self.fault_rate:
            return Fault(kind=self._fault_rng.choice(self.fault_kinds), count=1)
        return None

    def latency_applies(self, method: str, path: str) -> bool:
        if not self.latency_match:
            return True
        want_method, _, want_path = self.latency_match.partition(" ")
        if want_method.upper() != method.upper():
            return False
        if want_path.endswith("*"):
            return path.startswith(want_path[:-1])
        return path == want_path

    def delay_for(self, arrival_s: float) -> float:
        """Seconds to hold a call that arrived at ``arrival_s`` (monotonic): its draw, then
        until the end of any stall its answer would fall in."""
        assert self.latency is not None
        if self.latency.is_zero():
            return 0.0
        ready = arrival_s + self.latency.draw(self._latency_rng)
        return self.stalls.release_at(ready) - arrival_s


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
#: Per-request keys: the call's log entry, and (latency mode "total") when its answer may go.
ENTRY_KEY = "sandbox_bench.log_entry"
RELEASE_KEY = "sandbox_bench.release_at"


async def truncated_json(request: web.Request) -> web.StreamResponse:
    """The default malformed answer: 200, ``application/json``, a body that is not JSON."""
    return web.Response(
        status=200, body=b'{"injected": "malformed', content_type="application/json"
    )


async def undecodable_gzip(request: web.Request) -> web.StreamResponse:
    """A malformed answer for endpoints whose body is raw bytes (any bytes would be "valid"):
    the body claims ``Content-Encoding: gzip`` and is not gzip, so no client can decode it."""
    response = web.Response(status=200, body=b"this is not gzip", content_type="application/json")
    response.headers["Content-Encoding"] = "gzip"
    return response


async def broken_framing(request: web.Request) -> web.StreamResponse:
    """A malformed answer for endpoints whose success body the SDK never reads (so no body,
    however broken, would be noticed): a 200 status line whose header block cannot be parsed
    (``Content-Length: x``), then the connection closes. Every HTTP client rejects it before
    returning the response. The request body is read first, so the client is not cut off
    while it is still sending (that would be a reset, not a malformed answer).
    """
    await request.read()
    transport = request.transport
    if transport is not None:
        transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: x\r\n\r\n"
        )
        transport.close()
    return web.Response(status=500)  # never sent: the transport is closed


def reset_connection(request: web.Request) -> web.Response:
    """Reset the TCP connection (RST, not FIN) and answer nothing.

    The returned response is never sent: aiohttp finds the transport closed and drops it.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)


def make_app(
    state: EmulatorState, error: ErrorResponder, malformed: Malformer = truncated_json
) -> web.Application:
    """An aiohttp app with the latency/fault middleware and the admin endpoints mounted."""

    @web.middleware
    async def emulate(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]):
        read_at = state.wire_arrivals.pop(request.transport, None)
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        arrival = time.monotonic()
        if state.latency_mode == "total" and read_at is not None:
            arrival = read_at  # when its first bytes were read (see _WireArrival)
        applies = state.latency_applies(request.method, request.path)
        delay = state.delay_for(arrival) if applies else 0.0
        fault = state.take_fault(request.path)
        entry = {
            "t": arrival - state.origin_s,
            "at": arrival,
            "method": request.method,
            "path": request.path,
            "added_s": delay,
            "fault": fault.kind if fault is not None else None,
            "handled_s": None,
        }
        state.log.append(entry)
        request[ENTRY_KEY] = entry
        if delay > 0:
            if fault is None and state.latency_mode == "total":
                request[RELEASE_KEY] = arrival + delay  # held in hold_answer, not here
                # Let every request that came in with this one be stamped before any handler
                # runs: the handlers' work belongs inside the latency, not before arrival.
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(delay)
        if fault is None:
            try:
                return await handler(request)
            finally:
                entry["handled_s"] = time.monotonic() - arrival
        if fault.kind == "reset":
            return reset_connection(request)
        if fault.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.stopping.wait(), state.hang_s)
            return reset_connection(request)
        if fault.kind == "malformed":
            return await malformed(request)
        status = int(fault.kind)
        response = error(status, f"injected fault {status}")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    async def hold_answer(request: web.Request, response: web.StreamResponse) -> None:
        # Runs as the answer's headers are about to be sent (plain and streamed answers alike).
        release = request.get(RELEASE_KEY)
        if release is not None:
            delay = release - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        entry = request.get(ENTRY_KEY)
        if entry is not None:
            entry["answered_s"] = time.monotonic() - entry["at"]

    async def list_live(request: web.Request) -> web.Response:
        return web.json_response({"sandboxes": state.live()})

    async def add_fault(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            kind = fault_kind(body["kind"] if "kind" in body else body["status"])
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        state.faults.append(
            Fault(kind=kind, count=int(body.get("count", 1)), match=body.get("match", ""))
        )
        return web.json_response({"ok": True})

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(state.config())

    async def set_config(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            if "seed" in body:
                state.reseed(int(body["seed"]))
            if "latency" in body:
                state.set_latency(LatencyModel.from_dict(body["latency"]))
            if "latency_match" in body:
                state.latency_match = str(body["latency_match"] or "")
            if "latency_mode" in body:
                if body["latency_mode"] not in LATENCY_MODES:
                    raise ValueError(f"latency_mode must be one of {', '.join(LATENCY_MODES)}")
                state.latency_mode = str(body["latency_mode"])
            faults = body.get("faults") or {}
            state.set_faults(
                rate=faults.get("rate"), kinds=faults.get("kinds"), hang_s=faults.get("hang_s")
            )
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(state.config())

    async def get_log(request: web.Request) -> web.Response:
        return web.json_response({"calls": list(state.log)})

    async def clear_log(request: web.Request) -> web.Response:
        state.log.clear()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[emulate], client_max_size=64 * 1024 * 1024)
    app.on_response_prepare.append(hold_answer)
    app[STATE_KEY] = state
    app.router.add_get(ADMIN_PREFIX + "sandboxes", list_live)
    app.router.add_post(ADMIN_PREFIX + "faults", add_fault)
    app.router.add_get(ADMIN_PREFIX + "config", get_config)
    app.router.add_post(ADMIN_PREFIX + "config", set_config)
    app.router.add_get(ADMIN_PREFIX + "log", get_log)
    app.router.add_delete(ADMIN_PREFIX + "log", clear_log)
    return app


def _fault_kinds_arg(text: str) -> list[str]:
    try:
        return [fault_kind(k) for k in text.split(",") if k.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share_arg(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="loopback provider emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-median-ms", type=float, default=0.0)
    parser.add_argument("--latency-p99-ms", type=float, default=0.0)
    parser.add_argument("--stall-prob", type=_share_arg, default=0.0)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--latency-match", default="")
    parser.add_argument("--latency-mode", choices=LATENCY_MODES, default="added")
    parser.add_argument("--fault-rate", type=_share_arg, default=0.0)
    parser.add_argument("--fault-kinds", type=_fault_kinds_arg, default=list(FAULT_KINDS))
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    try:
        EmulatorState.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def serve(
    app: web.Application, port: int, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    """Serve on 127.0.0.1 until SIGTERM/SIGINT, then run ``on_shutdown`` (destroy sandboxes)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    handler_factory = runner.server
    assert handler_factory is not None
    arrivals = app[STATE_KEY].wire_arrivals
    # aiohttp's own TCPSite does this same create_server with the runner's handler factory;
    # each connection's handler is wrapped to note when a request's first bytes were read.
    server = await loop.create_server(
        lambda: _WireArrival(handler_factory(), arrivals), "127.0.0.1", port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    print(f"LISTENING http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[STATE_KEY].stopping.set()  # ends every injected hang, so the server can stop
    try:
        await on_shutdown()
    finally:
        server.close()  # as TCPSite.stop: no new connections; cleanup closes the others
        await runner.cleanup()


class _WireArrival(asyncio.Protocol):
    """aiohttp's per-connection handler, plus the instant each request's first bytes were read.

    The server's own ingest of many requests at once (parsing, routing, the handlers of the
    requests before it) comes after this instant, so in latency mode ``total`` the answer is
    due at this arrival + the draw and that ingest is inside the emulated latency, as a real
    server's would be. A chunk that begins with an HTTP method starts a request (the SDKs here
    send one request at a time per connection, never pipelined); later chunks of its body do
    not move the stamp, and the emulator takes it when the request reaches its middleware.
    """

    METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")

    def __init__(self, inner: asyncio.Protocol, arrivals: dict[Any, float]) -> None:
        self.inner = inner
        self.arrivals = arrivals
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data.startswith(self.METHODS):
            self.arrivals[self.transport] = time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.arrivals.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


@dataclass(frozen=True)
class Emulator:
    """A running emulator process, as seen by a test."""

    name: str
    url: str
    pid: int
    token: str
    #: The emulator's state directory (its local sandboxes live under ``local/``).
    state_dir: Path | None = None

    async def inject(
        self, status: int | None = None, *, kind: str | None = None, count: int = 1, match: str = ""
    ) -> None:
        """Queue ``count`` faults (a status code or a ``kind``) for paths containing ``match``."""
        chosen = kind if kind is not None else status
        if chosen is None:
            raise ValueError("give a status or a kind")
        body = {"kind": str(chosen), "count": count, "match": match}
        await _admin_post(self.url, "faults", body)

    async def live_sandboxes(self) -> list[str]:
        data = await _admin_get(self.url, "sandboxes")
        return list(data["sandboxes"])

    async def config(self) -> dict[str, Any]:
        return await _admin_get(self.url, "config")

    async def configure(
        self,
        *,
        latency: LatencyModel | None = None,
        latency_match: str | None = None,
        latency_mode: str | None = None,
        fault_rate: float | None = None,
        fault_kinds: Sequence[str] | None = None,
        hang_s: float | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Change the latency model, the random faults or the seed while the emulator runs."""
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = seed
        if latency is not None:
            body["latency"] = latency.to_dict()
        if latency_match is not None:
            body["latency_match"] = latency_match
        if latency_mode is not None:
            body["latency_mode"] = latency_mode
        faults: dict[str, Any] = {"rate": fault_rate, "hang_s": hang_s}
        if fault_kinds is not None:
            faults["kinds"] = list(fault_kinds)
        body["faults"] = {k: v for k, v in faults.items() if v is not None}
        return await _admin_post(self.url, "config", body)

    async def calls(self) -> list[dict[str, Any]]:
        """Every provider call the emulator saw since start or :meth:`clear_calls`."""
        return list((await _admin_get(self.url, "log"))["calls"])

    async def clear_calls(self) -> None:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.delete(f"{self.url}{ADMIN_PREFIX}log") as r,
        ):
            r.raise_for_status()

    def local_sandboxes(self) -> list[str]:
        """Local sandbox directories the emulator's backend still has (``local`` backend)."""
        if self.state_dir is None:
            return []
        from providers.local.provider import SANDBOX_ID

        root = self.state_dir / "local" / "sandboxes"
        if not root.is_dir():
            return []
        return sorted(e.name for e in root.iterdir() if SANDBOX_ID.match(e.name))


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


def emulator_args(
    *,
    latency: LatencyModel | None = None,
    latency_match: str = "",
    latency_mode: str = "added",
    fault_rate: float = 0.0,
    fault_kinds: Sequence[str] = (),
    hang_s: float | None = None,
    seed: int | None = None,
    backend: str = "local",
) -> list[str]:
    """Command-line options for the latency model, faults, seed and backend."""
    args: list[str] = []
    if latency_match:
        args += ["--latency-match", latency_match]
    if latency_mode != "added":
        args += ["--latency-mode", latency_mode]
    if latency is not None:
        args += ["--latency-ms", repr(latency.fixed_s * 1000.0)]
        if latency.median_s is not None and latency.p99_s is not None:
            args += ["--latency-median-ms", repr(latency.median_s * 1000.0)]
            args += ["--latency-p99-ms", repr(latency.p99_s * 1000.0)]
        if latency.stalls:
            args += ["--stall-prob", repr(latency.stall_probability)]
            args += ["--stall-ms", repr(latency.stall_s * 1000.0)]
    if fault_rate:
        args += ["--fault-rate", repr(fault_rate)]
    if fault_kinds:
        args += ["--fault-kinds", ",".join(fault_kinds)]
    if hang_s is not None:
        args += ["--hang-s", repr(hang_s)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if backend != "local":
        args += ["--backend", backend]
    return args


@contextlib.asynccontextmanager
async def running(
    name: str,
    state_dir: Path,
    *,
    latency_ms: float = 0.0,
    token: str = "test-token",
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Emulator]:
    """Start ``tests.emulators.<name>`` as a subprocess; stop it by pid on exit.

    ``extra_args`` are more command-line options (see :func:`emulator_args`); an option given
    there wins over ``latency_ms``.
    """
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
        *extra_args,
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
        yield Emulator(
            name=name,
            url=text.split(" ", 1)[1],
            pid=proc.pid,
            token=token,
            state_dir=Path(state_dir),
        )
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()


# -- backends -------------------------------------------------------------------------------


def make_backend(state_dir: Path, backend: str) -> Provider:
    """What an emulator keeps its sandboxes in: real ``local`` sandboxes, or stubs."""
    if backend == "stub":
        return StubBackend()
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    # The registry names the local provider's module; it is imported only here.
    from providers import provider_class

    state_dir.mkdir(parents=True, exist_ok=True)
    return provider_class("local")({"state_dir": str(state_dir / "local")})


class StubBackend(Provider):
    """Sandboxes that are only names: no process runs, so an emulator's own work per call is
    close to nothing and a calibration run measures the configured latency and the client.

    Every command exits 0 with no output (``true`` works, ``echo`` prints nothing); files are
    kept in memory per sandbox; a checkpoint copies them; pause and resume do nothing.
    """

    id = "stub"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings or {})
        self._files: dict[str, dict[str, bytes]] = {}
        self._checkpoints: dict[str, dict[str, bytes]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._files.clear()
        self._checkpoints.clear()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=REQUIRED_OPS | (OPTIONAL_OPS - {Op.FORK}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE,
            scratch_dir="/tmp",
            unsupported={str(Op.FORK): "the stub backend does not fork"},
        )

    def environment(self) -> dict[str, Any]:
        return {"backend": "stub"}

    def _box(self, sandbox: Sandbox) -> dict[str, bytes]:
        try:
            return self._files[sandbox.id]
        except KeyError:
            raise NotFound(f"no stub sandbox {sandbox.id}", provider=self.id) from None

    async def create(self, spec: SandboxSpec) -> Sandbox:
        sandbox_id = "stub-" + secrets.token_hex(6)
        self._files[sandbox_id] = {}
        return Sandbox(id=sandbox_id, provider=self.id)

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        self._box(sandbox)
        return ExecResult(exit_code=0, stdout=b"", stderr=b"")

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        self._box(sandbox)[path] = bytes(data)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        files = self._box(sandbox)
        if path not in files:
            raise NotFound(f"no file {path}", provider=self.id)
        return files[path]

    async def destroy(self, sandbox: Sandbox) -> None:
        self._files.pop(sandbox.id, None)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        return sorted(self._files)

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        ref_id = "stubcp-" + secrets.token_hex(6)
        self._checkpoints[ref_id] = copy.deepcopy(self._box(sandbox))
        return CheckpointRef(id=ref_id, provider=self.id, sandbox_id=sandbox.id)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        sandbox = await self.create(SandboxSpec())
        self._files[sandbox.id] = copy.deepcopy(self._checkpoints.get(ref.id, {}))
        return sandbox

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        self._checkpoints.pop(ref.id, None)

    async def pause(self, sandbox: Sandbox) -> None:
        self._box(sandbox)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        self._box(sandbox)
        return sandbox


def bearer_auth(token: str, reject: Callable[[web.Request], web.Response]) -> Any:
    """Middleware: provider calls need ``Authorization: Bearer <token>`` (admin calls don't);
    ``reject`` builds the provider's own 401 answer."""

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {token}":
            return reject(request)
        return await handler(request)

    return authenticate


# -- process entry point shared by the emulators -----------------------------------------------


class _ExportsAfterListening(io.TextIOBase):
    """Passes stdout through and, right after the ``LISTENING <url>`` line that :func:`serve`
    prints, adds ``export K=V`` lines of the emulator's ``client_env`` so a human can point
    ``sandbox-bench`` at it."""

    def __init__(
        self, inner: Any, name: str, token: str, client_env: Callable[[Emulator], dict[str, str]]
    ) -> None:
        super().__init__()
        self._inner = inner
        self._name = name
        self._token = token
        self._client_env = client_env
        self._line = ""

    def write(self, text: str) -> int:
        written = self._inner.write(text)
        self._line += text
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            if line.startswith("LISTENING "):
                url = line.split(" ", 1)[1].strip()
                emulator = Emulator(name=self._name, url=url, pid=0, token=self._token)
                for key, value in self._client_env(emulator).items():
                    self._inner.write(f"export {key}={shlex.quote(value)}\n")
        return written

    def flush(self) -> None:
        self._inner.flush()


def run_emulator(
    name: str,
    emulator_class: Callable[[Path, str], Any],
    error: ErrorResponder,
    malformed: Any,
    client_env: Callable[[Emulator], dict[str, str]],
    argv: list[str] | None = None,
) -> None:
    """``python -m tests.emulators.<name>``: serve until SIGTERM, then destroy everything.

    ``emulator_class(state_dir, backend)`` must offer ``open()``, ``live``,
    ``install(app, token)`` and ``shutdown()``.
    """
    args = parse_args(argv)
    sys.stdout = _ExportsAfterListening(sys.stdout, name, args.token, client_env)

    async def main() -> None:
        state = EmulatorState.from_args(args)
        emulator = emulator_class(args.state_dir, args.backend)
        await emulator.open()
        state.live = emulator.live
        app = make_app(state, error, malformed)
        emulator.install(app, state.token)
        await serve(app, args.port, emulator.shutdown)

    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
