"""Columnar copies of runs (bench/columnar.py): the same frame as the JSONL gives, caches that
are used only while they match, and never an error because of a cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import columnar, stats
from bench.cli import main
from bench.records import SchemaError, Status
from bench.store import RunWriter, load_run, samples_path, write_json_atomic
from tests.synthetic import EXTRA_WORKLOADS, WORKLOADS, make_run, manifest, sample_dict

# -- the frame is the frame of the records --------------------------------------------------


def reference_frame(folder: Path) -> pd.DataFrame:
    return stats.samples_frame(load_run(folder).samples)


def test_a_synthetic_run_of_every_workload_gives_the_same_frame_fresh_and_cached(tmp_path):
    folder = make_run(
        tmp_path,
        workloads=(*WORKLOADS, *EXTRA_WORKLOADS),
        iterations=4,
        lag_s=0.01,
        spec_mismatch={"e2b": ["cpus", "memory"]},
    )
    expected = reference_frame(folder)
    fresh = columnar.load(folder)
    assert fresh.source == "arrow"
    pd.testing.assert_frame_equal(fresh.frame(), expected)
    assert fresh.save_cache()
    cached = columnar.load(folder, columns=columnar.FRAME_SOURCE_COLUMNS)
    assert cached.source == "cache"
    pd.testing.assert_frame_equal(cached.frame(), expected)


NAMES = st.sampled_from(["a", "b", "zeta", "Émile"])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
NUMBER = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False))
#: Values of each declared kind, right and wrong (a str- or list-kind key never holds both
#: integers and fractions: Arrow would store it as float64; see the module docstring).
EXTRA_VALUES = {
    "verified": st.one_of(st.none(), st.booleans(), st.integers(0, 3), TEXT),
    "exit_code": st.one_of(st.none(), NUMBER, st.booleans()),
    "idle_s": st.one_of(st.none(), NUMBER),
    "host": st.one_of(st.none(), TEXT, st.integers(0, 9), st.booleans()),
    "spec_mismatch": st.one_of(st.none(), st.lists(TEXT, max_size=3), TEXT, st.integers(0, 9)),
    "not_declared": st.one_of(st.none(), NUMBER, TEXT),
}


@st.composite
def records(draw, index: int) -> dict:
    status = draw(st.sampled_from(list(Status)))
    ok = status is Status.OK
    failed = status in (Status.ERROR, Status.TIMEOUT)
    error_type = draw(TEXT.filter(bool)) if failed else None
    if status in (Status.UNSUPPORTED, Status.SKIPPED):
        error_type = draw(st.one_of(st.none(), TEXT))
    keys = draw(st.lists(st.sampled_from(sorted(EXTRA_VALUES)), unique=True, max_size=4))
    open_loop = draw(st.booleans())
    start = draw(st.floats(0, 1e4)) if open_loop else None
    return sample_dict(
        run_id="run-x",
        sample_id=index,
        provider=draw(NAMES),
        workload=draw(st.sampled_from(["lifecycle", "exec", "custom"])),
        operation=draw(st.sampled_from(["create", "exec_true", "other"])),
        iteration=draw(st.integers(0, 5)),
        status=str(status),
        duration_s=draw(st.floats(0, 1e5)) if ok else None,
        error_type=error_type,
        warmup=draw(st.booleans()),
    ) | {
        "location": draw(st.one_of(st.none(), NAMES)),
        "intended_start_s": start,
        "actual_start_s": None if start is None else start + draw(st.floats(0, 1)),
        "error_message": draw(st.one_of(st.none(), TEXT)),
        "extra": {k: draw(EXTRA_VALUES[k]) for k in keys},
    }


def write_lines(root: Path, lines: list[str], run_id: str = "run-x", **manifest_extra) -> Path:
    folder = root / run_id
    RunWriter(
        folder,
        manifest(run_id, providers=["a"], workloads=["lifecycle"], iterations=1, warmup=0, seed=0)
        | manifest_extra,
    ).close()
    samples_path(folder).write_text("".join(lines), encoding="utf-8")
    return folder


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), count=st.integers(0, 12))
def test_any_valid_records_give_the_frame_samples_frame_gives(tmp_path_factory, data, count):
    rows = [data.draw(records(i)) for i in range(count)]
    folder = write_lines(
        tmp_path_factory.mktemp("r"), [json.dumps(r, separators=(",", ":")) + "\n" for r in rows]
    )
    expected = reference_frame(folder)
    fresh = columnar.load(folder, save=True)
    pd.testing.assert_frame_equal(fresh.frame(), expected)
    cached = columnar.load(folder)
    if (columnar.cache_dir(folder) / columnar.SAMPLES_FILE).exists():
        assert cached.source == "cache"
    pd.testing.assert_frame_equal(cached.frame(), expected)


# -- what load_run refuses, this refuses the same way; what it accepts, this accepts -----------


def good(i: int, **changes) -> str:
    record = sample_dict(
        run_id="run-x", sample_id=i, provider="a", workload="lifecycle", operation="create",
        iteration=i, status="ok", duration_s=0.1 + i,
    ) | changes  # fmt: skip
    return json.dumps(record, separators=(",", ":")) + "\n"


def without(line: str, key: str) -> str:
    return json.dumps({k: v for k, v in json.loads(line).items() if k != key}) + "\n"


BROKEN = {
    "not JSON in the middle": [good(0), "{oops\n", good(2)],
    "an unknown field": [good(0, colour="red")],
    "a failure without duration_s": [
        good(0),
        without(good(1, status="error", duration_s=None, error_type="X"), "duration_s"),
    ],
    "an ok sample without a duration": [good(0, duration_s=None)],
    "a failure with a duration": [good(0, status="timeout", error_type="T")],
    "an error without its type": [good(0, status="error", duration_s=None)],
    "a negative duration": [good(0, duration_s=-1.0)],
    "a list, not an object": ["[1, 2]\n"],
    "a missing provider": [without(good(0), "provider")],
}


@pytest.mark.parametrize("lines", BROKEN.values(), ids=BROKEN.keys())
def test_records_load_run_refuses_are_refused_with_its_message(tmp_path, lines):
    folder = write_lines(tmp_path, lines)
    with pytest.raises(SchemaError) as expected:
        load_run(folder)
    with pytest.raises(SchemaError) as got:
        columnar.load(folder, save=True)
    assert str(got.value) == str(expected.value)
    assert not (columnar.cache_dir(folder) / columnar.SAMPLES_FILE).exists()


UNUSUAL = {
    "blank lines": [good(0), "\n", "   \n", good(1)],
    "CRLF line ends": [good(0).replace("\n", "\r\n"), good(1).replace("\n", "\r\n")],
    "a last line without its newline": [good(0), good(1).rstrip("\n")],
    "a torn last line": [good(0), good(1), good(2)[:40]],
    "an integer where a float is usual": [good(0, duration_s=1)],
    "a key holding text and numbers": [good(0, extra={"host": "h"}), good(1, extra={"host": 3})],
    "an empty object in an extra": [good(0, extra={"x": {}})],
    "whitespace after the last line": [good(0), "  "],
}


@pytest.mark.parametrize("lines", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_unusual_valid_files_load_as_load_run_loads_them(tmp_path, lines):
    folder = write_lines(tmp_path, lines)
    reference = load_run(folder)
    run = columnar.load(folder, save=True)
    assert run.warnings == reference.warnings
    pd.testing.assert_frame_equal(run.frame(), stats.samples_frame(reference.samples))
    again = columnar.load(folder)
    assert again.warnings == reference.warnings
    pd.testing.assert_frame_equal(again.frame(), stats.samples_frame(reference.samples))


def test_a_torn_line_set_aside_by_a_resume_is_reported_live(tmp_path):
    folder = write_lines(tmp_path, [good(0), good(1)])
    (folder / "samples.jsonl.torn").write_text('{"run_id":"x\n')
    reference = load_run(folder)
    assert columnar.load(folder, save=True).warnings == reference.warnings
    assert columnar.load(folder).warnings == reference.warnings


# -- caches: used only while they match --------------------------------------------------------


def parquet(folder: Path) -> Path:
    return columnar.cache_dir(folder) / columnar.SAMPLES_FILE


def test_an_appended_sample_makes_the_cache_stale(tmp_path):
    folder = write_lines(tmp_path, [good(0), good(1)])
    columnar.load(folder, save=True)
    with samples_path(folder).open("a") as fh:
        fh.write(good(2))
    run = columnar.load(folder, save=True)
    assert run.source != "cache" and run.table.num_rows == 3
    assert columnar.load(folder).source == "cache"


def test_an_edit_of_the_same_size_makes_the_cache_stale(tmp_path):
    folder = write_lines(tmp_path, [good(0), good(1)])
    columnar.load(folder, save=True)
    path = samples_path(folder)
    text = path.read_text().replace('"duration_s":0.1', '"duration_s":0.2')
    stat = path.stat()
    path.write_text(text)
    assert path.stat().st_size == stat.st_size
    run = columnar.load(folder)
    assert run.source != "cache"
    assert run.frame()["duration_s"].iloc[0] == 0.2


def test_an_edit_that_keeps_size_and_mtime_is_still_seen_in_a_sampled_block(tmp_path):
    lines = [good(i) for i in range(20_000)]  # several MiB: the sampled hash, not the full one
    folder = write_lines(tmp_path, lines)
    columnar.load(folder, save=True)
    path = samples_path(folder)
    stat = path.stat()
    data = bytearray(path.read_bytes())
    at = data.index(b'"duration_s":', len(data) - 1000)
    data[at + 13] = ord("9") if data[at + 13] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert columnar.load(folder).source != "cache"


def test_a_resume_makes_the_cache_stale_even_with_the_same_samples(tmp_path):
    folder = write_lines(tmp_path, [good(0)])
    columnar.load(folder, save=True)
    data = json.loads((folder / "manifest.json").read_text())
    write_json_atomic(folder / "manifest.json", data | {"resumes": [{"at": "now"}]})
    assert columnar.load(folder).source != "cache"


def test_a_running_run_is_always_parsed_and_never_cached(tmp_path):
    folder = write_lines(tmp_path, [good(0)], status="running")
    run = columnar.load(folder, save=True)
    assert run.source == "arrow"
    assert not parquet(folder).exists()
    assert columnar.load_summary(folder).source == "arrow"
    assert not columnar.cache_dir(folder).exists() or not any(columnar.cache_dir(folder).iterdir())


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not parquet at all"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_a_corrupt_cache_is_rebuilt_without_a_word(tmp_path, damage):
    folder = write_lines(tmp_path, [good(0), good(1)])
    columnar.load(folder, save=True)
    damage(parquet(folder))
    run = columnar.load(folder, save=True)
    assert run.source == "arrow" and run.warnings == []
    assert columnar.load(folder).source == "cache"


def test_a_cache_of_another_format_is_rebuilt(tmp_path, monkeypatch):
    folder = write_lines(tmp_path, [good(0)])
    columnar.load(folder, save=True)
    monkeypatch.setattr(columnar, "FORMAT", columnar.FORMAT + 1)
    assert columnar.load(folder).source == "arrow"


def test_a_read_only_results_folder_just_gets_no_cache(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = write_lines(tmp_path, [good(0)])
    folder.chmod(0o555)
    try:
        assert columnar.load(folder, save=True).table.num_rows == 1
    finally:
        folder.chmod(0o755)


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path):
    folder = write_lines(tmp_path, [good(0)])
    columnar.cache_dir(folder).write_text("a file where the cache folder goes")
    run = columnar.load(folder)
    assert run.save_cache() is False
    assert run.table.num_rows == 1
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("cache*/.*.tmp"))


def test_the_cache_copies_every_field_of_every_record(tmp_path):
    folder = make_run(tmp_path, workloads=("burst", "probe"), iterations=3, lag_s=0.02)
    columnar.load(folder, save=True)
    table = pq.read_table(parquet(folder))
    records = [s.to_json_dict() for s in load_run(folder).samples]
    assert table.num_rows == len(records)
    for name in columnar.SCHEMA.names:
        assert table[name].to_pylist() == [r[name] for r in records], name
    extras = table["extra"].to_pylist()
    for got, record in zip(extras, records, strict=True):
        assert {k: v for k, v in (got or {}).items() if v is not None} == record["extra"]


def test_the_schema_names_every_field_of_a_sample():
    from dataclasses import fields

    from bench.records import Sample

    assert [*columnar.SCHEMA.names, "extra"] == [f.name for f in fields(Sample)]


# -- summaries ---------------------------------------------------------------------------------


def test_the_summary_cache_gives_the_summary_of_the_samples(tmp_path):
    folder = make_run(tmp_path, iterations=8)
    expected = stats.summarize(load_run(folder).samples)
    first = columnar.load_summary(folder)
    assert first.source == "arrow"
    pd.testing.assert_frame_equal(first.summary, expected)
    second = columnar.load_summary(folder)
    assert second.source == "summary cache"
    pd.testing.assert_frame_equal(second.summary, expected)
    warm = columnar.load_summary(folder, include_warmups=True, seed=3)
    assert warm.source == "cache"  # its samples from the Parquet copy, its summary computed
    pd.testing.assert_frame_equal(
        warm.summary, stats.summarize(load_run(folder).samples, include_warmups=True, seed=3)
    )


def test_a_changed_statistic_is_never_served_from_an_old_summary(tmp_path, monkeypatch):
    folder = make_run(tmp_path, iterations=5)
    columnar.load_summary(folder)
    monkeypatch.setattr(columnar, "stats_fingerprint", lambda: "another version of bench/stats")
    assert columnar.load_summary(folder).source != "summary cache"


def test_show_prints_the_same_table_fresh_and_from_the_caches(tmp_path, capsys):
    folder = make_run(tmp_path / "results", iterations=6)
    assert main(["show", str(folder)]) == 0
    fresh = capsys.readouterr().out
    assert (columnar.cache_dir(folder)).is_dir()
    assert main(["show", str(folder)]) == 0
    assert capsys.readouterr().out == fresh
    shutil.rmtree(columnar.cache_dir(folder))
    (columnar.cache_dir(folder)).mkdir()
    for name in ("samples.parquet", "summary-operation-w0-s0.parquet"):
        (columnar.cache_dir(folder) / name).write_bytes(b"PAR1 broken")
    assert main(["show", str(folder)]) == 0
    assert capsys.readouterr().out == fresh


# -- the harness writes the copy when a run ends -------------------------------------------------


def test_a_completed_run_has_its_parquet_copy_and_it_matches(tmp_path):
    code = main(
        ["run", "--config", "none", "--providers", "stub", "--workloads", "lifecycle",
         "--iterations", "3", "--output", str(tmp_path / "results")]
    )  # fmt: skip
    assert code == 0
    [folder] = (tmp_path / "results").iterdir()
    assert parquet(folder).is_file()
    run = columnar.load(folder)
    assert run.source == "cache"
    pd.testing.assert_frame_equal(run.frame(), reference_frame(folder))


# -- export -------------------------------------------------------------------------------------


def test_export_writes_every_sample_of_every_run_in_one_file_pandas_reads(tmp_path):
    a = make_run(tmp_path, "20261201T000000Z-aaaaaa", workloads=("probe", "lifecycle"), seed=1)
    b = make_run(tmp_path, "20261202T000000Z-bbbbbb", iterations=3, seed=2)
    columnar.load(b, save=True)  # one from its cache, one parsed
    out = tmp_path / "all.parquet"
    rows = columnar.export([a, b], out)
    frame = pd.read_parquet(out)
    records = [s.to_json_dict() for r in (a, b) for s in load_run(r).samples]
    assert rows == len(frame) == len(records)
    assert list(frame["run_id"]) == [r["run_id"] for r in records]
    assert list(frame["duration_s"].fillna(-1)) == [
        -1 if r["duration_s"] is None else r["duration_s"] for r in records
    ]
    extras = [json.loads(x) if x is not None else {} for x in frame["extra"]]
    assert extras == [r["extra"] for r in records]
    assert set(frame["client_location"]) == {"fra"}
    assert json.loads(frame["sdk_versions"].iloc[0]) == {"daytona-sdk": "1.2.3"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_refuses_a_run_given_twice_and_leaves_no_file(tmp_path):
    a = make_run(tmp_path, iterations=2)
    out = tmp_path / "all.parquet"
    with pytest.raises(ValueError, match="given twice"):
        columnar.export([a, a], out)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
