"""Columnar copies of a run's samples (Parquet) and per-run summary caches.

``samples.jsonl`` stays the crash-safe source of truth: appended line by line while a run
goes, read by nothing else in a way that could change it. Everything here is derived from it
and may be deleted at any time (``rm -r results/*/cache`` costs one slower read per run)::

    results/<run_id>/cache/samples.parquet           every sample, one row each (FORMAT below)
    results/<run_id>/cache/summary-<by>-w<0|1>-s<seed>.parquet   bench.stats summary rows

**When a cache is used.** Each cache carries, in its Parquet metadata, the key it was built
from: this module's :data:`FORMAT`, the run id, the number of ``resumes`` in the manifest, and
the *source key* of ``samples.jsonl`` -- its size, its modification time in nanoseconds and a
SHA-256 of sampled content (the first and last 64 KiB and 32 blocks of 4 KiB spread evenly
between; the whole file when it is under 1 MiB). A summary cache adds what the summary depends
on: warmups in or out, the seed, the grouping, and a fingerprint of bench/stats.py's source and
the numpy and scipy versions (a changed statistic is never served from an old cache). A cache
whose key differs from the current one is rebuilt, never trusted; a missing, unreadable or
corrupt cache is rebuilt too, silently (it is only slower). Caches are written atomically (a
temporary file renamed into place) and only once the command that read the run accepted it;
a read-only results folder simply gets no cache.

Why a sampled hash and not a full one: hashing every byte costs as much as reading it (about
4 GB for 50 runs of 200,000 samples), which would take the history's cached second pass past
its budget. The sampled key is safe for this file because of how it is written: the harness
only appends (every change of content changes the size), a resume first moves a torn last
line aside (the size changes again) and adds a ``resumes`` entry to the manifest (in the key),
and any write through the file system moves its modification time. Content that changes
without any of these -- same size, modification time restored to the nanosecond, and the 34
sampled blocks untouched -- is deliberate tampering, not an accident a cache must survive.

**Runs that are still running** (manifest status ``running``) are always parsed from their
JSONL and never cached: their file grows while they are read.

**Parsing.** The JSONL is parsed by pyarrow's JSON reader (C++, multithreaded) and checked
against every rule :meth:`bench.records.Sample.from_json_dict` and
:func:`bench.store.load_run` apply (known fields only, required fields present, statuses
known, durations only for ok samples, ...). Anything the fast path cannot prove identical --
a line that is not JSON, an unknown field, a blank line, a carriage return, a value of a
different type than usual -- sends the run through :func:`bench.store.load_run` itself, so a
broken file fails with exactly its message and line number, and an unusual but valid file
loads exactly as before (slower). A torn last line (a crash mid-write) is skipped with the
same warning ``load_run`` gives.

**FORMAT 1 columns.** The fields of :class:`bench.records.Sample` in order, typed as
:data:`SCHEMA` says (strings, int64, bool, float64; null where the record has null), then
``extra``: a struct with one child per key any sample's extra carries (Arrow's type
inference: a key holding integers and fractions becomes float64), null where a sample has no
extras; or, when the extras' types cannot share one struct (a key holding text in one sample
and a number in another), the JSON text of each sample's extras (metadata ``extra_encoding``
says which).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from bench import stats
from bench.records import Sample, Status
from bench.store import load_manifest, load_run, samples_path, torn_path
from bench.workloads import registry

#: Version of the cache layout; a cache of another format is rebuilt.
FORMAT = 1
CACHE_DIR = "cache"
SAMPLES_FILE = "samples.parquet"
META_KEY = b"sandbox_bench"

#: Arrow type of every Sample field except ``extra`` (whose type is inferred per run).
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.int64()),
        ("provider", pa.string()),
        ("workload", pa.string()),
        ("operation", pa.string()),
        ("iteration", pa.int64()),
        ("warmup", pa.bool_()),
        ("concurrency", pa.int64()),
        ("started_at", pa.string()),
        ("duration_s", pa.float64()),
        ("status", pa.string()),
        ("intended_start_s", pa.float64()),
        ("actual_start_s", pa.float64()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("sandbox_id", pa.string()),
        ("location", pa.string()),
    ]
)
#: Fields a record must have (no default in Sample).
REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(Sample)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)
#: Required fields whose null the harness never writes: a null one sends the run through
#: load_run (which tells a missing key, refused, from a null value, accepted).
NON_NULL = tuple(name for name in REQUIRED if name != "duration_s")
#: Columns the frame of :func:`frame_from_table` reads.
FRAME_SOURCE_COLUMNS = (
    "run_id", "sample_id", "provider", "workload", "operation", "iteration", "warmup",
    "concurrency", "status", "duration_s", "error_type", "intended_start_s", "actual_start_s",
    "location", "extra",
)  # fmt: skip

_SCAN_CHUNK = 16 * 2**20
_DURATION_KEY = b'"duration_s":'
_HASH_EDGE = 64 * 2**10
_HASH_BLOCK = 4 * 2**10
_HASH_BLOCKS = 32


class _Fallback(Exception):
    """The fast parser cannot prove its result identical to load_run's: use load_run."""


# -- keys ---------------------------------------------------------------------------------------


def source_key(path: Path) -> dict[str, Any]:
    """Size, modification time (ns) and sampled SHA-256 of ``path`` (see the module
    docstring); ``{"size": None}`` when there is no such file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {"size": None}
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if st.st_size <= 2**20:
            digest.update(fh.read())
        else:
            step = (st.st_size - _HASH_BLOCK) // (_HASH_BLOCKS + 1)
            offsets = [0, *(step * (i + 1) for i in range(_HASH_BLOCKS)), st.st_size - _HASH_EDGE]
            for offset in offsets:
                fh.seek(offset)
                digest.update(fh.read(_HASH_EDGE if offset in (0, offsets[-1]) else _HASH_BLOCK))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sampled_sha256": digest.hexdigest()}


def cache_key(folder: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a samples cache of this run must have been built from."""
    return {
        "format": FORMAT,
        "run_id": str(manifest.get("run_id")),
        "resumes": len(manifest.get("resumes") or ()),
        "samples": source_key(samples_path(folder)),
    }


def stats_fingerprint() -> str:
    """Changes whenever the statistics could: bench/stats.py's source, numpy, scipy."""
    import scipy

    digest = hashlib.sha256(Path(stats.__file__).read_bytes())
    digest.update(f"{np.__version__} {scipy.__version__} {FORMAT}".encode())
    return digest.hexdigest()


def is_running(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("status") == "running"


# -- parsing ------------------------------------------------------------------------------------


def torn_file_warning(path: Path) -> str | None:
    """load_run's warning about torn lines a resume set aside (computed live, never cached)."""
    torn = torn_path(path)
    if not torn.exists():
        return None
    count = len(torn.read_bytes().splitlines())
    return (
        f"{path.name}: {count} torn line(s) from a crash were set aside in "
        f"{torn.name} when the run was resumed"
    )


def empty_table() -> pa.Table:
    return pa.table(
        {f.name: pa.array([], f.type) for f in SCHEMA} | {"extra": pa.nulls(0)},
    )


def _scan(path: Path) -> tuple[int, int, bool, bytes]:
    """(newlines, occurrences of ``"duration_s":``, any carriage return, the bytes after the
    last newline) in one streaming pass."""
    newlines = keys = 0
    carriage = False
    tail = b""
    overlap = len(_DURATION_KEY) - 1
    previous = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_SCAN_CHUNK):
            newlines += chunk.count(b"\n")
            # Matches inside the chunk, then those across its start (no copy of the chunk).
            keys += chunk.count(_DURATION_KEY) + (previous + chunk[:overlap]).count(_DURATION_KEY)
            carriage = carriage or b"\r" in chunk
            previous = chunk[-overlap:]
            cut = chunk.rfind(b"\n")
            tail = chunk[cut + 1 :] if cut >= 0 else tail + chunk
    return newlines, keys, carriage, tail


def _has_field(type_: pa.DataType, name: str) -> bool:
    """True if a struct (at any depth, also inside lists) has a field called ``name``."""
    if pa.types.is_struct(type_):
        return any(f.name == name or _has_field(f.type, name) for f in type_)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _has_field(type_.value_type, name)
    return False


def _parse_fast(path: Path) -> tuple[pa.Table, list[str]]:
    """The samples of ``path`` by pyarrow, or :class:`_Fallback`."""
    if not path.exists() or path.stat().st_size == 0:
        return empty_table(), []
    newlines, keys, carriage, tail = _scan(path)
    if carriage:
        raise _Fallback("carriage return")
    warnings = []
    source: Any = str(path)
    lines = newlines
    if tail.strip():
        try:
            json.loads(tail)
            lines += 1  # a last line without its newline, but complete
        except ValueError:
            # load_run skips a torn last line with this warning; feed the rest only.
            warnings.append(f"{path.name}: torn last line {newlines + 1} skipped (crash mid-write)")
            keys -= tail.count(_DURATION_KEY)
            with path.open("rb") as fh:
                source = pa.BufferReader(fh.read(path.stat().st_size - len(tail)))
    elif tail:
        raise _Fallback("whitespace after the last line")
    if lines == 0:
        return empty_table(), warnings
    try:
        table = pj.read_json(
            source,
            read_options=pj.ReadOptions(block_size=4 * 2**20),
            parse_options=pj.ParseOptions(
                explicit_schema=SCHEMA, unexpected_field_behavior="infer"
            ),
        )
    except Exception as exc:  # noqa: BLE001 - any parse problem: load_run says what it is
        raise _Fallback(f"pyarrow: {exc}") from None
    if table.num_rows != lines:
        raise _Fallback("blank lines or a record across lines")
    names = set(table.column_names)
    if names - set(SCHEMA.names) - {"extra"}:
        raise _Fallback("unknown field")
    for name in NON_NULL:
        if name not in names or table[name].null_count:
            raise _Fallback(f"{name} missing or null")
    extra = table["extra"] if "extra" in names else None
    if extra is not None:
        if not (pa.types.is_struct(extra.type) or pa.types.is_null(extra.type)):
            raise _Fallback("extra is not an object")
        if _has_field(extra.type, "duration_s"):
            raise _Fallback("an extra named duration_s")
    # Every line has the key exactly once (pyarrow refuses a key given twice; extras have no
    # such key, and a quote inside a string is escaped), so a line without it shows here.
    if keys != lines:
        raise _Fallback("a record without duration_s")
    table = _canonical(table)
    if not _valid(table):
        raise _Fallback("a record load_run refuses")
    return table, warnings


def _canonical(table: pa.Table) -> pa.Table:
    """Columns in :data:`SCHEMA` order plus ``extra``; missing optional fields as nulls, an
    extras struct without fields as nulls (Parquet cannot store a struct without fields)."""
    n = table.num_rows
    columns = {
        f.name: (table[f.name] if f.name in table.column_names else pa.nulls(n, f.type))
        for f in SCHEMA
    }
    extra = table["extra"] if "extra" in table.column_names else pa.nulls(n)
    if pa.types.is_struct(extra.type) and extra.type.num_fields == 0:
        extra = pa.nulls(n)
    columns["extra"] = extra
    return pa.table(columns)


def _valid(table: pa.Table) -> bool:
    """The rules of Sample.__post_init__, vectorised."""
    status = table["status"]
    if not pc.all(pc.is_in(status, value_set=pa.array([str(s) for s in Status]))).as_py():
        return False
    ok = pc.equal(status, str(Status.OK))
    duration = table["duration_s"]
    has_duration = pc.is_valid(duration)
    finite = pc.and_(pc.is_finite(pc.fill_null(duration, -1.0)), pc.greater_equal(
        pc.fill_null(duration, -1.0), 0.0))  # fmt: skip
    ok_good = pc.and_(pc.and_(has_duration, finite), pc.is_null(table["error_type"]))
    if not pc.all(pc.or_(pc.invert(ok), ok_good)).as_py():
        return False
    if pc.any(pc.and_(pc.invert(ok), has_duration)).as_py():
        return False
    failed = pc.is_in(status, value_set=pa.array([str(Status.ERROR), str(Status.TIMEOUT)]))
    error_type = pc.fill_null(table["error_type"], "")
    return not pc.any(pc.and_(failed, pc.equal(error_type, ""))).as_py()


def table_from_samples(samples: Sequence[Sample]) -> tuple[pa.Table, str]:
    """The FORMAT 1 table of Sample objects, extras as JSON text (encoding "json").

    Used for runs the fast path hands to load_run: such runs are unusual, and JSON text keeps
    their extras exactly (Arrow's conversion of Python objects would, for instance, turn a
    ``false`` among numbers into 0.0)."""
    columns: dict[str, Any] = {}
    for f in SCHEMA:
        values = [getattr(s, f.name) for s in samples]
        if f.name == "status":
            values = [str(v) for v in values]
        columns[f.name] = pa.array(values, f.type)
    columns["extra"] = pa.array(
        [json.dumps(s.extra, separators=(",", ":"), default=str) if s.extra else None
         for s in samples],
        pa.string(),
    )  # fmt: skip
    return pa.table(columns), "json"


# -- the columnar run ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class ColumnarRun:
    """A run's manifest and its samples as an Arrow table (FORMAT 1 columns)."""

    folder: Path
    manifest: dict[str, Any]
    table: pa.Table
    #: As :attr:`bench.store.LoadedRun.warnings`.
    warnings: list[str]
    #: "cache", "arrow" (parsed by pyarrow) or "load_run" (parsed by bench.store).
    source: str
    extra_encoding: str = "struct"
    _pending: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    def frame(self) -> pd.DataFrame:
        """The frame :func:`bench.stats.samples_frame` makes of the same samples."""
        return frame_from_table(self.table, self.extra_encoding)

    def save_cache(self) -> bool:
        """Write the Parquet copy if this load parsed the JSONL and may cache it; True if
        written. Failure to write (read-only folder, full disk) is not an error."""
        if self._pending is None:
            return False
        key, warnings = self._pending["key"], self._pending["warnings"]
        self._pending = None
        meta = {"key": key, "warnings": warnings, "extra_encoding": self.extra_encoding}
        return _write_parquet(self.table, cache_dir(self.folder) / SAMPLES_FILE, meta)


def cache_dir(folder: Path) -> Path:
    return Path(folder) / CACHE_DIR


def _write_parquet(table: pa.Table, path: Path, meta: Mapping[str, Any]) -> bool:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        metadata = {**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="zstd")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True
    except (OSError, pa.ArrowException):
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - a cache we cannot read is no cache
        return None
    return meta if isinstance(meta, dict) else None


def _read_cached_table(
    path: Path, key: Mapping[str, Any], columns: Sequence[str] | None
) -> tuple[pa.Table, dict[str, Any]] | None:
    meta = _read_meta(path)
    if meta is None or meta.get("key") != key:
        return None
    try:
        table = pq.read_table(path, columns=list(columns) if columns else None)
    except Exception:  # noqa: BLE001 - corrupt: rebuild
        return None
    return table, meta


def load(folder: Path, *, columns: Sequence[str] | None = None, save: bool = False) -> ColumnarRun:
    """A run's samples as Arrow: from its Parquet cache when that matches, else parsed from
    the JSONL (then cached by :meth:`ColumnarRun.save_cache`, or at once with ``save``).

    ``columns`` limits what is read from a cache (a parsed run has them all). Raises what
    :func:`bench.store.load_run` raises for a run it refuses.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    path = samples_path(folder)
    live = [w for w in [torn_file_warning(path)] if w]
    running = is_running(manifest)
    key = cache_key(folder, manifest)
    if not running:
        found = _read_cached_table(cache_dir(folder) / SAMPLES_FILE, key, columns)
        if found is not None:
            table, meta = found
            return ColumnarRun(
                folder=folder,
                manifest=manifest,
                table=table,
                warnings=live + list(meta.get("warnings") or []),
                source="cache",
                extra_encoding=str(meta.get("extra_encoding") or "struct"),
            )
    try:
        table, warnings = _parse_fast(path)
        encoding, how = "struct", "arrow"
    except (_Fallback, UnicodeError):  # pyarrow reads a key that is not UTF-8, then cannot name it
        run = load_run(folder)  # raises exactly what it always raised
        table, encoding = table_from_samples(run.samples)
        warnings = [w for w in run.warnings if w not in live]
        how = "load_run"
        del run
    result = ColumnarRun(
        folder=folder,
        manifest=manifest,
        table=table,
        warnings=live + warnings,
        source=how,
        extra_encoding=encoding,
    )
    # Cache only what cannot be growing, and only if the file did not change while parsed.
    if not running and source_key(path) == key["samples"]:
        result._pending = {"key": key, "warnings": warnings}
        if save:
            result.save_cache()
    return result


def write_at_finalize(folder: Path) -> bool:
    """The Parquet copy of a run that just ended (bench/session.py calls it once the manifest
    is final): only for runs that completed or stopped at their budget (an interrupted run's
    owner is waiting; its copy is made by the first command that reads it). Never raises: a
    run whose copy cannot be made is read from its JSONL, as before."""
    try:
        manifest = load_manifest(Path(folder))
        if manifest.get("status") not in ("completed", "budget_exhausted"):
            return False
        return load(Path(folder), save=True).source != "cache"
    except Exception:  # noqa: BLE001 - a cache is never worth failing a finished run for
        return False


# -- the frame ----------------------------------------------------------------------------------


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _categorical(column: pa.ChunkedArray | pa.Array, categories: Sequence[str] | None = None):
    """As ``pd.Categorical(list_of_values)`` (categories sorted) or with fixed categories."""
    arr = _array(column)
    n = len(arr)
    if pa.types.is_null(arr.type):
        arr = pa.nulls(n, pa.string())
    if categories is None:
        categories = sorted(pc.unique(arr).drop_null().to_pylist())
        if not categories:  # what pd.Categorical makes of nothing but None
            return pd.Categorical.from_codes(
                np.full(n, -1, np.int8), categories=pd.Index([], dtype="float64")
            )
    codes = pc.fill_null(pc.index_in(arr, value_set=pa.array(categories, pa.string())), -1)
    return pd.Categorical.from_codes(
        codes.to_numpy(zero_copy_only=False), categories=pd.Index(list(categories))
    )


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = _array(column)
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _ints(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(_array(column).to_numpy(zero_copy_only=False), dtype=np.int64)


def _python_values(arr: pa.Array) -> list[Any]:
    """The values as Python objects, None where null; only the valid rows are converted."""
    n = len(arr)
    out: list[Any] = [None] * n
    valid = np.flatnonzero(arr.is_valid().to_numpy(zero_copy_only=False))
    for i, value in zip(valid.tolist(), arr.take(pa.array(valid)).to_pylist(), strict=True):
        out[i] = value
    return out


def _extra_from_child(extra: Any, child: pa.Array, n: int) -> Any:
    """One declared extra's frame column from its struct child (the rules of
    :func:`bench.stats.extra_column`, vectorised where the Arrow type makes them simple)."""
    kind, type_ = extra.type, child.type
    numeric = pa.types.is_integer(type_) or pa.types.is_floating(type_)
    if kind in (int, float):
        return _floats(child) if numeric else np.full(n, np.nan)
    if kind is bool:
        if pa.types.is_boolean(type_):
            values = child.fill_null(False).to_numpy(zero_copy_only=False)
            mask = child.is_null().to_numpy(zero_copy_only=False)
            return pd.arrays.BooleanArray(np.asarray(values, bool), np.asarray(mask, bool))
        return pd.array([None] * n, dtype="boolean")
    if kind is str and (pa.types.is_string(type_) or pa.types.is_null(type_)):
        return _categorical(child)
    return stats.extra_column(extra, _python_values(child), n)


def frame_from_table(table: pa.Table, extra_encoding: str = "struct") -> pd.DataFrame:
    """The frame of :func:`bench.stats.samples_frame` (same columns, dtypes and values) from a
    FORMAT 1 table, without a Python object per sample."""
    n = table.num_rows
    if n == 0:
        return stats.samples_frame([])
    intended, actual = _floats(table["intended_start_s"]), _floats(table["actual_start_s"])
    columns: dict[str, Any] = {
        "run_id": _categorical(table["run_id"]),
        "sample_id": _ints(table["sample_id"]),
        "provider": _categorical(table["provider"]),
        "workload": _categorical(table["workload"]),
        "operation": _categorical(table["operation"]),
        "iteration": _ints(table["iteration"]),
        "warmup": np.asarray(_array(table["warmup"]).to_numpy(zero_copy_only=False), np.bool_),
        "concurrency": _ints(table["concurrency"]),
        "status": _categorical(table["status"], [str(s) for s in Status]),
        "duration_s": _floats(table["duration_s"]),
        "error_type": _categorical(table["error_type"]),
        "schedule_lag_s": actual - intended,  # NaN where either is missing
    }
    extra = _array(table["extra"]) if "extra" in table.column_names else pa.nulls(n)
    decoded: list[dict[str, Any]] | None = None
    absent: np.ndarray | None = None
    if extra_encoding == "json" and pa.types.is_string(extra.type):
        decoded = [json.loads(v) if v else {} for v in _python_values(extra)]
    for declared in registry.declared_extras():
        if not declared.column:
            continue
        key = declared.name
        if decoded is not None:
            present = any(key in e for e in decoded)
            values = [e.get(key) for e in decoded] if present else None
            columns[key] = stats.extra_column(declared, values, n)
        elif pa.types.is_struct(extra.type) and extra.type.get_field_index(key) >= 0:
            child = extra.field(key)
            if extra.null_count:  # a null struct row hides its children
                child = pc.if_else(extra.is_valid(), child, pa.nulls(n, child.type))
            columns[key] = _extra_from_child(declared, child, n)
        elif declared.type in (int, float):
            # No sample has the key: one all-NaN array serves every such column (read-only,
            # so a write through one column fails instead of changing the others), sparing
            # 8 bytes a sample per column.
            if absent is None:
                absent = np.full(n, np.nan)
                absent.flags.writeable = False
            columns[key] = absent
        else:
            columns[key] = stats.extra_column(declared, None, n)
    columns["location"] = _categorical(table["location"])
    # copy=False: the arrays are new already; consolidating them into blocks would double
    # the frame's memory for a moment.
    return pd.DataFrame(columns, copy=False)


# -- summaries ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    folder: Path
    manifest: dict[str, Any]
    #: bench.stats.SUMMARY_COLUMNS, plus ``location`` when grouped by it.
    summary: pd.DataFrame
    warnings: tuple[str, ...]
    #: "summary cache" when read from it, else where the samples came from (ColumnarRun.source).
    source: str
    samples: int


def _summary_path(folder: Path, by_location: bool, include_warmups: bool, seed: int) -> Path:
    by = "location" if by_location else "operation"
    return cache_dir(folder) / f"summary-{by}-w{int(include_warmups)}-s{seed}.parquet"


def summarize_frame(
    frame: pd.DataFrame,
    *,
    include_warmups: bool = False,
    seed: int = 0,
    location: str | None = None,
) -> pd.DataFrame:
    """bench.stats summary rows; with ``location`` (the run's default location, for samples
    that carry none), one row per (provider, workload, operation, location)."""
    if location is None:
        return stats.summarize(frame, include_warmups=include_warmups, seed=seed)
    frame = frame.assign(
        location=pd.Categorical(
            frame["location"].astype(object).where(frame["location"].notna(), location)
        )
    )
    keys = (*stats.KEYS, "location")
    rows = []
    for key, group in stats.groups(frame, include_warmups=include_warmups, keys=keys).items():
        rows.append({**stats.summarize_group(group, seed=seed), "location": key[3]})
    out = pd.DataFrame(rows, columns=[*stats.SUMMARY_COLUMNS, "location"])
    for column in ("attempts", "n", "failures", "unsupported", "skipped"):
        out[column] = out[column].astype(np.int64)
    return out


def run_location(manifest: Mapping[str, Any]) -> str:
    """Where the run's client was (its manifest's ``client.location``), "" when not said."""
    return str((manifest.get("client") or {}).get("location") or "")


def _summary_key(folder: Path, manifest: Mapping[str, Any], *, include_warmups: bool,
                 seed: int, by_location: bool) -> dict[str, Any]:  # fmt: skip
    return {
        **cache_key(folder, manifest),
        "include_warmups": bool(include_warmups),
        "seed": int(seed),
        "by_location": bool(by_location),
        "stats": stats_fingerprint(),
    }


def cached_summary(
    folder: Path, *, include_warmups: bool = False, seed: int = 0, by_location: bool = False
) -> RunSummary | None:
    """A run's summary from its summary cache, or None when there is none that matches (or
    the run is still running). Raises what :func:`bench.store.load_manifest` raises."""
    from bench.workloads.task import register_from_manifest

    folder = Path(folder)
    manifest = load_manifest(folder)
    if is_running(manifest):
        return None
    key = _summary_key(
        folder, manifest, include_warmups=include_warmups, seed=seed, by_location=by_location
    )
    found = _read_cached_table(_summary_path(folder, by_location, include_warmups, seed), key, None)
    if found is None:
        return None
    register_from_manifest(manifest)  # its tasks' steps: their order
    table, meta = found
    live = [w for w in [torn_file_warning(samples_path(folder))] if w]
    return RunSummary(
        folder=folder,
        manifest=manifest,
        summary=_sorted(table.to_pandas()),
        warnings=tuple(live + list(meta.get("warnings") or [])),
        source="summary cache",
        samples=int(meta.get("samples", 0)),
    )


def load_summary(
    folder: Path,
    *,
    include_warmups: bool = False,
    seed: int = 0,
    by_location: bool = False,
    save: bool = True,
) -> RunSummary:
    """A run's summary rows, from its summary cache when that matches (see the module
    docstring), else computed from its samples (and cached unless ``save`` is False)."""
    from bench.workloads.task import register_from_manifest

    cached = cached_summary(
        folder, include_warmups=include_warmups, seed=seed, by_location=by_location
    )
    if cached is not None:
        return cached
    folder = Path(folder)
    manifest = load_manifest(folder)
    register_from_manifest(manifest)  # its tasks' steps: order, extras
    path = samples_path(folder)
    key = _summary_key(
        folder, manifest, include_warmups=include_warmups, seed=seed, by_location=by_location
    )
    live = [w for w in [torn_file_warning(path)] if w]
    run = load(folder, columns=FRAME_SOURCE_COLUMNS)
    frame = run.frame()
    summary = summarize_frame(
        frame,
        include_warmups=include_warmups,
        seed=seed,
        location=run_location(manifest) if by_location else None,
    )
    stored = [w for w in run.warnings if w not in live]
    if save and not is_running(manifest) and source_key(path) == key["samples"]:
        run.save_cache()
        meta = {"key": key, "warnings": stored, "samples": len(frame)}
        target = _summary_path(folder, by_location, include_warmups, seed)
        _write_parquet(pa.Table.from_pandas(summary, preserve_index=False), target, meta)
    return RunSummary(
        folder=folder,
        manifest=manifest,
        summary=summary,
        warnings=tuple(run.warnings),
        source=run.source,
        samples=len(frame),
    )


def _sorted(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows in today's display order (the registry may have changed since caching)."""
    if summary.empty:
        return summary
    order = sorted(
        range(len(summary)),
        key=lambda i: (
            stats.sort_key(
                summary["provider"].iat[i], summary["workload"].iat[i], summary["operation"].iat[i]
            ),
            str(summary["location"].iat[i]) if "location" in summary else "",
        ),
    )
    return summary.iloc[order].reset_index(drop=True)


# -- export -------------------------------------------------------------------------------------

#: Columns of an export file: every Sample field (``extra`` as JSON text), then what the run's
#: manifest says of the sample's context.
EXPORT_SCHEMA = pa.schema(
    [
        *SCHEMA,
        ("extra", pa.string()),
        ("run_started_at", pa.string()),
        ("run_status", pa.string()),
        ("client_location", pa.string()),
        ("client_host", pa.string()),
        ("harness_version", pa.string()),
        ("sdk_versions", pa.string()),
    ]
)


def _extras_json(table: pa.Table, encoding: str) -> pa.Array:
    extra = _array(table["extra"])
    if encoding == "json" and pa.types.is_string(extra.type):
        return extra
    if pa.types.is_null(extra.type):
        return pa.nulls(len(extra), pa.string())
    # Arrow gives every struct row every child; a key whose value is null is left out.
    values = _python_values(extra)
    return pa.array(
        [None if v is None else json.dumps({k: x for k, x in v.items() if x is not None},
                                           separators=(",", ":"), default=str)
         for v in values],
        pa.string(),
    )  # fmt: skip


def export_table(run: ColumnarRun) -> pa.Table:
    """One run's rows of an export file (:data:`EXPORT_SCHEMA`)."""
    n = run.table.num_rows
    manifest = run.manifest
    providers = _array(run.table["provider"])
    sdk_by_provider = {
        pid: json.dumps(((entry or {}).get("environment") or {}).get("sdk_versions") or {},
                        sort_keys=True)
        for pid, entry in (manifest.get("providers") or {}).items()
    }  # fmt: skip
    sdk = pc.fill_null(
        pc.take(
            pa.array(list(sdk_by_provider.values()) or [None], pa.string()),
            pc.index_in(providers, value_set=pa.array(list(sdk_by_provider) or [""], pa.string())),
        ),
        "{}",
    )

    def constant(value: Any) -> pa.Array:
        return pa.array([None if value is None else str(value)] * n, pa.string())

    client = manifest.get("client") or {}
    columns = {f.name: run.table[f.name] for f in SCHEMA}
    columns |= {
        "extra": _extras_json(run.table, run.extra_encoding),
        "run_started_at": constant(manifest.get("started_at")),
        "run_status": constant(manifest.get("status")),
        "client_location": constant(client.get("location")),
        "client_host": constant(client.get("hostname")),
        "harness_version": constant((manifest.get("harness") or {}).get("version")),
        "sdk_versions": sdk,
    }
    return pa.table(columns, schema=EXPORT_SCHEMA)


def export(folders: Iterable[Path], out: Path) -> int:
    """Every sample of ``folders`` in one Parquet file (:data:`EXPORT_SCHEMA`), run by run so
    memory holds one run at a time; written to a temporary file and renamed. Returns the
    number of rows."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rows = 0
    seen: set[str] = set()
    try:
        with pq.ParquetWriter(tmp, EXPORT_SCHEMA, compression="zstd") as writer:
            for folder in folders:
                run = load(folder)
                if run.run_id in seen:
                    raise ValueError(f"run {run.run_id} given twice")
                seen.add(run.run_id)
                writer.write_table(export_table(run))
                rows += run.table.num_rows
                run.save_cache()
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return rows


__all__ = [
    "CACHE_DIR",
    "EXPORT_SCHEMA",
    "FORMAT",
    "FRAME_SOURCE_COLUMNS",
    "SCHEMA",
    "ColumnarRun",
    "RunSummary",
    "cache_key",
    "export",
    "frame_from_table",
    "load",
    "load_summary",
    "source_key",
    "summarize_frame",
    "table_from_samples",
]
