"""Settings declared once (providers/settings.py): parsing, refusals, descriptions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.settings import SettingError, declared, parse, setting, to_table


class Mode(StrEnum):
    REUSE = "reuse"
    PER_ITERATION = "per_iteration"


@dataclass(frozen=True, kw_only=True)
class Example:
    iterations: int = setting(10, help="measured iterations", minimum=1, maximum=1_000_000)
    timeout_s: float = setting(60.0, help="per call", unit="s", minimum=0.001, maximum=86_400)
    names: tuple[str, ...] = setting((), help="names")
    mode: Mode = setting(Mode.REUSE, help="connection mode")
    out: Path = setting(Path("results"), help="folder")
    label: str | None = setting(None, help="label", choices=("a", "b"))
    verbose: bool = setting(False, help="talk")

    def __post_init__(self) -> None:
        if self.verbose and self.iterations > 100:
            raise ValueError("verbose runs are limited to 100 iterations")


def test_defaults_and_values_parse_from_toml_and_from_text():
    assert parse(Example, {}, where="run") == Example()
    got = parse(
        Example,
        {"iterations": 5, "timeout_s": 2, "names": ["x", "y"], "mode": "per_iteration"},
        where="run",
    )
    assert got.iterations == 5 and got.timeout_s == 2.0 and isinstance(got.timeout_s, float)
    assert got.names == ("x", "y") and got.mode is Mode.PER_ITERATION
    text = parse(Example, {"iterations": "7", "names": "a, b", "verbose": "yes"}, where="run",
                 from_text=True)  # fmt: skip
    assert (text.iterations, text.names, text.verbose) == (7, ("a", "b"), True)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"iterations": 0}, "run.iterations must be at least 1"),
        ({"iterations": 10_000_000_000}, "run.iterations must be at most 1e+06"),
        ({"iterations": 1.5}, "run.iterations must be a whole number"),
        ({"iterations": True}, "run.iterations must be a whole number"),
        ({"iterations": "3"}, "run.iterations must be a whole number"),
        ({"timeout_s": math.inf}, "run.timeout_s must be a finite number"),
        ({"timeout_s": math.nan}, "run.timeout_s must be a finite number"),
        ({"names": "x"}, "run.names must be a list"),
        ({"names": ["x", "x"]}, "run.names lists a value twice"),
        ({"names": [3]}, "run.names[0] must be a string"),
        ({"mode": "sometimes"}, "run.mode must be one of reuse, per_iteration"),
        ({"label": "c"}, "run.label must be one of a, b"),
        ({"out": 5}, "run.out must be a string"),
        ({"verbose": 1}, "run.verbose must be true or false"),
        ({"nope": 1}, "[run]: unknown key(s) nope"),
        ({"verbose": True, "iterations": 500}, "[run]: verbose runs are limited"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_key(table, message):
    with pytest.raises(SettingError) as info:
        parse(Example, table, where="run")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_table_that_is_not_a_table_is_refused():
    with pytest.raises(SettingError, match=r"\[run\] must be a table, got int"):
        parse(Example, 5, where="run")


def test_base_values_fill_keys_the_table_does_not_set():
    base = Example(iterations=3)
    assert parse(Example, {"verbose": True}, where="run", base=base).iterations == 3


def test_descriptions_and_manifest_tables_come_from_the_declaration():
    by_name = {d.name: d for d in declared(Example)}
    assert "range 0.001..86400 s" in by_name["timeout_s"].describe()
    assert "default 60" in by_name["timeout_s"].describe()
    table = to_table(Example(mode=Mode.PER_ITERATION))
    assert table["mode"] == "per_iteration" and table["out"] == "results"
    assert table["names"] == []


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["iterations", "timeout_s", "names", "mode", "out",
                                         "label", "verbose", "other"]),
                       st.one_of(st.integers(), st.floats(), st.text(), st.booleans(),
                                 st.lists(st.text()), st.none())))  # fmt: skip
def test_any_table_parses_or_is_refused_with_a_setting_error(table):
    try:
        parse(Example, table, where="run")
    except SettingError as exc:
        assert "\n" not in str(exc)
