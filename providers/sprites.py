"""Fly.io Sprites adapter over the official async SDK (``sprites-py`` 0.7.2, AsyncSpritesClient).

What each interface operation means on Sprites:

* ``create``: ``AsyncSpritesClient.create_sprite(name, config=SpriteConfig(...), labels=[...])``
  (``POST /v1/sprites``). The caller chooses the name, and the name is the Sprite's id in every
  later call: the adapter generates ``sb-<run fragment>-<8 hex>`` (lowercase letters, digits and
  hyphens, at most 52 characters, so a DNS label), where the run fragment is the run id
  lowercased with every other character turned into ``-`` and cut to 40 characters. It returns
  when the API answers; a new Sprite is ``cold`` and boots on its first request, so the first
  exec (measured separately by the runner) carries the boot. The spec is sent as
  ``SpriteConfig(ram_mb=memory_mb, cpus=ceil(cpus), storage_gb=ceil(disk_mb/1024))`` (setting
  ``send_spec``), but Sprites' billing docs describe a fixed 8 vCPU / 4 GB shape: the values may
  well be ignored (the probe workload measures what the Sprite really has). ``SandboxSpec.template``
  becomes the SDK's ``runtime`` (Sprites have no images or templates; ``runtime`` is the only
  create-time choice of environment). ``lifetime_s`` has no equivalent: a Sprite lives until it
  is destroyed (it only hibernates), so a lost one is found by the leak sweep, not by a TTL.
* Labels: Sprites labels are a list of strings, so every ``SandboxSpec.labels`` item is sent as
  ``"key=value"``, the run label as ``"sandbox-bench-run=<run id>"``.
* ``list_sandboxes(run_id)``: ``list_sprites(ListOptions(prefix="sb-<run fragment>-"))``, page by
  page: the API filters by **name prefix** (it has no label filter); the adapter then keeps the
  Sprites whose labels carry ``sandbox-bench-run=<run id>``. A listing entry that carries no
  labels at all (the API docs show list entries without them) is kept when its name is exactly
  ``<prefix><8 hex>``, i.e. on the name alone.
* ``exec``: ``sprite.run(*argv, capture_output=True, timeout=timeout_s)``: one **WebSocket per
  command** (``GET /v1/sprites/{name}/exec?cmd=...``, binary frames tagged with a stream id), so
  each exec pays a TCP (+TLS) and WebSocket handshake; the SDK's multiplexed ``control_mode`` is
  off. A string command runs as ``/bin/sh -c <command>``, an argv list as given, in the server's
  default working directory. stdout and stderr arrive **separately**. The exit code comes in a
  one-byte frame (0-255). The SDK enforces ``timeout_s`` client-side (``asyncio.wait_for``) and
  closes the socket; that raises OperationTimeout (what happens to the process on the Sprite
  after the socket closes is the server's business). A non-zero exit is data.
* ``write_file`` / ``read_file``: ``sprite.filesystem().path(p).write_bytes(data)`` (``PUT
  .../fs/write``, parents created, mode 0644) and ``.read_bytes()`` (``GET .../fs/read``). Bytes
  are exact both ways.
* ``checkpoint``: ``sprite.create_checkpoint(comment)`` (``POST .../checkpoint``, NDJSON progress):
  the **filesystem only** (the writable overlay; no memory, no processes), taken live: the Sprite
  keeps running. The SDK returns the progress messages, not an id, so the adapter then calls
  ``sprite.list_checkpoints()`` (newest first) and takes the entry carrying its own unique
  comment. Both calls happen inside ``checkpoint``, so its measured time is both: that is what a
  user must do to get a restorable id. ``CheckpointRef.id`` is the checkpoint id (``v1``, ...).
  An ``error`` event in the stream raises ProviderError.
* ``restore``: ``sprite.restore_checkpoint(id)`` (``POST .../checkpoints/{id}/restore``): **in
  place**. The same Sprite's filesystem is rewound and its running processes are stopped; the
  call returns the **same** Sandbox handle. Sprites' docs say restore is asynchronous (the
  environment restarts after the call returns), so the first exec after it, measured separately,
  holds the rest of the restore.
* ``delete_checkpoint``: nothing. sprites-py 0.7.2 has no call to delete a checkpoint; a
  Sprite's checkpoints go when the Sprite is destroyed.
* ``pause`` / ``resume``: **unsupported**. Sprites sleep when idle (``warm``, then ``cold``) and
  wake on the next request; there is no pause API (PauseKind.AUTO_SLEEP). The idle_wake
  workload measures the wake.
* ``destroy``: ``sprite.destroy()`` (``DELETE /v1/sprites/{name}``); 404 counts as destroyed.

Client: the token only from ``SPRITES_TOKEN``; the endpoint from the ``api_url`` setting, else
``SPRITES_API_URL``, else ``https://api.sprites.dev``, both given to the ``AsyncSpritesClient``
constructor (the SDK reads no variable for either). Retries: none; sprites-py has **no retry
logic** (httpx's default transport; the exec WebSocket is opened once). Client signals: unless
``SPRITES_CLIENT_SIGNALS`` is ``off`` (or ``0``/``false``/``no``/``disabled``), the SDK adds
``Fly-Client-*`` attribution headers to every request, decided once per process when the first
client is built (in ``open()``, outside any measurement); the adapter records the effective
state in ``environment()`` and does not change the process environment.

Errors: the SDK drops the HTTP status from some exceptions (filesystem errors keep only the
body, REST errors keep it only in the message), so an httpx response hook added to the SDK's own
httpx client notes each response's status and ``Retry-After`` for the translating boundary
(observation only: requests are not changed); a 429's ``retry_after_s`` may also come from the
body's ``retry_after_seconds``. Client-side timeouts are OperationTimeout, transport failures
Unavailable, unreadable answers ProtocolError.

Settings: :class:`SpritesSettings` (each key declared with its help; unknown keys refused).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sprites import AsyncSprite, AsyncSpritesClient, ListOptions, SpriteConfig
from sprites import exceptions as sx
from websockets.exceptions import InvalidStatus, WebSocketException

from providers import base, errors
from providers.base import RUN_LABEL, Op, Sandbox, SandboxSpec
from providers.sdk import (
    HTTP_STATUS,
    Handle,
    Observed,
    SDKProvider,
    SDKSettings,
    observe_httpx,
    on,
    retry_after_s,
    sdk_timeout,
)
from providers.settings import setting

TOKEN_ENV = "SPRITES_TOKEN"
API_URL_ENV = "SPRITES_API_URL"
SIGNALS_ENV = "SPRITES_CLIENT_SIGNALS"
DEFAULT_API_URL = "https://api.sprites.dev"
#: The Sprite user's home: writable, and part of the overlay a checkpoint captures.
SCRATCH_DIR = "/home/sprite"
NAME_PREFIX = "sb"
FRAGMENT_MAX = 40
SUFFIX_HEX = 8
LIST_PAGE = 50  # the API's maximum page size
NO_PAUSE = "sprites sleep when idle and wake on the next request; no pause API"


@dataclass(frozen=True, kw_only=True)
class SpritesSettings(SDKSettings):
    region: str | None = setting(None, help="region sent in SpriteConfig")
    runtime: str | None = setting(None, help="runtime when the spec names no template")
    wait_for_capacity: bool = setting(
        False, help="queue when the API is full instead of refusing at once"
    )
    send_spec: bool = setting(True, help="send the spec's ram/cpus/storage in SpriteConfig")
    sdk_timeout_s: float = sdk_timeout(30.0, "the SDK's REST timeout (its create always uses 120)")
    checkpoint_timeout_s: float = sdk_timeout(300.0, "timeout of checkpoint and restore")


# -- names ----------------------------------------------------------------------------------


def run_fragment(run_id: str) -> str:
    """The DNS-safe part of a Sprite name that identifies the run."""
    fragment = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    return fragment[:FRAGMENT_MAX].strip("-") or "run"


def run_prefix(run_id: str) -> str:
    return f"{NAME_PREFIX}-{run_fragment(run_id)}-"


def sprite_name(run_id: str) -> str:
    """``sb-<run fragment>-<8 hex>``: a lowercase DNS label of at most 52 characters."""
    return run_prefix(run_id) + secrets.token_hex(SUFFIX_HEX // 2)


# -- the adapter ----------------------------------------------------------------------------


class SpritesProvider(SDKProvider[AsyncSpritesClient]):
    id = "sprites"
    sdk_packages = ("sprites-py",)
    required_env = (TOKEN_ENV,)
    Settings = SpritesSettings
    config: SpritesSettings
    endpoint_env = API_URL_ENV
    ID_ATTRIBUTE = "name"  # the name is the id in every later call
    default_endpoint = DEFAULT_API_URL
    CLOSE = "aclose"
    #: What sprites-py 0.7.2 retries, for the manifest: nothing.
    SDK_RETRIES = (
        "none: sprites-py 0.7.2 has no retry logic; its httpx clients use the default transport "
        "(retries=0) and each exec opens its WebSocket once"
    )
    #: REST errors keep the status only in their message: "... (status 503)".
    STATUS_IN_MESSAGE = r"\(status (\d{3})\)"
    ERRORS = (
        HTTP_STATUS,
        # A body httpx cannot decode, or a non-error answer instead of the WebSocket upgrade:
        # the SDK wraps both in NetworkError, but the provider answered, unreadably.
        on(httpx.DecodingError, error=errors.ProtocolError),
        on(InvalidStatus, error=errors.ProtocolError, when=lambda e: e.response.status_code < 400),
        on(sx.AuthenticationError, error=errors.AuthError),
        on(sx.NotFoundError, sx.FileNotFoundError_, error=errors.NotFound),
        on(sx.TimeoutError, httpx.TimeoutException, TimeoutError, error=errors.OperationTimeout),
        on(
            sx.NetworkError,
            httpx.TransportError,
            WebSocketException,
            OSError,
            error=errors.Unavailable,
        ),
        # json.JSONDecodeError is a ValueError; a missing key in an answer is a KeyError.
        on(ValueError, KeyError, TypeError, error=errors.ProtocolError),
    )

    _status_hook = "not opened yet"

    def new_client(self) -> AsyncSpritesClient:
        # Building the first client (in open()) also runs the SDK's one-off client-signals
        # detection, there rather than inside the first measured call.
        client = AsyncSpritesClient(
            token=os.environ.get(TOKEN_ENV, ""),
            base_url=self.endpoint,
            timeout=self.config.sdk_timeout_s,
            control_mode=False,
        )
        # The SDK exposes no public handle on its httpx client.
        observed = observe_httpx(getattr(client, "_client", None))
        self._status_hook = "on" if observed else "unavailable (statuses from messages)"
        return client

    def capabilities(self) -> base.Capabilities:
        return self.capable(
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.IN_PLACE,
            pause_kind=base.PauseKind.AUTO_SLEEP,
            isolation="Fly.io Sprite: a dedicated microVM per Sprite (hardware isolation)",
            scratch_dir=SCRATCH_DIR,
            unsupported={
                Op.PAUSE: NO_PAUSE,
                Op.RESUME: NO_PAUSE,
                Op.FORK: "the Sprites API has no fork",
            },
            notes={
                "stderr": "separate from stdout (WebSocket stream ids 1 and 2)",
                "exec": "one WebSocket per command (control_mode off): each exec includes a "
                "TCP/TLS/WebSocket handshake; strings run as /bin/sh -c <cmd>, argv as given; "
                "exit code is one byte (0-255); timeout enforced client-side by the SDK",
                "resources": "SpriteConfig(ram_mb, cpus, storage_gb) is sent (send_spec), but "
                "the billing docs describe a fixed 8 vCPU / 4 GB shape: the spec may be ignored",
                "checkpoint": "create_checkpoint(comment): filesystem only, live; the SDK "
                "returns progress messages, so the id is read with list_checkpoints() in the "
                "same measured call",
                "restore": "restore_checkpoint(id): in place, same Sprite; running processes "
                "stop; the environment restarts after the call returns (first exec waits)",
                "delete_checkpoint": "no SDK call: checkpoints go with the Sprite",
                "pause": NO_PAUSE,
                "lifetime": "no TTL: a Sprite lives until destroyed (it hibernates when idle)",
                "template": "SandboxSpec.template is sent as the SDK's runtime",
                "labels": f'"key=value" strings; the run label is "{RUN_LABEL}=<run id>"',
                "list": "server-side name-prefix filter sb-<run fragment>-, then the run label "
                "(the API has no label filter)",
                "retries": "none in the SDK",
            },
        )

    def sdk_environment(self) -> dict[str, Any]:
        return {
            "exec_transport": "one WebSocket per command (control_mode=False)",
            "client_signals": _client_signals(),
            "status_hook": self._status_hook,
        }

    def http_status(
        self, chain: Sequence[BaseException], observed: Observed
    ) -> tuple[int | None, float | None]:
        for exc in chain:
            if isinstance(exc, sx.APIError) and exc.status_code:
                retry = exc.get_retry_after_seconds()
                return exc.status_code, float(retry) if retry else retry_after_s(
                    observed.retry_after
                )
        return super().http_status(chain, observed)

    def retry_after(self, chain: Sequence[BaseException]) -> float | None:
        """``retry_after_seconds`` from a JSON error body the SDK put into its message."""
        for exc in chain:
            text = str(exc)
            start = text.find("{")
            if start < 0:
                continue
            try:
                body = json.loads(text[start:])
            except ValueError:
                continue
            if isinstance(body, dict) and isinstance(body.get("retry_after_seconds"), int | float):
                return float(body["retry_after_seconds"])
        return None

    # -- operations -------------------------------------------------------------------------

    async def attach(self, client: AsyncSpritesClient, sandbox_id: str) -> AsyncSprite:
        return client.sprite(sandbox_id)  # a handle only; no I/O

    async def create(self, spec: SandboxSpec) -> Sandbox:
        name = sprite_name(str(spec.labels.get(RUN_LABEL, "")))
        labels = [f"{key}={value}" for key, value in spec.labels.items()]
        config: SpriteConfig | None = None
        if self.config.send_spec:
            config = SpriteConfig(
                ram_mb=int(spec.memory_mb),
                cpus=max(1, math.ceil(spec.cpus)),
                region=self.config.region,
                storage_gb=math.ceil(spec.disk_mb / 1024) if spec.disk_mb else None,
            )
        elif self.config.region:
            config = SpriteConfig(region=self.config.region)
        runtime, wait = spec.template or self.config.runtime, self.config.wait_for_capacity
        return await self.started(
            Op.CREATE,
            lambda c: c.create_sprite(
                name, config=config, labels=labels, wait_for_capacity=wait, runtime=runtime
            ),
            labels=spec.labels,
            lifetime_s=spec.lifetime_s,
        )

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        argv = self.argv(command)
        async with self.calling(sandbox, Op.EXEC) as handle:
            done = await handle.sdk.run(*argv, capture_output=True, timeout=timeout_s)
        return self.exec_result(done.returncode, done.stdout, done.stderr)

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        target = (await self.handle(sandbox, Op.WRITE_FILE)).sdk.filesystem().path(path)
        async with self.translating(Op.WRITE_FILE):
            await target.write_bytes(bytes(data))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        source = (await self.handle(sandbox, Op.READ_FILE)).sdk.filesystem().path(path)
        async with self.translating(Op.READ_FILE):
            return self.file_bytes(await source.read_bytes())

    async def delete(self, sandbox: Sandbox, handle: Handle[AsyncSpritesClient]) -> None:
        await handle.sdk.destroy()

    async def list_sandboxes(self, run_id: str) -> list[str]:
        prefix, wanted = run_prefix(run_id), f"{RUN_LABEL}={run_id}"
        bare = re.compile(re.escape(prefix) + f"[0-9a-f]{{{SUFFIX_HEX}}}")
        found: list[str] = []
        token: str | None = None
        async with self.main(Op.LIST) as client:
            while True:
                page = await client.list_sprites(
                    ListOptions(prefix=prefix, max_results=LIST_PAGE, continuation_token=token)
                )
                for info in page.sprites:
                    labels = list(info.labels or [])
                    if wanted in labels or (not labels and bare.fullmatch(info.name)):
                        found.append(info.name)
                if not page.has_more or not page.next_continuation_token:
                    return sorted(found)
                token = page.next_continuation_token

    async def checkpoint(self, sandbox: Sandbox) -> base.CheckpointRef:
        comment = f"sandbox-bench {uuid.uuid4().hex[:20]}"
        timeout = self.config.checkpoint_timeout_s
        async with self.calling(sandbox, Op.CHECKPOINT) as handle:
            messages = list(await handle.sdk.create_checkpoint(comment, timeout=timeout))
            self._raise_stream_error(messages, Op.CHECKPOINT)
            listed = await handle.sdk.list_checkpoints()
        checkpoint_id = self._pick_checkpoint(listed, comment, messages)
        return base.CheckpointRef(
            id=checkpoint_id, provider=self.id, sandbox_id=sandbox.id, native=sandbox
        )

    def _pick_checkpoint(self, listed: list[Any], comment: str, messages: list[Any]) -> str:
        mine = [c for c in listed if getattr(c, "comment", None) == comment]
        if mine:
            return str(mine[0].id)
        # No comment came back: the id the complete event names, else the newest.
        named = {
            m.group(1)
            for message in messages
            if getattr(message, "type", "") == "complete"
            and (m := re.search(r"\b(v\d+)\b", str(getattr(message, "data", "") or "")))
        }
        for checkpoint in listed:
            if checkpoint.id in named:
                return str(checkpoint.id)
        if listed:
            return str(max(listed, key=lambda c: c.create_time).id)
        empty = "checkpoint reported no error but list_checkpoints() is empty"
        raise self.error(errors.ProtocolError, Op.CHECKPOINT, empty)

    def _raise_stream_error(self, messages: Iterable[Any], operation: str) -> None:
        """An error event is the provider's error; a stream with neither an error nor a
        ``complete`` event is a ProtocolError: the SDK drops the lines it cannot parse, so an
        unreadable 200 reads as an empty stream, and "no error" is not "done"."""
        types = []
        for message in messages:
            types.append(getattr(message, "type", ""))
            if types[-1] == "error":
                detail = getattr(message, "error", None) or getattr(message, "data", None)
                failed = f"{operation} failed: {detail or 'error event without detail'}"
                raise self.error(errors.ProviderError, operation, failed)
        if "complete" not in types:
            said = ", ".join(t or "?" for t in types) or "no event it could read"
            unconfirmed = f"{operation} answered 200 without a complete event ({said})"
            raise self.error(errors.ProtocolError, operation, unconfirmed)

    async def restore(self, ref: base.CheckpointRef) -> Sandbox:
        sandbox = ref.native if isinstance(ref.native, Sandbox) else None
        sandbox = sandbox or Sandbox(id=ref.sandbox_id, provider=self.id)
        async with self.calling(sandbox, Op.RESTORE) as handle:
            stream = await handle.sdk.restore_checkpoint(
                ref.id, timeout=self.config.checkpoint_timeout_s
            )
            self._raise_stream_error(list(stream), Op.RESTORE)
        return self.holding(sandbox, handle)  # in place: the same Sprite, the same handle

    async def delete_checkpoint(self, ref: base.CheckpointRef) -> None:
        """Nothing to do: sprites-py 0.7.2 cannot delete a checkpoint (see module docstring)."""


def _client_signals() -> str:
    """Whether the SDK sends Fly-Client-* attribution headers in this process."""
    try:
        from sprites._signals import signal_headers  # the SDK's own (cached) decision

        names = sorted(k for k in signal_headers() if k.lower().startswith("fly-client-"))
    except Exception as exc:  # noqa: BLE001 - only a manifest fact; never fail on it
        return f"unknown ({type(exc).__name__})"
    if not names:
        return f"off ({SIGNALS_ENV}={os.environ.get(SIGNALS_ENV, '')!r} or package missing)"
    return f"on: {', '.join(names)} (set {SIGNALS_ENV}=off to disable)"


__all__ = ["SCRATCH_DIR", "SpritesProvider", "SpritesSettings", "run_prefix", "sprite_name"]
