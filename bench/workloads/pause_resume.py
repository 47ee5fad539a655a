"""pause_resume: stop a sandbox without destroying it, start it again, and check what survived.

One iteration::

    create | start_counter | read_counter x2 (rate) | pause | (hold) | resume
           | first_exec_after_resume | verify | destroy

* ``start_counter``: starts a background loop in the sandbox that increments a counter file
  every ~10 ms; two ``read_counter`` execs 0.3 s apart measure its real rate.
* ``pause`` / ``resume``: the provider's calls. The hold between them is ``hold_s`` (default
  1 s) or three times the pause latency, whichever is longer, so a counter that kept running
  through the pause cannot hide in the noise of the calls around it.
* ``first_exec_after_resume``: from resume's return until a read of the counter succeeds.
* ``verify``: 0.3 s later, reads the counter again and checks the declared semantics:
  FREEZE (processes and memory survive): the counter did not advance while paused
  (advance <= 1.5 x rate x the time outside the hold + 3 ticks) and advances after resume.
  STOP_START (only the filesystem survives): the counter file is still there and the loop is
  gone (it does not advance after start).
  Observations go in ``extra``; a mismatch with the declared semantics is a ``FidelityError``
  (a fidelity check of kind ``pause``) whose message gives the observed counter advance: a
  pause that froze nothing, a stop that kept processes running, a resume after which the
  counter stood still.
Providers without pause (e.g. auto-sleeping Sprites) record pause and resume as unsupported.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.workloads.base import CheckFailed, Workload, exit_zero
from bench.workloads.shape import Check, Extra, Fidelity, Operation, Role
from providers.base import Capabilities, ExecResult, Op, PauseKind
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

RATE_GAP_S = 0.3


def _counter_value(result: ExecResult) -> int:
    exit_zero(result)
    text = result.stdout.decode(errors="replace").strip()
    if not text.isdigit():
        raise CheckFailed("UnexpectedOutput", f"counter file holds {text[:40]!r}")
    return int(text)


@dataclass(frozen=True, kw_only=True)
class PauseResumeSettings:
    hold_s: float = setting(
        1.0,
        help="least time between pause and resume (3 x the pause latency if longer)",
        unit="s",
        minimum=0.001,
        maximum=3_600,
    )


class PauseResume(Workload):
    name: ClassVar[str] = "pause_resume"
    requires: ClassVar[frozenset[Op]] = frozenset({Op.PAUSE, Op.RESUME})
    capability_ops: ClassVar[dict[str, Op]] = {"pause": Op.PAUSE, "resume": Op.RESUME}
    Settings: ClassVar[type] = PauseResumeSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("start_counter", help="start a loop that increments a counter file"),
        Operation("read_counter", help="read the counter (twice, 0.3 s apart: its rate)"),
        Operation("pause", help="the provider's pause call", roles=(Role.PAUSE,)),
        Operation("resume", help="the provider's resume call", roles=(Role.RESUME,)),
        Operation(
            "first_exec_after_resume",
            help="resume's return to the first successful read of the counter",
            roles=(Role.FIRST_EXEC_AFTER_RESUME,),
        ),
        Operation(
            "verify",
            help="what survived the pause, against the declared semantics",
            checks=(Check(Fidelity.PAUSE),),
        ),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        Extra("rate_hz", float, unit="Hz", help="the counter's measured rate before the pause"),
        Extra("hold_s", float, unit="s", help="time between pause's return and resume's call"),
        Extra("advance_during_pause", int, help="counter ticks from before pause to after resume"),
        Extra("bound_if_frozen", float, help="most ticks a frozen counter may show (calls' time)"),
        Extra("advance_after_resume", int, help="ticks in the 0.3 s after the first read"),
        Extra("stopped", bool, help="the counter did not advance while paused"),
        Extra("advancing_after", bool, help="the counter ran again after the resume"),
        Extra("pause_kind", str, help="the provider's declared pause semantics"),
    )

    def waits_s(self) -> float:
        return 2 * RATE_GAP_S + self.settings.hold_s

    def planned_ops(self, caps: Capabilities) -> list[str]:
        names = [op.name for op in self.operations]
        return [*names[:3], "read_counter", *names[3:]]  # the counter is read twice: its rate

    async def run(self, ctx: IterationContext) -> None:
        provider = ctx.provider
        counter = f"{ctx.capabilities.scratch_dir.rstrip('/')}/sandbox-bench-counter"
        loop = (
            f"i=0; while true; do i=$((i+1)); echo $i > {counter}.tmp; "
            f"mv {counter}.tmp {counter}; sleep 0.01; done"
        )
        start = (
            f"nohup sh -c '{loop}' >/dev/null 2>&1 &\n"
            f"for _ in $(seq 200); do [ -s {counter} ] && break; sleep 0.01; done; cat {counter}"
        )
        read = f"cat {counter}"

        async def read_counter(sandbox, operation: str) -> tuple[int, float, float]:
            t_start = time.monotonic()
            result = await ctx.timed(
                operation,
                lambda: provider.exec(sandbox, read, timeout_s=ctx.timeout_s),
                sandbox=sandbox,
                check=_counter_value,
            )
            return _counter_value(result), t_start, time.monotonic()

        sandbox = await ctx.create()
        await ctx.timed(
            "start_counter",
            lambda: provider.exec(sandbox, start, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=_counter_value,
        )
        first, _, t_first = await read_counter(sandbox, "read_counter")
        await asyncio.sleep(RATE_GAP_S)
        before, t_before_start, t_before = await read_counter(sandbox, "read_counter")
        rate_hz = (before - first) / max(t_before - t_first, 1e-6)

        t_pause = time.monotonic()
        await ctx.timed("pause", lambda: provider.pause(sandbox), sandbox=sandbox)
        t_paused = time.monotonic()
        hold_s = max(self.settings.hold_s, 3 * (t_paused - t_pause))
        await asyncio.sleep(hold_s)
        t_resume = time.monotonic()
        resumed = ctx.track(
            await ctx.timed("resume", lambda: provider.resume(sandbox), sandbox=sandbox)
        )
        after, _, t_after = await read_counter(resumed, "first_exec_after_resume")
        await asyncio.sleep(RATE_GAP_S)

        outside_hold_s = (t_paused - t_before_start) + (t_after - t_resume)
        observed: dict[str, Any] = {
            "rate_hz": round(rate_hz, 2),
            "hold_s": round(hold_s, 3),
            "advance_during_pause": after - before,
            "bound_if_frozen": round(1.5 * rate_hz * outside_hold_s + 3, 1),
            "pause_kind": str(ctx.capabilities.pause_kind),
            "verified": True,
        }

        def matches_semantics(result: ExecResult) -> None:
            later = _counter_value(result)
            observed["advance_after_resume"] = later - after
            stopped = (after - before) <= observed["bound_if_frozen"]
            advancing = later > after
            observed["stopped"] = stopped
            observed["advancing_after"] = advancing
            advance, bound = observed["advance_during_pause"], observed["bound_if_frozen"]
            held = f"{hold_s:.2f} s"
            if ctx.capabilities.pause_kind is PauseKind.STOP_START:
                ok = not advancing
                wrong = (
                    f"processes survived stop/start: the counter advanced {later - after} "
                    f"tick(s) in the {RATE_GAP_S:g} s after start (expected none: only the "
                    "filesystem survives)"
                )
            elif not stopped:
                ok = False
                wrong = (
                    f"pause did not freeze: the counter advanced {advance} tick(s) across a "
                    f"{held} pause (at most {bound:g} expected if frozen; it ran at "
                    f"{rate_hz:.0f}/s)"
                )
            else:
                ok = advancing
                wrong = (
                    "the counter did not run again after resume (0 ticks in "
                    f"{RATE_GAP_S:g} s): processes did not survive the pause"
                )
            if not ok:
                observed["verified"] = False
                raise CheckFailed("FidelityError", wrong, **observed)

        await ctx.timed(
            "verify",
            lambda: provider.exec(resumed, read, timeout_s=ctx.timeout_s),
            sandbox=resumed,
            check=matches_semantics,
            extra=observed,
        )
        await ctx.destroy(resumed)
