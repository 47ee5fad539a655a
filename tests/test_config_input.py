"""The configuration boundary: generated configs and flags, the manifest round trip.

The generated test drives ``bench.cli.main`` in this process with a random bench.toml and
random ``run`` flags, and stops where the run would start: the session is replaced by its
executor's ``check`` (adapters loaded, credentials and provider settings checked; nothing is
created). Whatever it is given, the command exits 0 or 2, never with a traceback, and on exit 2
it says why in one line and leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench import cli
from bench.config import (
    TOP_KEYS,
    ConfigError,
    PricingSettings,
    RunConfig,
    build_config,
    config_from_manifest,
)
from bench.cost import SessionScenario
from bench.session import new_manifest
from providers.base import SandboxSpec
from providers.settings import declared

ROOT = Path(__file__).resolve().parents[1]


def toml_value(value: Any) -> str:
    """A TOML literal (enough of TOML for generated tables: hypothesis makes the values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's; a lone surrogate is invalid TOML
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items() if not _is_table(v)]
    for name, table in data.items():
        if not _is_table(table):
            continue
        nested = {k: v for k, v in table.items() if _is_table(v)}
        lines.append(f"[{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items() if k not in nested]
        for sub, subtable in nested.items():
            lines.append(f"[{json.dumps(name)}.{json.dumps(sub)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in subtable.items()]
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) for k in value)


KEYS = {
    "run": [d.name for d in declared(RunConfig)],
    "spec": [d.name for d in declared(SandboxSpec)],
    "pricing": [d.name for d in declared(PricingSettings)],
    "scenario": [d.name for d in declared(SessionScenario)],
    "workloads": ["exec", "lifecycle", "burst", "checkpoint_scaling", "nosuch"],
    "providers": ["local", "e2b", "nosuch"],
}
NAMES = ["local", "e2b", "lifecycle", "exec", "nosuch", "fra", "", "local:2"]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.sampled_from([*NAMES, "/proc/x", "/etc/passwd", "x" * 300, "results"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.lists(st.sampled_from(NAMES)))
PARAMS = ["repeats", "size", "clients", "sizes_mb", "levels", "state_dir", "checkpoint_method"]


def table_of(name: str) -> st.SearchStrategy[Any]:
    keys = st.sampled_from([*KEYS[name], "junk"])
    if name in ("workloads", "providers"):
        inner = st.dictionaries(st.sampled_from([*PARAMS, "junk"]), values, max_size=3)
        return st.dictionaries(keys, st.one_of(inner, scalars), max_size=2)
    return st.dictionaries(keys, values, max_size=4)


# Mostly tables of known keys, so that most examples get past the first refusal.
configs = st.fixed_dictionaries(
    {}, optional={name: st.one_of(table_of(name), table_of(name), scalars) for name in TOP_KEYS}
)
flag_texts = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "1e9", "10000000000", "inf", "nan", "0.5", "x"]),
    st.sampled_from([*NAMES, "/proc/x", "/sys/x", "x" * 300, "local,local"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8),
)
RUN_FLAGS = [d.info.flag for d in declared(RunConfig) if d.info.flag]
flags = st.lists(st.tuples(st.sampled_from(RUN_FLAGS), flag_texts), max_size=4)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(config=configs, flag_pairs=flags, use_file=st.booleans())
def test_any_config_and_flags_exit_0_or_2_in_one_line_and_create_nothing(
    config, flag_pairs, use_file
):
    checked: list[Any] = []

    def stop_before_the_run(session: Any) -> int:
        session.executor.check()  # adapters, credentials, provider settings: creates nothing
        checked.append(session)
        return cli.EXIT_OK

    argv = ["run"]
    for flag, text in flag_pairs:
        argv += [f"{flag}={text}"]  # "=": a value starting with "-" stays the flag's
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        (Path(folder) / "bench.toml").write_text(to_toml(config), encoding="utf-8")
        if not use_file:
            argv += ["--config", "none"]
        before = _tree(Path(folder))
        out, err = io.StringIO(), io.StringIO()
        original = cli._execute
        cli._execute = stop_before_the_run
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(argv)
                except SystemExit as exc:  # argparse refuses a flag
                    code = exc.code
        finally:
            cli._execute = original
        assert code in (0, 2), (code, err.getvalue())
        event(f"exit {code}")
        lines = err.getvalue().strip().splitlines()
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("sandbox-bench: error: "), lines
            assert not checked
        else:
            assert len(checked) == 1
        assert _tree(Path(folder)) == before, "a refused or stopped run created files"


def test_the_manifest_holds_the_resolved_config_and_a_resume_rebuilds_it(tmp_path):
    catalog = tmp_path / "prices.toml"
    catalog.write_text((ROOT / "providers" / "pricing.toml").read_text())
    data = {
        "run": {"workloads": ["exec", "burst"], "iterations": 3, "timeout_s": 7, "seed": 9},
        "spec": {"memory_mb": 1024, "disk_mb": 2048},
        "pricing": {"catalog": str(catalog), "local_usd_per_hour": 0.5},
        "scenario": {"hours": 8, "resumes": 2},
        "workloads": {"exec": {"repeats": 3}, "burst": {"size": 4}},
        "providers": {"local": {"state_dir": str(tmp_path / "state")}},
    }
    config = build_config(data, {"output": tmp_path / "results", "concurrency": "2"})
    saved = config.to_dict()
    assert saved["pricing"] == {"catalog": str(catalog), "local_usd_per_hour": 0.5}
    assert saved["scenario"]["hours"] == 8.0 and saved["scenario"]["resumes"] == 2
    assert saved["scenario"]["active_fraction"] == SessionScenario().active_fraction
    assert saved["concurrency"] == 2 and saved["spec"]["memory_mb"] == 1024
    from bench.budget import Estimate

    manifest = new_manifest(
        config,
        run_id="r1",
        seed=9,
        config_file=tmp_path / "bench.toml",
        client={},
        workloads={},
        plan={"providers": list(config.providers)},
        providers={},
        estimate=Estimate(total_usd=0, per_provider_usd={}, assumed_op_s=1, unpriced=()),
    )
    manifest["plan"]["workloads"] = list(config.workloads)
    manifest = json.loads(json.dumps(manifest))  # as it is read back from disk
    assert manifest["config_file"] == str(tmp_path / "bench.toml")
    rebuilt = config_from_manifest(manifest, tmp_path / "results" / "r1")
    assert rebuilt == config


def test_a_relative_catalog_is_recorded_absolute(tmp_path, monkeypatch):
    (tmp_path / "p.toml").write_text((ROOT / "providers" / "pricing.toml").read_text())
    monkeypatch.chdir(tmp_path)
    config = build_config({"pricing": {"catalog": "p.toml"}}, {"output": "results"})
    assert config.to_dict()["pricing"]["catalog"] == str(tmp_path / "p.toml")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ([], "not a JSON object"),
        ({"run_id": "r", "config": {}}, "run r cannot be resumed: its manifest has no plan"),
        ({"run_id": "r", "plan": {"providers": ["local"], "workloads": []}}, "has no config"),
        (
            {"run_id": "r", "plan": {"providers": ["x"], "workloads": []}, "config": {}},
            "run r cannot be resumed: [run]: unknown provider 'x'",
        ),
    ],
)
def test_a_manifest_that_cannot_be_resumed_says_why(tmp_path, manifest, message):
    with pytest.raises(ConfigError) as info:
        config_from_manifest(manifest, tmp_path / "r")
    assert message in str(info.value)


def test_no_module_imports_the_command_line():
    """Only the entry points (``python -m bench``, the console script) import bench.cli."""
    entry_points = {ROOT / "bench" / "__main__.py", ROOT / "bench" / "cli.py"}
    hits = [
        str(path.relative_to(ROOT))
        for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("providers/**/*.py")]
        if path not in entry_points
        and ("bench.cli" in path.read_text() or "from bench import cli" in path.read_text())
    ]
    assert hits == []
