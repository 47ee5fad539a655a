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
* ``fork``: ``sandbox.fork(timeout=lifetime_s, count=count)`` (``POST /sandboxes/{id}/fork``,
  one call for all children, 1 to 20): E2B pauses the parent briefly, takes **one memory and
  filesystem snapshot** and boots ``count`` new sandboxes from it (new ids), so each child
  keeps the parent's running processes and memory (``fork_keeps`` FILESYSTEM_AND_MEMORY); the
  parent keeps its id and lifetime and runs on. How the children's copy is made (copy-on-write
  or not) is not documented (``fork_method`` ""). Each child's lifetime is ``lifetime_s``
  (the API's default would be 15 s). Each fork succeeds or fails on its own; if any failed,
  the ones that started are killed and the first failure is raised. Whether the children
  inherit the parent's metadata (the run label) is not documented: a child a dead harness
  leaves behind may not be found by the leak sweep, and dies at its lifetime. The children
  use the provider's main client.
* ``destroy``: ``sandbox.kill()`` (``DELETE /sandboxes/{id}``); 404 counts as destroyed.
* ``list_sandboxes``: ``AsyncSandbox.list(query=SandboxQuery(metadata={RUN_LABEL: run_id}))``,
  every page, running and paused sandboxes.

Client: the key only from ``E2B_API_KEY``; the endpoints from the ``api_url``/``sandbox_url``
settings, else ``E2B_API_URL``/``E2B_SANDBOX_URL``, else the SDK's defaults, passed per call
(bound to an ``e2b.E2B`` client object), so two providers in one process can differ.
``E2B_DEBUG`` is never used (it skips the control plane for create and kill). Retries
(``SDK_RETRIES``, in the manifest): ``retries=0`` switches off the SDK's retry of 429/5xx and
``Should-Retry`` answers; its transport retries failed connection set-ups
``E2B_CONNECTION_RETRIES`` times, a number read **once, at import**, which this module sets to 0
first unless it is set (the value the SDK took is recorded). After a connection failure of an
envd call the SDK probes ``GET /health`` once (no retry) to classify it. The SDK's connection
pool (pyqwest) is process-wide and shared by every client object (idle time and size from
``E2B_KEEPALIVE_EXPIRY`` (300 s) and ``E2B_MAX_KEEPALIVE_CONNECTIONS`` (20 per host), read at
import): ``connection="per_iteration"`` gives each new sandbox its own client object and
``AsyncSandbox``, **not** fresh TCP/TLS connections (set ``E2B_MAX_KEEPALIVE_CONNECTIONS=0``
for that). HTTP/2 only by ALPN on https (``E2B_HTTP_VERSION``); plain http is HTTP/1.1.

Settings: :class:`E2BSettings` (each key declared with its help; unknown keys are refused).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from connectrpc.errors import ConnectError

from providers import base, errors, sdk
from providers.base import Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, Handle, SDKProvider, SDKSettings, on, sdk_timeout
from providers.settings import setting

API_KEY_ENV = "E2B_API_KEY"
API_URL_ENV = "E2B_API_URL"
SANDBOX_URL_ENV = "E2B_SANDBOX_URL"
CONNECTION_RETRIES_ENV = "E2B_CONNECTION_RETRIES"

# The SDK reads E2B_CONNECTION_RETRIES once, at import (e2b/api/__init__.py); a connect retry
# inside a measured call would hide in its latency, so default it to 0 before the import.
_RETRIES_SOURCE = sdk.preset_env(CONNECTION_RETRIES_ENV, "0", read_at_import_by="e2b")

import e2b  # noqa: E402 - must follow the environment set-up above
import e2b.api as _e2b_api  # noqa: E402
from e2b import E2B, AsyncSandbox, ConnectionConfig  # noqa: E402
from e2b.sandbox_domains import is_supported_sandbox_domain  # noqa: E402

#: E2B's default user's home: writable, and part of what a snapshot captures.
SCRATCH_DIR = "/home/user"
DEFAULT_TEMPLATE = "base"
#: The API's limit on children per fork call (e2b 2.63.0, ``validate_fork_count``).
MAX_FORK_COUNT = 20
SNAPSHOT_MODES = ("full", "filesystem")
LIST_PAGE = 100


@dataclass(frozen=True, kw_only=True)
class E2BSettings(SDKSettings):
    sandbox_url: str | None = setting(
        None, help=f"envd endpoint for every sandbox; else {SANDBOX_URL_ENV}", private=True
    )
    template: str | None = setting(None, help="template when the spec names none; else base")
    checkpoint_mode: str = setting(
        "full", help="full: memory and filesystem; filesystem: files only", choices=SNAPSHOT_MODES
    )
    pause_mode: str = setting(
        "full",
        help="full: keeps memory and processes; filesystem: files only",
        choices=SNAPSHOT_MODES,
    )
    request_timeout_s: float = sdk_timeout(
        60.0, "the SDK's HTTP timeout (control plane, files, opening a command stream)"
    )


class E2BProvider(SDKProvider[E2B]):
    id = "e2b"
    sdk_packages = ("e2b",)
    required_env = (API_KEY_ENV,)
    Settings = E2BSettings
    config: E2BSettings
    endpoint_env = API_URL_ENV
    ID_ATTRIBUTE = "sandbox_id"
    #: What stays on or off inside the SDK (e2b 2.63.0), for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
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
    #: envd's file API errors carry the status only in the message: "500: ...".
    STATUS_IN_MESSAGE = r"^([1-5][0-9][0-9]): "
    ERRORS = (
        # pyqwest reports a body it cannot decompress as a ReadError, like a dropped
        # connection; only the message tells them apart.
        on(
            error=errors.ProtocolError,
            message=r"(?i)could not be decoded|invalid gzip header|"
            r"error decoding response body",
        ),
        on(e2b.AuthenticationException, error=errors.AuthError),
        # The SDK drops the response (and its Retry-After) when it raises this.
        on(e2b.RateLimitException, error=errors.QuotaOrRateLimited),
        on(e2b.ServiceBusyException, error=errors.Unavailable),
        # Before TimeoutException, which both subclass: the sandbox is gone (killed, timed out
        # or paused) or cannot be reached.
        on(e2b.SandboxNotRunningException, error=errors.NotFound),
        on(e2b.SandboxUnreachableException, error=errors.Unavailable),
        on(e2b.NotFoundException, error=errors.NotFound),
        on(
            e2b.TimeoutException,
            httpx.TimeoutException,
            TimeoutError,
            error=errors.OperationTimeout,
        ),
        HTTP_STATUS,
        # connectrpc codes (as the SDK spells them) of a server-side failure of envd or the edge.
        on(
            e2b.SandboxException,
            error=errors.Unavailable,
            message=r"^Code\.(INTERNAL|UNKNOWN|UNAVAILABLE|DATA_LOSS)",
        ),
        on(httpx.TransportError, ConnectionError, ConnectError, error=errors.Unavailable),
        # An answer the generated client could not parse (e.g. an error body without "code").
        on(httpx.DecodingError, KeyError, ValueError, error=errors.ProtocolError),
        on(
            error=errors.ProtocolError, message=r"^Body of the request is None|without an end event"
        ),
    )

    # -- set-up and description -----------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        """The SDK connection parameters every call carries (never logged: holds the key)."""
        urls = {
            "api_url": self.config.api_url or os.environ.get(API_URL_ENV),
            "sandbox_url": self.config.sandbox_url or os.environ.get(SANDBOX_URL_ENV),
        }
        return {
            "api_key": os.environ.get(API_KEY_ENV),
            "retries": 0,
            "request_timeout": self.config.request_timeout_s,
            **{k: v for k, v in urls.items() if v},
        }

    def _sdk_config(self) -> ConnectionConfig:
        return ConnectionConfig(**{k: v for k, v in self._params().items() if k != "api_key"})

    @property
    def endpoint(self) -> str:
        return self._sdk_config().api_url

    def new_client(self) -> E2B:
        return E2B(**self._params())

    def capabilities(self) -> base.Capabilities:
        full_checkpoint = self.config.checkpoint_mode == "full"
        freeze = self.config.pause_mode == "full"
        return self.capable(
            checkpoint_captures=(
                base.CheckpointCaptures.FILESYSTEM_AND_MEMORY
                if full_checkpoint
                else base.CheckpointCaptures.FILESYSTEM
            ),
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.FREEZE if freeze else base.PauseKind.STOP_START,
            fork_keeps=base.CheckpointCaptures.FILESYSTEM_AND_MEMORY,
            fork_method="",
            isolation="Firecracker microVM per sandbox",
            scratch_dir=SCRATCH_DIR,
            notes={
                "stderr": "separate (envd streams stdout and stderr apart)",
                "exec": "bash -l -c <line> as user 'user' in /home/user; strings sent as "
                "sh -c '<cmd>', argv as shlex.join(argv); output decoded as UTF-8 by the SDK "
                "(invalid bytes become U+FFFD); timeout_s is the SDK's stream deadline",
                "resources": "cpus/memory_mb/disk_mb are the template's (E2B base: 2 vCPU, "
                "512 MiB), not settable per sandbox: the spec's values are ignored",
                "checkpoint": "create_snapshot(): memory + filesystem, the source is briefly "
                "paused and keeps running"
                if full_checkpoint
                else "create_snapshot(mode='filesystem'): filesystem only, restores cold-boot; "
                "the source keeps running",
                "restore": "AsyncSandbox.create(template=snapshot_id): a new sandbox",
                "pause": "pause()/connect(): memory and processes kept"
                if freeze
                else "pause(mode='filesystem')/connect(): only the filesystem survives, resume "
                "cold-boots",
                "fork": f"fork(timeout=lifetime_s, count<={MAX_FORK_COUNT}): one memory and "
                "filesystem snapshot of the briefly paused parent, count new sandboxes boot "
                "from it (processes and memory kept); whether they inherit the run label is "
                "not documented",
                "lifetime": "timeout=lifetime_s at create and on resume; E2B kills it after",
                "connection": "the SDK's connection pool is process-wide, so per_iteration gets "
                "fresh client objects but not fresh TCP/TLS connections",
                "retries": "retries=0 (no retry of 429/5xx); connect retries per "
                "E2B_CONNECTION_RETRIES, 0 unless set (see environment sdk_retries)",
            },
        )

    def retries_observed(self) -> dict[str, Any]:
        opened = ConnectionConfig(**self._params()).retries if self.clients.main else None
        return {
            "observed_config_retries": repr(opened) if opened is not None else "'not opened yet'",
            "connection_retries_observed": _e2b_api.connection_retries,
            "connection_retries_source": _RETRIES_SOURCE,
        }

    def sdk_environment(self) -> dict[str, Any]:
        config = self._sdk_config()
        sandbox_url = self._params().get("sandbox_url") or (
            f"https://sandbox.{config.domain}"
            if is_supported_sandbox_domain(config.domain)
            else f"https://49983-<sandbox id>.{config.domain}"
        )
        return {
            "sandbox_endpoint": base.url_without_secrets(sandbox_url),
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
            "template": self.config.template or DEFAULT_TEMPLATE,
        }

    def http_status(
        self, chain: list[BaseException], observed: sdk.Observed
    ) -> tuple[int | None, float | None]:
        # Only the SDK's own exceptions: connectrpc's and the API client's carry other statuses.
        return super().http_status(
            [e for e in chain if isinstance(e, e2b.SandboxException)], observed
        )

    # -- operations -------------------------------------------------------------------------

    async def attach(self, client: E2B, sandbox_id: str) -> AsyncSandbox:
        return await client.AsyncSandbox.connect(sandbox_id)  # also resumes a paused sandbox

    async def _start(self, template: str, labels: dict[str, str], lifetime_s: int, op: str):
        return await self.started(
            op,
            lambda c: c.AsyncSandbox.create(template=template, timeout=lifetime_s, metadata=labels),
            labels=labels,
            lifetime_s=lifetime_s,
        )

    async def create(self, spec: SandboxSpec) -> Sandbox:
        template = spec.template or self.config.template or DEFAULT_TEMPLATE
        return await self._start(
            template, dict(spec.labels), max(1, int(spec.lifetime_s)), Op.CREATE
        )

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        async with self.calling(sandbox, Op.EXEC) as handle:  # the SDK runs bash -l -c <line>
            try:
                result = await handle.sdk.commands.run(self.shell_line(command), timeout=timeout_s)
            except e2b.CommandExitException as exc:  # a non-zero exit is data
                result = exc
        return self.exec_result(result.exit_code, result.stdout, result.stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:
            await handle.sdk.files.write(path, bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            return self.file_bytes(await handle.sdk.files.read(path, format="bytes"))

    async def destroy(self, sandbox: Sandbox) -> None:
        # kill() answers False for a sandbox that is already gone: destroy is idempotent. A
        # bare id is killed by id, not connected to (connect would resume a paused sandbox).
        if isinstance(sandbox.native, Handle):
            async with self.idempotent(Op.DESTROY, release=sandbox.native.client):
                await sandbox.native.sdk.kill()
        else:
            async with self.idempotent(Op.DESTROY):
                await self.clients.shared(Op.DESTROY).AsyncSandbox.kill(sandbox.id)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        found: list[str] = []
        async with self.main(Op.LIST) as client:
            paginator = client.AsyncSandbox.list(
                query=e2b.SandboxQuery(metadata={base.RUN_LABEL: run_id}), limit=LIST_PAGE
            )
            while paginator.has_next:
                found.extend(item.sandbox_id for item in await paginator.next_items())
        return found

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        async with self.calling(sandbox, Op.CHECKPOINT) as handle:
            info = await handle.sdk.create_snapshot(mode=self.config.checkpoint_mode)
        return self.checkpoint_ref(getattr(info, "snapshot_id", None), sandbox, handle)

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        return await self._start(ref.id, *self.saved_labels(ref), Op.RESTORE)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        # delete_snapshot answers False for a snapshot that is already gone.
        async with self.main("delete_checkpoint", missing_ok=True) as client:
            await client.AsyncSandbox.delete_snapshot(ref.id)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        async with self.calling(sandbox, Op.FORK) as handle:
            made = await handle.sdk.fork(timeout=handle.lifetime_s, count=count)
        # Each child started or failed on its own: self.forked sorts that out.
        results = [m if isinstance(m, BaseException) else self.child(handle, m) for m in made]
        return await self.forked(results, count)

    async def pause(self, sandbox: Sandbox) -> None:
        mode = self.config.pause_mode
        # pause() answers False when the sandbox was already paused: nothing to do.
        async with self.translating(Op.PAUSE):
            if isinstance(sandbox.native, Handle):
                await sandbox.native.sdk.pause(mode=mode)
            else:
                await self.clients.shared(Op.PAUSE).AsyncSandbox.pause(sandbox.id, mode=mode)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        if not isinstance(sandbox.native, Handle):  # attaching by id connects: that resumes
            return self.holding(sandbox, await self.handle(sandbox, Op.RESUME))
        async with self.translating(Op.RESUME):
            await sandbox.native.sdk.connect(timeout=sandbox.native.lifetime_s)
        return sandbox


__all__ = ["E2BProvider", "E2BSettings"]
