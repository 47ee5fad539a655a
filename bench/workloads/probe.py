"""probe: what a new sandbox really is, whether it is really new, and whether it is listed.

One iteration::

    create | probe | listed | destroy

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

``listed``: the provider's listing by the run's label (``list_sandboxes``, what the end-of-run
leak sweep relies on), repeated every :data:`LIST_RETRY_S` s until it shows the new sandbox,
at most :data:`LIST_ATTEMPTS` listings (a listing may lag a create; the attempts go in
``extra.list_attempts``); a sandbox it never shows is a ``FidelityError``.

Fidelity checks (bench/workloads/shape.py): ``probe`` judges ``fresh`` (a recycled sandbox is
a ``RecycledSandbox`` error) and ``spec`` (``spec_mismatch`` on the record), ``listed``
judges ``listed``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.shape import Check, Extra, Fidelity, Operation
from providers.base import ExecResult, Provider, Sandbox, SandboxSpec

if TYPE_CHECKING:
    from bench.iteration import IterationContext

MARKER = ".sandbox-bench-marker"
#: ``listed``: how many listings at most, and how far apart.
LIST_ATTEMPTS = 4
LIST_RETRY_S = 0.25

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
        Operation(
            "probe",
            help="one exec of the script that reads what the sandbox is",
            checks=(
                Check(Fidelity.FRESH, error_type="RecycledSandbox", flag="recycled"),
                Check(Fidelity.SPEC, error_type=None, flag="spec_mismatch"),
            ),
        ),
        Operation(
            "listed",
            help="the listing by run label, until it shows the sandbox (a few tries)",
            checks=(Check(Fidelity.LISTED),),
        ),
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
        Extra("list_attempts", int, help="listings by run label until one showed the sandbox"),
        Extra("listed_count", int, help="sandboxes the last listing by run label showed"),
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
                marker = found["previous_marker"]
                run = "this run" if marker == ctx.recorder.run_id else f"run {marker}"
                raise CheckFailed(
                    "RecycledSandbox",
                    f"create handed out a used sandbox: it already held the marker a sandbox "
                    f"of {run} left (boot id {found['boot_id'] or 'unknown'})",
                    **found,
                )

        await ctx.timed(
            "probe",
            lambda: ctx.provider.exec(sandbox, script, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=read,
            extra=found,
        )
        listing: dict[str, Any] = {}

        def shows_it(ids: list[str]) -> None:
            if sandbox.id not in ids:
                raise CheckFailed(
                    "FidelityError",
                    f"the listing by run label omits live sandbox {sandbox.id} "
                    f"({listing['list_attempts']} listings over "
                    f"{(listing['list_attempts'] - 1) * LIST_RETRY_S:.2f} s showed "
                    f"{len(ids)} other sandbox(es))",
                    **listing,
                )

        await ctx.timed(
            "listed",
            lambda: list_until_shown(ctx.provider, sandbox, ctx.recorder.run_id, found=listing),
            sandbox=sandbox,
            check=shows_it,
            extra=listing,
        )
        await ctx.destroy(sandbox)


async def list_until_shown(
    provider: Provider, sandbox: Sandbox, run_id: str, *, found: dict[str, Any]
) -> list[str]:
    """List the run's sandboxes until ``sandbox`` is among them, at most LIST_ATTEMPTS times;
    the last listing. ``found`` gets ``list_attempts`` and ``listed_count``."""
    for attempt in range(1, LIST_ATTEMPTS + 1):
        ids = list(await provider.list_sandboxes(run_id))
        found.update(list_attempts=attempt, listed_count=len(ids))
        if sandbox.id in ids or attempt == LIST_ATTEMPTS:
            return ids
        await asyncio.sleep(LIST_RETRY_S)
    raise AssertionError("unreachable")
