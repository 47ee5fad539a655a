"""Results files are validated at one boundary (issue 19, item 6, the files part).

``show``, ``report`` and ``compare`` read run folders through bench/store.py, which checks
each file against its schema (bench/records.py: the manifest's shape, every sample's fields,
types and status, the encoding of every line): a corrupted folder is refused with one line
that names the file (and line), exit 2, nothing created. A hypothesis test corrupts a real
run folder in many ways and asserts exactly that: exit 0 or 2, never a traceback or an
internal error, nothing created on exit 2. The format itself is unchanged: old runs load.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import cli
from bench.config import build_config
from bench.records import SchemaError
from bench.session import run_session
from bench.store import load_run

#: Run folders the tests corrupt: made once per session by a real (stub) run.
_CACHE: dict[str, Path] = {}


def _good_run(root: Path) -> Path:
    if "run" not in _CACHE:
        out = root / "good"
        config = build_config(
            {"run": {"providers": ["stub"], "workloads": ["lifecycle", "checkpoint"],
                     "iterations": 2, "warmup": 0, "output": str(out), "seed": 5},
             "workloads": {"checkpoint": {"state_mb": 1}}}
        )  # fmt: skip
        folder, _ = asyncio.run(run_session(config))
        _CACHE["run"] = folder
    return _CACHE["run"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return _good_run(tmp_path_factory.mktemp("runs"))


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder, except run folders' ``cache/`` (derived Parquet copies that any
    reading command may rebuild, bench/columnar.py; not part of the record format)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
        if "cache" not in p.relative_to(folder).parts
    }


def _main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, err.getvalue()


def test_an_old_run_still_loads(good_run):
    run = load_run(good_run)
    assert run.samples and run.manifest["status"] == "completed"


# -- the named cases of issue 19 --------------------------------------------------------------

SAMPLE = {
    "run_id": "r", "sample_id": 1, "provider": "stub", "workload": "lifecycle",
    "operation": "create", "iteration": 0, "warmup": False, "concurrency": 1,
    "started_at": "2026-11-28T10:00:00+00:00", "duration_s": 0.1, "status": "ok",
}  # fmt: skip

CASES = {
    "manifest is a list": ({"manifest.json": b"[]"}, "manifest.json: not a JSON object but list"),
    "manifest lacks run_id": (
        {"manifest.json": json.dumps({"schema_version": 1, "status": "completed"}).encode()},
        "manifest.json: no run_id",
    ),
    "manifest status unknown": (
        {"manifest.json": json.dumps({"schema_version": 1, "run_id": "r", "status": "odd"})
         .encode()},
        "unknown run status 'odd'",
    ),
    "manifest plan of the wrong shape": (
        {"manifest.json": json.dumps({"schema_version": 1, "run_id": "r",
                                      "plan": {"providers": "local"}}).encode()},
        "manifest.json: plan.providers is text, not a list",
    ),
    "sample with an unknown status": (
        {"samples.jsonl": (json.dumps({**SAMPLE, "status": "great"}) + "\n").encode()},
        "samples.jsonl: line 1: unknown status 'great'",
    ),
    "sample with a field of the wrong type": (
        {"samples.jsonl": (json.dumps({**SAMPLE, "iteration": "0"}) + "\n").encode()},
        "samples.jsonl: line 1: sample field iteration is text, not a number",
    ),
    "sample that is not an object": (
        {"samples.jsonl": b"[1, 2]\n"}, "samples.jsonl: line 1: a sample must be a JSON object"
    ),
    "samples not UTF-8": (
        {"samples.jsonl": (json.dumps(SAMPLE) + "\n").encode() + b"\xff\xfe{}\n"},
        "samples.jsonl: line 2 is not UTF-8 text",
    ),
    "ledger line not an object": ({"ledger.jsonl": b"5\n"}, "ledger.jsonl: line 1 is not"),
}  # fmt: skip


@pytest.mark.parametrize(("files", "message"), CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("command", ["show", "report", "compare"])
def test_a_corrupt_run_folder_is_refused_in_one_line_naming_the_file(
    tmp_path, good_run, files, message, command
):
    folder = tmp_path / "results" / "r"
    shutil.copytree(good_run, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["run_id"] = "r"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name, body in files.items():
        (folder / name).write_bytes(body)
    if command == "report" and "ledger" not in message and "samples" not in message:
        pass
    argv = {
        "show": ["show", str(folder)],
        "report": ["report", str(folder), "--out", str(tmp_path / "reports")],
        "compare": ["compare", str(good_run), str(folder)],
    }[command]
    if command == "show" and "ledger" in message:
        pytest.skip("show reads no ledger")
    if command == "compare" and "ledger" in message:
        pytest.skip("compare reads no ledger")
    before = _tree(tmp_path)
    code, err = _main(argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox-bench: error: "), err
    assert message in lines[0]
    assert _tree(tmp_path) == before


def test_report_out_on_a_read_only_filesystem_is_one_line(tmp_path, good_run):
    if shutil.which("mount") is None:
        pytest.skip("no mount")
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = _main(["report", str(good_run), "--out", str(target / "reports")])
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is not writable" in lines[0], err


# -- generated corruptions --------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=6,
)  # fmt: skip
MANIFEST_KEYS = ["run_id", "schema_version", "status", "plan", "providers", "config", "client",
                 "harness", "spec", "started_at", "finished_at", "seed", "cluster", "warnings",
                 "resumes", "left_alive"]  # fmt: skip
SAMPLE_KEYS = [*SAMPLE, "extra", "error_type", "sandbox_id", "nonsense"]


@st.composite
def corruption(draw):
    """One change to a run folder: (file, kind, details)."""
    target = draw(st.sampled_from(["manifest.json", "samples.jsonl", "ledger.jsonl"]))
    kind = draw(
        st.sampled_from(["bytes", "truncate", "replace_value", "delete_key", "nested", "whole",
                         "remove"])
    )  # fmt: skip
    keys = MANIFEST_KEYS if target == "manifest.json" else SAMPLE_KEYS
    return (
        target,
        kind,
        draw(st.integers(0, 10**6)),  # where
        draw(st.sampled_from(keys)),
        draw(json_values),
        draw(st.binary(min_size=1, max_size=6)),
    )


def _corrupt(folder: Path, change) -> None:
    target, kind, where, key, value, raw = change
    path = folder / target
    data = path.read_bytes() if path.exists() else b""
    if kind == "remove":
        path.unlink(missing_ok=True)
    elif kind == "bytes":
        at = where % (len(data) + 1)
        path.write_bytes(data[:at] + raw + data[at:])
    elif kind == "truncate":
        path.write_bytes(data[: where % (len(data) + 1)])
    elif kind == "whole":
        path.write_bytes(json.dumps(value).encode())
    else:
        try:  # a structural change needs a file an earlier change left readable
            text = data.decode("utf-8")
            if target == "manifest.json":
                docs = [json.loads(text)]
            else:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return
        if not docs or not all(isinstance(d, dict) for d in docs):
            return
        doc = docs[where % len(docs)]
        if kind == "replace_value":
            doc[key] = value
        elif kind == "delete_key":
            doc.pop(key, None)
        elif isinstance(doc.get(key), dict) and doc[key]:
            inner = sorted(doc[key])[where % len(doc[key])]
            doc[key][inner] = value
        else:
            doc[key] = {"x": value}
        if target == "manifest.json":
            path.write_text(json.dumps(docs[0]))
        else:
            path.write_text("".join(json.dumps(d) + "\n" for d in docs))


@settings(
    max_examples=70,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    changes=st.lists(corruption(), min_size=1, max_size=3),
    command=st.sampled_from(["show", "show", "compare", "compare", "report"]),
)
def test_a_corrupted_run_folder_is_read_or_refused_never_a_crash(
    tmp_path_factory, changes, command
):
    good = _good_run(tmp_path_factory.mktemp("runs"))
    root = tmp_path_factory.mktemp("corrupt")
    folder = root / "results" / "run"
    shutil.copytree(good, folder)
    for change in changes:
        _corrupt(folder, change)
    argv = {
        "show": ["show", str(folder)],
        "compare": ["compare", str(good), str(folder)],
        "report": ["report", str(folder), "--out", str(root / "reports"), "--sections",
                   "run,warnings"],
    }[command]  # fmt: skip
    before = _tree(root)
    code, err = _main(argv)
    assert code in (0, 2, 3), err  # 3: compare found a regression in what it read
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sandbox-bench: error: "), err
        assert _tree(root) == before, "a refused command created or changed files"
    assert "Traceback" not in err and "internal error" not in err


def test_a_key_that_is_not_utf8_is_refused_in_one_line(tmp_path, good_run):
    """Found by the generated test above: pyarrow parses a key holding a byte that is not
    UTF-8 and then cannot name the column; the fast path gives way to load_run, which refuses
    the file in one line (it was an internal error)."""
    folder = tmp_path / "results" / "run"
    shutil.copytree(good_run, folder)
    shutil.rmtree(folder / "cache", ignore_errors=True)
    data = (folder / "samples.jsonl").read_bytes()
    (folder / "samples.jsonl").write_bytes(data[:2] + b"\x80" + data[2:])
    code, err = _main(["show", str(folder)])
    assert code == 2, err
    assert err.startswith("sandbox-bench: error: ") and "samples.jsonl" in err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err


def test_the_schema_error_names_the_line_of_a_torn_middle_line(tmp_path, good_run):
    folder = tmp_path / "run"
    shutil.copytree(good_run, folder)
    lines = (folder / "samples.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    (folder / "samples.jsonl").write_text("".join(lines))
    with pytest.raises(SchemaError, match=r"samples\.jsonl: line 2 is not JSON"):
        load_run(folder)
