"""Call flows through a real switch: a caller (pjsua2 test phone) dials the main number
and walks the blocks. Prompts are test tones of distinct frequencies, so what the caller
heard is checked by frequency in its recording."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from tests.support.audio import dominant_frequency, make_tone
from tests.support.e2e import registered
from tests.support.phone import Phone, wait_until
from tests.switch import RunningSwitch

GREET, INVALID, BYE, CLOSED = 600.0, 1200.0, 300.0, 1500.0


def tones(tmp: Path) -> dict[str, str]:
    return {
        "greet": make_tone(str(tmp / "greet.wav"), GREET, 2.0),
        "invalid": make_tone(str(tmp / "invalid.wav"), INVALID, 1.0),
        "bye": make_tone(str(tmp / "bye.wav"), BYE, 1.0),
        "closed": make_tone(str(tmp / "closed.wav"), CLOSED, 2.0),
    }


def menu_config(t: dict[str, str], *, dial_extensions: bool = False) -> str:
    return f"""
[block.main]
type = "menu"
prompt = "{t["greet"]}"
options = {{ "1" = "sales", "2" = "support" }}
dial_extensions = {str(dial_extensions).lower()}
timeout = 3
inter_digit_timeout = 2
retries = 1
invalid_prompt = "{t["invalid"]}"
unknown_extension_prompt = "{t["invalid"]}"
on_timeout = "bye"

[block.sales]
type = "dial"
targets = ["101"]
timeout = 10
on_no_answer = "bye"

[block.support]
type = "dial"
targets = ["102", "104"]
timeout = 10
on_no_answer = "bye"

[block.bye]
type = "play"
prompt = "{t["bye"]}"
"""


def start(tmp: Path, extra: str, **kw) -> RunningSwitch:
    return RunningSwitch(tmp, extra, entry='"main"', entry_number='"100"', **kw)


def record_for(phone: Phone, call: str, path: Path, seconds: float) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


def near(freq: float, want: float) -> bool:
    return abs(freq - want) < 20


@pytest.mark.parametrize("method", ["rfc2833", "info"])
def test_menu_option_reaches_the_department_with_audio(tmp_path, made, method):
    t = tones(tmp_path)
    sw = start(tmp_path, menu_config(t))
    try:
        caller = registered(sw, "103", made)
        support = registered(sw, "102", made)
        support.auto_answer(200, delay=0.3)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")  # the switch answers to play the greeting
        heard = record_for(caller, call, tmp_path / "greeting.wav", 1.2)
        assert near(dominant_frequency(heard, skip_seconds=0.3), GREET)
        caller.send_dtmf(call, "2", method=method)
        inbound = support.wait_incoming()
        support.wait_state(inbound, "confirmed")
        assert "103" in support.info(inbound)["from"]  # the caller's number is shown
        caller.play_tone(call, 440)
        support.play_tone(inbound, 880)
        assert near(dominant_frequency(record_for(caller, call, tmp_path / "a.wav", 1.5)), 880)
        assert near(dominant_frequency(record_for(support, inbound, tmp_path / "b.wav", 1.5)), 440)
        caller.hangup(call)
        support.wait_state(inbound, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert (rec["kind"], rec["callee"], rec["result"]) == ("flow", "100", "answered")
        legs = sw.legs(rec["id"])
        assert sorted((leg["role"], leg["party"], leg["result"]) for leg in legs) == [
            ("callee", "102,104", "answered"),
            ("caller", "103", "answered"),
        ]
    finally:
        sw.stop()


def test_caller_dials_an_extension_during_the_greeting(tmp_path, made):
    t = tones(tmp_path)
    sw = start(tmp_path, menu_config(t, dial_extensions=True))
    try:
        caller = registered(sw, "103", made)
        target = registered(sw, "104", made)
        target.auto_answer(200)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        caller.send_dtmf(call, "104")
        inbound = target.wait_incoming()
        target.wait_state(inbound, "confirmed")
        caller.hangup(call)
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered"
    finally:
        sw.stop()


def test_invalid_digit_then_silence_ends_in_the_timeout_block(tmp_path, made):
    t = tones(tmp_path)
    sw = start(tmp_path, menu_config(t))
    try:
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        caller.send_dtmf(call, "9")
        heard = record_for(caller, call, tmp_path / "heard-invalid.wav", 0.8)
        assert near(dominant_frequency(heard, skip_seconds=0.2), INVALID)
        # no more digits: the greeting is repeated once, then "bye", then hang-up
        end = caller.wait_state(call, "disconnected", timeout=30)
        assert end["state"] == "disconnected"
        (rec,) = sw.wait_for_call_closed(1)
        assert (rec["result"], rec["cause"]) == ("completed", "switch hung up")
    finally:
        sw.stop()


def _schedule_around_now(open_now: bool) -> str:
    """A daily range that contains the current UTC time, or one that does not."""
    now = dt.datetime.now(dt.UTC)
    if open_now:
        start_t, end_t = now - dt.timedelta(hours=2), now + dt.timedelta(hours=2)
    else:
        start_t, end_t = now + dt.timedelta(hours=2), now + dt.timedelta(hours=4)
    return f"daily {start_t:%H:%M}-{end_t:%H:%M}"


@pytest.mark.parametrize("open_now", [True, False])
def test_working_hours_send_the_call_to_the_team_or_the_closed_message(tmp_path, made, open_now):
    t = tones(tmp_path)
    extra = f"""
[block.main]
type = "hours"
schedule = ["{_schedule_around_now(open_now)}"]
open = "team"
closed = "closed"

[block.team]
type = "dial"
targets = ["101"]
timeout = 10
on_no_answer = "closed"

[block.closed]
type = "voicemail"
greeting = "{t["closed"]}"
greeting_only = true
"""
    sw = start(tmp_path, extra, timezone='"UTC"')
    try:
        caller = registered(sw, "103", made)
        team = registered(sw, "101", made)
        team.auto_answer(200)
        call = caller.call("100")
        if open_now:
            inbound = team.wait_incoming()
            team.wait_state(inbound, "confirmed")
            caller.hangup(call)
        else:
            caller.wait_state(call, "confirmed")
            heard = record_for(caller, call, tmp_path / "closed-msg.wav", 1.2)
            assert near(dominant_frequency(heard, skip_seconds=0.3), CLOSED)
            caller.wait_state(call, "disconnected", timeout=15)  # greeting only: hang up
            assert not team.incoming
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == ("answered" if open_now else "completed")
    finally:
        sw.stop()


@pytest.mark.parametrize("stage", ["greeting", "waiting-for-digit", "ringing", "talking"])
def test_caller_hangs_up_at_any_moment_and_nothing_leaks(tmp_path, made, stage):
    """One worker with room for two calls: after the caller hangs up at `stage`, the
    records are closed and both call slots are free again (two new calls connect)."""
    t = tones(tmp_path)
    sw = start(tmp_path, menu_config(t), workers=1, max_workers=1)
    try:
        caller = registered(sw, "103", made)
        support = registered(sw, "102", made)
        support.auto_answer(None if stage == "ringing" else 200)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        if stage == "waiting-for-digit":
            time.sleep(2.5)  # the 2 s greeting is over; the menu waits for a digit
        if stage in ("ringing", "talking"):
            caller.send_dtmf(call, "2")
            inbound = support.wait_incoming()
            if stage == "talking":
                support.wait_state(inbound, "confirmed")
        caller.hangup(call)
        if stage in ("ringing", "talking"):
            support.wait_state(inbound, "disconnected")
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == ("answered" if stage == "talking" else "abandoned")
        assert wait_until(lambda: all(leg["ended"] for leg in sw.legs(rec["id"])), 10)
        # both pairs of the only worker are free: two calls at once still connect
        support.auto_answer(200)
        other = registered(sw, "101", made)
        other.auto_answer(200)
        first, second = caller.call("102"), support.call("101")
        caller.wait_state(first, "confirmed")
        support.wait_state(second, "confirmed")
        caller.hangup(first)
        support.hangup(second)
    finally:
        sw.stop()


class MailSink:
    """A real SMTP server's message handler (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append(envelope.content)
        return "250 OK"


def test_voicemail_records_the_caller_stores_it_and_mails_it(tmp_path, made):
    import email
    import email.policy

    from aiosmtpd.controller import Controller

    from tests.switch import free_port

    t = tones(tmp_path)
    smtp_port = free_port()
    extra = f"""
[switch.smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "pbx@softswitch.test"

[block.main]
type = "voicemail"
box = "office"
greeting = "{t["greet"]}"
max_seconds = 20
silence_timeout = 3
email = ["boss@softswitch.test"]
"""
    sw = start(tmp_path, extra)
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    try:
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        time.sleep(2.8)  # the 2 s greeting and the beep
        caller.play_tone(call, 440)
        time.sleep(2.5)  # the message: 2.5 s of 440 Hz
        caller.hangup(call)  # hanging up ends the message; it is kept
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "voicemail"
        with sw.db() as db:
            (row,) = db.execute("SELECT * FROM voicemail").fetchall()
        assert (row["box"], row["caller"], row["call_id"]) == ("office", "103", rec["id"])
        assert 1.5 < row["seconds"] < 6
        wav = sw.data_dir / row["path"]
        assert near(dominant_frequency(str(wav), skip_seconds=0.2), 440)
        # the SMTP server was down: the e-mail waits in the outbox, then goes out
        assert wait_until(lambda: _outbox(sw)[0]["attempts"] >= 1, 15)
        assert not sink.messages
        controller.start()
        assert wait_until(lambda: sink.messages, 60)
        msg = email.message_from_bytes(sink.messages[0], policy=email.policy.default)
        assert msg["To"] == "boss@softswitch.test"
        (part,) = [p for p in msg.iter_attachments()]
        assert part.get_content() == wav.read_bytes()
        assert wait_until(lambda: _outbox(sw)[0]["sent"] is not None, 10)
        assert len(sink.messages) == 1
    finally:
        if controller._thread is not None:
            controller.stop()
        sw.stop()


def _outbox(sw: RunningSwitch) -> list[dict]:
    with sw.db() as db:
        return [dict(r) for r in db.execute("SELECT * FROM outbox")]


def test_menu_understands_in_band_dtmf(tmp_path, made):
    """A phone that sends its key presses only as tones in the audio (like some trunks):
    the switch detects them while the menu waits for a digit."""
    import soundfile as sf

    from tests.support.audio import dtmf_samples

    t = tones(tmp_path)
    sw = start(tmp_path, menu_config(t))
    try:
        caller = registered(sw, "103", made)
        support = registered(sw, "102", made)
        support.auto_answer(200)
        keys = str(tmp_path / "press-2.wav")
        sf.write(keys, dtmf_samples("2", on_seconds=0.12, off_seconds=0.3), 8000, subtype="PCM_16")
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        time.sleep(0.5)  # let the menu start waiting (detection is on while it waits)
        caller.play_file(call, keys, loop=False)
        inbound = support.wait_incoming(timeout=15)
        support.wait_state(inbound, "confirmed")
        caller.hangup(call)
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered"
    finally:
        sw.stop()


HOLD_FLOW = """
import asyncio

from softswitch import Call


async def flow(call: Call):
    await call.music("{music}")
    await call.wait(asyncio.sleep(1.5))
    await call.play("{announce}")  # interrupts the music; it comes back by itself
    await call.wait(asyncio.sleep(30))
    return ""
"""


def test_hold_music_with_an_announcement_that_interrupts_it(tmp_path, made):
    music = make_tone(str(tmp_path / "music.wav"), 700.0, 2.0)
    announce = make_tone(str(tmp_path / "announce.wav"), 1500.0, 2.5)
    (tmp_path / "holdflow.py").write_text(HOLD_FLOW.format(music=music, announce=announce))
    extra = """
[block.main]
type = "script"
function = "holdflow:flow"
"""
    sw = start(tmp_path, extra)
    try:
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        heard = record_for(caller, call, tmp_path / "heard-music.wav", 1.0)
        assert near(dominant_frequency(heard, skip_seconds=0.3), 700)
        time.sleep(1.0)  # into the announcement (it starts 1.5 s after the music)
        heard = record_for(caller, call, tmp_path / "heard-announce.wav", 0.8)
        assert near(dominant_frequency(heard, skip_seconds=0.2), 1500)
        time.sleep(1.6)  # the announcement is over: the music is back
        heard = record_for(caller, call, tmp_path / "heard-music-again.wav", 1.0)
        assert near(dominant_frequency(heard, skip_seconds=0.3), 700)
        caller.hangup(call)
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "abandoned"
    finally:
        sw.stop()


SWITCH_SCRIPT = """
import sys

from softswitch import Call, Switch

switch = Switch.from_config(sys.argv[1])


@switch.flow()
async def greet(call: Call) -> str:
    await call.play("{greeting}")
    return "team"          # continue at a block of the config


switch.run()
"""


def test_a_python_script_runs_the_switch_with_its_own_flow(tmp_path, made):
    """`Switch.from_config` + `@switch.flow()` + `switch.run()`: the script's flow is
    found by the config's script block (as "__main__:greet") without any import."""
    t = tones(tmp_path)
    script = tmp_path / "office.py"
    script.write_text(SWITCH_SCRIPT.format(greeting=t["greet"]))
    extra = """
[block.main]
type = "script"
function = "__main__:greet"

[block.team]
type = "dial"
targets = ["101"]
timeout = 10
"""
    sw = RunningSwitch(
        tmp_path, extra, argv=[str(script), "{config}"], entry='"main"', entry_number='"100"'
    )
    try:
        caller = registered(sw, "103", made)
        team = registered(sw, "101", made)
        team.auto_answer(200, delay=1.0)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        heard = record_for(caller, call, tmp_path / "heard-greeting.wav", 1.0)
        assert near(dominant_frequency(heard, skip_seconds=0.3), GREET)
        inbound = team.wait_incoming()
        team.wait_state(inbound, "confirmed")
        caller.hangup(call)
        (rec,) = sw.wait_for_call_closed(1)
        assert rec["result"] == "answered"
    finally:
        sw.stop()
