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

import pytest

from tests.support.audio import dominant_frequency, duration, make_tone, rms
from tests.support.phone import Phone

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
    time.sleep(0.1)  # let the bridge drop the connection before capturing
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
