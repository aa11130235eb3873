"""Hold and bridge recording in the media worker itself, over its control protocol (the
harness of tests/test_media_worker.py): one raw test phone is both parties of a bridge
(its first call is leg "a", the call the worker originates to it is leg "b")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audio import band_energy_ratio, dominant_frequency, make_tone
from tests.support.phone import Phone
from tests.test_media_worker import WorkerProc, answered_call

A_TONE, B_TONE, MUSIC = 700.0, 1100.0, 500.0


@pytest.fixture
def phone() -> Iterator[Phone]:
    with Phone(user=None) as p:
        yield p


@pytest.fixture
def worker(phone: Phone, tmp_path: Path) -> Iterator[WorkerProc]:
    w = WorkerProc(phone.sip_port, tmp_path)
    try:
        yield w
    finally:
        w.close()
    assert w.proc.returncode == 0, f"worker exited with {w.proc.returncode}"


def bridged_pair(phone: Phone, worker: WorkerProc, **bridge: object) -> tuple[str, str]:
    """Legs a and b bridged; returns the phone's calls (a's, b's), both sending tones."""
    call_a = answered_call(phone, worker, "a")
    phone.auto_answer(200)
    worker.ok("originate", leg="b", uri=phone.uri, headers={"X-Leg": "b"})
    call_b = phone.wait_incoming()
    phone.wait_state(call_b, "confirmed")
    worker.wait_event("state", leg="b", state="confirmed")
    worker.ok("bridge", a="a", b="b", **bridge)
    phone.play_tone(call_a, A_TONE)
    phone.play_tone(call_b, B_TONE)
    return call_a, call_b


def heard(phone: Phone, call: str, path: Path, seconds: float = 1.5) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


def test_held_leg_gives_the_other_hold_music_until_it_resumes(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    music = make_tone(str(tmp_path / "music.wav"), MUSIC, 2.0)
    call_a, call_b = bridged_pair(phone, worker, hold_music=music)
    assert abs(dominant_frequency(heard(phone, call_a, tmp_path / "1.wav")) - B_TONE) < 15

    phone.hold(call_b)  # b's phone: re-INVITE a=sendonly
    worker.wait_event("hold", leg="b")
    during = heard(phone, call_a, tmp_path / "2.wav")
    assert abs(dominant_frequency(during) - MUSIC) < 15
    assert band_energy_ratio(during, B_TONE) < 0.05
    debug = worker.ok("debug")["debug"]
    assert debug["held"] == ["b"] and debug["music"] == {music: ["a"]}

    phone.unhold(call_b)
    worker.wait_event("resume", leg="b")
    after_a = heard(phone, call_a, tmp_path / "3.wav")
    after_b = heard(phone, call_b, tmp_path / "4.wav")
    assert abs(dominant_frequency(after_a) - B_TONE) < 15
    assert band_energy_ratio(after_a, MUSIC) < 0.05
    assert abs(dominant_frequency(after_b) - A_TONE) < 15
    debug = worker.ok("debug")["debug"]
    assert debug["held"] == [] and debug["music"] == {} and debug["music_players"] == 0


def test_hold_music_stops_when_the_held_leg_hangs_up(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    music = make_tone(str(tmp_path / "music.wav"), MUSIC, 2.0)
    call_a, call_b = bridged_pair(phone, worker, hold_music=music)
    phone.hold(call_a)
    worker.wait_event("hold", leg="a")
    assert abs(dominant_frequency(heard(phone, call_b, tmp_path / "1.wav")) - MUSIC) < 15
    phone.hangup(call_a)
    worker.wait_event("state", leg="a", state="disconnected")
    assert worker.ok("debug")["debug"]["music_players"] == 0


def test_hold_without_music_is_silence_and_bridge_checks_the_file(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    assert worker.cmd("bridge", a="x", b="y", hold_music="/none.wav")["ok"] is False
    call_a, call_b = bridged_pair(phone, worker)  # the worker has no --hold-music
    phone.hold(call_b)
    worker.wait_event("hold", leg="b")
    during = heard(phone, call_a, tmp_path / "1.wav")
    assert band_energy_ratio(during, B_TONE) < 0.05
    assert worker.ok("debug")["debug"]["music_players"] == 0


def test_record_bridge_mixes_both_legs_until_stopped(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    bridged_pair(phone, worker)
    path = str(tmp_path / "mix.wav")
    assert worker.cmd("record_bridge", rec="r1", legs=["a", "nope"], file=path)["ok"] is False
    worker.ok("record_bridge", rec="r1", legs=["a", "b"], file=path)
    assert worker.ok("debug")["debug"]["bridge_recordings"] == {"r1": ["a", "b"]}
    time.sleep(2.0)  # the length of the recording
    worker.ok("stop_record_bridge", rec="r1")
    fin = worker.wait_event("bridge_recording_finished", rec="r1")
    assert fin["reason"] == "stopped" and fin["file"] == path and fin["legs"] == ["a", "b"]
    assert 1.5 < fin["seconds"] < 4.0
    assert band_energy_ratio(path, A_TONE) > 0.2
    assert band_energy_ratio(path, B_TONE) > 0.2
    assert worker.cmd("stop_record_bridge", rec="r1")["ok"] is False


def test_record_bridge_ends_when_a_leg_hangs_up(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    call_a, _ = bridged_pair(phone, worker)
    path = str(tmp_path / "mix.wav")
    worker.ok("record_bridge", rec="r2", legs=["a", "b"], file=path)
    time.sleep(1.0)
    phone.hangup(call_a)
    fin = worker.wait_event("bridge_recording_finished", rec="r2")
    assert fin["reason"] == "hangup" and fin["seconds"] > 0.5
    worker.wait_event("state", leg="a", state="disconnected")
    # reported before the leg's disconnected event
    names = [
        e["event"]
        for e in worker.events
        if e.get("event") in ("bridge_recording_finished", "state")
        and (e.get("rec") == "r2" or (e.get("leg") == "a" and e.get("state") == "disconnected"))
    ]
    assert names == ["bridge_recording_finished", "state"]
