"""Call-centre reports over the queue log: load, operators, missed callers, staffing.

Each report is a pure function of queue_log rows (and, for missed callers, calls rows),
a range [start, end) of unix time and a time zone, returning dataclasses; `render`
turns one into an aligned table, CSV or JSON; `fetch` reads the rows from a Store.
`softswitch report ...` (softswitch/cli.py) puts them together; docs/reports.md says
what every figure means."""

from softswitch.reports.build import REPORTS, build_report
from softswitch.reports.load import LoadReport, LoadRow, load_report
from softswitch.reports.missed import MissedReport, MissedRow, missed_report
from softswitch.reports.operators import OperatorRow, OperatorsReport, operators_report
from softswitch.reports.period import Period, period_for_dates
from softswitch.reports.render import FORMATS, render
from softswitch.reports.source import ReportData, fetch
from softswitch.reports.staffing import (
    StaffingReport,
    StaffingRow,
    agents_needed,
    staffing_report,
)
from softswitch.reports.visits import Visit, build_visits

__all__ = [
    "FORMATS",
    "REPORTS",
    "LoadReport",
    "LoadRow",
    "MissedReport",
    "MissedRow",
    "OperatorRow",
    "OperatorsReport",
    "Period",
    "ReportData",
    "StaffingReport",
    "StaffingRow",
    "Visit",
    "agents_needed",
    "build_report",
    "build_visits",
    "fetch",
    "load_report",
    "missed_report",
    "operators_report",
    "period_for_dates",
    "render",
    "staffing_report",
]
