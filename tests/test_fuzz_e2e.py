"""Fuzzing the edge of a real switch: thousands of mutated REGISTER, INVITE, OPTIONS and
in-dialog requests (and forged responses) over UDP and TCP from 127.0.0.3, while two
pjsua2 test phones on 127.0.0.1 register and place a call that must confirm.

Seeded (FUZZ_SEED, default below) and bounded by a message count and a time budget, so
a failure is reproducible. Mutations are byte-level (flips, inserts, cuts, truncation),
line-level (drop, duplicate, swap, fold, hundreds of headers) and value-level (hostile
values in every header, the request line and Content-Length). Part of the INVITEs and
REGISTERs carry valid digest credentials of extension 103 (the digest covers only the
method and the uri parameter, so mutating the rest keeps them valid): those reach the
registrar and the router, not only the parser. They are aimed at numbers that are not
registered (104, 999, 100), never at the phones' 101 and 102.

The switch runs with rate limits and bans off, so every message reaches the parser.
Afterwards: the switch still runs and answers, its log holds no traceback, every call
in its SQLite file is closed (not by the shutdown) and `PRAGMA integrity_check` is ok.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch
from tests.test_defence_e2e import bindable
from tests.test_sip_edge_e2e import SDP, header, status

SEED = int(os.environ.get("FUZZ_SEED", "4475"))
UDP_MESSAGES = 6000
TCP_MESSAGES = 2000
TIME_BUDGET = 60.0  # seconds of fuzzing at most
FUZZER = "127.0.0.3"
DOMAIN = "softswitch.test"
SECURITY = """
[security]
ban_after = 0
max_messages_per_second = 0
max_tcp_connects_per_second = 0
max_tcp_connections_per_source = 64
"""

HOSTILE = [
    "",
    " ",
    "\x00",
    "\t\t",
    "9" * 40,
    "-1",
    "4294967296",
    "0",
    "<sip:>",
    "sip:@",
    "<",
    ">",
    ";;;;",
    ",,,,",
    '"',
    '"unterminated',
    "a" * 3000,
    "%00%ff",
    "\u00ff\u2603" * 8,
    "\xff\xfe",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP 127.0.0.3",
    "SIP/2.0/UDP [::1",
    "SIP/2.0/UDP 127.0.0.3:99999;branch=z9hG4bK",
    "SIP/2.0/XYZ host.invalid:5060;branch=z9hG4bKx;rport=abc",
    "SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK1,SIP/2.0/TCP ,",
    "<sip:x@[::1>",
    "sip:x@999.999.999.999:99999",
    "<sip:101@softswitch.test>;tag=",
    "<sip:%41%42@softswitch.test;lr;ft=00-00>",
    "<sip:127.0.0.1;lr;ss=o;ft=zz-zz>",
    "1 REGISTER",
    "2147483648 INVITE",
    "1 ",
    "Digest ",
    'Digest username="103", realm="softswitch.test", nonce="AAAA", uri="x", response="0"',
    "Digest " + ", ".join(f'p{i}="{i}"' for i in range(300)),
    "*",
    "application/sdp",
    "multipart/mixed;boundary=",
]
METHODS = "INVITE REGISTER OPTIONS ACK CANCEL BYE INFO PRACK UPDATE SUBSCRIBE NOTIFY".split()
METHODS += ["MESSAGE", "REFER", "PUBLISH", "FOO", "invite", "", "INV ITE"]
TARGETS = ["104", "999", "100"]


class Auth:
    """Valid digest credentials of 103 for the fuzzer: one nonce per kind (from a real
    challenge), the nonce count growing with every use."""

    def __init__(self, sock: socket.socket, server: tuple[str, int]) -> None:
        self.values: dict[str, str] = {}
        self.nc = 0
        for method, name in (("REGISTER", "WWW-Authenticate"), ("INVITE", "Proxy-Authenticate")):
            port = sock.getsockname()[1]
            data = base_message(method, "udp", port, "104")
            for _ in range(5):
                sock.sendto(data, server)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    try:
                        msg = sock.recv(65535).decode("utf-8", "replace")
                    except (BlockingIOError, TimeoutError):
                        time.sleep(0.01)
                        continue
                    values = header(msg, name) if status(msg) in (401, 407) else []
                    if values:
                        self.values[method] = values[0]
                        break
                if method in self.values:
                    break
        assert set(self.values) == {"REGISTER", "INVITE"}, "no challenge from the switch"

    def header_line(self, method: str) -> str:
        """An (Proxy-)Authorization line for `method`, with the next nonce count."""
        self.nc += 1
        value = _with_nc(method, self.values[method], self.nc)
        name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        return f"{name}: {value}"


def _with_nc(method: str, challenge: str, nc: int) -> str:
    """Digest credentials of 103 (MD5, qop=auth) answering `challenge`, count `nc`."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce, uri = params["realm"], params["nonce"], f"sip:{DOMAIN}"
    ha1 = hashlib.md5(f"103:{realm}:{EXTENSIONS['103'][1]}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, nc_text = secrets.token_hex(4), f"{nc:08x}"
    resp = hashlib.md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="103", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm=MD5, qop=auth, nc={nc_text}, cnonce="{cnonce}", response="{resp}"'
    )


def base_message(method: str, transport: str, port: int, user: str, rng=random) -> bytes:
    """A well-formed request of `method` from the fuzzer to `user`."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    body = SDP if method == "INVITE" else ""
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    to_user = "103" if method == "REGISTER" else user
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {FUZZER}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:103@{DOMAIN}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{to_user}@{DOMAIN}>",
        f"Call-ID: {secrets.token_hex(8)}@fuzz",
        f"CSeq: {rng.randint(1, 1000)} {method}",
        f"Contact: <sip:103@{FUZZER}:{port}>",
        "User-Agent: fuzz/1.0",
    ]
    if method == "INVITE":
        lines.append("Content-Type: application/sdp")
    if method == "REGISTER":
        lines.append("Expires: 60")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def in_dialog(method: str, transport: str, port: int, switch_port: int) -> bytes:
    """An in-dialog request routed through the switch with a made-up flow token."""
    token = secrets.token_hex(random.randint(0, 12)) + "-" + secrets.token_hex(6)
    lines = [
        f"{method} sip:103@127.0.0.1:{random.choice([switch_port, 5060, 1])} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {FUZZER}:{port};branch=z9hG4bK{secrets.token_hex(8)}",
        f"Route: <sip:127.0.0.1:{switch_port};lr;ss=o;ft={token}>",
        "Max-Forwards: 70",
        f"From: <sip:103@{DOMAIN}>;tag={secrets.token_hex(4)}",
        f"To: <sip:104@{DOMAIN}>;tag={secrets.token_hex(4)}",
        f"Call-ID: {secrets.token_hex(8)}@fuzz",
        f"CSeq: 2 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def forged_response(port: int, switch_port: int, rng: random.Random) -> bytes:
    code = rng.choice([100, 180, 183, 200, 202, 401, 407, 486, 487, 500, 603])
    method = rng.choice(["INVITE", "OPTIONS", "BYE", "CANCEL", "REGISTER"])
    ours = f"SIP/2.0/UDP 127.0.0.1:{switch_port};branch=z9hG4bK{secrets.token_hex(12)}"
    lines = [
        f"SIP/2.0 {code} Whatever",
        f"Via: {ours}",
        f"Via: SIP/2.0/UDP {FUZZER}:{port};branch=z9hG4bK{secrets.token_hex(4)};received={FUZZER}",
        f"From: <sip:103@{DOMAIN}>;tag=a",
        f"To: <sip:104@{DOMAIN}>;tag=b",
        f"Call-ID: {secrets.token_hex(8)}@fuzz",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------------------ mutations
def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def m_flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def m_insert(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    junk = rng.choice(
        [b"\x00", b"\r", b"\n", b"\r\n", b":", b";", b",", b"<", b">", b" ", b"\r\n\r\n", noise]
    )
    return data[:at] + junk + data[at:]


def m_cut(data: bytes, rng: random.Random) -> bytes:
    a = rng.randrange(len(data))
    return data[:a] + data[a + rng.randint(1, 60) :]


def m_truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def m_drop_line(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return _join(lines, body)


def m_dup_line(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    i = rng.randrange(len(lines))
    lines[i:i] = [lines[i]] * rng.randint(1, 5)
    return _join(lines, body)


def m_swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines, body)


def m_hostile_value(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
    name = lines[i].split(b":", 1)[0]
    lines[i] = name + b": " + rng.choice(HOSTILE).encode("utf-8", "surrogateescape")
    return _join(lines, body)


def m_request_line(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    parts = lines[0].split(b" ")
    choice = rng.randrange(4)
    if choice == 0 and parts:
        parts[0] = rng.choice(METHODS).encode()
    elif choice == 1 and len(parts) > 1:
        parts[1] = rng.choice(HOSTILE + ["sip:104@[::1]:0", "tel:+1", "sips:x", "sip:"]).encode(
            "utf-8", "surrogateescape"
        )
    elif choice == 2 and len(parts) > 2:
        parts[2] = rng.choice([b"SIP/3.0", b"sip/2.0", b"SIP/2.00", b"", b"HTTP/1.1"])
    else:
        parts = parts[:1]
    lines[0] = b" ".join(parts)
    return _join(lines, body)


def m_content_length(data: bytes, rng: random.Random) -> bytes:
    value = rng.choice([b"0", b"1", b"-1", b"99999999", b"abc", b"", b" 5", b"32768", b"1e3"])
    text = re.sub(rb"(?im)^content-length:.*$", b"Content-Length: " + value, data)
    return text if text != data else data.replace(b"\r\n\r\n", b"\r\nl: " + value + b"\r\n\r\n")


def m_many_headers(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    name = rng.choice([b"Via", b"Route", b"Record-Route", b"Contact", b"X-Junk", b"Subject"])
    extra = [name + b": " + rng.choice(HOSTILE[:12]).encode() for _ in range(rng.randint(10, 300))]
    return _join(lines[:1] + extra + lines[1:], body)


def m_fold(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
    line = lines[i]
    at = rng.randrange(len(line) + 1)
    lines[i] = line[:at] + rng.choice([b"\r\n ", b"\r\n\t", b"\r\n  \r\n "]) + line[at:]
    return _join(lines, body)


def m_compact(data: bytes, rng: random.Random) -> bytes:
    swaps = [(b"Via:", b"v:"), (b"From:", b"f:"), (b"To:", b"t:"), (b"Call-ID:", b"i:"),
             (b"Contact:", b"m:"), (b"Content-Length:", b"l:"), (b"CSeq:", b"cseq:")]  # fmt: skip
    a, b = rng.choice(swaps)
    return data.replace(a, b)


def m_body(data: bytes, rng: random.Random) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    return head + b"\r\n\r\n" + rng.choice([junk, body * rng.randint(2, 20), b""])


MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [
    m_flip, m_insert, m_cut, m_truncate, m_drop_line, m_dup_line, m_swap_lines,
    m_hostile_value, m_hostile_value, m_hostile_value, m_request_line, m_content_length,
    m_many_headers, m_fold, m_compact, m_body,
]  # fmt: skip


class Fuzzer:
    """Makes the messages (all from one seeded generator) and keeps the tallies."""

    def __init__(self, seed: int, switch_port: int) -> None:
        self.rng = random.Random(seed)
        self.switch_port = switch_port
        self.sent = Counter[str]()
        self.answers = Counter[str]()

    def message(self, transport: str, port: int, auth: Auth | None) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.05:
            data = forged_response(port, self.switch_port, rng)
            self.sent["response"] += 1
        elif kind < 0.15:
            method = rng.choice(["BYE", "ACK", "INFO", "CANCEL", "UPDATE"])
            data = in_dialog(method, transport, port, self.switch_port)
            self.sent["in-dialog"] += 1
        else:
            method = rng.choice(["REGISTER", "INVITE", "INVITE", "OPTIONS"])
            data = base_message(method, transport, port, rng.choice(TARGETS), rng)
            self.sent[method] += 1
        authed = (
            auth is not None and data.startswith((b"INVITE", b"REGISTER")) and rng.random() < 0.3
        )
        if rng.random() < 0.9:  # a few stay valid: the switch must answer those normally
            for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
                if not data:
                    break
                data = rng.choice(MUTATIONS)(data, rng)
        if authed and auth is not None:
            method = "REGISTER" if data.startswith(b"REGISTER") else "INVITE"
            line = auth.header_line(method).encode()
            data = data.replace(b"\r\n", b"\r\n" + line + b"\r\n", 1)
            self.sent["authenticated"] += 1
        first = data.split(b"\r\n", 1)[0]
        if b"101" in first or b"102" in first:  # never ring the real phones
            data = data.replace(first, first.replace(b"101", b"104").replace(b"102", b"104"), 1)
        return data or b"\r\n"

    def tally(self, data: bytes) -> None:
        code = status(data.decode("utf-8", "replace"))
        self.answers[f"{code // 100}xx" if code else "other"] += 1


def fuzz_udp(sw: RunningSwitch, fz: Fuzzer, count: int, stop: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((FUZZER, 0))
        s.settimeout(2.0)
        auth = Auth(s, sw.server)
        s.setblocking(False)
        port = s.getsockname()[1]
        for i in range(count):
            if time.monotonic() > stop:
                break
            with contextlib.suppress(OSError):
                s.sendto(fz.message("udp", port, auth)[:65000], sw.server)
            fz.sent["udp"] += 1
            if i % 20 == 19:
                _drain(s, fz)
                time.sleep(0.01)  # ~1500 messages/s: fast, without drowning the socket
        time.sleep(0.5)
        _drain(s, fz)


def _drain(s: socket.socket, fz: Fuzzer) -> None:
    while True:
        try:
            fz.tally(s.recv(65535))
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            return


def fuzz_tcp(sw: RunningSwitch, fz: Fuzzer, count: int, stop: float) -> None:
    sent = 0
    while sent < count and time.monotonic() < stop:
        try:
            s = socket.create_connection(sw.server, timeout=2.0, source_address=(FUZZER, 0))
        except OSError:
            time.sleep(0.05)
            continue
        with s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = s.getsockname()[1]
            s.setblocking(False)
            for _ in range(fz.rng.randint(1, 40)):
                data = fz.message("tcp", port, None)
                pieces = [data]
                if fz.rng.random() < 0.3 and len(data) > 2:  # split across segments
                    at = fz.rng.randrange(1, len(data))
                    pieces = [data[:at], data[at:]]
                try:
                    for piece in pieces:
                        s.sendall(piece)
                except (BlockingIOError, OSError):
                    break  # closed by the switch (framing) or our buffer is full: next one
                sent += 1
                fz.sent["tcp"] += 1
                with contextlib.suppress(OSError):
                    while chunk := s.recv(65535):
                        for part in chunk.split(b"SIP/2.0 ")[1:]:
                            fz.tally(b"SIP/2.0 " + part)
                time.sleep(0.002)


@pytest.fixture
def fuzzed(tmp_path) -> Iterator[RunningSwitch]:
    bindable(FUZZER)
    s = RunningSwitch(tmp_path, extra=SECURITY)
    try:
        yield s
    finally:
        s.stop()


def test_fuzzing_does_not_disturb_a_real_call(fuzzed):
    sw = fuzzed
    fz = Fuzzer(SEED, sw.port)
    stop = time.monotonic() + TIME_BUDGET
    errors: list[BaseException] = []

    def run(fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    udp = threading.Thread(target=run, args=(fuzz_udp, sw, fz, UDP_MESSAGES, stop), daemon=True)
    fz_tcp = Fuzzer(SEED + 1, sw.port)
    tcp = threading.Thread(target=run, args=(fuzz_tcp, sw, fz_tcp, TCP_MESSAGES, stop), daemon=True)
    udp.start()
    tcp.start()
    time.sleep(2.0)  # the call starts while the fuzzing is in full swing
    with (
        Phone(user="101", password=EXTENSIONS["101"][1], server=sw.server) as a,
        Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server) as b,
    ):
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        call = a.call("102")
        a.wait_state(call, "confirmed", timeout=15)
        incoming = b.wait_incoming()
        b.wait_state(incoming, "confirmed")
        fuzzing_during_call = udp.is_alive() or tcp.is_alive()
        time.sleep(1.0)
        a.hangup(call)
        b.wait_state(incoming, "disconnected")
    udp.join(TIME_BUDGET + 30)
    tcp.join(TIME_BUDGET + 30)
    assert not udp.is_alive() and not tcp.is_alive(), "the fuzzers did not stop"
    assert not errors, errors
    assert fuzzing_during_call, "the fuzzing was over before the call was up"
    for name, f in (("udp", fz), ("tcp", fz_tcp)):
        print(f"\nfuzz seed {SEED} {name}: sent {dict(f.sent)}, answers {dict(f.answers)}")
    # it really ran (bounded by time otherwise)
    assert fz.sent["udp"] >= 1000 and fz_tcp.sent["tcp"] >= 300, (fz.sent, fz_tcp.sent)

    # The switch survived and is sane.
    assert sw.proc is not None and sw.proc.poll() is None, "the switch died"
    with Phone(user="101", password=EXTENSIONS["101"][1], server=sw.server) as again:
        assert again.register() == 200
    log = sw.log_text()
    assert "Traceback" not in log, log[-5000:]
    assert "error handling a message" not in log, log[-5000:]

    calls = sw.wait_for_call_closed(1)
    with sw.db() as db:
        rows = [dict(r) for r in db.execute("SELECT * FROM calls")]
        open_legs = db.execute("SELECT COUNT(*) FROM legs WHERE ended IS NULL").fetchone()[0]
    assert rows and all(r["ended"] is not None for r in rows), rows
    assert open_legs == 0
    real = [r for r in calls if (r["caller"], r["callee"]) == ("101", "102")]
    assert [r["result"] for r in real] == ["answered"], rows
    assert sw.stop() == 0
    conn = sqlite3.connect(sw.data_dir / "softswitch.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        causes = [r[0] for r in conn.execute("SELECT cause FROM calls")]
    finally:
        conn.close()
    assert "switch stopped" not in causes  # every call had closed before the shutdown
