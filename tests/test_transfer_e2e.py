"""Call transfer through a real switch with pjsua2 test phones: the transferor's phone
sends REFER (as Zoiper, Linphone and baresip do), the switch rings the target, the
transferred party hears hold music meanwhile and is connected to the target by audio
(checked by frequency), or goes back to the transferor when the target fails."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests.support.audio import dominant_frequency, read_mono
from tests.support.e2e import registered
from tests.support.phone import Phone, wait_until
from tests.switch import RunningSwitch

A_TONE, B_TONE, C_TONE = 600.0, 900.0, 1300.0


def record(phone: Phone, call: str, path: Path, seconds: float) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


def connected(a: Phone, b: Phone, made: list[Phone]) -> tuple[str, str]:
    """a calls b, b answers: (a's call, b's call), both confirmed."""
    call = a.call(b.user)
    inc = b.wait_incoming()
    b.answer(inc)
    a.wait_state(call, "confirmed")
    b.wait_state(inc, "confirmed")
    return call, inc


def final_status(phone: Phone, call: str) -> int | None:
    finals = [e for e in phone.events_of("xfer_status", call) if e["final"]]
    return finals[-1]["code"] if finals else None


def test_blind_transfer_connects_the_caller_to_the_target(tmp_path, made):
    sw = RunningSwitch(tmp_path)
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        a.play_tone(a_call, A_TONE)
        b.transfer(b_call, "103")  # REFER to 103
        c_call = c.wait_incoming()
        assert "101" in c.info(c_call)["from"]  # the target sees who is coming
        # While 103 rings, 101 hears hold music, not 102.
        held = record(a, a_call, tmp_path / "held.wav", 1.5)
        x, _ = read_mono(held, 0.3)
        assert np.sqrt(np.mean(x**2)) > 0.01  # music, not silence
        assert abs(dominant_frequency(held) - B_TONE) > 30
        c.answer(c_call)
        c.wait_state(c_call, "confirmed")
        assert wait_until(lambda: final_status(b, b_call) == 200, 10)
        b.wait_state(b_call, "disconnected")  # the switch releases the transferor
        c.play_tone(c_call, C_TONE)
        heard_by_a = record(a, a_call, tmp_path / "a.wav", 1.5)
        heard_by_c = record(c, c_call, tmp_path / "c.wav", 1.5)
        assert abs(dominant_frequency(heard_by_a) - C_TONE) < 20
        assert abs(dominant_frequency(heard_by_c) - A_TONE) < 20
        c.hangup(c_call)
        a.wait_state(a_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered"
        assert "transferred 102 -> 103 (answered)" in rec["cause"]
        legs = {leg["party"]: leg for leg in sw.legs(rec["id"])}
        assert legs["103"]["role"] == "transfer" and legs["103"]["result"] == "answered"
        assert wait_until(lambda: all(leg["ended"] for leg in sw.legs(rec["id"])))
    finally:
        sw.stop()


def test_a_busy_target_gives_the_caller_back_to_the_transferor(tmp_path, made):
    sw = RunningSwitch(tmp_path)
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        b.transfer(b_call, "103")
        c_call = c.wait_incoming()
        c.hangup(c_call, 486)  # busy
        assert wait_until(lambda: final_status(b, b_call) is not None, 10)
        assert final_status(b, b_call) >= 400  # the transferor is told it failed
        a.play_tone(a_call, A_TONE)
        heard_by_b = record(b, b_call, tmp_path / "b.wav", 1.5)
        assert abs(dominant_frequency(heard_by_b) - A_TONE) < 20  # back together
        a.hangup(a_call)
        b.wait_state(b_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert "102 -> 103 (busy)" in rec["cause"]
    finally:
        sw.stop()


def test_when_the_transferor_has_left_a_failed_transfer_calls_them_back(tmp_path, made):
    sw = RunningSwitch(tmp_path)
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        b.transfer(b_call, "103")
        c_call = c.wait_incoming()
        b.hangup(b_call)  # blind: the transferor hangs up at once
        b.wait_state(b_call, "disconnected")
        c.hangup(c_call, 603)  # the target declines
        recall = b.wait_incoming(timeout=10)  # the caller is not dropped: 102 rings
        b.answer(recall)
        b.wait_state(recall, "confirmed")
        a.play_tone(a_call, A_TONE)
        heard_by_b = record(b, recall, tmp_path / "b.wav", 1.5)
        assert abs(dominant_frequency(heard_by_b) - A_TONE) < 20
        b.hangup(recall)
        a.wait_state(a_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert "102 -> 103 (rejected)" in rec["cause"]
        assert "102 -> 102 (called back)" in rec["cause"]
    finally:
        sw.stop()


def test_an_operator_transfers_a_queue_caller_to_a_manager(tmp_path, made):
    """The secretaries' scheme: a secretary answers a queue call and passes the caller
    to a manager; the queue counts one answered call and a transfer."""
    extra = '[block.secretaries]\ntype = "queue"\nmembers = ["101"]\n'
    sw = RunningSwitch(tmp_path, extra, entry='"secretaries"', entry_number='"100"')
    try:
        secretary, manager, caller = (registered(sw, n, made) for n in ("101", "104", "105"))
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        op_call = secretary.wait_incoming()
        secretary.answer(op_call)
        secretary.wait_state(op_call, "confirmed")
        secretary.transfer(op_call, "104")
        m_call = manager.wait_incoming()
        assert "105" in manager.info(m_call)["from"]
        manager.answer(m_call)
        manager.wait_state(m_call, "confirmed")
        secretary.wait_state(op_call, "disconnected")
        caller.play_tone(call, A_TONE)
        manager.play_tone(m_call, C_TONE)
        assert (
            abs(dominant_frequency(record(manager, m_call, tmp_path / "m.wav", 1.5)) - A_TONE) < 20
        )
        assert abs(dominant_frequency(record(caller, call, tmp_path / "c.wav", 1.5)) - C_TONE) < 20
        manager.hangup(m_call)
        caller.wait_state(call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered" and "101 -> 104" in rec["cause"]
        with sw.db() as conn:
            kinds = [r[0] for r in conn.execute("SELECT kind FROM queue_log ORDER BY id")]
            transfer = conn.execute("SELECT * FROM queue_log WHERE kind = 'transfer'").fetchone()
            completed = conn.execute("SELECT * FROM queue_log WHERE kind = 'completed'").fetchone()
        assert kinds.count("connected") == 1 and kinds.count("completed") == 1
        assert (transfer["agent"], transfer["target"]) == ("101", "104")
        assert completed["result"] == "transfer"
    finally:
        sw.stop()


def test_a_flow_dial_transferred_by_the_callee(tmp_path, made):
    extra = '[block.desk]\ntype = "dial"\ntargets = ["102"]\n'
    sw = RunningSwitch(tmp_path, extra, entry='"desk"', entry_number='"100"')
    try:
        caller, desk, target = (registered(sw, n, made) for n in ("105", "102", "103"))
        call = caller.call("100")
        d_call = desk.wait_incoming()
        desk.answer(d_call)
        caller.wait_state(call, "confirmed")
        desk.wait_state(d_call, "confirmed")
        desk.transfer(d_call, "103")
        t_call = target.wait_incoming()
        target.answer(t_call)
        target.wait_state(t_call, "confirmed")
        desk.wait_state(d_call, "disconnected")
        caller.play_tone(call, A_TONE)
        assert (
            abs(dominant_frequency(record(target, t_call, tmp_path / "t.wav", 1.5)) - A_TONE) < 20
        )
        caller.hangup(call)
        target.wait_state(t_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert "102 -> 103" in rec["cause"]
        assert wait_until(lambda: all(leg["ended"] for leg in sw.legs(rec["id"])))
    finally:
        sw.stop()


def test_attended_transfer_joins_the_caller_with_the_consulted_target(tmp_path, made):
    """102 talks to 101, puts them on hold, consults 103 on a second call, then
    transfers with Replaces: 101 and 103 talk; both of 102's calls end."""
    sw = RunningSwitch(tmp_path, workers=2)
    try:
        # both warm workers up: the two calls spread over them, so the worker of the
        # first call has a slot for the leg toward the target
        assert wait_until(lambda: sw.log_text().count("ready (pid") >= 2, 30)
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        b.hold(b_call)
        consult, c_call = connected(b, c, made)
        b.transfer_replaces(b_call, consult)  # REFER to 101 with Replaces of 102-103
        assert wait_until(lambda: c.events_of("replaced", c_call), 10)
        new_c = c.events_of("replaced", c_call)[0]["new_call"]
        c.wait_state(new_c, "confirmed")
        b.wait_state(b_call, "disconnected")
        b.wait_state(consult, "disconnected")
        a.play_tone(a_call, A_TONE)
        c.play_tone(new_c, C_TONE)
        assert abs(dominant_frequency(record(c, new_c, tmp_path / "c.wav", 1.5)) - A_TONE) < 20
        assert abs(dominant_frequency(record(a, a_call, tmp_path / "a.wav", 1.5)) - C_TONE) < 20
        a.hangup(a_call)
        c.wait_state(new_c, "disconnected")
        calls = sw.wait_for_call_closed(2)
        first = next(r for r in calls if r["callee"] == "102" and r["caller"] == "101")
        assert "102 -> 103 (answered)" in first["cause"]
    finally:
        sw.stop()


def press(phone: Phone, call: str, keys: str) -> None:
    """Key presses as RFC 2833 events, a little apart like fingers."""
    for key in keys:
        phone.send_dtmf(call, key)
        time.sleep(0.25)  # pacing between key presses, not a measurement


def test_blind_transfer_by_code_for_phones_without_a_transfer_button(tmp_path, made):
    sw = RunningSwitch(tmp_path)
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        press(b, b_call, "##103#")
        c_call = c.wait_incoming()
        b.wait_state(b_call, "disconnected")  # the presser is let go at once
        c.answer(c_call)
        c.wait_state(c_call, "confirmed")
        a.play_tone(a_call, A_TONE)
        assert abs(dominant_frequency(record(c, c_call, tmp_path / "c.wav", 1.5)) - A_TONE) < 20
        a.hangup(a_call)
        c.wait_state(c_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert "102 -> 103 (answered)" in rec["cause"]
    finally:
        sw.stop()


def test_attended_transfer_by_code_consults_first(tmp_path, made):
    sw = RunningSwitch(tmp_path)
    try:
        a, b, c = (registered(sw, n, made) for n in ("101", "102", "103"))
        a_call, b_call = connected(a, b, made)
        press(b, b_call, "*2103#")
        c_call = c.wait_incoming()
        c.answer(c_call)
        c.wait_state(c_call, "confirmed")
        b.play_tone(b_call, B_TONE)  # 102 consults 103 while 101 waits
        assert abs(dominant_frequency(record(c, c_call, tmp_path / "c1.wav", 1.5)) - B_TONE) < 20
        b.hangup(b_call)  # completes the transfer
        a.play_tone(a_call, A_TONE)
        assert abs(dominant_frequency(record(c, c_call, tmp_path / "c2.wav", 1.5)) - A_TONE) < 20
        c.hangup(c_call)
        a.wait_state(a_call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert "102 -> 103 (attended)" in rec["cause"]
    finally:
        sw.stop()
