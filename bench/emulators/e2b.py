"""E2B's wire protocol: the control-plane API and the in-sandbox agent (envd), on the toolkit.

``client_env`` sets ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` both to this server: the control
plane and envd share it, as E2B's ``sandbox.<domain>`` edge does, and envd requests are routed
by their ``E2b-Sandbox-Id`` header.

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
  (deletes a snapshot; 204, 404 when unknown), ``POST /sandboxes/{id}/fork``
  (``{"timeout"?, "count"?}``, count 1..20, default 1, timeout default 15 s; 201 with one
  ``{"sandbox": Sandbox}`` or ``{"error": {"code", "message"}}`` per child, in order; 404
  unknown, 409 paused).
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

Semantics, each emulated sandbox being a toolkit sandbox (a real ``local`` one by default):

* create boots a sandbox and creates ``/home/user``; the only template is ``base``
  (nominally 2 vCPU, 512 MiB, as E2B's base template; the local sandbox is not limited to
  that), any other ``templateID`` must be a snapshot taken here (else 404). The sandbox
  ``timeout`` (default 300 s) is enforced: when it passes, the sandbox is killed, or paused
  when ``autoPause`` was set; ``POST /timeout`` and ``connect`` move it.
* Commands run as root inside the sandbox, through ``/bin/bash -l -c <cmd>`` exactly as
  the SDK sends it, with ``HOME=/home/<user>`` and the cwd the request names (default the
  home). The user named in ``Authorization: Basic`` only picks the home directory. Output is
  delivered when the command ends (not streamed while it runs): all of stdout, then all of
  stderr, so their interleaving is lost.
* A snapshot is a toolkit checkpoint: the **filesystem only** (everything written outside /tmp
  and /dev); the source sandbox keeps running. E2B's snapshots also hold memory and running
  processes; this emulator **cannot restore memory**: a sandbox created from a snapshot starts
  with the snapshot's files and no processes. It is here to prove the protocol, not the
  fidelity of memory. Snapshotting a paused sandbox is refused (409). The snapshot call answers
  once the snapshot is built (there is no pending state), so under the ``snapshot-pending``
  semantic fault it never answers (toolkit ``Misbehaving``).
* ``pause`` freezes the sandbox (processes and memory kept) and ``connect`` thaws it;
  ``{"memory": false}`` (filesystem-only pause) stops it (filesystem kept, processes gone) and
  ``connect`` starts it again behind the same id.
* ``DELETE`` destroys at once; afterwards the id is unknown (404).
* A fork takes one toolkit checkpoint of the parent (the backend freezes it while its files
  are copied, as E2B pauses it briefly) and boots ``count`` sandboxes from it at once, each
  with new ids and tokens and the parent's template, metadata and environment (E2B does not
  document whether metadata is inherited; inheriting it keeps the run label on them); the
  checkpoint is deleted afterwards and the parent runs on. E2B's fork keeps **memory and
  running processes**; this emulator **cannot**: a child has the parent's files and no
  processes. The adapter declares E2B's semantics (``fork_keeps`` filesystem and memory), so
  the fork workload's process check fails against this emulator, on purpose (a documented
  limitation, asserted in tests/test_e2b_adapter.py), while the file and independence checks
  pass.

Not emulated: refreshes, metrics, logs, network and IAM settings (accepted, not
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
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import (
    Box,
    Protocol,
    Refused,
    Snapshot,
    in_dir,
    iso,
    truncated_json,
    undecodable_gzip,
)
from providers.errors import NotFound, OperationTimeout, ProviderError

CLIENT_ID = "6532622b"
BASE_TEMPLATE = "base"
ENVD_VERSION = "0.6.4"
DEFAULT_TIMEOUT_S = 300
BASE = {"cpuCount": 2, "memoryMB": 512, "diskSizeMB": 10240}
CHUNK = 32 * 1024
KEEPALIVE_S = 50.0
ENVD_PREFIXES = ("/files", "/health", "/process.Process/", "/filesystem.Filesystem/")
CONNECT_JSON = "application/connect+json"
ENVELOPE = struct.Struct(">BI")
END_STREAM = 0x02


#: A fork's children per call, and their lifetime when the request names none (the API's).
MAX_FORKS = 20
FORK_TIMEOUT_S = 15


def _new_id() -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20))


def api_error(status: int, message: str) -> web.Response:
    """The control plane's (and envd's REST) error body; also what injected faults answer."""
    return web.json_response({"code": status, "message": message}, status=status)


def connect_error(status: int, code: str, message: str) -> web.Response:
    """A Connect-protocol error for an RPC that fails before its stream starts."""
    return web.json_response({"code": code, "message": message}, status=status)


@dataclass(eq=False, kw_only=True)
class E2BBox(Box):
    template_id: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    access_token: str
    auto_pause: bool
    state: str = "running"  # running | paused


class E2BEmulator(Protocol):
    name = "e2b"
    self_authenticated = ENVD_PREFIXES  # envd checks each sandbox's own access token
    invalid_body = "Invalid request body"

    next_pid = 1000

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {"E2B_API_KEY": token, "E2B_API_URL": url, "E2B_SANDBOX_URL": url}

    def error(self, status: int, message: str) -> web.Response:
        return api_error(status, message)

    def authenticate(self, request: web.Request) -> web.Response | None:
        if request.headers.get("X-API-KEY") != self.token:
            return api_error(401, "Invalid API key, it must start with 'e2b_' prefix")
        return None

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        """A Connect stream whose first message is not JSON for the process RPCs; a body that
        claims gzip and is not for answers the SDK reads as raw bytes or not at all (file
        reads, 204s: kill, pause, timeout, health, snapshot delete); truncated JSON else."""
        path = request.path
        if path.startswith("/process.Process/"):
            broken = b'{"event": {"start"'
            body = ENVELOPE.pack(0x00, len(broken)) + broken
            return web.Response(status=200, body=body, headers={"Content-Type": CONNECT_JSON})
        bodiless = request.method == "DELETE" or path.endswith(("/pause", "/timeout"))
        if bodiless or path == "/health" or (path == "/files" and request.method == "GET"):
            return await undecodable_gzip(request)
        return await truncated_json(request)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v2/sandboxes", self.create)
        router.add_get("/v2/sandboxes", self.list)
        router.add_get("/sandboxes/{sid}", self.get)
        router.add_delete("/sandboxes/{sid}", self.kill)
        router.add_post("/sandboxes/{sid}/pause", self.pause)
        router.add_post("/v2/sandboxes/{sid}/connect", self.connect)
        router.add_post("/sandboxes/{sid}/snapshots", self.snapshot)
        router.add_post("/sandboxes/{sid}/timeout", self.set_timeout)
        router.add_post("/sandboxes/{sid}/fork", self.fork)
        router.add_get("/snapshots", self.list_snapshots)
        router.add_delete("/templates/{tid}", self.delete_template)
        router.add_post("/process.Process/Start", self.process_start)
        router.add_post("/process.Process/{method}", self.rpc_unimplemented)
        router.add_post("/filesystem.Filesystem/{method}", self.rpc_unimplemented)
        router.add_get("/files", self.read_file)
        router.add_post("/files", self.write_file)
        router.add_get("/health", self.health)

    # -- control plane ----------------------------------------------------------------------

    @staticmethod
    def _dto(box: E2BBox, *, listed: bool = False, token: bool = True) -> dict[str, Any]:
        dto = {"templateID": box.template_id, "sandboxID": box.id, "clientID": CLIENT_ID,
               "envdVersion": ENVD_VERSION}  # fmt: skip
        if token:
            dto["envdAccessToken"] = box.access_token
        if listed:
            dto.update(BASE, startedAt=iso(box.created), endAt=iso(box.end_at or datetime.now(UTC)),
                       state=box.state, metadata=box.metadata)  # fmt: skip
        return dto

    def _box(self, request: web.Request) -> E2BBox:
        key = request.match_info["sid"]
        return self.lookup(E2BBox, key, f'sandbox "{key}" doesn\'t exist')

    async def create(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        template = self.required(body, "templateID")
        snap = self.sandboxes.find_snapshot(template) if template != BASE_TEMPLATE else None
        if template != BASE_TEMPLATE and (snap is None or snap.ref is None):
            return api_error(404, f"template '{template}' not found")
        timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
        if not isinstance(timeout, int) or timeout < 0:
            return api_error(400, "timeout must be a non-negative integer")
        metadata, env_vars = self.objects(body, metadata={}, envVars={})
        box = E2BBox(
            id=_new_id(),
            template_id=template,
            metadata=kit.strings(metadata),
            env_vars=kit.strings(env_vars),
            access_token=secrets.token_hex(16),
            auto_pause=bool(body.get("autoPause")),
        )
        box.extend(timeout)
        try:
            await self.sandboxes.boot(box, home="/home/user", source=snap and snap.ref)
        except ProviderError as exc:
            return api_error(500, f"failed to start sandbox: {exc}")
        self.sandboxes.add(box)
        return web.json_response(self._dto(box), status=201)

    async def list(self, request: web.Request) -> web.Response:
        # The SDK quotes each key and value, then urlencodes the pairs.
        raw = request.query.get("metadata") or ""
        wanted = {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}
        states = {s for s in request.query.get("state", "").split(",") if s} or {
            "running",
            "paused",
        }
        template = request.query.get("template")
        limit, offset = self.query_ints(request, limit=100, nextToken=0)
        if not 1 <= limit <= 100:
            return api_error(400, "limit must be between 1 and 100")
        matching = sorted(
            (
                box
                for box in self.sandboxes.listed(E2BBox)
                if box.state in states
                and all(box.metadata.get(k) == v for k, v in wanted.items())
                and (not template or box.template_id == template)
            ),
            key=lambda b: (b.created, b.id),
            reverse=request.query.get("order", "desc") != "asc",
        )
        page, more = kit.offset_page(matching, offset, limit)
        response = web.json_response([self._dto(b, listed=True, token=False) for b in page])
        if more is not None:
            response.headers["x-next-token"] = str(more)
        return response

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self._dto(self._box(request), listed=True))

    async def kill(self, request: web.Request) -> web.Response:
        await self.destroy(self._box(request))
        return web.Response(status=204)

    async def pause(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self.body(request)
        async with box.lock:
            if box.state == "paused":
                return api_error(409, f'sandbox "{box.id}" is already paused')
            await self._pause(box, keep_memory=body.get("memory", True) is not False)
        return web.Response(status=204)

    async def _pause(self, box: E2BBox, *, keep_memory: bool) -> None:
        box.end_at = None  # a paused sandbox does not time out
        if keep_memory:
            await self.sandboxes.freeze(box)
        else:
            await self.sandboxes.stop(box)
        box.state = "paused"

    async def connect(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self.body(request)
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or timeout < 0):
            return api_error(400, "timeout must be a non-negative integer")
        async with box.lock:
            if box.state == "running":
                # A running sandbox's timeout only ever grows on connect.
                wanted = datetime.now(UTC) + timedelta(seconds=timeout or 0)
                if timeout is not None and (box.end_at is None or wanted > box.end_at):
                    box.extend(timeout)
                return web.json_response(self._dto(box), status=200)
            await (self.sandboxes.start(box) if box.parked else self.sandboxes.thaw(box))
            box.state = "running"
            box.extend(timeout if timeout is not None else DEFAULT_TIMEOUT_S)
        return web.json_response(self._dto(box), status=201)

    async def set_timeout(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self.body(request)
        timeout = body.get("timeout")
        if not isinstance(timeout, int) or timeout < 0:
            return api_error(400, "timeout must be a non-negative integer")
        box.extend(timeout)
        return web.Response(status=204)

    async def snapshot(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self.body(request)
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            return api_error(400, "name must be a non-empty string")
        snap = self.sandboxes.find_snapshot(name) if name else None
        async with box.lock:
            if box.state != "running":
                return api_error(409, f'sandbox "{box.id}" is paused; resume it first')
            # A name already taken gets a new build of the same snapshot template.
            snap = snap or Snapshot(
                id=secrets.token_hex(10), source_id=box.id, names=[name] * bool(name)
            )
            await self.sandboxes.take(snap, box)
            try:  # E2B answers once the snapshot can be used: it has no pending state
                await self.sandboxes.built(snap, box)
            except ProviderError as exc:
                return api_error(500, f"snapshot failed: {exc}")
        self.sandboxes.add_snapshot(snap)
        return web.json_response({"snapshotID": snap.id, "names": snap.names}, status=201)

    async def fork(self, request: web.Request) -> web.Response:
        parent, body = self._box(request), await self.body(request)
        count, timeout = body.get("count", 1), body.get("timeout", FORK_TIMEOUT_S)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_FORKS:
            return api_error(400, f"count must be an integer between 1 and {MAX_FORKS}")
        if not isinstance(timeout, int) or timeout < 0:
            return api_error(400, "timeout must be a non-negative integer")
        async with parent.lock:
            if parent.state != "running":
                return api_error(409, f'sandbox "{parent.id}" is paused; resume it first')
            try:
                ref = await self.sandboxes.checkpoint(parent)
            except ProviderError as exc:
                return api_error(500, f"failed to snapshot sandbox: {exc}")
        try:
            results = await asyncio.gather(
                *(self._fork_one(parent, ref, timeout) for _ in range(count))
            )
        finally:
            await self.sandboxes.delete_checkpoint(ref)
        return web.json_response(results, status=201)

    async def _fork_one(self, parent: E2BBox, ref: Any, lifetime_s: int) -> dict[str, Any]:
        child = E2BBox(
            id=_new_id(),
            template_id=parent.template_id,
            metadata=dict(parent.metadata),
            env_vars=dict(parent.env_vars),
            access_token=secrets.token_hex(16),
            auto_pause=False,
        )
        child.extend(lifetime_s)
        try:
            await self.sandboxes.boot(child, home="/home/user", source=ref)
        except ProviderError as exc:
            return {"error": {"code": 500, "message": f"failed to start forked sandbox: {exc}"}}
        self.sandboxes.add(child)
        return {"sandbox": self._dto(child)}

    async def list_snapshots(self, request: web.Request) -> web.Response:
        source, name = request.query.get("sandboxID"), request.query.get("name")
        found = [
            {"snapshotID": s.id, "names": s.names}
            for s in self.sandboxes.snapshots()
            if (not source or s.source_id == source) and (not name or name in (s.id, *s.names))
        ]
        return web.json_response(found)

    async def delete_template(self, request: web.Request) -> web.Response:
        key = unquote(request.match_info["tid"])
        snap = self.sandboxes.find_snapshot(key)
        if snap is None:
            return api_error(404, f"template '{key}' not found")
        await self.sandboxes.drop_snapshot(snap)
        return web.Response(status=204)

    async def expire(self, box: Box) -> None:
        """A sandbox whose timeout passed is killed, or paused with ``autoPause``."""
        if isinstance(box, E2BBox) and box.auto_pause:
            await self._pause(box, keep_memory=True)
        else:
            await self.sandboxes.destroy(box)

    # -- envd -------------------------------------------------------------------------------

    def _envd_box(self, request: web.Request, *, rpc: bool = False) -> E2BBox:
        """The running sandbox an envd request is for (else Refused with the answer)."""
        sandbox_id = request.headers.get("E2b-Sandbox-Id", "")
        if not sandbox_id:
            raise Refused(api_error(400, "missing E2b-Sandbox-Id header"))
        box = self.sandboxes.get(sandbox_id)
        if not isinstance(box, E2BBox) or box.state != "running":
            # What the edge proxy answers for a sandbox that is killed, timed out or paused.
            message = f"The sandbox {sandbox_id} was not found"
            body = {"code": 502, "message": message, "sandboxId": sandbox_id}
            raise Refused(web.json_response(body, status=502))
        if request.headers.get("X-Access-Token") != box.access_token:
            message = "unauthorized access, please provide a valid access token"
            error = (
                connect_error(401, "unauthenticated", message) if rpc else api_error(401, message)
            )
            raise Refused(error)
        return box

    @staticmethod
    def _user(request: web.Request) -> tuple[str, str]:
        """The user an envd call names, and its home directory."""
        user = request.query.get("username") or "user"
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user = base64.b64decode(header[6:]).decode().split(":", 1)[0] or user
        return user, "/root" if user == "root" else f"/home/{user}"

    async def health(self, request: web.Request) -> web.Response:
        self._envd_box(request)
        return web.Response(status=204)

    async def rpc_unimplemented(self, request: web.Request) -> web.Response:
        self._envd_box(request, rpc=True)
        return connect_error(501, "unimplemented", f"{request.path} is not emulated")

    async def process_start(self, request: web.Request) -> web.StreamResponse:
        box = self._envd_box(request, rpc=True)
        if not request.headers.get("Content-Type", "").startswith(CONNECT_JSON):
            return connect_error(415, "unimplemented", "expected application/connect+json")
        raw = await request.read()
        try:
            flags, length = ENVELOPE.unpack_from(raw)
            start = json.loads(raw[ENVELOPE.size : ENVELOPE.size + length])
            process = start["process"]
            argv = [str(process["cmd"]), *(str(a) for a in process.get("args") or [])]
            budget_ms = request.headers.get("Connect-Timeout-Ms")
            budget_s = int(budget_ms) / 1000.0 if budget_ms else kit.NO_DEADLINE_S
        except (struct.error, ValueError, KeyError, TypeError):
            return connect_error(400, "invalid_argument", "malformed StartRequest")
        if flags & 0x01:
            return connect_error(400, "invalid_argument", "compressed messages are not accepted")
        if process.get("pty") or start.get("pty"):
            return connect_error(501, "unimplemented", "PTY is not emulated")
        user, home = self._user(request)
        cwd = kit.resolve(process.get("cwd") or home, home)
        envs = {**box.env_vars, "HOME": home, "USER": user, "LOGNAME": user,
                **{str(k): str(v) for k, v in (process.get("envs") or {}).items()}}  # fmt: skip
        self.next_pid += 1
        response = web.StreamResponse(status=200, headers={"Content-Type": CONNECT_JSON})
        await response.prepare(request)
        send = _Sender(response)
        await send.message({"event": {"start": {"pid": self.next_pid}}})
        command = self.sandboxes.exec(box, in_dir(argv, cwd, envs), timeout_s=budget_s)
        task = asyncio.ensure_future(command)
        try:
            while not (await asyncio.wait({task}, timeout=KEEPALIVE_S))[0]:
                await send.message({"event": {"keepalive": {}}})
            try:
                result = task.result()
            except OperationTimeout:
                error = {"code": "deadline_exceeded", "message": "context deadline exceeded"}
                await send.end(error)
                return response
            except ProviderError as exc:
                message = f"the connection to sandbox {box.id} ended before the stream completed"
                await send.end({"code": "unavailable", "message": f"{message}: {exc}"})
                return response
            for stream, chunk in kit.outputs(result, CHUNK):
                data = base64.b64encode(chunk).decode()
                await send.message({"event": {"data": {stream: data}}})
            code = result.exit_code
            end = {"exitCode": code, "exited": True, "status": f"exit status {code}"}
            if code < 0:
                end = {"exitCode": -1, "exited": False, "status": f"signal: {-code}"}
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
        if not request.query.get("path"):
            return api_error(400, "path is required")
        path = kit.resolve(request.query["path"], self._user(request)[1])
        try:
            data = await self.sandboxes.read_file(box, path)
        except NotFound:
            return api_error(404, f"path '{path}' does not exist")
        except ProviderError as exc:
            return api_error(400, f"cannot read '{path}': {exc}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def write_file(self, request: web.Request) -> web.Response:
        box = self._envd_box(request)
        home, query_path = self._user(request)[1], request.query.get("path")
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
                data = bytes(await part.read())  # type: ignore[union-attr]
                uploads.append((query_path or (match.group(1) if match else ""), data))
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
            path = kit.resolve(raw, home)
            try:
                await self.sandboxes.write_file(box, path, data)
            except ProviderError as exc:
                return api_error(400, f"cannot write '{path}': {exc}")
            written.append({"name": posixpath.basename(path), "type": "file", "path": path})
        return web.json_response(written)


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
