"""Runloop's REST API, as ``runloop-api-client`` 3.0.0 speaks it, on the toolkit.

``client_env`` sets ``RUNLOOP_BASE_URL=http://127.0.0.1:PORT``: every call of the SDK (control,
exec, files, snapshots) goes to that one host, as it does to ``api.runloop.ai``.

Wire protocol (research/sdk-runloop-together.md §2.3; ``Authorization: Bearer <token>`` on
every call, else 401; error bodies ``{"error": "..."}``: the SDK reads only the status):

* ``POST /v1/devboxes/create_and_await_running`` ``{"metadata", "launch_parameters",
  "snapshot_id"?, "blueprint_name"?, ...}`` -> the ``DevboxView`` once it is ``running`` (the
  boot is held in this call), or ``failure`` if the boot failed. ``GET /v1/devboxes/{id}``;
  ``GET /v1/devboxes?limit=&starting_after=&status=`` -> ``{"devboxes", "has_more",
  "total_count"}``, newest first, shut-down devboxes included.
* ``POST /v1/devboxes/{id}/wait_for_status`` ``{"statuses", "timeout_seconds"}``: held until the
  status is one of ``statuses`` (at most 30 s), else **408**, which the SDK's loop expects.
* ``POST .../execute_async`` ``{"command"}`` -> ``{"execution_id", "status": "running", ...}``;
  ``POST .../executions/{eid}/wait_for_status[?last_n=]`` (held at most 25 s, else 408) ->
  ``{"status": "completed", "exit_status", "stdout", "stderr", "*_truncated"}``, the last
  ``last_n`` (default 100) lines of each; ``GET .../executions/{eid}``; ``POST .../kill``;
  ``GET .../executions/{eid}/stream_{stdout,stderr}_updates[?offset=]``: SSE ``data:
  {"output", "offset"}`` events with the whole output, sent once the command has ended.
* ``POST .../upload_file`` (multipart ``path`` + ``file``; parents created) -> ``{}``;
  ``POST .../download_file`` ``{"path"}`` -> the raw bytes, 404 for a missing file.
* ``POST .../snapshot_disk`` ``{"name"?, "metadata"?, "commit_message"?}`` -> the
  ``DevboxSnapshotView`` once taken; ``POST /v1/devboxes/disk_snapshots/{sid}/delete``.
* ``POST .../suspend`` -> ``suspending`` (then ``suspended``), ``POST .../resume`` ->
  ``resuming`` (then ``running``), ``POST .../shutdown[?force=true]`` -> ``shutdown`` (409
  while a snapshot is being taken, unless ``force``; again on a shut-down devbox: 200).

Semantics, each devbox being a toolkit sandbox (a real ``local`` one by default):

* Commands run as root through ``/bin/bash -l -c <command>`` in ``/home/user`` with
  ``HOME=/home/user`` (Runloop runs them as ``user``); output is decoded as UTF-8 with
  replacement, and delivered when the command ends. A killed command, or one whose devbox
  went away, ends with exit status 137.
* Paths are relative to ``/home/user`` unless absolute.
* A snapshot is a toolkit (filesystem-only) checkpoint; the devbox keeps running. A create with
  ``snapshot_id`` boots from it. Blueprints do not exist here: naming one is 404.
* Suspend kills every command and keeps the filesystem only (the toolkit's stop); resume boots
  it again behind the same id (the local sandbox's /tmp is a private tmpfs and does not survive;
  /home/user does). ``keep_alive_time_seconds`` (default 3600) shuts a devbox down.
* A shut-down devbox stays visible (``GET``, lists) with status ``shutdown``; calls that need a
  running devbox get 400.

Not emulated: ``POST /v1/devboxes`` (create without the wait), ``execute`` (optimistic),
``snapshot_disk_async`` and its status, text ``read/write_file_contents``, stdin, live output
streams of running commands, tunnels, SSH, logs, usage, blueprints, lifecycle/idle policies,
resource limits of presets beyond CPU and memory, HTTP/2 and TLS, quotas and billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.emulators.toolkit import (
    Box,
    Protocol,
    Refused,
    Snapshot,
    in_dir,
    json_object,
    truncated_json,
    undecodable_gzip,
)
from providers.base import SandboxSpec
from providers.errors import NotFound, ProviderError

V1 = "/v1/devboxes"
HOME = "/home/user"
LAST_N = 100
STATUS_HOLD_S = 30.0
EXEC_HOLD_S = 25.0
KEEP_ALIVE_S = 3600
KILLED = 137
CHUNK = 8192
NO_DEADLINE_S = 24 * 3600.0
#: Preset sizes (CPU, GiB of memory), from the SDK's LaunchParameters docstring.
PRESETS = {"X_SMALL": (0.5, 1), "SMALL": (1, 2), "MEDIUM": (2, 4), "LARGE": (2, 8),
           "X_LARGE": (4, 16), "XX_LARGE": (8, 32)}  # fmt: skip


def api_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _ms(moment: float | None = None) -> int:
    return int((time.time() if moment is None else moment) * 1000)


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _tail(text: str, lines: int) -> tuple[str, bool]:
    kept = text.splitlines(keepends=True)
    return ("".join(kept[-lines:]), True) if len(kept) > lines else (text, False)


async def _until(done: Callable[[], bool], event: Callable[[], asyncio.Event], hold: float) -> bool:
    """Wait up to ``hold`` seconds for ``done()``, waking on ``event()``."""
    deadline = time.monotonic() + hold
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event().wait(), left)
    return True


@dataclass(eq=False, kw_only=True)
class Execution:
    id: str
    devbox_id: str
    task: asyncio.Task[Any] | None = None
    status: str = "running"
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self, last_n: int = LAST_N) -> dict[str, Any]:
        out, out_cut = _tail(self.stdout, last_n)
        err, err_cut = _tail(self.stderr, last_n)
        return {"devbox_id": self.devbox_id, "execution_id": self.id, "status": self.status,
                "exit_status": self.exit_status, "stdout": out, "stderr": err,
                "stdout_truncated": out_cut, "stderr_truncated": err_cut}  # fmt: skip


@dataclass(eq=False, kw_only=True)
class RunloopSnapshot(Snapshot):
    metadata: dict[str, str]
    commit_message: str | None = None
    create_time_ms: int = field(default_factory=_ms)


@dataclass(eq=False, kw_only=True)
class RunloopBox(Box):
    metadata: dict[str, str]
    launch: dict[str, Any]
    name: str | None = None
    snapshot_id: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    executions: dict[str, Execution] = field(default_factory=dict)
    snapshotting: int = 0
    shutdown_reason: str | None = None
    end_time_ms: int | None = None

    def set_state(self, state: str) -> None:
        state = "failure" if state == "error" else state  # the toolkit's name for a failure
        super().set_state(state)
        self.transitions.append({"status": state, "transition_time_ms": _ms()})
        self.changed.set()
        self.changed = asyncio.Event()


class RunloopEmulator(Protocol):
    name = "runloop"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: Shut-down devboxes: still answered by GET and listed, as the API does.
        self.gone: dict[str, RunloopBox] = {}

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {"RUNLOOP_API_KEY": token, "RUNLOOP_BASE_URL": url}

    def error(self, status: int, message: str) -> web.Response:
        return api_error(status, message)

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        """Bytes that claim gzip and are not for the raw download; an SSE event whose data is
        not JSON for the output streams; truncated JSON else."""
        if request.path.endswith("/download_file"):
            return await undecodable_gzip(request)
        if request.path.endswith("_updates"):
            return web.Response(body=b'data: {"output": \n\n', content_type="text/event-stream")
        return await truncated_json(request)

    def routes(self, router: web.UrlDispatcher) -> None:
        one, ex = f"{V1}/{{id}}", f"{V1}/{{id}}/executions/{{eid}}"
        router.add_post(f"{V1}/create_and_await_running", self.create)
        router.add_get(V1, self.list)
        router.add_post(f"{V1}/disk_snapshots/{{sid}}/delete", self.delete_snapshot)
        router.add_get(one, self.get)
        router.add_post(f"{one}/wait_for_status", self.wait)
        router.add_post(f"{one}/execute_async", self.execute)
        router.add_get(ex, self.get_execution)
        router.add_post(f"{ex}/wait_for_status", self.wait_execution)
        router.add_post(f"{ex}/kill", self.kill)
        router.add_get(f"{ex}/stream_{{which:stdout|stderr}}_updates", self.stream)
        for action in ("upload_file", "download_file", "snapshot_disk"):
            router.add_post(f"{one}/{action}", getattr(self, action))
        router.add_post(f"{one}/suspend", self.suspend)
        router.add_post(f"{one}/resume", self.resume)
        router.add_post(f"{one}/shutdown", self.shutdown_devbox)

    # -- lookups and views ------------------------------------------------------------------

    def _box(self, request: web.Request) -> RunloopBox:
        key = request.match_info["id"]
        box = self.sandboxes.get(key) or self.gone.get(key)
        if not isinstance(box, RunloopBox):
            raise Refused(api_error(404, f"devbox {key} not found"))
        return box

    def _running(self, request: web.Request) -> RunloopBox:
        box = self._box(request)
        if box.state != "running" or box.busy is not None or box.local is None:
            raise Refused(api_error(400, f"devbox {box.id} is not running (status {box.state})"))
        return box

    def _execution(self, request: web.Request) -> Execution:
        found = self._box(request).executions.get(request.match_info["eid"])
        if found is None:
            raise Refused(api_error(404, "execution not found"))
        return found

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        return await json_object(request, lambda: api_error(400, "invalid JSON body"))

    @staticmethod
    def _view(box: RunloopBox) -> dict[str, Any]:
        return {"id": box.id, "name": box.name, "status": box.state, "capabilities": [],
                "create_time_ms": _ms(box.created.timestamp()), "end_time_ms": box.end_time_ms,
                "launch_parameters": box.launch, "metadata": box.metadata,
                "state_transitions": box.transitions, "snapshot_id": box.snapshot_id,
                "blueprint_id": None, "shutdown_reason": box.shutdown_reason}  # fmt: skip

    @staticmethod
    def _snapshot_view(snap: RunloopSnapshot) -> dict[str, Any]:
        return {"id": snap.id, "create_time_ms": snap.create_time_ms, "metadata": snap.metadata,
                "source_devbox_id": snap.source_id, "name": (snap.names or [None])[0],
                "commit_message": snap.commit_message, "size_bytes": None}  # fmt: skip

    # -- devboxes ---------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body.get("blueprint_id") or body.get("blueprint_name"):
            return api_error(404, "blueprint not found (the emulator has only the default image)")
        source = None
        if snapshot_id := body.get("snapshot_id"):
            snap = self.sandboxes.find_snapshot(str(snapshot_id))
            if snap is None or snap.id != snapshot_id or snap.ref is None:
                return api_error(404, f"snapshot {snapshot_id} not found")
            source = snap.ref
        launch = body.get("launch_parameters") or {}
        metadata = body.get("metadata") or {}
        if not isinstance(launch, dict) or not isinstance(metadata, dict):
            return api_error(400, "launch_parameters and metadata must be objects")
        cpus, gib = PRESETS.get(launch.get("resource_size_request"), (1, 2))
        spec = SandboxSpec(
            cpus=float(launch.get("custom_cpu_cores") or cpus),
            memory_mb=int(launch.get("custom_gb_memory") or gib) * 1024,
        )
        box = RunloopBox(
            id=_id("dbx"), name=body.get("name"), launch=launch, snapshot_id=snapshot_id,
            metadata={str(k): str(v) for k, v in metadata.items()},
        )  # fmt: skip
        box.extend(float(launch.get("keep_alive_time_seconds") or KEEP_ALIVE_S))
        self.sandboxes.add(box)
        box.set_state("provisioning")
        try:
            await self.sandboxes.boot(box, spec, home=HOME, source=source)
        except ProviderError:
            await self._end(box, None)
            box.set_state("failure")
            return web.json_response(self._view(box))
        box.set_state("running")
        return web.json_response(self._view(box))

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self._view(self._box(request)))

    async def list(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit") or 20)
        except ValueError:
            return api_error(400, "limit must be an integer")
        status = request.query.get("status")
        boxes = [b for b in (*self.sandboxes.listed(), *self.gone.values())
                 if isinstance(b, RunloopBox) and (not status or b.state == status)]  # fmt: skip
        boxes.sort(key=lambda b: b.created, reverse=True)
        ids = [b.id for b in boxes]
        after = request.query.get("starting_after")
        start = ids.index(after) + 1 if after in ids else 0
        page = boxes[start : start + limit]
        return web.json_response({"devboxes": [self._view(b) for b in page],
                                  "has_more": start + limit < len(boxes),
                                  "total_count": len(boxes)})  # fmt: skip

    async def wait(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self._body(request)
        statuses = set(body.get("statuses") or ())
        hold = min(float(body.get("timeout_seconds") or 10), STATUS_HOLD_S)
        # The box may move to self.gone meanwhile; it is the same object.
        if not await _until(lambda: box.state in statuses, lambda: box.changed, hold):
            return api_error(408, f"devbox {box.id} is still {box.state}")
        return web.json_response(self._view(box))

    async def suspend(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state != "suspended" or box.busy is not None:
            box = self._running(request)
            await self._stop_commands(box)
            self.transition(box, "suspending", lambda: self.sandboxes.stop(box), "suspended")
        return web.json_response(self._view(box))

    async def resume(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state == "suspended" and box.busy is None:
            self.transition(box, "resuming", lambda: self.sandboxes.start(box), "running")
        elif box.state not in ("running", "resuming"):
            return api_error(400, f"devbox {box.id} is not suspended (status {box.state})")
        return web.json_response(self._view(box))

    async def shutdown_devbox(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.id not in self.gone:
            if box.snapshotting and request.query.get("force") != "true":
                return api_error(409, "a snapshot of this devbox is in progress")
            await self._end(box, "api_shutdown")
        return web.json_response(self._view(box))

    async def expire(self, box: Box) -> None:
        if isinstance(box, RunloopBox):
            await self._end(box, "keep_alive_timeout")

    async def _end(self, box: RunloopBox, reason: str | None) -> None:
        """Shut ``box`` down: its commands, its sandbox; it stays visible as ``shutdown``."""
        await self._stop_commands(box)
        await self.settled(box)
        await self.sandboxes.destroy(box)
        box.shutdown_reason, box.end_time_ms = reason, _ms()
        self.gone[box.id] = box
        box.set_state("shutdown")

    # -- commands ---------------------------------------------------------------------------

    async def execute(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self._body(request)
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return api_error(400, "command is required")
        run = Execution(id=_id("exe"), devbox_id=box.id)
        argv = in_dir(["/bin/bash", "-l", "-c", command], HOME, {"HOME": HOME, "USER": "user"})
        run.task = asyncio.ensure_future(self._run(box, run, argv))
        box.executions[run.id] = run
        return web.json_response(run.view())

    async def _run(self, box: RunloopBox, run: Execution, argv: list[str]) -> None:
        try:
            result = await self.sandboxes.exec(
                box, argv, timeout_s=NO_DEADLINE_S, kill_on_cancel=True
            )
            run.exit_status = result.exit_code
            run.stdout = result.stdout.decode("utf-8", errors="replace")
            run.stderr = result.stderr.decode("utf-8", errors="replace")
        except (asyncio.CancelledError, ProviderError):  # killed, or its devbox went away
            run.exit_status = KILLED
        finally:
            run.status = "completed"
            run.done.set()

    async def _stop_commands(self, box: RunloopBox) -> None:
        tasks = [r.task for r in box.executions.values() if r.task and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def get_execution(self, request: web.Request) -> web.Response:
        return web.json_response(self._execution(request).view())

    async def wait_execution(self, request: web.Request) -> web.Response:
        run, body = self._execution(request), await self._body(request)
        statuses = set(body.get("statuses") or ())
        hold = min(float(body.get("timeout_seconds") or EXEC_HOLD_S), EXEC_HOLD_S)
        if not await _until(lambda: run.status in statuses, lambda: run.done, hold):
            return api_error(408, f"execution {run.id} is still {run.status}")
        return web.json_response(run.view(int(request.query.get("last_n") or LAST_N)))

    async def kill(self, request: web.Request) -> web.Response:
        run = self._execution(request)
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        return web.json_response(run.view())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        run = self._execution(request)
        await run.done.wait()
        text = getattr(run, request.match_info["which"])
        offset = int(request.query.get("offset") or 0)
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        sent = 0
        for start in range(0, len(text), CHUNK):
            chunk = text[start : start + CHUNK]
            sent += len(chunk.encode())
            if sent > offset:  # offsets are bytes; a chunk is resent from its start
                event = json.dumps({"output": chunk, "offset": sent})
                await answer.write(f"data: {event}\n\n".encode())
        await answer.write_eof()
        return answer

    # -- files ------------------------------------------------------------------------------

    @staticmethod
    def _path(path: str) -> str:
        return path if path.startswith("/") else posixpath.join(HOME, path)

    async def upload_file(self, request: web.Request) -> web.Response:
        box = self._running(request)
        path, data = None, None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "path":
                    path = await part.text()  # type: ignore[union-attr]
                elif part.name == "file":
                    data = bytes(await part.read())  # type: ignore[union-attr]
        except (AssertionError, ValueError):
            return api_error(400, "invalid multipart body")
        if not path or data is None:
            return api_error(400, "path and file are required")
        try:
            await self.sandboxes.write_file(box, self._path(path), data)
        except ProviderError as exc:
            return api_error(400, f"cannot write {path}: {exc}")
        return web.json_response({})

    async def download_file(self, request: web.Request) -> web.Response:
        box, path = self._running(request), (await self._body(request)).get("path")
        if not isinstance(path, str) or not path:
            return api_error(400, "path is required")
        try:
            data = await self.sandboxes.read_file(box, self._path(path))
        except NotFound:
            return api_error(404, f"file {path} not found")
        except ProviderError as exc:
            return api_error(400, f"cannot read {path}: {exc}")
        return web.Response(body=data, content_type="application/octet-stream")

    # -- snapshots --------------------------------------------------------------------------

    async def snapshot_disk(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self._body(request)
        snap = RunloopSnapshot(
            id=_id("snp"), source_id=box.id, names=[str(body["name"])] if body.get("name") else [],
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
            commit_message=body.get("commit_message"),
        )  # fmt: skip
        self.sandboxes.add_snapshot(snap)
        box.snapshotting += 1
        try:
            await self.sandboxes.take(snap, box)
        except ProviderError as exc:
            await self.sandboxes.drop_snapshot(snap)
            return api_error(500, f"snapshot failed: {exc}")
        finally:
            box.snapshotting -= 1
        return web.json_response(self._snapshot_view(snap))

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        key = request.match_info["sid"]
        snap = self.sandboxes.find_snapshot(key)
        if snap is None or snap.id != key:
            return api_error(404, f"snapshot {key} not found")
        await self.sandboxes.drop_snapshot(snap)
        return web.json_response({})

    async def shutdown(self) -> None:
        """The emulator stops: every command still running is killed first (the toolkit then
        waits for its background work and destroys the sandboxes)."""
        for box in self.sandboxes.held():
            if isinstance(box, RunloopBox):
                await self._stop_commands(box)
        await super().shutdown()
