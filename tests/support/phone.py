"""A pjsua2 test phone for end-to-end tests, with a blocking API and timeouts.

Each ``Phone`` runs ``tests/support/phone_proc.py`` as a child process (pjsua2 allows
one endpoint per process) and talks to it over JSON lines on the child's stdin/stdout.
A reader thread collects replies and events; every ``wait_*`` method waits on a
condition variable for the event itself, never on a sleep.

    with Phone(user="101", password="secret101", server=("127.0.0.1", 5060)) as a:
        assert a.register() == 200
        call = a.call("102")
        a.wait_state(call, "confirmed")

``Phone(user=None)`` has no registrar and no proxy: it calls raw URIs
(``a.call("sip:x@127.0.0.1:5070", headers={"X-Leg": "l1"})``) and accepts any INVITE
sent to ``a.uri``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from tests.support.audio import make_tone

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 10.0
STATE_ORDER = ["calling", "incoming", "early", "connecting", "confirmed", "disconnected"]


class PhoneError(Exception):
    """A phone command failed, or an awaited event did not happen in time."""


class Phone:
    """One test phone (see the module docstring)."""

    def __init__(
        self,
        user: str | None = None,
        password: str | None = None,
        server: tuple[str, int] = ("127.0.0.1", 5060),
        transport: str = "udp",
        log_file: str | None = None,
        start_timeout: float = DEFAULT_TIMEOUT,
    ):
        self.user = user
        self.server = server
        self.transport = transport
        self.tmpdir = tempfile.mkdtemp(prefix="phone-")
        cmd = [
            sys.executable,
            "-m",
            "tests.support.phone_proc",
            "--server",
            f"{server[0]}:{server[1]}",
            "--transport",
            transport,
        ]
        if user is not None:
            cmd += ["--user", user]
        if password is not None:
            cmd += ["--password", password]
        if log_file is None and os.environ.get("PHONE_LOG_DIR"):
            log_file = os.path.join(
                os.environ["PHONE_LOG_DIR"], f"phone-{user or 'raw'}-{os.getpid()}-{id(self)}.log"
            )
        if log_file:
            cmd += ["--log-file", log_file]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(REPO_ROOT),
            env=env,
        )
        self.cond = threading.Condition()
        self.replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.incoming: deque[str] = deque()
        self.call_info: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.dtmf: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self.closed = False
        self.next_id = 0
        self.hello: dict[str, Any] | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.hello is not None or self.closed, start_timeout):
                self.close()
                raise PhoneError("phone process did not start")
        if self.hello is None or self.hello.get("event") != "hello":
            self.close()
            raise PhoneError(f"phone process failed: {self.hello}")
        self.sip_port: int = int(self.hello["sip_port"])
        self.tcp_port: int | None = self.hello.get("tcp_port")

    # ------------------------------------------------------------ plumbing
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self._dispatch(msg)
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "reply" in msg:
            self.replies[int(msg["reply"])] = msg
            return
        self.events.append(msg)
        kind = msg.get("event")
        if kind in ("hello", "fatal"):
            self.hello = msg
        elif kind == "incoming":
            self.call_info[msg["call"]] = msg
            self.history.setdefault(msg["call"], []).append(
                {"state": "incoming", "code": 0, "reason": ""}
            )
            self.incoming.append(msg["call"])
        elif kind == "state":
            self.history.setdefault(msg["call"], []).append(
                {"state": msg["state"], "code": msg["code"], "reason": msg["reason"]}
            )
        elif kind == "dtmf":
            self.dtmf.setdefault(msg["call"], []).append(msg["digit"])
        elif kind == "error":
            self.errors.append(msg.get("message", ""))

    def _wait(self, pred: Any, timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: pred() or self.closed, timeout):
                raise PhoneError(f"timeout ({timeout}s) waiting for {what}")
            if not pred():
                raise PhoneError(f"phone process exited while waiting for {what}")

    def _rpc(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        with self.cond:
            self.next_id += 1
            rid = self.next_id
        line = json.dumps({"cmd": cmd, "id": rid, **fields}) + "\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise PhoneError(f"phone process is gone ({cmd})") from exc
        self._wait(lambda: rid in self.replies, timeout, f"reply to {cmd}")
        with self.cond:
            reply = self.replies.pop(rid)
        if not reply.get("ok"):
            raise PhoneError(f"{cmd} failed: {reply.get('error')}")
        return reply

    # ---------------------------------------------------------- public API
    @property
    def uri(self) -> str:
        """A SIP URI that reaches this phone directly over UDP."""
        return f"sip:{self.user or 'phone'}@127.0.0.1:{self.sip_port}"

    def register(self, expires: int = 300, timeout: float = DEFAULT_TIMEOUT) -> int:
        """REGISTER (answering the digest challenge); returns the final status code."""
        return int(self._rpc("register", timeout, expires=expires)["code"])

    def unregister(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """REGISTER with expires 0; returns the final status code."""
        return int(self._rpc("unregister", timeout)["code"])

    def auto_answer(self, code: int | None = 200, delay: float = 0.0) -> None:
        """How incoming calls are answered from now on; None = ring (180) and wait."""
        self._rpc("auto_answer", code=code, delay=delay)

    def call(self, target: str, headers: dict[str, str] | None = None) -> str:
        """INVITE ``target`` (an extension via the server, or a full ``sip:`` URI)."""
        if not target.startswith(("sip:", "sips:")):
            host, port = self.server
            target = f"sip:{target}@{host}:{port}"
            if self.transport == "tcp":
                target += ";transport=tcp"
        return str(self._rpc("call", uri=target, headers=headers or {})["call"])

    def wait_incoming(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Id of the next incoming call (details in ``info(call)``)."""
        self._wait(lambda: bool(self.incoming), timeout, "an incoming call")
        with self.cond:
            return self.incoming.popleft()

    def info(self, call: str) -> dict[str, Any]:
        """The ``incoming`` event of a call: from, to, request_uri, X-* headers."""
        with self.cond:
            return dict(self.call_info.get(call, {}))

    def wait_state(self, call: str, state: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Wait until ``call`` has reached ``state``; returns {state, code, reason}.

        Raises at once if the call ended without reaching it, so a rejected call fails
        the test with its status code instead of a timeout.
        """

        def reached() -> bool:
            states = [h["state"] for h in self.history.get(call, [])]
            return state in states or "disconnected" in states

        self._wait(reached, timeout, f"{call} to be {state}")
        with self.cond:
            hist = self.history[call]
            for h in reversed(hist):
                if h["state"] == state:
                    return dict(h)
            raise PhoneError(f"{call} ended ({hist[-1]}) without reaching {state}")

    def state(self, call: str) -> str | None:
        with self.cond:
            hist = self.history.get(call)
            return hist[-1]["state"] if hist else None

    def last_code(self, call: str) -> int | None:
        with self.cond:
            hist = self.history.get(call)
            return int(hist[-1]["code"]) if hist else None

    def answer(self, call: str, code: int = 200) -> None:
        self._rpc("answer", call=call, code=code)

    def ring(self, call: str, code: int = 180) -> None:
        self._rpc("answer", call=call, code=code)

    def hangup(self, call: str, code: int | None = None) -> None:
        self._rpc("hangup", call=call, code=code)

    def play_file(self, call: str, path: str, loop: bool = True) -> None:
        self._rpc("play", call=call, file=str(path), loop=loop)

    def play_tone(self, call: str, freq: float = 440, seconds: float = 2.0) -> None:
        """Send a continuous sine tone (a looped WAV made for this phone)."""
        path = os.path.join(self.tmpdir, f"tone-{freq:g}.wav")
        if not os.path.exists(path):
            make_tone(path, freq, seconds)
        self.play_file(call, path, loop=True)

    def stop_playing(self, call: str) -> None:
        self._rpc("stop_play", call=call)

    def start_recording(self, call: str, path: str) -> None:
        """Record what this phone receives on ``call`` into a WAV file."""
        self._rpc("record", call=call, file=str(path))

    def stop_recording(self, call: str) -> None:
        """Close the recording; the WAV is complete when this returns."""
        self._rpc("stop_record", call=call)

    def send_dtmf(self, call: str, digits: str, method: str = "rfc2833") -> None:
        self._rpc("dtmf", call=call, digits=digits, method=method)

    def wait_dtmf(self, call: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until ``count`` DTMF digits arrived on ``call``; returns them."""
        self._wait(lambda: len(self.dtmf.get(call, [])) >= count, timeout, f"{count} digits")
        with self.cond:
            return "".join(self.dtmf[call])

    def dtmf_events(self, call: str) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if e.get("event") == "dtmf" and e["call"] == call]

    def hold(self, call: str) -> None:
        """Put the call on hold (re-INVITE, a=sendonly)."""
        self._rpc("hold", call=call)

    def unhold(self, call: str) -> None:
        self._rpc("unhold", call=call)

    def transfer(self, call: str, target: str) -> None:
        """Blind transfer: REFER the other party of `call` to `target`."""
        self._rpc("xfer", call=call, target=target)

    def transfer_replaces(self, call: str, other: str) -> None:
        """Attended transfer: REFER the other party of `call` to the party of `other`
        (Refer-To with Replaces of `other`)."""
        self._rpc("xfer_replaces", call=call, other=other)

    def events_of(self, kind: str, call: str | None = None) -> list[dict[str, Any]]:
        """Events of one kind ("xfer_status", "media", ...), of one call if given."""
        with self.cond:
            return [
                e
                for e in self.events
                if e.get("event") == kind and (call is None or e.get("call") == call)
            ]

    def stats(self, call: str) -> dict[str, Any] | None:
        return self._rpc("stats", call=call).get("stats")

    def close(self, timeout: float = 5.0) -> None:
        """Hang up, stop the child (killing it if it does not exit) and clean up."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd":"quit","id":0}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.reader.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> Phone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(pred: Any, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02) -> bool:
    """Poll ``pred`` until true or ``timeout``; for conditions without an event."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
