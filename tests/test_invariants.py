"""The runner's invariants hold whatever a provider does (issue 12, item 4).

Hypothesis drives the real :class:`bench.runner.Runner` (and, in fewer examples, the whole
:class:`bench.session.Session` writing a run folder) over :class:`tests.doubles.Chaos`, a
provider that per call may succeed, raise any exception type (the provider error tree and the
exceptions of a bug), hang far past the timeout, return the wrong type, or do the work and
then fail or hang. Whatever it does:

* the run completes (nothing escapes the runner, nothing crashes);
* every planned operation of every iteration has exactly one record;
* every sandbox and checkpoint the provider made is destroyed, or reported: still alive in
  the ledger (named for reap), or the provider's listing failed and the ledger says so;
* no record blames the harness (``HarnessError``): the double's exceptions are the
  adapter's, its wrong answers are ProtocolErrors.

Bounded and seeded (``derandomize``): the same examples run every time, in a few seconds.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cleanup import RetryPolicy
from bench.config import build_config
from bench.iteration import HARNESS_ERROR
from bench.records import RunStatus
from bench.runner import (
    MemorySink,
    Recorder,
    Runner,
    expected_records,
    make_plan,
    planned_operations,
)
from bench.session import LocalExecutor, run_session
from bench.store import load_ledger, load_run
from bench.workloads import WORKLOADS
from providers.base import Deletion, SandboxSpec
from tests.doubles import ACTIONS, Chaos, scripted

WORKLOAD_NAMES = ("lifecycle", "exec", "files", "checkpoint", "pause_resume")
#: Small everything: a hang costs TIMEOUT_S, a cleanup attempt ATTEMPT_S.
TIMEOUT_S = 0.02
POLICY = RetryPolicy(attempts=3, backoff_s=(0.0,), max_wait_s=0.01, attempt_timeout_s=0.02)
PARAMS = {
    "exec": {"repeats": 2},
    "checkpoint": {"state_mb": 1},
    "pause_resume": {"hold_s": 0.001},
}

#: Mostly successes, so iterations get far enough to create checkpoints and restores.
action = st.one_of(st.just("ok"), st.just("ok"), st.just("ok"), st.sampled_from(ACTIONS))
scripts = st.lists(action, min_size=1, max_size=40)


def _workloads():
    return {n: WORKLOADS[n](PARAMS.get(n, {})) for n in WORKLOAD_NAMES}


def _check_invariants(chaos: Chaos, samples, ledger, workloads, plan) -> None:
    caps = chaos.capabilities()
    # Exactly one record per planned operation of every iteration.
    got: Counter = Counter()
    for s in samples:
        got[(s.workload, s.iteration, s.warmup, s.operation)] += 1
    wanted: Counter = Counter()
    for item in plan:
        for op in planned_operations(workloads[item.workload], caps):
            wanted[(item.workload, item.iteration, item.warmup, op)] += 1
    assert got == wanted
    assert len(samples) == sum(expected_records(workloads[i.workload], caps) for i in plan)
    # Nothing is blamed on the harness.
    harness = [s for s in samples if s.error_type == HARNESS_ERROR]
    assert not harness, harness[0].error_message
    # Everything made is destroyed or reported.
    reported_sandboxes = set()
    reported_checkpoints = set()
    # "sandboxes", "checkpoints", "confirmation": a listing failed, and the ledger says so.
    unlisted = set()
    for entry in ledger:
        if entry["event"] in ("created", "destroy_failed"):
            reported_sandboxes.add(entry["sandbox_id"])
        elif entry["event"] == "destroyed":
            reported_sandboxes.discard(entry["sandbox_id"])
        elif entry["event"] in ("checkpoint_created", "checkpoint_delete_failed"):
            reported_checkpoints.add(entry["checkpoint_id"])
        elif entry["event"] == "checkpoint_deleted":
            reported_checkpoints.discard(entry["checkpoint_id"])
        elif entry["event"] == "sweep_failed":
            unlisted.add(entry.get("listing", "sandboxes"))
    in_ledger = {e.get("sandbox_id") for e in ledger}
    sandboxes = set(chaos.boxes) if "sandboxes" not in unlisted else set(chaos.boxes) & in_ledger
    if "confirmation" in unlisted:  # a destroy that answered ok unchecked: the ledger says so
        sandboxes -= chaos.lies
    assert sandboxes <= reported_sandboxes, sandboxes - reported_sandboxes
    checkpoints = set(chaos.checkpoints)
    if "checkpoints" in unlisted or not caps.lists_checkpoints:
        checkpoints &= {e.get("checkpoint_id") for e in ledger}
    assert checkpoints <= reported_checkpoints, checkpoints - reported_checkpoints


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    actions=scripts,
    concurrency=st.sampled_from([1, 3]),
    deletion=st.sampled_from([Deletion.SYNC, Deletion.ASYNC]),
    lists_checkpoints=st.booleans(),
)
def test_the_runner_survives_any_provider_behaviour(
    actions, concurrency, deletion, lists_checkpoints
):
    chaos = Chaos(scripted(actions), deletion=deletion, lists_checkpoints=lists_checkpoints)
    workloads = _workloads()
    plan = make_plan(["stub"], list(workloads), iterations=2, warmup=0, seed=1)
    sink = MemorySink()
    runner = Runner(
        providers={"stub": chaos},
        workloads=workloads,
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="chaos-run", concurrency=concurrency),
        timeout_s=TIMEOUT_S,
        concurrency=concurrency,
        policy=POLICY,
    )
    asyncio.run(asyncio.wait_for(runner.run(plan), timeout=60))
    _check_invariants(chaos, sink.samples, sink.ledger, workloads, plan)


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions=scripts)
def test_a_whole_session_survives_any_provider_behaviour(tmp_path_factory, actions, monkeypatch):
    import bench.cleanup

    # The session builds its runner with the run's own policy: make it as small as above.
    monkeypatch.setattr(bench.cleanup, "policy_for", lambda timeout_s: POLICY)
    output = tmp_path_factory.mktemp("results")
    config = build_config(
        {"run": {"providers": ["stub"], "workloads": list(WORKLOAD_NAMES), "iterations": 1,
                 "warmup": 0, "timeout_s": TIMEOUT_S, "output": str(output), "seed": 3},
         "workloads": PARAMS}
    )  # fmt: skip
    chaos = Chaos(scripted(actions))
    folder, status = asyncio.run(run_session(config, LocalExecutor(config, {"stub": chaos})))
    assert status is RunStatus.COMPLETED
    run = load_run(folder)
    ledger, _ = load_ledger(folder)
    workloads = {n: WORKLOADS[n](PARAMS.get(n, {})) for n in WORKLOAD_NAMES}
    plan = make_plan(["stub"], list(WORKLOAD_NAMES), iterations=1, warmup=0, seed=3)
    _check_invariants(chaos, run.samples, ledger, workloads, plan)
    assert run.manifest["status"] == "completed"
    names = {(e["provider"], e["id"]) for e in run.manifest["left_alive"]}
    assert {("stub", s) for s in chaos.boxes if s in {e.get("sandbox_id") for e in ledger}} <= (
        names
    )
    assert not (folder / ".lock").exists() and not (folder / ".reserve").exists()
