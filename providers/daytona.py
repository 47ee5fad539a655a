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
* ``list_checkpoints``: snapshots carry no labels, so the run is in the name the harness
  gives them (``sandbox-bench-<run digest>-<random>``, the digest a SHA-256 prefix of the run
  id); ``daytona.snapshot.list(page, limit)`` page by page, keeping the names with the run's
  prefix (the SDK's list has no name filter; the API's partial-name filter is not used so
  that the match is exact on our side).
* ``pause`` / ``resume``, per the ``pause_mode`` setting:
  ``"stop_start"`` (default; PauseKind.STOP_START): ``sandbox.stop()`` / ``sandbox.start()``.
  Container sandboxes (Daytona's default class) only have this: the filesystem survives,
  processes and memory do not. ``"pause"`` (PauseKind.FREEZE): ``sandbox.pause()`` /
  ``sandbox.start()`` (Daytona resumes a paused sandbox with start). Processes and memory
  survive, but the API offers it **only for VM-class sandboxes** (a ``linux-vm`` snapshot), so
  set ``snapshot`` accordingly; a container sandbox refuses it. Resume returns the same
  sandbox (the id does not change).
* ``fork``: ``count`` concurrent ``sandbox.fork(timeout=sdk_timeout_s)`` (``POST
  /sandbox/{id}/fork`` ``{"name": null}``: the server names the child), each returning when
  the child is ``started`` (the SDK polls it). The SDK's docstring: "a copy-on-write clone of
  the original. It starts with the same disk contents but operates independently from that
  point on" (``fork_keeps`` FILESYSTEM, ``fork_method`` copy-on-write). (Daytona's
  persistence docs, as the research notes quote them, say fork keeps memory and is for
  VM-class sandboxes only; the pinned SDK says filesystem, so that is declared, and the fork
  workload records whether a process came along.) If any child fails, those made are deleted
  and the first failure is raised. The children carry what the server gives them (labels
  included, as the SDK reads them from the answer) and use the parent's SDK client: in
  connection mode ``per_iteration`` destroy them before the parent.
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

Settings: :class:`DaytonaSettings` (each key declared with its help; unknown keys refused).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import daytona
from aiohttp.http_exceptions import HttpProcessingError
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams
from pydantic import ValidationError

from providers import base, errors
from providers.base import Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, Handle, SDKProvider, SDKSettings, on, sdk_timeout
from providers.settings import setting

API_KEY_ENV = "DAYTONA_API_KEY"
API_URL_ENV = "DAYTONA_API_URL"
DEFAULT_API_URL = "https://app.daytona.io/api"
#: The default user's home in Daytona's sandbox images: writable, and part of the filesystem
#: a snapshot captures.
SCRATCH_DIR = "/home/daytona"
GONE_STATES = frozenset({"destroyed", "destroying"})
#: Snapshots per page of a listing (the API's maximum).
SNAPSHOT_PAGE = 200


@dataclass(frozen=True, kw_only=True)
class DaytonaSettings(SDKSettings):
    EXCLUSIVE = (("snapshot", "image"),)
    snapshot: str | None = setting(None, help="snapshot to create from (else Daytona's default)")
    image: str | None = setting(None, help="image to create from instead; sends the spec's sizes")
    target: str | None = setting(None, help="region (DaytonaConfig target)")
    pause_mode: str = setting(
        "stop_start", help="stop_start: stop()/start(); pause: pause()/start() (VM-class only)",
        choices=("stop_start", "pause"),
    )  # fmt: skip
    sdk_timeout_s: float = sdk_timeout(300.0, "the SDK's own bound on a lifecycle call")


class DaytonaProvider(SDKProvider[AsyncDaytona]):
    id = "daytona"
    sdk_packages = ("daytona",)
    required_env = (API_KEY_ENV,)
    Settings = DaytonaSettings
    config: DaytonaSettings
    endpoint_env = API_URL_ENV
    default_endpoint = DEFAULT_API_URL
    CLOSE = "close"
    #: What stays on or off inside the SDK (daytona 0.226.1), for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "generated_api_clients": (
            "off: Configuration.retries is None (the async client never sets it)"
        ),
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
    ERRORS = (
        # aiohttp could not parse the answer's status line or headers; it reports that as a
        # ClientResponseError with its own status 400, which is not the provider's.
        on(HttpProcessingError, error=errors.ProtocolError),
        HTTP_STATUS,
        on(
            daytona.DaytonaAuthenticationError,
            daytona.DaytonaForbiddenError,
            error=errors.AuthError,
        ),
        on(daytona.DaytonaNotFoundError, error=errors.NotFound),
        on(daytona.DaytonaRateLimitError, error=errors.QuotaOrRateLimited),
        on(daytona.DaytonaTimeoutError, asyncio.TimeoutError, error=errors.OperationTimeout),
        on(
            daytona.DaytonaConnectionError,
            aiohttp.ClientConnectionError,
            ConnectionError,
            error=errors.Unavailable,
        ),
        on(
            ValidationError,
            json.JSONDecodeError,
            aiohttp.ContentTypeError,
            error=errors.ProtocolError,
        ),
        on(error=errors.ProtocolError, message="Unexpected Content-Type"),
        on(error=errors.SandboxCrashed, message="entered error state"),
    )

    def new_client(self) -> AsyncDaytona:
        config = daytona.DaytonaConfig(
            api_key=os.environ.get(API_KEY_ENV),
            api_url=self.endpoint,
            target=self.config.target,
            # No socket.io event stream: state changes are observed by polling (see notes).
            use_deprecated_polling=True,
        )
        with warnings.catch_warnings():
            # The SDK warns that polling mode is deprecated on every client it builds.
            warnings.simplefilter("ignore", DeprecationWarning)
            return AsyncDaytona(config)

    def capabilities(self) -> base.Capabilities:
        freeze = self.config.pause_mode == "pause"
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.FREEZE if freeze else base.PauseKind.STOP_START,
            fork_keeps=base.CheckpointCaptures.FILESYSTEM,
            fork_method="copy-on-write",
            isolation=(
                "Daytona sandbox: an OCI container on a Daytona runner (default class); "
                "a VM for linux-vm snapshots"
            ),
            scratch_dir=SCRATCH_DIR,
            lists_checkpoints=True,
            notes={
                "stderr": "not separate: the daemon returns stdout and stderr combined in one "
                "'result'; ExecResult.stdout holds both, stderr is always empty",
                "exec": "strings sent as sh -c '<cmd>', argv as shlex.join(argv), run by the "
                "sandbox shell; output decoded as UTF-8 by the daemon (invalid bytes become "
                "U+FFFD); timeout sent in whole seconds (ceil, >= 1)",
                "resources": "cpus/memory_mb/disk_mb apply only with the image setting (whole "
                "vCPU, whole GiB, rounded up); on the snapshot path (default) the snapshot's "
                "resources apply",
                "checkpoint": "create_snapshot(name): filesystem only (SDK sends "
                "includeMemory=false), the sandbox keeps running; returns once the snapshot is "
                "active",
                "restore": "create(snapshot=name): a new sandbox; no in-place restore",
                "pause": "pause_mode=pause: sandbox.pause()/start(), processes and memory kept, "
                "VM-class (linux-vm) snapshots only"
                if freeze
                else "pause_mode=stop_start: sandbox.stop()/start(), only the filesystem "
                "survives (container sandboxes have no pause)",
                "fork": "sandbox.fork() once per child, concurrently, each until the child is "
                "started: a copy-on-write clone of the filesystem (per the SDK; Daytona's "
                "persistence docs say memory too, VM-class only)",
                "destroy": "sandbox.delete(wait=False): returns when the API accepted it",
                "lifetime": "ttl_minutes=ceil(lifetime_s/60); auto_stop_interval=0",
                "state_updates": "use_deprecated_polling=True: no socket.io websocket; waits "
                "poll GET /sandbox/{id} every 0.1 s (up to 1 s after 5 s)",
                "retries": "SDK connection-level retries stay on (see environment sdk_retries)",
            },
        )

    def retries_observed(self) -> dict[str, Any]:
        # Read back what the SDK really configured (never changed here).
        config = getattr(getattr(self.clients.main, "_api_client", None), "configuration", None)
        observed = getattr(config, "retries", "unknown") if self.clients.main else "not opened yet"
        return {"observed_configuration_retries": repr(observed)}

    def sdk_environment(self) -> dict[str, Any]:
        image, snapshot = self.config.image, self.config.snapshot
        return {
            "state_updates": "polling (use_deprecated_polling=True)",
            "create_from": f"image {image}" if image else f"snapshot {snapshot or 'default'}",
        }

    # -- operations -------------------------------------------------------------------------

    async def attach(self, client: AsyncDaytona, sandbox_id: str) -> Any:
        return await client.get(sandbox_id)

    async def _start(self, op: str, labels: dict[str, str], lifetime_s: int, **params: Any):
        ttl_minutes = max(1, math.ceil(lifetime_s / 60))
        # auto_stop_interval=0: no sandbox stops on its own under a measurement; the TTL
        # destroys one the harness lost.
        common = {"labels": dict(labels), "auto_stop_interval": 0, "ttl_minutes": ttl_minutes}
        if "image" in params:
            request: Any = daytona.CreateSandboxFromImageParams(**params, **common)
        else:
            request = CreateSandboxFromSnapshotParams(**params, **common)
        timeout = self.config.sdk_timeout_s
        return await self.started(
            op, lambda c: c.create(request, timeout=timeout), labels=labels, lifetime_s=lifetime_s
        )

    async def create(self, spec: SandboxSpec) -> Sandbox:
        labels, lifetime_s = dict(spec.labels), int(spec.lifetime_s)
        if not self.config.image:
            snapshot = spec.template or self.config.snapshot
            return await self._start(Op.CREATE, labels, lifetime_s, snapshot=snapshot)
        resources = daytona.Resources(
            cpu=max(1, math.ceil(spec.cpus)),
            memory=max(1, math.ceil(spec.memory_mb / 1024)),
            disk=math.ceil(spec.disk_mb / 1024) if spec.disk_mb else None,
        )
        image = spec.template or self.config.image
        return await self._start(Op.CREATE, labels, lifetime_s, image=image, resources=resources)

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        seconds = max(1, math.ceil(timeout_s))  # whole seconds, always sent
        async with self.calling(sandbox, Op.EXEC) as handle:
            response = await handle.sdk.process.exec(self.shell_line(command), timeout=seconds)
        result = getattr(response, "result", None)  # stdout and stderr in one
        return self.exec_result(getattr(response, "exit_code", None), result, b"")

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        timeout = max(1, math.ceil(self.config.sdk_timeout_s))
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:
            # Never a str: the SDK reads a str as a local file path.
            await handle.sdk.fs.upload_file(bytes(data), path, timeout)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        timeout = max(1, math.ceil(self.config.sdk_timeout_s))
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            return self.file_bytes(await handle.sdk.fs.download_file(path, timeout))

    async def delete(self, sandbox: Sandbox, handle: Handle[AsyncDaytona]) -> None:
        await handle.sdk.delete(timeout=self.config.sdk_timeout_s)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        query = daytona.ListSandboxesQuery(labels={base.RUN_LABEL: run_id})
        async with self.main(Op.LIST) as client:
            return [
                item.id
                async for item in client.list(query)
                if _state_name(item.state) not in GONE_STATES
            ]

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        handle = await self.handle(sandbox, Op.CHECKPOINT)
        name = f"{_snapshot_prefix(handle.labels.get(base.RUN_LABEL, ''))}{uuid.uuid4().hex[:12]}"
        timeout, client, state = self.config.sdk_timeout_s, handle.client, ""

        async def active() -> bool:
            nonlocal state
            snapshot = await client.snapshot.get(name)
            if (state := _state_name(snapshot.state)) in ("error", "build_failed"):
                ended = f"snapshot {name} ended in state {state}: {snapshot.error_reason or ''}"
                raise self.error(errors.ProviderError, Op.CHECKPOINT, ended)
            return state == "active"

        def late() -> str:
            return f"snapshot {name} not active after {timeout:g} s (state {state})"

        # No ref is returned on failure, so nobody else would delete it (if it was made at all).
        undo = self.undone_on_failure(client.snapshot.delete, name)
        async with self.translating(Op.CHECKPOINT), undo:
            await handle.sdk.create_snapshot(name, timeout=timeout)
            await self.until(active, timeout, 0.1, backoff=1.5, max_interval_s=1.0, late=late)
        return self.checkpoint_ref(name, sandbox, handle)

    async def list_checkpoints(self, run_id: str) -> list[str]:
        prefix = _snapshot_prefix(run_id)
        found: list[str] = []
        async with self.main("list_checkpoints") as client:
            page, pages = 1, 1
            while page <= pages:
                listed = await client.snapshot.list(page=page, limit=SNAPSHOT_PAGE)
                found += [s.name for s in listed.items if s.name.startswith(prefix)]
                pages, page = listed.total_pages, page + 1
        return sorted(found)

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        return await self._start(Op.RESTORE, labels, lifetime_s, snapshot=ref.id)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        async with self.main("delete_checkpoint", missing_ok=True) as client:
            await client.snapshot.delete(ref.id)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        handle = await self.handle(sandbox, Op.FORK)

        async def child() -> Sandbox:
            async with self.translating(Op.FORK):
                return self.child(handle, await handle.sdk.fork(timeout=self.config.sdk_timeout_s))

        return await self.fork_each(count, child)

    async def pause(self, sandbox: Sandbox) -> None:
        freeze = self.config.pause_mode == "pause"
        async with self.calling(sandbox, Op.PAUSE) as handle:
            pause = handle.sdk.pause if freeze else handle.sdk.stop
            await pause(timeout=self.config.sdk_timeout_s)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        # Daytona resumes both a paused and a stopped sandbox with start().
        async with self.calling(sandbox, Op.RESUME) as handle:
            await handle.sdk.start(timeout=self.config.sdk_timeout_s)
        return self.holding(sandbox, handle)


def _snapshot_prefix(run_id: str) -> str:
    """The start of the name of every snapshot taken of a sandbox of ``run_id``: a digest, as
    a run id may hold characters a snapshot name may not."""
    return f"sandbox-bench-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}-"


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state) or "")


__all__ = ["DaytonaProvider", "DaytonaSettings"]
