"""Runloop's REST API, as ``runloop-api-client`` 3.0.0 speaks it, on the toolkit.

``client_env`` sets ``RUNLOOP_BASE_URL=http://127.0.0.1:PORT``: the SDK sends every call
(control, exec, files, snapshots) to that one host, as it does to ``api.runloop.ai``.

Wire protocol (research/sdk-runloop-together.md §2.3), paths under ``/v1/devboxes``,
``Authorization: Bearer <token>`` on every call (else 401), errors ``{"error": "..."}``:

* ``POST /create_and_await_running`` ``{"metadata", "launch_parameters", "snapshot_id"?}`` ->
  the ``DevboxView`` once the boot (held in the call) made it ``running`` (or ``failure``);
  ``GET /{id}``; ``GET ?limit=&starting_after=&status=`` -> ``{"devboxes", "has_more",
  "total_count"}``, newest first, shut-down devboxes included.
* ``POST /{id}/wait_for_status`` and ``/{id}/executions/{eid}/wait_for_status[?last_n=]``
  ``{"statuses", "timeout_seconds"}``: held until the status is one of them (at most 30 s and
  25 s), else **408**, on which the SDK's wait loop asks again.
* ``POST /{id}/execute_async`` ``{"command"}`` -> ``running``; its wait answers ``exit_status``,
  ``stdout``, ``stderr`` (the last ``last_n``, default 100, lines) and ``*_truncated``;
  ``POST .../kill``; ``GET .../stream_{stdout,stderr}_updates[?offset=]``: the whole output as
  SSE ``data: {"output", "offset"}`` once the command has ended.
* ``POST /{id}/upload_file`` (multipart ``path``, ``file``; parents created), ``POST
  /{id}/download_file`` ``{"path"}`` -> raw bytes (404 for a missing file).
* ``POST /{id}/snapshot_disk`` -> ``DevboxSnapshotView`` once taken; ``POST
  /disk_snapshots/{sid}/delete``.
* ``POST /{id}/suspend`` -> ``suspending``, then ``suspended``; ``/{id}/resume`` ->
  ``resuming``, then ``running``; ``/{id}/shutdown[?force=true]`` -> ``shutdown`` (409 during
  a snapshot unless ``force``; 200 again on a shut-down devbox).

Semantics (a devbox is a toolkit sandbox, a real ``local`` one by default): commands run as
root (Runloop: ``user``) by ``/bin/bash -l -c`` in ``/home/user``, output decoded as UTF-8
with replacement and delivered when they end; a killed command, or one whose devbox went away,
exits 137. Relative paths are under ``/home/user``. A snapshot is a toolkit (filesystem-only)
checkpoint taken live; ``snapshot_id`` boots from one. Suspend kills every command and keeps
the filesystem only (the local sandbox's private /tmp does not survive; /home/user does);
resume boots it again behind the same id. ``keep_alive_time_seconds`` (default 3600) shuts a
devbox down. A shut-down devbox stays visible as ``shutdown``; calls needing it running get 400.
The semantic faults (toolkit ``Misbehaving``) act here too: ``snapshot_disk`` answers only once
the snapshot is taken, so under ``snapshot-pending`` it never answers (until a shutdown wants
the devbox: then 500); a shutdown that leaks (``destroy-leaks``) leaves the devbox ``running``.

Not emulated: ``POST /v1/devboxes`` (no wait), ``execute`` (optimistic), ``snapshot_disk_async``
and its status, text ``read/write_file_contents``, stdin, live output of running commands,
blueprints (naming one is 404), tunnels, SSH, logs, usage, idle policies, TLS and HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import Box, Protocol, Refused, Snapshot
from providers.base import SandboxSpec
from providers.errors import NotFound, ProviderError

V1 = "/v1/devboxes"
HOME = "/home/user"
LAST_N = 100
STATUS_HOLD_S = 30.0
EXEC_HOLD_S = 25.0
KEEP_ALIVE_S = 3600
KILLED = 137
NO_DEADLINE_S = 24 * 3600.0
#: Preset sizes (CPU, GiB of memory), from the SDK's LaunchParameters docstring.
PRESETS = {"X_SMALL": (0.5, 1), "SMALL": (1, 2), "MEDIUM": (2, 4), "LARGE": (2, 8),
           "X_LARGE": (4, 16), "XX_LARGE": (8, 32)}  # fmt: skip


def api_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _ms(moment: float | None = None) -> int:
    return int((time.time() if moment is None else moment) * 1000)


def _tail(text: str, lines: int) -> tuple[str, bool]:
    kept = text.splitlines(keepends=True)
    return ("".join(kept[-lines:]), True) if len(kept) > lines else (text, False)


async def _until(done: Any, event: Any, hold: float) -> bool:
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
class RunloopBox(Box):
    metadata: dict[str, str]
    launch: dict[str, Any]
    snapshot_id: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    executions: dict[str, Execution] = field(default_factory=dict)
    snapshotting: int = 0
    shutdown_reason: str | None = None

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
        """Not gzip for the raw download, an event that is not JSON for SSE, else bad JSON."""
        if request.path.endswith("/download_file"):
            return await kit.undecodable_gzip(request)
        if request.path.endswith("_updates"):
            return web.Response(body=b'data: {"output": \n\n', content_type="text/event-stream")
        return await kit.truncated_json(request)

    def routes(self, router: web.UrlDispatcher) -> None:
        one, ex = f"{V1}/{{id}}", f"{V1}/{{id}}/executions/{{eid}}"
        router.add_post(f"{V1}/create_and_await_running", self.create)
        router.add_get(V1, self.list)
        router.add_post(f"{V1}/disk_snapshots/{{sid}}/delete", self.delete_snapshot)
        router.add_get(one, self.get)
        router.add_post(f"{one}/wait_for_status", self.wait)
        router.add_post(f"{one}/execute_async", self.execute)
        router.add_post(f"{ex}/wait_for_status", self.wait_execution)
        router.add_post(f"{ex}/kill", self.kill)
        router.add_get(f"{ex}/stream_{{which:stdout|stderr}}_updates", self.stream)
        for action in ("upload_file", "download_file", "snapshot_disk"):
            router.add_post(f"{one}/{action}", getattr(self, action))
        router.add_post(f"{one}/suspend", self.suspend)
        router.add_post(f"{one}/resume", self.resume)
        router.add_post(f"{one}/shutdown", self.shutdown_devbox)

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
        return await kit.json_object(request, lambda: api_error(400, "invalid JSON body"))

    @staticmethod
    def _view(box: RunloopBox) -> dict[str, Any]:
        return {"id": box.id, "status": box.state, "capabilities": [],
                "create_time_ms": _ms(box.created.timestamp()),
                "launch_parameters": box.launch, "metadata": box.metadata,
                "state_transitions": box.transitions, "snapshot_id": box.snapshot_id,
                "blueprint_id": None, "shutdown_reason": box.shutdown_reason}  # fmt: skip

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body.get("blueprint_id") or body.get("blueprint_name"):
            return api_error(404, "blueprint not found (the emulator has only the default image)")
        source = None
        if snapshot_id := body.get("snapshot_id"):
            snap = self.sandboxes.find_snapshot(str(snapshot_id))
            if snap is None or snap.ref is None:
                return api_error(404, f"snapshot {snapshot_id} not found")
            source = snap.ref
        launch, metadata = body.get("launch_parameters") or {}, body.get("metadata") or {}
        if not isinstance(launch, dict) or not isinstance(metadata, dict):
            return api_error(400, "launch_parameters and metadata must be objects")
        cpus, gib = PRESETS.get(launch.get("resource_size_request"), (1, 2))
        cpus, gib = launch.get("custom_cpu_cores") or cpus, launch.get("custom_gb_memory") or gib
        spec = SandboxSpec(cpus=float(cpus), memory_mb=int(gib) * 1024)
        box = RunloopBox(
            id=f"dbx_{secrets.token_hex(10)}", launch=launch,
            snapshot_id=snapshot_id, metadata={str(k): str(v) for k, v in metadata.items()},
        )  # fmt: skip
        box.extend(float(launch.get("keep_alive_time_seconds") or KEEP_ALIVE_S))
        self.sandboxes.add(box)
        # A transition, so that a shutdown (or the client giving up) meanwhile waits for it.
        boot = lambda: self.sandboxes.boot(box, spec, home=HOME, source=source)  # noqa: E731
        self.transition(box, "provisioning", boot, "running")
        await self.settled(box)
        if box.state == "failure" and box.id not in self.gone:
            async with box.lock:
                await self._end(box, None)
            box.set_state("failure")
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

    async def _held(self, request: web.Request, state: Any, event: Any, hold_s: float) -> bool:
        """Hold a wait_for_status call until ``state()`` is one it names (False: not in time)."""
        body = await self._body(request)
        statuses, hold = set(body.get("statuses") or ()), body.get("timeout_seconds") or hold_s
        return await _until(lambda: state() in statuses, event, min(float(hold), hold_s))

    async def wait(self, request: web.Request) -> web.Response:
        box = self._box(request)  # if it is shut down meanwhile, it is the same object
        if not await self._held(request, lambda: box.state, lambda: box.changed, STATUS_HOLD_S):
            return api_error(408, f"devbox {box.id} is still {box.state}")
        return web.json_response(self._view(box))

    async def suspend(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state != "suspended" or box.busy is not None:
            box = self._running(request)
            await self._kill(box.executions.values())
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
            async with box.lock:  # a snapshot in progress gives way (snapshot-pending)
                await self._end(box, "api_shutdown")
        return web.json_response(self._view(box))

    async def expire(self, box: Box) -> None:
        if isinstance(box, RunloopBox):
            await self._end(box, "keep_alive_timeout")

    async def _end(self, box: RunloopBox, reason: str | None) -> None:
        """Shut ``box`` down (under ``box.lock``): its commands, its sandbox; it stays
        visible as ``shutdown``."""
        await self._kill(box.executions.values())
        await self.settled(box)
        await self.sandboxes.destroy(box)
        if self.sandboxes.get(box.id) is box:  # a destroy that leaks (a semantic fault)
            return
        box.shutdown_reason = reason
        self.gone[box.id] = box
        box.set_state("shutdown")

    async def execute(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self._body(request)
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return api_error(400, "command is required")
        run = Execution(id=f"exe_{secrets.token_hex(10)}", devbox_id=box.id)
        argv = kit.in_dir(["/bin/bash", "-l", "-c", command], HOME, {"HOME": HOME, "USER": "user"})
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

    @staticmethod
    async def _kill(runs: Any) -> None:
        """Kill the commands of ``runs`` still running, and wait for their ends."""
        tasks = [r.task for r in runs if r.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_execution(self, request: web.Request) -> web.Response:
        run = self._execution(request)
        if not await self._held(request, lambda: run.status, lambda: run.done, EXEC_HOLD_S):
            return api_error(408, f"execution {run.id} is still {run.status}")
        return web.json_response(run.view(int(request.query.get("last_n") or LAST_N)))

    async def kill(self, request: web.Request) -> web.Response:
        run = self._execution(request)
        await self._kill([run])
        return web.json_response(run.view())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        run = self._execution(request)
        await run.done.wait()
        data = getattr(run, request.match_info["which"]).encode()
        offset = int(request.query.get("offset") or 0)  # bytes already received
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        if offset < len(data):
            event = {"output": data[offset:].decode(errors="replace"), "offset": len(data)}
            await answer.write(f"data: {json.dumps(event)}\n\n".encode())
        await answer.write_eof()
        return answer

    async def upload_file(self, request: web.Request) -> web.Response:
        box, form = self._running(request), await request.post()
        path, upload = form.get("path"), form.get("file")
        if not isinstance(path, str) or not path or not isinstance(upload, web.FileField):
            return api_error(400, "multipart fields path and file are required")
        try:
            await self.sandboxes.write_file(box, posixpath.join(HOME, path), upload.file.read())
        except ProviderError as exc:
            return api_error(400, f"cannot write {path}: {exc}")
        return web.json_response({})

    async def download_file(self, request: web.Request) -> web.Response:
        box, path = self._running(request), (await self._body(request)).get("path")
        if not isinstance(path, str) or not path:
            return api_error(400, "path is required")
        try:
            data = await self.sandboxes.read_file(box, posixpath.join(HOME, path))
        except NotFound:
            return api_error(404, f"file {path} not found")
        except ProviderError as exc:
            return api_error(400, f"cannot read {path}: {exc}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def snapshot_disk(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self._body(request)
        snap = Snapshot(id=f"snp_{secrets.token_hex(10)}", source_id=box.id, names=[])
        self.sandboxes.add_snapshot(snap)
        box.snapshotting += 1
        try:
            async with box.lock:
                await self.sandboxes.take(snap, box)
                await self.sandboxes.built(snap, box)  # the blocking call has no pending state
        except ProviderError as exc:
            await self.sandboxes.drop_snapshot(snap)
            return api_error(500, f"snapshot failed: {exc}")
        finally:
            box.snapshotting -= 1
        view = {"id": snap.id, "create_time_ms": _ms(), "source_devbox_id": box.id,
                "metadata": body.get("metadata") or {}, "name": body.get("name")}  # fmt: skip
        return web.json_response(view)

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        key = request.match_info["sid"]
        snap = self.sandboxes.find_snapshot(key)
        if snap is None:
            return api_error(404, f"snapshot {key} not found")
        await self.sandboxes.drop_snapshot(snap)
        return web.json_response({})

    async def shutdown(self) -> None:
        """Kill every command still running, then the toolkit's shutdown."""
        await self._kill(
            r for b in self.sandboxes.held() for r in getattr(b, "executions", {}).values()
        )
        await super().shutdown()
