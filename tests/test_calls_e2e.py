"""Extension-to-extension calls through a real switch, with pjsua2 test phones over
SIP on 127.0.0.1: audio checked by frequency, outcomes checked by SIP code and by the
call records the switch wrote."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.audio import band_energy_ratio, dominant_frequency
from tests.support.phone import Phone, wait_until
from tests.switch import EXTENSIONS


def talk(a: Phone, call_a: str, b: Phone, call_b: str, tmp, seconds: float = 1.5):
    """A sends 440 Hz, B sends 880 Hz; returns what each one recorded."""
    a.play_tone(call_a, 440)
    b.play_tone(call_b, 880)
    heard_a, heard_b = str(tmp / f"{call_a}-a.wav"), str(tmp / f"{call_b}-b.wav")
    a.start_recording(call_a, heard_a)
    b.start_recording(call_b, heard_b)
    time.sleep(seconds)  # let audio flow: this is the length of the recording
    a.stop_recording(call_a)
    b.stop_recording(call_b)
    return heard_a, heard_b


def assert_hears(path: str, freq: float) -> None:
    assert abs(dominant_frequency(path) - freq) < 15, (path, dominant_frequency(path))
    assert band_energy_ratio(path, freq) > 0.5


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_two_phones_call_and_hear_each_other(switch, phone, tmp_path, transport):
    a = phone("101", transport)
    b = phone("102", transport)
    b.auto_answer(200, delay=0.3)
    call_a = a.call("102")
    a.wait_state(call_a, "confirmed")
    call_b = b.wait_incoming()
    info = b.info(call_b)
    assert "101" in info["from"] and "Alice" in info["from"]  # caller ID shown
    heard_a, heard_b = talk(a, call_a, b, call_b, tmp_path)
    assert_hears(heard_a, 880)  # A hears B
    assert_hears(heard_b, 440)  # B hears A
    a.hangup(call_a)
    b.wait_state(call_b, "disconnected")

    (call,) = switch.wait_for_call_closed(1)
    assert (call["caller"], call["callee"], call["result"]) == ("101", "102", "answered")
    assert call["cause"] == "caller hung up"
    assert call["started"] <= call["answered"] <= call["ended"]
    legs = switch.legs(call["id"])
    assert [(leg["role"], leg["party"], leg["result"]) for leg in legs] == [
        ("callee", "102", "answered"),
        ("caller", "101", "answered"),
    ]
    for leg in legs:
        assert leg["rx_packets"] > 40 and leg["ended"] is not None


def test_callee_hangs_up_ends_both_legs(switch, phone):
    a, b = phone("101"), phone("102")
    b.auto_answer(200)
    call_a = a.call("102")
    a.wait_state(call_a, "confirmed")
    call_b = b.wait_incoming()
    b.wait_state(call_b, "confirmed")
    b.hangup(call_b)
    a.wait_state(call_a, "disconnected")
    (call,) = switch.wait_for_call_closed(1)
    assert (call["result"], call["cause"]) == ("answered", "callee hung up")


def test_busy_extension_gets_486(switch, phone):
    a, b = phone("101"), phone("102")
    b.auto_answer(486)
    call_a = a.call("102")
    assert a.wait_state(call_a, "disconnected")["code"] == 486
    (call,) = switch.wait_for_call_closed(1)
    assert (call["result"], call["sip_code"]) == ("busy", 486)


def test_unknown_extension_gets_404(switch, phone):
    a = phone("101")
    call_a = a.call("999")
    assert a.wait_state(call_a, "disconnected")["code"] == 404


def test_unregistered_extension_gets_480(switch, phone):
    a = phone("101")
    phone("103", register=False)
    call_a = a.call("103")
    assert a.wait_state(call_a, "disconnected")["code"] == 480


def test_unregister_makes_extension_unavailable(switch, phone):
    a, b = phone("101"), phone("102")
    assert b.unregister() == 200
    assert a.wait_state(a.call("102"), "disconnected")["code"] == 480


def test_no_answer_gets_480_after_ring_timeout(tmp_path):
    from tests.switch import RunningSwitch

    sw = RunningSwitch(tmp_path, ring_timeout=5)
    try:
        with (
            Phone(user="101", password=EXTENSIONS["101"][1], server=sw.server) as a,
            Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server) as b,
        ):
            assert a.register() == 200 and b.register() == 200
            b.auto_answer(None)  # let it ring
            call_a = a.call("102")
            a.wait_state(call_a, "early")
            call_b = b.wait_incoming()
            assert a.wait_state(call_a, "disconnected", timeout=20)["code"] == 480
            b.wait_state(call_b, "disconnected")  # the switch cancelled the ringing phone
            (call,) = sw.wait_for_call_closed(1)
            assert call["result"] == "no-answer"
            assert call["ended"] - call["started"] >= 5
    finally:
        sw.stop()


def test_caller_hangs_up_while_ringing(switch, phone):
    a, b = phone("101"), phone("102")
    b.auto_answer(None)
    call_a = a.call("102")
    a.wait_state(call_a, "early")
    call_b = b.wait_incoming()
    a.hangup(call_a)
    assert b.wait_state(call_b, "disconnected")["code"] == 487
    (call,) = switch.wait_for_call_closed(1)
    assert call["result"] == "cancelled" and call["answered"] is None


def test_every_registered_contact_rings_first_answer_wins(switch, phone):
    a = phone("101")
    desk, mobile = phone("102"), phone("102")  # one extension, two phones
    desk.auto_answer(None)
    mobile.auto_answer(200, delay=0.5)
    call_a = a.call("102")
    call_desk = desk.wait_incoming()
    a.wait_state(call_a, "confirmed")
    # the desk phone, which rang too, is cancelled once the mobile answered
    assert desk.wait_state(call_desk, "disconnected")["code"] == 487
    a.hangup(call_a)
    (call,) = switch.wait_for_call_closed(1)
    assert call["result"] == "answered"


def test_wrong_password_is_refused_and_not_bound(switch, phone):
    intruder = phone("102", register=False, password="not-the-password")
    assert intruder.register() in (401, 403)
    a = phone("101")
    assert a.wait_state(a.call("102"), "disconnected")["code"] == 480  # nothing bound


def test_registrations_survive_a_restart(switch, phone, tmp_path):
    a, b = phone("101"), phone("102")
    b.auto_answer(200)
    switch.restart()
    call_a = a.call("102")  # no new REGISTER from either phone
    a.wait_state(call_a, "confirmed")
    a.hangup(call_a)
    (call,) = switch.wait_for_call_closed(1)
    assert call["result"] == "answered"


def test_capacity_reached_gets_503(tmp_path):
    from tests.switch import RunningSwitch

    sw = RunningSwitch(tmp_path, workers=1, max_workers=1)
    phones = []
    try:
        for number in ("101", "102", "103", "104"):
            p = Phone(user=number, password=EXTENSIONS[number][1], server=sw.server)
            phones.append(p)
            assert p.register() == 200
        a, b, c, d = phones
        for p in (b, d, a):
            p.auto_answer(200)
        first = a.call("102")
        a.wait_state(first, "confirmed")
        second = c.call("104")
        c.wait_state(second, "confirmed")
        # one worker carries two calls: the third one is refused, not stranded
        third = d.call("101")
        assert d.wait_state(third, "disconnected")["code"] == 503
        a.hangup(first)
        c.hangup(second)
        calls = sw.wait_for_call_closed(2)
        assert [c["result"] for c in calls] == ["answered", "answered"]
    finally:
        for p in phones:
            p.close()
        sw.stop()


def test_killed_worker_fails_its_calls_and_others_go_on(switch, phone, tmp_path):
    # Three calls: the pool fills a worker (two calls) before using the next one.
    pairs = [(phone(x), phone(y)) for x, y in (("101", "102"), ("103", "104"), ("105", "106"))]
    calls = []
    for caller, callee in pairs:
        callee.auto_answer(200)
        call = caller.call(callee.user)
        caller.wait_state(call, "confirmed")
        calls.append((call, callee.wait_incoming()))
    records = {c["caller"]: c for c in switch.calls()}
    slot = {caller: switch.legs(rec["id"])[0]["worker"] for caller, rec in records.items()}
    assert slot["101"] == slot["103"] != slot["105"]

    os.kill(_pid_of_worker(switch.worker_pids(), slot["101"]), signal.SIGKILL)

    # the dead worker's two calls are recorded as failed, and their phones hung up
    closed = switch.wait_for_call_closed(2)
    assert sorted((c["caller"], c["result"], c["cause"]) for c in closed) == [
        ("101", "failed", "media worker died"),
        ("103", "failed", "media worker died"),
    ]
    for (caller, callee), (call_a, call_b) in zip(pairs[:2], calls[:2], strict=True):
        caller.wait_state(call_a, "disconnected")
        callee.wait_state(call_b, "disconnected")
    # the third call goes on, with audio both ways
    (e, f), (call_e, call_f) = pairs[2], calls[2]
    assert e.state(call_e) == "confirmed"
    heard_e, heard_f = talk(e, call_e, f, call_f, tmp_path)
    assert_hears(heard_e, 880)
    assert_hears(heard_f, 440)
    # and a new call works (the pool replaced the worker)
    a, b = pairs[0]
    call = a.call("102")
    a.wait_state(call, "confirmed")
    a.hangup(call)
    e.hangup(call_e)
    results = sorted(c["result"] for c in switch.wait_for_call_closed(4))
    assert results == ["answered", "answered", "failed", "failed"]


def _pid_of_worker(pids: list[int], slot: int) -> int:
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
        if b"--id" in args and args[args.index(b"--id") + 1] == str(slot).encode():
            return pid
    raise AssertionError(f"no worker process for slot {slot} among {pids}")


def test_coordinator_crash_loses_no_record(switch, phone):
    """SIGKILL the coordinator mid-call: its workers exit with it (their control socket
    closes), and on the next start the open call is closed as failed, not left open."""
    a, b = phone("101"), phone("102")
    b.auto_answer(200)
    call_a = a.call("102")
    a.wait_state(call_a, "confirmed")
    assert wait_until(lambda: switch.calls()[0]["answered"] is not None)
    (open_call,) = switch.calls()
    assert open_call["ended"] is None
    workers = switch.worker_pids()
    switch.stop(signal.SIGKILL)
    for pid in workers:  # orphaned workers notice and exit on their own
        assert _wait_gone(pid), f"worker {pid} outlived the coordinator"
    switch.start()
    (call,) = switch.calls()
    assert call["id"] == open_call["id"]
    assert (call["result"], call["cause"]) == ("failed", "switch restarted")
    assert call["answered"] == open_call["answered"]  # what was recorded is kept
    assert all(leg["ended"] is not None for leg in switch.legs(call["id"]))


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_phone_that_vanishes_mid_call_is_hung_up_by_media_timeout(tmp_path):
    """The callee's phone dies (no BYE, no more RTP): after `media_timeout` seconds
    without audio the switch ends the call, and the caller is not left in silence."""
    from tests.switch import RunningSwitch

    sw = RunningSwitch(tmp_path, media_timeout=3)
    a = Phone(user="101", password=EXTENSIONS["101"][1], server=sw.server)
    b = Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server)
    try:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        call_a = a.call("102")
        a.wait_state(call_a, "confirmed")
        call_b = b.wait_incoming()
        b.wait_state(call_b, "confirmed")
        a.play_tone(call_a, 440)  # both phones send audio, as real phones do
        b.play_tone(call_b, 880)
        time.sleep(1.5)  # a little conversation
        b.proc.kill()  # the phone is gone: no BYE, no RTP
        b.proc.wait(5)
        assert a.wait_state(call_a, "disconnected", timeout=20)["state"] == "disconnected"
        (call,) = sw.wait_for_call_closed(1)
        assert (call["result"], call["cause"]) == (
            "answered",
            "no audio from the callee (media timeout)",
        )
    finally:
        a.close()
        b.close()
        sw.stop()
