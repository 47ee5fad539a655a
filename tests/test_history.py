"""History over many runs (bench/history.py): trends per series, and the changes whose
intervals separate -- only those."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import stats
from bench.calibration import LatencyModel
from bench.cli import main
from bench.emulators.control import running
from bench.history import build_history, detect_changes
from bench.history_report import write_history
from bench.store import write_json_atomic
from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[1]


def daily_runs(root: Path, days: int, *, slower_from: int | None = None, provider="e2b",
               extra=None, **kwargs) -> list[Path]:  # fmt: skip
    """One synthetic run a day; ``provider`` twice as slow from day ``slower_from`` on."""
    folders = []
    for day in range(days):
        scale = {provider: 2.0} if slower_from is not None and day >= slower_from else None
        manifest_extra = {"started_at": f"2026-12-{day + 1:02d}T06:00:00+00:00"}
        manifest_extra |= (extra or {}).get(day, {})
        folders.append(
            make_run(
                root,
                f"202612{day + 1:02d}T060000Z-{day:06d}",
                seed=day,
                iterations=20,
                scale=scale,
                manifest_extra=manifest_extra,
                **kwargs,
            )
        )
    return folders


# -- the rule ----------------------------------------------------------------------------------


def level(value: float, half: float = 0.05) -> tuple[float, float, float]:
    return (value, value * (1 - half), value * (1 + half))


def test_a_step_is_flagged_once_at_the_first_run_of_the_new_level():
    series = [level(1.0)] * 4 + [level(2.0)] * 4
    assert detect_changes(series) == [(4, "slower", 2.0)]
    assert detect_changes(series[::-1]) == [(4, "faster", 0.5)]


def test_a_single_odd_run_is_not_a_change():
    series = [level(1.0)] * 3 + [level(3.0)] + [level(1.0)] * 3
    assert detect_changes(series) == []


def test_overlapping_intervals_or_a_small_shift_are_not_changes():
    assert detect_changes([level(1.0, 0.3)] * 3 + [level(1.4, 0.3)] * 3) == []
    # separated, but only 5 % apart
    assert detect_changes([level(1.0, 0.01)] * 3 + [level(1.05, 0.01)] * 3) == []
    assert detect_changes([level(1.0, 0.01)] * 3 + [level(1.05, 0.01)] * 3, threshold=0.04)


def test_a_change_needs_window_runs_on_each_side_and_gaps_are_skipped():
    nan = (math.nan, math.nan, math.nan)
    assert detect_changes([level(1.0)] * 3 + [level(2.0)]) == []  # one run at the new level
    series = [level(1.0), nan, level(1.0), level(2.0), nan, level(2.0)]
    assert detect_changes(series) == [(3, "slower", 2.0)]
    assert detect_changes(series, window=3) == []


def test_a_ramp_is_one_change_at_its_largest_step():
    series = [level(1.0)] * 3 + [level(1.5), level(2.2), level(3.2), level(3.2), level(3.2)]
    found = detect_changes(series)
    assert len(found) == 1 and found[0][1] == "slower"


def test_runs_of_one_distribution_flag_nothing():
    """The multiple-comparison guard: 300 series of 40 runs with no change, n = 30 to 300."""
    rng = np.random.default_rng(2026)
    flagged = 0
    for _ in range(300):
        n = int(rng.integers(30, 301))
        series = []
        for _ in range(40):
            x = np.sort(np.exp(rng.normal(0.0, 0.5, n)))
            series.append((stats.percentile(x, 50), *stats.quantile_ci(x, 50, rng)))
        flagged += len(detect_changes(series))
    assert flagged == 0


def test_a_doubling_at_n_100_is_found():
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(50):
        series = []
        for run in range(8):
            x = np.sort(np.exp(rng.normal(0.0, 0.5, 100))) * (2.0 if run >= 4 else 1.0)
            series.append((stats.percentile(x, 50), *stats.quantile_ci(x, 50, rng)))
        found += detect_changes(series) == [(4, "slower", pytest.approx(2.0, rel=0.3))]
    assert found >= 45


# -- runs --------------------------------------------------------------------------------------


def test_a_provider_made_slower_half_way_is_flagged_and_nothing_else(tmp_path):
    folders = daily_runs(tmp_path, 6, slower_from=3)
    history = build_history(folders)
    assert history.changes
    assert {c.key.provider for c in history.changes} == {"e2b"}
    assert {c.run_id for c in history.changes} == {folders[3].name}
    assert {c.direction for c in history.changes} == {"slower"}
    for c in history.changes:
        assert 1.6 < c.ratio < 2.5, c.describe()
    # nearly every e2b operation with its p50 reported in every run is flagged (at n = 20 an
    # interval or two may still overlap: the rule is conservative by design)
    e2b_p50 = {
        key for key, points in history.series.items()
        if key.provider == "e2b" and all(math.isfinite(p.stat("p50")[0]) for p in points)
    }  # fmt: skip
    flagged = {c.key for c in history.changes if c.statistic == "p50"}
    assert flagged <= e2b_p50 and len(flagged) >= 0.85 * len(e2b_p50)
    assert {("lifecycle", "create"), ("lifecycle", "ready")} <= {
        (k.workload, k.operation) for k in flagged
    }


def test_the_same_runs_without_a_change_flag_nothing(tmp_path):
    history = build_history(daily_runs(tmp_path, 6))
    assert history.changes == ()


def test_a_new_sdk_version_starts_a_new_series_and_is_never_compared_across(tmp_path):
    folders = daily_runs(tmp_path, 6, slower_from=3)
    for folder in folders[3:]:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["providers"]["e2b"]["environment"]["sdk_versions"] = {"e2b-sdk": "2.0.0"}
        write_json_atomic(folder / "manifest.json", manifest)
    history = build_history(folders)
    assert history.changes == ()
    sdks = {k.sdk for k in history.series if k.provider == "e2b"}
    assert sdks == {"e2b-sdk 1.2.3", "e2b-sdk 2.0.0"}
    assert any("e2b: SDK e2b-sdk 1.2.3 → e2b-sdk 2.0.0" in n for n in history.notes)


def test_runs_from_two_locations_are_separate_series(tmp_path):
    fra = daily_runs(tmp_path / "fra", 4)
    iad = daily_runs(tmp_path / "iad", 4, slower_from=0)  # e2b twice as slow there, always
    for folder in iad:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["client"]["location"] = "iad"
        manifest["run_id"] = folder.name + "-iad"
        write_json_atomic(folder / "manifest.json", manifest)
    history = build_history([*fra, *iad])
    assert history.changes == ()  # never compared across locations
    assert {k.location for k in history.series} == {"fra", "iad"}
    assert any("2 locations" in n for n in history.notes)


def test_a_run_still_running_is_left_out_and_said_so(tmp_path):
    folders = daily_runs(tmp_path, 3, extra={2: {"status": "running"}})
    history = build_history(folders)
    assert [r.run_id for r in history.runs] == [f.name for f in folders[:2]]
    assert history.skipped and "still running" in history.skipped[0]


def test_the_second_history_reads_every_run_from_its_summary_cache(tmp_path):
    folders = daily_runs(tmp_path, 3)
    first = build_history(folders)
    assert set(first.sources.values()) == {"arrow"}
    second = build_history(folders)
    assert set(second.sources.values()) == {"summary cache"}
    pd.testing.assert_frame_equal(first.points_frame(), second.points_frame())


def test_the_history_page_holds_changes_trends_and_csvs(tmp_path):
    history = build_history(daily_runs(tmp_path / "results", 6, slower_from=3))
    path = write_history(history, tmp_path / "out")
    html = path.read_text()
    assert "Changes" in html and "Trends" in html and "e2b" in html
    assert "http://" not in html and "https://" not in html
    points = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(points) == sum(len(p) for p in history.series.values())
    changes = pd.read_csv(tmp_path / "out" / "changes.csv")
    assert set(changes["provider"]) == {"e2b"} and len(changes) == len(history.changes)
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == {
        f"history-{w}-fra.svg" for w in ("lifecycle", "exec", "files", "checkpoint",
                                         "pause_resume")
    }  # fmt: skip
    assert (tmp_path / "out" / "history.md").read_text().count("![") == 5


# -- the command ---------------------------------------------------------------------------------


def test_history_command_writes_the_page_and_prints_the_changes(tmp_path, capsys):
    daily_runs(tmp_path / "results", 6, slower_from=3)
    out = tmp_path / "hist"
    code = main(["history", "--all", "--results", str(tmp_path / "results"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "change: e2b" in printed and "more in changes.csv" in printed
    assert (out / "history.html").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history"], "name the runs, or give --all"),
        (["history", "x", "--all"], "name runs or give --all, not both"),
        (["history", "--all", "--results", "{tmp}/none"], "no results folder"),
        (["history", "--all", "--window", "0"], "must be at least 1"),
        (["history", "--all", "--threshold", "nan"], "must be a fraction"),
        (["history", "nosuchrun"], "no run folder 'nosuchrun'"),
        (["export", "--all"], "the following arguments are required: --parquet"),
        (["export", "--all", "--parquet", "{tmp}"], "is a folder"),
        (["export", "--all", "--parquet", "{tmp}/no/such/x.parquet"], "no folder"),
        (["site", "{tmp}/site", "--reports", "{tmp}/afile"], "is not a folder"),
    ],
)
def test_bad_history_export_and_site_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("x")
    daily_runs(tmp_path / "results", 1)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--results" not in argv and argv[0] != "site":
        argv += ["--results", str(tmp_path / "results")]
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sandbox-bench: error: ")
    assert message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- end to end: an emulator made slower through its admin API ----------------------------------


@pytest.mark.serial  # timing: alone, after the parallel part
async def test_an_emulator_made_slower_half_way_is_flagged_by_history(tmp_path):
    results = tmp_path / "results"
    argv = [
        *("run", "--config", "none", "--providers", "e2b", "--workloads", "lifecycle"),
        *("--iterations", "12", "--warmup", "1", "--seed", "1", "--output", str(results)),
    ]
    async with running("e2b", tmp_path / "emu", extra_args=["--backend", "stub"]) as emu:
        env = {**os.environ, **emu.client_env(), "PYTHONPATH": str(ROOT)}
        for run in range(4):
            if run == 2:  # creates take 300 ms longer from the third run on
                await emu.configure(
                    latency=LatencyModel(fixed_s=0.3), latency_match="POST /v2/sandboxes"
                )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench", *argv, env=env, cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
            assert proc.returncode == 0, output.decode()
        assert await emu.live_sandboxes() == []
    folders = list(results.iterdir())
    assert len(folders) == 4
    # A create that waits 300 ms lets this VM's vCPUs go idle, and waking them can make the
    # next millisecond-scale calls slower too (CI has flagged first_exec and destroy 10 % and,
    # once, over 50 % slower: a real change of the client's conditions, not noise). The
    # injected change is 70-170x: history must flag it on create and ready, at the third run,
    # and anything else it flags must be far smaller.
    history = await asyncio.to_thread(build_history, folders, threshold=0.5)
    assert len(history.runs) == 4
    described = [c.describe() for c in history.changes]
    injected = {c.key.operation: c for c in history.changes
                if c.key.operation in ("create", "ready")}  # fmt: skip
    assert set(injected) == {"create", "ready"}, described
    assert {c.key.provider for c in history.changes} == {"e2b"}, described
    assert {c.run_id for c in history.changes} == {history.runs[2].run_id}, described
    assert all(c.direction == "slower" and c.ratio > 30 for c in injected.values()), described
    others = [c for c in history.changes if c.key.operation not in injected]
    assert all(c.direction == "slower" and c.ratio < 5 for c in others), described
