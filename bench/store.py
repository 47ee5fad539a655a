"""Run folders on disk: results/<run_id>/manifest.json, samples.jsonl, ledger.jsonl.

Paths are built by pure functions (as asv's ``results.py`` does) so every tool agrees on them.
Samples are appended and flushed one line at a time, so a crash loses at most the line being
written; a torn last line is detected on load, skipped and reported, never silently merged.
The manifest is replaced atomically (write to a temporary file, then rename); a failed write
removes its temporary file.

One writer per run: a writer holds the run folder's ``.lock`` (an ``flock`` on it, and the
holder's pid, host and process start time in it) from before its first write until it closes;
a second writer is refused with :class:`RunLocked`. The kernel drops the ``flock`` when its
holder dies, so a lock left by a crash is stale and taken over (and the file says whose it was).

Out of space and other write failures: the first failed write raises
:class:`ResultsUnwritable` (one line naming the file and the reason); later writes of the same
writer are dropped (counted), so cleanup can go on without recording. Each writer keeps a small
``.reserve`` file from its start; a failure frees it first, so the manifest can still say
``failed`` and why on a full disk.

Reading: every file is validated where it is read (:func:`bench.records.check_manifest`,
:meth:`bench.records.Sample.from_json_dict`, ledger lines must be objects): anything else is a
:class:`SchemaError` whose one line names the file and line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.records import SCHEMA_VERSION, Sample, SchemaError, check_manifest

MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
LEDGER = "ledger.jsonl"
LOCK = ".lock"
RESERVE = ".reserve"
#: Space a writer keeps in reserve for its last manifest (at least twice the manifest).
RESERVE_BYTES = 256 * 1024


class ResultsUnwritable(Exception):
    """A results file could not be written (a full disk, a read-only or vanished folder)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path = path
        self.reason = exc.strerror or str(exc) or type(exc).__name__
        self.errno = exc.errno
        super().__init__(f"cannot write {path}: {self.reason}")


class RunLocked(Exception):
    """Another live process writes this run folder (one line for the user)."""


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC timestamp plus random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_dir(results_root: Path, run_id: str) -> Path:
    return results_root / run_id


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST


def samples_path(folder: Path) -> Path:
    return folder / SAMPLES


def ledger_path(folder: Path) -> Path:
    return folder / LEDGER


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the filesystem that holds (or would hold) ``folder``."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` by ``data`` as JSON, atomically; ResultsUnwritable (and no temporary
    file left) when it cannot be written."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ResultsUnwritable(path, exc) from None


class JsonlAppender:
    """Appends JSON objects as lines, flushed at once; safe to call from several threads.

    The first write that fails raises ResultsUnwritable; later ones are dropped and counted
    in ``lost`` (the run is ending: its cleanup must not trip over its own records)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ResultsUnwritable(path, exc) from None
        self._lock = threading.Lock()
        self.broken: ResultsUnwritable | None = None
        self.lost = 0
        self.on_failure: Any = None

    def append(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self.broken is not None:
                self.lost += 1
                return
            try:
                self._fh.write(line)
                self._fh.flush()
            except OSError as exc:
                self.broken = ResultsUnwritable(self.path, exc)
                self.lost += 1
                failed = self.broken
            else:
                return
        if self.on_failure is not None:
            self.on_failure(failed)
        raise failed

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                if self.broken is None:
                    self.broken = ResultsUnwritable(self.path, exc)
            finally:
                with contextlib.suppress(OSError):
                    self._fh.close()


# -- one writer per run -----------------------------------------------------------------------


def _starttime(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names the process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_text(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


class RunLock:
    """The one-writer lock of a run folder (see the module docstring)."""

    def __init__(self, folder: Path, fd: int, stale: dict[str, Any] | None) -> None:
        self.folder = folder
        self.path = folder / LOCK
        self._fd: int | None = fd
        #: The holder named in a lock file its holder left behind (a crash), if any.
        self.stale = stale

    @classmethod
    def acquire(cls, folder: Path, *, purpose: str = "run") -> RunLock:
        """Take the lock; RunLocked if a live process holds it, ResultsUnwritable if the lock
        file cannot be written."""
        path = folder / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ResultsUnwritable(path, exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(
                    f"run {folder.name} is being written by {_holder_text(_read_lock(fd))}; "
                    "a second writer is refused (wait for it, or stop it)"
                ) from None
            previous = _read_lock(fd)
            host = socket.gethostname()
            if previous and previous.get("pid") != os.getpid():
                pid = previous.get("pid")
                same_host = previous.get("host") == host
                alive = (
                    isinstance(pid, int)
                    and same_host
                    and _starttime(pid) is not None
                    and _starttime(pid) == previous.get("starttime")
                )
                if alive or not same_host:
                    # A live holder without the flock (a filesystem that drops flocks), or one
                    # on another host, whose process we cannot look at: refuse, and say how.
                    why = "is still running" if alive else "cannot be checked from here"
                    raise RunLocked(
                        f"run {folder.name} is locked by {_holder_text(previous)}, which {why}; "
                        f"if no sandbox-bench writes it any more, delete {path}"
                    )
            mine = {
                "pid": os.getpid(),
                "host": host,
                "starttime": _starttime(os.getpid()),
                "since": utc_now_iso(),
                "purpose": purpose,
            }
            data = (json.dumps(mine) + "\n").encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except OSError as exc:
                raise ResultsUnwritable(path, exc) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, fd, previous or None)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if _read_lock(fd).get("pid") == os.getpid():
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_lock(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        found = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def torn_path(path: Path) -> Path:
    return path.with_name(path.name + ".torn")


def _end_torn_line(path: Path) -> None:
    """Before appending to a crashed run: move a torn last line (a crash mid-write) out of
    the way, into ``<file>.torn``, so appends start on a fresh line. The fragment is kept, and
    loading the run reports it."""
    if not path.exists() or not path.stat().st_size:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with torn_path(path).open("ab") as fh:
        fh.write(data[cut:] + b"\n")
    with path.open("rb+") as fh:
        fh.truncate(cut)


class RunWriter:
    """Creates a run folder and appends to it. Refuses to overwrite an existing run.

    Holds the folder's :class:`RunLock` (taken here for a new run; handed over by the caller
    that took it before reopening one) until :meth:`close`."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        *,
        reopen: bool = False,
        lock: RunLock | None = None,
    ) -> None:
        self.folder = folder
        self.lock = lock
        self._samples: JsonlAppender | None = None
        self._ledger: JsonlAppender | None = None
        #: The first write that failed (the run then ends ``failed``), if any.
        self.failure: ResultsUnwritable | None = None
        took_lock = False
        try:
            if reopen:
                self.manifest = manifest
            else:
                try:
                    folder.mkdir(parents=True, exist_ok=False)
                except FileExistsError:
                    raise
                except OSError as exc:
                    raise ResultsUnwritable(folder, exc) from None
                self.manifest = {"schema_version": SCHEMA_VERSION, **manifest}
            if self.lock is None:
                self.lock = RunLock.acquire(folder)
                took_lock = True
            self._reserve()
            write_json_atomic(manifest_path(folder), self.manifest)
            if reopen:
                try:
                    _end_torn_line(samples_path(folder))
                    _end_torn_line(ledger_path(folder))
                except OSError as exc:
                    raise ResultsUnwritable(folder, exc) from None
            self._samples = JsonlAppender(samples_path(folder))
            self._ledger = JsonlAppender(ledger_path(folder))
            for appender in (self._samples, self._ledger):
                appender.on_failure = self._failed
        except ResultsUnwritable as exc:
            self._failed(exc)
            if took_lock and self.lock is not None:
                self.lock.release()
            raise

    @classmethod
    def reopen(cls, folder: Path, *, lock: RunLock | None = None, **changes: Any) -> RunWriter:
        """Append to an existing run (``run --resume``); its schema must be this version's."""
        manifest = load_manifest(folder)
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"{folder}: only runs of schema {SCHEMA_VERSION} can be resumed")
        return cls(folder, {**manifest, **changes}, reopen=True, lock=lock)

    def _reserve(self) -> None:
        size = max(RESERVE_BYTES, 2 * len(json.dumps(self.manifest, default=str)))
        path = self.folder / RESERVE
        try:
            with path.open("wb") as fh:
                try:
                    os.posix_fallocate(fh.fileno(), 0, size)
                except OSError as exc:
                    if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: write it instead
                        raise
                    fh.write(b"\0" * size)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise ResultsUnwritable(path, exc) from None

    def _release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / RESERVE).unlink()

    def _failed(self, exc: ResultsUnwritable) -> None:
        if self.failure is None:
            self.failure = exc
        self._release_reserve()

    @property
    def lost(self) -> int:
        """Records dropped after the first failed write."""
        return sum(a.lost for a in (self._samples, self._ledger) if a is not None)

    def add_sample(self, sample: Sample) -> None:
        assert self._samples is not None
        self._samples.append(sample.to_json_dict())

    def add_ledger(self, entry: dict[str, Any]) -> None:
        assert self._ledger is not None
        self._ledger.append({"at": utc_now_iso(), **entry})

    def update_manifest(self, **changes: Any) -> None:
        self.manifest.update(changes)
        try:
            write_json_atomic(manifest_path(self.folder), self.manifest)
        except ResultsUnwritable as exc:
            self._failed(exc)
            raise

    def close(self) -> None:
        try:
            for appender in (self._samples, self._ledger):
                if appender is not None:
                    appender.close()
                    if appender.broken is not None:
                        self._failed(appender.broken)
        finally:
            self._release_reserve()
            if self.lock is not None:
                self.lock.release()


@dataclass(frozen=True, kw_only=True)
class LoadedRun:
    folder: Path
    manifest: dict[str, Any]
    samples: list[Sample]
    #: Problems found while loading (e.g. a torn last line after a crash), for the report.
    warnings: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_jsonl(path: Path, warnings: list[str]) -> Iterator[tuple[int, Any]]:
    torn = torn_path(path)
    if torn.exists():
        count = len(_read_bytes(torn).splitlines())
        warnings.append(
            f"{path.name}: {count} torn line(s) from a crash were set aside in "
            f"{torn.name} when the run was resumed"
        )
    if not path.exists():
        return
    if not path.is_file():
        raise SchemaError(f"{path}: not a regular file")
    lines = _read_bytes(path).split(b"\n")
    last = len(lines) - 1 if lines[-1] else len(lines) - 2  # the last line with content
    for index, raw in enumerate(lines):
        number = index + 1
        if not raw.strip():
            continue
        torn_line = index == len(lines) - 1  # no newline after it
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            if torn_line and index == last:
                warnings.append(f"{path.name}: torn last line {number} skipped (crash mid-write)")
                continue
            raise SchemaError(f"{path}: line {number} is not UTF-8 text") from None
        except ValueError:  # json.JSONDecodeError, and numbers Python cannot hold
            if torn_line and index == last:
                warnings.append(f"{path.name}: torn last line {number} skipped (crash mid-write)")
                continue
            raise SchemaError(f"{path}: line {number} is not JSON") from None
        except RecursionError:
            raise SchemaError(f"{path}: line {number} is nested too deeply") from None
        yield number, obj


def load_manifest(folder: Path) -> dict[str, Any]:
    """A run folder's manifest, validated (:func:`bench.records.check_manifest`)."""
    path = manifest_path(folder)
    if not path.is_file():
        raise SchemaError(f"{folder}: no {MANIFEST}; not a sandbox-bench run folder")
    try:
        manifest = json.loads(_read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError):
        raise SchemaError(f"{path}: not valid JSON") from None
    return check_manifest(manifest, str(path))


def load_run(folder: Path) -> LoadedRun:
    """Load a run folder, refusing unknown schema versions with a clear message."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    warnings: list[str] = []
    samples = []
    for number, obj in _read_jsonl(samples_path(folder), warnings):
        try:
            samples.append(Sample.from_json_dict(obj))
        except SchemaError as exc:
            raise SchemaError(f"{samples_path(folder)}: line {number}: {exc}") from None
    return LoadedRun(folder=folder, manifest=manifest, samples=samples, warnings=warnings)


def load_ledger(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A run's ledger entries (each a JSON object) and load warnings."""
    warnings: list[str] = []
    path = ledger_path(Path(folder))
    entries = []
    for number, obj in _read_jsonl(path, warnings):
        if not isinstance(obj, dict):
            raise SchemaError(f"{path}: line {number} is not a JSON object")
        entries.append(obj)
    return entries, warnings


def resolve_run(ref: str, results_root: Path) -> Path:
    """A run given as a folder path or as a run id under ``results_root``."""
    path = Path(ref)
    if path.is_dir():
        return path
    candidate = run_dir(results_root, ref)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"no run folder {ref!r} (looked in . and {results_root})")
