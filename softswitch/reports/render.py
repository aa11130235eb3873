"""Reports as text: an aligned table for people, CSV for spreadsheets, JSON for programs.

The renderer knows no report by name: it walks the report's `sections()` and reads
each field's format hint (`softswitch.reports.columns`), so a new figure in a report
appears in all three formats by declaring it once."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from typing import Any

from softswitch.reports.columns import Section, fmt_of
from softswitch.reports.period import Period

FORMATS = ("table", "csv", "json")
RIGHT = frozenset({"count", "seconds", "duration", "ratio", "number"})


def render(report: Any, fmt: str) -> str:
    """`report` as `fmt` (table / csv / json); the text ends with a newline."""
    if fmt == "table":
        return to_table(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "json":
        return to_json(report)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


# -- JSON: every field as is (unix times, seconds, shares 0..1, None as null) ------------


def to_json(report: Any) -> str:
    return json.dumps({"report": report.NAME, **dataclasses.asdict(report)}, indent=2) + "\n"


# -- CSV: one row per table row; a `section` column when the report has several tables --


def to_csv(report: Any) -> str:
    """Numbers unformatted (seconds, shares 0..1, rounded to 6 places), times as local
    "YYYY-MM-DD HH:MM:SS", empty cells for "no value"."""
    sections = report.sections()
    several = len(sections) > 1
    fields = _row_fields(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((["section"] if several else []) + [f.name for f in fields])
    for s in sections:
        for row in s.rows:
            cells = [_csv_cell(getattr(row, f.name), fmt_of(f), report.period) for f in fields]
            writer.writerow(([s.name] if several else []) + cells)
    return out.getvalue()


def _csv_cell(value: Any, fmt: str, period: Period) -> str:
    if value is None:
        return ""
    if fmt == "time":
        return local_time(value, period)
    if fmt == "attempts":
        return attempts_text(value)
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


# -- table ------------------------------------------------------------------------------


def to_table(report: Any) -> str:
    lines = [_title(report)]
    for f in dataclasses.fields(report):
        value = getattr(report, f.name)
        if f.name in ("period", "queues") or isinstance(value, tuple):
            continue
        if dataclasses.is_dataclass(value):
            continue
        lines.append(f"{f.name.replace('_', ' ')}: {cell(value, fmt_of(f), report.period)}")
    fields = _row_fields(report)
    groups: list[list[Section]] = []
    for s in report.sections():  # an untitled section continues the table before it
        if s.title or not groups:
            groups.append([s])
        else:
            groups[-1].append(s)
    for group in groups:
        lines.append("")
        if group[0].title:
            lines.append(group[0].title)
        if not any(s.rows for s in group):
            lines.append("(none)")
            continue
        lines += _grid(fields, [s.rows for s in group if s.rows], report.period)
    return "\n".join(lines) + "\n"


def _title(report: Any) -> str:
    queues = ", ".join(report.queues) if report.queues else "all queues"
    return f"{report.NAME} report — {period_text(report.period)} — {queues}"


def _grid(
    fields: list[dataclasses.Field], blocks: list[tuple[Any, ...]], period: Period
) -> list[str]:
    """Header, rule, then each block of rows, blocks separated by a rule (a total)."""
    header = [f.name.replace("_", " ") for f in fields]
    bodies = [[[cell(getattr(r, f.name), fmt_of(f), period) for f in fields] for r in b]
              for b in blocks]  # fmt: skip
    every = [header] + [cells for body in bodies for cells in body]
    widths = [max(len(x) for x in column) for column in zip(*every, strict=True)]
    right = [fmt_of(f) in RIGHT for f in fields]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header)]
    for body in bodies:
        out.append(rule)
        out += [line(cells) for cells in body]
    return out


def cell(value: Any, fmt: str, period: Period) -> str:
    """One value as a person reads it ("-" for no value)."""
    if value is None:
        return "-"
    if fmt == "seconds":
        return f"{value:.1f}"
    if fmt == "number":
        return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))
    if fmt == "ratio":
        return f"{value * 100:.1f}%"
    if fmt == "duration":
        return duration_text(value)
    if fmt == "time":
        return local_time(value, period)
    if fmt == "attempts":
        return attempts_text(value)
    return str(value)


def _row_fields(report: Any) -> list[dataclasses.Field]:
    """The columns: the fields of the first row type among the sections."""
    for s in report.sections():
        if s.rows:
            return list(dataclasses.fields(s.rows[0]))
    return []


# -- value formats shared by table and CSV ------------------------------------------------


def local_time(t: float, period: Period) -> str:
    return period.local(t).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(seconds: float) -> str:
    """h:mm:ss (whole seconds, rounded)."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def attempts_text(attempts: Any) -> str:
    """ "101 20s missed; 103 8s answered" (seconds rounded to 0.1, ".0" dropped)."""
    return "; ".join(f"{a.agent} {_short(a.seconds)}s {a.result}" for a in attempts)


def _short(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def period_text(period: Period) -> str:
    """ "2024-01-15 .. 2024-01-16 (Europe/Berlin)" for whole days, else both times."""
    first, last = period.local(period.start), period.local(period.end)
    if period.end > period.start and first.time() == dt.time() == last.time():
        days = period.days()
        return f"{days[0]} .. {days[-1]} ({period.timezone})"
    fmt = "%Y-%m-%d %H:%M:%S"
    return f"{first.strftime(fmt)} .. {last.strftime(fmt)} ({period.timezone})"
