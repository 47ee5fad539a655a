"""Loopback emulator of E2B's control-plane API and its in-sandbox agent (envd).

Run: ``python -m tests.emulators.e2b --port 0 --state-dir D [--latency-ms X] [--token T]``.
Point the SDK at it with :func:`client_env`: ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` are both
this server's base URL. The control plane and envd share one aiohttp server, as E2B's
``sandbox.<domain>`` edge does: envd requests are routed by their ``E2b-Sandbox-Id`` header.

Wire protocol, as ``e2b`` 2.63.0 speaks it (research/sdk-protocols.md §2):

* Control plane (``X-API-KEY: <token>``, else 401). Every error body is the API's
  ``{"code": <status>, "message": ...}``, injected faults included.
  ``POST /v2/sandboxes`` (201 ``Sandbox``: ``templateID, sandboxID, clientID, envdVersion,
  envdAccessToken``), ``GET /v2/sandboxes`` (``?metadata=<urlencoded k=v&..>&state=running,paused
  &limit=&nextToken=``; a JSON array of ``ListedSandbox``, the next page's token in the
  ``x-next-token`` header), ``GET|DELETE /sandboxes/{id}`` (DELETE answers 204, 404 when
  unknown), ``POST /sandboxes/{id}/pause`` (204; 409 when already paused),
  ``POST /v2/sandboxes/{id}/connect`` (200 when it was running, 201 when it was resumed),
  ``POST /sandboxes/{id}/snapshots`` (201 ``{"snapshotID", "names"}``),
  ``POST /sandboxes/{id}/timeout`` (204), ``GET /snapshots``, ``DELETE /templates/{id}``
  (deletes a snapshot; 204, 404 when unknown).
* envd, on the same server (``X-Access-Token`` must be the sandbox's ``envdAccessToken``, else
  401; an unknown, killed or paused sandbox gets the edge proxy's 502 ``"... was not found"``):
  ``POST /process.Process/Start`` in the Connect protocol with the JSON codec: the request is
  one envelope ``[flags u8][len u32 BE][StartRequest JSON]``, the answer is
  ``application/connect+json`` envelopes: ``start {pid}``, ``data {stdout|stderr: base64}``
  (32 KiB chunks), ``keepalive`` every 50 s while a command runs, ``end {exitCode, exited,
  status}``, then the end-of-stream envelope (flag 0x02) ``{}`` or ``{"error": {code,
  message}}`` (``deadline_exceeded`` when the ``connect-timeout-ms`` budget runs out).
  ``GET /files?path=[&username=]`` (raw bytes; 404/400 ``{"code", "message"}``),
  ``POST /files?path=`` (``multipart/form-data`` field ``file``, or ``application/octet-stream``
  with optional ``Content-Encoding: gzip``; parents created; 200 ``[{"name", "type": "file",
  "path"}]``), ``GET /health`` (204).

Semantics, each emulated sandbox being a real ``local`` sandbox:

* create makes a local sandbox and creates ``/home/user``; the only template is ``base``
  (nominally 2 vCPU, 512 MiB, as E2B's base template; the local sandbox is not limited to
  that), any other ``templateID`` must be a snapshot taken here (else 404). The sandbox
  ``timeout`` (default 300 s) is enforced: when it passes, the sandbox is killed, or paused
  when ``autoPause`` was set; ``POST /timeout`` and ``connect`` move it.
* Commands run as root inside the local sandbox, through ``/bin/bash -l -c <cmd>`` exactly as
  the SDK sends it, with ``HOME=/home/<user>`` and the cwd the request names (default the
  home). The user named in ``Authorization: Basic`` only picks the home directory. Output is
  delivered when the command ends (not streamed while it runs): all of stdout, then all of
  stderr, so their interleaving is lost.
* A snapshot is a local checkpoint: the **filesystem only** (everything written outside /tmp
  and /dev); the source sandbox keeps running. E2B's snapshots also hold memory and running
  processes; this emulator **cannot restore memory**: a sandbox created from a snapshot starts
  with the snapshot's files and no processes. It is here to prove the protocol, not the
  fidelity of memory. Snapshotting a paused sandbox is refused (409).
* ``pause`` freezes the local sandbox (cgroup freezer: processes and memory kept) and
  ``connect`` thaws it; ``{"memory": false}`` (filesystem-only pause) checkpoints and destroys
  the local sandbox, and ``connect`` restores it into a new local sandbox behind the same id.
* ``DELETE`` destroys at once; afterwards the id is unknown (404).

Not emulated: fork, refreshes, metrics, logs, network and IAM settings (accepted, not
applied), volumes, MCP, templates other than ``base`` and snapshots, the process RPCs other
than ``Start`` (List, Connect, SendInput, SendSignal, StreamInput, Update), stdin, PTY, the
filesystem RPCs (Stat, ListDir, MakeDir, Move, Remove, WatchDir), file metadata, per-user file
ownership, HTTP/2 and TLS (plain HTTP/1.1 only), auto-resume on traffic, quotas and billing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import posixpath
import re
import secrets
import string
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from providers.base import CheckpointRef, Sandbox, SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError
from tests.emulators.common import (
    ADMIN_PREFIX,
    Emulator,
    make_backend,
    run_emulator,
    truncated_json,
    undecodable_gzip,
)

CLIENT_ID = "6532622b"
BASE_TEMPLATE = "base"
ENVD_VERSION = "0.6.4"
ENVD_PORT = "49983"
DEFAULT_TIMEOUT_S = 300
BASE_CPUS = 2
BASE_MEMORY_MB = 512
BASE_DISK_MB = 10240
CHUNK = 32 * 1024
KEEPALIVE_S = 50.0
#: No ``connect-timeout-ms`` means no deadline; the local sandbox needs a number.
NO_DEADLINE_S = 24 * 3600.0
ENVD_PREFIXES = ("/files", "/health", "/process.Process/", "/filesystem.Filesystem/")
CONNECT_JSON = "application/connect+json"
ENVELOPE = struct.Struct(">BI")
END_STREAM = 0x02
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _no_such_sandbox(request: web.Request) -> web.Response:
    """The API's 404 for a sandbox id it does not know (or no longer knows)."""
    return api_error(404, f'sandbox "{request.match_info["sid"]}" doesn\'t exist')


def client_env(emulator: Emulator) -> dict[str, str]:
    """Environment that points the e2b adapter (and its SDK) at ``emulator``."""
    return {
        "E2B_API_KEY": emulator.token,
        "E2B_API_URL": emulator.url,
        "E2B_SANDBOX_URL": emulator.url,
    }


def _new_id(length: int = 20) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- error bodies -----------------------------------------------------------------------------


def api_error(status: int, message: str) -> web.Response:
    """The control plane's (and envd's REST) error body; also what injected faults answer."""
    return web.json_response({"code": status, "message": message}, status=status)


def connect_error(status: int, code: str, message: str) -> web.Response:
    """A Connect-protocol error for an RPC that fails before its stream starts."""
    return web.json_response({"code": code, "message": message}, status=status)


async def malformed(request: web.Request) -> web.StreamResponse:
    """An injected 200 that e2b's SDK cannot read: a Connect stream whose first message is not
    JSON for the process RPCs; a body that claims gzip and is not for answers the SDK reads as
    raw bytes or not at all (file reads, 204s: kill, pause, timeout, health, snapshot delete);
    truncated JSON everywhere else."""
    path = request.path
    if path.startswith("/process.Process/"):
        broken = b'{"event": {"start"'
        return web.Response(
            status=200,
            body=ENVELOPE.pack(0x00, len(broken)) + broken,
            headers={"Content-Type": CONNECT_JSON},
        )
    bodiless = request.method == "DELETE" or path.endswith(("/pause", "/timeout"))
    if bodiless or path == "/health" or (path == "/files" and request.method == "GET"):
        return await undecodable_gzip(request)
    return await truncated_json(request)


def proxy_not_found(sandbox_id: str) -> web.Response:
    """What the edge proxy answers for a sandbox that is killed, timed out or paused."""
    return web.json_response(
        {
            "code": 502,
            "message": f"The sandbox {sandbox_id} was not found",
            "sandboxId": sandbox_id,
        },
        status=502,
    )


# -- state ------------------------------------------------------------------------------------


@dataclass
class Snap:
    id: str
    names: list[str]
    source_sandbox_id: str
    ref: CheckpointRef


@dataclass
class Box:
    id: str
    template_id: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    access_token: str
    timeout_s: int
    auto_pause: bool
    started_at: datetime
    end_at: datetime
    state: str = "running"  # running | paused
    local: Sandbox | None = None
    #: Set while paused with ``memory: false``: the filesystem, the processes gone.
    paused_ref: CheckpointRef | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def extend(self, seconds: int) -> None:
        self.timeout_s = seconds
        self.end_at = datetime.now(UTC) + timedelta(seconds=seconds)


class E2BEmulator:
    def __init__(self, state_dir: Path, backend: str = "local") -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.local = make_backend(state_dir, backend)
        self.boxes: dict[str, Box] = {}
        self.snapshots: dict[str, Snap] = {}
        self.next_pid = 1000
        self.reaper: asyncio.Task | None = None

    async def open(self) -> None:
        await self.local.open()
        self.reaper = asyncio.get_running_loop().create_task(self._reap_expired())

    def live(self) -> list[str]:
        return sorted(self.boxes)

    # -- routing ----------------------------------------------------------------------------

    def install(self, app: web.Application, token: str) -> None:
        @web.middleware
        async def authenticate(
            request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
        ):
            path = request.path
            if path.startswith(ADMIN_PREFIX) or path.startswith(ENVD_PREFIXES):
                return await handler(request)  # envd checks its own access token
            if request.headers.get("X-API-KEY") != token:
                return api_error(401, "Invalid API key, it must start with 'e2b_' prefix")
            return await handler(request)

        app.middlewares.append(authenticate)
        r = app.router
        r.add_post("/v2/sandboxes", self.create)
        r.add_get("/v2/sandboxes", self.list)
        r.add_get("/sandboxes/{sid}", self.get)
        r.add_delete("/sandboxes/{sid}", self.kill)
        r.add_post("/sandboxes/{sid}/pause", self.pause)
        r.add_post("/v2/sandboxes/{sid}/connect", self.connect)
        r.add_post("/sandboxes/{sid}/snapshots", self.snapshot)
        r.add_post("/sandboxes/{sid}/timeout", self.set_timeout)
        r.add_get("/snapshots", self.list_snapshots)
        r.add_delete("/templates/{tid}", self.delete_template)
        r.add_post("/process.Process/Start", self.process_start)
        r.add_post("/process.Process/{method}", self.rpc_unimplemented)
        r.add_post("/filesystem.Filesystem/{method}", self.rpc_unimplemented)
        r.add_get("/files", self.read_file)
        r.add_post("/files", self.write_file)
        r.add_get("/health", self.health)

    # -- DTOs -------------------------------------------------------------------------------

    @staticmethod
    def _sandbox_dto(box: Box) -> dict[str, Any]:
        return {
            "templateID": box.template_id,
            "sandboxID": box.id,
            "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": box.access_token,
        }

    @staticmethod
    def _listed_dto(box: Box) -> dict[str, Any]:
        return {
            "templateID": box.template_id,
            "sandboxID": box.id,
            "clientID": CLIENT_ID,
            "startedAt": _iso(box.started_at),
            "endAt": _iso(box.end_at),
            "cpuCount": BASE_CPUS,
            "memoryMB": BASE_MEMORY_MB,
            "diskSizeMB": BASE_DISK_MB,
            "state": box.state,
            "envdVersion": ENVD_VERSION,
            "metadata": box.metadata,
        }

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any] | None:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # -- control plane ----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if body is None:
            return api_error(400, "Invalid request body")
        template = body.get("templateID")
        if not isinstance(template, str) or not template:
            return api_error(400, "templateID is required")
        snap = self.snapshots.get(template)
        if template != BASE_TEMPLATE and snap is None:
            return api_error(404, f"template '{template}' not found")
        timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
        if not isinstance(timeout, int) or timeout < 0:
            return api_error(400, "timeout must be a non-negative integer")
        metadata = body.get("metadata") or {}
        env_vars = body.get("envVars") or {}
        if not isinstance(metadata, dict) or not isinstance(env_vars, dict):
            return api_error(400, "metadata and envVars must be objects")
        now = datetime.now(UTC)
        box = Box(
            id=_new_id(),
            template_id=template,
            metadata={str(k): str(v) for k, v in metadata.items()},
            env_vars={str(k): str(v) for k, v in env_vars.items()},
            access_token=secrets.token_hex(16),
            timeout_s=timeout,
            auto_pause=bool(body.get("autoPause")),
            started_at=now,
            end_at=now + timedelta(seconds=timeout),
        )
        try:
            if snap is not None:
                local = await self.local.restore(snap.ref)
            else:
                local = await self.local.create(SandboxSpec(labels={"e2b-emulator": box.id}))
        except ProviderError as exc:
            return api_error(500, f"failed to start sandbox: {exc}")
        try:
            made = await self.local.exec(local, ["mkdir", "-p", "/home/user"], timeout_s=30)
            if made.exit_code != 0:
                raise ProviderError(f"mkdir /home/user failed: {made.stderr!r}")
        except BaseException:
            await self.local.destroy(local)
            raise
        box.local = local
        self.boxes[box.id] = box
        return web.json_response(self._sandbox_dto(box), status=201)

    async def list(self, request: web.Request) -> web.Response:
        wanted: dict[str, str] = {}
        raw = request.query.get("metadata")
        if raw:
            # The SDK quotes each key and value, then urlencodes the pairs.
            wanted = {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}
        states = {s for s in request.query.get("state", "").split(",") if s}
        if not states:
            states = {"running", "paused"}
        template = request.query.get("template")
        try:
            limit = int(request.query.get("limit") or 100)
            offset = int(request.query.get("nextToken") or 0)
        except ValueError:
            return api_error(400, "limit and nextToken must be integers")
        if not 1 <= limit <= 100:
            return api_error(400, "limit must be between 1 and 100")
        order = request.query.get("order", "desc")
        matching = sorted(
            (
                box
                for box in self.boxes.values()
                if box.state in states
                and all(box.metadata.get(k) == v for k, v in wanted.items())
                and (not template or box.template_id == template)
            ),
            key=lambda b: (b.started_at, b.id),
            reverse=order != "asc",
        )
        page = matching[offset : offset + limit]
        response = web.json_response([self._listed_dto(box) for box in page])
        if offset + limit < len(matching):
            response.headers["x-next-token"] = str(offset + limit)
        return response

    async def get(self, request: web.Request) -> web.Response:
        box = self.boxes.get(request.match_info["sid"])
        if box is None:
            return _no_such_sandbox(request)
        return web.json_response({**self._listed_dto(box), "envdAccessToken": box.access_token})

    async def kill(self, request: web.Request) -> web.Response:
        box = self.boxes.pop(request.match_info["sid"], None)
        if box is None:
            return _no_such_sandbox(request)
        async with box.lock:
            await self._destroy_box(box)
        return web.Response(status=204)

    async def _destroy_box(self, box: Box) -> None:
        if box.local is not None:
            local, box.local = box.local, None
            await self.local.destroy(local)
        if box.paused_ref is not None:
            ref, box.paused_ref = box.paused_ref, None
            await self.local.delete_checkpoint(ref)

    async def pause(self, request: web.Request) -> web.Response:
        box = self.boxes.get(request.match_info["sid"])
        if box is None:
            return _no_such_sandbox(request)
        body = await self._json_body(request)
        if body is None:
            return api_error(400, "Invalid request body")
        async with box.lock:
            if box.state == "paused":
                return api_error(409, f'sandbox "{box.id}" is already paused')
            await self._pause(box, keep_memory=body.get("memory", True) is not False)
        return web.Response(status=204)

    async def _pause(self, box: Box, *, keep_memory: bool) -> None:
        assert box.local is not None
        if keep_memory:
            await self.local.pause(box.local)
        else:
            ref = await self.local.checkpoint(box.local)
            local, box.local = box.local, None
            box.paused_ref = ref
            await self.local.destroy(local)
        box.state = "paused"

    async def connect(self, request: web.Request) -> web.Response:
        box = self.boxes.get(request.match_info["sid"])
        if box is None:
            return _no_such_sandbox(request)
        body = await self._json_body(request)
        if body is None:
            return api_error(400, "Invalid request body")
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or timeout < 0):
            return api_error(400, "timeout must be a non-negative integer")
        async with box.lock:
            if box.state == "running":
                # A running sandbox's timeout only ever grows on connect.
                if timeout is not None:
                    wanted = datetime.now(UTC) + timedelta(seconds=timeout)
                    if wanted > box.end_at:
                        box.extend(timeout)
                return web.json_response(self._sandbox_dto(box), status=200)
            if box.paused_ref is not None:
                ref = box.paused_ref
                box.local = await self.local.restore(ref)
                box.paused_ref = None
                await self.local.delete_checkpoint(ref)
            else:
                assert box.local is not None
                await self.local.resume(box.local)
            box.state = "running"
            box.extend(timeout if timeout is not None else DEFAULT_TIMEOUT_S)
        return web.json_response(self._sandbox_dto(box), status=201)

    async def set_timeout(self, request: web.Request) -> web.Response:
        box = self.boxes.get(request.match_info["sid"])
        if box is None:
            return _no_such_sandbox(request)
        body = await self._json_body(request)
        timeout = (body or {}).get("timeout")
        if not isinstance(timeout, int) or timeout < 0:
            return api_error(400, "timeout must be a non-negative integer")
        box.extend(timeout)
        return web.Response(status=204)

    async def snapshot(self, request: web.Request) -> web.Response:
        box = self.boxes.get(request.match_info["sid"])
        if box is None:
            return _no_such_sandbox(request)
        body = await self._json_body(request)
        if body is None:
            return api_error(400, "Invalid request body")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            return api_error(400, "name must be a non-empty string")
        async with box.lock:
            if box.state != "running" or box.local is None:
                return api_error(409, f'sandbox "{box.id}" is paused; resume it first')
            ref = await self.local.checkpoint(box.local)
        existing = next((s for s in self.snapshots.values() if name and name in s.names), None)
        if existing is not None:
            # A name already taken gets a new build of the same snapshot template.
            old, existing.ref = existing.ref, ref
            existing.source_sandbox_id = box.id
            await self.local.delete_checkpoint(old)
            snap = existing
        else:
            snap = Snap(
                id=_new_id(), names=[name] if name else [], source_sandbox_id=box.id, ref=ref
            )
            self.snapshots[snap.id] = snap
        return web.json_response({"snapshotID": snap.id, "names": snap.names}, status=201)

    async def list_snapshots(self, request: web.Request) -> web.Response:
        source = request.query.get("sandboxID")
        name = request.query.get("name")
        found = [
            {"snapshotID": s.id, "names": s.names}
            for s in self.snapshots.values()
            if (not source or s.source_sandbox_id == source)
            and (not name or name == s.id or name in s.names)
        ]
        return web.json_response(found)

    async def delete_template(self, request: web.Request) -> web.Response:
        key = unquote(request.match_info["tid"])
        snap = self.snapshots.get(key) or next(
            (s for s in self.snapshots.values() if key in s.names), None
        )
        if snap is None:
            return api_error(404, f"template '{key}' not found")
        self.snapshots.pop(snap.id, None)
        await self.local.delete_checkpoint(snap.ref)
        return web.Response(status=204)

    async def _reap_expired(self) -> None:
        """Kill (or pause, with ``autoPause``) running sandboxes whose timeout passed."""
        while True:
            await asyncio.sleep(0.5)
            now = datetime.now(UTC)
            for box in list(self.boxes.values()):
                if box.state != "running" or box.end_at > now or box.lock.locked():
                    continue
                try:
                    async with box.lock:
                        if box.auto_pause:
                            await self._pause(box, keep_memory=True)
                        else:
                            self.boxes.pop(box.id, None)
                            await self._destroy_box(box)
                except Exception as exc:  # noqa: BLE001 - one bad sandbox must not stop the reaper
                    print(f"e2b emulator: expiring {box.id} failed: {exc}", file=sys.stderr)

    # -- envd -------------------------------------------------------------------------------

    def _envd_box(self, request: web.Request, *, rpc: bool = False) -> Box | web.Response:
        """The running sandbox an envd request is for, or the answer that refuses it."""
        sandbox_id = request.headers.get("E2b-Sandbox-Id", "")
        if not sandbox_id:
            return api_error(400, "missing E2b-Sandbox-Id header")
        box = self.boxes.get(sandbox_id)
        if box is None or box.state != "running" or box.local is None:
            return proxy_not_found(sandbox_id)
        if request.headers.get("X-Access-Token") != box.access_token:
            message = "unauthorized access, please provide a valid access token"
            return (
                connect_error(401, "unauthenticated", message) if rpc else api_error(401, message)
            )
        return box

    @staticmethod
    def _user(request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
                if user:
                    return user
        return request.query.get("username") or "user"

    @staticmethod
    def _home(user: str) -> str:
        return "/root" if user == "root" else f"/home/{user}"

    def _resolve(self, path: str, user: str) -> str:
        return posixpath.normpath(
            path if path.startswith("/") else posixpath.join(self._home(user), path)
        )

    async def health(self, request: web.Request) -> web.Response:
        box = self._envd_box(request)
        return box if isinstance(box, web.Response) else web.Response(status=204)

    async def rpc_unimplemented(self, request: web.Request) -> web.Response:
        box = self._envd_box(request, rpc=True)
        if isinstance(box, web.Response):
            return box
        return connect_error(501, "unimplemented", f"{request.path} is not emulated")

    async def process_start(self, request: web.Request) -> web.StreamResponse:
        box = self._envd_box(request, rpc=True)
        if isinstance(box, web.Response):
            return box
        assert box.local is not None
        if not request.headers.get("Content-Type", "").startswith(CONNECT_JSON):
            return connect_error(415, "unimplemented", "expected application/connect+json")
        raw = await request.read()
        try:
            flags, length = ENVELOPE.unpack_from(raw)
            start = json.loads(raw[ENVELOPE.size : ENVELOPE.size + length])
            process = start["process"]
            cmd = process["cmd"]
            args = [str(a) for a in process.get("args") or []]
        except (struct.error, ValueError, KeyError, TypeError):
            return connect_error(400, "invalid_argument", "malformed StartRequest")
        if flags & 0x01:
            return connect_error(400, "invalid_argument", "compressed messages are not accepted")
        if process.get("pty") or start.get("pty"):
            return connect_error(501, "unimplemented", "PTY is not emulated")
        user = self._user(request)
        home = self._home(user)
        cwd = self._resolve(process.get("cwd") or home, user)
        envs = {
            **box.env_vars,
            "HOME": home,
            "USER": user,
            "LOGNAME": user,
            **{str(k): str(v) for k, v in (process.get("envs") or {}).items()},
        }
        deadline_ms = request.headers.get("Connect-Timeout-Ms")
        try:
            budget_s = int(deadline_ms) / 1000.0 if deadline_ms else NO_DEADLINE_S
        except ValueError:
            return connect_error(400, "invalid_argument", "bad connect-timeout-ms")
        argv = [
            "/bin/sh",
            "-c",
            'cd -- "$0" || exit 1; exec "$@"',
            cwd,
            "env",
            *(f"{k}={v}" for k, v in envs.items()),
            str(cmd),
            *args,
        ]
        self.next_pid += 1
        pid = self.next_pid
        response = web.StreamResponse(status=200, headers={"Content-Type": CONNECT_JSON})
        await response.prepare(request)
        send = _Sender(response)
        await send.message({"event": {"start": {"pid": pid}}})
        task = asyncio.get_running_loop().create_task(
            self.local.exec(box.local, argv, timeout_s=budget_s)
        )
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
                if done:
                    break
                await send.message({"event": {"keepalive": {}}})
            try:
                result = task.result()
            except OperationTimeout:
                await send.end(
                    {"code": "deadline_exceeded", "message": "context deadline exceeded"}
                )
                return response
            except (NotFound, ProviderError) as exc:
                await send.end(
                    {
                        "code": "unavailable",
                        "message": f"the connection to sandbox {box.id} ended before the "
                        f"stream completed: {exc}",
                    }
                )
                return response
            for stream, data in (("stdout", result.stdout), ("stderr", result.stderr)):
                for offset in range(0, len(data), CHUNK):
                    chunk = base64.b64encode(data[offset : offset + CHUNK]).decode()
                    await send.message({"event": {"data": {stream: chunk}}})
            if result.exit_code >= 0:
                end = {"exitCode": result.exit_code, "exited": True,
                       "status": f"exit status {result.exit_code}"}  # fmt: skip
            else:
                end = {"exitCode": -1, "exited": False, "status": f"signal: {-result.exit_code}"}
            await send.message({"event": {"end": end}})
            await send.end(None)
        except (ConnectionResetError, asyncio.CancelledError):
            # The client went away (its own deadline, or cancelled): let the command finish
            # on its budget and drop the answer.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        return response

    async def read_file(self, request: web.Request) -> web.StreamResponse:
        box = self._envd_box(request)
        if isinstance(box, web.Response):
            return box
        assert box.local is not None
        raw = request.query.get("path")
        if not raw:
            return api_error(400, "path is required")
        path = self._resolve(raw, self._user(request))
        try:
            data = await self.local.read_file(box.local, path)
        except NotFound:
            return api_error(404, f"path '{path}' does not exist")
        except ProviderError as exc:
            return api_error(400, f"cannot read '{path}': {exc}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def write_file(self, request: web.Request) -> web.Response:
        box = self._envd_box(request)
        if isinstance(box, web.Response):
            return box
        assert box.local is not None
        user = self._user(request)
        query_path = request.query.get("path")
        uploads: list[tuple[str, bytes]] = []
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if getattr(part, "name", None) != "file":
                    continue
                # aiohttp's part.filename drops a leading "/": read the header itself.
                disposition = part.headers.get("Content-Disposition", "")  # type: ignore[union-attr]
                match = re.search(r'filename="((?:[^"\\]|\\.)*)"', disposition)
                filename = match.group(1) if match else ""
                data = bytes(await part.read())  # type: ignore[union-attr]
                uploads.append((query_path or filename, data))
        elif content_type.startswith("application/octet-stream"):
            data = await request.read()
            if request.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError):
                    return api_error(400, "body is not valid gzip")
            uploads.append((query_path or "", data))
        else:
            return api_error(400, f"unsupported content type '{content_type}'")
        if not uploads:
            return api_error(400, "no file in the request")
        written = []
        for raw, data in uploads:
            if not raw:
                return api_error(400, "path is required")
            path = self._resolve(raw, user)
            try:
                await self.local.write_file(box.local, path, data)
            except ProviderError as exc:
                return api_error(400, f"cannot write '{path}': {exc}")
            written.append({"name": posixpath.basename(path), "type": "file", "path": path})
        return web.json_response(written)

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            with contextlib.suppress(BaseException):
                await self.reaper
        for box in list(self.boxes.values()):
            self.boxes.pop(box.id, None)
            with contextlib.suppress(Exception):
                await self._destroy_box(box)
        for snap in list(self.snapshots.values()):
            with contextlib.suppress(Exception):
                await self.local.delete_checkpoint(snap.ref)
        self.snapshots.clear()
        await self.local.close()


class _Sender:
    """Writes Connect envelopes (``[flags u8][len u32 BE][JSON]``) to a streaming answer."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    async def message(self, payload: dict[str, Any]) -> None:
        await self._write(0x00, payload)

    async def end(self, error: dict[str, str] | None) -> None:
        await self._write(END_STREAM, {"error": error} if error else {})
        await self._response.write_eof()

    async def _write(self, flags: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        await self._response.write(ENVELOPE.pack(flags, len(data)) + data)


# -- process entry point ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    run_emulator("e2b", E2BEmulator, api_error, malformed, client_env, argv)


if __name__ == "__main__":
    main()
