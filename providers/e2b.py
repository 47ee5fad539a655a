"""E2B adapter over the official async SDK (``e2b`` 2.63.0, ``AsyncSandbox``).

What each interface operation means on E2B (every sandbox is a Firecracker microVM):

* ``create``: ``AsyncSandbox.create(template=..., timeout=lifetime_s, metadata=labels)``
  (``POST /v2/sandboxes``); returns when the API answers 201, i.e. when the microVM runs and
  envd is reachable. The template is ``SandboxSpec.template``, else the ``template`` setting,
  else E2B's ``base``. **CPU, memory and disk come from the template** (set when the template
  is built, ``Template.build(cpu_count=, memory_mb=)``); the spec's ``cpus``, ``memory_mb``
  and ``disk_mb`` cannot be set per sandbox and are ignored. ``timeout`` is the sandbox's
  lifetime: E2B kills it when it passes, so a sandbox the harness loses does not live on.
* ``exec``: ``sandbox.commands.run(line, timeout=timeout_s)``, envd's
  ``process.Process/Start`` (Connect protocol, server stream). The SDK always runs
  ``/bin/bash -l -c <line>``, as the sandbox's default user (``user``) in its home; a string
  command becomes ``line = "sh -c '<command>'"`` (the interface runs strings with sh) and an
  argv list ``line = shlex.join(argv)``. stdout and stderr are **separate**. The SDK decodes
  both as UTF-8 (invalid bytes become U+FFFD) and ``ExecResult`` re-encodes them, so
  non-UTF-8 output is not byte-exact. A non-zero exit raises ``CommandExitException`` in the
  SDK; it is caught and returned as data. ``timeout_s`` bounds the whole stream (the SDK's
  deadline, also sent as ``connect-timeout-ms`` so envd stops the command).
* ``write_file`` / ``read_file``: ``files.write(path, bytes)`` (envd ``POST /files``,
  multipart; envd creates parent directories) and ``files.read(path, format="bytes")``
  (``GET /files``, always HTTP/1.1 in this SDK). Byte-exact.
* ``checkpoint``: ``sandbox.create_snapshot()`` (``POST /sandboxes/{id}/snapshots``). With
  the default ``checkpoint_mode="full"`` it captures **memory and filesystem** (running
  processes included); the source sandbox is briefly paused while the snapshot is taken and
  keeps running afterwards. ``checkpoint_mode="filesystem"`` captures the filesystem only
  (sandboxes started from it cold-boot). ``CheckpointRef.id`` is the snapshot id.
* ``restore``: ``AsyncSandbox.create(template=snapshot_id)``: a **new sandbox** (new id) with
  the original's metadata (run label included); there is no in-place restore.
* ``delete_checkpoint``: ``AsyncSandbox.delete_snapshot(id)`` (``DELETE /templates/{id}``);
  a missing snapshot is fine.
* ``pause`` / ``resume``: ``sandbox.pause()`` (``POST /sandboxes/{id}/pause``) and
  ``sandbox.connect(timeout=lifetime_s)`` (``POST /v2/sandboxes/{id}/connect``, which resumes a
  paused sandbox). With the default ``pause_mode="full"`` the pause keeps memory and processes
  (PauseKind.FREEZE); ``pause_mode="filesystem"`` keeps only the filesystem and resume
  cold-boots (PauseKind.STOP_START). Resume keeps the sandbox id and restarts its lifetime
  (``lifetime_s`` from the resume). A paused sandbox is not billed and does not time out.
* ``destroy``: ``sandbox.kill()`` (``DELETE /sandboxes/{id}``); 404 counts as destroyed.
* ``list_sandboxes``: ``AsyncSandbox.list(query=SandboxQuery(metadata={RUN_LABEL: run_id}))``,
  every page, running and paused sandboxes.

Client settings: the credential only from ``E2B_API_KEY``; the endpoints from the ``api_url``
and ``sandbox_url`` settings, else ``E2B_API_URL`` and ``E2B_SANDBOX_URL``, else the SDK's
defaults (``https://api.<E2B_DOMAIN>`` and the per-sandbox envd host). They are passed to the
SDK as per-call parameters (bound to an ``e2b.E2B`` client object), so two providers in one
process can point at different endpoints. ``E2B_DEBUG`` is never used: it skips the control
plane for create and kill.

Retries (see :data:`SDK_RETRIES`, recorded by ``environment()``): ``retries=0`` on every
call switches off the SDK's retry of 429/502/503/504 and ``Should-Retry`` answers. Connection
establishment failures are retried by the SDK's transport ``E2B_CONNECTION_RETRIES`` times
(default 3), a number the SDK reads **once, when ``e2b`` is first imported**: this module sets
it to 0 before importing ``e2b`` unless the variable is already set, and records the value
the SDK actually took. After a connection-level failure on an envd call the SDK also probes
``GET /health`` once (not retried) to tell a dead sandbox from an unreachable one.

Connections: the SDK keeps one process-wide connection pool (pyqwest/reqwest) per proxy and
HTTP version, shared by every client object; idle connections are kept for
``E2B_KEEPALIVE_EXPIRY`` s (300), up to ``E2B_MAX_KEEPALIVE_CONNECTIONS`` (20) per host, both
read at import. ``connection="per_iteration"`` gives each created or restored sandbox a fresh
``e2b.E2B`` client object and ``AsyncSandbox`` (its own RPC and HTTP clients) but **cannot**
give it fresh TCP/TLS connections: set ``E2B_MAX_KEEPALIVE_CONNECTIONS=0`` in the environment
for that. HTTP/2 is negotiated by ALPN on TLS (``E2B_HTTP_VERSION``), HTTP/1.1 on plain http.

Settings (unknown keys are refused): ``api_url``, ``sandbox_url``, ``connection`` (``"reuse"``
| ``"per_iteration"``), ``template``, ``checkpoint_mode`` (``"full"`` | ``"filesystem"``),
``pause_mode`` (``"full"`` | ``"filesystem"``), ``request_timeout_s`` (the SDK's HTTP timeout
for control-plane calls, file transfers and opening a command stream; default 60).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

API_KEY_ENV = "E2B_API_KEY"
API_URL_ENV = "E2B_API_URL"
SANDBOX_URL_ENV = "E2B_SANDBOX_URL"
CONNECTION_RETRIES_ENV = "E2B_CONNECTION_RETRIES"

# The SDK reads E2B_CONNECTION_RETRIES once, at import (e2b/api/__init__.py); a connect retry
# inside a measured call would hide in its latency, so default it to 0 before the import.
_SDK_IMPORTED_FIRST = "e2b" in sys.modules
_CONNECTION_RETRIES_FROM_ENV = os.environ.get(CONNECTION_RETRIES_ENV)
if not _SDK_IMPORTED_FIRST and _CONNECTION_RETRIES_FROM_ENV is None:
    os.environ[CONNECTION_RETRIES_ENV] = "0"

import e2b.api as _e2b_api  # noqa: E402 - must follow the environment set-up above
import httpx  # noqa: E402
from connectrpc.errors import ConnectError  # noqa: E402
from e2b import (  # noqa: E402
    E2B,
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    ConnectionConfig,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotRunningException,
    SandboxQuery,
    SandboxUnreachableException,
    ServiceBusyException,
    TimeoutException,
)
from e2b.sandbox_domains import is_supported_sandbox_domain  # noqa: E402

from providers.base import (  # noqa: E402
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
from providers.errors import (  # noqa: E402
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
    exception_chain,
    from_http_status,
)

T = TypeVar("T")

#: E2B's default user's home: writable, and part of what a snapshot captures.
SCRATCH_DIR = "/home/user"
DEFAULT_TEMPLATE = "base"
NO_FORK = "not wired in this adapter yet (the SDK has fork(count): POST /sandboxes/{id}/fork)"
CONNECTION_MODES = ("reuse", "per_iteration")
SNAPSHOT_MODES = ("full", "filesystem")
SETTINGS = frozenset(
    {
        "api_url",
        "sandbox_url",
        "connection",
        "template",
        "checkpoint_mode",
        "pause_mode",
        "request_timeout_s",
    }
)
LIST_PAGE = 100

#: What stays on or off inside the SDK (e2b 2.63.0), for the manifest.
SDK_RETRIES: dict[str, str] = {
    "api_responses": (
        "off: retries=0 on every call (ConnectionConfig.retries), so 429/502/503/504 and "
        "Should-Retry answers are not retried"
    ),
    "connection_establishment": (
        "E2B_CONNECTION_RETRIES, read once at SDK import; the adapter sets 0 unless the "
        "variable was already set (see connection_retries_observed); applies to the API, "
        "envd RPC and envd file transfers, and only to failures before the request was sent"
    ),
    "envd_health_probe": (
        "after a connection-level failure of an envd call the SDK probes GET /health once "
        "(no retry) to classify it; the call still fails"
    ),
}


@dataclass
class _Native:
    """What the adapter keeps per sandbox: the SDK handle, its client, what restore needs."""

    sdk: AsyncSandbox
    client: E2B
    metadata: dict[str, str] = field(default_factory=dict)
    lifetime_s: int = SandboxSpec().lifetime_s


class E2BProvider(Provider):
    id = "e2b"
    sdk_packages = ("e2b",)
    required_env = (API_KEY_ENV,)

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown e2b setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(SETTINGS))})"
            )
        self._connection = self._choice("connection", CONNECTION_MODES, "reuse")
        self._checkpoint_mode = self._choice("checkpoint_mode", SNAPSHOT_MODES, "full")
        self._pause_mode = self._choice("pause_mode", SNAPSHOT_MODES, "full")
        self._template = optional_str(self.settings, "template")
        self._api_url_setting = optional_str(self.settings, "api_url")
        self._sandbox_url_setting = optional_str(self.settings, "sandbox_url")
        raw_timeout = self.settings.get("request_timeout_s", 60)
        try:
            self._request_timeout_s = float(raw_timeout)
        except (TypeError, ValueError):
            raise ValueError("request_timeout_s must be a number of seconds > 0") from None
        if not self._request_timeout_s > 0:
            raise ValueError("request_timeout_s must be a number of seconds > 0")
        self._client: E2B | None = None
        self._observed_retries: Any = "not opened yet"

    def _choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = str(self.settings.get(key, default))
        if value not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}")
        return value

    # -- set-up and description -----------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        """The SDK connection parameters every call carries (never logged: holds the key)."""
        params: dict[str, Any] = {
            "api_key": os.environ.get(API_KEY_ENV),
            "retries": 0,
            "request_timeout": self._request_timeout_s,
        }
        api_url = self._api_url_setting or os.environ.get(API_URL_ENV)
        sandbox_url = self._sandbox_url_setting or os.environ.get(SANDBOX_URL_ENV)
        if api_url:
            params["api_url"] = api_url
        if sandbox_url:
            params["sandbox_url"] = sandbox_url
        return params

    def _endpoints(self) -> tuple[str, str]:
        params = self._params()
        params.pop("api_key")
        config = ConnectionConfig(**params)
        sandbox = params.get("sandbox_url") or (
            f"https://sandbox.{config.domain}"
            if is_supported_sandbox_domain(config.domain)
            else f"https://49983-<sandbox id>.{config.domain}"
        )
        return config.api_url, sandbox

    async def open(self) -> None:
        if not os.environ.get(API_KEY_ENV):
            raise AuthError(f"set {API_KEY_ENV} to use e2b", provider=self.id, operation="open")
        if self._client is None:
            self._client = self._new_client()
            # Read back what the SDK really configured, for the manifest.
            self._observed_retries = ConnectionConfig(**self._params()).retries

    async def close(self) -> None:
        # The SDK's clients hold no connections of their own (the pool is process-wide).
        self._client = None

    def _new_client(self) -> E2B:
        return E2B(**self._params())

    def capabilities(self) -> Capabilities:
        full_checkpoint = self._checkpoint_mode == "full"
        freeze = self._pause_mode == "full"
        return Capabilities(
            operations=REQUIRED_OPS | (OPTIONAL_OPS - {Op.FORK}),
            checkpoint_captures=(
                CheckpointCaptures.FILESYSTEM_AND_MEMORY
                if full_checkpoint
                else CheckpointCaptures.FILESYSTEM
            ),
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE if freeze else PauseKind.STOP_START,
            isolation="Firecracker microVM per sandbox",
            scratch_dir=SCRATCH_DIR,
            unsupported={str(Op.FORK): NO_FORK},
            notes={
                "stderr": "separate (envd streams stdout and stderr apart)",
                "exec": (
                    "the SDK runs /bin/bash -l -c <line> as user 'user' in /home/user; "
                    "string commands are sent as sh -c '<cmd>', argv lists as shlex.join(argv); "
                    "output decoded as UTF-8 by the SDK (invalid bytes become U+FFFD); "
                    "timeout_s is the SDK's stream deadline"
                ),
                "resources": (
                    "cpus/memory_mb/disk_mb cannot be set per sandbox: they are the template's "
                    "(E2B base: 2 vCPU, 512 MiB); the spec's values are ignored"
                ),
                "checkpoint": (
                    "create_snapshot(): memory + filesystem, the source is briefly paused "
                    "and keeps running"
                    if full_checkpoint
                    else "create_snapshot(mode='filesystem'): filesystem only, restores "
                    "cold-boot; the source keeps running"
                ),
                "restore": "AsyncSandbox.create(template=snapshot_id): a new sandbox",
                "pause": (
                    "pause()/connect(): memory and processes kept"
                    if freeze
                    else "pause(mode='filesystem')/connect(): only the filesystem survives, "
                    "resume cold-boots"
                ),
                "lifetime": "timeout=lifetime_s at create and on resume; E2B kills it after",
                "connection": (
                    f"{self._connection}; the SDK's connection pool is process-wide, so "
                    "per_iteration gets fresh client objects but not fresh TCP/TLS connections"
                ),
                "retries": (
                    "retries=0 (no retry of 429/5xx); connect retries per "
                    "E2B_CONNECTION_RETRIES, 0 unless set (see environment sdk_retries)"
                ),
            },
        )

    def environment(self) -> dict[str, Any]:
        api_url, sandbox_url = self._endpoints()
        config = ConnectionConfig(**{k: v for k, v in self._params().items() if k != "api_key"})
        return {
            "sdk_versions": sdk_versions(self.sdk_packages),
            "endpoint": url_without_secrets(api_url),
            "sandbox_endpoint": url_without_secrets(sandbox_url),
            "connection": self._connection,
            "sdk_retries": {
                **SDK_RETRIES,
                "observed_config_retries": repr(self._observed_retries),
                "connection_retries_observed": _e2b_api.connection_retries,
                "connection_retries_source": (
                    "e2b was imported before the adapter: the environment at that time"
                    if _SDK_IMPORTED_FIRST
                    else f"{CONNECTION_RETRIES_ENV}={_CONNECTION_RETRIES_FROM_ENV} from the "
                    "environment"
                    if _CONNECTION_RETRIES_FROM_ENV is not None
                    else f"{CONNECTION_RETRIES_ENV}=0 set by the adapter before import"
                ),
            },
            "connection_pool": {
                "scope": "process-wide, per proxy and HTTP version",
                "idle_timeout_s": _e2b_api.pool_idle_timeout,
                "max_idle_per_host": _e2b_api.pool_max_idle_per_host,
                "max_connections_per_address": _e2b_api.max_connections,
            },
            "http_version": (
                f"{config.http_version} (E2B_HTTP_VERSION; HTTP/2 only by ALPN on https, "
                "plain http is HTTP/1.1; file reads always HTTP/1.1)"
            ),
            "request_timeout_s": self._request_timeout_s,
            "template": self._template or DEFAULT_TEMPLATE,
            "checkpoint_mode": self._checkpoint_mode,
            "pause_mode": self._pause_mode,
        }

    # -- helpers ----------------------------------------------------------------------------

    def _main_client(self, operation: str) -> E2B:
        if self._client is None:
            raise ProviderError("provider is not open", provider=self.id, operation=operation)
        return self._client

    def _client_for_new_sandbox(self, operation: str) -> E2B:
        main = self._main_client(operation)
        return self._new_client() if self._connection == "per_iteration" else main

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
        # A bare id (leak sweep, reaper): connect, which also resumes a paused sandbox.
        client = self._main_client(operation)
        sdk = await self._call(operation, lambda: client.AsyncSandbox.connect(sandbox.id))
        return _Native(sdk=sdk, client=client)

    async def _create(
        self, template: str, metadata: dict[str, str], lifetime_s: int, operation: str
    ) -> Sandbox:
        client = self._client_for_new_sandbox(operation)
        sdk = await self._call(
            operation,
            lambda: client.AsyncSandbox.create(
                template=template, timeout=lifetime_s, metadata=dict(metadata)
            ),
        )
        native = _Native(sdk=sdk, client=client, metadata=metadata, lifetime_s=lifetime_s)
        return Sandbox(id=sdk.sandbox_id, provider=self.id, native=native)

    # -- required operations ----------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Sandbox:
        template = spec.template or self._template or DEFAULT_TEMPLATE
        lifetime_s = max(1, int(spec.lifetime_s))
        return await self._create(template, dict(spec.labels), lifetime_s, Op.CREATE)

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        native = await self._native(sandbox, Op.EXEC)
        # The SDK hands the line to bash -l -c; a string is run by sh -c on every provider.
        line = f"sh -c {shlex.quote(command)}" if isinstance(command, str) else shlex.join(command)

        async def run() -> ExecResult:
            try:
                result = await native.sdk.commands.run(line, timeout=timeout_s)
            except CommandExitException as exc:  # a non-zero exit is data
                result = exc
            if not isinstance(result.exit_code, int):
                raise ProtocolError(
                    f"command answer carries no exit code ({result.exit_code!r})",
                    provider=self.id,
                    operation=Op.EXEC,
                )
            return ExecResult(
                exit_code=result.exit_code,
                stdout=(result.stdout or "").encode("utf-8"),
                stderr=(result.stderr or "").encode("utf-8"),
            )

        return await self._call(Op.EXEC, run)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        native = await self._native(sandbox, Op.WRITE_FILE)
        payload = bytes(data)
        await self._call(Op.WRITE_FILE, lambda: native.sdk.files.write(path, payload))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        native = await self._native(sandbox, Op.READ_FILE)
        data = await self._call(Op.READ_FILE, lambda: native.sdk.files.read(path, format="bytes"))
        if not isinstance(data, bytes | bytearray):
            raise ProtocolError(
                f"read returned {type(data).__name__}, not bytes",
                provider=self.id,
                operation=Op.READ_FILE,
            )
        return bytes(data)

    async def destroy(self, sandbox: Sandbox) -> None:
        if isinstance(sandbox.native, _Native):
            kill = sandbox.native.sdk.kill
        else:
            client = self._main_client(Op.DESTROY)

            def kill() -> Awaitable[bool]:
                return client.AsyncSandbox.kill(sandbox.id)

        # kill() answers False for a sandbox that is already gone: destroy is idempotent.
        with contextlib.suppress(NotFound):
            await self._call(Op.DESTROY, kill)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        client = self._main_client(Op.LIST)

        async def collect() -> list[str]:
            paginator = client.AsyncSandbox.list(
                query=SandboxQuery(metadata={RUN_LABEL: run_id}), limit=LIST_PAGE
            )
            found: list[str] = []
            while paginator.has_next:
                found.extend(item.sandbox_id for item in await paginator.next_items())
            return found

        return await self._call(Op.LIST, collect)

    # -- optional operations ----------------------------------------------------------------

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        native = await self._native(sandbox, Op.CHECKPOINT)
        mode = self._checkpoint_mode
        info = await self._call(Op.CHECKPOINT, lambda: native.sdk.create_snapshot(mode=mode))
        if not getattr(info, "snapshot_id", None):
            raise ProtocolError(
                "snapshot answer carries no id", provider=self.id, operation=Op.CHECKPOINT
            )
        return CheckpointRef(
            id=info.snapshot_id,
            provider=self.id,
            sandbox_id=sandbox.id,
            native={"metadata": dict(native.metadata), "lifetime_s": native.lifetime_s},
        )

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        # The restored sandbox carries the original's metadata (the run label above all).
        saved = ref.native if isinstance(ref.native, dict) else {}
        metadata = dict(saved.get("metadata") or {})
        lifetime_s = int(saved.get("lifetime_s") or SandboxSpec().lifetime_s)
        return await self._create(ref.id, metadata, lifetime_s, Op.RESTORE)

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        client = self._main_client("delete_checkpoint")
        # delete_snapshot answers False for a snapshot that is already gone.
        with contextlib.suppress(NotFound):
            await self._call(
                "delete_checkpoint", lambda: client.AsyncSandbox.delete_snapshot(ref.id)
            )

    async def pause(self, sandbox: Sandbox) -> None:
        mode = self._pause_mode
        if isinstance(sandbox.native, _Native):
            native = sandbox.native
            # pause() answers False when the sandbox was already paused: nothing to do.
            await self._call(Op.PAUSE, lambda: native.sdk.pause(mode=mode))
            return
        client = self._main_client(Op.PAUSE)
        await self._call(Op.PAUSE, lambda: client.AsyncSandbox.pause(sandbox.id, mode=mode))

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        if isinstance(sandbox.native, _Native):
            native = sandbox.native
            await self._call(Op.RESUME, lambda: native.sdk.connect(timeout=native.lifetime_s))
            return sandbox
        native = await self._native(sandbox, Op.RESUME)  # connect() resumes it
        return Sandbox(id=sandbox.id, provider=self.id, native=native)


# -- error translation ------------------------------------------------------------------------


#: connectrpc codes (as the SDK spells them in a SandboxException message) that mean the
#: sandbox's agent or the edge answered with a server-side failure.
_LEADING_STATUS = re.compile(r"^([1-5][0-9][0-9]): ")
#: Messages of answers that arrived but could not be decoded (envd's Connect messages, bodies
#: whose Content-Encoding is broken).
_UNDECODABLE = re.compile(
    r"could not be decoded|invalid gzip header|error decoding response body", re.IGNORECASE
)
_SERVER_SIDE_RPC_CODES = ("Code.INTERNAL", "Code.UNKNOWN", "Code.UNAVAILABLE", "Code.DATA_LOSS")


def _translate(exc: BaseException, provider: str, operation: str) -> ProviderError:
    """Map an SDK (or transport) exception to the most specific error of our tree."""
    chain = exception_chain(exc)
    message = str(exc) or type(exc).__name__
    kwargs = {"provider": provider, "operation": str(operation)}
    if _UNDECODABLE.search(message):
        # pyqwest reports a body it cannot decompress as a ReadError, like a dropped
        # connection; only the message tells them apart.
        return ProtocolError(message, **kwargs)
    if any(isinstance(e, AuthenticationException) for e in chain):
        return AuthError(message, **kwargs)
    if any(isinstance(e, RateLimitException) for e in chain):
        # The SDK drops the response (and its Retry-After) when it raises this.
        return QuotaOrRateLimited(message, **kwargs)
    if any(isinstance(e, ServiceBusyException) for e in chain):
        return Unavailable(message, **kwargs)
    # Before TimeoutException, which both subclass: the sandbox is gone (killed, timed out or
    # paused) or cannot be reached.
    if any(isinstance(e, SandboxNotRunningException) for e in chain):
        return NotFound(message, **kwargs)
    if any(isinstance(e, SandboxUnreachableException) for e in chain):
        return Unavailable(message, **kwargs)
    if any(isinstance(e, NotFoundException) for e in chain):
        return NotFound(message, **kwargs)
    if any(isinstance(e, TimeoutException | httpx.TimeoutException | TimeoutError) for e in chain):
        return OperationTimeout(message, **kwargs)
    for e in chain:
        status = getattr(e, "status_code", None)
        if isinstance(e, SandboxException) and not isinstance(status, int):
            # envd's file API errors carry the status only in the message: "500: ...".
            leading = _LEADING_STATUS.match(str(e))
            status = int(leading.group(1)) if leading else None
        if isinstance(e, SandboxException) and isinstance(status, int):
            return from_http_status(status, message, **kwargs)
    if any(isinstance(e, SandboxException) for e in chain) and message.startswith(
        _SERVER_SIDE_RPC_CODES
    ):
        return Unavailable(message, **kwargs)
    if any(isinstance(e, httpx.TransportError | ConnectionError | ConnectError) for e in chain):
        return Unavailable(message, **kwargs)
    # An answer the generated client could not parse (e.g. an error body without "code").
    if (
        any(isinstance(e, httpx.DecodingError | KeyError | ValueError) for e in chain)
        or message.startswith("Body of the request is None")
        or "without an end event" in message
    ):
        return ProtocolError(message, **kwargs)
    return ProviderError(message, **kwargs)


# -- small helpers ----------------------------------------------------------------------------


__all__ = ["E2BProvider"]
