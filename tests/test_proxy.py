"""The proxy core message by message: forking, best response, CANCEL, ring timeouts,
Record-Route and flow tokens, and what it refuses. The transports are replaced by a
recorder (no sockets); the edge's timers run on a real event loop with short timeouts."""

from __future__ import annotations

import asyncio

import pytest
from sipmessage import Message, Request, Response

from softswitch.sip.message import Peer, make_response
from softswitch.sip.proxy import Edge
from softswitch.sip.routing import Fork, ForkOutcome, ForkWatcher, Reject, Target, ToWorker
from softswitch.sip.transport import Listener, Transports

WORKER = Peer("udp", "127.0.0.1", 6000, None, "inside")
PHONE1 = Peer("udp", "127.0.0.1", 7001, None, "outside")
PHONE2 = Peer("tcp", "127.0.0.1", 7002, None, "outside")
CALLER = Peer("udp", "127.0.0.1", 7100, None, "outside")


class Recorder(Transports):
    def __init__(self) -> None:
        super().__init__(lambda data, peer: None)
        self.listeners = [
            Listener("outside", "udp", "127.0.0.1", 5060),
            Listener("outside", "tcp", "127.0.0.1", 5060),
            Listener("inside", "udp", "127.0.0.1", 5070),
        ]
        self.sent: list[tuple[Message, Peer]] = []

    def send(self, data: bytes, dest: Peer) -> bool:
        self.sent.append((Message.parse(data), dest))
        return True

    def take(self) -> list[tuple[Message, Peer]]:
        out, self.sent = self.sent, []
        return out


class FakeRouter:
    def __init__(self, fork: Fork | Reject | None = None) -> None:
        self.fork = fork
        self.outcomes: list[ForkOutcome] = []
        self.inbound: list[int] = []
        self.busy: list[tuple[str, str]] = []
        self.free: list[tuple[str, str]] = []

    def is_worker(self, host: str, port: int) -> bool:
        return (host, port) == ("127.0.0.1", 6000)

    def route_inbound(self, request, caller, source, now):
        return ToWorker(worker=WORKER, headers=(("X-Leg", "c1-a"),), context="ctx")

    def route_outbound(self, request, source, now):
        return self.fork

    def fork_finished(self, context, outcome, now):
        self.outcomes.append(outcome)

    def inbound_finished(self, context, code, now):
        self.inbound.append(code)

    def flow_closed(self, peer):
        pass

    def phone_busy(self, label, dialog, context):
        self.busy.append((label, dialog))

    def phone_free(self, label, dialog):
        self.free.append((label, dialog))


class FakeRegistrar:
    def authenticate_request(self, request, source, now):
        if request.headers.get("Proxy-Authorization"):
            return "101", None
        return None, make_response(request, 407, headers=[("Proxy-Authenticate", "Digest x")])

    def handle(self, request, source, now):
        return make_response(request, 200)


def fork_of(ring_timeout: float = 30.0) -> Fork:
    return Fork(
        targets=(
            Target("sip:102@10.0.0.5:5060", PHONE1, "102"),
            Target("sip:102@10.0.0.6:5062;transport=tcp", PHONE2, "102"),
        ),
        ring_timeout=ring_timeout,
        from_header='"Alice" <sip:101@pbx>',
        context="call",
    )


def make_edge(router: FakeRouter) -> tuple[Edge, Recorder]:
    rec = Recorder()
    edge = Edge(
        rec,
        router,
        FakeRegistrar(),
        secret=b"s" * 32,
        public_host="127.0.0.1",
        clock=lambda: 1000.0,
    )
    return edge, rec


def worker_invite(branch: str = "z9hG4bKw1") -> bytes:
    return (
        "INVITE sip:102@pbx SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;rport;branch={branch}\r\n"
        "Route: <sip:127.0.0.1:5070;lr>\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:worker@127.0.0.1:6000>;tag=wtag\r\n"
        "To: <sip:102@pbx>\r\n"
        "Call-ID: wcall@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:127.0.0.1:6000>\r\n"
        'X-Call: c1\r\nX-From: "Alice" <sip:101@pbx>\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


def worker_cancel() -> bytes:
    """The worker's CANCEL of `worker_invite()`."""
    return (
        worker_invite()
        .replace(b"INVITE sip", b"CANCEL sip")
        .replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    )


def reply(request: Request, code: int, tag: str) -> bytes:
    resp = make_response(request, code, to_tag=tag)
    if code == 200:
        resp.headers.add("Contact", "<sip:102@10.0.0.5:5060>")
    return bytes(resp)


def invites(sent) -> list[tuple[Request, Peer]]:
    return [(m, p) for m, p in sent if isinstance(m, Request) and m.method == "INVITE"]


def responses(sent, dest: Peer | None = None) -> list[int]:
    return [m.code for m, p in sent if isinstance(m, Response) and (dest is None or p == dest)]


def methods(sent, dest: Peer) -> list[str]:
    return [m.method for m, p in sent if isinstance(m, Request) and p == dest]


async def start_fork(router: FakeRouter):
    edge, rec = make_edge(router)
    edge.handle(worker_invite(), WORKER)
    sent = rec.take()
    assert responses(sent, WORKER) == [100]
    out = invites(sent)
    assert [p for _, p in out] == [PHONE1, PHONE2]
    return edge, rec, out


async def test_fork_rewrites_the_invite_for_each_phone():
    _, _, out = await start_fork(FakeRouter(fork_of()))
    (inv1, _), (inv2, _) = out
    b1, b2 = inv1.via[0].parameters["branch"], inv2.via[0].parameters["branch"]
    assert b1 != b2 and b1.startswith("z9hG4bK")
    assert str(inv1.uri) == "sip:102@10.0.0.5:5060"
    assert inv2.via[0].transport == "TCP"
    assert inv1.via[1].parameters["received"] == "127.0.0.1"  # the worker's Via kept
    assert inv1.max_forwards == 69
    assert inv1.headers.get("Route") is None  # our own route entry was consumed
    assert inv1.headers.get("X-Call") is None and inv1.headers.get("X-From") is None
    assert inv1.from_address.uri.user == "101"  # caller ID, tag kept
    assert inv1.from_address.parameters["tag"] == "wtag"
    rr = inv1.record_route
    assert len(rr) == 2 and "ft" in rr[0].uri.parameters and "ft" not in rr[1].uri.parameters
    assert rr[1].uri.port == 5070  # the worker side of the double Record-Route
    assert inv2.record_route[0].uri.parameters.get("transport") == "tcp"


async def test_first_answer_wins_and_the_other_branch_is_cancelled():
    router = FakeRouter(fork_of())
    edge, rec, out = await start_fork(router)
    (inv1, _), (inv2, _) = out
    edge.handle(reply(inv1, 180, "p1"), PHONE1)
    edge.handle(reply(inv2, 180, "p2"), PHONE2)
    sent = rec.take()
    assert responses(sent, WORKER) == [180, 180]
    (ringing, _) = sent[0]
    assert len(ringing.via) == 1  # our Via popped
    edge.handle(reply(inv2, 200, "p2"), PHONE2)
    sent = rec.take()
    assert responses(sent, WORKER) == [200]
    assert methods(sent, PHONE1) == ["CANCEL"]
    cancel = [m for m, p in sent if p == PHONE1][0]
    assert cancel.via[0].parameters["branch"] == inv1.via[0].parameters["branch"]
    edge.handle(reply(inv1, 487, "p1"), PHONE1)
    sent = rec.take()
    assert methods(sent, PHONE1) == ["ACK"]  # hop-by-hop ACK of the 487
    assert responses(sent, WORKER) == []  # nothing more for the worker
    (outcome,) = router.outcomes
    assert [(b.result, b.code) for b in outcome.branches] == [("cancelled", 487), ("answered", 200)]


async def test_busy_beats_unavailable():
    router = FakeRouter(fork_of())
    edge, rec, out = await start_fork(router)
    (inv1, _), (inv2, _) = out
    edge.handle(reply(inv1, 480, "p1"), PHONE1)
    assert responses(rec.take(), WORKER) == []  # still waiting for the other branch
    edge.handle(reply(inv2, 486, "p2"), PHONE2)
    sent = rec.take()
    assert responses(sent, WORKER) == [486]
    assert methods(sent, PHONE2) == ["ACK"]
    assert router.outcomes[0].code == 486


async def test_decline_stops_the_fork():
    router = FakeRouter(fork_of())
    edge, rec, out = await start_fork(router)
    (inv1, _), _ = out
    edge.handle(reply(inv1, 603, "p1"), PHONE1)
    sent = rec.take()
    assert methods(sent, PHONE2) == ["CANCEL"]


async def test_ring_timeout_cancels_and_reports_no_answer():
    router = FakeRouter(fork_of(ring_timeout=0.05))
    edge, rec, out = await start_fork(router)
    (inv1, _), (inv2, _) = out
    edge.handle(reply(inv1, 180, "p1"), PHONE1)
    edge.handle(reply(inv2, 180, "p2"), PHONE2)
    rec.take()
    await asyncio.sleep(0.2)  # past the ring timeout
    sent = rec.take()
    assert methods(sent, PHONE1) == ["CANCEL"] and methods(sent, PHONE2) == ["CANCEL"]
    edge.handle(reply(inv1, 487, "p1"), PHONE1)
    edge.handle(reply(inv2, 487, "p2"), PHONE2)
    sent = rec.take()
    final = [m for m, p in sent if isinstance(m, Response) and p == WORKER]
    assert [(m.code, m.phrase) for m in final] == [(480, "No Answer")]
    assert {b.result for b in router.outcomes[0].branches} == {"no-answer"}


async def test_worker_cancel_reaches_every_ringing_phone():
    router = FakeRouter(fork_of())
    edge, rec, out = await start_fork(router)
    (inv1, _), (inv2, _) = out
    edge.handle(reply(inv1, 180, "p1"), PHONE1)
    rec.take()
    edge.handle(worker_cancel(), WORKER)
    sent = rec.take()
    assert responses(sent, WORKER) == [200]
    assert methods(sent, PHONE1) == ["CANCEL"] and methods(sent, PHONE2) == ["CANCEL"]
    edge.handle(reply(inv1, 487, "p1"), PHONE1)
    edge.handle(reply(inv2, 487, "p2"), PHONE2)
    assert responses(rec.take(), WORKER) == [487]


async def test_retransmitted_invite_is_absorbed():
    edge, rec, _ = await start_fork(FakeRouter(fork_of()))
    edge.handle(worker_invite(), WORKER)
    sent = rec.take()
    assert invites(sent) == [] and responses(sent, WORKER) == [100]


async def test_no_contacts_rejects():
    edge, rec = make_edge(FakeRouter(Reject(480)))
    edge.handle(worker_invite(), WORKER)
    assert responses(rec.take(), WORKER) == [480]


def phone_invite(auth: bool = True, route: str | None = None) -> bytes:
    lines = [
        "INVITE sip:102@pbx SIP/2.0",
        "Via: SIP/2.0/UDP 10.1.1.1:5060;rport;branch=z9hG4bKp1",
        "Max-Forwards: 70",
        "From: <sip:101@pbx>;tag=atag",
        "To: <sip:102@pbx>",
        "Call-ID: acall",
        "CSeq: 2 INVITE",
        "Contact: <sip:101@10.1.1.1:5060>",
        "X-Leg: forged",
    ]
    if auth:
        lines.append('Proxy-Authorization: Digest username="101"')
    if route:
        lines.append(f"Route: {route}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


async def test_phone_invite_is_challenged_then_handed_to_the_worker():
    router = FakeRouter()
    edge, rec = make_edge(router)
    edge.handle(phone_invite(auth=False), CALLER)
    sent = rec.take()
    assert responses(sent, CALLER) == [407] and invites(sent) == []
    edge.handle(phone_invite(), CALLER)
    sent = rec.take()
    assert responses(sent, CALLER) == [100]
    ((fwd, dest),) = invites(sent)
    assert dest == WORKER
    assert fwd.headers.getlist("X-Leg") == ["c1-a"]  # the forged one was stripped
    assert fwd.headers.get("Proxy-Authorization") is None
    assert fwd.via[1].parameters["received"] == "127.0.0.1"
    assert fwd.via[1].parameters["rport"] == "7100"
    rr = fwd.record_route
    assert rr[0].uri.port == 5070 and "ft" in rr[1].uri.parameters
    # the worker answers; the 200 reaches the caller at its real address and port
    edge.handle(reply(fwd, 200, "w"), WORKER)
    sent = rec.take()
    assert responses(sent, CALLER) == [200]
    assert router.inbound == [200]
    # the caller's BYE comes back by the Record-Route and goes to the worker
    resp = [m for m, p in sent if p == CALLER][0]
    routes = ", ".join(str(r) for r in reversed(resp.record_route))
    bye = (
        "BYE sip:127.0.0.1:6000 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.1.1.1:5060;rport;branch=z9hG4bKbye\r\n"
        f"Route: {routes}\r\nMax-Forwards: 70\r\n"
        "From: <sip:101@pbx>;tag=atag\r\nTo: <sip:102@pbx>;tag=w\r\n"
        "Call-ID: acall\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    edge.handle(bye, CALLER)
    sent = rec.take()
    assert methods(sent, WORKER) == ["BYE"]


async def test_worker_death_hangs_up_its_phones():
    router = FakeRouter()
    edge, rec = make_edge(router)
    edge.handle(phone_invite(), CALLER)
    ((fwd, _),) = invites(rec.take())
    edge.handle(reply(fwd, 200, "w"), WORKER)
    rec.take()
    assert edge.worker_gone("127.0.0.1", 6000) == 1
    ((bye, dest),) = rec.take()
    assert dest == CALLER and bye.method == "BYE"
    assert str(bye.uri) == "sip:101@10.1.1.1:5060"
    assert bye.to_address.parameters["tag"] == "atag"
    assert bye.from_address.parameters["tag"] == "w"


@pytest.mark.parametrize("uri", ["sip:127.0.0.1:6001", "sip:evil@203.0.113.9:5060"])
async def test_in_dialog_request_to_a_non_worker_is_refused(uri):
    edge, rec = make_edge(FakeRouter())
    bye = (
        f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKb\r\n"
        "From: <sip:101@pbx>;tag=a\r\nTo: <sip:102@pbx>;tag=b\r\n"
        "Call-ID: x\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    edge.handle(bye, CALLER)
    assert responses(rec.take(), CALLER) == [403]


async def test_no_relay_to_a_foreign_route():
    edge, rec = make_edge(FakeRouter())
    edge.handle(phone_invite(route="<sip:203.0.113.9;lr>"), CALLER)
    sent = rec.take()
    assert responses(sent, CALLER) == [403] and invites(sent) == []


async def test_max_forwards_exhausted():
    edge, rec = make_edge(FakeRouter(fork_of()))
    edge.handle(worker_invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), WORKER)
    assert responses(rec.take(), WORKER) == [483]


async def test_malformed_request_gets_400_and_garbage_is_dropped():
    edge, rec = make_edge(FakeRouter())
    bad = (
        b"OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKm\r\n"
        b"From: <sip:101@pbx>;tag=a\r\nTo: <sip:pbx>\r\nCall-ID: m\r\n"
        b"CSeq: notanumber OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    edge.handle(bad, CALLER)
    assert responses(rec.take(), CALLER) == [400]
    edge.handle(b"\x00\xff garbage \r\n\r\n", CALLER)
    assert rec.take() == []
    assert edge.stats["malformed"] == 2


async def test_requests_on_the_inside_socket_from_strangers_are_dropped():
    edge, rec = make_edge(FakeRouter(fork_of()))
    edge.handle(worker_invite(), Peer("udp", "127.0.0.1", 6999, None, "inside"))
    assert rec.take() == []


async def test_a_request_carrying_our_own_via_is_a_loop():
    edge, rec = make_edge(FakeRouter(fork_of()))
    edge.handle(worker_invite(), WORKER)
    ((inv, _), _) = invites(rec.take())
    # the forked INVITE somehow comes back to us from outside
    looped = bytes(inv).replace(b"Proxy-Authorization", b"X-Nothing")
    edge.handle(looped, CALLER)
    assert responses(rec.take(), CALLER) == [482]


class QueueWatcher(ForkWatcher):
    """A queue caller's fork context: records what the edge tells it and refuses
    answers from operators in `refuse`."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.fork = None
        self.log: list[tuple[str, str, str]] = []
        self.refuse = refuse or set()

    def fork_started(self, fork):
        self.fork = fork

    def branch_ringing(self, record, now):
        self.log.append(("ringing", record.label, record.result))

    def branch_ended(self, record, now):
        self.log.append(("ended", record.label, record.result))

    def accept_answer(self, record, now):
        self.log.append(("answer", record.label, record.result))
        return record.label not in self.refuse


OP1 = Target("sip:101@10.0.0.5:5060", PHONE1, "101")
OP2 = Target("sip:102@10.0.0.6:5062;transport=tcp", PHONE2, "102")


async def start_queue_fork(watcher: QueueWatcher):
    router = FakeRouter(Fork(targets=(), ring_timeout=None, context=watcher, hold_open=True))
    edge, rec = make_edge(router)
    edge.handle(worker_invite(), WORKER)
    assert responses(rec.take(), WORKER) == [100]
    assert watcher.fork is not None
    return edge, rec, router


async def test_a_held_open_fork_waits_with_no_branch_and_takes_branches_later():
    watcher = QueueWatcher()
    edge, rec, router = await start_queue_fork(watcher)
    edge.add_branch(watcher.fork, OP1, None)
    ((inv1, _),) = invites(rec.take())
    edge.handle(reply(inv1, 180, "p1"), PHONE1)
    assert responses(rec.take(), WORKER) == [180]
    assert edge.cancel_branches(watcher.fork, "101") == 1
    assert methods(rec.take(), PHONE1) == ["CANCEL"]
    edge.handle(reply(inv1, 487, "p1"), PHONE1)
    sent = rec.take()
    assert methods(sent, PHONE1) == ["ACK"]
    assert responses(sent, WORKER) == []  # held open: the worker's leg lives on
    assert router.outcomes == []
    assert watcher.log == [("ringing", "101", "ringing"), ("ended", "101", "cancelled")]
    edge.add_branch(watcher.fork, OP2, None)  # the next operator, same leg
    ((inv2, _),) = invites(rec.take())
    edge.handle(reply(inv2, 200, "p2"), PHONE2)
    sent = rec.take()
    assert responses(sent, WORKER) == [200]
    assert watcher.log[-1] == ("answer", "102", "ringing")
    assert router.outcomes[0].code == 200


async def test_an_answer_the_watcher_refuses_is_acked_and_byed_not_passed_up():
    watcher = QueueWatcher(refuse={"101"})
    edge, rec, router = await start_queue_fork(watcher)
    edge.add_branch(watcher.fork, OP1, None)
    edge.add_branch(watcher.fork, OP2, None)
    (inv1, _), (inv2, _) = invites(rec.take())
    edge.handle(reply(inv1, 200, "p1"), PHONE1)
    sent = rec.take()
    assert responses(sent, WORKER) == []
    assert methods(sent, PHONE1) == ["ACK", "BYE"]
    ack, bye = [m for m, p in sent if p == PHONE1]
    assert str(ack.uri) == "sip:102@10.0.0.5:5060"  # the 2xx's Contact
    assert bye.to_address.parameters["tag"] == "p1" and bye.cseq.sequence == 2
    assert methods(rec.take(), PHONE2) == []  # the other phone still rings
    edge.handle(reply(inv1, 200, "p1"), PHONE1)  # a retransmission: ACK again only
    assert methods(rec.take(), PHONE1) == ["ACK"]
    assert ("ended", "101", "declined") in watcher.log
    edge.handle(reply(inv2, 200, "p2"), PHONE2)
    assert responses(rec.take(), WORKER) == [200]


async def test_a_second_answer_after_the_first_is_declined_for_a_watched_fork():
    watcher = QueueWatcher()
    edge, rec, router = await start_queue_fork(watcher)
    edge.add_branch(watcher.fork, OP1, None)
    edge.add_branch(watcher.fork, OP2, None)
    (inv1, _), (inv2, _) = invites(rec.take())
    edge.handle(reply(inv1, 200, "p1"), PHONE1)
    sent = rec.take()
    assert responses(sent, WORKER) == [200] and methods(sent, PHONE2) == ["CANCEL"]
    edge.handle(reply(inv2, 200, "p2"), PHONE2)  # crossed the CANCEL
    sent = rec.take()
    assert responses(sent, WORKER) == []  # never a second 2xx to the worker
    assert methods(sent, PHONE2) == ["ACK", "BYE"]


async def test_cancelling_a_held_open_fork_with_nothing_ringing_ends_it():
    watcher = QueueWatcher()
    edge, rec, router = await start_queue_fork(watcher)
    edge.handle(worker_cancel(), WORKER)
    assert responses(rec.take(), WORKER) == [200, 487]
    assert router.outcomes[0].code == 487


async def test_phones_in_dialogs_are_reported_busy_and_free():
    router = FakeRouter(fork_of())
    edge, rec, out = await start_fork(router)
    (inv1, _), _ = out
    edge.handle(reply(inv1, 200, "p1"), PHONE1)
    assert router.busy == [("102", "wcall@127.0.0.1")]
    edge.worker_gone("127.0.0.1", 6000)
    assert router.free == [("102", "wcall@127.0.0.1")]
