"""What every workload is: a named sequence of provider calls, run once per iteration.

A workload declares the operations one iteration records (``planned_ops``), which optional
capabilities it needs (``requires``) and which of its operations depend on which capability
(``capability_ops``), so that on a provider lacking one the runner records those operations as
``unsupported`` instead of faking or silently skipping them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from providers.base import Capabilities, ExecResult, Op

if TYPE_CHECKING:
    from bench.runner import IterationContext


@dataclass(frozen=True, kw_only=True)
class Share:
    """One client's part of an iteration split across ``count`` clients (open-loop workloads
    on a cluster, bench/cluster.py): slots ``index``, ``index + count``, ... of the schedule,
    which starts at ``start_ns`` (this client's ``time.perf_counter_ns``, translated from the
    driver's common start instant)."""

    index: int
    count: int
    start_ns: int | None = None


class StepFailed(Exception):
    """Raised by ``IterationContext.timed`` after a failed call has been recorded."""


class CheckFailed(Exception):
    """A call returned, but not what the workload needed (e.g. ``true`` exiting non-zero).

    The runner records it as an error under ``error_type`` and discards the duration, because
    the operation did not do its job.
    """

    def __init__(self, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.extra = extra


class Workload(ABC):
    name: ClassVar[str]
    #: Optional capabilities without which the workload cannot run at all.
    requires: ClassVar[frozenset[Op]] = frozenset()
    #: Operation name -> capability it exercises (for ``unsupported`` records).
    capability_ops: ClassVar[Mapping[str, Op]] = {}
    #: Parameters and their defaults; ``[workloads.<name>]`` in bench.toml overrides them.
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.validate_params(params or {})
        self.params: dict[str, Any] = {**self.defaults, **(params or {})}

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError with a one-line message for unknown or ill-typed parameters."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ValueError(f"[workloads.{cls.name}]: unknown key(s) {', '.join(unknown)}")
        for key, value in params.items():
            default = cls.defaults[key]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(
                        f"[workloads.{cls.name}] {key} must be true or false, got {value!r}"
                    )
                continue
            if isinstance(default, int | float) and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ValueError(
                    f"[workloads.{cls.name}] {key} must be a number > 0, got {value!r}"
                )

    def waits_s(self) -> float:
        """Seconds an iteration deliberately waits with a sandbox alive (holds, idles); the
        budget estimate adds them to the time its operations take."""
        return 0.0

    @abstractmethod
    def planned_ops(self, caps: Capabilities) -> list[str]:
        """Every operation one iteration records on a provider with ``caps`` (with repeats)."""

    def clients(self) -> int:
        """How many cluster workers share one iteration (open-loop workloads split theirs)."""
        return 1

    def planned_share_ops(self, caps: Capabilities, share: Share) -> list[str]:
        """The operations one client's ``share`` of a split iteration records."""
        raise NotImplementedError(f"workload {self.name} cannot be split across clients")

    @abstractmethod
    async def run(self, ctx: IterationContext) -> None:
        """Run one iteration, every provider call through ``ctx.timed`` (or ctx helpers)."""


def exit_zero(result: ExecResult) -> None:
    """Check for ``ctx.timed``: the command must have exited 0."""
    if result.exit_code != 0:
        raise CheckFailed(
            "NonZeroExit",
            f"exit code {result.exit_code}: {result.stderr[-200:].decode(errors='replace')}",
            exit_code=result.exit_code,
        )


def sha256_of_output(result: ExecResult) -> str:
    """The hex digest printed by ``sha256sum`` (first field of stdout)."""
    exit_zero(result)
    digest = result.stdout.split(maxsplit=1)[0].decode() if result.stdout.strip() else ""
    if len(digest) != 64:
        raise CheckFailed("UnexpectedOutput", f"not a sha256 digest: {result.stdout[:80]!r}")
    return digest


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
