"""Loopback emulator of the Fly.io Sprites API, as ``sprites-py`` 0.7.2 speaks it.

Run: ``python -m tests.emulators.sprites --port 0 --state-dir D [--latency-ms X] [--token T]``.
Point the adapter at it with :func:`client_env` (``SPRITES_API_URL=http://127.0.0.1:PORT``).

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

Semantics, each Sprite being a real ``local`` sandbox with ``/home/sprite`` created at birth:

* exec runs the command with ``HOME=/home/sprite`` in ``dir`` (default ``/home/sprite``), as
  root (a real Sprite runs it as the ``sprite`` user).
* A checkpoint is a local (filesystem-only) checkpoint, taken live; ids are ``v1``, ``v2``...
  per Sprite (no ``v0`` and no automatic ``auto-`` checkpoints are made).
* A restore is in place: a new local sandbox from the checkpoint takes over the same Sprite name
  and the old one is destroyed, so every process stops, as on Sprites. Requests arriving during a
  restore wait for it. (The local sandbox's /tmp is a private tmpfs, so /tmp is not captured;
  /home/sprite is.)
* ``status`` is ``cold`` until the first exec, file or checkpoint call, then ``running``;
  the emulator never hibernates a Sprite, so wake-up latency is not emulated.
* ``config`` (ram_mb, cpus) is applied as the local sandbox's cgroup limits and echoed in the
  info; ``region``, ``storage_gb``, ``runtime``, ``wait_for_capacity`` are accepted and echoed.

Not emulated: the control (multiplexed) WebSocket (``/control`` is 404, so ``control_mode``
clients fall back to direct exec), TTY, exec sessions and attach, stdin, services, network
policy, URL settings updates, ``fs`` list/delete/rename/copy/chmod, checkpoint deletion,
upgrade, hibernation and wake, regions, quotas and billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from providers.base import CheckpointRef, Sandbox, SandboxSpec
from providers.errors import NotFound, ProviderError
from tests.emulators.common import (
    Emulator,
    bearer_auth,
    make_backend,
    run_emulator,
    truncated_json,
    undecodable_gzip,
)

API = "/v1/sprites"
HOME = "/home/sprite"
ORGANIZATION = "emulated-org"
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
PAGE_MAX = 50
CHUNK = 1024 * 1024
#: The exec WebSocket has no server-side timeout; the local sandbox needs a number.
NO_TIMEOUT_S = 24 * 3600.0
STDIN, STDOUT, STDERR, EXIT, STDIN_EOF = 0, 1, 2, 3, 4
CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
#: Runs argv in the requested directory as a child of a shell whose pid (= its process group,
#: the local agent starts each command in a new session) is written to $1, so the command can
#: be killed when its client goes away.
WRAPPER = (
    'echo $$ > "$1"; p=$1; cd -- "$2" || { rm -f -- "$p"; exit 1; }; shift 2; '
    '"$@"; rc=$?; rm -f -- "$p"; exit $rc'
)


def client_env(emulator: Emulator) -> dict[str, str]:
    """Environment that points the sprites adapter (and its SDK) at ``emulator``."""
    return {
        "SPRITES_TOKEN": emulator.token,
        "SPRITES_API_URL": emulator.url,
        # No attribution headers from the SDK to the emulator (they would go to any endpoint).
        "SPRITES_CLIENT_SIGNALS": "off",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- error bodies -----------------------------------------------------------------------------


def api_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def validation_error(*messages: str) -> web.Response:
    return web.json_response({"errors": list(messages)}, status=400)


def fs_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


async def malformed(request: web.Request) -> web.StreamResponse:
    """An injected 200 that sprites-py cannot read: for the exec WebSocket, a plain 200 JSON
    answer instead of the 101 upgrade; for the NDJSON streams (checkpoint, restore), a line
    that is not JSON; for raw-byte reads and answers whose body the SDK ignores (DELETE, the
    file write), a body that claims gzip and is not (httpx decodes every body it reads);
    truncated JSON everywhere else."""
    path = request.path
    if path.endswith("/exec"):
        return web.json_response({"injected": "not a WebSocket upgrade"}, status=200)
    if path.endswith(("/checkpoint", "/restore")):
        return web.Response(
            status=200,
            body=b'{"type": "info", "data": "Check\n',
            content_type="application/x-ndjson",
        )
    if request.method in ("DELETE", "PUT") or path.endswith("/fs/read"):
        return await undecodable_gzip(request)
    return await truncated_json(request)


def injected_error(status: int, message: str) -> web.Response:
    if status == 429:
        return web.json_response(
            {
                "error": "sprite_creation_rate_limited",
                "message": message,
                "limit": 10,
                "window_seconds": 60,
                "retry_after_seconds": 1,
            },
            status=429,
        )
    return api_error(status, message)


# -- state ------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    id: str
    comment: str
    source_id: str | None
    ref: CheckpointRef
    create_time: str = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "create_time": self.create_time,
            "comment": self.comment,
        }
        if self.source_id:
            data["source_id"] = self.source_id
        return data


@dataclass
class SpriteBox:
    id: str
    name: str
    labels: list[str]
    config: dict[str, Any]
    runtime: str | None
    local: Sandbox | None = None
    status: str = "cold"
    checkpoints: list[Checkpoint] = field(default_factory=list)  # newest first
    versions: int = 0
    current: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    last_running_at: str | None = None

    def touch(self) -> None:
        self.status = "running"
        self.last_running_at = _now()


class SpritesEmulator:
    def __init__(self, state_dir: Path, backend: str = "local") -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.local = make_backend(state_dir, backend)
        self.sprites: dict[str, SpriteBox] = {}

    async def open(self) -> None:
        await self.local.open()

    def live(self) -> list[str]:
        return sorted(self.sprites)

    # -- routing ----------------------------------------------------------------------------

    def install(self, app: web.Application, token: str) -> None:
        authenticate = bearer_auth(token, lambda request: api_error(401, "unauthorized"))

        app.middlewares.append(authenticate)
        r = app.router
        r.add_post(API, self.create)
        r.add_get(API, self.list)
        r.add_get(f"{API}/{{name}}", self.get)
        r.add_delete(f"{API}/{{name}}", self.delete)
        r.add_get(f"{API}/{{name}}/exec", self.exec)
        r.add_put(f"{API}/{{name}}/fs/write", self.fs_write)
        r.add_get(f"{API}/{{name}}/fs/read", self.fs_read)
        r.add_post(f"{API}/{{name}}/checkpoint", self.checkpoint)
        r.add_get(f"{API}/{{name}}/checkpoints", self.list_checkpoints)
        r.add_get(f"{API}/{{name}}/checkpoints/{{cid}}", self.get_checkpoint)
        r.add_post(f"{API}/{{name}}/checkpoints/{{cid}}/restore", self.restore)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _info(box: SpriteBox, request: web.Request) -> dict[str, Any]:
        return {
            "id": box.id,
            "name": box.name,
            "organization": ORGANIZATION,
            "status": box.status,
            "url": f"{request.scheme}://{request.host}/_sprite/{box.name}",
            "url_settings": {"auth": "sprite"},
            "labels": list(box.labels),
            "config": dict(box.config),
            "runtime": box.runtime,
            "version": "emulated",
            "created_at": box.created_at,
            "updated_at": box.updated_at,
            "last_running_at": box.last_running_at,
        }

    def _box(self, request: web.Request) -> SpriteBox | None:
        return self.sprites.get(request.match_info["name"])

    async def _ready(self, request: web.Request) -> tuple[SpriteBox | None, Sandbox | None]:
        """The Sprite and its current local sandbox, after any restore in progress."""
        box = self._box(request)
        if box is None:
            return None, None
        async with box.lock:  # a restore holds the lock while it swaps the local sandbox
            local = box.local
        if local is None or self.sprites.get(box.name) is not box:
            return None, None
        box.touch()
        return box, local

    @staticmethod
    def _path(request: web.Request) -> str | None:
        path = request.query.get("path")
        if not path:
            return None
        working_dir = request.query.get("workingDir") or "/"
        return posixpath.normpath(posixpath.join(working_dir, path))

    # -- sprites ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return validation_error("invalid JSON body")
        if not isinstance(body, dict):
            return validation_error("request body must be an object")
        name = body.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return validation_error(
                f"invalid name {name!r}: lowercase letters, digits and hyphens, 1-63 characters"
            )
        if name in self.sprites:
            return api_error(400, f"sprite {name} already exists")
        labels = body.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            return validation_error("labels must be a list of strings")
        config = body.get("config") or {}
        if not isinstance(config, dict):
            return validation_error("config must be an object")
        for key in ("ram_mb", "cpus", "storage_gb"):
            if key in config and (not isinstance(config[key], int) or config[key] <= 0):
                return validation_error(f"config.{key} must be a positive integer")
        box = SpriteBox(
            id=str(uuid.uuid4()),
            name=name,
            labels=list(labels),
            config=dict(config),
            runtime=body.get("runtime"),
        )
        self.sprites[name] = box
        async with box.lock:
            try:
                spec = SandboxSpec(
                    cpus=float(config.get("cpus") or 1),
                    memory_mb=int(config.get("ram_mb") or 1024),
                    labels={"sprites-emulator": name},
                )
                box.local = await self.local.create(spec)
                made = await self.local.exec(box.local, ["mkdir", "-p", HOME], timeout_s=30)
                if made.exit_code != 0:
                    raise ProviderError(f"mkdir {HOME} failed: {made.stderr!r}")
            except Exception as exc:  # noqa: BLE001 - any set-up failure is the API's 500
                self.sprites.pop(name, None)
                if box.local is not None:
                    with contextlib.suppress(Exception):
                        await self.local.destroy(box.local)
                return api_error(500, f"could not create sprite: {exc}")
        return web.json_response(self._info(box, request), status=201)

    async def list(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        try:
            limit = int(request.query.get("max_results") or PAGE_MAX)
        except ValueError:
            return validation_error("max_results must be an integer")
        limit = max(1, min(PAGE_MAX, limit))
        after = request.query.get("continuation_token") or ""
        names = sorted(n for n in self.sprites if n.startswith(prefix) and n > after)
        page, more = names[:limit], len(names) > limit
        boxes = [self.sprites[n] for n in page]
        statuses = [b.status for b in self.sprites.values()]
        counts = {status: statuses.count(status) for status in ("running", "warm", "cold")}
        return web.json_response(
            {
                "sprites": [self._info(b, request) for b in boxes],
                "has_more": more,
                "next_continuation_token": page[-1] if more else None,
                **counts,
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        return web.json_response(self._info(box, request))

    async def delete(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        self.sprites.pop(box.name, None)
        await self._destroy_box(box)
        return web.Response(status=204)

    async def _destroy_box(self, box: SpriteBox) -> None:
        async with box.lock:
            if box.local is not None:
                await self.local.destroy(box.local)
                box.local = None
            for checkpoint in box.checkpoints:
                with contextlib.suppress(Exception):
                    await self.local.delete_checkpoint(checkpoint.ref)
            box.checkpoints.clear()

    # -- exec -------------------------------------------------------------------------------

    async def exec(self, request: web.Request) -> web.StreamResponse:
        if self._box(request) is None:
            return api_error(404, "sprite not found")
        argv = request.query.getall("cmd", [])
        if not argv:
            return api_error(400, "cmd is required")
        if request.query.get("tty") == "true":
            return api_error(400, "tty mode is not emulated")
        env = request.query.getall("env", [])
        if any("=" not in item or item.startswith("=") for item in env):
            return api_error(400, "env entries must be KEY=VALUE")
        box, local = await self._ready(request)
        if box is None or local is None:
            return api_error(404, "sprite not found")
        cwd = request.query.get("dir") or HOME
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        pidfile = f"/tmp/.sprite-exec-{secrets.token_hex(6)}"
        command = ["env", f"HOME={HOME}", *env, "/bin/sh", "-c", WRAPPER, "sprite-exec",
                   pidfile, cwd, *argv]  # fmt: skip
        run = asyncio.ensure_future(self.local.exec(local, command, timeout_s=NO_TIMEOUT_S))
        gone = asyncio.ensure_future(self._until_closed(ws))
        await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():  # the client left first (its timeout): stop the command
            await self._kill(local, pidfile)
            with contextlib.suppress(Exception):
                await run
            return ws
        try:
            result = run.result()
        except Exception as exc:  # noqa: BLE001 - the sprite went away under the command
            gone.cancel()
            message = f"exec failed: {type(exc).__name__}"
            await ws.close(code=1011, message=message.encode()[:120])
            return ws
        try:
            for stream, data in ((STDOUT, result.stdout), (STDERR, result.stderr)):
                for start in range(0, len(data), CHUNK):
                    await ws.send_bytes(bytes([stream]) + data[start : start + CHUNK])
            code = result.exit_code if result.exit_code >= 0 else 128 - result.exit_code
            await ws.send_bytes(bytes([EXIT, code & 0xFF]))
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
        while True:
            message = await ws.receive()
            if message.type in CLOSED:
                return
            # Binary 0x00 (stdin data) is dropped: commands read /dev/null. 0x04 is EOF.

    async def _kill(self, local: Sandbox, pidfile: str) -> None:
        script = (
            f"for _ in $(seq 40); do [ -s {pidfile} ] && break; sleep 0.05; done; "
            f'[ -s {pidfile} ] && kill -s KILL -- "-$(cat {pidfile})" 2>/dev/null; '
            f"rm -f -- {pidfile}; true"
        )
        with contextlib.suppress(Exception):
            await self.local.exec(local, ["/bin/sh", "-c", script], timeout_s=30)

    # -- files ------------------------------------------------------------------------------

    async def fs_write(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if path is None:
            return fs_error(400, "path is required", "EINVAL")
        box, local = await self._ready(request)
        if box is None or local is None:
            return api_error(404, "sprite not found")
        data = await request.read()
        if request.query.get("mkdirParents", "true") != "true":
            parent = posixpath.dirname(path) or "/"
            check = await self.local.exec(local, ["test", "-d", parent], timeout_s=30)
            if check.exit_code != 0:
                return fs_error(404, f"parent directory {parent} does not exist", "ENOENT")
        try:
            await self.local.write_file(local, path, data)
        except NotFound:
            return fs_error(404, "no such file or directory", "ENOENT")
        except ProviderError as exc:
            return self._os_error(exc)
        mode = request.query.get("mode")
        if mode and mode not in ("0644", "644"):
            if not re.fullmatch(r"0?[0-7]{3,4}", mode):
                return fs_error(400, f"invalid mode {mode!r}", "EINVAL")
            await self.local.exec(local, ["chmod", mode, path], timeout_s=30)
        return web.json_response({"path": path, "size": len(data)})

    async def fs_read(self, request: web.Request) -> web.Response:
        path = self._path(request)
        if path is None:
            return fs_error(400, "path is required", "EINVAL")
        box, local = await self._ready(request)
        if box is None or local is None:
            return api_error(404, "sprite not found")
        try:
            data = await self.local.read_file(local, path)
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
    async def _event(response: web.StreamResponse, kind: str, text: str) -> None:
        key = "error" if kind == "error" else "data"
        line = json.dumps({"type": kind, key: text, "time": _now()}) + "\n"
        await response.write(line.encode())

    @staticmethod
    async def _ndjson(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        return response

    async def checkpoint(self, request: web.Request) -> web.StreamResponse:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        comment = ""
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return validation_error("invalid JSON body")
            comment = str((body or {}).get("comment") or "")
        response = await self._ndjson(request)
        await self._event(response, "info", "Creating checkpoint...")
        async with box.lock:
            if box.local is None or self.sprites.get(box.name) is not box:
                await self._event(response, "error", "sprite is gone")
                await response.write_eof()
                return response
            box.touch()
            await self._event(response, "info", "Saving filesystem state...")
            try:
                ref = await self.local.checkpoint(box.local)
            except Exception as exc:  # noqa: BLE001 - reported in the stream, as the API does
                await self._event(response, "error", f"Checkpoint failed: {exc}")
                await response.write_eof()
                return response
            box.versions += 1
            checkpoint = Checkpoint(
                id=f"v{box.versions}", comment=comment, source_id=box.current, ref=ref
            )
            box.checkpoints.insert(0, checkpoint)
            box.current = checkpoint.id
        await self._event(response, "complete", f"Checkpoint {checkpoint.id} created")
        await response.write_eof()
        return response

    async def list_checkpoints(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        return web.json_response([c.to_json() for c in box.checkpoints])

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        found = self._find_checkpoint(box, request.match_info["cid"])
        if found is None:
            return api_error(404, "checkpoint not found")
        return web.json_response(found.to_json())

    @staticmethod
    def _find_checkpoint(box: SpriteBox, checkpoint_id: str) -> Checkpoint | None:
        return next((c for c in box.checkpoints if c.id == checkpoint_id), None)

    async def restore(self, request: web.Request) -> web.StreamResponse:
        box = self._box(request)
        if box is None:
            return api_error(404, "sprite not found")
        checkpoint = self._find_checkpoint(box, request.match_info["cid"])
        if checkpoint is None:
            return api_error(404, "checkpoint not found")
        response = await self._ndjson(request)
        await self._event(response, "info", f"Restoring to checkpoint {checkpoint.id}...")
        async with box.lock:
            old = box.local
            if old is None or self.sprites.get(box.name) is not box:
                await self._event(response, "error", "sprite is gone")
                await response.write_eof()
                return response
            try:
                box.local = await self.local.restore(checkpoint.ref)
            except Exception as exc:  # noqa: BLE001 - reported in the stream
                await self._event(response, "error", f"Restore failed: {exc}")
                await response.write_eof()
                return response
            await self._event(response, "info", "Stopping processes...")
            with contextlib.suppress(Exception):
                await self.local.destroy(old)  # in place: nothing of the old one runs on
            box.current = checkpoint.id
            box.touch()
        await self._event(response, "complete", f"Restored to checkpoint {checkpoint.id}")
        await response.write_eof()
        return response

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        for box in list(self.sprites.values()):
            self.sprites.pop(box.name, None)
            with contextlib.suppress(Exception):
                await self._destroy_box(box)
        await self.local.close()


# -- process entry point ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    run_emulator("sprites", SpritesEmulator, injected_error, malformed, client_env, argv)


if __name__ == "__main__":
    main()
