"""Built-in agent tasks that need no internet: ``pip_install``, ``git_clone``, ``build_test``.

What an agent does first in a fresh sandbox (install packages, clone a repository, build and
test a project), with every byte it needs uploaded by the harness, so the sandbox needs no
network (the local ones have none; a provider's may have none). They are tasks
(bench/workloads/task.py: ``first_exec``, ``tools``, ``upload``, each step timed, ``total``
derived; a failed step keeps its output's tail; a sandbox lacking a tool records the rest
``unsupported`` with the reason) whose files are real releases from PyPI, pinned by sha256 in
bench/workloads/agent_data.py and fetched into the harness's cache by ``scripts/setup.sh``
(never during a run). Their folder in the sandbox is ``<scratch>/sandbox-bench/<workload>``.

``pip_install`` (needs ``python3``; uploads 2.3 MB: pip 24.2 and requests 2.32.3 with its four
dependencies, as wheels)::

    create | first_exec | tools | upload | venv | install | import | total | destroy

* ``venv``: ``python3 -m venv --without-pip venv`` (the standard library's venv module).
* ``install``: ``pip install --no-index --find-links wheels requests==2.32.3`` into the venv,
  with pip run from its uploaded wheel (the same pip on every provider) and no pip
  configuration (``PIP_CONFIG_FILE=/dev/null``); passes when pip reports exactly the five
  pinned distributions installed.
* ``import``: the venv's python imports the five and prints their versions, which must be the
  pinned ones.

``git_clone`` (needs ``git``; uploads a 130 kB bundle of 3 commits, see agent_data)::

    create | first_exec | tools | upload | clone | verify | total | destroy

* ``clone``: ``git clone`` of the uploaded bundle (object transfer, index, checkout of 38 files).
* ``verify``: the clone's head is the pinned commit, its history has 3 commits, and
  ``git status`` finds the checkout clean (every file read back and compared).

``build_test`` (needs ``python3``, ``tar``, ``gzip``; uploads the 121 kB sdist of
more-itertools 10.5.0)::

    create | first_exec | tools | upload | unpack | build | test | total | destroy

* ``unpack``: ``tar -xzf`` of the sdist.
* ``build``: ``python3 -m compileall`` of the package and its tests (what a pure-Python
  project's build amounts to; the test step then loads the compiled files).
* ``test``: ``python3 -m unittest`` in the project's folder: passes when it ran 800 to 899
  tests (817 with Python 3.11) and printed ``OK``.

When the cache lacks a pinned file, a run naming the workload is refused before anything is
created ("run scripts/setup.sh").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from bench.workloads import agent_data
from bench.workloads.agent_data import BUNDLE_COMMITS, BUNDLE_HEAD, PIP, REQUESTS_WHEELS, SDIST
from bench.workloads.task import (
    Step,
    TaskError,
    TaskSpec,
    TaskWorkload,
    Upload,
    operations_for,
    parse_upload,
)


class AgentTask(TaskWorkload):
    """A built-in task whose uploads come from the harness's cache."""

    #: The task with its uploads unresolved (no file list), for its declared operations.
    template: ClassVar[TaskSpec]

    @classmethod
    def sources(cls) -> tuple[tuple[Path, str, str | None], ...]:
        """(file in the cache, dest, pinned sha256 or None) of each upload, the cache as it is
        now (``$SANDBOX_BENCH_CACHE`` may change between runs of one process)."""
        raise NotImplementedError

    @classmethod
    def task_spec(cls) -> TaskSpec:
        uploads = []
        for i, (source, dest, pin) in enumerate(cls.sources()):
            table: dict[str, Any] = {"source": str(source), "dest": dest}
            if pin is not None:
                table["sha256"] = {source.name: pin}
            try:
                uploads.append(parse_upload(table, f"{cls.name}: uploads[{i}]"))
            except TaskError as exc:
                raise TaskError(
                    f"{exc}; the built-in tasks' files are fetched into "
                    f"{agent_data.cache_dir()} by scripts/setup.sh (or python -m "
                    "bench.workloads.fetch_agent_data)"
                ) from None
        t = cls.template
        return TaskSpec(name=t.name, description=t.description, requires=t.requires,
                        workdir=t.workdir, uploads=tuple(uploads), steps=t.steps)  # fmt: skip


def _placeholders(count: int, dest: str) -> tuple[Upload, ...]:
    return tuple(Upload(source=Path(), dest=dest, files=()) for _ in range(count))


# -- pip_install --------------------------------------------------------------------------------

_INSTALLED = " ".join(
    sorted(f"{p.project}-{p.version}" for p in REQUESTS_WHEELS)  # pip lists them sorted
)
_MODULES = {
    "requests": "requests",
    "urllib3": "urllib3",
    "idna": "idna",
    "certifi": "certifi",
    "charset-normalizer": "charset_normalizer",
}
#: certifi's __version__ keeps the leading zero its release number drops.
_IMPORTED = " ".join(
    f"{_MODULES[p.project]} "
    + (p.version.replace(".8.", ".08.") if p.project == "certifi" else p.version)
    for p in REQUESTS_WHEELS
)
_IMPORT_SCRIPT = (
    "import " + ", ".join(_MODULES[p.project] for p in REQUESTS_WHEELS) + "; print("
    + ", ".join(f"'{_MODULES[p.project]}', {_MODULES[p.project]}.__version__"
                for p in REQUESTS_WHEELS)
    + ")"
)  # fmt: skip


class PipInstall(AgentTask):
    name: ClassVar[str] = "pip_install"
    template: ClassVar[TaskSpec] = TaskSpec(
        name="pip_install",
        description="pip install requests (and its 4 dependencies) from uploaded wheels",
        requires=("python3",),
        uploads=_placeholders(len(REQUESTS_WHEELS) + 1, "wheels"),
        steps=(
            Step(name="venv", run="python3 -m venv --without-pip venv", timeout_s=120),
            Step(
                name="install",
                run=(
                    f"venv/bin/python wheels/{PIP.filename}/pip install --no-index "
                    "--find-links wheels --no-cache-dir --disable-pip-version-check --no-input "
                    f"{REQUESTS_WHEELS[0].requirement}"
                ),
                timeout_s=300,
                output=rf"^Successfully installed {re.escape(_INSTALLED)}$",
                env={"PIP_CONFIG_FILE": "/dev/null"},
            ),
            Step(
                name="import",
                run=f'venv/bin/python -c "{_IMPORT_SCRIPT}"',
                timeout_s=120,
                output=rf"\A{re.escape(_IMPORTED)}\n\Z",
            ),
        ),
    )
    operations = operations_for(template)

    @classmethod
    def sources(cls) -> tuple[tuple[Path, str, str | None], ...]:
        return tuple(
            (agent_data.wheels_dir() / p.filename, "wheels", p.sha256)
            for p in (PIP, *REQUESTS_WHEELS)
        )


# -- git_clone ----------------------------------------------------------------------------------

_REPO = "more-itertools"


class GitClone(AgentTask):
    name: ClassVar[str] = "git_clone"
    template: ClassVar[TaskSpec] = TaskSpec(
        name="git_clone",
        description=f"git clone of a {BUNDLE_COMMITS}-commit bundle of more-itertools",
        requires=("git",),
        uploads=_placeholders(1, "."),
        steps=(
            Step(
                name="clone",
                run=f"git clone --quiet {agent_data.BUNDLE_NAME} {_REPO}",
                timeout_s=300,
                env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"},
            ),
            Step(
                name="verify",
                run=(
                    f"git -C {_REPO} rev-parse HEAD && git -C {_REPO} rev-list --count HEAD "
                    f"&& git -C {_REPO} status --porcelain --untracked-files=all | wc -l"
                ),
                timeout_s=120,
                output=rf"\A{BUNDLE_HEAD}\n{BUNDLE_COMMITS}\n\s*0\s*\Z",
                env={"GIT_CONFIG_NOSYSTEM": "1"},
            ),
        ),
    )
    operations = operations_for(template)

    @classmethod
    def sources(cls) -> tuple[tuple[Path, str, str | None], ...]:
        # Its bytes depend on git's pack writer; its head commit is pinned (check_files).
        return ((agent_data.bundle_path(), ".", None),)

    @classmethod
    def check_files(cls) -> None:
        super().check_files()
        head = agent_data.bundle_head(agent_data.bundle_path())
        if head != BUNDLE_HEAD:
            raise TaskError(
                f"{cls.name}: {agent_data.bundle_path()} has head {head}, not the pinned "
                f"{BUNDLE_HEAD[:12]}; rebuild it with scripts/setup.sh"
            )


# -- build_test ---------------------------------------------------------------------------------

_PROJECT = SDIST.filename.removesuffix(".tar.gz")


class BuildTest(AgentTask):
    name: ClassVar[str] = "build_test"
    template: ClassVar[TaskSpec] = TaskSpec(
        name="build_test",
        description=f"unpack, byte-compile and unit-test {SDIST.project} {SDIST.version}",
        requires=("python3", "tar", "gzip"),
        uploads=_placeholders(1, "."),
        steps=(
            Step(name="unpack", run=f"tar -xzf {SDIST.filename}", timeout_s=120),
            Step(
                name="build",
                run="python3 -m compileall -q more_itertools tests",
                timeout_s=300,
                cwd=_PROJECT,
            ),
            Step(
                name="test",
                run="python3 -m unittest",
                timeout_s=600,
                cwd=_PROJECT,
                output=r"^Ran 8[0-9][0-9] tests in [0-9.]+s\n\nOK\b",
            ),
        ),
    )
    operations = operations_for(template)

    @classmethod
    def sources(cls) -> tuple[tuple[Path, str, str | None], ...]:
        return ((agent_data.sdists_dir() / SDIST.filename, ".", SDIST.sha256),)


AGENT_TASKS: tuple[type[AgentTask], ...] = (PipInstall, GitClone, BuildTest)

__all__ = ["AGENT_TASKS", "AgentTask", "BuildTest", "GitClone", "PipInstall"]
