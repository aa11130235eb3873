"""Debian's SIPVicious tools (package `sipvicious`: svmap, svwar, svcrack) against a real
switch, while pjsua2 test phones on 127.0.0.1 register and call each other.

The tools run as shipped. One shim: SIPVicious 0.3.3 accepts `-b BINDINGIP` but never
passes it on, so its sockets would bind to every interface and send from 127.0.0.1, the
phones' address. The tool is therefore started by a few lines of Python that make a
bind to "" (all interfaces) bind to the attacker's loopback address instead, then run
the tool's own script; `-x` puts that address in its Via.

Each run is bounded by the tool's --maximumtime (where it has one) and by a timeout on
its PID, after which it is killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch
from tests.test_defence_e2e import bindable

TOOLS = {name: shutil.which(name) for name in ("svmap", "svwar", "svcrack")}
pytestmark = pytest.mark.skipif(
    None in TOOLS.values(), reason="sipvicious (svmap, svwar, svcrack) is not installed"
)

SHIM = """
import os, runpy, shutil, socket, sys
host, tool = sys.argv[1], sys.argv[2]
_bind = socket.socket.bind
def bind(self, addr):
    if isinstance(addr, tuple) and addr and addr[0] in ("", "0.0.0.0"):
        addr = (host, *addr[1:])
    return _bind(self, addr)
socket.socket.bind = bind
path = os.path.realpath(shutil.which(tool))
sys.path.insert(0, os.path.dirname(path))
sys.argv = [tool, *sys.argv[3:]]
runpy.run_path(path, run_name="__main__")
"""


def interpreter(tool: str) -> str:
    """The Python the tool's script is written for (its #! line)."""
    first = Path(os.path.realpath(TOOLS[tool] or "")).read_text().splitlines()[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else sys.executable


class Tool:
    """One SIPVicious run from `host` against `sw`."""

    def __init__(self, sw: RunningSwitch, host: str, tool: str, *args: str) -> None:
        self.tool = tool
        self.cmd = [interpreter(tool), "-c", SHIM, bindable(host), tool, *args]
        if tool != "svmap":
            self.cmd[5:5] = ["-x", host]  # the address its Via names
        self.cmd += ["-p", str(sw.port), "127.0.0.1"]
        self.proc = subprocess.Popen(
            self.cmd, cwd=sw.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait(self, timeout: float = 60.0) -> str:
        """Its stdout and stderr together, once it ended (killed after `timeout`)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by PID: only this tool
            out, err = self.proc.communicate()
            pytest.fail(f"{self.tool} did not finish in {timeout}s:\n{out}\n{err}")
        return out + err


def run(sw: RunningSwitch, host: str, tool: str, *args: str) -> str:
    return Tool(sw, host, tool, *args).wait()


@pytest.fixture
def sw(tmp_path: Path) -> Iterator[RunningSwitch]:
    s = RunningSwitch(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def sw_no_ua_filter(tmp_path: Path) -> Iterator[RunningSwitch]:
    """Scanner User-Agents not dropped, so the other defences meet the tools (which all
    say "friendly-scanner"); otherwise the defaults (ban after 5 failures)."""
    s = RunningSwitch(tmp_path, extra="\n[security]\ndrop_user_agents = []\n")
    try:
        yield s
    finally:
        s.stop()


def test_default_config_scanners_find_nothing(sw):
    """With the default scanner list the tools get no answer at all."""
    out = run(sw, "127.0.0.2", "svmap")
    assert "found nothing" in out and "softswitch" not in out, out
    out = run(sw, "127.0.0.2", "svwar", "-e100-110", "--force", "--maximumtime", "3")
    assert "found nothing" in out and "exists" not in out, out
    log = sw.log_text()
    assert "scanner 127.0.0.2 (User-Agent 'friendly-scanner')" in log, log
    assert log.count("scanner 127.0.0.2 ") == 1  # logged once, not per packet


def test_svwar_finds_no_extension(sw_no_ua_filter):
    """Answered, but alike for every extension: svwar's REGISTER and INVITE scans
    (with --force past its own sanity check) report none of 101-106."""
    sw = sw_no_ua_filter
    out = run(sw, "127.0.0.2", "svmap")
    assert "softswitch" in out, out  # the tool works: it sees the switch
    out = run(sw, "127.0.0.3", "svwar", "-e100-120")
    assert "found nothing" in out, out
    assert "authentication request for an unknown extension" in out, out
    for method in ("REGISTER", "INVITE"):
        out = run(sw, "127.0.0.3", "svwar", "-e100-120", "--force", "-m", method,
                  "--maximumtime", "3")  # fmt: skip
        assert "found nothing" in out, (method, out)
        assert not any(f"'{n}' exists" in out for n in EXTENSIONS), (method, out)
    assert "banned" not in sw.log_text()  # no credentials were tried: nothing to ban


def test_svcrack_is_banned_and_phones_keep_calling(sw_no_ua_filter):
    """svcrack guesses 101's password from 127.0.0.4 with a dictionary whose 10th word
    is the right one: the 5th wrong guess bans it, so it never gets there. Meanwhile
    svwar scans from 127.0.0.5, and 101 and 102 on 127.0.0.1 register and call."""
    sw = sw_no_ua_filter
    words = [f"guess{i}" for i in range(9)] + [EXTENSIONS["101"][1]]
    dictionary = sw.tmp / "passwords.txt"
    dictionary.write_text("\n".join(words) + "\n")
    started = time.monotonic()
    crack = Tool(sw, "127.0.0.4", "svcrack", "-u", "101", "-d", str(dictionary),
                 "--maximumtime", "3")  # fmt: skip
    war = Tool(sw, "127.0.0.5", "svwar", "-e100-199", "--force", "--maximumtime", "3")
    with (
        Phone(user="101", password=EXTENSIONS["101"][1], server=sw.server) as a,
        Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server) as b,
    ):
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        call = a.call("102")
        a.wait_state(call, "confirmed")
        incoming = b.wait_incoming()
        b.wait_state(incoming, "confirmed")
        still_attacking = crack.proc.poll() is None
        a.hangup(call)
        b.wait_state(incoming, "disconnected")
        out_war = war.wait()
        out_crack = crack.wait()
        assert a.register() == 200  # and after the attack too
    assert still_attacking, "svcrack ended before the call was up"
    assert "found nothing" in out_crack and EXTENSIONS["101"][1] not in out_crack, out_crack
    assert "found nothing" in out_war, out_war
    log = sw.log_text()
    assert "banned 127.0.0.4 for 600 s: 5 failed digest attempts" in log, log
    assert log.count("banned 127.0.0.4 ") == 1
    assert "banned 127.0.0.1" not in log and "banned 127.0.0.5" not in log
    failures = [line for line in log.splitlines() if "auth failure from udp:127.0.0.4" in line]
    assert len(failures) == 5, failures  # nothing reached the registrar after the ban
    (record,) = sw.wait_for_call_closed(1)
    assert (record["caller"], record["callee"], record["result"]) == ("101", "102", "answered")
    assert time.monotonic() - started < 60
