"""Modal's wire protocol: two gRPC services over HTTP/2 (grpclib), on the toolkit's sandboxes.

The ``modal`` SDK (1.6.4, research/sdk-modal.md) speaks gRPC only: the control plane
``/modal.client.ModalClient/*`` at ``MODAL_SERVER_URL``, and the per-worker "task command
router" ``/modal.task_command_router.TaskCommandRouter/*`` at the URL the control plane hands
out (here: this same server; the SDK accepts plain ``http://`` when the control plane is on
127.0.0.1). The handlers are the SDK's own generated grpclib server bases (``modal_proto``),
so no framing is written here; every other method answers UNIMPLEMENTED.

**One port, two protocols.** The toolkit serves aiohttp (HTTP/1.1); gRPC needs HTTP/2. The
toolkit's server listens once, and :meth:`ModalEmulator.connections` hands each connection to
grpclib when it opens with the HTTP/2 preface, else to the toolkit's aiohttp app, which serves
the admin API (``/_emulator/...``) unchanged. Latency, faults and the call log are the
toolkit's :class:`EmulatorState`, applied per RPC by :meth:`ModalEmulator._call` (the HTTP
middleware cannot see gRPC calls):

* a call's path is its gRPC method path (method ``POST``), so ``--latency-match "POST
  /modal.client.ModalClient/SandboxCreateV2"`` works; gRPC paths name no sandbox, so a fault's
  ``match`` is tested against ``<path>/<sandbox id>`` (e.g. ``SandboxTerminateV2/sb-...``);
* faults: ``500`` INTERNAL, ``503`` UNAVAILABLE, ``429`` RESOURCE_EXHAUSTED with an
  ``RPCRetryPolicy`` of 1 s (the gRPC form of Retry-After), other statuses their gRPC
  equivalents; ``reset`` resets the call's HTTP/2 stream (RST_STREAM: other calls multiplexed
  on the connection go on); ``hang`` holds the call for ``--hang-s``, then resets it;
  ``malformed`` answers bytes that are no protobuf message;
* the call log's entries also carry ``sandbox`` and ``retry_attempt`` (the SDK's
  ``x-retry-attempt`` header; control-plane calls only): the SDK retries transient failures
  on its own and cannot be told not to, so this is where its retries are seen;
* latency mode ``total`` holds a call's first answer frame until arrival + latency, where
  arrival is when the handler starts (after grpclib has parsed the request's headers).

Wire protocol and semantics (each sandbox a toolkit sandbox, a real ``local`` one by default):

* Control plane: ``x-modal-token-secret`` must be the emulator's token (else UNAUTHENTICATED).
  ``AuthTokenGet`` (a JWT), ``AppGetOrCreate``, ``EnvironmentGetOrCreate`` (image builder
  2026.10), ``ImageGetOrCreate`` (answers "built" at once; every image definition runs the
  backend's base root filesystem, since no Dockerfile can be built offline), ``ImageFromId``,
  ``ImageDelete`` (deletes a filesystem snapshot; unknown ids are NOT_FOUND).
* ``SandboxCreateV2`` answers at once with the task id and router access, and boots the
  sandbox in the background, as Modal's create is asynchronous; a router call on it waits for
  the boot, so the first exec carries the boot, as on Modal (assumed: whether Modal's answer
  carries the task id is not known; without it the SDK polls ``SandboxGetTaskIdV2`` every
  0.5 s). CPU is requested in physical cores
  (``milli_cpu``; the backend gets 2 vCPU per core, the limit ``milli_cpu_max`` when set, else
  request + 4 cores, Modal's default soft limit); memory in MiB (the limit when set, else the
  request: Modal would let it grow). ``timeout_secs`` (default 300) ends it as TIMEOUT.
  ``SandboxGetTaskIdV2``, ``SandboxGetCommandRouterAccess``, ``SandboxWaitV2`` (long poll up to
  its ``timeout``), ``SandboxTerminateV2`` (exit 137; execs killed; answered once the backend
  sandbox is destroyed, an upper bound of Modal's; the result stays readable),
  ``SandboxTagsSetV2/GetV2``, ``SandboxListV2`` (running only, newest first, pages of 100
  before ``before_timestamp``; tags filter "at least these").
* Router (``authorization: Bearer <JWT>`` minted here, else UNAUTHENTICATED):
  ``TaskExecStart`` (idempotent by ``exec_id``; ``timeout_secs`` kills the command, reported as
  signal 9), ``TaskExecStdioRead`` (from ``offset``), ``TaskExecWait``, ``TaskExecPoll``,
  ``TaskExecStdinWriteStream``, ``TaskExecStdinStatus``,
  ``TaskSnapshotFilesystem`` (a toolkit snapshot: the filesystem; the source keeps running;
  ``ttl_seconds`` honoured; idempotent by ``snapshot_id``; answered once the image can be
  used, so under the ``snapshot-pending`` semantic fault it never answers until a terminate
  wants the sandbox, then INTERNAL).
* Semantic faults (``--misbehave``, toolkit ``Misbehaving``) act as in every emulator; a
  terminate that leaks (``destroy-leaks``) answers as usual and kills the commands, but the
  sandbox runs on, listed, with no result, until it is terminated again.
* Files: ``sandbox.filesystem`` execs ``/__modal/.bin/modal-sandbox-fs-tools '<json>'``; the
  emulator serves its ``ReadFile`` (bytes on stdout) and ``WriteFile`` (bytes from stdin,
  parents created) through the toolkit's file calls, errors as the tool's JSON on stderr.

Not faithful, and why: command output is delivered when the command ends, not streamed; an
ordinary command's stdin is not delivered (the backend's exec has none; only fs-tools consumes
stdin, and ``process.stdin``'s ``TaskExecStdinWrite`` is not served); other fs-tools commands
(ListFiles, Stat, ...) exit 2; memory snapshots (``TaskSnapshotMemory``, ``SandboxRestoreV2``)
are not served: the backend cannot capture a gVisor sandbox's memory; no scheduling delay, image
pull or TLS (Modal's channels use TLS, and the router connection is re-made after 30 s idle);
the exit code of a missing binary is the backend's (127); throttling, billing
(``SandboxGetStats``), tunnels, volumes, names, sidecars, readiness probes, persistent sandboxes
and the V1 backend's RPCs are not served.

Size: about 740 lines (80 of them this docstring) against the platform's 400. About 170 do for
gRPC what the toolkit does only for aiohttp: a connection handed to grpclib on the one port,
and latency, faults and the call log applied per RPC; the rest serve two services with three
stream shapes (server stream, client stream, long poll), the fs-tools protocol, and ended
sandboxes whose result Modal's wait and poll still read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpclib.const
from aiohttp import web
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec, ProtoStatusDetailsCodec
from grpclib.server import Server
from modal_proto import api_grpc, api_pb2
from modal_proto import task_command_router_grpc as tcr_grpc
from modal_proto import task_command_router_pb2 as sr

from bench.emulators.toolkit import NO_DEADLINE_S, Box, Protocol, Snapshot, chunks, in_dir
from providers.base import SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError

ROUTER = "/modal.task_command_router.TaskCommandRouter/"
FS_TOOLS = "/__modal/.bin/modal-sandbox-fs-tools"
HOME = "/root"
TOKEN_ID = "ak-sandbox-bench"
ENVIRONMENT_ID = "en-sandboxbench"
IMAGE_BUILDER_VERSION = "2026.10"
GR = api_pb2.GenericResult
H2_PREFACE = b"PRI * HTTP/2.0"
#: Answered by the ``malformed`` fault: a truncated varint, which no message type parses.
MALFORMED = b"\xff"
STDIO_CHUNK = 256 * 1024
LIST_PAGE = 100
ENDED_KEPT = 10_000
JWT_TTL_S = 30 * 86_400  # longer than any emulator runs: never refreshed
DEFAULT_TIMEOUT_S = 300
WAIT_MAX_S = 60.0
SIGKILL = int(signal.SIGKILL)
#: An injected HTTP status as the gRPC status Modal's server would answer.
FAULT_STATUS = {
    400: Status.INVALID_ARGUMENT, 401: Status.UNAUTHENTICATED, 403: Status.PERMISSION_DENIED,
    404: Status.NOT_FOUND, 409: Status.FAILED_PRECONDITION, 429: Status.RESOURCE_EXHAUSTED,
    500: Status.INTERNAL, 501: Status.UNIMPLEMENTED, 503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}  # fmt: skip


def _new_id(prefix: str, suffix: str = "") -> str:
    # 26 hex characters: never the V1 sandbox-id shape (22), so the SDK routes to V2.
    return f"{prefix}-{secrets.token_hex(13)}{suffix}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fs_error(kind: str, message: str) -> bytes:
    """fs-tools' error format on stderr, which the SDK turns into its filesystem errors."""
    return json.dumps({"error_kind": kind, "message": message}).encode()


class _Codec(ProtoCodec):
    """grpclib's protobuf codec that also sends raw bytes (the ``malformed`` fault)."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else super().encode(message, message_type)


@dataclass(eq=False)
class Exec:
    """One command started with ``TaskExecStart``."""

    argv: list[str]
    out: bytes = b""
    err: bytes = b""
    code: int | None = None
    signal: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    #: ``(command, path)`` for an fs-tools call, served here instead of run.
    fs: tuple[str, str] | None = None
    task: asyncio.Task[Any] | None = None

    def finish(self, code: int | None, out: bytes = b"", err: bytes = b"", sig: int | None = None):
        if not self.done.is_set():
            self.code, self.out, self.err, self.signal = code, out, err, sig
            self.done.set()

    def exit_status(self) -> dict[str, int]:
        if not self.done.is_set():
            return {}
        return {"signal": self.signal} if self.signal is not None else {"code": self.code or 0}


@dataclass(eq=False, kw_only=True)
class ModalBox(Box):
    app_id: str
    task_id: str
    tags: dict[str, str]
    created_at: float
    #: None while running; the outcome once it ended (terminated, timed out, failed to boot).
    result: Any = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    execs: dict[str, Exec] = field(default_factory=dict)


@dataclass(eq=False, kw_only=True)
class ModalImage(Snapshot):
    """A filesystem snapshot, which Modal names as an image."""

    expires: float | None = None


class _Answer:
    """The server side of one call, as handlers see it: notes when the answer starts and, in
    latency mode ``total``, holds it until it is due."""

    def __init__(self, stream: Any, entry: dict[str, Any], release_at: float | None) -> None:
        self.stream, self.entry, self.release_at = stream, entry, release_at

    async def hold(self) -> None:
        if "answered_s" not in self.entry:
            if self.release_at is not None:
                await asyncio.sleep(max(0.0, self.release_at - time.monotonic()))
            self.entry["answered_s"] = time.monotonic() - self.entry["at"]

    async def send_message(self, message: Any) -> None:
        await self.hold()
        await self.stream.send_message(message)

    def __aiter__(self) -> Any:
        return self.stream.__aiter__()


class ModalEmulator(Protocol):
    name: ClassVar[str] = "modal"

    def __init__(self, sandboxes: Any, token: str) -> None:
        super().__init__(sandboxes, token)
        self.apps: dict[str, str] = {}
        #: Image ids ImageGetOrCreate handed out (they run the base root filesystem).
        self.images: set[str] = set()
        self.snapshot_ids: dict[str, str] = {}
        self.task_ids: dict[str, str] = {}
        self.ended: OrderedDict[str, ModalBox] = OrderedDict()
        # One JWT for the auth token and the router (the SDK reads only its exp claim).
        claims = json.dumps({"exp": int(time.time()) + JWT_TTL_S}).encode()
        self.jwt = ".".join((_b64(b'{"alg":"none"}'), _b64(claims), secrets.token_urlsafe(24)))
        self.last_created = 0.0

    @staticmethod
    def client_env(url: str, token: str) -> dict[str, str]:
        return {
            "MODAL_SERVER_URL": url,
            "MODAL_TOKEN_ID": TOKEN_ID,
            "MODAL_TOKEN_SECRET": token,
            # A proxy in the environment must not carry loopback traffic.
            "MODAL_DISABLE_API_PROXY": "1",
        }

    def routes(self, router: web.UrlDispatcher) -> None:
        """No HTTP routes: Modal has no HTTP API; the aiohttp app serves the admin API only."""

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    # -- serving -----------------------------------------------------------------------------

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """Every method of both services: ours through :meth:`_call`, the rest UNIMPLEMENTED."""
        mapping = {}
        for base in (api_grpc.ModalClientBase, tcr_grpc.TaskCommandRouterBase):
            every: Any = type("Every", (base,), {})
            every.__abstractmethods__ = frozenset()
            for path, spec in every().__mapping__().items():
                handler = getattr(self, path.rsplit("/", 1)[1], None) or self._unimplemented

                async def call(stream: Any, path: str = path, spec: Any = spec, handler=handler):
                    await self._call(stream, path, spec.cardinality, handler)

                mapping[path] = grpclib.const.Handler(
                    call, spec.cardinality, spec.request_type, spec.reply_type
                )
        return mapping

    async def _call(self, stream: Any, path: str, cardinality: Any, handler: Callable) -> None:
        """One RPC: the toolkit's latency, faults and call log, authentication, then the handler;
        every failure leaves as a deliberate gRPC status (never a retried INTERNAL by accident)."""
        state, arrival = self.state, time.monotonic()
        metadata = stream.metadata or {}
        request = None if cardinality.client_streaming else await stream.recv_message()
        target = self._target(request)
        delay = state.delay_for(arrival) if state.latency_applies("POST", path) else 0.0
        fault = state.take_fault(f"{path}/{target}" if target else path)
        attempt = metadata.get("x-retry-attempt")
        entry = {
            "t": arrival - state.origin_s, "at": arrival, "method": "POST", "path": path,
            "added_s": delay, "fault": fault.kind if fault else None, "handled_s": None,
            "sandbox": target or None, "retry_attempt": int(attempt) if attempt else None,
        }  # fmt: skip
        state.log.append(entry)
        total = delay > 0 and fault is None and state.latency_mode == "total"
        answer = _Answer(stream, entry, arrival + delay if total else None)
        if delay > 0 and not total:
            await asyncio.sleep(delay)
        try:
            if fault is not None:
                await self._fault(stream, answer, fault.kind)
                return
            self._authenticate(path, metadata)
            await handler(request, answer)
        except GRPCError:
            await answer.hold()
            raise
        except NotFound as exc:
            await answer.hold()
            raise GRPCError(Status.NOT_FOUND, str(exc)) from exc
        except Exception as exc:  # the backend failed, or a bug here: INTERNAL
            if not isinstance(exc, ProviderError | OSError):
                print(f"modal emulator: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            await answer.hold()
            raise GRPCError(Status.INTERNAL, f"{type(exc).__name__}: {exc}") from exc
        finally:
            entry["handled_s"] = time.monotonic() - arrival

    async def _fault(self, stream: Any, answer: _Answer, kind: str) -> None:
        if kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.state.stopping.wait(), self.state.hang_s)
        if kind in ("reset", "hang"):
            await stream.cancel()  # RST_STREAM: this call only, not the connection
        elif kind == "malformed":
            await answer.send_message(MALFORMED)
        else:
            status = int(kind)
            retry = [api_pb2.RPCRetryPolicy(retry_after_secs=1)] if status == 429 else None
            code = FAULT_STATUS.get(status, Status.UNKNOWN if status >= 500 else Status.ABORTED)
            raise GRPCError(code, f"injected fault {status}", retry)

    def _authenticate(self, path: str, metadata: Any) -> None:
        if path.startswith(ROUTER):
            bearer = metadata.get("authorization", "")
            if not hmac.compare_digest(bearer, f"Bearer {self.jwt}"):
                raise GRPCError(Status.UNAUTHENTICATED, "invalid or expired router token")
        elif not hmac.compare_digest(metadata.get("x-modal-token-secret", ""), self.token):
            raise GRPCError(Status.UNAUTHENTICATED, "Token missing or invalid")

    def _target(self, request: Any) -> str:
        """The sandbox a request is about, for fault matching and the log."""
        sandbox_id = getattr(request, "sandbox_id", "")
        return sandbox_id or self.task_ids.get(getattr(request, "task_id", ""), "")

    async def _unimplemented(self, request: Any, answer: _Answer) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "not served by the sandbox-bench Modal emulator")

    def _access(self) -> api_pb2.CommandRouterAccess:
        return api_pb2.CommandRouterAccess(url=self.url, jwt=self.jwt)

    # -- sandboxes -----------------------------------------------------------------------------

    def _box(self, sandbox_id: str) -> ModalBox:
        """A sandbox, running or ended (its result stays readable)."""
        box = self.sandboxes.get(sandbox_id) or self.ended.get(sandbox_id)
        if not isinstance(box, ModalBox):
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return box

    async def _running(self, task_id: str) -> ModalBox:
        """The running sandbox of a task, once it has booted (router calls wait for the boot)."""
        box = self.sandboxes.get(self.task_ids.get(task_id, ""))
        if isinstance(box, ModalBox):
            await self.settled(box)
        if not isinstance(box, ModalBox) or box.result is not None or box.local is None:
            raise GRPCError(Status.NOT_FOUND, f"task {task_id} not found or finished")
        return box

    def _exec(self, task_id: str, exec_id: str) -> Exec:
        box = self.sandboxes.get(self.task_ids.get(task_id, ""))
        box = box or self.ended.get(self.task_ids.get(task_id, ""))
        job = box.execs.get(exec_id) if isinstance(box, ModalBox) else None
        if job is None:
            raise GRPCError(Status.NOT_FOUND, f"exec {exec_id} not found")
        return job

    def _metadata(self, box: ModalBox) -> api_pb2.SandboxHandleMetadata:
        return api_pb2.SandboxHandleMetadata(app_id=box.app_id, result=box.result)

    def _snapshot(self, image_id: str) -> ModalImage | None:
        found = self.sandboxes.find_snapshot(image_id)
        if not isinstance(found, ModalImage):
            return None
        if found.expires is not None and time.time() > found.expires:
            self.spawn(self.sandboxes.drop_snapshot(found, asked=False))
            return None
        return found

    async def _end(self, box: ModalBox, status: int, exitcode: int = 0, why: str = "") -> None:
        """End a sandbox: its result is set at once, its commands killed, its backend
        sandbox destroyed; it stays readable (wait, poll, tags) but is no longer listed."""
        if box.result is not None:
            return
        box.result = GR(status=status, exitcode=exitcode, exception=why)
        self.ended[box.id] = box
        while len(self.ended) > ENDED_KEPT:
            self.task_ids.pop(self.ended.popitem(last=False)[1].task_id, None)
        for job in box.execs.values():
            if job.task is not None:
                job.task.cancel()
            job.finish(None, sig=SIGKILL)
        if box.busy is not asyncio.current_task():  # not from inside its own failed boot
            await self.settled(box)
        try:
            await self.sandboxes.destroy(box)
        finally:
            if self.sandboxes.get(box.id) is box:  # a destroy that leaks (a semantic fault)
                box.result = None
                self.ended.pop(box.id, None)
            else:
                box.ended.set()

    async def expire(self, box: Box) -> None:
        if isinstance(box, ModalBox):
            await self._end(box, GR.GENERIC_STATUS_TIMEOUT)
        else:
            await self.sandboxes.destroy(box)

    async def shutdown(self) -> None:
        handlers = list(self.grpc._handlers)  # grpclib's, as its own close() does
        for handler in handlers:
            handler.close()
        await asyncio.gather(*(h.wait_closed() for h in handlers))
        for box in self.sandboxes.held():
            for job in getattr(box, "execs", {}).values():
                if job.task is not None:
                    job.task.cancel()
        await super().shutdown()

    # -- control plane -------------------------------------------------------------------------

    async def AuthTokenGet(self, req: Any, call: _Answer) -> None:
        await call.send_message(api_pb2.AuthTokenGetResponse(token=self.jwt))

    async def AppGetOrCreate(self, req: Any, call: _Answer) -> None:
        if req.app_name not in self.apps:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
            self.apps[req.app_name] = _new_id("ap")
        await call.send_message(api_pb2.AppGetOrCreateResponse(app_id=self.apps[req.app_name]))

    async def EnvironmentGetOrCreate(self, req: Any, call: _Answer) -> None:
        settings = api_pb2.EnvironmentSettings(image_builder_version=IMAGE_BUILDER_VERSION)
        metadata = api_pb2.EnvironmentMetadata(name="main", settings=settings)
        await call.send_message(
            api_pb2.EnvironmentGetOrCreateResponse(environment_id=ENVIRONMENT_ID, metadata=metadata)
        )

    async def ImageGetOrCreate(self, req: Any, call: _Answer) -> None:
        # The same definition gets the same id, as on Modal; "already built" skips the join.
        digest = hashlib.sha256(req.image.SerializeToString(deterministic=True)).hexdigest()
        image_id = f"im-{digest[:24]}"
        self.images.add(image_id)
        built = GR(status=GR.GENERIC_STATUS_SUCCESS)
        await call.send_message(api_pb2.ImageGetOrCreateResponse(image_id=image_id, result=built))

    async def ImageFromId(self, req: Any, call: _Answer) -> None:
        if req.image_id not in self.images and self._snapshot(req.image_id) is None:
            raise GRPCError(Status.NOT_FOUND, f"Image {req.image_id} not found")
        await call.send_message(api_pb2.ImageFromIdResponse(image_id=req.image_id))

    async def ImageDelete(self, req: Any, call: _Answer) -> None:
        snapshot = self._snapshot(req.image_id)
        if snapshot is not None:
            await self.sandboxes.drop_snapshot(snapshot)
        elif req.image_id in self.images:
            self.images.discard(req.image_id)
        else:
            raise GRPCError(Status.NOT_FOUND, f"Image {req.image_id} not found")
        await call.send_message(empty_pb2.Empty())

    async def SandboxCreateV2(self, req: Any, call: _Answer) -> None:
        definition, resources = req.definition, req.definition.resources
        snapshot = self._snapshot(definition.image_id)
        if snapshot is None and definition.image_id not in self.images:
            raise GRPCError(Status.NOT_FOUND, f"Image {definition.image_id} not found")
        request = resources.milli_cpu or 125  # Modal's defaults: 0.125 core, 128 MiB
        cores = (resources.milli_cpu_max or request + 4000) / 1000
        memory = resources.memory_mb_max or resources.memory_mb or 128
        spec = SandboxSpec(cpus=max(0.1, 2 * cores), memory_mb=max(16, memory))
        self.last_created = max(time.time(), self.last_created + 1e-6)  # unique list cursors
        box = self.sandboxes.add(
            ModalBox(
                id=_new_id("sb"), app_id=req.app_id, task_id=_new_id("ta", "V"),
                tags={t.tag_name: t.tag_value for t in req.tags}, created_at=self.last_created,
            )
        )  # fmt: skip
        self.task_ids[box.task_id] = box.id
        box.extend(definition.timeout_secs or DEFAULT_TIMEOUT_S)
        source = snapshot.ref if snapshot is not None else None

        async def boot() -> None:
            try:
                await self.sandboxes.boot(box, spec, home=HOME, source=source)
            except Exception as exc:
                await self._end(box, GR.GENERIC_STATUS_INIT_FAILURE, 1, str(exc))
                raise

        self.transition(box, "booting", boot, "running")
        await call.send_message(
            api_pb2.SandboxCreateV2Response(
                sandbox_id=box.id, task_id=box.task_id, metadata=self._metadata(box),
                command_router_access=self._access(),
            )
        )  # fmt: skip

    async def SandboxGetTaskIdV2(self, req: Any, call: _Answer) -> None:
        box = self._box(req.sandbox_id)
        answer = api_pb2.SandboxGetTaskIdResponse(task_id=box.task_id)
        if box.result is not None:
            answer = api_pb2.SandboxGetTaskIdResponse(task_result=box.result)
        await call.send_message(answer)

    async def SandboxGetCommandRouterAccess(self, req: Any, call: _Answer) -> None:
        self._box(req.sandbox_id or self.task_ids.get(req.task_id, ""))
        access = self._access()
        await call.send_message(
            api_pb2.SandboxGetCommandRouterAccessResponse(url=access.url, jwt=access.jwt)
        )

    async def SandboxWaitV2(self, req: Any, call: _Answer) -> None:
        box = self._box(req.sandbox_id)
        if box.result is None and req.timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.ended.wait(), min(req.timeout, WAIT_MAX_S))
        await call.send_message(
            api_pb2.SandboxWaitResponse(result=box.result, metadata=self._metadata(box))
        )

    async def SandboxTerminateV2(self, req: Any, call: _Answer) -> None:
        box = self._box(req.sandbox_id)
        existing = box.result
        async with box.lock:  # a snapshot in progress gives way (snapshot-pending)
            await self._end(box, GR.GENERIC_STATUS_TERMINATED, 137)
        await call.send_message(api_pb2.SandboxTerminateResponse(existing_result=existing))

    async def SandboxTagsSetV2(self, req: Any, call: _Answer) -> None:
        self._box(req.sandbox_id).tags = {t.tag_name: t.tag_value for t in req.tags}
        await call.send_message(empty_pb2.Empty())

    async def SandboxTagsGetV2(self, req: Any, call: _Answer) -> None:
        box = self._box(req.sandbox_id)
        tags = [api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in box.tags.items()]
        await call.send_message(api_pb2.SandboxTagsGetResponse(tags=tags))

    async def SandboxListV2(self, req: Any, call: _Answer) -> None:
        want = {t.tag_name: t.tag_value for t in req.tags}
        shown = [b for b in self.sandboxes.listed(ModalBox) if b.result is None]
        rows = sorted(
            (
                b for b in shown
                if (not req.app_id or b.app_id == req.app_id)
                and (not req.before_timestamp or b.created_at < req.before_timestamp)
                and want.items() <= b.tags.items()
            ),
            key=lambda b: -b.created_at,
        )[:LIST_PAGE]  # fmt: skip
        answer = api_pb2.SandboxListResponse()
        for b in rows:
            answer.sandboxes.append(
                api_pb2.SandboxInfo(
                    id=b.id, created_at=b.created_at, app_id=b.app_id, metadata=self._metadata(b),
                    tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in b.tags.items()],
                    task_info=api_pb2.TaskInfo(id=b.task_id, result=b.result, sandbox_id=b.id),
                )
            )  # fmt: skip
        await call.send_message(answer)

    # -- task command router -------------------------------------------------------------------

    async def TaskExecStart(self, req: Any, call: _Answer) -> None:
        box = await self._running(req.task_id)
        if req.exec_id not in box.execs:  # a retry with the same exec_id is the same command
            job = box.execs[req.exec_id] = Exec(argv=list(req.command_args))
            if job.argv[:1] == [FS_TOOLS]:
                try:
                    ((command, args),) = json.loads(job.argv[1]).items()
                    job.fs = (command, str(args["path"]))
                except (IndexError, ValueError, KeyError, TypeError, AttributeError):
                    job.fs = ("Invalid", "")
                if job.fs[0] != "WriteFile":  # a write runs once its stdin has ended
                    job.task = self.spawn(self._fs(box, job))
            else:
                job.task = self.spawn(self._run(box, job, req))
        await call.send_message(sr.TaskExecStartResponse())

    async def _run(self, box: ModalBox, job: Exec, req: Any) -> None:
        env = dict(req.env)
        env.update((k, v) for s in req.secret_sources for k, v in s.env.contents.items())
        argv = in_dir(job.argv, req.workdir or ".", env) if req.workdir or env else job.argv
        try:
            done = await self.sandboxes.exec(
                box, argv, timeout_s=req.timeout_secs or NO_DEADLINE_S, kill_on_cancel=True
            )
        except OperationTimeout:
            job.finish(None, sig=SIGKILL)  # Modal kills the command at timeout_secs
            return
        except asyncio.CancelledError:
            job.finish(None, sig=SIGKILL)
            raise
        except ProviderError as exc:  # the backend failed, not the command
            job.finish(255, err=f"sandbox-bench emulator: {exc}\n".encode())
            return
        pipe = sr.TaskExecStdoutConfig.TASK_EXEC_STDOUT_CONFIG_PIPE
        job.finish(
            done.exit_code,
            done.stdout if req.stdout_config == pipe else b"",
            done.stderr if req.stderr_config == pipe else b"",
        )

    async def _fs(self, box: ModalBox, job: Exec) -> None:
        command, path = job.fs or ("", "")
        try:
            if command == "ReadFile":
                job.finish(0, out=await self.sandboxes.read_file(box, path))
            elif command == "WriteFile":
                await self.sandboxes.write_file(box, path, bytes(job.stdin))
                job.finish(0)
            else:
                job.finish(2, err=_fs_error("Unsupported", f"{command}: not emulated"))
        except NotFound:
            job.finish(1, err=_fs_error("NotFound", "No such file or directory"))
        except ProviderError as exc:
            job.finish(1, err=_fs_error("Other", str(exc)))

    async def TaskExecStdioRead(self, req: Any, call: _Answer) -> None:
        job = self._exec(req.task_id, req.exec_id)
        await job.done.wait()
        stdout = sr.TaskExecStdioFileDescriptor.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT
        data = job.out if req.file_descriptor == stdout else job.err
        for chunk in chunks(data[req.offset :], STDIO_CHUNK):
            await call.send_message(sr.TaskExecStdioReadResponse(data=chunk))

    async def TaskExecWait(self, req: Any, call: _Answer) -> None:
        job = self._exec(req.task_id, req.exec_id)
        await job.done.wait()  # the SDK re-issues this every 60 s
        await call.send_message(sr.TaskExecWaitResponse(**job.exit_status()))

    async def TaskExecPoll(self, req: Any, call: _Answer) -> None:
        job = self._exec(req.task_id, req.exec_id)
        await call.send_message(sr.TaskExecPollResponse(**job.exit_status()))

    async def _stdin(self, task_id: str, job: Exec, offset: int, data: bytes, eof: bool) -> None:
        del job.stdin[offset:]  # a resumed stream starts again where the server's count ends
        job.stdin += data
        if eof and not job.stdin_closed:
            job.stdin_closed = True
            if job.fs is not None and job.fs[0] == "WriteFile":
                job.task = self.spawn(self._fs(await self._running(task_id), job))

    async def TaskExecStdinWriteStream(self, req: Any, call: _Answer) -> None:
        job, task_id, offset = None, "", 0
        async for message in call:
            kind = message.WhichOneof("payload")
            if kind == "start":
                task_id, offset = message.start.task_id, message.start.offset
                job = self._exec(task_id, message.start.exec_id)
            elif job is None:
                raise GRPCError(Status.INVALID_ARGUMENT, "the stream must begin with start")
            else:
                data = message.data if kind == "data" else b""
                await self._stdin(task_id, job, offset, data, eof=kind == "end")
                offset += len(data)
        await call.send_message(sr.TaskExecStdinWriteStreamResponse())

    async def TaskExecStdinStatus(self, req: Any, call: _Answer) -> None:
        job = self._exec(req.task_id, req.exec_id)
        await call.send_message(
            sr.TaskExecStdinStatusResponse(
                num_bytes_written=len(job.stdin), closed=job.stdin_closed
            )
        )

    async def TaskSnapshotFilesystem(self, req: Any, call: _Answer) -> None:
        box = await self._running(req.task_id)
        image_id = self.snapshot_ids.get(req.snapshot_id)
        if image_id is None or self._snapshot(image_id) is None:
            expires = time.time() + req.ttl_seconds if req.ttl_seconds > 0 else None
            image = ModalImage(id=_new_id("im"), source_id=box.id, expires=expires)
            async with box.lock:
                await self.sandboxes.capture(image, box, usable=True)  # answered once usable
            image_id = self.snapshot_ids[req.snapshot_id] = image.id
        await call.send_message(sr.TaskSnapshotFilesystemResponse(image_id=image_id))

    # -- the process: one port, HTTP/2 to grpclib, HTTP/1.1 (the admin API) to aiohttp --------

    async def startup(self) -> None:
        await super().startup()
        self.grpc = Server([self], codec=_Codec(), status_details_codec=ProtoStatusDetailsCodec())

    def connections(self, http: Callable[[], Any]) -> Callable[[], Any]:
        # grpclib's own start() would listen on a port of its own; its per-connection
        # protocol factory is what one shared port needs (grpclib is pinned by modal's cap).
        return lambda: _Sniffer(self.grpc._protocol_factory, http)


class _Sniffer(asyncio.Protocol):
    """One accepted connection, handed to grpclib when it opens with the HTTP/2 preface (the
    SDK speaks h2c with prior knowledge) and to aiohttp otherwise."""

    def __init__(self, grpc: Callable[[], Any], http: Callable[[], Any]) -> None:
        self.grpc, self.http = grpc, http
        self.inner: Any = None
        self.seen = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            self.seen += data
            if len(self.seen) < len(H2_PREFACE) and H2_PREFACE.startswith(self.seen):
                return
            self.inner = (self.grpc if self.seen.startswith(H2_PREFACE) else self.http)()
            self.inner.connection_made(self.transport)
            data, self.seen = self.seen, b""
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


__all__ = ["ModalBox", "ModalEmulator"]
