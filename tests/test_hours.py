"""The opening-hours engine of `type = "hours"` blocks (softswitch/flow/hours.py).

Every boundary is probed a second before, at and a second after it, with explicit `now`
values (no clock). Calendar used: 2026-03-23 is a Monday; in Europe/Berlin summer time
starts on Sunday 2026-03-29 (02:00 CET -> 03:00 CEST, 01:00 UTC) and ends on Sunday
2026-10-25 (03:00 CEST -> 02:00 CET, 01:00 UTC); Europe/Moscow is UTC+3 all year."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from softswitch.flow.hours import Schedule, ScheduleError

SECOND = timedelta(seconds=1)
BERLIN = ZoneInfo("Europe/Berlin")
MOSCOW = ZoneInfo("Europe/Moscow")


def local(text: str, tz: ZoneInfo = MOSCOW) -> datetime:
    """'2026-03-23 09:00' (or with seconds) as an aware datetime in `tz`."""
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def assert_opens(schedule: Schedule, at: datetime) -> None:
    """Closed a second before `at`, open at and a second after it, and next_change from
    just before points at it."""
    assert not schedule.is_open(at - SECOND), f"open a second before {at}"
    assert schedule.is_open(at), f"closed at {at}"
    assert schedule.is_open(at + SECOND), f"closed a second after {at}"
    assert schedule.next_change(at - SECOND) == at


def assert_closes(schedule: Schedule, at: datetime) -> None:
    assert schedule.is_open(at - SECOND), f"closed a second before {at}"
    assert not schedule.is_open(at), f"open at {at}"
    assert not schedule.is_open(at + SECOND), f"open a second after {at}"
    assert schedule.next_change(at - SECOND) == at


def office(*extra: str, holidays=(), working_days=(), tz="Europe/Moscow") -> Schedule:
    return Schedule.parse(
        ["mon-fri 09:00-13:00,14:00-18:00", *extra], list(holidays), list(working_days), tz
    )


# --------------------------------------------------------------------------- weekly hours


@pytest.mark.parametrize("day", ["2026-03-23", "2026-03-25", "2026-03-27"])  # mon, wed, fri
def test_every_boundary_of_a_split_working_day(day: str) -> None:
    s = office()
    assert_opens(s, local(f"{day} 09:00"))
    assert_closes(s, local(f"{day} 13:00"))
    assert_opens(s, local(f"{day} 14:00"))
    assert_closes(s, local(f"{day} 18:00"))


def test_next_change_inside_and_between_ranges() -> None:
    s = office()
    assert s.next_change(local("2026-03-23 10:00")) == local("2026-03-23 13:00")
    assert s.next_change(local("2026-03-23 13:00")) == local("2026-03-23 14:00")
    assert s.next_change(local("2026-03-23 08:00")) == local("2026-03-23 09:00")
    # at the very instant of a change, the next one is reported
    assert s.next_change(local("2026-03-23 09:00")) == local("2026-03-23 13:00")


def test_weekend_is_closed_and_friday_evening_points_at_monday() -> None:
    s = office()
    for t in ("2026-03-28 00:00", "2026-03-28 12:00", "2026-03-29 10:00", "2026-03-29 23:59:59"):
        assert not s.is_open(local(t)), t
    assert s.next_change(local("2026-03-27 18:00")) == local("2026-03-30 09:00")
    assert s.next_change(local("2026-03-28 12:00")) == local("2026-03-30 09:00")


def test_next_change_is_in_the_schedule_time_zone() -> None:
    change = office().next_change(utc("2026-03-23 05:00"))  # 08:00 in Moscow
    assert change == utc("2026-03-23 06:00")
    assert change is not None and change.utcoffset() == timedelta(hours=3)


def test_unix_time_and_aware_datetimes_in_any_zone_agree() -> None:
    s = office()
    t = local("2026-03-23 09:00")
    assert s.is_open(t.timestamp()) and not s.is_open(t.timestamp() - 1)
    assert s.is_open(t.astimezone(ZoneInfo("America/New_York")))
    assert s.next_change(t.timestamp() - 1) == t


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        office().is_open(datetime(2026, 3, 23, 10, 0))


@pytest.mark.parametrize(
    ("entries", "open_at", "closed_at"),
    [
        (["sat,sun 10:00-14:00"], ["2026-03-28 10:00", "2026-03-29 13:59"], ["2026-03-27 11:00"]),
        (["sat, sun 10:00-14:00"], ["2026-03-28 10:00", "2026-03-29 13:59"], ["2026-03-30 11:00"]),
        (["SAT 10:00-14:00"], ["2026-03-28 10:00"], ["2026-03-29 11:00"]),
        (["Saturday 10:00-14:00"], ["2026-03-28 10:00"], ["2026-03-29 11:00"]),
        (["daily 08:00-20:00"], ["2026-03-23 08:00", "2026-03-29 19:59"], ["2026-03-29 20:00"]),
        (["* 08:00-20:00"], ["2026-03-28 08:00"], ["2026-03-28 07:59"]),
        # a wrapping day range: fri, sat, sun, mon
        (["fri-mon 10:00-11:00"], ["2026-03-27 10:00", "2026-03-30 10:30"], ["2026-03-24 10:30"]),
        (["mon 9:00-9:30"], ["2026-03-23 09:00"], ["2026-03-23 09:30"]),
        (["tue,thu 12:00-13:00", "mon-wed 08:00-09:00"], ["2026-03-24 12:00", "2026-03-25 08:00"],
         ["2026-03-25 12:00", "2026-03-26 08:00"]),
    ],
)  # fmt: skip
def test_day_specs(entries: list[str], open_at: list[str], closed_at: list[str]) -> None:
    s = Schedule.parse(entries, [], [], "Europe/Moscow")
    for t in open_at:
        assert s.is_open(local(t)), t
    for t in closed_at:
        assert not s.is_open(local(t)), t


def test_whole_day_and_24_00_end() -> None:
    s = Schedule.parse(["mon 00:00-24:00"], [], [], "Europe/Moscow")
    assert_opens(s, local("2026-03-23 00:00"))
    assert_closes(s, local("2026-03-24 00:00"))
    evening = Schedule.parse(["mon 18:00-24:00"], [], [], "Europe/Moscow")
    assert_closes(evening, local("2026-03-24 00:00"))


def test_ranges_touching_at_midnight_merge_in_next_change() -> None:
    s = Schedule.parse(["mon 18:00-24:00", "tue 00:00-06:00"], [], [], "Europe/Moscow")
    assert s.is_open(local("2026-03-23 23:59:59")) and s.is_open(local("2026-03-24 00:00"))
    assert s.next_change(local("2026-03-23 19:00")) == local("2026-03-24 06:00")


def test_overlapping_entries_are_their_union() -> None:
    s = Schedule.parse(["mon-fri 09:00-18:00", "fri 17:00-20:00"], [], [], "Europe/Moscow")
    assert s.next_change(local("2026-03-27 10:00")) == local("2026-03-27 20:00")
    assert_closes(s, local("2026-03-27 20:00"))
    assert_closes(s, local("2026-03-26 18:00"))


def test_always_open_and_never_open_never_change() -> None:
    always = Schedule.parse(["daily 00:00-24:00"], [], [], "Europe/Berlin")
    assert always.is_open(local("2026-03-29 02:30", BERLIN))
    assert always.next_change(local("2026-03-23 12:00")) is None
    never = Schedule.parse([], [], [], "UTC")
    assert not never.is_open(utc("2026-03-23 12:00"))
    assert never.next_change(utc("2026-03-23 12:00")) is None


# --------------------------------------------------------------------------- overnight


def test_overnight_range_belongs_to_its_start_day() -> None:
    s = Schedule.parse(["fri 22:00-02:00"], [], [], "Europe/Moscow")
    assert_opens(s, local("2026-03-27 22:00"))  # friday
    assert_closes(s, local("2026-03-28 02:00"))  # saturday
    # across midnight it stays open, and the change reported is 02:00, not midnight
    assert s.is_open(local("2026-03-27 23:59:59")) and s.is_open(local("2026-03-28 00:00"))
    assert s.next_change(local("2026-03-27 22:00")) == local("2026-03-28 02:00")
    # thursday night and saturday night are not part of it
    assert not s.is_open(local("2026-03-27 01:00"))
    assert not s.is_open(local("2026-03-28 23:00"))
    assert not s.is_open(local("2026-03-29 01:00"))


def test_overnight_from_sunday_runs_into_monday() -> None:
    s = Schedule.parse(["sun 22:00-06:00"], [], [], "Europe/Moscow")
    assert_opens(s, local("2026-03-29 22:00"))
    assert_closes(s, local("2026-03-30 06:00"))


def test_overnight_to_midnight_written_as_00_00() -> None:
    s = Schedule.parse(["mon 22:00-00:00"], [], [], "Europe/Moscow")
    assert_closes(s, local("2026-03-24 00:00"))


def test_night_shift_every_weekday_chains() -> None:
    s = Schedule.parse(["mon-fri 18:00-09:00"], [], [], "Europe/Moscow")
    assert_closes(s, local("2026-03-24 09:00"))  # mon night ends tue morning
    assert_opens(s, local("2026-03-24 18:00"))
    assert_closes(s, local("2026-03-28 09:00"))  # fri night ends sat morning
    assert not s.is_open(local("2026-03-28 20:00"))  # no saturday night
    assert s.next_change(local("2026-03-28 09:00")) == local("2026-03-30 18:00")


# --------------------------------------------------------------------------- holidays


def test_holiday_closes_a_working_day_completely() -> None:
    s = office(holidays=["2026-03-25"])  # wednesday
    for t in ("2026-03-25 09:00", "2026-03-25 12:00", "2026-03-25 17:59:59"):
        assert not s.is_open(local(t)), t
    assert_closes(s, local("2026-03-24 18:00"))
    assert s.next_change(local("2026-03-24 18:00")) == local("2026-03-26 09:00")
    assert_opens(s, local("2026-03-26 09:00"))


def test_holiday_cuts_an_overnight_range_at_midnight() -> None:
    """The documented rule: a holiday closes its calendar date from 00:00, even the tail
    of last night's range."""
    s = Schedule.parse(["fri 22:00-02:00"], ["2026-03-28"], [], "Europe/Moscow")
    assert_opens(s, local("2026-03-27 22:00"))
    assert_closes(s, local("2026-03-28 00:00"))
    assert s.next_change(local("2026-03-27 22:00")) == local("2026-03-28 00:00")
    assert not s.is_open(local("2026-03-28 01:00"))


def test_overnight_range_of_a_holiday_does_not_start() -> None:
    s = Schedule.parse(["fri 22:00-02:00"], ["2026-03-27"], [], "Europe/Moscow")
    assert not s.is_open(local("2026-03-27 23:00"))
    assert not s.is_open(local("2026-03-28 01:00"))
    assert s.next_change(local("2026-03-27 12:00")) == local("2026-04-03 22:00")


def test_holiday_on_a_closed_day_changes_nothing() -> None:
    s = office(holidays=["2026-03-28"])  # a saturday
    assert s.next_change(local("2026-03-27 18:00")) == local("2026-03-30 09:00")


def test_next_change_skips_a_run_of_holidays() -> None:
    s = office(holidays=[f"2026-01-0{d}" for d in range(1, 10)])  # jan 1-9
    assert s.next_change(local("2025-12-31 12:00")) == local("2025-12-31 13:00")
    assert s.next_change(local("2025-12-31 18:00")) == local("2026-01-12 09:00")


def test_always_open_closes_for_a_far_holiday() -> None:
    s = Schedule.parse(["daily 00:00-24:00"], ["2030-01-01"], [], "Europe/Moscow")
    assert s.next_change(local("2026-03-23 12:00")) == local("2030-01-01 00:00")
    assert s.next_change(local("2030-01-01 12:00")) == local("2030-01-02 00:00")
    assert s.next_change(local("2030-01-02 12:00")) is None


# --------------------------------------------------------------------------- working days


def test_extra_working_day_with_hours_opens_a_saturday() -> None:
    s = office(working_days=["2026-03-28 10:00-15:00"])
    assert_opens(s, local("2026-03-28 10:00"))
    assert_closes(s, local("2026-03-28 15:00"))
    assert s.next_change(local("2026-03-27 18:00")) == local("2026-03-28 10:00")
    assert not s.is_open(local("2026-04-04 12:00"))  # only that saturday


def test_extra_working_day_without_hours_uses_09_to_18() -> None:
    s = office(working_days=["2026-03-29"])
    assert_opens(s, local("2026-03-29 09:00"))
    assert_closes(s, local("2026-03-29 18:00"))


def test_working_day_with_several_ranges() -> None:
    s = office(working_days=["2026-03-28 09:00-11:00,12:00-13:00"])
    assert_closes(s, local("2026-03-28 11:00"))
    assert_opens(s, local("2026-03-28 12:00"))
    assert_closes(s, local("2026-03-28 13:00"))


def test_working_day_replaces_the_hours_of_a_normal_day() -> None:
    s = office(working_days=["2026-03-27 10:00-12:00"])  # a short friday
    assert not s.is_open(local("2026-03-27 09:30"))
    assert_opens(s, local("2026-03-27 10:00"))
    assert_closes(s, local("2026-03-27 12:00"))
    assert not s.is_open(local("2026-03-27 15:00"))


def test_overnight_working_day_runs_into_the_next_date() -> None:
    s = Schedule.parse([], [], ["2026-03-28 20:00-02:00"], "Europe/Moscow")
    assert_opens(s, local("2026-03-28 20:00"))
    assert_closes(s, local("2026-03-29 02:00"))


# --------------------------------------------------------------------------- daylight saving


def test_berlin_hours_follow_the_wall_clock_across_spring_forward() -> None:
    s = office(tz="Europe/Berlin")
    # before: 09:00 CET = 08:00 UTC; after: 09:00 CEST = 07:00 UTC
    assert_opens(s, utc("2026-03-23 08:00"))
    assert_closes(s, utc("2026-03-27 17:00"))
    assert_opens(s, utc("2026-03-30 07:00"))
    assert_closes(s, utc("2026-03-30 16:00"))
    # the weekend is one hour shorter
    gap = s.next_change(utc("2026-03-27 17:00")) - utc("2026-03-27 17:00")
    assert gap == timedelta(hours=62)


def test_berlin_hours_follow_the_wall_clock_across_fall_back() -> None:
    s = office(tz="Europe/Berlin")
    assert_closes(s, utc("2026-10-23 16:00"))  # 18:00 CEST
    assert_opens(s, utc("2026-10-26 08:00"))  # 09:00 CET
    assert s.next_change(utc("2026-10-23 16:00")) - utc("2026-10-23 16:00") == timedelta(hours=64)


def test_berlin_range_ending_in_the_skipped_hour_ends_at_the_jump() -> None:
    s = Schedule.parse(["sun 01:00-02:30"], [], [], "Europe/Berlin")
    assert_opens(s, utc("2026-03-29 00:00"))  # 01:00 CET
    assert_closes(s, utc("2026-03-29 01:00"))  # 02:00 CET became 03:00 CEST
    assert s.next_change(utc("2026-03-29 00:30")) == local("2026-03-29 03:00", BERLIN)


def test_berlin_range_starting_in_the_skipped_hour_starts_at_the_jump() -> None:
    s = Schedule.parse(["sun 02:30-04:00"], [], [], "Europe/Berlin")
    assert_opens(s, utc("2026-03-29 01:00"))
    assert_closes(s, utc("2026-03-29 02:00"))  # 04:00 CEST
    # a range wholly inside the skipped hour does not happen that day
    inside = Schedule.parse(["sun 02:10-02:50"], [], [], "Europe/Berlin")
    assert inside.next_change(utc("2026-03-28 12:00")) == local("2026-04-05 02:10", BERLIN)


def test_berlin_repeated_hour_means_its_first_occurrence() -> None:
    s = Schedule.parse(["sun 01:00-02:30"], [], [], "Europe/Berlin")
    assert_opens(s, utc("2026-10-24 23:00"))  # 01:00 CEST
    assert_closes(s, utc("2026-10-25 00:30"))  # the first 02:30 (CEST)
    assert not s.is_open(utc("2026-10-25 01:15"))  # the second 02:15 (CET)
    assert s.next_change(utc("2026-10-25 00:30")) == local("2026-11-01 01:00", BERLIN)
    # the change in the repeated hour shows local time and still compares as an instant
    change = s.next_change(utc("2026-10-25 00:00"))
    assert change is not None and (change.hour, change.minute) == (2, 30)
    assert change.utcoffset() == timedelta(hours=2) and change == utc("2026-10-25 00:30")


def test_berlin_overnight_range_over_the_fall_back_night_lasts_an_hour_longer() -> None:
    s = Schedule.parse(["sat 22:00-06:00"], [], [], "Europe/Berlin")
    assert_opens(s, utc("2026-10-24 20:00"))  # 22:00 CEST
    assert_closes(s, utc("2026-10-25 05:00"))  # 06:00 CET
    assert s.is_open(utc("2026-10-25 01:30"))  # in the repeated hour


def test_berlin_overnight_range_over_the_spring_forward_night() -> None:
    s = Schedule.parse(["sat 22:00-06:00"], [], [], "Europe/Berlin")
    assert_opens(s, utc("2026-03-28 21:00"))  # 22:00 CET
    assert_closes(s, utc("2026-03-29 04:00"))  # 06:00 CEST: 7 hours of opening
    assert s.is_open(utc("2026-03-29 01:00"))  # the jump itself


@pytest.mark.parametrize("day", ["2026-01-12", "2026-03-30", "2026-07-13", "2026-10-26"])
def test_moscow_has_no_daylight_saving(day: str) -> None:
    s = office()
    assert_opens(s, utc(f"{day} 06:00"))
    assert_closes(s, utc(f"{day} 15:00"))


def test_same_wall_clock_hours_in_different_zones() -> None:
    berlin, moscow = office(tz="Europe/Berlin"), office(tz="Europe/Moscow")
    t = utc("2026-07-13 07:30")  # 09:30 CEST, 10:30 MSK
    assert berlin.is_open(t) and moscow.is_open(t)
    t = utc("2026-07-13 06:30")  # 08:30 CEST, 09:30 MSK
    assert not berlin.is_open(t) and moscow.is_open(t)


# --------------------------------------------------------------------------- bad entries


@pytest.mark.parametrize(
    ("field", "entry", "expect"),
    [
        ("schedule", "mon-fry 09:00-18:00", 'unknown day "fry"; did you mean "fri"?'),
        ("schedule", "weekdays 09:00-18:00", 'unknown day "weekdays"'),
        ("schedule", "sat", "no hours given; expected days then hours"),
        ("schedule", "09:00-18:00", 'no days given; expected days then hours, e.g. "daily 09:00'),
        ("schedule", "", "empty entry"),
        ("schedule", "mon 25:00-26:00", '"25:00" is not a valid time; expected 00:00 to 23:59'),
        ("schedule", "mon 09:60-18:00", '"09:60" is not a valid time'),
        ("schedule", "mon 24:00-02:00", '"24:00" is not a valid time; expected 00:00 to 23:59'),
        ("schedule", "mon 09:00-24:30", '"24:30" is not a valid time; expected 00:00 to 24:00'),
        ("schedule", "mon 9-18", '"9" is not a time; expected HH:MM'),
        ("schedule", "mon 09:00", '"09:00" is not a time range; expected "09:00-18:00"'),
        ("schedule", "mon 09:00-09:00", "is empty (it starts when it ends)"),
        ("schedule", "mon 09:00-13:00,", "empty time range"),
        ("schedule", "mon-mon 09:00-13:00", "starts and ends on the same day"),
        ("schedule", "mon,,tue 09:00-13:00", "empty day in the list"),
        ("schedule", "2026-12-31 09:00-13:00", "a date belongs in holidays or working_days"),
        ("holidays", "2026-13-01", '"2026-13-01" is not a real date'),
        ("holidays", "31.12.2026", "is not a date; expected YYYY-MM-DD"),
        ("holidays", "2026-12-31 10:00-12:00", "takes no hours"),
        ("working_days", "2027-01-09 from 10", '"from 10" is not a time range'),
        ("working_days", "2027-01-09 10:00-15:60", '"15:60" is not a valid time'),
        ("working_days", "09.01.2027", "is not a date; expected YYYY-MM-DD"),
    ],
)
def test_bad_entry_names_the_entry_and_what_is_expected(field: str, entry: str, expect: str):
    lists = {"schedule": ["mon-fri 09:00-18:00"], "holidays": [], "working_days": []}
    lists[field].append(entry)
    index = len(lists[field]) - 1
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(lists["schedule"], lists["holidays"], lists["working_days"], "UTC")
    ((got_field, got_index, message),) = info.value.problems
    assert (got_field, got_index) == (field, index)
    assert expect in message
    if entry:
        assert f'"{entry}"' in message  # which entry
    assert f"{field} entry {index + 1}: " in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_bad_entry_is_reported() -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(
            ["mon 09:00-18:00", "tue x", "wed 10:00-09:00", "thu"],
            ["2026-01-01", "2026-02-30", "2026-01-01"],
            ["2026-01-01 10:00-12:00", "2026-05-09", "2026-05-09 10:00-11:00"],
            "UTC",
        )
    assert [(f, i) for f, i, _ in info.value.problems] == [
        ("schedule", 1),
        ("schedule", 3),
        ("holidays", 1),
        ("holidays", 2),
        ("working_days", 0),
        ("working_days", 2),
    ]
    messages = [m for _, _, m in info.value.problems]
    assert "listed twice (also as entry 1)" in messages[3]
    assert "is also a holiday (holidays entry 1)" in messages[4]
    assert "listed twice (also as entry 2)" in messages[5]


def test_non_string_entries_are_reported() -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(["mon 09:00-18:00", 9], [20261231], [], "UTC")  # type: ignore[list-item]
    assert [(f, i) for f, i, _ in info.value.problems] == [("schedule", 1), ("holidays", 0)]
    assert "is not a string" in str(info.value)


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match='"Mars/Olympus" is not a known time zone'):
        Schedule.parse(["mon 09:00-18:00"], [], [], "Mars/Olympus")
