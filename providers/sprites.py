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

Client settings: the token only from ``SPRITES_TOKEN``; the endpoint from the ``api_url`` setting,
else ``SPRITES_API_URL``, else ``https://api.sprites.dev``. The SDK reads no environment variable
for either; both go to the ``AsyncSpritesClient`` constructor. Retries: sprites-py has **no retry
logic** anywhere (httpx's default transport, ``retries=0``; the exec WebSocket is opened once), so
nothing is retried inside a measurement. Client signals: unless ``SPRITES_CLIENT_SIGNALS`` is
``off`` (or ``0``/``false``/``no``/``disabled``) in the environment, the SDK adds ``Fly-Client-*``
attribution headers to every request; the adapter does not change the process environment, it
records the effective state in ``environment()``. The SDK detects them once per process, when the
first client is built, which ``open()`` does, outside any measurement.

Errors: every SDK call goes through one boundary (:meth:`SpritesProvider._call`). The SDK drops
the HTTP status from some exceptions (filesystem errors keep only the body, REST errors keep it
only in the message), so the adapter reads each response's status and ``Retry-After`` through an
httpx response hook added to the SDK's own httpx client (observation only: the requests are not
changed). 401/403 -> AuthError, 404 -> NotFound, 429 -> QuotaOrRateLimited (``retry_after_s``
from ``Retry-After`` or the body's ``retry_after_seconds``), 408/504 and client-side timeouts ->
OperationTimeout, 5xx and transport failures -> Unavailable, unreadable answers -> ProtocolError.

Settings (unknown keys are refused): ``api_url``; ``connection`` (``"reuse"``: one SDK client per
provider; ``"per_iteration"``: a fresh client, hence fresh HTTP connections, per created Sandbox,
used for every operation on it and closed when it is destroyed); ``region``; ``runtime``;
``wait_for_capacity`` (bool, default false: the API refuses rather than queues when full);
``send_spec`` (bool, default true); ``sdk_timeout_s`` (the SDK's REST timeout, default 30; its
create call always uses 120 s); ``checkpoint_timeout_s`` (checkpoint and restore, default 300).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from sprites import AsyncSprite, AsyncSpritesClient, ListOptions, SpriteConfig
from sprites.exceptions import (
    APIError,
    AuthenticationError,
    FileNotFoundError_,
    NetworkError,
    NotFoundError,
)
from sprites.exceptions import TimeoutError as SpritesTimeoutError
from websockets.exceptions import InvalidStatus, WebSocketException

from providers.base import (
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
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    Unavailable,
    Unsupported,
    exception_chain,
    from_http_status,
)

T = TypeVar("T")

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

CONNECTION_MODES = ("reuse", "per_iteration")
SETTINGS = frozenset(
    {
        "api_url",
        "connection",
        "region",
        "runtime",
        "wait_for_capacity",
        "send_spec",
        "sdk_timeout_s",
        "checkpoint_timeout_s",
    }
)
NO_PAUSE = "sprites sleep when idle and wake on the next request; no pause API"

#: What sprites-py 0.7.2 retries, for the manifest: nothing.
SDK_RETRIES = (
    "none: sprites-py 0.7.2 has no retry logic; its httpx clients use the default transport "
    "(retries=0) and each exec opens its WebSocket once"
)


# -- observing HTTP statuses the SDK drops --------------------------------------------------


@dataclass
class _Seen:
    """The last HTTP response of one adapter call, as the response hook saw it."""

    status: int | None = None
    retry_after: str | None = None


_SEEN: ContextVar[_Seen | None] = ContextVar("sprites_adapter_seen", default=None)


async def _forget_response(request: httpx.Request) -> None:
    seen = _SEEN.get()
    if seen is not None:
        seen.status, seen.retry_after = None, None


async def _remember_response(response: httpx.Response) -> None:
    seen = _SEEN.get()
    if seen is not None:
        seen.status = response.status_code
        seen.retry_after = response.headers.get("retry-after")


def _observe(client: AsyncSpritesClient) -> bool:
    """Add the status-recording hooks to the SDK client's httpx client; False if it has none."""
    http = getattr(client, "_client", None)  # the SDK exposes no public handle on it
    if not isinstance(http, httpx.AsyncClient):
        return False
    hooks = http.event_hooks
    http.event_hooks = {
        "request": [*hooks.get("request", []), _forget_response],
        "response": [*hooks.get("response", []), _remember_response],
    }
    return True


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


class SpritesProvider(Provider):
    id = "sprites"
    sdk_packages = ("sprites-py",)
    required_env = (TOKEN_ENV,)

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown sprites setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(SETTINGS))})"
            )
        self._connection = str(self.settings.get("connection", "reuse"))
        if self._connection not in CONNECTION_MODES:
            raise ValueError(f"connection must be one of {', '.join(CONNECTION_MODES)}")
        self._api_url_setting = optional_str(self.settings, "api_url")
        if self._api_url_setting and urlsplit(self._api_url_setting).scheme not in (
            "http",
            "https",
        ):
            raise ValueError("api_url must be an http:// or https:// URL")
        self._region = optional_str(self.settings, "region")
        self._runtime = optional_str(self.settings, "runtime")
        self._wait_for_capacity = _bool(self.settings, "wait_for_capacity", False)
        self._send_spec = _bool(self.settings, "send_spec", True)
        self._sdk_timeout_s = _seconds(self.settings, "sdk_timeout_s", 30.0)
        self._checkpoint_timeout_s = _seconds(self.settings, "checkpoint_timeout_s", 300.0)
        self._client: AsyncSpritesClient | None = None
        self._owned: set[AsyncSpritesClient] = set()
        self._status_hook = "not opened yet"

    # -- set-up and description -----------------------------------------------------------

    @property
    def _endpoint(self) -> str:
        return self._api_url_setting or os.environ.get(API_URL_ENV) or DEFAULT_API_URL

    async def open(self) -> None:
        if not os.environ.get(TOKEN_ENV):
            raise AuthError(f"set {TOKEN_ENV} to use sprites", provider=self.id, operation="open")
        if self._client is None:
            # Building the first client also runs the SDK's one-off client-signals detection,
            # here rather than inside the first measured call.
            self._client = self._new_client()

    async def close(self) -> None:
        clients = [*self._owned, *([self._client] if self._client else [])]
        self._owned.clear()
        self._client = None
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _new_client(self) -> AsyncSpritesClient:
        client = AsyncSpritesClient(
            token=os.environ.get(TOKEN_ENV, ""),
            base_url=self._endpoint,
            timeout=self._sdk_timeout_s,
            control_mode=False,
        )
        self._status_hook = "on" if _observe(client) else "unavailable (statuses from messages)"
        return client

    def capabilities(self) -> Capabilities:
        return Capabilities(
            operations=REQUIRED_OPS | {Op.CHECKPOINT, Op.RESTORE},
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.IN_PLACE,
            pause_kind=PauseKind.AUTO_SLEEP,
            isolation="Fly.io Sprite: a dedicated microVM per Sprite (hardware isolation)",
            scratch_dir=SCRATCH_DIR,
            unsupported={
                str(Op.PAUSE): NO_PAUSE,
                str(Op.RESUME): NO_PAUSE,
                str(Op.FORK): "the Sprites API has no fork",
            },
            notes={
                "stderr": "separate from stdout (WebSocket stream ids 1 and 2)",
                "exec": (
                    "one WebSocket per command (control_mode off): each exec includes a "
                    "TCP/TLS/WebSocket handshake; strings run as /bin/sh -c <cmd>, argv as "
                    "given; exit code is one byte (0-255); timeout enforced client-side by "
                    "the SDK"
                ),
                "resources": (
                    "SpriteConfig(ram_mb, cpus, storage_gb) is sent (send_spec), but the "
                    "billing docs describe a fixed 8 vCPU / 4 GB shape: the spec may be ignored"
                ),
                "checkpoint": (
                    "create_checkpoint(comment): filesystem only, live; the SDK returns "
                    "progress messages, so the id is read with list_checkpoints() in the same "
                    "measured call"
                ),
                "restore": (
                    "restore_checkpoint(id): in place, same Sprite; running processes stop; "
                    "the environment restarts after the call returns (first exec waits)"
                ),
                "delete_checkpoint": "no SDK call: checkpoints go with the Sprite",
                "pause": NO_PAUSE,
                "lifetime": "no TTL: a Sprite lives until destroyed (it hibernates when idle)",
                "template": "SandboxSpec.template is sent as the SDK's runtime",
                "labels": f'"key=value" strings; the run label is "{RUN_LABEL}=<run id>"',
                "list": (
                    "server-side name-prefix filter sb-<run fragment>-, then the run label "
                    "(the API has no label filter)"
                ),
                "connection": self._connection,
                "retries": "none in the SDK",
            },
        )

    def environment(self) -> dict[str, Any]:
        return {
            "sdk_versions": sdk_versions(self.sdk_packages),
            "endpoint": url_without_secrets(self._endpoint),
            "connection": self._connection,
            "sdk_retries": SDK_RETRIES,
            "exec_transport": "one WebSocket per command (control_mode=False)",
            "client_signals": _client_signals(),
            "status_hook": self._status_hook,
            "region": self._region,
            "runtime": self._runtime,
            "wait_for_capacity": self._wait_for_capacity,
            "send_spec": self._send_spec,
            "sdk_timeout_s": self._sdk_timeout_s,
            "checkpoint_timeout_s": self._checkpoint_timeout_s,
        }

    # -- helpers ----------------------------------------------------------------------------

    def _main_client(self, operation: str) -> AsyncSpritesClient:
        if self._client is None:
            raise ProviderError("provider is not open", provider=self.id, operation=operation)
        return self._client

    def _sprite(self, sandbox: Sandbox, operation: str) -> AsyncSprite:
        if isinstance(sandbox.native, AsyncSprite):
            return sandbox.native
        # A bare id (leak sweep, reaper): a handle on the main client; no I/O.
        return self._main_client(operation).sprite(sandbox.id)

    async def _release(self, sprite: AsyncSprite) -> None:
        client = sprite.client
        if client in self._owned:
            self._owned.discard(client)
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """The one boundary where SDK exceptions become :mod:`providers.errors`."""
        seen = _Seen()
        token = _SEEN.set(seen)
        try:
            return await fn()
        except ProviderError:
            raise
        except Exception as exc:
            raise _translate(exc, seen, self.id, operation) from exc
        finally:
            _SEEN.reset(token)

    # -- required operations ----------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Sandbox:
        name = sprite_name(str(spec.labels.get(RUN_LABEL, "")))
        labels = [f"{key}={value}" for key, value in spec.labels.items()]
        config: SpriteConfig | None = None
        if self._send_spec:
            config = SpriteConfig(
                ram_mb=int(spec.memory_mb),
                cpus=max(1, math.ceil(spec.cpus)),
                region=self._region,
                storage_gb=math.ceil(spec.disk_mb / 1024) if spec.disk_mb else None,
            )
        elif self._region:
            config = SpriteConfig(region=self._region)
        runtime = spec.template or self._runtime
        if self._connection == "per_iteration":
            client = self._new_client()
            self._owned.add(client)
        else:
            client = self._main_client(Op.CREATE)
        try:
            sprite = await self._call(
                Op.CREATE,
                lambda: client.create_sprite(
                    name,
                    config=config,
                    labels=labels,
                    wait_for_capacity=self._wait_for_capacity,
                    runtime=runtime,
                ),
            )
        except BaseException:
            if client in self._owned:
                self._owned.discard(client)
                with contextlib.suppress(Exception):
                    await client.aclose()
            raise
        return Sandbox(id=sprite.name, provider=self.id, native=sprite)

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        sprite = self._sprite(sandbox, Op.EXEC)
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("exec needs a command")
        done = await self._call(
            Op.EXEC, lambda: sprite.run(*argv, capture_output=True, timeout=timeout_s)
        )
        if not isinstance(done.returncode, int):
            raise ProtocolError(
                f"exec answer carries no exit code ({done.returncode!r})",
                provider=self.id,
                operation=Op.EXEC,
            )
        return ExecResult(
            exit_code=done.returncode, stdout=done.stdout or b"", stderr=done.stderr or b""
        )

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        target = self._sprite(sandbox, Op.WRITE_FILE).filesystem().path(path)
        payload = bytes(data)
        await self._call(Op.WRITE_FILE, lambda: target.write_bytes(payload))

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        source = self._sprite(sandbox, Op.READ_FILE).filesystem().path(path)
        data = await self._call(Op.READ_FILE, source.read_bytes)
        if not isinstance(data, bytes | bytearray):
            raise ProtocolError(
                f"read returned {type(data).__name__}, not bytes",
                provider=self.id,
                operation=Op.READ_FILE,
            )
        return bytes(data)

    async def destroy(self, sandbox: Sandbox) -> None:
        sprite = self._sprite(sandbox, Op.DESTROY)
        with contextlib.suppress(NotFound):  # already gone: destroy is idempotent
            await self._call(Op.DESTROY, sprite.destroy)
        await self._release(sprite)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        client = self._main_client(Op.LIST)
        prefix = run_prefix(run_id)
        wanted = f"{RUN_LABEL}={run_id}"
        bare = re.compile(re.escape(prefix) + f"[0-9a-f]{{{SUFFIX_HEX}}}")

        async def collect() -> list[str]:
            found: list[str] = []
            token: str | None = None
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

        return await self._call(Op.LIST, collect)

    # -- optional operations ----------------------------------------------------------------

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        sprite = self._sprite(sandbox, Op.CHECKPOINT)
        comment = f"sandbox-bench {uuid.uuid4().hex[:20]}"

        async def take() -> str:
            stream = await sprite.create_checkpoint(comment, timeout=self._checkpoint_timeout_s)
            messages = list(stream)
            self._raise_stream_error(messages, Op.CHECKPOINT)
            listed = await sprite.list_checkpoints()
            return self._pick_checkpoint(listed, comment, messages)

        checkpoint_id = await self._call(Op.CHECKPOINT, take)
        return CheckpointRef(
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
        raise ProtocolError(
            "checkpoint reported no error but list_checkpoints() is empty",
            provider=self.id,
            operation=Op.CHECKPOINT,
        )

    def _raise_stream_error(self, messages: Iterable[Any], operation: str) -> None:
        for message in messages:
            if getattr(message, "type", "") == "error":
                detail = getattr(message, "error", None) or getattr(message, "data", None)
                raise ProviderError(
                    f"{operation} failed: {detail or 'error event without detail'}",
                    provider=self.id,
                    operation=operation,
                )

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        if isinstance(ref.native, Sandbox):
            sandbox = ref.native
        else:
            sandbox = Sandbox(id=ref.sandbox_id, provider=self.id)
        sprite = self._sprite(sandbox, Op.RESTORE)

        async def rewind() -> None:
            stream = await sprite.restore_checkpoint(ref.id, timeout=self._checkpoint_timeout_s)
            self._raise_stream_error(list(stream), Op.RESTORE)

        await self._call(Op.RESTORE, rewind)
        # In place: the same Sprite, so the same handle.
        if sandbox.native is None:
            return Sandbox(id=sandbox.id, provider=self.id, native=sprite)
        return sandbox

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        """Nothing to do: sprites-py 0.7.2 cannot delete a checkpoint (see module docstring)."""

    async def pause(self, sandbox: Sandbox) -> None:
        raise Unsupported(NO_PAUSE, provider=self.id, operation=Op.PAUSE)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        raise Unsupported(NO_PAUSE, provider=self.id, operation=Op.RESUME)


# -- error translation ------------------------------------------------------------------------

_STATUS_IN_MESSAGE = re.compile(r"\(status (\d{3})\)")


def _status(chain: list[BaseException], seen: _Seen) -> tuple[int | None, float | None]:
    """The HTTP status behind a failure, and the retry delay the provider asked for."""
    for exc in chain:
        if isinstance(exc, APIError) and exc.status_code:
            retry = exc.get_retry_after_seconds()
            return exc.status_code, float(retry) if retry else _retry_after(seen.retry_after)
    if seen.status is not None and seen.status >= 400:
        return seen.status, _retry_after(seen.retry_after) or _body_retry_after(chain)
    for exc in chain:
        found = _STATUS_IN_MESSAGE.search(str(exc))
        if found:
            return int(found.group(1)), _body_retry_after(chain)
    return None, None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _body_retry_after(chain: list[BaseException]) -> float | None:
    """``retry_after_seconds`` from a JSON error body the SDK put into its message."""
    for exc in chain:
        text = str(exc)
        start = text.find("{")
        if start < 0:
            continue
        with contextlib.suppress(ValueError):
            body = json.loads(text[start:])
            if isinstance(body, dict) and isinstance(body.get("retry_after_seconds"), int | float):
                return float(body["retry_after_seconds"])
    return None


def _translate(exc: BaseException, seen: _Seen, provider: str, operation: str) -> ProviderError:
    """Map an SDK (or transport) exception to the most specific error of our tree."""
    chain = exception_chain(exc)
    message = str(exc) or type(exc).__name__
    kwargs = {"provider": provider, "operation": str(operation)}
    status, retry_after = _status(chain, seen)
    if status is not None:
        return from_http_status(status, message, retry_after_s=retry_after, **kwargs)
    if any(isinstance(e, httpx.DecodingError) for e in chain) or any(
        isinstance(e, InvalidStatus) and e.response.status_code < 400 for e in chain
    ):
        # A body httpx cannot decode, or a non-error answer instead of the WebSocket upgrade:
        # the SDK wraps both in NetworkError, but the provider answered, unreadably.
        return ProtocolError(message, **kwargs)
    if any(isinstance(e, AuthenticationError) for e in chain):
        return AuthError(message, **kwargs)
    if any(isinstance(e, NotFoundError | FileNotFoundError_) for e in chain):
        return NotFound(message, **kwargs)
    if any(
        isinstance(e, SpritesTimeoutError | httpx.TimeoutException | TimeoutError) for e in chain
    ):
        return OperationTimeout(message, **kwargs)
    if any(
        isinstance(e, NetworkError | httpx.TransportError | WebSocketException | OSError)
        for e in chain
    ):
        return Unavailable(message, **kwargs)
    if any(isinstance(e, ValueError | KeyError | TypeError) for e in chain):
        # json.JSONDecodeError is a ValueError; a missing key in an answer is a KeyError.
        return ProtocolError(message, **kwargs)
    return ProviderError(message, **kwargs)


# -- small helpers ----------------------------------------------------------------------------


def _bool(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _seconds(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{key} must be a number of seconds > 0")
    return float(value)


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


__all__ = ["SCRATCH_DIR", "SpritesProvider", "run_prefix", "sprite_name"]
