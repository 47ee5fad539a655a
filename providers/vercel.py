"""Vercel Sandbox adapter over the official async SDK (``vercel-sandbox`` 0.10.0, SandboxClient).

Every sandbox is a named Vercel Sandbox (a Firecracker microVM). A sandbox runs one *session*
at a time; commands and files go to the current session by its id. The adapter keeps the
session handle it got from create or resume (``sandbox.current_session``) and sends every
measured call through it: a pinned session never resumes on its own, whereas the SDK's
sandbox-level calls answer a 410 with a hidden ``GET ?resume=true`` and a replay. What each
interface operation means on Vercel:

* ``create``: ``create_sandbox(name=, tags=labels, persistent=, execution_time_limit=lifetime_s,
  snapshot_expiration=1 day[, image=template][, resources=SandboxResources(vcpus=)])``
  (``POST /v3/sandboxes``); the SDK then polls ``GET /v2/sandboxes/{name}`` every **0.5 s**
  while the API says ``pending``, and returns at ``running``, so create is quantised by that
  sleep whenever the first answer is ``pending``. ``running`` is the API's word, not readiness:
  Vercel's own reproduction (vercel-labs/sandbox-benchmarking, TypeScript SDK) saw the first
  command wait 1.5-33 s server-side after create returned; the runner's ``first_exec`` holds it.
  The name, the sandbox's id in every later call, is ``sb-<run fragment>-<8 hex>``. Size: the
  service default (2 vCPU, 2 GB per vCPU) unless the ``vcpus`` setting is set (1 or even); the
  spec's cpus/memory_mb/disk_mb are not sent (memory is always 2 GB per vCPU).
* ``exec``: ``session.run_process(cmd, args, capture_output=True, kill_after=timeout_s+5)``
  (``POST /v2/sandboxes/sessions/{sid}/cmd?wait=true``, an NDJSON stream sent with
  ``Connection: close``, so the next request opens a new TCP/TLS connection). A string runs as
  ``sh -c <command>``, an argv list as given (no shell), in ``/vercel/sandbox`` as the
  ``vercel-sandbox`` user. stdout and stderr are **separate** but arrive as JSON text: non-UTF-8
  output is not byte-exact. The stream has no client timeout, so ``timeout_s`` is enforced here
  (OperationTimeout); ``kill_after`` makes the service kill the process 5 s later, as a
  backstop. A non-zero exit is data.
* ``write_file`` / ``read_file``: ``session.fs.write_bytes`` (``POST .../fs/write``, a gzip tar;
  parents created) and ``session.fs.read_bytes`` (``POST .../fs/read``, raw bytes). Byte-exact.
* ``checkpoint``: ``session.snapshot(expiration=1 day)`` (``POST .../sessions/{sid}/snapshot``):
  the **filesystem only** (a compressed disk image). Vercel's docs say a snapshot shuts the
  sandbox down; when the answer's session is no longer running, checkpoint resumes it
  (``GET ?resume=true``: a new session from that snapshot, files kept, processes gone) before it
  returns, so the source can be used again and the measured checkpoint includes that resume.
* ``restore``: ``create_sandbox(source=SnapshotSource(id))``: a **new sandbox** with the
  original's tags and the same readiness poll as create; there is no in-place restore.
* ``delete_checkpoint``: ``snapshot.delete()`` (``DELETE /v2/sandboxes/snapshots/{id}``).
* ``pause`` / ``resume``: ``sandbox.stop()`` (``POST .../sessions/{sid}/stop``) and
  ``sandbox.session()`` (``GET /v2/sandboxes/{name}?resume=true``, a new session id; it
  returns when the API answers, without polling). With ``persistent`` (default) the stop
  snapshots the filesystem and the resume boots from it: **files kept, processes and memory
  lost** (PauseKind.STOP_START). With ``persistent = false`` a resume starts clean, so pause
  and resume are declared unsupported.
* ``fork``: ``session.snapshot()`` (resuming the parent if that stopped it), then ``count``
  concurrent ``fork_sandbox(source_sandbox=name, name=, tags=labels)`` (``POST
  /v2/sandboxes/{name}/fork``, each with the readiness poll). Vercel seeds a fork from the
  source's **latest snapshot**, never its live state (and from the image when there is none):
  the snapshot first is what gives the children the parent's current files. Children keep
  files only, no processes.
* ``destroy``: ``sandbox.destroy(delete_orphan_snapshots=True)`` (``DELETE
  /v2/sandboxes/{name}``), which also drops its snapshots no other sandbox uses; 404 counts as
  destroyed. A sandbox the harness loses stops after ``lifetime_s`` (its session limit) but is
  not deleted: the leak sweep finds it by tag; its snapshots expire after a day.
* ``list_sandboxes``: ``query_sandboxes(SandboxQueryByName(tag=TagFilter(RUN_LABEL, run_id)))``.

Client: the SDK reads **no variable for its endpoint** (``SandboxServiceOptions(base_url=)``
only, default ``https://vercel.com/api``): the adapter passes the ``api_url`` setting, else our
``VERCEL_SANDBOX_API_URL``, else that default. Credentials come from the adapter's own
``credentials_factory``: ``VERCEL_TOKEN``, ``VERCEL_TEAM_ID`` and ``VERCEL_PROJECT_ID`` only;
the SDK's resolver would let ``VERCEL_OIDC_TOKEN`` (or its file) win silently, so it is never
used (environment() records whether such a variable was set and ignored). Region: the ``region``
setting, else ``VERCEL_REGION`` (read by the SDK). Retries: the control plane has none (httpx2
transport with ``retries=0``, no retry policy); the SDK retries only its fallback after an exec
stream breaks mid-way (logs and wait endpoints, 2 retries) and the hidden resume of
sandbox-level calls, which the pinned session avoids (:data:`SDK_RETRIES`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import httpx2
from vercel._internal.core.detect_agent import detect_agent_name
from vercel.sandbox import (
    Sandbox as VercelSandbox,
)
from vercel.sandbox import (
    SandboxApiError,
    SandboxClient,
    SandboxCredentials,
    SandboxCredentialsError,
    SandboxPathNotFoundError,
    SandboxQueryByName,
    SandboxResources,
    SandboxResponseError,
    SandboxServiceOptions,
    SandboxStreamError,
    SandboxTerminalStateError,
    SnapshotSource,
    TagFilter,
)

from providers import base, errors
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, Handle, Observed, SDKProvider, SDKSettings, on, sdk_timeout
from providers.sdk import retry_after_s as parse_retry_after
from providers.settings import setting

TOKEN_ENV, TEAM_ENV, PROJECT_ENV = "VERCEL_TOKEN", "VERCEL_TEAM_ID", "VERCEL_PROJECT_ID"
API_URL_ENV = "VERCEL_SANDBOX_API_URL"
OIDC_ENVS = ("VERCEL_OIDC_TOKEN", "VERCEL_OIDC_TOKEN_FILE")
DEFAULT_API_URL = "https://vercel.com/api"
#: The sandbox's default working directory: writable, and in every snapshot.
SCRATCH_DIR = "/vercel/sandbox"
#: The shortest snapshot lifetime the SDK accepts (other than 0, never): leftovers go in a day.
SNAPSHOT_EXPIRATION = timedelta(days=1)
#: How long after the client's deadline the service kills a command (kill_after).
KILL_GRACE_S = 5.0
LIST_PAGE = 50  # the SDK refuses more
NO_PAUSE = "persistent = false: a stopped session's filesystem is discarded, nothing survives"


@dataclass(frozen=True, kw_only=True)
class VercelSettings(SDKSettings):
    persistent: bool = setting(
        True, help="stop snapshots the filesystem and resume restores it (needed for pause)"
    )
    vcpus: int | None = setting(
        None, help="vCPUs (1 or even; 2 GB each); else the service default, 2", minimum=1,
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


async def _credentials() -> SandboxCredentials:
    """VERCEL_TOKEN / VERCEL_TEAM_ID / VERCEL_PROJECT_ID, read at each call; never OIDC."""
    values = [os.environ.get(name, "") for name in (TOKEN_ENV, TEAM_ENV, PROJECT_ENV)]
    missing = [n for n, v in zip((TOKEN_ENV, TEAM_ENV, PROJECT_ENV), values, strict=True) if not v]
    if missing:
        raise SandboxCredentialsError(f"set {', '.join(missing)} to use vercel")
    return SandboxCredentials(token=values[0], team_id=values[1], project_id=values[2])


class VercelProvider(SDKProvider[SandboxClient]):
    id = "vercel"
    sdk_packages = ("vercel-sandbox",)
    required_env = (TOKEN_ENV, TEAM_ENV, PROJECT_ENV)
    Settings = VercelSettings
    config: VercelSettings
    endpoint_env = API_URL_ENV
    default_endpoint = DEFAULT_API_URL
    #: What vercel-sandbox 0.10.0 retries on its own, for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "control_plane": "none: one attempt per call (httpx2 transport retries=0, the SDK's "
        "RetryPolicy is not used by the sandbox service); 429 and 5xx are raised at once",
        "exec_stream_fallback": "if an exec stream breaks after the process started, the SDK "
        "follows it on the logs and wait endpoints (2 retries, 0.2 s then 0.4 s) and never "
        "reruns the process",
        "lifecycle_recovery": "sandbox-level calls resume a stopped sandbox and replay once on "
        "410; not used: measured calls go through the pinned session",
        "create_poll": "create, restore and fork poll GET /v2/sandboxes/{name} every 0.5 s "
        "while pending (no deadline)",
    }
    ERRORS = (
        on(SandboxCredentialsError, error=errors.AuthError),
        # Answers the SDK could not read: a body that is not JSON or not the expected shape,
        # an NDJSON stream that ended early, an undecodable body or unparseable headers.
        on(SandboxResponseError, httpx2.DecodingError, error=errors.ProtocolError),
        on(httpx2.RemoteProtocolError, error=errors.ProtocolError, when=lambda e: _garbled(e)),
        HTTP_STATUS,
        on(SandboxPathNotFoundError, error=errors.NotFound),
        on(SandboxTerminalStateError, error=errors.SandboxCrashed),
        on(
            SandboxStreamError,
            error=errors.Unavailable,
            when=lambda e: e.code == "sandbox_stream_closed",
        ),
        on(httpx2.TimeoutException, TimeoutError, error=errors.OperationTimeout),
        on(
            httpx2.TransportError,
            anyio.BrokenResourceError,
            ConnectionError,
            error=errors.Unavailable,
        ),
    )

    # -- set-up and description -----------------------------------------------------------

    def _options(self) -> SandboxServiceOptions:
        return SandboxServiceOptions(
            base_url=self.endpoint,
            credentials_factory=_credentials,
            file_transfer_timeout=timedelta(seconds=self.config.file_timeout_s),
            region=self.config.region,
        )

    def _http(self) -> httpx2.AsyncClient:
        # As the SDK's own default client (HTTP/1.1, 100 connections, no transport retries),
        # with our timeout.
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(self.config.request_timeout_s),
            limits=httpx2.Limits(max_connections=100),
            http2=False,
        )

    def new_client(self) -> SandboxClient:
        return SandboxClient.create(options=self._options(), httpx_client_factory=self._http)

    async def close_client(self, client: SandboxClient) -> None:
        await client.aclose()

    def capabilities(self) -> base.Capabilities:
        persistent = self.config.persistent
        ops = base.REQUIRED_OPS | {Op.CHECKPOINT, Op.RESTORE, Op.FORK}
        return base.Capabilities(
            operations=ops | ({Op.PAUSE, Op.RESUME} if persistent else set()),
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.STOP_START if persistent else base.PauseKind.NONE,
            fork_keeps=base.CheckpointCaptures.FILESYSTEM,
            fork_method="copy",
            isolation="Firecracker microVM per sandbox",
            scratch_dir=SCRATCH_DIR,
            unsupported={} if persistent else {str(Op.PAUSE): NO_PAUSE, str(Op.RESUME): NO_PAUSE},
            notes={
                "create": "returns when the API says running (SDK polls every 0.5 s while "
                "pending); the first command can still wait for the VM to boot (first_exec)",
                "stderr": "separate from stdout, both as text (JSON strings)",
                "exec": "sh -c <cmd> for strings, argv without a shell, in /vercel/sandbox as "
                "vercel-sandbox; timeout_s enforced client-side, the service kills the process "
                f"{KILL_GRACE_S:g} s later; Connection: close after every command",
                "resources": f"vcpus={self.config.vcpus or 'service default (2)'}, 2 GB each; "
                "the spec's cpus/memory_mb/disk_mb are not sent",
                "checkpoint": "session.snapshot(): filesystem only; if the service stops the "
                "sandbox on snapshot, checkpoint resumes it before returning (included)",
                "restore": "create_sandbox(source=SnapshotSource): a new sandbox",
                "pause": "stop()/session(): files kept (automatic snapshot), processes and "
                "memory lost"
                if persistent
                else NO_PAUSE,
                "fork": "snapshot (+ resume of the parent if stopped), then fork_sandbox x "
                "count: children get the filesystem of that snapshot, not the live state",
                "lifetime": "execution_time_limit=lifetime_s stops the session; the sandbox "
                "stays until deleted; snapshots expire after 1 day",
                "connection": str(self.connection),
                "retries": "control plane: none; see environment sdk_retries",
            },
        )

    def sdk_environment(self) -> dict[str, Any]:
        oidc = [name for name in OIDC_ENVS if os.environ.get(name)]
        telemetry_off = any(
            os.environ.get(n)
            for n in ("VERCEL_TELEMETRY_DISABLED", "VERCEL_SANDBOX_TELEMETRY_DISABLED")
        )
        return {
            "endpoint_source": "api_url setting"
            if self.config.api_url
            else API_URL_ENV
            if os.environ.get(API_URL_ENV)
            else "SDK default",
            "credentials": f"{TOKEN_ENV} + {TEAM_ENV} + {PROJECT_ENV} (adapter's "
            "credentials_factory)" + (f"; {', '.join(oidc)} set and ignored" if oidc else ""),
            "region": self.config.region or os.environ.get("VERCEL_REGION") or "service default",
            "http": f"httpx2, HTTP/1.1, timeout {self.config.request_timeout_s:g} s, system CAs",
            "user_agent_agent": None if telemetry_off else detect_agent_name(),
        }

    def http_status(
        self, chain: list[BaseException], observed: Observed
    ) -> tuple[int | None, float | None]:
        for exc in chain:
            if isinstance(exc, SandboxApiError):
                return exc.status_code, parse_retry_after(exc.response.headers)
        return super().http_status(chain, observed)

    # -- operations -------------------------------------------------------------------------

    async def attach(self, client: SandboxClient, sandbox_id: str) -> VercelSandbox:
        return await client.get_sandbox(name=sandbox_id)

    def sandbox_id(self, sdk: VercelSandbox) -> str:
        return sdk.name

    def _session(self, handle: Handle[SandboxClient], operation: str) -> Any:
        session = handle.sdk.current_session
        if session is None:
            raise errors.ProtocolError(
                "the sandbox answer carried no session", provider=self.id, operation=operation
            )
        return session

    def _params(self, labels: dict[str, str], lifetime_s: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": sandbox_name(labels.get(RUN_LABEL, "")),
            "tags": dict(labels),
            "persistent": self.config.persistent,
            "execution_time_limit": timedelta(seconds=lifetime_s),
            "snapshot_expiration": SNAPSHOT_EXPIRATION,
        }
        if self.config.vcpus:
            params["resources"] = SandboxResources(vcpus=self.config.vcpus)
        return params

    async def create(self, spec: SandboxSpec) -> Sandbox:
        labels, lifetime_s = dict(spec.labels), max(1, int(spec.lifetime_s))
        params = self._params(labels, lifetime_s)
        if spec.template:
            params["image"] = spec.template
        return await self.started(
            Op.CREATE, lambda c: c.create_sandbox(**params), labels=labels, lifetime_s=lifetime_s
        )

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        handle = await self.handle(sandbox, Op.EXEC)
        argv = ["sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("exec needs a command")
        async with self.translating(Op.EXEC):
            session = self._session(handle, Op.EXEC)
            try:
                async with asyncio.timeout(timeout_s):
                    done = await session.run_process(
                        argv[0], argv[1:], capture_output=True, kill_after=timeout_s + KILL_GRACE_S
                    )
            except TimeoutError:
                raise errors.OperationTimeout(
                    f"command did not finish within {timeout_s:g} s",
                    provider=self.id,
                    operation=Op.EXEC,
                ) from None
        stdout, stderr = (done.stdout or "").encode(), (done.stderr or "").encode()
        return self.exec_result(done.returncode, stdout, stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        handle = await self.handle(sandbox, Op.WRITE_FILE)
        async with self.translating(Op.WRITE_FILE):
            await self._session(handle, Op.WRITE_FILE).fs.write_bytes(path, bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        handle = await self.handle(sandbox, Op.READ_FILE)
        async with self.translating(Op.READ_FILE):
            return self.file_bytes(await self._session(handle, Op.READ_FILE).fs.read_bytes(path))

    async def destroy(self, sandbox: Sandbox) -> None:
        try:
            handle = await self.handle(sandbox, Op.DESTROY)
        except errors.NotFound:
            return
        async with self.idempotent(Op.DESTROY, release=handle.client):
            await handle.sdk.destroy(delete_orphan_snapshots=True)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        client = self.clients.shared(Op.LIST)
        query = SandboxQueryByName(tag=TagFilter(key=RUN_LABEL, value=run_id))
        async with self.translating(Op.LIST):
            return [
                sb.name async for sb in client.query_sandboxes(query=query, page_size=LIST_PAGE)
            ]

    async def _snapshot(self, handle: Handle[SandboxClient], operation: str) -> Any:
        """A snapshot of the current session; if the service stopped the sandbox for it, the
        sandbox is resumed (a new session from that snapshot), so it can be used again."""
        session = self._session(handle, operation)
        snapshot = await session.snapshot(expiration=SNAPSHOT_EXPIRATION)
        if session.status != "running":
            await handle.sdk.session()
        return snapshot

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        handle = await self.handle(sandbox, Op.CHECKPOINT)
        async with self.translating(Op.CHECKPOINT):
            snapshot = await self._snapshot(handle, Op.CHECKPOINT)
        ref = self.checkpoint_ref(snapshot.id, sandbox, handle)
        ref.native["snapshot"] = snapshot  # delete_checkpoint needs no lookup
        return ref

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        params = {**self._params(labels, lifetime_s), "source": SnapshotSource(snapshot_id=ref.id)}
        return await self.started(
            Op.RESTORE, lambda c: c.create_sandbox(**params), labels=labels, lifetime_s=lifetime_s
        )

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        snapshot = ref.native.get("snapshot") if isinstance(ref.native, dict) else None
        async with self.idempotent("delete_checkpoint"):
            if snapshot is None:
                client = self.clients.shared("delete_checkpoint")
                snapshot = await client.get_snapshot(snapshot_id=ref.id)
            await snapshot.delete()

    async def pause(self, sandbox: Sandbox) -> None:
        handle = await self.handle(sandbox, Op.PAUSE)
        async with self.translating(Op.PAUSE):
            await handle.sdk.stop()

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        handle = await self.handle(sandbox, Op.RESUME)
        async with self.translating(Op.RESUME):
            await handle.sdk.session()  # GET ?resume=true; the handle now holds the new session
        return self.holding(sandbox, handle)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        handle = await self.handle(sandbox, Op.FORK)
        async with self.translating(Op.FORK):
            await self._snapshot(handle, Op.FORK)
        labels, lifetime_s = dict(handle.labels), handle.lifetime_s

        async def one() -> Sandbox:
            params = self._params(labels, lifetime_s)
            del params["snapshot_expiration"], params["persistent"]  # inherited from the source
            return await self.started(
                Op.FORK,
                lambda c: c.fork_sandbox(source_sandbox=sandbox.id, **params),
                labels=labels,
                lifetime_s=lifetime_s,
            )

        made = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        failed = [m for m in made if isinstance(m, BaseException)]
        if failed:  # destroy the children that were made, then report the first failure
            for child in made:
                if isinstance(child, Sandbox):
                    await self.destroy(child)
            raise failed[0]
        return [m for m in made if isinstance(m, Sandbox)]


def _garbled(exc: BaseException) -> bool:
    """A RemoteProtocolError about an answer that could not be parsed (not a dropped peer)."""
    return "disconnected" not in str(exc).lower()


__all__ = ["SCRATCH_DIR", "VercelProvider", "VercelSettings", "sandbox_name"]
