"""The base of every adapter that drives a provider's SDK: settings, clients, one error boundary.

An adapter on :class:`SDKProvider` keeps only what is its own: the module docstring saying what
each operation means on that provider, its native calls, and these declarations:

* ``Settings``: a frozen, keyword-only dataclass that subclasses :class:`SDKSettings` (which
  declares ``api_url`` and ``connection``) and declares every other key with
  :func:`providers.settings.setting`. The constructor parses the ``[providers.<id>]`` table with
  :func:`providers.settings.parse`, so unknown keys and bad values are refused the same way for
  every adapter: one line, a :class:`~providers.settings.SettingError` (a ValueError) naming
  ``providers.<id>.<key>``. The parsed instance is ``self.config``; its public keys go into
  ``environment()`` as they are.
* ``required_env`` (the credential variables, checked by ``open()`` with an AuthError naming
  the first one missing), ``endpoint_env`` and ``default_endpoint`` (the ``endpoint`` is the
  ``api_url`` setting, else that variable, else the default).
* ``new_client()`` and, when a client holds connections, ``close_client(client)``. The clients
  live in a :class:`ClientPool`: one shared client in connection mode ``reuse``; in
  ``per_iteration`` also a fresh client per created or restored sandbox (taken with
  :meth:`SDKProvider.new_sandbox_client`), closed when that sandbox is destroyed
  (:meth:`ClientPool.release`) or, at the latest, by ``close()``.
* ``ERRORS``: an ordered table of :func:`on` rules, each mapping SDK or transport exception
  classes (found anywhere in the exception's ``__cause__``/``__context__`` chain) and/or a
  message pattern to one class of :mod:`providers.errors`, with :data:`HTTP_STATUS` marking
  where an HTTP status, when one is known, decides instead (:func:`providers.errors.
  from_http_status`). :meth:`SDKProvider.http_status` finds that status; by default on the
  exceptions' ``status_code``/``status`` attribute and ``Retry-After`` header, else on the last
  response the adapter observed inside the call (:func:`observe_response`, for SDKs that drop
  the status). The first rule that matches wins; nothing matching is a plain ProviderError.
* ``SDK_RETRIES``: what the SDK retries on its own (a text or a table), recorded in the
  manifest by ``environment()`` (override :meth:`SDKProvider.sdk_retries` to add what was
  observed), plus any facts of its own in :meth:`SDKProvider.sdk_environment`.

Every SDK call runs inside ``async with self.translating(op):``, the one boundary where the
SDK's exceptions become :mod:`providers.errors` (chained: ``raise ... from exc``), the way
httpx's ``map_httpcore_exceptions`` maps httpcore's at its transport. Errors of our own tree
pass through unchanged; ``BaseException`` that is not an ``Exception`` (cancellation) too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from providers.base import (
    CheckpointRef,
    Command,
    ExecResult,
    Provider,
    Sandbox,
    SandboxSpec,
    sdk_versions,
    url_without_secrets,
)
from providers.errors import (
    AuthError,
    NotFound,
    ProtocolError,
    ProviderError,
    exception_chain,
    from_http_status,
)
from providers.settings import declared, parse, setting, to_table

C = TypeVar("C")


class ConnectionMode(StrEnum):
    """How SDK clients (and with them, usually, HTTP connections) are shared."""

    REUSE = "reuse"
    PER_ITERATION = "per_iteration"


@dataclass(frozen=True, kw_only=True)
class SDKSettings:
    """The keys every SDK adapter has; an adapter's ``Settings`` subclasses this."""

    api_url: str | None = setting(
        None,
        help="API endpoint (http:// or https://); else the provider's endpoint variable, "
        "else the SDK's default",
        private=True,  # may carry credentials; environment() records it scrubbed
    )
    connection: ConnectionMode = setting(
        ConnectionMode.REUSE,
        help="reuse: one SDK client for every sandbox; per_iteration: a fresh client per "
        "created or restored sandbox, closed when it is destroyed",
    )

    def __post_init__(self) -> None:
        for decl in declared(type(self)):
            # An empty string means "not set", as it did before settings were declared.
            if decl.optional and decl.kind is str and getattr(self, decl.name) == "":
                object.__setattr__(self, decl.name, None)
        if self.api_url is not None and urlsplit(self.api_url).scheme not in ("http", "https"):
            raise ValueError("api_url must be an http:// or https:// URL")


def sdk_timeout(default: float, help: str) -> Any:
    """Declare a timeout the SDK applies itself (seconds, > 0, at most a day)."""
    return setting(default, help=help, unit="s", minimum=0.001, maximum=86_400)


# -- clients ------------------------------------------------------------------------------------


class ClientPool(Generic[C]):
    """The SDK clients of one adapter: ``main`` (opened once) and those made per sandbox.

    In mode ``per_iteration`` :meth:`lease` makes a client per new sandbox and owns it until
    :meth:`release`; in ``reuse`` it hands out ``main``. Closing is best effort: a client that
    fails to close must not hide the result of the operation that released it.
    """

    def __init__(
        self,
        mode: ConnectionMode,
        make: Callable[[], C],
        close: Callable[[C], Awaitable[object]],
        *,
        provider: str,
    ) -> None:
        self.mode = mode
        self._make = make
        self._close = close
        self._provider = provider
        self.main: C | None = None
        self.owned: set[C] = set()

    def open(self) -> None:
        if self.main is None:
            self.main = self._make()

    def shared(self, operation: str) -> C:
        """The provider's main client; ProviderError before ``open()``."""
        if self.main is None:
            raise ProviderError(
                "provider is not open", provider=self._provider, operation=operation
            )
        return self.main

    def lease(self, operation: str) -> C:
        """The client a new sandbox will use."""
        main = self.shared(operation)
        if self.mode is not ConnectionMode.PER_ITERATION:
            return main
        client = self._make()
        self.owned.add(client)
        return client

    async def release(self, client: C) -> None:
        """Close ``client`` if this pool made it for one sandbox; the main client stays."""
        if client in self.owned:
            self.owned.discard(client)
            await self._close_quietly(client)

    async def close(self) -> None:
        clients = [*self.owned, *([self.main] if self.main is not None else [])]
        self.owned.clear()
        self.main = None
        for client in clients:
            await self._close_quietly(client)

    async def _close_quietly(self, client: C) -> None:
        with contextlib.suppress(Exception):
            await self._close(client)


# -- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRule:
    """One row of an adapter's error table (build it with :func:`on`)."""

    error: type[ProviderError]
    types: tuple[type[BaseException], ...] = ()
    message: re.Pattern[str] | None = None
    when: Callable[[BaseException], bool] | None = None

    def matches(self, chain: Sequence[BaseException], message: str) -> bool:
        if self.message is not None and not self.message.search(message):
            return False
        if not self.types and self.when is None:
            return True
        return any(
            (not self.types or isinstance(e, self.types)) and (self.when is None or self.when(e))
            for e in chain
        )


def on(
    *types: type[BaseException],
    error: type[ProviderError],
    message: str | re.Pattern[str] | None = None,
    when: Callable[[BaseException], bool] | None = None,
) -> ErrorRule:
    """A rule: an exception of one of ``types`` anywhere in the chain (any exception when no
    type is given) for which ``when`` holds, and whose top-level message matches ``message``
    (a regular expression, searched), becomes ``error``."""
    pattern = re.compile(message) if isinstance(message, str) else message
    return ErrorRule(error=error, types=types, message=pattern, when=when)


class _HttpStatus:
    def __repr__(self) -> str:
        return "HTTP_STATUS"


#: In an error table: "here, an HTTP status (when one is known) decides the class".
HTTP_STATUS: Any = _HttpStatus()


@dataclass
class Observed:
    """The last HTTP response an adapter saw inside the current translating block."""

    status: int | None = None
    retry_after: str | None = None


_OBSERVED: ContextVar[Observed | None] = ContextVar("sandbox_bench_observed", default=None)


def observe_response(status: int | None, retry_after: str | None = None) -> None:
    """Note a response (or, with ``None``, a new request) for the current call's translation;
    for SDK event hooks. Outside a translating block it does nothing."""
    seen = _OBSERVED.get()
    if seen is not None:
        seen.status, seen.retry_after = status, retry_after


async def _forget_response(request: Any) -> None:
    observe_response(None)


async def _remember_response(response: Any) -> None:
    observe_response(response.status_code, response.headers.get("retry-after"))


def observe_httpx(http: Any) -> bool:
    """Add hooks to an SDK's ``httpx.AsyncClient`` that note every response for
    :func:`observe_response` (observation only: requests are not changed); False when ``http``
    is not one (duck-typed on ``event_hooks``, so httpx need not be installed here)."""
    hooks = getattr(http, "event_hooks", None)
    if not isinstance(hooks, Mapping):
        return False
    http.event_hooks = {
        "request": [*hooks.get("request", []), _forget_response],
        "response": [*hooks.get("response", []), _remember_response],
    }
    return True


def retry_after_s(value: Any) -> float | None:
    """Seconds from a ``Retry-After`` value (or a headers mapping holding one)."""
    if isinstance(value, Mapping):
        value = next((v for k, v in value.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Translating:
    """``with``/``async with`` body whose exceptions leave as :mod:`providers.errors`."""

    __slots__ = ("_operation", "_provider", "_token")

    def __init__(self, provider: SDKProvider[Any], operation: str) -> None:
        self._provider = provider
        self._operation = operation

    def __enter__(self) -> None:
        self._token = _OBSERVED.set(Observed())

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(exc, Exception) and not isinstance(exc, ProviderError):
                raise self._provider.translate(exc, self._operation) from exc
            return False
        finally:
            _OBSERVED.reset(self._token)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        return self.__exit__(kind, exc, tb)


# -- the base -----------------------------------------------------------------------------------


@dataclass
class Handle(Generic[C]):
    """What an adapter keeps per sandbox (``Sandbox.native``): the SDK's object, the client it
    belongs to, and what a restore from its checkpoints needs (its labels and lifetime)."""

    sdk: Any
    client: C
    labels: dict[str, str] = field(default_factory=dict)
    lifetime_s: int = SandboxSpec().lifetime_s


class SDKProvider(Provider, Generic[C]):
    """An adapter over a provider's SDK (see the module docstring for what it declares)."""

    Settings: ClassVar[type[SDKSettings]] = SDKSettings
    #: The variable that overrides the endpoint (None: only the ``api_url`` setting does).
    endpoint_env: ClassVar[str | None] = None
    default_endpoint: ClassVar[str] = ""
    #: The error table (see :func:`on` and :data:`HTTP_STATUS`).
    ERRORS: ClassVar[Sequence[ErrorRule | Any]] = (HTTP_STATUS,)
    #: What the SDK retries on its own, for the manifest.
    SDK_RETRIES: ClassVar[str | Mapping[str, str]] = ""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.config = parse(self.Settings, self.settings, where=f"providers.{self.id}")
        self.clients: ClientPool[C] = ClientPool(
            self.config.connection, self._make_client, self.close_client, provider=self.id
        )

    # -- what an adapter provides -----------------------------------------------------------

    def new_client(self) -> C:
        """A new SDK client (credentials from the environment, never logged)."""
        raise NotImplementedError

    async def close_client(self, client: C) -> None:
        """Close ``client``; by default there is nothing to close."""

    async def attach(self, client: C, sandbox_id: str) -> Any:
        """The SDK's object for a sandbox known only by id (leak sweeps, the reaper)."""
        raise NotImplementedError

    def sandbox_id(self, sdk: Any) -> str:
        """The id of the sandbox the SDK's object stands for."""
        return str(sdk.id)

    def sdk_retries(self) -> Any:
        return dict(self.SDK_RETRIES) if isinstance(self.SDK_RETRIES, Mapping) else self.SDK_RETRIES

    def sdk_environment(self) -> dict[str, Any]:
        """The adapter's own facts for the manifest (they win over the settings' values)."""
        return {}

    def http_status(
        self, chain: Sequence[BaseException], observed: Observed
    ) -> tuple[int | None, float | None]:
        """The HTTP error status behind a failure and the delay the provider asked for."""
        for exc in chain:
            for attr in ("status_code", "status"):
                status = getattr(exc, attr, None)
                if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
                    return status, retry_after_s(getattr(exc, "headers", None) or {})
        if observed.status is not None and observed.status >= 400:
            return observed.status, retry_after_s(observed.retry_after)
        return None, None

    # -- set-up and description -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        from_env = os.environ.get(self.endpoint_env) if self.endpoint_env else None
        return self.config.api_url or from_env or self.default_endpoint

    @property
    def connection(self) -> ConnectionMode:
        return self.config.connection

    def _make_client(self) -> C:
        with self.translating("open"):
            return self.new_client()

    async def open(self) -> None:
        for name in self.required_env:
            if not os.environ.get(name):
                raise AuthError(f"set {name} to use {self.id}", provider=self.id, operation="open")
        self.clients.open()

    async def close(self) -> None:
        await self.clients.close()

    def environment(self) -> dict[str, Any]:
        return {
            "sdk_versions": sdk_versions(self.sdk_packages),
            "endpoint": url_without_secrets(self.endpoint),
            "sdk_retries": self.sdk_retries(),
            **to_table(self.config),
            **self.sdk_environment(),
        }

    # -- the boundary -------------------------------------------------------------------------

    def translating(self, operation: str) -> _Translating:
        """``async with self.translating(op):`` around every SDK call (see the module
        docstring); a plain ``with`` works too, for synchronous SDK calls."""
        return _Translating(self, str(operation))

    @contextlib.asynccontextmanager
    async def new_sandbox_client(self, operation: str) -> AsyncIterator[C]:
        """The client a new sandbox will use, inside the boundary; if the block fails, a
        client made for it is closed again."""
        async with self.translating(operation):
            client = self.clients.lease(operation)
        try:
            async with self.translating(operation):
                yield client
        except BaseException:
            await self.clients.release(client)
            raise

    @contextlib.asynccontextmanager
    async def idempotent(self, operation: str, *, release: C | None = None) -> AsyncIterator[None]:
        """The boundary for a delete (destroy, delete_checkpoint): what is already gone
        (NotFound) counts as deleted; ``release``, a client this pool made for the sandbox, is
        closed afterwards."""
        try:
            with contextlib.suppress(NotFound):
                async with self.translating(operation):
                    yield
        finally:
            if release is not None:
                await self.clients.release(release)

    # -- per-sandbox handles ----------------------------------------------------------------

    async def started(
        self,
        operation: str,
        start: Callable[[C], Awaitable[Any]],
        *,
        labels: Mapping[str, str],
        lifetime_s: int,
    ) -> Sandbox:
        """A new sandbox from ``start(client)`` (the SDK's create or restore call), on the
        client :meth:`new_sandbox_client` gives it."""
        async with self.new_sandbox_client(operation) as client:
            sdk = await start(client)
        handle = Handle(sdk=sdk, client=client, labels=dict(labels), lifetime_s=lifetime_s)
        return Sandbox(id=self.sandbox_id(sdk), provider=self.id, native=handle)

    async def handle(self, sandbox: Sandbox, operation: str) -> Handle[C]:
        """The sandbox's handle; for a bare id, one on the main client (:meth:`attach`)."""
        if isinstance(sandbox.native, Handle):
            return sandbox.native
        client = self.clients.shared(operation)
        async with self.translating(operation):
            sdk = await self.attach(client, sandbox.id)
        labels = getattr(sdk, "labels", None)
        return Handle(
            sdk=sdk, client=client, labels=dict(labels) if isinstance(labels, Mapping) else {}
        )

    def holding(self, sandbox: Sandbox, handle: Handle[C]) -> Sandbox:
        """``sandbox`` itself when it already holds ``handle``, else a copy that does."""
        if sandbox.native is handle:
            return sandbox
        return Sandbox(id=sandbox.id, provider=self.id, native=handle)

    def checkpoint_ref(self, ref_id: Any, sandbox: Sandbox, handle: Handle[C]) -> CheckpointRef:
        """A reference to a checkpoint of ``sandbox`` that remembers its labels and lifetime,
        so that what a restore makes carries them (the run label above all)."""
        if not ref_id:
            raise ProtocolError(
                "checkpoint answer carries no id", provider=self.id, operation="checkpoint"
            )
        saved = {"labels": dict(handle.labels), "lifetime_s": handle.lifetime_s}
        return CheckpointRef(id=str(ref_id), provider=self.id, sandbox_id=sandbox.id, native=saved)

    @staticmethod
    def saved_labels(ref: CheckpointRef) -> tuple[dict[str, str], int]:
        """The labels and lifetime a checkpoint's sandbox had (see :meth:`checkpoint_ref`)."""
        saved = ref.native if isinstance(ref.native, dict) else {}
        lifetime_s = int(saved.get("lifetime_s") or SandboxSpec().lifetime_s)
        return dict(saved.get("labels") or {}), lifetime_s

    # -- answers every adapter checks the same way ------------------------------------------

    def exec_result(self, exit_code: Any, stdout: bytes, stderr: bytes) -> ExecResult:
        """An ExecResult; ProtocolError when the SDK's answer carries no integer exit code."""
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise ProtocolError(
                f"exec answer carries no exit code ({exit_code!r})",
                provider=self.id,
                operation="exec",
            )
        return ExecResult(exit_code=exit_code, stdout=stdout, stderr=stderr)

    def file_bytes(self, data: Any) -> bytes:
        """The file's content; ProtocolError when the SDK returned something else."""
        if not isinstance(data, bytes | bytearray):
            raise ProtocolError(
                f"read returned {type(data).__name__}, not bytes",
                provider=self.id,
                operation="read_file",
            )
        return bytes(data)

    @staticmethod
    def shell_line(command: Command) -> str:
        """The line for an SDK that hands it to a shell: a string runs by ``sh -c`` (as on every
        provider), an argv list is quoted word by word."""
        return f"sh -c {shlex.quote(command)}" if isinstance(command, str) else shlex.join(command)

    def translate(self, exc: BaseException, operation: str) -> ProviderError:
        """The most specific error of our tree for ``exc``, by the ``errors`` table."""
        chain = exception_chain(exc)
        message = str(exc) or type(exc).__name__
        kwargs = {"provider": self.id, "operation": str(operation)}
        for rule in self.ERRORS:
            if rule is HTTP_STATUS:
                status, retry = self.http_status(chain, _OBSERVED.get() or Observed())
                if status is not None:
                    return from_http_status(status, message, retry_after_s=retry, **kwargs)
            elif rule.matches(chain, message):
                return rule.error(message, **kwargs)
        return ProviderError(message, **kwargs)


__all__ = [
    "HTTP_STATUS",
    "ClientPool",
    "ConnectionMode",
    "ErrorRule",
    "Handle",
    "Observed",
    "SDKProvider",
    "SDKSettings",
    "observe_httpx",
    "observe_response",
    "on",
    "retry_after_s",
    "sdk_timeout",
]
