"""probe: what a new sandbox really is, and whether it is really new.

One iteration::

    create | probe | destroy

``probe`` is one exec of a small shell script that reads, from inside the sandbox: the boot
id, the CPUs and memory it sees (``nproc``, /proc/meminfo) and its cgroup limits (v2
``cpu.max``/``memory.max`` or v1 quota and limit, where /sys/fs/cgroup is visible), and the
size of its root filesystem; then it looks for a marker file a previous run would have left in
the scratch directory and writes its own. All of it goes in ``extra``:

* ``recycled``: the marker was already there: the provider handed out a used sandbox.
* ``effective_cpus`` (cgroup quota, else nproc) and ``effective_memory_mb`` (cgroup limit, else
  MemTotal), and ``spec_mismatch``: the spec fields the sandbox does not honour (fewer than 95 %
  of the CPUs or 90 % of the memory asked for), which the report turns into a comparability
  warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.shape import Extra, Operation
from providers.base import ExecResult, SandboxSpec

if TYPE_CHECKING:
    from bench.iteration import IterationContext

MARKER = ".sandbox-bench-marker"

SCRIPT = r"""
c=/sys/fs/cgroup
echo boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
echo nproc=$(nproc 2>/dev/null)
echo mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo 2>/dev/null)
q=$(cat $c/cpu/cpu.cfs_quota_us 2>/dev/null); p=$(cat $c/cpu/cpu.cfs_period_us 2>/dev/null)
echo cpu_max=$(cat $c/cpu.max 2>/dev/null || echo "$q $p")
echo mem_max=$(cat $c/memory.max 2>/dev/null || cat $c/memory/memory.limit_in_bytes 2>/dev/null)
echo disk_kb=$(df -Pk / 2>/dev/null | awk 'NR==2{print $2}')
echo marker=$(cat @DIR@/@MARKER@ 2>/dev/null)
echo @RUN@ > @DIR@/@MARKER@
"""


def parse_probe(text: str, spec: SandboxSpec) -> dict[str, Any]:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    found: dict[str, Any] = {"boot_id": values.get("boot_id") or None}
    nproc = int(values["nproc"]) if values.get("nproc", "").isdigit() else None
    mem_mb = int(values["mem_kb"]) // 1024 if values.get("mem_kb", "").isdigit() else None
    cpus = float(nproc) if nproc else None
    quota = values.get("cpu_max", "").split()
    if len(quota) == 2 and quota[0].lstrip("-").isdigit() and int(quota[0]) > 0:
        cpus = min(cpus or float("inf"), int(quota[0]) / int(quota[1]))
    limit = values.get("mem_max", "")
    if limit.isdigit() and int(limit) < 2**60:
        mem_mb = min(mem_mb or 2**62, int(limit) // (1024 * 1024))
    disk = values.get("disk_kb", "")
    found.update(
        nproc=nproc,
        effective_cpus=cpus,
        effective_memory_mb=mem_mb,
        disk_mb=int(disk) // 1024 if disk.isdigit() else None,
        recycled=bool(values.get("marker", "").strip()),
        previous_marker=values.get("marker", "").strip() or None,
    )
    mismatch = []
    if cpus is not None and cpus < 0.95 * spec.cpus:
        mismatch.append(f"cpus {cpus:g} < {spec.cpus:g}")
    if mem_mb is not None and mem_mb < 0.9 * spec.memory_mb:
        mismatch.append(f"memory {mem_mb} MB < {spec.memory_mb} MB")
    found["spec_mismatch"] = mismatch
    return found


class Probe(Workload):
    name: ClassVar[str] = "probe"
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("probe", help="one exec of the script that reads what the sandbox is"),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        Extra("boot_id", str, help="the kernel's boot id: one per kernel"),
        Extra("nproc", int, help="CPUs the sandbox's processes see"),
        Extra("effective_cpus", float, help="the cgroup CPU quota, else nproc"),
        Extra("effective_memory_mb", int, unit="MiB", help="the cgroup limit, else MemTotal"),
        Extra("disk_mb", int, unit="MiB", help="size of the root filesystem"),
        Extra("recycled", bool, help="a marker of an earlier run was already there"),
        Extra("previous_marker", str, help="the run id that marker names"),
        Extra("spec_mismatch", list, help="spec fields the sandbox falls short of"),
    )
    #: Its findings table and the recycled / below-spec warnings.
    report: ClassVar[Any] = "bench.workloads.probe_report"

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        script = (
            SCRIPT.replace("@DIR@", ctx.capabilities.scratch_dir.rstrip("/"))
            .replace("@MARKER@", MARKER)
            .replace("@RUN@", ctx.recorder.run_id)
        )
        found: dict[str, Any] = {}

        def read(result: ExecResult) -> None:
            exit_zero(result)
            found.update(parse_probe(result.stdout.decode(errors="replace"), ctx.spec))
            if found["recycled"]:
                raise CheckFailed("RecycledSandbox", f"marker of {found['previous_marker']}",
                                  **found)  # fmt: skip

        await ctx.timed(
            "probe",
            lambda: ctx.provider.exec(sandbox, script, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=read,
            extra=found,
        )
        await ctx.destroy(sandbox)
