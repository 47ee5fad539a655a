"""Modal adapter over the official SDK's async API (``modal`` 1.6.4, ``.aio``; V2 sandboxes).

What each interface operation means on Modal (default runtime: gVisor containers):

* ``create``: ``Sandbox.create.aio(app=, image=, cpu=, memory=, timeout=, tags=, client=)``
  (one ``SandboxCreateV2`` RPC). **Asynchronous**: it returns before the container is
  scheduled, so the first exec (lifecycle's ``first_exec``) carries scheduling and boot.
  ``cpu`` is in **physical cores (1 core = 2 vCPU)**: the spec's ``cpus`` vCPUs become
  ``cpus / 2`` cores (at least Modal's 0.125). With ``burst = false`` (default) ``(request,
  limit)`` tuples with limit = request give the sandbox exactly the spec; with ``burst = true``
  only the requests are sent (Modal's default: CPU may burst to request + 4 cores, memory has
  no limit, billing is on max(request, usage)). ``disk_mb`` is ignored (sandboxes take no disk
  request). ``timeout`` is the sandbox's lifetime (``lifetime_s``, at most 24 h): Modal ends it
  then. The image is built once per provider in ``open()`` (``Image.debian_slim()``, or the
  ``image`` setting from a registry), never Modal's process-wide default image; a
  ``SandboxSpec.template`` is an image id (``im-...``) or a registry tag, resolved on first use
  (inside that first create).
* Labels are Modal **tags**, given at create (not ``set_tags`` after it: one RPC, and a
  sandbox is never unlabelled, so a leak sweep finds it); ``list_sandboxes(run_id)`` is
  ``Sandbox.list.aio(app_id=, tags={RUN_LABEL: run_id})``: running sandboxes of this app
  carrying at least that tag (every page).
* ``exec``: ``sandbox.exec.aio(*argv, timeout=N, text=False)`` through the task command router
  (a second gRPC channel to the worker), then stdout, stderr and ``wait()`` gathered. A string
  runs as ``/bin/sh -c <command>``, an argv list as given (Modal has no shell). stdout and
  stderr are **separate** and byte-exact. ``N`` is ``timeout_s`` in whole seconds (rounded up):
  Modal kills the command then and ``wait()`` returns -1, raised as OperationTimeout. A non-zero
  exit is data.
* ``write_file`` / ``read_file``: ``sandbox.filesystem.write_bytes.aio`` / ``read_bytes.aio``;
  each is **an exec** of Modal's ``modal-sandbox-fs-tools`` (bytes through stdin/stdout; parents
  created), so a file call costs what an exec costs. Byte-exact.
* ``checkpoint``: ``sandbox.snapshot_filesystem.aio(timeout=, ttl=checkpoint_ttl_s)``: the
  **filesystem only**; the source keeps running. The result is an Image; its id is the
  CheckpointRef id. ``restore``: ``Sandbox.create`` from that image: a **new sandbox** with the
  source's tags, lifetime and resources. ``delete_checkpoint``:
  ``modal.experimental.image_delete.aio`` (an experimental API); gone counts as deleted.
* Memory snapshots (``_experimental_snapshot``, pre-beta) are **not used**: in the V2 backend
  a successful one terminates the source sandbox, and the checkpoint interface needs the source
  alive (the workload mutates it afterwards); they also need ``_experimental_enable_snapshot``.
* ``pause`` / ``resume`` / ``fork``: unsupported (:data:`NO_PAUSE`, :data:`NO_FORK`).
* ``destroy``: ``sandbox.terminate.aio()`` then ``detach.aio()``. It returns when the control
  plane accepted the termination (``wait=False``, the SDK's default), not when the container
  is gone. Idempotent.

Client: credentials only from ``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET`` (``~/.modal.toml`` is
not used for them), through ``Client.from_credentials.aio``, which connects at once (TCP +
HTTP/2); the endpoint is ``MODAL_SERVER_URL`` (the SDK has no public argument for it, so the
``api_url`` setting is refused). ``connection = "per_iteration"`` opens a client per created or
restored sandbox inside its create (the connect and the first ``AuthTokenGet`` are measured
there). Set-up in ``open()`` (never measured): the app (``App.lookup``), the image build, and
a listing that fetches the client's auth token.

Retries (``SDK_RETRIES``, in the manifest): the SDK retries transient gRPC failures itself
and **cannot be told not to** through its public API; every call here is bounded by
``asyncio.timeout`` instead, the emulator logs each retry (``x-retry-attempt``), and
server-directed throttling retries are switched off (``MODAL_MAX_THROTTLE_WAIT=0``, set at
import unless already set).

Settings: :class:`ModalSettings` (each key declared with its help; unknown keys refused).
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from providers import base, errors
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import Handle, SDKProvider, SDKSettings, on, preset_env, sdk_timeout
from providers.settings import setting

TOKEN_ID_ENV = "MODAL_TOKEN_ID"
TOKEN_SECRET_ENV = "MODAL_TOKEN_SECRET"
SERVER_URL_ENV = "MODAL_SERVER_URL"
THROTTLE_ENV = "MODAL_MAX_THROTTLE_WAIT"

# Server-directed throttling makes the SDK sleep and retry without limit (config.py reads the
# variable at each call): a measured call must fail instead, so 0 unless the user chose.
_THROTTLE_SOURCE = preset_env(THROTTLE_ENV, "0")

import modal  # noqa: E402 - after the environment set-up above
import modal.exception as mx  # noqa: E402
import modal.experimental  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from grpclib import GRPCError  # noqa: E402
from grpclib.exceptions import StreamTerminatedError  # noqa: E402
from h2.exceptions import ProtocolError as H2ProtocolError  # noqa: E402
from modal.config import config as modal_config  # noqa: E402
from modal_proto import api_pb2  # noqa: E402

#: Modal's sandboxes run as root in debian_slim; /root is kept by filesystem snapshots.
SCRATCH_DIR = "/root"
MIN_CORES = 0.125
MAX_LIFETIME_S = 24 * 3600
GRACE_S = 5.0
_UNAVAILABLE = (mx.ServiceError, mx.InternalError, mx.DataLossError, mx.ConnectionError)
_UNAVAILABLE += (StreamTerminatedError, H2ProtocolError, OSError)
_GONE = (mx.NotFoundError, mx.SandboxFilesystemNotFoundError, mx.SandboxTerminatedError)
NO_PAUSE = (
    "modal 1.6.4 pauses only experimental persistent sandboxes (_experimental_persistent), which "
    "forbid tags (the run label) and need timeout=None; their 'pause' ends the session and the "
    "next starts from a filesystem snapshot; ordinary sandboxes raise NotImplementedError"
)
NO_FORK = (
    "no fork API; memory snapshots (_experimental_snapshot, pre-beta) would clone, but in the V2 "
    "backend a successful one terminates the source sandbox"
)


@dataclass(frozen=True, kw_only=True)
class ModalSettings(SDKSettings):
    app_name: str = setting("sandbox-bench", help="the Modal app the sandboxes belong to")
    image: str | None = setting(None, help="registry image (else Modal's debian_slim)")
    burst: bool = setting(
        False, help="false: limits = the spec; true: requests only (Modal may burst above)"
    )
    call_timeout_s: float = sdk_timeout(60.0, "bound on each create, file, list, destroy call")
    setup_timeout_s: float = sdk_timeout(600.0, "bound on open(): app lookup and image build")
    checkpoint_timeout_s: float = sdk_timeout(300.0, "snapshot_filesystem's timeout")
    checkpoint_ttl_s: int = setting(
        3600, help="how long Modal keeps a snapshot the harness loses", unit="s", minimum=60,
        maximum=30 * 86_400,
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.api_url:
            raise ValueError(f"api_url cannot be set for modal: set {SERVER_URL_ENV} instead")


class ModalProvider(SDKProvider[modal.Client]):
    id = "modal"
    sdk_packages = ("modal", "grpclib", "synchronicity", "protobuf")
    required_env = (TOKEN_ID_ENV, TOKEN_SECRET_ENV)
    Settings = ModalSettings
    config: ModalSettings
    endpoint_env = SERVER_URL_ENV
    ID_ATTRIBUTE = "object_id"
    CLOSE = "close.aio"
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "control_plane": "ON, not switchable publicly: up to 3 retries (0.1, 0.2, 0.4 s) on "
        "UNAVAILABLE, INTERNAL, UNKNOWN, CANCELLED, DEADLINE_EXCEEDED, stream resets and "
        "connection errors; x-retry-attempt counts them (the emulator logs retry_attempt)",
        "task_command_router": "ON, not configurable: exec, stdio, stdin and snapshot RPCs up to "
        "10 retries (10 ms doubling) on the same; TaskExecWait re-issued every 60 s; stdio "
        "resumes at its byte offset; UNAUTHENTICATED refreshes the router JWT once",
        "server_throttling": "off while max_throttle_wait is 0: a RESOURCE_EXHAUSTED with an "
        "RPCRetryPolicy fails at once instead of sleeping and retrying without limit",
        "connects": "control plane up to 18 tries (63 s), router up to 34 (310 s); every call "
        "is bounded here by asyncio.timeout (call_timeout_s, exec timeout + 5 s, "
        "checkpoint_timeout_s + 5 s)",
        "measured_calls": "bounded, not retry-free: a retried call's delays are in its duration",
    }
    #: No HTTP_STATUS row: gRPC has no HTTP status; the SDK's exception classes carry it.
    ERRORS = (
        on(DecodeError, error=errors.ProtocolError),  # an answer that is no protobuf message
        on(mx.AuthError, mx.PermissionDeniedError, error=errors.AuthError),
        on(mx.ResourceExhaustedError, error=errors.QuotaOrRateLimited),
        on(mx.TimeoutError, TimeoutError, error=errors.OperationTimeout),
        # Before NotFound: the filesystem API rewrites these as "The Sandbox is unavailable"
        # (a NotFoundError) but keeps them in the exception's context.
        on(*_UNAVAILABLE, error=errors.Unavailable),
        on(*_GONE, error=errors.NotFound),
        # The SDK's answer for a sandbox that already ended, found by id.
        on(mx.ConflictError, error=errors.NotFound, message="(?i)already finished"),
        # Raised by a handle this adapter detached in destroy(): the sandbox is gone.
        on(mx.ClientClosed, error=errors.NotFound, when=lambda e: "detached" in str(e)),
    )

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._app: Any = None
        self._images: dict[str | None, Any] = {}

    # -- set-up and description -----------------------------------------------------------

    async def new_client(self) -> modal.Client:  # it connects (its own HTTP/2 connection)
        token = (os.environ.get(TOKEN_ID_ENV, ""), os.environ.get(TOKEN_SECRET_ENV, ""))
        return await modal.Client.from_credentials.aio(*token)

    @property
    def endpoint(self) -> str:  # env, else ~/.modal.toml, else the default; first fallback URL
        return str(modal_config.get("server_url")).split(",")[0].strip()

    async def setup(self, client: modal.Client) -> None:
        self._app = await modal.App.lookup.aio(
            self.config.app_name, create_if_missing=True, client=client
        )
        self._images[None] = await self._image(self.config.image)
        await self._list(client, {RUN_LABEL: "sandbox-bench-warm-up"})  # AuthTokenGet

    def capabilities(self) -> base.Capabilities:
        burst = (
            "requests only: may burst, billed on max(request, usage)"
            if self.config.burst
            else "limit = request = the spec"
        )
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            isolation="gVisor (runsc) container per sandbox, Modal's default runtime",
            scratch_dir=SCRATCH_DIR,
            unsupported={str(Op.PAUSE): NO_PAUSE, str(Op.RESUME): NO_PAUSE, str(Op.FORK): NO_FORK},
            notes={
                "create": "asynchronous: returns before the container is scheduled; first_exec "
                "carries scheduling and boot",
                "resources": f"cpu in physical cores (1 core = 2 vCPU): cpus/2 cores (>= 0.125); "
                f"{burst}; disk_mb ignored",
                "stderr": "separate from stdout (two router streams)",
                "exec": "strings as /bin/sh -c, argv as given; timeout in whole seconds (ceil); "
                "bytes exact (text=False)",
                "files": "each read/write is an exec of Modal's fs-tools over the router",
                "checkpoint": "snapshot_filesystem(): filesystem only, the source keeps running; "
                f"ttl {self.config.checkpoint_ttl_s} s",
                "restore": "Sandbox.create(image=snapshot): a new sandbox",
                "memory_snapshots": "not used: pre-beta, and they terminate the source (V2)",
                "destroy": "terminate(): returns when accepted, not when the container is gone",
                "lifetime": "timeout=lifetime_s (at most 24 h); Modal ends the sandbox after",
                "retries": "SDK retries stay on (not switchable); calls bounded by timeouts",
            },
        )

    def retries_observed(self) -> dict[str, Any]:
        return {
            "max_throttle_wait_observed": modal_config.get("max_throttle_wait"),
            "max_throttle_wait_source": _THROTTLE_SOURCE,
        }

    def sdk_environment(self) -> dict[str, Any]:
        urls = str(modal_config.get("server_url")).split(",")
        return {
            "server_urls": [base.url_without_secrets(u.strip()) for u in urls],
            "sandbox_v2": modal_config.get("sandbox_v2"),
            "image": self.config.image or "debian_slim (Modal's default definition)",
            "python_for_default_image": f"{sys.version_info.major}.{sys.version_info.minor}",
        }

    def retry_after(self, chain: Sequence[BaseException]) -> float | None:
        """The delay of the RPCRetryPolicy a RESOURCE_EXHAUSTED answer carried, if any."""
        for exc in chain:
            details = getattr(exc, "_grpc_details", None) or (
                exc.details if type(exc) is GRPCError else None
            )
            for detail in details or ():
                if isinstance(detail, api_pb2.RPCRetryPolicy):
                    return float(detail.retry_after_secs)
        return None

    # -- operations -------------------------------------------------------------------------

    async def _image(self, name: str | None) -> Any:
        """Modal's image for ``name``: an image id, a registry tag, or None (debian_slim)."""
        if name is not None and name.startswith("im-"):
            return await modal.Image.from_id.aio(name, client=self.clients.shared("image"))
        image = modal.Image.debian_slim() if name is None else modal.Image.from_registry(name)
        return await image.build.aio(self._app)

    async def _list(self, client: Any, tags: dict[str, str]) -> list[str]:
        listing = modal.Sandbox.list.aio(app_id=self._app.app_id, tags=tags, client=client)
        return [sandbox.object_id async for sandbox in listing]

    def _shape(self, spec: SandboxSpec) -> dict[str, Any]:
        cores, memory = max(MIN_CORES, spec.cpus / 2), int(spec.memory_mb)
        if self.config.burst:
            return {"cpu": cores, "memory": memory}
        return {"cpu": (cores, cores), "memory": (memory, memory)}

    async def attach(self, client: modal.Client, sandbox_id: str) -> Any:
        return await modal.Sandbox.from_id.aio(sandbox_id, client=client)

    async def _start(self, op: str, image: Any, labels: dict[str, str], lifetime_s: int, shape):
        start = lambda client: modal.Sandbox.create.aio(  # noqa: E731
            app=self._app, image=image, timeout=lifetime_s, tags=labels, client=client, **shape
        )
        return await self.started(
            op, start, labels=labels, lifetime_s=lifetime_s, recipe={"shape": shape}
        )

    async def create(self, spec: SandboxSpec) -> Sandbox:
        if spec.template not in self._images:
            async with self.translating(Op.CREATE):
                self._images[spec.template] = await self._image(spec.template)
        lifetime_s = min(int(spec.lifetime_s), MAX_LIFETIME_S)
        image = self._images[spec.template]
        return await self._start(Op.CREATE, image, dict(spec.labels), lifetime_s, self._shape(spec))

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        argv, seconds = self.argv(command), max(1, math.ceil(timeout_s))
        started = time.monotonic()
        async with self.calling(sandbox, Op.EXEC, timeout_s=seconds + GRACE_S) as handle:
            process = await handle.sdk.exec.aio(*argv, timeout=seconds, text=False)
            stdout, stderr, code = await asyncio.gather(
                process.stdout.read.aio(), process.stderr.read.aio(), process.wait.aio()
            )
        # -1: what the SDK's wait() answers once the exec deadline passed; a SIGKILL exit
        # (137, or -9) at or after the deadline: the server's kill at timeout_secs won that race.
        late = time.monotonic() - started >= seconds
        if code == -1 or (late and code in (137, -9)):
            raise self.error(errors.OperationTimeout, Op.EXEC, self.exec_late(seconds))
        return self.exec_result(code, stdout, stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:  # within call_timeout_s
            await handle.sdk.filesystem.write_bytes.aio(bytes(data), path)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            return self.file_bytes(await handle.sdk.filesystem.read_bytes.aio(path))

    async def delete(self, sandbox: Sandbox, handle: Handle[modal.Client]) -> None:
        await handle.sdk.terminate.aio()
        await handle.sdk.detach.aio()  # releases the router connection

    async def list_sandboxes(self, run_id: str) -> list[str]:
        async with self.main(Op.LIST) as client:
            return await self._list(client, {RUN_LABEL: run_id})

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        seconds = max(1, math.ceil(self.config.checkpoint_timeout_s))
        async with self.calling(sandbox, Op.CHECKPOINT, timeout_s=seconds + GRACE_S) as handle:
            image = await handle.sdk.snapshot_filesystem.aio(
                timeout=seconds, ttl=self.config.checkpoint_ttl_s
            )
        # The sandbox's shape (its recipe) goes along, so the restore has the same resources.
        return self.checkpoint_ref(getattr(image, "object_id", None), sandbox, handle, image=image)

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        saved = self.saved(ref)
        image = saved.get("image")
        if image is None:  # a reference from elsewhere: look the image up by id
            async with self.translating(Op.RESTORE):
                image = await self._image(ref.id)
        shape = saved.get("shape") or self._shape(SandboxSpec())
        return await self._start(Op.RESTORE, image, labels, lifetime_s, shape)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        async with self.main("delete_checkpoint", missing_ok=True) as client:
            await modal.experimental.image_delete.aio(ref.id, client=client)


__all__ = ["ModalProvider", "ModalSettings"]
