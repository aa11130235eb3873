"""The phones of the queue benchmark (bench/queue.py): bench/ua.py's LoadUA (side A = the
callers, dialling the queue's main number with digest auth and streaming/receiving RTP)
plus operators: many extensions registered (digest) from one more UDP socket of the same
selector loop, so a caller's 200 OK and an operator's INVITE are stamped on one clock.

An operator either answers every INVITE at once (200 + SDP, then RTP both ways, like
LoadUA's side B) or only rings (180, never answers; a CANCEL gets 200 + 487). Every new
INVITE is stamped (time.monotonic() and time.time()) the moment it is read."""

from __future__ import annotations

import re
import secrets
import selectors
import time
from dataclasses import dataclass, field

from bench.sip import digest
from bench.ua import SDP, Leg, LoadUA, Msg, sdp_media

RURI_USER = re.compile(r"sips?:([^@;>]+)@")


@dataclass
class OpCall:
    """One INVITE an operator's phone got (one branch of a queue leg's fork)."""

    number: str  # the operator (the Request-URI's user part)
    call_id: str
    invite: Msg
    src: tuple[str, int]
    t_mono: float  # monotonic time the INVITE was read
    t_wall: float  # time.time() at the same moment (the switch's queue_log clock)
    from_hdr: str
    to_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    state: str = "ringing"  # ringing / answering / up / cancelled / done
    leg: Leg | None = None  # the RTP side of an answered call


class QueueUA(LoadUA):
    """Callers (LoadUA side A, all as extension `caller`) dialling `dialled`, and
    operators registered from their own socket."""

    def __init__(
        self,
        server: tuple[str, int],
        domain: str,
        caller: tuple[str, str],
        dialled: str,
        operators: dict[str, str],
    ) -> None:
        # LoadUA's side B is never registered: its "user" is only the number A dials.
        super().__init__(server, domain, caller, (dialled, ""))
        self.operators = dict(operators)  # number -> password
        self.sig_op = self._udp()
        self.sel.register(self.sig_op, selectors.EVENT_READ, ("sig", "op"))
        self.answering: set[str] = set()  # operators that answer; the others only ring
        self.op_calls: dict[tuple[str, str], OpCall] = {}  # (Call-ID, operator)
        self.invites: list[OpCall] = []  # every new INVITE, in arrival order
        self.registered_at: dict[str, float] = {}  # operator -> monotonic time of the 200
        self.register_errors: list[str] = []
        self._op_regs: dict[str, tuple[str, int]] = {}  # REGISTER Call-ID -> (number, cseq)

    def _sock(self, side: str):
        return {"a": self.sig_a, "b": self.sig_b, "op": self.sig_op}[side]

    def port(self, side: str) -> int:
        return self._sock(side).getsockname()[1]

    def _send(self, side: str, text: str, dest: tuple[str, int]) -> None:
        self._sock(side).sendto(text.encode(), dest)

    def close(self) -> None:
        self.sel.unregister(self.sig_op)
        self.sig_op.close()
        super().close()

    # -- operators: registration ----------------------------------------------------------
    def register_operators(self, numbers: list[str], timeout: float = 15.0) -> None:
        """REGISTER (digest) each of `numbers` from the operators' socket, 20 at a time;
        returns when all got 200 or `timeout` passed (the missing ones are reported)."""
        deadline = time.monotonic() + timeout
        pending = list(numbers)
        while pending and time.monotonic() < deadline:
            for number in pending[:20]:
                call_id = secrets.token_hex(8)
                self._op_regs[call_id] = (number, 1)
                self._send_op_register(number, call_id, 1, "")
            pending = pending[20:]
            self.poll(0.02)
        while time.monotonic() < deadline and not all(n in self.registered_at for n in numbers):
            self.poll(0.02)
        missing = [n for n in numbers if n not in self.registered_at]
        if missing:
            self.register_errors.append(
                f"{len(missing)} operator(s) not registered, e.g. {missing[:3]}"
            )

    def _send_op_register(self, number: str, call_id: str, cseq: int, extra: str) -> None:
        port = self.port("op")
        text = (
            f"REGISTER sip:{self.domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{number}@{self.domain}>;tag=r{call_id[:8]}\r\n"
            f"To: <sip:{number}@{self.domain}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{number}@127.0.0.1:{port}>\r\nExpires: 3600\r\n{extra}"
            "Content-Length: 0\r\n\r\n"
        )
        self._send("op", text, self.server)

    def _on_op_register(self, msg: Msg) -> None:
        call_id = msg.h("call-id")
        entry = self._op_regs.get(call_id)
        if entry is None:
            return
        number, cseq = entry
        if msg.code == 401 and cseq == 1:
            auth = digest(
                msg.h("www-authenticate"),
                "REGISTER",
                f"sip:{self.domain}",
                number,
                self.operators[number],
            )
            self._op_regs[call_id] = (number, 2)
            self._send_op_register(number, call_id, 2, f"Authorization: {auth}\r\n")
        elif msg.code == 200:
            self.registered_at.setdefault(number, time.monotonic())
        elif msg.code >= 300:
            self.register_errors.append(f"REGISTER {number}: {msg.first}")

    # -- operators: calls -------------------------------------------------------------------
    def _on_sip(self, side: str, msg: Msg, src: tuple[str, int]) -> None:
        if side != "op":
            super()._on_sip(side, msg, src)
            return
        if msg.is_response:
            if msg.cseq[1] == "REGISTER":
                self._on_op_register(msg)
            return  # (no other requests leave the operators' socket)
        now_mono, now_wall = time.monotonic(), time.time()
        m = RURI_USER.search(msg.first)
        number = m.group(1) if m else "?"
        key = (msg.h("call-id"), number)
        oc = self.op_calls.get(key)
        method = msg.method
        if method == "INVITE":
            if oc is None:
                oc = OpCall(number, key[0], msg, src, now_mono, now_wall, msg.h("from"))
                self.op_calls[key] = oc
                self.invites.append(oc)
                if number in self.answering:
                    oc.leg = Leg("op", f"{key[0]}/{number}", self._new_stream())
                    oc.leg.stream.remote = sdp_media(msg.body)
                    self.legs[("op", oc.leg.call_id)] = oc.leg
                    oc.state = "answering"
            if oc.leg is not None:  # a new call, its retransmission or a re-INVITE
                media = sdp_media(msg.body)
                if media:
                    oc.leg.stream.remote = media
                body = SDP.format(sess=1, port=oc.leg.stream.port)
                self._op_response(oc, msg, 200, "OK", body)
            elif oc.state == "ringing":
                self._op_response(oc, msg, 180, "Ringing")
            elif oc.state == "cancelled":
                self._op_response(oc, msg, 487, "Request Terminated")
        elif method == "ACK":
            if oc is not None and oc.state == "answering" and oc.leg is not None:
                oc.state = "up"
                oc.leg.state = "up"
                oc.leg.stream.sending = True
        elif method == "CANCEL":
            self._op_response(oc, msg, 200, "OK", dest=src)
            if oc is not None and oc.state == "ringing":
                oc.state = "cancelled"
                self._op_response(oc, oc.invite, 487, "Request Terminated")
        elif method == "BYE":
            self._op_response(oc, msg, 200, "OK", dest=src)
            if oc is not None:
                oc.state = "done"
                if oc.leg is not None:
                    oc.leg.state = "done"
                    oc.leg.stream.sending = False
        else:
            self._op_response(oc, msg, 200, "OK", dest=src)

    def _op_response(
        self,
        oc: OpCall | None,
        req: Msg,
        code: int,
        reason: str,
        body: str = "",
        dest: tuple[str, int] | None = None,
    ) -> None:
        to = req.h("to")
        if oc is not None and ";tag=" not in to and code > 100:
            to += f";tag={oc.to_tag}"
        number = oc.number if oc is not None else "op"
        rr = req.headers.get("record-route", []) if 100 < code < 300 else []
        text = (
            f"SIP/2.0 {code} {reason}\r\n"
            + "".join(f"Via: {v}\r\n" for v in req.headers.get("via", []))
            + "".join(f"Record-Route: {r}\r\n" for r in rr)
            + f"From: {req.h('from')}\r\nTo: {to}\r\nCall-ID: {req.h('call-id')}\r\n"
            f"CSeq: {req.h('cseq')}\r\n"
            f"Contact: <sip:{number}@127.0.0.1:{self.port('op')}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        target = dest or (oc.src if oc is not None else None)
        if target is not None:
            self._send("op", text, target)

    def forget_op_calls(self) -> None:
        """Drop finished operator calls (and their RTP sockets)."""
        for key, oc in list(self.op_calls.items()):
            if oc.state in ("cancelled", "done"):
                if oc.leg is not None:
                    self._close_stream(oc.leg)
                    self.legs.pop(("op", oc.leg.call_id), None)
                del self.op_calls[key]
