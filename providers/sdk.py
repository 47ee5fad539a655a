"""The base of every adapter that drives a provider's SDK: settings, clients, one error boundary.

An adapter on :class:`SDKProvider` keeps only what is its own: the module docstring saying what
each operation means on that provider, its native calls, and these declarations:

* ``Settings``: a frozen, keyword-only dataclass that subclasses :class:`SDKSettings` (which
  declares ``api_url`` and ``connection``) and declares every other key with
  :func:`providers.settings.setting` (:func:`sdk_timeout`, :func:`scratch_dir_setting`). The
  constructor parses the ``[providers.<id>]`` table with :func:`providers.settings.parse`, so
  unknown keys and bad values are refused the same way for every adapter: one line, a
  :class:`~providers.settings.SettingError` (a ValueError) naming ``providers.<id>.<key>``.
  Checks across keys are declared too (``EXCLUSIVE`` pairs; ``scratch_dir`` absolute). The
  parsed instance is ``self.config``; its public keys go into ``environment()`` as they are.
  Two keys mean the same on every adapter that has them: ``call_timeout_s`` bounds each SDK
  call that names no bound of its own (:attr:`SDKProvider.call_timeout_s`), for SDKs without
  trustworthy timeouts, and ``setup_timeout_s`` bounds ``open()``.
* ``required_env`` (the credential variables, checked by ``open()`` with an AuthError naming
  the first one missing), ``endpoint_env`` and ``default_endpoint`` (the ``endpoint`` is the
  ``api_url`` setting, else that variable, else the default).
* ``new_client()`` (a coroutine where the SDK's client connects when it is built), ``CLOSE``
  (the client's close method, dotted: ``"close.aio"``) and, for set-up ``open()`` does once
  (an app, an image), :meth:`SDKProvider.setup`. The clients live in a :class:`ClientPool`: one
  shared client in connection mode ``reuse``; in ``per_iteration`` also a fresh client per
  created or restored sandbox (taken with :meth:`SDKProvider.new_sandbox_client`), closed when
  that sandbox is destroyed (:meth:`ClientPool.release`) or, at the latest, by ``close()``.
* ``attach()`` (the SDK's object for a bare sandbox id), ``ID_ATTRIBUTE`` (which attribute of
  that object is the id) and ``delete()``, the SDK's destroy call: :meth:`SDKProvider.destroy`
  runs it where what is already gone counts as destroyed.
* ``capabilities()``, built with :meth:`SDKProvider.capable` from the operations the adapter
  lacks and why (``unsupported``): the operations are the rest, the reasons are what
  ``sandbox-bench providers`` shows, what the runner records as ``unsupported``, and what the
  default optional operations of :class:`providers.base.Provider` raise, so an adapter writes
  no method for what it cannot do.
* ``ERRORS``: an ordered table of :func:`on` rules, each mapping SDK or transport exception
  classes (found anywhere in the exception's ``__cause__``/``__context__`` chain) and/or a
  message pattern to one class of :mod:`providers.errors`, with :data:`HTTP_STATUS` marking
  where an HTTP status, when one is known, decides instead (:func:`providers.errors.
  from_http_status`). :meth:`SDKProvider.http_status` finds that status; by default on the
  exceptions' ``status_code``/``status`` attribute (``Retry-After`` from their ``headers`` or
  ``response``), else on the last response the adapter observed inside the call
  (:func:`observe_response`, for SDKs that drop the status), else in a message, by the
  adapter's ``STATUS_IN_MESSAGE`` pattern. A rate limit whose delay no header gave takes it
  from :meth:`SDKProvider.retry_after` (a gRPC retry policy, a JSON body). The first rule that
  matches wins; nothing matching is a plain ProviderError. ``when=garbled`` on httpx's
  RemoteProtocolError keeps an answer that could not be parsed (ProtocolError) apart from a
  peer that disconnected, which httpx raises as the same class.
* ``SDK_RETRIES``: what the SDK retries on its own (a text or a table), recorded in the
  manifest by ``environment()`` with what :meth:`SDKProvider.retries_observed` read back, plus
  any facts of its own in :meth:`SDKProvider.sdk_environment`. An SDK variable read before
  the adapter can pass anything (a retry count read at import) is given the adapter's value
  by :func:`preset_env` above the SDK's import, which says where the value came from.

Every SDK call runs inside ``async with self.translating(op):``, the one boundary where the
SDK's exceptions become :mod:`providers.errors` (chained: ``raise ... from exc``), the way
httpx's ``map_httpcore_exceptions`` maps httpcore's at its transport. Errors of our own tree
pass through unchanged; ``BaseException`` that is not an ``Exception`` (cancellation) too.
``timeout_s`` bounds a block (OperationTimeout when it passes; ``late`` is then its message).
The forms every operation takes are helpers, so each adapter writes them alike:

* :meth:`SDKProvider.calling` (a sandbox's handle, then the boundary), :meth:`SDKProvider.main`
  (the main client, then the boundary; ``missing_ok`` for a delete by id),
  :meth:`SDKProvider.idempotent` (a delete: NotFound counts as done);
* :meth:`SDKProvider.started` (a new sandbox from the SDK's create or restore call; its
  ``recipe``, e.g. a size, rides in :class:`Handle` and in every :meth:`SDKProvider.
  checkpoint_ref`, read back by :meth:`SDKProvider.saved`), :meth:`SDKProvider.holding`;
* :meth:`SDKProvider.child`, :meth:`SDKProvider.forked` and :meth:`SDKProvider.fork_each` (a
  fork's children: if any failed, the others are destroyed and the first failure is raised);
* :meth:`SDKProvider.until` (polling a remote state with a deadline and backoff),
  :meth:`SDKProvider.undone_on_failure` (what a failed block made is deleted again);
* :meth:`SDKProvider.exec_result`, :meth:`SDKProvider.file_bytes`, :meth:`SDKProvider.argv`,
  :meth:`SDKProvider.shell_line`, :meth:`SDKProvider.exec_late`, :meth:`SDKProvider.error`,
  :meth:`SDKProvider.refusing` (answers and errors checked and worded the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import operator
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from providers.base import (
    OPTIONAL_OPS,
    REQUIRED_OPS,
    Capabilities,
    CheckpointRef,
    Command,
    ExecResult,
    Op,
    Provider,
    Sandbox,
    SandboxSpec,
    sdk_versions,
    url_without_secrets,
)
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    exception_chain,
    from_http_status,
)
from providers.settings import declared, parse, setting, to_table

C = TypeVar("C")
E = TypeVar("E", bound=ProviderError)


class ConnectionMode(StrEnum):
    """How SDK clients (and with them, usually, HTTP connections) are shared."""

    REUSE = "reuse"
    PER_ITERATION = "per_iteration"


@dataclass(frozen=True, kw_only=True)
class SDKSettings:
    """The keys every SDK adapter has; an adapter's ``Settings`` subclasses this.

    Checks across keys that several adapters need are declared, not written: ``EXCLUSIVE``
    names pairs of keys a table may not both set, and a ``scratch_dir`` key
    (:func:`scratch_dir_setting`) must be an absolute path.
    """

    #: Pairs of keys that exclude each other (e.g. a snapshot and an image to create from).
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = ()

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
        for one, other in self.EXCLUSIVE:
            if getattr(self, one) and getattr(self, other):
                raise ValueError(f"set {one} or {other}, not both")
        if not str(getattr(self, "scratch_dir", "/")).startswith("/"):
            raise ValueError("scratch_dir must be an absolute path")


def scratch_dir_setting(default: str) -> Any:
    """Declare ``scratch_dir``, for a provider whose image decides where the workloads may
    write (an absolute path; :class:`SDKSettings` checks it)."""
    return setting(default, help="writable directory for the workloads' files")


def sdk_timeout(default: float, help: str) -> Any:
    """Declare a timeout the SDK applies itself (seconds, > 0, at most a day)."""
    return setting(default, help=help, unit="s", minimum=0.001, maximum=86_400)


def preset_env(name: str, value: str, *, read_at_import_by: str | None = None) -> str:
    """Give the SDK variable ``name`` the adapter's ``value`` unless the user set it, before
    the SDK is imported (call it above the import); returns where the value came from, for
    the manifest. ``read_at_import_by``: the SDK module that reads it once, at import; if that
    was imported first, the environment of that moment holds."""
    if read_at_import_by is not None and read_at_import_by in sys.modules:
        return f"{read_at_import_by} was imported before the adapter: the environment at that time"
    if (chosen := os.environ.get(name)) is not None:
        return f"{name}={chosen} from the environment"
    os.environ[name] = value
    return f"{name}={value} set by the adapter" + (" before import" if read_at_import_by else "")


# -- clients ------------------------------------------------------------------------------------


class ClientPool(Generic[C]):
    """The SDK clients of one adapter: ``main`` (opened once) and those made per sandbox.

    In mode ``per_iteration`` :meth:`lease` makes a client per new sandbox and owns it until
    :meth:`release`; in ``reuse`` it hands out ``main``. ``make`` is a coroutine, so a client
    whose SDK connects when it is built (Modal's) is built inside the call that needs it.
    Closing is best effort: a client that fails to close must not hide the result of the
    operation that released it.
    """

    def __init__(
        self,
        mode: ConnectionMode,
        make: Callable[[], Awaitable[C]],
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

    async def open(self) -> None:
        if self.main is None:
            self.main = await self._make()

    def shared(self, operation: str) -> C:
        """The provider's main client; ProviderError before ``open()``."""
        if self.main is None:
            raise ProviderError(
                "provider is not open", provider=self._provider, operation=operation
            )
        return self.main

    async def lease(self, operation: str) -> C:
        """The client a new sandbox will use."""
        main = self.shared(operation)
        if self.mode is not ConnectionMode.PER_ITERATION:
            return main
        client = await self._make()
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


def garbled(exc: BaseException) -> bool:
    """For ``on(httpx.RemoteProtocolError, error=ProtocolError, when=garbled)``: the answer
    could not be parsed (an illegal status line or header block), as opposed to the peer
    disconnecting, which httpx raises as the same class and which is a transport failure."""
    return "disconnected" not in str(exc).lower()


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
    """``with``/``async with`` body whose exceptions leave as :mod:`providers.errors`.

    With ``timeout_s`` (``async with`` only) the body is also cancelled when that time has
    passed; the TimeoutError that follows is translated like any other (OperationTimeout in
    every table), or, with ``late``, becomes ``OperationTimeout(late)``.
    """

    __slots__ = ("_deadline", "_late", "_operation", "_provider", "_timeout_s", "_token")

    def __init__(
        self,
        provider: SDKProvider[Any],
        operation: str,
        timeout_s: float | None = None,
        late: str | None = None,
    ) -> None:
        self._provider = provider
        self._operation = operation
        self._timeout_s = timeout_s
        self._late = late
        self._deadline: asyncio.Timeout | None = None

    def __enter__(self) -> None:
        if self._timeout_s is not None:
            raise TypeError("a translating block with a timeout needs async with")
        self._token = _OBSERVED.set(Observed())

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(exc, Exception) and not isinstance(exc, ProviderError):
                raise self._provider.translate(exc, self._operation) from exc
            return False
        finally:
            _OBSERVED.reset(self._token)

    async def __aenter__(self) -> None:
        self._token = _OBSERVED.set(Observed())
        if self._timeout_s is not None:
            self._deadline = asyncio.timeout(self._timeout_s)
            await self._deadline.__aenter__()

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._deadline is not None:
            try:
                await self._deadline.__aexit__(kind, exc, tb)
            except TimeoutError as expired:  # the deadline passed: the body was cancelled
                if self._late is None:
                    return self.__exit__(TimeoutError, expired, expired.__traceback__)
                _OBSERVED.reset(self._token)
                provider, operation = self._provider, self._operation
                raise provider.error(OperationTimeout, operation, self._late) from expired
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
    #: What else a restore must repeat (a size, a create body); checkpoints carry it.
    recipe: dict[str, Any] = field(default_factory=dict)


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
    #: Where an SDK keeps an HTTP status only in its message: group 1 of this pattern.
    STATUS_IN_MESSAGE: ClassVar[str | None] = None
    #: The attribute of the SDK's sandbox object that holds the sandbox's id.
    ID_ATTRIBUTE: ClassVar[str] = "id"
    #: The client's coroutine method that closes it (dotted: ``"close.aio"``); "": none.
    CLOSE: ClassVar[str] = ""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.config = parse(self.Settings, self.settings, where=f"providers.{self.id}")
        self.clients: ClientPool[C] = ClientPool(
            self.config.connection, self._make_client, self.close_client, provider=self.id
        )

    # -- what an adapter provides -----------------------------------------------------------

    def new_client(self) -> C | Awaitable[C]:
        """A new SDK client (credentials from the environment, never logged); a coroutine
        for an SDK whose client connects when it is built."""
        raise NotImplementedError

    async def close_client(self, client: C) -> None:
        """Close ``client`` by its :attr:`CLOSE` method (nothing to close without one)."""
        if self.CLOSE:
            await operator.attrgetter(self.CLOSE)(client)()

    async def setup(self, client: C) -> None:
        """What ``open()`` does with the main client once it is made (an app, an image);
        nothing by default. It runs inside the boundary and :attr:`open_timeout_s`; if it
        fails, the clients are closed again."""

    async def attach(self, client: C, sandbox_id: str) -> Any:
        """The SDK's object for a sandbox known only by id (leak sweeps, the reaper)."""
        raise NotImplementedError

    def sandbox_id(self, sdk: Any) -> str:
        """The id of the sandbox the SDK's object stands for: its :attr:`ID_ATTRIBUTE`."""
        return str(getattr(sdk, self.ID_ATTRIBUTE))

    def sdk_retries(self) -> Any:
        """``SDK_RETRIES``; a table gets what :meth:`retries_observed` read back added."""
        if isinstance(self.SDK_RETRIES, Mapping):
            return {**self.SDK_RETRIES, **self.retries_observed()}
        return self.SDK_RETRIES

    def retries_observed(self) -> dict[str, Any]:
        """What the adapter read back from the SDK about its retries, for the manifest."""
        return {}

    def sdk_environment(self) -> dict[str, Any]:
        """The adapter's own facts for the manifest (they win over the settings' values)."""
        return {}

    def http_status(
        self, chain: Sequence[BaseException], observed: Observed
    ) -> tuple[int | None, float | None]:
        """The HTTP error status behind a failure and the delay the provider asked for: an
        exception's ``status_code``/``status`` (its ``Retry-After`` from its ``headers`` or
        its ``response``'s), else the observed response, else :attr:`STATUS_IN_MESSAGE`."""
        for exc in chain:
            for attr in ("status_code", "status"):
                status = getattr(exc, attr, None)
                if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
                    response = getattr(exc, "response", None)
                    headers = getattr(exc, "headers", None) or getattr(response, "headers", None)
                    return status, retry_after_s(headers or {})
        if observed.status is not None and observed.status >= 400:
            return observed.status, retry_after_s(observed.retry_after)
        return self.status_in_message(chain), None

    def retry_after(self, chain: Sequence[BaseException]) -> float | None:
        """The delay a rate-limited failure asked for where no ``Retry-After`` said it (a gRPC
        retry policy, a JSON body); by default none."""
        return None

    def status_in_message(self, chain: Sequence[BaseException]) -> int | None:
        """The status :attr:`STATUS_IN_MESSAGE` finds in a message of ``chain``, if any."""
        for exc in chain if self.STATUS_IN_MESSAGE is not None else ():
            if found := re.search(self.STATUS_IN_MESSAGE, str(exc)):
                return int(found.group(1))
        return None

    # -- set-up and description -------------------------------------------------------------

    def capable(
        self,
        *,
        unsupported: Mapping[str, str] | None = None,
        notes: Mapping[str, str],
        **fields: Any,
    ) -> Capabilities:
        """Capabilities with every required operation and every optional one ``unsupported``
        does not name (it maps each missing one to why), and a ``connection`` note: the mode,
        then the adapter's own ``connection`` note if it has one."""
        missing = {str(op): why for op, why in (unsupported or {}).items()}
        optional = {op for op in OPTIONAL_OPS if str(op) not in missing}
        mode = str(self.connection)
        own = notes.get("connection")
        notes = {**notes, "connection": f"{mode}; {own}" if own else mode}
        return Capabilities(
            operations=REQUIRED_OPS | optional, unsupported=missing, notes=notes, **fields
        )

    @property
    def endpoint(self) -> str:
        from_env = os.environ.get(self.endpoint_env) if self.endpoint_env else None
        return self.config.api_url or from_env or self.default_endpoint

    @property
    def connection(self) -> ConnectionMode:
        return self.config.connection

    @property
    def call_timeout_s(self) -> float | None:
        """The bound on each SDK call made through :meth:`calling`, :meth:`main`,
        :meth:`idempotent` or :meth:`started` that gives none: the ``call_timeout_s`` setting
        of an adapter whose SDK has no (trustworthy) timeouts of its own; else None."""
        return getattr(self.config, "call_timeout_s", None)

    @property
    def open_timeout_s(self) -> float | None:
        """The bound on ``open()`` (making the main client and :meth:`setup`): the
        ``setup_timeout_s`` setting of an adapter that has one; else None (an adapter may
        set a constant instead)."""
        return getattr(self.config, "setup_timeout_s", None)

    def _bound(self, timeout_s: float | None) -> float | None:
        return timeout_s if timeout_s is not None else self.call_timeout_s

    async def _make_client(self) -> C:
        async with self.translating("open"):
            client = self.new_client()
            return await client if inspect.isawaitable(client) else client

    async def open(self) -> None:
        for name in self.required_env:
            if not os.environ.get(name):
                raise AuthError(f"set {name} to use {self.id}", provider=self.id, operation="open")
        try:
            async with self.translating("open", timeout_s=self.open_timeout_s):
                await self.clients.open()
                await self.setup(self.clients.shared("open"))
        except BaseException:
            await self.clients.close()
            raise

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

    def translating(
        self, operation: str, *, timeout_s: float | None = None, late: str | None = None
    ) -> _Translating:
        """``async with self.translating(op):`` around every SDK call (see the module
        docstring); a plain ``with`` works too, for synchronous SDK calls. ``timeout_s``
        bounds the block, for SDKs without (trustworthy) timeouts of their own; ``late`` is
        then the message of the OperationTimeout when it passes."""
        return _Translating(self, str(operation), timeout_s, late)

    @contextlib.asynccontextmanager
    async def calling(
        self,
        sandbox: Sandbox,
        operation: str,
        *,
        timeout_s: float | None = None,
        late: str | None = None,
    ) -> AsyncIterator[Handle[C]]:
        """``async with self.calling(sandbox, op) as handle:``: the sandbox's handle, then the
        boundary (:meth:`translating`, with its ``timeout_s`` and ``late``) around the block."""
        handle = await self.handle(sandbox, operation)
        async with self.translating(operation, timeout_s=self._bound(timeout_s), late=late):
            yield handle

    @contextlib.asynccontextmanager
    async def main(
        self, operation: str, *, timeout_s: float | None = None, missing_ok: bool = False
    ) -> AsyncIterator[C]:
        """``async with self.main(op) as client:``: the main client (ProviderError before
        ``open()``), then the boundary around the block, as :meth:`calling`; with
        ``missing_ok``, :meth:`idempotent`'s (a delete by id)."""
        client = self.clients.shared(operation)
        if missing_ok:
            async with self.idempotent(operation, timeout_s=timeout_s):
                yield client
        else:
            async with self.translating(operation, timeout_s=self._bound(timeout_s)):
                yield client

    @contextlib.contextmanager
    def refusing(self, operation: str) -> Iterator[None]:
        """The adapter's own ValueError (a spec the provider cannot take) as a ProviderError."""
        try:
            yield
        except ValueError as exc:
            raise self.error(ProviderError, operation, str(exc)) from exc

    def error(self, kind: type[E], operation: str, message: str) -> E:
        """An error of our tree raised by the adapter itself, e.g. for an answer that
        makes no sense."""
        return kind(message, provider=self.id, operation=str(operation))

    @staticmethod
    @contextlib.asynccontextmanager
    async def undone_on_failure(
        undo: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any
    ) -> AsyncIterator[None]:
        """If the block fails (or is cancelled), ``undo(*args, **kwargs)`` runs, best effort,
        before the failure goes on: for what the block made that no one else would delete
        (and that may bill meanwhile)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await undo(*args, **kwargs)
            raise

    @contextlib.asynccontextmanager
    async def new_sandbox_client(
        self, operation: str, *, timeout_s: float | None = None
    ) -> AsyncIterator[C]:
        """The client a new sandbox will use, and the boundary (bounded by ``timeout_s``)
        around its making and the block; if that fails, a client made for it is closed."""
        client: C | None = None
        try:
            async with self.translating(operation, timeout_s=self._bound(timeout_s)):
                client = await self.clients.lease(operation)
                yield client
        except BaseException:
            if client is not None:
                await self.clients.release(client)
            raise

    @contextlib.asynccontextmanager
    async def idempotent(
        self, operation: str, *, release: C | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[None]:
        """The boundary for a delete (destroy, delete_checkpoint): what is already gone
        (NotFound) counts as deleted; ``release``, a client this pool made for the sandbox, is
        closed afterwards."""
        try:
            with contextlib.suppress(NotFound):
                async with self.translating(operation, timeout_s=self._bound(timeout_s)):
                    yield
        finally:
            if release is not None:
                await self.clients.release(release)

    async def until(
        self,
        done: Callable[[], Awaitable[bool]],
        timeout_s: float,
        interval_s: float,
        *,
        backoff: float = 1.0,
        max_interval_s: float = math.inf,
        late: Callable[[], str] | None = None,
    ) -> None:
        """Poll ``done()`` until it holds, for a remote state the API offers only by polls:
        ``interval_s`` apart, the interval growing ``backoff`` times up to ``max_interval_s``.
        When ``timeout_s`` has passed (a poll in flight included): a TimeoutError, with the
        message ``late()`` if given, for the boundary to translate (OperationTimeout)."""
        interval = interval_s
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                while not await done():
                    await asyncio.sleep(interval)
                    interval = min(interval * backoff, max_interval_s)
        except TimeoutError as exc:
            if late is None or not deadline.expired():
                raise
            raise TimeoutError(late()) from exc

    # -- destroy --------------------------------------------------------------------------

    async def delete(self, sandbox: Sandbox, handle: Handle[C]) -> None:
        """The SDK's call that destroys the sandbox (for :meth:`destroy`)."""
        raise NotImplementedError

    async def destroy(self, sandbox: Sandbox) -> None:
        """:meth:`delete` inside :meth:`idempotent`: a sandbox that is already gone (NotFound,
        also when attaching to it by id) counts as destroyed; a client made for it is closed."""
        try:
            handle = await self.handle(sandbox, Op.DESTROY)
        except NotFound:
            return
        async with self.idempotent(Op.DESTROY, release=handle.client):
            await self.delete(sandbox, handle)

    # -- per-sandbox handles ----------------------------------------------------------------

    async def started(
        self,
        operation: str,
        start: Callable[[C], Awaitable[Any]],
        *,
        labels: Mapping[str, str],
        lifetime_s: int,
        timeout_s: float | None = None,
        recipe: Mapping[str, Any] | None = None,
    ) -> Sandbox:
        """A new sandbox from ``start(client)`` (the SDK's create or restore call), on the
        client :meth:`new_sandbox_client` gives it, bounded by ``timeout_s``; ``recipe`` is
        what a restore from its checkpoints must repeat (see :class:`Handle`)."""
        async with self.new_sandbox_client(operation, timeout_s=timeout_s) as client:
            sdk = await start(client)
        handle = Handle(
            sdk=sdk,
            client=client,
            labels=dict(labels),
            lifetime_s=lifetime_s,
            recipe=dict(recipe or {}),
        )
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

    def checkpoint_ref(
        self, ref_id: Any, sandbox: Sandbox, handle: Handle[C], **more: Any
    ) -> CheckpointRef:
        """A reference to a checkpoint of ``sandbox`` that remembers its labels, lifetime and
        recipe (and ``more``), so that what a restore makes carries them (the run label above
        all); :meth:`saved` reads them back."""
        if not ref_id:
            raise self.error(ProtocolError, "checkpoint", "checkpoint answer carries no id")
        saved = {"labels": dict(handle.labels), "lifetime_s": handle.lifetime_s}
        native = {**saved, **handle.recipe, **more}
        return CheckpointRef(id=str(ref_id), provider=self.id, sandbox_id=sandbox.id, native=native)

    @staticmethod
    def saved(ref: CheckpointRef) -> dict[str, Any]:
        """What :meth:`checkpoint_ref` saved (empty for a reference made elsewhere)."""
        return ref.native if isinstance(ref.native, dict) else {}

    @classmethod
    def saved_labels(cls, ref: CheckpointRef) -> tuple[dict[str, str], int]:
        """The labels and lifetime a checkpoint's sandbox had (see :meth:`checkpoint_ref`)."""
        saved = cls.saved(ref)
        lifetime_s = int(saved.get("lifetime_s") or SandboxSpec().lifetime_s)
        return dict(saved.get("labels") or {}), lifetime_s

    # -- fork -------------------------------------------------------------------------------

    def child(self, parent: Handle[C], sdk: Any) -> Sandbox:
        """A sandbox a fork of ``parent`` made, on the main client, with the labels the SDK's
        object carries, else the parent's, and the parent's lifetime."""
        labels = getattr(sdk, "labels", None)
        labels = dict(labels) if isinstance(labels, Mapping) else dict(parent.labels)
        client = self.clients.shared(Op.FORK)
        made = Handle(sdk=sdk, client=client, labels=labels, lifetime_s=parent.lifetime_s)
        return Sandbox(id=self.sandbox_id(sdk), provider=self.id, native=made)

    async def forked(self, results: Sequence[Sandbox | BaseException], count: int) -> list[Sandbox]:
        """The ``count`` children of a fork from their ``results``; if any failed (or fewer
        came), the ones made are destroyed and the first failure is raised, translated."""
        children = [r for r in results if isinstance(r, Sandbox)]
        failed = [r for r in results if not isinstance(r, Sandbox)]
        if not failed and len(children) == count:
            return children
        for child in children:
            with contextlib.suppress(Exception):
                await self.destroy(child)
        with self.translating(Op.FORK):
            raise (
                failed[0]
                if failed
                else self.error(
                    ProtocolError,
                    Op.FORK,
                    f"fork answered {len(results)} results for {count} children",
                )
            )

    async def fork_each(self, count: int, one: Callable[[], Awaitable[Sandbox]]) -> list[Sandbox]:
        """A fork that makes each child by its own call ``one()``, ``count`` at once, then
        :meth:`forked`."""
        made = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        return await self.forked(made, count)

    # -- answers every adapter checks the same way ------------------------------------------

    def exec_result(
        self, exit_code: Any, stdout: bytes | str | None, stderr: bytes | str | None
    ) -> ExecResult:
        """An ExecResult; text (what an SDK decoded) is encoded as UTF-8 again, None is empty;
        ProtocolError when the SDK's answer carries no integer exit code."""
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            message = f"exec answer carries no exit code ({exit_code!r})"
            raise self.error(ProtocolError, "exec", message)
        out, err = (s.encode() if isinstance(s, str) else s or b"" for s in (stdout, stderr))
        return ExecResult(exit_code=exit_code, stdout=out, stderr=err)

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

    @staticmethod
    def exec_late(timeout_s: float) -> str:
        """The message of an exec's OperationTimeout, the same on every provider."""
        return f"command did not finish within {timeout_s:g} s"

    @staticmethod
    def argv(command: Command, shell: str = "/bin/sh") -> list[str]:
        """The argv for an SDK that runs one without a shell: a string runs by ``shell -c``
        (as on every provider), an argv list as it is; ValueError for an empty one."""
        argv = [shell, "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise ValueError("exec needs a command")
        return argv

    def translate(self, exc: BaseException, operation: str) -> ProviderError:
        """The most specific error of our tree for ``exc``, by the ``errors`` table."""
        chain = exception_chain(exc)
        message = str(exc) or type(exc).__name__
        kwargs = {"provider": self.id, "operation": str(operation)}
        error = ProviderError(message, **kwargs)
        for rule in self.ERRORS:
            if rule is HTTP_STATUS:
                status, retry = self.http_status(chain, _OBSERVED.get() or Observed())
                if status is not None:
                    error = from_http_status(status, message, retry_after_s=retry, **kwargs)
                    break
            elif rule.matches(chain, message):
                error = rule.error(message, **kwargs)
                break
        if isinstance(error, QuotaOrRateLimited) and error.retry_after_s is None:
            error.retry_after_s = self.retry_after(chain)
        return error


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
    "preset_env",
    "retry_after_s",
    "scratch_dir_setting",
    "sdk_timeout",
]
