"""One report by name over fetched data: what `softswitch report NAME` runs, kept out of
the CLI so the choice of inputs per report is in one tested place."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from softswitch.reports.load import load_report
from softswitch.reports.missed import missed_report
from softswitch.reports.operators import operators_report
from softswitch.reports.period import Period
from softswitch.reports.source import ReportData
from softswitch.reports.staffing import staffing_report

REPORTS = ("load", "operators", "missed", "staffing")


def build_report(
    name: str,
    data: ReportData,
    period: Period,
    *,
    queues: Collection[str] | None = None,
    service_seconds: float = 20,
    target: float = 0.8,
    extensions: Collection[str] = (),
    now: float | None = None,
) -> Any:
    """The report `name` (one of REPORTS) over `data` for `period`."""
    span = (period.start, period.end, period.timezone)
    if name == "load":
        return load_report(data.events, *span, queues=queues, service_seconds=service_seconds)
    if name == "operators":
        return operators_report(data.events, *span, queues=queues, now=now)
    if name == "missed":
        return missed_report(data.events, data.calls, *span, queues=queues, extensions=extensions)
    if name == "staffing":
        return staffing_report(
            data.events, *span, queues=queues, service_seconds=service_seconds, target=target
        )
    raise ValueError(f"unknown report {name!r}; expected one of {', '.join(REPORTS)}")
