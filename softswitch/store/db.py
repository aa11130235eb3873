"""The Store: one SQLite file in WAL mode under the data directory.

Every row is written when the event happens (not at the end of a call), so a crash
loses at most the calls in flight, and `close_stale` closes those as failed on the next
start. All methods are synchronous and short; the coordinator calls them from its event
loop (a write in WAL mode with synchronous=NORMAL takes well under a millisecond)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from softswitch.store.schema import MIGRATIONS


@dataclass(frozen=True)
class Binding:
    aor: str
    contact: str
    expires: float
    transport: str
    source_host: str
    source_port: int
    call_id: str
    cseq: int
    q: float | None = None
    user_agent: str | None = None
    updated: float = 0.0


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    # -- schema -------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path}: database schema version {current} is newer than this "
                f"softswitch knows ({len(MIGRATIONS)}); upgrade softswitch"
            )
        for number in range(current, len(MIGRATIONS)):
            with self.db:
                self.db.execute("BEGIN")
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        self.db.close()

    # -- calls and legs -----------------------------------------------------------------
    def open_call(
        self, call_id: str, *, started: float, caller: str, callee: str, kind: str = "internal"
    ) -> None:
        self.db.execute(
            "INSERT INTO calls (id, started, caller, callee, kind) VALUES (?, ?, ?, ?, ?)",
            (call_id, started, caller, callee, kind),
        )

    def call_answered(self, call_id: str, when: float) -> None:
        self.db.execute(
            "UPDATE calls SET answered = ? WHERE id = ? AND answered IS NULL", (when, call_id)
        )

    def close_call(
        self, call_id: str, *, ended: float, result: str, cause: str, sip_code: int | None = None
    ) -> None:
        """Close a call once; a second close (e.g. both legs reporting) is ignored."""
        self.db.execute(
            "UPDATE calls SET ended = ?, result = ?, cause = ?, sip_code = ? "
            "WHERE id = ? AND ended IS NULL",
            (ended, result, cause, sip_code, call_id),
        )

    def open_leg(
        self,
        leg_id: str,
        *,
        call_id: str,
        role: str,
        party: str,
        started: float,
        worker: int | None = None,
        sip_call_id: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO legs (id, call_id, role, party, started, worker, sip_call_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (leg_id, call_id, role, party, started, worker, sip_call_id),
        )

    def leg_answered(self, leg_id: str, when: float) -> None:
        self.db.execute(
            "UPDATE legs SET answered = ? WHERE id = ? AND answered IS NULL", (when, leg_id)
        )

    def close_leg(
        self,
        leg_id: str,
        *,
        ended: float,
        result: str,
        cause: str,
        sip_code: int | None = None,
        rx_packets: int | None = None,
        rx_lost: int | None = None,
        tx_packets: int | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE legs SET ended = ?, result = ?, cause = ?, sip_code = ?, rx_packets = ?, "
            "rx_lost = ?, tx_packets = ? WHERE id = ? AND ended IS NULL",
            (ended, result, cause, sip_code, rx_packets, rx_lost, tx_packets, leg_id),
        )

    def close_stale(self, now: float, cause: str = "switch restarted") -> int:
        """Close calls and legs left open by a crash; returns how many calls were closed."""
        self.db.execute(
            "UPDATE legs SET ended = ?, result = 'failed', cause = ? WHERE ended IS NULL",
            (now, cause),
        )
        cur = self.db.execute(
            "UPDATE calls SET ended = ?, result = 'failed', cause = ? WHERE ended IS NULL",
            (now, cause),
        )
        return cur.rowcount

    def call(self, call_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()

    def legs(self, call_id: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM legs WHERE call_id = ? ORDER BY started", (call_id,)
        ).fetchall()

    def save_binding(self, b: Binding) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bindings (aor, contact, expires, transport, source_host, "
            "source_port, call_id, cseq, q, user_agent, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                b.aor,
                b.contact,
                b.expires,
                b.transport,
                b.source_host,
                b.source_port,
                b.call_id,
                b.cseq,
                b.q,
                b.user_agent,
                b.updated,
            ),
        )

    def delete_binding(self, aor: str, contact: str | None = None) -> None:
        """Delete one binding, or all of an AOR's when `contact` is None."""
        if contact is None:
            self.db.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
        else:
            self.db.execute("DELETE FROM bindings WHERE aor = ? AND contact = ?", (aor, contact))

    def load_bindings(self, now: float) -> list[Binding]:
        """Live bindings; expired ones are deleted on the way."""
        self.db.execute("DELETE FROM bindings WHERE expires <= ?", (now,))
        rows = self.db.execute("SELECT * FROM bindings ORDER BY aor, updated").fetchall()
        return [Binding(**dict(r)) for r in rows]

    # -- transactions -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Everything inside commits together or not at all (BEGIN IMMEDIATE ... COMMIT,
        ROLLBACK on an exception). Not reentrant."""
        if self.db.in_transaction:
            raise RuntimeError("Store.transaction() is not reentrant")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # SQLite may have rolled back already (disk full)
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- voicemail ------------------------------------------------------------------------
    def add_voicemail(
        self,
        *,
        box: str,
        caller: str,
        caller_name: str | None,
        call_id: str | None,
        received: float,
        seconds: float,
        path: str,
    ) -> int:
        """One message; `path` is the WAV relative to the data directory."""
        cur = self.db.execute(
            "INSERT INTO voicemail (box, caller, caller_name, call_id, received, seconds, path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (box, caller, caller_name, call_id, received, seconds, path),
        )
        return int(cur.lastrowid)

    def voicemails(self, box: str | None = None) -> list[sqlite3.Row]:
        """Messages, oldest first; all boxes when `box` is None."""
        if box is None:
            return self.db.execute("SELECT * FROM voicemail ORDER BY received, id").fetchall()
        return self.db.execute(
            "SELECT * FROM voicemail WHERE box = ? ORDER BY received, id", (box,)
        ).fetchall()

    def voicemail(self, voicemail_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM voicemail WHERE id = ?", (voicemail_id,)).fetchone()

    def voicemail_paths(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT path FROM voicemail")}

    def voicemail_heard(self, voicemail_id: int, heard: bool = True) -> None:
        self.db.execute(
            "UPDATE voicemail SET heard = ? WHERE id = ?", (1 if heard else 0, voicemail_id)
        )

    # -- outbox (durable e-mail and webhook queue) ------------------------------------------
    def add_outbox(
        self,
        *,
        recipient: str,
        subject: str,
        body_text: str,
        created: float,
        message_id: str,
        body_html: str | None = None,
        attachment: str | None = None,
        voicemail_id: int | None = None,
        sender: str | None = None,
        kind: str = "email",
        once: bool = False,
    ) -> int:
        """Queue one message, due at once. `attachment` is relative to the data directory;
        `message_id` is the Message-ID header every attempt uses (a resend after a crash
        between the server's 250 and `outbox_sent` is then recognisably the same mail).

        `kind`: 'email' (the Mailer's; `recipient` an address) or 'webhook' (the
        WebhookSender's; `recipient` the URL, `subject` the event name, `body_text` the
        JSON body). `once`: a message with this `message_id` already queued (sent or
        not) is left alone and 0 is returned, so queueing it twice (a digest after a
        restart) is harmless."""
        conflict = " ON CONFLICT(message_id) DO NOTHING" if once else ""
        cur = self.db.execute(
            "INSERT INTO outbox (kind, recipient, sender, subject, body_text, body_html, "
            "attachment, voicemail_id, message_id, created, next_attempt) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){conflict}",
            (
                kind,
                recipient,
                sender,
                subject,
                body_text,
                body_html,
                attachment,
                voicemail_id,
                message_id,
                created,
                created,
            ),
        )
        if once and cur.rowcount == 0:
            return 0
        return int(cur.lastrowid)

    def due_outbox(
        self, now: float, limit: int = 100, kind: str | None = None
    ) -> list[sqlite3.Row]:
        """Unsent messages whose next attempt is due, the longest-waiting first; only
        those of `kind` ('email', 'webhook') unless it is None."""
        where, args = _kind_filter(kind)
        return self.db.execute(
            f"SELECT * FROM outbox WHERE sent IS NULL AND next_attempt <= ?{where} "
            "ORDER BY next_attempt, id LIMIT ?",
            (now, *args, limit),
        ).fetchall()

    def pending_outbox(self, kind: str | None = None) -> list[sqlite3.Row]:
        """Every unsent message (due or waiting for a retry), of `kind` unless None."""
        where, args = _kind_filter(kind)
        return self.db.execute(
            f"SELECT * FROM outbox WHERE sent IS NULL{where} ORDER BY next_attempt, id", args
        ).fetchall()

    def next_outbox_attempt(self, kind: str | None = None) -> float | None:
        """When the earliest unsent message (of `kind`) is due; None when none waits."""
        where, args = _kind_filter(kind)
        row = self.db.execute(
            f"SELECT MIN(next_attempt) FROM outbox WHERE sent IS NULL{where}", args
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def outbox_message(self, outbox_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM outbox WHERE id = ?", (outbox_id,)).fetchone()

    def outbox_by_message_id(self, message_id: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()

    def outbox_postpone(self, outbox_id: int, next_attempt: float) -> None:
        """Move an unsent message's next attempt without counting an attempt (it was not
        tried: its receiver was found down by an earlier message of the same pass)."""
        self.db.execute(
            "UPDATE outbox SET next_attempt = MAX(next_attempt, ?) WHERE id = ? AND sent IS NULL",
            (next_attempt, outbox_id),
        )

    def outbox_sent(self, outbox_id: int, now: float) -> None:
        self.db.execute(
            "UPDATE outbox SET sent = ?, last_attempt = ?, attempts = attempts + 1 "
            "WHERE id = ? AND sent IS NULL",
            (now, now, outbox_id),
        )

    def outbox_failed(self, outbox_id: int, now: float, error: str, next_attempt: float) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_attempt = ?, last_error = ?, "
            "next_attempt = ? WHERE id = ? AND sent IS NULL",
            (now, error, next_attempt, outbox_id),
        )

    # -- queue log and operators ------------------------------------------------------------
    QUEUE_COLUMNS = (
        "time kind queue caller number agent result reason code position priority wait "
        "ring_start ring_time talk_time duration target attempts"
    ).split()

    def add_queue_event(self, row: dict) -> int:
        """One queue_log row. `row` holds column names (unknown keys are an error, so a
        renamed field cannot be dropped silently); `attempts` is a list of dicts."""
        unknown = set(row) - set(self.QUEUE_COLUMNS)
        if unknown:
            raise ValueError(f"queue_log has no column(s) {sorted(unknown)}")
        values = dict(row)
        if "attempts" in values:
            values["attempts"] = json.dumps(values["attempts"]) if values["attempts"] else None
        cols = list(values)
        cur = self.db.execute(
            f"INSERT INTO queue_log ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [values[c] for c in cols],
        )
        return int(cur.lastrowid)

    def queue_events(
        self,
        *,
        kind: str | None = None,
        caller: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        """queue_log rows in order, as dicts with `attempts` decoded."""
        where, args = [], []
        for column, value in (("kind", kind), ("caller", caller), ("agent", agent)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        sql = "SELECT * FROM queue_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY time, id", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["attempts"] = json.loads(d["attempts"]) if d["attempts"] else []
            out.append(d)
        return out

    def close_stale_queue(self, now: float, reason: str = "switch restarted") -> int:
        """After a crash: callers still in a queue get a `left` row (result `failed`),
        operators still logged in get a `logout` row (reason `reason`), both at the time
        of the last row the crashed run wrote (the best bound of when it stopped)."""
        last = self.db.execute("SELECT MAX(time) FROM queue_log").fetchone()[0]
        if last is None:
            return 0
        end = min(float(last), now)
        closed = 0
        open_callers = self.db.execute(
            "SELECT j.caller, j.queue, j.number, j.time FROM queue_log j WHERE j.kind = 'joined' "
            "AND NOT EXISTS (SELECT 1 FROM queue_log e WHERE e.caller = j.caller "
            "AND e.queue = j.queue AND e.id > j.id AND e.kind IN "
            "('completed', 'abandoned', 'left'))"
        ).fetchall()
        for caller, queue, number, joined in open_callers:
            self.add_queue_event(
                {
                    "time": end,
                    "kind": "left",
                    "queue": queue,
                    "caller": caller,
                    "number": number,
                    "result": "failed",
                    "reason": reason,
                    "wait": max(0.0, end - joined),
                }
            )
            closed += 1
        for agent, since in self.open_logins():
            self.add_queue_event(
                {
                    "time": end,
                    "kind": "logout",
                    "agent": agent,
                    "reason": reason,
                    "duration": max(0.0, end - since),
                }
            )
            closed += 1
        return closed

    def open_logins(self) -> list[tuple[str, float]]:
        """Operators whose last login has no logout after it: (agent, login time)."""
        rows = self.db.execute(
            "SELECT agent, kind, time FROM queue_log WHERE kind IN ('login', 'logout') ORDER BY id"
        ).fetchall()
        state: dict[str, float | None] = {}
        for agent, kind, when in rows:
            state[agent] = when if kind == "login" else None
        return [(a, t) for a, t in state.items() if t is not None]

    def agent_status(self) -> dict[str, sqlite3.Row]:
        return {r["agent"]: r for r in self.db.execute("SELECT * FROM agent_status")}

    def set_agent_status(
        self, agent: str, *, logged_out: bool, pause_reason: str | None, now: float
    ) -> None:
        """What the operator asked for (API / feature code), kept across restarts."""
        self.db.execute(
            "INSERT INTO agent_status (agent, logged_out, pause_reason, updated) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(agent) DO UPDATE SET logged_out = excluded."
            "logged_out, pause_reason = excluded.pause_reason, updated = excluded.updated",
            (agent, 1 if logged_out else 0, pause_reason, now),
        )


def _kind_filter(kind: str | None) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if kind is None else (" AND kind = ?", (kind,))


def _statements(script: str) -> Iterable[str]:
    """Split a migration script into statements (sqlite3.execute runs one at a time,
    and executescript would commit the surrounding transaction)."""
    buf: list[str] = []
    for line in script.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                yield stmt
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        yield rest
