"""What every workload is: a named sequence of provider calls, run once per iteration.

A workload declares, on its class:

* for the runner: the operations one iteration records (``planned_ops``), which optional
  capabilities it needs (``requires``) and which of its operations depend on which capability
  (``capability_ops``), so that on a provider lacking one the runner records those operations
  as ``unsupported`` instead of faking or silently skipping them;
* its parameters: ``Settings``, a frozen dataclass whose fields are declared with
  :func:`providers.settings.setting` (type, default, help, unit, range); ``[workloads.<name>]``
  in bench.toml is parsed and refused in one line from that declaration;
* its shape (bench/workloads/shape.py): ``operations`` in timeline order (derived spans,
  scaled families, throughput rounds and roles marked) and the ``extras`` it records, with
  type and unit; stats, costs, claims and the report derive order, columns and tables from
  them;
* ``report``: where its own report parts live (sections in its latency section, warning
  checks), as ``"module"`` or ``"module:attribute"`` naming a
  :class:`bench.report.WorkloadReport`, imported only when a report is built so that a run
  never loads pandas or matplotlib for it; or the :class:`~bench.report.WorkloadReport` itself.

:func:`bench.workloads.register_workload` adds a workload to the registry, built-in or plugin.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.iteration import CheckFailed, Share, StepFailed
from bench.workloads.shape import Extra, Operation
from providers.base import Capabilities, ExecResult, Op
from providers.settings import parse, to_table

if TYPE_CHECKING:
    from bench.iteration import IterationContext


@dataclass(frozen=True, kw_only=True)
class NoSettings:
    """The parameters of a workload that has none."""


class Workload(ABC):
    name: ClassVar[str]
    #: Optional capabilities without which the workload cannot run at all.
    requires: ClassVar[frozenset[Op]] = frozenset()
    #: Operation name -> capability it exercises (for ``unsupported`` records).
    capability_ops: ClassVar[Mapping[str, Op]] = {}
    #: Its parameters: a frozen, keyword-only dataclass of ``setting(...)`` fields.
    Settings: ClassVar[type] = NoSettings
    #: Every operation it records, in timeline order (see bench/workloads/shape.py).
    operations: ClassVar[tuple[Operation, ...]] = ()
    #: The keys it writes into ``Sample.extra`` (besides ``shape.COMMON_EXTRAS``).
    extras: ClassVar[tuple[Extra, ...]] = ()
    #: Its own report parts: "module" or "module:attribute" naming a WorkloadReport (imported
    #: only by the report), the WorkloadReport itself, or None.
    report: ClassVar[Any] = None

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        #: The parsed parameters (an instance of ``Settings``).
        self.settings: Any = self.parse_settings(params or {})
        #: The same as a plain table (defaults filled in), as the manifest records it.
        self.params: dict[str, Any] = to_table(self.settings)

    @classmethod
    def parse_settings(cls, params: Mapping[str, Any]) -> Any:
        """``params`` (a ``[workloads.<name>]`` table) as a ``Settings`` instance; raises
        :class:`providers.settings.SettingError` (a ValueError) with a one-line message."""
        return parse(cls.Settings, params, where=f"workloads.{cls.name}")

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError with a one-line message for unknown or ill-typed parameters."""
        cls.parse_settings(params)

    def waits_s(self) -> float:
        """Seconds an iteration deliberately waits with a sandbox alive (holds, idles); the
        budget estimate adds them to the time its operations take."""
        return 0.0

    def planned_ops(self, caps: Capabilities) -> list[str]:
        """Every operation one iteration records on a provider with ``caps`` (with repeats).

        By default each declared operation once, in order; workloads with repeats, scaled
        families or provider-dependent steps say exactly what they record.
        """
        if any(op.scale is not None for op in self.operations):
            raise NotImplementedError(f"workload {self.name} must list its scaled operations")
        return [op.name for op in self.operations]

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


__all__ = [
    "CheckFailed",
    "NoSettings",
    "Share",
    "StepFailed",
    "Workload",
    "exit_zero",
    "sha256_hex",
    "sha256_of_output",
]
