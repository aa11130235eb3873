"""Shared pieces of the capacity benchmarks: a switch started exactly as a user starts it
(`python -m softswitch run --config F`) on free 127.0.0.1 ports with generated
extensions, SIPp runs that are always stopped by PID, CPU/RSS from /proc, tables."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# one free-port picker, config writer and start-up wait for the tests' switch and this one
from tests.switch import config_text, free_port, wait_until_ready

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SIPP_DIR = BENCH_DIR / "sipp"
DOMAIN = "bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def password(number: str) -> str:
    """A password the config validator accepts (>= 10 chars, without the number)."""
    return f"bench-pw-{sum(map(ord, number)) * 7919 % 100000:05d}-x".replace(number, "n")


def extensions(count: int, first: int = 1000) -> list[str]:
    return [str(first + i) for i in range(count)]


# -- /proc -------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class CpuMeter:
    """CPU used by a set of processes between start() and stop(), in % of one core.
    Processes that appear in between (new media workers) are counted from 0."""

    def __init__(self, pids_fn) -> None:
        self.pids_fn = pids_fn
        self.t0 = 0.0
        self.base: dict[int, float] = {}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.base = {p: cpu_seconds(p) for p in self.pids_fn()}

    def stop(self) -> tuple[float, float]:
        """(% of one core used, wall seconds)."""
        wall = time.monotonic() - self.t0
        used = sum(cpu_seconds(p) - self.base.get(p, 0.0) for p in self.pids_fn())
        return (100.0 * used / wall if wall > 0 else 0.0), wall


# -- the switch --------------------------------------------------------------------------
class Switch:
    """A running `softswitch run` on free ports, with `count` generated extensions."""

    def __init__(
        self, tmp: Path, numbers: Sequence[str], *, log_level: str = "INFO", **switch: object
    ) -> None:
        self.tmp = tmp
        self.numbers = list(numbers)
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.config = tmp / "switch.toml"
        self.log_path = tmp / "switch.log"
        self.log_level = log_level
        self._write_config(switch)
        self.proc: subprocess.Popen | None = None

    def _write_config(self, switch: dict) -> None:
        settings = {
            "domain": f'"{DOMAIN}"',
            "listen": f'["udp:127.0.0.1:{self.port}", "tcp:127.0.0.1:{self.port}"]',
            "data_dir": f'"{self.data_dir}"',
            "rtp_ports": '"20000-39999"',
            "workers": "1",
            "max_workers": "4",
            "ring_timeout": "30",
        }
        extensions = [(n, f"Ext {n}", password(n)) for n in self.numbers]
        # the HTTP API on a free port of its own (the default 8088 would clash)
        http = f"\n[http]\nport = {free_port()}\n"
        # The load generators send thousands of messages a second from 127.0.0.1, as a
        # whole office behind one NAT address would: allow-listed, so not rate limited.
        security = '\n[security]\nallow = ["127.0.0.0/8"]\n'
        self.config.write_text(config_text(settings, switch, extensions) + http + security)

    def check(self) -> None:
        res = subprocess.run(
            [sys.executable, "-m", "softswitch", "check", "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=self.env(),
        )
        if res.returncode != 0:
            raise RuntimeError(f"softswitch check refused the bench config:\n{res.stderr}")

    def start(self, timeout: float = 120.0) -> None:
        self.check()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "softswitch",
                    "--log-level",
                    self.log_level,
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env(),
                cwd=REPO,
                start_new_session=True,
            )
        if not wait_until_ready(self.proc, timeout):
            self.stop()
            raise RuntimeError("softswitch did not start:\n" + self.log_tail())

    @staticmethod
    def env() -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def all_pids(self) -> list[int]:
        return [self.pid, *self.worker_pids()]

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_grep(self, *words: str) -> list[str]:
        if not self.log_path.exists():
            return []
        return [
            ln
            for ln in self.log_path.read_text(errors="replace").splitlines()
            if any(w in ln for w in words)
        ]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the switch (it stops its workers), then SIGKILL by PID what is left."""
        if self.proc is None:
            return
        workers = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data_dir / "softswitch.db", timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        with contextlib.closing(self.db()) as conn:
            return [dict(r) for r in conn.execute(sql, args)]

    def users_csv(
        self, path: Path, numbers: Sequence[str] | None = None, order: str = "SEQUENTIAL"
    ) -> Path:
        """A SIPp injection file: number;domain;[authentication ...] per extension."""
        with open(path, "w") as f:
            f.write(order + "\n")
            for n in numbers or self.numbers:
                f.write(f"{n};{DOMAIN};[authentication username={n} password={password(n)}]\n")
        return path

    def __enter__(self) -> Switch:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- SIPp --------------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]  # last row of the -stf statistics file
    wall: float
    stderr: str

    def num(self, key: str) -> float:
        v = self.stats.get(key, "0") or "0"
        try:
            return float(v)
        except ValueError:
            return 0.0


class Sipp:
    """One SIPp process in the background (-bg is not used: we keep its PID)."""

    def __init__(
        self,
        scenario: str,
        remote: str | None,
        *,
        port: int,
        workdir: Path,
        args: Sequence[str] = (),
        name: str = "sipp",
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.stf = workdir / f"{name}.csv"
        self.err = workdir / f"{name}.err"
        cmd = ["sipp"]
        if remote:
            cmd.append(remote)
        cmd += [
            "-sf",
            str(SIPP_DIR / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stf),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(workdir / f"{name}.errors.log"),
            *args,
        ]
        self.cmd = cmd
        audio = workdir / "bench_ulaw.raw"  # rtp_stream files are relative to the cwd
        if not audio.exists():
            shutil.copy(SIPP_DIR / "bench_ulaw.raw", audio)
        self.t0 = time.monotonic()
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> SippResult:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.result()

    def stop(self) -> None:
        """SIGUSR1 makes SIPp stop cleanly; SIGKILL by PID if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGUSR1)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def result(self) -> SippResult:
        wall = time.monotonic() - self.t0
        return SippResult(
            self.proc.returncode if self.proc.returncode is not None else -1,
            read_stf(self.stf),
            wall,
            self.err.read_text(errors="replace"),
        )

    def errors(self, lines: int = 5) -> list[str]:
        path = self.workdir / f"{self.name}.errors.log"
        if not path.exists():
            return []
        out = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return out[-lines:]


def read_stf(path: Path) -> dict[str, str]:
    """The last row of a SIPp -stf file (cumulative columns end in (C))."""
    if not path.exists():
        return {}
    with open(path, newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def rate_args(users: Path, rate: int, total: int) -> list[str]:
    """SIPp options for `total` calls (or registrations) at `rate` per second, each taking
    its line of the injection file `users`."""
    return ["-inf", str(users), "-r", str(rate), "-m", str(total)]


def register(
    switch: Switch, numbers: Sequence[str], port: int, workdir: Path, name: str = "register"
) -> SippResult:
    """Register `numbers` from 127.0.0.1:port (SIPp, digest auth); the switch then sends
    INVITEs for them to that port (it routes to the REGISTER's source address)."""
    csv_path = switch.users_csv(workdir / f"{name}-users.csv", numbers)
    run = Sipp(
        "register_auth.xml",
        f"127.0.0.1:{switch.port}",
        port=port,
        workdir=workdir,
        name=name,
        args=[*rate_args(csv_path, 200, len(numbers)), "-timeout", "20s"],
    )
    res = run.wait(30)
    if res.returncode != 0:
        raise RuntimeError(
            f"registering {len(numbers)} extension(s) failed: {res.stderr[-500:]} {run.errors()}"
        )
    return res


# -- output ------------------------------------------------------------------------------
def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for i, r in enumerate(cells):
        out.append(" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            out.append(line)
    return "\n".join(out)


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 or v == 0 else f"{v:.2f}"
    return str(v)


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    """A temp dir kept when BENCH_KEEP=1 (its path is printed) for logs and SIPp traces."""
    path = Path(tempfile.mkdtemp(prefix=f"softswitch-bench-{name}-"))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def udp_rcvbuf_errors() -> int:
    """Host-wide count of UDP datagrams dropped because a socket buffer was full."""
    with open("/proc/net/snmp") as f:
        rows = [ln.split() for ln in f if ln.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:], strict=True))["RcvbufErrors"])
