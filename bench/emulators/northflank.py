"""Northflank's API, as the ``northflank`` 2.1.0 client speaks it, on the toolkit.

``client_env`` sets ``NORTHFLANK_API_BASE_URL=http://127.0.0.1:PORT`` and a project id: the SDK
sends REST calls and the exec WebSocket to that one host, as it does to ``api.northflank.com``.

Wire protocol (research/sdk-vercel-northflank.md §3), under ``/v1`` and ``/v1/teams/{team}``,
``Authorization: Bearer <token>`` on every REST call (else 401), answers ``{"data": ...}``,
errors ``{"error": {"status", "message", "id"}}``:

* ``POST /projects/{p}/services/deployment`` (the name, plan, one instance, an external image,
  tags, ``createOptions.expiryTime``, ``containerSnapshot.restoreFrom`` are checked as the API
  documents them; 409 for a name taken) -> the service, ``PENDING``; its boot runs in the
  background, then ``COMPLETED`` (``FAILED`` if it failed). ``GET .../services/{s}``;
  ``GET .../services/{s}/containers`` -> one container, ``TASK_STARTING`` while it boots, then
  ``TASK_RUNNING`` (``TASK_FAILED``); ``GET .../services?per_page=&cursor=`` -> ``services`` and
  ``pagination {hasNextPage, cursor, count}``; ``DELETE .../services/{s}`` -> ``{}`` once gone
  (it waits for a boot under way: deletion is synchronous here).
* ``POST .../services/{s}/snapshots`` -> 202 ``scheduled`` (409 with no running instance), taken
  in the background, then ``succeeded`` (or ``failed``); ``GET|DELETE /container-snapshots/{id}``.
* WebSocket ``/v1/command-exec[/teams/{t}]/projects/{p}/services/{s}`` (no header auth: the
  token is in the first frame, ``init``; a wrong one gets ``auth: "failed"``). 404 before the
  upgrade for an unknown service, 503 while it has no running instance (a choice: the real
  answer is not documented). Then ``init`` with the instance, ``stdOut``/``stdErr`` frames (64 KiB
  a frame, each one base64 on its own with ``encoding: "base64"``) and ``completion`` with
  ``exitCode`` **as a string**. ``command``: a list runs as given; a string is split (shlex)
  with ``shell: "none"``, else run by that shell.

Semantics (a service is a toolkit sandbox, a real ``local`` one by default): commands run as
root in ``/``, HOME ``/root``. stdin (``payload`` frames) is **buffered until ``stdInEnd``** and
then given to the command as a file: a command never sees input before it ends, and its output
is sent when it exits (stdout first), not as it comes. A snapshot is the toolkit's filesystem
checkpoint; ``restoreFrom`` boots from it. Every image is the backend's root filesystem (nothing
is pulled); the plan sizes the backend sandbox. ``expiryTime`` deletes the service when it
passes (Northflank pauses it, then deletes it). A client that leaves kills its command (not
documented either way). Not emulated: pause/resume/scale, volumes, jobs, logs, ports, TTY,
several instances, rate limits and TLS.

Semantic faults (toolkit ``Misbehaving``): a ``restoreFrom`` create boots from the snapshot
through the toolkit (``restore-empty``/``-partial`` lose files there); under
``snapshot-pending`` a snapshot stays ``scheduled`` (the API has a pending state, so no call
waits for it: its delete answers at once); a delete that leaks (``destroy-leaks``) answers
``{}`` and the service's own calls answer 404 as for a deleted one (the adapter's wait for
the deletion ends), while it runs on and listings show it until it is deleted again;
``list-omits``, ``create-recycled``, ``create-undersized`` and ``wake-slow`` act in the
toolkit's listing, boot and exec; pause and stop are not emulated, so ``pause-runs`` and
``stop-keeps`` have nothing to act on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import shlex
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import Box, Protocol, Refused, Reply, Snapshot, iso
from providers.base import SandboxSpec
from providers.errors import ProviderError

#: The emulator's project id. Not a word the harness writes itself: runs scrub every value of a
#: credential variable (NORTHFLANK_PROJECT_ID among them) from their records.
PROJECT = "prj-emulated"
EXEC = "/v1/command-exec"
NAME = re.compile(r"^[a-zA-Z]((-|\s)?[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*)?$")
TAG = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
#: Deployment plans (vCPU, MiB), as docs/v1/application/billing/resource-plans-and-quotas lists.
PLANS = {f"nf-compute-{p}": s for p, s in {
    "10": (0.1, 256), "20": (0.2, 512), "50": (0.5, 1024), "100-1": (1, 1024),
    "100-2": (1, 2048), "100-4": (1, 4096), "200": (2, 4096), "200-4": (2, 4096),
    "200-8": (2, 8192), "200-16": (2, 16384), "400": (4, 8192), "400-16": (4, 16384),
    "800-8": (8, 8192), "800-16": (8, 16384), "800-24": (8, 24576), "800-32": (8, 32768),
    "800-40": (8, 40960)}.items()}  # fmt: skip
FRAME = 64 * 1024
INIT_WAIT_S = 30.0
#: Runs "$@" with stdin from the file $1, which it removes.
STDIN_FROM = 'f=$1; shift; "$@" < "$f"; rc=$?; rm -f -- "$f"; exit $rc'
CONTAINER = {"PENDING": "TASK_STARTING", "COMPLETED": "TASK_RUNNING", "FAILED": "TASK_FAILED"}
STREAMS = {"stdout": "stdOut", "stderr": "stdErr"}


@dataclass(eq=False, kw_only=True)
class Service(Box):
    FAILED = "FAILED"

    project: str
    name: str
    body: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    uid: str = field(default_factory=lambda: secrets.token_hex(12))
    #: Deleted, yet alive and listed (``destroy-leaks``): gone for all but list and delete.
    leaked: bool = False


@dataclass(eq=False, kw_only=True)
class ContainerSnapshot(Snapshot):
    project: str
    task: asyncio.Task[Any] | None = None

    @property
    def state(self) -> str:  # type: ignore[override]
        return "succeeded" if self.ref else "failed" if self.error else "scheduled"


class NorthflankEmulator(Protocol):
    name = "northflank"
    self_authenticated = (EXEC + "/",)  # the token comes in the first WebSocket frame

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {"NORTHFLANK_API_TOKEN": token, "NORTHFLANK_API_BASE_URL": url,
                "NORTHFLANK_PROJECT_ID": PROJECT}  # fmt: skip

    def error(self, status: int, message: str) -> web.Response:
        slug = {401: "unauthorized", 404: "not-found", 409: "conflict"}.get(status, "error")
        body = {"error": {"status": status, "message": message, "id": slug}}
        return web.json_response(body, status=status)

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        """For the exec WebSocket: the upgrade, then, for the client's init, a frame that is
        not JSON; closed after the client's ``stdInEnd`` (or when the client leaves)."""
        if not request.path.startswith(EXEC + "/"):
            return await super().malformed(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str('{"type": "init", "data": ')
        await self._stdin(ws, False)
        await ws.close()
        return ws

    def routes(self, router: web.UrlDispatcher) -> None:
        for pre in ("/v1", "/v1/teams/{team}"):
            one = pre + "/projects/{project}/services/{service}"
            router.add_post(pre + "/projects/{project}/services/deployment", self.create)
            router.add_get(pre + "/projects/{project}/services", self.list)
            router.add_get(one, self.get)
            router.add_delete(one, self.delete)
            router.add_get(one + "/containers", self.containers)
            router.add_post(one + "/snapshots", self.snapshot)
            router.add_get(pre + "/container-snapshots/{snap}", self.get_snapshot)
            router.add_delete(pre + "/container-snapshots/{snap}", self.delete_snapshot)
        router.add_get(EXEC + "/projects/{project}/services/{service}", self.exec)
        router.add_get(EXEC + "/teams/{team}/projects/{project}/services/{service}", self.exec)

    def _service(self, request: web.Request, *, leaked: bool = False) -> Service:
        box = self.lookup(Service, request.match_info["service"], "Service not found")
        if box.project != request.match_info["project"] or (box.leaked and not leaked):
            raise Refused(self.error(404, "Service not found"))
        return box

    @staticmethod
    def _view(box: Service) -> dict[str, Any]:
        expiry = {"expiryTime": iso(box.end_at)} if box.end_at else {}
        status = {"status": box.state, "reason": "DEPLOYING",
                  "lastTransitionTime": iso(box.updated)}  # fmt: skip
        return {"id": box.id, "appId": f"/{box.project}/{box.id}", "uid": box.uid,
                "name": box.name, "projectId": box.project, "serviceType": "deployment",
                "tags": box.tags, "billing": box.body["billing"],
                "deployment": box.body["deployment"], "status": {"deployment": status},
                "createdAt": iso(box.created), "updatedAt": iso(box.updated), **expiry}  # fmt: skip

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        """What the API would refuse in a create body (None: nothing)."""
        dep, name = body.get("deployment"), body.get("name")
        if not isinstance(name, str) or not 3 <= len(name) <= 54 or not NAME.match(name):
            return "name does not match the service name pattern"
        if (body.get("billing") or {}).get("deploymentPlan") not in PLANS:
            return "deploymentPlan is not a deployment plan"
        if not isinstance(dep, dict) or dep.get("instances") != 1:
            return "the emulator runs services of exactly one instance"
        if not isinstance((dep.get("external") or {}).get("imagePath"), str):
            return "deployment.external.imagePath is required"
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and 3 <= len(t) <= 100 and TAG.match(t) for t in tags
        ):
            return "tags must match ^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$ (3 to 100 characters)"
        expiry = (body.get("createOptions") or {}).get("expiryTime", 300)
        if not isinstance(expiry, int) or not 300 <= expiry <= 604_800:
            return "createOptions.expiryTime must be 300 to 604800 seconds"
        return None

    async def create(self, request: web.Request) -> Reply:
        body = await self.body(request)
        if problem := self._invalid(body):
            return self.error(400, problem)
        project, dep = request.match_info["project"], body["deployment"]
        key = re.sub(r"\s+", "-", body["name"]).lower()
        if self.sandboxes.get(key) is not None:
            return self.error(409, "A service with this name already exists")
        source = None
        if restore := (dep.get("containerSnapshot") or {}).get("restoreFrom"):
            snap = self.sandboxes.find_snapshot(str(restore))
            if not isinstance(snap, ContainerSnapshot) or snap.project != project:
                return self.error(404, "container snapshot not found")
            if snap.ref is None:
                return self.error(409, f"container snapshot is {snap.state}, not succeeded")
            source = snap.ref
        cpus, mib = PLANS[body["billing"]["deploymentPlan"]]
        disk = ((dep.get("storage") or {}).get("ephemeralStorage") or {}).get("storageSize")
        spec = SandboxSpec(cpus=cpus, memory_mb=mib, disk_mb=disk)
        box = Service(id=key, project=project, name=body["name"], body=body,
                      tags=list(body.get("tags", [])))  # fmt: skip
        box.extend((body.get("createOptions") or {}).get("expiryTime", 604_800))
        self.sandboxes.add(box)
        self.booting(box, "PENDING", "COMPLETED", spec, home="/root", source=source)
        return {"data": self._view(box)}

    async def get(self, request: web.Request) -> Reply:
        return {"data": self._view(self._service(request))}

    async def containers(self, request: web.Request) -> Reply:
        box = self._service(request)
        status = CONTAINER.get(box.state, "TASK_STAGING")
        found = {"name": f"{box.id}-{box.uid[:10]}-{box.uid[10:15]}", "status": status,
                 "createdAt": int(box.created.timestamp()),
                 "updatedAt": int(box.updated.timestamp())}  # fmt: skip
        pagination = {"hasNextPage": False, "count": 1}
        return {"data": {"containers": [found]}, "pagination": pagination}

    async def list(self, request: web.Request) -> Reply:
        per_page, start = self.query_ints(request, per_page=50, cursor=0)
        project = request.match_info["project"]
        boxes = [b for b in self.sandboxes.listed(Service) if b.project == project]
        page, more = kit.offset_page(boxes, start, min(per_page or 50, 100))
        views = [{k: v for k, v in self._view(b).items() if k not in ("billing", "deployment")}
                 for b in page]  # fmt: skip
        pagination = {"hasNextPage": more is not None, "count": len(page)}
        if more is not None:
            pagination["cursor"] = str(more)
        return {"data": {"services": views}, "pagination": pagination}

    async def delete(self, request: web.Request) -> Reply:
        box = self._service(request, leaked=True)
        box.leaked = not await self.destroy(box)  # a destroy that leaks (a semantic fault)
        return {"data": {}}

    @staticmethod
    def _snapshot_view(snap: ContainerSnapshot) -> dict[str, Any]:
        view = {"id": snap.id, "trigger": "manual", "state": snap.state, "inUse": False,
                "source": {"projectId": snap.project,
                           "nfObject": {"id": snap.source_id, "type": "service"}},
                "target": {"podName": f"{snap.source_id}-0"},
                "compatibility": {"runtime": "kata", "architecture": "x86"},
                "createdAt": snap.created_at, "updatedAt": snap.updated_at,
                "lastTransitionTime": snap.updated_at}  # fmt: skip
        if snap.error:
            view["error"] = {"code": "failed", "message": snap.error, "retryable": False}
        return view

    def _snapshot(self, request: web.Request) -> ContainerSnapshot:
        key = request.match_info["snap"]
        return self.lookup_snapshot(ContainerSnapshot, key, "container snapshot not found")

    async def snapshot(self, request: web.Request) -> Reply:
        box = self._service(request)
        await self.body(request)
        if box.state != "COMPLETED" or box.local is None:
            return self.error(409, "No eligible pod exists")
        snap = ContainerSnapshot(id=str(uuid.uuid4()), source_id=box.id,
                                 project=box.project)  # fmt: skip
        self.sandboxes.add_snapshot(snap)

        async def take() -> None:
            with contextlib.suppress(ProviderError):  # the error is the snapshot's state
                await self.sandboxes.take(snap, box)

        snap.task = self.spawn(take())
        return web.json_response({"data": self._snapshot_view(snap)}, status=202)

    async def get_snapshot(self, request: web.Request) -> Reply:
        return {"data": self._snapshot_view(self._snapshot(request))}

    async def delete_snapshot(self, request: web.Request) -> Reply:
        snap = self._snapshot(request)
        if snap.task is not None:
            await asyncio.gather(snap.task, return_exceptions=True)
        await self.sandboxes.drop_snapshot(snap)
        return {"data": {}}

    async def exec(self, request: web.Request) -> web.StreamResponse:
        box = self._service(request)
        if box.state != "COMPLETED" or box.local is None:
            return self.error(503, f"service {box.id} has no running instance")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        try:
            first = await asyncio.wait_for(ws.receive(), INIT_WAIT_S)
            init = json.loads(first.data) if first.type == WSMsgType.TEXT else {}
            auth = ((init.get("data") or {}).get("auth") or {}).get("apiToken")
            context = (init.get("data") or {}).get("context") or {}
        except (TimeoutError, ValueError, AttributeError):
            init, auth, context = {}, None, {}
        if init.get("type") != "init" or auth != self.token:
            return await self._end(ws, "init", {"auth": "failed", "message": "unauthorized"})
        pod = {"instanceName": f"{box.id}-0", "containerName": box.id}
        await ws.send_str(json.dumps({"type": "init", "data": {"auth": "successful",
                                                               "context": pod}}))  # fmt: skip
        b64 = context.get("encoding") == "base64"
        stdin = await self._stdin(ws, b64)
        if stdin is None:  # the client left
            return ws
        command, shell = context.get("command") or [], context.get("shell") or "none"
        if not command:
            return await self._end(ws, "error", {"message": "no command"})
        if isinstance(command, str):
            command = shlex.split(command) if shell == "none" else [*shell.split(), command]
        argv = kit.in_dir([str(a) for a in command], "/", {"HOME": "/root"})
        if stdin:
            feed = f"/tmp/.nf-stdin-{secrets.token_hex(6)}"
            await self.sandboxes.write_file(box, feed, stdin)
            argv = ["/bin/sh", "-c", STDIN_FROM, "sh", feed, *argv]
        gone = asyncio.ensure_future(self._until_closed(ws))
        run = self.sandboxes.exec(box, argv, timeout_s=kit.NO_DEADLINE_S, kill_on_cancel=True)
        try:
            result = await kit.unless(run, gone)  # None: the client left first, the command killed
        except Exception as exc:  # noqa: BLE001 - the service went away under the command
            return await self._end(ws, "error", {"message": str(exc)})
        finally:
            gone.cancel()
        if result is None:
            return ws
        with contextlib.suppress(ConnectionError, RuntimeError):
            for kind, data in kit.outputs(result):
                for frame in self._frames(data, b64):
                    await ws.send_str(json.dumps({"type": STREAMS[kind], "data": frame}))
        code = kit.exit_status(result.exit_code)
        done = {"exitCode": str(code), "status": "Failure" if code else "Success", "message": ""}
        return await self._end(ws, "completion", done)

    @staticmethod
    async def _end(ws: web.WebSocketResponse, kind: str, data: Any) -> web.WebSocketResponse:
        """Send the frame ``{"type": kind, "data": data}``, then close."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps({"type": kind, "data": data}))
            await ws.close()
        return ws

    @staticmethod
    def _frames(data: bytes, b64: bool) -> list[str]:
        if b64:  # each frame base64 on its own, as the SDK decodes them
            return [base64.b64encode(chunk).decode() for chunk in kit.chunks(data, FRAME)]
        return kit.chunks(kit.text(data), FRAME)

    @staticmethod
    async def _stdin(ws: web.WebSocketResponse, b64: bool) -> bytes | None:
        """Every ``payload`` frame up to ``stdInEnd`` (None if the client left first)."""
        parts: list[bytes] = []
        async for msg in ws:
            try:  # anything unreadable ends the session, as a client that left
                frame = json.loads(msg.data) if msg.type == WSMsgType.TEXT else None
                kind, data = frame.get("type"), frame.get("data") or ""
                if kind == "stdInEnd":
                    return b"".join(parts)
                if kind == "payload":
                    parts.append(base64.b64decode(data, validate=True) if b64 else data.encode())
            except (ValueError, AttributeError):
                break
        return None

    @staticmethod
    async def _until_closed(ws: web.WebSocketResponse) -> None:
        async for msg in ws:  # after stdInEnd only resize frames may come
            if msg.type != WSMsgType.TEXT:
                break

    async def expire(self, box: Box) -> None:
        await self.settled(box)
        await self.sandboxes.destroy(box)

    async def shutdown(self) -> None:
        for snap in self.sandboxes.snapshots():
            if isinstance(snap, ContainerSnapshot) and snap.task is not None:
                await asyncio.gather(snap.task, return_exceptions=True)
        await super().shutdown()
