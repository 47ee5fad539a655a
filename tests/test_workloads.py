"""What workloads declare: settings refused in one line, operations and extras that match what
they really record, and a registry that refuses declarations the analysis could not read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from bench.records import Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import WORKLOADS, register_workload, registry, unregister_workload
from bench.workloads.base import Workload
from bench.workloads.shape import COMMON_EXTRAS, Extra, Operation, Role, Scale
from providers.base import SandboxSpec
from providers.settings import SettingError, setting

#: Small parameters, so every built-in workload runs in seconds.
SMALL: dict[str, dict[str, Any]] = {
    "exec": {"repeats": 2},
    "checkpoint": {"state_mb": 1},
    "pause_resume": {"hold_s": 0.1},
    "idle_wake": {"idle_s": 0.1},
    "burst": {"size": 2, "watch_loop": True},
    "ramp": {"rate_per_s": 4.0, "duration_s": 0.5},
    "checkpoint_scaling": {"sizes_mb": [1, 2]},
    "concurrency_scaling": {"levels": [1, 2]},
}


@pytest.mark.parametrize(
    ("name", "table", "message"),
    [
        ("exec", {"repeats": 1e30}, "workloads.exec.repeats must be a whole number, got 1e+30"),
        ("exec", {"repeats": 0}, "workloads.exec.repeats must be at least 1"),
        ("exec", {"repeat": 3}, "[workloads.exec]: unknown key(s) repeat (known: repeats)"),
        ("checkpoint", {"state_mb": 10**9}, "state_mb must be at most 65536 MiB"),
        ("idle_wake", {"idle_s": float("inf")}, "idle_s must be a finite number"),
        ("burst", {"first_exec": 1}, "first_exec must be true or false"),
        ("ramp", {"clients": 1.5}, "clients must be a whole number"),
        ("checkpoint_scaling", {"sizes_mb": []}, "sizes_mb needs at least one value"),
        ("checkpoint_scaling", {"sizes_mb": [1, 1]}, "sizes_mb lists a value twice"),
        ("concurrency_scaling", {"levels": [0]}, "levels[0] must be at least 1"),
        ("probe", {"anything": 1}, "[workloads.probe]: unknown key(s) anything"),
    ],
)
def test_bad_parameters_are_refused_in_one_line(name, table, message):
    with pytest.raises(SettingError) as info:
        WORKLOADS[name].validate_params(table)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):  # what bench/config.py catches
        WORKLOADS[name](table)


def test_parameters_take_their_declared_defaults_and_stay_a_plain_table():
    exec_ = WORKLOADS["exec"]({})
    assert exec_.settings.repeats == 10 and exec_.params == {"repeats": 10}
    scaling = WORKLOADS["checkpoint_scaling"]({"sizes_mb": [4, 2]})
    assert scaling.settings.sizes_mb == (4, 2) and scaling.params == {"sizes_mb": [4, 2]}
    assert WORKLOADS["lifecycle"](None).params == {}


async def test_every_built_in_records_only_declared_operations_and_extras(open_provider):
    """The declarations are what the analysis reads; a workload recording anything else would
    go unordered and unread. Each built-in runs once on the real local provider."""
    async with open_provider("local") as (provider, _):
        sink = MemorySink()
        workloads = {name: cls(SMALL.get(name, {})) for name, cls in WORKLOADS.items()}
        runner = Runner(
            providers={"local": provider},
            workloads=workloads,
            spec=SandboxSpec(),
            recorder=Recorder(sink, run_id="declared", concurrency=1),
            timeout_s=60,
        )
        await runner.run(make_plan(["local"], list(workloads), iterations=1, warmup=0, seed=1))
    assert {s.workload for s in sink.samples} == set(WORKLOADS)
    failed = [(s.workload, s.operation, s.error_message) for s in sink.samples
              if s.status not in (Status.OK, Status.UNSUPPORTED)]  # fmt: skip
    assert failed == []
    common = {e.name for e in COMMON_EXTRAS}
    for sample in sink.samples:
        found = registry.find_operation(sample.workload, sample.operation)
        assert found is not None, (sample.workload, sample.operation)
        declared = common | {e.name for e in WORKLOADS[sample.workload].extras}
        assert set(sample.extra) <= declared, (sample.workload, sample.operation, sample.extra)
        types = {e.name: e.type for e in registry.declared_extras()}
        for key, value in sample.extra.items():
            kind = types[key]
            if value is not None:  # a key written as null (e.g. nothing found) is absent
                assert isinstance(value, kind) or (kind is float and isinstance(value, int)), key


def test_display_order_follows_the_declarations():
    rank = registry.operation_rank
    assert rank("lifecycle", "ready") < rank("lifecycle", "destroy")
    scaled = ["checkpoint_64mb", "write_state_1mb", "checkpoint_1mb", "destroy", "create"]
    assert sorted(scaled, key=lambda op: rank("checkpoint_scaling", op)) == [
        "create",
        "write_state_1mb",
        "checkpoint_1mb",
        "checkpoint_64mb",
        "destroy",
    ]
    # An operation its workload does not declare comes after the declared ones, and an
    # unregistered workload's operations follow the order any workload declares them in.
    assert rank("lifecycle", "zzz") > rank("lifecycle", "destroy")
    assert rank("gone", "create") < rank("gone", "destroy") < rank("gone", "aaa")
    assert registry.workload_rank("lifecycle") < registry.workload_rank("gone")


def test_roles_name_the_operations_costs_and_the_glance_use():
    assert registry.with_role(Role.CHECKPOINT)[0][:1] == ("checkpoint",)
    [(workload, wake)] = registry.with_role(Role.WAKE)
    assert (workload, wake.name, wake.after_idle) == ("idle_wake", "exec_after_idle", "idle_s")
    assert registry.capability_needs("pause_resume", "first_exec_after_resume") == (
        "pause",
        "resume",
    )
    # Without a workload, only what every workload recording the operation needs.
    assert registry.capability_needs(None, "create") == ()
    assert registry.capability_needs(None, "restore") == ("restore", "checkpoint")
    assert registry.capability_needs("checkpoint", "create") == ("checkpoint", "restore")


# -- declarations the registry refuses ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Settings:
    n: int = setting(1, help="n", minimum=1)


def _workload(**attributes: Any) -> type[Workload]:
    class Declared(Workload):
        name: ClassVar[str] = "declared"
        operations: ClassVar[tuple[Operation, ...]] = (Operation("create"),)

        async def run(self, ctx) -> None:
            return None

    for key, value in attributes.items():
        setattr(Declared, key, value)
    return Declared


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "exec"}, "already registered"),
        ({"name": "Bad Name"}, "name must be lower-case"),
        ({"operations": ()}, "declare its operations"),
        ({"operations": (Operation("a"), Operation("a"))}, "declared twice"),
        ({"extras": (Extra("state_mb", str),)}, "declared as int elsewhere"),
        ({"extras": (Extra("provider", str),)}, "would shadow the sample field"),
        ({"operations": (Operation("w", roles=(Role.WAKE,), after_idle="gap_s"),)}, "not an extra"),
        ({"Settings": dict}, "Settings must be a dataclass"),
    ],
)
def test_declarations_the_analysis_could_not_read_are_refused(attributes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        register_workload(_workload(**attributes))
    assert "declared" not in WORKLOADS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"throughput": True, "derived": True}, "needs a concurrency scale"),
        ({"throughput": True, "scale": Scale.CONCURRENCY}, "is a derived span"),
        ({"roles": (Role.WAKE,)}, "a wake needs after_idle"),
    ],
)
def test_operation_declarations_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Operation("round", **kwargs)
    with pytest.raises(ValueError, match="lower-case"):
        Operation("Round")
    with pytest.raises(ValueError, match="type must be one of"):
        Extra("when", dict)


def test_a_registered_workload_is_read_at_once_and_forgotten_when_unregistered():
    cls = _workload(
        Settings=_Settings,
        operations=(Operation("create"), Operation("span", derived=True)),
        extras=(Extra("gap_s", float, unit="s"),),
    )
    register_workload(cls)
    try:
        assert registry.is_derived("span", "declared")
        assert "gap_s" in {e.name for e in registry.declared_extras()}
        assert cls({"n": 3}).params == {"n": 3}
    finally:
        unregister_workload("declared")
    assert not registry.is_derived("span")
    assert "gap_s" not in {e.name for e in registry.declared_extras()}
