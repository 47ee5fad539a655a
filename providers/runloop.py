"""Runloop adapter over the official async SDK (``runloop-api-client`` 3.0.0, ``AsyncRunloop``).

What each interface operation means on Runloop (a sandbox is a *devbox*):

* ``create``: ``client.devboxes.create_and_await_running(metadata=labels, launch_parameters=,
  blueprint_name=)`` (``POST /v1/devboxes/create_and_await_running``, then, unless the answer
  says ``running``, the SDK's long-poll ``POST .../wait_for_status``), as ``sdk.devbox.create()``
  does: it returns when **Runloop says the devbox is running**; readiness is still the runner's
  first exec. Size: ``CUSTOM_SIZE`` from the spec **rounded up** to Runloop's grid (CPU 0.5, 1
  or even to 16; memory 1 or even GiB to 64, 2 to 8 GiB per CPU; disk even GiB 2 to 64), so the
  default 1 vCPU / 512 MiB is sent as 1 vCPU / 2 GiB; or a preset (``resource_size``).
  ``keep_alive_time_seconds`` = ``lifetime_s`` (at most 48 h). Image: the blueprint named by
  ``SandboxSpec.template``, else the ``blueprint`` setting, else Runloop's default.
* Labels are ``metadata``. ``list_sandboxes`` reads every page of ``GET /v1/devboxes`` and
  **filters client-side** on ``metadata[RUN_LABEL]`` and a status other than ``shutdown`` or
  ``failure``: the API has no documented metadata filter for devboxes, and it lists shut-down
  ones too (a long account history means more pages).
* ``exec``: ``devbox.cmd.exec(line, polling_config=)``: ``POST .../execute_async``, then the
  long-poll ``POST .../executions/{id}/wait_for_status`` (held up to 25 s a call). Runloop runs
  ``line`` in a fresh login shell as ``user`` in ``/home/user``: a string command is sent as
  ``sh -c '<command>'``, an argv list as ``shlex.join(argv)``. stdout and stderr are
  **separate**, text decoded by the server (non-UTF-8 output is lossy); past 100 lines the full
  output comes from SSE streams inside the measured exec. ``timeout_s`` is the long-poll budget:
  when it runs out the adapter kills the execution (process group) and raises OperationTimeout
  (Runloop has no per-command timeout; a caller's deadline that passes first leaves the command
  running until the devbox goes). A non-zero exit is data.
* ``write_file`` / ``read_file``: ``devbox.file.upload(path=, file=bytes)`` (multipart) and
  ``devbox.file.download(path=)``: byte-exact. Not ``file.write``/``file.read``, which carry
  text and turn non-UTF-8 bytes into U+FFFD. Whether upload creates parents is undocumented.
* ``checkpoint``: ``client.devboxes.snapshot_disk(id, name=, metadata=labels)``, the
  **blocking** ``POST .../snapshot_disk``: the **disk only** (no memory, no processes); the
  devbox keeps running. Not the object SDK's ``devbox.snapshot_disk()``, which polls the status
  every 1 s and so reads a 0.3 s snapshot as about 1 s.
* ``restore``: ``create_and_await_running(snapshot_id=)`` with the source's labels and size: a
  **new devbox**. ``delete_checkpoint``: ``disk_snapshots.delete(id)`` (snapshots bill storage
  until deleted); a missing one is fine.
* ``pause`` / ``resume``: ``devbox.suspend()`` (answers at ``suspending``) **plus**
  ``devbox.await_suspended()``, and ``devbox.resume()`` (which waits for ``running``); same id.
  **Only the disk survives: processes and memory are gone** (PauseKind.STOP_START; the docs:
  "Only disk state, not in-memory state is preserved", "Daemons or other processes running at
  suspend time must be manually restarted"). Suspended devboxes pay disk only. Paid plans only.
* ``fork``: unsupported (Runloop has none). ``destroy``: ``devbox.shutdown(force="true")``
  (``force``: a snapshot in progress would refuse it with 409); the SDK does not wait. A 404,
  or a refusal for a devbox already shut down, counts as destroyed.

Client: ``AsyncRunloop`` (``AsyncRunloopSDK`` cannot turn off the shared pool), the key only
from ``RUNLOOP_API_KEY``, the endpoint from ``api_url``, else ``RUNLOOP_BASE_URL``, else
``https://api.runloop.ai``; ``max_retries=0`` (:data:`RunloopProvider.SDK_RETRIES`). The SDK
splits traffic by path over three sets of HTTP/2 transports (API calls, long-polls, transfers;
8/16/2 connections by default), **process-wide** when ``shared_http_pool`` is on. Here it is
off (``connection = "per_iteration"`` really means new connections) with ``pool_shards``
(default 1) per set, so no call opens a connection just because round-robin reached an unused
one. HTTP/2 needs https; plain http (the emulator) is HTTP/1.1. Settings: :class:`RunloopSettings`.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import runloop_api_client as rl
from runloop_api_client.lib.polling import PollingConfig, PollingTimeout
from runloop_api_client.sdk import AsyncDevbox

from providers import base, errors
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, SDKProvider, SDKSettings, on, sdk_timeout
from providers.settings import setting

API_KEY_ENV = "RUNLOOP_API_KEY"
BASE_URL_ENV = "RUNLOOP_BASE_URL"
HEADERS_ENV = "RUNLOOP_CUSTOM_HEADERS"
DEFAULT_BASE_URL = "https://api.runloop.ai"
#: The default user's home on Runloop's images: writable, and on the disk a snapshot keeps.
SCRATCH_DIR = "/home/user"
GONE = frozenset({"shutdown", "failure"})
LIST_PAGE = 100
MAX_KEEP_ALIVE_S = 172_800
PRESETS = ("custom", "X_SMALL", "SMALL", "MEDIUM", "LARGE", "X_LARGE", "XX_LARGE")
UNREADABLE = (rl.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError)
NO_FORK = "Runloop has no fork; a snapshot and new devboxes from it is checkpoint + restore"


@dataclass(frozen=True, kw_only=True)
class RunloopSettings(SDKSettings):
    blueprint: str | None = setting(None, help="blueprint name when the spec names no template")
    resource_size: str = setting(
        "custom", choices=PRESETS,
        help="custom: the spec's cpus/memory_mb/disk_mb rounded up to Runloop's grid; or a preset",
    )  # fmt: skip
    pool_shards: int = setting(
        1, minimum=1, maximum=64,
        help="HTTP connections (shards) per traffic class: API calls, long-polls, transfers "
        "(the SDK's defaults are 8/16/2)",
    )  # fmt: skip
    request_timeout_s: float = sdk_timeout(60.0, "the SDK's HTTP timeout of a call")
    snapshot_timeout_s: float = sdk_timeout(600.0, "HTTP timeout of the blocking disk snapshot")
    wait_timeout_s: float = sdk_timeout(300.0, "long-poll budget of create, pause, resume")


def custom_size(spec: SandboxSpec) -> dict[str, Any]:
    """The spec rounded up to Runloop's CUSTOM_SIZE grid, CPU first raised to carry the memory
    (at most 8 GiB per CPU); ValueError beyond its largest size."""
    gib = max(math.ceil(spec.memory_mb / 1024), 1)
    cpu = next((c for c in (0.5, 1, *range(2, 17, 2)) if c >= max(spec.cpus, gib / 8)), None)
    memory = next((m for m in (1, *range(2, 65, 2)) if m >= max(gib, 2 * (cpu or 0))), None)
    if cpu is None or memory is None:
        raise ValueError(f"{spec.cpus:g} vCPU / {spec.memory_mb} MiB is beyond Runloop's sizes")
    size: dict[str, Any] = {"resource_size_request": "CUSTOM_SIZE", "custom_cpu_cores": cpu,
                            "custom_gb_memory": memory}  # fmt: skip
    if spec.disk_mb:
        disk = max(2, 2 * math.ceil(spec.disk_mb / 2048))
        if disk > 64:
            raise ValueError(f"a {spec.disk_mb} MiB disk is beyond Runloop's 64 GiB")
        size["custom_disk_size"] = disk
    return size


class RunloopProvider(SDKProvider[rl.AsyncRunloop]):
    id = "runloop"
    sdk_packages = ("runloop-api-client",)
    required_env = (API_KEY_ENV,)
    Settings = RunloopSettings
    config: RunloopSettings
    endpoint_env = BASE_URL_ENV
    default_endpoint = DEFAULT_BASE_URL
    CLOSE = "close"
    #: What stays on or off inside the SDK (runloop-api-client 3.0.0), for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "api_calls": "off: max_retries=0 (the default 5 retries connection errors, timeouts, "
        "408, 409, 429 and >= 500 on every method, POST included, 1 s x 2^n backoff)",
        "long_polls": "wait loops (create, restore, pause, resume, exec) poll again after a 408 "
        "(hold over), a connection error or a timeout until their budget ends",
        "output_streams": "SSE output streams (over 100 lines) reconnect after a timeout or 408",
    }
    ERRORS = (
        on(PollingTimeout, error=errors.OperationTimeout),
        # A body the client cannot decode: the SDK wraps it in APIConnectionError.
        on(httpx.DecodingError, error=errors.ProtocolError),
        on(rl.APITimeoutError, httpx.TimeoutException, TimeoutError, error=errors.OperationTimeout),
        HTTP_STATUS,
        on(rl.APIConnectionError, httpx.TransportError, OSError, error=errors.Unavailable),
        on(error=errors.SandboxCrashed, message="non-running terminal state: failure"),
        on(error=errors.NotFound, message="terminal state: shutdown"),
        on(error=errors.SandboxCrashed, message="non-suspended terminal state"),
        # The SDK parses leniently: a wrong answer surfaces as a JSON error or a missing field.
        on(*UNREADABLE, error=errors.ProtocolError),
    )

    def new_client(self) -> rl.AsyncRunloop:
        shards = self.config.pool_shards
        return rl.AsyncRunloop(
            bearer_token=os.environ.get(API_KEY_ENV),
            base_url=self.endpoint,
            timeout=self.config.request_timeout_s,
            max_retries=0,
            shared_http_pool=False,
            api_pool_shards=shards,
            background_pool_shards=shards,
            transfer_pool_shards=shards,
        )

    def capabilities(self) -> base.Capabilities:
        size = self.config.resource_size
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.STOP_START,
            isolation="Runloop devbox: a VM of its own (a microVM, say third-party harnesses; "
            "the Runloop docs read do not say)",
            scratch_dir=SCRATCH_DIR,
            unsupported={Op.FORK: NO_FORK},
            notes={
                "create": "create_and_await_running: returns when Runloop says running",
                "stderr": "separate from stdout",
                "exec": "execute_async + long-poll; login shell as 'user' in /home/user; strings "
                "as sh -c '<cmd>', argv as shlex.join(argv); output is server-decoded text "
                "(non-UTF-8 lossy), streamed in full (SSE) over 100 lines; killed on timeout",
                "resources": "the spec rounded up to CUSTOM_SIZE (1 vCPU / 512 MiB is sent as "
                "1 vCPU / 2 GiB)"
                if size == "custom"
                else f"preset {size}; the spec is not sent",
                "checkpoint": "snapshot_disk (blocking): disk only, the devbox keeps running",
                "restore": "create_and_await_running(snapshot_id): a new devbox",
                "pause": "suspend + await_suspended / resume: only the disk survives; same id",
                "lifetime": "keep_alive_time_seconds = lifetime_s (at most 48 h)",
                "list": "all of GET /v1/devboxes, filtered client-side (no metadata filter)",
                "connection": f"own pool, {self.config.pool_shards} shard(s)",
                "retries": "max_retries=0; the SDK's long-polls loop on 408/connection errors",
            },
        )

    def retries_observed(self) -> dict[str, Any]:
        main = self.clients.main
        return {"observed_max_retries": main.max_retries if main else None}

    def sdk_environment(self) -> dict[str, Any]:
        shards = self.config.pool_shards
        return {
            "shared_http_pool": False,
            "pool_shards": {"api": shards, "long_poll": shards, "transfer": shards},
            "http_version": "HTTP/2 by ALPN on https; plain http is HTTP/1.1",
            "custom_headers": "set" if os.environ.get(HEADERS_ENV) else "unset",
            "checkpoint_call": "snapshot_disk (blocking; no status polling)",
        }

    # -- operations -------------------------------------------------------------------------

    def _wait(self, seconds: float | None = None) -> PollingConfig:
        """A long-poll budget of ``seconds`` (the SDK caps it at interval x max_attempts)."""
        seconds = seconds or self.config.wait_timeout_s
        return PollingConfig(max_attempts=math.ceil(seconds) + 1, timeout_seconds=seconds)

    async def attach(self, client: rl.AsyncRunloop, sandbox_id: str) -> AsyncDevbox:
        return AsyncDevbox(client, sandbox_id)  # a handle only; no I/O

    async def _start(
        self, op: str, labels: dict[str, str], lifetime_s: int, size: dict[str, Any], **source: Any
    ) -> Sandbox:
        launch = {**size, "keep_alive_time_seconds": min(max(1, lifetime_s), MAX_KEEP_ALIVE_S)}

        async def start(client: rl.AsyncRunloop) -> AsyncDevbox:
            view = await client.devboxes.create_and_await_running(
                metadata=labels, launch_parameters=launch, polling_config=self._wait(), **source
            )
            return AsyncDevbox(client, view.id)

        recipe = {"size": size} if size else {}  # the restore repeats the size
        return await self.started(op, start, labels=labels, lifetime_s=lifetime_s, recipe=recipe)

    async def create(self, spec: SandboxSpec) -> Sandbox:
        preset = self.config.resource_size
        with self.refusing(Op.CREATE):
            size = custom_size(spec) if preset == "custom" else {"resource_size_request": preset}
        blueprint = spec.template or self.config.blueprint
        source = {"blueprint_name": blueprint} if blueprint else {}
        return await self._start(Op.CREATE, dict(spec.labels), spec.lifetime_s, size, **source)

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        async with self.calling(sandbox, Op.EXEC) as handle:
            try:
                done = await handle.sdk.cmd.exec(
                    self.shell_line(command), polling_config=self._wait(timeout_s)
                )
            except PollingTimeout as exc:
                execution = getattr(exc.last_value, "execution_id", None)
                if execution:  # Runloop would let it run on: stop it
                    with contextlib.suppress(Exception):
                        await handle.client.devboxes.executions.kill(
                            execution, devbox_id=sandbox.id, kill_process_group=True
                        )
                late = f"command not done after {timeout_s:g} s (killed)"
                raise self.error(errors.OperationTimeout, Op.EXEC, late) from exc
            stdout, stderr = await done.stdout(), await done.stderr()
        return self.exec_result(done.exit_code, stdout, stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:
            await handle.sdk.file.upload(path=path, file=bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            return self.file_bytes(await handle.sdk.file.download(path=path))

    async def destroy(self, sandbox: Sandbox) -> None:
        handle = await self.handle(sandbox, Op.DESTROY)
        try:
            async with self.idempotent(Op.DESTROY, release=handle.client):
                await handle.sdk.shutdown(force="true")
        except errors.ProviderError:
            with contextlib.suppress(Exception):  # refused as it is already gone: destroyed
                view = await self.clients.shared(Op.DESTROY).devboxes.retrieve(sandbox.id)
                if view.status in GONE:
                    return
            raise

    async def list_sandboxes(self, run_id: str) -> list[str]:
        async with self.main(Op.LIST) as client:
            return [
                view.id
                async for view in client.devboxes.list(limit=LIST_PAGE)
                if (view.metadata or {}).get(RUN_LABEL) == run_id and view.status not in GONE
            ]

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        async with self.calling(sandbox, Op.CHECKPOINT) as handle:
            view = await handle.client.devboxes.snapshot_disk(
                sandbox.id,
                name=f"sandbox-bench-{sandbox.id}",
                metadata=dict(handle.labels),
                timeout=self.config.snapshot_timeout_s,
            )
        return self.checkpoint_ref(getattr(view, "id", None), sandbox, handle)  # and its size

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        size = self.saved(ref).get("size") or {}
        return await self._start(Op.RESTORE, labels, lifetime_s, size, snapshot_id=ref.id)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        async with self.main("delete_checkpoint", missing_ok=True) as client:
            await client.devboxes.disk_snapshots.delete(ref.id)

    async def pause(self, sandbox: Sandbox) -> None:
        async with self.calling(sandbox, Op.PAUSE) as handle:
            await handle.sdk.suspend()  # answers at "suspending"
            await handle.sdk.await_suspended(polling_config=self._wait())

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        async with self.calling(sandbox, Op.RESUME) as handle:
            await handle.sdk.resume(polling_config=self._wait())
        return self.holding(sandbox, handle)


__all__ = ["RunloopProvider", "RunloopSettings", "custom_size"]
