"""The errors every provider adapter raises, one tree for all providers.

Adapters translate their SDK's exceptions into this tree at one boundary (the adapter module)
and chain the cause (``raise NotFound(...) from exc``), as httpx does in ``_exceptions.py``.
The runner records ``type(exc).__name__`` as a sample's ``error_type``, so the class names are
part of the result format: rename nothing without bumping the schema version.

    ProviderError(provider, operation)        anything a provider operation can fail with
    ├── AuthError                             credentials missing, wrong or expired (401/403)
    ├── QuotaOrRateLimited                    429, concurrency or quota limits; retry_after_s
    ├── Unavailable                           5xx, connection refused or reset, DNS
    ├── OperationTimeout (also TimeoutError)  the operation did not finish within its timeout
    ├── NotFound                              the sandbox, file or checkpoint does not exist
    ├── Unsupported                           the provider has no such operation
    ├── ProtocolError                         the provider answered something unreadable
    └── SandboxCrashed                        the sandbox died under the operation

Anything an adapter lets through untranslated is recorded under its own class name by the
runner; that is a bug in the adapter, and the report lists such errors separately.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider operation failed. ``provider`` and ``operation`` say where."""

    def __init__(self, message: str, *, provider: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.operation = operation

    def __str__(self) -> str:
        where = ":".join(p for p in (self.provider, self.operation) if p)
        base = super().__str__()
        return f"[{where}] {base}" if where else base


class AuthError(ProviderError):
    """Credentials are missing, wrong or expired."""


class QuotaOrRateLimited(ProviderError):
    """The provider refused for rate or quota reasons; ``retry_after_s`` if it said when."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        operation: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, operation=operation)
        self.retry_after_s = retry_after_s


class Unavailable(ProviderError):
    """The provider could not be reached or answered with a server error."""


class OperationTimeout(ProviderError, TimeoutError):
    """The operation did not complete within its timeout."""


class NotFound(ProviderError):
    """The sandbox, file or checkpoint named does not exist (any more)."""


class Unsupported(ProviderError):
    """The provider does not offer this operation."""


class ProtocolError(ProviderError):
    """The provider's answer could not be understood."""


class SandboxCrashed(ProviderError):
    """The sandbox (or its agent) died while the operation ran."""


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it (``__cause__``, else ``__context__``), once each:
    adapters look down the chain for the SDK or transport error that says what happened."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def from_http_status(
    status: int,
    message: str,
    *,
    provider: str,
    operation: str,
    retry_after_s: float | None = None,
) -> ProviderError:
    """The error of this tree for an HTTP error ``status``, the same for every adapter."""
    kwargs = {"provider": provider, "operation": operation}
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 429:
        return QuotaOrRateLimited(message, retry_after_s=retry_after_s, **kwargs)
    if status in (408, 504):
        return OperationTimeout(message, **kwargs)
    if status >= 500:
        return Unavailable(message, **kwargs)
    return ProviderError(message, **kwargs)


__all__ = [
    "AuthError",
    "NotFound",
    "OperationTimeout",
    "ProtocolError",
    "ProviderError",
    "QuotaOrRateLimited",
    "SandboxCrashed",
    "Unavailable",
    "Unsupported",
    "exception_chain",
    "from_http_status",
]
