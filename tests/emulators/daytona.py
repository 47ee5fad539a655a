"""Loopback emulator of Daytona's control-plane API and sandbox toolbox (daemon).

Run: ``python -m tests.emulators.daytona --port 0 --state-dir D [--latency-ms X] [--token T]``.
Point the SDK at it with :func:`client_env` (``DAYTONA_API_URL=http://127.0.0.1:PORT/api``).

Wire protocol, as ``daytona`` 0.226.1 speaks it (research/sdk-protocols.md §3):

* Control plane under ``/api`` (``Authorization: Bearer <token>``, else 401 with the API's
  error body ``{"statusCode", "message", "error", "timestamp", "path"}``):
  ``POST /sandbox``, ``GET /sandbox`` (``?labels=<json>``; ``{"items", "nextCursor"}``),
  ``GET|DELETE /sandbox/{idOrName}``, ``POST /sandbox/{id}/start|stop|pause|snapshot``,
  ``GET /sandbox/{id}/toolbox-proxy-url``, ``GET|DELETE /snapshots/{idOrName}``.
  Lifecycle calls answer at once with the transitional state (``creating``, ``starting``,
  ``stopping``, ``pausing``, ``snapshotting``) and finish in the background, so the SDK's
  wait loops poll ``GET /sandbox/{id}`` as they do against the real service. A second
  transition while one runs is refused with 409.
* Toolbox under ``/toolbox/{sandboxId}`` (every sandbox DTO carries
  ``toolboxProxyUrl = http://127.0.0.1:PORT/toolbox``): ``POST /process/execute`` (the
  command runs in the sandbox's shell, first of zsh/bash/sh, in ``/home/daytona`` unless
  ``cwd`` is given; stdout and stderr combined into ``result`` as the daemon does; output decoded
  as UTF-8 with replacement; ``timeout`` in seconds, 408 with the daemon's error body when it
  runs over), ``POST /files/bulk-upload`` (multipart ``files[i].path`` + ``files[i].file``;
  parents created) and ``POST /files/bulk-download`` (multipart answer, one part per path,
  ``name="file"`` with ``filename`` = the exact requested path, or ``name="error"`` with a
  JSON daemon error, 404 ``FILE_NOT_FOUND`` for a missing file).

Semantics, each emulated sandbox being a real ``local`` sandbox:

* create makes a local sandbox (or restores a local checkpoint when ``snapshot`` names a
  snapshot taken here) and creates ``/home/daytona``; the image path (``buildInfo``) is
  accepted but the image is not built: the local root filesystem is used.
* ``snapshot`` is a local (filesystem-only) checkpoint; the sandbox keeps running and goes
  back to ``started``; the snapshot reads ``pending`` until it is ``active``. ``includeMemory``
  true is refused (400).
* ``stop`` keeps the filesystem only: a local checkpoint, then the local sandbox is destroyed,
  so no process survives; ``start`` restores that checkpoint into a new local sandbox behind the
  same Daytona id. (The local sandbox's /tmp is a private tmpfs, so unlike a real Daytona
  container, /tmp does not survive stop/start here; /home/daytona does.)
* ``pause`` freezes the local sandbox (processes and memory kept) and ``start`` thaws it. As on
  Daytona, only VM-class sandboxes can pause: those created from a snapshot whose name starts
  with ``linux-vm`` (or from a snapshot of one); container sandboxes get 400.
* ``DELETE`` destroys at once (``destroyed``); afterwards the id is unknown (404).

Not emulated: the socket.io event stream (clients must poll: ``DAYTONA_USE_DEPRECATED_POLLING``),
sessions, PTY, git, LSP, computer use, code_run, volumes, previews, fork, archive, resize,
snapshot creation from images, pagination beyond one page, regions, quotas and billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import posixpath
import secrets
import shlex
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from providers.base import CheckpointRef, Sandbox, SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError
from tests.emulators.common import (
    Emulator,
    bearer_auth,
    broken_framing,
    make_backend,
    run_emulator,
    truncated_json,
    undecodable_gzip,
)

API = "/api"
TOOLBOX = "/toolbox"
HOME = "/home/daytona"
ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEFAULT_SNAPSHOT = "daytonaio/sandbox:emulated"
VM_SNAPSHOT_PREFIX = "linux-vm"
#: No timeout sent means none on the daemon; the local sandbox needs a number.
NO_TIMEOUT_S = 24 * 3600.0


def client_env(emulator: Emulator) -> dict[str, str]:
    """Environment that points the daytona adapter (and its SDK) at ``emulator``."""
    return {
        "DAYTONA_API_KEY": emulator.token,
        "DAYTONA_API_URL": f"{emulator.url}{API}",
        # The emulator has no socket.io endpoint; the SDK must observe state by polling.
        "DAYTONA_USE_DEPRECATED_POLLING": "true",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- error bodies -----------------------------------------------------------------------------


def api_error(status: int, message: str, path: str = "") -> web.Response:
    """The API's error body (NestJS AllExceptionsFilter)."""
    return web.json_response(
        {
            "statusCode": status,
            "timestamp": _now(),
            "path": path,
            "error": HTTPStatus(status).phrase,
            "message": message,
        },
        status=status,
    )


def _daemon_body(status: int, message: str, code: str | None, path: str, source: str) -> dict:
    body: dict[str, Any] = {
        "statusCode": status,
        "message": message,
        "source": source,
        "timestamp": _now(),
        "path": path,
        "method": "POST",
    }
    if code:
        body["code"] = code
    return body


def daemon_error(
    status: int, message: str, path: str = "", code: str | None = None, *, source: str = ""
) -> web.Response:
    """The toolbox daemon's (or the proxy's in front of it) error body."""
    body = _daemon_body(status, message, code, path, source or "DAYTONA_DAEMON")
    return web.json_response(body, status=status)


def injected_error(status: int, message: str) -> web.Response:
    return api_error(status, message)


async def malformed(request: web.Request) -> web.StreamResponse:
    """An injected 200 that Daytona's SDK cannot read: a body that claims gzip and is not for
    the multipart file download; an unparseable header block for the upload (the SDK never
    reads its body); truncated JSON everywhere else (every other answer is JSON)."""
    if request.path.endswith("/files/bulk-download"):
        return await undecodable_gzip(request)
    if request.path.endswith("/files/bulk-upload"):
        return await broken_framing(request)
    return await truncated_json(request)


# -- state ------------------------------------------------------------------------------------


@dataclass
class Snap:
    id: str
    name: str
    source_sandbox_id: str
    sandbox_class: str
    cpu: int
    memory: int
    disk: int
    state: str = "pending"
    ref: CheckpointRef | None = None
    error_reason: str | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)


@dataclass
class Box:
    id: str
    name: str
    labels: dict[str, str]
    env: dict[str, str]
    snapshot: str
    sandbox_class: str
    cpu: int
    memory: int
    disk: int
    target: str
    public: bool
    auto_stop: float | int | None
    auto_pause: float | int | None
    auto_archive: float | int | None
    auto_delete: float | int | None
    build_info: dict[str, Any] | None
    state: str = "creating"
    error_reason: str | None = None
    local: Sandbox | None = None
    stopped_ref: CheckpointRef | None = None
    busy: asyncio.Task | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def set_state(self, state: str) -> None:
        self.state = state
        self.updated_at = _now()


class DaytonaEmulator:
    def __init__(self, state_dir: Path, backend: str = "local") -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.local = make_backend(state_dir, backend)
        self.boxes: dict[str, Box] = {}
        self.snapshots: dict[str, Snap] = {}
        self.shell: str | None = None
        self.tasks: set[asyncio.Task] = set()

    async def open(self) -> None:
        await self.local.open()

    def live(self) -> list[str]:
        return sorted(self.boxes)

    # -- routing ----------------------------------------------------------------------------

    def install(self, app: web.Application, token: str) -> None:
        authenticate = bearer_auth(
            token, lambda request: api_error(401, "Unauthorized", request.path)
        )

        app.middlewares.append(authenticate)
        r = app.router
        r.add_post(f"{API}/sandbox", self.create)
        r.add_get(f"{API}/sandbox", self.list)
        r.add_get(f"{API}/sandbox/{{sid}}", self.get)
        r.add_delete(f"{API}/sandbox/{{sid}}", self.delete)
        r.add_post(f"{API}/sandbox/{{sid}}/start", self.start)
        r.add_post(f"{API}/sandbox/{{sid}}/stop", self.stop)
        r.add_post(f"{API}/sandbox/{{sid}}/pause", self.pause)
        r.add_post(f"{API}/sandbox/{{sid}}/snapshot", self.snapshot)
        r.add_get(f"{API}/sandbox/{{sid}}/toolbox-proxy-url", self.toolbox_url)
        r.add_get(f"{API}/snapshots/{{ref}}", self.get_snapshot)
        r.add_delete(f"{API}/snapshots/{{ref}}", self.delete_snapshot)
        r.add_post(f"{TOOLBOX}/{{sid}}/process/execute", self.execute)
        r.add_post(f"{TOOLBOX}/{{sid}}/files/bulk-upload", self.upload)
        r.add_post(f"{TOOLBOX}/{{sid}}/files/bulk-download", self.download)

    # -- DTOs -------------------------------------------------------------------------------

    @staticmethod
    def _toolbox_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{TOOLBOX}"

    def _dto(self, box: Box, request: web.Request, *, listing: bool = False) -> dict[str, Any]:
        dto: dict[str, Any] = {
            "id": box.id,
            "organizationId": ORGANIZATION_ID,
            "name": box.name,
            "snapshot": box.snapshot,
            "user": "daytona",
            "labels": box.labels,
            "public": box.public,
            "networkBlockAll": False,
            "target": box.target,
            "cpu": box.cpu,
            "gpu": 0,
            "memory": box.memory,
            "disk": box.disk,
            "state": box.state,
            "errorReason": box.error_reason,
            "recoverable": False,
            "backupState": "None",
            "autoStopInterval": box.auto_stop,
            "autoPauseInterval": box.auto_pause,
            "autoArchiveInterval": box.auto_archive,
            "autoDeleteInterval": box.auto_delete,
            "createdAt": box.created_at,
            "updatedAt": box.updated_at,
            "lastActivityAt": box.updated_at,
            "sandboxClass": box.sandbox_class,
            "daemonVersion": "emulated",
            "runnerId": "emulator-runner",
            "toolboxProxyUrl": self._toolbox_url(request),
        }
        if not listing:
            dto.update({"env": box.env, "kvm": False, "volumes": []})
            if box.build_info:
                dto["buildInfo"] = {
                    "dockerfileContent": box.build_info.get("dockerfileContent", ""),
                    "contextHashes": box.build_info.get("contextHashes") or [],
                    "createdAt": box.created_at,
                    "updatedAt": box.created_at,
                    "snapshotRef": "emulated",
                }
        return dto

    @staticmethod
    def _snapshot_dto(snap: Snap) -> dict[str, Any]:
        return {
            "id": snap.id,
            "organizationId": ORGANIZATION_ID,
            "general": False,
            "name": snap.name,
            "imageName": snap.name,
            "state": snap.state,
            "size": None,
            "entrypoint": None,
            "cpu": snap.cpu,
            "gpu": 0,
            "mem": snap.memory,
            "disk": snap.disk,
            "errorReason": snap.error_reason,
            "createdAt": snap.created_at,
            "updatedAt": snap.updated_at,
            "lastUsedAt": None,
            "sourceSandboxId": snap.source_sandbox_id,
            "sandboxClass": snap.sandbox_class,
        }

    def _find(self, key: str) -> Box | None:
        box = self.boxes.get(key)
        if box is None:
            box = next((b for b in self.boxes.values() if b.name == key), None)
        return box

    def _find_snapshot(self, key: str) -> Snap | None:
        snap = self.snapshots.get(key)
        if snap is None:
            snap = next((s for s in self.snapshots.values() if s.id == key), None)
        return snap

    # -- background transitions -------------------------------------------------------------

    def _transition(self, box: Box, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - any failure puts the sandbox in error
                box.error_reason = f"{type(exc).__name__}: {exc}"
                box.set_state("error")
            finally:
                box.busy = None

        task = asyncio.get_running_loop().create_task(run())
        box.busy = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- control plane ----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return api_error(400, "invalid JSON body", request.path)
        snapshot_name = body.get("snapshot") or None
        base: Snap | None = None
        if snapshot_name and not snapshot_name.startswith(VM_SNAPSHOT_PREFIX):
            base = self._find_snapshot(snapshot_name)
            if base is None or base.state != "active" or base.ref is None:
                return api_error(404, f"Snapshot {snapshot_name} not found", request.path)
        name = body.get("name")
        if name and self._find(name) is not None:
            return api_error(409, f"Sandbox with name {name} already exists", request.path)
        box_id = str(uuid.uuid4())
        if base is not None:
            sandbox_class = base.sandbox_class
        elif snapshot_name:  # a linux-vm base snapshot
            sandbox_class = "linux-vm"
        else:
            sandbox_class = "container"
        box = Box(
            id=box_id,
            name=name or box_id,
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            snapshot=snapshot_name or DEFAULT_SNAPSHOT,
            sandbox_class=sandbox_class,
            cpu=int(body.get("cpu") or (base.cpu if base else 1)),
            memory=int(body.get("memory") or (base.memory if base else 1)),
            disk=int(body.get("disk") or (base.disk if base else 3)),
            target=body.get("target") or "us",
            public=bool(body.get("public") or False),
            auto_stop=body.get("autoStopInterval", 15),
            auto_pause=body.get("autoPauseInterval", 0),
            auto_archive=body.get("autoArchiveInterval", 10080),
            auto_delete=body.get("autoDeleteInterval", -1),
            build_info=body.get("buildInfo"),
        )
        self.boxes[box_id] = box

        async def work() -> None:
            if base is not None and base.ref is not None:
                local = await self.local.restore(base.ref)
            else:
                spec = SandboxSpec(
                    cpus=float(box.cpu),
                    memory_mb=box.memory * 1024,
                    labels={"daytona-emulator": box.id},
                )
                local = await self.local.create(spec)
            box.local = local
            made = await self.local.exec(local, ["mkdir", "-p", HOME], timeout_s=30)
            if made.exit_code != 0:
                raise ProviderError(f"mkdir {HOME} failed: {made.stderr!r}")
            box.set_state("started")

        self._transition(box, work)
        return web.json_response(self._dto(box, request))

    async def list(self, request: web.Request) -> web.Response:
        wanted: dict[str, str] = {}
        raw = request.query.get("labels")
        if raw:
            try:
                wanted = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                return api_error(400, "labels must be a JSON object", request.path)
        states = set(request.query.getall("states", []))
        items = [
            self._dto(box, request, listing=True)
            for box in self.boxes.values()
            if all(box.labels.get(k) == v for k, v in wanted.items())
            and (not states or box.state in states)
        ]
        return web.json_response({"items": items, "nextCursor": None})

    async def get(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        return web.json_response(self._dto(box, request))

    async def toolbox_url(self, request: web.Request) -> web.Response:
        if self._find(request.match_info["sid"]) is None:
            return api_error(404, "Sandbox not found", request.path)
        return web.json_response({"url": self._toolbox_url(request)})

    async def delete(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        self.boxes.pop(box.id, None)
        await self._destroy_box(box)
        return web.json_response(self._dto(box, request))

    async def _destroy_box(self, box: Box) -> None:
        if box.busy is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(box.busy)
        if box.local is not None:
            await self.local.destroy(box.local)
            box.local = None
        if box.stopped_ref is not None:
            await self.local.delete_checkpoint(box.stopped_ref)
            box.stopped_ref = None
        box.set_state("destroyed")

    def _refuse_busy(self, box: Box, request: web.Request) -> web.Response | None:
        if box.busy is not None:
            return api_error(
                409, f"Sandbox state change in progress (state: {box.state})", request.path
            )
        return None

    async def stop(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        if (refused := self._refuse_busy(box, request)) is not None:
            return refused
        if box.state == "stopped":
            return web.json_response(self._dto(box, request))
        if box.state not in ("started", "paused") or box.local is None:
            return api_error(400, f"Sandbox is not started (state: {box.state})", request.path)
        local = box.local
        was_paused = box.state == "paused"
        box.set_state("stopping")

        async def work() -> None:
            if was_paused:
                await self.local.resume(local)
            # Only the filesystem outlives a stop: keep it, then kill every process.
            ref = await self.local.checkpoint(local)
            await self.local.destroy(local)
            box.local, box.stopped_ref = None, ref
            box.set_state("stopped")

        self._transition(box, work)
        return web.json_response(self._dto(box, request))

    async def start(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        if (refused := self._refuse_busy(box, request)) is not None:
            return refused
        if box.state == "started":
            return web.json_response(self._dto(box, request))
        if box.state == "stopped" and box.stopped_ref is not None:
            ref = box.stopped_ref

            async def work() -> None:
                box.local = await self.local.restore(ref)
                box.stopped_ref = None
                await self.local.delete_checkpoint(ref)
                box.set_state("started")

        elif box.state == "paused" and box.local is not None:
            local = box.local

            async def work() -> None:
                await self.local.resume(local)
                box.set_state("started")

        else:
            return api_error(400, f"Sandbox cannot be started (state: {box.state})", request.path)
        box.set_state("starting")
        self._transition(box, work)
        return web.json_response(self._dto(box, request))

    async def pause(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        if box.sandbox_class != "linux-vm":
            return api_error(
                400,
                f"Pause is not supported for sandbox class {box.sandbox_class}; use stop instead",
                request.path,
            )
        if (refused := self._refuse_busy(box, request)) is not None:
            return refused
        if box.state == "paused":
            return web.json_response(self._dto(box, request))
        if box.state != "started" or box.local is None:
            return api_error(400, f"Sandbox is not started (state: {box.state})", request.path)
        local = box.local
        box.set_state("pausing")

        async def work() -> None:
            await self.local.pause(local)
            box.set_state("paused")

        self._transition(box, work)
        return web.json_response(self._dto(box, request))

    async def snapshot(self, request: web.Request) -> web.Response:
        box = self._find(request.match_info["sid"])
        if box is None:
            return api_error(404, "Sandbox not found", request.path)
        try:
            body = await request.json()
        except ValueError:
            return api_error(400, "invalid JSON body", request.path)
        name = body.get("name")
        if not name:
            return api_error(400, "name is required", request.path)
        if body.get("includeMemory"):
            return api_error(400, "memory snapshots are not supported here", request.path)
        if name in self.snapshots or name.startswith(VM_SNAPSHOT_PREFIX):
            return api_error(409, f"Snapshot {name} already exists", request.path)
        if (refused := self._refuse_busy(box, request)) is not None:
            return refused
        if box.state != "started" or box.local is None:
            return api_error(400, f"Sandbox is not started (state: {box.state})", request.path)
        snap = Snap(
            id=str(uuid.uuid4()),
            name=name,
            source_sandbox_id=box.id,
            sandbox_class=box.sandbox_class,
            cpu=box.cpu,
            memory=box.memory,
            disk=box.disk,
        )
        self.snapshots[name] = snap
        local = box.local
        box.set_state("snapshotting")

        async def work() -> None:
            try:
                snap.ref = await self.local.checkpoint(local)
            except Exception as exc:
                snap.state, snap.error_reason = "error", str(exc)
                raise
            snap.state, snap.updated_at = "active", _now()
            box.set_state("started")

        self._transition(box, work)
        return web.json_response(self._dto(box, request))

    async def get_snapshot(self, request: web.Request) -> web.Response:
        snap = self._find_snapshot(request.match_info["ref"])
        if snap is None:
            return api_error(404, f"Snapshot {request.match_info['ref']} not found", request.path)
        return web.json_response(self._snapshot_dto(snap))

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        snap = self._find_snapshot(request.match_info["ref"])
        if snap is None:
            return api_error(404, f"Snapshot {request.match_info['ref']} not found", request.path)
        self.snapshots.pop(snap.name, None)
        if snap.ref is not None:
            await self.local.delete_checkpoint(snap.ref)
        return web.Response(status=200)

    # -- toolbox ----------------------------------------------------------------------------

    def _running(self, request: web.Request) -> tuple[Box | None, web.Response | None]:
        box = self._find(request.match_info["sid"])
        if box is None:
            return None, daemon_error(
                404, "sandbox not found", request.path, source="DAYTONA_PROXY"
            )
        if box.state != "started" or box.local is None:
            return None, daemon_error(
                400,
                f"sandbox is not started (state: {box.state})",
                request.path,
                source="DAYTONA_PROXY",
            )
        return box, None

    async def _shell(self, local: Sandbox) -> str:
        if self.shell is None:
            found = await self.local.exec(
                local,
                ["sh", "-c", "command -v zsh || command -v bash || command -v sh"],
                timeout_s=30,
            )
            self.shell = found.stdout.decode().strip().splitlines()[0] or "/bin/sh"
        return self.shell

    @staticmethod
    def _resolve(path: str) -> str:
        return path if path.startswith("/") else posixpath.join(HOME, path)

    async def execute(self, request: web.Request) -> web.Response:
        box, refused = self._running(request)
        if refused is not None:
            return refused
        assert box is not None and box.local is not None
        try:
            body = await request.json()
        except ValueError:
            return daemon_error(400, "command is required", request.path)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            return daemon_error(400, "command is required", request.path)
        timeout = body.get("timeout")
        cwd = self._resolve(body.get("cwd") or HOME)
        env = {"HOME": HOME, **box.env, **(body.get("envs") or {})}
        local = box.local
        shell = await self._shell(local)
        # The daemon runs the command in the shell with stdout and stderr on one pipe.
        script = f"exec 2>&1\ncd {shlex.quote(cwd)} || exit 1\n{command}"
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), shell, "-c", script]
        limit = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None
        try:
            result = await self.local.exec(local, argv, timeout_s=limit or NO_TIMEOUT_S)
        except OperationTimeout:
            return daemon_error(
                408,
                f"Command execution timed out after {timeout} seconds. The timeout can be "
                "increased by adjusting the timeout parameter in the request.",
                request.path,
            )
        except NotFound:
            return daemon_error(404, "sandbox not found", request.path, source="DAYTONA_PROXY")
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        exit_code = result.exit_code if result.exit_code >= 0 else -1
        return web.json_response({"exitCode": exit_code, "result": output})

    async def upload(self, request: web.Request) -> web.Response:
        box, refused = self._running(request)
        if refused is not None:
            return refused
        assert box is not None and box.local is not None
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError):
            return web.json_response({"errors": ["invalid multipart form"]}, status=400)
        dests: dict[str, str] = {}
        errors: list[str] = []
        files: list[dict[str, Any]] = []
        while (part := await reader.next()) is not None:
            name = getattr(part, "name", None) or ""
            index = name.removeprefix("files[").removesuffix("].path").removesuffix("].file")
            if name.endswith(".path"):
                dest = (await part.text()).strip()  # type: ignore[union-attr]
                if not dest:
                    errors.append(f"path[{index}]: empty path")
                else:
                    dests[index] = dest
            elif name.endswith(".file"):
                data = bytes(await part.read())  # type: ignore[union-attr]
                if index not in dests:
                    errors.append(f"file[{index}]: missing .path metadata")
                    continue
                dest = dests[index]
                try:
                    await self.local.write_file(box.local, self._resolve(dest), data)
                except ProviderError as exc:
                    errors.append(f"{dest}: {exc}")
                    continue
                files.append({"path": dest, "bytes": len(data)})
        if errors:
            return web.json_response({"errors": errors, "files": files}, status=400)
        return web.json_response({"files": files})

    async def download(self, request: web.Request) -> web.Response:
        box, refused = self._running(request)
        if refused is not None:
            return refused
        assert box is not None and box.local is not None
        try:
            paths = (await request.json())["paths"]
        except (ValueError, KeyError, TypeError):
            paths = None
        if not isinstance(paths, list) or not paths:
            return web.json_response(
                {"error": 'request body must be {"paths": [ ... ]} and non-empty'}, status=400
            )
        boundary = "DAYTONA-FILE-BOUNDARY-" + secrets.token_hex(8)
        out = io.BytesIO()
        for raw in paths:
            raw = str(raw)
            try:
                data = await self.local.read_file(box.local, self._resolve(raw))
            except NotFound:
                part = ("error", "application/json", self._file_error(404, raw, "FILE_NOT_FOUND"))
            except ProviderError as exc:
                part = ("error", "application/json", self._file_error(400, raw, None, exc))
            else:
                part = ("file", "application/octet-stream", data)
            field_name, content_type, payload = part
            out.write(f"--{boundary}\r\n".encode())
            disposition = f'form-data; name="{field_name}"; {_filename_param(raw)}'
            out.write(f"Content-Disposition: {disposition}\r\n".encode("ascii"))
            out.write(f"Content-Type: {content_type}\r\n\r\n".encode())
            out.write(payload)
            out.write(b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        return web.Response(
            body=out.getvalue(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    @staticmethod
    def _file_error(
        status: int, path: str, code: str | None, exc: Exception | None = None
    ) -> bytes:
        message = f"file not found: {path}" if exc is None else f"cannot read {path}: {exc}"
        body = _daemon_body(status, message, code, "/files/bulk-download", "DAYTONA_DAEMON")
        return json.dumps(body).encode()

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
        for box in list(self.boxes.values()):
            self.boxes.pop(box.id, None)
            with contextlib.suppress(Exception):
                await self._destroy_box(box)
        for snap in list(self.snapshots.values()):
            if snap.ref is not None:
                with contextlib.suppress(Exception):
                    await self.local.delete_checkpoint(snap.ref)
        self.snapshots.clear()
        await self.local.close()


def _filename_param(path: str) -> str:
    """The part's filename, byte-exact as requested (the SDK matches parts on it)."""
    if path.isascii() and path.isprintable():
        escaped = path.replace("\\", "\\\\").replace('"', '\\"')
        return f'filename="{escaped}"'
    return "filename*=utf-8''" + quote(path, safe="")


# -- process entry point ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    run_emulator("daytona", DaytonaEmulator, injected_error, malformed, client_env, argv)


if __name__ == "__main__":
    main()
