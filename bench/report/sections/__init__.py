"""The report's built-in sections, one function each (bench/report/registry.py lists them).

Every section is ``(data: ReportData) -> View | None``: it reads the runs and what
:class:`bench.report.data.ReportData` computed from them, and returns a generic view
(bench/report/views.py), or None when it has nothing to show.
"""
