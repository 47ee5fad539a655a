"""The workloads, one module each; every module's docstring draws what its metrics measure.

The list is explicit: a workload runs unchanged on every provider. The registry's order is the
order reports list workloads in. A workload outside this package (a plugin, a test's toy) is
added with :func:`register_workload`; nothing else needs to change for stats, costs, claims,
``show``, the report and summary.csv to include it (bench/workloads/base.py says what a
workload declares). Each ``[workloads.task.NAME]`` table of a config becomes a registered
workload ``task_NAME`` when the config is read (bench/workloads/task.py).
"""

from __future__ import annotations

from bench.workloads.agent_tasks import BuildTest, GitClone, PipInstall
from bench.workloads.base import CheckFailed, Workload
from bench.workloads.checkpoint import Checkpoint
from bench.workloads.exec import Exec
from bench.workloads.files import Files
from bench.workloads.fork import Fork
from bench.workloads.guest_perf import GuestPerf
from bench.workloads.idle_wake import IdleWake
from bench.workloads.lifecycle import Lifecycle
from bench.workloads.open_loop import Burst, Ramp
from bench.workloads.pause_resume import PauseResume
from bench.workloads.probe import Probe
from bench.workloads.registry import WORKLOADS, register_workload, unregister_workload
from bench.workloads.scaling import CheckpointScaling, ConcurrencyScaling
from bench.workloads.shape import Extra, Operation, Role, Scale
from bench.workloads.sleep_persist import SleepPersist

for _cls in (
    Lifecycle,
    Exec,
    Files,
    Checkpoint,
    PauseResume,
    IdleWake,
    Probe,
    Burst,
    Ramp,
    CheckpointScaling,
    ConcurrencyScaling,
    PipInstall,
    GitClone,
    BuildTest,
    GuestPerf,
    Fork,
    SleepPersist,
):
    register_workload(_cls)

#: What ``sandbox-bench run`` runs when no workloads are named.
DEFAULT_SUITE: tuple[str, ...] = ("lifecycle", "exec", "files", "checkpoint", "pause_resume")

__all__ = [
    "DEFAULT_SUITE",
    "WORKLOADS",
    "CheckFailed",
    "Extra",
    "Operation",
    "Role",
    "Scale",
    "Workload",
    "register_workload",
    "unregister_workload",
]
