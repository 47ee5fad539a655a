"""The workloads, one module each; every module's docstring draws what its metrics measure.

The list is explicit: a workload runs unchanged on every provider.
"""

from __future__ import annotations

from bench.workloads.base import CheckFailed, Workload
from bench.workloads.checkpoint import Checkpoint
from bench.workloads.exec import Exec
from bench.workloads.files import Files
from bench.workloads.idle_wake import IdleWake
from bench.workloads.lifecycle import Lifecycle
from bench.workloads.open_loop import Burst, Ramp
from bench.workloads.pause_resume import PauseResume
from bench.workloads.probe import Probe
from bench.workloads.scaling import CheckpointScaling, ConcurrencyScaling

WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls
    for cls in (
        Lifecycle,
        Exec,
        Files,
        Checkpoint,
        PauseResume,
        Probe,
        IdleWake,
        Burst,
        Ramp,
        CheckpointScaling,
        ConcurrencyScaling,
    )
}

#: What ``sandbox-bench run`` runs when no workloads are named.
DEFAULT_SUITE: tuple[str, ...] = ("lifecycle", "exec", "files", "checkpoint", "pause_resume")

__all__ = ["DEFAULT_SUITE", "WORKLOADS", "CheckFailed", "Workload"]
