"""What a notification says: pure functions from queue_log rows (and report figures) to
a `Notification` — e-mail subject, plain text and HTML, and the JSON payload of the
webhook. No I/O here; `softswitch.notify.service` queues them, the senders deliver.

Three events:

- `missed-call`: a caller left a queue unanswered (an `abandoned` or `left` row): who
  called, when, which queue, how long they waited, how they left, and every operator
  rung with how many seconds and how it ended (the row's `attempts`);
- `missed-ring`: one ring an operator let run out or declined (a `ring` row with result
  `missed` or `rejected`), for queues with `notify_missed_rings`;
- `digest`: one queue's figures for one local day, with the list of missed callers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from softswitch.acd.commands import Attempt
from softswitch.reports.load import LoadRow
from softswitch.reports.missed import MissedRow
from softswitch.reports.visits import attempts_of

MISSED_CALL, MISSED_RING, DIGEST = "missed-call", "missed-ring", "digest"
OUTBOUND_GUARD = "outbound-guard"
EVENTS = (MISSED_CALL, MISSED_RING, DIGEST, OUTBOUND_GUARD)

# how the caller left (an `abandoned` row, or the `result` of a `left` row)
OUTCOMES = {
    "abandoned": "hung up while waiting",
    "timeout": "waited the longest time allowed and was sent on",
    "key": "pressed the exit key",
    "full": "found the queue full",
    "empty": "found no operator logged in",
    "removed": "was taken out of the queue",
    "failed": "was cut off when the switch stopped",
}

# the same, short, for subjects
SHORT_OUTCOMES = {
    "abandoned": "hung up",
    "timeout": "timed out",
    "key": "pressed the exit key",
    "full": "queue full",
    "empty": "no operator logged in",
    "removed": "taken out of the queue",
    "failed": "cut off (switch stopped)",
}

# who took a `removed` caller out (the row's reason)
REMOVED_BY = {"switch": " by the switch", "api": " through the HTTP API"}

# how one ring ended
RING_RESULTS = {
    "answered": "answered",
    "missed": "not answered in time",
    "rejected": "declined",
    "failed": "phone not reachable",
    "cancelled": "stopped ringing when the caller left",
}

RING_REASONS = {
    "timeout": "the queue's answer time ran out",
    "no-answer": "the phone gave up ringing",
    "rejected": "the operator declined",
}


@dataclass(frozen=True)
class Notification:
    """One notification, the same for every supervisor of the queue."""

    event: str  # one of EVENTS
    key: str  # stable and unique: the message ids of its outbox rows derive from it
    queue: str
    subject: str
    text: str  # the e-mail's plain-text body
    html: str  # the e-mail's HTML body
    payload: dict[str, Any]  # the webhook's JSON

    def body(self) -> str:
        """The webhook body exactly as it is sent and signed."""
        return json.dumps(self.payload, ensure_ascii=False, sort_keys=True)


# -- formatting ---------------------------------------------------------------------------
def local_time(when: float, tz: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, ZoneInfo(tz))


def show_time(when: float, tz: str) -> str:
    """Local time with the zone's abbreviation: "2026-03-02 14:30:05 CET"."""
    return local_time(when, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def iso_time(when: float, tz: str) -> str:
    """Local time in ISO 8601 with its offset: "2026-03-02T14:30:05+01:00"."""
    return local_time(when, tz).isoformat(timespec="seconds")


def seconds(value: float | None) -> str:
    """Whole seconds as people read them: "74 s"; "-" when unknown."""
    return "-" if value is None else f"{max(0, round(value))} s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100)} %"


def _num(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _digest_of(*parts: object) -> str:
    return hashlib.sha256("|".join(repr(p) for p in parts).encode()).hexdigest()[:16]


def _who(number: str | None) -> str:
    return number or "unknown number"


def _agent(agent: str, names: Mapping[str, str]) -> str:
    name = names.get(agent)
    return f"{agent} {name}" if name else agent


def _attempt_rows(
    attempts: Iterable[Attempt], names: Mapping[str, str], tz: str
) -> list[dict[str, Any]]:
    return [
        {
            "agent": a.agent,
            "agent_name": names.get(a.agent),
            "start": _num(a.start),
            "start_local": iso_time(a.start, tz),
            "seconds": _num(a.seconds),
            "result": a.result,
        }
        for a in attempts
    ]


def _attempts_text(attempts: tuple[Attempt, ...], names: Mapping[str, str]) -> list[str]:
    if not attempts:
        return ["No operator was rung."]
    width = max(len(_agent(a.agent, names)) for a in attempts)
    lines = ["Operators rung:"]
    for a in attempts:
        how = RING_RESULTS.get(a.result, a.result)
        lines.append(
            f"  {_agent(a.agent, names):<{width}}  rang {seconds(a.seconds):>6}  {a.result} ({how})"
        )
    return lines


def _attempts_html(attempts: tuple[Attempt, ...], names: Mapping[str, str]) -> str:
    if not attempts:
        return "<p>No operator was rung.</p>"
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(a.agent)}</td><td>{e(names.get(a.agent, ''))}</td>"
        f'<td style="text-align:right">{e(seconds(a.seconds))}</td>'
        f"<td>{e(a.result)} ({e(RING_RESULTS.get(a.result, a.result))})</td></tr>"
        for a in attempts
    )
    return (
        "<p>Operators rung:</p>"
        '<table border="1" cellspacing="0" cellpadding="4">'
        "<tr><th>Operator</th><th>Name</th><th>Rang</th><th>Ended</th></tr>"
        f"{rows}</table>"
    )


def _facts_html(facts: list[tuple[str, str]]) -> str:
    e = html.escape
    rows = "".join(f'<tr><th align="left">{e(k)}</th><td>{e(v)}</td></tr>' for k, v in facts)
    return f'<table cellpadding="2">{rows}</table>'


def _facts_text(facts: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in facts) + 1
    return [f"{k + ':':<{width}} {v}" for k, v in facts]


def _page(title: str, inner: str) -> str:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family:sans-serif">{inner}</body></html>\n'
    )


# -- outbound guard --------------------------------------------------------------------------
def outbound_guard(route: str, extension: str, limit: int, when: float, tz: str) -> Notification:
    """An extension hit a paid route's calls-per-hour limit: a stolen password being
    used for toll fraud looks exactly like this. One alert per extension, route and hour
    (the key), however many calls are refused."""
    hour = int(when // 3600)
    subject = f"Outbound limit reached: extension {extension} on route {route}"
    facts = [
        ("Extension", extension),
        ("Route", route),
        ("Limit", f"{limit} calls per hour"),
        ("Time", show_time(when, tz)),
    ]
    text = "\n".join(
        [subject, "", *_facts_text(facts), "", "Further calls are refused (403) for now."]
    )
    inner = f"<h2>{html.escape(subject)}</h2>{_facts_html(facts)}"
    return Notification(
        event=OUTBOUND_GUARD,
        key=f"guard-{route}-{extension}-{hour}",
        queue="",
        subject=subject,
        text=text + "\n",
        html=_page(subject, inner),
        payload={
            "event": OUTBOUND_GUARD,
            "extension": extension,
            "route": route,
            "limit_per_hour": limit,
            "time": iso_time(when, tz),
        },
    )


# -- missed call ---------------------------------------------------------------------------
def outcome_of(row: Mapping[str, Any]) -> str:
    """`abandoned`, or how a `left` row's caller left (timeout / key / full / ...)."""
    if row["kind"] == "abandoned":
        return "abandoned"
    return str(row.get("result") or "left")


def missed_call(row: Mapping[str, Any], names: Mapping[str, str], tz: str) -> Notification:
    """The notification for an `abandoned` or `left` queue_log row. `names`: extension
    number -> name; `tz`: the switch's time zone (an IANA name)."""
    if row["kind"] not in ("abandoned", "left"):
        raise ValueError(f"not a missed call: a {row['kind']!r} row")
    queue, when = str(row["queue"]), float(row["time"])
    number = row.get("number")
    wait = float(row["wait"]) if row.get("wait") is not None else None
    outcome = outcome_of(row)
    attempts = attempts_of(row)
    how = OUTCOMES.get(outcome, f"left the queue ({outcome})")
    if outcome == "removed":
        how += REMOVED_BY.get(str(row.get("reason")), f" ({row.get('reason') or 'switch'})")
    short = SHORT_OUTCOMES.get(outcome, outcome)
    subject = f"Missed call in queue {queue}: {_who(number)}, {short}"
    if wait is not None:
        subject += f" after {seconds(wait)}"
    facts = [
        ("Caller", _who(number)),
        ("Time", show_time(when, tz)),
        ("Queue", queue),
        ("Waited", seconds(wait)),
        ("Outcome", how),
    ]
    if row.get("target"):
        facts.append(("Sent on to", str(row["target"])))
    text = "\n".join(
        [
            f"A caller left queue {queue} without being answered.",
            "",
            *_facts_text(facts),
            "",
            *_attempts_text(attempts, names),
            "",
        ]
    )
    page = _page(
        subject,
        f"<p>A caller left queue <b>{html.escape(queue)}</b> without being answered.</p>"
        + _facts_html(facts)
        + _attempts_html(attempts, names),
    )
    payload = {
        "event": MISSED_CALL,
        "queue": queue,
        "number": number,
        "call_id": row.get("caller"),
        "time": _num(when),
        "time_local": iso_time(when, tz),
        "timezone": tz,
        "wait_seconds": _num(wait),
        "outcome": outcome,
        "reason": row.get("reason"),
        "position": row.get("position"),
        "target": row.get("target"),
        "attempts": _attempt_rows(attempts, names, tz),
    }
    key = f"missed-{queue}-{_digest_of(row.get('caller'), queue, row['kind'], when)}"
    payload["id"] = key
    return Notification(MISSED_CALL, key, queue, subject, text, page, payload)


# -- missed ring ---------------------------------------------------------------------------
def missed_ring(row: Mapping[str, Any], names: Mapping[str, str], tz: str) -> Notification:
    """The notification for a `ring` row an operator let run out or declined."""
    if row["kind"] != "ring":
        raise ValueError(f"not a ring: a {row['kind']!r} row")
    queue, agent = str(row["queue"]), str(row["agent"])
    when = float(row["time"])
    start = float(row["ring_start"]) if row.get("ring_start") is not None else None
    rang = float(row["ring_time"]) if row.get("ring_time") is not None else None
    number = row.get("number")
    result = str(row.get("result"))
    verb = "declined" if result == "rejected" else "did not answer"
    subject = (
        f"Queue {queue}: operator {_agent(agent, names)} {verb} a call from {_who(number)}"
        f" (rang {seconds(rang)})"
    )
    facts = [
        ("Operator", _agent(agent, names)),
        ("Caller", _who(number)),
        ("Time", show_time(start if start is not None else when, tz)),
        ("Queue", queue),
        ("Rang", seconds(rang)),
        ("Ended", f"{result} ({RING_RESULTS.get(result, result)})"),
    ]
    if row.get("reason") in RING_REASONS:
        facts.append(("Why", RING_REASONS[row["reason"]]))
    text = "\n".join(
        [
            f"An operator of queue {queue} let a caller's ring go unanswered.",
            "",
            *_facts_text(facts),
            "",
            "The caller may still be waiting for another operator.",
            "",
        ]
    )
    page = _page(
        subject,
        f"<p>An operator of queue <b>{html.escape(queue)}</b> let a caller's ring go "
        "unanswered.</p>"
        + _facts_html(facts)
        + "<p>The caller may still be waiting for another operator.</p>",
    )
    payload = {
        "event": MISSED_RING,
        "queue": queue,
        "number": number,
        "call_id": row.get("caller"),
        "agent": agent,
        "agent_name": names.get(agent),
        "time": _num(when),
        "time_local": iso_time(when, tz),
        "timezone": tz,
        "ring_start": _num(start),
        "ring_seconds": _num(rang),
        "result": result,
        "reason": row.get("reason"),
        "code": row.get("code"),
    }
    key = f"ring-{queue}-{_digest_of(row.get('caller'), queue, agent, start, when)}"
    payload["id"] = key
    return Notification(MISSED_RING, key, queue, subject, text, page, payload)


# -- daily digest --------------------------------------------------------------------------
def digest_key(queue: str, day: dt.date) -> str:
    """The digest's key: one digest per queue and local day."""
    return f"digest-{queue}-{day.isoformat()}"


def digest(
    queue: str,
    day: dt.date,
    total: LoadRow,
    missed: Iterable[MissedRow],
    names: Mapping[str, str],
    tz: str,
    service_seconds: float,
) -> Notification:
    """One queue's day: `total` is the load report's total row for that queue and day,
    `missed` the missed report's rows (callers who left unanswered)."""
    missed = list(missed)
    lost = total.offered - total.answered - total.waiting
    longest_missed = max((m.wait for m in missed), default=None)
    subject = (
        f"Queue {queue}, {day:%a %Y-%m-%d}: {total.offered} call(s), "
        f"{total.answered} answered ({percent(total.handling_ratio)}), {lost} missed"
    )
    facts = [
        ("Queue", queue),
        ("Day", f"{day:%A %Y-%m-%d} ({tz})"),
        ("Offered", str(total.offered)),
        ("Answered", str(total.answered)),
        ("Abandoned", str(total.abandoned)),
        (
            "Left",
            f"{total.timeout} timeout, {total.key} exit key, {total.full} full, "
            f"{total.empty} nobody logged in, {total.other} other",
        ),
        ("Handling ratio", percent(total.handling_ratio)),
        (f"Service level ({seconds(service_seconds)})", percent(total.service_level)),
        ("Longest wait (answered)", seconds(total.max_wait_answered)),
        ("Longest wait (missed)", seconds(longest_missed)),
    ]
    lines = [f"Queue {queue} on {day:%A %Y-%m-%d}.", "", *_facts_text(facts), ""]
    if missed:
        lines.append("Missed callers:")
        for m in missed:
            reached = (
                f"reached {show_time(m.reached_at, tz)} ({m.reached_via} {m.reached_by})"
                if m.reached_at is not None
                else "not reached yet"
            )
            rung = ", ".join(
                f"{_agent(a.agent, names)} {seconds(a.seconds)} {a.result}" for a in m.attempts
            )
            lines.append(
                f"  {show_time(m.time, tz)}  {_who(m.number)}  waited {seconds(m.wait)}, "
                f"{OUTCOMES.get(m.result, m.result)}; rang: {rung or 'nobody'}; {reached}"
            )
    else:
        lines.append("No missed callers.")
    lines.append("")
    e = html.escape
    missed_html = (
        '<table border="1" cellspacing="0" cellpadding="4"><tr><th>Time</th><th>Caller</th>'
        "<th>Waited</th><th>Outcome</th><th>Operators rung</th><th>Reached</th></tr>"
        + "".join(
            f"<tr><td>{e(show_time(m.time, tz))}</td><td>{e(_who(m.number))}</td>"
            f"<td>{e(seconds(m.wait))}</td><td>{e(OUTCOMES.get(m.result, m.result))}</td>"
            "<td>"
            + e(
                ", ".join(
                    f"{_agent(a.agent, names)} {seconds(a.seconds)} {a.result}" for a in m.attempts
                )
                or "nobody"
            )
            + "</td><td>"
            + e(
                f"{show_time(m.reached_at, tz)} ({m.reached_via} {m.reached_by})"
                if m.reached_at is not None
                else "not yet"
            )
            + "</td></tr>"
            for m in missed
        )
        + "</table>"
        if missed
        else "<p>No missed callers.</p>"
    )
    page = _page(
        subject,
        f"<p>Queue <b>{e(queue)}</b> on {e(f'{day:%A %Y-%m-%d}')}.</p>"
        + _facts_html(facts)
        + "<h3>Missed callers</h3>"
        + missed_html,
    )
    payload = {
        "event": DIGEST,
        "queue": queue,
        "date": day.isoformat(),
        "timezone": tz,
        "offered": total.offered,
        "answered": total.answered,
        "abandoned": total.abandoned,
        "timeout": total.timeout,
        "key": total.key,
        "full": total.full,
        "empty": total.empty,
        "other": total.other,
        "waiting": total.waiting,
        "handling_ratio": _num(total.handling_ratio),
        "service_level": _num(total.service_level),
        "service_seconds": service_seconds,
        "avg_wait_answered": _num(total.avg_wait_answered),
        "max_wait_answered": _num(total.max_wait_answered),
        "max_wait_missed": _num(longest_missed),
        "missed": [
            {
                "time": _num(m.time),
                "time_local": iso_time(m.time, tz),
                "number": m.number,
                "call_id": m.caller,
                "wait_seconds": _num(m.wait),
                "outcome": m.result,
                "attempts": _attempt_rows(m.attempts, names, tz),
                "reached_at": _num(m.reached_at),
                "reached_via": m.reached_via,
                "reached_by": m.reached_by,
            }
            for m in missed
        ],
    }
    key = digest_key(queue, day)
    payload["id"] = key
    return Notification(DIGEST, key, queue, subject, "\n".join(lines), page, payload)
