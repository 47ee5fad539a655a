"""Run configuration: bench.toml plus CLI flags, validated once into frozen dataclasses.

Every key is declared once, as a field of a settings dataclass (:mod:`providers.settings`):
``[run]`` is :class:`RunConfig`, ``[spec]`` is :class:`providers.base.SandboxSpec`,
``[pricing]`` is :class:`PricingSettings`, ``[scenario]`` holds the scenarios the report
decides for (:mod:`bench.scenarios`: its flat keys are the persistent-agent session's,
:class:`bench.cost.SessionScenario`; ``[scenario.NAME]`` tables set a built-in's keys or add a
scenario of a declared kind). The ``run`` command's flags, TOML parsing, validation
(type and sane range of every number), the manifest's ``config`` and every ``--help`` line
derive from those declarations. ``[workloads.<name>]`` tables are validated by each
workload (``validate_params``), ``[providers.<id>]`` tables by each adapter's constructor.
``[workloads.task.<NAME>]`` tables are tasks (bench/workloads/task.py): each is checked, its
files hashed, and registered as the workload ``task_<NAME>`` before ``[run]`` is read.

Everything is checked before anything is created: an unknown provider or workload, a bad or
out-of-range number, malformed TOML, an unknown key, a plan too large to run or an output
folder that cannot hold a run raises :class:`ConfigError` with a one-line message (the CLI
turns it into exit code 2).

Example ``bench.toml``::

    [run]
    providers = ["local"]
    workloads = ["lifecycle", "exec", "files", "checkpoint", "pause_resume"]
    iterations = 10        # measured iterations per (provider, workload)
    warmup = 1             # extra iterations first, recorded with warmup=true
    concurrency = 1        # iterations in flight at once
    seed = 42              # order of iterations; random if absent (recorded either way)
    output = "results"
    timeout_s = 120        # per provider call
    grace_s = 30           # after Ctrl-C/SIGTERM: cleanup time before leaving the rest to reap
    location = "laptop-fra"
    cluster = "tcp://10.0.0.5:8786"   # run on these Dask workers (bench/cluster.py);
                                      # "local:4": on 4 worker processes of this machine
    locations = ["fra", "iad"]        # with cluster: every workload from each of these

    [spec]
    cpus = 1
    memory_mb = 512

    [pricing]
    catalog = "my-prices.toml"        # default: providers/pricing.toml
    local_usd_per_hour = 0.05

    [scenario]                        # the agent session the report prices
    hours = 4
    active_fraction = 0.15

    [scenario.batch_evaluation]       # a built-in scenario's keys (bench/scenarios.py)
    concurrency = 200

    [scenario.nightly]                # a scenario of your own: its kind and keys
    kind = "batch"
    sandboxes_per_day = 20000
    task_s = 30

    [workloads.exec]
    repeats = 20

    [workloads.checkpoint]
    state_mb = 16

    [workloads.task.unit_tests]       # a task of your own: the workload task_unit_tests
    requires = ["python3"]            # (bench/workloads/task.py; README "Tasks")
    uploads = [{ source = "my-project" }]
    steps = [{ name = "test", run = "python3 -m unittest", cwd = "my-project" }]

    [providers.local]
    state_dir = "/var/lib/sandbox-bench/local"
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import scenarios as scenarios_mod
from bench.cost import Catalog, CatalogError, SessionScenario, load_catalog
from bench.cpu_latency import CpuLatency
from bench.workloads import DEFAULT_SUITE, WORKLOADS
from bench.workloads import task as tasks
from providers import REGISTRY
from providers.base import (
    Capabilities,
    CheckpointCaptures,
    Op,
    PauseKind,
    RestoreTarget,
    SandboxSpec,
)
from providers.settings import SettingError, declared, parse, parse_value, setting, to_table


class ConfigError(ValueError):
    """Bad configuration; the message is one line meant for the user."""


DEFAULT_PROVIDERS = ("local",)
#: The tables a bench.toml may hold.
TOP_KEYS = ("run", "spec", "pricing", "scenario", "workloads", "providers")
#: A config file larger than this is not a config file (and /dev/zero must not be read).
MAX_CONFIG_BYTES = 1 << 20
#: Upper bounds of a plan, so a typo cannot make a run that exhausts memory or disk before it
#: starts: iterations over all (provider, workload) pairs, and operation records in all.
MAX_PLANNED_ITERATIONS = 1_000_000
MAX_RECORDS_PER_ITERATION = 100_000
MAX_PLANNED_RECORDS = 10_000_000
#: Longest file name and path the kernel accepts (NAME_MAX, PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096
#: Kernel filesystems that must never receive a run folder (mkdir there can even succeed:
#: a folder under /sys/fs/cgroup is a new cgroup).
KERNEL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_LABEL_CHARS = 100


@dataclass(frozen=True, kw_only=True)
class PricingSettings:
    """``[pricing]``: which prices the budget estimate, the cap and the report use."""

    catalog: Path | None = setting(
        None,
        help="pricing catalog (TOML, providers/pricing.toml's format); default "
        "providers/pricing.toml",
        example="my-prices.toml",
    )
    local_usd_per_hour: float | None = setting(
        None,
        help="price of one local (self-hosted) sandbox-hour; default the catalog's",
        unit="USD/h",
        minimum=0,
        maximum=10_000,
    )

    def load(self) -> Catalog:
        """The catalog these settings name, read and validated (ConfigError otherwise)."""
        return load_pricing_catalog(self.catalog, self.local_usd_per_hour)


def load_pricing_catalog(path: Path | None, local_usd_per_hour: float | None = None) -> Catalog:
    """Read a pricing catalog at the input boundary: any problem is one ConfigError line."""
    if path is not None:
        check_input_file(path, "pricing catalog")
    try:
        return load_catalog(path, local_rate_usd_per_hour=local_usd_per_hour)
    except UnicodeDecodeError:
        raise ConfigError(f"pricing catalog {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"pricing catalog {path} cannot be read: {exc.strerror}") from None
    except (CatalogError, ValueError, TypeError) as exc:
        # CatalogError is a ValueError; TypeError covers a value of a surprising TOML type.
        raise ConfigError(str(exc) or f"pricing catalog {path} is not valid") from None


def check_input_file(path: Path, what: str) -> None:
    """Refuse (ConfigError) a file we will read that is missing, not a regular file (a
    folder, /dev/zero) or too large to be a config or catalog."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} {path} is {info.st_size:,} bytes; at most {MAX_CONFIG_BYTES:,} are read"
        )


_ADDRESS = re.compile(
    r"(?:(?P<scheme>tcp|tls)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[\w.-]+):(?P<port>\d+)"
)
_LOCAL_CLUSTER = re.compile(r"local(?::(?P<workers>\d+))?")


def local_cluster_workers(cluster: str) -> int | None:
    """K for ``local:K`` (client processes on this machine), None for a scheduler address."""
    match = _LOCAL_CLUSTER.fullmatch(cluster)
    return int(match["workers"]) if match is not None else None


def _scheduler_address(value: str) -> str:
    """A Dask scheduler address, ``tcp://HOST:PORT`` (or ``tls://``; bare ``HOST:PORT`` is tcp),
    or ``local[:K]``: K worker processes started on this machine for the run (default: one per
    CPU), so a burst's clients can run on every core."""
    text = value.strip()
    local = _LOCAL_CLUSTER.fullmatch(text)
    if local is not None:
        workers = int(local["workers"]) if local["workers"] else (os.cpu_count() or 1)
        if not 1 <= workers <= 64:
            raise ValueError(f"cluster local:K needs 1 <= K <= 64, got {value!r}")
        return f"local:{workers}"
    match = _ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(
            f"cluster must be a scheduler address like tcp://HOST:PORT, or local[:K], got {value!r}"
        )
    return f"{match['scheme'] or 'tcp'}://{match['host']}:{int(match['port'])}"


def _check_label(value: str, key: str) -> None:
    if len(value) > MAX_LABEL_CHARS:
        raise ValueError(f"{key} must be at most {MAX_LABEL_CHARS} characters, got {len(value)}")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError(f"{key} must be printable text, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A validated run configuration: the ``[run]`` keys (declared below, each with its flag)
    and the other tables of bench.toml, each its own declared settings class."""

    providers: tuple[str, ...] = setting(
        DEFAULT_PROVIDERS,
        help=f"providers to benchmark, comma-separated (known: {', '.join(sorted(REGISTRY))})",
        flag="--providers",
        example="local,e2b",
    )
    workloads: tuple[str, ...] = setting(
        (),
        help=f"workloads to run, comma-separated (known: {', '.join(WORKLOADS)}); default "
        f"{','.join(DEFAULT_SUITE)}",
        flag="--workloads",
        example="lifecycle,exec",
    )
    iterations: int = setting(
        10,
        help="measured iterations per provider and workload",
        minimum=1,
        maximum=100_000,
        flag="--iterations",
    )
    warmup: int = setting(
        1,
        help="warmup iterations first (recorded, flagged warmup)",
        minimum=0,
        maximum=10_000,
        flag="--warmup",
    )
    concurrency: int = setting(
        1, help="iterations in flight at once", minimum=1, maximum=1_000, flag="--concurrency"
    )
    seed: int | None = setting(
        None,
        help="seed of the iteration order; random when unset (recorded either way)",
        minimum=0,
        maximum=10_000_000_000,
        flag="--seed",
    )
    output: Path = setting(
        Path("results"), help="folder that receives the run folder <run id>/", flag="--output"
    )
    timeout_s: float = setting(
        120.0,
        help="timeout of each provider call",
        unit="s",
        minimum=0.001,
        maximum=86_400,
        flag="--timeout",
    )
    location: str = setting(
        "", help="label of where this client runs", flag="--location", example="laptop-fra"
    )
    #: Refuse or stop the run before its cost crosses this many dollars (bench/budget.py).
    max_cost_usd: float | None = setting(
        None,
        help="refuse a plan estimated over this cost, stop scheduling before spending crosses it",
        unit="USD",
        minimum=0.0001,
        maximum=1_000_000,
        flag="--max-cost-usd",
    )
    #: Seconds each planned operation is assumed to take in the pre-run cost estimate.
    assumed_op_s: float = setting(
        1.0,
        help="seconds each planned operation is assumed to keep a sandbox alive, for the "
        "cost estimate",
        unit="s",
        minimum=0.001,
        maximum=3_600,
    )
    #: After the first Ctrl-C or SIGTERM, how long cleanup may go on (bench/cleanup.py).
    grace_s: float = setting(
        30.0,
        help="after Ctrl-C or SIGTERM, how long cleanup may take before what is still alive "
        "is left for `sandbox-bench reap` (a second signal ends it at once)",
        unit="s",
        minimum=0,
        maximum=3_600,
        flag="--grace",
    )
    #: While iterations run: hold a 0 us CPU wake-up latency request (bench/cpu_latency.py).
    cpu_latency: str = setting(
        "hold",
        help="hold: keep idle CPUs polling while iterations run (/dev/cpu_dma_latency, root), "
        "so that what ran before a call weighs less on how fast this client wakes; system: "
        "the machine's own idle policy",
        choices=tuple(CpuLatency),
        flag="--cpu-latency",
    )
    #: Dask scheduler whose workers run the iterations (``tcp://HOST:PORT``), or ``local:K``
    #: (K worker processes started on this machine); "" runs in this process.
    cluster: str = setting(
        "",
        help="run on the Dask workers of this scheduler (tcp://HOST:PORT), or on K worker "
        "processes of this machine (local[:K])",
        flag="--cluster",
        example="local:2",
    )
    #: With ``cluster``: run the whole plan from each of these worker locations.
    locations: tuple[str, ...] = setting(
        (),
        help="with --cluster: run the whole plan from each of these worker locations",
        flag="--locations",
        example="fra,iad",
    )
    spec: SandboxSpec = field(default_factory=SandboxSpec)
    pricing: PricingSettings = field(default_factory=PricingSettings)
    scenario: SessionScenario = field(default_factory=SessionScenario)
    #: Every scenario the report decides for: the built-ins and ``[scenario.NAME]`` tables;
    #: ``scenarios["persistent_agent"]`` has the keys of ``scenario``.
    scenarios: Mapping[str, scenarios_mod.Scenario] = field(
        default_factory=scenarios_mod.builtin_scenarios
    )
    #: Per-workload parameters, e.g. {"exec": {"repeats": 20}}; validated by each workload.
    workload_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Per-provider settings tables, handed to the adapter (its constructor validates them).
    provider_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checks across keys and against the registries; parse() has checked types and ranges.
        if not self.providers:
            raise ValueError("providers must not be empty")
        for provider_id in self.providers:
            if provider_id not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise ValueError(f"unknown provider {provider_id!r} (known: {known})")
        for workload in self.workloads:
            if workload not in WORKLOADS:
                raise ValueError(f"unknown workload {workload!r} (known: {', '.join(WORKLOADS)})")
        _check_label(self.location, "location")
        if self.cluster:
            object.__setattr__(self, "cluster", _scheduler_address(self.cluster))
        if self.locations and not self.cluster:
            raise ValueError("locations needs cluster: they are labels of Dask workers")
        for label in self.locations:
            _check_label(label, "locations")
        iterations = (
            (self.iterations + self.warmup)
            * len(self.providers)
            * len(self.workload_names)
            * max(1, len(self.locations))
        )
        if iterations > MAX_PLANNED_ITERATIONS:
            raise ValueError(
                f"the plan has {iterations:,} iterations (providers x workloads x (iterations "
                f"+ warmup) x locations); at most {MAX_PLANNED_ITERATIONS:,} are run at once"
            )

    @property
    def workload_names(self) -> tuple[str, ...]:
        """The workloads this run runs (the default suite when none are named)."""
        return self.workloads or DEFAULT_SUITE

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbelow(2**31)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config for the manifest (every declared key, tables included). Holds
        no secrets: those live only in environment variables."""
        return {
            **to_table(self),
            "spec": to_table(self.spec),
            "pricing": to_table(self.pricing),
            "scenario": to_table(self.scenario),
            "scenarios": scenarios_mod.to_tables(self.scenarios),
            "workload_params": {k: dict(v) for k, v in self.workload_params.items()},
            "provider_settings": {k: dict(v) for k, v in self.provider_settings.items()},
        }


def load_toml(path: Path) -> dict[str, Any]:
    """A config file's tables; ConfigError (one line) for anything that is not one."""
    check_input_file(path, "config file")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _flag_value(name: str, value: Any) -> Any:
    """A flag's value (text from the command line, or a typed value from code) in the type
    its declaration wants, ready to merge into the [run] table."""
    decl = _RUN_DECLS.get(name)
    if decl is None:
        raise ConfigError(f"unknown [run] key {name!r}")
    if isinstance(value, Path):
        value = str(value)
    parsed = parse_value(decl, value, from_text=True)
    return str(parsed) if isinstance(parsed, Path) else parsed


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if isinstance(value, Mapping):
        return value
    if name in ("providers", "workloads"):
        raise ConfigError(
            f"{name} = {value!r} at the top of the config must be a table of "
            f"[{name}.<name>] settings; to choose the {name} to run, set {name} under [run]"
        )
    raise ConfigError(f"[{name}] must be a table, got {type(value).__name__} {value!r}")


def _scenarios(table: Mapping[str, Any]) -> dict[str, Any]:
    """``[scenario]``: flat keys (the persistent agent's) and ``[scenario.NAME]`` tables, as
    RunConfig's ``scenario`` and ``scenarios`` (SettingError for a bad one)."""
    parsed = scenarios_mod.parse_scenarios(table, where="scenario")
    return {"scenario": parsed[scenarios_mod.SESSION].params, "scenarios": parsed}


def _workload_params(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for name, table in _table(data, "workloads").items():
        if name == tasks.TABLE:
            params[name] = _task_tables(table)
            continue
        if name not in WORKLOADS:
            known = ", ".join(WORKLOADS)
            raise ConfigError(f"[workloads.{name}]: unknown workload (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"[workloads.{name}] must be a table, got {table!r}")
        try:
            WORKLOADS[name].validate_params(table)
        except (ValueError, TypeError, OverflowError) as exc:
            # ValueError (SettingError included) is the workloads' refusal; a TypeError or
            # OverflowError from a value of a surprising type is a refusal too.
            raise ConfigError(str(exc) or f"[workloads.{name}]: invalid parameters") from None
        params[name] = dict(table)
    return params


def _task_tables(tables: Any) -> dict[str, Any]:
    """``[workloads.task.NAME]`` tables: each task checked (its files read and hashed) and
    registered as the workload ``task_NAME``; kept resolved (absolute sources, every file's
    sha256) so the manifest holds the whole definition and a resume refuses changed files."""
    try:
        return tasks.register_tasks(tables)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(str(exc) or f"[workloads.{tasks.TABLE}]: invalid tasks") from None


def _check_task_files(config: RunConfig) -> None:
    """Refuse a run naming a task whose files are missing or not as pinned (the built-in
    agent tasks' cache), creating nothing."""
    for name in config.workload_names:
        cls = WORKLOADS[name]
        if issubclass(cls, tasks.TaskWorkload):
            try:
                cls.check_files()
            except (ValueError, OSError) as exc:
                raise ConfigError(str(exc)) from None


def _provider_settings(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for name, table in _table(data, "providers").items():
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"[providers.{name}]: unknown provider (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"[providers.{name}] must be a table, got {table!r}")
        settings[name] = dict(table)
    return settings


#: A provider that can do everything: one iteration's largest possible set of records.
_EVERYTHING = Capabilities(
    operations=frozenset(Op),
    checkpoint_captures=CheckpointCaptures.FILESYSTEM_AND_MEMORY,
    restore_target=RestoreTarget.NEW_SANDBOX,
    pause_kind=PauseKind.FREEZE,
    fork_keeps=CheckpointCaptures.FILESYSTEM_AND_MEMORY,
)


def _check_plan_size(config: RunConfig) -> None:
    """Refuse parameters that make one iteration, or the whole plan, too large to run (a
    repeats of 1e30 would otherwise exhaust memory while the plan is built)."""
    total = 0
    for name in config.workload_names:
        try:
            workload = WORKLOADS[name](config.workload_params.get(name, {}))
            records = len(workload.planned_ops(_EVERYTHING))
        except (ValueError, TypeError, OverflowError, MemoryError):
            raise ConfigError(
                f"[workloads.{name}]: the parameters make one iteration too large to plan "
                f"(at most {MAX_RECORDS_PER_ITERATION:,} operations)"
            ) from None
        if records > MAX_RECORDS_PER_ITERATION:
            raise ConfigError(
                f"[workloads.{name}]: one iteration would record {records:,} operations; at "
                f"most {MAX_RECORDS_PER_ITERATION:,}"
            )
        total += records
    total *= (
        (config.iterations + config.warmup) * len(config.providers) * max(1, len(config.locations))
    )
    if total > MAX_PLANNED_RECORDS:
        raise ConfigError(
            f"the plan would record {total:,} operations; at most {MAX_PLANNED_RECORDS:,} "
            "per run (fewer iterations, or several runs)"
        )


def build_config(
    file_data: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Merge a parsed bench.toml with flag overrides (non-None values win) and validate."""
    data: Any = file_data if file_data is not None else {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config must be a table of tables, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"config: unknown key(s) {', '.join(unknown)} (known: {', '.join(TOP_KEYS)})"
        )
    try:
        # First: [workloads.task.NAME] registers task_NAME, which [run] workloads may name.
        workload_params = _workload_params(data)
        run = dict(_table(data, "run"))
        for name, value in (overrides or {}).items():
            if value is not None:
                run[name] = _flag_value(name, value)
        config = parse(RunConfig, run, where="run")
        config = replace(
            config,
            spec=parse(SandboxSpec, _table(data, "spec"), where="spec"),
            pricing=parse(PricingSettings, _table(data, "pricing"), where="pricing"),
            **_scenarios(_table(data, "scenario")),
            workload_params=workload_params,
            provider_settings=_provider_settings(data),
        )
    except ConfigError:
        raise
    except SettingError as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:  # a check across keys (RunConfig.__post_init__) in replace()
        raise ConfigError(f"[run]: {exc}") from None
    if config.pricing.catalog is not None:
        # Absolute, so the manifest names the file whatever folder a resume or report runs in.
        config = replace(
            config, pricing=replace(config.pricing, catalog=config.pricing.catalog.absolute())
        )
    config.pricing.load()  # parsed now: a bad catalog is refused before anything is created
    _check_task_files(config)
    _check_plan_size(config)
    check_output_folder(config.output, "output")
    return config


def check_output_folder(folder: Path, what: str) -> None:
    """Refuse a folder we could not create run or report folders in, creating nothing: a
    name longer than the kernel takes, a kernel filesystem (/proc, /sys, /dev), a file on
    the way, or no write permission."""
    text = str(folder)
    if not text.strip():
        raise ConfigError(f"{what} must name a folder")
    for part in folder.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ConfigError(
                f"{what} folder name {part[:32]!r}... is {len(os.fsencode(part))} bytes long; "
                f"at most {NAME_MAX}"
            )
    absolute = Path(os.path.abspath(folder))
    if len(os.fsencode(str(absolute))) > PATH_MAX - 2 * NAME_MAX:
        raise ConfigError(f"{what} path {text[:32]!r}... is too long")
    probe = absolute
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    real = probe.resolve()
    for root in KERNEL_ROOTS:
        if real == root or root in real.parents:
            raise ConfigError(
                f"{what} folder {folder} is on a kernel filesystem ({root}); choose a folder "
                "on disk"
            )
    if not probe.is_dir():
        raise ConfigError(f"{what} folder {folder} is not a directory ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} folder {folder} is not writable")


_RUN_DECLS = {d.name: d for d in declared(RunConfig)}


def config_from_manifest(manifest: Any, folder: Path) -> RunConfig:
    """The configuration a run was made with, rebuilt from its manifest (``run --resume``);
    its results go on into ``folder``."""
    if not isinstance(manifest, Mapping):
        raise ConfigError(f"{folder}: the manifest is not a JSON object; it cannot be resumed")
    run_id = manifest.get("run_id", folder.name)
    plan = manifest.get("plan")
    saved = manifest.get("config")
    if not isinstance(plan, Mapping) or not {"providers", "workloads"} <= set(plan):
        raise ConfigError(f"run {run_id} cannot be resumed: its manifest has no plan")
    if not isinstance(saved, Mapping):
        raise ConfigError(f"run {run_id} cannot be resumed: its manifest has no config")
    fixed = {"providers", "workloads", "seed", "output"}
    run = {k: saved[k] for k in _RUN_DECLS if k not in fixed and saved.get(k) not in (None, "")}
    run.update(
        providers=plan["providers"],
        workloads=plan["workloads"],
        seed=manifest.get("seed"),
        output=str(folder.parent),
    )

    def table(value: Any) -> Any:
        return (
            {k: v for k, v in value.items() if v is not None}
            if isinstance(value, Mapping)
            else value
        )

    named = saved.get("scenarios")
    scenario = (
        {k: table(v) for k, v in named.items()}
        if isinstance(named, Mapping)
        else table(saved.get("scenario", {}))
    )
    data = {
        "run": run,
        "spec": table(manifest.get("spec", {})),
        "pricing": table(saved.get("pricing", {})),
        "scenario": scenario,
        "workloads": saved.get("workload_params", {}),
        "providers": saved.get("provider_settings", {}),
    }
    try:
        return build_config(data)
    except ConfigError as exc:
        raise ConfigError(f"run {run_id} cannot be resumed: {exc}") from None
