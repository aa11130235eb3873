"""The edge's defences against a real switch, from hand-written SIP over raw sockets.

Each attacker binds its own loopback address (127.0.0.2, .4, ...), so a ban or a rate
limit it earns hits only itself; the pjsua2 test phones are on 127.0.0.1 and must keep
working throughout. One switch serves the module, configured with a short ban, a small
per-source connection limit, small message limits and one allow-listed address; the
rest are the defaults (rate 200/s with a burst of 400, the default scanner list).
"""

from __future__ import annotations

import re
import secrets
import socket
import statistics
import time
from collections.abc import Iterator

import pytest

from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch
from tests.test_sip_edge_e2e import DOMAIN, Udp, digest, header, invite, request, status

BAN_SECONDS = 8
TRUSTED = "127.0.0.9"
SECURITY = f"""
[security]
ban_after = 5
ban_window = 60
ban_seconds = {BAN_SECONDS}
allow = ["{TRUSTED}/32"]
max_tcp_connections_per_source = 4
max_message_size = 8000
max_headers = 60
"""
QUIET = 1.5  # seconds of silence that count as "no answer"


@pytest.fixture(scope="module")
def sw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwitch]:
    s = RunningSwitch(tmp_path_factory.mktemp("defence"), extra=SECURITY)
    try:
        yield s
    finally:
        s.stop()


def bindable(host: str) -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot bind {host} here: {exc}")
    return host


def register(port: int, user: str, *, to_user: str | None = None, **headers: str) -> bytes:
    to = to_user or user
    base = {
        "From": f"<sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}",
        "To": f"<sip:{to}@{DOMAIN}>",
        "Contact": f"<sip:{user}@127.0.0.1:{port}>",
        "CSeq": "1 REGISTER",
    }
    base.update(headers)
    return request("REGISTER", f"sip:{DOMAIN}", port=port, headers=base)


def challenge(u: Udp, user: str) -> str:
    resp = u.final(register(u.port, user))
    assert status(resp) == 401, resp
    (value,) = header(resp, "WWW-Authenticate")
    return value


def register_with(u: Udp, user: str, password: str, challenge_value: str) -> str | None:
    """A REGISTER answering `challenge_value`; the final answer or None."""
    auth = digest("REGISTER", f"sip:{DOMAIN}", challenge_value, user, password)
    return u.final(register(u.port, user, Authorization=auth, CSeq="2 REGISTER"), timeout=QUIET)


def options(u: Udp, sw: RunningSwitch, **headers: str) -> str | None:
    return u.final(
        request("OPTIONS", f"sip:127.0.0.1:{sw.port}", port=u.port, headers=headers),
        timeout=QUIET,
    )


def phone_call_works(sw: RunningSwitch) -> None:
    """101 and 102 register from 127.0.0.1; 101 calls 102, it confirms, 101 hangs up."""
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
        a.hangup(call)
        b.wait_state(incoming, "disconnected")


def wait_for_log(sw: RunningSwitch, pattern: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, sw.log_text())
        if m or time.monotonic() > deadline:
            assert m, f"no log line matching {pattern!r}:\n{sw.log_text()[-3000:]}"
            return m.group(0)
        time.sleep(0.1)


# ------------------------------------------------------------------------------ bans
def test_password_guessing_bans_the_source_and_spares_other_phones(sw):
    """Five wrong passwords from 127.0.0.2: banned. Then even the right password from
    there gets no answer (a nonce fetched before the ban is used, so only the ban can be
    the reason), nor does OPTIONS; phones on 127.0.0.1 register and call meanwhile; the
    ban is logged once with its reason; when it ends the right password works again."""
    attacker = bindable("127.0.0.2")
    user, password = "101", EXTENSIONS["101"][1]
    with Udp(sw.server, host=attacker) as u:
        saved = challenge(u, user)  # kept for a correct REGISTER during the ban
        for i in range(5):
            resp = register_with(u, user, f"guess-{i}", challenge(u, user))
            assert status(resp) == 401, (i, resp)
        banned_at = time.monotonic()
        assert register_with(u, user, password, saved) is None
        assert options(u, sw) is None
        assert u.final(register(u.port, user), timeout=QUIET) is None
        phone_call_works(sw)  # during the ban, from another source
        line = wait_for_log(sw, r"banned 127\.0\.0\.2 for [^\n]*")
        assert "5 failed digest attempts within 60 s" in line and "'101'" in line, line
        assert "wrong password" in line, line
        assert sw.log_text().count("banned 127.0.0.2 ") == 1
        # the ban ends after ban_seconds
        time.sleep(max(0.0, banned_at + BAN_SECONDS + 0.5 - time.monotonic()))
        assert status(options(u, sw)) == 200
        assert status(register_with(u, user, password, challenge(u, user))) == 200
    calls = sw.wait_for_call_closed(1)
    assert calls and all(c["ended"] is not None for c in calls)


def test_invite_password_guessing_bans_too(sw):
    attacker = bindable("127.0.0.4")
    uri = f"sip:102@{DOMAIN}"
    with Udp(sw.server, host=attacker) as u:
        for i in range(5):
            first = u.final(invite(uri, u.port))
            assert status(first) == 407, first
            (value,) = header(first, "Proxy-Authenticate")
            user = "101" if i % 2 else "555"  # known and unknown users count alike
            bad = digest("INVITE", uri, value, user, f"guess-{i}")
            resp = u.final(invite(uri, u.port, **{"Proxy-Authorization": bad, "CSeq": "2 INVITE"}))
            assert status(resp) == 407, resp
        assert options(u, sw) is None
        assert u.final(invite(uri, u.port), timeout=QUIET) is None
    wait_for_log(sw, r"banned 127\.0\.0\.4 for")


def test_a_ban_closes_the_sources_tcp_connections_and_refuses_new_ones(sw):
    attacker = bindable("127.0.0.5")

    def connect() -> socket.socket:
        s = socket.create_connection(sw.server, timeout=3.0, source_address=(attacker, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def exchange(s: socket.socket, data: bytes) -> str | None:
        s.sendall(data)
        buf = b""
        try:
            while True:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
                m = re.search(rb"(?i)content-length:\s*(\d+)", buf)
                end = buf.find(b"\r\n\r\n")
                if m and end >= 0 and len(buf) >= end + 4 + int(m.group(1)):
                    text = buf.decode("utf-8", "replace")
                    if status(text) and status(text) >= 200:
                        return text
                    buf = buf[end + 4 + int(m.group(1)) :]
        except (ConnectionResetError, TimeoutError):
            return None

    def tcp_register(port: int, **headers: str) -> bytes:
        return register(port, "101", Via=f"SIP/2.0/TCP {attacker}:{port};branch=z9hG4bK"
                        f"{secrets.token_hex(6)};rport", **headers)  # fmt: skip

    s = connect()
    try:
        port = s.getsockname()[1]
        for i in range(5):
            first = exchange(s, tcp_register(port))
            assert status(first) == 401, first
            (value,) = header(first, "WWW-Authenticate")
            auth = digest("REGISTER", f"sip:{DOMAIN}", value, "101", f"guess-{i}")
            resp = exchange(s, tcp_register(port, Authorization=auth, CSeq="2 REGISTER"))
            if i < 4:
                assert status(resp) == 401, resp
        # the fifth failure banned it: that answer may or may not have left, but the
        # connection is closed now
        s.settimeout(3.0)
        try:
            assert s.recv(65535) == b""
        except ConnectionResetError:
            pass
    finally:
        s.close()
    again = connect()  # the handshake completes in the kernel; the switch then resets it
    try:
        again.settimeout(3.0)
        assert exchange(again, tcp_register(again.getsockname()[1])) is None
    finally:
        again.close()
    wait_for_log(sw, r"banned 127\.0\.0\.5 for")


def test_allow_listed_source_is_never_banned(sw):
    trusted = bindable(TRUSTED)
    with Udp(sw.server, host=trusted) as u:
        for i in range(12):
            resp = register_with(u, "103", f"guess-{i}", challenge(u, "103"))
            assert status(resp) == 401, (i, resp)
        ok = register_with(u, "103", EXTENSIONS["103"][1], challenge(u, "103"))
        assert status(ok) == 200, ok
    assert "banned 127.0.0.9" not in sw.log_text()


# ------------------------------------------------------------------------------ enumeration
def _blank(message: str) -> str:
    """What differs between two answers to two requests: tags, nonces, Via, Call-ID,
    the user part of From/To."""
    message = re.sub(r"tag=[^;\r\n>]+", "tag=T", message)
    message = re.sub(r'nonce="[^"]+"', 'nonce="N"', message)
    message = re.sub(r"(?m)^Via: .*$", "Via: V", message)
    message = re.sub(r"(?m)^Call-ID: .*$", "Call-ID: C", message)
    return re.sub(r"sip:\d+@", "sip:U@", message)


def test_known_and_unknown_extensions_get_the_same_answers(sw):
    """From a source not allow-listed, fewer failures than a ban: REGISTER and INVITE
    for an existing and a made-up extension (no credentials, wrong credentials) get the
    same status and, tags and nonces aside, the same bytes."""
    source = bindable("127.0.0.6")
    with Udp(sw.server, host=source) as u:
        seen: dict[str, list[str]] = {}
        for user in ("102", "987"):
            first = u.final(register(u.port, user))
            (value,) = header(first, "WWW-Authenticate")
            wrong = register_with(u, user, "wrong-password-1", value)
            inv = u.final(invite(f"sip:{user}@{DOMAIN}", u.port))
            (pvalue,) = header(inv, "Proxy-Authenticate")
            bad = digest("INVITE", f"sip:{user}@{DOMAIN}", pvalue, user, "wrong-password-2")
            inv_wrong = u.final(
                invite(
                    f"sip:{user}@{DOMAIN}",
                    u.port,
                    **{"Proxy-Authorization": bad, "CSeq": "2 INVITE"},
                )
            )
            opt = u.final(request("OPTIONS", f"sip:{user}@{DOMAIN}", port=u.port))
            seen[user] = [_blank(m or "") for m in (first, wrong, inv, inv_wrong, opt)]
        assert [status(m) for m in seen["102"]] == [401, 401, 407, 407, 200]
        assert seen["102"] == seen["987"]
    assert "banned 127.0.0.6" not in sw.log_text()


def test_known_and_unknown_users_take_the_same_time(sw):
    """Only a gross difference (a lookup or a hash skipped for unknown users) would
    show over loopback; measured from the allow-listed source so nothing is banned."""
    times: dict[str, list[float]] = {"102": [], "987": []}
    with Udp(sw.server, host=bindable(TRUSTED)) as u:
        for _ in range(30):
            for user in times:
                value = challenge(u, user)
                auth = digest("REGISTER", f"sip:{DOMAIN}", value, user, "wrong-password")
                data = register(u.port, user, Authorization=auth, CSeq="2 REGISTER")
                start = time.perf_counter()
                assert status(u.final(data)) == 401
                times[user].append(time.perf_counter() - start)
    known, unknown = (statistics.median(v) for v in times.values())
    assert abs(known - unknown) < 0.005, (known, unknown)


# ------------------------------------------------------------------------------ scanners
def test_scanner_user_agents_get_no_answer_others_do(sw):
    source = bindable("127.0.0.7")
    with Udp(sw.server, host=source) as u:
        for agent in ("friendly-scanner", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "sipvicious"):
            assert options(u, sw, **{"User-Agent": agent}) is None, agent
            assert u.final(register(u.port, "101", **{"User-Agent": agent}), QUIET) is None
        # not a ban: the same source with an ordinary User-Agent is answered
        assert status(options(u, sw, **{"User-Agent": "Yealink SIP-T46S"})) == 200
    wait_for_log(sw, r"scanner 127\.0\.0\.7 \(User-Agent 'friendly-scanner'\)")


# ------------------------------------------------------------------------------ limits
def _flood(u: Udp, sw: RunningSwitch, count: int) -> tuple[int, float]:
    """Send `count` OPTIONS as fast as possible, reading answers between batches;
    returns (answers, seconds spent sending)."""
    answers = 0
    u.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    start = time.monotonic()
    for batch in range(0, count, 50):
        for i in range(batch, min(count, batch + 50)):
            u.send(
                request(
                    "OPTIONS", f"sip:127.0.0.1:{sw.port}", port=u.port, headers={"Call-ID": f"f{i}"}
                )
            )
        while (msg := u.recv(0.0005)[0]) is not None:
            answers += status(msg) == 200
    elapsed = time.monotonic() - start
    while (msg := u.recv(0.5)[0]) is not None:
        answers += status(msg) == 200
    return answers, elapsed


def test_message_rate_limit_per_source(sw):
    """The default bucket: 200/s, 400 at once. A flood of 1500 from 127.0.0.8 gets about
    400 answers (plus what refills while it sends); the allow-listed address gets every
    one; a phone on 127.0.0.1 is answered at once meanwhile."""
    with Udp(sw.server, host=bindable("127.0.0.8")) as u:
        answered, elapsed = _flood(u, sw, 1500)
    assert 300 <= answered <= 400 + 200 * elapsed + 20, (answered, elapsed)
    with Udp(sw.server) as phone:
        assert status(options(phone, sw)) == 200
    with Udp(sw.server, host=bindable(TRUSTED)) as u:
        answered, _ = _flood(u, sw, 1500)
    assert answered >= 1450, answered  # UDP on loopback may still drop a few
    wait_for_log(sw, r"rate limit: dropping from 127\.0\.0\.8")


def test_open_tcp_connections_per_source_are_limited(sw):
    source = bindable("127.0.0.10")
    conns = []

    def works(s: socket.socket) -> bool:
        port = s.getsockname()[1]
        data = request(
            "OPTIONS",
            f"sip:127.0.0.1:{sw.port};transport=tcp",
            port=port,
            transport="TCP",
            via_host=source,
        )
        try:
            s.sendall(data)
            s.settimeout(3.0)
            return s.recv(65535).startswith(b"SIP/2.0 200")
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            return False

    try:
        for _ in range(5):
            conns.append(socket.create_connection(sw.server, 3.0, source_address=(source, 0)))
        assert [works(c) for c in conns] == [True, True, True, True, False]
        conns.pop(0).close()
        time.sleep(0.2)  # let the switch see the close
        conns.append(socket.create_connection(sw.server, 3.0, source_address=(source, 0)))
        assert works(conns[-1])
    finally:
        for c in conns:
            c.close()


def test_message_size_and_header_limits(sw):
    with Udp(sw.server, host=bindable("127.0.0.11")) as u:
        ok = request(
            "OPTIONS", f"sip:127.0.0.1:{sw.port}", port=u.port, extra=["Subject: " + "x" * 7000]
        )
        assert status(u.final(ok)) == 200
        big = request(
            "OPTIONS", f"sip:127.0.0.1:{sw.port}", port=u.port, extra=["Subject: " + "x" * 8000]
        )
        assert u.final(big, timeout=QUIET) is None  # over max_message_size: dropped
        lines = [f"P-Filler-{i}: {i}" for i in range(60)]
        many = request("OPTIONS", f"sip:127.0.0.1:{sw.port}", port=u.port, extra=lines)
        assert status(u.final(many, timeout=QUIET)) in (None, 400)
        assert status(options(u, sw)) == 200


def test_forged_responses_are_not_relayed_to_other_hosts(sw):
    """The edge relays responses statelessly along their Via; a response from outside
    can only belong to a request the edge sent a phone on a worker's behalf, so it goes
    to a worker or nowhere: never to a decoy named in the second Via (a reflection), and
    never to a host name (a DNS lookup would block the switch)."""
    source = bindable("127.0.0.12")
    decoy_host = bindable("127.0.0.13")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as decoy, Udp(sw.server, source) as u:
        decoy.bind((decoy_host, 0))
        decoy.settimeout(1.0)
        targets = [f"{decoy_host}:{decoy.getsockname()[1]}", "unresolvable-host.invalid:5060"]
        for target in targets:
            for method in ("OPTIONS", "BYE", "MESSAGE"):
                branch = "z9hG4bK" + secrets.token_hex(12)  # shaped like the edge's own
                forged = (
                    "SIP/2.0 200 OK\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{sw.port};branch={branch}\r\n"
                    f"Via: SIP/2.0/UDP {target};branch=z9hG4bKvictim\r\n"
                    f"From: <sip:101@{DOMAIN}>;tag=a\r\nTo: <sip:102@{DOMAIN}>;tag=b\r\n"
                    f"Call-ID: {secrets.token_hex(6)}\r\nCSeq: 1 {method}\r\n"
                    "Content-Length: 0\r\n\r\n"
                )
                u.send(forged.encode())
        with pytest.raises(TimeoutError):
            decoy.recvfrom(65535)
        assert status(options(u, sw)) == 200
