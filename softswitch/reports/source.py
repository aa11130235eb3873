"""Reading what the reports need from the Store, and nothing else: the report modules
are pure functions over rows, so they are tested with hand-written rows and cannot
write to the switch's database."""

from __future__ import annotations

from dataclasses import dataclass

from softswitch.reports.visits import Row
from softswitch.store import Store

# the rows that say what state an operator is in when the range starts
STATE_KINDS = ("login", "logout", "pause", "unpause")


@dataclass(frozen=True)
class ReportData:
    events: list[Row]  # queue_log rows, in (time, id) order
    calls: list[Row]  # calls rows answered at or after the range start


def fetch(store: Store, start: float, until: float | None = None) -> ReportData:
    """Rows from `start` to `until` (None: to the last row, so a missed caller's later
    contact and a visit's outcome after the range end are seen), plus every login /
    logout / pause / unpause row before `start` (sessions that began earlier)."""
    earlier: list[Row] = []
    for kind in STATE_KINDS:
        earlier += store.queue_events(kind=kind, until=start)
    earlier.sort(key=lambda r: (r["time"], r["id"]))
    events = earlier + store.queue_events(since=start, until=until)
    sql = "SELECT * FROM calls WHERE answered IS NOT NULL AND answered >= ?"
    args: list[float] = [start]
    if until is not None:
        sql += " AND answered < ?"
        args.append(until)
    calls = [dict(r) for r in store.db.execute(sql + " ORDER BY answered", args)]
    return ReportData(events, calls)
