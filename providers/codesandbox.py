"""CodeSandbox by Together: Together Sandbox over its official async SDK (together-sandbox 4.1.1).

What each operation means (a sandbox is a VM, ``starting -> running -> terminating ->
terminated``; a terminated one never runs again):

* ``create``: ``sdk.sandboxes.create(snapshot_id=|snapshot_alias=, cpu, memory_bytes, ttl, tags)``
  = ``POST /v1/sandboxes`` (201) + ``POST .../{id}/wait`` (held until it settles): returns once
  it runs, with its agent (the in-VM API, a second host). No default image: the snapshot is
  ``SandboxSpec.template``, else the ``snapshot`` setting (default alias ``sandbox-bench@base``,
  see the README), else one ``open()`` builds (unmeasured) from the ``image`` setting. cpu = spec
  cpus; memory = spec memory_mb, at least 1 GiB per vCPU (the API's least); disk not settable;
  ``ttl=lifetime_s``; labels as tags; ephemeral. A create failing after its POST leaves a sandbox
  the SDK names only in its message: the run label finds it (the sweep).
* ``exec``: ``execs.create(argv[0], argv[1:])`` (``POST {agent}/api/v1/execs``) + ``execs.
  stream_output(id)`` (SSE) to the event with the exit code, the calls ``execs.exec()`` makes.
  Strings run as ``/bin/sh -c <cmd>``, argv as given; user 1000:1000, the image's WORKDIR.
  stdout and stderr are **separate**, split by each event's ``type`` (``exec()`` joins them;
  their relative order is lost); output is text. ``timeout_s`` bounds both calls; on expiry the
  exec is killed (``DELETE {agent}/api/v1/execs/{id}``, in the background).
* ``write_file``: ``files.create(path, bytes)`` (raw body; the answer echoes it). ``read_file``:
  the generated call ``files.read()`` wraps, keeping ``encoding`` (which ``files.read()`` drops):
  ``utf-8`` text re-encoded, ``base64`` strictly decoded. Byte-exact.
* ``checkpoint``/``restore``/``fork``: **unsupported**: no snapshot of a running sandbox (only
  terminating takes one), no live fork.
* ``pause`` (the vendor's hibernate): ``sdk.sandboxes.terminate(id, snapshot={memory, ttl,
  tags})`` + wait: the sandbox **ends**; its disk, and with ``pause_mode="memory"`` (default) its
  memory and processes, become snapshot ``sandbox:<id>`` (ttl ``lifetime_s``, the run's tags).
  ``resume``: ``create(snapshot_alias="sandbox:<id>", ...)``: a **new sandbox, new id**, processes
  intact (memory; status_reason ``restored``) or cold-booted from disk (``disk``); the new handle
  is returned. PauseKind FREEZE/STOP_START says what survives; the new id is in the notes.
* ``destroy``: ``terminate(id, snapshot=None)`` + wait (already terminated counts as done); for
  a sandbox this adapter paused, its snapshot is retired too (``get_by_alias`` +
  ``retire_by_id``); ``close()`` retires any left. ``list_sandboxes``: ``sandboxes.list(tags=
  {RUN_LABEL: run_id}, statuses=[starting, running, recovering])``, every page.

Client: ``TogetherSandbox(api_key, base_url, retry=RetryConfig(max_attempts=1))``; the key only
from ``TOGETHER_API_KEY``; the endpoint from ``api_url``, else ``TOGETHER_BASE_URL``, else the
SDK's default. Retries off (``SDK_RETRIES``). The SDK has no timeouts: each operation runs in
``asyncio.timeout(call_timeout_s)``, exec in ``timeout_s``. The exec stream drops HTTP errors:
an httpx hook on both clients notes each answer's status for the error boundary (observe only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from together_sandbox import CreateImageSnapshotParams, HttpError, RetryConfig, TogetherSandbox
from together_sandbox._utils import _call_api  # the facade's own error and retry wrapper
from together_sandbox.sandbox.api.files.read_file import asyncio_detailed as read_file_api

from providers import base, errors, sdk
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, Handle, SDKProvider, SDKSettings, observe_httpx, on
from providers.settings import setting

API_KEY_ENV = "TOGETHER_API_KEY"
BASE_URL_ENV = "TOGETHER_BASE_URL"
DEFAULT_BASE_URL = "https://api.bartender.codesandbox.io"
DEFAULT_SNAPSHOT = "sandbox-bench@base"
RETRY = RetryConfig(max_attempts=1)
GIB = 1024**3
ALIVE = ("starting", "running", "recovering")
KILL_TIMEOUT_S = 10.0
#: The image build in open(): its bound, and its snapshot's ttl and tags.
BUILD_TIMEOUT_S, IMAGE_TTL_S, IMAGE_TAGS = 1800.0, 86_400, {"sandbox-bench": "image"}
NO_CHECKPOINT = "no snapshot of a running sandbox: terminating takes one (pause/resume does)"
NO_FORK = "no live fork: the parent must terminate with a snapshot, then N creates from it"


@dataclass(frozen=True, kw_only=True)
class CodeSandboxSettings(SDKSettings):
    EXCLUSIVE = (("snapshot", "image"),)
    snapshot: str | None = setting(None, help=f"snapshot UUID or alias; else {DEFAULT_SNAPSHOT}")
    image: str | None = setting(None, help="image: open() builds a snapshot of it (unmeasured)")
    pause_mode: str = setting(
        "memory", help="memory: hibernate keeps disk, memory and processes; disk: files only",
        choices=("memory", "disk"),
    )  # fmt: skip
    scratch_dir: str = sdk.scratch_dir_setting("/tmp")
    call_timeout_s: float = sdk.sdk_timeout(300.0, "bound on each operation (the SDK has none)")


class CodeSandboxProvider(SDKProvider[TogetherSandbox]):
    id = "codesandbox"
    sdk_packages = ("together-sandbox",)
    required_env = (API_KEY_ENV,)
    Settings = CodeSandboxSettings
    config: CodeSandboxSettings
    endpoint_env = BASE_URL_ENV
    open_timeout_s = BUILD_TIMEOUT_S  # the image build's
    CLOSE = "close"
    default_endpoint = DEFAULT_BASE_URL
    #: What together-sandbox 4.1.1 retries and bounds on its own, for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "calls": "off: RetryConfig(max_attempts=1) (the SDK's default, also for retry=None, is 3 "
        "attempts on 408/429/5xx and transport errors, create and exec included)",
        "exec_stream": "none: the SSE output stream is never retried",
        "image_builder": "image setting only, in open() (unmeasured): submit and status are "
        "tried 3 times, the log stream reconnects; not configurable",
    }
    ERRORS = (
        HTTP_STATUS,
        on(TimeoutError, httpx.TimeoutException, error=errors.OperationTimeout),
        on(httpx.TransportError, ConnectionError, error=errors.Unavailable),
        on(error=errors.NotFound, message="client has been closed"),  # we ended the sandbox
        on(error=errors.QuotaOrRateLimited, message="out_of_capacity"),
        on(error=errors.Unavailable, message="failed to start"),
        on(error=errors.SandboxCrashed, message=r"could not be recovered|being auto-recovered|"
           r"status_reason: '(crashed|oom_killed|evicted|node_lost|cluster_lost)'"),
        # Strict parsing: a missing key, bad UUID/enum/JSON, or 200 where 201 is documented.
        on(KeyError, ValueError, TypeError, error=errors.ProtocolError),
        on(error=errors.ProtocolError, message=r"'NoneType' object has no attribute|without an "
           r"exit code|no agent connection details|still in transient state"),
    )  # fmt: skip

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._hibernated: set[str] = set()  # sandboxes whose pause left a snapshot
        self._image_snapshot: str | None = None
        self._kills: set[asyncio.Task[Any]] = set()

    def new_client(self) -> TogetherSandbox:
        key = os.environ.get(API_KEY_ENV)
        client = TogetherSandbox(api_key=key, base_url=self.endpoint, retry=RETRY)
        observe_httpx(client._api_client.get_async_httpx_client())  # no public handle
        return client

    async def setup(self, client: TogetherSandbox) -> None:
        if self.config.image:
            build = CreateImageSnapshotParams(self.config.image, ttl=IMAGE_TTL_S, tags=IMAGE_TAGS)
            made = await client.snapshots.create(build)
            self._image_snapshot = made.snapshot_id

    async def close(self) -> None:
        leftovers = [f"sandbox:{s}" for s in sorted(self._hibernated)] + [self._image_snapshot]
        for key in filter(None, leftovers):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(KILL_TIMEOUT_S):
                    await self._retire(self.clients.main, key)
        self._hibernated.clear()
        for task in list(self._kills):
            task.cancel()
        await super().close()

    def capabilities(self) -> base.Capabilities:
        memory = self.config.pause_mode == "memory"
        return self.capable(
            pause_kind=base.PauseKind.FREEZE if memory else base.PauseKind.STOP_START,
            isolation="a VM per sandbox (Together Sandbox; CodeSandbox's microVM platform)",
            scratch_dir=self.config.scratch_dir,
            unsupported={Op.CHECKPOINT: NO_CHECKPOINT, Op.RESTORE: NO_CHECKPOINT, Op.FORK: NO_FORK},
            notes={
                "stderr": "separate: split by the agent's SSE event type; their order is lost",
                "exec": "POST execs + SSE stream; strings as /bin/sh -c <cmd>; user 1000:1000; "
                "output is text; killed (DELETE) when timeout_s passes",
                "resources": "cpu = spec cpus (0.1-16); memory = spec memory_mb, at least 1 GiB "
                "per vCPU; disk not settable",
                "pause": f"terminate(snapshot={{memory: {str(memory).lower()}}}): the sandbox "
                "ENDS, snapshot sandbox:<id> keeps "
                + ("disk, memory and processes" if memory else "the disk only"),
                "resume": "create(snapshot_alias='sandbox:<id>'): a NEW sandbox with a NEW id, "
                + ("processes intact" if memory else "cold-booted from the disk"),
                "destroy": "terminate(snapshot=None) until terminated; a paused sandbox's "
                "snapshot is retired with it",
                "retries": "off (see environment sdk_retries)",
            },
        )

    def http_status(self, chain: Any, observed: sdk.Observed) -> tuple[int | None, float | None]:
        status, retry = super().http_status(chain, observed)
        if status is not None and retry is None and observed.status == status:
            retry = sdk.retry_after_s(observed.retry_after)  # HttpError keeps no headers
        return status, retry

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _agent(native: Any) -> Any:
        return native._sandbox_client  # the facade keeps the agent client private

    def _observed(self, native: Any) -> Any:
        observe_httpx(self._agent(native).get_async_httpx_client())
        return native

    @staticmethod
    def _source(ref: str) -> dict[str, str]:
        try:
            return {"snapshot_id": str(uuid.UUID(ref))}
        except ValueError:
            return {"snapshot_alias": ref.removeprefix("@")}

    async def _start(
        self, operation: str, labels: dict[str, str], lifetime_s: int, params: dict[str, Any]
    ) -> Sandbox:
        async def start(client: TogetherSandbox) -> Any:
            return self._observed(
                await client.sandboxes.create(ttl=lifetime_s, tags=labels, **params)
            )

        return await self.started(operation, start, labels=labels, lifetime_s=lifetime_s)

    async def _terminate(self, client: TogetherSandbox, sandbox_id: str, snapshot: Any) -> None:
        try:
            await client.sandboxes.terminate(sandbox_id, snapshot=snapshot)
        except HttpError as exc:  # the API's answer for an ended sandbox is not documented
            ended = exc.status in (400, 409) and await client.sandboxes.get(sandbox_id)
            if not ended or getattr(ended.status, "value", "") != "terminated":
                raise

    @staticmethod
    async def _retire(client: Any, key: str) -> None:
        if key.startswith("sandbox:"):
            key = str((await client.snapshots.get_by_alias(key)).id)
        await client.snapshots.retire_by_id(key)

    # -- operations ---------------------------------------------------------------------------

    async def attach(self, client: TogetherSandbox, sandbox_id: str) -> Any:
        return self._observed(await client.sandboxes.connect(sandbox_id))

    async def create(self, spec: SandboxSpec) -> Sandbox:
        ref = spec.template or self._image_snapshot or self.config.snapshot or DEFAULT_SNAPSHOT
        cpu = float(spec.cpus)
        memory = max(int(spec.memory_mb) * 1024 * 1024, math.ceil(cpu * GIB))
        params = {**self._source(ref), "cpu": cpu, "memory_bytes": memory}
        return await self._start(Op.CREATE, dict(spec.labels), max(1, spec.lifetime_s), params)

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        argv = self.argv(command)
        execs = (await self.handle(sandbox, Op.EXEC)).sdk.execs
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        exec_id, exit_code = None, None
        async with self.translating(Op.EXEC, timeout_s=timeout_s):
            try:
                exec_id = (await execs.create(argv[0], argv[1:], autostart=True)).id
                async with contextlib.aclosing(execs.stream_output(exec_id)) as events:
                    async for event in events:
                        kind = "stderr" if event.get("type") == "stderr" else "stdout"
                        out[kind].append(str(event.get("output") or ""))
                        if isinstance(event.get("exitCode"), int):
                            exit_code = event["exitCode"]
                            break
            except BaseException:  # timeout or cancellation: kill what the caller gave up on
                if exec_id is not None and exit_code is None:
                    task = asyncio.ensure_future(self._kill(execs, exec_id))
                    self._kills.add(task)
                    task.add_done_callback(self._kills.discard)
                raise
            if exit_code is None:
                raise RuntimeError("exec output stream ended without an exit code")
        return self.exec_result(exit_code, "".join(out["stdout"]), "".join(out["stderr"]))

    @staticmethod
    async def _kill(execs: Any, exec_id: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await execs.delete(exec_id)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:  # within call_timeout_s
            await handle.sdk.files.create(path, bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            agent = self._agent(handle.sdk)
            read = lambda: read_file_api(path, client=agent)  # noqa: E731
            answer = await _call_api("sandbox.read_file", read, RETRY)
            encoding = getattr(answer.encoding, "value", answer.encoding)
            if encoding == "utf-8":
                return answer.content.encode()
            if encoding == "base64":  # strict: bad base64 is a binascii.Error (a ValueError)
                return base64.b64decode(answer.content, validate=True)
            raise ValueError(f"read answered with encoding {encoding!r}")

    async def destroy(self, sandbox: Sandbox) -> None:
        native = sandbox.native if isinstance(sandbox.native, Handle) else None
        client = native.client if native else self.clients.shared(Op.DESTROY)
        async with self.idempotent(Op.DESTROY, release=native.client if native else None):
            await self._terminate(client, sandbox.id, None)
            if native is not None:
                await native.sdk.close()
            if sandbox.id in self._hibernated:
                with contextlib.suppress(errors.NotFound):
                    async with self.translating(Op.DESTROY):
                        await self._retire(client, f"sandbox:{sandbox.id}")
                self._hibernated.discard(sandbox.id)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        async with self.main(Op.LIST) as client:
            page = await client.sandboxes.list(tags={RUN_LABEL: run_id}, statuses=list(ALIVE))
            return [str(item.id) async for item in page]

    async def pause(self, sandbox: Sandbox) -> None:
        memory = self.config.pause_mode == "memory"
        async with self.calling(sandbox, Op.PAUSE) as handle:
            snapshot = {"memory": memory, "ttl": handle.lifetime_s, "tags": dict(handle.labels)}
            self._hibernated.add(sandbox.id)  # before the call: its snapshot may exist anyway
            await handle.client.sandboxes.terminate(sandbox.id, snapshot=snapshot)
        with contextlib.suppress(Exception):
            await handle.sdk.close()  # the agent is gone with the VM

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        """A new sandbox from the pause's snapshot, sized and labelled as ``sandbox`` was (its
        handle from pause() is needed: a terminated sandbox cannot be attached to)."""
        handle = await self.handle(sandbox, Op.RESUME)
        model = handle.sdk.vm_info
        params = {"snapshot_alias": f"sandbox:{sandbox.id}", "cpu": model.cpu}
        params["memory_bytes"] = model.memory_bytes
        return await self._start(Op.RESUME, dict(handle.labels), handle.lifetime_s, params)


__all__ = ["CodeSandboxProvider", "CodeSandboxSettings"]
