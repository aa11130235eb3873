"""The API's view of the running switch, read from the coordinator's own objects (the
ACD's views, the registrar, the calls and flow sessions) when asked, plus two small
trackers the views need and the switch does not keep:

- `OperatorTracker`: since when each operator has had their current status and state
  (updated from every queue_log row, and by a short poll for what writes no row, such as
  a phone starting to ring);
- `TodayStats`: today's per-queue and per-operator figures from the queue_log rows since
  local midnight in `[switch] timezone`, computed with the report code and cached until
  the next queue row.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from softswitch.calls import ExtensionCall
from softswitch.reports.load import load_report
from softswitch.reports.period import ONE_DAY, midnight

if TYPE_CHECKING:
    from softswitch.callcentre import CallCentre
    from softswitch.coordinator import Coordinator
    from softswitch.flow.session import FlowSession
    from softswitch.store import Store

log = logging.getLogger(__name__)

SERVICE_SECONDS = 20.0  # "today": service level = answered within this many seconds
# queue_log kinds that change an operator's status or state
OPERATOR_KINDS = (
    "login",
    "logout",
    "pause",
    "unpause",
    "ring",
    "connected",
    "completed",
    "wrap_up_start",
    "wrap_up_end",
)


# -- operators -------------------------------------------------------------------------
class OperatorTracker:
    """The last seen (status, pause reason, state, caller) of each operator and since
    when it holds."""

    def __init__(self, centre: CallCentre, store: Store) -> None:
        self.centre = centre
        self.last: dict[str, tuple] = {}
        self.since: dict[str, float | None] = {}
        marks = ",".join("?" * len(OPERATOR_KINDS))
        for agent in sorted(centre.agents):
            self.last[agent] = self._key(agent)
            row = store.db.execute(
                f"SELECT MAX(time) FROM queue_log WHERE agent = ? AND kind IN ({marks})",
                (agent, *OPERATOR_KINDS),
            ).fetchone()
            self.since[agent] = row[0] if row else None

    def _key(self, agent: str) -> tuple:
        v = self.centre.acd.agent_view(agent)
        return (v.status, v.pause_reason, v.state, v.caller)

    def check(self, agent: str, when: float) -> bool:
        """True when the operator's status or state changed since last seen (and then
        `when` becomes their `since`)."""
        if agent not in self.last:
            return False
        key = self._key(agent)
        if key == self.last[agent]:
            return False
        self.last[agent] = key
        self.since[agent] = when
        return True


def operator_item(co: Coordinator, tracker: OperatorTracker, agent: str, today: dict) -> dict:
    centre = co.callcentre
    assert centre is not None and co.registrar is not None
    v = centre.acd.agent_view(agent)
    ext = co.config.extension(agent)
    return {
        "agent": agent,
        "name": ext.name if ext else agent,
        "status": v.status,
        "pause_reason": v.pause_reason,
        "state": v.state,
        "since": tracker.since.get(agent),
        "caller": v.caller,
        "number": centre.numbers.get(v.caller) if v.caller else None,
        "queues": list(v.queues),
        "wrap_until": v.wrap_until,
        "other_calls": v.other_calls,
        "registered": bool(co.registrar.lookup(agent, co.clock())),
        "today": today.get(agent) or {"answered": 0, "missed": 0, "talk_time": 0.0},
    }


# -- queues ----------------------------------------------------------------------------
def queue_item(co: Coordinator, name: str, today: dict) -> dict:
    centre = co.callcentre
    assert centre is not None
    block = centre.blocks[name]
    view = centre.acd.queue_view(name)
    now = co.clock()
    waiting = []
    for caller in view.waiting:
        cv = centre.acd.caller_view(caller)
        if cv is None:
            continue
        qc = centre.callers.get(caller)
        waiting.append(
            {
                "caller": caller,
                "number": centre.numbers.get(caller) or (qc.call.caller if qc else None),
                "name": qc.call.caller_name if qc else None,
                "joined": cv.joined_at,
                "wait": round(max(0.0, now - cv.joined_at), 1),
                "position": cv.position,
                "priority": cv.priority,
                "state": "ringing" if cv.ringing else "waiting",
                "ringing": list(cv.ringing),
            }
        )
    return {
        "name": name,
        "strategy": block.strategy,
        "members": list(block.members),
        "logged_in": view.logged_in,
        "available": view.available,
        "free": view.free,
        "waiting": waiting,
        "longest_wait": max((w["wait"] for w in waiting), default=None),
        "average_handle_time": view.average_handle_time,
        "today": today.get(name) or empty_queue_day(),
    }


def empty_queue_day() -> dict:
    return {
        "offered": 0,
        "answered": 0,
        "abandoned": 0,
        "handling_ratio": None,
        "service_level": None,
    }


class TodayStats:
    """Per-queue and per-operator figures of the current local day.

    Computed off the event loop (a thread, on a database connection of its own: a busy
    day has tens of thousands of rows) and cached until the next queue row or the next
    day. `current()` waits for figures that include every row so far (the GET routes);
    `cached()` answers at once with the last figures and starts a refresh when they are
    stale (events, which must not wait)."""

    def __init__(self, db_path: Path, timezone: str, queues: list[str], clock) -> None:
        self.db_path = db_path
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self.queues = queues
        self.clock = clock
        self.version = 0  # bumped on every queue row
        self._key: tuple | None = None
        self._value: tuple[dict, dict] = ({}, {})
        self._store: Store | None = None  # used by one refresh at a time
        self._refreshing: asyncio.Task | None = None

    def changed(self) -> None:
        self.version += 1

    def _wanted(self) -> tuple:
        return (dt.datetime.fromtimestamp(self.clock(), self.zone).date(), self.version)

    async def current(self) -> tuple[dict, dict]:
        """(by queue name, by operator id), including every row so far (a second try at
        most: rows may keep coming while it computes)."""
        for _ in range(2):
            if self._key == self._wanted():
                break
            await asyncio.shield(self._start())
        return self._value

    def cached(self) -> tuple[dict, dict]:
        if self._key != self._wanted():
            self._start()
        return self._value

    def _start(self) -> asyncio.Task:
        """The running refresh, or a new one: never two at once (one connection)."""
        task = self._refreshing
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(_log_failure)
            self._refreshing = task
        return task

    async def _refresh(self) -> None:
        key = self._wanted()
        value = await asyncio.get_running_loop().run_in_executor(None, self._compute, key[0])
        self._value, self._key = value, key

    async def aclose(self) -> None:
        if self._refreshing is not None:
            with contextlib.suppress(Exception):
                await self._refreshing  # its thread uses the connection
        if self._store is not None:
            self._store.close()
            self._store = None

    def _compute(self, day: dt.date) -> tuple[dict, dict]:
        from softswitch.store import Store

        if self._store is None:
            self._store = Store(self.db_path)
        start = midnight(day, self.zone)
        end = midnight(day + ONE_DAY, self.zone)
        rows = self._store.queue_events(since=start, until=end)
        queues: dict[str, dict] = {}
        for name in self.queues:
            t = load_report(
                rows, start, end, self.timezone, queues=[name], service_seconds=SERVICE_SECONDS
            ).total
            queues[name] = {
                "offered": t.offered,
                "answered": t.answered,
                "abandoned": t.abandoned,
                "handling_ratio": t.handling_ratio,
                "service_level": t.service_level,
            }
        agents: dict[str, dict[str, Any]] = {}
        for row in rows:
            agent = row.get("agent")
            if agent is None or row["kind"] not in ("ring", "completed"):
                continue
            s = agents.setdefault(agent, {"answered": 0, "missed": 0, "talk_time": 0.0})
            if row["kind"] == "ring":
                s["answered"] += row.get("result") == "answered"
                s["missed"] += row.get("result") == "missed"
            else:
                s["talk_time"] += float(row.get("talk_time") or 0.0)
        for s in agents.values():
            s["talk_time"] = round(s["talk_time"], 1)
        return queues, agents


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("today's figures failed", exc_info=task.exception())


# -- calls -----------------------------------------------------------------------------
def call_item(co: Coordinator, call: ExtensionCall | FlowSession, row: Any = None) -> dict:
    """One active (or just ended) call; `row` is its `calls` row (times, result)."""
    if isinstance(call, ExtensionCall):
        kind, caller, callee, block, queue, agent = (
            "internal",
            call.caller,
            call.callee,
            None,
            None,
            None,
        )
    else:
        kind, caller, callee = "flow", call.caller, call.dialed
        block = call.call.vars.get("block") if call.call is not None else None
        qc = co.callcentre.callers.get(call.call_id) if co.callcentre is not None else None
        queue = qc.block.name if qc is not None else None
        agent = qc.winner if qc is not None else None
    ext = co.config.extension(caller)
    item = {
        "id": call.call_id,
        "kind": kind,
        "caller": caller,
        "caller_name": ext.name if ext else (getattr(call, "caller_name", None) or None),
        "callee": callee,
        "started": row["started"] if row is not None else None,
        "answered": row["answered"] if row is not None else None,
        "block": block,
        "queue": queue,
        "agent": agent,
    }
    return item


def active_calls(co: Coordinator) -> list[dict]:
    assert co.store is not None
    rows = {
        r["id"]: r
        for r in co.store.db.execute("SELECT id, started, answered FROM calls WHERE ended IS NULL")
    }
    items = [
        call_item(co, c, rows.get(cid))
        for cid, c in [*co.calls.items(), *co.sessions.items()]
        if not getattr(c, "closed", False)
    ]
    items.sort(key=lambda i: (i["started"] or 0.0, i["id"]))
    return items


def status(co: Coordinator, started: float, version: str) -> dict:
    assert co.registrar is not None
    registrations: dict[str, int] = {}
    for b in co.registrar.all_bindings(co.clock()):
        registrations[b.aor] = registrations.get(b.aor, 0) + 1
    centre = co.callcentre
    return {
        "version": version,
        "started": started,
        "calls_active": len(co.calls) + len(co.sessions),
        "registrations": dict(sorted(registrations.items())),
        "queues": list(centre.blocks) if centre is not None else [],
    }
