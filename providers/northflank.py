"""Northflank adapter over the official API client (``northflank`` 2.1.0, ``AsyncApiClient``).

Northflank has no sandbox object ("a sandbox is a service", its docs): a sandbox here is a
**deployment service** of one instance. What each operation means:

* ``create``: ``create.service.deployment`` (answers at once, ``PENDING``): the image
  ``SandboxSpec.template``, else ``image`` (``ubuntu:24.04``), running ``sleep infinity``, labels
  as ``tags``, ``expiryTime`` = ``lifetime_s`` (300 s to 7 days; then Northflank pauses and
  deletes it); then ``get.service.containers`` polled ``poll_interval_s`` apart: it returns **when
  a container is TASK_RUNNING** (up to one interval late; one that ended: SandboxCrashed; a failed
  wait deletes the service). **Sizes are plans only**: the smallest covering the spec's cpus and
  memory_mb (1 vCPU / 512 MiB runs on ``nf-compute-100-1``, 1 vCPU / 1 GiB), or the ``plan``
  setting; ``disk_mb`` is the ephemeral storage (MB). The sandbox id is the service's.
* ``exec``: ``exec.arun_service_command``, one WebSocket on the API host (token in the first
  frame, exit code back as a string); strings as ``/bin/sh -c <cmd>``, argv as given, as the
  image's user. stdout and stderr **separate**, text the server decodes (non-UTF-8 is lossy).
  ``timeout_s`` bounds the call; a command past it is not killed (the API has no kill; whether
  a closed WebSocket ends it is not documented).
* ``write_file`` / ``read_file``: **through exec** (no file API), one session each, base64 both
  ways: write runs ``mkdir -p "$(dirname "$1")" && cat > "$1" && wc -c < "$1"`` and checks the
  count, read ``cat`` (exit 44 if missing: NotFound). Byte-exact, at most ``max_file_mb``.
* ``checkpoint``: ``create.container_snapshot`` (202 ``scheduled``), then its state polled until
  ``succeeded`` (``failed``/``cancelled``: an error; a wait that fails or is given up deletes
  the snapshot, which would else be kept if it succeeded later); the service runs on. Declared
  **filesystem**: whether memory is included is not documented.
* ``restore``: a **new service** as for create (same image, plan, labels) with
  ``containerSnapshot.restoreFrom``; none in place. ``delete_checkpoint``: a missing one is fine.
* ``pause``, ``resume``, ``fork``: **unsupported** (reasons: :data:`UNSUPPORTED`).
* ``destroy``: ``delete.service``, then ``get.service`` polled until 404 (a deletion that ends
  after the DELETE's answer, not documented either way, is measured to its end).
* ``list_sandboxes``: every page of ``list.services``, **filtered client-side** on the run
  label's tag (no tag filter in the API); label ``k=v`` is tag ``k-v``, else ``h-<sha256>``.

Client: the token only from ``NORTHFLANK_API_TOKEN``; the endpoint (exec too) from ``api_url``,
else ``NORTHFLANK_API_BASE_URL``, else the SDK's default, passed explicitly (its ``NF_*`` aliases
are not read); the project only from ``NORTHFLANK_PROJECT_ID`` (required, as the token is); a
team (``team_id``, ``NORTHFLANK_TEAM_ID``) selects the team routes. One ``httpx.AsyncClient``
per SDK client (the SDK's default: one per call). The API allows 1,000 requests an hour by
default, each poll one of them. Retries: ``SDK_RETRIES``; settings: :class:`NorthflankSettings`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import northflank.endpoint as nf_endpoint
from northflank import AsyncApiClient, ConfigurationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from providers import base, errors, sdk
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import HTTP_STATUS, on
from providers.settings import setting

TOKEN_ENV, BASE_URL_ENV = "NORTHFLANK_API_TOKEN", "NORTHFLANK_API_BASE_URL"
PROJECT_ENV, TEAM_ENV = "NORTHFLANK_PROJECT_ID", "NORTHFLANK_TEAM_ID"
#: Deployment plans (vCPU, MiB) as docs/v1/application/billing/resource-plans-and-quotas lists
#: them (read 2026-11-29), in its order: of two equal shapes the first is chosen.
PLANS: dict[str, tuple[float, int]] = {f"nf-compute-{p}": s for p, s in {
    "10": (0.1, 256), "20": (0.2, 512), "50": (0.5, 1024), "100-1": (1, 1024),
    "100-2": (1, 2048), "100-4": (1, 4096), "200": (2, 4096), "200-4": (2, 4096),
    "200-8": (2, 8192), "200-16": (2, 16384), "400": (4, 8192), "400-16": (4, 16384),
    "800-8": (8, 8192), "800-16": (8, 16384), "800-24": (8, 24576), "800-32": (8, 32768),
    "800-40": (8, 40960)}.items()}  # fmt: skip
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
TRANSPORT = (httpx.TransportError, OSError, EOFError, ConnectionClosed, InvalidHandshake)
UNREADABLE = (httpx.DecodingError, ValueError, KeyError, TypeError, AttributeError)  # binascii too


def plan_for(spec: SandboxSpec) -> str:
    """The smallest plan (fewest vCPU, then least memory) with the spec's cpus and memory."""
    fits = [(c, m, p) for p, (c, m) in PLANS.items() if c >= spec.cpus and m >= spec.memory_mb]
    if not fits:
        raise ValueError(f"{spec.cpus:g} vCPU / {spec.memory_mb} MiB is beyond every plan")
    return min(fits, key=lambda f: (f[0], f[1]))[2]


def label_tag(key: str, value: str) -> str:
    """The tag that carries the label ``key=value``."""
    text = f"{key}-{value}"
    if TAG.fullmatch(text) and 3 <= len(text) <= 100:
        return text
    return "h-" + hashlib.sha256(f"{key}={value}".encode()).hexdigest()[:40]


def sdk_retries_off() -> None:
    """The SDK's REST retries (SDK_RETRIES) have no switch, but its retry helper is a module
    global looked up at each call: it is replaced, once for the process, by itself with 0."""
    if not getattr(nf_endpoint._aretry, "sandbox_bench", False):
        once = functools.partial(nf_endpoint._aretry, retries=0)
        once.sandbox_bench = True  # type: ignore[attr-defined]
        nf_endpoint._aretry = once


@dataclass(frozen=True, kw_only=True)
class NorthflankSettings(sdk.SDKSettings):
    team_id: str | None = setting(None, help=f"team (organisation tokens); else {TEAM_ENV}")
    plan: str = setting("auto", choices=("auto", *PLANS), help="deployment plan; auto: the "
                        "smallest covering the spec's cpus and memory_mb")  # fmt: skip
    image: str = setting("ubuntu:24.04", help="external image when the spec names no template")
    command: str = setting("sleep infinity", help="the container's command (must keep running)")
    scratch_dir: str = sdk.scratch_dir_setting("/root")
    poll_interval_s: float = setting(0.5, unit="s", minimum=0.01, maximum=60, help="time between "
                                     "polls of a create, checkpoint or destroy")  # fmt: skip
    max_file_mb: int = setting(64, unit="MiB", minimum=1, maximum=1024, help="file size bound")
    request_timeout_s: float = sdk.sdk_timeout(30.0, "HTTP timeout of each REST call")
    wait_timeout_s: float = sdk.sdk_timeout(600.0, "bound on create, checkpoint, destroy waits")
    file_timeout_s: float = sdk.sdk_timeout(300.0, "bound on one file transfer")


class NorthflankProvider(sdk.SDKProvider[AsyncApiClient]):
    id = "northflank"
    sdk_packages = ("northflank",)
    required_env = (TOKEN_ENV, PROJECT_ENV)
    Settings = NorthflankSettings
    config: NorthflankSettings
    endpoint_env = BASE_URL_ENV
    default_endpoint = "https://api.northflank.com"
    CLOSE = "_async_client.aclose"  # the httpx client new_client() handed it
    #: What northflank 2.1.0 retries on its own, for the manifest.
    SDK_RETRIES: ClassVar[dict[str, str]] = {
        "rest": "off: northflank.endpoint._aretry replaced by itself with retries=0 (the SDK "
        "retries every call 3x, 0.5 s apart, on any httpx error, timeouts included, and has no "
        "option to stop it)",
        "exec_handshake": "a timed-out WebSocket upgrade is retried 3x (0.5 s, 1 s), not "
        "configurable; never inside a measured call: the SDK's open timeout is the call's "
        f"timeout + {SDK_MARGIN_S:g} s",
    }
    ERRORS = (
        on(ConfigurationError, error=errors.AuthError),
        on(error=errors.ProtocolError, message=MALFORMED),
        HTTP_STATUS,
        on(TimeoutError, httpx.TimeoutException, error=errors.OperationTimeout),
        on(httpx.RemoteProtocolError, error=errors.ProtocolError, when=sdk.garbled),
        on(*TRANSPORT, error=errors.Unavailable),
        on(error=errors.Unavailable, message=CUT_SHORT),
        on(*UNREADABLE, error=errors.ProtocolError),
    )

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.project = os.environ.get(PROJECT_ENV, "")
        self.team = self.config.team_id or os.environ.get(TEAM_ENV) or None

    def _where(self, service: str | None = None) -> dict[str, Any]:
        where = {"project_id": self.project, "team_id": self.team}
        return {**where, "service_id": service} if service else where

    def new_client(self) -> AsyncApiClient:
        sdk_retries_off()
        token, timeout = os.environ.get(TOKEN_ENV), self.config.request_timeout_s
        http = httpx.AsyncClient(timeout=timeout)  # connections reused across calls
        return AsyncApiClient(token, base_url=self.endpoint, timeout=timeout,
                              async_http_client=http)  # fmt: skip

    def capabilities(self) -> base.Capabilities:
        plan = self.config.plan
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            isolation="Northflank service: a microVM-backed container (Kata Containers with "
            "Cloud Hypervisor or Firecracker on Northflank's cloud, per its docs; gVisor for GPU)",
            scratch_dir=self.config.scratch_dir,
            unsupported=UNSUPPORTED,
            notes={
                "create": "POST + containers polled until TASK_RUNNING (poll_interval_s apart)",
                "resources": f"plan {plan} whatever the spec" if plan != "auto" else "the "
                "smallest plan covering cpus and memory_mb (1 vCPU / 512 MiB: nf-compute-100-1)",
                "exec": "a WebSocket per command; separate streams of server-decoded text "
                "(non-UTF-8 lossy); a command past its timeout is not killed (no kill in the API)",
                "files": f"through exec, base64, at most {self.config.max_file_mb} MiB; exact",
            },
        )  # fmt: skip

    def sdk_environment(self) -> dict[str, Any]:
        patched = bool(getattr(nf_endpoint._aretry, "sandbox_bench", False))
        return {"team": self.team, "rest_retries_patched": patched,  # the project: a credential
                "plan_for_default_spec": plan_for(SandboxSpec())}  # fmt: skip

    def sandbox_id(self, sdk: Any) -> str:
        return str(sdk)  # no service object in the SDK: a handle holds its id (and its recipe)

    async def attach(self, client: AsyncApiClient, sandbox_id: str) -> str:
        return sandbox_id

    def _data(self, answer: Any, op: str) -> dict[str, Any]:
        """The answer's ``data`` object (the SDK returns None for a body it cannot parse)."""
        data = getattr(answer, "data", None)
        if not isinstance(data, dict):
            raise self.error(errors.ProtocolError, op, f"answer without data ({data!r:.40})")
        return data

    async def _start(self, op: str, labels: dict[str, str], lifetime_s: int,
                     body: dict[str, Any]) -> Sandbox:  # fmt: skip
        body = {**body, "name": f"sb-{secrets.token_hex(6)}",
                "tags": sorted({label_tag(k, v) for k, v in labels.items()}),
                "createOptions": {"expiryTime": min(max(lifetime_s, 300), 604_800)}}  # fmt: skip

        async def start(client: AsyncApiClient) -> str:
            made = await client.create.service.deployment(**self._where(), data=body)
            service = str(self._data(made, op)["id"])  # KeyError: ProtocolError

            async def running() -> bool:
                found = await client.get.service.containers(**self._where(service))
                states = {c.get("status") for c in self._data(found, op)["containers"]}
                if states and RUNNING not in states and states <= ENDED:
                    ended = ", ".join(sorted(states))
                    raise self.error(errors.SandboxCrashed, op, f"its container ended ({ended})")
                return RUNNING in states

            # It bills while it exists: a failed wait deletes it.
            async with self.undone_on_failure(client.delete.service, **self._where(service)):
                await self.until(running, self.config.wait_timeout_s, self.config.poll_interval_s)
            return service

        recipe = {"body": body}
        return await self.started(op, start, labels=labels, lifetime_s=lifetime_s, recipe=recipe)

    async def _session(self, sandbox: Sandbox, op: str, script: str, path: str,
                       data: bytes = b"") -> tuple[int | None, bytes, bytes]:  # fmt: skip
        """Run ``sh -c script sh path`` in one base64 exec session fed ``data``: exit code,
        stdout, stderr; each frame decoded on its own, as the SDK's own file copy does."""
        limit, bound = self.config.max_file_mb * MIB, self.config.file_timeout_s
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async with self.calling(sandbox, op, timeout_s=bound) as handle:
            session = await handle.client.exec.aopen_service_session(
                **self._where(sandbox.id), command=["sh", "-c", script, "sh", path],
                shell="none", tty=False, encoding="base64")  # fmt: skip
            async with session:
                for start in range(0, len(data), CHUNK):
                    await session.send(base64.b64encode(data[start : start + CHUNK]).decode())
                await session.send_eof()
                async for chunk in session:
                    out[chunk.stream].append(base64.b64decode(chunk.data, validate=True))
                    if sum(map(len, out["stdout"])) > limit:
                        raise self.error(errors.ProviderError, op, f"{path}: over max_file_mb")
            code = session.result.exit_code if session.result else None
        return code, b"".join(out["stdout"]), b"".join(out["stderr"])

    async def create(self, spec: SandboxSpec) -> Sandbox:
        with self.refusing(Op.CREATE):
            plan = plan_for(spec) if self.config.plan == "auto" else self.config.plan
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
        argv = self.argv(command)
        async with self.calling(sandbox, Op.EXEC, timeout_s=timeout_s) as handle:  # left running
            done = await handle.client.exec.arun_service_command(
                **self._where(sandbox.id), command=argv, shell="none", encoding="utf-8",
                timeout=timeout_s + SDK_MARGIN_S)  # fmt: skip
        return self.exec_result(done.exit_code, done.stdout, done.stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        if len(data) > self.config.max_file_mb * MIB:
            raise self.error(errors.ProviderError, Op.WRITE_FILE, f"{path}: over max_file_mb")
        code, out, err = await self._session(sandbox, Op.WRITE_FILE, WRITE, path, bytes(data))
        if code != 0 or out.strip() != str(len(data)).encode():
            wrote = f"{path}: exit {code}, {out!r:.30} of {len(data)} bytes written: {err!r:.200}"
            raise self.error(errors.ProviderError, Op.WRITE_FILE, wrote)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        code, out, err = await self._session(sandbox, Op.READ_FILE, READ, path)
        if code == MISSING_FILE:
            raise self.error(errors.NotFound, Op.READ_FILE, f"{path} does not exist")
        if code != 0:
            raise self.error(errors.ProviderError, Op.READ_FILE, f"exit {code}: {err!r:.200}")
        return out

    async def delete(self, sandbox: Sandbox, handle: sdk.Handle[AsyncApiClient]) -> None:
        async def gone() -> bool:
            await handle.client.get.service(**self._where(sandbox.id))  # 404 (NotFound) ends it
            return False

        self._data(await handle.client.delete.service(**self._where(sandbox.id)), Op.DESTROY)
        await self.until(gone, self.config.wait_timeout_s, self.config.poll_interval_s)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        tag = label_tag(RUN_LABEL, run_id)
        async with self.main(Op.LIST) as client:
            pages = await client.list.services.all(**self._where(), per_page=LIST_PAGE)
            services = self._data(pages, Op.LIST)["services"]
            return [s["id"] for s in services if tag in (s.get("tags") or ())]

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        async with self.calling(sandbox, Op.CHECKPOINT) as handle:
            client, where = handle.client, {"team_id": self.team}
            made = await client.create.container_snapshot(**self._where(sandbox.id), data={})
            snapshot = self._data(made, Op.CHECKPOINT)["id"]

            async def taken() -> bool:
                got = await client.get.container_snapshot(snapshot_id=snapshot, **where)
                if (state := self._data(got, Op.CHECKPOINT)["state"]) in ("failed", "cancelled"):
                    raise self.error(errors.ProviderError, Op.CHECKPOINT, f"{got.data!r:.300}")
                return state == "succeeded"

            # Nobody would ever delete it: a wait that fails or is given up deletes it.
            drop = client.delete.container_snapshot
            async with self.undone_on_failure(drop, snapshot_id=snapshot, **where):
                await self.until(taken, self.config.wait_timeout_s, self.config.poll_interval_s)
        return self.checkpoint_ref(snapshot, sandbox, handle)  # with its recipe: the body

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        labels, lifetime_s = self.saved_labels(ref)
        body = dict(self.saved(ref).get("body") or {})
        if not body:
            raise self.error(errors.ProviderError, Op.RESTORE, "not a checkpoint of this run")
        body["deployment"] = {**body["deployment"], "containerSnapshot": {"restoreFrom": ref.id}}
        return await self._start(Op.RESTORE, labels, lifetime_s, body)

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        async with self.main("delete_checkpoint", missing_ok=True) as client:
            await client.delete.container_snapshot(snapshot_id=ref.id, team_id=self.team)


__all__ = ["NorthflankProvider", "NorthflankSettings", "label_tag", "plan_for"]
