"""The quiet benchmark's paired ratio (benchmarks/test_quiet_bench.py): each suite create is
set against the alone runs on both sides of its chunk, so that the machine's drift between
rounds does not read as the suite's neighbours."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "test_quiet_bench.py"
_SPEC = importlib.util.spec_from_file_location("quiet_bench", _PATH)
quiet = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(quiet)

speeds = st.lists(st.floats(min_value=0.3, max_value=3.0), min_size=3, max_size=9)


@given(speeds, st.floats(min_value=0.5, max_value=2.0))
def test_a_suite_slower_by_c_than_the_alone_runs_around_it_reads_c_whatever_the_drift(drift, c):
    """The machine's speed changes from round to round (``drift``); the suite's creates are
    ``c`` times the alone creates around them: the paired ratio is ``c``."""
    alone = [[5.0 * s * k for k in (0.9, 1.0, 1.1)] for s in drift]
    suite = [
        [c * 5.0 * (drift[i] + drift[i + 1]) / 2 * k for k in (0.95, 1.0, 1.05)]
        for i in range(len(drift) - 1)
    ]
    assert quiet.paired_ratio(alone, suite) == pytest.approx(c, rel=1e-9)
    low, high = quiet._paired_interval(alone, suite)
    assert low <= quiet.paired_ratio(alone, suite) * (1 + 1e-9)
    assert high >= quiet.paired_ratio(alone, suite) * (1 - 1e-9)


def test_a_suite_twice_as_slow_is_twice_as_slow():
    alone = [[5.0, 5.2, 4.8]] * 4
    suite = [[10.0, 10.4, 9.6]] * 3
    assert quiet.paired_ratio(alone, suite) == pytest.approx(2.0)
    low, high = quiet._paired_interval(alone, suite)
    assert 1.9 < low <= 2.0 <= high < 2.1
