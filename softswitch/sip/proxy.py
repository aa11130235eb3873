"""The proxy core of the SIP edge (RFC 3261 §16, with §17 transactions for INVITE).

What it does, by where a request comes from:
- outside (phones, trunks): REGISTER goes to the registrar, OPTIONS is answered, an
  out-of-dialog INVITE is authenticated and handed to the worker the router picks, an
  in-dialog request (its Route names us) is forwarded to the worker its request URI names.
- inside (media workers on 127.0.0.1): an out-of-dialog INVITE is forked to every
  contact the router returns (parallel, per-branch ring timeout, losers cancelled); an
  in-dialog request goes to the phone named by the flow token in our Record-Route.
- responses: our Via is popped and the response goes to the next Via (received/rport).

INVITEs are transaction-stateful (forking, CANCEL, 100 Trying, hop-by-hop ACK of failures,
best-response choice, timers); everything else is forwarded statelessly with a branch
derived from the incoming one, so retransmissions get the same branch (§16.11).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sipmessage import URI, Address, Message, Request, Response, Via

from softswitch.sip.message import Peer, apply_received, make_response
from softswitch.sip.routing import (
    BranchRecord,
    Fork,
    ForkOutcome,
    ForkWatcher,
    Pending,
    Reject,
    Router,
    Target,
    ToWorker,
)
from softswitch.sip.transport import Listener, Transports

log = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 timer T1 (seconds)
TIMER_B = 64 * T1  # INVITE client transaction timeout
TXN_LINGER = 32.0  # keep a finished INVITE transaction this long (absorb ACK, retransmits)
MAX_HEADERS = 100  # default; [security] max_headers sets the edge's own
MALFORMED_LOG_EVERY = 60.0  # seconds: malformed messages from one address logged once
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE, SUBSCRIBE"
# Headers only the edge may set: stripped from anything arriving from outside.
INTERNAL_PREFIX = "x-"


def hostport(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


FOLDED = re.compile(rb"\r\n[ \t]+")


def parse_message(
    data: bytes, stream: bool = False, max_headers: int = MAX_HEADERS
) -> Request | Response:
    """Parse and check what the edge relies on (RFC 3261 §7, §8.1.1, §18.3); raises
    ValueError on anything malformed. Folded header lines are unfolded first."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers")
    head = FOLDED.sub(b" ", head)
    if head.count(b"\n") > max_headers:  # cheap, before the costly parse
        raise ValueError("too many headers")
    msg = Message.parse(head + b"\r\n\r\n" + body)
    count = sum(len(msg.headers.getlist(key)) for key in msg.headers.keys())
    if count > max_headers:
        raise ValueError("too many headers")
    length_text = msg.headers.get("Content-Length")
    if length_text is not None:
        if not length_text.isdigit():
            raise ValueError("bad Content-Length")
        length = int(length_text)
        if length > len(body):
            raise ValueError("body shorter than Content-Length")
        msg.body = body[:length]  # a datagram may carry padding after the body
    elif stream:
        raise ValueError("Content-Length is required on stream transports")
    for key in ("From", "To", "Call-ID", "CSeq", "Via"):
        if msg.headers.get(key) is None:
            raise ValueError(f"missing {key}")
    cseq = msg.cseq
    if cseq.sequence >= 2**31:
        raise ValueError("CSeq number out of range")
    if not msg.via:  # parse them now: a bad Via is a malformed message
        raise ValueError("empty Via")
    msg.from_address  # noqa: B018
    msg.to_address  # noqa: B018
    if isinstance(msg, Request):
        msg.route  # noqa: B018 - routed on below: a bad Route is a malformed message
        if cseq.method != msg.method:
            raise ValueError("CSeq method does not match the request")
        max_forwards = msg.headers.get("Max-Forwards")
        if max_forwards is not None and not (max_forwards.isdigit() and int(max_forwards) <= 255):
            raise ValueError("bad Max-Forwards")
    return msg


@dataclass
class Branch:
    """One client INVITE transaction of a fork (one phone or one worker)."""

    branch: str
    request: Request  # as sent, for CANCEL/ACK construction
    dest: Peer
    record: BranchRecord
    state: str = "calling"  # calling / proceeding / completed / terminated
    timer_a: asyncio.TimerHandle | None = None
    timer_b: asyncio.TimerHandle | None = None
    timer_c: asyncio.TimerHandle | None = None
    cancelled: bool = False
    timed_out: bool = False
    final: Response | None = None


@dataclass
class InviteTxn:
    """The server side of a stateful INVITE plus its client branches."""

    key: str
    request: Request  # as received (Via with received/rport applied)
    source: Peer
    branches: list[Branch] = field(default_factory=list)
    last_response: bytes | None = None
    final_code: int | None = None
    answered: bool = False
    cancelled: bool = False
    context: object = None
    kind: str = "inbound"  # inbound (to a worker) or fork (to phones)
    linger: asyncio.TimerHandle | None = None
    adding: bool = False  # branches are being started: do not finish yet
    hold_open: bool = False  # a queue caller's fork: stays open with no branch ringing
    label: str = ""  # inbound: the authenticated caller's extension

    @property
    def watcher(self) -> ForkWatcher | None:
        return self.context if isinstance(self.context, ForkWatcher) else None

    @property
    def finished(self) -> bool:
        return self.linger is not None


@dataclass
class PhoneDialog:
    """What the edge must know to hang up a phone's side of a dialog on its own: when
    the media worker at the other end dies, nobody else can send that BYE."""

    call_id: str
    worker: tuple[str, int]
    phone: Peer
    target: str  # the phone's Contact: request URI of in-dialog requests to it
    local: str  # From of a request to the phone (the worker's side, with its tag)
    remote: str  # To of a request to the phone (the phone's side, with its tag)
    created: float
    label: str = ""  # the phone's extension (for "is this operator on a call?")
    key: str = ""  # the dialog's key in `Edge.dialog_listeners` events


class Edge:
    """Routes every SIP message that reaches the switch. One instance per switch."""

    def __init__(
        self,
        transports: Transports,
        router: Router,
        registrar: object,
        *,
        secret: bytes,
        public_host: str,
        clock: Callable[[], float] = time.time,
        max_headers: int = MAX_HEADERS,
    ) -> None:
        self.transports = transports
        self.router = router
        self.registrar = registrar
        self.secret = secret
        self.public_host = public_host
        self.clock = clock
        self.max_headers = max_headers
        self._malformed_logged: dict[str, float] = {}  # address -> when last logged
        self.txns: dict[str, InviteTxn] = {}
        self.client_branches: dict[str, tuple[InviteTxn, Branch]] = {}
        self.dialogs: dict[str, PhoneDialog] = {}  # SIP Call-ID -> dialog through a worker
        # responses to the edge's own requests (a trunk's REGISTER), by top Via branch
        self.uac_handlers: dict[str, Callable[[Response, Peer], None]] = {}
        # presence (softswitch/sip/presence.py): handles phones' SUBSCRIBEs when set, and
        # listeners(extension, key, state, direction, remote) hear each phone dialog's
        # life: "early" (ringing or dialling), "confirmed", "terminated"
        self.presence: object | None = None
        self.dialog_listeners: list[Callable[[str, str, str, str, str], None]] = []
        self.stats = {"requests": 0, "responses": 0, "malformed": 0}

    # ----------------------------------------------------------------- entry point
    def handle(self, data: bytes, peer: Peer) -> None:
        try:
            msg = parse_message(data, stream=peer.transport != "udp", max_headers=self.max_headers)
        except Exception as exc:
            self.stats["malformed"] += 1
            self._answer_malformed(data, peer, exc)
            return
        if isinstance(msg, Response):
            self.stats["responses"] += 1
            self._on_response(msg, peer)
        else:
            self.stats["requests"] += 1
            apply_received(msg, peer)
            if msg.method != "ACK" and any(self._via_is_ours(v) for v in msg.via):
                # Every request the edge forwards ends at a worker or a phone; one that
                # comes back with our Via in it is looping (§16.3 step 4).
                self._respond(msg, peer, 482)
                return
            inside = peer.side == "inside" and self.router.is_worker(peer.host, peer.port)
            if peer.side == "inside" and not inside:
                log.warning("inside socket: request from non-worker %s dropped", peer)
                return
            if msg.method == "ACK":
                self._on_ack(msg, peer, inside=inside)
            elif msg.method == "CANCEL":
                self._on_cancel(msg, peer)
            elif inside:
                self._on_inside_request(msg, peer)
            else:
                self._on_outside_request(msg, peer)

    def _log_malformed(self, peer: Peer, exc: Exception) -> None:
        """At INFO once a minute per address, else at DEBUG: a stream of junk must not
        become a stream of log lines."""
        now = time.monotonic()
        last = self._malformed_logged.get(peer.host)
        if last is not None and now - last < MALFORMED_LOG_EVERY:
            log.debug("malformed message from %s: %s", peer, exc)
            return
        self._malformed_logged.pop(peer.host, None)
        self._malformed_logged[peer.host] = now
        while len(self._malformed_logged) > 4096:
            del self._malformed_logged[next(iter(self._malformed_logged))]
        log.info(
            "malformed message from %s: %s (more from %s within %g s: debug level)",
            peer,
            exc,
            peer.host,
            MALFORMED_LOG_EVERY,
        )

    def _answer_malformed(self, data: bytes, peer: Peer, exc: Exception) -> None:
        """Best effort 400 when the request carries enough to address a response."""
        self._log_malformed(peer, exc)
        try:
            head = data.split(b"\r\n\r\n", 1)[0].decode("utf8", "replace").split("\r\n")
            if head[0].startswith("SIP/2.0") or head[0].startswith("ACK "):
                return
            wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
            lines = []
            for line in head[1:]:
                name = line.split(":", 1)[0].strip().lower()
                if name in wanted:
                    lines.append(line)
            if len(lines) > 16:
                return  # a header bomb: not worth parsing even in part
            raw = ("OPTIONS sip:x SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()
            req = Message.parse(raw)
            assert isinstance(req, Request)
            if not req.via or not req.headers.get("CSeq") or not req.headers.get("Call-ID"):
                return
            apply_received(req, peer)
            resp = make_response(req, 400)
            self._send_response(resp, peer)
        except Exception:
            return  # not even enough to answer: dropped

    # ----------------------------------------------------------------- helpers
    def _listener(self, side: str, transport: str, host: str) -> Listener:
        listener = self.transports.listener_for(side, transport, ":" in host)
        if listener is None:
            listener = self.transports.listener_for(side, "udp", ":" in host)
        if listener is None:
            raise RuntimeError(f"no {side} {transport} listener")
        return listener

    def _sent_by(self, listener: Listener) -> str:
        host = listener.host
        if host in ("0.0.0.0", "::"):
            host = self.public_host
        return hostport(host, listener.port)

    def sent_by(self, dest: Peer) -> str:
        """Our host:port as `dest` sees it (the Via and Contact of our own requests)."""
        return self._sent_by(self._listener(dest.side or "outside", dest.transport, dest.host))

    def _via_for(self, dest: Peer, branch: str) -> str:
        side = dest.side or "outside"
        listener = self._listener(side, dest.transport, dest.host)
        transport = listener.transport.upper()
        return f"SIP/2.0/{transport} {self._sent_by(listener)};branch={branch};rport"

    def _branch(self, *parts: str) -> str:
        digest = hmac.new(self.secret, "|".join(parts).encode(), hashlib.sha256)
        return "z9hG4bK" + digest.hexdigest()[:24]

    def flow_token(self, peer: Peer) -> str:
        raw = f"{peer.transport}|{peer.host}|{peer.port}".encode()
        sig = hmac.new(self.secret, raw, hashlib.sha256).hexdigest()[:12]
        return raw.hex() + "-" + sig

    def parse_flow_token(self, token: str) -> Peer | None:
        try:
            raw_hex, sig = token.split("-", 1)
            raw = bytes.fromhex(raw_hex)
        except ValueError:
            return None
        good = hmac.new(self.secret, raw, hashlib.sha256).hexdigest()[:12]
        if not hmac.compare_digest(good, sig):
            return None
        transport, host, port = raw.decode().split("|")
        return Peer(transport, host, int(port), None, "outside")

    def _record_route(self, side: str, transport: str, host: str, flow: Peer | None) -> str:
        listener = self._listener(side, transport, host)
        params = ";lr"
        if listener.transport == "tcp":
            params += ";transport=tcp"
        params += ";ss=" + ("o" if side == "outside" else "i")
        if flow is not None:
            params += ";ft=" + self.flow_token(flow)
        return f"<sip:{self._sent_by(listener)}{params}>"

    def _is_ours(self, uri: URI) -> bool:
        if "ss" in uri.parameters:
            return True
        host = unbracket(uri.host)
        port = uri.port or 5060
        for listener in self.transports.listeners:
            if listener.port == port and (
                listener.host == host
                or (listener.host in ("0.0.0.0", "::") and host == self.public_host)
            ):
                return True
        return False

    def _pop_our_routes(self, request: Request) -> tuple[bool, Peer | None]:
        """Remove leading Route entries that name us. Returns (any popped, flow)."""
        routes = request.route
        popped = False
        flow: Peer | None = None
        while routes and self._is_ours(routes[0].uri):
            entry = routes.pop(0)
            popped = True
            token = entry.uri.parameters.get("ft")
            if token:
                flow = self.parse_flow_token(token) or flow
        if popped:
            if routes:
                request.headers.setlist("Route", [str(r) for r in routes])
            else:
                request.headers.remove("Route")
        return popped, flow

    def _decrement_max_forwards(self, request: Request, source: Peer) -> bool:
        mf = request.max_forwards
        if mf is None:
            mf = 70
        if mf <= 0:
            if request.method != "ACK":
                self._respond(request, source, 483)
            return False
        request.max_forwards = mf - 1
        return True

    def _respond(
        self,
        request: Request,
        source: Peer,
        code: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> bytes:
        resp = make_response(request, code, reason, headers=headers)
        return self._send_response(resp, source)

    def _send_response(self, resp: Response, dest: Peer) -> bytes:
        data = bytes(resp)
        self.transports.send(data, dest)
        return data

    def _strip_internal(self, request: Request) -> None:
        for key in list(request.headers.keys()):
            if key.lower().startswith(INTERNAL_PREFIX):
                request.headers.remove(key)

    def _forward(self, request: Request, dest: Peer, branch: str) -> None:
        request.headers.setlist(
            "Via", [self._via_for(dest, branch)] + request.headers.getlist("Via")
        )
        self.transports.send(bytes(request), dest)

    # ----------------------------------------------------------------- outside requests
    def _on_outside_request(self, request: Request, source: Peer) -> None:
        self._strip_internal(request)
        method = request.method
        self._pop_our_routes(request)  # a pre-loaded route to us (outbound proxy) too
        if request.route:
            # Loose routing on to someone else: the edge is not an open relay.
            self._respond(request, source, 403, "Forbidden (no relaying)")
            return
        if method == "SUBSCRIBE" and self.presence is not None:
            # The switch is the notifier, in dialog (refresh) or not (docs/presence.md).
            self.presence.on_subscribe(request, source)  # type: ignore[attr-defined]
            return
        if self._to_tag(request):
            # In dialog: to the worker its request URI names (checked there).
            self._forward_in_dialog_to_worker(request, source)
            return
        if method == "REGISTER":
            resp = self.registrar.handle(request, source, self.clock())  # type: ignore[attr-defined]
            self._send_response(resp, source)
        elif method == "OPTIONS":
            self._respond(
                request, source, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]
            )
        elif method == "INVITE":
            self._on_outside_invite(request, source)
        elif method in ("SUBSCRIBE", "PUBLISH"):
            self._respond(request, source, 489, "Bad Event")
        elif method in ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "REFER", "MESSAGE"):
            self._respond(request, source, 481)
        else:
            self._respond(request, source, 501, headers=[("Allow", ALLOW)])

    @staticmethod
    def _to_tag(request: Request) -> str | None:
        try:
            return request.to_address.parameters.get("tag")
        except Exception:
            return None

    def _forward_in_dialog_to_worker(self, request: Request, source: Peer) -> None:
        """A phone's in-dialog request: only ever to one of our workers."""
        self._forget_dialog(request)
        uri = request.uri
        host = unbracket(uri.host)
        port = uri.port or 5060
        if not self.router.is_worker(host, port):
            if request.method == "ACK":
                return
            if self._is_ours(uri):  # addressed to the switch itself: no such dialog
                self._respond(request, source, 481)
            else:
                self._respond(request, source, 403, "Forbidden (not a dialog of this switch)")
            return
        if not self._decrement_max_forwards(request, source):
            return
        branch = self._branch(
            "fwd", request.via[0].parameters.get("branch", ""), request.method, str(source)
        )
        self._forward(request, Peer("udp", host, port, None, "inside"), branch)

    def _on_outside_invite(self, request: Request, source: Peer) -> None:
        key = self._txn_key(request)
        txn = self.txns.get(key)
        if txn is not None:  # retransmission
            if txn.last_response is not None:
                self.transports.send(txn.last_response, source)
            return
        # A trunk's call (recognised by its source; docs/trunks.md) is not challenged.
        trunk_for = getattr(self.router, "trunk_for", None)
        trunk = trunk_for(request, source) if trunk_for is not None else None
        caller: str | None = ""
        if trunk is None:
            auth = self.registrar.authenticate_request(request, source, self.clock())  # type: ignore[attr-defined]
            caller, challenge = auth
            if caller is None:
                if challenge is not None:
                    self._send_response(challenge, source)
                return
        if not self._decrement_max_forwards(request, source):
            return
        if trunk is not None:
            decision = self.router.route_from_trunk(request, trunk, source, self.clock())  # type: ignore[attr-defined]
        else:
            decision = self.router.route_inbound(request, caller, source, self.clock())
        if isinstance(decision, Reject):
            self._respond(request, source, decision.code, decision.reason)
            return
        txn = InviteTxn(key=key, request=request, source=source, kind="inbound", label=caller)
        self.txns[key] = txn
        self._dialog_event(caller, key, "early", "initiator", request.headers.get("To") or "")
        txn.last_response = self._send_response(make_response(request, 100), source)
        if isinstance(decision, Pending):
            future: asyncio.Future = decision.future  # type: ignore[assignment]
            future.add_done_callback(lambda f: self._hand_to_worker(txn, f.result()))
        else:
            self._hand_to_worker(txn, decision)

    def _hand_to_worker(self, txn: InviteTxn, decision: Reject | ToWorker) -> None:
        request, source = txn.request, txn.source
        if isinstance(decision, Reject) or txn.cancelled:
            code = 487 if txn.cancelled else decision.code  # type: ignore[union-attr]
            reason = None if txn.cancelled else decision.reason  # type: ignore[union-attr]
            txn.final_code = code
            txn.last_response = self._respond(request, source, code, reason)
            if isinstance(decision, ToWorker):
                txn.context = decision.context
            self._maybe_finish(txn, force=True)
            return
        txn.context = decision.context
        fwd = self._copy(request)
        fwd.headers.remove("Proxy-Authorization")
        worker = decision.worker
        fwd.uri = URI(scheme="sip", host=worker.host, port=worker.port, user=request.uri.user)
        for key_, value in decision.headers:
            fwd.headers.add(key_, value)
        # RFC 5658 double Record-Route: the top entry faces the worker, the second the
        # phone (with its flow token, so requests toward it use its address/connection).
        rr_inside = self._record_route("inside", "udp", worker.host, None)
        rr_outside = self._record_route("outside", source.transport, source.host, source)
        fwd.headers.setlist(
            "Record-Route", [rr_inside, rr_outside] + fwd.headers.getlist("Record-Route")
        )
        branch = self._branch("inv", txn.key, worker.host, str(worker.port))
        self._start_branch(
            txn,
            fwd,
            worker,
            branch,
            BranchRecord(label="worker", contact=str(fwd.uri), started=self.clock()),
            ring_timeout=None,
        )

    # ----------------------------------------------------------------- inside requests
    def _on_inside_request(self, request: Request, source: Peer) -> None:
        method = request.method
        popped, flow = self._pop_our_routes(request)
        if self._to_tag(request) or request.route:
            # In dialog: toward the phone whose flow our Record-Route carries.
            self._forward_in_dialog_to_phone(request, source, flow)
            return
        if method == "INVITE":
            self._on_inside_invite(request, source)
        elif method == "OPTIONS":
            self._respond(request, source, 200, headers=[("Allow", ALLOW)])
        else:
            self._respond(request, source, 403, "Forbidden (out-of-dialog from worker)")

    def _forward_in_dialog_to_phone(
        self, request: Request, source: Peer, flow: Peer | None
    ) -> None:
        self._forget_dialog(request)
        if flow is None:
            if request.method != "ACK":
                self._respond(request, source, 403, "Forbidden (no flow)")
            return
        if not self._decrement_max_forwards(request, source):
            return
        self._strip_internal(request)
        branch = self._branch(
            "fwd", request.via[0].parameters.get("branch", ""), request.method, str(source)
        )
        self._forward(request, flow, branch)

    def _on_inside_invite(self, request: Request, source: Peer) -> None:
        key = self._txn_key(request)
        txn = self.txns.get(key)
        if txn is not None:
            if txn.last_response is not None:
                self.transports.send(txn.last_response, source)
            return
        if not self._decrement_max_forwards(request, source):
            return
        decision = self.router.route_outbound(request, source, self.clock())
        if isinstance(decision, Reject):
            self._respond(request, source, decision.code, decision.reason)
            return
        if isinstance(decision, Pending):
            # The coordinator learns what this INVITE is a moment later (a transfer
            # call pjsua placed on its own): 100 Trying now, the fork when it knows.
            txn = InviteTxn(key=key, request=request, source=source, kind="fork")
            self.txns[key] = txn
            txn.last_response = self._send_response(make_response(request, 100), source)
            future: asyncio.Future = decision.future  # type: ignore[assignment]
            future.add_done_callback(lambda f: self._fork_decided(txn, f.result()))
            return
        self._start_fork(key, request, source, decision)

    def _fork_decided(self, txn: InviteTxn, decision: Reject | Fork) -> None:
        if txn.finished:
            return  # cancelled and answered 487 while waiting
        if txn.cancelled or isinstance(decision, Reject):
            code = 487 if txn.cancelled else decision.code  # type: ignore[union-attr]
            reason = None if txn.cancelled else decision.reason  # type: ignore[union-attr]
            txn.final_code = code
            txn.last_response = self._respond(txn.request, txn.source, code, reason)
            self._maybe_finish(txn, force=True)
            return
        self.txns.pop(txn.key, None)
        self._start_fork(txn.key, txn.request, txn.source, decision, sent_trying=True)

    def _start_fork(
        self, key: str, request: Request, source: Peer, decision: Fork, sent_trying: bool = False
    ) -> None:
        txn = InviteTxn(
            key=key,
            request=request,
            source=source,
            context=decision.context,
            kind="fork",
            hold_open=decision.hold_open,
        )
        self.txns[key] = txn
        trying = make_response(request, 100)
        txn.last_response = bytes(trying) if sent_trying else self._send_response(trying, source)
        if txn.watcher is not None:
            self._notify(txn.watcher.fork_started, txn)
        self._add_fork_targets(txn, decision)

    def _add_fork_targets(self, txn: InviteTxn, fork: Fork) -> None:
        """Start one branch per target. Also the way to add late branches (the ACD's
        "ring operators as they become free") to a fork that is still ringing."""
        for name, value in fork.headers:
            txn.request.headers.set(name, value)
        txn.adding = True
        try:
            for target in fork.targets:
                b = self.add_branch(txn, target, fork.ring_timeout, fork.from_header)
                if b is not None and fork.response_timeout and b.timer_b is not None:
                    b.timer_b.cancel()  # a trunk that says nothing: give up sooner
                    b.timer_b = asyncio.get_running_loop().call_later(
                        fork.response_timeout, self._branch_timeout_b, txn, b
                    )
        finally:
            txn.adding = False
        self._maybe_finish(txn)

    def add_branch(
        self,
        txn: InviteTxn,
        target: Target,
        ring_timeout: float | None,
        from_header: str | None = None,
    ) -> Branch | None:
        if txn.final_code is not None or txn.answered or txn.cancelled:
            return None
        fwd = self._copy(txn.request)
        self._strip_internal(fwd)
        fwd.uri = URI.parse(target.contact)
        if from_header:
            tag = txn.request.from_address.parameters.get("tag")
            new_from = Address.parse(from_header)
            new_from = dataclasses.replace(
                new_from, parameters=new_from.parameters.replace(tag=tag)
            )
            fwd.headers.set("From", str(new_from))
        rr_outside = self._record_route(
            "outside", target.dest.transport, target.dest.host, target.dest
        )
        rr_inside = self._record_route("inside", "udp", txn.source.host, None)
        fwd.headers.setlist(
            "Record-Route", [rr_outside, rr_inside] + fwd.headers.getlist("Record-Route")
        )
        branch = self._branch(
            "inv", txn.key, target.contact, str(target.dest), str(len(txn.branches))
        )
        record = BranchRecord(label=target.label, contact=target.contact, started=self.clock())
        return self._start_branch(txn, fwd, target.dest, branch, record, ring_timeout)

    def cancel_branches(self, txn: InviteTxn, label: str) -> int:
        """CANCEL the ringing branches to `label` (one extension may have several
        phones). Returns how many were cancelled."""
        count = 0
        for b in txn.branches:
            if b.record.label == label and b.state in ("calling", "proceeding"):
                self._cancel_branch(b)
                count += 1
        return count

    def release_fork(self, txn: InviteTxn) -> None:
        """A held-open fork may finish now (when no branch rings any more)."""
        txn.hold_open = False
        self._maybe_finish(txn)

    # ----------------------------------------------------------------- INVITE client side
    def _start_branch(
        self,
        txn: InviteTxn,
        fwd: Request,
        dest: Peer,
        branch: str,
        record: BranchRecord,
        ring_timeout: float | None,
    ) -> Branch:
        fwd.headers.setlist("Via", [self._via_for(dest, branch)] + fwd.headers.getlist("Via"))
        b = Branch(branch=branch, request=fwd, dest=dest, record=record)
        txn.branches.append(b)
        self.client_branches[branch] = (txn, b)
        if txn.kind == "fork":  # a phone starts ringing
            self._dialog_event(
                record.label, branch, "early", "recipient", fwd.headers.get("From") or ""
            )
        data = bytes(fwd)
        if not self.transports.send(data, dest):
            self._branch_failed(txn, b, 503)
            return b
        loop = asyncio.get_running_loop()
        if dest.transport == "udp":
            b.timer_a = loop.call_later(T1, self._retransmit, txn, b, data, T1)
        b.timer_b = loop.call_later(TIMER_B, self._branch_timeout_b, txn, b)
        if ring_timeout is not None:
            b.timer_c = loop.call_later(ring_timeout, self._branch_ring_timeout, txn, b)
        return b

    def _retransmit(self, txn: InviteTxn, b: Branch, data: bytes, interval: float) -> None:
        if b.state != "calling":
            return
        self.transports.send(data, b.dest)
        interval *= 2
        b.timer_a = asyncio.get_running_loop().call_later(
            interval, self._retransmit, txn, b, data, interval
        )

    def _branch_timeout_b(self, txn: InviteTxn, b: Branch) -> None:
        if b.state in ("calling",) or (b.state == "proceeding" and b.cancelled):
            self._branch_failed(txn, b, 408)

    def _branch_ring_timeout(self, txn: InviteTxn, b: Branch) -> None:
        if b.state in ("calling", "proceeding"):
            b.timed_out = True
            self._cancel_branch(b)

    def _cancel_branch(self, b: Branch) -> None:
        if b.cancelled or b.state not in ("calling", "proceeding"):
            return
        b.cancelled = True
        req = b.request
        cancel = Request("CANCEL", req.uri)
        cancel.headers.add("Via", req.headers.getlist("Via")[0])
        for key in ("Route", "From", "To", "Call-ID"):
            for value in req.headers.getlist(key):
                cancel.headers.add(key, value)
        cancel.headers.add("CSeq", f"{req.cseq.sequence} CANCEL")
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("Content-Length", "0")
        self.transports.send(bytes(cancel), b.dest)
        # If the phone never answers the CANCEL or the INVITE, give up after Timer B.
        if b.timer_b is not None:
            b.timer_b.cancel()
        b.timer_b = asyncio.get_running_loop().call_later(TIMER_B, self._branch_failed_if_open, b)

    def _branch_failed_if_open(self, b: Branch) -> None:
        entry = self.client_branches.get(b.branch)
        if entry is not None and b.state in ("calling", "proceeding"):
            self._branch_failed(entry[0], b, 408)

    def _branch_failed(self, txn: InviteTxn, b: Branch, code: int) -> None:
        resp = make_response(b.request, code)
        self._on_branch_final(txn, b, resp, synthetic=True)

    def _stop_timers(self, b: Branch) -> None:
        for timer in (b.timer_a, b.timer_b, b.timer_c):
            if timer is not None:
                timer.cancel()
        b.timer_a = b.timer_b = b.timer_c = None

    def _on_response(self, resp: Response, source: Peer) -> None:
        vias = resp.via
        if not vias:
            return
        branch = vias[0].parameters.get("branch", "")
        handler = self.uac_handlers.get(branch)
        if handler is not None:  # to a request of our own (a trunk's REGISTER)
            self._notify(handler, resp, source)
            return
        if resp.cseq.method == "INVITE":
            entry = self.client_branches.get(branch)
            if entry is not None:
                txn, b = entry
                self._on_branch_response(txn, b, resp)
                return
        if resp.cseq.method == "CANCEL" and branch in self.client_branches:
            return  # the 200 to our own CANCEL
        # Stateless: our Via must be on top; send to the next one.
        if not self._via_is_ours(vias[0]):
            log.debug("response with a foreign top Via from %s dropped", source)
            return
        if source.side != "inside" and (
            len(vias) < 2 or self._via_destination(vias[1]).side != "inside"
        ):
            # Requests from outside only ever go to workers, so a response from outside
            # only ever goes back to one: anything else is forged (a reflection attempt).
            log.debug("response from %s not toward a worker dropped", source)
            return
        self._relay_response(resp, vias)

    def _via_is_ours(self, via: Via) -> bool:
        branch = via.parameters.get("branch", "")
        return (
            branch.startswith("z9hG4bK")
            and len(branch) == 31
            and self._is_ours(URI(scheme="sip", host=via.host, port=via.port or 5060))
        )

    def _relay_response(self, resp: Response, vias: list[Via]) -> None:
        if len(vias) < 2:
            return
        rest = vias[1:]
        resp.headers.setlist("Via", [str(v) for v in rest])
        dest = self._via_destination(rest[0])
        if dest.side == "outside":
            self._strip_internal_response(resp)
        self.transports.send(bytes(resp), dest)

    @staticmethod
    def _strip_internal_response(resp: Response) -> None:
        for key in list(resp.headers.keys()):
            if key.lower().startswith(INTERNAL_PREFIX):
                resp.headers.remove(key)

    def _via_destination(self, via: Via) -> Peer:
        host = via.parameters.get("received") or unbracket(via.host)
        rport = via.parameters.get("rport")
        port = int(rport) if rport else (via.port or 5060)
        transport = via.transport.lower()
        side = "inside" if (transport == "udp" and self.router.is_worker(host, port)) else "outside"
        return Peer(transport, host, port, None, side)

    def _on_branch_response(self, txn: InviteTxn, b: Branch, resp: Response) -> None:
        code = resp.code
        if code < 200:
            if b.state == "calling":
                b.state = "proceeding"
                if b.timer_a is not None:
                    b.timer_a.cancel()
                    b.timer_a = None
                if b.cancelled:  # CANCEL was sent before any provisional: send again
                    b.cancelled = False
                    self._cancel_branch(b)
            if code == 100 or txn.final_code is not None:
                return
            if b.record.ringing is None:
                b.record.ringing = self.clock()
                if txn.watcher is not None:
                    self._notify(txn.watcher.branch_ringing, b.record, b.record.ringing)
            relayed = self._upstream(resp)
            if relayed is not None:
                txn.last_response = relayed
            return
        if 200 <= code < 300:
            if b.record.result == "declined":
                self._ack_and_bye(b, resp, bye=False)  # a retransmission: ACK it again
                return
            if txn.watcher is not None and b.state != "terminated":
                accepted = True
                if txn.answered or txn.cancelled or txn.final_code is not None:
                    accepted = False
                else:
                    try:
                        accepted = bool(txn.watcher.accept_answer(b.record, self.clock()))
                    except Exception:
                        log.exception("accept_answer failed: declining the answer")
                        accepted = False
                if not accepted:
                    self._decline_answer(txn, b, resp)
                    return
            # Every 2xx goes upstream, even a late one from a second branch; the UAC
            # ACKs it (and BYEs the extra dialog). §16.7 step 5.
            first = not txn.answered
            was_open = b.state != "terminated"  # not a retransmitted 2xx
            b.state = "terminated"
            self._stop_timers(b)
            if b.record.ended is None:
                b.record.ended = self.clock()
                b.record.code = code
                b.record.result = "answered"
            txn.answered = True
            txn.final_code = code
            if first:
                self._remember_dialog(txn, b, resp)
            elif was_open and txn.kind == "fork":  # a late second answer: the worker BYEs it
                self._dialog_event(b.record.label, b.branch, "terminated")
            self._upstream(resp)
            if first:
                asyncio.get_running_loop().call_later(
                    TXN_LINGER, self.client_branches.pop, b.branch, None
                )
            if first:
                for other in txn.branches:
                    if other is not b:
                        self._cancel_branch(other)
                self._maybe_finish(txn, force=True)
            return
        # 3xx-6xx
        if b.state in ("completed", "terminated"):
            self._send_ack(b, resp)  # retransmitted final: ACK again
            return
        self._send_ack(b, resp)
        self._on_branch_final(txn, b, resp, synthetic=False)

    def _decline_answer(self, txn: InviteTxn, b: Branch, resp: Response) -> None:
        """A phone answered a branch its watcher no longer wants (the caller was given to
        another operator, or left): end that phone's call ourselves, ACK then BYE, and
        never let the 2xx reach the worker."""
        b.state = "terminated"
        self._stop_timers(b)
        self._dialog_event(b.record.label, b.branch, "terminated")
        b.record.ended = self.clock()
        b.record.code = resp.code
        b.record.result = "declined"
        self._ack_and_bye(b, resp, bye=True)
        asyncio.get_running_loop().call_later(TXN_LINGER, self.client_branches.pop, b.branch, None)
        if txn.watcher is not None:
            self._notify(txn.watcher.branch_ended, b.record, b.record.ended)
        self._maybe_finish(txn)

    def _ack_and_bye(self, b: Branch, resp: Response, bye: bool) -> None:
        req = b.request
        try:
            target = resp.contact[0].uri
        except (IndexError, ValueError):
            target = req.uri
        for method, seq in (("ACK", req.cseq.sequence), ("BYE", req.cseq.sequence + 1)):
            if method == "BYE" and not bye:
                break
            msg = Request(method, target)
            branch = self._branch("decline", method, b.branch)
            msg.headers.add("Via", self._via_for(b.dest, branch))
            msg.headers.add("Max-Forwards", "70")
            msg.headers.add("From", req.headers.get("From") or "")
            msg.headers.add("To", resp.headers.get("To") or "")
            msg.headers.add("Call-ID", req.call_id)
            msg.headers.add("CSeq", f"{seq} {method}")
            if method == "BYE":
                msg.headers.add("Reason", 'SIP;cause=200;text="Call completed elsewhere"')
            msg.headers.add("Content-Length", "0")
            self.transports.send(bytes(msg), b.dest)

    def _remember_dialog(self, txn: InviteTxn, b: Branch, resp: Response) -> None:
        inbound = txn.kind == "inbound"  # phone -> worker: the phone is the caller
        key = txn.key if inbound else b.branch
        try:
            to_with_tag = resp.headers["To"]
            if inbound:
                phone, worker = txn.source, b.dest
                target = str(txn.request.contact[0].uri)
                local, remote = to_with_tag, txn.request.headers["From"]
                label = txn.label
            else:  # worker -> phone: the phone is the callee
                phone, worker = b.dest, txn.source
                target = str(resp.contact[0].uri)
                local, remote = b.request.headers["From"], to_with_tag
                label = b.record.label
        except (KeyError, IndexError, ValueError):
            self._dialog_event(txn.label if inbound else b.record.label, key, "terminated")
            return
        if label:
            self._notify(self.router.phone_busy, label, resp.call_id, txn.context)
        if inbound:  # who the phone talks to: whom it dialled, or who called it
            direction, other = "initiator", txn.request.headers.get("To")
        else:
            direction, other = "recipient", b.request.headers.get("From")
        self._dialog_event(label, key, "confirmed", direction, other or "")
        self.dialogs[resp.call_id] = PhoneDialog(
            call_id=resp.call_id,
            worker=(worker.host, worker.port),
            phone=phone,
            target=target,
            local=local,
            remote=remote,
            created=self.clock(),
            label=label,
            key=key,
        )

    def worker_gone(self, host: str, port: int) -> int:
        """A media worker died: send BYE to every phone that was in a dialog with it,
        so no phone is left in a call with silence. Returns how many were sent."""
        for txn in list(self.txns.values()):
            if (
                txn.kind == "fork"
                and (txn.source.host, txn.source.port) == (host, port)
                and not txn.finished
            ):
                txn.cancelled = True
                for b in txn.branches:
                    self._cancel_branch(b)
                self._maybe_finish(txn)
        sent = 0
        for call_id, dialog in list(self.dialogs.items()):
            if dialog.worker != (host, port):
                continue
            self._drop_dialog(call_id)
            bye = Request("BYE", URI.parse(dialog.target))
            branch = self._branch("bye", call_id, dialog.target)
            bye.headers.add("Via", self._via_for(dialog.phone, branch))
            bye.headers.add("Max-Forwards", "70")
            bye.headers.add("From", dialog.local)
            bye.headers.add("To", dialog.remote)
            bye.headers.add("Call-ID", call_id)
            bye.headers.add("CSeq", "1000000 BYE")
            bye.headers.add("Reason", 'SIP;cause=500;text="media worker failed"')
            bye.headers.add("Content-Length", "0")
            self.transports.send(bytes(bye), dialog.phone)
            sent += 1
        return sent

    def sweep(self, now: float, max_age: float = 12 * 3600.0) -> None:
        """Forget dialogs whose BYE the edge never saw (a phone that vanished)."""
        for call_id, dialog in list(self.dialogs.items()):
            if now - dialog.created > max_age:
                self._drop_dialog(call_id)

    def _forget_dialog(self, request: Request) -> None:
        if request.method == "BYE":
            self._drop_dialog(request.call_id)

    def _drop_dialog(self, call_id: str) -> None:
        dialog = self.dialogs.pop(call_id, None)
        if dialog is not None and dialog.label:
            self._notify(self.router.phone_free, dialog.label, call_id)
            self._dialog_event(dialog.label, dialog.key, "terminated")

    def _on_branch_final(self, txn: InviteTxn, b: Branch, resp: Response, synthetic: bool) -> None:
        if b.state in ("completed", "terminated"):
            return
        b.state = "completed"
        b.final = resp
        self._stop_timers(b)
        if txn.kind == "fork":
            self._dialog_event(b.record.label, b.branch, "terminated")
        code = resp.code
        b.record.ended = self.clock()
        b.record.code = code
        if b.timed_out:
            b.record.result = "no-answer"
        elif code == 487 or (b.cancelled and code == 408):
            b.record.result = "cancelled"
        elif code in (486, 600):
            b.record.result = "busy"
        elif code in (603, 403):
            b.record.result = "rejected"
        elif code == 408 and synthetic:
            b.record.result = "failed"
        else:
            b.record.result = "failed" if code >= 500 else "rejected"
        loop = asyncio.get_running_loop()
        loop.call_later(TXN_LINGER, self.client_branches.pop, b.branch, None)
        if txn.watcher is not None:
            self._notify(txn.watcher.branch_ended, b.record, b.record.ended)
        if code >= 600 and not txn.answered and txn.watcher is None:
            for other in txn.branches:
                if other is not b:
                    self._cancel_branch(other)
        self._maybe_finish(txn)

    def _send_ack(self, b: Branch, resp: Response) -> None:
        """Hop-by-hop ACK for a non-2xx final response (§17.1.1.3)."""
        req = b.request
        ack = Request("ACK", req.uri)
        ack.headers.add("Via", req.headers.getlist("Via")[0])
        for key in ("Route", "From", "Call-ID"):
            for value in req.headers.getlist(key):
                ack.headers.add(key, value)
        ack.headers.add("To", resp.headers.get("To") or req.headers.get("To") or "")
        ack.headers.add("CSeq", f"{req.cseq.sequence} ACK")
        ack.headers.add("Max-Forwards", "70")
        ack.headers.add("Content-Length", "0")
        self.transports.send(bytes(ack), b.dest)

    def _maybe_finish(self, txn: InviteTxn, force: bool = False) -> None:
        open_branches = [b for b in txn.branches if b.state in ("calling", "proceeding")]
        if (open_branches or txn.adding) and not force:
            return
        if txn.hold_open and not (force or txn.cancelled):
            return
        if txn.linger is not None:
            return  # already finished
        now = self.clock()
        if not txn.answered and txn.final_code is None:
            best = self._best_response(txn)
            txn.final_code = best.code
            relayed = self._upstream(best)
            if relayed is not None:
                txn.last_response = relayed
        if txn.kind == "fork":
            outcome = ForkOutcome(
                code=txn.final_code or 500, branches=[b.record for b in txn.branches]
            )
            self._notify(self.router.fork_finished, txn.context, outcome, now)
        else:
            if not txn.answered:  # the calling phone's attempt ended unanswered
                self._dialog_event(txn.label, txn.key, "terminated")
            self._notify(self.router.inbound_finished, txn.context, txn.final_code or 500, now)
        txn.linger = asyncio.get_running_loop().call_later(TXN_LINGER, self.txns.pop, txn.key, None)

    @staticmethod
    def _notify(fn: Callable, *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("router callback %s failed", getattr(fn, "__name__", fn))

    def _dialog_event(
        self, label: str, key: str, state: str, direction: str = "", remote: str = ""
    ) -> None:
        """Tell `dialog_listeners` (presence) that extension `label`'s phone dialog `key`
        is now `state`; `remote` is the other party's From/To header value."""
        if label:
            for listener in self.dialog_listeners:
                self._notify(listener, label, key, state, direction, remote)

    def _best_response(self, txn: InviteTxn) -> Response:
        """§16.7 step 6, with a PBX's view: a busy phone beats one that did not answer,
        a ring timeout is reported as 480 (no answer), a cancelled call as 487."""
        finals = [b for b in txn.branches if b.final is not None]
        if txn.cancelled:
            resp = make_response(txn.request, 487)
            return resp
        if not finals:
            return make_response(txn.request, 480 if txn.kind == "fork" else 408)

        def rank(b: Branch) -> tuple[int, int]:
            code = b.final.code if b.final else 500
            if code >= 600:
                return (0, code)
            if code == 486:
                return (1, code)
            if b.timed_out:
                return (5, code)
            if code in (408, 487, 503) or code >= 500:
                return (6, code)
            return (2 if code < 400 else 3, code)

        best = min(finals, key=rank)
        assert best.final is not None
        if best.timed_out:
            return make_response(txn.request, 480, "No Answer")
        if best.final.code == 487:
            return make_response(txn.request, 480, "No Answer")
        if best.final.code >= 500 and txn.kind == "fork":
            return make_response(txn.request, 480)
        resp = Response(code=best.final.code, phrase=best.final.phrase, body=best.final.body)
        for key in best.final.headers.keys():
            resp.headers.setlist(key, list(best.final.headers.getlist(key)))
        # The response goes up as if from us: it still carries our Via on top.
        return resp

    def _upstream(self, resp: Response) -> bytes | None:
        """Relay a branch response (ours on top of its Via) to the transaction's source."""
        vias = resp.via
        if vias and self._via_is_ours(vias[0]) and len(vias) > 1:
            rest = vias[1:]
        elif vias and not self._via_is_ours(vias[0]):
            rest = vias  # a response we made ourselves from the original request
        else:
            return None
        resp.headers.setlist("Via", [str(v) for v in rest])
        dest = self._via_destination(rest[0])
        if dest.side == "outside":
            self._strip_internal_response(resp)
        data = bytes(resp)
        self.transports.send(data, dest)
        return data

    # ----------------------------------------------------------------- ACK and CANCEL
    def _txn_key(self, request: Request) -> str:
        via = request.via[0]
        return "|".join(
            (via.parameters.get("branch", ""), via.host, str(via.port or ""), request.call_id)
        )

    def _on_ack(self, request: Request, source: Peer, inside: bool) -> None:
        key = self._txn_key(request)
        txn = self.txns.get(key)
        if txn is not None and not txn.answered:
            return  # ACK for our non-2xx final: absorbed (hop by hop)
        popped, flow = self._pop_our_routes(request)
        if not popped:
            return  # an ACK that is not for a dialog through us
        if inside:
            self._forward_in_dialog_to_phone(request, source, flow)
        else:
            self._strip_internal(request)
            self._forward_in_dialog_to_worker(request, source)

    def _on_cancel(self, request: Request, source: Peer) -> None:
        key = self._txn_key(request)
        txn = self.txns.get(key)
        if txn is None:
            self._respond(request, source, 481)
            return
        self._respond(request, source, 200)
        if txn.final_code is not None or txn.answered:
            return
        txn.cancelled = True
        for b in txn.branches:
            self._cancel_branch(b)
        self._maybe_finish(txn)  # a held-open fork with nothing ringing ends at once

    # ----------------------------------------------------------------- utilities
    @staticmethod
    def _copy(request: Request) -> Request:
        fwd = Request(request.method, request.uri, body=request.body)
        for key in request.headers.keys():
            fwd.headers.setlist(key, list(request.headers.getlist(key)))
        return fwd
