"""sleep_persist: does my state survive the sleep I am promised, and how long is the wake?

One iteration::

    create | write_state | start_process | [pause] | (idle idle_s, no calls) | [resume]
           | wake | verify | destroy

* ``write_state``: ``state_mb`` MiB of random data written to the scratch directory; its
  sha256 is remembered.
* ``start_process``: a background loop that counts in its own memory and writes the count to
  a file in the scratch directory every 20 ms.
* ``mode`` ``auto`` (the default) pauses where the provider has a pause API (``pause`` and
  ``resume`` are the provider's calls, the idle lies between them) and otherwise just stops
  calling for ``idle_s``: a provider that sleeps on idle (Sprites: after 30 s) must then sleep
  by itself. ``idle`` never pauses; ``pause`` records pause and resume ``unsupported`` on a
  provider without them (and nothing else).
* ``wake``: the first command after the idle (after the resume, when paused): ``true`` until
  it exits 0, its attempts in ``extra``; for a provider that slept, its wake.
* ``verify``: the state's sha256 must be what was written (``file_kept``), else a
  ``FidelityError``; the counter is read twice 0.3 s apart: advancing means the process
  survived (``process_kept``). The observation is checked against what the provider
  declares: a FREEZE pause keeps processes, a STOP_START pause does not, a sandbox idled
  without a pause that does not sleep keeps them; a mismatch is a ``FidelityError``. For
  an AUTO_SLEEP provider idled without a pause, whether it slept depends on how long the idle
  was against its sleep threshold (a price-catalog fact, ``sleeps_after_s``), so the
  workload records what it saw (``expected_process`` "depends") and the report judges it.

Set ``idle_s`` past a provider's sleep threshold (35 s for Sprites' 30 s) to measure a real
sleep; the default suite keeps it short. The report (bench/workloads/sleep_persist_report.py)
shows what survived per provider, the wake time, and what the idle period costs under each
provider's billing rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads import kept_state
from bench.workloads.base import CheckFailed, Workload
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Check, Extra, Fidelity, Operation
from providers.base import Capabilities, ExecResult, Op, PauseKind
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

MODES = ("auto", "idle", "pause")


@dataclass(frozen=True, kw_only=True)
class SleepPersistSettings:
    idle_s: float = setting(
        2.0,
        help="seconds without any call (between pause and resume, when paused); past the "
        "provider's sleep threshold to see a sleep (Sprites: 35)",
        unit="s",
        minimum=0.001,
        maximum=86_400,
    )
    mode: str = setting(
        "auto",
        help="auto: pause where the provider can, else idle; idle: never pause; pause: "
        "unsupported without a pause API",
        choices=MODES,
    )
    state_mb: int = setting(
        1, help="random data written before the idle", unit="MiB", minimum=1, maximum=65_536
    )


def expectation(pause_kind: PauseKind, paused: bool) -> str:
    """What must happen to a running process: "survives", "gone", or "depends" (on whether an
    auto-sleeping provider slept)."""
    if paused:
        return "survives" if pause_kind is PauseKind.FREEZE else "gone"
    return "depends" if pause_kind is PauseKind.AUTO_SLEEP else "survives"


class SleepPersist(Workload):
    name: ClassVar[str] = "sleep_persist"
    Settings: ClassVar[type] = SleepPersistSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        *kept_state.OPERATIONS,
        Operation("pause", help="the provider's pause call (pause mode)"),
        Operation("resume", help="the provider's resume call, idle_s after the pause"),
        Operation("wake", help="the first command after the idle (or the resume) that exits 0"),
        Operation(
            "verify",
            help="the state's sha256, and whether the process survived as declared",
            # A pause, a stop or a sleep did to the files and processes what is declared.
            checks=(Check(Fidelity.PAUSE),),
        ),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        ATTEMPTS,
        kept_state.STATE_MB,
        Extra("idle_s", float, unit="s", help="how long the sandbox sat idle before the exec"),
        Extra("sleep_mode", str, help="pause (the provider's pause call) or idle (no call)"),
        Extra("pause_kind", str, help="the provider's declared pause semantics"),
        Extra("file_kept", bool, help="the state written before the idle was intact after it"),
        kept_state.PROCESS_KEPT,
        Extra("expected_process", str, help="survives, gone, or depends (on a sleep)"),
    )
    report: ClassVar[Any] = "bench.workloads.sleep_persist_report"

    def pauses(self, caps: Capabilities) -> bool:
        mode = self.settings.mode
        can = caps.supports(Op.PAUSE) and caps.supports(Op.RESUME)
        return mode == "pause" or (mode == "auto" and can)

    def waits_s(self) -> float:
        return self.settings.idle_s + kept_state.COUNTER_GAP_S

    def planned_ops(self, caps: Capabilities) -> list[str]:
        names = [op.name for op in self.operations]
        if self.pauses(caps) and not (caps.supports(Op.PAUSE) and caps.supports(Op.RESUME)):
            return ["pause", "resume"]  # recorded unsupported, nothing else
        if not self.pauses(caps):
            names.remove("pause")
            names.remove("resume")
        return names

    async def run(self, ctx: IterationContext) -> None:
        provider, caps = ctx.provider, ctx.capabilities
        paused = self.pauses(caps)
        if paused and not (caps.supports(Op.PAUSE) and caps.supports(Op.RESUME)):
            for op in (Op.PAUSE, Op.RESUME):
                reason = caps.unsupported.get(str(op), f"{ctx.item.provider} has no {op}")
                ctx.record_unsupported(str(op), reason)
            return
        scratch = caps.scratch_dir.rstrip("/")
        state, counter = f"{scratch}/sandbox-bench-sleep.bin", f"{scratch}/sandbox-bench-counter"
        idle_s = self.settings.idle_s
        observed: dict[str, Any] = {
            "idle_s": idle_s,
            "sleep_mode": "pause" if paused else "idle",
            "pause_kind": str(caps.pause_kind),
            "expected_process": expectation(caps.pause_kind, paused),
        }
        sandbox = await ctx.create()
        written = await kept_state.write_state_and_start_process(
            ctx, sandbox, state=state, counter=counter, state_mb=self.settings.state_mb
        )
        if paused:
            await ctx.timed("pause", lambda: provider.pause(sandbox), sandbox=sandbox)
            await asyncio.sleep(idle_s)
            sandbox = ctx.track(
                await ctx.timed(
                    "resume", lambda: provider.resume(sandbox), sandbox=sandbox,
                    extra={"idle_s": idle_s},
                )
            )  # fmt: skip
        else:
            await asyncio.sleep(idle_s)
        await timed_first_exec(ctx, sandbox, "wake", extra={"idle_s": idle_s})
        look = kept_state.probe(state, counter)

        def survived(result: ExecResult) -> None:
            observed["file_kept"] = kept_state.state_digest(result) == written
            seen = kept_state.counts(result)
            observed["process_kept"] = len(seen) == 2 and seen[1] > seen[0]
            if not observed["file_kept"]:
                raise CheckFailed("FidelityError", "the state written before the idle is gone "
                                  "or changed", verified=False, **observed)  # fmt: skip
            expected = observed["expected_process"]
            if expected != "depends" and observed["process_kept"] != (expected == "survives"):
                ran = "ran" if observed["process_kept"] else "did not run"
                raise CheckFailed(
                    "FidelityError",
                    f"declared {observed['pause_kind']} ({observed['sleep_mode']}): the process "
                    f"should be {expected}, but it {ran} after the idle",
                    verified=False,
                    **observed,
                )
            observed["verified"] = True

        await ctx.timed(
            "verify",
            lambda: provider.exec(sandbox, look, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=survived,
            extra=observed,
        )
        await ctx.destroy(sandbox)


__all__ = ["SleepPersist", "SleepPersistSettings", "expectation"]
