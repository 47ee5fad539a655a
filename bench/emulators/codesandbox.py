"""Together Sandbox's wire protocol (the ``codesandbox`` provider), on the toolkit.

``client_env`` sets ``TOGETHER_BASE_URL=http://127.0.0.1:PORT`` (the SDK appends ``/v1``).
As ``together-sandbox`` 4.1.1 speaks it (research/sdk-runloop-together.md §3), every answer
with every field the SDK's strict models require:

* Management, ``/v1`` (``Bearer <token>``; errors ``{"code": str, "message", "errors"}``):
  ``POST /sandboxes`` (201), ``GET /sandboxes`` (``limit``, ``cursor``, ``statuses[]``,
  ``snapshot_id``, ``tags[k]``), ``GET /sandboxes/{id}``, ``POST /sandboxes/{id}/wait`` (held
  while ``starting``/``terminating``), ``POST /sandboxes/{id}/terminate`` (``{}``: the stored
  policy; ``{"snapshot": null}``: keep nothing; ``{"snapshot": {memory, aliases, ttl, tags}}``),
  ``GET /snapshots/{id|@alias}``, ``POST /snapshots/{id}/retire``, ``POST /snapshots`` (201).
* Each sandbox's agent under ``/agent/{id}`` (its ``agent.url``; ``Bearer <agent.token>``;
  errors ``{"code": int, "message"}``; 502 unless it runs): ``POST /api/v1/execs`` (201; it
  starts), ``GET /api/v1/stream/execs/{id}/io`` (SSE ``{"type", "output", "sequence",
  "timestamp"}``, the last with ``exitCode``), ``DELETE /api/v1/execs/{id}`` (kills it),
  ``POST|GET /api/v1/files/{path}`` (raw body in; ``{"path", "content", "encoding"}`` out:
  ``utf-8`` if the bytes decode, else ``base64``). Image builder (same host): ``POST /builds``,
  ``GET /builds/{id}/logs`` (SSE ``{"done": true}``), ``GET /builds/{id}``.

Semantics (each VM a toolkit sandbox, a real ``local`` one by default): a snapshot is the
toolkit's filesystem checkpoint (all outside ``/tmp``); the base snapshot (``sandbox-bench@base``)
and "built" images are the backend's root filesystem (nothing is built). A create boots a VM with
``/workspace`` (the commands' cwd). A terminate's snapshot is aliased ``sandbox:<id>`` plus
``aliases`` (an alias moves). ``memory: true`` **freezes** the VM and the snapshot holds it: the
first create from it thaws it as the new sandbox (new id, ``restored``): processes really
survive; later ones get its files (``cold_started``). A terminated sandbox stays readable and
answers 200 to terminate; execs in flight are killed. ``ttl`` ends a sandbox (``autoterminated``,
policy applied) or retires a snapshot holding a VM; retired snapshots are forgotten (404). The
admin API lists VMs, named after their first sandbox. Semantic faults (toolkit ``Misbehaving``):
listings leave out the sandbox on a VM the toolkit does not list (``list-omits``); a terminate
whose VM survives (``destroy-leaks``) answers ``terminated`` as usual, but the VM runs on and
listings show its sandbox ``running`` (its agent is gone) until it is terminated again; the
snapshot modes have nothing to act on (no checkpoint; a memory hibernate keeps the VM itself).
Not emulated: stdout/stderr interleaving (output is sent when the exec ends, stdout first),
stdin/PTY, users, ports, directories, other file calls, snapshot listing/aliasing, recovery,
quotas.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import Box, Changes, Job, Protocol, Reply, Snapshot, utc_now
from providers.base import SandboxSpec
from providers.errors import NotFound, ProviderError

BASE = "00000000-0000-4000-8000-00000000ba5e"
BASE_ALIAS = "sandbox-bench@base"
HOME = "/workspace"
AGENT = "/agent"
PROJECT = "sandbox-bench-emulator"


def agent_error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


@dataclass(eq=False, kw_only=True)
class VM(Box):
    sandbox: Record | None = None  # the API sandbox running on it


@dataclass(eq=False, kw_only=True)
class TgSnapshot(Snapshot):
    memory: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    ttl: int | None = None
    retired_at: str | None = None


@dataclass(eq=False, kw_only=True)
class Record:
    """A sandbox as the API shows it; it outlives its VM."""

    id: str
    snapshot_id: str
    body: dict[str, Any]
    status: str = "starting"
    reason: str = "cold_start_requested"
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    created_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    terminated_at: str | None = None
    vm: VM | None = None
    execs: dict[str, Job] = field(default_factory=dict)
    changed: Changes = field(default_factory=Changes)

    def set(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.changed.notify()


class TogetherEmulator(Protocol):
    name = "codesandbox"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: dict[str, Record] = {}
        # No default image on Together: one base snapshot (the backend's root filesystem).
        self.sandboxes.add_snapshot(TgSnapshot(id=BASE, source_id="", names=[BASE_ALIAS]))

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {"TOGETHER_API_KEY": token, "TOGETHER_BASE_URL": url}

    def error(self, status: int, message: str, code: str = "") -> web.Response:
        body = {"code": code or str(status), "message": message, "errors": []}
        return web.json_response(body, status=status)

    def authenticate(self, request: web.Request) -> web.Response | None:
        if not request.path.startswith(AGENT + "/"):
            return super().authenticate(request)
        rec = self.records.get(request.match_info.get("sid", ""))
        if rec is None or rec.status != "running" or rec.vm is None:
            return agent_error(502, "sandbox is not running")
        if request.headers.get("Authorization") != f"Bearer {rec.token}":
            return agent_error(401, "invalid agent token")
        return None

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/sandboxes", self.create)
        router.add_get("/v1/sandboxes", self.list)
        router.add_get("/v1/sandboxes/{sid}", self.get)
        router.add_post("/v1/sandboxes/{sid}/wait", self.wait)
        router.add_post("/v1/sandboxes/{sid}/terminate", self.terminate)
        router.add_get("/v1/snapshots/{snap}", self.snapshot_get)  # an id, or @alias
        router.add_post("/v1/snapshots/{snap}/retire", self.retire)
        router.add_post("/v1/snapshots", self.register_image)
        router.add_post("/builds", self.build)
        router.add_get("/builds/{build}/logs", self.build_logs)
        router.add_get("/builds/{build}", self.build_status)
        agent = f"{AGENT}/{{sid}}/api/v1"
        router.add_post(f"{agent}/execs", self.exec_create)
        router.add_get(f"{agent}/stream/execs/{{eid}}/io", self.exec_stream)
        router.add_delete(f"{agent}/execs/{{eid}}", self.exec_delete)
        router.add_post(f"{agent}/files/{{path:.*}}", self.file)
        router.add_get(f"{agent}/files/{{path:.*}}", self.file)

    # -- views --------------------------------------------------------------------------------

    def _view(self, rec: Record, request: web.Request, status: str = "") -> dict[str, Any]:
        up, body = rec.status == "running", rec.body
        url = f"{request.scheme}://{request.host}{AGENT}/{rec.id}"
        return {
            "id": rec.id, "organization_id": None, "project_id": PROJECT,
            "status": status or rec.status,
            "snapshot_id": rec.snapshot_id, "cpu": body["cpu"],
            "memory_bytes": body["memory_bytes"], "ttl": body.get("ttl"),
            "agent": {"version": "emulated", "token": rec.token if up else None,
                      "url": url if up else None},
            "tags": body.get("tags") or {}, "termination_policy": body.get("termination_policy"),
            "created_at": rec.created_at, "started_at": rec.started_at,
            "terminated_at": rec.terminated_at, "status_reason": rec.reason,
            "resized_at": None, "recovery_at": None, "updated_at": utc_now(),
        }  # fmt: skip

    @staticmethod
    def _snapshot_view(snap: TgSnapshot) -> dict[str, Any]:
        return {"id": snap.id, "organization_id": None, "project_id": PROJECT, "byte_size": 0,
                "tags": snap.tags, "ttl": snap.ttl, "memory": snap.memory,
                "created_at": snap.created_at, "retired_at": snap.retired_at,
                "updated_at": snap.updated_at}  # fmt: skip

    def _record(self, request: web.Request) -> Record:
        missing = self.error(404, "sandbox not found", "not_found")
        return self.known(self.records.get(request.match_info["sid"]), Record, missing)

    def _find(self, key: str) -> TgSnapshot:
        missing = self.error(404, f"snapshot {key!r} not found", "not_found")
        return self.lookup_snapshot(TgSnapshot, key.removeprefix("@"), missing)

    # -- sandboxes ------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        cpu, memory = body.get("cpu"), body.get("memory_bytes")
        if not isinstance(cpu, int | float) or not 0.1 <= cpu <= 16:
            return self.error(400, "cpu must be between 0.1 and 16", "invalid_parameter")
        if not isinstance(memory, int) or not cpu * 10**9 <= memory <= min(cpu * 8, 32) * 2**30:
            return self.error(400, "memory_bytes must be 1-8 GB per CPU", "invalid_parameter")
        snap = self._find(str(body.get("snapshot_id") or body.get("snapshot_alias")))
        rec = Record(id=str(uuid.uuid4()), snapshot_id=snap.id, body=body)
        self.records[rec.id] = rec
        if isinstance(snap.held, VM):  # the first resume of a memory snapshot: its frozen VM
            vm, snap.held = snap.held, None
            rec.reason, reason, work = "restore_requested", "restored", self.sandboxes.thaw(vm)
        else:
            vm = self.sandboxes.add(VM(id=rec.id))
            spec = SandboxSpec(cpus=float(cpu), memory_mb=memory // 2**20)
            work, reason = self.sandboxes.boot(vm, spec, home=HOME, source=snap.ref), "cold_started"
        vm.sandbox, rec.vm = rec, vm
        vm.extend(body["ttl"] if isinstance(body.get("ttl"), int) else None)
        self.spawn(self._boot(rec, vm, work, reason))
        return web.json_response(self._view(rec, request), status=201)

    async def _boot(self, rec: Record, vm: VM, work: Any, reason: str) -> None:
        async with vm.lock:
            try:
                await work
            except Exception:  # noqa: BLE001 - any failure is a failed start, as the API says
                await self.sandboxes.destroy(vm)
                rec.vm = None
                return rec.set("failed_to_start", "internal_error")
        rec.started_at = utc_now()
        rec.set("running", reason)

    @staticmethod
    def _leaked(rec: Record) -> bool:
        """Terminated, yet its VM runs on (a destroy that leaks, a semantic fault)."""
        return rec.status == "terminated" and rec.vm is not None

    async def list(self, request: web.Request) -> Reply:
        query, (limit,) = request.query, self.query_ints(request, limit=20)
        states = set(query.getall("statuses[]", []))
        tags = {k[5:-1]: v for k, v in query.items() if k.startswith("tags[") and k.endswith("]")}
        shown = {r.id: "running" if self._leaked(r) else r.status for r in self.records.values()}
        items = [
            r for r in self.records.values()
            if (not states or shown[r.id] in states)
            and all((r.body.get("tags") or {}).get(k) == v for k, v in tags.items())
            and query.get("snapshot_id", r.snapshot_id) == r.snapshot_id
            and (r.vm is None or self.sandboxes.shows(r.vm))
        ]  # fmt: skip
        page, after = kit.keyset_page(items, lambda r: r.id, query.get("cursor", ""), limit)
        return {"data": [self._view(r, request, shown[r.id]) for r in page], "next_cursor": after}

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self._view(self._record(request), request))

    async def wait(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        await rec.changed.until(lambda: rec.status not in ("starting", "terminating"))
        return web.json_response(self._view(rec, request))

    async def terminate(self, request: web.Request) -> web.Response:
        rec, body = self._record(request), await self.body(request)
        if rec.status in ("starting", "running") or self._leaked(rec):
            policy = rec.body.get("termination_policy") or {}
            snapshot = body["snapshot"] if "snapshot" in body else policy.get("snapshot")
            if snapshot is not None and not isinstance(snapshot, dict):
                return self.error(400, "snapshot must be an object or null", "invalid_parameter")
            rec.set("terminating", "termination_requested")
            self.spawn(self._end(rec, snapshot, "termination_requested"))
        return web.json_response(self._view(rec, request))

    async def _end(self, rec: Record, snapshot: dict | None, reason: str) -> None:
        await rec.changed.until(lambda: rec.status != "starting")
        vm, rec.vm = rec.vm, None
        execs, rec.execs = list(rec.execs.values()), {}
        await self.kill_jobs(execs, timeout_s=10)  # killed before the VM is frozen or taken
        if vm is not None:
            async with vm.lock:
                vm.sandbox = None
                try:
                    done = await self._keep(rec, vm, snapshot)
                except Exception:  # noqa: BLE001 - a failed snapshot still ends the sandbox
                    done = await self.sandboxes.destroy(vm)
            if not done:  # the destroy leaked: it runs on
                rec.vm, vm.sandbox = vm, rec
        rec.terminated_at = utc_now()
        rec.set("terminated", reason)

    async def _keep(self, rec: Record, vm: VM, snapshot: dict | None) -> bool:
        """What a terminate keeps of ``vm``: nothing, its files, or (memory) the VM itself;
        False when ``vm`` runs on for no snapshot (a destroy that leaks)."""
        if snapshot is None:
            return await self.sandboxes.destroy(vm)
        memory = snapshot.get("memory") is True
        aliases = [f"sandbox:{rec.id}", *(snapshot.get("aliases") or [])]  # they move to it
        snap = TgSnapshot(
            id=str(uuid.uuid4()), source_id=vm.id, names=aliases, memory=memory,
            tags=dict(snapshot.get("tags") or {}), ttl=snapshot.get("ttl"),
        )  # fmt: skip
        await self.sandboxes.capture(snap, vm, hold=memory)  # memory: it holds the frozen VM
        if not memory:
            return await self.sandboxes.destroy(vm)
        vm.extend(snap.ttl if isinstance(snap.ttl, int) else None)
        return True

    async def expire(self, box: Box) -> None:
        """A sandbox's ttl: autoterminated with its stored policy (once the reaper lets go of
        the VM's lock); a memory snapshot's ttl: retired."""
        rec = getattr(box, "sandbox", None)
        if rec is not None and rec.status in ("starting", "running"):
            rec.set("terminating", "autoterminated")
            policy = rec.body.get("termination_policy") or {}
            self.spawn(self._end(rec, policy.get("snapshot"), "autoterminated"))
        for snap in self.sandboxes.snapshots():
            if isinstance(snap, TgSnapshot) and snap.held is box:
                await self._retire(snap, asked=False)

    # -- snapshots and image builds (accepted, not built: creates get the root filesystem) --

    async def snapshot_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot_view(self._find(request.match_info["snap"])))

    async def retire(self, request: web.Request) -> web.Response:
        snap = self._find(request.match_info["snap"])
        if snap.id != BASE:
            await self._retire(snap)
        return web.json_response(self._snapshot_view(snap))

    async def _retire(self, snap: TgSnapshot, *, asked: bool = True) -> None:
        snap.retired_at = snap.updated_at = utc_now()
        await self.sandboxes.drop_snapshot(snap, asked=asked)  # and the VM it holds

    async def build(self, request: web.Request) -> web.Response:
        form = await request.post()
        if "context" not in form or not form.get("image_name"):
            return web.json_response({"error": "context and image_name are required"}, status=400)
        return web.json_response({"build_id": f"emulated-{form['image_name']}"})

    async def build_logs(self, request: web.Request) -> web.StreamResponse:
        response = await kit.open_stream(request, "text/event-stream")
        await response.write(kit.sse({"done": True}))
        return response

    async def build_status(self, request: web.Request) -> web.Response:
        ref = request.match_info["build"].removeprefix("emulated-")
        return web.json_response({"image_ref": f"registry.emulated/{ref}"})

    async def register_image(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        if not isinstance(body.get("image"), str):
            return self.error(400, "image is required", "invalid_parameter")
        tags, ttl = body.get("tags") or {}, body.get("ttl")
        snap = TgSnapshot(id=str(uuid.uuid4()), source_id="", tags=tags, ttl=ttl)
        self.sandboxes.add_snapshot(snap)  # no checkpoint: creates boot the root filesystem
        return web.json_response(self._snapshot_view(snap), status=201)

    # -- the agent (authenticate() let only a running sandbox's calls through) -----------------

    async def exec_create(self, request: web.Request) -> web.Response:
        rec = self.records[request.match_info["sid"]]
        body = await kit.json_object(request, lambda: agent_error(400, "invalid JSON body"))
        command, args = body.get("command"), body.get("args")
        if not isinstance(command, str) or not isinstance(args, list):
            return agent_error(400, "command and args are required")
        argv = kit.in_dir([command, *map(str, args)], body.get("cwd") or HOME, body.get("env"))
        job = self.run_job(rec.vm, Job(id=secrets.token_hex(8)), argv)
        rec.execs[job.id] = job
        item = {"id": job.id, "command": command, "args": args, "status": "running",
                "pid": 0, "pty": False, "exitCode": None}  # fmt: skip
        return web.json_response(item, status=201)

    async def exec_stream(self, request: web.Request) -> web.StreamResponse:
        job = self.records[request.match_info["sid"]].execs.get(request.match_info["eid"])
        if job is None:
            return agent_error(404, "exec not found")
        after = int(request.query.get("lastSequence", "0"))
        response = await kit.open_stream(request, "text/event-stream")
        if (done := await job.wait()) is None:  # killed, or it could not run to its end:
            return response  # the stream ends without an exit code
        events = [("stdout", done.stdout, {}), ("stderr", done.stderr, {}),
                  ("stdout", b"", {"exitCode": done.exit_code})]  # fmt: skip
        for seq, (kind, data, end) in enumerate(events, 1):
            if (data or end) and seq > after:
                event = {"type": kind, "output": kit.text(data), "sequence": seq}
                await response.write(kit.sse({**event, "timestamp": utc_now(), **end}))
        return response

    async def exec_delete(self, request: web.Request) -> web.Response:
        job = self.records[request.match_info["sid"]].execs.pop(request.match_info["eid"], None)
        if job is None:
            return agent_error(404, "exec not found")
        job.kill()
        return web.json_response({"message": "exec deleted"})

    async def file(self, request: web.Request) -> web.Response:
        """POST writes the raw body; GET reads. Both answer the content as the agent does."""
        vm, path = self.records[request.match_info["sid"]].vm, request.match_info["path"]
        try:
            if request.method == "POST":
                data = await request.read()
                await self.sandboxes.write_file(vm, path, data)
            else:
                data = await self.sandboxes.read_file(vm, path)
        except NotFound:
            return agent_error(404, f"file not found: {path}")
        except ProviderError as exc:
            return agent_error(400, f"cannot {request.method} {path}: {exc}")
        try:
            content, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(data).decode(), "base64"
        answer = {"path": path, "content": content, "encoding": encoding}
        return web.json_response(answer, status=201 if request.method == "POST" else 200)
