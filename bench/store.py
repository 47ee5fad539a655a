"""Run folders on disk: results/<run_id>/manifest.json, samples.jsonl, ledger.jsonl.

Paths are built by pure functions (as asv's ``results.py`` does) so every tool agrees on them.
Samples are appended and flushed one line at a time, so a crash loses at most the line being
written; a torn last line is detected on load, skipped and reported, never silently merged.
The manifest is replaced atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.records import SCHEMA_VERSION, Sample, SchemaError, check_schema_version

MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
LEDGER = "ledger.jsonl"


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


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class JsonlAppender:
    """Appends JSON objects as lines, flushed at once; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()


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
    """Creates a run folder and appends to it. Refuses to overwrite an existing run."""

    def __init__(self, folder: Path, manifest: dict[str, Any], *, reopen: bool = False) -> None:
        self.folder = folder
        if reopen:
            self.manifest = manifest
        else:
            folder.mkdir(parents=True, exist_ok=False)
            self.manifest = {"schema_version": SCHEMA_VERSION, **manifest}
        write_json_atomic(manifest_path(folder), self.manifest)
        if reopen:
            _end_torn_line(samples_path(folder))
            _end_torn_line(ledger_path(folder))
        self._samples = JsonlAppender(samples_path(folder))
        self._ledger = JsonlAppender(ledger_path(folder))

    @classmethod
    def reopen(cls, folder: Path, **changes: Any) -> RunWriter:
        """Append to an existing run (``run --resume``); its schema must be this version's."""
        manifest = load_manifest(folder)
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"{folder}: only runs of schema {SCHEMA_VERSION} can be resumed")
        return cls(folder, {**manifest, **changes}, reopen=True)

    def add_sample(self, sample: Sample) -> None:
        self._samples.append(sample.to_json_dict())

    def add_ledger(self, entry: dict[str, Any]) -> None:
        self._ledger.append({"at": utc_now_iso(), **entry})

    def update_manifest(self, **changes: Any) -> None:
        self.manifest.update(changes)
        write_json_atomic(manifest_path(self.folder), self.manifest)

    def close(self) -> None:
        self._samples.close()
        self._ledger.close()


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


def _read_jsonl(path: Path, warnings: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    if torn_path(path).exists():
        count = len(torn_path(path).read_bytes().splitlines())
        warnings.append(
            f"{path.name}: {count} torn line(s) from a crash were set aside in "
            f"{torn_path(path).name} when the run was resumed"
        )
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = not line.endswith("\n")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if torn and number == len(lines):
                warnings.append(f"{path.name}: torn last line {number} skipped (crash mid-write)")
                continue
            raise SchemaError(f"{path}: line {number} is not JSON") from None
        yield number, obj


def load_manifest(folder: Path) -> dict[str, Any]:
    path = manifest_path(folder)
    if not path.is_file():
        raise SchemaError(f"{folder}: no {MANIFEST}; not a sandbox-bench run folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: not UTF-8 text") from None
    if not isinstance(manifest, dict):
        raise SchemaError(f"{path}: not a JSON object but {type(manifest).__name__}")
    check_schema_version(manifest.get("schema_version"), str(path))
    return manifest


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
    warnings: list[str] = []
    entries = [obj for _, obj in _read_jsonl(ledger_path(Path(folder)), warnings)]
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
