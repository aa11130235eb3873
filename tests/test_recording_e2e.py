"""Call recording through a real switch: both parties' audio mixed into one WAV under
the data dir, linked to the call by its `recordings` row; extension record = "always" /
"on-demand" (the in-call code *1 as RFC 2833), a queue's record, the announcement, and
the retention sweep at start."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from softswitch.store.db import Store
from tests.support.audio import band_energy_ratio, make_tone, read_mono
from tests.support.e2e import registered
from tests.support.phone import wait_until
from tests.switch import RunningSwitch

A_TONE, B_TONE = 700.0, 1100.0


class RecordingSwitch(RunningSwitch):
    """A test switch whose extensions have the `record` modes given."""

    def __init__(self, tmp: Path, records: dict[str, str], extra: str = "", **switch: object):
        self.records = records
        super().__init__(tmp, extra, **switch)

    def start(self, timeout: float = 30.0) -> None:
        text = self.config.read_text()
        for number, mode in self.records.items():
            line = f'number = "{number}"\n'
            if f'{line}record = "' not in text:
                text = text.replace(line, f'{line}record = "{mode}"\n')
        self.config.write_text(text)
        super().start(timeout)

    def recordings(self) -> list[dict]:
        with self.db() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM recordings ORDER BY id")]

    def finished_recordings(self, count: int = 1) -> list[dict]:
        wait_until(lambda: len([r for r in self.recordings() if r["ended"]]) >= count, 15)
        return self.recordings()


def call_and_talk(sw: RunningSwitch, made: list, caller: str = "101", callee: str = "102"):
    a, b = registered(sw, caller, made), registered(sw, callee, made)
    b.auto_answer(200)
    call_a = a.call(callee)
    a.wait_state(call_a, "confirmed")
    call_b = b.wait_incoming()
    b.wait_state(call_b, "confirmed")
    a.play_tone(call_a, A_TONE)
    b.play_tone(call_b, B_TONE)
    return a, call_a, b, call_b


def assert_both_tones(path: Path) -> None:
    assert path.exists(), path
    assert band_energy_ratio(str(path), A_TONE, skip_seconds=0.3) > 0.2
    assert band_energy_ratio(str(path), B_TONE, skip_seconds=0.3) > 0.2


def test_always_records_both_parties_into_one_wav_linked_to_the_call(tmp_path, made):
    sw = RecordingSwitch(tmp_path, {"101": "always"})
    try:
        a, call_a, b, call_b = call_and_talk(sw, made)
        assert wait_until(lambda: len(sw.recordings()) == 1)
        (row,) = sw.recordings()
        assert row["ended"] is None  # the row exists while it records
        time.sleep(3.0)  # talk
        a.hangup(call_a)
        b.wait_state(call_b, "disconnected")
        (row,) = sw.finished_recordings()
        (call,) = sw.wait_for_call_closed(1)
        assert row["call_id"] == call["id"] and row["started_by"] == "always"
        assert row["reason"] == "hangup" and 2.5 < row["seconds"] < 6
        path = sw.data_dir / row["path"]
        assert row["path"].startswith("call-recordings/")
        assert_both_tones(path)
    finally:
        sw.stop()


def test_on_demand_records_between_two_presses_of_the_code(tmp_path, made):
    sw = RecordingSwitch(tmp_path, {"101": "on-demand"})
    try:
        a, call_a, b, call_b = call_and_talk(sw, made)
        b.send_dtmf(call_b, "*1")  # 102 is "never": its code does nothing
        time.sleep(1.0)  # talk, not recorded
        assert sw.recordings() == []
        a.send_dtmf(call_a, "*1")
        assert wait_until(lambda: len(sw.recordings()) == 1)
        time.sleep(2.0)  # recorded
        a.send_dtmf(call_a, "*1")
        (row,) = sw.finished_recordings()
        assert row["started_by"] == "101" and row["reason"] == "stopped by 101"
        assert 1.5 < row["seconds"] < 5
        assert_both_tones(sw.data_dir / row["path"])
        time.sleep(0.5)
        assert len(sw.recordings()) == 1  # nothing after the second press
        assert b.dtmf_events(call_b) == []  # the code is the switch's, not passed on
        a.hangup(call_a)
        b.wait_state(call_b, "disconnected")
    finally:
        sw.stop()


def level(path: str, seconds: float) -> float:
    """RMS of the first `seconds` of a recording."""
    x, rate = read_mono(path)
    x = x[: int(seconds * rate)]
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def test_announce_is_heard_by_both_before_recording_starts(tmp_path, made):
    sw = RecordingSwitch(tmp_path, {"102": "always"}, "[recording]\nannounce = true\n")
    try:
        a, b = registered(sw, "101", made), registered(sw, "102", made)
        b.auto_answer(200)
        call_a = a.call("102")
        heard_a, heard_b = str(tmp_path / "a.wav"), str(tmp_path / "b.wav")
        a.wait_state(call_a, "confirmed")
        a.start_recording(call_a, heard_a)
        call_b = b.wait_incoming()
        b.wait_state(call_b, "confirmed")
        b.start_recording(call_b, heard_b)
        # the phones stay silent: what they hear until recording starts is the prompt
        assert wait_until(lambda: len(sw.recordings()) == 1)
        a.stop_recording(call_a)
        b.stop_recording(call_b)
        assert level(heard_a, 3.0) > 0.01 and level(heard_b, 3.0) > 0.01
        (row,) = sw.recordings()
        (call,) = [c for c in sw.calls() if c["id"] == row["call_id"]]
        assert row["started"] - call["answered"] > 1.0  # after the ~1.9 s prompt
        a.play_tone(call_a, A_TONE)
        b.play_tone(call_b, B_TONE)
        time.sleep(1.5)  # talk
        a.hangup(call_a)
        (row,) = sw.finished_recordings()
        assert_both_tones(sw.data_dir / row["path"])
    finally:
        sw.stop()


def test_a_queue_with_record_always_records_caller_and_operator(tmp_path, made):
    music = make_tone(str(tmp_path / "music.wav"), 500.0, 2.0)
    blocks = (
        f'[block.line]\ntype = "queue"\nmembers = ["102"]\nmusic = "{music}"\nrecord = "always"\n'
    )
    sw = RecordingSwitch(tmp_path, {}, blocks, entry='"line"', entry_number='"100"')
    try:
        op = registered(sw, "102", made)
        caller = registered(sw, "101", made)
        with sw.db() as conn:
            assert wait_until(
                lambda: (
                    conn.execute("SELECT 1 FROM queue_log WHERE kind = 'login'").fetchone()
                    is not None
                )
            )
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        ringing = op.wait_incoming()
        op.answer(ringing)
        op.wait_state(ringing, "confirmed")
        caller.play_tone(call, A_TONE)
        op.play_tone(ringing, B_TONE)
        assert wait_until(lambda: len(sw.recordings()) == 1)
        time.sleep(2.0)  # talk
        op.hangup(ringing)
        caller.wait_state(call, "disconnected")
        (row,) = sw.finished_recordings()
        assert row["legs"].endswith("-q1") and row["started_by"] == "always"
        assert_both_tones(sw.data_dir / row["path"])
    finally:
        sw.stop()


def test_a_flow_dial_is_recorded_for_the_extension_that_answered(tmp_path, made):
    flow = '[block.main]\ntype = "dial"\ntargets = ["102", "103"]\ntimeout = 10\n'
    sw = RecordingSwitch(tmp_path, {"103": "always"}, flow, entry='"main"', entry_number='"100"')
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        b.auto_answer(200)  # 102 (never) answers: not recorded
        c.auto_answer(None)
        first = a.call("100")
        a.wait_state(first, "confirmed")
        b.wait_state(b.wait_incoming(), "confirmed")
        time.sleep(1.0)
        assert sw.recordings() == []
        a.hangup(first)
        sw.wait_for_call_closed(1)
        b.auto_answer(None)
        c.auto_answer(200)  # now 103 (always) answers
        second = a.call("100")
        a.wait_state(second, "confirmed")
        assert wait_until(lambda: len(sw.recordings()) == 1)
        a.hangup(second)
        (row,) = sw.finished_recordings()
        assert row["legs"].endswith("-b1")
    finally:
        sw.stop()


def test_retention_sweep_at_start_deletes_old_recordings(tmp_path, made):
    data = tmp_path / "data"
    store = Store(data / "softswitch.db")
    now = time.time()
    folder = data / "call-recordings" / "2001-01-01"
    folder.mkdir(parents=True)
    for name, age_days in (("old", 10), ("young", 1)):
        make_tone(str(folder / f"{name}.wav"), 440.0, 1.0)
        store.db.execute(
            "INSERT INTO calls (id, started, caller, callee, kind) VALUES (?, ?, '101', '102',"
            " 'internal')",
            (name, now - age_days * 86400),
        )
        store.db.execute(
            "INSERT INTO recordings (call_id, legs, path, started, ended, seconds, started_by,"
            " reason) VALUES (?, 'x-a,x-b', ?, ?, ?, 1.0, 'always', 'hangup')",
            (name, f"call-recordings/2001-01-01/{name}.wav", now - age_days * 86400,
             now - age_days * 86400 + 1),
        )  # fmt: skip
    store.close()
    sw = RecordingSwitch(tmp_path, {}, "[recording]\nretention_days = 5\n")
    try:
        assert wait_until(lambda: not (folder / "old.wav").exists())
        assert (folder / "young.wav").exists()
        with sqlite3.connect(data / "softswitch.db") as conn:
            left = [r[0] for r in conn.execute("SELECT call_id FROM recordings")]
        assert left == ["young"]
    finally:
        sw.stop()


def test_phones_of_the_recording_call_keep_talking(tmp_path, made):
    """Recording changes nothing for the parties: each still hears only the other."""
    sw = RecordingSwitch(tmp_path, {"101": "always"})
    try:
        a, call_a, b, call_b = call_and_talk(sw, made)
        assert wait_until(lambda: len(sw.recordings()) == 1)
        heard = str(tmp_path / "heard.wav")
        a.start_recording(call_a, heard)
        time.sleep(1.5)
        a.stop_recording(call_a)
        assert band_energy_ratio(heard, B_TONE) > 0.5
        assert band_energy_ratio(heard, A_TONE) < 0.05
        b.hangup(call_b)
        a.wait_state(call_a, "disconnected")
        sw.finished_recordings()
    finally:
        sw.stop()
