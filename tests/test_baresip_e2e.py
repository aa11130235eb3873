"""Two baresip phones (a third-party SIP stack) register to the real switch with digest
auth and call each other by extension number; each plays a tone (the aufile module)
and records what it receives (the sndfile filter), so the test checks that each side
hears the other's tone through the switch's media worker.

baresip runs headless with a config dir per phone (tests/support/baresip.py) and is
driven over its ctrl_tcp JSON interface."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.support.audio import band_energy_ratio, dominant_frequency, duration, make_tone
from tests.support.baresip import BARESIP, Baresip, available_modules
from tests.switch import EXTENSIONS, RunningSwitch

NEEDED = {"aufile", "sndfile", "ctrl_tcp", "g711", "account", "menu"}

pytestmark = [
    pytest.mark.skipif(BARESIP is None, reason="baresip is not installed"),
    pytest.mark.skipif(
        BARESIP is not None and not NEEDED <= available_modules(),
        reason=f"baresip lacks modules {sorted(NEEDED - available_modules())}",
    ),
]


@pytest.fixture
def baresip(switch: RunningSwitch, tmp_path) -> Iterator:
    """baresip(number, transport, freq) -> a started Baresip (stopped after the test)."""
    made: list[Baresip] = []

    def make(
        number: str, transport: str = "udp", freq: float | None = None, password: str | None = None
    ) -> Baresip:
        wav = None
        if freq is not None:
            # baresip 1.0's aufile does not loop: longer than any call here
            wav = make_tone(str(tmp_path / f"tone-{number}-{freq:g}.wav"), freq, 15.0)
        phone = Baresip(
            number,
            password or EXTENSIONS[number][1],
            switch.server,
            transport=transport,
            source_wav=wav,
        )
        made.append(phone)
        return phone

    yield make
    for phone in made:
        with contextlib.suppress(Exception):
            phone.close()


def wait_for_recording(phone: Baresip, kind: str, seconds: float, timeout: float = 10.0) -> str:
    """The WAV sndfile wrote, once its header says it holds `seconds` of audio (the
    header is completed when the call's audio stream closes)."""
    deadline = time.monotonic() + timeout
    while True:
        path = phone.recordings().get(kind)
        if path is not None:
            with contextlib.suppress(Exception):
                if duration(path) >= seconds:
                    return path
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {kind} recording of {seconds}s: {phone.recordings()}\n{phone.log()}"
            )
        time.sleep(0.1)


def assert_hears(path: str, freq: float) -> None:
    assert abs(dominant_frequency(path) - freq) < 15, (path, dominant_frequency(path))
    assert band_energy_ratio(path, freq) > 0.5, (path, band_energy_ratio(path, freq))


@pytest.mark.parametrize(
    ("caller_transport", "callee_transport"), [("udp", "udp"), ("tcp", "tcp"), ("udp", "tcp")]
)
def test_two_baresip_phones_call_and_hear_each_other(
    switch, baresip, caller_transport, callee_transport
):
    alice = baresip("101", caller_transport, freq=440)
    bob = baresip("102", callee_transport, freq=880)
    assert alice.wait_registered(), alice.log()
    assert bob.wait_registered(), bob.log()
    with switch.db() as conn:
        bound = {r["aor"]: dict(r) for r in conn.execute("SELECT * FROM bindings")}
    assert bound["101"]["transport"] == caller_transport
    assert bound["102"]["transport"] == callee_transport
    assert bound["102"]["source_host"] == "127.0.0.1"
    assert "baresip" in (bound["102"]["user_agent"] or "").lower()

    alice.dial("102")
    established = alice.wait_event("CALL_ESTABLISHED")
    assert "102" in established.get("peeruri", ""), established
    incoming = bob.wait_event("CALL_ESTABLISHED")
    assert incoming.get("direction") == "incoming"
    # caller ID: the switch presents the authenticated caller, number and name
    assert "sip:101@" in incoming.get("peeruri", ""), incoming
    assert incoming.get("peerdisplayname") == "Alice", incoming
    alice.wait_event("CALL_RTPESTAB")
    bob.wait_event("CALL_RTPESTAB")

    time.sleep(2.5)  # let audio flow: this is the length of the recordings
    alice.hangup()
    alice.wait_event("CALL_CLOSED")
    closed = bob.wait_event("CALL_CLOSED")
    assert "AUDIO_ERROR" not in bob.event_types(), (closed, bob.log())

    (call,) = switch.wait_for_call_closed(1)
    assert (call["caller"], call["callee"], call["result"]) == ("101", "102", "answered")
    assert call["cause"] == "caller hung up"

    heard_by_alice = wait_for_recording(alice, "dec", 2.0)
    heard_by_bob = wait_for_recording(bob, "dec", 2.0)
    assert_hears(heard_by_alice, 880)  # Alice hears Bob
    assert_hears(heard_by_bob, 440)  # Bob hears Alice


def test_callee_hangs_up(switch, baresip):
    alice = baresip("101", freq=440)
    bob = baresip("102", freq=880)
    assert alice.wait_registered() and bob.wait_registered()
    alice.dial("102")
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")
    bob.hangup()
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")
    (call,) = switch.wait_for_call_closed(1)
    assert (call["result"], call["cause"]) == ("answered", "callee hung up")


def test_wrong_password_does_not_register(switch, baresip):
    intruder = baresip("102", password="not-the-password")
    assert not intruder.wait_registered(timeout=5.0), intruder.log()
    with switch.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM bindings").fetchone()[0] == 0
