"""Reports over a hand-written queue log (softswitch/reports/).

One event log, two queues (sales, support), three operators (101, 102, 103), two days
(Mon 15 and Tue 16 January 2024, Europe/Berlin = UTC+1, no DST change). Every expected
figure below is worked out by hand from that log, with the arithmetic in comments, so
a test failure says which figure moved and why it was what it was.

The log, in local time (J14 = Sun 14 Jan, J15, J16, J17):

  operators
    103 login J14 23:00, logout J15 01:00 (before the range → 1 h inside it)
    101 login J15 08:00, pause (lunch) 10:00-10:30, pause (meeting) 11:30, logout 12:00
        with no unpause (as the store writes it when closing sessions after a crash):
        the logout ends the pause, which must not run on into 101's next session
    103 login J15 08:00, logout J15 17:00
    101 login J15 20:00, logout J16 02:00 (across midnight)
    102 login J16 08:00, never logs out (still open at the end)
    102 auto-paused J16 08:51:10 (3 misses in support), unpaused 09:10:00
    102 paused (meeting) J16 23:30, never unpaused

  callers (joined → what happened)
    c0  sales   J14 23:59:50 → abandoned J15 00:00:30 (joined before the range)
    c1  sales   J15 08:10:00 → 101 answers after 5 s ring, wait 6, talk 180, wrap 10
    c2  sales   J15 09:00:00 → 101 misses (20 s), 103 answers, wait 30, talk 300, wrap 7
    c3  support J15 10:15:00 → 103 rejects (3 s), abandoned at 10:15:40 (wait 40);
                               101 calls the number back, answered J15 11:00:00
    c4  sales   J15 11:00:00 → 101 and 103 miss (20 s each), timeout at 11:02 (wait 120);
                               the same number calls again as c9 and is connected
    c5  support J15 11:30:00 → 103 rings 13 s (cancelled), caller presses the exit key
                               at 11:30:15 (wait 15); 101's call back is not answered
    c6  sales   J15 20:30:00 → 101 answers, wait 4, talk 600, wrap 10
    c7  support J15 23:59:50 → 101 answers J16 00:00:15, wait 25, talk 120, wrap 10
    c8  sales   J16 08:30:00 → 102 answers, wait 20 (exactly N), talk 240, wrap 10
    c10 support J16 08:50:00 → 102 misses 3 times (→ auto-pause), abandoned 08:52
                               (wait 120); the caller rings extension 102 directly,
                               answered J16 09:30:10
    c9  sales   J16 09:05:00 → (number of c4) 102 answers 09:10:05, wait 305, talk 300,
                               wrap 10
    c11 support J16 14:00:00 → queue full, left at once (wait 0); a later call of that
                               number to the entry number 100 (not an extension) is
                               answered by the menu, which is no contact
    c12 sales   J16 23:58:00 → abandoned J17 00:01:00 (wait 180, after the range end)
    c13 support J16 23:59:00 → still waiting
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from softswitch.acd.commands import Attempt
from softswitch.acd.erlang import average_speed_of_answer, erlang_c, service_level
from softswitch.reports import (
    LoadRow,
    MissedRow,
    agents_needed,
    build_report,
    build_visits,
    fetch,
    load_report,
    missed_report,
    operators_report,
    period_for_dates,
    render,
    staffing_report,
)
from softswitch.reports.intervals import clip, intersect, spans
from softswitch.reports.render import duration_text
from softswitch.store import Store

REPO = Path(__file__).resolve().parent.parent
TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
EXTENSIONS = ("101", "102", "103")


def at(day: int, hms: str) -> float:
    """Unix time of 2024-01-DAY HH:MM:SS in Berlin."""
    h, m, s = (int(x) for x in hms.split(":"))
    return dt.datetime(2024, 1, day, h, m, s, tzinfo=ZONE).timestamp()


START = at(15, "00:00:00")  # = 2024-01-14 23:00 UTC
MID = at(16, "00:00:00")
END = at(17, "00:00:00")


class Log:
    """Writes queue_log and calls rows into a Store, in the order given."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ev(self, kind: str, when: float, **fields: object) -> None:
        self.store.add_queue_event({"time": when, "kind": kind, **fields})

    def session(self, agent: str, login: float, logout: float | None) -> None:
        self.ev("login", login, agent=agent, reason="registration")
        if logout is not None:
            self.ev("logout", logout, agent=agent, reason="api", duration=logout - login)

    def pause(self, agent: str, start: float, end: float | None, reason: str, **kw) -> None:
        self.ev("pause", start, agent=agent, reason=reason, **kw)
        if end is not None:
            self.ev("unpause", end, agent=agent, reason=reason, duration=end - start)

    def ring(
        self, q: str, caller: str, number: str, agent: str, start: float, secs: float, result: str
    ) -> Attempt:
        self.ev(
            "ring",
            start + secs,
            queue=q,
            caller=caller,
            number=number,
            agent=agent,
            result=result,
            ring_start=start,
            ring_time=secs,
        )
        return Attempt(agent, start, secs, result)

    def answered(
        self,
        q: str,
        caller: str,
        number: str,
        joined: float,
        agent: str,
        ring_start: float,
        ring: float,
        talk: float,
        wrap: float,
    ) -> None:
        """joined → ring answered → connected → completed → wrap-up."""
        self.ev("joined", joined, queue=q, caller=caller, number=number, position=1, priority=0)
        self.ring(q, caller, number, agent, ring_start, ring, "answered")
        t = ring_start + ring
        wait = t - joined
        self.ev("connected", t, queue=q, caller=caller, number=number, agent=agent, wait=wait)
        done = t + talk
        self.ev(
            "completed",
            done,
            queue=q,
            caller=caller,
            number=number,
            agent=agent,
            result="caller",
            wait=wait,
            talk_time=talk,
        )
        self.ev("wrap_up_start", done, queue=q, agent=agent, duration=10)
        self.ev("wrap_up_end", done + wrap, queue=q, agent=agent, duration=wrap, reason="done")

    def call(
        self, call_id: str, caller: str, callee: str, started: float, answered: float | None
    ) -> None:
        self.store.open_call(call_id, started=started, caller=caller, callee=callee)
        if answered is not None:
            self.store.call_answered(call_id, answered)
        self.store.close_call(
            call_id,
            ended=started + 120,
            result="answered" if answered else "no-answer",
            cause="test",
        )


def seed(store: Store) -> None:
    log = Log(store)
    # -- operators' sessions and pauses
    log.session("103", at(14, "23:00:00"), at(15, "01:00:00"))
    log.session("101", at(15, "08:00:00"), at(15, "12:00:00"))
    log.pause("101", at(15, "10:00:00"), at(15, "10:30:00"), "lunch")
    log.pause("101", at(15, "11:30:00"), None, "meeting")  # ended by the logout at 12:00
    log.session("103", at(15, "08:00:00"), at(15, "17:00:00"))
    log.session("101", at(15, "20:00:00"), at(16, "02:00:00"))
    log.session("102", at(16, "08:00:00"), None)
    log.pause(
        "102", at(16, "08:51:10"), at(16, "09:10:00"), "auto-pause", queue="support", result="3"
    )
    log.pause("102", at(16, "23:30:00"), None, "meeting")

    # -- c0: joined before the range; only its abandoned row is inside
    log.ev("joined", at(14, "23:59:50"), queue="sales", caller="c0", number="5551000")
    log.ev("abandoned", at(15, "00:00:30"), queue="sales", caller="c0", number="5551000", wait=40)

    # -- day 1
    log.answered(
        "sales", "c1", "5551001", at(15, "08:10:00"), "101", at(15, "08:10:01"), 5, 180, 10
    )

    n2, j2 = "5551002", at(15, "09:00:00")
    log.ev("joined", j2, queue="sales", caller="c2", number=n2, position=1)
    log.ring("sales", "c2", n2, "101", at(15, "09:00:01"), 20, "missed")
    # answered by 103 at 09:00:30 after an 8 s ring; talk 300; wrap-up ended early (7 s)
    log.ring("sales", "c2", n2, "103", at(15, "09:00:22"), 8, "answered")
    t = at(15, "09:00:30")
    log.ev("connected", t, queue="sales", caller="c2", number=n2, agent="103", wait=30)
    log.ev(
        "completed", t + 300, queue="sales", caller="c2", number=n2, agent="103", result="agent",
        wait=30, talk_time=300,
    )  # fmt: skip
    log.ev("wrap_up_start", t + 300, queue="sales", agent="103", duration=10)
    log.ev("wrap_up_end", t + 307, queue="sales", agent="103", duration=7, reason="ready")

    n3 = "5551003"
    log.call("c3", n3, "100", at(15, "10:14:58"), at(15, "10:14:59"))  # its own call
    log.ev("joined", at(15, "10:15:00"), queue="support", caller="c3", number=n3, position=1)
    a3 = log.ring("support", "c3", n3, "103", at(15, "10:15:01"), 3, "rejected")
    log.ev(
        "abandoned", at(15, "10:15:40"), queue="support", caller="c3", number=n3, position=1,
        wait=40, attempts=[dataclasses.asdict(a3)],
    )  # fmt: skip
    log.call("k1", "101", n3, at(15, "10:59:50"), at(15, "11:00:00"))  # 101 calls back

    n4 = "5551004"
    log.ev("joined", at(15, "11:00:00"), queue="sales", caller="c4", number=n4, position=1)
    a4 = [
        log.ring("sales", "c4", n4, "101", at(15, "11:00:01"), 20, "missed"),
        log.ring("sales", "c4", n4, "103", at(15, "11:00:22"), 20, "missed"),
    ]
    log.ev(
        "left", at(15, "11:02:00"), queue="sales", caller="c4", number=n4, result="timeout",
        target="voicemail", position=1, wait=120, attempts=[dataclasses.asdict(a) for a in a4],
    )  # fmt: skip

    n5 = "5551005"
    log.ev("joined", at(15, "11:30:00"), queue="support", caller="c5", number=n5, position=1)
    a5 = log.ring("support", "c5", n5, "103", at(15, "11:30:02"), 13, "cancelled")
    log.ev(
        "left", at(15, "11:30:15"), queue="support", caller="c5", number=n5, result="key",
        target="menu", position=1, wait=15, attempts=[dataclasses.asdict(a5)],
    )  # fmt: skip
    log.call("k2", "101", n5, at(15, "11:45:00"), None)  # call back, not answered

    log.answered(
        "sales", "c6", "5551006", at(15, "20:30:00"), "101", at(15, "20:30:00"), 4, 600, 10
    )
    log.answered(
        "support", "c7", "5551007", at(15, "23:59:50"), "101", at(15, "23:59:51"), 24, 120, 10
    )

    # -- day 2
    log.answered(
        "sales", "c8", "5551008", at(16, "08:30:00"), "102", at(16, "08:30:15"), 5, 240, 10
    )

    n10 = "5551010"
    log.ev("joined", at(16, "08:50:00"), queue="support", caller="c10", number=n10, position=1)
    a10 = [
        log.ring("support", "c10", n10, "102", at(16, start), 20, "missed")
        for start in ("08:50:00", "08:50:25", "08:50:50")
    ]
    log.ev(
        "abandoned", at(16, "08:52:00"), queue="support", caller="c10", number=n10, position=1,
        wait=120, attempts=[dataclasses.asdict(a) for a in a10],
    )  # fmt: skip
    log.call("k3", n10, "102", at(16, "09:30:00"), at(16, "09:30:10"))  # rings 102 directly

    log.answered("sales", "c9", n4, at(16, "09:05:00"), "102", at(16, "09:10:00"), 5, 300, 10)

    n11 = "5551011"
    log.ev("joined", at(16, "14:00:00"), queue="support", caller="c11", number=n11, position=6)
    log.ev(
        "left", at(16, "14:00:00"), queue="support", caller="c11", number=n11, result="full",
        position=6, wait=0,
    )  # fmt: skip
    log.call("k4", n11, "100", at(16, "15:00:00"), at(16, "15:00:01"))  # the menu answers

    log.ev("joined", at(16, "23:58:00"), queue="sales", caller="c12", number="5551012")
    log.ev("abandoned", at(17, "00:01:00"), queue="sales", caller="c12", number="5551012", wait=180)
    log.ev("joined", at(16, "23:59:00"), queue="support", caller="c13", number="5551013")


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A data dir whose softswitch.db holds the log above."""
    store = Store(tmp_path / "data" / "softswitch.db")
    seed(store)
    store.close()
    return tmp_path / "data"


@pytest.fixture
def data(seeded: Path):
    store = Store(seeded / "softswitch.db")
    try:
        yield fetch(store, START)
    finally:
        store.close()


def row(**kw: object) -> LoadRow:
    """A LoadRow with zero counts and no ratios unless given."""
    base = dict.fromkeys(f.name for f in dataclasses.fields(LoadRow))
    base.update(
        dict.fromkeys(
            ("offered", "answered", "abandoned", "timeout", "key", "full", "empty", "other"),
            0,
        )
    )
    base["waiting"] = 0
    base.update(kw)
    return LoadRow(**base)  # type: ignore[arg-type]


def assert_rows_equal(got: LoadRow, want: LoadRow) -> None:
    for f in dataclasses.fields(LoadRow):
        g, w = getattr(got, f.name), getattr(want, f.name)
        if isinstance(w, float):
            assert g == pytest.approx(w), f"{want.label}.{f.name}"
        else:
            assert g == w, f"{want.label}.{f.name}"


# ------------------------------------------------------------------------ the period


def test_period_for_dates_is_local_midnight_to_midnight_after_the_last_day() -> None:
    p = period_for_dates(dt.date(2024, 1, 15), dt.date(2024, 1, 16), TZ)
    assert (p.start, p.end) == (START, END)
    assert p.start == dt.datetime(2024, 1, 14, 23, tzinfo=dt.UTC).timestamp()
    assert p.days() == [dt.date(2024, 1, 15), dt.date(2024, 1, 16)]


def test_period_across_dst_change_has_a_23_hour_day() -> None:
    # 31 March 2024: Berlin skips 02:00 → 03:00
    p = period_for_dates(dt.date(2024, 3, 31), dt.date(2024, 3, 31), TZ)
    assert p.end - p.start == 23 * 3600
    assert p.days() == [dt.date(2024, 3, 31)]


# ------------------------------------------------------------------------ the loader


def test_fetch_keeps_operator_state_from_before_the_range_and_drops_other_old_rows(
    data,
) -> None:
    before = [r for r in data.events if r["time"] < START]
    # 103's login at J14 23:00 is the only row before the range that says a state;
    # c0's joined row (J14 23:59:50) is left out
    assert [(r["kind"], r["agent"]) for r in before] == [("login", "103")]
    # rows run past the range end (c12's abandoned row at J17 00:01)
    assert data.events[-1]["caller"] == "c12"
    # calls answered since the start: c3's own call, k1, k3, k4 (k2 was never answered)
    assert sorted(c["id"] for c in data.calls) == ["c3", "k1", "k3", "k4"]


def test_visit_without_its_joined_row_is_rebuilt_from_its_wait(data) -> None:
    (c0,) = [v for v in build_visits(data.events) if v.caller == "c0"]
    # abandoned at J15 00:00:30 after waiting 40 s → joined J14 23:59:50, outside the range
    assert c0.joined == at(14, "23:59:50") and c0.outcome == "abandoned"


# ------------------------------------------------------------------------ load


def test_load_by_day_hour_and_total(data) -> None:
    r = load_report(data.events, START, END, TZ)
    assert r.service_seconds == 20 and r.queues is None
    assert [d.label for d in r.days] == ["2024-01-15", "2024-01-16"]
    assert [h.label for h in r.hours] == [f"{h:02d}:00" for h in range(24)]

    # J15: c1 c2 c3 c4 c5 c6 c7 joined (c0 joined on J14 and is not counted)
    #   answered c1 (wait 6), c2 (30), c6 (4), c7 (25) = 4; abandoned c3 (40);
    #   timeout c4; key c5. Within 20 s: c1, c6 = 2.
    assert_rows_equal(
        r.days[0],
        row(
            label="2024-01-15", offered=7, answered=4, abandoned=1, timeout=1, key=1,
            handling_ratio=4 / 7, service_level=2 / 7,
            avg_wait_answered=(6 + 30 + 4 + 25) / 4,  # = 16.25
            max_wait_answered=30.0, avg_wait_abandoned=40.0,
        ),
    )  # fmt: skip
    # J16: c8 c10 c9 c11 c12 c13 joined = 6
    #   answered c8 (wait 20: "within 20 s" includes 20), c9 (305); abandoned c10 (120),
    #   c12 (180: its hang-up falls on J17 but it joined on J16); full c11; c13 waits.
    assert_rows_equal(
        r.days[1],
        row(
            label="2024-01-16", offered=6, answered=2, abandoned=2, full=1, waiting=1,
            handling_ratio=2 / 6, service_level=1 / 6,
            avg_wait_answered=(20 + 305) / 2,  # = 162.5
            max_wait_answered=305.0, avg_wait_abandoned=(120 + 180) / 2,  # = 150
        ),
    )  # fmt: skip
    # the two days together: 13 = 6 answered + 3 abandoned + 1 + 1 + 1 left + 1 waiting
    assert_rows_equal(
        r.total,
        row(
            label="total", offered=13, answered=6, abandoned=3, timeout=1, key=1, full=1,
            waiting=1, handling_ratio=6 / 13, service_level=3 / 13,
            avg_wait_answered=(6 + 30 + 4 + 25 + 20 + 305) / 6,  # = 390 / 6 = 65
            max_wait_answered=305.0,
            avg_wait_abandoned=(40 + 120 + 180) / 3,  # = 113.33
        ),
    )  # fmt: skip

    hours = {h.label: h for h in r.hours}
    # 08: c1 (J15, wait 6), c8 (J16, 20) answered; c10 (J16) abandoned after 120
    assert_rows_equal(
        hours["08:00"],
        row(
            label="08:00", offered=3, answered=2, abandoned=1, handling_ratio=2 / 3,
            service_level=2 / 3, avg_wait_answered=(6 + 20) / 2, max_wait_answered=20.0,
            avg_wait_abandoned=120.0,
        ),
    )  # fmt: skip
    # 09: c2 (30), c9 (305): both answered, neither within 20 s
    assert_rows_equal(
        hours["09:00"],
        row(
            label="09:00", offered=2, answered=2, handling_ratio=1.0, service_level=0.0,
            avg_wait_answered=(30 + 305) / 2, max_wait_answered=305.0,
        ),
    )  # fmt: skip
    # 10: c3 abandoned after 40
    assert_rows_equal(
        hours["10:00"],
        row(
            label="10:00", offered=1, abandoned=1, handling_ratio=0.0, service_level=0.0,
            avg_wait_abandoned=40.0,
        ),
    )  # fmt: skip
    # 11: c4 timeout, c5 exit key
    assert_rows_equal(
        hours["11:00"],
        row(label="11:00", offered=2, timeout=1, key=1, handling_ratio=0.0, service_level=0.0),
    )
    # 14: c11 full
    assert_rows_equal(
        hours["14:00"],
        row(label="14:00", offered=1, full=1, handling_ratio=0.0, service_level=0.0),
    )
    # 20: c6 answered after 4
    assert_rows_equal(
        hours["20:00"],
        row(
            label="20:00", offered=1, answered=1, handling_ratio=1.0, service_level=1.0,
            avg_wait_answered=4.0, max_wait_answered=4.0,
        ),
    )  # fmt: skip
    # 23: c7 (J15, answered after 25 on J16), c12 abandoned after 180, c13 waiting
    assert_rows_equal(
        hours["23:00"],
        row(
            label="23:00", offered=3, answered=1, abandoned=1, waiting=1,
            handling_ratio=1 / 3, service_level=0.0, avg_wait_answered=25.0,
            max_wait_answered=25.0, avg_wait_abandoned=180.0,
        ),
    )  # fmt: skip
    busy = {"08:00", "09:00", "10:00", "11:00", "14:00", "20:00", "23:00"}
    for label, h in hours.items():
        if label not in busy:
            assert_rows_equal(h, row(label=label))
    # every bucket adds up
    for x in (*r.days, *r.hours, r.total):
        lost = x.abandoned + x.timeout + x.key + x.full + x.empty + x.other
        assert x.offered == x.answered + lost + x.waiting


def test_load_for_one_queue_and_another_service_time(data) -> None:
    r = load_report(data.events, START, END, TZ, queues=["support"], service_seconds=30)
    # support: c3 abandoned (40), c5 key, c7 answered (25), c10 abandoned (120), c11 full,
    # c13 waiting = 6 offered; c7 is within 30 s
    assert r.queues == ("support",)
    assert_rows_equal(
        r.total,
        row(
            label="total", offered=6, answered=1, abandoned=2, key=1, full=1, waiting=1,
            handling_ratio=1 / 6, service_level=1 / 6, avg_wait_answered=25.0,
            max_wait_answered=25.0, avg_wait_abandoned=(40 + 120) / 2,  # = 80
        ),
    )  # fmt: skip


def test_load_one_day_only(data) -> None:
    r = load_report(data.events, MID, END, TZ)
    assert [d.label for d in r.days] == ["2024-01-16"]
    assert r.total.offered == 6  # c8 c10 c9 c11 c12 c13; c7 joined on J15


# ------------------------------------------------------------------------ operators

# Expected per operator over both days, now = end of the range:
#   101 logged in 08:00-12:00 (4 h) + J15 20:00-J16 02:00 (6 h) = 36000 s; paused
#       10:00-10:30 + 11:30-12:00 (closed by the logout) = 3600 s. Rings: c1 answered,
#       c2 missed, c4 missed, c6 answered, c7 answered = 5 rung, 3 answered, 2 missed.
#       Completed c1 180 + c6 600 + c7 120 = 900 s talk in 3 calls (avg 300); wrap-up
#       10 + 10 + 10 = 30 s.
#       occupancy = (900 + 30) / (36000 − 3600) = 930 / 32400.
#   102 logged in J16 08:00 → end (no logout) = 16 h = 57600 s; paused 08:51:10-09:10:00
#       (1130 s) + 23:30-24:00 (open: 1800 s) = 2930 s. Rings: c8 answered, c10 3 ×
#       missed, c9 answered = 5 rung, 2 answered, 3 missed. Completed c8 240 + c9 300 =
#       540 s in 2 (avg 270); wrap-up 10 + 10 = 20. occupancy = 560 / (57600 − 2930).
#   103 logged in J15 00:00-01:00 (the J14 23:00 session clipped: 3600 s) + 08:00-17:00
#       (32400 s) = 36000 s; never paused. Rings: c2 answered, c3 rejected, c4 missed,
#       c5 cancelled = 4 rung, 1 answered, 1 missed, 1 rejected. Completed c2 300 s
#       (avg 300); wrap-up 7. occupancy = 307 / 36000.
OPS = {
    "101": (36000, 3600, 5, 3, 2, 0, 3, 900, 300, 30, 930 / 32400),
    "102": (57600, 2930, 5, 2, 3, 0, 2, 540, 270, 20, 560 / (57600 - 2930)),
    "103": (36000, 0, 4, 1, 1, 1, 1, 300, 300, 7, 307 / 36000),
}
OP_FIELDS = (
    "logged_in paused rung answered missed rejected completed talk_time avg_talk wrap_up occupancy"
).split()


def figures(op) -> tuple:
    return tuple(getattr(op, f) for f in OP_FIELDS)


def test_operators_over_both_days(data) -> None:
    r = operators_report(data.events, START, END, TZ)
    assert [o.agent for o in r.operators] == ["101", "102", "103"]
    for op in r.operators:
        assert figures(op) == pytest.approx(OPS[op.agent]), op.agent
    # total: 129600 logged in, 3600 + 2930 = 6530 paused, 14 rung, 6 answered,
    # 6 missed, 1 rejected, 6 completed with 1740 s talk (avg 290), 57 s wrap-up
    assert figures(r.total) == pytest.approx(
        (129600, 6530, 14, 6, 6, 1, 6, 1740, 290, 57, (1740 + 57) / (129600 - 6530))
    )


def test_operators_split_a_shift_across_midnight(data) -> None:
    day1 = operators_report(data.events, START, MID, TZ)
    day2 = operators_report(data.events, MID, END, TZ)
    # 101 on J15: 08:00-12:00 + 20:00-24:00 = 28800; on J16: 00:00-02:00 = 7200
    assert {o.agent: o.logged_in for o in day1.operators} == {"101": 28800, "103": 36000}
    assert {o.agent: o.logged_in for o in day2.operators} == {"101": 7200, "102": 57600}
    (o101,) = [o for o in day2.operators if o.agent == "101"]
    # c7's ring ended at J16 00:00:15 and the call completed at 00:02:15: J16's
    assert (o101.rung, o101.answered, o101.completed, o101.talk_time, o101.wrap_up) == (
        1, 1, 1, 120, 10,
    )  # fmt: skip


def test_operators_open_session_runs_to_now(data) -> None:
    now = at(16, "12:00:00")
    r = operators_report(data.events, START, END, TZ, now=now)
    ops = {o.agent: o for o in r.operators}
    # 102: 08:00 → now = 4 h; only the auto-pause (1130 s) happened before now
    assert (ops["102"].logged_in, ops["102"].paused) == (14400, 1130)
    assert ops["101"].logged_in == 36000 and r.now == now


def test_operators_for_one_queue_count_only_its_work(data) -> None:
    r = operators_report(data.events, START, END, TZ, queues=["support"])
    ops = {o.agent: o for o in r.operators}
    # support work: 101 answered c7 (talk 120, wrap 10); 102 missed c10 three times;
    # 103 rejected c3 and was cancelled for c5. Logged-in and paused time stay whole.
    assert figures(ops["101"]) == pytest.approx(
        (36000, 3600, 1, 1, 0, 0, 1, 120, 120, 10, 130 / 32400)
    )
    assert figures(ops["102"]) == pytest.approx((57600, 2930, 3, 0, 3, 0, 0, 0, None, 0, 0.0))
    assert figures(ops["103"]) == pytest.approx((36000, 0, 2, 0, 0, 1, 0, 0, None, 0, 0.0))


def test_session_arithmetic() -> None:
    rows = [
        {"kind": "logout", "time": 50.0, "duration": 30.0},  # began at 20, before the rows
        {"kind": "login", "time": 100.0},
        {"kind": "login", "time": 110.0},  # a repeat: keeps 100
        {"kind": "logout", "time": 200.0},
        {"kind": "login", "time": 300.0},  # open: runs to `until`
    ]
    got = spans(rows, "login", "logout", until=400.0)
    assert got == [(20.0, 50.0), (100.0, 200.0), (300.0, 400.0)]
    assert clip(got, 30.0, 350.0) == [(30.0, 50.0), (100.0, 200.0), (300.0, 350.0)]
    assert intersect(got, [(0.0, 150.0), (390.0, 500.0)]) == [
        (20.0, 50.0), (100.0, 150.0), (390.0, 400.0),
    ]  # fmt: skip


# ------------------------------------------------------------------------ missed


def test_missed_callers_and_who_reached_them(data) -> None:
    r = missed_report(data.events, data.calls, START, END, TZ, extensions=EXTENSIONS)
    want = [
        # c3 abandoned after 40 s; 103 rejected it (3 s); 101 called back at 11:00
        MissedRow(
            at(15, "10:15:40"), "support", "5551003", "c3", 40, "abandoned",
            (Attempt("103", at(15, "10:15:01"), 3, "rejected"),),
            at(15, "11:00:00"), "callback", "101",
        ),
        # c4 timed out after 120 s, both rang 20 s; reached as c9 (102, J16 09:10:05)
        MissedRow(
            at(15, "11:02:00"), "sales", "5551004", "c4", 120, "timeout",
            (
                Attempt("101", at(15, "11:00:01"), 20, "missed"),
                Attempt("103", at(15, "11:00:22"), 20, "missed"),
            ),
            at(16, "09:10:05"), "queue", "102",
        ),
        # c5 pressed the exit key after 15 s; the call back was not answered
        MissedRow(
            at(15, "11:30:15"), "support", "5551005", "c5", 15, "key",
            (Attempt("103", at(15, "11:30:02"), 13, "cancelled"),), None, None, None,
        ),
        # c10 abandoned after 120 s; then rang extension 102 directly
        MissedRow(
            at(16, "08:52:00"), "support", "5551010", "c10", 120, "abandoned",
            tuple(
                Attempt("102", at(16, t), 20, "missed")
                for t in ("08:50:00", "08:50:25", "08:50:50")
            ),
            at(16, "09:30:10"), "call-in", "102",
        ),
        # c11: queue full; its later call to 100 (the menu, not an extension) is no contact
        MissedRow(at(16, "14:00:00"), "support", "5551011", "c11", 0, "full", (), None, None,
                  None),
        # c12 joined J16 23:58 and hung up after the range end
        MissedRow(at(17, "00:01:00"), "sales", "5551012", "c12", 180, "abandoned", (), None,
                  None, None),
    ]  # fmt: skip
    assert list(r.calls) == want


def test_missed_for_one_queue(data) -> None:
    r = missed_report(data.events, data.calls, START, END, TZ, queues=["sales"])
    assert [m.caller for m in r.calls] == ["c4", "c12"]
    # without the config's extensions the operators seen in the log still count: the
    # callback came from 101, an operator
    r = missed_report(data.events, data.calls, START, MID, TZ)
    assert [(m.caller, m.reached_via) for m in r.calls] == [
        ("c3", "callback"), ("c4", "queue"), ("c5", None),
    ]  # fmt: skip


# ------------------------------------------------------------------------ staffing


def test_staffing_from_the_log(data) -> None:
    r = staffing_report(data.events, START, END, TZ)
    # handle time: completed in range c1 180 + c2 300 + c6 600 + c7 120 + c8 240 + c9 300
    # = 1740 s in 6 calls; wrap-up ended in range 10+10+10 (101) + 7 (103) + 10+10 (102)
    # = 57 s → (1740 + 57) / 6 = 299.5 s
    assert (r.days, r.completed) == (2, 6)
    assert r.handle_time == pytest.approx(299.5)
    per_hour = {h.hour: h for h in r.hours}
    # callers per hour of day over 2 days: 08 → 3/2, 09 → 2/2, 10 → 1/2, 11 → 2/2,
    # 14 → 1/2, 20 → 1/2, 23 → 3/2
    rates = {"08:00": 1.5, "09:00": 1.0, "10:00": 0.5, "11:00": 1.0, "14:00": 0.5,
             "20:00": 0.5, "23:00": 1.5}  # fmt: skip
    for label, h in per_hour.items():
        assert h.calls_per_hour == rates.get(label, 0.0), label
        if label not in rates:
            assert (h.traffic, h.agents, h.service_level) == (0.0, 0, None)
    # 08:00: A = 1.5 × 299.5 / 3600 = 0.12479 Erlang. One operator (M/M/1: P(wait) = A):
    # SL = 1 − A·e^(−(1 − A)·20/299.5) = 1 − 0.12479 × 0.94324 = 0.8823 ≥ 0.8 → 1
    a = 1.5 * 299.5 / 3600
    h8 = per_hour["08:00"]
    assert h8.traffic == pytest.approx(a)
    assert h8.agents == 1
    assert h8.wait_probability == pytest.approx(a)
    assert h8.service_level == pytest.approx(1 - a * math.exp(-(1 - a) * 20 / 299.5))
    assert h8.service_level == pytest.approx(0.8823, abs=1e-4)
    assert h8.avg_speed_of_answer == pytest.approx(a * 299.5 / (1 - a))  # C·AHT/(n − A)
    assert h8.occupancy == pytest.approx(a)
    assert all(h.agents == 1 for label, h in per_hour.items() if label in rates)

    # target 90 %: 08:00 and 23:00 need 2 (M/M/2: P(wait) = A²/(2 + A) = 0.00733,
    # SL = 1 − 0.00733·e^(−(2 − A)·20/299.5) = 0.9935); 09:00 with A = 299.5/3600 =
    # 0.08319 has SL = 1 − 0.08319 × e^(−0.91681 × 20/299.5) = 0.9217 with one
    r90 = staffing_report(data.events, START, END, TZ, target=0.9)
    need = {h.hour: h.agents for h in r90.hours if h.hour in rates}
    assert need == {"08:00": 2, "09:00": 1, "10:00": 1, "11:00": 1, "14:00": 1,
                    "20:00": 1, "23:00": 2}  # fmt: skip
    h8 = r90.hours[8]
    assert h8.wait_probability == pytest.approx(a * a / (2 + a))
    assert h8.service_level == pytest.approx(0.9935, abs=1e-4)


def erlang_c_by_factorials(n: int, a: float) -> float:
    """Erlang C straight from the textbook formula, to check erlang.py against."""
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


@pytest.mark.parametrize(
    ("calls", "want_agents", "known"),
    [
        # 100 calls/h × 180 s = 5 Erlang. Known values: P(wait) with 6, 7, 8 operators
        # 0.5875, 0.3241, 0.1673; SL(20 s) 47.4 %, 74.0 %, 88.0 % → 8 for 80/20
        (100, 8, {6: (0.5875, 0.4743), 7: (0.3241, 0.7404), 8: (0.1673, 0.8801)}),
        # 200 calls/h × 180 s = 10 Erlang (the classic "100 calls per half hour, AHT 3
        # min" example): P(wait) 0.6821, 0.4494, 0.2853, 0.1741 with 11..14 operators;
        # SL 39.0 %, 64.0 %, 79.6 %, 88.8 % → 14 for 80/20 (13 falls just short)
        (
            200,
            14,
            {
                11: (0.6821, 0.3896),
                12: (0.4494, 0.6402),
                13: (0.2853, 0.7956),
                14: (0.1741, 0.8884),
            },
        ),
    ],
)
def test_staffing_reproduces_textbook_erlang_c(
    tmp_path: Path, calls: int, want_agents: int, known: dict[int, tuple[float, float]]
) -> None:
    store = Store(tmp_path / "softswitch.db")
    log = Log(store)
    gap = 3600 / calls
    for i in range(calls):  # evenly through 10:00-11:00 on one day; talk 170 + wrap 10
        joined = at(15, "10:00:00") + i * gap
        agent = f"2{i % 20:02d}"
        log.answered("desk", f"t{i}", f"555{i:04d}", joined, agent, joined, 5, 170, 10)
    rows = fetch(store, START).events
    store.close()

    r = staffing_report(rows, START, MID, TZ)
    assert r.handle_time == pytest.approx(180)
    h = r.hours[10]
    assert h.calls_per_hour == calls
    assert h.traffic == pytest.approx(calls * 180 / 3600)
    assert h.agents == want_agents
    a = calls * 180 / 3600
    for n, (pw, sl) in known.items():
        assert erlang_c(n, a) == pytest.approx(erlang_c_by_factorials(n, a))
        assert erlang_c(n, a) == pytest.approx(pw, abs=5e-5)
        assert service_level(n, a, 180, 20) == pytest.approx(sl, abs=5e-5)
    assert h.wait_probability == pytest.approx(known[want_agents][0], abs=5e-5)
    assert h.service_level == pytest.approx(known[want_agents][1], abs=5e-5)
    assert h.avg_speed_of_answer == pytest.approx(average_speed_of_answer(want_agents, a, 180))
    assert agents_needed(a, 180, 20, 0.8) == want_agents
    # one fewer misses the target
    assert service_level(want_agents - 1, a, 180, 20) < 0.8


def test_agents_needed_edges() -> None:
    assert agents_needed(0.0, 180, 20, 0.8) == 0
    assert agents_needed(5.0, 180, 20, 0.8) > 5  # always more than the traffic
    with pytest.raises(ValueError):
        agents_needed(5.0, 180, 20, 1.0)


# ------------------------------------------------------------------------ render


def test_json_round_trip(data) -> None:
    for name in ("load", "operators", "missed", "staffing"):
        report = build_report(
            name, data, period_for_dates(dt.date(2024, 1, 15), dt.date(2024, 1, 16), TZ),
            extensions=EXTENSIONS, now=END,
        )  # fmt: skip
        parsed = json.loads(render(report, "json"))
        assert parsed["report"] == name
        assert parsed["period"] == {"start": START, "end": END, "timezone": TZ}
        assert {k: v for k, v in parsed.items() if k != "report"} == json.loads(
            json.dumps(dataclasses.asdict(report))
        )
    # rows come back as the same dataclasses
    load = load_report(data.events, START, END, TZ)
    parsed = json.loads(render(load, "json"))
    assert tuple(LoadRow(**d) for d in parsed["days"]) == load.days
    missed = missed_report(data.events, data.calls, START, END, TZ)
    back = [
        MissedRow(**{**d, "attempts": tuple(Attempt(**a) for a in d["attempts"])})
        for d in json.loads(render(missed, "json"))["calls"]
    ]
    assert back == list(missed.calls)


def test_csv_round_trip(data) -> None:
    load = load_report(data.events, START, END, TZ)
    rows = list(csv.DictReader(io.StringIO(render(load, "csv"))))
    assert list(rows[0]) == ["section"] + [f.name for f in dataclasses.fields(LoadRow)]
    assert [r["section"] for r in rows] == ["day"] * 2 + ["total"] + ["hour"] * 24
    for got, want in zip(rows, (*load.days, load.total, *load.hours), strict=True):
        for f in dataclasses.fields(LoadRow):
            value = getattr(want, f.name)
            cell = got[f.name]
            if value is None:
                assert cell == ""
            elif isinstance(value, float):
                assert float(cell) == pytest.approx(value, abs=1e-6)
            else:
                assert cell == str(value)

    missed = missed_report(data.events, data.calls, START, END, TZ)
    rows = list(csv.DictReader(io.StringIO(render(missed, "csv"))))
    assert "section" not in rows[0]
    assert [r["caller"] for r in rows] == [m.caller for m in missed.calls]
    c4 = rows[1]
    assert c4["time"] == "2024-01-15 11:02:00"  # local time
    assert c4["attempts"] == "101 20s missed; 103 20s missed"
    assert (c4["reached_at"], c4["reached_via"], c4["reached_by"]) == (
        "2024-01-16 09:10:05", "queue", "102",
    )  # fmt: skip
    assert rows[2]["reached_at"] == "" and float(c4["wait"]) == 120


def test_table_is_aligned(data) -> None:
    ops = operators_report(data.events, START, END, TZ)
    text = render(ops, "table")
    lines = text.splitlines()
    assert lines[0] == f"operators report — 2024-01-15 .. 2024-01-16 ({TZ}) — all queues"
    header = next(i for i, x in enumerate(lines) if x.startswith("agent"))
    table = lines[header : header + 5]  # header, rule, 101, 102, 103
    assert table[1].startswith("-----")
    assert len({len(x) for x in table[1:]}) == 1  # the rule and rows line up
    row101 = table[2].split()
    # agent, logged in 10:00:00, paused 1:00:00, 5 rung ... occupancy 2.9 %
    assert row101[:4] == ["101", "10:00:00", "1:00:00", "5"]
    assert row101[-1] == f"{930 / 32400 * 100:.1f}%" == "2.9%"
    assert "total" in text and duration_text(129600) == "36:00:00"

    missed = render(missed_report(data.events, data.calls, START, END, TZ), "table")
    assert "2024-01-15 10:15:40" in missed and "103 3s rejected" in missed
    with pytest.raises(ValueError):
        render(ops, "xml")
    with pytest.raises(ValueError):
        build_report("sales", data, ops.period)


# ------------------------------------------------------------------------ the command

CONFIG = """
[switch]
data_dir = "data"
timezone = "Europe/Berlin"

[[extension]]
number = "101"
name = "Anna"
password = "amber-violin-42-otter"

[[extension]]
number = "102"
name = "Boris"
password = "copper-tulip-77-heron"

[[extension]]
number = "103"
name = "Vera"
password = "silver-maple-19-lynx"
"""


def run_report(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "softswitch", "report", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path: Path, seeded: Path) -> Path:
    path = tmp_path / "switch.toml"
    path.write_text(textwrap.dedent(CONFIG).lstrip())
    return path


RANGE = ("--from", "2024-01-15", "--to", "2024-01-16")


def test_cli_load_json(config: Path, tmp_path: Path) -> None:
    result = run_report("load", "--config", str(config), *RANGE, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["report"] == "load"
    total = report["total"]
    assert (total["offered"], total["answered"], total["abandoned"]) == (13, 6, 3)
    assert total["service_level"] == pytest.approx(3 / 13)
    assert report["period"] == {"start": START, "end": END, "timezone": TZ}


def test_cli_queue_filter_and_service_seconds(config: Path, tmp_path: Path) -> None:
    result = run_report(
        "load", "--config", str(config), *RANGE, "--queue", "support", "--service-seconds",
        "30", "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queues"] == ["support"]
    assert (report["total"]["offered"], report["total"]["service_level"]) == (
        6, pytest.approx(1 / 6),
    )  # fmt: skip


def test_cli_missed_csv(config: Path, tmp_path: Path) -> None:
    result = run_report("missed", "--config", str(config), *RANGE, "--format", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["caller"], r["reached_via"]) for r in rows] == [
        ("c3", "callback"), ("c4", "queue"), ("c5", ""), ("c10", "call-in"), ("c11", ""),
        ("c12", ""),
    ]  # fmt: skip


def test_cli_operators_table_one_day(config: Path, tmp_path: Path) -> None:
    # the J15 day; now (the real clock) is long after it, so nothing is cut at now
    result = run_report(
        "operators", "--config", str(config), "--from", "2024-01-15", "--to", "2024-01-15",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"operators report — 2024-01-15 .. 2024-01-15 ({TZ}) — all queues"
    by_agent = {x.split()[0]: x.split() for x in lines if x[:3] in EXTENSIONS}
    assert by_agent["101"][1] == "8:00:00"  # 08-12 and 20-24
    assert by_agent["103"][1] == "10:00:00"  # 00-01 and 08-17
    assert "102" not in by_agent


def test_cli_staffing_with_data_dir_and_target(config: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "moved"
    (tmp_path / "data").rename(elsewhere)
    result = run_report(
        "staffing", "--config", str(config), "--data-dir", str(elsewhere), *RANGE,
        "--target", "0.9", "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == 0.9 and report["handle_time"] == pytest.approx(299.5)
    assert [h["agents"] for h in report["hours"]][8:12] == [2, 1, 1, 1]


def test_cli_without_database_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_text(textwrap.dedent(CONFIG).lstrip())
    result = run_report("load", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"no database at {tmp_path / 'data' / 'softswitch.db'}" in result.stderr
    assert not (tmp_path / "data").exists()  # looking did not create it


def test_cli_rejects_bad_dates(config: Path, tmp_path: Path) -> None:
    backwards = run_report(
        "load", "--config", str(config), "--from", "2024-01-16", "--to", "2024-01-15",
        cwd=tmp_path,
    )  # fmt: skip
    assert backwards.returncode == 2 and "is after" in backwards.stderr
    garbled = run_report("load", "--config", str(config), "--from", "15.01.2024", cwd=tmp_path)
    assert garbled.returncode == 2 and "expected a date YYYY-MM-DD" in garbled.stderr
    target = run_report("staffing", "--config", str(config), "--target", "80", cwd=tmp_path)
    assert target.returncode == 2 and "between 0 and 1" in target.stderr
