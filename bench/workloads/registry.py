"""The workload registry, and what the analysis reads from the registered declarations.

``WORKLOADS`` maps a name to its class, in display order (the report lists workloads in this
order); :func:`register_workload` adds one, built-in or plugin, after checking its
declarations. Everything else here answers questions from those declarations, so no analysis
module names a workload or an operation:

* :func:`operation_rank` / :func:`workload_rank`: display order;
* :func:`find_operation`: the declaration behind a recorded name (``checkpoint_64mb`` is the
  ``checkpoint`` family at 64), :func:`is_derived`;
* :func:`with_role`: which (workload, operation) stand for a :class:`~bench.workloads.shape.Role`;
* :func:`fidelity_checks`: which (workload, operation) judge which fidelity check;
* :func:`declared_extras`: every extra key with its type (the columns of the samples frame);
* :func:`capability_needs`: the capabilities an operation needs (why it was not measured).

Answers are computed from the registry as it is at the call (a plugin may register late) and
cached until it changes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.workloads.base import Workload
from bench.workloads.shape import COMMON_EXTRAS, Check, Extra, Operation, Role

WORKLOADS: dict[str, type[Workload]] = {}

#: Sample fields and the columns the samples frame derives from them: no extra may be a column
#: of the same name.
RESERVED_COLUMNS = frozenset(
    {
        "run_id",
        "sample_id",
        "provider",
        "workload",
        "operation",
        "iteration",
        "warmup",
        "concurrency",
        "started_at",
        "duration_s",
        "status",
        "intended_start_s",
        "actual_start_s",
        "error_type",
        "error_message",
        "sandbox_id",
        "location",
        "extra",
        "schedule_lag_s",
    }
)


def _check_declarations(cls: type[Workload], others: Mapping[str, type[Workload]]) -> None:
    where = f"workload {getattr(cls, 'name', cls.__name__)!r}"
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise TypeError(f"{where}: not a Workload subclass")
    if not isinstance(getattr(cls, "name", None), str) or not re.fullmatch(
        r"[a-z][a-z0-9_]*", cls.name
    ):
        raise ValueError(f"{where}: name must be lower-case letters, digits and _")
    if not dataclasses.is_dataclass(cls.Settings):
        raise TypeError(f"{where}: Settings must be a dataclass of setting(...) fields")
    ops = cls.operations
    if not ops or not all(isinstance(op, Operation) for op in ops):
        raise ValueError(f"{where}: declare its operations (a tuple of Operation)")
    names = [op.name for op in ops]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: an operation is declared twice")
    known = {e.name for e in (*COMMON_EXTRAS, *cls.extras)}
    for op in ops:
        if op.after_idle is not None and op.after_idle not in {e.name for e in cls.extras}:
            raise ValueError(f"{where}: {op.name}.after_idle {op.after_idle!r} is not an extra")
        for check in op.checks:
            if not isinstance(check, Check):
                raise ValueError(f"{where}: {op.name}.checks must be a tuple of Check")
            if check.flag is not None and check.flag not in known:
                raise ValueError(
                    f"{where}: {op.name}'s {check.kind} flag {check.flag!r} is not an extra"
                )
    if not all(isinstance(e, Extra) for e in cls.extras):
        raise ValueError(f"{where}: extras must be a tuple of Extra")
    _merge_extras([*(c.extras for c in others.values()), cls.extras], where)


def _merge_extras(groups: list[tuple[Extra, ...]], where: str = "workloads") -> tuple[Extra, ...]:
    merged: dict[str, Extra] = {e.name: e for e in COMMON_EXTRAS}
    for extras in groups:
        for extra in extras:
            known = merged.get(extra.name)
            if known is None:
                if extra.column and extra.name in RESERVED_COLUMNS:
                    raise ValueError(
                        f"{where}: extra {extra.name!r} would shadow the sample field of that "
                        "name (declare it with column=False)"
                    )
                merged[extra.name] = extra
            elif (known.type, known.column) != (extra.type, extra.column):
                raise ValueError(
                    f"{where}: extra {extra.name!r} is declared as {known.type.__name__} "
                    f"elsewhere, here as {extra.type.__name__}"
                )
    return tuple(merged.values())


def register_workload(cls: type[Workload], *, replace: bool = False) -> type[Workload]:
    """Add ``cls`` to the registry (usable as a class decorator); returns it.

    Refuses, with a one-line ValueError or TypeError, a name already taken (unless
    ``replace``) and declarations the analysis could not read.
    """
    others = {n: c for n, c in WORKLOADS.items() if n != getattr(cls, "name", None)}
    _check_declarations(cls, others)
    if cls.name in WORKLOADS and WORKLOADS[cls.name] is not cls and not replace:
        raise ValueError(f"workload {cls.name!r} is already registered")
    WORKLOADS[cls.name] = cls
    return cls


def unregister_workload(name: str) -> None:
    """Remove a workload (tests, plugins that registered one for a while)."""
    WORKLOADS.pop(name, None)


# -- answers from the declarations ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    """The declaration behind a recorded operation name."""

    workload: str
    operation: Operation
    #: Position of the declaration in its workload's timeline.
    rank: int
    #: The parameter of a scaled operation (64 for ``checkpoint_64mb``), else None.
    value: int | None = None


@dataclass(kw_only=True)
class _Index:
    workload_rank: dict[str, int]
    exact: dict[str, dict[str, tuple[int, Operation]]]
    families: dict[str, list[tuple[int, Operation, re.Pattern[str]]]]
    #: Operation name -> first position across all workloads (for unregistered workloads).
    global_rank: dict[str, int]
    extras: tuple[Extra, ...]
    found: dict[tuple[str, str], Found | None] = field(default_factory=dict)


_cache: tuple[tuple[tuple[str, type[Workload]], ...], _Index] | None = None


def _index() -> _Index:
    global _cache
    key = tuple(WORKLOADS.items())
    if _cache is not None and _cache[0] == key:
        return _cache[1]
    exact: dict[str, dict[str, tuple[int, Operation]]] = {}
    families: dict[str, list[tuple[int, Operation, re.Pattern[str]]]] = {}
    global_rank: dict[str, int] = {}
    for name, cls in WORKLOADS.items():
        exact[name] = {}
        families[name] = []
        for rank, op in enumerate(cls.operations):
            if op.scale is None:
                exact[name][op.name] = (rank, op)
                global_rank.setdefault(op.name, len(global_rank))
            else:
                families[name].append((rank, op, op.scale.pattern(op.name)))
    index = _Index(
        workload_rank={name: i for i, name in enumerate(WORKLOADS)},
        exact=exact,
        families=families,
        global_rank=global_rank,
        extras=_merge_extras([cls.extras for cls in WORKLOADS.values()]),
    )
    _cache = (key, index)
    return index


def find_operation(workload: str, operation: str) -> Found | None:
    """The declaration of ``operation`` in ``workload``, or None when it declares none."""
    index = _index()
    key = (workload, operation)
    if key in index.found:
        return index.found[key]
    found = None
    hit = index.exact.get(workload, {}).get(operation)
    if hit is not None:
        found = Found(workload=workload, operation=hit[1], rank=hit[0])
    else:
        for rank, op, pattern in index.families.get(workload, ()):
            match = pattern.match(operation)
            if match is not None:
                found = Found(workload=workload, operation=op, rank=rank, value=int(match[1]))
                break
    index.found[key] = found
    return found


def declares(workload: str | None, operation: str) -> bool:
    """Whether ``workload`` (None: any registered workload) declares ``operation``."""
    names = [workload] if workload is not None else list(WORKLOADS)
    return any(find_operation(w, operation) is not None for w in names)


def workload_rank(workload: str) -> tuple[int, str]:
    """Display position of a workload: registry order, then unknown ones by name."""
    index = _index()
    return (index.workload_rank.get(workload, len(index.workload_rank)), workload)


def operation_rank(workload: str, operation: str) -> tuple[int, int, int, str]:
    """Display position of an operation within its workload: its declaration's position (a
    scaled family by value), then undeclared ones; an unregistered workload's operations in
    the order any workload declares them, then by name."""
    found = find_operation(workload, operation)
    if found is not None:
        return (0, found.rank, found.value or 0, operation)
    index = _index()
    if workload in index.exact:
        return (1, len(index.exact[workload]), 0, operation)
    return (2, index.global_rank.get(operation, len(index.global_rank)), 0, operation)


def is_derived(operation: str, workload: str | None = None) -> bool:
    """True for spans measured across other records (never summed into a total). Without a
    workload, true when any registered workload declares ``operation`` derived."""
    names = [workload] if workload is not None else list(WORKLOADS)
    for name in names:
        found = find_operation(name, operation)
        if found is not None and found.operation.derived:
            return True
    return False


def with_role(role: Role) -> list[tuple[str, Operation]]:
    """(workload, operation) declared with ``role``, in registry order."""
    return [
        (name, op) for name, cls in WORKLOADS.items() for op in cls.operations if role in op.roles
    ]


def fidelity_checks() -> list[tuple[str, Operation, Check]]:
    """(workload, operation, check) for every fidelity check declared, in registry order."""
    return [
        (name, op, check)
        for name, cls in WORKLOADS.items()
        for op in cls.operations
        for check in op.checks
    ]


def declared_extras() -> tuple[Extra, ...]:
    """Every declared extra key: the common ones, then each workload's in registry order."""
    return _index().extras


def capability_needs(workload: str | None, operation: str) -> tuple[str, ...]:
    """Capabilities (``providers.base.Op`` values) without which ``operation`` of ``workload``
    is not measured: the one it exercises, then what its workload requires. Without a
    workload: those that every workload declaring ``operation`` needs."""
    if workload is None:
        per_workload = [
            capability_needs(name, operation)
            for name in WORKLOADS
            if find_operation(name, operation) is not None
        ]
        if not per_workload:
            return ()
        return tuple(n for n in per_workload[0] if all(n in other for other in per_workload))
    cls = WORKLOADS.get(workload)
    found = find_operation(workload, operation)
    if cls is None or found is None:
        return ()
    ops = cls.capability_ops if isinstance(cls.capability_ops, Mapping) else {}
    needs = [str(ops[found.operation.name])] if found.operation.name in ops else []
    needs += [str(op) for op in ops.values()]
    needs += sorted(str(op) for op in cls.requires)
    return tuple(dict.fromkeys(needs))


__all__ = [
    "WORKLOADS",
    "Found",
    "capability_needs",
    "declared_extras",
    "declares",
    "fidelity_checks",
    "find_operation",
    "is_derived",
    "operation_rank",
    "register_workload",
    "unregister_workload",
    "with_role",
    "workload_rank",
]
