"""Daytona's wire protocol: the control-plane API and the sandbox toolbox (daemon), on the toolkit.

``client_env`` sets ``DAYTONA_API_URL=http://127.0.0.1:PORT/api`` (and polling, see below).

Wire protocol, as ``daytona`` 0.226.1 speaks it (research/sdk-protocols.md §3):

* Control plane under ``/api`` (``Authorization: Bearer <token>``, else 401 with the API's
  error body ``{"statusCode", "message", "error", "timestamp", "path"}``):
  ``POST /sandbox``, ``GET /sandbox`` (``?labels=<json>``; ``{"items", "nextCursor"}``),
  ``GET|DELETE /sandbox/{idOrName}``, ``POST /sandbox/{id}/start|stop|pause|snapshot``,
  ``POST /sandbox/{idOrName}/fork`` (``{"name"?}``; the child's DTO, ``creating``),
  ``GET /sandbox/{id}/toolbox-proxy-url``, ``GET|DELETE /snapshots/{idOrName}``,
  ``GET /snapshots`` (``?page=&limit=&name=&sourceSandboxId=``; ``{"items", "total", "page",
  "totalPages"}``).
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

Semantics, each emulated sandbox being a toolkit sandbox (a real ``local`` one by default):

* create boots a sandbox (from the snapshot's filesystem when ``snapshot`` names a
  snapshot taken here) and creates ``/home/daytona``; the image path (``buildInfo``) is
  accepted but the image is not built: the backend's root filesystem is used.
* ``snapshot`` is a toolkit (filesystem-only) checkpoint; the sandbox keeps running and goes
  back to ``started``; the snapshot reads ``pending`` until it is ``active`` (for ever under the
  ``snapshot-pending`` semantic fault, toolkit ``Misbehaving``). ``includeMemory`` true is
  refused (400).
* ``stop`` keeps the filesystem only (the toolkit's stop: no process survives); ``start``
  boots it again behind the same Daytona id. (The local sandbox's /tmp is a private tmpfs,
  so unlike a real Daytona container, /tmp does not survive stop/start here; /home/daytona
  does.)
* ``pause`` freezes the sandbox (processes and memory kept) and ``start`` thaws it. As on
  Daytona, only VM-class sandboxes can pause: those created from a snapshot whose name starts
  with ``linux-vm`` (or from a snapshot of one); container sandboxes get 400.
* ``DELETE`` destroys at once (``destroyed``); afterwards the id is unknown (404).
* ``fork`` (of a ``started`` sandbox; 409 while it changes state, 400 otherwise; 409 for a
  taken name) takes a toolkit checkpoint of the parent before it answers, then boots the
  child from it in the background (``creating``, then ``started``) and deletes the
  checkpoint: the child starts with the parent's files (a copy here, not copy-on-write) and
  no processes, with a new id, the given name or its id, and the parent's labels, env,
  snapshot, class and sizes (the SDK reads the child's labels from this answer; whether
  Daytona copies them is not documented). Any class may fork here.

Not emulated: the socket.io event stream (clients must poll: ``DAYTONA_USE_DEPRECATED_POLLING``),
sessions, PTY, git, LSP, computer use, code_run, volumes, previews, archive, resize,
snapshot creation from images, pagination beyond one page, regions, quotas and billing.
"""

from __future__ import annotations

import io
import json
import posixpath
import secrets
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import (
    Box,
    Protocol,
    Refused,
    Snapshot,
    broken_framing,
    iso,
    json_object,
    undecodable_gzip,
    utc_now,
)
from providers.base import SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError

API = "/api"
TOOLBOX = "/toolbox"
HOME = "/home/daytona"
ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEFAULT_SNAPSHOT = "daytonaio/sandbox:emulated"
VM_SNAPSHOT_PREFIX = "linux-vm"


def api_error(status: int, message: str, path: str = "") -> web.Response:
    """The API's error body (NestJS AllExceptionsFilter); injected faults answer it too."""
    body = {"statusCode": status, "timestamp": utc_now(), "path": path,
            "error": HTTPStatus(status).phrase, "message": message}  # fmt: skip
    return web.json_response(body, status=status)


def _daemon_body(status: int, message: str, code: str | None, path: str, source: str) -> dict:
    body: dict[str, Any] = {"statusCode": status, "message": message, "source": source,
                            "timestamp": utc_now(), "path": path, "method": "POST"}  # fmt: skip
    if code:
        body["code"] = code
    return body


def daemon_error(
    status: int, message: str, path: str = "", code: str | None = None, *, source: str = ""
) -> web.Response:
    """The toolbox daemon's (or the proxy's in front of it) error body."""
    body = _daemon_body(status, message, code, path, source or "DAYTONA_DAEMON")
    return web.json_response(body, status=status)


@dataclass(eq=False, kw_only=True)
class DaytonaSnapshot(Snapshot):
    sandbox_class: str
    cpu: int
    memory: int
    disk: int


@dataclass(eq=False, kw_only=True)
class DaytonaBox(Box):
    name: str
    labels: dict[str, str]
    env: dict[str, str]
    snapshot: str
    sandbox_class: str
    cpu: int
    memory: int
    disk: int
    body: dict[str, Any]


class DaytonaEmulator(Protocol):
    name = "daytona"
    shell: str | None = None
    #: A body that claims gzip and is not for the multipart file download; an unparseable
    #: header block for the upload and a snapshot's delete (see :meth:`malformed`); truncated
    #: JSON else.
    malformed_answers = (
        ("/files/bulk-download", undecodable_gzip),
        ("/files/bulk-upload", broken_framing),
    )

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {
            "DAYTONA_API_KEY": token,
            "DAYTONA_API_URL": f"{url}{API}",
            # The emulator has no socket.io endpoint; the SDK must observe state by polling.
            "DAYTONA_USE_DEPRECATED_POLLING": "true",
        }

    def error(self, status: int, message: str) -> web.Response:
        return api_error(status, message)

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        # The SDK ignores what a snapshot's delete answers (``remove_snapshot`` has no response
        # type: the body is read and dropped), so truncated JSON there would pass for "deleted"
        # while the fault, which comes before the call is done, kept the snapshot.
        if request.method == "DELETE" and request.path.startswith(f"{API}/snapshots/"):
            return await broken_framing(request)
        return await super().malformed(request)

    def unauthorized(self, request: web.Request) -> web.Response:
        return api_error(401, "Unauthorized", request.path)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{API}/sandbox", self.create)
        router.add_get(f"{API}/sandbox", self.list)
        router.add_get(f"{API}/sandbox/{{sid}}", self.get)
        router.add_delete(f"{API}/sandbox/{{sid}}", self.delete)
        for action in ("start", "stop", "pause", "snapshot"):
            router.add_post(f"{API}/sandbox/{{sid}}/{action}", getattr(self, action))
        router.add_post(f"{API}/sandbox/{{sid}}/fork", self.fork)
        router.add_get(f"{API}/sandbox/{{sid}}/toolbox-proxy-url", self.toolbox_url)
        router.add_get(f"{API}/snapshots", self.list_snapshots)
        router.add_get(f"{API}/snapshots/{{ref}}", self.get_snapshot)
        router.add_delete(f"{API}/snapshots/{{ref}}", self.delete_snapshot)
        router.add_post(f"{TOOLBOX}/{{sid}}/process/execute", self.execute)
        router.add_post(f"{TOOLBOX}/{{sid}}/files/bulk-upload", self.upload)
        router.add_post(f"{TOOLBOX}/{{sid}}/files/bulk-download", self.download)

    # -- DTOs -------------------------------------------------------------------------------

    @staticmethod
    def _toolbox_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{TOOLBOX}"

    def _dto(self, box: DaytonaBox, request: web.Request, *, listing: bool = False) -> dict:
        body = box.body
        dto: dict[str, Any] = {
            "id": box.id, "organizationId": ORGANIZATION_ID, "name": box.name,
            "snapshot": box.snapshot, "user": "daytona", "labels": box.labels,
            "public": bool(body.get("public") or False), "networkBlockAll": False,
            "target": body.get("target") or "us", "cpu": box.cpu, "gpu": 0,
            "memory": box.memory, "disk": box.disk, "state": box.state,
            "errorReason": box.error, "recoverable": False, "backupState": "None",
            "autoStopInterval": body.get("autoStopInterval", 15),
            "autoPauseInterval": body.get("autoPauseInterval", 0),
            "autoArchiveInterval": body.get("autoArchiveInterval", 10080),
            "autoDeleteInterval": body.get("autoDeleteInterval", -1),
            "createdAt": iso(box.created), "updatedAt": iso(box.updated),
            "lastActivityAt": iso(box.updated), "sandboxClass": box.sandbox_class,
            "daemonVersion": "emulated", "runnerId": "emulator-runner",
            "toolboxProxyUrl": self._toolbox_url(request),
        }  # fmt: skip
        if not listing:
            dto.update({"env": box.env, "kvm": False, "volumes": []})
            if body.get("buildInfo"):
                build = body["buildInfo"]
                dto["buildInfo"] = {
                    "dockerfileContent": build.get("dockerfileContent", ""),
                    "contextHashes": build.get("contextHashes") or [],
                    "createdAt": iso(box.created), "updatedAt": iso(box.created),
                    "snapshotRef": "emulated",
                }  # fmt: skip
        return dto

    @staticmethod
    def _snapshot_dto(snap: DaytonaSnapshot) -> dict[str, Any]:
        return {
            "id": snap.id, "organizationId": ORGANIZATION_ID, "general": False,
            "name": snap.names[0], "imageName": snap.names[0], "state": snap.state,
            "size": None, "entrypoint": None, "cpu": snap.cpu, "gpu": 0, "mem": snap.memory,
            "disk": snap.disk, "errorReason": snap.error, "createdAt": snap.created_at,
            "updatedAt": snap.updated_at, "lastUsedAt": None, "sourceSandboxId": snap.source_id,
            "sandboxClass": snap.sandbox_class,
        }  # fmt: skip

    def _find(self, key: str) -> DaytonaBox | None:
        box = self.sandboxes.get(key)
        if not isinstance(box, DaytonaBox):
            found = (b for b in self.sandboxes.held() if getattr(b, "name", None) == key)
            box = next(found, None)
        return box if isinstance(box, DaytonaBox) else None

    def _lookup(self, request: web.Request) -> DaytonaBox:
        box = self._find(request.match_info["sid"])
        if box is None:
            raise Refused(api_error(404, "Sandbox not found", request.path))
        return box

    def _snapshot(self, request: web.Request) -> DaytonaSnapshot:
        key = request.match_info["ref"]
        snap = self.sandboxes.find_snapshot(key)
        if not isinstance(snap, DaytonaSnapshot):
            raise Refused(api_error(404, f"Snapshot {key} not found", request.path))
        return snap

    @staticmethod
    async def _body(request: web.Request, invalid: Callable[[], web.Response]) -> dict[str, Any]:
        return await json_object(request, invalid)

    # -- transitions (the toolkit's: they finish in the background while the SDK polls) -----

    @staticmethod
    def _refuse(box: DaytonaBox, request: web.Request, *states: str) -> None:
        """409 while a transition runs; 400 unless ``box`` is in one of ``states``."""
        if box.busy is not None:
            message = f"Sandbox state change in progress (state: {box.state})"
            raise Refused(api_error(409, message, request.path))
        if states and box.state not in states:
            message = f"Sandbox is not started (state: {box.state})"
            raise Refused(api_error(400, message, request.path))

    # -- control plane ----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request, lambda: api_error(400, "invalid JSON body", request.path))
        snapshot_name = body.get("snapshot") or None
        base: DaytonaSnapshot | None = None
        if snapshot_name and not snapshot_name.startswith(VM_SNAPSHOT_PREFIX):
            found = self.sandboxes.find_snapshot(snapshot_name)
            if not isinstance(found, DaytonaSnapshot) or found.ref is None:
                return api_error(404, f"Snapshot {snapshot_name} not found", request.path)
            base = found
        name = body.get("name")
        if name and self._find(name) is not None:
            return api_error(409, f"Sandbox with name {name} already exists", request.path)
        box_id = str(uuid.uuid4())
        sandbox_class = base.sandbox_class if base else "linux-vm" if snapshot_name else "container"
        box = DaytonaBox(
            id=box_id, name=name or box_id, body=body,
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            snapshot=snapshot_name or DEFAULT_SNAPSHOT, sandbox_class=sandbox_class,
            cpu=int(body.get("cpu") or (base.cpu if base else 1)),
            memory=int(body.get("memory") or (base.memory if base else 1)),
            disk=int(body.get("disk") or (base.disk if base else 3)),
        )  # fmt: skip
        self.sandboxes.add(box)
        spec = SandboxSpec(cpus=float(box.cpu), memory_mb=box.memory * 1024)
        source = base.ref if base else None
        self.booting(box, "creating", "started", spec, home=HOME, source=source)
        return web.json_response(self._dto(box, request))

    async def fork(self, request: web.Request) -> web.Response:
        parent = self._lookup(request)
        body = await self._body(request, lambda: api_error(400, "invalid JSON body", request.path))
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            return api_error(400, "name must be a non-empty string", request.path)
        if name and self._find(name) is not None:
            return api_error(409, f"Sandbox with name {name} already exists", request.path)
        self._refuse(parent, request, "started")
        try:
            ref = await self.sandboxes.checkpoint(parent)
        except ProviderError as exc:
            return api_error(500, f"failed to fork sandbox: {exc}", request.path)
        box_id = str(uuid.uuid4())
        child = DaytonaBox(
            id=box_id, name=name or box_id, body=dict(parent.body), labels=dict(parent.labels),
            env=dict(parent.env), snapshot=parent.snapshot, sandbox_class=parent.sandbox_class,
            cpu=parent.cpu, memory=parent.memory, disk=parent.disk,
        )  # fmt: skip
        self.sandboxes.add(child)
        spec = SandboxSpec(cpus=float(child.cpu), memory_mb=child.memory * 1024)

        async def boot() -> None:
            try:
                await self.sandboxes.boot(child, spec, home=HOME, source=ref)
            finally:
                await self.sandboxes.delete_checkpoint(ref)

        self.transition(child, "creating", boot, "started")
        return web.json_response(self._dto(child, request))

    async def list(self, request: web.Request) -> web.Response:
        wanted: dict[str, str] = {}
        if raw := request.query.get("labels"):
            try:
                wanted = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                return api_error(400, "labels must be a JSON object", request.path)
        states = set(request.query.getall("states", []))
        items = [
            self._dto(box, request, listing=True)
            for box in self.sandboxes.listed(DaytonaBox)
            if all(box.labels.get(k) == v for k, v in wanted.items())
            and (not states or box.state in states)
        ]
        return web.json_response({"items": items, "nextCursor": None})

    async def get(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        return web.json_response(self._dto(box, request))

    async def toolbox_url(self, request: web.Request) -> web.Response:
        self._lookup(request)
        return web.json_response({"url": self._toolbox_url(request)})

    async def delete(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        if await self.destroy(box):  # not when a destroy leaks (a semantic fault)
            box.set_state("destroyed")
        return web.json_response(self._dto(box, request))

    async def stop(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        if box.state == "stopped" and box.busy is None:
            return web.json_response(self._dto(box, request))
        self._refuse(box, request, "started", "paused")
        # Only the filesystem outlives a stop (a paused sandbox is thawed first).
        self.transition(box, "stopping", lambda: self.sandboxes.stop(box), "stopped")
        return web.json_response(self._dto(box, request))

    async def start(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        if box.state == "started" and box.busy is None:
            return web.json_response(self._dto(box, request))
        self._refuse(box, request)
        if box.state == "stopped" and box.parked is not None:
            work = self.sandboxes.start
        elif box.state == "paused" and box.local is not None:
            work = self.sandboxes.thaw
        else:
            message = f"Sandbox cannot be started (state: {box.state})"
            return api_error(400, message, request.path)
        self.transition(box, "starting", lambda: work(box), "started")
        return web.json_response(self._dto(box, request))

    async def pause(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        if box.sandbox_class != "linux-vm":
            message = (
                f"Pause is not supported for sandbox class {box.sandbox_class}; use stop instead"
            )
            return api_error(400, message, request.path)
        if box.state == "paused" and box.busy is None:
            return web.json_response(self._dto(box, request))
        self._refuse(box, request, "started")
        self.transition(box, "pausing", lambda: self.sandboxes.freeze(box), "paused")
        return web.json_response(self._dto(box, request))

    async def snapshot(self, request: web.Request) -> web.Response:
        box = self._lookup(request)
        body = await self._body(request, lambda: api_error(400, "invalid JSON body", request.path))
        name = body.get("name")
        if not name:
            return api_error(400, "name is required", request.path)
        if body.get("includeMemory"):
            return api_error(400, "memory snapshots are not supported here", request.path)
        if self.sandboxes.find_snapshot(name) or name.startswith(VM_SNAPSHOT_PREFIX):
            return api_error(409, f"Snapshot {name} already exists", request.path)
        self._refuse(box, request, "started")
        snap = self.sandboxes.add_snapshot(
            DaytonaSnapshot(
                id=str(uuid.uuid4()), names=[name], source_id=box.id, cpu=box.cpu,
                memory=box.memory, disk=box.disk, sandbox_class=box.sandbox_class,
            )
        )  # fmt: skip
        self.transition(box, "snapshotting", lambda: self.sandboxes.take(snap, box), "started")
        return web.json_response(self._dto(box, request))

    async def list_snapshots(self, request: web.Request) -> web.Response:
        """``GET /snapshots?page=&limit=&name=&sourceSandboxId=``: a page of the snapshots
        (``name`` a partial match, as the API's), oldest first."""
        try:
            page = int(request.query.get("page", "1"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return api_error(400, "page and limit must be integers", request.path)
        if page < 1 or not 1 <= limit <= 200:
            return api_error(400, "page must be >= 1 and limit from 1 to 200", request.path)
        name, source = request.query.get("name"), request.query.get("sourceSandboxId")
        found = [
            s for s in self.sandboxes.snapshots()
            if isinstance(s, DaytonaSnapshot) and (not name or name in s.names[0])
            and (not source or s.source_id == source)
        ]  # fmt: skip
        items, _ = kit.offset_page(found, (page - 1) * limit, limit)
        return web.json_response({
            "items": [self._snapshot_dto(s) for s in items], "total": len(found),
            "page": page, "totalPages": max(1, -(-len(found) // limit)),
        })  # fmt: skip

    async def get_snapshot(self, request: web.Request) -> web.Response:
        snap = self._snapshot(request)
        return web.json_response(self._snapshot_dto(snap))

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        snap = self._snapshot(request)
        await self.sandboxes.drop_snapshot(snap)
        return web.Response(status=200)

    # -- toolbox ----------------------------------------------------------------------------

    def _running(self, request: web.Request) -> DaytonaBox:
        box = self._find(request.match_info["sid"])
        if box is None:
            raise Refused(
                daemon_error(404, "sandbox not found", request.path, source="DAYTONA_PROXY")
            )
        if box.state != "started" or box.local is None:
            message = f"sandbox is not started (state: {box.state})"
            raise Refused(daemon_error(400, message, request.path, source="DAYTONA_PROXY"))
        return box

    async def _shell(self, box: DaytonaBox) -> str:
        if self.shell is None:
            which = ["sh", "-c", "command -v zsh || command -v bash || command -v sh"]
            found = await self.sandboxes.exec(box, which, timeout_s=30)
            self.shell = (found.stdout.decode().strip().splitlines() or ["/bin/sh"])[0]
        return self.shell

    @staticmethod
    def _resolve(path: str) -> str:
        return path if path.startswith("/") else posixpath.join(HOME, path)

    async def execute(self, request: web.Request) -> web.Response:
        box = self._running(request)
        required = lambda: daemon_error(400, "command is required", request.path)  # noqa: E731
        body = await self._body(request, required)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            return required()
        timeout = body.get("timeout")
        cwd = self._resolve(body.get("cwd") or HOME)
        env = {"HOME": HOME, **box.env, **(body.get("envs") or {})}
        # The daemon runs the command in the shell with stdout and stderr on one pipe.
        script = f"exec 2>&1\ncd {shlex.quote(cwd)} || exit 1\n{command}"
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), await self._shell(box), "-c", script]
        try:
            result = await self.sandboxes.exec(box, argv, timeout_s=kit.deadline_s(timeout))
        except OperationTimeout:
            message = (
                f"Command execution timed out after {timeout} seconds. The timeout can be "
                "increased by adjusting the timeout parameter in the request."
            )
            return daemon_error(408, message, request.path)
        except NotFound:
            return daemon_error(404, "sandbox not found", request.path, source="DAYTONA_PROXY")
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        exit_code = result.exit_code if result.exit_code >= 0 else -1
        return web.json_response({"exitCode": exit_code, "result": output})

    async def upload(self, request: web.Request) -> web.Response:
        box = self._running(request)
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
                if dest:
                    dests[index] = dest
                else:
                    errors.append(f"path[{index}]: empty path")
            elif name.endswith(".file"):
                data = bytes(await part.read())  # type: ignore[union-attr]
                if index not in dests:
                    errors.append(f"file[{index}]: missing .path metadata")
                    continue
                try:
                    await self.sandboxes.write_file(box, self._resolve(dests[index]), data)
                except ProviderError as exc:
                    errors.append(f"{dests[index]}: {exc}")
                    continue
                files.append({"path": dests[index], "bytes": len(data)})
        if errors:
            return web.json_response({"errors": errors, "files": files}, status=400)
        return web.json_response({"files": files})

    async def download(self, request: web.Request) -> web.Response:
        box = self._running(request)
        message = 'request body must be {"paths": [ ... ]} and non-empty'
        invalid = lambda: web.json_response({"error": message}, status=400)  # noqa: E731
        paths = (await self._body(request, invalid)).get("paths")
        if not isinstance(paths, list) or not paths:
            return invalid()
        boundary = "DAYTONA-FILE-BOUNDARY-" + secrets.token_hex(8)
        out = io.BytesIO()
        for raw in map(str, paths):
            try:
                data = await self.sandboxes.read_file(box, self._resolve(raw))
                part = ("file", "application/octet-stream", data)
            except ProviderError as exc:
                status, code = (404, "FILE_NOT_FOUND") if isinstance(exc, NotFound) else (400, None)
                message = f"file not found: {raw}" if status == 404 else f"cannot read {raw}: {exc}"
                error = _daemon_body(
                    status, message, code, "/files/bulk-download", "DAYTONA_DAEMON"
                )
                part = ("error", "application/json", json.dumps(error).encode())
            field_name, content_type, payload = part
            disposition = f'form-data; name="{field_name}"; {_filename_param(raw)}'
            out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode())
            out.write(f"Content-Type: {content_type}\r\n\r\n".encode() + payload + b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
        content_type = f"multipart/form-data; boundary={boundary}"
        return web.Response(body=out.getvalue(), headers={"Content-Type": content_type})


def _filename_param(path: str) -> str:
    """The part's filename, byte-exact as requested (the SDK matches parts on it)."""
    if path.isascii() and path.isprintable():
        escaped = path.replace("\\", "\\\\").replace('"', '\\"')
        return f'filename="{escaped}"'
    return "filename*=utf-8''" + quote(path, safe="")
