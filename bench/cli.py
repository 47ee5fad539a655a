"""The ``sandbox-bench`` command line.

Exit codes: 0 success; 1 the run or a command failed at run time; 2 bad input (configuration,
flags, credentials, unreadable result folders) -- reported in one line, with nothing created;
3 ``compare`` found a regression; 130 interrupted by Ctrl-C or SIGTERM (everything the run
created was destroyed and the manifest says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import netprobe
from bench.budget import Budget, Estimate, Planner
from bench.config import ConfigError, RunConfig, build_config, config_from_manifest, load_toml
from bench.cost import load_catalog, spec_shape
from bench.emulators import cli as emulators_cli
from bench.records import RunStatus, SchemaError
from bench.runner import (
    Recorder,
    Runner,
    SecretScrubber,
    WorkItem,
    make_plan,
    remaining_plan,
)
from bench.store import (
    RunWriter,
    load_manifest,
    new_run_id,
    resolve_run,
    run_dir,
    utc_now_iso,
)
from bench.workloads import DEFAULT_SUITE, WORKLOADS
from bench.workloads.base import Workload
from providers import REGISTRY, UnknownProvider, provider_class
from providers.base import Capabilities, Provider, sdk_versions

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: What the manifest says about retries: the harness never retries a measured call.
RETRY_POLICY = {
    "measured_operations": "none: each call is attempted once and recorded once, failed or not",
    "readiness": "first_exec and first_exec_after_* retry `true` every 50 ms until it exits 0 "
    "or the operation times out; the attempts are in extra.attempts",
    "sdk": "per provider in providers.<id>.environment.sdk_retries",
}

console = Console()
err_console = Console(stderr=True)


def progress_bar() -> Progress:
    """The run's progress bar, on stderr, only when that is a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )


class UsageError(Exception):
    """Bad input; one line for the user, exit code 2."""


def harness_version() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("sandbox-bench")
    except PackageNotFoundError:
        ver = None
    root = Path(__file__).resolve().parents[1]
    sha = dirty = None
    if (root / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            dirty = bool(
                subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout.strip()
            )
    return {"version": ver, "git_sha": sha, "git_dirty": dirty}


def client_facts(location: str) -> dict[str, Any]:
    memory_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    return {
        "hostname": socket.gethostname(),
        "location": location or None,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_mb": memory_mb,
    }


def instantiate_providers(config: RunConfig) -> dict[str, Provider]:
    """Load adapters and check credentials before anything is created."""
    providers: dict[str, Provider] = {}
    for provider_id in config.providers:
        try:
            cls = provider_class(provider_id)
        except UnknownProvider as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:
            raise UsageError(
                f"provider {provider_id!r} needs its SDK ({exc.name or exc}): "
                f"pip install 'sandbox-bench[{provider_id}]'"
            ) from None
        missing = [name for name in cls.required_env if not os.environ.get(name)]
        if missing:
            raise UsageError(
                f"provider {provider_id!r} needs credentials: set {', '.join(missing)}"
            )
        try:
            providers[provider_id] = cls(config.provider_settings.get(provider_id, {}))
        except ValueError as exc:
            raise UsageError(f"[providers.{provider_id}]: {exc}") from None
    return providers


def checked_estimate(
    config: RunConfig,
    plan: Sequence[WorkItem],
    workloads: Mapping[str, Workload],
    capabilities: Mapping[str, Capabilities],
) -> tuple[Planner, Estimate]:
    """The plan's cost estimate, printed when it is priced or capped; UsageError (before
    anything is created) when it is over ``max_cost_usd``."""
    planner = Planner(
        catalog=load_catalog(
            config.pricing.get("catalog"),
            local_rate_usd_per_hour=config.pricing.get("local_usd_per_hour"),
        ),
        shape=spec_shape(asdict(config.spec)),
        assumed_op_s=config.assumed_op_s,
    )
    estimate = planner.estimate(plan, workloads, capabilities)
    if estimate.total_usd > 0 or config.max_cost_usd is not None:
        err_console.print(estimate.describe(), markup=False, highlight=False)
    if config.max_cost_usd is not None and estimate.total_usd > config.max_cost_usd:
        raise UsageError(
            f"the plan's estimated cost ${estimate.total_usd:.4f} exceeds --max-cost-usd "
            f"${config.max_cost_usd:g}; nothing was created"
        )
    return planner, estimate


def new_manifest(
    config: RunConfig,
    *,
    run_id: str,
    seed: int,
    client: Mapping[str, Any],
    workloads: Mapping[str, Workload],
    plan: Mapping[str, Any],
    providers: Mapping[str, Any],
    estimate: Estimate,
) -> dict[str, Any]:
    """A new run's manifest, on one machine or a cluster; ``plan`` holds the plan's own
    facts (its providers and scheduled iterations, at least)."""
    return {
        "run_id": run_id,
        "status": str(RunStatus.RUNNING),
        "started_at": utc_now_iso(),
        "finished_at": None,
        "harness": harness_version(),
        "client": dict(client),
        "seed": seed,
        "config": config.to_dict(),
        "spec": {k: v for k, v in asdict(config.spec).items() if k != "labels"},
        "plan": {
            "workloads": list(workloads),
            "iterations": config.iterations,
            "warmup": config.warmup,
            "concurrency": config.concurrency,
            **plan,
            "workload_params": {n: w.params for n, w in workloads.items()},
        },
        "providers": dict(providers),
        "retry_policy": RETRY_POLICY,
        "budget": {
            "max_cost_usd": config.max_cost_usd,
            "estimate_usd": round(estimate.total_usd, 6),
            "estimate": estimate.describe(),
        },
    }


async def _run(
    config: RunConfig, providers: dict[str, Provider], *, resume: Path | None = None
) -> tuple[Path, RunStatus]:
    workload_names = config.workloads or DEFAULT_SUITE
    workloads = {
        name: WORKLOADS[name](config.workload_params.get(name, {})) for name in workload_names
    }
    seed = config.resolved_seed()
    plan = make_plan(
        list(providers) or list(config.providers),  # a cluster driver opens no providers
        list(workloads),
        iterations=config.iterations,
        warmup=config.warmup,
        seed=seed,
    )
    opened: list[Provider] = []
    writer: RunWriter | None = None
    budget: Budget | None = None
    status = RunStatus.FAILED
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        if config.cluster:  # the iterations run on Dask workers (bench/cluster.py)
            from bench.cluster import run_on_cluster

            return await run_on_cluster(config, workloads, plan, seed, resume=resume)
        for provider in providers.values():
            await provider.open()
            opened.append(provider)
        capabilities = {pid: p.capabilities() for pid, p in providers.items()}
        first_sample_id = 1
        if resume is not None:
            from bench.reap import reap_run
            from bench.store import load_run

            # What the crash left alive goes first; then only what was not completed runs.
            await reap_run(resume, providers)
            earlier = load_run(resume)
            plan = remaining_plan(
                plan, earlier.samples, workloads=workloads, capabilities=capabilities
            )
            first_sample_id = max((s.sample_id for s in earlier.samples), default=0) + 1
        budget_planner, estimate = checked_estimate(config, plan, workloads, capabilities)
        environments = {pid: p.environment() for pid, p in providers.items()}
        network = await netprobe.measure(environments)
        previous = load_manifest(resume) if resume is not None else None
        run_id = previous["run_id"] if previous is not None else new_run_id()
        manifest = new_manifest(
            config,
            run_id=run_id,
            seed=seed,
            client={**client_facts(config.location), "network": network},
            workloads=workloads,
            plan={"providers": list(providers), "scheduled_iterations": len(plan)},
            providers={
                pid: {
                    "capabilities": capabilities[pid].to_dict(),
                    "environment": environments[pid],
                }
                for pid in providers
            },
            estimate=estimate,
        )
        if previous is None:
            writer = RunWriter(run_dir(config.output, run_id), manifest)
        else:
            resumes = [*previous.get("resumes", []), {
                "at": utc_now_iso(),
                "remaining_iterations": len(plan),
                "reruns": sum(1 for item in plan if item.rerun),
                "harness": manifest["harness"],
                "client": manifest["client"],
            }]  # fmt: skip
            writer = RunWriter.reopen(
                resume, status=str(RunStatus.RUNNING), finished_at=None, resumes=resumes
            )
        secrets_env = [name for p in providers.values() for name in p.required_env]
        budget = budget_planner.budget(writer, config.max_cost_usd)
        recorder = Recorder(
            budget,
            run_id=run_id,
            concurrency=config.concurrency,
            location=config.location,
            scrub=SecretScrubber(secrets_env),
            first_sample_id=first_sample_id,
        )
        with progress_bar() as progress:
            task = progress.add_task(f"run {run_id}", total=len(plan))
            runner = Runner(
                providers=providers,
                workloads=workloads,
                spec=config.spec,
                recorder=recorder,
                timeout_s=config.timeout_s,
                concurrency=config.concurrency,
                on_item_done=lambda item: (budget.done(item), progress.advance(task)),
                admit=budget.admit,
            )
            try:
                await runner.run(plan)
                status = (
                    RunStatus.BUDGET_EXHAUSTED if runner.stopped_by_admit else RunStatus.COMPLETED
                )
            except asyncio.CancelledError:
                status = RunStatus.INTERRUPTED
                raise
        return writer.folder, status
    finally:
        if writer is not None:
            writer.update_manifest(
                status=str(status),
                finished_at=utc_now_iso(),
                spent_usd=round(budget.spent_usd(), 6) if budget is not None else None,
            )
            writer.close()
        for provider in opened:
            with contextlib.suppress(Exception):
                await provider.close()
        if main_task is not None:
            loop.remove_signal_handler(signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return _resume(args)
    file_data = load_toml(args.config) if args.config else {}
    overrides = {key: getattr(args, flag) for flag, key in RUN_FLAGS.items()}
    config = build_config(file_data, overrides)
    # On a cluster each worker opens its own providers, with its own credentials.
    return _execute(config, {} if config.cluster else instantiate_providers(config))


def _execute(config: RunConfig, providers: dict[str, Provider], resume: Path | None = None) -> int:
    try:
        folder, status = asyncio.run(_run(config, providers, resume=resume))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM's cancellation
        err_console.print("interrupted: every sandbox this run created was destroyed")
        return EXIT_INTERRUPTED
    console.print(f"results: {folder}")
    return EXIT_OK if status is RunStatus.COMPLETED else EXIT_FAILED


def _resume(args: argparse.Namespace) -> int:
    """``run --resume RUN``: finish a crashed or interrupted run into the same folder."""
    given = [name for name in ("config", *RUN_FLAGS) if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"--resume takes the run's own configuration; drop {flags}")
    folder = resolve_run_ref(args.resume, Path("results"))
    manifest = load_manifest(folder)
    if manifest.get("status") in (str(RunStatus.COMPLETED), str(RunStatus.BUDGET_EXHAUSTED)):
        raise UsageError(f"run {manifest['run_id']} is {manifest['status']}; nothing to resume")
    config = config_from_manifest(manifest)
    return _execute(config, instantiate_providers(config), resume=folder)


#: ``run`` flags that configure a new run -> the [run] key each overrides. None of them (nor
#: --config) makes sense with --resume, which takes the run's own configuration.
RUN_FLAGS = {
    "providers": "providers",
    "workloads": "workloads",
    "iterations": "iterations",
    "warmup": "warmup",
    "concurrency": "concurrency",
    "seed": "seed",
    "output": "output",
    "timeout": "timeout_s",
    "location": "location",
    "max_cost_usd": "max_cost_usd",
    "cluster": "cluster",
    "locations": "locations",
}


def cmd_providers(args: argparse.Namespace) -> int:
    table = Table(title="sandbox providers", show_lines=True)
    for column in ("provider", "SDK", "credentials", "capabilities", "semantics", "unsupported"):
        table.add_column(column, overflow="fold")
    for provider_id in sorted(REGISTRY):
        try:
            cls = provider_class(provider_id)
        except ImportError as exc:
            table.add_row(provider_id, f"not installed ({exc.name})", "", "", "", "")
            continue
        versions = sdk_versions(cls.sdk_packages)
        sdk = ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items()) or "none (built in)"
        missing = [n for n in cls.required_env if not os.environ.get(n)]
        creds = (
            "not needed"
            if not cls.required_env
            else (f"missing {', '.join(missing)}" if missing else "present")
        )
        try:
            caps = cls({}).capabilities()
        except Exception as exc:  # noqa: BLE001 - show why, do not fail the listing
            table.add_row(provider_id, sdk, creds, f"unavailable: {exc}", "", "")
            continue
        semantics = [
            f"isolation: {caps.isolation}",
            f"checkpoint: {caps.checkpoint_captures or '-'}",
            f"restore: {caps.restore_target or '-'}",
            f"pause: {caps.pause_kind}",
            f"scratch dir: {caps.scratch_dir}",
        ]
        table.add_row(
            provider_id,
            sdk,
            creds,
            ", ".join(sorted(str(o) for o in caps.operations)),
            "\n".join(semantics),
            "\n".join(f"{op}: {why}" for op, why in caps.unsupported.items()) or "-",
        )
    console.print(table)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from bench.store import load_run

    folder = resolve_run_ref(args.run, args.results)
    run = load_run(folder)
    from bench.stats import format_cell, summarize  # after the load: a bad folder fails fast

    for warning in run.warnings:
        err_console.print(f"warning: {warning}", markup=False)
    summary = summarize(run.samples, include_warmups=args.include_warmups)
    manifest = run.manifest
    table = Table(
        title=f"run {manifest['run_id']} ({manifest.get('status')}), warmups "
        f"{'included' if args.include_warmups else 'excluded'}"
    )
    for column in ("provider", "workload", "operation", "n", "failures", "p50", "p95", "p99"):
        table.add_column(
            column,
            justify="right" if column not in ("provider", "workload", "operation") else "left",
        )
    for row in summary.to_dict("records"):
        table.add_row(
            row["provider"],
            row["workload"],
            row["operation"],
            str(row["n"]),
            format_cell(row, "failures"),
            format_cell(row, "p50"),
            format_cell(row, "p95"),
            format_cell(row, "p99"),
        )
    console.print(table)
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


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import ReportSettings, write_report

    folders = [resolve_run_ref(ref, args.results) for ref in args.runs]
    settings = ReportSettings(include_warmups=args.include_warmups)
    path = write_report(folders, args.out, settings=settings)
    console.print(f"report: {path}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare_runs

    a = resolve_run_ref(args.run_a, args.results)
    b = resolve_run_ref(args.run_b, args.results)
    comparison = compare_runs(a, b, threshold=args.threshold)
    comparison.render(console)
    if comparison.regressions:
        err_console.print(
            f"{len(comparison.regressions)} regression(s) beyond {args.threshold:.0%}"
        )
        return EXIT_REGRESSION
    return EXIT_OK


def cmd_reap(args: argparse.Namespace) -> int:
    from bench.reap import open_for_reaping, reap_run
    from bench.store import load_manifest

    if args.all:
        folders = sorted(p.parent for p in args.results.glob("*/manifest.json"))
    elif args.runs:
        folders = [resolve_run_ref(ref, args.results) for ref in args.runs]
    else:
        raise UsageError("name the runs to reap, or --all")

    async def reap_all() -> list:
        results = []
        for folder in folders:
            manifest = load_manifest(folder)
            settings = manifest.get("config", {}).get("provider_settings", {})
            wanted = set(manifest.get("plan", {}).get("providers", []))
            providers = open_for_reaping(wanted, settings)
            opened = []
            try:
                for provider in providers.values():
                    await provider.open()
                    opened.append(provider)
                results += await reap_run(folder, providers, dry_run=args.dry_run)
            finally:
                for provider in opened:
                    with contextlib.suppress(Exception):
                        await provider.close()
        return results

    results = asyncio.run(reap_all())
    table = Table(title="reap" + (" (dry run)" if args.dry_run else ""))
    for column in ("run", "provider", "found alive", "destroyed", "failed"):
        table.add_column(column, overflow="fold")
    for r in results:
        failed = "; ".join(f"{k}: {v}" for k, v in r.failed.items()) or "-"
        table.add_row(r.run_id, r.provider, str(len(r.found)), str(len(r.destroyed)), failed)
    console.print(table)
    return EXIT_FAILED if any(r.failed for r in results) else EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (argparse's own code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        err_console.print(f"sandbox-bench: error: {message}", markup=False, highlight=False)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sandbox-bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a benchmark")
    run.add_argument("--config", type=Path, help="bench.toml")
    run.add_argument("--providers", help=f"comma-separated ({', '.join(sorted(REGISTRY))})")
    run.add_argument("--workloads", help=f"comma-separated ({', '.join(WORKLOADS)})")
    run.add_argument("--iterations", help="measured iterations per provider and workload")
    run.add_argument("--warmup", help="warmup iterations first (recorded, flagged)")
    run.add_argument("--concurrency", help="iterations in flight at once")
    run.add_argument("--seed", help="seed of the iteration order")
    run.add_argument("--output", type=Path, help="results folder (default results/)")
    run.add_argument("--timeout", help="per-operation timeout in seconds")
    run.add_argument("--location", help="label of where this client runs")
    run.add_argument("--max-cost-usd", help="refuse or stop the run before it costs more")
    run.add_argument("--resume", metavar="RUN", help="finish a crashed or interrupted run")
    run.add_argument(
        "--cluster",
        metavar="tcp://HOST:PORT|local[:K]",
        help="run on these Dask workers, or on K worker processes of this machine",
    )
    run.add_argument("--locations", help="with --cluster: the plan from each (comma-separated)")
    run.set_defaults(func=cmd_run)

    prov = sub.add_parser("providers", help="list providers and their capabilities here")
    prov.set_defaults(func=cmd_providers)

    for name, func, helptext in (("show", cmd_show, "print a run's latency table"),):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", help="run id, run folder, or 'latest'")
        p.add_argument("--results", type=Path, default=Path("results"))
        p.add_argument("--include-warmups", action="store_true")
        p.set_defaults(func=func)

    report = sub.add_parser("report", help="write HTML and Markdown reports for runs")
    report.add_argument("runs", nargs="+", help="run ids, run folders, or 'latest'")
    report.add_argument("--results", type=Path, default=Path("results"))
    report.add_argument("--out", type=Path, default=Path("reports"))
    report.add_argument("--include-warmups", action="store_true")
    report.set_defaults(func=cmd_report)

    reap = sub.add_parser("reap", help="destroy sandboxes that runs left alive")
    reap.add_argument("runs", nargs="*", help="run ids, run folders, or 'latest'")
    reap.add_argument("--all", action="store_true", help="every run under --results")
    reap.add_argument("--results", type=Path, default=Path("results"))
    reap.add_argument("--dry-run", action="store_true", help="list, destroy nothing")
    reap.set_defaults(func=cmd_reap)

    compare = sub.add_parser("compare", help="what got faster or slower between two runs")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--results", type=Path, default=Path("results"))
    compare.add_argument("--threshold", type=float, default=0.10, help="regression threshold")
    compare.set_defaults(func=cmd_compare)
    emulators_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError, SchemaError) as exc:
        err_console.print(
            f"sandbox-bench: error: {exc}", markup=False, highlight=False, soft_wrap=True
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
