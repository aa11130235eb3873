"""Opening hours of `type = "hours"` blocks: a pure schedule engine (no I/O, no clock).

    schedule = Schedule.parse(
        ["mon-fri 09:00-13:00,14:00-18:00", "sat 10:00-14:00", "fri 22:00-02:00"],
        holidays=["2026-12-31"],
        working_days=["2027-01-09 10:00-15:00", "2027-01-10"],
        tz="Europe/Berlin",
    )
    schedule.is_open(time.time())      # -> bool
    schedule.next_change(time.time())  # -> aware datetime of the next open/close, or None

Rules (all times are wall-clock times in `tz`, the switch's time zone):

* A schedule entry is `DAYS RANGES`. DAYS: `mon`..`sun` (full names too, any case),
  ranges `mon-fri` (wrapping: `fri-mon` = fri, sat, sun, mon), lists `sat,sun`, or
  `daily` / `*`. RANGES: one or more `HH:MM-HH:MM` separated by commas. `24:00` may end a
  range; `00:00-24:00` is the whole day.
* A range whose end is not after its start runs overnight: `fri 22:00-02:00` belongs to
  Friday and lasts until Saturday 02:00.
* Entries add up (their union is open); overlapping ranges are fine.
* `holidays` (`YYYY-MM-DD`) close that calendar date completely, from 00:00 to 24:00,
  including the part after midnight of an overnight range begun the evening before
  (`fri 22:00-02:00` with Saturday a holiday closes at Saturday 00:00). The ranges of the
  holiday itself, overnight ones included, do not run.
* `working_days` (`YYYY-MM-DD` = 09:00-18:00, or `YYYY-MM-DD HH:MM-HH:MM[,HH:MM-HH:MM]`)
  replace that date's weekly hours with the ones given: they open an otherwise closed date
  (a Saturday, a bridge day) or change a normal day's hours. A date cannot be both a
  holiday and a working day.
* Daylight saving: a range opens and closes at the instants the wall clock shows its
  times, so `09:00-18:00` is 09:00 local before and after a change. A time that happens
  twice (clocks go back) means its first occurrence; a time that does not exist (clocks
  jump forward over it) means the instant of the jump.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

__all__ = ["Schedule", "ScheduleError", "DEFAULT_WORKING_HOURS", "DAY_NAMES"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {n: i for names in (DAY_NAMES, _FULL_DAY_NAMES) for i, n in enumerate(names)}
_DAY_INDEX.update({"tues": 1, "thur": 3, "thurs": 3})
_ALL_DAYS = ("daily", "*")

DEFAULT_WORKING_HOURS = "09:00-18:00"  # a working day written without hours
DAY = 24 * 60

# (start, end) in minutes from the owning date's midnight; end > 1440 runs into the next
# date (an overnight range), so end - start is at most 1440.
Range = tuple[int, int]

_SCHEDULE_EXAMPLE = '"mon-fri 09:00-18:00", "sat,sun 10:00-14:00" or "fri 22:00-02:00"'
_RANGE_EXAMPLE = '"09:00-18:00" (several: "09:00-13:00,14:00-18:00")'
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")


class _Bad(Exception):
    """One entry is wrong; the message says what is expected."""


class ScheduleError(ValueError):
    """Some entries are wrong. `problems` holds `(field, index, message)` for each one:
    `field` is "schedule", "holidays" or "working_days", `index` counts from 0 and
    `message` names the entry and what is expected."""

    def __init__(self, problems: Iterable[tuple[str, int, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            "; ".join(f"{field} entry {i + 1}: {message}" for field, i, message in self.problems)
        )


# --------------------------------------------------------------------------- parsing


def _parse_time(text: str, entry: str, *, is_end: bool) -> int:
    m = _TIME_RE.fullmatch(text)
    if not m:
        raise _Bad(f'"{entry}": "{text}" is not a time; expected HH:MM such as "09:00"')
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not is_end)):
        allowed = "00:00 to 24:00" if is_end else "00:00 to 23:59"
        raise _Bad(f'"{entry}": "{text}" is not a valid time; expected {allowed}')
    return hours * 60 + minutes


def _parse_ranges(text: str, entry: str) -> tuple[Range, ...]:
    out: list[Range] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise _Bad(f'"{entry}": empty time range; expected {_RANGE_EXAMPLE}')
        start_text, sep, end_text = part.partition("-")
        if not sep:
            raise _Bad(f'"{entry}": "{part}" is not a time range; expected {_RANGE_EXAMPLE}')
        start = _parse_time(start_text.strip(), entry, is_end=False)
        end = _parse_time(end_text.strip(), entry, is_end=True)
        if end == start:
            raise _Bad(
                f'"{entry}": "{part}" is empty (it starts when it ends); expected a later end,'
                ' or "00:00-24:00" for the whole day'
            )
        if end < start:
            end += DAY  # overnight: runs into the next day
        out.append((start, end))
    return tuple(out)


def _day_index(name: str, entry: str) -> int:
    key = name.strip().lower()
    if key in _DAY_INDEX:
        return _DAY_INDEX[key]
    close = difflib.get_close_matches(key, DAY_NAMES, n=1, cutoff=0.6) or (
        difflib.get_close_matches(key, _FULL_DAY_NAMES, n=1, cutoff=0.6)
    )
    hint = f'did you mean "{close[0]}"? ' if close else ""
    raise _Bad(
        f'"{entry}": unknown day "{name.strip()}"; {hint}expected mon, tue, wed, thu, fri,'
        ' sat, sun, a range like "mon-fri", or "daily"'
    )


def _parse_days(text: str, entry: str) -> tuple[int, ...]:
    days: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise _Bad(f'"{entry}": empty day in the list; expected e.g. "sat,sun"')
        if item.lower() in _ALL_DAYS:
            days.extend(range(7))
            continue
        first, sep, last = item.partition("-")
        if sep:
            a, b = _day_index(first, entry), _day_index(last, entry)
            if a == b:
                raise _Bad(f'"{entry}": "{item}" starts and ends on the same day; expected'
                           ' e.g. "mon-fri", or just one day name')  # fmt: skip
            days.extend((a + k) % 7 for k in range((b - a) % 7 + 1))
        else:
            days.append(_day_index(item, entry))
    return tuple(sorted(set(days)))


def parse_schedule_entry(entry: str) -> tuple[tuple[int, ...], tuple[Range, ...]]:
    """`"mon-fri 09:00-18:00"` -> (weekdays with Monday = 0, ranges); ValueError if bad."""
    try:
        return _parse_schedule_entry(entry)
    except _Bad as e:
        raise ValueError(str(e)) from None


def _parse_schedule_entry(entry: str) -> tuple[tuple[int, ...], tuple[Range, ...]]:
    text = entry.strip()
    # the days are everything before the first time (so "sat, sun 10:00-14:00" works too)
    m = re.search(r"\d", text)
    if not text:
        raise _Bad(f"empty entry; expected e.g. {_SCHEDULE_EXAMPLE}")
    if m is None:
        raise _Bad(f'"{entry}": no hours given; expected days then hours, e.g. {_SCHEDULE_EXAMPLE}')
    days_text, ranges_text = text[: m.start()].strip(), text[m.start() :]
    if _DATE_RE.match(text):
        raise _Bad(f'"{entry}": a date belongs in holidays or working_days; expected'
                   f" days of the week, e.g. {_SCHEDULE_EXAMPLE}")  # fmt: skip
    if not days_text:
        raise _Bad(
            f'"{entry}": no days given; expected days then hours, e.g. "daily {ranges_text}"'
            f" or {_SCHEDULE_EXAMPLE}"
        )
    return _parse_days(days_text, entry), _parse_ranges(ranges_text, entry)


def _parse_date(text: str, entry: str) -> date:
    m = _DATE_RE.fullmatch(text)
    if not m:
        raise _Bad(f'"{entry}": "{text}" is not a date; expected YYYY-MM-DD such as "2026-12-31"')
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as e:
        raise _Bad(f'"{entry}": "{text}" is not a real date ({e}); expected YYYY-MM-DD') from None


def parse_holiday(entry: str) -> date:
    """`"2026-12-31"` -> the date; ValueError if bad."""
    try:
        return _parse_holiday(entry)
    except _Bad as e:
        raise ValueError(str(e)) from None


def _parse_holiday(entry: str) -> date:
    text = entry.strip()
    if " " in text or "\t" in text:
        raise _Bad(f'"{entry}": a holiday is closed all day, so it takes no hours; expected'
                   ' just YYYY-MM-DD (hours belong in working_days)')  # fmt: skip
    return _parse_date(text, entry)


def parse_working_day(entry: str) -> tuple[date, tuple[Range, ...]]:
    """`"2027-01-09 10:00-15:00"` or `"2027-01-09"` -> (date, ranges); ValueError if bad."""
    try:
        return _parse_working_day(entry)
    except _Bad as e:
        raise ValueError(str(e)) from None


def _parse_working_day(entry: str) -> tuple[date, tuple[Range, ...]]:
    text = entry.strip()
    date_text, _, ranges_text = text.partition(" ")
    day = _parse_date(date_text, entry)
    ranges_text = ranges_text.strip()
    if not ranges_text:
        return day, _parse_ranges(DEFAULT_WORKING_HOURS, entry)
    if not ranges_text[0].isdigit():
        raise _Bad(f'"{entry}": "{ranges_text}" is not a time range; expected'
                   f' "YYYY-MM-DD" or "YYYY-MM-DD HH:MM-HH:MM[,HH:MM-HH:MM]"')  # fmt: skip
    return day, _parse_ranges(ranges_text, entry)


def _resolve_zone(tz: str | tzinfo) -> tzinfo:
    if not isinstance(tz, str):
        return tz
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f'"{tz}" is not a known time zone; expected an IANA name like'
                         ' "Europe/Moscow" or "UTC"') from None  # fmt: skip


# --------------------------------------------------------------------------- the schedule


def _as_utc(now: datetime | float | int) -> datetime:
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime or a unix time")
        return now.astimezone(UTC)
    return datetime.fromtimestamp(now, UTC)


@dataclass(frozen=True, eq=False)
class Schedule:
    """Parsed opening hours; build it with `Schedule.parse`."""

    weekly: tuple[tuple[Range, ...], ...]  # 7 entries, Monday first
    holidays: frozenset[date]
    working_days: Mapping[date, tuple[Range, ...]]
    tz: tzinfo

    @classmethod
    def parse(
        cls,
        schedule: Iterable[str],
        holidays: Iterable[str] = (),
        working_days: Iterable[str] = (),
        tz: str | tzinfo = "UTC",
    ) -> Schedule:
        """Parse the three lists of an hours block; `ScheduleError` (a ValueError) lists
        every bad entry, ValueError alone for an unknown time zone."""
        zone = _resolve_zone(tz)
        problems: list[tuple[str, int, str]] = []
        weekly: list[list[Range]] = [[] for _ in range(7)]
        for i, entry in enumerate(schedule):
            try:
                if not isinstance(entry, str):
                    raise _Bad(f"{entry!r} is not a string; expected e.g. {_SCHEDULE_EXAMPLE}")
                days, ranges = _parse_schedule_entry(entry)
            except _Bad as e:
                problems.append(("schedule", i, str(e)))
                continue
            for d in days:
                weekly[d].extend(ranges)
        closed: dict[date, int] = {}
        for i, entry in enumerate(holidays):
            try:
                if not isinstance(entry, str):
                    raise _Bad(f'{entry!r} is not a string; expected "YYYY-MM-DD" in quotes')
                day = _parse_holiday(entry)
                if day in closed:
                    raise _Bad(f'"{entry}" is listed twice (also as entry {closed[day] + 1})')
            except _Bad as e:
                problems.append(("holidays", i, str(e)))
                continue
            closed[day] = i
        extra: dict[date, tuple[Range, ...]] = {}
        extra_index: dict[date, int] = {}
        for i, entry in enumerate(working_days):
            try:
                if not isinstance(entry, str):
                    raise _Bad(f'{entry!r} is not a string; expected "YYYY-MM-DD HH:MM-HH:MM"')
                day, ranges = _parse_working_day(entry)
                if day in extra:
                    raise _Bad(f'"{entry}": {day} is listed twice (also as entry'
                               f" {extra_index[day] + 1}); expected one entry per date,"
                               ' with several ranges as "10:00-12:00,13:00-15:00"')  # fmt: skip
                if day in closed:
                    raise _Bad(
                        f'"{entry}": {day} is also a holiday (holidays entry {closed[day] + 1});'
                        " expected a date to be one or the other"
                    )
            except _Bad as e:
                problems.append(("working_days", i, str(e)))
                continue
            extra[day], extra_index[day] = ranges, i
        if problems:
            raise ScheduleError(problems)
        return cls(
            weekly=tuple(tuple(sorted(r)) for r in weekly),
            holidays=frozenset(closed),
            working_days={d: tuple(sorted(r)) for d, r in extra.items()},
            tz=zone,
        )

    # -- queries

    def is_open(self, now: datetime | float) -> bool:
        """Whether `now` (an aware datetime or a unix time) falls in opening hours."""
        t = _as_utc(now)
        today = t.astimezone(self.tz).date()
        return any(
            start <= t < end
            for day in (today - timedelta(days=1), today, today + timedelta(days=1))
            for start, end in self.intervals_on(day)
        )

    def next_change(self, now: datetime | float) -> datetime | None:
        """The next instant after `now` at which `is_open` changes, or None if it never
        changes again (always open, or never open again, from `now` on).

        The result shows the local wall time: it carries the zone's UTC offset at that
        instant as a fixed-offset tzinfo (a ZoneInfo datetime in a repeated hour would
        compare unequal to the same instant in any other zone)."""
        t = _as_utc(now)
        today = t.astimezone(self.tz).date()
        # 9 days after the last holiday/working day only the weekly pattern is left, so
        # if nothing has changed by then, nothing ever will
        last = max([today, *self.holidays, *self.working_days]) + timedelta(days=9)
        open_until: datetime | None = None  # while open: the end of the open stretch
        day = today - timedelta(days=1)
        while True:
            # a date's intervals start at or after its local midnight and before the next
            # one's, so walking dates in order yields starts in order
            for start, end in self.intervals_on(day):
                if open_until is None:
                    if end <= t:
                        continue
                    if start > t:
                        return self._local(start)  # closed now: the next opening
                    open_until = end  # open now
                elif start <= open_until:  # touching or overlapping: still open
                    open_until = max(open_until, end)
                else:
                    return self._local(open_until)
            day += timedelta(days=1)
            if open_until is not None and open_until < self._instant(day, 0):
                return self._local(open_until)  # nothing later can start early enough
            if day > last:
                return None

    def _local(self, instant: datetime) -> datetime:
        wall = instant.astimezone(self.tz)
        offset = wall.utcoffset()
        assert offset is not None
        return wall.replace(tzinfo=timezone(offset, wall.tzname()), fold=0)

    def ranges_on(self, day: date) -> tuple[Range, ...]:
        """The ranges owned by a local calendar date (before holiday clipping)."""
        if day in self.working_days:
            return self.working_days[day]
        if day in self.holidays:
            return ()
        return self.weekly[day.weekday()]

    def intervals_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open intervals (UTC, end exclusive) owned by a local date, sorted by start;
        an overnight range is cut at midnight when the next date is a holiday."""
        out: list[tuple[datetime, datetime]] = []
        next_is_holiday = day + timedelta(days=1) in self.holidays
        for start, end in self.ranges_on(day):
            if next_is_holiday:
                end = min(end, DAY)
            a, b = self._instant(day, start), self._instant(day, end)
            if a < b:  # both ends in one DST gap: nothing left
                out.append((a, b))
        return out

    def _instant(self, day: date, minutes: int) -> datetime:
        """The UTC instant the local wall clock shows `day` + `minutes`."""
        wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if first.astimezone(self.tz).replace(tzinfo=None) == wall:
            return first  # exists (fold=0 is the first of two occurrences)
        # in a gap (clocks jumped over it): the instant of the jump, which lies between
        # the two readings of the wall time with the offsets before and after it
        other = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        lo, hi = min(first, other), max(first, other)
        after = hi.astimezone(self.tz).utcoffset()
        while hi - lo > timedelta(seconds=1):
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if mid.astimezone(self.tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi
