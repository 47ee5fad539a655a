"""Tasks of the buyer's own (``[workloads.task.NAME]``): refused in one line when wrong, run step
by step in real local sandboxes through the real CLI, recorded with their whole definition and
every uploaded file's sha256, and shown in the report (rebuilt from the manifest alone).

The run with a failing step goes through ``sandbox-bench run`` and ``report`` on the local
provider (root needed); the definition checks need nothing but the config code.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.config import ConfigError, build_config, config_from_manifest
from bench.records import Status
from bench.report import write_report
from bench.runner import MemorySink, Recorder, Runner, SecretScrubber, make_plan
from bench.store import load_ledger, load_manifest, load_run
from bench.workloads import WORKLOADS
from bench.workloads import task as tasks
from bench.workloads.task import Step, register_tasks, step_script, unregister_tasks
from providers import provider_class
from providers.base import SandboxSpec
from tests.conftest import needs_root
from tests.report_parsing import html_tables, markdown_tables


@pytest.fixture(autouse=True)
def forget_tasks():
    """Every test starts and ends with no configured task registered."""
    unregister_tasks()
    yield
    unregister_tasks()


def make_project(root: Path) -> Path:
    """A small folder to upload: a Python program and an executable shell script."""
    (root / "sub").mkdir(parents=True)
    (root / "hello.py").write_text('print("hello")\n')
    script = root / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho run-ok\n")
    script.chmod(0o755)
    return root


def demo_table(source: Path) -> dict[str, Any]:
    return {
        "description": "a demo whose third step fails",
        "requires": ["sh"],
        "uploads": [{"source": str(source)}],
        "steps": [
            {"name": "hello", "run": "python3 proj/hello.py", "output": "^hello$"},
            {"name": "script", "run": "./sub/run.sh && echo $GREETING", "cwd": "proj",
             "env": {"GREETING": "hi there"}, "output": "run-ok\nhi there$"},
            {"name": "fails", "run": "echo out-line; echo 'boom: it broke' >&2; exit 3",
             "timeout_s": 30},
            {"name": "after", "run": "true"},
        ],
    }  # fmt: skip


def config_with(tables: dict[str, Any], **run: Any):
    return build_config({"run": {"providers": ["local"], **run}, "workloads": {"task": tables}})


# -- the config boundary ------------------------------------------------------------------------


def test_a_task_becomes_a_workload_whose_operations_are_its_steps(tmp_path, monkeypatch):
    project = make_project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    table = demo_table(Path("proj"))  # relative to the current folder
    config = config_with({"demo": table}, workloads=["task_demo"])
    assert config.workload_names == ("task_demo",)
    cls = WORKLOADS["task_demo"]
    assert [op.name for op in cls.operations] == [
        "create", "first_exec", "tools", "upload", "hello", "script", "fails", "after", "total",
        "destroy",
    ]  # fmt: skip
    assert [op.name for op in cls.operations if op.derived] == ["total"]
    # Kept resolved: the source made absolute, every file with its sha256.
    [upload] = config.workload_params["task"]["demo"]["uploads"]
    assert upload["source"] == str(project)
    assert upload["sha256"] == {
        "proj/hello.py": hashlib.sha256(b'print("hello")\n').hexdigest(),
        "proj/sub/run.sh": hashlib.sha256(b"#!/bin/sh\necho run-ok\n").hexdigest(),
    }
    json.dumps(config.to_dict())  # what the manifest records
    # A flag can name it too; the table read again (a resume) gives the same definition.
    again = build_config(
        {"run": {"providers": ["local"]}, "workloads": config.to_dict()["workload_params"]},
        {"workloads": "task_demo,lifecycle"},
    )
    assert again.workload_names == ("task_demo", "lifecycle")
    assert again.workload_params["task"] == config.workload_params["task"]


def _bad(tmp_path: Path) -> list[tuple[Any, str]]:
    ok_step = {"name": "s", "run": "true"}
    project = make_project(tmp_path / "p")
    return [
        ({"t": {}}, "workloads.task.t.steps must be a list of 1 to 50 tables"),
        ({"t": {"steps": []}}, "steps must be a list of 1 to 50"),
        ({"t": {"steps": [ok_step], "step": 1}}, "[workloads.task.t]: unknown key(s) step"),
        ({"T-1": {"steps": [ok_step]}}, "a task name is lower-case letters"),
        ({"t": {"steps": [{"name": "Bad", "run": "true"}]}}, "name must be lower-case"),
        ({"t": {"steps": [{"name": "upload", "run": "true"}]}}, "taken by the iteration's own"),
        ({"t": {"steps": [ok_step, ok_step]}}, "steps: s named twice"),
        ({"t": {"steps": [{"name": "s"}]}}, "[workloads.task.t.steps[0]] run must be set"),
        ({"t": {"steps": [{"name": "s", "run": "  "}]}}, "run must be a command of 1 to"),
        ({"t": {"steps": [{"name": "s", "run": "true", "output": "("}]}},
         "steps[0].output is not a regular expression"),
        ({"t": {"steps": [{"name": "s", "run": "true", "timeout_s": 0}]}},
         "timeout_s must be at least 0.001 s"),
        ({"t": {"steps": [{"name": "s", "run": "true", "exit_code": 256}]}},
         "exit_code must be at most 255"),
        ({"t": {"steps": [{"name": "s", "run": "true", "env": {"1X": "a"}}]}},
         "env: '1X' is not a variable name"),
        ({"t": {"steps": [{"name": "s", "run": "true", "env": {"X": 1}}]}},
         "env.X must be a string"),
        ({"t": {"steps": [{"name": "s", "run": "true", "cwd": "../up"}]}},
         "cwd must not contain '..'"),
        ({"t": {"steps": [ok_step], "requires": ["git; rm -rf /"]}},
         "requires[0] must be a command name"),
        ({"t": {"steps": [ok_step], "uploads": [{"source": str(tmp_path / "nope")}]}},
         f"uploads[0].source {tmp_path / 'nope'} does not exist"),
        ({"t": {"steps": [ok_step], "uploads": [{"source": "/dev/null"}]}},
         "is neither a file nor a folder"),
        ({"t": {"steps": [ok_step], "uploads": [{"source": str(project), "dest": "a/../.."}]}},
         "uploads[0].dest must not contain '..'"),
        ({"t": {"steps": [ok_step], "uploads": [{"src": "x"}]}}, "unknown key(s) src"),
        ({"t": {"steps": [ok_step], "uploads": [{"source": str(project), "sha256": "abc"}]}},
         "sha256 must map each file's path to its sha256"),
        ({"t": {"steps": "true"}}, "steps must be a list"),
        ({"t": 5}, "[workloads.task.t] must be a table"),
    ]  # fmt: skip


def test_bad_tasks_are_refused_in_one_line_and_nothing_is_registered(tmp_path):
    for tables, message in _bad(tmp_path):
        with pytest.raises(ConfigError) as info:
            config_with(tables)
        assert message in str(info.value), (tables, str(info.value))
        assert "\n" not in str(info.value)
        assert not [n for n in WORKLOADS if n.startswith("task_")]
    with pytest.raises(ConfigError, match=r"\[workloads.task\] must hold"):
        build_config({"workloads": {"task": 5}})
    # A good task next to a bad one is not registered either.
    good = {"steps": [{"name": "s", "run": "true"}]}
    with pytest.raises(ConfigError):
        config_with({"good": good, "bad": {"steps": []}})
    assert "task_good" not in WORKLOADS
    # [run] naming a task no table defines is refused like any unknown workload.
    with pytest.raises(ConfigError, match="unknown workload 'task_nothing'"):
        config_with({}, workloads=["task_nothing"])


def test_uploads_are_bounded_and_only_regular_files_go_up(tmp_path, monkeypatch):
    step = [{"name": "s", "run": "true"}]
    big = tmp_path / "big"
    big.mkdir()
    (big / "a.bin").write_bytes(b"x" * 2048)
    monkeypatch.setattr(tasks, "MAX_UPLOAD_BYTES", 1024)
    with pytest.raises(ConfigError, match="the task uploads 2,048 bytes; at most 1,024"):
        config_with({"t": {"steps": step, "uploads": [{"source": str(big)}]}})
    monkeypatch.setattr(tasks, "MAX_UPLOAD_BYTES", 1 << 20)
    monkeypatch.setattr(tasks, "MAX_FILES", 1)
    (big / "b.bin").write_bytes(b"y")
    with pytest.raises(ConfigError, match="holds more than 1 files"):
        config_with({"t": {"steps": step, "uploads": [{"source": str(big)}]}})
    monkeypatch.setattr(tasks, "MAX_FILES", 100)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "elsewhere").symlink_to(big, target_is_directory=True)
    with pytest.raises(ConfigError, match="is a link to a folder"):
        config_with({"t": {"steps": step, "uploads": [{"source": str(linked)}]}})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no files"):
        config_with({"t": {"steps": step, "uploads": [{"source": str(empty)}]}})
    # A link to a file is read through: its content goes up under the link's name.
    (linked / "elsewhere").unlink()
    (linked / "a.bin").symlink_to(big / "a.bin")
    config = config_with({"t": {"steps": step, "uploads": [{"source": str(linked)}]}})
    [upload] = config.workload_params["task"]["t"]["uploads"]
    assert upload["sha256"] == {"linked/a.bin": hashlib.sha256(b"x" * 2048).hexdigest()}


def test_recorded_digests_refuse_changed_added_or_removed_files(tmp_path):
    project = make_project(tmp_path / "proj")
    config = config_with({"demo": demo_table(project)})
    recorded = config.to_dict()["workload_params"]["task"]
    (project / "hello.py").write_text('print("changed")\n')
    with pytest.raises(ConfigError, match=r"proj/hello.py changed since it was recorded"):
        config_with(recorded)
    (project / "hello.py").write_text('print("hello")\n')
    (project / "extra.txt").write_text("new")
    with pytest.raises(ConfigError, match=r"differ from those recorded \(new: proj/extra.txt\)"):
        config_with(recorded)
    (project / "extra.txt").unlink()
    assert config_with(recorded).workload_params["task"] == recorded


@settings(max_examples=60, deadline=None)
@given(
    value=st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40),
    cwd=st.sampled_from(["", "a b", "it's", "$HOME", "x;y"]),
)
def test_a_steps_script_exports_its_env_and_changes_to_its_folder_exactly(value, cwd):
    """Whatever the value and the folder's name, the shell sees them as written (quoting)."""
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-bench-script-")) / "work dir"
    if cwd:
        (workdir / cwd).mkdir(parents=True, exist_ok=True)
    step = Step(name="s", run='printf "%s\\n%s" "$(pwd)" "$V"', env={"V": value},
                cwd=cwd or None)  # fmt: skip
    done = subprocess.run(
        ["/bin/sh", "-c", step_script(step, str(workdir))], capture_output=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    where, _, got = done.stdout.decode().partition("\n")
    assert where == str(workdir / cwd) if cwd else str(workdir)
    assert got == value
    assert shlex.quote(value) in step_script(step, str(workdir))
    shutil.rmtree(workdir.parent)


# -- a run with a failing step, through the CLI ---------------------------------------------------

ITERATIONS = 2


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory) -> Path:
    needs_root()
    root = tmp_path_factory.mktemp("task-run")
    project = make_project(root / "proj")
    table = demo_table(project)
    steps = "\n".join(
        "[[workloads.task.demo.steps]]\n"
        + "".join(f"{k} = {json.dumps(v) if k != 'env' else _inline(v)}\n" for k, v in s.items())
        for s in table["steps"]
    )
    config = root / "tasks.toml"
    config.write_text(
        f"""
[run]
providers = ["local"]
workloads = ["task_demo"]
iterations = {ITERATIONS}
warmup = 0
seed = 3
output = "{root / "results"}"

[providers.local]
state_dir = "{root / "local-state"}"

[workloads.task.demo]
description = "{table["description"]}"
requires = ["sh"]
uploads = [{{ source = "{project}" }}]

{steps}
"""
    )
    try:
        assert main(["run", "--config", str(config)]) == 0
    finally:
        unregister_tasks()
    [folder] = (root / "results").iterdir()
    return folder


def _inline(table: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


def test_a_failing_step_is_an_error_with_its_output_and_the_rest_is_skipped(failing_run):
    run = load_run(failing_run)
    by_iteration: dict[int, list] = {}
    for sample in run.samples:
        by_iteration.setdefault(sample.iteration, []).append(sample)
    assert sorted(by_iteration) == list(range(ITERATIONS))
    for samples in by_iteration.values():
        got = [(s.operation, str(s.status)) for s in samples]
        assert got == [
            ("create", "ok"), ("first_exec", "ok"), ("tools", "ok"), ("upload", "ok"),
            ("hello", "ok"), ("script", "ok"), ("fails", "error"), ("after", "skipped"),
            ("total", "skipped"), ("destroy", "skipped"),
        ]  # fmt: skip
        ops = {s.operation: s for s in samples}
        assert ops["tools"].extra["missing_tools"] == []
        assert ops["upload"].extra == {"bytes": 37, "files": 2}
        assert ops["hello"].extra["verified"] is True
        failed = ops["fails"]
        assert failed.duration_s is None and failed.error_type == "NonZeroExit"
        assert failed.error_message == "step fails: exit code 3, expected 0; stderr: boom: it broke"
        assert failed.extra["stdout_tail"] == "out-line"
        assert failed.extra["stderr_tail"] == "boom: it broke"
        assert failed.extra["exit_code"] == 3
        assert failed.extra["verified"] is None  # passing steps say true; no verdict here
        assert "fails failed earlier" in ops["after"].error_message
    # Every sandbox was destroyed (by the untimed cleanup, since destroy was skipped).
    ledger, _ = load_ledger(failing_run)
    created = {e["sandbox_id"] for e in ledger if e["event"] == "created"}
    destroyed = {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"}
    assert len(created) == ITERATIONS and created == destroyed


def test_the_manifest_holds_the_tasks_definition_and_each_files_sha256(failing_run, tmp_path):
    manifest = load_manifest(failing_run)
    table = manifest["config"]["workload_params"]["task"]["demo"]
    [upload] = table["uploads"]
    source = Path(upload["source"])
    for path, digest in upload["sha256"].items():
        local = source.joinpath(*Path(path).parts[1:])
        assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    assert [s["name"] for s in table["steps"]] == ["hello", "script", "fails", "after"]
    assert table["steps"][1]["env"] == {"GREETING": "hi there"}
    assert manifest["plan"]["workload_params"]["task_demo"]["task"] == table
    # A resume rebuilds the task from the manifest, and refuses it once a file changed.
    config = config_from_manifest(manifest, failing_run)
    assert config.workload_names == ("task_demo",)
    assert WORKLOADS["task_demo"].task.to_table() == table
    unregister_tasks()
    hello = source / "hello.py"
    saved = hello.read_bytes()
    try:
        hello.write_bytes(b"print('other')\n")
        with pytest.raises(ConfigError, match=r"cannot be resumed: .*hello\.py changed"):
            config_from_manifest(manifest, failing_run)
    finally:
        hello.write_bytes(saved)


def test_the_report_shows_each_steps_outcome_rebuilt_from_the_manifest(failing_run, tmp_path):
    assert "task_demo" not in WORKLOADS  # the report registers it from the run's manifest
    report = write_report([failing_run], tmp_path / "reports")
    html = report.read_text(encoding="utf-8")
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    tables = dict(html_tables(html))
    latency = [r[1] for r in tables["table-latency-task_demo"][1:]]
    assert latency == ["create", "first_exec", "tools", "upload", "hello", "script", "fails",
                       "after", "total", "destroy"]  # fmt: skip
    header, *rows = tables["table-steps-task_demo"]
    assert header == ["Provider", "Step", "Passed", "Failed", "Skipped", "Unsupported",
                      "Latest failure, or why unsupported"]  # fmt: skip
    n = str(ITERATIONS)
    assert rows == [
        ["local", "tools", n, "0", "0", "0", ""],
        ["local", "upload", n, "0", "0", "0", ""],
        ["local", "hello", n, "0", "0", "0", ""],
        ["local", "script", n, "0", "0", "0", ""],
        ["local", "fails", "0", n, "0", "0", "NonZeroExit: boom: it broke"],
        ["local", "after", "0", "0", n, "0", ""],
    ]
    definition = tables["table-definition-task_demo"]
    assert [r[0] for r in definition[1:]] == ["hello", "script", "fails", "after"]
    assert definition[3][1:] == ["echo out-line; echo 'boom: it broke' >&2; exit 3", "0", "–",
                                 "30 s"]  # fmt: skip
    assert len(markdown_tables(md)) == len(html_tables(html))
    assert "NonZeroExit: boom: it broke" in md
    # A failed step is a failure, not a state check that failed (no fidelity warning).
    warnings = md.split("## Warnings")[1].split("\n## ")[0]
    assert "task_demo/fails: 2 of 2 failed (100.0 %; NonZeroExit ×2)" in warnings
    assert "fidelity" not in warnings
    with (report.parent / "summary.csv").open(encoding="utf-8") as fh:
        ops = [r["operation"] for r in csv.DictReader(fh) if r["workload"] == "task_demo"]
    assert ops == latency


def test_show_lists_the_steps_in_their_order(failing_run, capsys):
    expected = ["create", "first_exec", "tools", "upload", "hello", "script", "fails", "after",
                "total", "destroy"]  # fmt: skip
    assert main(["show", str(failing_run), "--format", "csv"]) == 0
    rows = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert [r["operation"] for r in rows if r["workload"].startswith("task_")] == expected
    # The table: one per workload, the task's steps in the same order (names may be
    # abbreviated to fit, with a legend, never cut into look-alikes).
    assert main(["show", str(failing_run)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("task_demo") :].split("─\n", 1)[1].split("\n\n", 1)[0]
    shown = [line.split()[0] for line in table.splitlines()]
    assert shown == expected


# -- details, on one local provider ---------------------------------------------------------------


#: Prints 5,000 x, then the secret in two pieces (so the command itself holds no secret).
LOUD = "head -c 5000 /dev/zero | tr '\\0' x; printf 's3cr3t-'; printf 'value-0042'; exit 1"


@pytest.fixture(scope="module")
def details(tmp_path_factory) -> list:
    """Several small tasks, each one iteration on the real local provider."""
    needs_root()
    root = tmp_path_factory.mktemp("task-details")
    project = make_project(root / "proj")
    os.environ["SB_TASK_TEST_SECRET"] = "s3cr3t-value-0042"
    tables = {
        "no_tool": {"requires": ["sh", "sandbox-bench-no-such-tool"],
                    "uploads": [{"source": str(project)}],
                    "steps": [{"name": "never", "run": "true"}]},
        "slow": {"steps": [{"name": "sleeps", "run": "sleep 30", "timeout_s": 0.5},
                           {"name": "next", "run": "true"}]},
        "wrong": {"steps": [{"name": "exit_zero", "run": "true", "exit_code": 2},
                            {"name": "never", "run": "true"}]},
        "pattern": {"steps": [{"name": "says_no", "run": "echo no", "output": "^yes$"}]},
        "loud": {"steps": [{"name": "leaks", "run": LOUD}]},
        "changed": {"uploads": [{"source": str(project)}], "steps": [{"name": "never",
                                                                      "run": "true"}]},
        "expected": {"steps": [{"name": "exits_four", "run": "exit 4", "exit_code": 4}]},
    }  # fmt: skip
    try:
        register_tasks(tables)
        (project / "hello.py").write_text("print('changed after the config was read')\n")
        workloads = {f"task_{name}": WORKLOADS[f"task_{name}"]() for name in tables}

        async def go(sink: MemorySink) -> None:
            provider = provider_class("local")({"state_dir": str(root / "state")})
            await provider.open()
            try:
                runner = Runner(
                    providers={"local": provider},
                    workloads=workloads,
                    spec=SandboxSpec(),
                    recorder=Recorder(sink, run_id="details", concurrency=1,
                                      scrub=SecretScrubber(["SB_TASK_TEST_SECRET"])),
                    timeout_s=60,
                )  # fmt: skip
                await runner.run(make_plan(["local"], list(workloads), iterations=1, warmup=0,
                                           seed=1))  # fmt: skip
                assert await provider.list_sandboxes("details") == []
            finally:
                await provider.close()

        sink = MemorySink()
        asyncio.run(go(sink))
    finally:
        unregister_tasks()
        os.environ.pop("SB_TASK_TEST_SECRET", None)
    return sink.samples


def _of(samples: list, workload: str) -> dict[str, Any]:
    return {s.operation: s for s in samples if s.workload == workload}


def test_a_tool_the_sandbox_lacks_makes_the_rest_unsupported_with_the_reason(details):
    ops = _of(details, "task_no_tool")
    assert ops["tools"].status == Status.OK
    assert ops["tools"].extra["missing_tools"] == ["sandbox-bench-no-such-tool"]
    for name in ("upload", "never", "total"):
        assert ops[name].status == Status.UNSUPPORTED
        assert ops[name].error_message.startswith(
            "the sandbox has no sandbox-bench-no-such-tool (not found by `command -v`)"
        )
    assert ops["destroy"].status == Status.OK


def test_a_step_past_its_timeout_times_out_and_the_rest_is_skipped(details):
    ops = _of(details, "task_slow")
    assert ops["sleeps"].status == Status.TIMEOUT and ops["sleeps"].duration_s is None
    assert ops["next"].status == Status.SKIPPED


def test_exit_codes_and_output_patterns_are_checked(details):
    wrong = _of(details, "task_wrong")["exit_zero"]
    assert (wrong.status, wrong.error_type) == (Status.ERROR, "UnexpectedExitCode")
    assert wrong.error_message == "step exit_zero: exit code 0, expected 2"
    assert _of(details, "task_wrong")["never"].status == Status.SKIPPED
    says_no = _of(details, "task_pattern")["says_no"]
    assert (says_no.error_type, says_no.extra["stdout_tail"]) == ("UnexpectedOutput", "no")
    assert "no match for /^yes$/" in says_no.error_message
    expected = _of(details, "task_expected")
    assert expected["exits_four"].status == Status.OK and expected["total"].status == Status.OK


def test_a_failed_steps_output_is_scrubbed_of_secrets_and_bounded(details):
    leaks = _of(details, "task_loud")["leaks"]
    tail = leaks.extra["stdout_tail"]
    assert len(tail) == tasks.TAIL_CHARS and tail.startswith("…") and tail.endswith("x***")
    everything = json.dumps([s.to_json_dict() for s in details])
    assert "s3cr3t-value-0042" not in everything
    assert len(leaks.error_message) <= 500


def test_a_file_changed_after_the_config_was_read_fails_the_upload(details):
    ops = _of(details, "task_changed")
    assert ops["upload"].status == Status.ERROR
    assert ops["upload"].error_type == "LocalFileChanged"
    assert "hello.py has sha256" in ops["upload"].error_message
    assert ops["never"].status == Status.SKIPPED


def test_the_readmes_task_example_is_a_valid_task(monkeypatch):
    """The README's example (the "Tasks" section) reads as it says, from the repository root."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Tasks", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(root)
    data = tomllib.loads(example)
    config = build_config({**data, "run": {**data["run"], "providers": ["local"]}})
    assert config.workload_names == ("lifecycle", "task_unit_tests")
    steps = WORKLOADS["task_unit_tests"].task.steps
    assert [s.name for s in steps] == ["unit_tests", "count_words"]
    # The same task runs in bench-full.toml.
    full = build_config(tomllib.loads((root / "bench-full.toml").read_text(encoding="utf-8")))
    assert "task_demo" in full.workload_names
    assert WORKLOADS["task_demo"].task.steps == steps


def test_a_task_runs_on_cluster_workers_too(tmp_path, monkeypatch):
    """A worker process registers the driver's tasks from the config it is sent."""
    needs_root()
    project = make_project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "cluster.toml"
    config.write_text(
        f"""
[run]
providers = ["local"]
workloads = ["task_hello"]
iterations = 1
warmup = 0
output = "{tmp_path / "results"}"

[providers.local]
state_dir = "{tmp_path / "state"}"

[workloads.task.hello]
uploads = [{{ source = "{project}" }}]
steps = [{{ name = "hello", run = "python3 proj/hello.py", output = "^hello$" }}]
"""
    )
    assert main(["run", "--config", str(config), "--cluster", "local:1"]) == 0
    [folder] = (tmp_path / "results").iterdir()
    samples = load_run(folder).samples
    assert [(s.operation, str(s.status)) for s in samples] == [
        ("create", "ok"), ("first_exec", "ok"), ("upload", "ok"), ("hello", "ok"),
        ("total", "ok"), ("destroy", "ok"),
    ]  # fmt: skip
    assert all(s.extra.get("host") for s in samples)  # measured by a worker
