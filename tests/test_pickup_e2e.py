"""Call pickup through a real switch: *8 answers a call ringing at an extension of the
picker's pickup group, **NNN one ringing at NNN; the picker talks to the caller (checked
by frequency), the ringing phone stops ringing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.audio import dominant_frequency
from tests.support.e2e import registered
from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch

CALLER_TONE, PICKER_TONE = 650.0, 1250.0


def start(tmp_path: Path, groups: dict[str, str]) -> RunningSwitch:
    sw = RunningSwitch(tmp_path, workers=2)
    text = sw.config.read_text()
    for number, group in groups.items():
        name, password = EXTENSIONS[number]
        block = f'[[extension]]\nnumber = "{number}"\nname = "{name}"\npassword = "{password}"\n'
        assert block in text
        text = text.replace(block, block + f'pickup_group = "{group}"\n')
    sw.stop()
    sw.config.write_text(text)
    sw.start()
    return sw


def record(phone: Phone, call: str, path: Path, seconds: float) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


@pytest.mark.parametrize("code", ["*8", "**102"])
def test_pickup_answers_the_ringing_call(tmp_path, made, code):
    sw = start(tmp_path, {"102": "sales", "103": "sales"})
    try:
        caller, ringing, picker = (registered(sw, n, made) for n in ("101", "102", "103"))
        ringing.auto_answer(None)
        call = caller.call("102")
        rung = ringing.wait_incoming()
        ringing.wait_state(rung, "early")
        picked = picker.call(code)
        picker.wait_state(picked, "confirmed")
        caller.wait_state(call, "confirmed")
        ringing.wait_state(rung, "disconnected")  # it stops ringing
        caller.play_tone(call, CALLER_TONE)
        picker.play_tone(picked, PICKER_TONE)
        heard = record(picker, picked, tmp_path / "p.wav", 1.5)
        assert abs(dominant_frequency(heard) - CALLER_TONE) < 20
        heard = record(caller, call, tmp_path / "c.wav", 1.5)
        assert abs(dominant_frequency(heard) - PICKER_TONE) < 20
        picker.hangup(picked)
        caller.wait_state(call, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered" and "picked up by 103" in rec["cause"]
        legs = {leg["party"]: leg for leg in sw.legs(rec["id"])}
        assert legs["102"]["result"] == "cancelled" and legs["103"]["result"] == "answered"
    finally:
        sw.stop()


def test_pickup_outside_the_group_or_with_nothing_ringing_is_refused(tmp_path, made):
    sw = start(tmp_path, {"102": "sales", "104": "support"})
    try:
        caller, ringing, other = (registered(sw, n, made) for n in ("101", "102", "104"))
        attempt = other.call("*8")  # nothing rings in 104's group
        other.wait_state(attempt, "disconnected")
        assert other.last_code(attempt) == 404
        ringing.auto_answer(None)
        call = caller.call("102")
        ringing.wait_incoming()
        attempt = other.call("*8")  # 102 rings, but in another group
        other.wait_state(attempt, "disconnected")
        assert other.last_code(attempt) == 404
        caller.hangup(call)
    finally:
        sw.stop()
