"""What a workload declares about the records it writes, so the analysis never guesses.

A workload class declares (see :class:`bench.workloads.base.Workload`):

* ``operations``: its :class:`Operation` s in timeline order. Stats, the report's tables and
  the CSV list a workload's operations in this order. An operation may be a **derived span**
  (``ready``: create's start to the first successful exec's end; it overlaps other records, so
  it is never summed into an iteration's cost), **scaled** (recorded once per value of a
  parameter: ``checkpoint_64mb``, ``create_c10``; :class:`Scale`), a **throughput** round
  (``round_c10``: the wall time of C tasks released together; C / its median is a rate), and
  may stand for a :class:`Role` the report and the cost model look up (the session scenario's
  checkpoint, pause, resume; the at-a-glance columns; the wake of a sleeping provider).
* ``extras``: the keys it writes into ``Sample.extra``, each an :class:`Extra` with its type,
  unit and meaning (pyperf's ``_metadata.py`` METADATA table is the model). Declared extras
  become columns of :func:`bench.stats.samples_frame`; a key no workload declares is kept in
  the raw records but never read.
* **fidelity checks**: an operation whose record judges whether the provider did what it
  answered "ok" to declares it with ``checks`` (each a :class:`Check` of one
  :class:`Fidelity` kind, saying how its record shows a failure). The report's fidelity
  section counts them from the records: run, passed, failed, the first failure of each
  kind. One kind is judged for every workload from the ledger instead (``DESTROYED``).

This module holds only data: a run imports it, and nothing here imports pandas, matplotlib or
any analysis code (a workload's report parts live in their own module, see ``Workload.report``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What an operation stands for where the report and the cost model need one figure.

    Lookups go through every registered workload in registry order and take the first that
    declares the role and was measured.
    """

    #: The provider's create call (at a glance).
    CREATE = "create"
    #: Create's start to the first successful command (at a glance).
    READY = "ready"
    #: One trivial command on a warm sandbox (at a glance).
    EXEC = "exec"
    #: Taking a checkpoint (at a glance; each checkpoint of the session scenario).
    CHECKPOINT = "checkpoint"
    #: Restoring a checkpoint (at a glance).
    RESTORE = "restore"
    #: An explicit pause (the session scenario's idle gaps).
    PAUSE = "pause"
    #: Resuming after a pause (at a glance; the session scenario).
    RESUME = "resume"
    #: The first command after a resume (the wait the session scenario counts).
    FIRST_EXEC_AFTER_RESUME = "first_exec_after_resume"
    #: The first command after an idle the provider may have slept through: its wake, for
    #: providers that sleep on idle. Declared with ``after_idle`` (the extra holding the idle).
    WAKE = "wake"
    #: A fixed CPU kernel timed inside the sandbox (at a glance: lower is faster). Its record
    #: is a derived span holding the in-sandbox time, free of the exec's own overhead.
    CPU_SPEED = "cpu_speed"


class Fidelity(StrEnum):
    """What a fidelity check verifies: that the provider did what it answered "ok" to."""

    #: A restore brought back every file the checkpoint held, as it was.
    RESTORE = "restore"
    #: A pause (or stop) did to the running processes what the provider declares.
    PAUSE = "pause"
    #: A new sandbox had never been used (no marker of an earlier one).
    FRESH = "fresh"
    #: A new sandbox had the CPUs and memory asked for.
    SPEC = "spec"
    #: The provider's listing by run label showed a live sandbox.
    LISTED = "listed"
    #: A fork's children held the parent's state (and its processes, where the provider
    #: declares memory kept), and a change in one did not reach the others or the parent.
    FORK = "fork"
    #: A sandbox whose destroy answered ok was gone: judged for every destroy the harness
    #: made, from the run's ledger (the end-of-run sweep found no such sandbox alive).
    DESTROYED = "destroyed"
    #: A checkpoint whose delete answered ok was gone: judged, on providers that list
    #: checkpoints by run label, for every delete the harness made, from the run's ledger.
    DELETED = "deleted"

    @property
    def help(self) -> str:
        return FIDELITY_HELP[self]


FIDELITY_HELP: dict[Fidelity, str] = {
    Fidelity.RESTORE: "restore brings back every checkpointed file, as it was",
    Fidelity.PAUSE: "pause freezes processes (stop/start ends them), as declared",
    Fidelity.FRESH: "create hands out a sandbox nobody used before",
    Fidelity.SPEC: "the sandbox has the CPUs and memory asked for",
    Fidelity.LISTED: "the listing by run label shows a live sandbox",
    Fidelity.FORK: "fork children hold the parent's state, as declared, and are independent",
    Fidelity.DESTROYED: "a sandbox whose destroy answered ok is gone at the end of the run",
    Fidelity.DELETED: "a checkpoint whose delete answered ok is gone at the end of the run",
}


@dataclass(frozen=True, slots=True)
class Check:
    """A fidelity check an operation's record judges, and how the record shows a failure.

    The record **failed** the check when its status is error with ``error_type`` as its
    class, or when it carries a true (non-empty) ``flag`` extra. A record that did neither
    **passed** it when the call returned: status ok, or an error of another check of the
    same operation (the call returned, and another check failed). Any other record (the call
    failed, timed out, was skipped) did not run the check.
    """

    kind: Fidelity
    #: The error class a failure is recorded under (None: only ``flag`` shows one).
    error_type: str | None = field(default="FidelityError", kw_only=True)
    #: A declared extra whose true value on a record means the check failed.
    flag: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.error_type is None and self.flag is None:
            raise ValueError(f"check {self.kind}: give the error class or the flag of a failure")
        if self.kind in (Fidelity.DESTROYED, Fidelity.DELETED):
            raise ValueError(f"the {self.kind} check is judged from the ledger, not declared")


class Scale(StrEnum):
    """How a scaled operation writes its parameter into its recorded name."""

    #: ``<name>_<N>mb``: N MiB of state.
    STATE_MB = "state_mb"
    #: ``<name>_c<N>``: N concurrent tasks.
    CONCURRENCY = "concurrency"

    def recorded(self, name: str, value: int) -> str:
        """The operation name recorded for ``name`` at ``value``."""
        return f"{name}_{value}mb" if self is Scale.STATE_MB else f"{name}_c{value}"

    def pattern(self, name: str) -> re.Pattern[str]:
        suffix = r"_(\d+)mb" if self is Scale.STATE_MB else r"_c(\d+)"
        return re.compile(re.escape(name) + suffix + "$")

    @property
    def axis(self) -> str:
        """Axis label for figures of latency against this scale."""
        return "state size (MB)" if self is Scale.STATE_MB else "concurrent tasks"

    @property
    def noun(self) -> str:
        return "state size" if self is Scale.STATE_MB else "concurrency"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation a workload records (or, with ``scale``, one family of them)."""

    name: str
    help: str = field(default="", kw_only=True)
    #: A span measured across other records (never summed into a total).
    derived: bool = field(default=False, kw_only=True)
    #: Recorded once per value of a parameter, as ``Scale.recorded(name, value)``.
    scale: Scale | None = field(default=None, kw_only=True)
    #: The wall time of a whole round of ``scale`` concurrent tasks (needs
    #: ``scale=Scale.CONCURRENCY``): the level divided by its median is a throughput.
    throughput: bool = field(default=False, kw_only=True)
    roles: tuple[Role, ...] = field(default=(), kw_only=True)
    #: The declared extra that holds how long the sandbox sat idle before this operation
    #: (wake claims and the session scenario count only long enough idles).
    after_idle: str | None = field(default=None, kw_only=True)
    #: The fidelity checks its record judges (see :class:`Check`).
    checks: tuple[Check, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"operation name {self.name!r}: lower-case letters, digits and _")
        if self.throughput and self.scale is not Scale.CONCURRENCY:
            raise ValueError(f"operation {self.name}: a throughput round needs a concurrency scale")
        if self.throughput and not self.derived:
            raise ValueError(f"operation {self.name}: a throughput round is a derived span")
        if Role.WAKE in self.roles and self.after_idle is None:
            raise ValueError(f"operation {self.name}: a wake needs after_idle (the idle extra)")

    def recorded(self, value: int | None = None) -> str:
        """The name a record carries (``value`` only for scaled operations)."""
        if self.scale is None:
            return self.name
        if value is None:
            raise ValueError(f"operation {self.name} is scaled: give the value")
        return self.scale.recorded(self.name, value)


#: Python types an extra may have, and how the analysis stores them: numbers as floats (NaN
#: when absent), booleans as nullable booleans, strings as categories, lists of strings joined
#: with "; " (missing when empty).
EXTRA_TYPES: tuple[type, ...] = (int, float, bool, str, list)


@dataclass(frozen=True, slots=True)
class Extra:
    """One key of ``Sample.extra``: its type, unit and meaning."""

    name: str
    type: type
    help: str = field(default="", kw_only=True)
    #: Unit of a number ("s", "MiB", "bytes", "Hz"); the name carries it too where it can.
    unit: str = field(default="", kw_only=True)
    #: False for keys the analysis never reads as a column (e.g. one that repeats a sample
    #: field of the same name).
    column: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        if self.type not in EXTRA_TYPES:
            known = ", ".join(t.__name__ for t in EXTRA_TYPES)
            raise ValueError(f"extra {self.name}: type must be one of {known}")

    def describe(self) -> str:
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.name} ({self.type.__name__}{unit}): {self.help}"


#: Extras any workload's records may carry, declared once here: written by the shared checks
#: (``verified``, ``exit_code``), the runner (``rerun``) and cluster workers (``host``).
COMMON_EXTRAS: tuple[Extra, ...] = (
    Extra("verified", bool, help="the state check of this operation passed (false: it did not)"),
    Extra("exit_code", int, help="exit code of a command that should have exited 0"),
    Extra("rerun", bool, help="the iteration ran again after an earlier attempt was cut short"),
    Extra("host", str, help="the machine that measured it (cluster runs)"),
)


__all__ = [
    "COMMON_EXTRAS",
    "EXTRA_TYPES",
    "FIDELITY_HELP",
    "Check",
    "Extra",
    "Fidelity",
    "Operation",
    "Role",
    "Scale",
]
