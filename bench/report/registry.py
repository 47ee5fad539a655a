"""The report's sections, in report order: an explicit registry of names.

Each entry names a section and the function that builds it, as ``"module:function"``; the
function takes the report's :class:`bench.report.data.ReportData` and returns a
:class:`bench.report.views.View`, or None when it has nothing to show. Modules are imported
only when a report is built (as providers/__init__.py does for adapters), so this list can be
read (``ReportSettings.sections``, ``report --sections`` help) without importing them.

Adding a section: write its function (its own module when it is big) and add one line here.
A workload's own parts go in its latency section instead (``Workload.report``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: name -> "module:function", in the order the report shows them.
SECTIONS: dict[str, str] = {
    "glance": "bench.report.sections.overview:glance",
    "how-to-read": "bench.report.sections.overview:how_to_read",
    "run": "bench.report.sections.run:run",
    "warnings": "bench.report.checks:warnings",
    "capabilities": "bench.report.sections.overview:capabilities",
    "fidelity": "bench.report.sections.fidelity:fidelity",
    "latency": "bench.report.sections.latency:latency",
    "calibration": "bench.report.calibration:calibration",
    "cost": "bench.report.sections.cost:cost_section",
    "claims": "bench.report.sections.claims:claims",
    "comparisons": "bench.report.sections.claims:comparisons",
    "locations": "bench.report.locations:locations",
    "method": "bench.report.sections.method:method",
}


def section_names() -> tuple[str, ...]:
    """Every section's name, in report order."""
    return tuple(SECTIONS)


def register_section(
    name: str, builder: str | Callable[..., Any], *, before: str | None = None
) -> None:
    """Add a section (a plugin's), by ``"module:function"`` or the function itself, at the end
    or before the section ``before``."""
    if name in SECTIONS:
        raise ValueError(f"report section {name!r} is already registered")
    if before is not None and before not in SECTIONS:
        raise ValueError(f"no report section {before!r} to put {name!r} before")
    items = list(SECTIONS.items())
    at = len(items) if before is None else [n for n, _ in items].index(before)
    items.insert(at, (name, builder))  # type: ignore[arg-type]
    SECTIONS.clear()
    SECTIONS.update(items)


def load(ref: Any, *, default_attribute: str) -> Any:
    """The object ``ref`` names: ``"module:attribute"``, ``"module"`` (its
    ``default_attribute``), or ``ref`` itself when it is not a string."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attribute = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute or default_attribute)
    except AttributeError:
        raise ImportError(f"{ref}: {module_name} has no {attribute or default_attribute}") from None


__all__ = ["SECTIONS", "load", "register_section", "section_names"]
