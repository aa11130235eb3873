"""Report periods: calendar days in the switch's time zone, as unix-time ranges.

Every report works on a half-open range [start, end) of unix time and buckets events by
the local day and hour of the configured zone, so "Monday 09:00" means what the office
means by it, also across a daylight-saving change (a 23- or 25-hour day)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Period:
    """[start, end) in unix seconds, read in `timezone` (an IANA name)."""

    start: float
    end: float
    timezone: str

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, t: float | None) -> bool:
        return t is not None and self.start <= t < self.end

    def local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self.zone)

    def day(self, t: float) -> dt.date:
        return self.local(t).date()

    def hour(self, t: float) -> int:
        return self.local(t).hour

    def days(self) -> list[dt.date]:
        """Every local date the period touches, in order (also days without events, so
        a quiet day shows as a row of zeros instead of vanishing)."""
        if self.end <= self.start:
            return []
        out = []
        d = self.day(self.start)
        while midnight(d, self.zone) < self.end:
            out.append(d)
            d += ONE_DAY
        return out


def midnight(day: dt.date, zone: ZoneInfo) -> float:
    """Unix time of the local midnight that starts `day`."""
    return dt.datetime.combine(day, dt.time(), zone).timestamp()


def period_for_dates(first: dt.date, last: dt.date, timezone: str) -> Period:
    """The local days `first` .. `last`, both included."""
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")
    zone = ZoneInfo(timezone)
    return Period(midnight(first, zone), midnight(last + ONE_DAY, zone), timezone)
