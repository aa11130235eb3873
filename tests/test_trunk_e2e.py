"""Trunks end to end: SIPp plays the providers (registrar, callee, a failing trunk, a
caller), pjsua2 test phones play the extensions and the provider's own phone. Everything
on 127.0.0.1 with free ports; every wait is bounded.

- registration: the switch registers with the provider, answers its 401 and refreshes
  before the short time the provider granted runs out;
- inbound: a call from the trunk's address to a DID runs the block that DID names (heard
  by its tone); the caller's number is converted to E.164; the same DID called from an
  unknown source is challenged; an unknown DID gets 404; an anonymous trunk's number is
  reachable from anywhere;
- outbound: the provider gets the number as the route rewrote it and the route's caller
  ID in its format, after challenging the INVITE; an international number is refused
  (403) for an extension without that class and never reaches the provider; a trunk
  answering 503 makes the switch try the next one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.audio import dominant_frequency, make_tone
from tests.support.phone import Phone, PhoneError, wait_until
from tests.switch import EXTENSIONS, RunningSwitch, free_port
from tests.test_sipp_e2e import Sipp

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")

SALES, SUPPORT = 600.0, 1200.0
MAIN_USER, MAIN_PASSWORD = "74950001122", "main-Provider-pw1"
SECOND_USER, SECOND_PASSWORD = "second-acct", "second-Provider-pw2"


@dataclass
class World:
    switch: RunningSwitch
    trunk_phone: Phone  # the provider's phone: its source is the trunk's allowed address
    stranger: Phone  # a phone nobody knows
    ports: dict[str, int]
    tmp: Path


def trunk_config(ports: dict[str, int], tones: dict[str, str]) -> str:
    return f"""
[block.sales]
type = "play"
prompt = "{tones["sales"]}"

[block.support]
type = "play"
prompt = "{tones["support"]}"

[[trunk]]
name = "office-line"
allow = ["127.0.0.1:{ports["trunk_phone"]}", "127.0.0.1:{ports["sipp_caller"]}"]
numbers = {{ "+74951234567" = "sales", "+74951234568" = "support" }}
caller_id_format = "national"
country_code = "7"
national_prefix = "8"

[[trunk]]
name = "web"
anonymous = true
numbers = {{ "sales" = "sales" }}

[[trunk]]
name = "main"
host = "127.0.0.1"
port = {ports["main"]}
username = "{MAIN_USER}"
password = "{MAIN_PASSWORD}"
caller_id_format = "international"

[[trunk]]
name = "first"
host = "127.0.0.1"
port = {ports["first"]}
response_timeout = 3

[[trunk]]
name = "second"
host = "127.0.0.1"
port = {ports["second"]}
username = "{SECOND_USER}"
password = "{SECOND_PASSWORD}"
codecs = ["PCMA", "PCMU"]

[[route]]
name = "city"
prefixes = ["8495"]
strip = 1
prepend = "7"
trunks = ["main"]
class = "local"
caller_id = "+74951230000"

[[route]]
name = "world"
prefixes = ["810"]
strip = 3
prepend = "+"
trunks = ["main"]
class = "international"

[[route]]
name = "long-distance"
pattern = "8[0-9]{{10}}"
strip = 1
prepend = "7"
trunks = ["first", "second"]
class = "national"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("trunks")
    tones = {
        "sales": make_tone(str(tmp / "sales.wav"), SALES, 3.0),
        "support": make_tone(str(tmp / "support.wav"), SUPPORT, 3.0),
    }
    trunk_phone, stranger = Phone(user=None), Phone(user=None)
    ports = {
        "trunk_phone": trunk_phone.sip_port,
        "sipp_caller": free_port(),
        "main": free_port(),
        "first": free_port(),
        "second": free_port(),
    }
    switch = None
    try:
        switch = RunningSwitch(tmp, trunk_config(ports, tones))
        yield World(switch, trunk_phone, stranger, ports, tmp)
    finally:
        if switch is not None:
            switch.stop()
        trunk_phone.close()
        stranger.close()


@pytest.fixture
def extension(world: World) -> Iterator:
    made: list[Phone] = []

    def make(number: str) -> Phone:
        p = Phone(user=number, password=EXTENSIONS[number][1], server=world.switch.server)
        made.append(p)
        assert p.register() == 200
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def sipp(world: World, tmp_path: Path) -> Iterator[Sipp]:
    s = Sipp(world.switch, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


def calls_to(switch: RunningSwitch, callee: str, count: int = 1) -> list[dict]:
    """Closed call records whose callee is `callee` (waits for `count` of them)."""
    found: list[dict] = []

    def closed() -> bool:
        found[:] = [c for c in switch.calls() if c["callee"] == callee and c["ended"]]
        return len(found) >= count

    wait_until(closed, 15)
    return found


def record_heard(phone: Phone, call: str, path: Path, seconds: float = 1.5) -> float:
    phone.wait_state(call, "confirmed", timeout=15)
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return dominant_frequency(str(path))


# ---------------------------------------------------------------------------------------
# calls from providers


def test_did_from_trunk_reaches_its_block(world: World) -> None:
    sw, phone = world.switch, world.trunk_phone
    # digits only in the request URI still find "+74951234568"
    call = phone.call(f"sip:74951234568@127.0.0.1:{sw.port}")
    heard = record_heard(phone, call, world.tmp / "support-heard.wav")
    assert abs(heard - SUPPORT) < 20, heard
    phone.hangup(call)
    (record,) = calls_to(sw, "+74951234568")
    assert record["kind"] == "inbound"


def test_provider_caller_number_in_e164_and_no_challenge(world: World, sipp: Sipp) -> None:
    run = sipp.run(
        "provider-caller",
        "provider_caller.xml",
        world.ports["sipp_caller"],
        keys={"did": "+74951234567", "caller": "84950001122"},
    )
    assert "407" not in run.messages().split("SIP/2.0 200")[0], run.report()
    (record,) = calls_to(world.switch, "+74951234567")
    assert (record["kind"], record["caller"]) == ("inbound", "+74950001122")


def test_did_from_unknown_source_is_challenged_unknown_did_404(world: World) -> None:
    sw = world.switch
    call = world.stranger.call(f"sip:+74951234567@127.0.0.1:{sw.port}")
    with pytest.raises(PhoneError):
        world.stranger.wait_state(call, "confirmed", timeout=10)
    assert world.stranger.last_code(call) == 407  # challenged like any caller
    call = world.trunk_phone.call(f"sip:+70000000000@127.0.0.1:{sw.port}")
    with pytest.raises(PhoneError):
        world.trunk_phone.wait_state(call, "confirmed", timeout=10)
    assert world.trunk_phone.last_code(call) == 404


def test_anonymous_number_reachable_from_anywhere(world: World) -> None:
    call = world.stranger.call(f"sip:sales@127.0.0.1:{world.switch.port}")
    heard = record_heard(world.stranger, call, world.tmp / "anon-heard.wav")
    assert abs(heard - SALES) < 20, heard
    world.stranger.hangup(call)


# ---------------------------------------------------------------------------------------
# outside calls


def test_outbound_number_format_caller_id_and_refused_international(
    world: World, sipp: Sipp, extension
) -> None:
    port = world.ports["main"]
    provider = sipp.start(
        "provider", "provider_uas.xml", port, keys={"user": MAIN_USER, "password": MAIN_PASSWORD}
    )
    a = extension("101")
    # 101 has the default classes (internal, local, national): no international calls
    refused = a.call("81049301234567")
    with pytest.raises(PhoneError):
        a.wait_state(refused, "confirmed", timeout=10)
    assert a.last_code(refused) == 403

    call = a.call("84951234567")
    a.wait_state(call, "confirmed", timeout=20)
    a.hangup(call)
    assert provider.wait() == 0, provider.report()
    # strip 1, prepend 7: the provider got 74951234567 at its own host; only this call
    # reached it (the refused one never did)
    assert provider.log_values("FIRST-RURI=") == [f"sip:74951234567@127.0.0.1:{port}"]
    assert provider.log_values("RURI=") == [f"sip:74951234567@127.0.0.1:{port}"]
    assert provider.log_values("AUTH=") == ["true"], provider.report()
    assert provider.log_values("DIGEST-URI=") == provider.log_values("RURI=")
    # the route's caller ID, in the trunk's international format
    (from_,) = provider.log_values("INVITE-From:")
    assert from_.startswith("<sip:74951230000@127.0.0.1>;tag="), from_
    (to,) = provider.log_values("INVITE-To:")
    assert "sip:74951234567@127.0.0.1" in to

    (placed,) = calls_to(world.switch, "84951234567")
    assert (placed["kind"], placed["caller"], placed["result"]) == ("outbound", "101", "answered")
    parties = [(leg["party"], leg["result"]) for leg in world.switch.legs(placed["id"])]
    assert ("trunk:main:74951234567", "answered") in parties
    assert "route world: 101 may not call 81049301234567" in world.switch.log_text()


def test_failover_to_second_trunk_on_503(world: World, sipp: Sipp, extension) -> None:
    first = sipp.start("first", "provider_503.xml", world.ports["first"])
    second = sipp.start(
        "second",
        "provider_uas.xml",
        world.ports["second"],
        keys={"user": SECOND_USER, "password": SECOND_PASSWORD},
    )
    a = extension("102")
    call = a.call("89161234567")
    a.wait_state(call, "confirmed", timeout=25)
    a.hangup(call)
    assert first.wait() == 0, first.report()
    assert second.wait() == 0, second.report()
    assert first.log_values("RURI=") == [f"sip:79161234567@127.0.0.1:{world.ports['first']}"]
    assert second.log_values("RURI=") == [f"sip:79161234567@127.0.0.1:{world.ports['second']}"]
    assert second.log_values("AUTH=") == ["true"], second.report()  # its own credentials
    # codecs = ["PCMA", "PCMU"]: offered to "second" in that order and nothing else
    offers = re.findall(r"^m=audio \d+ RTP/AVP ([0-9 ]+)$", second.messages(), re.M)
    assert offers and offers[0].split()[:2] == ["8", "0"], offers
    assert not set(offers[0].split()[2:]) & {"3", "9", "0", "8"}, offers  # no GSM, G722
    (record,) = calls_to(world.switch, "89161234567")
    assert record["result"] == "answered"
    legs = {leg["party"]: leg for leg in world.switch.legs(record["id"])}
    assert legs["trunk:first:79161234567"]["sip_code"] == 503
    assert legs["trunk:first:79161234567"]["result"] == "failed"
    assert legs["trunk:second:79161234567"]["result"] == "answered"


def test_unrouted_number_is_404(world: World, extension) -> None:
    a = extension("103")
    call = a.call("5551234")
    with pytest.raises(PhoneError):
        a.wait_state(call, "confirmed", timeout=10)
    assert a.last_code(call) == 404


# ---------------------------------------------------------------------------------------
# registration


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registration_with_challenge_and_refresh(tmp_path: Path, transport: str) -> None:
    port = free_port()
    extra = f"""
[[trunk]]
name = "provider"
host = "127.0.0.1"
port = {port}
transport = "{transport}"
username = "{MAIN_USER}"
password = "{MAIN_PASSWORD}"
register = true
expires = 120
"""
    registrar_dir = tmp_path / "registrar"
    registrar_dir.mkdir()
    cmd = [
        shutil.which("sipp") or "sipp",
        "-sf",
        str(Path(__file__).parent / "sipp" / "provider_registrar.xml"),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-key",
        "user",
        MAIN_USER,
        "-key",
        "password",
        MAIN_PASSWORD,
        "-key",
        "expires",
        "3",
        "-t",
        "u1" if transport == "udp" else "t1",
        "-nostdin",
        "-timeout",
        "90s",
        "-timeout_error",
        "-trace_logs",
        "-log_file",
        str(registrar_dir / "registrar.log"),
        "-trace_msg",
        "-message_file",
        str(registrar_dir / "registrar-messages.log"),
    ]
    out = open(registrar_dir / "registrar.out", "wb")  # noqa: SIM115 - closed below
    registrar = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    switch = None
    try:
        switch = RunningSwitch(tmp_path, extra)
        try:
            rc = registrar.wait(100)
        except subprocess.TimeoutExpired:
            registrar.kill()
            rc = registrar.wait(5)
        log = (registrar_dir / "registrar.log").read_text(errors="replace")
        assert rc == 0, log + switch.log_text()[-3000:]
        lines = [line for line in log.splitlines() if line.startswith("REG")]
        values = dict(line.split("=", 1) for line in lines if "=" in line)
        assert values["REG1-AUTH"] == f"true USER={MAIN_USER}"
        assert values["REG2-AUTH"] == "true"
        call_ids = [line.split(":", 1)[1].strip() for line in lines if "Call-ID:" in line]
        assert len(call_ids) == 2 and call_ids[0] == call_ids[1]  # a refresh, not a new one
        cseqs = [int(line.split(":", 1)[1].split()[0]) for line in lines if "CSeq:" in line]
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs), cseqs
        contact = next(line for line in lines if line.startswith("REG1-Contact:"))
        params = "" if transport == "udp" else ";transport=tcp"
        assert f"<sip:{MAIN_USER}@127.0.0.1:{switch.port}{params}>" in contact

        status_file = switch.data_dir / "trunks.json"
        assert wait_until(
            lambda: json.loads(status_file.read_text())["trunks"][0]["state"] == "registered", 20
        )
        assert "trunk provider: registered" in switch.log_text()
        out_text = subprocess.run(
            [sys.executable, "-m", "softswitch", "status", "--config", str(switch.config)],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "provider" in out_text and "registered" in out_text, out_text
    finally:
        if registrar.poll() is None:
            registrar.kill()
            registrar.wait(5)
        out.close()
        if switch is not None:
            switch.stop()
