"""The raw result format: what a sample may hold, and how run folders load."""

from __future__ import annotations

import json

import pytest

from bench.records import SCHEMA_VERSION, Sample, SchemaError, Status
from bench.store import RunWriter, load_run


def sample(**changes) -> Sample:
    fields = {
        "run_id": "r",
        "sample_id": 1,
        "provider": "local",
        "workload": "lifecycle",
        "operation": "create",
        "iteration": 0,
        "warmup": False,
        "concurrency": 1,
        "started_at": "2026-11-28T00:00:00+00:00",
        "duration_s": 0.01,
        "status": Status.OK,
    }
    return Sample(**{**fields, **changes})


def test_a_failure_never_carries_a_duration():
    with pytest.raises(SchemaError):
        sample(status=Status.ERROR, error_type="Unavailable", duration_s=0.0)
    failed = sample(status=Status.ERROR, error_type="Unavailable", duration_s=None)
    assert failed.duration_s is None


def test_an_ok_sample_needs_a_finite_duration():
    with pytest.raises(SchemaError):
        sample(duration_s=None)
    with pytest.raises(SchemaError):
        sample(duration_s=float("nan"))


def test_errors_and_timeouts_need_an_error_class():
    with pytest.raises(SchemaError):
        sample(status=Status.TIMEOUT, duration_s=None)


def test_a_run_folder_round_trips(tmp_path):
    writer = RunWriter(tmp_path / "run", {"run_id": "run-1"})
    writer.add_sample(sample())
    writer.add_sample(sample(sample_id=2, status="skipped", duration_s=None))
    writer.close()
    run = load_run(tmp_path / "run")
    assert run.run_id == "run-1"
    assert [s.status for s in run.samples] == [Status.OK, Status.SKIPPED]
    assert run.warnings == []


def test_a_torn_last_line_is_skipped_and_reported(tmp_path):
    writer = RunWriter(tmp_path / "run", {"run_id": "run-1"})
    writer.add_sample(sample())
    writer.close()
    with (tmp_path / "run" / "samples.jsonl").open("a") as fh:
        fh.write('{"run_id": "run-1", "sample_id": 2, "prov')
    run = load_run(tmp_path / "run")
    assert len(run.samples) == 1
    assert "torn last line" in run.warnings[0]


def test_an_unknown_schema_version_is_refused_with_a_clear_message(tmp_path):
    folder = tmp_path / "run"
    RunWriter(folder, {"run_id": "x"}).close()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="schema version"):
        load_run(folder)


def test_a_run_folder_is_never_overwritten(tmp_path):
    RunWriter(tmp_path / "run", {"run_id": "x"}).close()
    with pytest.raises(FileExistsError):
        RunWriter(tmp_path / "run", {"run_id": "x"})
