"""The load report: offered, answered and lost queue calls per local day and per hour
of the day, with handling ratio, service level and waits.

Each caller's visit to a queue counts once, in the day and hour it joined (even when
its outcome falls after the range end), so every bucket adds up:
offered = answered + abandoned + timeout + key + full + empty + other + waiting."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import ClassVar

from softswitch.reports.columns import Section, col, mean, ratio
from softswitch.reports.period import Period
from softswitch.reports.visits import Row, Visit, build_visits

LEFT_REASONS = ("timeout", "key", "full", "empty")


@dataclass(frozen=True)
class LoadRow:
    label: str = col("text")  # the date, "HH:00", or "total"
    offered: int = col("count")  # callers who joined
    answered: int = col("count")  # ... and were connected to an operator
    abandoned: int = col("count")  # ... hung up while waiting
    timeout: int = col("count")  # ... left: the queue's max_wait passed
    key: int = col("count")  # ... left: pressed the exit key
    full: int = col("count")  # ... left: the queue was full when they came
    empty: int = col("count")  # ... left: nobody was logged in
    other: int = col("count")  # ... left otherwise (removed by the switch, failed)
    waiting: int = col("count")  # ... no outcome yet (still in the queue)
    handling_ratio: float | None = col("ratio")  # answered / offered
    service_level: float | None = col("ratio")  # answered within N s / offered
    avg_wait_answered: float | None = col("seconds")  # join → answer, answered callers
    max_wait_answered: float | None = col("seconds")
    avg_wait_abandoned: float | None = col("seconds")  # join → hang-up, abandoned callers


@dataclass(frozen=True)
class LoadReport:
    NAME: ClassVar[str] = "load"
    period: Period
    queues: tuple[str, ...] | None  # None: every queue
    service_seconds: float = col("number")  # the N of "answered within N seconds"
    days: tuple[LoadRow, ...]
    hours: tuple[LoadRow, ...]
    total: LoadRow

    def sections(self) -> list[Section]:
        return [
            Section("day", "By day", self.days),
            Section("total", "", (self.total,)),  # under the days in the table
            Section("hour", "By hour of day", self.hours),
        ]


def load_report(
    rows: Iterable[Row],
    start: float,
    end: float,
    timezone: str,
    *,
    queues: Collection[str] | None = None,
    service_seconds: float = 20,
) -> LoadReport:
    """Visits joined in [start, end) of the selected queues (None: all), by local day
    (every day of the range, quiet ones too) and by hour of day (0..23, summed over the
    days), and in total."""
    period = Period(start, end, timezone)
    visits = [v for v in build_visits(rows, queues) if period.contains(v.joined)]
    by_day: dict = {d: [] for d in period.days()}
    by_hour: dict[int, list[Visit]] = {h: [] for h in range(24)}
    for v in visits:
        by_day.setdefault(period.day(v.joined), []).append(v)
        by_hour[period.hour(v.joined)].append(v)
    return LoadReport(
        period=period,
        queues=tuple(sorted(queues)) if queues is not None else None,
        service_seconds=service_seconds,
        days=tuple(tally(d.isoformat(), vs, service_seconds) for d, vs in by_day.items()),
        hours=tuple(tally(f"{h:02d}:00", vs, service_seconds) for h, vs in by_hour.items()),
        total=tally("total", visits, service_seconds),
    )


def tally(label: str, visits: list[Visit], service_seconds: float) -> LoadRow:
    """One row of figures over `visits`."""
    answered = [v.wait or 0.0 for v in visits if v.outcome == "answered"]
    abandoned = [v.wait or 0.0 for v in visits if v.outcome == "abandoned"]
    left = [v.result for v in visits if v.outcome == "left"]
    offered = len(visits)
    return LoadRow(
        label=label,
        offered=offered,
        answered=len(answered),
        abandoned=len(abandoned),
        timeout=left.count("timeout"),
        key=left.count("key"),
        full=left.count("full"),
        empty=left.count("empty"),
        other=sum(1 for r in left if r not in LEFT_REASONS),
        waiting=sum(1 for v in visits if v.outcome is None),
        handling_ratio=ratio(len(answered), offered),
        service_level=ratio(sum(1 for w in answered if w <= service_seconds), offered),
        avg_wait_answered=mean(answered),
        max_wait_answered=max(answered) if answered else None,
        avg_wait_abandoned=mean(abandoned),
    )
