"""The operators report: each operator's working time and results over a range.

Time figures (logged in, paused) are the parts of their sessions inside the range, so a
shift across midnight splits between two days' reports; a session with no logout yet
runs to `now`. Counted figures go by the time of their row: a ring by when it ended, a
talk by when the call completed, a wrap-up by when it ended."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import ClassVar

from softswitch.reports.columns import Section, col, ratio
from softswitch.reports.intervals import clip, intersect, length, spans
from softswitch.reports.period import Period
from softswitch.reports.visits import Row, in_queues

# rows of one queue's work; login and pause rows apply to every queue of the operator
QUEUE_WORK = frozenset({"ring", "connected", "completed", "wrap_up_start", "wrap_up_end"})
SESSION_KINDS = frozenset({"login", "logout", "pause", "unpause"})
SUMMED = "logged_in paused rung answered missed rejected completed talk_time wrap_up".split()


@dataclass(frozen=True)
class OperatorRow:
    agent: str = col("text")  # operator id (extension), or "total"
    logged_in: float = col("duration")  # seconds logged in within the range
    paused: float = col("duration")  # seconds of those paused
    rung: int = col("count")  # ring attempts (one per ring of one caller)
    answered: int = col("count")  # ... answered
    missed: int = col("count")  # ... not answered within the answer time
    rejected: int = col("count")  # ... declined / busy
    completed: int = col("count")  # queue calls that ended
    talk_time: float = col("duration")  # their talk, summed
    avg_talk: float | None = col("seconds")  # talk_time / completed
    wrap_up: float = col("duration")  # rest after calls, as taken
    occupancy: float | None = col("ratio")  # (talk + wrap-up) / (logged in − paused)


@dataclass(frozen=True)
class OperatorsReport:
    NAME: ClassVar[str] = "operators"
    period: Period
    queues: tuple[str, ...] | None  # None: every queue
    now: float = col("time")  # open sessions run to min(now, end of the range)
    operators: tuple[OperatorRow, ...]
    total: OperatorRow

    def sections(self) -> list[Section]:
        return [
            Section("operator", "Operators", self.operators),
            Section("total", "", (self.total,)),
        ]


@dataclass
class _Sums:
    logged_in: float = 0.0
    paused: float = 0.0
    rung: int = 0
    answered: int = 0
    missed: int = 0
    rejected: int = 0
    completed: int = 0
    talk_time: float = 0.0
    wrap_up: float = 0.0
    active: bool = False  # had a queue row of the selected queues in the range

    def row(self, agent: str) -> OperatorRow:
        return OperatorRow(
            agent=agent,
            logged_in=self.logged_in,
            paused=self.paused,
            rung=self.rung,
            answered=self.answered,
            missed=self.missed,
            rejected=self.rejected,
            completed=self.completed,
            talk_time=self.talk_time,
            avg_talk=ratio(self.talk_time, self.completed),
            wrap_up=self.wrap_up,
            occupancy=ratio(self.talk_time + self.wrap_up, self.logged_in - self.paused),
        )


def operators_report(
    rows: Iterable[Row],
    start: float,
    end: float,
    timezone: str,
    *,
    queues: Collection[str] | None = None,
    now: float | None = None,
) -> OperatorsReport:
    """Per operator, sorted by id. `rows` must include the login/logout/pause/unpause
    rows from before `start` that open sessions reaching into the range. With `queues`,
    only operators with a ring, call or wrap-up of those queues in the range are listed,
    and only that work is counted; their logged-in and paused time is still their whole
    time (login and pause are not per queue)."""
    period = Period(start, end, timezone)
    now = end if now is None else now
    until = min(end, now)
    by_agent: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["time"]):
        if row.get("agent") is not None:
            by_agent[row["agent"]].append(row)
    sums: dict[str, _Sums] = {}
    for agent, agent_rows in by_agent.items():
        s = _Sums()
        _count_work(s, agent_rows, period, queues)
        _count_time(s, agent_rows, period, until)
        if s.active or (queues is None and s.logged_in > 0):
            sums[agent] = s
    total = _Sums()
    for name in SUMMED:
        setattr(total, name, sum((getattr(s, name) for s in sums.values()), getattr(total, name)))
    return OperatorsReport(
        period=period,
        queues=tuple(sorted(queues)) if queues is not None else None,
        now=now,
        operators=tuple(sums[a].row(a) for a in sorted(sums)),
        total=total.row("total"),
    )


def _count_work(s: _Sums, rows: list[Row], period: Period, queues: Collection[str] | None) -> None:
    for row in rows:
        kind = row["kind"]
        if kind not in QUEUE_WORK or not period.contains(row["time"]):
            continue
        if not in_queues(row, queues):
            continue
        s.active = True
        if kind == "ring":
            s.rung += 1
            result = row.get("result")
            s.answered += result == "answered"
            s.missed += result == "missed"
            s.rejected += result == "rejected"
        elif kind == "completed":
            s.completed += 1
            s.talk_time += float(row.get("talk_time") or 0.0)
        elif kind == "wrap_up_end":
            s.wrap_up += float(row.get("duration") or 0.0)


def _count_time(s: _Sums, rows: list[Row], period: Period, until: float) -> None:
    """Logged-in time, and paused time within it, inside [start, min(end, now))."""
    sessions = [r for r in rows if r["kind"] in SESSION_KINDS and r["time"] <= until]
    logged = clip(spans(sessions, "login", "logout", until), period.start, until)
    paused = spans(sessions, "pause", "unpause", until, also_closes=("logout",))
    s.logged_in = length(logged)
    s.paused = length(intersect(logged, clip(paused, period.start, until)))
