"""A caller's life in one queue (a "visit"), rebuilt from queue_log rows.

joined → ring* → connected → completed, or joined → ring* → abandoned / left. The load,
missed and staffing reports count visits rather than rows, so a caller who joined at
09:59 and was answered at 10:01 is one offered-and-answered call of the 09:00 hour, and
"answered" can never exceed "offered" in any bucket."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from softswitch.acd.commands import Attempt

Row = Mapping[str, Any]

# rows about one caller in one queue; the others (login, pause, wrap-up) are operators'
CALLER_KINDS = frozenset({"joined", "ring", "connected", "completed", "abandoned", "left"})


@dataclass
class Visit:
    queue: str
    caller: str  # our call id
    number: str | None  # the caller's phone number
    joined: float
    position: int | None = None  # at the join
    outcome: str | None = None  # answered / abandoned / left; None: still waiting
    ended: float | None = None  # time of connected / abandoned / left
    result: str | None = None  # left: timeout / key / full / empty / removed / failed
    target: str | None = None  # left: where the flow went on
    wait: float | None = None  # join → answer / hang-up / leave
    agent: str | None = None  # who answered
    attempts: tuple[Attempt, ...] = ()
    completed: float | None = None
    talk_time: float | None = None

    @property
    def unanswered(self) -> bool:
        return self.outcome in ("abandoned", "left")


def in_queues(row: Row, queues: Collection[str] | None) -> bool:
    """Whether a row passes the report's queue filter (None: every queue)."""
    return queues is None or row.get("queue") in queues


def attempts_of(row: Row) -> tuple[Attempt, ...]:
    """The `attempts` of an abandoned / left row (decoded JSON dicts or Attempts)."""
    out = []
    for a in row.get("attempts") or ():
        if isinstance(a, Attempt):
            out.append(a)
        else:
            out.append(
                Attempt(str(a["agent"]), float(a["start"]), float(a["seconds"]), str(a["result"]))
            )
    return tuple(out)


def build_visits(rows: Iterable[Row], queues: Collection[str] | None = None) -> list[Visit]:
    """Visits in join order. A visit whose `joined` row is missing (it joined before the
    rows start) is rebuilt from its later rows, its join time being time − wait."""
    open_: dict[tuple[str, str], Visit] = {}
    out: list[Visit] = []
    for row in sorted(rows, key=lambda r: r["time"]):
        kind = row["kind"]
        if kind not in CALLER_KINDS or not in_queues(row, queues) or row.get("caller") is None:
            continue
        key = (row["caller"], row["queue"])
        t = float(row["time"])
        if kind == "joined":
            v = Visit(row["queue"], row["caller"], row.get("number"), t, row.get("position"))
            open_[key] = v
            out.append(v)
            continue
        v = open_.get(key)
        if v is None:
            if kind == "ring":
                continue  # a ring of a visit we cannot place; operators count rings anyway
            wait = row.get("wait")
            joined = t - float(wait) if wait is not None else t
            v = Visit(row["queue"], row["caller"], row.get("number"), joined)
            open_[key] = v
            out.append(v)
        if v.number is None:
            v.number = row.get("number")
        if kind == "connected":
            v.outcome, v.ended, v.agent = "answered", t, row.get("agent")
            v.wait = _wait(row, v)
        elif kind == "completed":
            v.outcome = "answered"
            v.agent = v.agent or row.get("agent")
            if v.wait is None:
                v.wait = row.get("wait")
            v.completed, v.talk_time = t, row.get("talk_time")
            del open_[key]
        elif kind in ("abandoned", "left"):
            v.outcome, v.ended, v.wait = kind, t, _wait(row, v)
            v.attempts = attempts_of(row)
            if kind == "left":
                v.result, v.target = row.get("result"), row.get("target")
            del open_[key]
    out.sort(key=lambda v: v.joined)
    return out


def _wait(row: Row, v: Visit) -> float:
    wait = row.get("wait")
    return float(wait) if wait is not None else float(row["time"]) - v.joined
