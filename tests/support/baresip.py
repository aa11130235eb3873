"""baresip as a test phone: one process per phone, its own config dir, no sound card.

Each ``Baresip`` writes a config dir (``baresip -f DIR``) with one account, starts
baresip on 127.0.0.1 and drives it over the ``ctrl_tcp`` module (netstring-framed JSON
commands and events, on a free port). Audio: the ``aufile`` module plays a WAV as the
microphone (baresip 1.0 does not loop it: make it longer than the call), and the
``sndfile`` filter writes what is sent and what is received to WAV files
(``dump-...-enc.wav`` / ``dump-...-dec.wav`` in ``record_dir``). There is no audio
player at all; the decode side still runs, so the received audio is recorded.

    with Baresip("101", "secret", ("127.0.0.1", 5060), source_wav="a.wav") as a:
        a.wait_registered()
        a.dial("102")
        a.wait_event("CALL_ESTABLISHED")

Every wait is bounded; the process is stopped by its PID (``quit`` first, then kill).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

BARESIP = shutil.which("baresip")
MODULE_PATH = "/usr/lib/baresip/modules"
DEFAULT_TIMEOUT = 10.0


class BaresipError(Exception):
    """baresip failed to start, a command failed, or an awaited event did not come."""


def _free_sip_port() -> int:
    """A port P free for UDP and TCP, with P+1 free for TCP (baresip puts its TLS
    listener there, even when no TLS account uses it)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if port >= 65535:
                continue
            ok = True
            for p in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    try:
                        t.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
                        break
            if ok:
                return port
    raise BaresipError("no free port for baresip")


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]


def available_modules() -> set[str]:
    if not os.path.isdir(MODULE_PATH):
        return set()
    return {name[:-3] for name in os.listdir(MODULE_PATH) if name.endswith(".so")}


class Baresip:
    """One baresip phone (see the module docstring)."""

    def __init__(
        self,
        user: str,
        password: str,
        server: tuple[str, int],
        *,
        transport: str = "udp",
        source_wav: str | None = None,
        record: bool = True,
        auto_answer: bool = True,
        start_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if BARESIP is None:
            raise BaresipError("baresip is not installed")
        self.user = user
        self.server = server
        self.transport = transport
        self.dir = tempfile.mkdtemp(prefix=f"baresip-{user}-")
        self.record_dir = os.path.join(self.dir, "recordings")
        os.makedirs(self.record_dir)
        self.sip_port = _free_sip_port()
        self.ctrl_port = _free_tcp_port()
        self.log_path = os.path.join(self.dir, "baresip.log")
        self._write_config(source_wav, record)
        host, port = server
        params = [f"auth_pass={password}", "regint=300"]
        if auto_answer:
            params.append("answermode=auto")
        with open(os.path.join(self.dir, "accounts"), "w") as fh:
            fh.write(f"<sip:{user}@{host}:{port};transport={transport}>;{';'.join(params)}\n")

        self.cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.responses: dict[str, dict[str, Any]] = {}
        self.closed = False
        self._token = 0
        self._sock: socket.socket | None = None
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                [BARESIP, "-f", self.dir],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        finally:
            log.close()
        try:
            self._connect(start_timeout)
        except BaseException:
            self.close()
            raise
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _write_config(self, source_wav: str | None, record: bool) -> None:
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",  # never the host's other addresses, in SIP or SDP
            "call_local_timeout 120",
            "call_max_calls 4",
            "audio_player",
            f"audio_source aufile,{source_wav}" if source_wav else "audio_source",
            "audio_alert",
            "ausrc_srate 8000",
            "ausrc_channels 1",
            "audio_level no",
            "rtcp_mux no",
            "jitter_buffer_delay 5-10",
            f"module_path {MODULE_PATH}",
            "module g711.so",
        ]
        if source_wav:
            lines.append("module aufile.so")
        if record:
            lines += ["module sndfile.so", f"snd_path {self.record_dir}"]
        lines += [
            "module_tmp account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
        ]
        with open(os.path.join(self.dir, "config"), "w") as fh:
            fh.write("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ plumbing
    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BaresipError(f"baresip exited ({self.proc.returncode}):\n{self.log()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), 1.0)
                self._sock.settimeout(None)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"ctrl_tcp not reachable:\n{self.log()}") from None
                time.sleep(0.05)

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:  # netstrings: LEN ":" DATA ","
                    colon = buf.find(b":")
                    if colon < 0 or not buf[:colon].isdigit():
                        break
                    size = int(buf[:colon])
                    if len(buf) < colon + 1 + size + 1:
                        break
                    data = buf[colon + 1 : colon + 1 + size]
                    buf = buf[colon + 2 + size :]
                    try:
                        msg = json.loads(data)
                    except ValueError:
                        continue
                    with self.cond:
                        if msg.get("event"):
                            self.events.append(msg)
                        elif msg.get("response"):
                            self.responses[str(msg.get("token"))] = msg
                        self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def command(
        self, cmd: str, params: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Run a baresip command (as typed after '/' in its menu); returns the reply."""
        with self.cond:
            self._token += 1
            token = f"t{self._token}"
        data = json.dumps({"command": cmd, "params": params, "token": token}).encode()
        assert self._sock is not None
        try:
            self._sock.sendall(str(len(data)).encode() + b":" + data + b",")
        except OSError as exc:
            raise BaresipError(f"baresip is gone ({cmd})") from exc
        with self.cond:
            if not self.cond.wait_for(lambda: token in self.responses or self.closed, timeout):
                raise BaresipError(f"no reply to {cmd} in {timeout}s")
            if token not in self.responses:
                raise BaresipError(f"baresip closed its control connection ({cmd})")
            reply = self.responses.pop(token)
        if not reply.get("ok"):
            raise BaresipError(f"{cmd} {params or ''} failed: {reply.get('data')}")
        return reply

    # ------------------------------------------------------------------ public API
    def registration_status(self) -> str:
        """'OK', 'ERR' or '' (still trying), from the `reginfo` command."""
        data = str(self.command("reginfo").get("data", ""))
        for word in ("OK", "ERR"):
            if f"m{word} " in data or f" {word} " in data:
                return word
        return ""

    def wait_registered(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once registered; False if the registrar refused or time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.registration_status()
            if state == "OK":
                return True
            if state == "ERR" or time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def dial(self, number: str) -> None:
        self.command("dial", number)

    def hangup(self) -> None:
        self.command("hangup")

    def wait_event(
        self, kind: str, timeout: float = DEFAULT_TIMEOUT, since: int = 0
    ) -> dict[str, Any]:
        """The first event of type `kind` (CALL_ESTABLISHED, CALL_CLOSED, ...) at or
        after index `since` of `events`."""

        def find() -> dict[str, Any] | None:
            for event in self.events[since:]:
                if event.get("type") == kind:
                    return event
            return None

        with self.cond:
            if not self.cond.wait_for(lambda: find() is not None or self.closed, timeout):
                seen = [e.get("type") for e in self.events]
                raise BaresipError(f"timeout ({timeout}s) waiting for {kind}; saw {seen}")
            event = find()
        if event is None:
            raise BaresipError(f"baresip went away while waiting for {kind}:\n{self.log()}")
        return event

    def event_types(self) -> list[str]:
        with self.cond:
            return [str(e.get("type")) for e in self.events]

    def recordings(self) -> dict[str, str]:
        """{'enc': sent audio, 'dec': received audio} of the last call (WAV paths)."""
        out: dict[str, str] = {}
        for kind in ("enc", "dec"):
            files = sorted(
                glob.glob(os.path.join(self.record_dir, f"dump-*-{kind}.wav")), key=os.path.getmtime
            )
            if files:
                out[kind] = files[-1]
        return out

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")[-8000:]
        except OSError:
            return ""

    def close(self, timeout: float = 5.0) -> None:
        """Quit baresip (kill it by PID if it does not go) and remove its directory."""
        if self.proc.poll() is None and self._sock is not None and not self.closed:
            with contextlib.suppress(BaresipError, OSError):
                self.command("quit", timeout=2.0)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Baresip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
