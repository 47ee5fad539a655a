"""Comparing two runs: verdicts, the regression rule, what differs between the runs, the
output and the exit code, on synthetic runs and on two real runs against an emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench.calibration import LatencyModel
from bench.compare import compare_runs, differences, is_regression, plain, verdict_for
from bench.emulators.control import running
from tests.synthetic import make_run, manifest

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


def with_manifest(run: Path, run_id: str, change) -> Path:
    """A copy of ``run`` as ``run_id`` whose manifest ``change(manifest)`` edited."""
    folder = run.parent / run_id
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run, folder)
    data = json.loads((folder / "manifest.json").read_text())
    old_id = data["run_id"]
    data["run_id"] = run_id
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))
    samples = folder / "samples.jsonl"
    samples.write_text(samples.read_text().replace(f'"run_id":"{old_id}"', f'"run_id":"{run_id}"'))
    return folder


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **(env or {})},
    )


# -- the statistics ---------------------------------------------------------------------------


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
    assert comparison.differences == ()
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
    assert verdicts <= {"only in A", "only in B"}
    assert not comparison.regressions


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        compare_runs(Path("a"), Path("b"), threshold=-0.1)


# -- what differs between the runs ------------------------------------------------------------


def base_manifest() -> dict:
    return manifest("A", providers=("e2b", "local"), workloads=("exec",), iterations=5,
                    warmup=1, seed=1)  # fmt: skip


def test_every_kind_of_difference_that_moves_latency_is_named_in_plain_words():
    a, b = base_manifest(), base_manifest()
    b["plan"]["concurrency"] = 4
    b["spec"]["memory_mb"] = 2048
    a["plan"]["workload_params"] = {"exec": {"repeats": 10}}
    b["plan"]["workload_params"] = {"exec": {"repeats": 20}}
    a["config"]["provider_settings"] = {"e2b": {"connection": "reuse"}}
    b["config"]["provider_settings"] = {"e2b": {"connection": "per_iteration"}}
    b["providers"]["e2b"]["environment"]["sdk_versions"] = {"e2b-sdk": "1.3.0"}
    b["client"]["location"] = "iad"
    b["harness"]["version"] = "0.2.0"
    found = {d.label: d for d in differences(a, b)}
    assert found["concurrency"].text == "concurrency: 1 in A, 4 in B"
    assert found["sandbox memory"].text == "sandbox memory: 1024 MiB in A, 2048 MiB in B"
    assert found["exec repeats"].text == "workload exec's repeats: 10 in A, 20 in B"
    assert found["exec repeats"].workload == "exec"
    connection = found["e2b connection mode"]
    assert connection.text == "e2b's connection mode: reuse in A, per_iteration in B"
    assert connection.provider == "e2b"
    assert found["e2b SDK e2b-sdk"].text == "e2b's SDK e2b-sdk: 1.2.3 in A, 1.3.0 in B"
    assert found["client location"].text == "client location: fra in A, iad in B"
    assert found["harness version"].text == "harness version: 0.1.0 in A, 0.2.0 in B"
    assert len(found) == 7
    for d in found.values():  # plain words: never a Python dict, list or None
        assert not any(mark in d.text for mark in ("{", "[", "None", "':", "True")), d.text


def test_identical_manifests_differ_in_nothing_and_run_ids_seeds_and_times_do_not_count():
    a, b = base_manifest(), base_manifest()
    b.update(run_id="B", seed=99, started_at="2027-01-01T00:00:00+00:00")
    b["config"]["output"] = "/elsewhere"
    assert list(differences(a, b)) == []


def test_plain_spells_values_out():
    assert plain(None) == "not set"
    assert plain(True) == "yes"
    assert plain(["a", "b"]) == "a, b"
    assert plain({"x": 1, "y_s": 2.0}) == "x 1, y_s 2 s"
    assert plain(512.0, "memory_mb") == "512 MiB"


def test_a_difference_in_concurrency_is_named_and_keeps_the_slowdown_from_being_a_regression(
    runs,
):
    def concurrency_4(m: dict) -> None:
        m["plan"]["concurrency"] = 4

    busy = with_manifest(runs["slow"], "G-concurrency", concurrency_4)
    comparison = compare_runs(runs["base"], busy)
    assert [d.text for d in comparison.differences] == ["concurrency: 1 in A, 4 in B"]
    assert comparison.regressions == ()
    assert comparison.not_judged and {r.provider for r in comparison.not_judged} == {"e2b"}
    assert all(r.differences == ("concurrency",) for r in comparison.rows)

    result = cli("compare", str(runs["base"]), str(busy))
    assert result.returncode == 0, result.stderr
    assert "concurrency: 1 in A, 4 in B" in result.stdout
    assert "not judged" in result.stdout
    text = " ".join(result.stdout.split())  # the summary wraps at spaces to fit 120 columns
    assert text.count("regression(s) beyond 10%") == 1
    assert "; 0 regression(s) beyond 10%" in text
    assert text.endswith("not judged (the runs differ in concurrency; --force judges them)")
    assert result.stderr == ""  # the summary is printed once, on stdout

    forced = cli("compare", str(runs["base"]), str(busy), "--force")
    assert forced.returncode == 3, forced.stderr
    assert "REGRESSION" in forced.stdout
    assert "judged anyway (--force)" in forced.stdout
    assert "differs" in forced.stdout  # each row is labelled with the differences' numbers
    assert "(1) concurrency: 1 in A, 4 in B" in forced.stdout


def test_a_difference_of_one_provider_leaves_the_others_judged(runs):
    def new_sdk(m: dict) -> None:
        m["providers"]["e2b"]["environment"]["sdk_versions"] = {"e2b-sdk": "9.9.9"}

    other = with_manifest(runs["slow"], "H-sdk", new_sdk)
    comparison = compare_runs(runs["base"], other)
    assert [d.provider for d in comparison.differences] == ["e2b"]
    assert all(r.differences == () for r in comparison.rows if r.provider == "local")
    assert comparison.regressions == ()  # only e2b slowed, and its SDK changed
    assert compare_runs(runs["base"], other, force=True).regressions


# -- the command ------------------------------------------------------------------------------


def test_render_prints_the_tables_the_verdicts_and_one_summary_line(runs):
    console = Console(record=True, width=200)
    comparison = compare_runs(runs["base"], runs["slow"])
    comparison.render(console)
    text = console.export_text()
    assert "B: C-slow against A: A-base" in text
    assert "match in everything that can move latency" in text
    assert "REGRESSION" in text
    assert "unchanged row(s) not listed (--all lists them)" in text
    assert text.count("regression(s) beyond 10%") == 1
    assert text.strip().splitlines()[-1] == comparison.summary()
    frame = comparison.frame()
    assert len(frame) == len(comparison.rows)
    assert {"ratio", "ci_low", "ci_high", "p_value", "verdict", "regression"} <= set(frame)


def test_cli_compare_exits_3_on_a_regression_and_0_otherwise(runs):
    regressed = cli("compare", str(runs["base"]), str(runs["slow"]))
    assert regressed.returncode == 3, regressed.stderr
    assert "regression(s) beyond 10%" in " ".join(regressed.stdout.split()[-12:])
    assert regressed.stderr == ""
    steady = cli("compare", str(runs["base"]), str(runs["same"]))
    assert steady.returncode == 0, steady.stderr


def test_cli_compare_json_and_csv_parse(runs):
    result = cli("compare", str(runs["base"]), str(runs["slow"]), "--format", "json")
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["regressions"] == sum(r["regression"] for r in data["rows"]) > 0
    assert data["differences"] == []
    import csv
    import io

    result = cli("compare", str(runs["base"]), str(runs["slow"]), "--format", "csv")
    assert result.returncode == 3
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(data["rows"])
    assert {r["verdict"] for r in rows} >= {"slower", "unchanged"}
    assert "regression(s)" in result.stderr  # the summary, apart from the CSV


# -- two real runs, one provider made slower --------------------------------------------------


@pytest.mark.serial  # timing: alone, after the parallel part
async def test_an_emulator_made_slower_is_the_only_regression(tmp_path):
    """Two runs of one config (stub provider, and e2b through its real SDK against its
    emulator); between them the emulator's answers to e2b's destroy (DELETE /sandboxes/<id>)
    get 60 ms slower, 10-20 times what destroy takes there. compare names that provider and
    that operation, and exits 3. The threshold is 100 % so that the machine's load, which
    changes between the two runs, cannot pass for a regression of the others."""
    config = tmp_path / "bench.toml"
    config.write_text(
        '[run]\nproviders = ["stub", "e2b"]\nworkloads = ["lifecycle"]\niterations = 12\n'
        f'warmup = 1\nseed = 3\noutput = "{tmp_path / "results"}"\n'
    )
    async with running("e2b", tmp_path / "emu", extra_args=["--backend", "stub"]) as emulator:
        env = emulator.client_env()

        def run() -> Path:
            result = cli("run", "--config", str(config), env=env)
            assert result.returncode == 0, result.stderr
            return Path(result.stdout.strip().splitlines()[-1].removeprefix("results: "))

        before = run()
        await emulator.configure(
            latency=LatencyModel(fixed_s=0.060), latency_match="DELETE /sandboxes/*"
        )
        after = run()
    compare = ("compare", str(before), str(after), "--threshold", "1")
    result = cli(*compare, "--format", "json")
    assert result.returncode == 3, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    regressions = [(r["provider"], r["operation"]) for r in data["rows"] if r["regression"]]
    assert regressions == [("e2b", "destroy")], data["summary"]
    table = cli(*compare)
    assert table.returncode == 3
    regression_lines = [line for line in table.stdout.splitlines() if "REGRESSION" in line]
    assert len(regression_lines) == 1
    assert regression_lines[0].split()[:2] == ["destroy", "e2b"]
