"""The staffing report: how many operators each hour of the day needs for a target
service level, by Erlang C over the load measured in the range.

Erlang C assumes random (Poisson) arrivals, exponential handle times and callers who
never give up, so it errs on the safe side when callers abandon; it answers "how many
people must be logged in and available", not "how many to schedule" (add breaks and
absence on top)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import ClassVar

from softswitch.acd.erlang import average_speed_of_answer, erlang_c, service_level
from softswitch.reports.columns import Section, col
from softswitch.reports.period import Period
from softswitch.reports.visits import Row, build_visits, in_queues


@dataclass(frozen=True)
class StaffingRow:
    hour: str = col("text")  # "HH:00", local
    calls_per_hour: float = col("number")  # callers who joined in this hour, per day
    handle_time: float | None = col("seconds")  # average talk + wrap-up (the range's)
    traffic: float | None = col("number")  # Erlang: calls_per_hour × handle_time / 3600
    agents: int | None = col("count")  # the fewest operators meeting the target
    service_level: float | None = col("ratio")  # predicted with `agents`
    wait_probability: float | None = col("ratio")  # Erlang C: a caller has to wait
    avg_speed_of_answer: float | None = col("seconds")  # predicted mean wait, all callers
    occupancy: float | None = col("ratio")  # traffic / agents


@dataclass(frozen=True)
class StaffingReport:
    NAME: ClassVar[str] = "staffing"
    period: Period
    queues: tuple[str, ...] | None  # None: every queue
    service_seconds: float = col("number")  # answered within this many seconds ...
    target: float = col("ratio")  # ... for at least this share of callers
    days: int = col("count")  # local days in the range (the divisor of calls_per_hour)
    completed: int = col("count")  # calls the handle time was measured on
    handle_time: float | None = col("seconds")  # None: no call completed in the range
    hours: tuple[StaffingRow, ...]

    def sections(self) -> list[Section]:
        return [Section("hour", "Operators needed by hour of day", self.hours)]


def agents_needed(traffic: float, handle_time: float, service_seconds: float, target: float) -> int:
    """The fewest operators n > traffic whose Erlang C service level (share answered
    within `service_seconds`) is at least `target`; 0 when there is no traffic."""
    if not 0 < target < 1:
        raise ValueError(f"target service level must be between 0 and 1, not {target}")
    if traffic <= 0:
        return 0
    n = math.floor(traffic) + 1
    while service_level(n, traffic, handle_time, service_seconds) < target:
        n += 1
    return n


def staffing_row(
    hour: str,
    calls_per_hour: float,
    handle_time: float | None,
    service_seconds: float,
    target: float,
) -> StaffingRow:
    """One hour's figures from its arrival rate and the average handle time."""
    if handle_time is None or handle_time <= 0 or calls_per_hour <= 0:
        agents = 0 if calls_per_hour <= 0 else None
        traffic = 0.0 if calls_per_hour <= 0 else None
        return StaffingRow(hour, calls_per_hour, handle_time, traffic, agents, *([None] * 4))
    traffic = calls_per_hour * handle_time / 3600
    n = agents_needed(traffic, handle_time, service_seconds, target)
    return StaffingRow(
        hour=hour,
        calls_per_hour=calls_per_hour,
        handle_time=handle_time,
        traffic=traffic,
        agents=n,
        service_level=service_level(n, traffic, handle_time, service_seconds),
        wait_probability=erlang_c(n, traffic),
        avg_speed_of_answer=average_speed_of_answer(n, traffic, handle_time),
        occupancy=traffic / n,
    )


def staffing_report(
    rows: Iterable[Row],
    start: float,
    end: float,
    timezone: str,
    *,
    queues: Collection[str] | None = None,
    service_seconds: float = 20,
    target: float = 0.8,
) -> StaffingReport:
    """Arrivals per hour of day = callers who joined in that local hour over the range
    ÷ days in the range; handle time = (talk of the calls completed in the range +
    wrap-up ended in the range) ÷ calls completed in the range."""
    if not 0 < target < 1:
        raise ValueError(f"target service level must be between 0 and 1, not {target}")
    rows = list(rows)
    period = Period(start, end, timezone)
    days = len(period.days())
    joined = [0] * 24
    for v in build_visits(rows, queues):
        if period.contains(v.joined):
            joined[period.hour(v.joined)] += 1
    completed, work = 0, 0.0
    for r in rows:
        if not period.contains(r["time"]) or not in_queues(r, queues):
            continue
        if r["kind"] == "completed":
            completed += 1
            work += float(r.get("talk_time") or 0.0)
        elif r["kind"] == "wrap_up_end":
            work += float(r.get("duration") or 0.0)
    handle_time = work / completed if completed else None
    hours = tuple(
        staffing_row(
            f"{h:02d}:00", joined[h] / days if days else 0.0, handle_time, service_seconds, target
        )
        for h in range(24)
    )
    return StaffingReport(
        period=period,
        queues=tuple(sorted(queues)) if queues is not None else None,
        service_seconds=service_seconds,
        target=target,
        days=days,
        completed=completed,
        handle_time=handle_time,
        hours=hours,
    )
