"""Hold through a real switch: when a phone puts a bridged call on hold (re-INVITE with
a=sendonly), the other party hears the switch's hold music (`[switch] music`, a test
tone here) until it resumes, then the held party again. For extension calls, a flow's
dial and a queue call alike; the leg's row counts the hold."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.audio import band_energy_ratio, dominant_frequency, make_tone
from tests.support.e2e import registered
from tests.support.phone import Phone, wait_until
from tests.switch import RunningSwitch

A_TONE, B_TONE, HOLD_MUSIC, QUEUE_MUSIC = 700.0, 1100.0, 900.0, 500.0


def start(tmp: Path, extra: str = "", **switch: object) -> RunningSwitch:
    music = make_tone(str(tmp / "hold.wav"), HOLD_MUSIC, 2.0)
    return RunningSwitch(tmp, extra, music=f'"{music}"', **switch)


def heard(phone: Phone, call: str, path: Path, seconds: float = 1.5) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


def hold_rows(sw: RunningSwitch) -> dict[str, tuple]:
    """{party: (holds, held seconds)} of the legs: the switch's record of holds."""
    with sw.db() as conn:
        return {
            r["party"]: (r["holds"], r["held"])
            for r in conn.execute("SELECT party, holds, held FROM legs")
        }


def hold_and_resume(
    sw: RunningSwitch, tmp: Path, a: Phone, call_a: str, b: Phone, call_b: str, b_party: str
) -> None:
    """Both send their tones; B holds: A hears the hold music; B resumes: A hears B.
    The switch's leg row tells when it has seen the hold (its `holds`) and the resume
    (its `held` seconds)."""
    a.play_tone(call_a, A_TONE)
    b.play_tone(call_b, B_TONE)
    before = heard(a, call_a, tmp / "before.wav")
    assert abs(dominant_frequency(before) - B_TONE) < 15, dominant_frequency(before)

    b.hold(call_b)
    assert wait_until(lambda: hold_rows(sw).get(b_party, (None,))[0] == 1)
    during = heard(a, call_a, tmp / "during.wav")
    assert abs(dominant_frequency(during) - HOLD_MUSIC) < 15, dominant_frequency(during)
    assert band_energy_ratio(during, B_TONE) < 0.05

    b.unhold(call_b)
    assert wait_until(lambda: hold_rows(sw)[b_party][1] is not None)
    after = heard(a, call_a, tmp / "after.wav")
    assert abs(dominant_frequency(after) - B_TONE) < 15, dominant_frequency(after)
    assert band_energy_ratio(after, HOLD_MUSIC) < 0.05
    back = heard(b, call_b, tmp / "back.wav")
    assert abs(dominant_frequency(back) - A_TONE) < 15  # and B hears A again


def test_extension_call_on_hold_hears_music_and_survives_the_media_timeout(tmp_path, made):
    sw = start(tmp_path, media_timeout=2)
    try:
        a, b = registered(sw, "101", made), registered(sw, "102", made)
        b.auto_answer(200)
        call_a = a.call("102")
        a.wait_state(call_a, "confirmed")
        call_b = b.wait_incoming()
        b.wait_state(call_b, "confirmed")
        hold_and_resume(sw, tmp_path, a, call_a, b, call_b, "102")
        assert a.state(call_a) == "confirmed" and b.state(call_b) == "confirmed"
        a.hangup(call_a)
        b.wait_state(call_b, "disconnected")
        (call,) = sw.wait_for_call_closed(1)
        assert call["result"] == "answered" and call["cause"] == "caller hung up"
        rows = hold_rows(sw)
        assert rows["101"] == (None, None)
        holds, held = rows["102"]
        assert holds == 1 and held > 1.0  # held through A's 1.5 s recording at least
    finally:
        sw.stop()


def test_a_flow_dial_on_hold_hears_music(tmp_path, made):
    flow = '[block.main]\ntype = "dial"\ntargets = ["102"]\ntimeout = 10\n'
    sw = start(tmp_path, flow, entry='"main"', entry_number='"100"')
    try:
        a, b = registered(sw, "101", made), registered(sw, "102", made)
        b.auto_answer(200)
        call_a = a.call("100")
        a.wait_state(call_a, "confirmed")
        call_b = b.wait_incoming()
        b.wait_state(call_b, "confirmed")
        # this time the caller holds: the extension it reached hears the music
        hold_and_resume(sw, tmp_path, b, call_b, a, call_a, "101")
        b.hangup(call_b)
        a.wait_state(call_a, "disconnected")
        sw.wait_for_call_closed(1)
        assert hold_rows(sw)["101"][0] == 1
    finally:
        sw.stop()


def test_a_queue_caller_hears_hold_music_while_the_operator_holds(tmp_path, made):
    queue_music = make_tone(str(tmp_path / "queue.wav"), QUEUE_MUSIC, 2.0)
    blocks = f'[block.line]\ntype = "queue"\nmembers = ["102"]\nmusic = "{queue_music}"\n'
    sw = start(tmp_path, blocks, entry='"line"', entry_number='"100"')
    try:
        op = registered(sw, "102", made)
        caller = registered(sw, "101", made)
        with sw.db() as conn:  # the operator is logged in by registering
            assert wait_until(
                lambda: (
                    conn.execute(
                        "SELECT 1 FROM queue_log WHERE kind = 'login' AND agent = '102'"
                    ).fetchone()
                    is not None
                )
            )
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        ringing = op.wait_incoming()
        op.answer(ringing)
        op.wait_state(ringing, "confirmed")
        hold_and_resume(sw, tmp_path, caller, call, op, ringing, "queue:line")
        caller.hangup(call)
        op.wait_state(ringing, "disconnected")
        sw.wait_for_call_closed(1)
        assert hold_rows(sw)["queue:line"][0] == 1
    finally:
        sw.stop()
