"""What every loopback provider emulator shares; a provider's module adds only its wire protocol.

An emulator is an aiohttp server on 127.0.0.1 speaking one provider's wire protocol, exactly as
that provider's pinned SDK expects it. Its sandboxes are real ``local`` provider sandboxes (or,
with ``--backend stub``, :class:`providers.stub.StubProvider` names that run nothing and need no
root), so commands really run and checkpoints really restore.

The parts, and who owns what:

* :class:`Sandboxes`, the **one backend object**: the registry of the emulated sandboxes
  (:class:`Box`, which each protocol subclasses with its own fields) and every operation done
  on them (boot, exec, files, checkpoint, snapshots (:class:`Snapshot`; a memory one may hold
  its frozen sandbox), rewind in place, freeze/thaw, stop/start keeping the filesystem only
  or nothing, destroy). A protocol module never touches the backend provider or a box's
  backend sandbox itself, and its listing endpoints show :meth:`Sandboxes.listed`. Which class
  serves is decided in one place (:func:`make_sandboxes`): :class:`Misbehaving`, which adds
  the **semantic faults** (the provider answers "ok" and does the wrong thing: a pause that
  does not freeze, a restore that comes back empty, a destroy that leaves the sandbox alive
  and listed, ...; its docstring specifies each) for every emulator at once. For them to
  work, a protocol: destroys a sandbox through :meth:`Protocol.destroy` (or holds
  ``box.lock``, a :class:`BoxLock`, or awaits :meth:`Protocol.settled` first); goes by the
  answer of :meth:`Sandboxes.destroy` (False: a ``destroy-leaks`` fault kept it) rather than
  marking it gone itself; and, when its snapshot call answers only once the snapshot is
  usable, takes it with :meth:`Sandboxes.capture` ``(usable=True)``.
* :class:`Protocol`, subclassed once per provider: its routes, its error body (also what an
  injected fault answers), its malformed answers, its authentication and ``client_env`` (the
  variables that point the provider's adapter at the emulator). What the APIs share is here
  once: reading a call (:meth:`Protocol.body`, ``required``, ``objects``, ``query_ints``,
  ``lookup``: each refuses with the API's own error body, see :class:`Refused`), answering a
  JSON body by returning it, lifecycle calls that finish in the background
  (:meth:`Protocol.transition`, ``booting``), commands run in the background and asked about
  later (:class:`Job`, :meth:`Protocol.run_job`), long polls (:class:`Changes`), pages
  (:func:`offset_page`, :func:`keyset_page`), output framing (:func:`outputs`,
  :func:`exit_status`, :func:`ndjson`, :func:`sse`) and a command cut short when its client
  goes (:func:`unless`).
* :func:`make_app`: the latency and fault middleware, the call log and the admin API; and
  :func:`serve_emulator`, the process: serve until SIGTERM/SIGINT (a protocol that speaks more
  than HTTP/1.1 on the port wraps its connections: :meth:`Protocol.connections`), then
  destroy everything.

Every emulator (started by ``sandbox-bench emulate PROVIDER``, see :mod:`bench.emulators.cli`):

* prints ``# <provider> emulator on http://127.0.0.1:<port> (...)`` once it listens, then the
  ``export K=V`` lines of its ``client_env``, then ``# ready ...``;
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
  - ``malformed``: 200 with a body the provider's SDK cannot read for that endpoint
    (:meth:`Protocol.malformed`; the default is truncated JSON, and for a DELETE a header
    block no client can parse).

  ``--seed S`` seeds the fault draws, the latency draws and the stall schedule (three separate
  generators), so the same sequence of calls meets the same faults and latencies; with
  concurrent clients, which call comes first is up to the scheduler;
* answers admin endpoints under ``/_emulator/`` (never delayed, never faulted, no credentials):
  ``GET /_emulator/sandboxes`` -> ``{"sandboxes": [ids of live sandboxes], "checkpoints":
  [ids of the checkpoints stored]}``;
  ``POST /_emulator/faults`` ``{"status": 429, "count": 1, "match": "/sandboxes"}`` (or
  ``{"kind": "reset", ...}``; ``"skip": k`` lets the first ``k`` matching calls through) ->
  the next ``count`` provider calls whose path contains ``match`` get that fault (before any
  random one); ``DELETE /_emulator/faults`` drops the faults still queued;
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
* misbehaves on purpose with ``--misbehave MODE[,MODE...]`` (default none), the semantic
  faults of :class:`Misbehaving`: ``pause-runs``, ``stop-keeps``, ``restore-empty``,
  ``restore-partial``, ``snapshot-pending``, ``create-recycled``, ``create-undersized``,
  ``destroy-leaks``, ``delete-leaks``, ``list-omits``, ``wake-slow`` (with ``--wake-s``,
  default 3, and ``--wake-after-s``, default 1). ``GET /_emulator/config`` shows them as
  ``"misbehave"`` (a list), ``"wake_s"`` and ``"wake_after_s"``, and ``POST
  /_emulator/config`` with any of those keys changes them at run time (``"misbehave": []``
  switches every one off);
* destroys every sandbox and checkpoint it holds when it gets SIGTERM or SIGINT, also those
  it pretended to destroy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import os
import posixpath
import random
import secrets
import shlex
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, AnyStr, ClassVar, TypeVar

from aiohttp import web

from bench.calibration import LatencyModel, StallSchedule
from bench.emulators.registry import (
    BACKENDS,
    FAULT_KINDS,
    LATENCY_MODES,
    MISBEHAVIOURS,
    fault_kind,
    misbehaviours,
    protocol_class,
)
from providers import provider_class
from providers.base import CheckpointRef, ExecResult, Provider, Sandbox, SandboxSpec
from providers.errors import NotFound, ProviderError

ADMIN_PREFIX = "/_emulator/"
#: How many provider calls ``GET /_emulator/log`` keeps (oldest dropped first).
LOG_LIMIT = 200_000
#: The first line an emulator prints, and how :mod:`bench.emulators.control` finds its URL.
HEADER = "# {name} emulator on {url} (pid {pid}, backend {backend}, state {state})"
READY = "# ready; Ctrl-C or SIGTERM stops {what} and destroys every sandbox {who} hold{s}"

B = TypeVar("B", bound="Box")
S = TypeVar("S", bound="Snapshot")
J = TypeVar("J", bound="Job")
T = TypeVar("T")
#: A handler's (or a fault's) answer to a call.
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What a protocol's handler answers: a response, or the JSON body of a 200 (a dict or list).
Reply = web.StreamResponse | dict[str, Any] | list[Any]


# -- latency, faults and the call log ------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    count: int
    match: str = ""
    #: Calls on a matching path to let through first (so that a test can fault the k-th call
    #: of an operation and no other).
    skip: int = 0


def _seeded(seed: int, stream: str) -> random.Random:
    return random.Random(f"{stream}:{seed}")


@dataclass
class SemanticFaults:
    """The semantic faults switched on (``--misbehave``) and the slow wake's timing, shared by
    the emulator's state (so the admin API changes them) and its :class:`Misbehaving`
    sandboxes (which act on them)."""

    modes: frozenset[str] = frozenset()
    #: ``wake-slow``: how long a wake takes, and after how long an idle a call wakes it.
    wake_s: float = 3.0
    wake_after_s: float = 1.0

    def __post_init__(self) -> None:
        self.set(modes=self.modes, wake_s=self.wake_s, wake_after_s=self.wake_after_s)

    def set(
        self,
        *,
        modes: str | Sequence[str] | frozenset[str] | None = None,
        wake_s: float | None = None,
        wake_after_s: float | None = None,
    ) -> None:
        """Change what is given (ValueError, and nothing changed, for a bad value)."""
        chosen = frozenset(misbehaviours(modes)) if modes is not None else self.modes
        for name, value in (("wake_s", wake_s), ("wake_after_s", wake_after_s)):
            if value is not None and not 0 <= float(value) <= 3600:
                raise ValueError(f"{name} must be between 0 and 3600 s")
        self.modes = chosen
        if wake_s is not None:
            self.wake_s = float(wake_s)
        if wake_after_s is not None:
            self.wake_after_s = float(wake_after_s)

    def __contains__(self, mode: str) -> bool:
        return mode in self.modes

    def to_dict(self) -> dict[str, Any]:
        return {
            "misbehave": [m for m in MISBEHAVIOURS if m in self.modes],
            "wake_s": self.wake_s,
            "wake_after_s": self.wake_after_s,
        }


@dataclass
class EmulatorState:
    """Per-process latency, fault and log state shared by an emulator's middleware."""

    token: str = "test-token"
    faults: list[Fault] = field(default_factory=list)
    latency: LatencyModel = field(default_factory=LatencyModel)
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
    semantics: SemanticFaults = field(default_factory=SemanticFaults)
    origin_s: float = field(default_factory=time.monotonic)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_LIMIT))
    #: Per connection (transport), when the bytes of its current request began to arrive.
    wire_arrivals: dict[Any, float] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.latency_mode not in LATENCY_MODES:
            raise ValueError(f"latency mode must be one of {', '.join(LATENCY_MODES)}")
        self.set_faults(rate=self.fault_rate, kinds=self.fault_kinds, hang_s=self.hang_s)
        self.reseed(self.seed)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmulatorState:
        """The state the ``emulate`` options describe (ValueError for a bad combination)."""
        latency = LatencyModel(
            fixed_s=args.latency_ms / 1000.0,
            median_s=args.latency_median_ms / 1000.0 if args.latency_median_ms else None,
            p99_s=args.latency_p99_ms / 1000.0 if args.latency_p99_ms else None,
            stall_probability=args.stall_prob,
            stall_s=args.stall_ms / 1000.0,
        )
        return cls(
            token=args.token,
            latency=latency,
            latency_match=args.latency_match,
            latency_mode=args.latency_mode,
            fault_rate=args.fault_rate,
            fault_kinds=tuple(args.fault_kinds),
            hang_s=args.hang_s,
            seed=args.seed,
            backend=args.backend,
            semantics=SemanticFaults(
                modes=frozenset(misbehaviours(getattr(args, "misbehave", ()))),
                wake_s=getattr(args, "wake_s", 3.0),
                wake_after_s=getattr(args, "wake_after_s", 1.0),
            ),
        )

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self._fault_rng = _seeded(self.seed, "faults")
        self._latency_rng = _seeded(self.seed, "latency")
        self.set_latency(self.latency)

    def set_latency(self, model: LatencyModel) -> None:
        self.latency = model
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
            **self.semantics.to_dict(),
        }

    def take_fault(self, path: str) -> Fault | None:
        """The fault for a provider call on ``path``: a queued one first, else a random one."""
        for fault in self.faults:
            if fault.match in path and fault.count > 0:
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
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
        if self.latency.is_zero():
            return 0.0
        ready = arrival_s + self.latency.draw(self._latency_rng)
        return self.stalls.release_at(ready) - arrival_s


# -- answers no SDK can read -----------------------------------------------------------------------


async def truncated_json(request: web.Request) -> web.StreamResponse:
    """The default malformed answer: 200, ``application/json``, a body that is not JSON."""
    return web.Response(
        status=200, body=b'{"injected": "malformed', content_type="application/json"
    )


async def broken_event(request: web.Request) -> web.StreamResponse:
    """A malformed answer for a server-sent-events stream: one event whose data is not JSON."""
    body = b'data: {"injected": "malformed\n\n'
    return web.Response(status=200, body=body, content_type="text/event-stream")


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


# -- small parts every protocol needs -------------------------------------------------------------


class Refused(Exception):
    """Raised by a handler, or by a helper it calls, to answer ``response`` at once (the
    protocol's own refusals: 404 for an unknown sandbox, 400 for a bad body, ...)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def json_object(
    request: web.Request, invalid: Callable[[], web.Response] | None = None
) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when it has no body); when it is not one,
    :class:`Refused` with ``invalid()`` (by default a plain 400)."""
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            body = None
    if not isinstance(body, dict):
        raise Refused(
            invalid() if invalid else web.json_response({"error": "bad body"}, status=400)
        )
    return body


def in_dir(argv: Sequence[str], cwd: str, env: dict[str, str] | None = None) -> list[str]:
    """``argv`` run in ``cwd`` (exit 1 if it cannot go there) with ``env`` added: the backend's
    exec has neither, every provider's API has both."""
    pairs = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["/bin/sh", "-c", 'cd -- "$0" || exit 1; exec "$@"', cwd, "env", *pairs, *argv]


def utc_now() -> str:
    """Now as the APIs write it: ISO 8601, milliseconds, ``Z``."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(moment: datetime | None = None) -> int:
    """``moment`` (default now) as the APIs that count time in milliseconds write it."""
    return int((moment or datetime.now(UTC)).timestamp() * 1000)


def resolve(path: str, cwd: str) -> str:
    """A path an API call names, as the sandbox sees it: a relative one under ``cwd``,
    normalised (``..`` and ``.`` resolved, no trailing ``/``)."""
    return posixpath.normpath(posixpath.join(cwd, path))


# -- commands: their deadline, their outcome on the wire ------------------------------------------

#: The deadline of a command whose API names none (the backend's exec needs a number).
NO_DEADLINE_S = 24 * 3600.0
#: The exit status a shell reports for a command killed with SIGKILL (a kill, a deadline).
KILLED = 128 + int(signal.SIGKILL)


def exit_status(code: int) -> int:
    """An :class:`ExecResult` exit code as a shell reports it: a command ended by a signal
    (the backend's negative code, ``-signal``) as 128 + the signal."""
    return code if code >= 0 else 128 - code


def deadline_s(value: object, unit_s: float = 1.0) -> float:
    """The deadline an API call gives a command (a positive number of ``unit_s`` seconds);
    :data:`NO_DEADLINE_S` when it gives none."""
    if isinstance(value, int | float) and value > 0:
        return float(value) * unit_s
    return NO_DEADLINE_S


def strings(mapping: dict[Any, Any]) -> dict[str, str]:
    """An API's object of labels, tags or variables, each key and value as a string."""
    return {str(key): str(value) for key, value in mapping.items()}


def text(data: bytes) -> str:
    """Command output sent as text: UTF-8, undecodable bytes replaced (U+FFFD)."""
    return data.decode("utf-8", errors="replace")


def outputs(result: ExecResult, size: int = 0) -> list[tuple[str, bytes]]:
    """A command's output as the APIs that stream it send it once it has ended: all of
    ``stdout``, then all of ``stderr`` (their interleaving is lost: the backend keeps each
    whole), in pieces of at most ``size`` bytes (0: whole), none for an empty stream."""
    streams = (("stdout", result.stdout), ("stderr", result.stderr))
    return [(name, part) for name, data in streams for part in chunks(data, size or len(data) or 1)]


def chunks(data: AnyStr, size: int) -> list[AnyStr]:
    """``data`` in pieces of at most ``size`` (none for empty data): an API's output frames."""
    return [data[start : start + size] for start in range(0, len(data), size)]


def ndjson(*records: Any) -> bytes:
    """Newline-delimited JSON: each record on its own line."""
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def sse(record: Any) -> bytes:
    """One server-sent event whose data is ``record`` as JSON."""
    return f"data: {json.dumps(record)}\n\n".encode()


async def open_stream(
    request: web.Request, content_type: str, *, status: int = 200
) -> web.StreamResponse:
    """A streamed answer to ``request`` (status and headers sent): write to it, then
    ``write_eof``."""
    response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
    await response.prepare(request)
    return response


async def unless(work: Awaitable[T], gone: asyncio.Future[Any]) -> T | None:
    """``work``'s result, unless ``gone`` (its client closing the connection, say) completes
    first: then ``work`` is cancelled and waited for (a command run with ``kill_on_cancel`` is
    killed) and the answer is None; so is it when this call is cancelled. ``gone`` is left as
    it is; an error of ``work`` is raised."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


# -- listings -------------------------------------------------------------------------------------


def offset_page(items: Sequence[T], offset: int, limit: int) -> tuple[list[T], int | None]:
    """The page of ``items`` that starts at ``offset`` (at most ``limit``), and where the next
    one starts (None: there is none)."""
    page = list(items[offset : offset + limit])
    end = offset + len(page)
    return page, end if end < len(items) else None


def keyset_page(
    items: Iterable[T], key: Callable[[T], str], after: str, limit: int
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``items`` whose key sorts after ``after`` (every one when it is
    empty), in key order, and the key the next page starts after (None: there is none). Unlike
    an offset, the cursor stays right when items before it go away."""
    rest = sorted((item for item in items if key(item) > after), key=key)
    page = rest[:limit]
    return page, key(page[-1]) if len(rest) > limit else None


# -- the sandboxes ---------------------------------------------------------------------------------


class BoxLock(asyncio.Lock):
    """A sandbox's lock (:attr:`Box.lock`) that counts the calls waiting for it.

    A call that never completes on purpose (the ``snapshot-pending`` semantic fault,
    :meth:`Misbehaving.stall`) holds the lock only until another call waits for it, then
    gives way, so the sandbox can still be used and destroyed, as a real provider's could.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def acquire(self) -> bool:
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1


class Changes:
    """Wakes every waiter at each change of something they wait on (a status, a command's
    end): an :class:`asyncio.Event` that is set, and replaced, at every change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, done: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Wait until ``done()``, checked now and at each change; False when ``timeout_s``
        passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), left)
        return True


@dataclass(eq=False, kw_only=True)
class Box:
    """One emulated sandbox as :class:`Sandboxes` keeps it; a protocol subclasses it with the
    fields its API has (state names, labels as the API spells them, ...)."""

    #: The state a failed transition (:meth:`Protocol.transition`) leaves, as the API names it.
    FAILED: ClassVar[str] = "error"

    id: str
    #: The backend sandbox while it runs (None while stopped, or before it booted).
    local: Sandbox | None = None
    #: Its filesystem while stopped (:meth:`Sandboxes.stop`).
    parked: CheckpointRef | None = None
    frozen: bool = False
    #: For the protocol: held around state changes that must not interleave.
    lock: BoxLock = field(default_factory=BoxLock)
    #: The state as the provider's API names it, and the transition under way, if any
    #: (:meth:`Protocol.transition`); ``error`` says why it is in an error state.
    state: str = ""
    busy: asyncio.Task[Any] | None = None
    error: str | None = None
    #: Notified at every :meth:`set_state` (long polls wait on it).
    changed: Changes = field(default_factory=Changes)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    used_s: float = field(default_factory=time.monotonic)
    #: When the provider ends it (its lifetime, :meth:`Protocol.expire`); None: never.
    end_at: datetime | None = None

    def set_state(self, state: str) -> None:
        self.state, self.updated = state, datetime.now(UTC)
        self.changed.notify()

    def extend(self, seconds: float | None) -> None:
        """The sandbox now ends ``seconds`` from now (None: never)."""
        self.end_at = None if seconds is None else datetime.now(UTC) + timedelta(seconds=seconds)


@dataclass(eq=False, kw_only=True)
class Snapshot:
    """A checkpoint the emulated provider names (a snapshot, a template): the filesystem of
    its source sandbox (:meth:`Sandboxes.take`). A protocol may subclass it."""

    id: str
    source_id: str
    names: list[str] = field(default_factory=list)
    #: The backend checkpoint; None until taken.
    ref: CheckpointRef | None = None
    #: A memory snapshot's source sandbox, frozen (:meth:`Sandboxes.capture` with ``hold``),
    #: until a sandbox made from it takes it over.
    held: Box | None = None
    error: str | None = None
    created_at: str = field(default_factory=lambda: utc_now())
    updated_at: str = field(default_factory=lambda: utc_now())
    #: Set when :meth:`Sandboxes.drop_snapshot` forgets it: a take under way, or not yet
    #: begun, must not fill it.
    dropped: bool = False

    @property
    def state(self) -> str:
        return "active" if self.ref is not None else "error" if self.error else "pending"


@dataclass(eq=False, kw_only=True)
class Job:
    """A command an API runs in the background (:meth:`Protocol.run_job`), which later calls
    ask about (its status, its output) or kill (:meth:`Protocol.kill_jobs`). A protocol may
    subclass it with its API's fields."""

    id: str
    #: Its result once it ran to its end; ``error`` says why it has none: it was killed
    #: (``CancelledError``) or the backend failed under it (its sandbox went away, its
    #: deadline passed: ``OperationTimeout``, ...).
    result: ExecResult | None = None
    error: BaseException | None = None
    ended: bool = False
    #: Notified when it ends.
    changed: Changes = field(default_factory=Changes)
    task: asyncio.Task[None] | None = None

    async def wait(self) -> ExecResult | None:
        """Its result, once it has ended (None: it was killed or could not run to its end)."""
        await self.changed.until(lambda: self.ended)
        return self.result

    def output(self, stream: str) -> bytes:
        """Its ``stdout`` or ``stderr`` (empty without a result)."""
        return getattr(self.result, stream) if self.result is not None else b""

    def kill(self) -> None:
        """Kill it if it runs (its process group), without waiting for its end."""
        if self.task is not None:
            self.task.cancel()


class Sandboxes:
    """The emulated sandboxes and every operation on them (see the module docstring).

    Errors are the backend provider's own (:mod:`providers.errors`); each protocol turns them
    into its API's answers.
    """

    def __init__(self, backend: Provider) -> None:
        self.backend = backend
        self._boxes: dict[str, Box] = {}
        self._checkpoints: dict[str, CheckpointRef] = {}
        self._snapshots: dict[str, Snapshot] = {}
        #: Set when the emulator stops (:func:`serve_emulator` shares its state's event).
        self.stopping = asyncio.Event()

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        """Destroy every sandbox and checkpoint (shutdown), then close the backend."""
        for box in list(self._boxes.values()):
            self._boxes.pop(box.id, None)
            with contextlib.suppress(Exception):
                await self._teardown(box)
        self._snapshots.clear()
        for ref in list(self._checkpoints.values()):
            with contextlib.suppress(Exception):
                await self.delete_checkpoint(ref)
        await self.backend.close()

    # -- the registry -------------------------------------------------------------------------

    def add(self, box: B) -> B:
        """Register ``box``: from now on it is listed and found."""
        self._boxes[box.id] = box
        return box

    def get(self, box_id: str) -> Box | None:
        return self._boxes.get(box_id)

    def held(self) -> list[Box]:
        """Every sandbox held, oldest first (for lookups; the reaper)."""
        return sorted(self._boxes.values(), key=lambda b: b.created)

    def listed(self, kind: type[B] = Box) -> list[B]:  # type: ignore[assignment]
        """The sandboxes of class ``kind`` a listing endpoint shows (every one held, oldest
        first, unless a layer says not: ``list-omits``)."""
        return [box for box in self.held() if isinstance(box, kind)]

    def shows(self, box: Box) -> bool:
        """Whether a listing shows ``box`` (:meth:`listed`)."""
        return box in self.listed()

    def live(self) -> list[str]:
        """Ids of every sandbox held (the admin API's answer: the truth, not a listing)."""
        return sorted(self._boxes)

    def kept(self) -> list[str]:
        """Ids of every backend checkpoint held (what the emulated provider stores, whatever
        its API shows: the admin API's answer)."""
        return sorted(self._checkpoints)

    # -- life -------------------------------------------------------------------------------

    async def boot(
        self,
        box: Box,
        spec: SandboxSpec | None = None,
        *,
        home: str | None = None,
        source: CheckpointRef | None = None,
    ) -> None:
        """Start ``box``'s backend sandbox: new (``spec``) or from the checkpoint ``source``;
        ``home`` is created in it. Nothing is left behind when it fails."""
        spec = spec or SandboxSpec()
        spec = dataclasses.replace(spec, labels={**spec.labels, "emulated-box": box.id})
        local = await (self.backend.restore(source) if source else self.backend.create(spec))
        await self._adopt(box, local, home)

    async def _adopt(self, box: Box, local: Sandbox, home: str | None) -> None:
        """Make ``home`` in the backend sandbox ``local`` and give it to ``box``; destroy it
        when that fails."""
        try:
            if home:
                made = await self.backend.exec(local, ["mkdir", "-p", home], timeout_s=30)
                if made.exit_code != 0:
                    raise ProviderError(f"mkdir {home} failed: {made.stderr!r}")
        except BaseException:
            with contextlib.suppress(Exception):
                await self.backend.destroy(local)
            raise
        box.local = local

    async def destroy(self, box: Box) -> bool:
        """Forget ``box`` and destroy what it holds (idempotent); whether it is gone (not when
        a ``destroy-leaks`` fault keeps it: then the protocol answers as if it were, and goes
        on showing it)."""
        self._boxes.pop(box.id, None)
        await self._teardown(box)
        return True

    async def _teardown(self, box: Box) -> None:
        local, box.local = box.local, None
        parked, box.parked = box.parked, None
        if local is not None:
            await self.backend.destroy(local)
        if parked is not None:
            await self.delete_checkpoint(parked)

    async def freeze(self, box: Box) -> None:
        """Pause keeping processes and memory."""
        await self.backend.pause(self._local(box))
        box.frozen = True

    async def thaw(self, box: Box) -> None:
        await self.backend.resume(self._local(box))
        box.frozen = False

    async def stop(self, box: Box, *, keep: bool = True) -> None:
        """Keep only the filesystem (with ``keep``; else nothing): checkpoint it, then destroy
        the backend sandbox (every process goes)."""
        if box.frozen:
            await self.thaw(box)
        ref = await self._capture(box) if keep else None
        if ref is not None and self._boxes.get(box.id) is not box:  # destroyed while copied
            await self.delete_checkpoint(ref)
            return
        local, box.local, box.parked = box.local, None, ref
        if local is not None:
            await self.backend.destroy(local)

    async def start(
        self, box: Box, spec: SandboxSpec | None = None, *, home: str | None = None
    ) -> None:
        """Start a stopped ``box`` in a new backend sandbox: from the filesystem its stop
        kept, or, when it kept none (``stop(keep=False)``), a new one (``spec`` and ``home``,
        as :meth:`boot`). NotFound when ``box`` is gone (destroyed while this call waited)."""
        if self._boxes.get(box.id) is not box:
            raise NotFound(f"sandbox {box.id} is gone", provider=self.backend.id)
        if box.local is not None:
            raise ProviderError(f"sandbox {box.id} is not stopped")
        if box.parked is None:
            return await self.boot(box, spec, home=home)
        ref = box.parked
        box.local = await self.backend.restore(ref)
        box.parked = None
        await self.delete_checkpoint(ref)

    # -- state ------------------------------------------------------------------------------

    async def checkpoint(self, box: Box) -> CheckpointRef:
        """The filesystem of ``box`` (the backend's checkpoint; held until deleted): a
        checkpoint the API's client asked for."""
        return await self._capture(box)

    async def _capture(self, box: Box) -> CheckpointRef:
        ref = await self.backend.checkpoint(self._local(box))
        self._checkpoints[ref.id] = ref
        return ref

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        self._checkpoints.pop(ref.id, None)
        await self.backend.delete_checkpoint(ref)

    def add_snapshot(self, snapshot: S) -> S:
        """Register ``snapshot`` (pending until :meth:`take` fills it). A name is one
        snapshot's: the names it claims move to it from any other."""
        for other in self._snapshots.values():
            if other is not snapshot:
                other.names = [name for name in other.names if name not in snapshot.names]
        self._snapshots[snapshot.id] = snapshot
        snapshot.dropped = False
        return snapshot

    def find_snapshot(self, key: str) -> Snapshot | None:
        """The snapshot with that id, else the one with that name."""
        found = self._snapshots.get(key)
        return found or next((s for s in self._snapshots.values() if key in s.names), None)

    def snapshots(self) -> list[Snapshot]:
        return list(self._snapshots.values())

    async def take(self, snapshot: Snapshot, box: Box) -> None:
        """Fill ``snapshot`` with ``box``'s filesystem now (a name taken again gets a new
        build: the old checkpoint goes)."""
        try:
            ref = await self.checkpoint(box)
        except Exception as exc:
            snapshot.error = f"{type(exc).__name__}: {exc}"
            raise
        if snapshot.dropped:
            # Deleted while it was being taken (a sweep found it pending), or before the take
            # began (a delete handled in the turn of the loop that registered it): the
            # deletion wins, else the filesystem copy would outlive every record of it.
            await self.delete_checkpoint(ref)
            return
        old, snapshot.ref, snapshot.source_id = snapshot.ref, ref, box.id
        snapshot.updated_at = utc_now()
        if old is not None:
            await self.delete_checkpoint(old)

    async def built(self, snapshot: Snapshot, box: Box) -> None:
        """For an API whose snapshot call answers only once the snapshot can be used (no
        pending state it could show): wait until :meth:`take` has filled it. Here it always
        has; a ``snapshot-pending`` fault makes this wait forever (:meth:`Misbehaving.built`).
        """

    async def capture(
        self, snapshot: S, box: Box, *, usable: bool = False, hold: bool = False
    ) -> S:
        """Register ``snapshot`` and :meth:`take` ``box``'s filesystem into it; ``usable``, for
        an API whose snapshot call answers only once the snapshot can be used: wait for that
        too (:meth:`built`; under ``snapshot-pending`` it fails once the box is wanted again);
        ``hold`` (a memory snapshot): ``box`` is frozen first and the snapshot holds it
        (``snapshot.held``; dropping the snapshot destroys it). When any of it fails, the
        snapshot is dropped and the error raised."""
        if hold:
            await self.freeze(box)
        self.add_snapshot(snapshot)
        try:
            await self.take(snapshot, box)
            if usable:
                await self.built(snapshot, box)
        except BaseException:
            await self.drop_snapshot(snapshot, asked=False)
            raise
        snapshot.held = box if hold else None
        return snapshot

    async def drop_snapshot(self, snapshot: Snapshot, *, asked: bool = True) -> None:
        """Forget ``snapshot``; delete its checkpoint and destroy the sandbox it holds.
        ``asked``: the API's client asked for it (a delete), not the emulator's own undoing
        of a snapshot that failed (a ``delete-leaks`` fault acts on the former only)."""
        self._snapshots.pop(snapshot.id, None)
        snapshot.dropped = True
        held, snapshot.held = snapshot.held, None
        if snapshot.ref is not None:
            await self.delete_checkpoint(snapshot.ref)
        if held is not None:
            await self.destroy(held)

    async def rewind(self, box: Box, ref: CheckpointRef) -> None:
        """Restore ``ref`` in place: a new backend sandbox from it takes over ``box`` and the
        old one is destroyed, so no process of before goes on."""
        new = await self.backend.restore(ref)
        old, box.local = box.local, new
        if old is not None:
            with contextlib.suppress(Exception):
                await self.backend.destroy(old)

    # -- work -------------------------------------------------------------------------------

    async def use(self, box: Box) -> Sandbox:
        """The backend sandbox for a command or file call, noting the use (where a sandbox
        that slept would wake)."""
        local = self._local(box)
        box.used_s = time.monotonic()
        return local

    async def exec(
        self, box: Box, argv: Sequence[str], *, timeout_s: float, kill_on_cancel: bool = False
    ) -> ExecResult:
        """Run ``argv``; with ``kill_on_cancel``, cancelling this call (its client went away)
        kills the command's process group, else the command runs on to ``timeout_s``."""
        local = await self.use(box)
        if not kill_on_cancel:
            return await self.backend.exec(local, list(argv), timeout_s=timeout_s)
        pidfile = f"/tmp/.emulated-exec-{secrets.token_hex(6)}"
        wrapped = ["/bin/sh", "-c", _PID_WRAPPER, "exec", pidfile, *argv]
        command = asyncio.ensure_future(self.backend.exec(local, wrapped, timeout_s=timeout_s))
        try:
            return await asyncio.shield(command)
        except asyncio.CancelledError:
            # Kill it, then let the backend's call end as the command does (never cut short).
            kill = ["/bin/sh", "-c", _KILL_GROUP.format(pidfile=pidfile)]
            with contextlib.suppress(Exception):
                await self.backend.exec(local, kill, timeout_s=30)
                await command
            raise

    async def read_file(self, box: Box, path: str) -> bytes:
        return await self.backend.read_file(await self.use(box), path)

    async def write_file(self, box: Box, path: str, data: bytes) -> None:
        await self.backend.write_file(await self.use(box), path, data)

    def _local(self, box: Box) -> Sandbox:
        if box.local is None:
            raise NotFound(f"sandbox {box.id} is not running", provider=self.backend.id)
        return box.local


#: Runs argv as a child of a shell whose pid (= its process group: the backend starts each
#: command in a new session) is written to $1, so the command can be killed when needed.
_PID_WRAPPER = 'echo $$ > "$1"; p=$1; shift; "$@"; rc=$?; rm -f -- "$p"; exit $rc'
_KILL_GROUP = (
    "for _ in $(seq 40); do [ -s {pidfile} ] && break; sleep 0.05; done; "
    '[ -s {pidfile} ] && kill -s KILL -- "-$(cat {pidfile})" 2>/dev/null; rm -f -- {pidfile}; true'
)


#: What a box stopped under ``stop-keeps`` holds instead of its parked filesystem.
KEPT_RUNNING = "kept-running:"


class Misbehaving(Sandboxes):
    """The sandboxes with **semantic faults**: the provider answers "ok" and does the wrong
    thing. With none switched on it is exactly the faithful :class:`Sandboxes`; each fault
    changes one operation here, so every protocol gets it at once. ``semantics`` (a
    :class:`SemanticFaults`, shared with the admin API) says which are on; several may be.
    Decisions about a sandbox already changed by a fault (a fake freeze, a kept stop, a spared
    destroy) are kept when the fault is switched off. The faults (``--misbehave`` names):

    * ``pause-runs``: :meth:`freeze` marks the sandbox frozen and freezes nothing, so the
      protocol answers its pause as usual while every process keeps running; :meth:`thaw`
      of it does nothing.
    * ``stop-keeps``: :meth:`stop` (also one told not to keep the filesystem) keeps the
      backend sandbox running (processes, memory, /tmp) behind a stand-in for the parked
      filesystem; :meth:`start` just takes it back.
    * ``restore-empty`` / ``restore-partial``: a sandbox booted from a checkpoint
      (:meth:`boot` with ``source``) or rewound to one (:meth:`rewind`) loses the files
      written since the emulator started (regular files of its root filesystem, ``find /
      -xdev -newermt``; directories stay): every one (empty, which wins when both are on),
      or in path order the 1st, 3rd, 5th ... and the 2nd cut to half its size (partial).
      Needs the ``local`` backend (a ``stub`` sandbox holds no files).
    * ``snapshot-pending``: :meth:`take` leaves the snapshot pending, never filled (an API
      with a pending state shows it so); :meth:`built` (an API without one) and
      :meth:`checkpoint` never complete (:meth:`stall`). The capture behind a stop is
      unaffected.
    * ``create-recycled``: destroying a sandbox keeps its backend sandbox (the newest one;
      the one kept before is destroyed then) and the next new sandbox (:meth:`boot` without
      ``source``) is that one, with its files, processes and boot id. It is destroyed when
      the fault is switched off or the emulator stops; the admin API's list of live
      sandboxes does not show it (it has no id in the API), the state directory does.
    * ``create-undersized``: a new sandbox gets half the CPUs and half the memory of its spec
      as backend limits, and every command run in it (:meth:`exec`) runs on half the CPUs
      this emulator may use (CPU affinity, at least one), so ``nproc`` inside shows it. (A
      local sandbox cannot see its memory limit: its /proc/meminfo is the host's.)
    * ``destroy-leaks``: the first :meth:`destroy` of a sandbox does nothing (the protocol
      answers ok; the sandbox stays alive, listed and usable); a second destroy of it, such
      as the harness's end-of-run sweep, destroys it. Whatever is left is destroyed when the
      emulator stops, like everything it holds.
    * ``delete-leaks``: the first :meth:`drop_snapshot` a client asks for does nothing (the
      protocol answers its delete ok; the snapshot stays, listed and usable); a second
      delete of it, such as the harness's end-of-run sweep, deletes it. The emulator's own
      drops (a snapshot whose take failed) and its shutdown are unaffected.
    * ``list-omits``: :meth:`listed` leaves out the newest sandbox held.
    * ``wake-slow``: :meth:`use` (every command and file call) of a sandbox unused for
      ``wake_after_s`` or more first waits ``wake_s``, once for every call that comes
      during that wake, as a sandbox that slept and wakes on use.
    """

    def __init__(self, backend: Provider, semantics: SemanticFaults) -> None:
        super().__init__(backend)
        self.semantics = semantics
        #: Files modified since then count as the sandboxes' own (the restore faults).
        self._origin = time.time()
        self._faked: set[str] = set()  # ids of boxes "frozen" by pause-runs
        self._spared: set[str] = set()  # ids of boxes whose first destroy did nothing
        self._kept: set[str] = set()  # ids of snapshots whose first delete did nothing
        self._pool: list[Sandbox] = []  # create-recycled: the backend sandbox kept
        self._waking: dict[str, asyncio.Future[None]] = {}
        self._pinned: dict[str, str] = {}  # create-undersized: box id -> the CPUs it may use
        self._closing = False

    async def apply(self, **changes: Any) -> None:
        """Change ``semantics`` (:meth:`SemanticFaults.set`'s keywords) while it runs."""
        self.semantics.set(**changes)
        if "create-recycled" not in self.semantics:
            await self._drain_pool()

    async def close(self) -> None:
        self._closing = True
        await self._drain_pool()
        await super().close()

    async def _drain_pool(self) -> None:
        pool, self._pool = self._pool, []
        for local in pool:
            with contextlib.suppress(Exception):
                await self.backend.destroy(local)

    def _on(self, mode: str) -> bool:
        return mode in self.semantics

    # -- life -------------------------------------------------------------------------------

    async def boot(
        self,
        box: Box,
        spec: SandboxSpec | None = None,
        *,
        home: str | None = None,
        source: CheckpointRef | None = None,
    ) -> None:
        new = source is None
        spec = spec or SandboxSpec()
        if new and self._on("create-undersized"):
            spec = dataclasses.replace(
                spec, cpus=spec.cpus / 2, memory_mb=max(16, spec.memory_mb // 2)
            )
        if new and self._on("create-recycled") and self._pool:
            await self._adopt(box, self._pool.pop(), home)
        else:
            await super().boot(box, spec, home=home, source=source)
        if not new:
            await self._lose_files(box)
        elif self._on("create-undersized"):
            allowed = sorted(os.sched_getaffinity(0))
            half = allowed[: max(1, len(allowed) // 2)]
            self._pinned[box.id] = ",".join(str(cpu) for cpu in half)

    async def destroy(self, box: Box) -> bool:
        alive = box.local is not None or box.parked is not None
        first = box.id not in self._spared and self.get(box.id) is box
        if self._on("destroy-leaks") and alive and first:
            self._spared.add(box.id)
            return False
        return await super().destroy(box)

    async def drop_snapshot(self, snapshot: Snapshot, *, asked: bool = True) -> None:
        held = self.find_snapshot(snapshot.id) is snapshot
        if asked and held and self._on("delete-leaks") and snapshot.id not in self._kept:
            self._kept.add(snapshot.id)
            return
        self._kept.discard(snapshot.id)
        await super().drop_snapshot(snapshot, asked=asked)

    async def _teardown(self, box: Box) -> None:
        frozen = box.frozen and box.id not in self._faked
        self._pinned.pop(box.id, None)
        self._faked.discard(box.id)
        self._spared.discard(box.id)
        if box.parked is not None and box.parked.id.startswith(KEPT_RUNNING):
            box.parked = None
        if (
            self._on("create-recycled")
            and not self._closing
            and box.local is not None
            and not frozen
        ):
            local, box.local = box.local, None
            await self._drain_pool()
            self._pool.append(local)
        await super()._teardown(box)

    def listed(self, kind: type[B] = Box) -> list[B]:  # type: ignore[assignment]
        held = self.held()
        shown = held[:-1] if self._on("list-omits") else held
        return [box for box in shown if isinstance(box, kind)]

    async def freeze(self, box: Box) -> None:
        if not self._on("pause-runs"):
            return await super().freeze(box)
        self._local(box)  # a sandbox that is not running cannot pause, faithful or not
        self._faked.add(box.id)
        box.frozen = True

    async def thaw(self, box: Box) -> None:
        if box.id not in self._faked:
            return await super().thaw(box)
        self._faked.discard(box.id)
        box.frozen = False

    async def stop(self, box: Box, *, keep: bool = True) -> None:
        if not self._on("stop-keeps"):
            return await super().stop(box, keep=keep)
        if box.frozen:
            await self.thaw(box)
        local = self._local(box)
        box.parked = CheckpointRef(
            id=f"{KEPT_RUNNING}{box.id}", provider=self.backend.id, sandbox_id=local.id
        )

    async def start(
        self, box: Box, spec: SandboxSpec | None = None, *, home: str | None = None
    ) -> None:
        if box.parked is None or not box.parked.id.startswith(KEPT_RUNNING):
            return await super().start(box, spec, home=home)
        box.parked = None

    # -- state ------------------------------------------------------------------------------

    async def checkpoint(self, box: Box) -> CheckpointRef:
        if self._on("snapshot-pending"):
            await self.stall(box, "checkpoint")
        return await super().checkpoint(box)

    async def take(self, snapshot: Snapshot, box: Box) -> None:
        if not self._on("snapshot-pending"):
            return await super().take(snapshot, box)
        snapshot.source_id, snapshot.updated_at = box.id, utc_now()  # accepted, never built

    async def built(self, snapshot: Snapshot, box: Box) -> None:
        if snapshot.ref is None and snapshot.error is None:
            await self.stall(box, f"snapshot {snapshot.id}")

    async def stall(self, box: Box, what: str) -> None:
        """Never complete: wait until another call waits for ``box``'s lock, the box is gone
        or the emulator stops, then fail (the protocol answers an error nobody waits for)."""

        def given_up() -> bool:
            return bool(box.lock.waiting) or self.stopping.is_set() or self.get(box.id) is not box

        while not given_up():  # noqa: ASYNC110 - polled: "the box is gone" has no event
            await asyncio.sleep(0.1)
        raise ProviderError(
            f"{what} of {box.id} never completed (semantic fault snapshot-pending); "
            "abandoned when the sandbox was wanted again"
        )

    async def rewind(self, box: Box, ref: CheckpointRef) -> None:
        await super().rewind(box, ref)
        await self._lose_files(box)

    async def _lose_files(self, box: Box) -> None:
        partial, empty = self._on("restore-partial"), self._on("restore-empty")
        if not (partial or empty):
            return
        local = self._local(box)
        since = f"@{int(self._origin)}"
        found = await self.backend.exec(
            local,
            ["find", "/", "-xdev", "-type", "f", "-newermt", since, "-printf", "%s %p\\0"],
            timeout_s=60,
        )
        files = sorted(
            (path, int(size))
            for size, _, path in (
                entry.partition(" ") for entry in found.stdout.decode(errors="replace").split("\0")
            )
            if size.isdigit() and path
        )
        gone, cut = (files, []) if empty else (files[0::2], files[1:2])
        if gone:
            rm = ["rm", "-f", "--", *(path for path, _ in gone)]
            await self.backend.exec(local, rm, timeout_s=60)
        for path, size in cut:
            truncate = ["truncate", "-s", str(size // 2), "--", path]
            await self.backend.exec(local, truncate, timeout_s=60)

    # -- work -------------------------------------------------------------------------------

    async def use(self, box: Box) -> Sandbox:
        waking = self._waking.get(box.id)
        idle_s = time.monotonic() - box.used_s
        if waking is None and self._on("wake-slow") and idle_s >= self.semantics.wake_after_s:
            waking = asyncio.ensure_future(self._sleep(self.semantics.wake_s))
            self._waking[box.id] = waking
            waking.add_done_callback(lambda _: self._waking.pop(box.id, None))
        if waking is not None:
            await asyncio.shield(waking)
        return await super().use(box)

    async def exec(
        self, box: Box, argv: Sequence[str], *, timeout_s: float, kill_on_cancel: bool = False
    ) -> ExecResult:
        pinned = self._pinned.get(box.id)
        if pinned is not None:  # its own processes cannot be re-pinned from inside: pin each
            argv = ["taskset", "-c", pinned, *argv]
        return await super().exec(box, argv, timeout_s=timeout_s, kill_on_cancel=kill_on_cancel)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def make_backend(state_dir: Path, backend: str) -> Provider:
    """What the sandboxes run on: real ``local`` sandboxes (state in ``state_dir/local``) or
    ``stub`` names; both come from the provider registry."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if backend == "stub":
        return provider_class("stub")({})
    state_dir.mkdir(parents=True, exist_ok=True)
    return provider_class("local")({"state_dir": str(state_dir / "local")})


def make_sandboxes(
    state_dir: Path, backend: str, semantics: SemanticFaults | None = None
) -> Sandboxes:
    """The one backend object of an emulator, for every protocol at once: a
    :class:`Misbehaving` one, faithful until a semantic fault is switched on (``semantics``,
    which the admin API may change while it runs)."""
    return Misbehaving(make_backend(state_dir, backend), semantics or SemanticFaults())


# -- the protocol ----------------------------------------------------------------------------------


class Protocol:
    """One provider's wire protocol on the toolkit; subclass it in ``bench/emulators/<id>.py``.

    A subclass sets ``name``, implements :meth:`client_env`, :meth:`routes` and :meth:`error`,
    and overrides :meth:`malformed` (or sets :attr:`malformed_answers`), :meth:`authenticate`
    (or :attr:`self_authenticated`) and :attr:`invalid_body` where its API differs from the
    defaults. Its handlers do every sandbox operation through ``self.sandboxes``; each answers
    a response, or a JSON body (a dict or a list: answered with 200), and may raise
    :class:`Refused` (from any depth) to answer with an API error at once: the helpers
    :meth:`body`, :meth:`required`, :meth:`objects`, :meth:`lookup`, :meth:`lookup_snapshot`,
    :meth:`known` and :meth:`query_ints` do.
    """

    name: ClassVar[str]
    #: The message of the 400 (:meth:`error`) that :meth:`body` answers for a body that is not
    #: a JSON object.
    invalid_body: ClassVar[str] = "invalid JSON body"
    #: Path prefixes of the calls that carry credentials of their own (a sandbox's token, a
    #: first WebSocket frame), which their handlers check: :meth:`authenticate` is not asked.
    self_authenticated: ClassVar[tuple[str, ...]] = ()
    #: ``(path suffix, answer)`` pairs: the ``malformed`` fault's answer for the calls whose
    #: path ends so (the first pair that matches), where truncated JSON would not do.
    malformed_answers: ClassVar[tuple[tuple[str, Answer], ...]] = ()

    def __init__(self, sandboxes: Sandboxes, token: str) -> None:
        self.sandboxes = sandboxes
        self.token = token
        self.tasks: set[asyncio.Task[Any]] = set()
        #: The commands running in the background (:meth:`run_job`).
        self.jobs: set[Job] = set()
        #: The emulator's latency, fault and call-log state (:func:`serve_emulator` gives the
        #: one the admin API changes), for a protocol the HTTP middleware cannot see (gRPC).
        self.state = EmulatorState(token=token)
        #: Where the emulator listens (set once it does).
        self.url = ""

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        """The environment that points this provider's adapter (and SDK) at ``url``."""
        raise NotImplementedError

    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def error(self, status: int, message: str) -> web.Response:
        """The API's error answer; injected faults answer with it too."""
        raise NotImplementedError

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        """A 200 the SDK cannot read for ``request``'s endpoint (the ``malformed`` fault): the
        answer :attr:`malformed_answers` names for its path; else, for a DELETE, a broken
        header block (SDKs commonly drop a delete's body unread, so truncated JSON would pass
        for a deletion that never happened: tests/test_malformed_answers.py); else truncated
        JSON."""
        for suffix, answer in self.malformed_answers:
            if request.path.endswith(suffix):
                return await answer(request)
        if request.method == "DELETE":
            return await broken_framing(request)
        return await truncated_json(request)

    def authenticate(self, request: web.Request) -> web.Response | None:
        """None when the call may go on, else the API's refusal; by default the call needs
        ``Authorization: Bearer <token>``."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.unauthorized(request)
        return None

    def unauthorized(self, request: web.Request) -> web.Response:
        return self.error(401, "unauthorized")

    def connections(self, http: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The server's per-connection protocol factory, given aiohttp's (``http``: the admin
        API and the HTTP routes); a protocol that speaks something else too on the same port
        (Modal's gRPC over HTTP/2) wraps it."""
        return http

    # -- reading a call ------------------------------------------------------------------------

    async def body(self, request: web.Request) -> dict[str, Any]:
        """The call's JSON object (``{}`` when it has no body); else :class:`Refused` with the
        API's 400 (:attr:`invalid_body`)."""
        return await json_object(request, lambda: self.error(400, self.invalid_body))

    def required(self, body: dict[str, Any], name: str) -> str:
        """The body's field ``name``, a non-empty string; else :class:`Refused` with the API's
        400 saying ``<name> is required``."""
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise Refused(self.error(400, f"{name} is required"))
        return value

    def objects(self, body: dict[str, Any], **defaults: dict[str, Any]) -> list[dict[str, Any]]:
        """The body's fields named, each a JSON object (its default when absent or null), in
        the order named; else :class:`Refused` with the API's 400 naming them."""
        found = [body[name] if body.get(name) is not None else d for name, d in defaults.items()]
        if not all(isinstance(value, dict) for value in found):
            *others, last = defaults
            which = f"{', '.join(others)} and {last}" if others else last
            raise Refused(
                self.error(400, f"{which} must be {'objects' if others else 'an object'}")
            )
        return found

    def lookup(self, kind: type[B], key: str, missing: str | web.Response) -> B:
        """The sandbox ``key``, held and of this protocol's box class ``kind``; else
        :class:`Refused` with ``missing``: the message of the API's 404 (:meth:`error`), or
        the whole answer."""
        return self.known(self.sandboxes.get(key), kind, missing)

    def lookup_snapshot(self, kind: type[S], key: str, missing: str | web.Response) -> S:
        """The snapshot with that id (else that name) of class ``kind``; else :class:`Refused`
        as for :meth:`lookup`."""
        return self.known(self.sandboxes.find_snapshot(key), kind, missing)

    def known(self, found: object, kind: type[T], missing: str | web.Response) -> T:
        """``found`` (what a call names: a sandbox, a snapshot, a job...) if it is a ``kind``;
        else :class:`Refused` as for :meth:`lookup`."""
        if not isinstance(found, kind):
            raise Refused(self.error(404, missing) if isinstance(missing, str) else missing)
        return found

    def query_ints(self, request: web.Request, **defaults: int) -> list[int]:
        """The query parameters named, as integers (their defaults when absent or empty), in
        the order named; else :class:`Refused` with the API's 400 naming them."""
        try:
            return [int(request.query.get(name) or value) for name, value in defaults.items()]
        except ValueError:
            which = " and ".join(defaults)
            must = "must be integers" if len(defaults) > 1 else "must be an integer"
            raise Refused(self.error(400, f"{which} {must}")) from None

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background; it is awaited, not cancelled, when the emulator
        stops."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def transition(
        self, box: Box, state: str, work: Callable[[], Awaitable[Any]], done: str
    ) -> None:
        """An API whose lifecycle calls answer at once and finish in the background, while the
        client polls: ``box`` is in ``state`` now, in ``done`` once ``work()`` has finished,
        in ``error`` (with ``box.error``) if it failed; ``box.busy`` meanwhile."""

        async def run() -> None:
            try:
                await work()
                box.set_state(done)
            except Exception as exc:  # noqa: BLE001 - any failure puts the sandbox in error
                box.error = f"{type(exc).__name__}: {exc}"
                box.set_state(box.FAILED)
            finally:
                box.busy = None

        box.set_state(state)
        box.busy = self.spawn(run())

    def booting(
        self,
        box: Box,
        state: str,
        done: str,
        spec: SandboxSpec | None = None,
        *,
        home: str | None = None,
        source: CheckpointRef | None = None,
    ) -> None:
        """The :meth:`transition` of a create: ``box`` is in ``state`` while its backend
        sandbox boots (:meth:`Sandboxes.boot` with ``spec``, ``home`` and ``source``), then in
        ``done``."""
        boot = functools.partial(self.sandboxes.boot, box, spec, home=home, source=source)
        self.transition(box, state, boot, done)

    def run_job(
        self, box: Box, job: J, argv: Sequence[str], *, timeout_s: float = NO_DEADLINE_S
    ) -> J:
        """Run ``argv`` in ``box`` in the background as ``job``, until it ends, is killed
        (:meth:`kill_jobs`; its process group too) or ``timeout_s`` passes; its outcome is in
        ``job``. Every job still running is killed when the emulator stops."""

        async def run() -> None:
            job.result = await self.sandboxes.exec(
                box, argv, timeout_s=timeout_s, kill_on_cancel=True
            )

        def ended(task: asyncio.Task[None]) -> None:
            # A callback, not a finally: a task killed before it began never runs its body.
            job.error = asyncio.CancelledError() if task.cancelled() else task.exception()
            job.ended = True
            self.jobs.discard(job)
            job.changed.notify()

        self.jobs.add(job)
        job.task = asyncio.ensure_future(run())
        job.task.add_done_callback(ended)
        return job

    @staticmethod
    async def kill_jobs(jobs: Iterable[Job], timeout_s: float | None = None) -> None:
        """Kill every one of ``jobs`` still running and wait for their ends (at most
        ``timeout_s``)."""
        tasks = [job.task for job in jobs if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()  # as Job.kill
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    @staticmethod
    async def settled(box: Box) -> None:
        """Wait for ``box``'s transition, if one runs (its outcome is in its state)."""
        if box.busy is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(box.busy)

    async def destroy(self, box: Box) -> bool:
        """Destroy ``box`` for a delete call, as the semantic faults need it: once its
        transition has finished and under its lock (which a call that never completes on
        purpose gives up); whether it is gone (a ``destroy-leaks`` fault keeps it)."""
        await self.settled(box)
        async with box.lock:
            return await self.sandboxes.destroy(box)

    async def expire(self, box: Box) -> None:
        """What the provider does to a sandbox whose lifetime (``box.end_at``) has passed,
        under ``box.lock``; by default it is destroyed."""
        await self.sandboxes.destroy(box)

    async def startup(self) -> None:
        """Start background work (after the sandboxes opened): here, the lifetime reaper."""
        self._reaper = asyncio.ensure_future(self._reap_expired())

    async def shutdown(self) -> None:
        await self.kill_jobs(list(self.jobs))
        self._reaper.cancel()
        with contextlib.suppress(BaseException):
            await self._reaper
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _reap_expired(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = datetime.now(UTC)
            for box in self.sandboxes.held():
                if box.end_at is None or box.end_at > now or box.lock.locked():
                    continue
                try:
                    async with box.lock:
                        box.end_at = None
                        await self.expire(box)
                except Exception as exc:  # noqa: BLE001 - one bad sandbox must not stop the reaper
                    print(f"{self.name} emulator: expiring {box.id} failed: {exc}", file=sys.stderr)


# -- the server ------------------------------------------------------------------------------------

STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
#: Per-request keys: the call's log entry, and (latency mode "total") when its answer may go.
#: aiohttp 3.14 added typed request keys (and warns about plain ones); older ones take a str.
_KEY: Any = getattr(web, "RequestKey", lambda name, kind: name)
ENTRY_KEY = _KEY("sandbox_bench.log_entry", dict)
RELEASE_KEY = _KEY("sandbox_bench.release_at", float)


def make_app(protocol: Protocol, state: EmulatorState) -> web.Application:
    """An aiohttp app: the latency/fault middleware, the protocol's authentication and routes,
    and the admin endpoints."""
    if isinstance(protocol.sandboxes, Misbehaving):
        state.semantics = protocol.sandboxes.semantics  # one object: the admin API's view

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
            return await protocol.malformed(request)
        status = int(fault.kind)
        response = protocol.error(status, f"injected fault {status}")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]):
        if not request.path.startswith((ADMIN_PREFIX, *protocol.self_authenticated)):
            refused = protocol.authenticate(request)
            if refused is not None:
                return refused
        try:
            answer = await handler(request)
        except Refused as refusal:
            return refusal.response
        return answer if isinstance(answer, web.StreamResponse) else web.json_response(answer)

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
        return web.json_response(
            {"sandboxes": protocol.sandboxes.live(), "checkpoints": protocol.sandboxes.kept()}
        )

    async def add_fault(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            kind = fault_kind(body["kind"] if "kind" in body else body["status"])
            count, skip = int(body.get("count", 1)), int(body.get("skip", 0))
            if count < 1 or skip < 0:
                raise ValueError("count must be at least 1 and skip at least 0")
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        state.faults.append(Fault(kind=kind, count=count, match=body.get("match", ""), skip=skip))
        return web.json_response({"ok": True})

    async def clear_faults(request: web.Request) -> web.Response:
        state.faults.clear()
        return web.json_response({"ok": True})

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(state.config())

    async def set_config(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            semantics = {k: body[k] for k in ("wake_s", "wake_after_s") if k in body}
            if "misbehave" in body:
                semantics["modes"] = body["misbehave"] or ()
            if semantics and isinstance(protocol.sandboxes, Misbehaving):
                await protocol.sandboxes.apply(**semantics)
            elif semantics:
                raise ValueError("this emulator's sandboxes have no semantic faults")
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

    app = web.Application(middlewares=[emulate, authenticate], client_max_size=64 * 1024 * 1024)
    app.on_response_prepare.append(hold_answer)
    app[STATE_KEY] = state
    app.router.add_get(ADMIN_PREFIX + "sandboxes", list_live)
    app.router.add_post(ADMIN_PREFIX + "faults", add_fault)
    app.router.add_delete(ADMIN_PREFIX + "faults", clear_faults)
    app.router.add_get(ADMIN_PREFIX + "config", get_config)
    app.router.add_post(ADMIN_PREFIX + "config", set_config)
    app.router.add_get(ADMIN_PREFIX + "log", get_log)
    app.router.add_delete(ADMIN_PREFIX + "log", clear_log)
    protocol.routes(app.router)
    return app


def announce(
    name: str, url: str, token: str, *, backend: str, state_dir: Path, pid: int | None = None
) -> list[str]:
    """The lines an emulator (process ``pid``, default this one) prints once it listens:
    where, then what to export."""
    pid = os.getpid() if pid is None else pid
    head = HEADER.format(name=name, url=url, pid=pid, backend=backend, state=state_dir)
    env = protocol_class(name).client_env(url, token)
    return [head, *(f"export {key}={shlex.quote(value)}" for key, value in env.items())]


async def serve_emulator(
    protocol_type: type[Protocol], args: argparse.Namespace, *, say: Callable[[str], None]
) -> None:
    """Serve one emulator (the ``emulate`` options in ``args``) until SIGTERM/SIGINT, then
    destroy every sandbox and checkpoint it holds. ``say`` prints a line."""
    state = EmulatorState.from_args(args)
    state_dir = Path(args.state_dir) / protocol_type.name
    sandboxes = make_sandboxes(state_dir, args.backend, state.semantics)
    sandboxes.stopping = state.stopping  # ends every stalled call when the emulator stops
    protocol = protocol_type(sandboxes, state.token)
    protocol.state = state
    await sandboxes.open()
    try:
        await protocol.startup()
        app = make_app(protocol, state)

        def ready(url: str) -> None:
            protocol.url = url
            lines = announce(
                protocol_type.name, url, state.token, backend=args.backend, state_dir=state_dir
            )
            for line in lines:
                say(line)
            say(READY.format(what="the emulator", who="it", s="s"))

        await serve(app, args.port, ready, protocol.connections)
    finally:
        try:
            await protocol.shutdown()
        finally:
            await sandboxes.close()


async def serve(
    app: web.Application,
    port: int,
    ready: Callable[[str], None],
    connections: Callable[[Callable[[], asyncio.Protocol]], Callable[[], asyncio.Protocol]] = (
        lambda http: http
    ),
) -> None:
    """Serve ``app`` on 127.0.0.1 until SIGTERM/SIGINT; ``ready(url)`` once it listens.
    ``connections`` (:meth:`Protocol.connections`) may wrap the per-connection protocols."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    handler_factory = runner.server
    assert handler_factory is not None
    arrivals = app[STATE_KEY].wire_arrivals
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # aiohttp's own TCPSite does this same create_server with the runner's handler factory;
        # each connection's handler is wrapped to note when a request's first bytes were read.
        http = lambda: _WireArrival(handler_factory(), arrivals)  # noqa: E731
        server = await loop.create_server(connections(http), "127.0.0.1", port, backlog=1024)
    except BaseException:
        await runner.cleanup()
        raise
    try:
        bound = server.sockets[0].getsockname()[1] if server.sockets else port
        ready(f"http://127.0.0.1:{bound}")
        await stop.wait()
    finally:
        app[STATE_KEY].stopping.set()  # ends every injected hang, so the server can stop
        server.close()  # as TCPSite.stop: no new connections; cleanup closes the others
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


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


__all__ = [
    "ADMIN_PREFIX",
    "KILLED",
    "NO_DEADLINE_S",
    "Box",
    "Changes",
    "EmulatorState",
    "Job",
    "Protocol",
    "Refused",
    "Reply",
    "Sandboxes",
    "Snapshot",
    "broken_event",
    "broken_framing",
    "chunks",
    "deadline_s",
    "epoch_ms",
    "exit_status",
    "in_dir",
    "iso",
    "json_object",
    "keyset_page",
    "make_app",
    "make_backend",
    "make_sandboxes",
    "ndjson",
    "offset_page",
    "open_stream",
    "outputs",
    "resolve",
    "serve_emulator",
    "sse",
    "strings",
    "text",
    "truncated_json",
    "undecodable_gzip",
    "unless",
    "utc_now",
]
