"""Run configuration: bench.toml plus CLI flags, validated once into frozen dataclasses.

Everything is checked before anything is created: an unknown provider or workload, a bad
number, malformed TOML, an unknown key or an unwritable output folder raises
:class:`ConfigError` with a one-line message (the CLI turns it into exit code 2).

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
    location = "laptop-fra"
    cluster = "tcp://10.0.0.5:8786"   # run on these Dask workers (bench/cluster.py);
                                      # "local:4": on 4 worker processes of this machine
    locations = ["fra", "iad"]        # with cluster: every workload from each of these

    [spec]
    cpus = 1
    memory_mb = 512

    [workloads.exec]
    repeats = 20

    [workloads.checkpoint]
    state_mb = 16

    [providers.local]
    state_dir = "/var/lib/sandbox-bench/local"
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from providers import REGISTRY
from providers.base import SandboxSpec


class ConfigError(ValueError):
    """Bad configuration; the message is one line meant for the user."""


DEFAULT_PROVIDERS = ("local",)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    workloads: tuple[str, ...] = ()  # empty: the default suite (bench.workloads.DEFAULT_SUITE)
    iterations: int = 10
    warmup: int = 1
    concurrency: int = 1
    seed: int | None = None
    output: Path = Path("results")
    timeout_s: float = 120.0
    location: str = ""
    #: Refuse or stop the run before its cost crosses this many dollars (bench/budget.py).
    max_cost_usd: float | None = None
    #: Seconds each planned operation is assumed to take in the pre-run cost estimate.
    assumed_op_s: float = 1.0
    #: [pricing]: ``catalog`` (path) and ``local_usd_per_hour`` (self-hosted rate).
    pricing: Mapping[str, Any] = field(default_factory=dict)
    #: Dask scheduler whose workers run the iterations (``tcp://HOST:PORT``), or ``local:K``
    #: (K worker processes started on this machine); "" runs in this process.
    cluster: str = ""
    #: With ``cluster``: run the whole plan from each of these worker locations.
    locations: tuple[str, ...] = ()
    spec: SandboxSpec = field(default_factory=SandboxSpec)
    #: Per-workload parameters, e.g. {"exec": {"repeats": 20}}; validated by each workload.
    workload_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Per-provider settings tables, handed to the adapter unchanged (it validates them).
    provider_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbelow(2**31)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config for the manifest. Holds no secrets: those live only in env."""
        return {
            "providers": list(self.providers),
            "workloads": list(self.workloads),
            "iterations": self.iterations,
            "warmup": self.warmup,
            "concurrency": self.concurrency,
            "seed": self.seed,
            "output": str(self.output),
            "timeout_s": self.timeout_s,
            "location": self.location,
            "max_cost_usd": self.max_cost_usd,
            "assumed_op_s": self.assumed_op_s,
            "pricing": dict(self.pricing),
            "cluster": self.cluster or None,
            "locations": list(self.locations),
            "workload_params": {k: dict(v) for k, v in self.workload_params.items()},
            "provider_settings": {k: dict(v) for k, v in self.provider_settings.items()},
        }


_RUN_KEYS = {
    "providers",
    "workloads",
    "iterations",
    "warmup",
    "concurrency",
    "seed",
    "output",
    "timeout_s",
    "location",
    "max_cost_usd",
    "assumed_op_s",
    "cluster",
    "locations",
}
_TOP_KEYS = {"run", "spec", "workloads", "providers", "pricing"}
_PRICING_KEYS = {"catalog", "local_usd_per_hour"}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(value: Any, name: str, *, positive: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if positive and not number > 0:
        raise ConfigError(f"{name} must be greater than 0, got {value}")
    return number


def _names(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"{name} must be a list or a comma-separated string")
    items = [i for i in items if i]
    if not items:
        raise ConfigError(f"{name} must not be empty")
    if len(set(items)) != len(items):
        raise ConfigError(f"{name} lists a name twice: {', '.join(items)}")
    return tuple(items)


_ADDRESS = re.compile(
    r"(?:(?P<scheme>tcp|tls)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[\w.-]+):(?P<port>\d+)"
)


_LOCAL_CLUSTER = re.compile(r"local(?::(?P<workers>\d+))?")


def local_cluster_workers(cluster: str) -> int | None:
    """K for ``local:K`` (client processes on this machine), None for a scheduler address."""
    match = _LOCAL_CLUSTER.fullmatch(cluster)
    return int(match["workers"]) if match is not None else None


def _scheduler_address(value: Any) -> str:
    """A Dask scheduler address, ``tcp://HOST:PORT`` (or ``tls://``; bare ``HOST:PORT`` is tcp),
    or ``local[:K]``: K worker processes started on this machine for the run (default: one per
    CPU), so a burst's clients can run on every core."""
    text = str(value).strip()
    local = _LOCAL_CLUSTER.fullmatch(text)
    if local is not None:
        workers = int(local["workers"]) if local["workers"] else (os.cpu_count() or 1)
        if not 1 <= workers <= 64:
            raise ConfigError(f"cluster local:K needs 1 <= K <= 64, got {value!r}")
        return f"local:{workers}"
    match = _ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"cluster must be a scheduler address like tcp://HOST:PORT, or local[:K], got {value!r}"
        )
    return f"{match['scheme'] or 'tcp'}://{match['host']}:{int(match['port'])}"


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def build_config(
    file_data: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Merge a parsed bench.toml with CLI overrides (non-None values win) and validate."""
    from bench.workloads import WORKLOADS  # late: workloads import the runner's types

    data = dict(file_data or {})
    _check_keys(data, _TOP_KEYS, "config")
    run = dict(data.get("run", {}))
    _check_keys(run, _RUN_KEYS, "[run]")
    for key, value in (overrides or {}).items():
        if value is not None:
            run[key] = value

    cfg: dict[str, Any] = {}
    if "providers" in run:
        cfg["providers"] = _names(run["providers"], "providers")
        for provider_id in cfg["providers"]:
            if provider_id not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise ConfigError(f"unknown provider {provider_id!r} (known: {known})")
    if "workloads" in run:
        cfg["workloads"] = _names(run["workloads"], "workloads")
        for workload in cfg["workloads"]:
            if workload not in WORKLOADS:
                known = ", ".join(WORKLOADS)
                raise ConfigError(f"unknown workload {workload!r} (known: {known})")
    if "iterations" in run:
        cfg["iterations"] = _int(run["iterations"], "iterations", minimum=1)
    if "warmup" in run:
        cfg["warmup"] = _int(run["warmup"], "warmup", minimum=0)
    if "concurrency" in run:
        cfg["concurrency"] = _int(run["concurrency"], "concurrency", minimum=1)
    if "seed" in run:
        cfg["seed"] = _int(run["seed"], "seed", minimum=0)
    if "timeout_s" in run:
        cfg["timeout_s"] = _float(run["timeout_s"], "timeout_s")
    if "location" in run:
        cfg["location"] = str(run["location"])
    if "output" in run:
        cfg["output"] = Path(run["output"])
    if run.get("cluster"):
        cfg["cluster"] = _scheduler_address(run["cluster"])
    if run.get("locations"):
        cfg["locations"] = _names(run["locations"], "locations")
        if not cfg.get("cluster"):
            raise ConfigError("locations needs cluster: they are labels of Dask workers")
    if "max_cost_usd" in run:
        cfg["max_cost_usd"] = _float(run["max_cost_usd"], "max_cost_usd")
    if "assumed_op_s" in run:
        cfg["assumed_op_s"] = _float(run["assumed_op_s"], "assumed_op_s")
    pricing = dict(data.get("pricing", {}))
    _check_keys(pricing, _PRICING_KEYS, "[pricing]")
    if "local_usd_per_hour" in pricing:
        pricing["local_usd_per_hour"] = _float(
            pricing["local_usd_per_hour"], "pricing.local_usd_per_hour", positive=False
        )
        if pricing["local_usd_per_hour"] < 0:
            raise ConfigError("pricing.local_usd_per_hour must not be negative")
    if "catalog" in pricing:
        if not Path(pricing["catalog"]).is_file():
            raise ConfigError(f"pricing.catalog {pricing['catalog']} does not exist")
        pricing["catalog"] = str(pricing["catalog"])
    cfg["pricing"] = pricing

    spec_table = dict(data.get("spec", {}))
    spec_fields = {f.name for f in fields(SandboxSpec)} - {"labels"}
    _check_keys(spec_table, spec_fields, "[spec]")
    parsed_spec: dict[str, Any] = {}
    for key, value in spec_table.items():
        if key == "cpus":
            parsed_spec[key] = _float(value, "spec.cpus")
        elif key == "template":
            parsed_spec[key] = str(value)
        else:
            parsed_spec[key] = _int(value, f"spec.{key}", minimum=1)
    spec = replace(SandboxSpec(), **parsed_spec)
    cfg["spec"] = spec

    workload_params = dict(data.get("workloads", {}))
    for name, params in workload_params.items():
        if name not in WORKLOADS:
            raise ConfigError(f"[workloads.{name}]: unknown workload")
        if not isinstance(params, dict):
            raise ConfigError(f"[workloads.{name}] must be a table")
        try:
            WORKLOADS[name].validate_params(params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    cfg["workload_params"] = workload_params

    provider_settings = dict(data.get("providers", {}))
    for name, table in provider_settings.items():
        if name not in REGISTRY:
            raise ConfigError(f"[providers.{name}]: unknown provider")
        if not isinstance(table, dict):
            raise ConfigError(f"[providers.{name}] must be a table")
    cfg["provider_settings"] = provider_settings

    config = RunConfig(**cfg)
    check_output_writable(config.output)
    return config


def check_output_writable(folder: Path) -> None:
    """Refuse a results folder we could not write into, without creating anything."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"output folder {folder} is not a directory ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {folder} is not writable")


def config_from_manifest(manifest: Mapping[str, Any]) -> RunConfig:
    """The configuration a run was made with, rebuilt from its manifest (``run --resume``)."""
    saved = manifest.get("config", {})
    run_keys = _RUN_KEYS - {"providers", "workloads", "seed"}
    run = {k: saved[k] for k in run_keys if saved.get(k) is not None}
    run["providers"] = list(manifest["plan"]["providers"])
    run["workloads"] = list(manifest["plan"]["workloads"])
    run["seed"] = manifest["seed"]
    data = {
        "run": run,
        "spec": {k: v for k, v in manifest.get("spec", {}).items() if v is not None},
        "workloads": saved.get("workload_params", {}),
        "providers": saved.get("provider_settings", {}),
        "pricing": saved.get("pricing", {}),
    }
    return build_config(data)
