"""task: the buyer's own agent work, declared in the config; one workload per task.

``[workloads.task.NAME]`` in the config declares a task: files to upload from this machine,
then steps, each a shell command with the exit code and output it must produce. Reading the
config turns it into the workload ``task_NAME`` (run it by naming it in ``[run] workloads`` or
``--workloads``), which runs on every provider like any other. One iteration, on a fresh
sandbox::

    create | first_exec | tools | upload | step_1 | step_2 | ... | step_n | total | destroy
                                  |<--------------- total (derived) --------------->|

* ``first_exec``: create's return to the first ``true`` that exits 0 (so no step pays for a
  sandbox that is not ready yet).
* ``tools`` (only when the task ``requires`` tools): one exec of ``command -v`` for each. A tool
  the sandbox lacks is recorded in ``extra.missing_tools``, and every later operation but
  ``destroy`` is recorded ``unsupported`` with the reason ("the sandbox has no git"), never
  run half-way or faked.
* ``upload`` (only when the task uploads files): every file written with the provider's file
  API, one ``write_file`` per file in path order, then, when some were executable here, one
  ``chmod +x`` exec. The content is read before the clock starts and checked against the
  sha256 recorded when the config was read (``LocalFileChanged`` otherwise); ``extra.bytes``
  and ``extra.files`` say how much went up.
* each step, by its name: one exec of a shell script that makes the task's folder, changes to
  the step's ``cwd`` (default: the task's folder), exports its ``env`` and runs its command,
  with the step's timeout. It passes when the exit code is the expected one and, when the step
  has an ``output`` pattern, the pattern is found in stdout or stderr (``extra.verified``).
  Otherwise it is an error (``NonZeroExit``, ``UnexpectedExitCode``, ``UnexpectedOutput``)
  whose message and ``extra.stdout_tail`` / ``extra.stderr_tail`` hold the end of each stream
  (scrubbed of secrets, at most 400 characters each), and the steps after it are ``skipped``.
* ``total``: the upload's start (or the first step's, when nothing is uploaded) to the last
  step's end, recorded only when every step passed (derived: never summed into a cost).
* ``destroy``: the provider's destroy call.

The task's folder in the sandbox (``workdir``) defaults to ``<scratch>/sandbox-bench/<workload>``
(the provider's scratch directory); uploads land under it (``dest``, default the folder
itself; a file or a folder keeps its name there, like ``cp -r SOURCE DEST/``). Local paths
(``source``) are relative to the current folder; they are checked, hashed and made absolute
when the config is read, and the manifest records the task's whole definition with the sha256
of every uploaded file, so that ``run --resume`` refuses changed files and ``report`` lists the
steps in their order.

The built-in agent tasks (bench/workloads/agent_tasks.py) are tasks of this kind whose files
come from the harness's cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import re
import shlex
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from bench.iteration import CheckFailed, InputFailed
from bench.store import utc_now_iso
from bench.workloads.base import Workload, exit_zero
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.registry import WORKLOADS, register_workload
from bench.workloads.shape import Extra, Operation
from providers.base import ExecResult, Sandbox
from providers.settings import SettingError, parse, setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

#: ``[workloads.task.NAME]``: the key under ``[workloads]`` holding the tasks.
TABLE = "task"
#: A task NAME becomes the workload ``task_NAME``.
PREFIX = "task_"
MAX_NAME_CHARS = 40
MAX_STEPS = 50
MAX_UPLOADS = 20
MAX_FILES = 2_000
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_COMMAND_CHARS = 64 * 1024
MAX_PATTERN_CHARS = 1_000
MAX_ENV = 50
#: How much of the end of stdout and of stderr a failed step keeps.
TAIL_CHARS = 400
#: A step's exec gets its own timeout; the harness's clock allows this much more, so the
#: provider's timeout (which also stops the command) answers first.
TIMEOUT_GRACE_S = 5.0
#: Operation names a step may not take: the iteration's own.
RESERVED = frozenset({"create", "first_exec", "tools", "upload", "total", "destroy"})

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TOOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class TaskError(SettingError):
    """A task definition refused; the message is one line naming where."""


# -- the definition -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _TaskKeys:
    description: str = setting("", help="what the task does, in a few words")
    requires: tuple[str, ...] = setting(
        (), help="commands the sandbox must have (probed with command -v); else unsupported",
        example="python3,git",
    )  # fmt: skip
    workdir: str | None = setting(
        None, help="the task's folder in the sandbox (relative: to its scratch directory)"
    )


@dataclass(frozen=True, kw_only=True)
class _UploadKeys:
    source: str = setting(help="a local file or folder (relative: to the current folder)")
    dest: str = setting(".", help="folder in the sandbox receiving it (relative: to workdir)")


@dataclass(frozen=True, kw_only=True)
class _StepKeys:
    name: str = setting(help="the step's operation name (lower-case letters, digits, _)")
    run: str = setting(help="the shell command")
    timeout_s: float | None = setting(
        None, help="the step's timeout (default: the run's timeout_s)", unit="s",
        minimum=0.001, maximum=86_400,
    )  # fmt: skip
    exit_code: int = setting(0, help="the exit code it must end with", minimum=0, maximum=255)
    output: str | None = setting(
        None, help="a regular expression that stdout or stderr must contain (Python re, "
        "multi-line)"
    )  # fmt: skip
    cwd: str | None = setting(None, help="folder it runs in (relative: to workdir)")


@dataclass(frozen=True, kw_only=True)
class UploadFile:
    """One file of an upload: its path under ``dest``, its digest, and where it is here."""

    path: str
    sha256: str
    local: Path


@dataclass(frozen=True, kw_only=True)
class Upload:
    source: Path
    dest: str
    files: tuple[UploadFile, ...]

    def to_table(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "dest": self.dest,
            "sha256": {f.path: f.sha256 for f in self.files},
        }


@dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    run: str
    timeout_s: float | None = None
    exit_code: int = 0
    output: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"name": self.name, "run": self.run, "exit_code": self.exit_code}
        for key in ("timeout_s", "output", "cwd"):
            if getattr(self, key) is not None:
                table[key] = getattr(self, key)
        if self.env:
            table["env"] = dict(self.env)
        return table


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A task: what the workload ``name`` uploads and runs (see the module docstring)."""

    #: The workload's name (``task_NAME`` for a configured task).
    name: str
    description: str = ""
    requires: tuple[str, ...] = ()
    workdir: str | None = None
    uploads: tuple[Upload, ...] = ()
    steps: tuple[Step, ...] = ()

    def to_table(self) -> dict[str, Any]:
        """The definition as a ``[workloads.task.NAME]`` table (absolute sources, digests)."""
        table: dict[str, Any] = {}
        if self.description:
            table["description"] = self.description
        if self.requires:
            table["requires"] = list(self.requires)
        if self.workdir is not None:
            table["workdir"] = self.workdir
        if self.uploads:
            table["uploads"] = [u.to_table() for u in self.uploads]
        table["steps"] = [s.to_table() for s in self.steps]
        return table

    def workdir_in(self, scratch_dir: str) -> str:
        """The task's folder in a sandbox whose scratch directory is ``scratch_dir``."""
        scratch = scratch_dir.rstrip("/") or "/"
        if self.workdir is None:
            return posixpath.join(scratch, "sandbox-bench", self.name)
        return posixpath.normpath(posixpath.join(scratch, self.workdir))


def operations_for(spec: TaskSpec) -> tuple[Operation, ...]:
    """The operations one iteration of ``spec`` records, in timeline order."""
    ops = [
        Operation("create", help="the provider's create call"),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
    ]
    if spec.requires:
        ops.append(
            Operation("tools", help=f"`command -v` of {', '.join(spec.requires)} in the sandbox")
        )
    if spec.uploads:
        ops.append(Operation("upload", help="every file written with the provider's file API"))
    for step in spec.steps:
        expect = f"exit {step.exit_code}" + (f", output /{step.output}/" if step.output else "")
        ops.append(Operation(step.name, help=f"`{_short(step.run)}` ({expect})"))
    ops.append(
        Operation("total", help="the upload's (or first step's) start to the last step's end",
                  derived=True)
    )  # fmt: skip
    ops.append(Operation("destroy", help="the provider's destroy call"))
    return tuple(ops)


def _short(command: str, limit: int = 60) -> str:
    line = " ".join(command.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- parsing (the config boundary) --------------------------------------------------------------


def _sandbox_path(value: str, key: str) -> str:
    """A path inside the sandbox: no NUL or newline, no ``..`` (it could leave the folder)."""
    if not value or "\n" in value or "\x00" in value:
        raise TaskError(f"{key} must be a path without newlines, got {value!r}")
    if ".." in PurePosixPath(value).parts:
        raise TaskError(f"{key} must not contain '..', got {value!r}")
    return value


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_files(source: Path, key: str) -> list[tuple[str, Path, int]]:
    """(path under dest, local path, size) of every file ``source`` uploads, in path order:
    the file itself, or every regular file under the folder (symbolic links to files are read
    through; links to folders, sockets, devices are refused)."""
    try:
        info = source.stat()
    except FileNotFoundError:
        raise TaskError(f"{key} {source} does not exist") from None
    except OSError as exc:
        raise TaskError(f"{key} {source} cannot be read: {exc.strerror}") from None
    if stat.S_ISREG(info.st_mode):
        return [(source.name, source, info.st_size)]
    if not stat.S_ISDIR(info.st_mode):
        raise TaskError(f"{key} {source} is neither a file nor a folder")
    if not source.name:
        raise TaskError(f"{key} {source}: upload a folder, not /")
    found: list[tuple[str, Path, int]] = []
    for folder, dirs, files in os.walk(source, onerror=None):
        dirs.sort()
        here = Path(folder)
        for name in dirs:
            if (here / name).is_symlink():
                raise TaskError(f"{key}: {here / name} is a link to a folder; upload the folder")
        for name in sorted(files):
            path = here / name
            try:
                entry = path.stat()
            except OSError as exc:
                raise TaskError(f"{key}: {path} cannot be read: {exc.strerror}") from None
            if not stat.S_ISREG(entry.st_mode):
                raise TaskError(f"{key}: {path} is not a regular file")
            relative = PurePosixPath(source.name, *path.relative_to(source).parts)
            found.append((str(relative), path, entry.st_size))
            if len(found) > MAX_FILES:
                raise TaskError(f"{key} {source} holds more than {MAX_FILES:,} files")
    if not found:
        raise TaskError(f"{key} {source} holds no files")
    return found


def parse_upload(
    table: Any, key: str, *, check_files: bool = True, budget: list[int] | None = None
) -> Upload:
    """One ``uploads`` entry: its files listed and hashed (``check_files``), or taken from its
    ``sha256`` table; ``budget`` ([bytes, files] so far) bounds a whole task's uploads."""
    budget = [0, 0] if budget is None else budget
    if not isinstance(table, Mapping):
        raise TaskError(f"{key} must be a table, got {table!r}")
    recorded = table.get("sha256")
    keys = parse(_UploadKeys, {k: v for k, v in table.items() if k != "sha256"}, where=key)
    well_formed = isinstance(recorded, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
        for k, v in recorded.items()
    )
    if recorded is not None and not well_formed:
        raise TaskError(f"{key}.sha256 must map each file's path to its sha256 (hex)")
    if "\x00" in keys.source or not keys.source.strip():
        raise TaskError(f"{key}.source must name a local file or folder")
    source = Path(os.path.abspath(Path(keys.source).expanduser()))
    dest = _sandbox_path(keys.dest, f"{key}.dest")
    if not check_files:
        if recorded is None:
            raise TaskError(f"{key}: no sha256 recorded for its files")
        files = []
        for path, digest in recorded.items():
            inner = PurePosixPath(path)
            if inner.is_absolute() or ".." in inner.parts or not inner.parts:
                raise TaskError(f"{key}.sha256: {path!r} is not a path under dest")
            local = source if len(inner.parts) == 1 else source.joinpath(*inner.parts[1:])
            files.append(UploadFile(path=path, sha256=digest, local=local))
        return Upload(source=source, dest=dest, files=tuple(files))
    listed = _local_files(source, f"{key}.source")
    budget[0] += sum(size for _, _, size in listed)
    budget[1] += len(listed)
    if budget[0] > MAX_UPLOAD_BYTES:
        raise TaskError(
            f"{key}: the task uploads {budget[0]:,} bytes; at most {MAX_UPLOAD_BYTES:,}"
        )
    if budget[1] > MAX_FILES:
        raise TaskError(f"{key}: the task uploads {budget[1]:,} files; at most {MAX_FILES:,}")
    files = tuple(UploadFile(path=p, sha256=_hash(local), local=local) for p, local, _ in listed)
    if recorded is not None:
        _same_files(files, recorded, key)
    return Upload(source=source, dest=dest, files=files)


def _same_files(files: tuple[UploadFile, ...], recorded: Mapping[str, str], key: str) -> None:
    now = {f.path: f.sha256 for f in files}
    added, gone = sorted(set(now) - set(recorded)), sorted(set(recorded) - set(now))
    if added or gone:
        what = "; ".join(
            part
            for part in (
                f"new: {', '.join(added[:3])}" if added else "",
                f"gone: {', '.join(gone[:3])}" if gone else "",
            )
            if part
        )
        raise TaskError(f"{key}: the files differ from those recorded ({what})")
    for path, digest in now.items():
        if recorded[path] != digest:
            raise TaskError(
                f"{key}: {path} changed since it was recorded (sha256 {recorded[path][:12]}... "
                f"then, {digest[:12]}... now)"
            )


def _parse_step(table: Any, key: str) -> Step:
    if not isinstance(table, Mapping):
        raise TaskError(f"{key} must be a table, got {table!r}")
    keys = parse(_StepKeys, {k: v for k, v in table.items() if k != "env"}, where=key)
    if not _NAME.fullmatch(keys.name) or len(keys.name) > MAX_NAME_CHARS:
        raise TaskError(
            f"{key}.name must be lower-case letters, digits and _ (at most {MAX_NAME_CHARS}), "
            f"got {keys.name!r}"
        )
    if keys.name in RESERVED:
        raise TaskError(f"{key}.name {keys.name!r} is taken by the iteration's own operations")
    if not keys.run.strip() or len(keys.run) > MAX_COMMAND_CHARS:
        raise TaskError(f"{key}.run must be a command of 1 to {MAX_COMMAND_CHARS:,} characters")
    if keys.output is not None:
        if len(keys.output) > MAX_PATTERN_CHARS:
            raise TaskError(f"{key}.output is longer than {MAX_PATTERN_CHARS} characters")
        try:
            re.compile(keys.output, re.MULTILINE)
        except re.error as exc:
            raise TaskError(f"{key}.output is not a regular expression: {exc}") from None
    if keys.cwd is not None:
        _sandbox_path(keys.cwd, f"{key}.cwd")
    env = table.get("env", {})
    if not isinstance(env, Mapping) or len(env) > MAX_ENV:
        raise TaskError(f"{key}.env must be a table of at most {MAX_ENV} names and strings")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise TaskError(f"{key}.env: {name!r} is not a variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise TaskError(f"{key}.env.{name} must be a string without NUL, got {value!r}")
    return Step(
        name=keys.name, run=keys.run, timeout_s=keys.timeout_s, exit_code=keys.exit_code,
        output=keys.output, env=dict(env), cwd=keys.cwd,
    )  # fmt: skip


def parse_task(
    workload: str, table: Any, *, where: str, check_files: bool = True, uploads: bool = True
) -> TaskSpec:
    """A task's definition from its table; TaskError (one line, naming ``where``) otherwise.

    With ``check_files`` every uploaded file is read here: it must exist, stay within the
    bounds, and match the table's ``sha256`` when it has one. Without (a report rebuilding a
    run's tasks), the table's ``sha256`` is taken as it is.
    """
    if not isinstance(table, Mapping):
        raise TaskError(f"[{where}] must be a table, got {table!r}")
    known = ("description", "requires", "workdir", "uploads", "steps")
    unknown = sorted(str(k) for k in table if k not in known)
    if unknown:
        raise TaskError(f"[{where}]: unknown key(s) {', '.join(unknown)} (known: "
                        f"{', '.join(known)})")  # fmt: skip
    keys = parse(_TaskKeys, {k: v for k, v in table.items() if k in known[:3]}, where=where)
    for i, tool in enumerate(keys.requires):
        if not _TOOL.fullmatch(tool):
            raise TaskError(f"{where}.requires[{i}] must be a command name, got {tool!r}")
    if keys.workdir is not None:
        _sandbox_path(keys.workdir, f"{where}.workdir")
    raw_uploads = table.get("uploads", [])
    if not isinstance(raw_uploads, list) or len(raw_uploads) > MAX_UPLOADS:
        raise TaskError(f"{where}.uploads must be a list of at most {MAX_UPLOADS} tables")
    if raw_uploads and not uploads:
        raise TaskError(f"[{where}]: this task takes no uploads")
    budget = [0, 0]
    parsed_uploads = tuple(
        parse_upload(u, f"{where}.uploads[{i}]", check_files=check_files, budget=budget)
        for i, u in enumerate(raw_uploads)
    )
    raw_steps = table.get("steps")
    if not isinstance(raw_steps, list) or not 1 <= len(raw_steps) <= MAX_STEPS:
        raise TaskError(f"{where}.steps must be a list of 1 to {MAX_STEPS} tables")
    steps = tuple(_parse_step(s, f"{where}.steps[{i}]") for i, s in enumerate(raw_steps))
    names = [s.name for s in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TaskError(f"{where}.steps: {', '.join(twice)} named twice")
    return TaskSpec(
        name=workload, description=keys.description, requires=keys.requires,
        workdir=keys.workdir, uploads=parsed_uploads, steps=steps,
    )  # fmt: skip


# -- the workload -------------------------------------------------------------------------------


#: The tails of a failed step's output.
STDOUT_TAIL = Extra("stdout_tail", str, help="the end of a failed step's stdout (scrubbed)")
STDERR_TAIL = Extra("stderr_tail", str, help="the end of a failed step's stderr (scrubbed)")


def _tail(data: bytes, scrub: Any) -> str:
    text = data.decode(errors="replace").rstrip()
    text = scrub(text)
    return text if len(text) <= TAIL_CHARS else "…" + text[-(TAIL_CHARS - 1) :]


def step_script(step: Step, workdir: str) -> str:
    """The shell script one exec runs for ``step`` (see the module docstring)."""
    cwd = posixpath.normpath(posixpath.join(workdir, step.cwd)) if step.cwd else workdir
    lines = [f"mkdir -p -- {shlex.quote(workdir)} && cd -- {shlex.quote(cwd)} || exit"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in step.env.items()]
    lines.append(step.run)
    return "\n".join(lines)


#: One line per tool the sandbox lacks.
_TOOLS_SCRIPT = 'for t in {tools}; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done; true'


class LocalFileChanged(InputFailed):
    """An uploaded file is not what the config recorded any more."""


class LocalFileUnreadable(InputFailed):
    """An uploaded file cannot be read any more (removed, or its permissions changed)."""


class TaskWorkload(Workload):
    """A workload running a :class:`TaskSpec` (see the module docstring). A configured task is
    a subclass made by :func:`task_workload`; the built-in agent tasks subclass it too."""

    #: The task (configured tasks); built-ins build theirs in :meth:`task_spec`.
    task: ClassVar[TaskSpec | None] = None
    extras: ClassVar[tuple[Extra, ...]] = (
        ATTEMPTS,
        Extra("missing_tools", list, help="tools the task requires that the sandbox lacks"),
        Extra("bytes", int, unit="bytes", help="bytes uploaded"),
        Extra("files", int, help="files uploaded"),
        STDOUT_TAIL,
        STDERR_TAIL,
    )
    #: The steps' table and their failures' output, in the workload's latency part.
    report: ClassVar[Any] = "bench.workloads.task_report"

    @classmethod
    def task_spec(cls) -> TaskSpec:
        """The task this workload runs, files resolved (ValueError, one line, when they cannot
        be: missing, or not what was recorded)."""
        if cls.task is None:
            raise TypeError(f"workload {cls.name}: no task")
        return cls.task

    @classmethod
    def check_files(cls) -> None:
        """Refuse (ValueError, one line) a task whose files are missing or not what was
        pinned: called at the config boundary for every task workload a run names (a
        configured task's files were read and hashed when its table was parsed)."""
        cls.task_spec()

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.spec = self.task_spec()
        #: The manifest's plan records the whole definition, digests included.
        self.params = {**self.params, "task": self.spec.to_table()}
        self._contents: list[tuple[str, bytes, bool]] | None = None
        self._loading = asyncio.Lock()

    def _read_files(self) -> list[tuple[str, bytes, bool]]:
        """(path under the task's folder, content, executable) of every file, each checked
        against its recorded digest."""
        out = []
        for upload in self.spec.uploads:
            for f in upload.files:
                data = f.local.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest != f.sha256:
                    raise LocalFileChanged(
                        f"{f.local} has sha256 {digest[:12]}..., recorded {f.sha256[:12]}..."
                    )
                executable = bool(f.local.stat().st_mode & stat.S_IXUSR)
                out.append((posixpath.join(upload.dest, f.path), data, executable))
        return out

    async def _files(self) -> list[tuple[str, bytes, bool]]:
        # Read once per workload, on a thread: a concurrent iteration's timed call is in flight.
        async with self._loading:
            if self._contents is None:
                self._contents = await asyncio.to_thread(self._read_files)
            return self._contents

    async def _upload(self, ctx: IterationContext, sandbox: Sandbox, workdir: str) -> None:
        try:
            found = await self._files()
        except (OSError, LocalFileChanged) as exc:
            error = exc if isinstance(exc, InputFailed) else LocalFileUnreadable(str(exc))

            async def fail() -> None:
                raise error

            # Recorded as the upload's error (null duration): the task cannot run as defined.
            await ctx.timed("upload", fail, sandbox=sandbox)
            raise AssertionError("unreachable: a failed call raises StepFailed") from error
        files = [(posixpath.normpath(posixpath.join(workdir, path)), data, executable)
                 for path, data, executable in found]  # fmt: skip
        executables = [path for path, _, executable in files if executable]

        async def upload() -> None:
            for path, data, _ in files:
                await ctx.provider.write_file(sandbox, path, data)
            if executables:
                result = await ctx.provider.exec(
                    sandbox, ["chmod", "+x", "--", *executables], timeout_s=ctx.timeout_s
                )
                exit_zero(result)

        await ctx.timed(
            "upload",
            upload,
            sandbox=sandbox,
            extra={"bytes": sum(len(data) for _, data, _ in files), "files": len(files)},
        )

    def _check_step(self, step: Step, scrub: Any):
        def check(result: ExecResult) -> None:
            error = None
            if result.exit_code != step.exit_code:
                error = "NonZeroExit" if step.exit_code == 0 else "UnexpectedExitCode"
                why = f"exit code {result.exit_code}, expected {step.exit_code}"
            elif step.output is not None:
                pattern = re.compile(step.output, re.MULTILINE)
                streams = (result.stdout.decode(errors="replace"),
                           result.stderr.decode(errors="replace"))  # fmt: skip
                if not any(pattern.search(text) for text in streams):
                    error = "UnexpectedOutput"
                    why = f"output has no match for /{step.output}/"
            if error is None:
                return
            out, err = _tail(result.stdout, scrub), _tail(result.stderr, scrub)
            excerpt = f"; stderr: {err[-200:]}" if err else f"; stdout: {out[-200:]}" if out else ""
            raise CheckFailed(
                error,
                f"step {step.name}: {why}{excerpt}",
                exit_code=result.exit_code,
                # No verdict on the state (a failed step is no fidelity failure), so not false.
                verified=None,
                stdout_tail=out,
                stderr_tail=err,
            )

        return check

    async def _tools(self, ctx: IterationContext, sandbox: Sandbox) -> list[str]:
        script = _TOOLS_SCRIPT.format(tools=" ".join(shlex.quote(t) for t in self.spec.requires))
        found: dict[str, Any] = {}

        def read(result: ExecResult) -> None:
            exit_zero(result)
            missing = [line.strip() for line in result.stdout.decode(errors="replace").splitlines()]
            missing = [t for t in missing if t]
            if not set(missing) <= set(self.spec.requires):
                raise CheckFailed("UnexpectedOutput", f"tool probe printed {missing[:5]!r}")
            found["missing_tools"] = missing

        await ctx.timed(
            "tools",
            lambda: ctx.provider.exec(sandbox, script, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=read,
            extra=found,
        )
        return found["missing_tools"]

    async def run(self, ctx: IterationContext) -> None:
        spec = self.spec
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        if spec.requires:
            missing = await self._tools(ctx, sandbox)
            if missing:
                reason = (
                    f"the sandbox has no {', '.join(missing)} (not found by `command -v`); "
                    f"{self.name} needs {', '.join(spec.requires)}"
                )
                for op in operations_for(spec):
                    if op.name not in ("create", "first_exec", "tools", "destroy"):
                        ctx.record_unsupported(op.name, reason)
                await ctx.destroy(sandbox)
                return
        workdir = spec.workdir_in(ctx.capabilities.scratch_dir)
        started_at, t0 = utc_now_iso(), time.perf_counter_ns()
        if spec.uploads:
            await self._upload(ctx, sandbox, workdir)
        for step in spec.steps:
            limit = step.timeout_s if step.timeout_s is not None else ctx.timeout_s
            script = step_script(step, workdir)
            await ctx.timed(
                step.name,
                lambda script=script, limit=limit: ctx.provider.exec(
                    sandbox, script, timeout_s=limit
                ),
                sandbox=sandbox,
                check=self._check_step(step, ctx.recorder.scrub),
                extra={"verified": True},
                timeout_s=limit + TIMEOUT_GRACE_S,
            )
        ctx.record_span(
            "total",
            started_at=started_at,
            duration_s=(time.perf_counter_ns() - t0) / 1e9,
            sandbox=sandbox,
        )
        await ctx.destroy(sandbox)


# -- configured tasks: generated workloads ------------------------------------------------------


def task_workload(spec: TaskSpec) -> type[TaskWorkload]:
    """A workload class running ``spec`` (not registered)."""
    doc = f"{spec.name}: {spec.description or 'a task from the config'} (bench/workloads/task.py)"
    return type(
        f"Task_{spec.name}",
        (TaskWorkload,),
        {
            "name": spec.name,
            "task": spec,
            "operations": operations_for(spec),
            "__doc__": doc,
            "__module__": __name__,
        },
    )


def workload_name(task: str, where: str) -> str:
    if not isinstance(task, str) or not _NAME.fullmatch(task) or len(task) > MAX_NAME_CHARS:
        raise TaskError(
            f"[{where}]: a task name is lower-case letters, digits and _ (at most "
            f"{MAX_NAME_CHARS}), got {task!r}"
        )
    return PREFIX + task


def parse_tasks(tables: Any, *, check_files: bool = True) -> dict[str, TaskSpec]:
    """Every task of a ``[workloads.task]`` table, by workload name (nothing registered)."""
    if not isinstance(tables, Mapping):
        raise TaskError(f"[workloads.{TABLE}] must hold [workloads.{TABLE}.NAME] tables")
    specs = {}
    for task, table in tables.items():
        where = f"workloads.{TABLE}.{task}"
        name = workload_name(task, where)
        specs[name] = parse_task(name, table, where=where, check_files=check_files)
    return specs


def register_tasks(tables: Any, *, check_files: bool = True) -> dict[str, dict[str, Any]]:
    """Parse every task of a ``[workloads.task]`` table and register its workload (replacing
    an earlier definition of the same task); the resolved tables, as the config keeps them
    (absolute sources, every file's sha256). Nothing is registered when one task is refused."""
    specs = parse_tasks(tables, check_files=check_files)
    for name in specs:
        existing = WORKLOADS.get(name)
        if existing is not None and not (
            isinstance(existing, type) and issubclass(existing, TaskWorkload) and existing.task
        ):
            raise TaskError(f"[workloads.{TABLE}]: {name} is already another workload's name")
    for spec in specs.values():
        register_workload(task_workload(spec), replace=True)
    return {name[len(PREFIX) :]: spec.to_table() for name, spec in specs.items()}


def register_from_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Register the configured tasks a run's manifest defines (its ``config.workload_params``),
    without reading their files, so its report lists their steps in order; the workloads
    registered. A definition that cannot be read is left out (its records still report,
    in a fallback order)."""
    config = manifest.get("config") if isinstance(manifest, Mapping) else None
    params = config.get("workload_params") if isinstance(config, Mapping) else None
    tables = params.get(TABLE) if isinstance(params, Mapping) else None
    if not isinstance(tables, Mapping):
        return []
    done = []
    for task, table in tables.items():
        try:
            register_tasks({task: table}, check_files=False)
        except (ValueError, TypeError):
            continue
        done.append(PREFIX + str(task))
    return done


def unregister_tasks() -> None:
    """Remove every configured task's workload (tests)."""
    for name, cls in list(WORKLOADS.items()):
        if isinstance(cls, type) and issubclass(cls, TaskWorkload) and cls.task is not None:
            WORKLOADS.pop(name, None)


__all__ = [
    "PREFIX",
    "TABLE",
    "Step",
    "TaskError",
    "TaskSpec",
    "TaskWorkload",
    "Upload",
    "UploadFile",
    "operations_for",
    "parse_task",
    "parse_tasks",
    "parse_upload",
    "register_from_manifest",
    "register_tasks",
    "step_script",
    "task_workload",
    "unregister_tasks",
]
