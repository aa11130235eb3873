"""Call recording: both parties of a bridged call mixed into one WAV under the data dir,
one `recordings` row per recording, deleted after `[recording] retention_days`.

Who is recorded: `[[extension]] record` and a queue block's `record` ("never",
"always", "on-demand"). A bridge (`InCall` tells us about every `bridge` command the
coordinator sends: extension calls, flow dials, queue calls) is recorded from the
start when one of its parties is "always"; a party that is "on-demand" starts and stops
it with the in-call code `[features] record_toggle` ("*1"). A recording that an
"always" party requires cannot be stopped by the code. With `[recording] announce` both
legs first hear the `call-recorded` prompt and recording starts once it has been said.

The worker records with one recorder fed by both legs (`record_bridge`); the file is
complete when it reports `bridge_recording_finished` (stopped, or a leg hung up).

Layout and crash safety: `<data_dir>/call-recordings/<YYYY-MM-DD>/<call id>-r<N>.wav`
(date in the switch's timezone). The row is written when recording starts (`ended`
NULL) and completed when the worker reports the file finished, so a crash leaves a row
pointing at the partial WAV; at the next start `close_open` repairs that WAV's header
(the writer fills in the sizes only when it closes the file) and closes the row with
reason `interrupted`. The retention sweep runs at start and hourly.

See docs/recording.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from softswitch.incall import FeatureContext, InCall, call_of

if TYPE_CHECKING:
    from softswitch.config_types import Config
    from softswitch.coordinator import Coordinator
    from softswitch.store import Store

log = logging.getLogger(__name__)

RECORDINGS_DIR = "call-recordings"
ANNOUNCE_PROMPT = "call-recorded"
ANNOUNCE_TIMEOUT = 15.0
"""Seconds recording waits at most for the announcement to be reported finished."""
SWEEP_INTERVAL = 3600.0


@dataclass(frozen=True)
class Party:
    """Who is on one leg, as far as recording is concerned."""

    extension: str | None  # an extension number, or None (outside caller, unknown)
    queue: str | None = None  # the queue whose operator this leg is


def modes(config: Config, party: Party) -> tuple[str, str]:
    """(the party's extension mode, its queue's mode): never / always / on-demand."""
    ext = config.extension(party.extension) if party.extension else None
    block = config.blocks.get(party.queue) if party.queue else None
    return (
        ext.record if ext is not None else "never",
        str(getattr(block, "record", "never")),
    )


def must_record(config: Config, parties: list[Party]) -> bool:
    """A bridge is recorded from the start when any party (or its queue) is "always"."""
    return any("always" in modes(config, p) for p in parties)


def may_toggle(config: Config, party: Party) -> bool:
    """The party may start/stop recording with the in-call code."""
    return "on-demand" in modes(config, party)


def leg_party(coordinator: Coordinator, leg: str) -> Party:
    """Who is on `leg`, from the coordinator's calls, flow sessions and queues."""
    call_id = call_of(leg)
    config = coordinator.config
    call = coordinator.calls.get(call_id)
    if call is not None:
        if leg == call.leg_a:
            return Party(call.caller)
        return Party(call.callee if leg == call.leg_b else None)
    session = coordinator.sessions.get(call_id)
    if session is None:
        return Party(None)
    if leg == session.leg_a:
        return Party(session.caller if config.extension(session.caller) else None)
    centre = coordinator.callcentre
    qc = centre.legs.get(leg) if centre is not None else None
    if qc is not None:
        return Party(qc.winner, qc.block.name)
    recorder = coordinator.recorder
    answered = recorder.answered_by.get(call_id) if recorder is not None else None
    return Party(answered if answered and config.extension(answered) else None)


@dataclass
class Active:
    """A bridge being recorded (or hearing the announcement first)."""

    worker: Any
    legs: tuple[str, str]
    call_id: str
    mandatory: bool  # an "always" party wants it: the in-call code cannot stop it
    started_by: str  # "always" or the extension that pressed the code
    waiting: set[str] = field(default_factory=set)  # legs still hearing the announcement
    timer: asyncio.TimerHandle | None = None
    rec: str | None = None  # the worker's name for the recording, once it runs
    row: int | None = None
    stop_reason: str | None = None  # why we stopped it (the worker says only "stopped")


class CallRecorder:
    """Starts, stops and stores call recordings (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        data_dir: Path,
        clock: Callable[[], float],
        send: Callable[[Any, dict], None],
        prompt: Callable[[str], Path],
        party_of: Callable[[str], Party],
    ) -> None:
        self.config = config
        self.store = store
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.send = send  # (worker, command)
        self.prompt = prompt  # prompt name -> prepared WAV
        self.party_of = party_of
        self.active: dict[frozenset[str], Active] = {}
        self.by_rec: dict[str, Active] = {}
        self.answered_by: dict[str, str] = {}  # call id -> extension that took its dial
        self.counts: dict[str, int] = {}  # call id -> recordings started
        self._task: asyncio.Task | None = None

    # -- wiring ------------------------------------------------------------------------
    def attach(self, incall: InCall) -> None:
        incall.bridge_listeners.append(self.on_bridge)
        incall.event_listeners.append(self.on_event)
        incall.add_feature([self.config.features.record_toggle], "record_toggle", self.toggle)

    def start(self) -> None:
        """At switch start: close what a crash left open, sweep, then sweep hourly."""
        closed = self.close_open(self.clock(), "interrupted")
        if closed:
            log.warning("closed %d call recording(s) left open by the previous run", closed)
        self._task = asyncio.get_running_loop().create_task(self._sweeper())

    def stop(self) -> None:
        """At switch stop, once the workers are gone (their files are complete)."""
        if self._task is not None:
            self._task.cancel()
        for act in list(self.active.values()):
            if act.timer is not None:
                act.timer.cancel()
        self.close_open(self.clock(), "switch stopped")

    async def _sweeper(self) -> None:
        while True:
            try:
                self.sweep(self.clock())
            except Exception:
                log.exception("recording retention sweep failed")
            await asyncio.sleep(SWEEP_INTERVAL)

    def call_ended(self, event: str, call: Any) -> None:
        """Coordinator call listener: forget a finished call's bookkeeping."""
        if event == "ended":
            self.answered_by.pop(call.call_id, None)
            self.counts.pop(call.call_id, None)

    # -- bridges -----------------------------------------------------------------------
    def on_bridge(self, what: str, worker: Any, a: str, b: str) -> None:
        key = frozenset((a, b))
        if what == "unbridged":
            act = self.active.get(key)
            if act is not None:
                self._stop(act, "unbridged")
            return
        if key in self.active:
            return
        if must_record(self.config, [self.party_of(a), self.party_of(b)]):
            self._start(worker, a, b, mandatory=True, started_by="always")

    def toggle(self, ctx: FeatureContext) -> None:
        """In-call action "record_toggle": start or stop the recording of the bridge."""
        party = self.party_of(ctx.leg)
        key = frozenset((ctx.leg, ctx.peer))
        act = self.active.get(key)
        if not may_toggle(self.config, party):
            log.info("leg %s (%s) may not toggle recording", ctx.leg, party.extension)
            return
        if act is None:
            self._start(ctx.worker, ctx.leg, ctx.peer, False, party.extension or "on-demand")
        elif act.mandatory:
            log.info("call %s: recording is required; %s cannot stop it", act.call_id, ctx.leg)
        else:
            self._stop(act, f"stopped by {party.extension}")

    def _start(self, worker: Any, a: str, b: str, mandatory: bool, started_by: str) -> None:
        act = Active(worker, (a, b), call_of(a), mandatory, started_by)
        self.active[frozenset((a, b))] = act
        if self.config.recording.announce:
            try:
                path = self.prompt(ANNOUNCE_PROMPT)
            except Exception:
                log.exception("cannot play the %s prompt", ANNOUNCE_PROMPT)
            else:
                act.waiting = {a, b}
                for leg in (a, b):
                    self.send(worker, {"cmd": "play", "leg": leg, "file": str(path)})
                act.timer = asyncio.get_running_loop().call_later(
                    ANNOUNCE_TIMEOUT, self._begin, act
                )
                return
        self._begin(act)

    def _begin(self, act: Active) -> None:
        """The announcement (if any) is over: start the recorder and write the row."""
        if act.timer is not None:
            act.timer.cancel()
            act.timer = None
        act.waiting.clear()
        if act.rec is not None or self.active.get(frozenset(act.legs)) is not act:
            return
        n = self.counts.get(act.call_id, 0) + 1
        self.counts[act.call_id] = n
        now = self.clock()
        day = datetime.fromtimestamp(now, ZoneInfo(self.config.switch.timezone))
        rec = f"{act.call_id}-r{n}"
        relative = f"{RECORDINGS_DIR}/{day:%Y-%m-%d}/{rec}.wav"
        path = self.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        cur = self.store.db.execute(
            "INSERT INTO recordings (call_id, legs, path, started, started_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (act.call_id, ",".join(act.legs), relative, now, act.started_by),
        )
        act.rec, act.row = rec, int(cur.lastrowid or 0)
        self.by_rec[rec] = act
        self.send(
            act.worker,
            {"cmd": "record_bridge", "rec": rec, "legs": list(act.legs), "file": str(path)},
        )
        log.info("call %s: recording %s (%s)", act.call_id, relative, act.started_by)

    def _stop(self, act: Active, reason: str) -> None:
        if act.rec is None:  # still announcing: stop the prompt, record nothing
            if act.timer is not None:
                act.timer.cancel()
            for leg in act.waiting:
                self.send(act.worker, {"cmd": "stop", "leg": leg})
            self.active.pop(frozenset(act.legs), None)
            return
        if act.stop_reason is None:
            act.stop_reason = reason
            self.send(act.worker, {"cmd": "stop_record_bridge", "rec": act.rec})

    # -- worker events -------------------------------------------------------------------
    def on_event(self, worker: Any, msg: dict) -> None:
        event = msg.get("event")
        if event == "bridge_recording_finished":
            self._finished(msg)
        elif event == "playback_finished":
            leg = str(msg.get("leg", ""))
            for act in list(self.active.values()):
                if leg in act.waiting:
                    act.waiting.discard(leg)
                    if not act.waiting:
                        self._begin(act)
        elif event == "state" and msg.get("state") == "disconnected":
            leg = str(msg.get("leg", ""))
            for act in self.active.values():
                act.waiting.discard(leg)  # gone: no prompt to stop on it (InCall unbridges)

    def _finished(self, msg: dict) -> None:
        rec = str(msg.get("rec", ""))
        act = self.by_rec.pop(rec, None)
        if act is None:
            return
        if self.active.get(frozenset(act.legs)) is act:
            del self.active[frozenset(act.legs)]
        reason = act.stop_reason or str(msg.get("reason", "stopped"))
        self.store.db.execute(
            "UPDATE recordings SET ended = ?, seconds = ?, reason = ? WHERE id = ?",
            (self.clock(), float(msg.get("seconds") or 0.0), reason, act.row),
        )
        log.info("call %s: recording %s ended (%s)", act.call_id, rec, reason)

    def worker_gone(self, worker: Any) -> None:
        """A worker died: its recordings end where their WAVs were cut off."""
        for act in [a for a in self.active.values() if a.worker is worker]:
            if act.timer is not None:
                act.timer.cancel()
            self.active.pop(frozenset(act.legs), None)
            if act.rec is not None:
                self.by_rec.pop(act.rec, None)
                self._close_rows(self.clock(), "media worker died", act.row)

    # -- files ---------------------------------------------------------------------------
    def close_open(self, now: float, reason: str) -> int:
        """Close rows whose recording never reported its end (a crash, or workers that
        went away before they could): repair the WAV's header, store its length."""
        closed = self._close_rows(now, reason)
        self.by_rec.clear()
        self.active.clear()
        return closed

    def _close_rows(self, now: float, reason: str, row_id: int | None = None) -> int:
        sql = "SELECT id, path FROM recordings WHERE ended IS NULL"
        args: tuple = ()
        if row_id is not None:
            sql, args = sql + " AND id = ?", (row_id,)
        rows = self.store.db.execute(sql, args).fetchall()
        for row in rows:
            path = self.data_dir / row["path"]
            seconds, ended = 0.0, now
            if path.exists():
                seconds = repair_wav(path)
                with contextlib.suppress(OSError):
                    ended = min(now, path.stat().st_mtime)  # its last write
            self.store.db.execute(
                "UPDATE recordings SET ended = ?, seconds = ?, reason = ? WHERE id = ?",
                (ended, seconds, reason if path.exists() else "lost", row["id"]),
            )
        return len(rows)

    def sweep(self, now: float) -> int:
        """Delete recordings (file and row) older than retention_days; 0 keeps them."""
        days = self.config.recording.retention_days
        if days <= 0:
            return 0
        rows = self.store.db.execute(
            "SELECT id, path FROM recordings WHERE ended IS NOT NULL AND started < ?",
            (now - days * 86400.0,),
        ).fetchall()
        for row in rows:
            path = self.data_dir / row["path"]
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the day's folder, once empty
            self.store.db.execute("DELETE FROM recordings WHERE id = ?", (row["id"],))
        if rows:
            log.info("deleted %d call recording(s) older than %d days", len(rows), days)
        return len(rows)


def repair_wav(path: Path) -> float:
    """Make a WAV whose writer died before closing it readable: its RIFF and data chunk
    sizes are set from the file's length. Returns its duration (0.0 if it is no WAV)."""
    try:
        with open(path, "r+b") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0.0
            size = os.fstat(fh.fileno()).st_size
            pos, byte_rate, align = 12, 0, 1
            while pos + 8 <= size:
                fh.seek(pos)
                chunk, length = struct.unpack("<4sI", fh.read(8))
                if chunk == b"fmt ":
                    fmt = fh.read(16)
                    if len(fmt) == 16:
                        byte_rate, align = struct.unpack("<8xIH2x", fmt)
                        align = max(align, 1)
                elif chunk == b"data":
                    data = (size - pos - 8) // align * align
                    if data != length:
                        fh.seek(pos + 4)
                        fh.write(struct.pack("<I", data))
                        fh.seek(4)
                        fh.write(struct.pack("<I", pos + data))
                    return round(data / byte_rate, 3) if byte_rate else 0.0
                pos += 8 + length + (length & 1)
    except OSError:
        return 0.0
    return 0.0
