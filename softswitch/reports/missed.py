"""The missed-calls report: every caller who left a queue unanswered, who was rung for
them and for how long, and whether the caller was reached afterwards.

"Reached" is the first contact after the caller left: the same number connected to an
operator in any queue, or an answered call between that number and one of our
extensions in either direction (an operator called back, or the caller got through
directly). A supervisor reads the unreached ones as the calls still owed."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import ClassVar

from softswitch.acd.commands import Attempt
from softswitch.reports.columns import Section, col
from softswitch.reports.period import Period
from softswitch.reports.visits import Row, build_visits


@dataclass(frozen=True)
class MissedRow:
    time: float = col("time")  # when the caller hung up or left the queue
    queue: str = col("text")
    number: str | None = col("text")  # the caller's number
    caller: str = col("text")  # our call id
    wait: float = col("seconds")  # join → leaving
    result: str = col("text")  # abandoned, or how they left: timeout / key / full / ...
    attempts: tuple[Attempt, ...] = col("attempts")  # who was rung, how long, result
    reached_at: float | None = col("time")  # first contact afterwards, or None
    reached_via: str | None = col("text")  # queue / callback / call-in
    reached_by: str | None = col("text")  # the operator or extension of that contact


@dataclass(frozen=True)
class MissedReport:
    NAME: ClassVar[str] = "missed"
    period: Period
    queues: tuple[str, ...] | None  # None: every queue
    calls: tuple[MissedRow, ...]

    def sections(self) -> list[Section]:
        return [Section("missed", "Missed callers", self.calls)]


@dataclass(frozen=True, order=True)
class _Contact:
    time: float
    via: str
    by: str


def missed_report(
    rows: Iterable[Row],
    calls: Iterable[Row],
    start: float,
    end: float,
    timezone: str,
    *,
    queues: Collection[str] | None = None,
    extensions: Collection[str] = (),
) -> MissedReport:
    """Unanswered visits that joined in [start, end) (the same callers the load report
    counts as abandoned or left), oldest first. `rows` should run past `end` (to now) so
    a later contact is seen; `calls` are rows of the calls table; `extensions` are our
    extension numbers (the operators in `rows` are added to them)."""
    rows = list(rows)
    period = Period(start, end, timezone)
    ours = set(extensions) | {r["agent"] for r in rows if r.get("agent") is not None}
    contacts = _contacts(rows, calls, ours)
    out = []
    for v in build_visits(rows, queues):
        if not (v.unanswered and period.contains(v.joined)):
            continue
        assert v.ended is not None
        reached = None
        if v.number:
            reached = _first_after(contacts.get(_key(v.number), []), v.ended)
        out.append(
            MissedRow(
                time=v.ended,
                queue=v.queue,
                number=v.number,
                caller=v.caller,
                wait=v.wait if v.wait is not None else v.ended - v.joined,
                result=v.outcome if v.outcome == "abandoned" else (v.result or "left"),
                attempts=v.attempts,
                reached_at=reached.time if reached else None,
                reached_via=reached.via if reached else None,
                reached_by=reached.by if reached else None,
            )
        )
    out.sort(key=lambda m: (m.time, m.caller))
    return MissedReport(period, tuple(sorted(queues)) if queues is not None else None, tuple(out))


def _contacts(
    rows: list[Row], calls: Iterable[Row], extensions: set[str]
) -> dict[str, list[_Contact]]:
    """Every contact with an outside number, by number, in time order."""
    found: dict[str, list[_Contact]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "connected" and r.get("number"):
            found[_key(r["number"])].append(
                _Contact(float(r["time"]), "queue", r.get("agent") or "")
            )
    for c in calls:
        if c.get("answered") is None:
            continue
        t = float(c["answered"])
        caller, callee = _key(c["caller"]), _key(c["callee"])
        if caller in extensions and callee not in extensions:
            found[callee].append(_Contact(t, "callback", caller))
        elif callee in extensions and caller not in extensions:
            found[caller].append(_Contact(t, "call-in", callee))
    for items in found.values():
        items.sort(key=lambda x: x.time)
    return found


def _first_after(items: list[_Contact], t: float) -> _Contact | None:
    """The first contact strictly after `t` (the caller's own call, answered by the flow
    before they left, is never after it)."""
    i = bisect.bisect_right(items, t, key=lambda x: x.time)
    return items[i] if i < len(items) else None


def _key(number: str | None) -> str:
    """A number as both tables spell it: the user part of a SIP/tel URI, else as is."""
    if not number:
        return ""
    n = number.strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if n.lower().startswith(scheme):
            n = n[len(scheme) :]
            break
    return n.split("@", 1)[0].split(";", 1)[0]
