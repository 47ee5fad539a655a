"""Comparing two runs: verdicts, the regression rule, the rich table and the CLI exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench.compare import compare_runs, is_regression, verdict_for
from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"providers": ("e2b", "local"), "workloads": ("lifecycle", "exec"), "iterations": 40}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    return {
        "base": make_run(root, "A-base", seed=1, failure_rate=0, **SMALL),
        "same": make_run(root, "B-same", seed=2, failure_rate=0, **SMALL),
        "slow": make_run(root, "C-slow", seed=3, failure_rate=0, scale={"e2b": 1.6}, **SMALL),
        "slightly": make_run(
            root, "D-slightly", seed=4, failure_rate=0, scale={"e2b": 1.04}, **SMALL
        ),
    }


@pytest.mark.parametrize(
    ("ci", "verdict"),
    [((1.02, 1.3), "slower"), ((0.7, 0.95), "faster"), ((0.9, 1.1), "unchanged")],
)
def test_verdict_comes_from_the_ratio_interval(ci, verdict):
    assert verdict_for(*ci) == verdict


def test_regression_needs_the_whole_interval_beyond_the_threshold():
    assert is_regression(1.11, 0.10)
    assert not is_regression(1.10, 0.10)
    assert not is_regression(1.05, 0.10)
    assert not is_regression(float("nan"), 0.10)


def test_a_run_against_a_run_like_it_finds_no_regression(runs):
    comparison = compare_runs(runs["base"], runs["same"])
    assert comparison.regressions == ()
    verdicts = [r.verdict for r in comparison.rows]
    assert verdicts.count("unchanged") >= len(verdicts) - 2  # a 95 % interval may miss


def test_a_much_slower_provider_shows_up_as_regressions_with_the_ratio(runs):
    comparison = compare_runs(runs["base"], runs["slow"], threshold=0.10)
    slow = [r for r in comparison.rows if r.provider == "e2b" and r.n_a and r.n_b]
    assert slow and all(r.verdict == "slower" for r in slow if r.operation != "exec_true")
    assert {r.provider for r in comparison.regressions} == {"e2b"}
    create = next(r for r in slow if r.workload == "lifecycle" and r.operation == "create")
    assert create.ratio == pytest.approx(1.6, rel=0.2)
    assert create.ci_low > 1.1
    assert create.p_value < 0.001
    local = [r.verdict for r in comparison.rows if r.provider == "local"]
    assert local.count("slower") <= 2  # unchanged runs; a 95 % interval misses now and then


def test_a_small_slowdown_within_the_threshold_is_not_a_regression(runs):
    comparison = compare_runs(runs["base"], runs["slightly"], threshold=0.10)
    assert comparison.regressions == ()
    stricter = compare_runs(runs["base"], runs["slow"], threshold=1.0)
    assert stricter.regressions == ()


def test_operations_in_only_one_run_are_listed_not_compared(tmp_path, runs):
    other = make_run(
        tmp_path, "E-files", providers=("e2b",), workloads=("files",), iterations=10, seed=5
    )
    comparison = compare_runs(runs["base"], other)
    verdicts = {r.verdict for r in comparison.rows}
    assert verdicts <= {"only in a", "only in b"}
    assert not comparison.regressions


def test_render_prints_a_table_with_the_verdicts_and_a_summary_line(runs):
    console = Console(record=True, width=200)
    comparison = compare_runs(runs["base"], runs["slow"])
    comparison.render(console)
    text = console.export_text()
    assert "C-slow (B) against A-base (A)" in text
    assert "slower (regression)" in text
    assert f"{len(comparison.regressions)} regression(s) beyond 10%" in text
    frame = comparison.frame()
    assert len(frame) == len(comparison.rows)
    assert {"ratio", "ci_low", "ci_high", "p_value", "verdict", "regression"} <= set(frame)


def test_different_client_hosts_are_noted(tmp_path, runs):
    other = make_run(tmp_path, "F-host", seed=6, hostname="elsewhere", **SMALL)
    comparison = compare_runs(runs["base"], other)
    assert any("client host" in n for n in comparison.notes)


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        compare_runs(Path("a"), Path("b"), threshold=-0.1)


def test_cli_compare_exits_non_zero_on_a_regression(runs):
    def run(a: Path, b: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bench", "compare", str(a), str(b), "--results", str(a.parent)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    regressed = run(runs["base"], runs["slow"])
    assert regressed.returncode == 3, regressed.stderr
    assert "regression" in regressed.stderr
    steady = run(runs["base"], runs["same"])
    assert steady.returncode == 0, steady.stderr
