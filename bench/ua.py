"""A minimal SIP + RTP load generator for the concurrent-calls benchmark: one process,
one selector loop, raw UDP sockets on 127.0.0.1 (no SIP library shared with the switch).

Side A places calls (INVITE, 407, ACK, INVITE with Proxy-Authorization, 200, ACK via
the Record-Route set, later BYE). Side B is one registered extension that answers every
INVITE with 200 at once. Every answered leg on both sides streams G.711 u-law RTP (a
440 Hz tone, 20 ms packets, payload type 0) and counts what it receives: packets and
losses from RTP sequence numbers. This is exactly what a phone pair does on the wire,
so each bridged call through the switch carries RTP in both directions."""

from __future__ import annotations

import re
import secrets
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.sip import digest, split_message

PTIME = 0.020
SDP = (
    "v=0\r\no=- {sess} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
)


@dataclass
class Msg:
    first: str
    headers: dict[str, list[str]]
    body: str

    @property
    def is_response(self) -> bool:
        return self.first.startswith("SIP/2.0")

    @property
    def code(self) -> int:
        return int(self.first.split()[1])

    @property
    def method(self) -> str:
        return self.first.split()[0]

    def h(self, name: str) -> str:
        return (self.headers.get(name) or [""])[0]

    @property
    def cseq(self) -> tuple[int, str]:
        n, m = self.h("cseq").split()
        return int(n), m


def parse(data: bytes) -> Msg:
    # Via / Record-Route / Route may hold several comma-separated values
    return Msg(*split_message(data, comma_lists=("via", "record-route", "route")))


def sdp_media(body: str) -> tuple[str, int] | None:
    ip = re.search(r"c=IN IP4 ([0-9.]+)", body)
    port = re.search(r"m=audio (\d+)", body)
    return (ip.group(1), int(port.group(1))) if ip and port else None


def uri_addr(uri: str) -> tuple[str, int]:
    m = re.search(r"sip:(?:[^@;>]*@)?([0-9.]+|[\w.-]+)(?::(\d+))?", uri)
    if not m:
        raise ValueError(f"no address in {uri!r}")
    return m.group(1), int(m.group(2) or 5060)


def tone_frames() -> list[bytes]:
    raw = (Path(__file__).parent / "sipp" / "bench_ulaw.raw").read_bytes()
    return [raw[i : i + 160] for i in range(0, len(raw) - 159, 160)]


@dataclass
class Stream:
    """One RTP endpoint: sends the tone to `remote` every 20 ms, counts what arrives."""

    sock: socket.socket
    port: int
    remote: tuple[str, int] | None = None
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    ts: int = 0
    sending: bool = False
    tx: int = 0
    rx: int = 0
    first_seq: int | None = None
    last_ext: int = 0  # highest extended sequence number received

    def received(self, data: bytes) -> None:
        if len(data) < 12:
            return
        seq = struct.unpack_from("!H", data, 2)[0]
        self.rx += 1
        if self.first_seq is None:
            self.first_seq = self.last_ext = seq
            return
        # extend the 16-bit sequence number around the last one seen
        cand = (self.last_ext & ~0xFFFF) | seq
        if cand < self.last_ext - 0x8000:
            cand += 0x10000
        elif cand > self.last_ext + 0x8000:
            cand -= 0x10000
        self.last_ext = max(self.last_ext, cand)

    @property
    def lost(self) -> int:
        if self.first_seq is None:
            return 0
        return max(0, self.last_ext - self.first_seq + 1 - self.rx)


@dataclass
class Leg:
    side: str  # "a" or "b"
    call_id: str
    stream: Stream
    state: str = "new"  # new / auth / inviting / up / bye / done / failed
    local_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    remote_tag: str = ""
    remote_target: str = ""
    routes: list[str] = field(default_factory=list)
    cseq: int = 1
    invite_branch: str = ""
    invite_sent: float = 0.0
    answered: float = 0.0
    error: str = ""
    from_hdr: str = ""
    to_hdr: str = ""


class LoadUA:
    def __init__(
        self, server: tuple[str, int], domain: str, a: tuple[str, str], b: tuple[str, str]
    ) -> None:
        self.server = server
        self.domain = domain
        self.a_user, self.a_pw = a
        self.b_user, self.b_pw = b
        self.sel = selectors.DefaultSelector()
        self.sig_a = self._udp()
        self.sig_b = self._udp()
        self.sel.register(self.sig_a, selectors.EVENT_READ, ("sig", "a"))
        self.sel.register(self.sig_b, selectors.EVENT_READ, ("sig", "b"))
        self.legs: dict[tuple[str, str], Leg] = {}
        self.frames = tone_frames()
        self.frame_i = 0
        self.next_tick = time.monotonic()
        self.registered = False

    @staticmethod
    def _udp() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    def port(self, side: str) -> int:
        return (self.sig_a if side == "a" else self.sig_b).getsockname()[1]

    def close(self) -> None:
        for leg in self.legs.values():
            self._close_stream(leg)
        for s in (self.sig_a, self.sig_b):
            self.sel.unregister(s)
            s.close()
        self.sel.close()

    def _close_stream(self, leg: Leg) -> None:
        st = leg.stream
        st.sending = False
        if st.sock.fileno() != -1:
            self.sel.unregister(st.sock)
            st.sock.close()

    # -- messages -----------------------------------------------------------------------
    def _send(self, side: str, text: str, dest: tuple[str, int]) -> None:
        (self.sig_a if side == "a" else self.sig_b).sendto(text.encode(), dest)

    def _request(
        self,
        side: str,
        method: str,
        ruri: str,
        leg: Leg | None,
        *,
        call_id: str,
        cseq: int,
        from_hdr: str,
        to_hdr: str,
        branch: str | None = None,
        extra: str = "",
        body: str = "",
        routes: list[str] = (),
    ) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        user = self.a_user if side == "a" else self.b_user
        text = (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port(side)};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: {from_hdr}\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.port(side)}>\r\n{extra}"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        return text

    def _response(
        self,
        side: str,
        req: Msg,
        code: int,
        reason: str,
        to_tag: str = "",
        body: str = "",
        dest: tuple[str, int] | None = None,
    ) -> None:
        to = req.h("to")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        user = self.a_user if side == "a" else self.b_user
        text = (
            f"SIP/2.0 {code} {reason}\r\n"
            + "".join(f"Via: {v}\r\n" for v in req.headers.get("via", []))
            + "".join(f"Record-Route: {r}\r\n" for r in req.headers.get("record-route", []))
            + f"From: {req.h('from')}\r\nTo: {to}\r\nCall-ID: {req.h('call-id')}\r\n"
            f"CSeq: {req.h('cseq')}\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.port(side)}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        assert dest is not None
        self._send(side, text, dest)

    def _new_stream(self) -> Stream:
        s = self._udp()
        st = Stream(sock=s, port=s.getsockname()[1])
        self.sel.register(s, selectors.EVENT_READ, ("rtp", st))
        return st

    # -- B: registration ----------------------------------------------------------------
    def register_b(self, timeout: float = 5.0) -> None:
        call_id = secrets.token_hex(8)
        ruri = f"sip:{self.domain}"
        aor = f"<sip:{self.b_user}@{self.domain}>"
        frm = f"{aor};tag={secrets.token_hex(4)}"
        self._reg = (call_id, ruri, aor, frm)
        self._send_register(1, "")
        deadline = time.monotonic() + timeout
        while not self.registered and time.monotonic() < deadline:
            self.poll(0.05)
        if not self.registered:
            raise RuntimeError(f"B ({self.b_user}) did not register")

    # -- A: calls -----------------------------------------------------------------------
    def call(self) -> Leg:
        call_id = secrets.token_hex(10)
        leg = Leg("a", call_id, self._new_stream())
        leg.from_hdr = (
            f'"Bench {self.a_user}" <sip:{self.a_user}@{self.domain}>;tag={leg.local_tag}'
        )
        leg.to_hdr = f"<sip:{self.b_user}@{self.domain}>"
        self.legs[("a", call_id)] = leg
        leg.invite_branch = "z9hG4bK" + secrets.token_hex(8)
        leg.state = "auth"
        leg.invite_sent = time.monotonic()
        self._send("a", self._invite(leg, ""), self.server)
        return leg

    def _invite(self, leg: Leg, extra: str) -> str:
        sdp = SDP.format(sess=leg.cseq, port=leg.stream.port)
        return self._request(
            "a",
            "INVITE",
            f"sip:{self.b_user}@{self.domain}",
            leg,
            call_id=leg.call_id,
            cseq=leg.cseq,
            from_hdr=leg.from_hdr,
            to_hdr=leg.to_hdr,
            branch=leg.invite_branch,
            extra=extra,
            body=sdp,
        )

    def hangup(self, leg: Leg) -> None:
        if leg.state != "up":
            return
        leg.cseq += 1
        leg.state = "bye"
        leg.stream.sending = False
        self._in_dialog(leg, "BYE")

    def _in_dialog(self, leg: Leg, method: str, cseq: int | None = None) -> None:
        to = leg.to_hdr + (f";tag={leg.remote_tag}" if leg.remote_tag else "")
        text = self._request(
            "a",
            method,
            leg.remote_target,
            leg,
            call_id=leg.call_id,
            cseq=cseq or leg.cseq,
            from_hdr=leg.from_hdr,
            to_hdr=to,
            routes=leg.routes,
        )
        dest = uri_addr(leg.routes[0]) if leg.routes else uri_addr(leg.remote_target)
        self._send("a", text, dest)

    # -- the loop -----------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Run the loop for `timeout` seconds: SIP, RTP in, and RTP out every 20 ms."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self.next_tick:
                self._tick()
                self.next_tick += PTIME
                if self.next_tick < now - 0.2:  # fell far behind: do not burst-catch-up
                    self.next_tick = now + PTIME
            if now >= end:
                return
            wait = max(0.0, min(end, self.next_tick) - now)
            for key, _ in self.sel.select(wait):
                kind, what = key.data
                sock = key.fileobj
                for _ in range(64):
                    try:
                        data, src = sock.recvfrom(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    if kind == "rtp":
                        what.received(data)
                    else:
                        self._on_sip(what, parse(data), src)

    def _tick(self) -> None:
        payload = self.frames[self.frame_i % len(self.frames)]
        self.frame_i += 1
        for leg in self.legs.values():
            st = leg.stream
            if not st.sending or st.remote is None:
                continue
            st.seq = (st.seq + 1) & 0xFFFF
            st.ts = (st.ts + 160) & 0xFFFFFFFF
            pkt = struct.pack("!BBHII", 0x80, 0, st.seq, st.ts, st.ssrc) + payload
            try:
                st.sock.sendto(pkt, st.remote)
                st.tx += 1
            except OSError:
                pass

    def _on_sip(self, side: str, msg: Msg, src: tuple[str, int]) -> None:
        if side == "b" and msg.is_response and msg.cseq[1] == "REGISTER":
            self._on_register(msg)
            return
        leg = self.legs.get((side, msg.h("call-id")))
        if msg.is_response:
            if leg is not None:
                self._on_response(leg, msg)
            return
        method = msg.method
        if side == "b" and method == "INVITE" and leg is None:
            leg = Leg("b", msg.h("call-id"), self._new_stream())
            leg.remote_target = msg.h("contact").strip("<>").split(">")[0]
            self.legs[("b", leg.call_id)] = leg
        if leg is None:
            if method != "ACK":
                self._response(side, msg, 481, "Call Does Not Exist", dest=src)
            return
        if method == "INVITE":
            # new call on B, a retransmission, or a re-INVITE on either side: 200 + SDP
            media = sdp_media(msg.body)
            if media:
                leg.stream.remote = media
            sdp = SDP.format(sess=1, port=leg.stream.port)
            self._response(side, msg, 200, "OK", to_tag=leg.local_tag, body=sdp, dest=src)
            if leg.state == "new":
                leg.state = "answering"
        elif method == "ACK":
            if leg.state == "answering":
                leg.state = "up"
                leg.answered = time.monotonic()
                leg.stream.sending = True
        elif method == "BYE":
            self._response(side, msg, 200, "OK", dest=src)
            leg.state = "done"
            leg.stream.sending = False
        elif method == "CANCEL":
            self._response(side, msg, 200, "OK", dest=src)
        else:
            self._response(side, msg, 200, "OK", dest=src)

    def _on_register(self, msg: Msg) -> None:
        if msg.code == 401:
            ruri = self._reg[1]
            auth = digest(msg.h("www-authenticate"), "REGISTER", ruri, self.b_user, self.b_pw)
            self._send_register(2, f"Authorization: {auth}\r\n")
        elif msg.code == 200:
            self.registered = True

    def _send_register(self, cseq: int, extra: str) -> None:
        """B's REGISTER (of the registration `register_b` began) with `extra` headers."""
        call_id, ruri, aor, frm = self._reg
        self._send(
            "b",
            self._request(
                "b",
                "REGISTER",
                ruri,
                None,
                call_id=call_id,
                cseq=cseq,
                from_hdr=frm,
                to_hdr=aor,
                extra=f"Expires: 3600\r\n{extra}",
            ),
            self.server,
        )

    def _on_response(self, leg: Leg, msg: Msg) -> None:
        code = msg.code
        cseq, method = msg.cseq
        if method == "INVITE":
            if code < 200:
                return
            if code == 407 and leg.state == "auth":
                self._send("a", self._ack_non2xx(leg, msg), self.server)
                auth = digest(
                    msg.h("proxy-authenticate"),
                    "INVITE",
                    f"sip:{self.b_user}@{self.domain}",
                    self.a_user,
                    self.a_pw,
                )
                leg.cseq += 1
                leg.invite_branch = "z9hG4bK" + secrets.token_hex(8)
                leg.state = "inviting"
                self._send("a", self._invite(leg, f"Proxy-Authorization: {auth}\r\n"), self.server)
            elif 200 <= code < 300:
                if leg.state == "inviting":
                    leg.remote_tag = re.search(r"tag=([^;>\s]+)", msg.h("to")).group(1)
                    leg.remote_target = msg.h("contact").strip().lstrip("<").split(">")[0]
                    leg.routes = list(reversed(msg.headers.get("record-route", [])))
                    leg.stream.remote = sdp_media(msg.body)
                    leg.state = "up"
                    leg.answered = time.monotonic()
                    leg.stream.sending = True
                self._in_dialog(leg, "ACK", cseq=cseq)  # (re)ACK every 2xx
            elif code >= 300:
                self._send("a", self._ack_non2xx(leg, msg), self.server)
                if leg.state in ("auth", "inviting"):
                    leg.state = "failed"
                    leg.error = msg.first
        elif method == "BYE" and code >= 200:
            leg.state = "done"

    def _ack_non2xx(self, leg: Leg, msg: Msg) -> str:
        return (
            f"ACK sip:{self.b_user}@{self.domain} SIP/2.0\r\n"
            f"Via: {msg.headers['via'][0]}\r\nMax-Forwards: 70\r\n"
            f"From: {msg.h('from')}\r\nTo: {msg.h('to')}\r\nCall-ID: {leg.call_id}\r\n"
            f"CSeq: {msg.cseq[0]} ACK\r\nContent-Length: 0\r\n\r\n"
        )
