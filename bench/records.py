"""The raw result format: one immutable record per operation attempt, plus a run manifest.

A run folder holds ``manifest.json`` (what all records share, written once at start and
rewritten atomically when the run ends) and ``samples.jsonl`` (one :class:`Sample` per line,
appended and flushed the moment the operation ends). Stats, costs and reports are pure
functions of these two files and the pricing catalog; nothing derived is stored in them.

Schema history (pyperf keeps its format history beside the constant; so do we):

* 1 -- first format (2026-11-28).
* 1, additions readers of older runs need not know (no version change: every old run still
  loads, nothing was renamed or removed):

  - ledger.jsonl gained checkpoint events (``checkpoint_created``, ``checkpoint_deleted``,
    ``checkpoint_delete_failed``; see bench/cleanup.py); sandbox events are unchanged.
  - manifest.json gained ``failure`` (why a ``failed`` run failed), ``left_alive`` (what an
    interrupted run could not destroy within its grace, for ``sandbox-bench reap``),
    ``cleanup`` (the retry policy and grace), ``quiet`` (what happens between iterations),
    ``harness_errors``; capabilities gained ``deletion`` and ``lists_checkpoints``.
  - samples: ``error_type`` ``HarnessError`` (a bug of the harness, not a provider failure)
    and operations named ``gone`` / ``gone_<x>`` after ``destroy`` / ``destroy_<x>`` on
    providers that delete asynchronously.

Every results file is validated where it is read (:func:`check_manifest`,
:meth:`Sample.from_json_dict`): a file that does not match is refused with one line that names
the file (and line), never half-read.
  Run folders may also hold ``cache/`` (bench/columnar.py): derived Parquet copies and
  statistics, rebuilt from these files whenever they do not match; not part of the format, which
  is unchanged.

Loaders refuse any other version with a message saying which versions they read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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
    def from_json_dict(cls, d: Any) -> Sample:
        """A sample read from a file: every field checked against its type, the status
        against :class:`Status`; SchemaError (one line) otherwise."""
        if not isinstance(d, Mapping):
            raise SchemaError(f"a sample must be a JSON object, not {_kind(d)}")
        unknown = sorted(str(k) for k in d if k not in _SAMPLE_FIELDS)
        if unknown:
            raise SchemaError(f"unknown sample field(s) {', '.join(unknown)}")
        missing = [name for name in _REQUIRED_SAMPLE_FIELDS if name not in d]
        if missing:
            raise SchemaError(f"sample lacks {', '.join(missing)}")
        for name, value in d.items():
            kinds = _SAMPLE_FIELDS[name]
            if not _is(value, kinds):
                raise SchemaError(f"sample field {name} is {_kind(value)}, not {_names(kinds)}")
        if d["status"] not in _STATUSES:
            raise SchemaError(
                f"unknown status {d['status']!r} (known: {', '.join(sorted(_STATUSES))})"
            )
        for name in ("duration_s", "intended_start_s", "actual_start_s"):
            value = d.get(name)
            if value is not None and not math.isfinite(value):
                raise SchemaError(f"sample field {name} is not a finite number: {value!r}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:  # SchemaError is a ValueError
            raise SchemaError(f"sample does not match schema {SCHEMA_VERSION}: {exc}") from None


_STATUSES = frozenset(str(s) for s in Status)
_RUN_STATUSES = frozenset(str(s) for s in RunStatus)
_NUMBER = (int, float)
_OPT_STR = (str, type(None))
#: Each sample field and the JSON types it may hold.
_SAMPLE_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "sample_id": (int,),
    "provider": (str,),
    "workload": (str,),
    "operation": (str,),
    "iteration": (int,),
    "warmup": (bool,),
    "concurrency": (int,),
    "started_at": (str,),
    "duration_s": (*_NUMBER, type(None)),
    "status": (str,),
    "intended_start_s": (*_NUMBER, type(None)),
    "actual_start_s": (*_NUMBER, type(None)),
    "error_type": _OPT_STR,
    "error_message": _OPT_STR,
    "sandbox_id": _OPT_STR,
    "location": _OPT_STR,
    "extra": (dict,),
}
_REQUIRED_SAMPLE_FIELDS = tuple(
    f.name for f in fields(Sample) if f.name not in ("intended_start_s", "actual_start_s",
                                                      "error_type", "error_message",
                                                      "sandbox_id", "location", "extra")
)  # fmt: skip


def _is(value: Any, kinds: tuple[type, ...] | Mapping[str, Any] | list[Any]) -> bool:
    if isinstance(kinds, tuple):
        # JSON has no separate bool: true is not a number, 1 is not a flag.
        if isinstance(value, bool):
            return bool in kinds
        return isinstance(value, kinds)
    if isinstance(kinds, list):
        return isinstance(value, list)
    return isinstance(value, dict)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")  # fmt: skip


def _names(kinds: Any) -> str:
    if isinstance(kinds, tuple):
        return " or ".join(sorted({_kind(k()) if k is not type(None) else "null"
                                   for k in kinds}))  # fmt: skip
    return "a list" if isinstance(kinds, list) else "an object"


#: What a manifest may hold, as far as any reader looks: key -> JSON types, or a nested
#: {key: types} for an object, or [types] for a list of them; "*" is every key of an object
#: whose keys are names (provider ids). Absent keys are fine (older runs lack some); unknown
#: keys are kept for newer readers.
_TEXT_LIST = [(str,)]
_OBJECT = (dict, type(None))
_MANIFEST: dict[str, Any] = {
    "schema_version": (int,),
    "run_id": (str,),
    "status": (str,),
    "started_at": _OPT_STR,
    "finished_at": _OPT_STR,
    "harness": _OBJECT,
    "client": _OBJECT,
    "seed": (int, type(None)),
    "config_file": _OPT_STR,
    "config": {
        "pricing": _OBJECT,
        "scenario": _OBJECT,
        "workload_params": _OBJECT,
        "provider_settings": _OBJECT,
    },
    "spec": _OBJECT,
    "plan": {
        "providers": _TEXT_LIST,
        "workloads": _TEXT_LIST,
        "iterations": (int,),
        "warmup": (int,),
        "concurrency": (int,),
        "scheduled_iterations": (int,),
        "workload_params": _OBJECT,
    },
    "providers": {
        "*": {
            "capabilities": {
                "operations": _TEXT_LIST,
                "unsupported": _OBJECT,
                "notes": _OBJECT,
            },
            "environment": {"sdk_versions": _OBJECT},
        }
    },
    "retry_policy": _OBJECT,
    "budget": _OBJECT,
    "resumes": [(dict,)],
    "cluster": {"workers": _OBJECT, "reruns": [(dict,)]},
    "warnings": _TEXT_LIST,
    "load_warnings": _TEXT_LIST,
    "spent_usd": (*_NUMBER, type(None)),
    "failure": _OPT_STR,
    "left_alive": [(dict,)],
    "harness_errors": _TEXT_LIST,
}


def _check_shape(value: Any, shape: Any, where: str) -> None:
    if isinstance(shape, tuple):
        if not _is(value, shape):
            raise SchemaError(f"{where} is {_kind(value)}, not {_names(shape)}")
        return
    if isinstance(shape, list):
        if not isinstance(value, list):
            raise SchemaError(f"{where} is {_kind(value)}, not a list")
        for index, item in enumerate(value):
            _check_shape(item, shape[0], f"{where}[{index}]")
        return
    if value is None:
        return
    if not isinstance(value, dict):
        raise SchemaError(f"{where} is {_kind(value)}, not an object")
    for key, item in value.items():
        inner = shape.get("*", shape.get(key))
        if inner is not None:
            _check_shape(item, inner, f"{where}.{key}")


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """``manifest`` as read from ``where``, if it has the shape every reader relies on
    (schema version, run id, status, and the types of what readers look at); SchemaError
    (one line naming ``where``) otherwise."""
    if not isinstance(manifest, dict):
        raise SchemaError(f"{where}: not a JSON object but {type(manifest).__name__}")
    check_schema_version(manifest.get("schema_version"), where)
    run_id = manifest.get("run_id")
    if not isinstance(run_id, str) or not run_id.strip():
        raise SchemaError(f"{where}: no run_id (a run's manifest names its run)")
    status = manifest.get("status")
    if status is not None and (not isinstance(status, str) or status not in _RUN_STATUSES):
        raise SchemaError(
            f"{where}: unknown run status {status!r} (known: {', '.join(sorted(_RUN_STATUSES))})"
        )
    try:
        for key, shape in _MANIFEST.items():
            if key in manifest:
                _check_shape(manifest[key], shape, key)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None
    return manifest


def check_schema_version(version: object, where: str) -> None:
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or (version not in SUPPORTED_SCHEMA_VERSIONS)
    ):
        known = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise SchemaError(
            f"{where}: schema version {version!r} is not one this sandbox-bench reads ({known}); "
            "use the sandbox-bench version that wrote it, or re-run the benchmark"
        )
