"""The SIP edge against hand-written messages over raw UDP and TCP sockets.

Malformed and odd messages are written here after the descriptions in RFC 4475 ("SIP
Torture Test Messages") and the rules of RFC 3261/3581; none is copied from the RFC.
What is asserted is the sane behaviour of an edge facing the internet: a broken request
gets 400 (when it carries enough to be answered) or is dropped, never a 2xx, and never
disturbs what comes after it; requests are not relayed to foreign hosts; nothing
unauthenticated reaches a phone; TCP framing and keepalives; responses go back to where
the request came from (RFC 3581).

Everything stays on 127.0.0.0/8. The "foreign" hosts are other loopback addresses with a
decoy socket bound there, so a relayed request would be seen, not sent anywhere.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.phone import Phone, PhoneError
from tests.switch import EXTENSIONS, RunningSwitch

RECV_TIMEOUT = 3.0
DOMAIN = "softswitch.test"


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwitch]:
    """One switch for the whole module: every test also proves it survived the ones
    before (each ends by checking that it still answers OPTIONS)."""
    sw = RunningSwitch(tmp_path_factory.mktemp("edge"))
    try:
        yield sw
    finally:
        sw.stop()


def request(
    method: str,
    uri: str,
    *,
    port: int,
    transport: str = "UDP",
    headers: dict[str, str | None] | None = None,
    extra: list[str] | None = None,
    body: str = "",
    via_host: str = "127.0.0.1",
) -> bytes:
    """A request with every mandatory header; `headers` replaces a header's value (None
    removes it), `extra` appends raw header lines. Content-Length is the body's."""
    fields: dict[str, str | None] = {
        "Via": f"SIP/2.0/{transport} {via_host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards": "70",
        "From": f"<sip:101@{DOMAIN}>;tag={secrets.token_hex(4)}",
        "To": f"<sip:102@{DOMAIN}>",
        "Call-ID": f"{secrets.token_hex(8)}@edge-test",
        "CSeq": f"1 {method}",
    }
    fields.update(headers or {})
    fields.setdefault("Content-Length", str(len(body.encode())))
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"{k}: {v}" for k, v in fields.items() if v is not None and k != "Content-Length"]
    lines += extra or []
    if fields["Content-Length"] is not None:
        lines.append(f"Content-Length: {fields['Content-Length']}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def status(message: str | None) -> int | None:
    if not message:
        return None
    m = re.match(r"SIP/2\.0 (\d{3}) ", message)
    return int(m.group(1)) if m else None


def header(message: str, name: str) -> list[str]:
    head = message.split("\r\n\r\n", 1)[0]
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].strip().lower() == name.lower()
    ]


class Udp:
    """A UDP socket on 127.0.0.1 talking to the switch."""

    def __init__(self, server: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = RECV_TIMEOUT) -> tuple[str, tuple] | tuple[None, None]:
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(65535)
        except TimeoutError:
            return None, None
        return data.decode("utf-8", "replace"), addr

    def final(self, data: bytes, timeout: float = RECV_TIMEOUT) -> str | None:
        """Send a request; its first final response (1xx skipped), or None if none came
        within `timeout`."""
        self.send(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg, _ = self.recv(left)
            if msg is None:
                return None
            code = status(msg)
            if code is not None and code >= 200:
                return msg
        return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Udp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def options(sw: RunningSwitch) -> str | None:
    with Udp(sw.server) as u:
        return u.final(request("OPTIONS", f"sip:{sw.server[0]}:{sw.port}", port=u.port))


def assert_alive(sw: RunningSwitch) -> None:
    resp = options(sw)
    assert status(resp) == 200, f"switch no longer answers OPTIONS: {resp!r}"
    assert sw.proc is not None and sw.proc.poll() is None


def digest(method: str, uri: str, challenge: str, user: str, password: str) -> str:
    """A Proxy-Authorization value answering a Digest challenge (MD5, qop=auth)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    value = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    )
    if "auth" in params.get("qop", "").split(","):
        cnonce, nc = secrets.token_hex(4), "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        value += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return value + f', response="{resp}"'


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(uri: str, port: int, **headers: str | None) -> bytes:
    base = {"Contact": f"<sip:101@127.0.0.1:{port}>", "Content-Type": "application/sdp"}
    base.update(headers)
    return request("INVITE", uri, port=port, headers=base, body=SDP)


# ---------------------------------------------------------------- OPTIONS and malformed
def test_options_answered_200_with_allow(edge):
    resp = options(edge)
    assert status(resp) == 200, resp
    (allow,) = header(resp, "Allow")
    methods = {m.strip() for m in allow.split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= methods, allow


def _cases() -> list:
    """(id, build(port, switch_uri) -> bytes)."""

    def opt(**kw):
        return lambda port, uri: request("OPTIONS", uri, port=port, **kw)

    return [
        pytest.param(opt(headers={"Via": "SIP/2.0/UDP ;;branch"}), id="via-without-host"),
        pytest.param(opt(headers={"Via": "definitely not a via header"}), id="via-garbage"),
        pytest.param(
            opt(headers={"Via": "SIP/2.0/UDP 127.0.0.1:notaport;branch=z9hG4bKx"}),
            id="via-port-not-numeric",
        ),
        pytest.param(opt(headers={"Call-ID": None}), id="no-call-id"),
        pytest.param(opt(headers={"CSeq": "one OPTIONS"}), id="cseq-not-numeric"),
        pytest.param(opt(headers={"CSeq": None}), id="no-cseq"),
        pytest.param(
            opt(extra=[f"P-Filler-{i}: {i}" for i in range(500)]), id="500-distinct-headers"
        ),
        pytest.param(
            opt(extra=[f"Subject: {i}" for i in range(2000)]),
            id="2000-headers-one-name",
        ),
        pytest.param(
            opt(headers={"CSeq": "1 INVITE"}),
            id="cseq-method-mismatch",
        ),
        pytest.param(
            opt(headers={"Content-Length": "-5"}),
            id="negative-content-length",
        ),
        pytest.param(
            opt(headers={"Content-Length": "500"}, body="short"),
            id="content-length-beyond-datagram",
        ),
        pytest.param(
            opt(headers={"From": None}),
            id="no-from",
        ),
        pytest.param(
            opt(headers={"CSeq": "99999999999999999999 OPTIONS"}),
            id="cseq-beyond-2**31",
        ),
        pytest.param(
            opt(headers={"Max-Forwards": "99999999999999"}),
            id="max-forwards-beyond-255",
        ),
        pytest.param(lambda port, uri: b"\x00\x01\x02 not SIP at all\r\n\r\n", id="binary"),
        pytest.param(
            lambda port, uri: request("OPTIONS", uri, port=port).replace(
                b"OPTIONS ", b"OPTIONS   ", 1
            ),
            id="request-line-extra-spaces",
        ),
        pytest.param(
            lambda port, uri: request("OPTIONS", "nosuchscheme:x@y", port=port),
            id="unknown-uri-scheme",
        ),
    ]


@pytest.mark.parametrize("build", _cases())
def test_malformed_request_gets_400_or_nothing(edge, build):
    with Udp(edge.server) as u:
        resp = u.final(build(u.port, f"sip:127.0.0.1:{edge.port}"), timeout=1.5)
    code = status(resp)
    assert code is None or 400 <= code < 500, resp  # 400, 416, 513...: never success
    assert_alive(edge)


def test_header_folding_is_accepted(edge):
    """RFC 3261 7.3.1: a header value may continue on lines starting with whitespace
    (RFC 4475 has it among the valid messages)."""
    with Udp(edge.server) as u:
        data = request(
            "OPTIONS",
            f"sip:127.0.0.1:{edge.port}",
            port=u.port,
            extra=["Subject: a subject that", "   goes on over", "\tthree lines"],
        )
        resp = u.final(data)
    assert status(resp) == 200, resp


def test_compact_and_mixed_case_header_names_are_accepted(edge):
    with Udp(edge.server) as u:
        branch = "z9hG4bK" + secrets.token_hex(6)
        lines = [
            f"OPTIONS sip:127.0.0.1:{edge.port} SIP/2.0",
            f"v: SIP/2.0/UDP 127.0.0.1:{u.port};branch={branch};rport",
            "mAX-fORWARDS: 70",
            f"f: <sip:101@{DOMAIN}>;tag=ab",
            f"t: <sip:102@{DOMAIN}>",
            "i: compact-forms@edge-test",
            "cseq: 7 OPTIONS",
            "l: 0",
        ]
        resp = u.final(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert status(resp) == 200, resp
    assert header(resp, "CSeq") == ["7 OPTIONS"] or header(resp, "cseq") == ["7 OPTIONS"]


def test_largest_udp_datagram_does_not_harm_later_requests(edge):
    """A datagram as large as UDP allows (65507 bytes over IPv4). The edge's size limit
    (65535) cannot be exceeded by a UDP datagram, so whether this one is answered is
    not asserted: only that it disturbs nothing."""
    with Udp(edge.server) as u:
        u.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
        head = request(
            "OPTIONS", f"sip:127.0.0.1:{edge.port}", port=u.port, headers={"Content-Length": "0"}
        )
        filler = b"Subject: " + b"x" * (65507 - len(head) - len(b"Subject: \r\n")) + b"\r\n"
        data = head.replace(b"Content-Length: 0\r\n", filler + b"Content-Length: 0\r\n")
        assert len(data) == 65507
        u.send(data)
        u.recv(1.0)  # whatever it is (or nothing)
    assert_alive(edge)


# ------------------------------------------------------------------------------ routing
def test_max_forwards_zero_invite_unauthenticated_gets_407(edge):
    with Udp(edge.server) as u:
        resp = u.final(invite(f"sip:102@{DOMAIN}", u.port, **{"Max-Forwards": "0"}))
    assert status(resp) == 407, resp
    assert header(resp, "Proxy-Authenticate")


def test_max_forwards_zero_invite_authenticated_gets_483(edge):
    uri = f"sip:102@{DOMAIN}"
    calls_before = len(edge.calls())
    with Udp(edge.server) as u:
        call_id = f"{secrets.token_hex(6)}@edge-test"
        first = u.final(invite(uri, u.port, **{"Max-Forwards": "0", "Call-ID": call_id}))
        assert status(first) == 407, first
        (challenge,) = header(first, "Proxy-Authenticate")
        auth = digest("INVITE", uri, challenge, "101", EXTENSIONS["101"][1])
        resp = u.final(
            invite(
                uri,
                u.port,
                **{
                    "Max-Forwards": "0",
                    "Call-ID": call_id,
                    "CSeq": "2 INVITE",
                    "Proxy-Authorization": auth,
                },
            )
        )
    assert status(resp) == 483, resp
    assert len(edge.calls()) == calls_before  # refused before any call was placed


def test_route_to_foreign_host_is_refused_not_relayed(edge):
    """No open relay: a Route (or an in-dialog Request-URI) naming another host gets
    403 and nothing is sent there."""
    decoy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        decoy.bind(("127.0.0.3", 0))
    except OSError as exc:
        decoy.close()
        pytest.skip(f"cannot bind 127.0.0.3 here: {exc}")
    with decoy, Udp(edge.server) as u:
        decoy.settimeout(0.5)
        foreign = f"127.0.0.3:{decoy.getsockname()[1]}"
        for method in ("OPTIONS", "MESSAGE", "INVITE", "BYE"):
            resp = u.final(
                request(
                    method,
                    f"sip:someone@{foreign}",
                    port=u.port,
                    headers={"Route": f"<sip:{foreign};lr>"},
                )
            )
            assert status(resp) == 403, (method, resp)
        # a Route that first names the switch, then the foreign host
        resp = u.final(
            request(
                "MESSAGE",
                f"sip:someone@{foreign}",
                port=u.port,
                headers={"Route": f"<sip:127.0.0.1:{edge.port};lr>, <sip:{foreign};lr>"},
            )
        )
        assert status(resp) == 403, resp
        # in-dialog (To tag) toward a foreign host, no Route at all
        resp = u.final(
            request(
                "INFO",
                f"sip:someone@{foreign}",
                port=u.port,
                headers={"To": f"<sip:someone@{foreign}>;tag=abc123"},
            )
        )
        assert status(resp) is not None and status(resp) >= 400, resp
        with pytest.raises(TimeoutError):
            decoy.recvfrom(65535)
    assert_alive(edge)


def test_bye_for_unknown_dialog_gets_481(edge):
    with Udp(edge.server) as u:
        resp = u.final(
            request(
                "BYE",
                f"sip:102@127.0.0.1:{edge.port}",
                port=u.port,
                headers={"To": f"<sip:102@{DOMAIN}>;tag=made-up-tag"},
            )
        )
    assert status(resp) == 481, resp


def test_bye_without_to_tag_gets_481(edge):
    with Udp(edge.server) as u:
        resp = u.final(request("BYE", f"sip:102@127.0.0.1:{edge.port}", port=u.port))
    assert status(resp) == 481, resp


def test_unauthenticated_invite_never_reaches_the_phone(edge):
    calls_before = len(edge.calls())
    with Phone(user="102", password=EXTENSIONS["102"][1], server=edge.server) as bob:
        assert bob.register() == 200
        bob.auto_answer(200)
        uri = f"sip:102@127.0.0.1:{edge.port}"
        with Udp(edge.server) as u:
            # no credentials at all, with From claiming to be 101
            resp = u.final(invite(uri, u.port))
            assert status(resp) == 407, resp
            (challenge,) = header(resp, "Proxy-Authenticate")
            # credentials with a wrong password
            bad = digest("INVITE", uri, challenge, "101", "not-the-password")
            resp = u.final(invite(uri, u.port, **{"Proxy-Authorization": bad}))
            assert status(resp) in (401, 403, 407), resp
            # credentials of a user that does not exist
            bad = digest("INVITE", uri, challenge, "999", "whatever")
            resp = u.final(invite(uri, u.port, **{"Proxy-Authorization": bad}))
            assert status(resp) in (401, 403, 407), resp
            # internal headers smuggled in from outside, still unauthenticated
            resp = u.final(invite(uri, u.port, **{"X-Call": "1-1-abcdef", "X-Leg": "x"}))
            assert status(resp) == 407, resp
        with pytest.raises(PhoneError):
            bob.wait_incoming(timeout=3.0)
    assert len(edge.calls()) == calls_before  # no call was even placed
    assert_alive(edge)


# ------------------------------------------------------------------------------ rport
def test_response_goes_to_the_source_with_received_and_rport(edge):
    """RFC 3581: the Via claims an address we are not at; the 200 still comes to the
    socket that sent the request, and says where the request came from."""
    with Udp(edge.server) as u:
        data = request(
            "OPTIONS",
            f"sip:127.0.0.1:{edge.port}",
            port=u.port,
            headers={"Via": "SIP/2.0/UDP 127.0.0.2:9;branch=z9hG4bKrport1;rport"},
        )
        u.send(data)
        resp, addr = u.recv()
    assert status(resp) == 200, resp
    assert addr == edge.server
    (via,) = header(resp, "Via")
    params = dict(p.split("=", 1) if "=" in p else (p, "") for p in via.split(";")[1:])
    assert params.get("received") == "127.0.0.1", via
    assert params.get("rport") == str(u.port), via
    assert params.get("branch") == "z9hG4bKrport1", via


# ------------------------------------------------------------------------------ TCP
class Tcp:
    def __init__(self, server: tuple[str, int]) -> None:
        self.sock = socket.create_connection(server, timeout=RECV_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.sock.getsockname()[1]
        self.buf = b""

    def read_messages(self, count: int, timeout: float = RECV_TIMEOUT) -> list[str]:
        """Read until `count` whole messages (framed by Content-Length) have come."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            while b"\r\n\r\n" in self.buf and len(out) < count:
                head, _, rest = self.buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(rest) < length:
                    break
                out.append((head + b"\r\n\r\n" + rest[:length]).decode("utf-8", "replace"))
                self.buf = rest[length:]
            if len(out) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65535)
            except TimeoutError:
                break
            if not chunk:
                break
            self.buf += chunk
        return out

    def closed_by_peer(self, timeout: float = RECV_TIMEOUT) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65535)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Tcp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tcp_options(port: int, sw: RunningSwitch, call_id: str) -> bytes:
    return request(
        "OPTIONS",
        f"sip:127.0.0.1:{sw.port};transport=tcp",
        port=port,
        transport="TCP",
        headers={"Call-ID": call_id},
    )


def test_tcp_two_messages_in_one_segment(edge):
    with Tcp(edge.server) as t:
        t.sock.sendall(
            tcp_options(t.port, edge, "first@tcp") + tcp_options(t.port, edge, "second@tcp")
        )
        responses = t.read_messages(2)
    assert [status(r) for r in responses] == [200, 200], responses
    assert sorted(header(r, "Call-ID")[0] for r in responses) == ["first@tcp", "second@tcp"]


def test_tcp_one_message_over_several_segments(edge):
    with Tcp(edge.server) as t:
        data = request(
            "OPTIONS",
            f"sip:127.0.0.1:{edge.port};transport=tcp",
            port=t.port,
            transport="TCP",
            headers={"Call-ID": "split@tcp", "Content-Type": "text/plain"},
            body="a body that arrives last",
        )
        cuts = [0, 9, 60, len(data) - 30, len(data) - 3, len(data)]
        for start, end in zip(cuts, cuts[1:], strict=False):
            t.sock.sendall(data[start:end])
            time.sleep(0.05)  # separate segments (TCP_NODELAY); not a timing assertion
        (resp,) = t.read_messages(1)
    assert status(resp) == 200 and header(resp, "Call-ID") == ["split@tcp"], resp


def test_tcp_crlf_keepalive_answered_with_crlf(edge):
    with Tcp(edge.server) as t:
        t.sock.sendall(b"\r\n\r\n")
        t.sock.settimeout(RECV_TIMEOUT)
        pong = b""
        while len(pong) < 2:
            chunk = t.sock.recv(16)
            assert chunk, "connection closed instead of a pong"
            pong += chunk
        assert pong == b"\r\n"
        # and the connection goes on carrying SIP
        t.sock.sendall(tcp_options(t.port, edge, "after-ping@tcp"))
        (resp,) = t.read_messages(1)
    assert status(resp) == 200, resp


def test_tcp_message_over_size_limit_closes_only_that_connection(edge):
    with Tcp(edge.server) as bystander, Tcp(edge.server) as t:
        head = request(
            "OPTIONS",
            f"sip:127.0.0.1:{edge.port};transport=tcp",
            port=t.port,
            transport="TCP",
            headers={"Content-Length": "1000000"},
        )
        t.sock.sendall(head + b"x" * 4096)
        assert t.closed_by_peer(), "a 1 MB Content-Length should end the connection"
        bystander.sock.sendall(tcp_options(bystander.port, edge, "bystander@tcp"))
        (resp,) = bystander.read_messages(1)
        assert status(resp) == 200, resp
    with Tcp(edge.server) as again:
        again.sock.sendall(tcp_options(again.port, edge, "again@tcp"))
        (resp,) = again.read_messages(1)
        assert status(resp) == 200, resp


def test_tcp_message_without_content_length_closes_the_connection(edge):
    """RFC 3261 18.3: on a stream Content-Length is mandatory; without it the stream
    cannot be framed, so the connection is closed (a 400 first is fine too)."""
    with Tcp(edge.server) as t:
        t.sock.sendall(
            request(
                "OPTIONS",
                f"sip:127.0.0.1:{edge.port};transport=tcp",
                port=t.port,
                transport="TCP",
                headers={"Content-Length": None},
            )
        )
        got = t.read_messages(1, timeout=1.5)
        assert not got or status(got[0]) == 400, got
        assert t.closed_by_peer()
    assert_alive(edge)
