"""The Vercel Sandbox API, as ``vercel-sandbox`` 0.10.0 speaks it, on the toolkit.

``client_env`` sets ``VERCEL_TOKEN``, ``VERCEL_TEAM_ID``, ``VERCEL_PROJECT_ID`` and the adapter's
``VERCEL_SANDBOX_API_URL=http://127.0.0.1:PORT/api`` (the SDK reads no endpoint variable).

Wire protocol (research/sdk-vercel-northflank.md §2.3). Every call needs ``Authorization: Bearer
<token>`` (else 401) and the emulated ``?teamId=`` (else 403); another project (``projectId`` in
a create body, ``?projectId=``, ``?project=``) is 404. Errors are ``{"error": {"code",
"message"}}``, injected faults included.

* ``POST /api/v3/sandboxes`` (``name, projectId, tags, persistent, timeout`` ms, ``resources.
  vcpus, env, source: {type: snapshot, snapshotId}``) -> ``{"sandbox", "session", "routes"}``
  with status ``pending``; the sandbox boots in the background and ``GET`` says ``running`` once
  it has, so the SDK's 0.5 s poll runs as against the real API (every emulated create and fork
  pays at least one 0.5 s sleep in the SDK). A taken name is 409; other sources are 400.
* ``GET /api/v2/sandboxes/{name}?resume=`` -> the same; ``resume=true`` on a stopped sandbox
  starts a new session (new id) first. ``DELETE`` (``deleteOrphanSnapshots=true`` also drops the
  snapshots it took) -> ``{"sandbox"}``; then the name and its sessions are unknown (404).
* ``GET /api/v2/sandboxes?namePrefix=&tags=k:v&limit=&cursor=&sortOrder=`` -> ``{"sandboxes",
  "pagination": {"count", "next", "prev"}}`` by name; ``POST .../{name}/fork`` -> as create.
* Session calls ``/api/v2/sandboxes/sessions/{sid}/...`` (404 for an unknown session, 410
  ``sandbox_stopped`` unless it is the sandbox's current running one): ``cmd?wait=true`` (NDJSON
  ``{"command": {.. "exitCode": null}}``, ``{"stream": "stdout"|"stderr", "data": text}``, then
  ``{"command": {.. "exitCode": N}}``), ``fs/write`` (a gzip tar; each file written at
  ``/<member>``, parents created), ``fs/read`` ``{"path", "cwd"?}`` (raw bytes; 404
  ``file_not_found``), ``snapshot`` -> ``{"snapshot", "session"}``, ``stop`` -> ``{"session",
  "sandbox"}``. ``GET|DELETE /api/v2/sandboxes/snapshots/{id}`` -> ``{"snapshot"}``.

Semantics, each sandbox a toolkit sandbox (a real ``local`` one by default), with
``/vercel/sandbox`` (the working directory) made at boot:

* Commands run as root (Vercel: ``vercel-sandbox``), argv as sent, in ``cwd`` with the sandbox's
  and the command's ``env``. Output goes out when the command ends, stdout then stderr, decoded
  as UTF-8 with replacement. ``timeout`` (the SDK's ``kill_after``) kills the command; its final
  record then says 137, this emulator's choice (Vercel does not document it). A command cut
  short by a stop ends with an in-band ``sandbox_stopped`` error. Detached commands are 501.
* A snapshot (filesystem only) becomes the ``currentSnapshotId`` and, as Vercel's docs say, the
  session then stops. ``stop`` (and a session's ``timeout``) ends the session: a persistent
  sandbox is snapshotted first (``creationMethod`` ``automatic``) and keeps its files for the
  next session, a non-persistent one loses them; processes never survive; the sandbox stays.
* A fork starts from the source's ``currentSnapshotId`` (else the image: an empty
  ``/vercel/sandbox``), never its live files, inheriting tags, persistence, size, timeout and
  env unless the body overrides them.
* Semantic faults (toolkit ``Misbehaving``): the ``snapshot`` call answers once the snapshot is
  usable (Vercel shows no pending one), so under ``snapshot-pending`` it never answers (until a
  delete wants the sandbox: then 500, the sandbox still running); the automatic snapshot of a
  stop is only recorded (the stop keeps the filesystem itself), so it is never waited for. A
  delete that leaks (``destroy-leaks``) answers the sandbox as it is, still running and listed.

Not emulated faithfully: boot time (a local sandbox's, not a Firecracker VM's), active-CPU
metering, snapshot sizes (``sizeBytes`` 0: not measured) and expiry, images (accepted; the
backend's root filesystem is used), Git and tarball sources, detached commands, logs, wait,
stdin, kill, PTY, mkdir, extend-timeout, update, network policy, Drives, routes, regions, sudo.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import secrets
import tarfile
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.emulators import toolkit as tk
from bench.emulators.toolkit import KILLED, Box, Protocol, Refused, Reply, Snapshot
from providers.base import CheckpointRef, SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError

API = "/api"
TEAM, PROJECT, REGION = "team_emulated", "prj_emulated", "iad1"
CWD = "/vercel/sandbox"
DEFAULT_TIMEOUT_MS = 300_000
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         409: "conflict", 410: "sandbox_stopped", 429: "rate_limited"}  # fmt: skip


@dataclass(eq=False, kw_only=True)
class VercelSnapshot(Snapshot):
    session_id: str
    method: str = "snapshot"
    expires_ms: int | None = None
    created_ms: int = field(default_factory=tk.epoch_ms)


@dataclass(eq=False, kw_only=True)
class VercelBox(Box):
    FAILED = "failed"

    tags: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    persistent: bool = True
    vcpus: int = 2
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    session: str = ""
    snapshot_id: str | None = None
    started_ms: int | None = None
    stopped_ms: int | None = None
    sessions: list[str] = field(default_factory=list)


class VercelEmulator(Protocol):
    name = "vercel"

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {"VERCEL_TOKEN": token, "VERCEL_TEAM_ID": TEAM, "VERCEL_PROJECT_ID": PROJECT,
                "VERCEL_SANDBOX_API_URL": f"{url}{API}"}  # fmt: skip

    #: Raw bytes the SDK cannot decode for file reads; an unparseable header block for file
    #: writes (the SDK never reads that body); truncated JSON (or NDJSON) else.
    malformed_answers = (("/fs/read", tk.undecodable_gzip), ("/fs/write", tk.broken_framing))

    def error(self, status: int, message: str, code: str | None = None) -> web.Response:
        code = code or CODES.get(status, "internal_server_error")
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    def authenticate(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.error(401, "Not authorized: invalid token")
        if request.query.get("teamId") != TEAM:
            return self.error(403, "You don't have permission to access this team")
        project = request.query.get("projectId") or request.query.get("project")
        if project not in (None, PROJECT):
            return self.error(404, f"project {project} not found")
        return None

    def routes(self, router: web.UrlDispatcher) -> None:
        sandboxes, sessions = f"{API}/v2/sandboxes", f"{API}/v2/sandboxes/sessions/{{sid}}"
        router.add_post(f"{API}/v3/sandboxes", self.create)
        router.add_get(sandboxes, self.list)
        router.add_get(f"{sandboxes}/snapshots/{{snap}}", self.get_snapshot)
        router.add_delete(f"{sandboxes}/snapshots/{{snap}}", self.delete_snapshot)
        for action in ("cmd", "fs/write", "fs/read", "snapshot", "stop"):
            router.add_post(f"{sessions}/{action}", getattr(self, action.replace("fs/", "fs_")))
        router.add_get(f"{sandboxes}/{{name}}", self.get)
        router.add_delete(f"{sandboxes}/{{name}}", self.delete)
        router.add_post(f"{sandboxes}/{{name}}/fork", self.fork)

    # -- answers ----------------------------------------------------------------------------

    def _session(self, box: VercelBox, sid: str | None = None) -> dict[str, Any]:
        current = sid in (None, box.session)
        return {"id": sid or box.session, "sourceSandboxName": box.id, "projectId": PROJECT,
                "status": box.state if current else "stopped", "cwd": CWD,
                "region": REGION, "memory": box.vcpus * 2048, "vcpus": box.vcpus,
                "timeout": box.timeout_ms, "requestedAt": box.started_ms,
                "startedAt": box.started_ms,
                "stoppedAt": box.stopped_ms if current else None}  # fmt: skip

    def _sandbox(self, box: VercelBox) -> dict[str, Any]:
        return {"name": box.id, "currentSessionId": box.session, "status": box.state,
                "persistent": box.persistent, "currentSnapshotId": box.snapshot_id,
                "projectId": PROJECT, "cwd": CWD, "region": REGION, "memory": box.vcpus * 2048,
                "vcpus": box.vcpus, "timeout": box.timeout_ms, "tags": box.tags,
                "createdAt": tk.epoch_ms(box.created), "updatedAt": tk.epoch_ms(box.updated),
                "statusUpdatedAt": tk.epoch_ms(box.updated)}  # fmt: skip

    def _envelope(self, box: VercelBox, **more: Any) -> dict[str, Any]:
        return {"sandbox": self._sandbox(box), "session": self._session(box), "routes": [], **more}

    @staticmethod
    def _snapshot_dto(snap: VercelSnapshot, status: str = "created") -> dict[str, Any]:
        return {"id": snap.id, "sourceSessionId": snap.session_id, "region": REGION,
                "status": "failed" if snap.error else status, "sizeBytes": 0,
                "createdAt": snap.created_ms, "updatedAt": snap.created_ms,
                "expiresAt": snap.expires_ms, "creationMethod": snap.method}  # fmt: skip

    # -- lookups ----------------------------------------------------------------------------

    def _box(self, name: str) -> VercelBox:
        return self.lookup(VercelBox, name, f"sandbox {name} not found")

    async def _live(self, request: web.Request) -> tuple[VercelBox, str]:
        """The sandbox whose current, running session the request names."""
        sid = request.match_info["sid"]
        box = next((b for b in self.sandboxes.held() if sid in getattr(b, "sessions", ())), None)
        if not isinstance(box, VercelBox):
            raise Refused(self.error(404, f"session {sid} not found"))
        await self.settled(box)  # a booting session answers once it runs, as the VM does
        if box.session != sid or box.state != "running":
            raise Refused(self.error(410, f"session {sid} is stopped", "sandbox_stopped"))
        return box, sid

    def _snapshot(self, snapshot_id: Any) -> VercelSnapshot:
        missing = self.error(404, f"snapshot {snapshot_id} not found", "snapshot_not_found")
        return self.lookup_snapshot(VercelSnapshot, str(snapshot_id), missing)

    # -- lifecycle --------------------------------------------------------------------------

    def _new_session(self, box: VercelBox) -> None:
        box.session = f"sbx_sess_{secrets.token_hex(8)}"
        box.sessions.append(box.session)
        box.started_ms, box.stopped_ms = tk.epoch_ms(), None
        box.extend(box.timeout_ms / 1000)

    @staticmethod
    def _spec(box: VercelBox) -> SandboxSpec:
        return SandboxSpec(cpus=float(box.vcpus), memory_mb=box.vcpus * 2048)

    async def _stop(self, box: VercelBox, *, automatic: bool) -> None:
        """End the session (under ``box.lock``): a persistent sandbox keeps its filesystem
        (after an automatic snapshot when ``automatic``), a non-persistent one loses it."""
        box.set_state("stopping")  # session calls get 410 from now on
        try:
            if box.persistent and automatic:
                await self._take(box, "automatic", None)
            await self.sandboxes.stop(box, keep=box.persistent)
        except Exception:
            box.set_state(box.FAILED)
            raise
        box.set_state("stopped")
        box.stopped_ms, box.end_at = tk.epoch_ms(), None

    async def _take(
        self, box: VercelBox, method: str, expires_ms: int | None, *, usable: bool = False
    ) -> VercelSnapshot:
        """A snapshot of ``box`` (under ``box.lock``; see :meth:`Sandboxes.capture`)."""
        snap = VercelSnapshot(
            id=f"snap_{secrets.token_hex(10)}", source_id=box.id, session_id=box.session,
            method=method, expires_ms=expires_ms,
        )  # fmt: skip
        box.snapshot_id = (await self.sandboxes.capture(snap, box, usable=usable)).id
        return snap

    async def expire(self, box: Box) -> None:
        """A session whose timeout passed stops; the sandbox stays."""
        if isinstance(box, VercelBox) and box.state == "running":
            await self._stop(box, automatic=True)

    def _create(
        self, body: dict[str, Any], source: CheckpointRef | None, like: VercelBox | None = None
    ) -> Reply:
        """A new sandbox from a create or fork body (a fork inherits ``like``'s settings), its
        first session booting from ``source`` in the background (``pending`` until it runs)."""
        name = body.get("name") or f"sbx-{secrets.token_hex(8)}"
        if not isinstance(name, str) or self.sandboxes.get(name) is not None:
            raise Refused(self.error(409, f"sandbox {name} already exists", "sandbox_exists"))
        was = like or VercelBox(id="")  # the defaults
        tags, env, resources = self.objects(body, tags=was.tags, env=was.env, resources={})
        box = VercelBox(
            id=name,
            tags=tk.strings(tags),
            env=tk.strings(env),
            persistent=bool(body.get("persistent", was.persistent)),
            vcpus=int(resources.get("vcpus") or was.vcpus),
            timeout_ms=int(body.get("timeout") or was.timeout_ms),
        )
        self._new_session(self.sandboxes.add(box))
        self.booting(box, "pending", "running", self._spec(box), home=CWD, source=source)
        return self._envelope(box)

    async def create(self, request: web.Request) -> Reply:
        body = await self.body(request)
        if body.get("projectId") != PROJECT:
            return self.error(404, f"project {body.get('projectId')} not found")
        source = body.get("source")
        if source is None:
            return self._create(body, None)
        if not isinstance(source, dict) or source.get("type") != "snapshot":
            return self.error(400, "only snapshot sources are emulated")
        return self._create(body, self._snapshot(source.get("snapshotId")).ref)

    async def fork(self, request: web.Request) -> Reply:
        source, body = self._box(request.match_info["name"]), await self.body(request)
        seed = self.sandboxes.find_snapshot(source.snapshot_id or "")
        return self._create(body, seed.ref if seed is not None else None, like=source)

    async def get(self, request: web.Request) -> Reply:
        box = self._box(request.match_info["name"])
        if request.query.get("resume") != "true" or box.busy is not None:
            return self._envelope(box)
        async with box.lock:
            resumed = box.state in ("stopped", box.FAILED)
            if resumed:
                self._new_session(box)  # its files, if it kept them (else a new sandbox)
                await self.sandboxes.start(box, self._spec(box), home=CWD)
                box.set_state("running")
        return self._envelope(box, resumed=resumed)

    async def list(self, request: web.Request) -> Reply:
        prefix, tag = request.query.get("namePrefix", ""), request.query.get("tags")
        key, _, value = (tag or "").partition(":")
        limit, offset = self.query_ints(request, limit=50, cursor=0)
        found = sorted(
            (b for b in self.sandboxes.listed(VercelBox)
             if b.id.startswith(prefix) and (tag is None or b.tags.get(key) == value)),
            key=lambda b: b.id, reverse=request.query.get("sortOrder", "desc") == "desc",
        )  # fmt: skip
        page, more = tk.offset_page(found, offset, max(1, limit))
        pagination = {"count": len(page), "next": None if more is None else str(more), "prev": None}
        return {"sandboxes": [self._sandbox(b) for b in page], "pagination": pagination}

    async def delete(self, request: web.Request) -> Reply:
        box = self._box(request.match_info["name"])
        if await self.destroy(box):  # not when a destroy leaks (a semantic fault)
            box.set_state("stopped")
            if request.query.get("deleteOrphanSnapshots") == "true":
                used = {getattr(b, "snapshot_id", None) for b in self.sandboxes.held()}
                for snap in self.sandboxes.snapshots():
                    if snap.source_id == box.id and snap.id not in used:
                        await self.sandboxes.drop_snapshot(snap)
        return {"sandbox": self._sandbox(box)}

    async def get_snapshot(self, request: web.Request) -> Reply:
        return {"snapshot": self._snapshot_dto(self._snapshot(request.match_info["snap"]))}

    async def delete_snapshot(self, request: web.Request) -> Reply:
        snap = self._snapshot(request.match_info["snap"])
        await self.sandboxes.drop_snapshot(snap)
        return {"snapshot": self._snapshot_dto(snap, "deleted")}

    # -- session calls ----------------------------------------------------------------------

    async def snapshot(self, request: web.Request) -> Reply:
        box, sid = await self._live(request)
        expiration = (await self.body(request)).get("expiration")
        expires = tk.epoch_ms() + expiration if isinstance(expiration, int) and expiration else None
        async with box.lock:
            try:
                snap = await self._take(box, "snapshot", expires, usable=True)
            except ProviderError as exc:
                return self.error(500, f"snapshot failed: {exc}", "internal_server_error")
            await self._stop(box, automatic=False)  # "the sandbox shuts down automatically"
        return {"snapshot": self._snapshot_dto(snap), "session": self._session(box, sid)}

    async def stop(self, request: web.Request) -> Reply:
        box, sid = await self._live(request)
        async with box.lock:
            await self._stop(box, automatic=True)
        return {"session": self._session(box, sid), "sandbox": self._sandbox(box)}

    async def cmd(self, request: web.Request) -> web.StreamResponse:
        box, sid = await self._live(request)
        body = await self.body(request)
        command, args = body.get("command"), body.get("args") or []
        if not isinstance(command, str) or not command or not isinstance(args, list):
            return self.error(400, "command must be a string and args a list")
        if not body.get("wait"):
            return self.error(501, "detached commands are not emulated", "not_implemented")
        cwd = posixpath.join(CWD, body.get("cwd") or CWD)  # a relative one under CWD
        env = {**box.env, **tk.strings(body.get("env") or {})}
        limit_s = tk.deadline_s(body.get("timeout"), unit_s=0.001)
        record = {"id": f"cmd_{secrets.token_hex(8)}", "name": command,
                  "args": [str(a) for a in args], "cwd": cwd, "sessionId": sid,
                  "startedAt": tk.epoch_ms(), "exitCode": None}  # fmt: skip
        response = await tk.open_stream(request, "application/x-ndjson")
        lines: list[dict[str, Any]] = []
        # A client that goes away (its own deadline) leaves the command running to `timeout`.
        with contextlib.suppress(ConnectionResetError):
            await response.write(tk.ndjson({"command": record}))
            argv = tk.in_dir([command, *record["args"]], cwd, env)
            try:
                done = await self.sandboxes.exec(box, argv, timeout_s=limit_s)
                lines += [{"stream": s, "data": tk.text(d)} for s, d in tk.outputs(done)]
                lines.append({"command": {**record, "exitCode": tk.exit_status(done.exit_code)}})
            except OperationTimeout:  # the service's kill at `timeout`
                lines.append({"command": {**record, "exitCode": KILLED}})
            except ProviderError as exc:  # an in-band error: never "sandbox_stream_closed",
                # which would send the SDK to the logs and wait endpoints (not emulated)
                code = "sandbox_stopped" if box.state != "running" else "internal_error"
                lines.append({"stream": "error", "data": {"code": code, "message": str(exc)}})
            await response.write(tk.ndjson(*lines))
            await response.write_eof()
        return response

    async def fs_write(self, request: web.Request) -> Reply:
        box, _ = await self._live(request)
        cwd, raw = request.headers.get("x-cwd") or "/", await request.read()
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
                files = [(m.name, archive.extractfile(m)) for m in archive if m.isfile()]
                contents = [(posixpath.join(cwd, n), f.read()) for n, f in files if f]
        except (tarfile.TarError, OSError, EOFError) as exc:
            return self.error(400, f"the body is not a gzip tar archive: {exc}")
        for path, data in contents:
            try:
                await self.sandboxes.write_file(box, posixpath.normpath(path), data)
            except ProviderError as exc:
                return self.error(400, f"cannot write {path}: {exc}", "write_failed")
        return {}

    async def fs_read(self, request: web.Request) -> Reply:
        box, _ = await self._live(request)
        body = await self.body(request)
        path = tk.resolve(self.required(body, "path"), body.get("cwd") or CWD)
        try:
            data = await self.sandboxes.read_file(box, path)
        except NotFound:
            return self.error(404, f"file not found: {path}", "file_not_found")
        except ProviderError as exc:
            return self.error(400, f"cannot read {path}: {exc}", "read_failed")
        return web.Response(body=data, content_type="application/octet-stream")
