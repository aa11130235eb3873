"""BLF through a real switch, with SIPp as the BLF key (tests/sipp/presence_*.xml) and
pjsua2 test phones making the calls: the NOTIFY sequence of an extension that rings,
talks and hangs up, the queue log-in key, and what is refused.

The SIPp watcher logs a "GOT ..." line after answering each NOTIFY; the test waits for
those lines (bounded) before the next step, so every state change is seen on its own.
The NOTIFY bodies are read back from SIPp's message trace and parsed as dialog-info XML.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from softswitch.sip.dialog_info import Document, parse
from tests.support.e2e import registered
from tests.switch import free_port
from tests.test_queue_e2e import logged_in, start
from tests.test_sipp_e2e import (
    DOMAIN,
    SIPP,
    Sipp,
    SippRun,
    auth_field,
    write_csv,
)

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (sip-tester) is not installed")

SEPARATOR = "-----------------------------------------------"


@pytest.fixture
def sipp(switch, tmp_path: Path):
    s = Sipp(switch, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


def wait_logged(run: SippRun, prefix: str, count: int, timeout: float = 15.0) -> list[str]:
    """Wait until SIPp's log has `count` lines starting with `prefix` (or fail with its
    report when it ends or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = run.log_values(prefix)
        if len(lines) >= count:
            return lines
        if run.proc.poll() is not None or time.monotonic() > deadline:
            run.stop()
            pytest.fail(f"SIPp logged {len(lines)} {prefix!r} lines, not {count}\n{run.report()}")
        time.sleep(0.05)


def received_notifies(run: SippRun) -> list[tuple[dict[str, str], Document]]:
    """Every NOTIFY SIPp received, in order, retransmissions left out: (headers, body)."""
    out: list[tuple[dict[str, str], Document]] = []
    seen: set[str] = set()
    for block in run.messages().split(SEPARATOR):
        head, _, message = block.partition("\n\n")
        if "message received" not in head:
            continue
        message = message.lstrip("\n").replace("\r\n", "\n")
        if not message.startswith("NOTIFY "):
            continue
        lines, _, body = message.partition("\n\n")
        headers: dict[str, str] = {}
        for line in lines.split("\n")[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if headers["cseq"] in seen:
            continue
        seen.add(headers["cseq"])
        out.append((headers, parse(body.strip().encode())))
    return out


def watch(sipp: Sipp, tmp_path: Path, subscriber: str, resource: str, transport: str = "udp"):
    csv = write_csv(
        tmp_path / f"watch-{subscriber}.csv",
        [[subscriber, DOMAIN, auth_field(subscriber), resource]],
    )
    return sipp.start(
        "watcher",
        "presence_blf_watcher.xml",
        free_port(),
        transport=transport,
        inf=csv,
        timeout=90,
    )


def finish(run: SippRun) -> None:
    rc = run.wait(60)
    assert rc == 0, f"the watcher exited {rc}\n{run.report()}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_blf_key_sees_an_extension_ring_talk_hang_up(switch, sipp, phone, tmp_path, transport):
    caller, callee = phone("101"), phone("102")
    watcher = watch(sipp, tmp_path, "103", "102", transport)
    (subscribed,) = wait_logged(watcher, "SUBSCRIBED", 1)
    assert subscribed.startswith("expires=600 contact=sip:102@127.0.0.1:"), subscribed
    wait_logged(watcher, "GOT", 1)  # idle
    call = caller.call("102")
    incoming = callee.wait_incoming()
    wait_logged(watcher, "GOT", 2)  # 102 rings
    callee.answer(incoming)
    caller.wait_state(call, "confirmed")
    wait_logged(watcher, "GOT", 3)  # 102 talks
    caller.hangup(call)
    callee.wait_state(incoming, "disconnected")
    finish(watcher)  # 102 is idle again; the watcher unsubscribes

    notifies = received_notifies(watcher)
    assert len(notifies) == 5, watcher.report()
    docs = [d for _, d in notifies]
    assert [d.version for d in docs] == [0, 1, 2, 3, 4]
    assert {d.entity for d in docs} == {f"sip:102@{DOMAIN}"}
    assert {d.state for d in docs} == {"full"}
    assert [[x.state for x in d.dialogs] for d in docs] == [
        [],  # idle
        ["early"],
        ["confirmed"],
        ["terminated"],
        [],  # the unsubscribe's last word: idle
    ]
    ringing, talking, ended = (d.dialogs[0] for d in docs[1:4])
    assert ringing.direction == talking.direction == "recipient"
    assert ringing.id == talking.id == ended.id
    assert ringing.remote == f"sip:101@{DOMAIN}" and ringing.remote_display == "Alice"
    states = [h["subscription-state"] for h, _ in notifies]
    assert all(s.startswith("active;expires=") for s in states[:4]), states
    assert states[4] == "terminated;reason=timeout"
    for headers, _ in notifies:
        assert headers["event"] == "dialog"
        assert headers["content-type"] == "application/dialog-info+xml"
        assert headers["via"].startswith(f"SIP/2.0/{transport.upper()} 127.0.0.1:{switch.port}")
    assert [int(h["cseq"].split()[0]) for h, _ in notifies] == [1, 2, 3, 4, 5]
    got = watcher.log_values("GOT")
    assert got[-1] == "Subscription-State: terminated;reason=timeout", got


def test_the_login_key_follows_the_operators_queue_login(tmp_path, made):
    sw = start(tmp_path, ["101"])
    sipp = Sipp(sw, tmp_path)
    try:
        op = registered(sw, "101", made)
        assert wait_until_logged_in(sw, "101", True)
        watcher = watch(sipp, tmp_path, "101", "*45")
        (subscribed,) = wait_logged(watcher, "SUBSCRIBED", 1)
        assert "contact=sip:*45@127.0.0.1:" in subscribed, subscribed
        wait_logged(watcher, "GOT", 1)  # logged in
        for count, now_in in ((2, False), (3, True), (4, False)):
            dial = op.call("*45")  # the key's own code toggles the log-in
            op.wait_state(dial, "disconnected", timeout=20)
            assert wait_until_logged_in(sw, "101", now_in)
            wait_logged(watcher, "GOT", count)
        finish(watcher)
    finally:
        sipp.stop_all()
        sw.stop()
    docs = [d for _, d in received_notifies(watcher)]
    assert {d.entity for d in docs} == {f"sip:*45@{DOMAIN}"}
    assert [[x.state for x in d.dialogs] for d in docs] == [
        ["confirmed"],
        ["terminated"],
        ["confirmed"],
        ["terminated"],
        ["terminated"],  # the unsubscribe's last word: still logged out
    ]
    assert [d.version for d in docs] == [0, 1, 2, 3, 4]


def wait_until_logged_in(sw, agent: str, wanted: bool, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if logged_in(sw, agent) == wanted:
            return True
        time.sleep(0.05)
    return logged_in(sw, agent) == wanted


def test_unauthenticated_and_unknown_subscriptions_get_nothing(switch, sipp, tmp_path):
    csv = write_csv(tmp_path / "refused.csv", [["103", DOMAIN, auth_field("103"), "999"]])
    run = sipp.run("refused", "presence_refused.xml", free_port(), inf=csv)
    assert run.log_values("CHALLENGED") == [""] and run.log_values("NOT FOUND") == [""]
    assert received_notifies(run) == []
