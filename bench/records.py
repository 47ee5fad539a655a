"""The raw result format: one immutable record per operation attempt, plus a run manifest.

A run folder holds ``manifest.json`` (what all records share, written once at start and
rewritten atomically when the run ends) and ``samples.jsonl`` (one :class:`Sample` per line,
appended and flushed the moment the operation ends). Stats, costs and reports are pure
functions of these two files and the pricing catalog; nothing derived is stored in them.

Schema history (pyperf keeps its format history beside the constant; so do we):

* 1 -- first format (2026-11-28).
  Run folders may also hold ``cache/`` (bench/columnar.py): derived Parquet copies and
  statistics, rebuilt from these files whenever they do not match; not part of the format, which
  is unchanged.

Loaders refuse any other version with a message saying which versions they read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


class Status(StrEnum):
    """Outcome of one operation attempt."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"  # the provider lacks the operation; never faked
    SKIPPED = "skipped"  # not attempted because an earlier step of the iteration failed


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; everything created was destroyed
    FAILED = "failed"  # the harness itself failed
    BUDGET_EXHAUSTED = "budget_exhausted"  # stopped scheduling before crossing the cost cap


class SchemaError(ValueError):
    """A record or run folder is not in a format this version can read."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One operation attempt.

    Times: ``started_at`` is wall-clock UTC (ISO 8601) for humans and cross-run alignment;
    ``duration_s`` comes from the monotonic clock (``time.perf_counter_ns``). For open-loop
    schedules ``intended_start_s`` and ``actual_start_s`` are seconds since the run's monotonic
    origin; latency is then measured from the intended start (coordinated omission).

    ``duration_s`` is None unless ``status`` is ok: a failure never becomes a fast success.
    """

    run_id: str
    sample_id: int
    provider: str
    workload: str
    operation: str
    iteration: int
    warmup: bool
    concurrency: int
    started_at: str
    duration_s: float | None
    status: Status
    intended_start_s: float | None = None
    actual_start_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    sandbox_id: str | None = None
    location: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        status = Status(self.status)
        object.__setattr__(self, "status", status)
        if status is Status.OK:
            if self.duration_s is None or not math.isfinite(self.duration_s) or self.duration_s < 0:
                raise SchemaError(f"ok sample needs a finite duration, got {self.duration_s!r}")
            if self.error_type is not None:
                raise SchemaError("ok sample cannot carry an error_type")
        elif self.duration_s is not None:
            raise SchemaError(f"{status} sample must have duration_s null, got {self.duration_s}")
        if status in (Status.ERROR, Status.TIMEOUT) and not self.error_type:
            raise SchemaError(f"{status} sample needs an error_type")

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Sample:
        try:
            return cls(**d)
        except TypeError as exc:
            raise SchemaError(f"sample does not match schema {SCHEMA_VERSION}: {exc}") from exc


def check_schema_version(version: object, where: str) -> None:
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise SchemaError(
            f"{where}: schema version {version!r} is not one this sandbox-bench reads ({known}); "
            "use the sandbox-bench version that wrote it, or re-run the benchmark"
        )
