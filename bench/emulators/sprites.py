"""The Fly.io Sprites API, as ``sprites-py`` 0.7.2 speaks it, on the toolkit.

``client_env`` sets ``SPRITES_API_URL=http://127.0.0.1:PORT`` (and no client signals).

Wire protocol (research/sdk-protocols.md §4.3; ``Authorization: Bearer <token>`` on every call,
the WebSocket handshake included, else 401 ``{"error": "unauthorized"}``; error bodies are the
API's ``{"error": "..."}``, validation errors ``{"errors": [...]}``):

* ``POST /v1/sprites`` ``{"name", "config"?, "labels"?, "wait_for_capacity"?, "runtime"?}`` ->
  201 with the Sprite's info (``status`` ``cold``). The name must be a lowercase DNS label
  (400 otherwise); a taken name is 400, as the API docs say.
* ``GET /v1/sprites?prefix=&max_results=&continuation_token=`` -> ``{"sprites": [...],
  "has_more", "next_continuation_token", "running", "warm", "cold"}``, by name, at most 50 a page.
* ``GET|DELETE /v1/sprites/{name}`` -> info, or 204; 404 ``{"error": "sprite not found"}``.
* ``GET /v1/sprites/{name}/exec?cmd=..&cmd=..&path=..&env=K=V&dir=..&stdin=true`` (WebSocket):
  the non-TTY binary framing, first byte the stream id: the client's ``0x04`` (stdin EOF) is
  read and ignored (stdin data ``0x00`` is read and dropped: commands get /dev/null), the server
  sends ``0x01`` stdout and ``0x02`` stderr frames (1 MiB at most each) and then ``0x03`` + one
  byte exit code, and closes after the client does (or after 5 s). Output is sent when the command
  ends, not streamed. If the client closes first (its timeout), the command's process group is
  killed. TTY mode is refused (400).
* ``PUT /v1/sprites/{name}/fs/write?path=&workingDir=&mode=&mkdirParents=`` (raw body) and
  ``GET .../fs/read?path=&workingDir=`` (raw bytes); errors ``{"error", "code": "ENOENT"|
  "EISDIR"|...}``, 404 for a missing file.
* ``POST /v1/sprites/{name}/checkpoint`` ``{"comment"?}`` -> exactly 200, ``application/x-ndjson``
  lines ``{"type": "info"|"complete"|"error", "data"|"error", "time"}``, streamed as the work
  goes (``"Checkpoint vN created"`` on success; a failure after the 200 is an ``error`` line).
* ``GET /v1/sprites/{name}/checkpoints`` -> ``[{"id", "create_time", "comment", "source_id"?}]``
  newest first; ``GET .../checkpoints/{id}`` -> one, or 404.
* ``POST /v1/sprites/{name}/checkpoints/{id}/restore`` -> exactly 200 NDJSON, or 404.

Semantics, each Sprite being a toolkit sandbox (a real ``local`` one by default) with
``/home/sprite`` created at birth:

* exec runs the command with ``HOME=/home/sprite`` in ``dir`` (default ``/home/sprite``), as
  root (a real Sprite runs it as the ``sprite`` user).
* A checkpoint is a toolkit (filesystem-only) checkpoint, taken live; ids are ``v1``, ``v2``...
  per Sprite (no ``v0`` and no automatic ``auto-`` checkpoints are made). Under the
  ``snapshot-pending`` semantic fault (toolkit ``Misbehaving``) the stream never completes.
* A restore is in place (the toolkit's rewind): a new sandbox from the checkpoint takes over
  the same Sprite name and the old one is destroyed, so every process stops, as on Sprites.
  Requests arriving during a restore wait for it. (The local sandbox's /tmp is a private
  tmpfs, so /tmp is not captured; /home/sprite is.)
* ``status`` is ``cold`` until the first exec, file or checkpoint call, then ``running``;
  the emulator never hibernates a Sprite, so wake-up latency is not emulated.
* ``config`` (ram_mb, cpus) is applied as the sandbox's (cgroup) limits and echoed in the
  info; ``region``, ``storage_gb``, ``runtime``, ``wait_for_capacity`` are accepted and echoed.

Not emulated: the control (multiplexed) WebSocket (``/control`` is 404, so ``control_mode``
clients fall back to direct exec), TTY, exec sessions and attach, stdin, services, network
policy, URL settings updates, ``fs`` list/delete/rename/copy/chmod, checkpoint deletion,
upgrade, hibernation and wake, regions, quotas and billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import (
    Box,
    Protocol,
    Refused,
    in_dir,
    iso,
    json_object,
    truncated_json,
    undecodable_gzip,
    utc_now,
)
from providers.base import CheckpointRef, SandboxSpec
from providers.errors import NotFound, ProviderError

API = "/v1/sprites"
HOME = "/home/sprite"
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
PAGE_MAX = 50
CHUNK = 1024 * 1024
#: Stream ids of the exec WebSocket's frames.
STREAMS = {"stdout": 1, "stderr": 2}
EXIT = 3
CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


def api_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def validation_error(*messages: str) -> web.Response:
    return web.json_response({"errors": list(messages)}, status=400)


def fs_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


@dataclass
class Checkpoint:
    id: str
    comment: str
    source_id: str | None
    ref: CheckpointRef
    create_time: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        data = {"id": self.id, "create_time": self.create_time, "comment": self.comment}
        return data | ({"source_id": self.source_id} if self.source_id else {})


@dataclass(eq=False, kw_only=True)
class SpriteBox(Box):
    name: str
    uid: str
    labels: list[str]
    config: dict[str, Any]
    runtime: str | None
    status: str = "cold"
    checkpoints: list[Checkpoint] = field(default_factory=list)  # newest first
    versions: int = 0
    current: str | None = None
    last_running_at: str | None = None


class SpritesEmulator(Protocol):
    name = "sprites"

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {
            "SPRITES_TOKEN": token,
            "SPRITES_API_URL": url,
            # No attribution headers from the SDK to the emulator (they would go to any endpoint).
            "SPRITES_CLIENT_SIGNALS": "off",
        }

    def error(self, status: int, message: str) -> web.Response:
        if status != 429:
            return api_error(status, message)
        body = {"error": "sprite_creation_rate_limited", "message": message, "limit": 10,
                "window_seconds": 60, "retry_after_seconds": 1}  # fmt: skip
        return web.json_response(body, status=429)

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        """For the exec WebSocket, a plain 200 JSON answer instead of the 101 upgrade; for the
        NDJSON streams (checkpoint, restore), a line that is not JSON; for raw-byte reads and
        answers whose body the SDK ignores (DELETE, the file write), a body that claims gzip
        and is not (httpx decodes every body it reads); truncated JSON everywhere else."""
        path = request.path
        if path.endswith("/exec"):
            return web.json_response({"injected": "not a WebSocket upgrade"}, status=200)
        if path.endswith(("/checkpoint", "/restore")):
            body = b'{"type": "info", "data": "Check\n'
            return web.Response(status=200, body=body, content_type="application/x-ndjson")
        if request.method in ("DELETE", "PUT") or path.endswith("/fs/read"):
            return await undecodable_gzip(request)
        return await truncated_json(request)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(API, self.create)
        router.add_get(API, self.list)
        router.add_get(f"{API}/{{name}}", self.get)
        router.add_delete(f"{API}/{{name}}", self.delete)
        router.add_get(f"{API}/{{name}}/exec", self.exec)
        router.add_put(f"{API}/{{name}}/fs/write", self.fs_write)
        router.add_get(f"{API}/{{name}}/fs/read", self.fs_read)
        router.add_post(f"{API}/{{name}}/checkpoint", self.checkpoint)
        router.add_get(f"{API}/{{name}}/checkpoints", self.list_checkpoints)
        router.add_get(f"{API}/{{name}}/checkpoints/{{cid}}", self.get_checkpoint)
        router.add_post(f"{API}/{{name}}/checkpoints/{{cid}}/restore", self.restore)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _info(box: SpriteBox, request: web.Request) -> dict[str, Any]:
        return {
            "id": box.uid, "name": box.name, "organization": "emulated-org",
            "status": box.status, "url": f"{request.scheme}://{request.host}/_sprite/{box.name}",
            "url_settings": {"auth": "sprite"}, "labels": list(box.labels),
            "config": dict(box.config), "runtime": box.runtime, "version": "emulated",
            "created_at": iso(box.created), "updated_at": iso(box.created),
            "last_running_at": box.last_running_at,
        }  # fmt: skip

    def _box(self, request: web.Request) -> SpriteBox:
        return self.lookup(SpriteBox, request.match_info["name"], "sprite not found")

    async def _ready(self, request: web.Request) -> SpriteBox:
        """The Sprite, after any restore in progress, marked running."""
        box = self._box(request)
        async with box.lock:  # a restore holds the lock while it swaps the sandbox
            pass
        if box.local is None or self.sandboxes.get(box.id) is not box:
            raise Refused(api_error(404, "sprite not found"))
        box.status, box.last_running_at = "running", utc_now()
        return box

    @staticmethod
    def _path(request: web.Request) -> str | None:
        path = request.query.get("path")
        return kit.resolve(path, request.query.get("workingDir") or "/") if path else None

    # -- sprites ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await json_object(
            request, lambda: validation_error("request body must be a JSON object")
        )
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return validation_error(
                f"invalid name {name!r}: lowercase letters, digits and hyphens, 1-63 characters"
            )
        if self.sandboxes.get(name) is not None:
            return api_error(400, f"sprite {name} already exists")
        labels, config = body.get("labels") or [], body.get("config") or {}
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            return validation_error("labels must be a list of strings")
        if not isinstance(config, dict):
            return validation_error("config must be an object")
        for key in ("ram_mb", "cpus", "storage_gb"):
            if key in config and (not isinstance(config[key], int) or config[key] <= 0):
                return validation_error(f"config.{key} must be a positive integer")
        box = self.sandboxes.add(
            SpriteBox(
                id=name,
                name=name,
                uid=str(uuid.uuid4()),
                labels=list(labels),
                config=dict(config),
                runtime=body.get("runtime"),
            )
        )
        spec = SandboxSpec(
            cpus=float(config.get("cpus") or 1), memory_mb=int(config.get("ram_mb") or 1024)
        )
        async with box.lock:
            try:
                await self.sandboxes.boot(box, spec, home=HOME)
            except Exception as exc:  # noqa: BLE001 - any set-up failure is the API's 500
                await self.sandboxes.destroy(box)
                return api_error(500, f"could not create sprite: {exc}")
        return web.json_response(self._info(box, request), status=201)

    async def list(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        try:
            limit = max(1, min(PAGE_MAX, int(request.query.get("max_results") or PAGE_MAX)))
        except ValueError:
            return validation_error("max_results must be an integer")
        after = request.query.get("continuation_token") or ""
        boxes = self.sandboxes.listed(SpriteBox)
        named = [b for b in boxes if b.name.startswith(prefix)]
        page, more = kit.keyset_page(named, lambda b: b.name, after, limit)
        statuses = [b.status for b in boxes]
        return web.json_response(
            {
                "sprites": [self._info(b, request) for b in page],
                "has_more": more is not None,
                "next_continuation_token": more,
                **{status: statuses.count(status) for status in ("running", "warm", "cold")},
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        box = self._box(request)
        return web.json_response(self._info(box, request))

    async def delete(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if await self.destroy(box):  # not when a destroy leaks (a semantic fault)
            for checkpoint in box.checkpoints:
                with contextlib.suppress(Exception):
                    await self.sandboxes.delete_checkpoint(checkpoint.ref)
            box.checkpoints.clear()
        return web.Response(status=204)

    # -- exec -------------------------------------------------------------------------------

    async def exec(self, request: web.Request) -> web.StreamResponse:
        argv, env = request.query.getall("cmd", []), request.query.getall("env", [])
        self._box(request)
        if not argv:
            return api_error(400, "cmd is required")
        if request.query.get("tty") == "true":
            return api_error(400, "tty mode is not emulated")
        if any("=" not in item or item.startswith("=") for item in env):
            return api_error(400, "env entries must be KEY=VALUE")
        box = await self._ready(request)
        cwd = request.query.get("dir") or HOME
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        env_pairs = dict(item.split("=", 1) for item in env)
        command = in_dir(argv, cwd, {"HOME": HOME, **env_pairs})
        run = self.sandboxes.exec(box, command, timeout_s=kit.NO_DEADLINE_S, kill_on_cancel=True)
        gone = asyncio.ensure_future(self._until_closed(ws))
        try:
            result = await kit.unless(run, gone)
        except Exception as exc:  # noqa: BLE001 - the sprite went away under the command
            gone.cancel()
            await ws.close(code=1011, message=f"exec failed: {type(exc).__name__}".encode()[:120])
            return ws
        if result is None:  # the client left first (its timeout): the command was killed
            return ws
        try:
            for stream, chunk in kit.outputs(result, CHUNK):
                await ws.send_bytes(bytes([STREAMS[stream]]) + chunk)
            await ws.send_bytes(bytes([EXIT, kit.exit_status(result.exit_code) & 0xFF]))
        except (ConnectionError, RuntimeError):
            gone.cancel()
            return ws
        # The SDK closes right after EXIT; the real server would close after ~5 s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gone), timeout=5)
        gone.cancel()
        await ws.close()
        return ws

    @staticmethod
    async def _until_closed(ws: web.WebSocketResponse) -> None:
        # Binary 0x00 (stdin data) is dropped: commands read /dev/null. 0x04 is EOF.
        while (await ws.receive()).type not in CLOSED:
            pass

    # -- files ------------------------------------------------------------------------------

    async def fs_write(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if path is None:
            return fs_error(400, "path is required", "EINVAL")
        box = await self._ready(request)
        data = await request.read()
        if request.query.get("mkdirParents", "true") != "true":
            parent = posixpath.dirname(path) or "/"
            check = await self.sandboxes.exec(box, ["test", "-d", parent], timeout_s=30)
            if check.exit_code != 0:
                return fs_error(404, f"parent directory {parent} does not exist", "ENOENT")
        try:
            await self.sandboxes.write_file(box, path, data)
        except NotFound:
            return fs_error(404, "no such file or directory", "ENOENT")
        except ProviderError as exc:
            return self._os_error(exc)
        mode = request.query.get("mode")
        if mode and mode not in ("0644", "644"):
            if not re.fullmatch(r"0?[0-7]{3,4}", mode):
                return fs_error(400, f"invalid mode {mode!r}", "EINVAL")
            await self.sandboxes.exec(box, ["chmod", mode, path], timeout_s=30)
        return web.json_response({"path": path, "size": len(data)})

    async def fs_read(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if path is None:
            return fs_error(400, "path is required", "EINVAL")
        box = await self._ready(request)
        try:
            data = await self.sandboxes.read_file(box, path)
        except NotFound:
            return fs_error(404, f"file not found: {path}", "ENOENT")
        except ProviderError as exc:
            return self._os_error(exc)
        return web.Response(body=data, content_type="application/octet-stream")

    @staticmethod
    def _os_error(exc: ProviderError) -> web.Response:
        text = str(exc)
        for marker, status, code in (
            ("IsADirectory", 400, "EISDIR"),
            ("NotADirectory", 400, "ENOTDIR"),
            ("PermissionError", 403, "EACCES"),
            ("FileNotFound", 404, "ENOENT"),
        ):
            if marker in text:
                return fs_error(status, text, code)
        return fs_error(500, text, "EIO")

    # -- checkpoints ------------------------------------------------------------------------

    @staticmethod
    async def _events(request: web.Request, work: Any) -> web.StreamResponse:
        """Exactly 200 and NDJSON lines ``{"type", "data"|"error", "time"}`` as ``work(say)``
        goes; an exception after the 200 is an ``error`` line, as the API reports it."""
        response = await kit.open_stream(request, "application/x-ndjson")

        async def say(kind: str, text: str) -> None:
            key = "error" if kind == "error" else "data"
            await response.write(kit.ndjson({"type": kind, key: text, "time": utc_now()}))

        try:
            await work(say)
        except Exception as exc:  # noqa: BLE001 - reported in the stream
            with contextlib.suppress(ConnectionError):  # unless its client has gone
                await say("error", str(exc))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def checkpoint(self, request: web.Request) -> web.StreamResponse:
        box = self._box(request)
        body = await json_object(request, lambda: validation_error("invalid JSON body"))
        comment = str(body.get("comment") or "")

        async def work(say: Any) -> None:
            await say("info", "Creating checkpoint...")
            async with box.lock:
                if box.local is None or self.sandboxes.get(box.id) is not box:
                    raise ProviderError("sprite is gone")
                box.status, box.last_running_at = "running", utc_now()
                await say("info", "Saving filesystem state...")
                try:
                    ref = await self.sandboxes.checkpoint(box)
                except Exception as exc:
                    raise ProviderError(f"Checkpoint failed: {exc}") from exc
                box.versions += 1
                made = Checkpoint(id=f"v{box.versions}", comment=comment,
                                  source_id=box.current, ref=ref)  # fmt: skip
                box.checkpoints.insert(0, made)
                box.current = made.id
            await say("complete", f"Checkpoint {made.id} created")

        return await self._events(request, work)

    async def list_checkpoints(self, request: web.Request) -> web.Response:
        box = self._box(request)
        return web.json_response([c.to_json() for c in box.checkpoints])

    def _checkpoint(self, request: web.Request) -> tuple[SpriteBox, Checkpoint]:
        box = self._box(request)
        wanted = request.match_info["cid"]
        found = next((c for c in box.checkpoints if c.id == wanted), None)
        if found is None:
            raise Refused(api_error(404, "checkpoint not found"))
        return box, found

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        return web.json_response(self._checkpoint(request)[1].to_json())

    async def restore(self, request: web.Request) -> web.StreamResponse:
        box, checkpoint = self._checkpoint(request)

        async def work(say: Any) -> None:
            await say("info", f"Restoring to checkpoint {checkpoint.id}...")
            async with box.lock:
                if box.local is None or self.sandboxes.get(box.id) is not box:
                    raise ProviderError("sprite is gone")
                try:  # in place: nothing of the old sandbox runs on
                    await self.sandboxes.rewind(box, checkpoint.ref)
                except Exception as exc:
                    raise ProviderError(f"Restore failed: {exc}") from exc
                await say("info", "Stopping processes...")
                box.current = checkpoint.id
                box.status, box.last_running_at = "running", utc_now()
            await say("complete", f"Restored to checkpoint {checkpoint.id}")

        return await self._events(request, work)
