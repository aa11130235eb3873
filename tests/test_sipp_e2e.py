"""SIPp against the real switch: exact message-level checks of registration, of a call
relayed between two SIPp phones, and of the NAT fix (reach a phone at the address its
packets come from, whatever its Contact claims).

Scenarios live in tests/sipp/ (each has a header comment with its command line). Every
SIPp run here is bounded twice: by SIPp's own -timeout and by a wait on its PID, after
which it is killed. Ports are chosen free at run time; everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.switch import EXTENSIONS, RunningSwitch, free_port

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sipp"
DOMAIN = "softswitch.test"

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (sip-tester) is not installed")


def free_udp_block(size: int = 4) -> int:
    """A base port with `size` consecutive free UDP ports (SIPp binds its media ports
    at -mp, -mp+2, ...; the default 6000 would collide between parallel tests)."""
    for _ in range(100):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for offset in range(size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free UDP ports")


def auth_field(number: str) -> str:
    return f"[authentication username={number} password={EXTENSIONS[number][1]}]"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(";".join(r) + "\n" for r in rows))
    return path


@dataclass
class SippRun:
    name: str
    proc: subprocess.Popen
    dir: Path
    cmd: list[str]

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def messages_file(self) -> Path:
        return self.dir / f"{self.name}-messages.log"

    def wait(self, timeout: float = 45.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"sipp {self.name} did not finish in {timeout}s\n{self.report()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by PID: only this SIPp
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_values(self, prefix: str) -> list[str]:
        """Values of the scenario's `<log message="PREFIX...">` lines."""
        return [
            line[len(prefix) :].strip()
            for line in self.logs().splitlines()
            if line.startswith(prefix)
        ]

    def messages(self) -> str:
        path = self.messages_file
        return path.read_text(errors="replace") if path.exists() else ""

    def report(self) -> str:
        parts = [" ".join(self.cmd)]
        for suffix in ("-errors.log", ".log", "-messages.log", ".out"):
            path = self.dir / f"{self.name}{suffix}"
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)


class Sipp:
    """Starts SIPp instances against one switch; stops whatever is still running."""

    def __init__(self, switch: RunningSwitch, tmp: Path) -> None:
        self.switch = switch
        self.tmp = tmp
        self.runs: list[SippRun] = []

    def start(
        self,
        name: str,
        scenario: str,
        port: int,
        *,
        transport: str = "udp",
        inf: Path | None = None,
        calls: int = 1,
        keys: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
        timeout: int = 30,
    ) -> SippRun:
        host, sport = self.switch.server
        cmd = [
            SIPP,
            f"{host}:{sport}",
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-mp",
            str(free_udp_block()),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            f"{timeout}s",
            "-timeout_error",
            "-recv_timeout",
            "15000",
            "-trace_msg",
            "-message_file",
            str(self.tmp / f"{name}-messages.log"),
            "-trace_err",
            "-error_file",
            str(self.tmp / f"{name}-errors.log"),
            "-trace_logs",
            "-log_file",
            str(self.tmp / f"{name}.log"),
        ]
        if transport == "tcp":
            cmd += ["-t", "t1"]
        if inf is not None:
            cmd += ["-inf", str(inf)]
        for key, value in (keys or {}).items():
            cmd += ["-key", key, value]
        cmd += list(extra)
        out = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115 - closed by the process end
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp
            )
        finally:
            out.close()
        run = SippRun(name, proc, self.tmp, [str(c) for c in cmd])
        self.runs.append(run)
        return run

    def run(self, name: str, scenario: str, port: int, **kw) -> SippRun:
        """Start and wait; fails the test unless SIPp exits 0."""
        run = self.start(name, scenario, port, **kw)
        rc = run.wait()
        assert rc == 0, f"sipp {name} exited {rc}\n{run.report()}"
        return run

    def stop_all(self) -> None:
        for run in self.runs:
            with contextlib.suppress(Exception):
                run.stop()


@pytest.fixture
def sipp(switch: RunningSwitch, tmp_path: Path):
    s = Sipp(switch, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


def bindings(switch: RunningSwitch) -> list[dict]:
    with switch.db() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM bindings ORDER BY aor")]


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def received(messages: str, first_line: str) -> int:
    """How many messages starting with `first_line` SIPp logged as received."""
    count = 0
    blocks = messages.split("-----------------------------------------------")
    for block in blocks:
        head, _, body = block.partition("\n\n")
        if "message received" in head and body.lstrip("\n").startswith(first_line):
            count += 1
    return count


# ---------------------------------------------------------------------------------------
# (a) REGISTER with digest: 401 then 200, several users, then unregister


USERS = ["101", "102", "103", "104"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_auth_scenario_then_unregister(switch, sipp, tmp_path, transport):
    port = free_port()
    reg = sipp.run(
        "register",
        "register_auth.xml",
        port,
        transport=transport,
        inf=SCENARIOS / "users.csv",
        calls=len(USERS),
        extra=("-r", "10"),
    )
    msgs = reg.messages()
    # every user was challenged once and then accepted (UDP may log a retransmission)
    assert received(msgs, "SIP/2.0 401") >= len(USERS), reg.report()
    assert received(msgs, "SIP/2.0 200") >= len(USERS), reg.report()
    assert "WWW-Authenticate: Digest" in msgs

    hostport = f"127.0.0.1:{port}"
    contact = "sip:{}@" + f"{hostport};transport={transport.upper()}"
    if transport == "udp":
        rows = bindings(switch)
        assert sorted(r["aor"] for r in rows) == USERS
        for r in rows:
            assert r["contact"] == contact.format(r["aor"])
            assert (r["transport"], r["source_host"], r["source_port"]) == (
                "udp",
                "127.0.0.1",
                port,
            )
        # unregister: the same Contact with Expires 0, from the same place
        csv = write_csv(
            tmp_path / "unreg.csv", [[u, DOMAIN, auth_field(u), hostport, "0"] for u in USERS]
        )
        unreg = sipp.run("unregister", "register_as.xml", port, inf=csv, calls=len(USERS))
        assert unreg.log_values("REGISTER ") and all(
            v.endswith("200 Contact=") for v in unreg.log_values("REGISTER ")
        ), unreg.report()
        assert bindings(switch) == []
    else:
        # A TCP phone is reached only over its own connection: when SIPp exits and the
        # connection closes, its bindings go at once (RFC 5626 spirit).
        assert wait_until(lambda: bindings(switch) == []), bindings(switch)
        # register and unregister over one connection: 4 REGISTERs, then 4 with Expires 0
        rows = [[u, DOMAIN, auth_field(u), hostport, "3600"] for u in USERS]
        rows += [[u, DOMAIN, auth_field(u), hostport, "0"] for u in USERS]
        csv = write_csv(tmp_path / "reg-unreg.csv", rows)
        both = sipp.run(
            "reg-unreg",
            "register_as.xml",
            port,
            transport="tcp",
            inf=csv,
            calls=len(rows),
            extra=("-l", "1", "-r", "20"),
        )
        values = both.log_values("REGISTER ")
        assert len(values) == 2 * len(USERS), both.report()
        for user, line in zip(USERS, values[: len(USERS)], strict=True):
            assert "expires=3600: 200 Contact=" in line
            assert f"<{contact.format(user)}>;expires=" in line, line
        for line in values[len(USERS) :]:
            assert line.endswith("200 Contact="), line


# ---------------------------------------------------------------------------------------
# (b) a call between two SIPp phones through the switch


def register_phone(
    sipp: Sipp, tmp_path: Path, number: str, port: int, hostport: str, name: str = "callee-register"
) -> SippRun:
    """REGISTER over UDP from 127.0.0.1:port with Contact sip:NUMBER@HOSTPORT."""
    csv = write_csv(
        tmp_path / f"{name}.csv", [[number, DOMAIN, auth_field(number), hostport, "300"]]
    )
    return sipp.run(name, "register_as.xml", port, inf=csv)


def place_call(
    sipp: Sipp, tmp_path: Path, callee_port: int, callee_contact: str, caller_transport: str = "udp"
) -> tuple[SippRun, SippRun]:
    """102 (SIPp UAS, already registered from callee_port) waits; 101 (SIPp UAC) calls."""
    uas = sipp.start("callee", "callee_uas.xml", callee_port, keys={"contact": callee_contact})
    csv = write_csv(tmp_path / "call.csv", [["101", DOMAIN, auth_field("101"), "102"]])
    uac = sipp.start("caller", "caller_uac.xml", free_port(), transport=caller_transport, inf=csv)
    rc_uac = uac.wait()
    rc_uas = uas.wait()
    assert (rc_uac, rc_uas) == (0, 0), (
        f"caller exited {rc_uac}, callee exited {rc_uas}\n{uac.report()}\n{uas.report()}"
    )
    return uac, uas


def header_entries(value: str) -> list[str]:
    """'Via: a, b' -> ['a', 'b'] (SIPp's [last_Header:] joins entries with commas)."""
    _, _, rest = value.partition(":")
    return [e.strip() for e in rest.split(",") if e.strip()]


def branch_of(via: str) -> str:
    return next(p.split("=", 1)[1] for p in via.split(";") if p.startswith("branch="))


@pytest.mark.parametrize("caller_transport", ["udp", "tcp"])
def test_call_between_two_sipp_phones(switch, sipp, tmp_path, caller_transport):
    callee_port = free_port()
    contact = f"sip:102@127.0.0.1:{callee_port};transport=UDP"
    register_phone(sipp, tmp_path, "102", callee_port, f"127.0.0.1:{callee_port}")
    uac, uas = place_call(sipp, tmp_path, callee_port, contact, caller_transport)
    edge = f"127.0.0.1:{switch.port}"

    # the INVITE the callee got: to its Contact, via the switch, record-routed by it
    assert uas.log_values("RURI=") == [contact]
    vias = header_entries(uas.log_values("INVITE-Via")[0])
    assert vias[0].startswith(f"SIP/2.0/UDP {edge};branch=z9hG4bK"), vias
    rrs = header_entries(uas.log_values("INVITE-Record-Route")[0])
    assert rrs[0].startswith(f"<sip:{edge};") and ";lr" in rrs[0] and ";ft=" in rrs[0], rrs
    # caller ID: the authenticated caller's number and name, whatever the UAC's From said
    (from_,) = uas.log_values("INVITE-From")
    assert "<sip:101@" in from_ and "Alice" in from_, from_
    # the ACK for the 2xx is a new transaction through the switch (new branch)
    ack_vias = header_entries(uas.log_values("ACK-Via")[0])
    assert ack_vias[0].startswith(f"SIP/2.0/UDP {edge};branch=z9hG4bK"), ack_vias
    assert branch_of(ack_vias[0]) != branch_of(vias[0])
    # the caller's BYE reached the callee along the route set, at its Contact
    assert uas.log_values("BYE-RURI=") == [contact]

    # what the caller saw: the switch record-routed itself on its side of the call
    caller_rr = header_entries(uac.log_values("200-Record-Route")[0])
    assert all("127.0.0.1:" in r and ";lr" in r for r in caller_rr), caller_rr
    assert any(r.startswith(f"<sip:{edge};") and ";ft=" in r for r in caller_rr), caller_rr
    if caller_transport == "tcp":
        assert any("transport=tcp" in r for r in caller_rr), caller_rr

    (call,) = switch.wait_for_call_closed(1)
    assert (call["caller"], call["callee"], call["result"]) == ("101", "102", "answered")
    assert call["cause"] == "caller hung up"
    assert call["answered"] is not None and call["started"] <= call["answered"] <= call["ended"]


# ---------------------------------------------------------------------------------------
# (c) NAT: the Contact names an address the phone cannot be reached at


def test_call_reaches_phone_at_its_source_address_not_its_contact(switch, sipp, tmp_path):
    # A decoy where the Contact points (127.0.0.2, still loopback): nothing must go there.
    decoy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        decoy.bind(("127.0.0.2", 0))
    except OSError as exc:
        decoy.close()
        pytest.skip(f"cannot bind 127.0.0.2 here: {exc}")
    decoy.setblocking(False)
    with decoy:
        nat_hostport = f"127.0.0.2:{decoy.getsockname()[1]}"
        nat_contact = f"sip:102@{nat_hostport};transport=UDP"
        callee_port = free_port()
        register_phone(sipp, tmp_path, "102", callee_port, nat_hostport)
        (row,) = bindings(switch)
        assert row["contact"] == nat_contact
        assert (row["source_host"], row["source_port"]) == ("127.0.0.1", callee_port)

        uac, uas = place_call(sipp, tmp_path, callee_port, nat_contact)
        # the INVITE and the BYE reached 127.0.0.1:callee_port (SIPp listens only
        # there) and still carry the phone's own Contact as Request-URI
        assert uas.log_values("RURI=") == [nat_contact]
        assert uas.log_values("BYE-RURI=") == [nat_contact]
        with pytest.raises(BlockingIOError):
            decoy.recvfrom(65535)
    (call,) = switch.wait_for_call_closed(1)
    assert call["result"] == "answered"
