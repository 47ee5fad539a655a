"""Keeping the client's idle CPUs awake while a run measures (``[run] cpu_latency``).

A call the harness times spends part of its life waiting (for the sandbox's answer, for a
child process, for a socket). While it waits, the client's CPU goes idle, and how long the CPU
then takes to wake up depends on what ran *before*: cpuidle governors pick deeper idle states
after long idle periods, and a virtual machine's adaptive halt-polling (``haltpoll``) stops
polling after idle stretches and halts, so the host deschedules the vCPU. On this project's
2-vCPU KVM machine (cpuidle driver ``haltpoll``) a local ``create`` right after a 0.5 s idle
pause was slower than back to back: at load 4-5 (other tests running) 10.6 ms against 5.4 ms
p50, on an idle machine 8.6 ms against 7.9 ms (with the request held: 8.1 against 7.7 ms). So a
workload measured after an idle-heavy neighbour (``pause_resume``'s hold, ``idle_wake``) can be
slower than the same workload alone for a reason that is not the operation. It is one part of
that difference, not all of it: a create after 20 ms of busy work, with no idle at all, was
also 7-21 % slower than back to back (README, the quiet benchmark's experiments).

``hold`` (the default) does what latency benchmarks such as rt-tests' cyclictest do: for as
long as the run's iterations execute, it asks the kernel's PM QoS for a wake-up latency of 0 us
by writing 0 to ``/dev/cpu_dma_latency`` and keeping the file open (the request ends when it is
closed, also when the process dies, so nothing outlives the run). cpuidle then keeps idle CPUs
in their polling state: every call starts and waits on an awake CPU whatever ran before it.
The price is idle CPUs that spin during the run (they still yield at once to any runnable
task). It needs root; without it (or without the file) the run goes on under the machine's own
policy and the manifest says why. ``system`` leaves the machine's policy alone.

What was asked and what was obtained (the value read back, the cpuidle driver and governor) go
into the manifest's ``client.cpu_latency``.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

#: The PM QoS request file (Documentation/power/pm_qos_interface.rst).
DEVICE = Path("/dev/cpu_dma_latency")
CPUIDLE = Path("/sys/devices/system/cpu/cpuidle")


class CpuLatency(StrEnum):
    HOLD = "hold"
    SYSTEM = "system"


@dataclass(kw_only=True)
class LatencyHold:
    """An open PM QoS request (or the reason there is none); :meth:`release` ends it."""

    requested: CpuLatency
    held: bool = False
    reason: str = ""
    observed_us: int | None = None
    _fd: int | None = field(default=None, repr=False)

    def facts(self) -> dict[str, Any]:
        return {
            "requested": str(self.requested),
            "held": self.held,
            "observed_us": self.observed_us,
            "reason": self.reason,
            "cpuidle_driver": _read(CPUIDLE / "current_driver"),
            "cpuidle_governor": _read(CPUIDLE / "current_governor_ro")
            or _read(CPUIDLE / "current_governor"),
        }

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def hold(requested: CpuLatency | str, device: Path | None = None) -> LatencyHold:
    """Open the request ``requested`` asks for; never raises (a refusal is a fact)."""
    requested, device = CpuLatency(requested), device or DEVICE
    if requested is CpuLatency.SYSTEM:
        return LatencyHold(requested=requested, reason="the machine's own idle policy, as asked")
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        reason = f"{device} could not be opened ({exc.strerror or exc}); the machine's policy"
        return LatencyHold(requested=requested, reason=reason)
    try:
        os.write(fd, struct.pack("i", 0))
        observed = struct.unpack("i", os.pread(fd, 4, 0))[0]
    except OSError as exc:
        os.close(fd)
        reason = f"{device} refused the request ({exc.strerror or exc}); the machine's policy"
        return LatencyHold(requested=requested, reason=reason)
    return LatencyHold(
        requested=requested,
        held=True,
        observed_us=observed,
        reason="0 us wake-up latency requested: idle CPUs poll instead of halting",
        _fd=fd,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


__all__ = ["CpuLatency", "LatencyHold", "hold"]
