"""The state fork and sleep_persist make before their event, and how they look at it after.

Both workloads, on one sandbox::

    write_state | start_process

* ``write_state``: ``state_mb`` MiB of random data written to ``state``; its sha256 (printed by
  the same command) is the state to compare against later.
* ``start_process``: a background loop that keeps a counter in its own memory (a shell
  variable) and writes it to ``counter`` every 20 ms; the step ends once the file is there.

After the fork or the idle, :func:`probe` hashes the state and reads the counter twice
``COUNTER_GAP_S`` apart; :func:`state_digest` and :func:`counts` read its answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.workloads.base import exit_zero, sha256_of_output
from bench.workloads.shape import Extra, Operation
from providers.base import ExecResult, Sandbox

if TYPE_CHECKING:
    from bench.iteration import IterationContext

#: Seconds between the two reads of the counter.
COUNTER_GAP_S = 0.3

#: A process started before (a fork, an idle) was running after.
PROCESS_KEPT = Extra("process_kept", bool, help="the process started before was running afterwards")
#: What ``write_state`` records.
STATE_MB = Extra("state_mb", int, unit="MiB", help="size of the state written and checkpointed")
#: The two steps :func:`write_state_and_start_process` records, in timeline order.
OPERATIONS = (
    Operation("write_state", help="write state_mb MiB of random data, print its sha256"),
    Operation("start_process", help="start a loop that counts in memory into a file"),
)


async def write_state_and_start_process(
    ctx: IterationContext, sandbox: Sandbox, *, state: str, counter: str, state_mb: int
) -> str:
    """The ``write_state`` and ``start_process`` steps on ``sandbox``; returns the state's
    sha256. A failed step raises (``ctx.timed``'s StepFailed), as any step does."""
    provider = ctx.provider
    digest: dict[str, str] = {}

    def remember(result: ExecResult) -> None:
        digest["state"] = sha256_of_output(result)

    size = state_mb * 1024 * 1024
    await ctx.timed(
        "write_state",
        lambda: provider.exec(
            sandbox, f"head -c {size} /dev/urandom > {state} && sha256sum {state}",
            timeout_s=ctx.timeout_s,
        ),
        sandbox=sandbox,
        check=remember,
        extra={"state_mb": state_mb},
    )  # fmt: skip
    loop = (
        f"i=0; while true; do i=$((i+1)); echo $i > {counter}.tmp; "
        f"mv {counter}.tmp {counter}; sleep 0.02; done"
    )
    start = (
        f"nohup sh -c '{loop}' >/dev/null 2>&1 &\n"
        f"for _ in $(seq 200); do [ -s {counter} ] && break; sleep 0.01; done; cat {counter}"
    )
    await ctx.timed(
        "start_process",
        lambda: provider.exec(sandbox, start, timeout_s=ctx.timeout_s),
        sandbox=sandbox,
        check=exit_zero,
    )
    return digest["state"]


def probe(state: str, counter: str) -> str:
    """The command that prints the state's sha256, then ``count=A B``: the counter read twice,
    ``COUNTER_GAP_S`` apart (advancing: the process runs)."""
    return (
        f"sha256sum {state}; a=$(cat {counter}); sleep {COUNTER_GAP_S}; "
        f'b=$(cat {counter}); echo "count=$a $b"'
    )


def counts(result: ExecResult) -> list[int]:
    """The counter values on the probe's ``count=`` line (fewer than two: no counter file)."""
    line = next(
        (ln for ln in result.stdout.decode(errors="replace").splitlines()
         if ln.startswith("count=")), "count=",
    )  # fmt: skip
    return [int(x) for x in line.removeprefix("count=").split() if x.isdigit()]


def state_digest(result: ExecResult) -> str | None:
    """The sha256 the answer starts with, or None when the file was not there to hash."""
    exit_zero(result)
    first = result.stdout.split(maxsplit=1)[0].decode(errors="replace") if result.stdout else ""
    return first if len(first) == 64 and all(c in "0123456789abcdef" for c in first) else None


__all__ = [
    "COUNTER_GAP_S",
    "OPERATIONS",
    "PROCESS_KEPT",
    "STATE_MB",
    "counts",
    "probe",
    "state_digest",
    "write_state_and_start_process",
]
