"""Northflank adapter over the official API client (``northflank`` 2.1.0, ``AsyncApiClient``).

Northflank has no sandbox object: "in Northflank terms, a sandbox is a service" (its docs). What
each interface operation means here (a sandbox is a **deployment service** of one instance):

* ``create``: ``create.service.deployment`` (``POST /v1/projects/{p}/services/deployment``) with
  the external image ``SandboxSpec.template``, else the ``image`` setting (``ubuntu:24.04``), the
  command ``sleep infinity`` (a container must keep running for exec to reach it), one instance,
  ``tags`` (the labels), ``createOptions.expiryTime`` = ``lifetime_s`` (the API's range 300 s to
  7 days; on expiry Northflank pauses the service, then deletes it), then
  ``get.service.containers`` polled every ``poll_interval_s`` until a container is
  ``TASK_RUNNING``: create returns **when the instance runs** (measured up to one poll interval
  late); a container that ended instead is SandboxCrashed. The POST alone returns at once
  (``PENDING``). If the wait fails the service is deleted. **Sizes are plans only**: the spec's
  cpus/memory_mb become the smallest plan covering both (``plan = "auto"``; 1 vCPU / 512 MiB runs
  on ``nf-compute-100-1``, 1 vCPU / 1 GiB) or the ``plan`` setting; ``disk_mb`` is the ephemeral
  storage (MB, as the API names it). The sandbox id is the service id the API derives from its
  name (``sb-<12 hex>``).
* ``exec``: ``exec.arun_service_command`` (one WebSocket on the API host, ``/v1/command-exec/...``;
  the token goes in its first frame; the exit code comes back as a string). Strings run as
  ``/bin/sh -c <cmd>``, argv lists as given (``shell="none"``), as the image's user in its
  WORKDIR. stdout and stderr are **separate**, text decoded by the server (non-UTF-8 output is
  lossy). ``timeout_s`` bounds the whole call; **the command is not killed** when it passes (the
  API has no kill; the SDK's own timeout is per message).
* ``write_file`` / ``read_file``: **no file API: files go through exec**, one WebSocket session
  each, base64 both ways (``encoding="base64"``, 48 KiB per frame): write runs
  ``sh -c 'mkdir -p "$(dirname "$1")" && cat > "$1" && wc -c < "$1"'`` and checks the byte count;
  read runs ``cat`` (exit 44 when the file is missing: NotFound). Byte-exact; at most
  ``max_file_mb`` (default 64 MiB) each way; needs ``sh``, ``cat``, ``mkdir``, ``dirname`` and
  ``wc`` in the image.
* ``checkpoint``: ``create.container_snapshot`` (``POST .../services/{s}/snapshots``, 202
  ``scheduled``) then ``get.container_snapshot`` polled until ``succeeded`` (``failed`` or
  ``cancelled``: an error). Declared **filesystem**: Northflank does not say whether memory is
  included (its schema names the runtime ``kata``). The service keeps running.
* ``restore``: a **new service** created as above with
  ``deployment.containerSnapshot.restoreFrom=<id>`` (same image, plan and labels); there is no
  in-place restore. ``delete_checkpoint``: ``delete.container_snapshot``; a missing one is fine.
* ``pause``/``resume``/``fork``: **unsupported** (reasons in :data:`UNSUPPORTED`).
* ``destroy``: ``delete.service``, then ``get.service`` polled until 404: it returns when the
  API no longer knows the service, so an asynchronous deletion is measured to its end (the
  DELETE answers at once). A 404 on the DELETE counts as destroyed.
* ``list_sandboxes``: every page of ``list.services`` (100 a page), **filtered client-side** on
  the run label's tag: the API has no tag filter. A label ``k=v`` is the tag ``k-v``, or
  ``h-<sha256 of k=v>`` when that breaks the tag pattern or length.

Client: the token only from ``NORTHFLANK_API_TOKEN``; the endpoint from ``api_url``, else
``NORTHFLANK_API_BASE_URL``, else ``https://api.northflank.com`` (exec uses the same host; both
passed explicitly, so the SDK's ``NF_*`` aliases are not read); the project from ``project_id``,
else ``NORTHFLANK_PROJECT_ID`` (required); ``team_id``/``NORTHFLANK_TEAM_ID`` picks the team
routes. One ``httpx.AsyncClient`` per SDK client (``async_http_client=``: connections are
reused; by default the SDK opens a client, so a TCP+TLS handshake, per call). SDK retries:
:data:`NorthflankProvider.SDK_RETRIES`. Northflank's API allows 1,000 requests an hour by
default (docs): every poll counts, so long runs need a raised limit. Settings:
:class:`NorthflankSettings`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import northflank.endpoint as nf_endpoint
from northflank import AsyncApiClient, ConfigurationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage

from providers import base, errors, sdk
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, on
from providers.settings import setting

TOKEN_ENV = "NORTHFLANK_API_TOKEN"
BASE_URL_ENV = "NORTHFLANK_API_BASE_URL"
PROJECT_ENV = "NORTHFLANK_PROJECT_ID"
TEAM_ENV = "NORTHFLANK_TEAM_ID"
DEFAULT_BASE_URL = "https://api.northflank.com"
#: Deployment plans (vCPU, MiB), docs/v1/application/billing/resource-plans-and-quotas, read
#: 2026-11-29; in that order, so of two equal shapes the first is chosen.
PLANS: dict[str, tuple[float, int]] = {
    "nf-compute-10": (0.1, 256), "nf-compute-20": (0.2, 512), "nf-compute-50": (0.5, 1024),
    "nf-compute-100-1": (1, 1024), "nf-compute-100-2": (1, 2048), "nf-compute-100-4": (1, 4096),
    "nf-compute-200": (2, 4096), "nf-compute-200-4": (2, 4096), "nf-compute-200-8": (2, 8192),
    "nf-compute-200-16": (2, 16384), "nf-compute-400": (4, 8192), "nf-compute-400-16": (4, 16384),
    "nf-compute-800-8": (8, 8192), "nf-compute-800-16": (8, 16384),
    "nf-compute-800-24": (8, 24576), "nf-compute-800-32": (8, 32768),
    "nf-compute-800-40": (8, 40960),
}  # fmt: skip
TAG = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
RUNNING, ENDED = "TASK_RUNNING", frozenset({"TASK_KILLED", "TASK_FAILED", "TASK_FINISHED"})
MISSING_FILE, CHUNK, LIST_PAGE, MIB = 44, 48 * 1024, 100, 1024 * 1024
#: The SDK's own exec timeouts (handshake, per message) lie past ours, so ours decides.
SDK_MARGIN_S = 5.0
WRITE = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && wc -c < "$1"'
READ = f'[ -e "$1" ] || exit {MISSING_FILE}; exec cat -- "$1"'
UNSUPPORTED = {
    str(Op.PAUSE): "Northflank's pause scales the service to zero: processes, memory and the "
    "container's filesystem go (only volume paths survive), and this adapter mounts no volume",
    str(Op.RESUME): "see pause: a resumed service starts from its image, keeping nothing",
    str(Op.FORK): "Northflank has no fork; a container snapshot and new services from it is "
    "checkpoint + restore",
}
#: The SDK's messages for exec frames it cannot read, and for a stream cut short.
MALFORMED = "malformed JSON|non-object frame|unknown frame type|expected a exec init frame"
CUT_SHORT = "completion frame|exec WebSocket error"
TRANSPORT = (
    httpx.TransportError,
    OSError,
    EOFError,
    ConnectionClosed,
    InvalidMessage,
    InvalidHandshake,
)
UNREADABLE = (httpx.DecodingError, binascii.Error, ValueError, KeyError, TypeError, AttributeError)


def plan_for(spec: SandboxSpec) -> str:
    """The smallest plan (fewest vCPU, then least memory) with the spec's cpus and memory."""
    fits = [(c, m, p) for p, (c, m) in PLANS.items() if c >= spec.cpus and m >= spec.memory_mb]
    if not fits:
        raise ValueError(f"{spec.cpus:g} vCPU / {spec.memory_mb} MiB is beyond every plan")
    return min(fits, key=lambda f: (f[0], f[1]))[2]


def label_tag(key: str, value: str) -> str:
    """The tag that carries the label ``key=value`` (tags are words joined by single hyphens,
    3 to 100 characters)."""
    text = f"{key}-{value}"
    if TAG.fullmatch(text) and 3 <= len(text) <= 100:
        return text
    return "h-" + hashlib.sha256(f"{key}={value}".encode()).hexdigest()[:40]


def sdk_retries_off() -> None:
    """The SDK retries every REST call 3 times, 0.5 s apart, on any transport error (a create
    whose answer timed out is sent 4 times) and has no option to stop it. Its retry helper is
    a module global looked up at each call, so it is replaced, once for the process, by the
    same helper with ``retries=0``."""
    if not getattr(nf_endpoint._aretry, "sandbox_bench", False):
        once = functools.partial(nf_endpoint._aretry, retries=0)
        once.sandbox_bench = True  # type: ignore[attr-defined]
        nf_endpoint._aretry = once


@dataclass(frozen=True, kw_only=True)
class NorthflankSettings(sdk.SDKSettings):
    project_id: str | None = setting(None, help=f"project of the sandboxes; else {PROJECT_ENV}")
    team_id: str | None = setting(None, help=f"team (organisation tokens); else {TEAM_ENV}")
    plan: str = setting(
        "auto", choices=("auto", *PLANS),
        help="deployment plan; auto: the smallest plan covering the spec's cpus and memory_mb",
    )  # fmt: skip
    image: str = setting("ubuntu:24.04", help="external image when the spec names no template")
    command: str = setting("sleep infinity", help="the container's command (must keep running)")
    scratch_dir: str = setting("/root", help="writable directory for the workloads' files")
    poll_interval_s: float = setting(
        0.5, unit="s", minimum=0.01, maximum=60,
        help="time between polls of a create, checkpoint or destroy (each poll is a request)",
    )  # fmt: skip
    max_file_mb: int = setting(64, unit="MiB", minimum=1, maximum=1024, help="file size bound")
    request_timeout_s: float = sdk.sdk_timeout(30.0, "HTTP timeout of each REST call")
    wait_timeout_s: float = sdk.sdk_timeout(600.0, "bound on create, checkpoint, destroy waits")
    file_timeout_s: float = sdk.sdk_timeout(300.0, "bound on one file transfer")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scratch_dir.startswith("/"):
            raise ValueError("scratch_dir must be an absolute path")


class NorthflankProvider(sdk.SDKProvider[AsyncApiClient]):
    id = "northflank"
    sdk_packages = ("northflank",)
    required_env = (TOKEN_ENV,)
    Settings = NorthflankSettings
    config: NorthflankSettings
    endpoint_env = BASE_URL_ENV
    default_endpoint = DEFAULT_BASE_URL
    #: What northflank 2.1.0 retries on its own, for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "rest": "off: northflank.endpoint._aretry replaced by itself with retries=0 (the SDK "
        "retries every call 3x, 0.5 s apart, on any httpx error, timeouts included, and has no "
        "option to stop it)",
        "exec_handshake": "a timed-out WebSocket upgrade is retried 3x (0.5 s, 1 s), not "
        "configurable; it cannot happen inside a measured call: the SDK's open timeout is the "
        f"call's timeout + {SDK_MARGIN_S:g} s",
        "waits": "create, checkpoint and destroy poll every poll_interval_s until done",
    }
    ERRORS = (
        on(ConfigurationError, error=errors.AuthError),
        on(error=errors.ProtocolError, message=MALFORMED),
        HTTP_STATUS,
        on(TimeoutError, httpx.TimeoutException, error=errors.OperationTimeout),
        on(httpx.DecodingError, error=errors.ProtocolError),
        on(*TRANSPORT, error=errors.Unavailable),
        on(error=errors.Unavailable, message=CUT_SHORT),
        on(*UNREADABLE, error=errors.ProtocolError),
    )

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        #: The create body of each sandbox (a restore from its checkpoints reuses it).
        self._bodies: dict[str, dict[str, Any]] = {}

    @property
    def project(self) -> str:
        return self.config.project_id or os.environ.get(PROJECT_ENV) or ""

    @property
    def team(self) -> str | None:
        return self.config.team_id or os.environ.get(TEAM_ENV) or None

    def _where(self, service: str | None = None) -> dict[str, Any]:
        where = {"project_id": self.project, "team_id": self.team}
        return {**where, "service_id": service} if service else where

    def _fail(self, kind: type[errors.ProviderError], op: str, message: str) -> Exception:
        return kind(message, provider=self.id, operation=str(op))

    async def open(self) -> None:
        if not self.project:
            raise self._fail(errors.AuthError, "open", f"set {PROJECT_ENV} (or providers."
                             "northflank.project_id) to use northflank")  # fmt: skip
        await super().open()

    def new_client(self) -> AsyncApiClient:
        sdk_retries_off()
        http = httpx.AsyncClient(timeout=self.config.request_timeout_s)
        sdk.observe_httpx(http)  # for Retry-After: the SDK's errors drop the headers
        return AsyncApiClient(
            api_token=os.environ.get(TOKEN_ENV), base_url=self.endpoint,
            timeout=self.config.request_timeout_s, async_http_client=http,
        )  # fmt: skip

    async def close_client(self, client: AsyncApiClient) -> None:
        await client._async_client.aclose()  # the httpx client new_client() handed it

    def capabilities(self) -> base.Capabilities:
        plan = self.config.plan
        return base.Capabilities(
            operations=base.REQUIRED_OPS | {Op.CHECKPOINT, Op.RESTORE},
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            isolation="Northflank service: a microVM-backed container (Kata Containers with "
            "Cloud Hypervisor or Firecracker on Northflank's cloud, per its docs; gVisor for GPU)",
            scratch_dir=self.config.scratch_dir,
            unsupported=dict(UNSUPPORTED),
            notes={
                "create": "POST + containers polled until TASK_RUNNING (poll_interval_s apart)",
                "resources": (f"plan {plan}; the spec is not sent" if plan != "auto" else "the "
                "smallest plan covering cpus and memory_mb (1 vCPU / 512 MiB: nf-compute-100-1)"),
                "stderr": "separate from stdout",
                "exec": "one WebSocket per command; strings by /bin/sh -c; server-decoded text "
                "(non-UTF-8 lossy); not killed on timeout (no kill in the API)",
                "files": f"through exec, base64 over one WebSocket, at most "
                f"{self.config.max_file_mb} MiB; byte-exact",
                "checkpoint": "container snapshot, polled until succeeded; memory undocumented",
                "restore": "a new service with containerSnapshot.restoreFrom",
                "destroy": "DELETE, then GET polled until 404",
                "list": "every page of list.services, filtered client-side on the run tag",
                "lifetime": "expiryTime = lifetime_s (300 s to 7 days), then paused and deleted",
                "rate_limit": "1,000 API requests an hour by default (Northflank docs)",
            },
        )  # fmt: skip

    def sdk_environment(self) -> dict[str, Any]:
        return {
            "project": self.project, "team": self.team, "plan_rule": self.config.plan,
            "plan_for_default_spec": plan_for(SandboxSpec()),
            "plans": {pid: {"vcpu": c, "memory_mib": m} for pid, (c, m) in PLANS.items()},
            "rest_retries_patched": bool(getattr(nf_endpoint._aretry, "sandbox_bench", False)),
            "http_client": "one httpx.AsyncClient per SDK client (async_http_client=)",
        }  # fmt: skip

    def http_status(self, chain: Any, observed: Any) -> tuple[int | None, float | None]:
        status, retry = super().http_status(chain, observed)
        if status is not None and retry is None and observed.status == status:
            retry = sdk.retry_after_s(observed.retry_after)
        return status, retry

    def sandbox_id(self, sdk: Any) -> str:
        return str(sdk)  # the SDK has no service object: a handle holds the service id

    async def attach(self, client: AsyncApiClient, sandbox_id: str) -> str:
        return sandbox_id

    # -- helpers --------------------------------------------------------------------------

    def _data(self, answer: Any, op: str) -> dict[str, Any]:
        """The answer's ``data`` object (the SDK returns None for a body it cannot parse)."""
        data = getattr(answer, "data", None)
        if not isinstance(data, dict):
            raise self._fail(errors.ProtocolError, op, f"answer without data ({data!r:.40})")
        return data

    async def _until(self, done: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
        """Poll ``done`` ``poll_interval_s`` apart until it holds; TimeoutError after
        ``timeout_s``. The API offers nothing to wait on but polls."""
        async with asyncio.timeout(timeout_s):
            while not await done():  # noqa: ASYNC110 - a remote state: nothing to wait on
                await asyncio.sleep(self.config.poll_interval_s)

    async def _start(self, op: str, labels: dict[str, str], lifetime_s: int,
                     body: dict[str, Any]) -> Sandbox:  # fmt: skip
        body = {**body, "name": f"sb-{secrets.token_hex(6)}",
                "tags": sorted({label_tag(k, v) for k, v in labels.items()}),
                "createOptions": {"expiryTime": min(max(lifetime_s, 300), 604_800)}}  # fmt: skip

        async def start(client: AsyncApiClient) -> str:
            made = await client.create.service.deployment(**self._where(), data=body)
            service = self._data(made, op).get("id")
            if not isinstance(service, str) or not service:
                raise self._fail(errors.ProtocolError, op, "create answer carries no id")

            async def running() -> bool:
                found = await client.get.service.containers(**self._where(service))
                states = {c.get("status") for c in self._data(found, op)["containers"]}
                if states and RUNNING not in states and states <= ENDED:
                    ended = ", ".join(sorted(states))
                    raise self._fail(errors.SandboxCrashed, op, f"its container ended ({ended})")
                return RUNNING in states

            try:
                await self._until(running, self.config.wait_timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):  # it bills while it exists
                    await client.delete.service(**self._where(service))
                raise
            return service

        sandbox = await self.started(op, start, labels=labels, lifetime_s=lifetime_s)
        self._bodies[sandbox.id] = body
        return sandbox

    async def _session(self, sandbox: Sandbox, op: str, script: str, path: str,
                       data: bytes = b"") -> tuple[int | None, bytes, bytes]:  # fmt: skip
        """Run ``sh -c script sh path`` in one base64 exec session fed ``data``: exit code,
        stdout, stderr; each frame decoded on its own, as the SDK's own file copy does."""
        handle, limit = await self.handle(sandbox, op), self.config.max_file_mb * MIB
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async with self.translating(op), asyncio.timeout(self.config.file_timeout_s):
            session = await handle.client.exec.aopen_service_session(
                **self._where(sandbox.id), command=["sh", "-c", script, "sh", path],
                shell="none", tty=False, encoding="base64",
            )  # fmt: skip
            async with session:
                for start in range(0, len(data), CHUNK):
                    await session.send(base64.b64encode(data[start : start + CHUNK]).decode())
                await session.send_eof()
                async for chunk in session:
                    out[chunk.stream].append(base64.b64decode(chunk.data, validate=True))
                    if sum(map(len, out["stdout"])) > limit:
                        raise self._fail(errors.ProviderError, op, f"{path}: over max_file_mb")
            code = session.result.exit_code if session.result else None
        return code, b"".join(out["stdout"]), b"".join(out["stderr"])

    # -- operations -------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Sandbox:
        try:
            plan = plan_for(spec) if self.config.plan == "auto" else self.config.plan
        except ValueError as exc:
            raise self._fail(errors.ProviderError, Op.CREATE, str(exc)) from exc
        deployment: dict[str, Any] = {
            "instances": 1, "external": {"imagePath": spec.template or self.config.image},
            "docker": {"configType": "customCommand", "customCommand": self.config.command},
        }  # fmt: skip
        if spec.disk_mb:
            deployment["storage"] = {"ephemeralStorage": {"storageSize": spec.disk_mb}}
        body = {"billing": {"deploymentPlan": plan}, "deployment": deployment}
        return await self._start(Op.CREATE, dict(spec.labels), spec.lifetime_s, body)

    async def exec(self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
                   ) -> base.ExecResult:  # fmt: skip
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        client = (await self.handle(sandbox, Op.EXEC)).client
        async with self.translating(Op.EXEC):
            try:
                async with asyncio.timeout(timeout_s):
                    done = await client.exec.arun_service_command(
                        **self._where(sandbox.id), command=argv, shell="none", encoding="utf-8",
                        timeout=timeout_s + SDK_MARGIN_S,
                    )  # fmt: skip
            except TimeoutError as exc:
                late = f"command not done after {timeout_s:g} s (left running: no kill in the API)"
                raise self._fail(errors.OperationTimeout, Op.EXEC, late) from exc
        return self.exec_result(done.exit_code, done.stdout.encode(), done.stderr.encode())

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        if len(data) > self.config.max_file_mb * MIB:
            raise self._fail(errors.ProviderError, Op.WRITE_FILE, f"{path}: over max_file_mb")
        code, out, err = await self._session(sandbox, Op.WRITE_FILE, WRITE, path, bytes(data))
        if code != 0 or out.strip() != str(len(data)).encode():
            wrote = f"{path}: exit {code}, {out!r:.30} of {len(data)} bytes written: {err!r:.200}"
            raise self._fail(errors.ProviderError, Op.WRITE_FILE, wrote)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        code, out, err = await self._session(sandbox, Op.READ_FILE, READ, path)
        if code == MISSING_FILE:
            raise self._fail(errors.NotFound, Op.READ_FILE, f"{path} does not exist")
        if code != 0:
            raise self._fail(
                errors.ProviderError, Op.READ_FILE, f"{path}: exit {code}: {err!r:.200}"
            )
        return out

    async def destroy(self, sandbox: Sandbox) -> None:
        handle = await self.handle(sandbox, Op.DESTROY)
        self._bodies.pop(sandbox.id, None)

        async def gone() -> bool:
            await handle.client.get.service(**self._where(sandbox.id))  # 404 (NotFound) ends it
            return False

        async with self.idempotent(Op.DESTROY, release=handle.client):
            self._data(await handle.client.delete.service(**self._where(sandbox.id)), Op.DESTROY)
            await self._until(gone, self.config.wait_timeout_s)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        client, tag = self.clients.shared(Op.LIST), label_tag(RUN_LABEL, run_id)
        async with self.translating(Op.LIST):
            pages = await client.list.services.all(**self._where(), per_page=LIST_PAGE)
            services = self._data(pages, Op.LIST)["services"]
            return [s["id"] for s in services if tag in (s.get("tags") or ())]

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        handle = await self.handle(sandbox, Op.CHECKPOINT)
        client, op = handle.client, Op.CHECKPOINT
        async with self.translating(op):
            made = await client.create.container_snapshot(**self._where(sandbox.id), data={})
            snapshot = self._data(made, op)["id"]

            async def taken() -> bool:
                got = await client.get.container_snapshot(snapshot_id=snapshot, team_id=self.team)
                state = self._data(got, op)["state"]
                if state in ("failed", "cancelled"):
                    raise self._fail(
                        errors.ProviderError, op, f"snapshot {state}: {got.data!r:.200}"
                    )
                return state == "succeeded"

            await self._until(taken, self.config.wait_timeout_s)
        ref = self.checkpoint_ref(snapshot, sandbox, handle)
        body = self._bodies.get(sandbox.id)
        return base.CheckpointRef(id=ref.id, provider=self.id, sandbox_id=sandbox.id,
                                  native={**ref.native, "body": body})  # fmt: skip

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        body = dict((ref.native or {}).get("body") or {})
        if not body:
            raise self._fail(errors.ProviderError, Op.RESTORE, "not a checkpoint of this run")
        deployment = {**body["deployment"], "containerSnapshot": {"restoreFrom": ref.id}}
        body["deployment"] = deployment
        return await self._start(Op.RESTORE, labels, lifetime_s, body)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        client = self.clients.shared("delete_checkpoint")
        async with self.idempotent("delete_checkpoint"):
            await client.delete.container_snapshot(snapshot_id=ref.id, team_id=self.team)


__all__ = ["NorthflankProvider", "NorthflankSettings", "label_tag", "plan_for"]
