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

import posixpath
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.emulators import toolkit as kit
from bench.emulators.toolkit import KILLED, Box, Changes, Job, Protocol, Refused, Snapshot
from providers.base import SandboxSpec
from providers.errors import NotFound, ProviderError

V1 = "/v1/devboxes"
HOME = "/home/user"
LAST_N = 100
STATUS_HOLD_S = 30.0
EXEC_HOLD_S = 25.0
KEEP_ALIVE_S = 3600
#: Preset sizes (CPU, GiB of memory), from the SDK's LaunchParameters docstring.
PRESETS = {"X_SMALL": (0.5, 1), "SMALL": (1, 2), "MEDIUM": (2, 4), "LARGE": (2, 8),
           "X_LARGE": (4, 16), "XX_LARGE": (8, 32)}  # fmt: skip


def _tail(text: str, lines: int) -> tuple[str, bool]:
    kept = text.splitlines(keepends=True)
    return ("".join(kept[-lines:]), True) if len(kept) > lines else (text, False)


@dataclass(eq=False, kw_only=True)
class Execution(Job):
    """A command: killed, or cut short by its devbox going away, it exits 137."""

    devbox_id: str

    @property
    def status(self) -> str:
        return "completed" if self.ended else "running"

    def view(self, last_n: int = LAST_N) -> dict[str, Any]:
        out, out_cut = _tail(kit.text(self.output("stdout")), last_n)
        err, err_cut = _tail(kit.text(self.output("stderr")), last_n)
        code = self.result.exit_code if self.result else KILLED if self.ended else None
        return {"devbox_id": self.devbox_id, "execution_id": self.id, "status": self.status,
                "exit_status": code, "stdout": out, "stderr": err,
                "stdout_truncated": out_cut, "stderr_truncated": err_cut}  # fmt: skip


@dataclass(eq=False, kw_only=True)
class RunloopBox(Box):
    FAILED = "failure"

    metadata: dict[str, str]
    launch: dict[str, Any]
    snapshot_id: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    executions: dict[str, Execution] = field(default_factory=dict)
    snapshotting: int = 0
    shutdown_reason: str | None = None

    def set_state(self, state: str) -> None:
        self.transitions.append({"status": state, "transition_time_ms": kit.epoch_ms()})
        super().set_state(state)


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
        return web.json_response({"error": message}, status=status)

    #: Not gzip for the raw download, an event that is not JSON for SSE, else bad JSON.
    malformed_answers = (("/download_file", kit.undecodable_gzip), ("_updates", kit.broken_event))

    def routes(self, router: web.UrlDispatcher) -> None:
        one, ex = f"{V1}/{{id}}", f"{V1}/{{id}}/executions/{{eid}}"
        router.add_post(f"{V1}/create_and_await_running", self.create)
        router.add_get(V1, self.list)
        router.add_post(f"{V1}/disk_snapshots/{{sid}}/delete", self.delete_snapshot)
        router.add_get(one, self.get)
        router.add_post(f"{one}/wait_for_status", self.wait)
        router.add_post(f"{one}/execute_async", self.execute)
        router.add_post(f"{ex}/wait_for_status", self.wait_execution)
        router.add_post(f"{ex}/kill", self.kill_execution)
        router.add_get(f"{ex}/stream_{{which:stdout|stderr}}_updates", self.stream)
        for action in ("upload_file", "download_file", "snapshot_disk"):
            router.add_post(f"{one}/{action}", getattr(self, action))
        router.add_post(f"{one}/suspend", self.suspend)
        router.add_post(f"{one}/resume", self.resume)
        router.add_post(f"{one}/shutdown", self.shutdown_devbox)

    def _box(self, request: web.Request) -> RunloopBox:
        key = request.match_info["id"]
        if key in self.gone:
            return self.gone[key]
        return self.lookup(RunloopBox, key, f"devbox {key} not found")

    def _running(self, request: web.Request) -> RunloopBox:
        box = self._box(request)
        if box.state != "running" or box.busy is not None or box.local is None:
            raise Refused(self.error(400, f"devbox {box.id} is not running (status {box.state})"))
        return box

    def _execution(self, request: web.Request) -> Execution:
        found = self._box(request).executions.get(request.match_info["eid"])
        if found is None:
            raise Refused(self.error(404, "execution not found"))
        return found

    @staticmethod
    def _view(box: RunloopBox) -> dict[str, Any]:
        return {"id": box.id, "status": box.state, "capabilities": [],
                "create_time_ms": kit.epoch_ms(box.created),
                "launch_parameters": box.launch, "metadata": box.metadata,
                "state_transitions": box.transitions, "snapshot_id": box.snapshot_id,
                "blueprint_id": None, "shutdown_reason": box.shutdown_reason}  # fmt: skip

    async def create(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        if body.get("blueprint_id") or body.get("blueprint_name"):
            return self.error(404, "blueprint not found (the emulator has only the default image)")
        source = None
        if snapshot_id := body.get("snapshot_id"):
            snap = self.sandboxes.find_snapshot(str(snapshot_id))
            if snap is None or snap.ref is None:
                return self.error(404, f"snapshot {snapshot_id} not found")
            source = snap.ref
        launch, metadata = self.objects(body, launch_parameters={}, metadata={})
        cpus, gib = PRESETS.get(launch.get("resource_size_request"), (1, 2))
        cpus, gib = launch.get("custom_cpu_cores") or cpus, launch.get("custom_gb_memory") or gib
        spec = SandboxSpec(cpus=float(cpus), memory_mb=int(gib) * 1024)
        box = RunloopBox(
            id=f"dbx_{secrets.token_hex(10)}", launch=launch,
            snapshot_id=snapshot_id, metadata=kit.strings(metadata),
        )  # fmt: skip
        box.extend(float(launch.get("keep_alive_time_seconds") or KEEP_ALIVE_S))
        self.sandboxes.add(box)
        # A transition, so that a shutdown (or the client giving up) meanwhile waits for it.
        self.booting(box, "provisioning", "running", spec, home=HOME, source=source)
        await self.settled(box)
        if box.state == "failure" and box.id not in self.gone:
            async with box.lock:
                await self._end(box, None)
            box.set_state("failure")
        return web.json_response(self._view(box))

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self._view(self._box(request)))

    async def list(self, request: web.Request) -> web.Response:
        (limit,) = self.query_ints(request, limit=20)
        status = request.query.get("status")
        boxes = [b for b in (*self.sandboxes.listed(), *self.gone.values())
                 if isinstance(b, RunloopBox) and (not status or b.state == status)]  # fmt: skip
        boxes.sort(key=lambda b: b.created, reverse=True)
        ids = [b.id for b in boxes]
        after = request.query.get("starting_after")
        page, more = kit.offset_page(boxes, ids.index(after) + 1 if after in ids else 0, limit)
        return web.json_response({"devboxes": [self._view(b) for b in page],
                                  "has_more": more is not None,
                                  "total_count": len(boxes)})  # fmt: skip

    async def _held(
        self, request: web.Request, state: Any, changes: Changes, hold_s: float
    ) -> bool:
        """Hold a wait_for_status call until ``state()`` is one it names (False: not in time)."""
        body = await self.body(request)
        statuses, hold = set(body.get("statuses") or ()), body.get("timeout_seconds") or hold_s
        return await changes.until(lambda: state() in statuses, min(float(hold), hold_s))

    async def wait(self, request: web.Request) -> web.Response:
        box = self._box(request)  # if it is shut down meanwhile, it is the same object
        if not await self._held(request, lambda: box.state, box.changed, STATUS_HOLD_S):
            return self.error(408, f"devbox {box.id} is still {box.state}")
        return web.json_response(self._view(box))

    async def suspend(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state != "suspended" or box.busy is not None:
            box = self._running(request)
            await self.kill_jobs(box.executions.values())
            self.transition(box, "suspending", lambda: self.sandboxes.stop(box), "suspended")
        return web.json_response(self._view(box))

    async def resume(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state == "suspended" and box.busy is None:
            self.transition(box, "resuming", lambda: self.sandboxes.start(box), "running")
        elif box.state not in ("running", "resuming"):
            return self.error(400, f"devbox {box.id} is not suspended (status {box.state})")
        return web.json_response(self._view(box))

    async def shutdown_devbox(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.id not in self.gone:
            if box.snapshotting and request.query.get("force") != "true":
                return self.error(409, "a snapshot of this devbox is in progress")
            async with box.lock:  # a snapshot in progress gives way (snapshot-pending)
                await self._end(box, "api_shutdown")
        return web.json_response(self._view(box))

    async def expire(self, box: Box) -> None:
        if isinstance(box, RunloopBox):
            await self._end(box, "keep_alive_timeout")

    async def _end(self, box: RunloopBox, reason: str | None) -> None:
        """Shut ``box`` down (under ``box.lock``): its commands, its sandbox; it stays
        visible as ``shutdown``."""
        await self.kill_jobs(box.executions.values())
        await self.settled(box)
        if not await self.sandboxes.destroy(box):  # a destroy that leaks (a semantic fault)
            return
        box.shutdown_reason = reason
        self.gone[box.id] = box
        box.set_state("shutdown")

    async def execute(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self.body(request)
        command = self.required(body, "command")
        argv = kit.in_dir(["/bin/bash", "-l", "-c", command], HOME, {"HOME": HOME, "USER": "user"})
        run = Execution(id=f"exe_{secrets.token_hex(10)}", devbox_id=box.id)
        box.executions[run.id] = self.run_job(box, run, argv)
        return web.json_response(run.view())

    async def wait_execution(self, request: web.Request) -> web.Response:
        run = self._execution(request)
        if not await self._held(request, lambda: run.status, run.changed, EXEC_HOLD_S):
            return self.error(408, f"execution {run.id} is still {run.status}")
        return web.json_response(run.view(int(request.query.get("last_n") or LAST_N)))

    async def kill_execution(self, request: web.Request) -> web.Response:
        run = self._execution(request)
        await self.kill_jobs([run])
        return web.json_response(run.view())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        run = self._execution(request)
        await run.wait()
        data = kit.text(run.output(request.match_info["which"])).encode()
        offset = int(request.query.get("offset") or 0)  # bytes already received
        answer = await kit.open_stream(request, "text/event-stream")
        if offset < len(data):
            event = {"output": data[offset:].decode(errors="replace"), "offset": len(data)}
            await answer.write(kit.sse(event))
        await answer.write_eof()
        return answer

    async def upload_file(self, request: web.Request) -> web.Response:
        box, form = self._running(request), await request.post()
        path, upload = form.get("path"), form.get("file")
        if not isinstance(path, str) or not path or not isinstance(upload, web.FileField):
            return self.error(400, "multipart fields path and file are required")
        try:
            await self.sandboxes.write_file(box, posixpath.join(HOME, path), upload.file.read())
        except ProviderError as exc:
            return self.error(400, f"cannot write {path}: {exc}")
        return web.json_response({})

    async def download_file(self, request: web.Request) -> web.Response:
        box, path = self._running(request), self.required(await self.body(request), "path")
        try:
            data = await self.sandboxes.read_file(box, posixpath.join(HOME, path))
        except NotFound:
            return self.error(404, f"file {path} not found")
        except ProviderError as exc:
            return self.error(400, f"cannot read {path}: {exc}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def snapshot_disk(self, request: web.Request) -> web.Response:
        box, body = self._running(request), await self.body(request)
        snap = Snapshot(id=f"snp_{secrets.token_hex(10)}", source_id=box.id, names=[])
        box.snapshotting += 1
        try:
            async with box.lock:  # the blocking call has no pending state: answered once usable
                await self.sandboxes.capture(snap, box, usable=True)
        except ProviderError as exc:
            return self.error(500, f"snapshot failed: {exc}")
        finally:
            box.snapshotting -= 1
        view = {"id": snap.id, "create_time_ms": kit.epoch_ms(), "source_devbox_id": box.id,
                "metadata": body.get("metadata") or {}, "name": body.get("name")}  # fmt: skip
        return web.json_response(view)

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        key = request.match_info["sid"]
        snap = self.lookup_snapshot(Snapshot, key, f"snapshot {key} not found")
        await self.sandboxes.drop_snapshot(snap)
        return web.json_response({})
