"""Daytona adapter over the official async SDK (``daytona`` 0.226.1, ``AsyncDaytona``).

What each interface operation means on Daytona:

* ``create``: ``AsyncDaytona.create(CreateSandboxFromSnapshotParams(snapshot=...))`` (the
  ``snapshot`` setting, or ``SandboxSpec.template``, or Daytona's default snapshot), or with the
  ``image`` setting ``CreateSandboxFromImageParams(image=..., resources=Resources(...))``. It
  returns when the API reports the sandbox ``started``. The run label goes in ``labels``;
  ``auto_stop_interval=0`` so no sandbox auto-stops under a measurement, and
  ``ttl_minutes = ceil(lifetime_s / 60)`` so a sandbox the harness loses is destroyed anyway.
  CPU, memory and disk from the spec are sent **only on the image path** (whole vCPUs, whole
  GiB, rounded up); on the snapshot path the snapshot's own resources apply and the spec's
  ``cpus``/``memory_mb`` are ignored.
* ``exec``: ``sandbox.process.exec(line, timeout=N)`` (toolbox ``POST /process/execute``).
  A string command is sent as ``sh -c '<command>'`` and an argv list as ``shlex.join(argv)``;
  the daemon runs the line with the sandbox's shell. ``N`` is the timeout in whole seconds
  (ceiling, at least 1; always sent, since the server default is short). stdout and stderr are
  **not separated**: the daemon returns one combined ``result`` string, which becomes
  ``ExecResult.stdout``; ``stderr`` is always ``b""``. The daemon decodes output as UTF-8
  (invalid bytes become U+FFFD), so non-UTF-8 output is not byte-exact. A daemon-side timeout
  (HTTP 408) raises OperationTimeout; a non-zero exit code is data.
* ``write_file`` / ``read_file``: ``fs.upload_file(bytes, path)`` (multipart
  ``/files/bulk-upload``; the daemon creates parent directories) and ``fs.download_file(path)``
  (multipart ``/files/bulk-download``). The data is always passed as ``bytes``: the SDK treats
  a ``str`` as a *local* file path.
* ``checkpoint``: ``sandbox.create_snapshot(name)``. It captures the **filesystem only** (the
  SDK always sends ``includeMemory=false``); the sandbox keeps running. The call returns when
  the sandbox has left ``snapshotting`` **and** the snapshot reads ``active``, i.e. when the
  reference can be restored. ``CheckpointRef.id`` is the snapshot name.
* ``restore``: ``AsyncDaytona.create(CreateSandboxFromSnapshotParams(snapshot=name))``: a
  **new sandbox** (with the original's labels); there is no in-place restore.
* ``delete_checkpoint``: ``daytona.snapshot.delete(name)``; a missing snapshot is fine.
* ``pause`` / ``resume``, per the ``pause_mode`` setting:
  ``"stop_start"`` (default; PauseKind.STOP_START): ``sandbox.stop()`` / ``sandbox.start()``.
  Container sandboxes (Daytona's default class) only have this: the filesystem survives,
  processes and memory do not. ``"pause"`` (PauseKind.FREEZE): ``sandbox.pause()`` /
  ``sandbox.start()`` (Daytona resumes a paused sandbox with start). Processes and memory
  survive, but the API offers it **only for VM-class sandboxes** (a ``linux-vm`` snapshot), so
  set ``snapshot`` accordingly; a container sandbox refuses it. Resume returns the same
  sandbox (the id does not change).
* ``destroy``: ``sandbox.delete()`` with the SDK default ``wait=False``: it returns when the
  API has accepted the deletion, not when the sandbox is gone. 404 counts as destroyed.
* ``list_sandboxes``: ``AsyncDaytona.list(ListSandboxesQuery(labels={RUN_LABEL: run_id}))``,
  leaving out sandboxes already ``destroyed``/``destroying``.

Client settings: credentials only from ``DAYTONA_API_KEY``; the endpoint from the ``api_url``
setting, else ``DAYTONA_API_URL``, else the SDK default. ``use_deprecated_polling=True``: the
SDK opens no socket.io websocket and observes state changes by polling ``GET /sandbox/{id}``
(every 0.1 s, backing off to 1 s after 5 s), so waiting lifecycle calls (create, stop, start,
pause, snapshot) include up to one poll interval on the real service. Retries: the generated
API clients' retries are off (``Configuration.retries`` stays ``None``), and file transfers use
the SDK's aiohttp session directly (no retry); but the SDK's shared aiohttp session retries
connection-level failures up to twice and cannot be switched off (see
:data:`SDK_RETRIES`, recorded in ``environment()``).

Settings (unknown keys are refused): ``api_url``, ``connection`` (``"reuse"``: one SDK client
per provider; ``"per_iteration"``: a fresh client per created or restored sandbox, used for
every operation on it and closed when it is destroyed), ``snapshot``, ``image``, ``target``
(region), ``pause_mode`` (``"stop_start"`` or ``"pause"``), ``sdk_timeout_s`` (the bound the
SDK itself puts on a lifecycle call; the runner's own timeout usually fires first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaConnectionError,
    DaytonaError,
    DaytonaForbiddenError,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
    DaytonaTimeoutError,
    ListSandboxesQuery,
    Resources,
)
from daytona import DaytonaConfig as _DaytonaConfig
from pydantic import ValidationError

from providers.base import (
    OPTIONAL_OPS,
    REQUIRED_OPS,
    RUN_LABEL,
    Capabilities,
    CheckpointCaptures,
    CheckpointRef,
    Command,
    ExecResult,
    Op,
    PauseKind,
    Provider,
    RestoreTarget,
    Sandbox,
    SandboxSpec,
    optional_str,
    sdk_versions,
    url_without_secrets,
)
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    SandboxCrashed,
    Unavailable,
    exception_chain,
    from_http_status,
)

T = TypeVar("T")

API_KEY_ENV = "DAYTONA_API_KEY"
API_URL_ENV = "DAYTONA_API_URL"
DEFAULT_API_URL = "https://app.daytona.io/api"
#: The default user's home in Daytona's sandbox images: writable, and part of the filesystem
#: a snapshot captures.
NO_FORK = "not wired in this adapter yet (the SDK has sandbox.fork(name))"
SCRATCH_DIR = "/home/daytona"

CONNECTION_MODES = ("reuse", "per_iteration")
PAUSE_MODES = ("stop_start", "pause")
SETTINGS = frozenset(
    {"api_url", "connection", "snapshot", "image", "target", "pause_mode", "sdk_timeout_s"}
)
GONE_STATES = frozenset({"destroyed", "destroying"})

#: What stays on or off inside the SDK (daytona 0.226.1), for the manifest.
SDK_RETRIES: dict[str, str] = {
    "generated_api_clients": "off: Configuration.retries is None (the async client never sets it)",
    "file_transfers": "off: upload/download use the shared aiohttp session directly",
    "connection_level": (
        "ON, not configurable: daytona.internal.shared_session retries "
        "aiohttp.ClientConnectorError on every method, and ServerDisconnectedError, "
        "ClientOSError, ConnectionResetError, BrokenPipeError on GET/HEAD/OPTIONS/TRACE/PUT/"
        "DELETE, up to 2 times with 0.25 s x attempt + up to 0.1 s jitter backoff; applies to "
        "calls through the generated clients (create, exec, lifecycle, state polling, list, "
        "destroy)"
    ),
    "http_status": "none: no retry on 429 or 5xx",
}


@dataclass
class _Native:
    """What the adapter keeps per sandbox: the SDK object, its client, its labels."""

    sdk: Any  # daytona.AsyncSandbox
    client: AsyncDaytona
    owns_client: bool
    labels: dict[str, str] = field(default_factory=dict)
    ttl_minutes: int | None = None


class DaytonaProvider(Provider):
    id = "daytona"
    sdk_packages = ("daytona",)
    required_env = (API_KEY_ENV,)

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown daytona setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(SETTINGS))})"
            )
        self._connection = str(self.settings.get("connection", "reuse"))
        if self._connection not in CONNECTION_MODES:
            raise ValueError(f"connection must be one of {', '.join(CONNECTION_MODES)}")
        self._pause_mode = str(self.settings.get("pause_mode", "stop_start"))
        if self._pause_mode not in PAUSE_MODES:
            raise ValueError(f"pause_mode must be one of {', '.join(PAUSE_MODES)}")
        self._snapshot = optional_str(self.settings, "snapshot")
        self._image = optional_str(self.settings, "image")
        if self._snapshot and self._image:
            raise ValueError("set snapshot or image, not both")
        self._target = optional_str(self.settings, "target")
        self._api_url_setting = optional_str(self.settings, "api_url")
        try:
            self._sdk_timeout_s = float(self.settings.get("sdk_timeout_s", 300))
        except (TypeError, ValueError):
            raise ValueError("sdk_timeout_s must be a number of seconds > 0") from None
        if not self._sdk_timeout_s > 0:
            raise ValueError("sdk_timeout_s must be a number of seconds > 0")
        self._client: AsyncDaytona | None = None
        self._owned: set[AsyncDaytona] = set()
        self._observed_retries: Any = "not opened yet"

    # -- set-up and description -----------------------------------------------------------

    @property
    def _endpoint(self) -> str:
        return self._api_url_setting or os.environ.get(API_URL_ENV) or DEFAULT_API_URL

    async def open(self) -> None:
        if not os.environ.get(API_KEY_ENV):
            raise AuthError(f"set {API_KEY_ENV} to use daytona", provider=self.id, operation="open")
        if self._client is None:
            self._client = self._new_client()
            # Read back what the SDK really configured, for the manifest (never changed here).
            config = getattr(getattr(self._client, "_api_client", None), "configuration", None)
            self._observed_retries = getattr(config, "retries", "unknown")

    async def close(self) -> None:
        clients = [*self._owned, *([self._client] if self._client else [])]
        self._owned.clear()
        self._client = None
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    def _new_client(self) -> AsyncDaytona:
        config = _DaytonaConfig(
            api_key=os.environ.get(API_KEY_ENV),
            api_url=self._endpoint,
            target=self._target,
            # No socket.io event stream: state changes are observed by polling (see notes).
            use_deprecated_polling=True,
        )
        with warnings.catch_warnings():
            # The SDK warns that polling mode is deprecated on every client it builds.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return AsyncDaytona(config)
            except Exception as exc:
                raise _translate(exc, self.id, "open") from exc

    def capabilities(self) -> Capabilities:
        freeze = self._pause_mode == "pause"
        return Capabilities(
            operations=REQUIRED_OPS | (OPTIONAL_OPS - {Op.FORK}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE if freeze else PauseKind.STOP_START,
            isolation=(
                "Daytona sandbox: an OCI container on a Daytona runner (default class); "
                "a VM for linux-vm snapshots"
            ),
            scratch_dir=SCRATCH_DIR,
            unsupported={str(Op.FORK): NO_FORK},
            notes={
                "stderr": (
                    "not separate: the daemon returns stdout and stderr combined in one "
                    "'result'; ExecResult.stdout holds both, stderr is always empty"
                ),
                "exec": (
                    "string commands are sent as sh -c '<cmd>', argv lists as shlex.join(argv), "
                    "run by the sandbox shell; output is decoded as UTF-8 by the daemon "
                    "(invalid bytes become U+FFFD); timeout sent in whole seconds (ceil, >= 1)"
                ),
                "resources": (
                    "cpus/memory_mb/disk_mb apply only with the image setting (whole vCPU, "
                    "whole GiB, rounded up); on the snapshot path (default) the snapshot's "
                    "resources apply"
                ),
                "checkpoint": (
                    "create_snapshot(name): filesystem only (SDK sends includeMemory=false), "
                    "the sandbox keeps running; returns once the snapshot is active"
                ),
                "restore": "create(snapshot=name): a new sandbox; no in-place restore",
                "pause": (
                    "pause_mode=pause: sandbox.pause()/start(), processes and memory kept, "
                    "VM-class (linux-vm) snapshots only"
                    if freeze
                    else "pause_mode=stop_start: sandbox.stop()/start(), only the filesystem "
                    "survives (container sandboxes have no pause)"
                ),
                "destroy": "sandbox.delete(wait=False): returns when the API accepted it",
                "lifetime": "ttl_minutes=ceil(lifetime_s/60); auto_stop_interval=0",
                "state_updates": (
                    "use_deprecated_polling=True: no socket.io websocket; waits poll "
                    "GET /sandbox/{id} every 0.1 s (up to 1 s after 5 s)"
                ),
                "connection": self._connection,
                "retries": "SDK connection-level retries stay on (see environment sdk_retries)",
            },
        )

    def environment(self) -> dict[str, Any]:
        return {
            "sdk_versions": sdk_versions(self.sdk_packages),
            "endpoint": url_without_secrets(self._endpoint),
            "connection": self._connection,
            "sdk_retries": {
                **SDK_RETRIES,
                "observed_configuration_retries": repr(self._observed_retries),
            },
            "state_updates": "polling (use_deprecated_polling=True)",
            "pause_mode": self._pause_mode,
            "create_from": (
                f"image {self._image}" if self._image else f"snapshot {self._snapshot or 'default'}"
            ),
            "target": self._target,
            "sdk_timeout_s": self._sdk_timeout_s,
        }

    # -- helpers ----------------------------------------------------------------------------

    def _main_client(self, operation: str) -> AsyncDaytona:
        if self._client is None:
            raise ProviderError("provider is not open", provider=self.id, operation=operation)
        return self._client

    def _client_for_new_sandbox(self, operation: str) -> tuple[AsyncDaytona, bool]:
        if self._connection == "per_iteration":
            client = self._new_client()
            self._owned.add(client)
            return client, True
        return self._main_client(operation), False

    async def _release(self, native: _Native) -> None:
        if native.owns_client and native.client in self._owned:
            self._owned.discard(native.client)
            with contextlib.suppress(Exception):
                await native.client.close()

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """The one boundary where SDK exceptions become :mod:`providers.errors`."""
        try:
            return await fn()
        except ProviderError:
            raise
        except Exception as exc:
            raise _translate(exc, self.id, operation) from exc

    async def _native(self, sandbox: Sandbox, operation: str) -> _Native:
        if isinstance(sandbox.native, _Native):
            return sandbox.native
        # A bare id (leak sweep, reaper): look the sandbox up on the main client.
        client = self._main_client(operation)
        sdk = await self._call(operation, lambda: client.get(sandbox.id))
        return _Native(sdk=sdk, client=client, owns_client=False, labels=dict(sdk.labels or {}))

    async def _create(
        self, params: Any, labels: dict[str, str], ttl_minutes: int, operation: str
    ) -> Sandbox:
        client, owned = self._client_for_new_sandbox(operation)
        try:
            sdk = await self._call(
                operation, lambda: client.create(params, timeout=self._sdk_timeout_s)
            )
        except BaseException:
            if owned:
                await self._release(_Native(sdk=None, client=client, owns_client=True))
            raise
        native = _Native(
            sdk=sdk, client=client, owns_client=owned, labels=labels, ttl_minutes=ttl_minutes
        )
        return Sandbox(id=sdk.id, provider=self.id, native=native)

    @staticmethod
    def _common_params(labels: dict[str, str], ttl_minutes: int) -> dict[str, Any]:
        # auto_stop_interval=0: no sandbox stops on its own under a measurement; the TTL
        # destroys one the harness lost.
        return {"labels": dict(labels), "auto_stop_interval": 0, "ttl_minutes": ttl_minutes}

    # -- required operations ----------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Sandbox:
        labels = dict(spec.labels)
        ttl_minutes = max(1, math.ceil(spec.lifetime_s / 60))
        common = self._common_params(labels, ttl_minutes)
        params: Any
        if self._image:
            resources = Resources(
                cpu=max(1, math.ceil(spec.cpus)),
                memory=max(1, math.ceil(spec.memory_mb / 1024)),
                disk=math.ceil(spec.disk_mb / 1024) if spec.disk_mb else None,
            )
            params = CreateSandboxFromImageParams(
                image=spec.template or self._image, resources=resources, **common
            )
        else:
            params = CreateSandboxFromSnapshotParams(
                snapshot=spec.template or self._snapshot, **common
            )
        return await self._create(params, labels, ttl_minutes, Op.CREATE)

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        native = await self._native(sandbox, Op.EXEC)
        # A string is run by sh -c on every provider; an argv list is quoted for the shell
        # the daemon hands the line to.
        line = f"sh -c {shlex.quote(command)}" if isinstance(command, str) else shlex.join(command)
        seconds = max(1, math.ceil(timeout_s))
        response = await self._call(Op.EXEC, lambda: native.sdk.process.exec(line, timeout=seconds))
        exit_code = getattr(response, "exit_code", None)
        if not isinstance(exit_code, int):
            raise ProtocolError(
                f"exec answer carries no exit code ({exit_code!r})",
                provider=self.id,
                operation=Op.EXEC,
            )
        result = response.result or ""
        return ExecResult(exit_code=exit_code, stdout=result.encode("utf-8"), stderr=b"")

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        native = await self._native(sandbox, Op.WRITE_FILE)
        payload = bytes(data)  # never a str: the SDK reads a str as a local file path
        timeout = max(1, math.ceil(self._sdk_timeout_s))
        await self._call(Op.WRITE_FILE, lambda: native.sdk.fs.upload_file(payload, path, timeout))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        native = await self._native(sandbox, Op.READ_FILE)
        timeout = max(1, math.ceil(self._sdk_timeout_s))
        data = await self._call(Op.READ_FILE, lambda: native.sdk.fs.download_file(path, timeout))
        if not isinstance(data, bytes | bytearray):
            raise ProtocolError(
                f"download returned {type(data).__name__}, not bytes",
                provider=self.id,
                operation=Op.READ_FILE,
            )
        return bytes(data)

    async def destroy(self, sandbox: Sandbox) -> None:
        try:
            native = await self._native(sandbox, Op.DESTROY)
        except NotFound:
            return
        with contextlib.suppress(NotFound):  # already gone: destroy is idempotent
            await self._call(Op.DESTROY, lambda: native.sdk.delete(timeout=self._sdk_timeout_s))
        await self._release(native)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        client = self._main_client(Op.LIST)

        async def collect() -> list[str]:
            found: list[str] = []
            async for item in client.list(ListSandboxesQuery(labels={RUN_LABEL: run_id})):
                if _state_name(item.state) not in GONE_STATES:
                    found.append(item.id)
            return found

        return await self._call(Op.LIST, collect)

    # -- optional operations ----------------------------------------------------------------

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        native = await self._native(sandbox, Op.CHECKPOINT)
        name = f"sandbox-bench-{uuid.uuid4().hex[:20]}"
        await self._call(
            Op.CHECKPOINT,
            lambda: native.sdk.create_snapshot(name, timeout=self._sdk_timeout_s),
        )
        await self._call(Op.CHECKPOINT, lambda: self._until_snapshot_active(native.client, name))
        return CheckpointRef(
            id=name,
            provider=self.id,
            sandbox_id=sandbox.id,
            native={"labels": dict(native.labels), "ttl_minutes": native.ttl_minutes},
        )

    async def _until_snapshot_active(self, client: AsyncDaytona, name: str) -> None:
        deadline = time.monotonic() + self._sdk_timeout_s
        interval = 0.1
        while True:
            snapshot = await client.snapshot.get(name)
            state = _state_name(snapshot.state)
            if state == "active":
                return
            if state in ("error", "build_failed"):
                raise ProviderError(
                    f"snapshot {name} ended in state {state}: {snapshot.error_reason or ''}",
                    provider=self.id,
                    operation=Op.CHECKPOINT,
                )
            if time.monotonic() >= deadline:
                raise OperationTimeout(
                    f"snapshot {name} not active after {self._sdk_timeout_s:g} s (state {state})",
                    provider=self.id,
                    operation=Op.CHECKPOINT,
                )
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        # The restored sandbox carries the original's labels (the run label above all).
        saved = ref.native if isinstance(ref.native, dict) else {}
        labels = dict(saved.get("labels") or {})
        ttl_minutes = saved.get("ttl_minutes") or max(1, math.ceil(SandboxSpec().lifetime_s / 60))
        params = CreateSandboxFromSnapshotParams(
            snapshot=ref.id, **self._common_params(labels, ttl_minutes)
        )
        return await self._create(params, labels, ttl_minutes, Op.RESTORE)

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        client = self._main_client("delete_checkpoint")
        with contextlib.suppress(NotFound):
            await self._call("delete_checkpoint", lambda: client.snapshot.delete(ref.id))

    async def pause(self, sandbox: Sandbox) -> None:
        native = await self._native(sandbox, Op.PAUSE)
        if self._pause_mode == "pause":
            await self._call(Op.PAUSE, lambda: native.sdk.pause(timeout=self._sdk_timeout_s))
        else:
            await self._call(Op.PAUSE, lambda: native.sdk.stop(timeout=self._sdk_timeout_s))

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        native = await self._native(sandbox, Op.RESUME)
        # Daytona resumes both a paused and a stopped sandbox with start().
        await self._call(Op.RESUME, lambda: native.sdk.start(timeout=self._sdk_timeout_s))
        if sandbox.native is native:
            return sandbox
        return Sandbox(id=sandbox.id, provider=self.id, native=native)


# -- error translation ------------------------------------------------------------------------


def _status_and_headers(chain: list[BaseException]) -> tuple[int | None, Mapping[str, Any]]:
    for exc in chain:
        if isinstance(exc, DaytonaError) and exc.status_code:
            return exc.status_code, exc.headers or {}
        if isinstance(exc, aiohttp.ClientResponseError) and exc.status:
            return exc.status, dict(exc.headers or {})
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status >= 400:
            return status, dict(getattr(exc, "headers", None) or {})
    return None, {}


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _translate(exc: BaseException, provider: str, operation: str) -> ProviderError:
    """Map an SDK (or transport) exception to the most specific error of our tree."""
    chain = exception_chain(exc)
    message = str(exc) or type(exc).__name__
    kwargs = {"provider": provider, "operation": str(operation)}
    if any(isinstance(e, HttpProcessingError) for e in chain):
        # aiohttp could not parse the answer's status line or headers; it reports that as a
        # ClientResponseError with its own status 400, which is not the provider's.
        return ProtocolError(message, **kwargs)
    status, headers = _status_and_headers(chain)
    if status is not None:
        return from_http_status(status, message, retry_after_s=_retry_after(headers), **kwargs)
    if any(isinstance(e, DaytonaAuthenticationError | DaytonaForbiddenError) for e in chain):
        return AuthError(message, **kwargs)
    if any(isinstance(e, DaytonaNotFoundError) for e in chain):
        return NotFound(message, **kwargs)
    if any(isinstance(e, DaytonaRateLimitError) for e in chain):
        return QuotaOrRateLimited(message, **kwargs)
    if any(isinstance(e, DaytonaTimeoutError | asyncio.TimeoutError) for e in chain):
        return OperationTimeout(message, **kwargs)
    if any(
        isinstance(e, DaytonaConnectionError | aiohttp.ClientConnectionError | ConnectionError)
        for e in chain
    ):
        return Unavailable(message, **kwargs)
    if (
        any(
            isinstance(e, ValidationError | json.JSONDecodeError | aiohttp.ContentTypeError)
            for e in chain
        )
        or "Unexpected Content-Type" in message
    ):
        return ProtocolError(message, **kwargs)
    if "entered error state" in message:
        return SandboxCrashed(message, **kwargs)
    return ProviderError(message, **kwargs)


# -- small helpers ----------------------------------------------------------------------------


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state) or "")


__all__ = ["DaytonaProvider"]
