"""Vercel Sandbox adapter over the official async SDK (``vercel-sandbox`` 0.10.0, SandboxClient).

A Vercel Sandbox (a Firecracker microVM) is named and runs one *session* at a time; commands
and files go to the current session by id. Measured calls go through the session handle from
create or resume (``sandbox.current_session``), which never resumes on its own: the SDK's
sandbox-level calls would answer a 410 with a hidden ``GET ?resume=true`` and a replay.

* ``create``: ``create_sandbox(name=, tags=labels, persistent=, execution_time_limit=lifetime_s,
  snapshot_expiration=1 day[, image=template][, resources=SandboxResources(vcpus)])`` (``POST
  /v3/sandboxes``), then the SDK polls ``GET /v2/sandboxes/{name}`` every **0.5 s** while
  ``pending``: create returns at ``running``, quantised by that sleep. ``running`` is not
  readiness: Vercel's own reproduction (vercel-labs/sandbox-benchmarking, TS SDK) saw the first
  command wait 1.5-33 s server-side after create; the runner's ``first_exec`` holds that. The
  name (the id in every later call) is ``sb-<run fragment>-<8 hex>``. Size: 2 vCPU at 2 GB each
  (the service default) or the ``vcpus`` setting; the spec's cpus/memory_mb/disk_mb are not sent.
* ``exec``: ``session.run_process(cmd, args, capture_output=True, kill_after=timeout_s+5)``
  (``POST .../sessions/{sid}/cmd?wait=true``, an NDJSON stream sent with ``Connection: close``:
  the next request opens a new TCP/TLS connection). A string runs as ``sh -c``, argv without a
  shell, in ``/vercel/sandbox`` as ``vercel-sandbox``. stdout and stderr are **separate**, as
  JSON text (non-UTF-8 output is not byte-exact). The stream has no client timeout: ``timeout_s``
  is enforced here (OperationTimeout) and the service kills the process 5 s later.
* ``write_file`` / ``read_file``: ``session.fs.write_bytes`` (``POST .../fs/write``, a gzip tar;
  parents created) and ``session.fs.read_bytes`` (``POST .../fs/read``, raw bytes). Byte-exact.
* ``checkpoint``: ``session.snapshot(expiration=1 day)`` (``POST .../snapshot``): the
  **filesystem only**. Vercel's docs say a snapshot shuts the sandbox down: if the answer's
  session is not running, checkpoint resumes it (a new session from that snapshot: files kept,
  processes gone) before returning, so the source is usable again; the measure includes it.
* ``restore``: ``create_sandbox(source=SnapshotSource(id))``: a **new sandbox** with the
  original's tags, polled like create. ``delete_checkpoint``: ``snapshot.delete()``.
* ``pause`` / ``resume``: ``sandbox.stop()`` (``POST .../stop``) / ``sandbox.session()``
  (``GET /v2/sandboxes/{name}?resume=true``, a new session id, not polled). With ``persistent``
  (default) stop snapshots the filesystem and resume boots from it: **files kept, processes and
  memory lost** (STOP_START); without it nothing survives, so pause/resume are unsupported.
* ``fork``: ``session.snapshot()`` (resuming the parent if that stopped it), then ``count``
  concurrent ``fork_sandbox(source_sandbox=name, name=, tags=labels)`` (``POST .../{name}/fork``,
  polled like create). Vercel seeds a fork from the source's **latest snapshot**, never its live
  state (the image if it has none): the snapshot first gives the children the parent's current
  files; no processes.
* ``destroy``: ``sandbox.destroy(delete_orphan_snapshots=True)`` (``DELETE /v2/sandboxes/{name}``,
  also its snapshots no other sandbox uses); 404 counts as destroyed. A sandbox the harness loses
  stops after ``lifetime_s`` but is not deleted: the leak sweep finds it by tag.
* ``list_sandboxes``: ``query_sandboxes(SandboxQueryByName(tag=TagFilter(RUN_LABEL, run_id)))``.

Client: the SDK reads **no endpoint variable** (only ``SandboxServiceOptions(base_url=)``,
default ``https://vercel.com/api``): the adapter passes the ``api_url`` setting, else our
``VERCEL_SANDBOX_API_URL``, else that default. Credentials come from the adapter's own
``credentials_factory``: ``VERCEL_TOKEN``, ``VERCEL_TEAM_ID``, ``VERCEL_PROJECT_ID`` only, since
the SDK's resolver lets ``VERCEL_OIDC_TOKEN`` (or its file) win silently (environment() says
when one was set and ignored). Region: the ``region`` setting, else ``VERCEL_REGION``. Retries:
none on the control plane (:data:`VercelProvider.SDK_RETRIES`).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import httpx2
import vercel.sandbox as vs
from vercel._internal.core.detect_agent import detect_agent_name

from providers import base, errors
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, Handle, SDKProvider, SDKSettings, garbled, on, sdk_timeout
from providers.settings import setting

CREDENTIALS = ("VERCEL_TOKEN", "VERCEL_TEAM_ID", "VERCEL_PROJECT_ID")
API_URL_ENV = "VERCEL_SANDBOX_API_URL"
OIDC_ENVS = ("VERCEL_OIDC_TOKEN", "VERCEL_OIDC_TOKEN_FILE")
TELEMETRY_OFF_ENVS = ("VERCEL_TELEMETRY_DISABLED", "VERCEL_SANDBOX_TELEMETRY_DISABLED")
#: The sandbox's default working directory: writable, and in every snapshot.
SCRATCH_DIR = "/vercel/sandbox"
#: The shortest snapshot lifetime the SDK accepts (0 means never): leftovers go in a day.
SNAPSHOT_EXPIRATION = timedelta(days=1)
KILL_GRACE_S = 5.0  # how long after the client's deadline the service kills a command
LIST_PAGE = 50  # the SDK refuses more
CLOSED = "sandbox_stream_closed"  # the API lost its connection to the sandbox
NO_PAUSE = "persistent = false: a stopped session's filesystem is discarded, nothing survives"


@dataclass(frozen=True, kw_only=True)
class VercelSettings(SDKSettings):
    persistent: bool = setting(
        True, help="stop snapshots the filesystem and resume restores it (needed for pause)"
    )
    vcpus: int | None = setting(
        None, help="vCPUs, 1 or even (2 GB each); else the service default, 2", minimum=1,
        maximum=32,
    )  # fmt: skip
    region: str | None = setting(None, help="region for new sandboxes; else VERCEL_REGION")
    request_timeout_s: float = sdk_timeout(60.0, "the SDK's HTTP timeout (control plane)")
    file_timeout_s: float = sdk_timeout(300.0, "the SDK's timeout of a file read or write")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vcpus is not None and self.vcpus > 1 and self.vcpus % 2:
            raise ValueError("vcpus must be 1 or an even number")


def sandbox_name(run_id: str) -> str:
    """``sb-<run fragment>-<8 hex>``: lowercase letters, digits and hyphens, 52 at most."""
    fragment = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:40].strip("-") or "run"
    return f"sb-{fragment}-{secrets.token_hex(4)}"


async def _credentials() -> vs.SandboxCredentials:
    """The three variables, read at each call (as the SDK's own factory is); never OIDC."""
    token, team, project = (os.environ.get(name, "") for name in CREDENTIALS)
    if missing := [n for n, v in zip(CREDENTIALS, (token, team, project), strict=True) if not v]:
        raise vs.SandboxCredentialsError(f"set {', '.join(missing)} to use vercel")
    return vs.SandboxCredentials(token=token, team_id=team, project_id=project)


class VercelProvider(SDKProvider[vs.SandboxClient]):
    id = "vercel"
    sdk_packages = ("vercel-sandbox",)
    required_env = CREDENTIALS
    Settings = VercelSettings
    config: VercelSettings
    endpoint_env = API_URL_ENV
    ID_ATTRIBUTE = "name"  # the name is the id in every later call
    CLOSE = "aclose"
    default_endpoint = "https://vercel.com/api"
    #: What vercel-sandbox 0.10.0 retries on its own, for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "control_plane": "none: one attempt per call (httpx2 transport retries=0, no retry "
        "policy in the sandbox service); 429 and 5xx are raised at once",
        "exec_stream_fallback": "an exec stream that breaks after the process started is "
        "followed on the logs and wait endpoints (2 retries, 0.2 then 0.4 s), never rerun",
        "lifecycle_recovery": "sandbox-level calls resume on 410 and replay once; unused: "
        "measured calls go through the pinned session",
        "create_poll": "create, restore, fork: GET every 0.5 s while pending, no deadline",
    }
    ERRORS = (
        on(vs.SandboxCredentialsError, error=errors.AuthError),
        # Answers the SDK could not read: not JSON, not the expected shape, an NDJSON stream
        # that ended early, an undecodable body or unparseable headers (not a dropped peer).
        on(vs.SandboxResponseError, httpx2.DecodingError, error=errors.ProtocolError),
        on(httpx2.RemoteProtocolError, error=errors.ProtocolError, when=garbled),
        HTTP_STATUS,
        on(vs.SandboxPathNotFoundError, error=errors.NotFound),
        on(vs.SandboxTerminalStateError, error=errors.SandboxCrashed),
        on(vs.SandboxStreamError, error=errors.Unavailable, when=lambda e: e.code == CLOSED),
        on(httpx2.TimeoutException, TimeoutError, error=errors.OperationTimeout),
        on(httpx2.TransportError, anyio.BrokenResourceError, OSError, error=errors.Unavailable),
    )

    # -- set-up and description -----------------------------------------------------------

    def _http(self) -> httpx2.AsyncClient:
        # The SDK's default client (HTTP/1.1, 100 connections, no retries), our timeout.
        return httpx2.AsyncClient(
            timeout=self.config.request_timeout_s, limits=httpx2.Limits(max_connections=100)
        )

    def new_client(self) -> vs.SandboxClient:
        options = vs.SandboxServiceOptions(
            base_url=self.endpoint,
            credentials_factory=_credentials,
            file_transfer_timeout=timedelta(seconds=self.config.file_timeout_s),
            region=self.config.region,
        )
        return vs.SandboxClient.create(options=options, httpx_client_factory=self._http)

    def capabilities(self) -> base.Capabilities:
        keeps = self.config.persistent
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.STOP_START if keeps else base.PauseKind.NONE,
            fork_keeps=base.CheckpointCaptures.FILESYSTEM,
            fork_method="copy",
            isolation="Firecracker microVM per sandbox",
            scratch_dir=SCRATCH_DIR,
            unsupported={} if keeps else {str(Op.PAUSE): NO_PAUSE, str(Op.RESUME): NO_PAUSE},
            notes={
                "create": "returns at the API's running (the SDK polls every 0.5 s while "
                "pending); the VM may still boot: the first command can wait (first_exec)",
                "stderr": "separate from stdout; both JSON text, so non-UTF-8 bytes change",
                "exec": "sh -c <cmd> or argv without a shell, in /vercel/sandbox; timeout_s "
                f"enforced client-side, the service kills the process {KILL_GRACE_S:g} s later",
                "resources": f"{self.config.vcpus or 2} vCPU, 2 GB each; spec sizes not sent",
                "checkpoint": "session.snapshot(): filesystem only; a sandbox the snapshot "
                "stopped is resumed inside checkpoint (processes gone)",
                "pause": "stop()/session(): files kept, processes and memory lost"
                if keeps
                else NO_PAUSE,
                "fork": "snapshot first (+ parent resume), then fork_sandbox x count: the "
                "files of that snapshot, not live state, no processes",
                "lifetime": "lifetime_s stops the session, the sandbox stays; snapshots 1 day",
                "connection": "Connection: close after every command",
            },
        )

    def sdk_environment(self) -> dict[str, Any]:
        oidc = ", ".join(name for name in OIDC_ENVS if os.environ.get(name))
        source = "SDK default" if not os.environ.get(API_URL_ENV) else API_URL_ENV
        return {
            "endpoint_source": "api_url setting" if self.config.api_url else source,
            "credentials": " + ".join(CREDENTIALS)
            + " (the adapter's credentials_factory)"
            + (f"; {oidc} set and ignored" if oidc else ""),
            "region": self.config.region or os.environ.get("VERCEL_REGION") or "service default",
            "http": f"httpx2, HTTP/1.1, timeout {self.config.request_timeout_s:g} s, system CAs",
            # The SDK adds " agent/<name>" to its User-Agent when it detects a coding agent.
            "user_agent_agent": None
            if any(os.environ.get(n) for n in TELEMETRY_OFF_ENVS)
            else detect_agent_name(),
        }

    # -- operations -------------------------------------------------------------------------

    async def attach(self, client: vs.SandboxClient, sandbox_id: str) -> vs.Sandbox:
        return await client.get_sandbox(name=sandbox_id)

    def _session(self, handle: Handle[vs.SandboxClient], operation: str) -> Any:
        if (session := handle.sdk.current_session) is None:
            message = "the sandbox answer carried no session"
            raise errors.ProtocolError(message, provider=self.id, operation=operation)
        return session

    def _params(self, labels: dict[str, str], lifetime_s: int) -> dict[str, Any]:
        vcpus = self.config.vcpus
        return {
            "name": sandbox_name(labels.get(RUN_LABEL, "")),
            "tags": dict(labels),
            "execution_time_limit": timedelta(seconds=lifetime_s),
            **({"resources": vs.SandboxResources(vcpus=vcpus)} if vcpus else {}),
        }

    async def _start(self, op: str, labels: dict[str, str], lifetime_s: int, **more: Any):
        params = {**self._params(labels, lifetime_s), "persistent": self.config.persistent,
                  "snapshot_expiration": SNAPSHOT_EXPIRATION, **more}  # fmt: skip
        return await self.started(
            op, lambda c: c.create_sandbox(**params), labels=labels, lifetime_s=lifetime_s
        )

    async def create(self, spec: SandboxSpec) -> Sandbox:
        image = {"image": spec.template} if spec.template else {}
        return await self._start(Op.CREATE, dict(spec.labels), max(1, spec.lifetime_s), **image)

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        argv, kill_after = self.argv(command, shell="sh"), timeout_s + KILL_GRACE_S
        late = self.exec_late(timeout_s)
        # The stream has no client timeout: timeout_s bounds the call here.
        async with self.calling(sandbox, Op.EXEC, timeout_s=timeout_s, late=late) as handle:
            session = self._session(handle, Op.EXEC)
            done = await session.run_process(
                argv[0], argv[1:], capture_output=True, kill_after=kill_after
            )
        return self.exec_result(done.returncode, done.stdout, done.stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        async with self.calling(sandbox, Op.WRITE_FILE) as handle:
            await self._session(handle, Op.WRITE_FILE).fs.write_bytes(path, bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        async with self.calling(sandbox, Op.READ_FILE) as handle:
            return self.file_bytes(await self._session(handle, Op.READ_FILE).fs.read_bytes(path))

    async def delete(self, sandbox: Sandbox, handle: Handle[vs.SandboxClient]) -> None:
        await handle.sdk.destroy(delete_orphan_snapshots=True)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        query = vs.SandboxQueryByName(tag=vs.TagFilter(key=RUN_LABEL, value=run_id))
        async with self.main(Op.LIST) as client:
            found = client.query_sandboxes(query=query, page_size=LIST_PAGE)
            return [sandbox.name async for sandbox in found]

    async def _snapshot(self, handle: Handle[vs.SandboxClient], operation: str) -> Any:
        """A snapshot of the current session; if the service stopped the sandbox for it, the
        sandbox is resumed (a new session from that snapshot), so it can be used again."""
        session = self._session(handle, operation)
        snapshot = await session.snapshot(expiration=SNAPSHOT_EXPIRATION)
        if session.status != "running":
            await handle.sdk.session()
        return snapshot

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        async with self.calling(sandbox, Op.CHECKPOINT) as handle:
            snapshot = await self._snapshot(handle, Op.CHECKPOINT)
        # The snapshot object goes along, so delete_checkpoint needs no lookup.
        return self.checkpoint_ref(snapshot.id, sandbox, handle, snapshot=snapshot)

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        source = vs.SnapshotSource(snapshot_id=ref.id)
        return await self._start(Op.RESTORE, *self.saved_labels(ref), source=source)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        snapshot = self.saved(ref).get("snapshot")
        async with self.idempotent("delete_checkpoint"):
            if snapshot is None:
                client = self.clients.shared("delete_checkpoint")
                snapshot = await client.get_snapshot(snapshot_id=ref.id)
            await snapshot.delete()

    async def pause(self, sandbox: Sandbox) -> None:
        async with self.calling(sandbox, Op.PAUSE) as handle:
            await handle.sdk.stop()

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        async with self.calling(sandbox, Op.RESUME) as handle:
            await handle.sdk.session()  # GET ?resume=true; the handle now holds the new session
        return self.holding(sandbox, handle)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        async with self.calling(sandbox, Op.FORK) as handle:
            await self._snapshot(handle, Op.FORK)
        labels, lifetime_s = dict(handle.labels), handle.lifetime_s

        async def child() -> Sandbox:  # persistence and snapshot expiry: the source's
            params = self._params(labels, lifetime_s)
            fork = lambda c: c.fork_sandbox(source_sandbox=sandbox.id, **params)  # noqa: E731
            return await self.started(Op.FORK, fork, labels=labels, lifetime_s=lifetime_s)

        return await self.fork_each(count, child)


__all__ = ["SCRATCH_DIR", "VercelProvider", "VercelSettings", "sandbox_name"]
