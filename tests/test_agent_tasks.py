"""The built-in agent tasks (pip_install, git_clone, build_test): real pinned projects, verified
on the local provider and on every emulated provider, ``unsupported`` with the reason in a
sandbox whose image lacks python3 and git, and refused before anything is created when their
files are not in the cache. The cache's own checks (pinned sha256, the bundle's head) are
tested without any network.

They need the files ``scripts/setup.sh`` fetches (``python -m
bench.workloads.fetch_agent_data``); without them these tests fail and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import ConfigError, build_config
from bench.records import Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import WORKLOADS, agent_data
from bench.workloads import task as tasks
from bench.workloads.agent_tasks import AGENT_TASKS
from providers import provider_class
from providers.base import SandboxSpec
from tests.conftest import EMULATED, needs_root

AGENT = [cls.name for cls in AGENT_TASKS]


@pytest.fixture(scope="module")
def cache() -> Path:
    found = agent_data.problems()
    if found:
        pytest.fail(
            f"the agent tasks' cache {agent_data.cache_dir()} is incomplete ({'; '.join(found)}): "
            "run scripts/setup.sh (or python -m bench.workloads.fetch_agent_data)"
        )
    return agent_data.cache_dir()


def demo_task(root: Path) -> dict:
    """A configured task next to the built-ins: an upload and a verified step."""
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "data.txt").write_text("one two three\n")
    return {
        "demo": {
            "requires": ["wc"],
            "uploads": [{"source": str(root / "demo")}],
            "steps": [{"name": "count", "run": "wc -w < demo/data.txt", "output": r"^\s*3$"}],
        }
    }


async def run_on(provider, workloads: list[str]) -> MemorySink:
    sink = MemorySink()
    runner = Runner(
        providers={provider.id: provider},
        workloads={name: WORKLOADS[name]() for name in workloads},
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="agent-tasks", concurrency=1),
        timeout_s=120,
    )
    await runner.run(make_plan([provider.id], workloads, iterations=1, warmup=0, seed=1))
    return sink


def assert_all_passed(sink: MemorySink, workloads: list[str]) -> None:
    failed = [(s.workload, s.operation, s.status, s.error_message) for s in sink.samples
              if s.status != Status.OK]  # fmt: skip
    assert failed == []
    for name in workloads:
        ops = [s.operation for s in sink.samples if s.workload == name]
        assert ops == [op.name for op in WORKLOADS[name].operations]
        steps = [s for s in sink.samples if s.workload == name and s.operation not in
                 ("create", "first_exec", "tools", "upload", "total", "destroy")]  # fmt: skip
        assert steps and all(s.extra.get("verified") is True for s in steps)


@pytest.mark.parametrize("provider_id", ["local", *sorted(EMULATED)])
async def test_the_agent_tasks_pass_verified_on_every_provider(
    provider_id, cache, open_provider, tmp_path
):
    tasks.register_tasks(demo_task(tmp_path))
    try:
        names = [*AGENT, "task_demo"]
        async with open_provider(provider_id) as (provider, _):
            sink = await run_on(provider, names)
        assert_all_passed(sink, names)
        upload = {s.workload: s.extra for s in sink.samples if s.operation == "upload"}
        assert upload["pip_install"]["files"] == len(agent_data.WHEELS)
        assert upload["git_clone"]["bytes"] == agent_data.bundle_path().stat().st_size
        assert (
            upload["build_test"]["bytes"]
            == (agent_data.sdists_dir() / agent_data.SDIST.filename).stat().st_size
        )
    finally:
        tasks.unregister_tasks()


def make_bare_rootfs(root: Path) -> Path:
    """A root with only a shell and ``true`` (and the libraries they load): no python3, no
    git, no tar; what a minimal image is."""
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("building a bare rootfs needs ldd")
    for sub in ("bin", "etc", "root", "tmp", "usr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "usr" / "bin").symlink_to("../bin")
    for program in ("/bin/sh", "/usr/bin/true"):
        real = Path(program).resolve()
        shutil.copy2(real, root / "bin" / Path(program).name)
        listed = subprocess.run([ldd, str(real)], capture_output=True, text=True, check=True)
        for line in listed.stdout.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(path).resolve(), target)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    return root


async def test_in_a_sandbox_without_python_or_git_they_are_unsupported_with_the_reason(
    cache, tmp_path
):
    needs_root()
    rootfs = make_bare_rootfs(tmp_path / "rootfs")
    provider = provider_class("local")({"state_dir": str(tmp_path / "state"),
                                        "rootfs": str(rootfs)})  # fmt: skip
    await provider.open()
    try:
        sink = await run_on(provider, AGENT)
        assert await provider.list_sandboxes("agent-tasks") == []
    finally:
        await provider.close()
    lacking = {"pip_install": ["python3"], "git_clone": ["git"],
               "build_test": ["python3", "tar", "gzip"]}  # fmt: skip
    for name, missing in lacking.items():
        ops = {s.operation: s for s in sink.samples if s.workload == name}
        assert ops["tools"].status == Status.OK
        assert ops["tools"].extra["missing_tools"] == missing
        assert ops["destroy"].status == Status.OK
        unsupported = [op for op, s in ops.items() if s.status == Status.UNSUPPORTED]
        own = ("create", "first_exec", "tools", "destroy")
        assert unsupported == [o.name for o in WORKLOADS[name].operations if o.name not in own]
        assert all(
            ops[op].error_message.startswith(f"the sandbox has no {', '.join(missing)}")
            for op in unsupported
        )


# -- the cache -------------------------------------------------------------------------------------


def copy_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(cache, root / "agent-tasks")
    monkeypatch.setenv("SANDBOX_BENCH_CACHE", str(root))
    return root / "agent-tasks"


def test_a_run_naming_a_built_in_without_its_files_is_refused_creating_nothing(
    tmp_path, monkeypatch, capsys, cache
):
    monkeypatch.setenv("SANDBOX_BENCH_CACHE", str(tmp_path / "empty-cache"))
    code = main(["run", "--config", "none", "--providers", "local", "--workloads",
                 "lifecycle,pip_install", "--output", str(tmp_path / "results")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "pip_install: uploads[0].source" in err and "does not exist" in err
    assert "fetched into" in err and "scripts/setup.sh" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_a_cached_file_that_is_not_the_pinned_one_is_found_and_refused(
    tmp_path, monkeypatch, cache
):
    copied = copy_cache(tmp_path, monkeypatch, cache)
    wheel = copied / "wheels" / agent_data.REQUESTS_WHEELS[0].filename
    wheel.write_bytes(wheel.read_bytes()[:-1] + b"!")
    assert [p for p in agent_data.problems() if "requests" in p] == [
        f"{wheel.name} has sha256 {agent_data.sha256_file(wheel)[:12]}..., pinned "
        f"{agent_data.REQUESTS_WHEELS[0].sha256[:12]}..."
    ]
    with pytest.raises(ConfigError, match=r"requests-2\.32\.3-py3-none-any\.whl changed"):
        build_config({"run": {"workloads": ["pip_install"]}})
    bundle = copied / "git" / agent_data.BUNDLE_NAME
    bundle.write_bytes(b"# v2 git bundle\nnot one\n")
    with pytest.raises(ConfigError, match=r"git_clone: .* has head None, not the pinned"):
        build_config({"run": {"workloads": ["git_clone"]}})


def test_a_download_whose_sha256_is_not_the_pinned_one_is_refused_and_not_kept(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SANDBOX_BENCH_CACHE", str(tmp_path / "cache"))
    pin = agent_data.REQUESTS_WHEELS[2]

    def fake_download(pinned, into: Path) -> None:  # what a tampered index would serve
        (into / pinned.filename).write_bytes(b"not the wheel")

    monkeypatch.setattr(agent_data, "_pip_download", fake_download)
    with pytest.raises(agent_data.DataError, match=f"{pin.filename} from PyPI has sha256"):
        agent_data.fetch_pinned(pin, log=lambda _: None)
    assert list((agent_data.wheels_dir()).iterdir()) == []

    def wrong_name(pinned, into: Path) -> None:
        (into / "other-1.0-py3-none-any.whl").write_bytes(b"x")

    monkeypatch.setattr(agent_data, "_pip_download", wrong_name)
    with pytest.raises(agent_data.DataError, match=r"gave other-1\.0-py3-none-any\.whl, not"):
        agent_data.fetch_pinned(pin, log=lambda _: None)


def test_the_bundle_built_from_the_pinned_sdists_has_the_pinned_head(tmp_path, cache):
    if shutil.which("git") is None:
        pytest.fail("git is needed to build git_clone's bundle (scripts/setup.sh installs it)")
    sdists = [agent_data.sdists_dir() / p.filename for p in agent_data.HISTORY]
    out = tmp_path / "again.bundle"
    assert agent_data.build_bundle(sdists, out) == agent_data.BUNDLE_HEAD
    assert agent_data.bundle_head(out) == agent_data.BUNDLE_HEAD
    # Its last commit holds exactly the last sdist's files.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(out), str(clone)], check=True)
    files = subprocess.run(["git", "-C", str(clone), "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    import tarfile

    with tarfile.open(sdists[-1]) as archive:
        members = sorted(m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile())
    assert sorted(files) == members
