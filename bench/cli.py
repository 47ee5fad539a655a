"""The ``sandbox-bench`` command line: argparse, printing and exit codes, nothing else.

A run's life is :mod:`bench.session`'s; settings and their flags are declared in
:mod:`bench.config` (and :class:`bench.cost.SessionScenario`). Nothing imports this module.

Exit codes: 0 success; 1 the run or a command failed at run time; 2 bad input (configuration,
flags, credentials, unreadable result folders, a run another process is writing) -- reported
in one line, with nothing created; 3 ``compare`` found a regression; 130 interrupted by Ctrl-C
or SIGTERM (the run cleaned up within its grace; what it could not destroy is named in the
manifest and on stderr for ``sandbox-bench reap``). Whatever happens, the user reads lines,
never a traceback (``SANDBOX_BENCH_TRACEBACK=1`` prints one after the line, for debugging).

Signals: from the moment this module starts loading until a run's event loop takes over, a
SIGINT or SIGTERM exits 130 at once with one line (nothing has been created yet). During a
run the first signal interrupts it (bench/session.py: stop scheduling, cancel what is in
flight, clean up within the grace), the second ends the grace, a third exits at once. The
other commands stop on the first signal with exit 130.
"""

from __future__ import annotations

import os
import signal
import sys

#: What the start-up signal handler says before it exits.
_STARTING = "sandbox-bench: interrupted while starting; nothing was created\n"


def _exit_on_signal(signum: int, frame: object) -> None:
    """Start-up: nothing exists yet that needs cleaning, so leave at once, in one line."""
    os.write(2, _STARTING.encode())
    os._exit(130)


def _program() -> bool:
    """Whether this module is loading as the program (``python -m bench``, the console
    script) rather than imported by a test or a tool that keeps its own signal handling."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (
        getattr(spec, "name", None) == "bench.__main__"
        or os.path.basename(sys.argv[0] if sys.argv else "") == "sandbox-bench"
    )


# Before the imports below (half a second of them): a signal now must not print a traceback.
if _program():
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, _exit_on_signal)

import argparse
import asyncio
import contextlib
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.config import (
    ConfigError,
    PricingSettings,
    RunConfig,
    build_config,
    check_input_file,
    check_output_folder,
    config_from_manifest,
    load_pricing_catalog,
    load_toml,
)
from bench.cost import SessionScenario
from bench.emulators import cli as emulators_cli
from bench.records import RunStatus, SchemaError
from bench.session import Executor, LocalExecutor, NoSpace, Session, UsageError
from bench.store import ResultsUnwritable, RunLocked, load_manifest, resolve_run
from bench.terminal import (
    Column,
    Format,
    Grid,
    TerminalProgress,
    print_raw,
    print_table,
    print_tables,
    to_csv,
    to_json,
)
from providers import REGISTRY, provider_class
from providers.base import sdk_versions
from providers.settings import Declared, SettingError, declared, parse_value, setting

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: The config ``run`` reads when no --config is given, if it exists.
DEFAULT_CONFIG = Path("bench.toml")

console = Console()
err_console = Console(stderr=True)


# -- flags from declarations -------------------------------------------------------------------


def _setting_type(decl: Declared) -> Callable[[str], Any]:
    """argparse ``type=`` for a declared setting: its parser, its one-line refusal."""

    def convert(text: str) -> Any:
        try:
            return parse_value(decl, text, from_text=True)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = decl.name
    return convert


#: Placeholders of flags whose type alone says too little.
_METAVARS = {"cluster": "tcp://HOST:PORT|local[:K]", "location": "LABEL", "output": "DIR"}


def _metavar(decl: Declared) -> str:
    if decl.name in _METAVARS:
        return _METAVARS[decl.name]
    kind = decl.kind
    if getattr(kind, "__origin__", None) is tuple:
        return "NAME,..."
    if kind is Path:
        return "PATH"
    if kind is int:
        return "N"
    if kind is float:
        return {"s": "SECONDS", "USD": "USD", "h": "HOURS"}.get(decl.info.unit, "X")
    return "TEXT"


def _help(decl: Declared, *, default: str | None = None) -> str:
    """One help line from the declaration; ``default`` replaces the declared default."""
    text = decl.describe().removesuffix("; default ")  # an empty default says nothing
    if default is not None:
        text = text.split("; default ")[0] + f"; default {default}"
    return text.replace("%", "%%")  # argparse formats help with %


def _add_setting_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    flag: Callable[[Declared], str | None],
    dest: Callable[[Declared], str],
    default: str | None = None,
) -> list[str]:
    """One option per declared key of ``cls`` that ``flag`` names; the dests added."""
    dests = []
    for decl in declared(cls):
        name = flag(decl)
        if name is None:
            continue
        parser.add_argument(
            name,
            dest=dest(decl),
            type=_setting_type(decl),
            metavar=_metavar(decl),
            default=None,
            help=_help(decl, default=default),
        )
        dests.append(dest(decl))
    return dests


#: ``run`` flags that configure a new run: the [run] keys declared with a flag. None of them
#: (nor --config) makes sense with --resume, which takes the run's own configuration.
RUN_FLAGS = [d.name for d in declared(RunConfig) if d.info.flag]


@dataclass(frozen=True, kw_only=True)
class CompareSettings:
    """``compare``'s own setting."""

    threshold: float = setting(
        0.10,
        help="a median slower by more than this fraction is a regression",
        minimum=0,
        maximum=100,
        flag="--threshold",
    )


# -- run ---------------------------------------------------------------------------------------


def _config_source(given: str | None) -> tuple[Path | None, str]:
    """The config file to read and the line that says so."""
    if given is None:
        if DEFAULT_CONFIG.is_file():
            return DEFAULT_CONFIG, (
                f"config: {DEFAULT_CONFIG} (found in the current folder; --config none to run "
                "without it)"
            )
        return None, "config: none (no ./bench.toml here; defaults and flags only)"
    if given.strip().lower() == "none":
        return None, "config: none (defaults and flags only)"
    return Path(given), f"config: {given}"


def _executor(config: RunConfig) -> Executor:
    if config.cluster:  # the iterations run on Dask workers; Dask is imported only then
        from bench.cluster import ClusterExecutor

        return ClusterExecutor(config)
    return LocalExecutor(config)


def _execute(session: Session) -> int:
    """Run the session on an event loop of its own, with its signal handlers; the exit code."""
    signals = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def on_signal(signum: int) -> None:
        global _INTERRUPTED
        _INTERRUPTED = True  # what cancelled SDK calls leave behind is not news now
        name = signals.get(signum, str(signum))
        if session.interrupts == 0:
            err_console.print(
                f"{name}: stopping the run; cleaning up for at most {session.grace.grace_s:g} s "
                "(again to stop cleaning up)",
                markup=False,
                highlight=False,
            )
        elif session.interrupts == 1:
            err_console.print(
                f"{name} again: cleanup stops now; what is still alive is left for "
                "`sandbox-bench reap`",
                markup=False,
                highlight=False,
            )
        else:
            _leave(EXIT_INTERRUPTED, f"{name} a third time: leaving now; run `sandbox-bench reap "
                   "--all` to destroy what the run left")  # fmt: skip
        session.interrupt()

    async def run() -> tuple[Path, RunStatus]:
        loop = asyncio.get_running_loop()

        def starting() -> None:  # the run is about to create something: interrupts go to it
            for sig in signals:
                loop.add_signal_handler(sig, on_signal, sig)

        session.starting = starting
        try:
            return await session.run()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
                if _program():  # from here the program only prints and exits
                    signal.signal(sig, _exit_after_run)

    loop_runner = asyncio.Runner()
    try:
        folder, status = loop_runner.run(run())
    except asyncio.CancelledError:
        code = EXIT_INTERRUPTED
        _say_interrupted(session)
    else:
        code = EXIT_OK if status is RunStatus.COMPLETED else EXIT_FAILED
        console.print(f"results: {folder}")
        if status is not RunStatus.COMPLETED:
            err_console.print(
                f"the run ended {status}"
                + (f": {session.failure}" if session.failure else "")
                + (f"; see {folder / 'manifest.json'}" if folder else ""),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        _say_left(session)
    finally:
        _close_loop(loop_runner, bounded=session.interrupted)
    return code


def _say_interrupted(session: Session) -> None:
    if session.left:
        _say_left(session)
    elif session.folder is not None:
        err_console.print(
            f"interrupted: everything the run created was destroyed; resume with "
            f"`sandbox-bench run --resume {session.folder}`",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        err_console.print("interrupted before the run started; nothing was created")


def _say_left(session: Session) -> None:
    """Name what is still alive, for reap (the manifest's left_alive has all of it)."""
    if not session.left:
        return
    shown = ", ".join(f"{e['provider']} {e['kind']} {e['id']}" for e in session.left[:8])
    more = f" and {len(session.left) - 8} more" if len(session.left) > 8 else ""
    where = session.folder if session.folder is not None else "the run"
    err_console.print(
        f"still alive after cleanup: {shown}{more}; destroy with `sandbox-bench reap {where}`",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _exit_after_run(signum: int, frame: object) -> None:
    _leave(EXIT_INTERRUPTED, "interrupted while finishing")


def _leave(code: int, line: str) -> None:
    """Exit now: flush what was printed, say one line, skip waiting for anything."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os.write(2, (line + "\n").encode())
    os._exit(code)


#: How long closing the event loop may wait for leftover tasks after an interrupt.
CLOSE_WAIT_S = 0.5


def _close_loop(loop_runner: asyncio.Runner, *, bounded: bool) -> None:
    """Close the run's loop. After an interrupt, bounded: tasks still running get a moment to
    end, and threads a provider left blocked (a hung SDK call) are not waited for; the
    program then exits without the interpreter's own teardown (:data:`_EXIT_AT_ONCE`),
    which SDKs can hold up for seconds."""
    if not bounded:
        loop_runner.close()
        return
    global _EXIT_AT_ONCE
    _EXIT_AT_ONCE = True
    loop = loop_runner.get_loop()
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=CLOSE_WAIT_S))
        executor = getattr(loop, "_default_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
    finally:
        with contextlib.suppress(Exception):
            loop.close()


#: Set when an interrupted run is over: everything is cleaned, written and closed, so the
#: program leaves with os._exit once it has printed its last line (main).
_EXIT_AT_ONCE = False
#: Set by the first interrupt of a run.
_INTERRUPTED = False


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return _resume(args)
    path, line = _config_source(args.config)
    file_data = load_toml(path) if path is not None else {}
    config = build_config(file_data, {name: getattr(args, name) for name in RUN_FLAGS})
    session = Session(
        config,
        _executor(config),
        config_file=path,
        announce=line,
        progress=TerminalProgress(err_console),
    )
    return _execute(session)


def _resume(args: argparse.Namespace) -> int:
    """``run --resume RUN``: finish a crashed or interrupted run into the same folder."""
    given = [name for name in ("config", *RUN_FLAGS) if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"--resume takes the run's own configuration; drop {flags}")
    folder = resolve_run_ref(args.resume, Path("results"))
    manifest = load_manifest(folder)
    if manifest.get("status") in (str(RunStatus.COMPLETED), str(RunStatus.BUDGET_EXHAUSTED)):
        raise UsageError(f"run {manifest.get('run_id')} is {manifest['status']}; nothing to resume")
    config = config_from_manifest(manifest, folder)
    session = Session(
        config,
        _executor(config),
        resume=folder,
        announce=f"config: the manifest of run {manifest.get('run_id')} (resuming {folder})",
        progress=TerminalProgress(err_console),
    )
    return _execute(session)


# -- the other commands ------------------------------------------------------------------------


def provider_records() -> list[dict[str, Any]]:
    """What ``providers`` lists: one record per registered provider, raw values."""
    records = []
    for provider_id in sorted(REGISTRY):
        record: dict[str, Any] = {"provider": provider_id}
        try:
            cls = provider_class(provider_id)
        except ImportError as exc:
            records.append(
                {**record, "installed": False, "error": f"SDK not installed ({exc.name})"}
            )
            continue
        missing = [n for n in cls.required_env if not os.environ.get(n)]
        record.update(
            installed=True,
            sdk=sdk_versions(cls.sdk_packages),
            credentials=list(cls.required_env),
            credentials_missing=missing,
        )
        try:
            caps = cls({}).capabilities()
        except Exception as exc:  # noqa: BLE001 - show why, do not fail the listing
            records.append({**record, "error": f"capabilities unavailable: {exc}"})
            continue
        record.update(
            operations=sorted(str(o) for o in caps.operations),
            isolation=caps.isolation,
            checkpoint_captures=str(caps.checkpoint_captures or "") or None,
            restore_target=str(caps.restore_target or "") or None,
            pause_kind=str(caps.pause_kind),
            scratch_dir=caps.scratch_dir,
            unsupported=dict(caps.unsupported),
        )
        records.append(record)
    return records


def _words(value: str | None) -> str:
    """An enum value as words ("new_sandbox" -> "new sandbox")."""
    return value.replace("_", " ") if value else "–"


def providers_grid(records: list[dict[str, Any]]) -> Grid:
    rows = []
    for r in records:
        if "sdk" not in r:
            rows.append((r["provider"], r["error"], "", "", "", "", "", ""))
            continue
        sdk = ", ".join(f"{k} {v or 'missing'}" for k, v in r["sdk"].items()) or "built in"
        if not r["credentials"]:
            creds = "not needed"
        elif r["credentials_missing"]:
            creds = "missing " + ", ".join(r["credentials_missing"])
        else:
            creds = "set"
        if "isolation" not in r:
            rows.append((r["provider"], sdk, creds, r["error"], "", "", "", ""))
            continue
        unsupported = "\n".join(f"{op}: {why}" for op, why in r["unsupported"].items())
        rows.append(
            (
                r["provider"],
                sdk,
                creds,
                _words(r["checkpoint_captures"]),
                _words(r["restore_target"]),
                _words(r["pause_kind"]),
                r["isolation"],
                unsupported or "–",
            )
        )
    return Grid(
        title="sandbox providers",
        columns=(
            Column(name="provider"),
            Column(name="SDK"),
            Column(name="credentials"),
            Column(name="checkpoint captures"),
            Column(name="restore into"),
            Column(name="pause"),
            Column(name="isolation", min_width=28),
            Column(name="not supported", min_width=28),
        ),
        rows=tuple(rows),
    )


def cmd_providers(args: argparse.Namespace) -> int:
    records = provider_records()
    if args.format is not Format.TABLE:
        print_raw(console, to_csv(records) if args.format is Format.CSV else to_json(records))
        return EXIT_OK
    print_table(console, providers_grid(records))
    return EXIT_OK


def _percentile_text(row: dict[str, Any], column: str) -> str:
    """A percentile for the terminal: withheld ones say how many samples they need."""
    from bench.stats import NOT_ENOUGH, format_cell, min_n_for

    text = format_cell(row, column)
    if text == NOT_ENOUGH:
        return f"n<{min_n_for(float(column.removeprefix('p')))}"
    return text


def show_grids(rows: list[dict[str, Any]]) -> list[Grid]:
    """One table per workload (registry order), operations in declared order, then providers."""
    from bench.stats import format_cell
    from bench.workloads import registry

    by_workload: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_workload.setdefault(row["workload"], []).append(row)
    grids = []
    for workload in sorted(by_workload, key=registry.workload_rank):
        ordered = sorted(
            by_workload[workload],
            key=lambda r: (registry.operation_rank(workload, r["operation"]), r["provider"]),
        )
        cells = tuple(
            (
                r["operation"],
                r["provider"],
                str(r["n"]),
                format_cell(r, "failures").replace(" %", "%"),
                _percentile_text(r, "p50"),
                _percentile_text(r, "p95"),
                _percentile_text(r, "p99"),
            )
            for r in ordered
        )
        grids.append(
            Grid(
                title=workload,
                columns=(
                    Column(name="operation", abbreviate=True),
                    Column(name="provider"),
                    Column(name="n", justify="right", wrap=False),
                    Column(name="failures", justify="right", wrap=False),
                    Column(name="p50", justify="right", wrap=False),
                    Column(name="p95", justify="right", wrap=False),
                    Column(name="p99", justify="right", wrap=False),
                ),
                rows=cells,
            )
        )
    return grids


def cmd_show(args: argparse.Namespace) -> int:
    from bench.columnar import load_summary

    folder = resolve_run_ref(args.run, args.results)
    # From the run's summary cache when it matches its samples (bench/columnar.py); loading
    # also registers the run's configured tasks (their steps' order).
    run = load_summary(folder, include_warmups=args.include_warmups)
    from bench.stats import SUMMARY_COLUMNS  # after the load: a bad folder fails fast

    for warning in run.warnings:
        err_console.print(Text(f"warning: {warning}"), soft_wrap=True)
    summary = run.summary
    manifest = run.manifest
    rows = summary.to_dict("records")
    if args.format is Format.CSV:
        print_raw(console, to_csv(rows, SUMMARY_COLUMNS))
        return EXIT_OK
    if args.format is Format.JSON:
        print_raw(
            console,
            to_json(
                {
                    "run_id": manifest["run_id"],
                    "status": manifest.get("status"),
                    "include_warmups": args.include_warmups,
                    "rows": rows,
                }
            ),
        )
        return EXIT_OK
    console.print(
        Text(
            f"run {manifest['run_id']} ({manifest.get('status')}), warmups "
            f"{'included' if args.include_warmups else 'excluded'}",
            style="bold",
        )
    )
    console.print()
    print_tables(console, show_grids(rows))
    console.print()
    console.print(
        Text(
            "n<K: too few successful samples for this percentile (it needs K); "
            "failures: errors and timeouts, with their share of attempts"
        ),
        overflow="fold",
    )
    return EXIT_OK


def resolve_run_ref(ref: str, results_root: Path) -> Path:
    if ref == "latest":
        runs = sorted(p for p in results_root.glob("*/manifest.json"))
        if not runs:
            raise UsageError(f"no runs in {results_root}")
        return runs[-1].parent
    try:
        return resolve_run(ref, results_root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


#: ``report`` flags for the session scenario: one per SessionScenario key.
SCENARIO_FLAGS = [d.name for d in declared(SessionScenario)]


def _named_scenarios(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--scenario NAME.KEY=VALUE`` items as ``[scenario.NAME]`` tables, each value parsed
    by its key's declaration (bench/scenarios.py); UsageError for a malformed one."""
    from bench import scenarios

    tables: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, field = key.strip().partition(".")
        if not sep or not dot or not name or not field:
            raise UsageError(f"report: --scenario wants NAME.KEY=VALUE, got {item!r}")
        tables.setdefault(name, {})[field] = value.strip()
    out = {}
    for name, table in tables.items():
        try:
            scenarios.parse_scenario(name, table, where=f"scenario.{name}", from_text=True)
        except SettingError as exc:
            raise UsageError(f"report: --scenario {exc}") from None
        # Typed values for the report's settings (they are parsed again there, as TOML).
        kind = scenarios.KINDS[table.get("kind") or scenarios.BUILTINS[name]]
        decls = {d.name: d for d in declared(kind.params)}
        out[name] = {
            k: (v if k == "kind" else parse_value(decls[k], v, from_text=True))
            for k, v in table.items()
        }
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import ReportSettings, write_report

    check_output_folder(args.out, "--out")
    settings: dict[str, Any] = {"include_warmups": args.include_warmups}
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.pricing is not None:
        load_pricing_catalog(args.pricing)  # a bad catalog is refused in one line, now
        settings["pricing_path"] = args.pricing
    if args.local_usd_per_hour is not None:
        settings["local_rate_usd_per_hour"] = args.local_usd_per_hour
    if args.claims is not None:
        check_input_file(args.claims, "claims file")
        settings["claims_path"] = args.claims
    scenario = {
        name: getattr(args, f"scenario_{name}")
        for name in SCENARIO_FLAGS
        if getattr(args, f"scenario_{name}") is not None
    }
    if scenario:
        settings["scenario"] = scenario
    if args.scenario:
        settings["scenarios"] = _named_scenarios(args.scenario)
    if args.sections is not None:
        settings["sections"] = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    try:
        report_settings = ReportSettings(**settings)
    except ValueError as exc:
        raise UsageError(f"report: {exc}") from None
    folders = [resolve_run_ref(ref, args.results) for ref in args.runs]
    try:
        path = write_report(folders, args.out, settings=report_settings)
    except SchemaError:
        raise
    except ValueError as exc:  # a run's own catalog or scenario that cannot be used
        raise UsageError(f"report: {exc}") from None
    console.print(f"report: {path}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare_runs

    a = resolve_run_ref(args.run_a, args.results)
    b = resolve_run_ref(args.run_b, args.results)
    threshold = args.threshold if args.threshold is not None else CompareSettings().threshold
    comparison = compare_runs(a, b, threshold=threshold, force=args.force)
    if args.format is Format.TABLE:
        comparison.render(console, everything=args.all)
    elif args.format is Format.CSV:
        # Rows only: what differs between the runs, and the summary, go to stderr.
        print_raw(console, to_csv([comparison.record(r) for r in comparison.rows]))
        for line in comparison.difference_lines():
            err_console.print(Text(line), soft_wrap=True)
        err_console.print(Text(comparison.summary()), soft_wrap=True)
    else:
        print_raw(console, to_json(comparison.to_dict()))
    return EXIT_REGRESSION if comparison.regressions else EXIT_OK


def cmd_reap(args: argparse.Namespace) -> int:
    """Reap each named run (or every run under --results): a folder that cannot be read, or
    that a live process still writes, is reported in the table and the next one is reaped."""
    from bench.cleanup import SweepResult
    from bench.reap import open_for_reaping, reap_run
    from bench.store import RunLocked

    if args.all:
        folders = sorted(p.parent for p in args.results.glob("*/manifest.json"))
    elif args.runs:
        folders = [resolve_run_ref(ref, args.results) for ref in args.runs]
    else:
        raise UsageError("name the runs to reap, or --all")

    async def reap_one(folder: Path) -> list[SweepResult]:
        manifest = load_manifest(folder)
        settings = (manifest.get("config") or {}).get("provider_settings") or {}
        wanted = set((manifest.get("plan") or {}).get("providers") or [])
        providers, why = open_for_reaping(wanted, settings)
        opened = {}
        try:
            for provider_id, provider in providers.items():
                try:
                    await provider.open()
                except Exception as exc:  # noqa: BLE001 - reported; the others are reaped
                    why[provider_id] = f"cannot open: {type(exc).__name__}: {exc}"
                    continue
                opened[provider_id] = provider
            results = await reap_run(folder, opened, dry_run=args.dry_run)
        finally:
            for provider in opened.values():
                with contextlib.suppress(Exception):
                    await provider.close()
        for result in results:
            if result.provider in why:
                result.failed["*"] = why[result.provider]
        return results

    async def reap_all() -> list[tuple[Path, list[SweepResult] | str]]:
        done: list[tuple[Path, list[SweepResult] | str]] = []
        for folder in folders:
            try:
                done.append((folder, await reap_one(folder)))
            except (SchemaError, ConfigError, RunLocked) as exc:
                done.append((folder, _one_line(exc)))
            except Exception as exc:  # noqa: BLE001 - one run's trouble must not stop the rest
                done.append((folder, f"{type(exc).__name__}: {_one_line(exc)}"))
        return done

    outcomes = asyncio.run(reap_all())
    table = Table(title="reap" + (" (dry run)" if args.dry_run else ""))
    columns = ("run", "provider", "found alive", "destroyed", "checkpoints found",
               "checkpoints deleted", "failed")  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    failed = False
    for folder, outcome in outcomes:
        if isinstance(outcome, str):
            failed = True
            table.add_row(folder.name, "-", "-", "-", "-", "-", f"not reaped: {outcome}")
            continue
        for r in outcome:
            failed = failed or bool(r.failed)
            table.add_row(
                r.run_id,
                r.provider,
                str(len(r.found)),
                str(len(r.destroyed)),
                str(len(r.checkpoints_found)),
                str(len(r.checkpoints_deleted)),
                "; ".join(f"{k}: {v}" for k, v in r.failed.items()) or "-",
            )
    console.print(table)
    return EXIT_FAILED if failed else EXIT_OK


# -- history, site, export -----------------------------------------------------------------


def _run_folders(args: argparse.Namespace, *, default_all: bool = False) -> list[Path]:
    """The runs a command reads: those named, or with --all (or ``default_all`` and none
    named) every run under --results, in run id order."""
    if args.runs and args.all:
        raise UsageError("name runs or give --all, not both")
    if args.all or (default_all and not args.runs):
        if not args.results.is_dir():
            raise UsageError(f"no results folder {args.results}")
        folders = sorted(p.parent for p in args.results.glob("*/manifest.json"))
        if not folders:
            raise UsageError(f"no runs in {args.results}")
        return folders
    if not args.runs:
        raise UsageError("name the runs, or give --all")
    return [resolve_run_ref(ref, args.results) for ref in args.runs]


def _history_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "window": args.window,
        "threshold": args.threshold,
        "include_warmups": args.include_warmups,
        "seed": args.seed,
        "progress": lambda text: err_console.print(text, markup=False, highlight=False),
    }


#: Changes ``history`` prints; the rest are in changes.csv and on the page.
SHOWN_CHANGES = 10


def cmd_history(args: argparse.Namespace) -> int:
    from bench.history import build_history
    from bench.history_report import write_history

    check_output_folder(args.out, "--out")
    folders = _run_folders(args)
    try:
        history = build_history(folders, **_history_options(args))
    except ValueError as exc:
        raise UsageError(f"history: {exc}") from None
    path = write_history(history, args.out)
    for change in history.changes[:SHOWN_CHANGES]:
        console.print(f"change: {change.describe()}", markup=False, highlight=False)
    if len(history.changes) > SHOWN_CHANGES:
        console.print(f"… and {len(history.changes) - SHOWN_CHANGES} more in changes.csv")
    console.print(
        f"history of {len(history.runs)} runs, {len(history.series)} series, "
        f"{len(history.changes)} change(s) flagged: {path}"
    )
    return EXIT_OK


def cmd_site(args: argparse.Namespace) -> int:
    from bench.site import write_site

    check_output_folder(args.out, "OUT")
    if args.reports.exists() and not args.reports.is_dir():
        raise UsageError(f"--reports {args.reports} is not a folder")
    folders = _run_folders(args, default_all=True)
    try:
        path = write_site(args.out, folders, reports=args.reports, **_history_options(args))
    except ValueError as exc:
        raise UsageError(f"site: {exc}") from None
    console.print(f"site: {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from bench.columnar import export

    out = args.parquet
    if out.is_dir():
        raise UsageError(f"--parquet {out} is a folder; name a file")
    check_output_folder(out.parent, "--parquet")
    if not out.parent.is_dir():
        raise UsageError(f"--parquet: no folder {out.parent}")
    folders = _run_folders(args)
    try:
        rows = export(folders, out)
    except ValueError as exc:
        raise UsageError(f"export: {exc}") from None
    console.print(f"{rows:,} samples of {len(folders)} run(s): {out}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and value < 100):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 100, got {text}")
    return value


# -- the parser --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (argparse's own code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        err_console.print(
            f"sandbox-bench: error: {_one_line(message)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(EXIT_USAGE)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


RUN_EXAMPLES = """\
examples:
  sandbox-bench run                                  # ./bench.toml if present, else defaults
  sandbox-bench run --config none --providers local --workloads lifecycle,exec \\
      --iterations 50 --concurrency 4 --seed 1
  sandbox-bench run --cluster local:2 --workloads burst
  sandbox-bench run --resume latest                  # finish an interrupted run

Every [run] key above can also be set in bench.toml; [spec], [pricing], [scenario],
[workloads.<name>] and [providers.<id>] are TOML-only (see bench/config.py). Flags win.
"""

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run a benchmark", RUN_EXAMPLES),
    "providers": (
        "list providers, their SDK versions, credentials and capabilities here",
        "examples:\n  sandbox-bench providers\n  sandbox-bench providers --format json\n\n"
        "The table fits the terminal's width (COLUMNS): narrower, each provider is one block.\n",
    ),
    "show": (
        "print a run's latency table (n, failures, p50, p95, p99)",
        "examples:\n  sandbox-bench show latest\n  sandbox-bench show 20261128T101500Z-a1b2c3 "
        "--include-warmups\n  sandbox-bench show latest --format csv > summary.csv\n\n"
        "One table per workload, operations in the order the workload runs them. A percentile\n"
        "with too few samples shows n<K (K samples needed).\n",
    ),
    "report": (
        "write HTML and Markdown reports, figures and a CSV for runs",
        "examples:\n  sandbox-bench report latest\n  sandbox-bench report RUN_A RUN_B "
        "--pricing my-prices.toml --scenario-hours 8\n"
        "  sandbox-bench report latest --scenario batch_evaluation.concurrency=200 \\\n"
        "      --scenario nightly.kind=batch --scenario nightly.sandboxes_per_day=20000\n\n"
        "Prices and scenarios come from each run's own [pricing] and [scenario] tables; these\n"
        "flags override them for every run.\n",
    ),
    "reap": (
        "destroy sandboxes that runs left alive",
        "examples:\n  sandbox-bench reap latest\n  sandbox-bench reap --all --dry-run\n",
    ),
    "compare": (
        "what got faster or slower between two runs (exit 3 on a regression)",
        "examples:\n  sandbox-bench compare RUN_A RUN_B --threshold 0.1\n"
        "  sandbox-bench compare RUN_A RUN_B --force --all\n"
        "  sandbox-bench compare RUN_A RUN_B --format json | jq .summary\n\n"
        "It first lists what differs between the two runs that can move latency (concurrency,\n"
        "spec, workload parameters, provider settings, SDK versions, client, connection mode,\n"
        "harness); a row such a difference touches is not called a regression unless --force.\n"
        "Exit codes: 0 no regression, 3 at least one, 2 bad input.\n",
    ),
    "history": (
        "trends over many runs, and the changes whose intervals separate",
        "examples:\n  sandbox-bench history --all\n  sandbox-bench history RUN_A RUN_B RUN_C "
        "--out reports/history --window 3\n\n"
        "Writes history.html, history.md, history.csv, changes.csv and figures/. A change is\n"
        "flagged when the 95 %% intervals of the WINDOW runs before a run and the WINDOW runs\n"
        "from it on do not overlap and the levels differ by THRESHOLD or more\n"
        "(the rule and its false-flag rate: bench/history.py).\n",
    ),
    "site": (
        "write a static site: the latest decision, the history, every report",
        "examples:\n  sandbox-bench site public/\n  sandbox-bench site public/ --results results "
        "--reports reports\n\n"
        "Plain files any static host serves (no remote resources); examples/ci/publish.yml\n"
        "builds and publishes it on a schedule.\n",
    ),
    "export": (
        "every sample of any number of runs as one Parquet file",
        "examples:\n  sandbox-bench export --all --parquet samples.parquet\n"
        "  sandbox-bench export RUN_A RUN_B --parquet two-runs.parquet\n\n"
        "One row per sample: every record field (extra as JSON text) and the run's start,\n"
        "status, client location and host, harness and SDK versions; pandas.read_parquet\n"
        "reads it.\n",
    ),
}


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        type=Format,
        choices=list(Format),
        default=Format.TABLE,
        help="table (fits the terminal; default), csv or json (raw values, on stdout)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sandbox-bench",
        description="Benchmark sandbox providers for AI agents: latency, failures and cost of "
        "create, exec, files, checkpoint, restore, pause and resume, from raw records.",
        epilog="Run 'sandbox-bench COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        helptext, epilog = SUBCOMMANDS[name]
        p = sub.add_parser(
            name,
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + ".",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    run = command("run", cmd_run)
    run.add_argument(
        "--config",
        metavar="FILE|none",
        help="settings file (TOML); default ./bench.toml when it exists; 'none' for no file",
    )
    _add_setting_flags(run, RunConfig, flag=lambda d: d.info.flag, dest=lambda d: d.name)
    run.add_argument(
        "--resume",
        metavar="RUN",
        help="finish a crashed or interrupted run (id, folder or 'latest') into its folder, "
        "with its own configuration",
    )

    providers = command("providers", cmd_providers)
    _add_format(providers)

    show = command("show", cmd_show)
    show.add_argument("run", help="run id, run folder, or 'latest'")
    show.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="results folder (default results)",
    )
    show.add_argument("--include-warmups", action="store_true", help="count warmup iterations")
    _add_format(show)

    report = command("report", cmd_report)
    report.add_argument("runs", nargs="+", help="run ids, run folders, or 'latest'")
    report.add_argument(
        "--results", type=Path, default=Path("results"), metavar="DIR", help="results folder"
    )
    report.add_argument(
        "--out", type=Path, default=Path("reports"), metavar="DIR", help="reports folder"
    )
    report.add_argument("--include-warmups", action="store_true", help="count warmup iterations")
    report.add_argument(
        "--seed", type=int, metavar="N", help="seed of the bootstrap intervals (default 0)"
    )
    pricing = {d.name: d for d in declared(PricingSettings)}
    report.add_argument(
        "--pricing",
        metavar="FILE",
        type=_setting_type(pricing["catalog"]),
        help="pricing catalog for every run (default: each run's own [pricing] catalog)",
    )
    report.add_argument(
        "--local-usd-per-hour",
        metavar="USD",
        type=_setting_type(pricing["local_usd_per_hour"]),
        help=_help(pricing["local_usd_per_hour"], default="each run's own"),
    )
    report.add_argument("--claims", type=Path, metavar="FILE", help="vendor claims catalog")
    _add_setting_flags(
        report,
        SessionScenario,
        flag=lambda d: "--scenario-" + d.name.replace("_", "-"),
        dest=lambda d: f"scenario_{d.name}",
        default="each run's own [scenario] value",
    )
    report.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="a scenario key for this report, as in [scenario.NAME]: a built-in's "
        "(batch_evaluation, persistent_agent, interactive) or a new scenario's, which needs "
        "its kind too (--scenario nightly.kind=batch --scenario nightly.task_s=30); repeatable",
    )
    report.add_argument(
        "--sections", metavar="NAME,...", help="only these report sections (default: all)"
    )

    reap = command("reap", cmd_reap)
    reap.add_argument("runs", nargs="*", help="run ids, run folders, or 'latest'")
    reap.add_argument("--all", action="store_true", help="every run under --results")
    reap.add_argument(
        "--results", type=Path, default=Path("results"), metavar="DIR", help="results folder"
    )
    reap.add_argument("--dry-run", action="store_true", help="list, destroy nothing")

    compare = command("compare", cmd_compare)
    compare.add_argument("run_a", help="the baseline run (id, folder or 'latest')")
    compare.add_argument("run_b", help="the run compared with it")
    compare.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="results folder (default results)",
    )
    _add_setting_flags(compare, CompareSettings, flag=lambda d: d.info.flag, dest=lambda d: d.name)

    def runs_arguments(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("runs", nargs="*", help="run ids, run folders, or 'latest'")
        p.add_argument("--all", action="store_true", help=f"every run under --results{what}")
        p.add_argument(
            "--results", type=Path, default=Path("results"), metavar="DIR", help="results folder"
        )

    def history_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--window", type=_positive_int, default=2, metavar="N",
            help="runs on each side of a change that must separate (default 2)",
        )  # fmt: skip
        p.add_argument(
            "--threshold", type=_fraction, default=0.10, metavar="X",
            help="smallest change flagged, as a fraction of the level (default 0.10)",
        )  # fmt: skip
        p.add_argument("--include-warmups", action="store_true", help="count warmup iterations")
        p.add_argument(
            "--seed", type=int, default=0, metavar="N", help="seed of bootstrap intervals"
        )

    history = command("history", cmd_history)
    runs_arguments(history, "")
    history.add_argument(
        "--out", type=Path, default=Path("reports/history"), metavar="DIR",
        help="folder for the history (default reports/history)",
    )  # fmt: skip
    history_arguments(history)

    site = command("site", cmd_site)
    site.add_argument("out", type=Path, metavar="OUT", help="folder for the site")
    runs_arguments(site, " (the default when no run is named)")
    site.add_argument(
        "--reports", type=Path, default=Path("reports"), metavar="DIR",
        help="folder of reports to link (each report folder is copied into the site)",
    )  # fmt: skip
    history_arguments(site)

    export = command("export", cmd_export)
    runs_arguments(export, "")
    export.add_argument(
        "--parquet", type=Path, required=True, metavar="FILE", help="the Parquet file to write"
    )
    compare.add_argument(
        "--force",
        action="store_true",
        help="judge regressions even where the runs differ in something that can move latency "
        "(each such row is labelled with the differences)",
    )
    compare.add_argument(
        "--all", action="store_true", help="list unchanged rows too (default: only changes)"
    )
    _add_format(compare)
    emulators_cli.add_parser(sub)
    return parser


def _quiet_errors() -> None:
    """No traceback ever: what an SDK leaves behind (a task's exception nobody retrieved, an
    exception in a thread or a finalizer) is one line, or nothing after an interrupt.
    ``SANDBOX_BENCH_TRACEBACK=1`` shows them as Python would."""
    if os.environ.get("SANDBOX_BENCH_TRACEBACK"):
        return

    def say(what: str, exc: BaseException | None) -> None:
        if _INTERRUPTED or exc is None or isinstance(exc, asyncio.CancelledError):
            return
        with contextlib.suppress(Exception):
            err_console.print(
                f"sandbox-bench: note: {what}: {type(exc).__name__}: {_one_line(exc)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    threading.excepthook = lambda args: say("in a thread", args.exc_value)
    sys.unraisablehook = lambda args: None  # a finalizer's complaint (an unclosed client)
    asyncio.set_event_loop_policy(_QuietPolicy(say))


class _QuietPolicy(asyncio.DefaultEventLoopPolicy):
    """Event loops whose unhandled errors go to ``say`` in one line, not to logging."""

    def __init__(self, say: Callable[[str, BaseException | None], None]) -> None:
        super().__init__()
        self._say = say

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.set_exception_handler(
            lambda loop, context: self._say(
                str(context.get("message") or "in the event loop"), context.get("exception")
            )
        )
        return loop


def main(argv: Sequence[str] | None = None) -> int:
    if _program():
        _quiet_errors()
    code = _main(argv)
    if _EXIT_AT_ONCE and _program():
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _program() and args.command != "run":
        # Other commands create nothing a signal must wait for: stop at once, in one line.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError, SchemaError, SettingError, RunLocked) as exc:
        return _error(exc, EXIT_USAGE)
    except (ResultsUnwritable, NoSpace) as exc:
        return _error(_unwritable_line(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, never a traceback
        return _error(f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILED)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _unwritable_line(exc: Exception) -> str:
    if not isinstance(exc, ResultsUnwritable):
        return str(exc)
    from bench.store import free_bytes

    free = free_bytes(exc.path)
    hint = (
        f"; {free / 1024 / 1024:.1f} MiB free there: free space, then "
        "`sandbox-bench run --resume RUN`"
        if free is not None
        else ""
    )
    return f"results could not be written: {exc}{hint}"


def _error(exc: object, code: int) -> int:
    err_console.print(
        f"sandbox-bench: error: {_one_line(exc)}", markup=False, highlight=False, soft_wrap=True
    )
    if os.environ.get("SANDBOX_BENCH_TRACEBACK") and isinstance(exc, BaseException):
        traceback.print_exception(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
