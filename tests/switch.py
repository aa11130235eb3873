"""Start a real softswitch (`python -m softswitch run`) for end-to-end tests.

The switch runs as a child process on 127.0.0.1 with free ports and its own data dir,
exactly as a user starts it; tests talk to it only over SIP and read its SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

EXTENSIONS = {
    "101": ("Alice", "alice-Secret-one"),
    "102": ("Bob", "bob-Secret-two"),
    "103": ("Carol", "carol-Secret-three"),
    "104": ("Dave", "dave-Secret-four"),
    "105": ("Erin", "erin-Secret-five"),
    "106": ("Frank", "frank-Secret-six"),
}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def write_config(
    path: Path,
    port: int,
    data_dir: Path,
    extra: str = "",
    http_port: int | None = None,
    **switch: object,
) -> None:
    # Switches of tests running side by side get disjoint RTP ranges (400 ports each).
    rtp = switch.pop("rtp_base", 20000 + (port % 100) * 400)
    settings = {
        "domain": '"softswitch.test"',
        "listen": f'["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]',
        "data_dir": f'"{data_dir}"',
        "rtp_ports": f'"{rtp}-{int(rtp) + 399}"',
        "workers": "1",
        "max_workers": "4",
        "ring_timeout": "10",
    }
    extensions = [(number, name, password) for number, (name, password) in EXTENSIONS.items()]
    http = "" if "[http]" in extra else f"\n[http]\nport = {http_port or free_port()}\n"
    path.write_text(config_text(settings, switch, extensions) + "\n" + extra + http)


def config_text(
    settings: Mapping[str, str],
    overrides: Mapping[str, object],
    extensions: Iterable[tuple[str, str, str]],
) -> str:
    """A config: [switch] with `settings` (TOML values as text), each replaced or added to
    by `overrides` (str() of each), then an [[extension]] per (number, name, password).
    The benchmarks (bench/common.py) write theirs with it too."""
    merged = {**settings, **{k: str(v) for k, v in overrides.items()}}
    lines = ["[switch]"] + [f"{k} = {v}" for k, v in merged.items()]
    for number, name, password in extensions:
        lines += [
            "",
            "[[extension]]",
            f'number = "{number}"',
            f'name = "{name}"',
            f'password = "{password}"',
        ]
    return "\n".join(lines) + "\n"


def wait_until_ready(
    proc: subprocess.Popen, timeout: float, output: list[str] | None = None
) -> bool:
    """Reads a starting `softswitch run`'s stdout on a thread (each line appended to
    `output` when given) until its "data:" line: True once that came, False when the
    process ended or `timeout` seconds passed first."""
    ready = threading.Event()

    def pump(stream) -> None:
        for line in stream:
            if output is not None:
                output.append(line)
            if line.startswith("data:"):
                ready.set()

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
    return True


class RunningSwitch:
    def __init__(
        self, tmp: Path, extra: str = "", argv: list[str] | None = None, **switch: object
    ) -> None:
        """`argv`: how to start it (default `python -m softswitch run --config F`);
        "{config}" in it stands for the generated config file."""
        self.tmp = tmp
        self.argv = argv or ["-m", "softswitch", "run", "--config", "{config}"]
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.config = tmp / "switch.toml"
        self.http_port = free_port()  # the API and dashboard ([http]) unless `extra` sets it
        write_config(self.config, self.port, self.data_dir, extra, self.http_port, **switch)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self.start()

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.tmp / "switch.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, *(a.replace("{config}", str(self.config)) for a in self.argv)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        if not wait_until_ready(self.proc, timeout, self.output):
            raise RuntimeError("softswitch did not start:\n" + self.log_text())

    def log_text(self) -> str:
        path = self.tmp / "switch.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data_dir / "softswitch.db")
        conn.row_factory = sqlite3.Row
        return conn

    def calls(self) -> list[dict]:
        with self.db() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY started")]

    def legs(self, call_id: str) -> list[dict]:
        with self.db() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    "SELECT * FROM legs WHERE call_id = ? ORDER BY role", (call_id,)
                )
            ]

    def wait_for_call_closed(self, count: int = 1, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            calls = [c for c in self.calls() if c["ended"] is not None]
            if len(calls) >= count or time.monotonic() > deadline:
                return calls
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """PIDs of the media workers this switch started (its child processes)."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]
