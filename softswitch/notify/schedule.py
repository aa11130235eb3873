"""When the daily digest runs: at `[notify] digest_time` local time, every day, for the
day before. Pure functions of (now, time of day, zone); local dates and times go
through the zone database, never "+ 86400", so a 23- or 25-hour day (daylight saving)
moves nothing: the digest stays at 08:00 local time.

A digest time that does not exist on a spring-forward day (02:30 where clocks jump from
02:00 to 03:00) runs at the wall-clock time it becomes (03:30); one that exists twice on
a fall-back day runs at its first occurrence, once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

ONE_DAY = dt.timedelta(days=1)


def parse_clock(text: str) -> dt.time:
    """The time of day of an "HH:MM" text ("08:00" -> 08:00)."""
    hh, _, mm = text.partition(":")
    return dt.time(int(hh), int(mm))


def run_moment(day: dt.date, at: dt.time, tz: str) -> float:
    """Unix time of the digest run on local date `day` (first occurrence of `at`; in a
    gap, the wall-clock time after the jump)."""
    return dt.datetime.combine(day, at, ZoneInfo(tz)).timestamp()


def today(now: float, tz: str) -> dt.date:
    return dt.datetime.fromtimestamp(now, ZoneInfo(tz)).date()


def next_run(now: float, at: str, tz: str) -> float:
    """The first digest run strictly after `now`."""
    clock = parse_clock(at)
    day = today(now, tz) - ONE_DAY
    while True:
        moment = run_moment(day, clock, tz)
        if moment > now:
            return moment
        day += ONE_DAY


def due_day(now: float, at: str, tz: str) -> dt.date | None:
    """The local day whose digest is due at `now`: yesterday, once today's run time has
    passed (until midnight, so a switch started at 09:30 still sends the 08:00 digest);
    None before today's run time."""
    day = today(now, tz)
    if run_moment(day, parse_clock(at), tz) <= now:
        return day - ONE_DAY
    return None
