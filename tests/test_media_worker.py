"""End-to-end tests of the pjsua2 media worker over its control protocol.

Each test starts a real worker process exactly as the coordinator does (a
``socket.socketpair()`` end passed with ``pass_fds``) and drives it with JSON commands,
while pjsua2 test phones (or a raw UDP socket) play the edge and talk SIP/RTP to it
directly. Media is checked by ear: a tone of known frequency goes in on one side and
must be the dominant frequency of the recording on the other side.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.audio import (
    band_energy_ratio,
    dominant_frequency,
    dtmf_samples,
    duration,
    make_tone,
    rms,
    tone_samples,
    write_wav,
)
from tests.support.phone import Phone, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_rtp_range(count: int = 20) -> int:
    """Start of ``count`` consecutive free UDP ports (even), chosen at random.

    Other test sessions run on this machine at the same time, so the range is random
    and checked by binding every port of it once.
    """
    for _ in range(200):
        base = random.randrange(20000, 60000 - count, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP port range")


class WorkerProc:
    """A media worker started like the coordinator starts one, plus event helpers."""

    def __init__(self, edge_port: int, log_dir: Path, worker_id: int = 7):
        self.sip_port = free_udp_port()
        self.rtp_port = free_rtp_range(20)
        self.log_file = log_dir / f"worker{worker_id}.log"
        self.sock, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softswitch.media.worker",
                "--control-fd",
                str(child.fileno()),
                "--id",
                str(worker_id),
                "--sip-port",
                str(self.sip_port),
                "--rtp-port",
                str(self.rtp_port),
                "--rtp-port-count",
                "20",
                "--edge",
                f"127.0.0.1:{edge_port}",
                "--public-address",
                "127.0.0.1",
                "--log-file",
                str(self.log_file),
                "--log-level",
                "5",
            ],
            pass_fds=[child.fileno()],
            stdout=subprocess.PIPE,
            cwd=str(REPO_ROOT),
            env=env,
        )
        child.close()
        self.cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.eof = False
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.hello = self.wait_event("hello")

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                with self.cond:
                    self.events.append(json.loads(line))
                    self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    @property
    def uri(self) -> str:
        return f"sip:service@127.0.0.1:{self.sip_port}"

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def cmd(self, cmd: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a command with an id and return its reply (ok or not)."""
        with self.cond:
            self.next_id += 1
            cid = self.next_id
        self.send({"cmd": cmd, "id": cid, **fields})
        return self.wait_event("reply", timeout, id=cid)

    def ok(self, cmd: str, **fields: Any) -> dict[str, Any]:
        reply = self.cmd(cmd, **fields)
        assert reply["ok"], reply
        return reply

    def find(self, event: str, **fields: Any) -> dict[str, Any] | None:
        with self.cond:
            for e in self.events:
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
        return None

    def wait_event(self, event: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """First event named ``event`` whose fields match, waiting for it if needed."""
        found: list[dict[str, Any]] = []

        def match() -> bool:
            e = self.find(event, **fields)
            if e is not None:
                found.append(e)
            return e is not None or self.eof

        with self.cond:
            self.cond.wait_for(match, timeout)
        if not found:
            raise AssertionError(
                f"no {event} {fields} within {timeout}s; events so far: {self.events}"
            )
        return found[0]

    def events_of(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self.cond:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Shut the worker down; kill it (only this process) if it does not exit."""
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "shutdown"})
            except OSError:
                pass
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self.sock.close()
        self.reader.join(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def phone() -> Iterator[Phone]:
    with Phone(user=None) as p:
        yield p


@pytest.fixture
def worker(phone: Phone, tmp_path: Path) -> Iterator[WorkerProc]:
    """A worker whose edge is the test phone, so the phone may call it directly."""
    w = WorkerProc(phone.sip_port, tmp_path)
    try:
        yield w
    finally:
        w.close()
    # A worker that crashes on its way out (e.g. a pjsua2 object finalised after
    # libDestroy aborts the process) fails the test that ran it.
    assert w.proc.returncode == 0, f"worker exited with {w.proc.returncode}"


def answered_call(phone: Phone, worker: WorkerProc, leg: str) -> str:
    """Phone calls the worker with X-Leg ``leg``; the worker answers; returns call id."""
    call = phone.call(worker.uri, headers={"X-Leg": leg})
    worker.wait_event("incoming", leg=leg)
    worker.ok("answer", leg=leg)
    phone.wait_state(call, "confirmed")
    worker.wait_event("state", leg=leg, state="confirmed")
    return call


# --------------------------------------------------------------------------- tests
def test_hello_and_control_eof_makes_worker_exit(phone: Phone, tmp_path: Path) -> None:
    w = WorkerProc(phone.sip_port, tmp_path, worker_id=3)
    try:
        assert w.hello == {"event": "hello", "worker": 3, "sip_port": w.sip_port, "max_legs": 4}
        call = answered_call(phone, w, "eof-1")
        w.sock.shutdown(socket.SHUT_RDWR)  # the coordinator died
        assert w.wait_exit() == 0
        # It hung up its leg on the way out instead of leaving the caller hanging.
        assert phone.wait_state(call, "disconnected")["code"] == 200
        assert w.proc.stdout is not None and w.proc.stdout.read() == b""
    finally:
        w.close()


def test_incoming_leg_reports_x_headers_ring_and_answer(phone: Phone, worker: WorkerProc) -> None:
    call = phone.call(worker.uri, headers={"X-Leg": "in-1", "X-Queue": "sales"})
    inc = worker.wait_event("incoming", leg="in-1")
    assert inc["headers"] == {"X-Leg": "in-1", "X-Queue": "sales"}
    assert inc["request_uri"] == worker.uri
    assert "sip:phone@127.0.0.1" in inc["from"]
    assert inc["sip_call_id"]
    worker.ok("ring", leg="in-1")
    assert phone.wait_state(call, "early")["code"] == 180
    worker.ok("answer", leg="in-1")
    assert phone.wait_state(call, "confirmed")["code"] == 200
    st = worker.wait_event("state", leg="in-1", state="confirmed")
    assert st["code"] == 200


def test_incoming_without_x_leg_gets_generated_id(phone: Phone, worker: WorkerProc) -> None:
    phone.call(worker.uri)
    inc = worker.wait_event("incoming")
    assert inc["leg"].startswith("w7-")
    assert inc["headers"] == {}


def test_play_file_reaches_caller(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    tone = make_tone(str(tmp_path / "prompt.wav"), 1000, seconds=1.5)
    call = answered_call(phone, worker, "play-1")
    rec = tmp_path / "heard.wav"
    phone.start_recording(call, str(rec))
    worker.ok("play", leg="play-1", file=tone)
    done = worker.wait_event("playback_finished", leg="play-1")
    assert done["file"] == tone
    phone.stop_recording(call)
    assert abs(dominant_frequency(str(rec), skip_seconds=0.2) - 1000) < 15
    assert rms(str(rec)) > 0.05


def test_play_missing_file_is_an_error(phone: Phone, worker: WorkerProc) -> None:
    answered_call(phone, worker, "play-2")
    reply = worker.cmd("play", leg="play-2", file="/nonexistent/x.wav")
    assert reply["ok"] is False and "no such file" in reply["error"]
    assert worker.cmd("answer", leg="nope")["ok"] is False


def test_record_what_the_caller_sends(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "rec-1")
    phone.play_tone(call, 440)
    path = str(tmp_path / "leg.wav")
    worker.ok("record", leg="rec-1", file=path)
    time.sleep(1.5)  # the length of audio to capture, not a synchronisation
    worker.ok("stop_record", leg="rec-1")
    fin = worker.wait_event("recording_finished", leg="rec-1")
    assert fin["file"] == path
    assert fin["reason"] == "stopped" and fin["sound"] is True
    assert 1.0 < fin["seconds"] < 3.0
    assert abs(duration(path) - fin["seconds"]) < 0.05
    assert abs(dominant_frequency(path, skip_seconds=0.3) - 440) < 15


def test_originate_and_bridge_both_directions(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    # The one phone is both parties (it is the only host the worker accepts as
    # edge): its call 1 is the caller leg, its call 2 the operator leg.
    caller = answered_call(phone, worker, "a")
    phone.auto_answer(200)
    worker.ok("originate", leg="b", uri=phone.uri, headers={"X-Leg": "b", "X-Agent": "42"})
    op = phone.wait_incoming()
    assert phone.info(op)["headers"] == {"X-Leg": "b", "X-Agent": "42"}
    phone.wait_state(op, "confirmed")
    assert [e["state"] for e in worker.events_of("state", leg="b")][-1] in (
        "connecting",
        "confirmed",
    )
    worker.wait_event("state", leg="b", state="confirmed")
    worker.ok("bridge", a="a", b="b")
    phone.play_tone(caller, 440)
    phone.play_tone(op, 880)
    rec_caller, rec_op = str(tmp_path / "caller.wav"), str(tmp_path / "op.wav")
    phone.start_recording(caller, rec_caller)
    phone.start_recording(op, rec_op)
    time.sleep(1.5)  # audio to capture
    phone.stop_recording(caller)
    phone.stop_recording(op)
    assert abs(dominant_frequency(rec_op, skip_seconds=0.3) - 440) < 15
    assert abs(dominant_frequency(rec_caller, skip_seconds=0.3) - 880) < 15

    worker.ok("unbridge", a="a", b="b")
    after = str(tmp_path / "after.wav")
    time.sleep(0.3)  # let the bridge drop the connection and the jitter buffer drain
    phone.start_recording(op, after)
    time.sleep(0.8)
    phone.stop_recording(op)
    assert rms(after, skip_seconds=0.1) < 0.01


def test_dtmf_both_directions_rfc2833_and_info(phone: Phone, worker: WorkerProc) -> None:
    call = answered_call(phone, worker, "d-1")
    phone.send_dtmf(call, "12", method="rfc2833")
    worker.wait_event("dtmf", leg="d-1", digit="2")
    phone.send_dtmf(call, "#", method="info")
    worker.wait_event("dtmf", leg="d-1", digit="#")
    got = [(e["digit"], e["method"]) for e in worker.events_of("dtmf", leg="d-1")]
    assert got == [("1", "rfc2833"), ("2", "rfc2833"), ("#", "info")]

    worker.ok("dtmf", leg="d-1", digits="9*", method="rfc2833")
    worker.ok("dtmf", leg="d-1", digits="0", method="info")
    assert sorted(phone.wait_dtmf(call, 3)) == sorted("9*0")
    methods = {e["digit"]: e["method"] for e in phone.dtmf_events(call)}
    assert methods == {"9": "rfc2833", "*": "rfc2833", "0": "info"}
    assert worker.cmd("dtmf", leg="d-1", digits="1", method="carrier-pigeon")["ok"] is False


def test_hangup_unanswered_with_486(phone: Phone, worker: WorkerProc) -> None:
    call = phone.call(worker.uri, headers={"X-Leg": "busy-1"})
    worker.wait_event("incoming", leg="busy-1")
    worker.ok("hangup", leg="busy-1", code=486)
    assert phone.wait_state(call, "disconnected")["code"] == 486
    st = worker.wait_event("state", leg="busy-1", state="disconnected")
    assert st["cause"] == "local" and st["code"] == 486
    assert st["stats"]["rx_packets"] == 0
    # The leg is dead now.
    assert worker.cmd("stats", leg="busy-1")["ok"] is False


def test_remote_hangup_reports_cause_and_stats(phone: Phone, worker: WorkerProc) -> None:
    call = answered_call(phone, worker, "s-1")
    phone.play_tone(call, 440)
    time.sleep(1.0)  # let RTP flow so there is something to count
    live = worker.ok("stats", leg="s-1")["stats"]
    assert live["rx_packets"] > 20 and live["tx_packets"] > 20
    phone.hangup(call)
    st = worker.wait_event("state", leg="s-1", state="disconnected")
    assert st["cause"] == "remote"
    assert st["stats"]["rx_packets"] >= live["rx_packets"]
    assert set(st["stats"]) == {"rx_packets", "rx_lost", "tx_packets", "rx_jitter_ms"}
    # Nothing more is reported for a dead leg.
    time.sleep(0.2)
    assert worker.events_of("state", leg="s-1")[-1]["state"] == "disconnected"


def test_local_bye_reports_cause_local(phone: Phone, worker: WorkerProc) -> None:
    call = answered_call(phone, worker, "bye-1")
    worker.ok("hangup", leg="bye-1")
    phone.wait_state(call, "disconnected")
    st = worker.wait_event("state", leg="bye-1", state="disconnected")
    assert st["cause"] == "local"


def test_originate_rejected_and_cancelled(phone: Phone, worker: WorkerProc) -> None:
    phone.auto_answer(486)
    worker.ok("originate", leg="o-busy", uri=phone.uri)
    busy = phone.wait_incoming()
    assert phone.wait_state(busy, "disconnected")["code"] == 486
    st = worker.wait_event("state", leg="o-busy", state="disconnected")
    assert st["code"] == 486 and st["cause"] == "remote"

    phone.auto_answer(None)  # let it ring
    worker.ok("originate", leg="o-cancel", uri=phone.uri)
    inc = phone.wait_incoming()
    worker.wait_event("state", leg="o-cancel", state="early")
    worker.ok("hangup", leg="o-cancel")
    assert phone.wait_state(inc, "disconnected")["code"] == 487
    st = worker.wait_event("state", leg="o-cancel", state="disconnected")
    assert st["cause"] == "local"
    assert worker.cmd("originate", leg="", uri=phone.uri)["ok"] is False


def test_shutdown_hangs_up_all_and_exits(phone: Phone, worker: WorkerProc) -> None:
    call = answered_call(phone, worker, "sd-1")
    worker.ok("shutdown")
    assert phone.wait_state(call, "disconnected")["code"] == 200
    assert worker.wait_exit() == 0
    st = worker.find("state", leg="sd-1", state="disconnected")
    assert st is not None and st["cause"] == "local"


# ----------------------------------------------------- raw SIP: slots and source check
def raw_invite(dst_port: int, src_port: int, call_id: str, x_leg: str, rtp_port: int) -> bytes:
    """A minimal INVITE with a PCMU offer, as the edge would forward it."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    tag = uuid.uuid4().hex[:8]
    head = (
        f"INVITE sip:service@127.0.0.1:{dst_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:edge@127.0.0.1>;tag={tag}\r\n"
        "To: <sip:service@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:edge@127.0.0.1:{src_port}>\r\n"
        f"X-Leg: {x_leg}\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return (head + sdp).encode()


def final_response(sock: socket.socket, call_id: str, timeout: float = TIMEOUT) -> int:
    """Read responses on ``sock`` until a final one for ``call_id``; its status code."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            data = sock.recv(65535).decode(errors="replace")
        except TimeoutError:
            break
        m = re.match(r"SIP/2\.0 (\d{3})", data)
        if m and f"Call-ID: {call_id}" in data and int(m.group(1)) >= 200:
            return int(m.group(1))
    raise AssertionError(f"no final response for {call_id}")


def test_fifth_call_is_refused_and_non_edge_forbidden(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as edge:
        edge.bind(("127.0.0.1", 0))
        edge_port = edge.getsockname()[1]
        w = WorkerProc(edge_port, tmp_path)
        try:
            rtp = free_rtp_range(12)
            for i in range(4):
                edge.sendto(
                    raw_invite(w.sip_port, edge_port, f"slot-{i}", f"s{i}", rtp + 2 * i),
                    ("127.0.0.1", w.sip_port),
                )
                w.wait_event("incoming", leg=f"s{i}")
            edge.sendto(
                raw_invite(w.sip_port, edge_port, "slot-4", "s4", rtp + 8),
                ("127.0.0.1", w.sip_port),
            )
            assert final_response(edge, "slot-4") == 486
            assert w.find("incoming", leg="s4") is None

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.bind(("127.0.0.1", 0))
                # Free a slot first, so the refusal is about the source, not capacity.
                w.ok("hangup", leg="s0", code=480)
                w.wait_event("state", leg="s0", state="disconnected")
                sport = stranger.getsockname()[1]
                stranger.sendto(
                    raw_invite(w.sip_port, sport, "stranger-1", "x1", rtp + 10),
                    ("127.0.0.1", w.sip_port),
                )
                assert final_response(stranger, "stranger-1") == 403
                assert w.find("incoming", leg="x1") is None
        finally:
            w.close()
        assert w.proc.returncode == 0


# ------------------------------------------------------------------ hold music
def capture(phone: Phone, call: str, path: Path, seconds: float = 0.8) -> str:
    """Record what the phone hears on ``call`` for ``seconds``; returns the path."""
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of audio to capture, not a synchronisation
    phone.stop_recording(call)
    return str(path)


def debug(worker: WorkerProc) -> dict[str, Any]:
    return worker.ok("debug")["debug"]


def test_hold_music_one_player_for_two_legs(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    music = make_tone(str(tmp_path / "music.wav"), 500, seconds=2.0)
    other = make_tone(str(tmp_path / "other.wav"), 700, seconds=2.0)
    c1 = answered_call(phone, worker, "m-1")
    c2 = answered_call(phone, worker, "m-2")
    idle = debug(worker)
    assert (idle["legs"], idle["players"], idle["music_players"]) == (2, 0, 0)
    assert worker.ok("moh_start", leg="m-1", file=music)["listeners"] == 1
    assert worker.ok("moh_start", leg="m-2", file=music)["listeners"] == 2
    assert worker.ok("moh_start", leg="m-2", file=music)["listeners"] == 2  # idempotent
    d = debug(worker)
    assert d["players"] == 1 and d["music_players"] == 1
    assert d["music"] == {music: ["m-1", "m-2"]}
    assert d["conf_ports"] == idle["conf_ports"] + 1
    assert abs(dominant_frequency(capture(phone, c1, tmp_path / "h1.wav"), 0.2) - 500) < 15
    assert abs(dominant_frequency(capture(phone, c2, tmp_path / "h2.wav"), 0.2) - 500) < 15

    worker.ok("moh_stop", leg="m-1")
    assert debug(worker)["music"] == {music: ["m-2"]}
    time.sleep(0.5)  # what was sent before drains from the phone's jitter buffer
    assert rms(capture(phone, c1, tmp_path / "q1.wav"), 0.1) < 0.01
    assert abs(dominant_frequency(capture(phone, c2, tmp_path / "h3.wav"), 0.2) - 500) < 15
    worker.ok("moh_stop", leg="m-2")
    worker.ok("moh_stop", leg="m-2")  # idempotent
    assert wait_until(lambda: debug(worker)["conf_ports"] == idle["conf_ports"], 2.0)
    d = debug(worker)
    assert (d["players"], d["music_players"], d["music"]) == (0, 0, {})
    time.sleep(0.5)
    assert rms(capture(phone, c2, tmp_path / "q2.wav"), 0.1) < 0.01

    # Two files are two players; moving a leg to another file and hanging up detach it.
    worker.ok("moh_start", leg="m-1", file=music)
    worker.ok("moh_start", leg="m-2", file=other)
    assert debug(worker)["music_players"] == 2
    worker.ok("moh_start", leg="m-2", file=music)
    assert debug(worker)["music"] == {music: ["m-1", "m-2"]}
    assert abs(dominant_frequency(capture(phone, c2, tmp_path / "h4.wav"), 0.3) - 500) < 15
    phone.hangup(c2)
    worker.wait_event("state", leg="m-2", state="disconnected")
    assert debug(worker)["music"] == {music: ["m-1"]}
    phone.hangup(c1)
    worker.wait_event("state", leg="m-1", state="disconnected")
    d = debug(worker)
    assert (d["legs"], d["players"], d["music_players"]) == (0, 0, 0)
    assert worker.cmd("moh_start", leg="nope", file=music)["ok"] is False
    call = answered_call(phone, worker, "m-3")
    assert worker.cmd("moh_start", leg="m-3", file="/nonexistent.wav")["ok"] is False
    assert debug(worker)["music_players"] == 0
    phone.hangup(call)


def test_announcement_interrupts_music_which_resumes(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    music = make_tone(str(tmp_path / "music.wav"), 500, seconds=2.0)
    prompt = make_tone(str(tmp_path / "prompt.wav"), 1000, seconds=1.5)
    call = answered_call(phone, worker, "ann-1")
    worker.ok("moh_start", leg="ann-1", file=music)
    assert abs(dominant_frequency(capture(phone, call, tmp_path / "m1.wav"), 0.2) - 500) < 15

    worker.ok("play", leg="ann-1", file=prompt)
    assert debug(worker)["players"] == 2  # the music player stays: the leg still listens
    during = capture(phone, call, tmp_path / "a1.wav", 1.0)
    assert abs(dominant_frequency(during, 0.3) - 1000) < 15
    assert band_energy_ratio(during, 500, skip_seconds=0.3) < 0.02  # not mixed in
    worker.wait_event("playback_finished", leg="ann-1")
    assert debug(worker)["players"] == 1
    time.sleep(0.5)
    assert abs(dominant_frequency(capture(phone, call, tmp_path / "m2.wav"), 0.2) - 500) < 15

    # `stop` ends a looping announcement and the music comes back too.
    worker.ok("play", leg="ann-1", file=prompt, loop=True)
    time.sleep(0.3)
    assert abs(dominant_frequency(capture(phone, call, tmp_path / "a2.wav"), 0.2) - 1000) < 15
    worker.ok("stop", leg="ann-1")
    time.sleep(0.5)
    assert abs(dominant_frequency(capture(phone, call, tmp_path / "m3.wav"), 0.2) - 500) < 15

    # resume_moh=false: the announcement takes the leg off the music for good.
    short = make_tone(str(tmp_path / "short.wav"), 1000, seconds=0.5)
    worker.ok("play", leg="ann-1", file=short, resume_moh=False)
    assert debug(worker)["music_players"] == 0
    worker.wait_event("playback_finished", leg="ann-1", file=short)
    time.sleep(0.5)
    assert rms(capture(phone, call, tmp_path / "q.wav"), 0.1) < 0.01


# ------------------------------------------------------------ recording end conditions
def check_recording(fin: dict[str, Any], path: str, freq: float, skip: float = 0.2) -> None:
    """The WAV is complete (header matches the data) and holds the phone's tone."""
    assert fin["file"] == path
    assert abs(duration(path) - fin["seconds"]) < 0.05
    assert os.path.getsize(path) == 44 + int(round(duration(path) * 8000)) * 2
    assert abs(dominant_frequency(path, skip_seconds=skip) - freq) < 15


def test_record_ends_after_max_seconds(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "rmax")
    phone.play_tone(call, 440)
    path = str(tmp_path / "max.wav")
    worker.ok("record", leg="rmax", file=path, max_seconds=1.2, silence_timeout=5)
    assert debug(worker)["recorders"] == 1
    fin = worker.wait_event("recording_finished", leg="rmax")
    assert fin["reason"] == "max" and fin["sound"] is True and "digit" not in fin
    assert 1.0 <= fin["seconds"] <= 1.45
    check_recording(fin, path, 440)
    assert debug(worker)["recorders"] == 0
    assert worker.cmd("stop_record", leg="rmax")["ok"] is False  # already over
    for bad in (
        {"max_seconds": -1},
        {"silence_timeout": "soon"},
        {"stop_on_digit": "x"},
        {"silence_level": 101},
    ):
        reply = worker.cmd("record", leg="rmax", file=str(tmp_path / "bad.wav"), **bad)
        assert reply["ok"] is False, bad


def test_record_ends_on_silence(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "rsil")
    # What the caller sends: 1 s of tone, then 4 s of silence.
    speech = write_wav(
        str(tmp_path / "speech.wav"), np.concatenate([tone_samples(440, 1.0), np.zeros(32000)])
    )
    path = str(tmp_path / "sil.wav")
    worker.ok("record", leg="rsil", file=path, silence_timeout=1.0, max_seconds=10)
    phone.play_file(call, speech, loop=False)
    levels = debug(worker)["levels"]["rsil"]
    fin = worker.wait_event("recording_finished", leg="rsil")
    assert fin["reason"] == "silence" and fin["sound"] is True
    # ~1 s of tone, then the timeout counted from the last sound (polled every 100 ms).
    assert 1.7 <= fin["seconds"] <= 2.6, fin
    check_recording(fin, path, 440, skip=0.0)
    assert rms(path, skip_seconds=fin["seconds"] - 0.7) < 0.01  # it ends in silence
    assert levels["heard"] == 0  # the worker sends nothing; the phone sends the tone

    # Silence from the start counts as well (and `sound` says nothing was heard).
    path2 = str(tmp_path / "sil2.wav")
    worker.ok("record", leg="rsil", file=path2, silence_timeout=0.5)
    fin2 = worker.wait_event("recording_finished", leg="rsil", file=path2)
    assert fin2["reason"] == "silence" and fin2["sound"] is False
    assert 0.4 <= fin2["seconds"] <= 1.0


def test_sent_and_heard_levels(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "lvl")
    phone.play_tone(call, 440)
    # The bridge reads (and measures) a leg's audio only while it goes somewhere.
    time.sleep(0.3)
    assert debug(worker)["levels"]["lvl"]["sent"] == 0
    worker.ok("record", leg="lvl", file=str(tmp_path / "lvl.wav"))
    assert wait_until(lambda: (debug(worker)["levels"]["lvl"]["sent"] or 0) > 20, 3.0)
    assert debug(worker)["levels"]["lvl"]["heard"] == 0
    worker.ok("play", leg="lvl", file=make_tone(str(tmp_path / "p.wav"), 1000), loop=True)
    assert wait_until(lambda: (debug(worker)["levels"]["lvl"]["heard"] or 0) > 20, 3.0)


def test_record_ends_on_digit(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "rdig")
    phone.play_tone(call, 440)
    path = str(tmp_path / "dig.wav")
    worker.ok("record", leg="rdig", file=path, stop_on_digit="#*", max_seconds=10)
    time.sleep(1.0)  # audio to capture
    phone.send_dtmf(call, "1#")
    fin = worker.wait_event("recording_finished", leg="rdig")
    assert fin["reason"] == "digit" and fin["digit"] == "#"
    assert 0.9 <= fin["seconds"] <= 2.5
    check_recording(fin, path, 440)
    # Both digits are still reported, the terminator before recording_finished.
    names = [(e["event"], e.get("digit")) for e in worker.events if e.get("leg") == "rdig"]
    assert names.index(("dtmf", "1")) < names.index(("dtmf", "#"))
    assert names.index(("dtmf", "#")) < names.index(("recording_finished", "#"))


def test_record_ends_on_hangup(phone: Phone, worker: WorkerProc, tmp_path: Path) -> None:
    call = answered_call(phone, worker, "rhup")
    phone.play_tone(call, 440)
    path = str(tmp_path / "hup.wav")
    worker.ok("record", leg="rhup", file=path, max_seconds=30, silence_timeout=5)
    time.sleep(1.2)  # audio to capture
    phone.hangup(call)
    fin = worker.wait_event("recording_finished", leg="rhup")
    assert fin["reason"] == "hangup" and fin["sound"] is True
    assert 0.9 <= fin["seconds"] <= 2.5
    check_recording(fin, path, 440)
    events = [e["event"] for e in worker.events if e.get("leg") == "rhup"]
    assert events.index("recording_finished") < len(events) - 1  # before "disconnected"
    worker.wait_event("state", leg="rhup", state="disconnected")
    assert debug(worker)["recorders"] == 0


# --------------------------------------------------------------------- in-band DTMF
def test_inband_dtmf_detected_on_what_the_leg_sends(
    phone: Phone, worker: WorkerProc, tmp_path: Path
) -> None:
    call = answered_call(phone, worker, "ib")
    keys = write_wav(str(tmp_path / "keys.wav"), dtmf_samples("159#*0"))
    worker.ok("inband", leg="ib", on=True)
    worker.ok("inband", leg="ib", on=True)  # idempotent
    assert debug(worker)["taps"] == 1
    phone.play_file(call, keys, loop=False)
    assert wait_until(lambda: len(worker.events_of("dtmf", leg="ib")) >= 6, 5.0)
    time.sleep(0.3)  # nothing more comes
    got = worker.events_of("dtmf", leg="ib")
    assert "".join(e["digit"] for e in got) == "159#*0"
    assert {e["method"] for e in got} == {"inband"}

    # An in-band digit ends a recording just like an RFC 2833 one.
    tail = write_wav(
        str(tmp_path / "tail.wav"), np.concatenate([tone_samples(440, 1.0), dtmf_samples("2#")])
    )
    path = str(tmp_path / "ib.wav")
    worker.ok("record", leg="ib", file=path, stop_on_digit="#")
    phone.play_file(call, tail, loop=False)
    fin = worker.wait_event("recording_finished", leg="ib")
    assert fin["reason"] == "digit" and fin["digit"] == "#"
    assert abs(dominant_frequency(path, skip_seconds=0.1) - 440) < 15

    # Off: no more detection; the tap goes back to the pool and is reused.
    worker.ok("inband", leg="ib", on=False)
    d = debug(worker)
    assert (d["taps"], d["idle_taps"]) == (0, 1)
    before = len(worker.events_of("dtmf", leg="ib"))
    phone.play_file(call, keys, loop=False)
    time.sleep(1.6)
    assert len(worker.events_of("dtmf", leg="ib")) == before
    worker.ok("inband", leg="ib", on=True)
    d = debug(worker)
    assert (d["taps"], d["idle_taps"]) == (1, 0)
    phone.play_file(call, write_wav(str(tmp_path / "7.wav"), dtmf_samples("7")), loop=False)
    assert worker.wait_event("dtmf", leg="ib", digit="7")["method"] == "inband"
    assert worker.cmd("inband", leg="nope", on=True)["ok"] is False


def test_inband_tap_survives_hangup_and_shutdown(phone: Phone, worker: WorkerProc) -> None:
    c1 = answered_call(phone, worker, "t-1")
    c2 = answered_call(phone, worker, "t-2")
    phone.play_tone(c1, 697)
    worker.ok("inband", leg="t-1", on=True)
    worker.ok("inband", leg="t-2", on=True)
    time.sleep(0.3)
    phone.hangup(c1)
    worker.wait_event("state", leg="t-1", state="disconnected")
    d = debug(worker)
    assert (d["taps"], d["idle_taps"]) == (1, 1)
    worker.ok("shutdown")
    assert phone.wait_state(c2, "disconnected")["code"] == 200
    assert worker.wait_exit() == 0
