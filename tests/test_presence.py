"""Presence / BLF without sockets: the dialog-info bodies (parsed back with xml.etree),
the sans-I/O `PresenceCore` (subscriptions, NOTIFY sequence, refresh, unsubscribe,
expiry, failures, the queue log-in resource), the edge's dialog events, and the
`PresenceService` on an edge whose transports are a recorder."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from sipmessage import Message, Request, Response

from softswitch.sip import presence
from softswitch.sip.dialog_info import CONTENT_TYPE, NAMESPACE, DialogView, parse, render
from softswitch.sip.message import Peer
from softswitch.sip.presence import PresenceCore, PresenceService
from tests.test_proxy import (
    CALLER,
    PHONE1,
    PHONE2,
    WORKER,
    FakeRouter,
    fork_of,
    invites,
    make_edge,
    phone_invite,
    reply,
    responses,
    worker_invite,
)

DOMAIN = "pbx"
WATCHER = Peer("udp", "10.2.2.2", 5062, None, "outside")
EXTENSIONS = {"101", "102", "103"}
NS = "{" + NAMESPACE + "}"


def subscribe(
    user: str = "102",
    *,
    to_tag: str | None = None,
    cseq: int = 1,
    expires: int | None = 600,
    event: str = "dialog",
    call_id: str = "sub-1",
    branch: str = "z9hG4bKs1",
    accept: str | None = CONTENT_TYPE,
    auth: bool = True,
    contact: bool = True,
) -> bytes:
    to = f"<sip:{user}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SUBSCRIBE sip:{user}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 10.2.2.2:5062;rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:103@{DOMAIN}>;tag=watcher",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Event: {event}",
    ]
    if contact:
        lines.append("Contact: <sip:103@10.2.2.2:5062>")
    if accept is not None:
        lines.append(f"Accept: {accept}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if auth:
        lines.append('Proxy-Authorization: Digest username="103"')
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def request(data: bytes) -> Request:
    msg = Message.parse(data)
    assert isinstance(msg, Request)
    return msg


class Agents:
    """What the call centre says about operators' log-in, changeable by the test."""

    def __init__(self) -> None:
        self.status = {"101": "available"}

    def __call__(self, agent: str) -> str | None:
        return self.status.get(agent)


def core(agents: Agents | None = None) -> PresenceCore:
    return PresenceCore(
        DOMAIN,
        lambda n: n in EXTENSIONS,
        {"*45": "login", "*46": "pause"},
        agents or Agents(),
    )


def sub_of(c: PresenceCore, subscriber: str = "103", **kw) -> tuple[Response, list]:
    return c.subscribe(request(subscribe(**kw)), subscriber, WATCHER, "192.0.2.1:5060", 1000.0)


def doc(notify):
    """The parsed body of a Notify, after checking it is well-formed dialog-info."""
    root = ET.fromstring(notify.body)
    assert root.tag == NS + "dialog-info" and root.get("state") == "full"
    assert int(root.get("version")) == notify.version
    return parse(notify.body)


def states(notify) -> list[tuple[str, str]]:
    return [(d.state, d.direction) for d in doc(notify).dialogs]


# ------------------------------------------------------------------------- the bodies
def test_dialog_info_body_is_rfc4235_xml():
    body = render(
        "sip:102@pbx",
        7,
        [DialogView("abc", "early", "recipient", "sip:101@pbx", 'Ali"ce <&>')],
    )
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == NS + "dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == (
        "7",
        "full",
        "sip:102@pbx",
    )
    (dialog,) = root.findall(NS + "dialog")
    assert dialog.get("id") == "abc" and dialog.get("direction") == "recipient"
    assert dialog.findtext(NS + "state") == "early"
    identity = dialog.find(f"{NS}remote/{NS}identity")
    assert identity is not None and identity.text == "sip:101@pbx"
    assert identity.get("display") == 'Ali"ce <&>'
    idle = ET.fromstring(render("sip:102@pbx", 0, []))
    assert idle.findall(NS + "dialog") == [] and idle.get("version") == "0"


# ------------------------------------------------------------------------- subscribing
def test_subscribe_answers_200_and_notifies_the_full_state_at_once():
    c = core()
    resp, (first,) = sub_of(c)
    assert resp.code == 200
    assert resp.headers["Expires"] == "600"
    assert resp.headers["Contact"] == "<sip:102@192.0.2.1:5060>"
    assert resp.headers["Allow-Events"] == "dialog"
    tag = resp.to_address.parameters["tag"]
    assert first.version == 0 and first.cseq == 1
    assert first.subscription_state == "active;expires=600"
    assert doc(first).entity == "sip:102@pbx" and doc(first).dialogs == ()  # idle
    req = first.request("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKn1;rport")
    assert req.method == "NOTIFY" and str(req.uri) == "sip:103@10.2.2.2:5062"
    assert req.from_address.parameters["tag"] == tag and req.from_address.uri.user == "102"
    assert req.to_address.parameters["tag"] == "watcher"
    assert req.call_id == "sub-1" and req.cseq.sequence == 1
    assert req.headers["Event"] == "dialog"
    assert req.headers["Subscription-State"] == "active;expires=600"
    assert req.headers["Content-Type"] == CONTENT_TYPE
    assert req.headers["Contact"] == "<sip:102@192.0.2.1:5060>"
    assert first.sub.dest == WATCHER


def test_notify_sequence_early_confirmed_terminated():
    c = core()
    _, (first,) = sub_of(c)
    key = first.sub.key
    assert c.answered(key, first.cseq, 200, 1001.0) == []
    (ringing,) = c.dialog_event(
        "102", "b1", "early", "recipient", '"Alice" <sip:101@pbx>;tag=x', 1001.0
    )
    assert states(ringing) == [("early", "recipient")]
    (d,) = doc(ringing).dialogs
    assert (d.remote, d.remote_display) == ("sip:101@pbx", "Alice")
    assert ringing.version == 1 and ringing.cseq == 2
    assert ringing.subscription_state == "active;expires=599"
    c.answered(key, ringing.cseq, 200, 1002.0)
    (talking,) = c.dialog_event("102", "b1", "confirmed", "recipient", "", 1002.0)
    assert states(talking) == [("confirmed", "recipient")]
    assert doc(talking).dialogs[0].id == d.id  # the same dialog, now answered
    c.answered(key, talking.cseq, 200, 1003.0)
    (ended,) = c.dialog_event("102", "b1", "terminated", "", "", 1003.0)
    assert [x.state for x in doc(ended).dialogs] == ["terminated"]
    assert [n.version for n in (first, ringing, talking, ended)] == [0, 1, 2, 3]
    c.answered(key, ended.cseq, 200, 1004.0)
    # other extensions' calls are no news for this watcher
    assert c.dialog_event("101", "b2", "early", "initiator", "", 1004.0) == []


def test_one_notify_in_flight_later_states_wait_and_collapse():
    c = core()
    _, (first,) = sub_of(c)
    key = first.sub.key
    assert c.dialog_event("102", "b1", "early", "recipient", "", 1000.5) == []  # waits
    assert c.dialog_event("102", "b1", "confirmed", "recipient", "", 1000.6) == []
    (nxt,) = c.answered(key, first.cseq, 200, 1001.0)
    assert states(nxt) == [("confirmed", "recipient")] and nxt.version == 1
    assert c.answered(key, first.cseq, 200, 1001.0) == []  # a repeated answer: ignored
    assert c.answered(key, nxt.cseq, 200, 1001.0) == []  # nothing else waits


def test_several_phones_show_the_busiest_dialog():
    c = core()
    _, (first,) = sub_of(c)
    key = first.sub.key
    c.answered(key, 1, 200, 1000.0)
    (ring,) = c.dialog_event("102", "phone1", "early", "recipient", "", 1000.0)
    assert len(doc(ring).dialogs) == 1
    c.answered(key, ring.cseq, 200, 1000.0)
    assert c.dialog_event("102", "phone2", "early", "recipient", "", 1000.0) == []  # no news
    (up,) = c.dialog_event("102", "phone2", "confirmed", "recipient", "", 1000.0)
    assert states(up) == [("confirmed", "recipient")]
    c.answered(key, up.cseq, 200, 1000.0)
    # the other phone stops ringing: 102 is still talking, nothing to say
    assert c.dialog_event("102", "phone1", "terminated", "", "", 1000.0) == []
    # a second call rings while 102 talks: still busy
    assert c.dialog_event("102", "call2", "early", "recipient", "", 1000.0) == []
    (ringing_again,) = c.dialog_event("102", "phone2", "terminated", "", "", 1000.0)
    assert states(ringing_again) == [("early", "recipient")]
    c.answered(key, ringing_again.cseq, 200, 1000.0)
    (idle,) = c.dialog_event("102", "call2", "terminated", "", "", 1000.0)
    assert [d.state for d in doc(idle).dialogs] == ["terminated"]


def test_refresh_unsubscribe_and_what_is_refused_in_dialog():
    c = core()
    resp, (first,) = sub_of(c)
    tag = resp.to_address.parameters["tag"]
    key = first.sub.key
    c.answered(key, 1, 200, 1000.0)
    moved = Peer("tcp", "10.2.2.2", 40000, None, "outside")
    refresh = request(subscribe(to_tag=tag, cseq=2, expires=300, branch="z9hG4bKs2"))
    resp2, (again,) = c.subscribe(refresh, "103", moved, "192.0.2.1:5060", 1100.0)
    assert resp2.code == 200 and resp2.headers["Expires"] == "300"
    assert resp2.to_address.parameters["tag"] == tag
    assert again.subscription_state == "active;expires=300" and again.version == 1
    assert again.sub.dest == moved  # NOTIFYs follow the subscriber's flow
    c.answered(key, again.cseq, 200, 1100.0)
    # out of order, someone else's, unknown
    old = request(subscribe(to_tag=tag, cseq=2, branch="z9hG4bKs3"))
    assert c.subscribe(old, "103", WATCHER, "h:1", 1100.0)[0].code == 500
    theirs = request(subscribe(to_tag=tag, cseq=5, branch="z9hG4bKs4"))
    assert c.subscribe(theirs, "101", WATCHER, "h:1", 1100.0)[0].code == 403
    stray = request(subscribe(to_tag="nope", cseq=5, branch="z9hG4bKs5"))
    assert c.subscribe(stray, "103", WATCHER, "h:1", 1100.0)[0].code == 481
    # unsubscribe: 200, then a last NOTIFY saying terminated
    bye = request(subscribe(to_tag=tag, cseq=6, expires=0, branch="z9hG4bKs6"))
    resp3, (last,) = c.subscribe(bye, "103", WATCHER, "h:1", 1200.0)
    assert resp3.code == 200 and resp3.headers["Expires"] == "0"
    assert last.subscription_state == "terminated;reason=timeout" and last.final
    assert doc(last).dialogs == ()
    assert c.subs == {} and c.watchers == {} and c.per_subscriber == {}
    assert c.dialog_event("102", "b1", "early", "recipient", "", 1200.0) == []
    again_bye = request(subscribe(to_tag=tag, cseq=7, expires=0, branch="z9hG4bKs7"))
    assert c.subscribe(again_bye, "103", WATCHER, "h:1", 1200.0)[0].code == 481


def test_an_unrefreshed_subscription_expires_with_a_terminated_notify():
    c = core()
    _, (first,) = sub_of(c, expires=120)
    c.answered(first.sub.key, 1, 200, 1000.0)
    assert c.expire(1119.0) == []
    (last,) = c.expire(1120.0)
    assert last.subscription_state == "terminated;reason=timeout"
    assert c.subs == {}
    assert c.expire(1200.0) == []


def test_an_expiry_waits_for_the_notify_in_flight():
    c = core()
    _, (first,) = sub_of(c, expires=60)
    assert c.expire(1060.0) == []  # the initial NOTIFY is not answered yet
    (last,) = c.answered(first.sub.key, first.cseq, 200, 1061.0)
    assert last.final and c.subs == {}


@pytest.mark.parametrize("code", [481, 408, 500, 503])
def test_a_failed_notify_drops_the_subscription(code):
    c = core()
    _, (first,) = sub_of(c)
    assert c.answered(first.sub.key, first.cseq, 180, 1000.0) == []  # provisional
    assert c.answered(first.sub.key, first.cseq, code, 1000.0) == []
    assert c.subs == {} and c.watchers == {}
    assert c.dialog_event("102", "b1", "early", "recipient", "", 1000.0) == []


def test_a_fetch_gets_one_terminated_notify():
    c = core()
    resp, (only,) = sub_of(c, expires=0)
    assert resp.code == 200 and resp.headers["Expires"] == "0"
    assert only.final and only.subscription_state == "terminated;reason=timeout"
    assert c.subs == {}


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"user": "999"}, 404),
        ({"user": "*99"}, 404),
        ({"event": "presence"}, 489),
        ({"event": "message-summary"}, 489),
        ({"expires": 10}, 423),
        ({"accept": "application/pidf+xml"}, 406),
        ({"contact": False}, 400),
    ],
)
def test_what_is_refused(kw, code):
    c = core()
    resp, notifies = sub_of(c, **kw)
    assert resp.code == code and notifies == []
    assert c.subs == {}
    if code == 423:
        assert resp.headers["Min-Expires"] == str(presence.MIN_EXPIRES)
    if code == 489:
        assert resp.headers["Allow-Events"] == "dialog"


def test_long_subscriptions_are_shortened_and_absent_expires_is_the_default():
    c = core()
    resp, _ = sub_of(c, expires=86400)
    assert resp.headers["Expires"] == str(presence.MAX_EXPIRES)
    resp, _ = sub_of(c, expires=None, call_id="sub-2")
    assert resp.headers["Expires"] == str(presence.DEFAULT_EXPIRES)
    resp, _ = sub_of(c, accept="application/dialog-info+xml, multipart/related", call_id="s3")
    assert resp.code == 200


def test_too_many_subscriptions_of_one_extension_are_refused(monkeypatch):
    monkeypatch.setattr(presence, "MAX_PER_SUBSCRIBER", 2)
    c = core()
    assert sub_of(c, call_id="a")[0].code == 200
    assert sub_of(c, call_id="b")[0].code == 200
    assert sub_of(c, call_id="c")[0].code == 503
    assert sub_of(c, "101", call_id="d")[0].code == 200  # another extension may


# ------------------------------------------------------------------- the log-in resource
def test_the_login_key_follows_the_subscribers_own_queue_login():
    agents = Agents()
    c = core(agents)
    resp, (first,) = sub_of(c, "101", user="*45")
    assert resp.code == 200 and resp.headers["Contact"] == "<sip:*45@192.0.2.1:5060>"
    assert doc(first).entity == "sip:*45@pbx"
    assert states(first) == [("confirmed", "initiator")]  # logged in
    key = first.sub.key
    c.answered(key, 1, 200, 1000.0)
    assert c.agent_changed("101", 1000.0) == []  # nothing changed
    agents.status["101"] = "logged_out"
    (out,) = c.agent_changed("101", 1001.0)
    assert [d.state for d in doc(out).dialogs] == ["terminated"]
    c.answered(key, out.cseq, 200, 1001.0)
    assert c.agent_changed("102", 1001.0) == []  # someone else
    agents.status["101"] = "paused"  # logged in, paused: the login key is lit
    (back,) = c.agent_changed("101", 1002.0)
    assert states(back) == [("confirmed", "initiator")]


def test_the_pause_key_and_non_operators():
    agents = Agents()
    c = core(agents)
    _, (first,) = sub_of(c, "101", user="*46")
    assert [d.state for d in doc(first).dialogs] == ["terminated"]  # not paused
    c.answered(first.sub.key, 1, 200, 1000.0)
    agents.status["101"] = "paused"
    (paused,) = c.agent_changed("101", 1000.0)
    assert states(paused) == [("confirmed", "initiator")]
    resp, notifies = sub_of(c, "103", user="*45", call_id="x")  # 103 is no operator
    assert resp.code == 403 and notifies == []


# ------------------------------------------------------------------- the edge's events
def listen(edge) -> list[tuple[str, str, str, str]]:
    events: list[tuple[str, str, str, str]] = []
    edge.dialog_listeners.append(
        lambda label, key, state, direction, remote: events.append((label, key, state, direction))
    )
    return events


async def test_the_edge_reports_a_called_phones_ringing_answer_and_hangup():
    router = FakeRouter(fork_of())
    edge, rec = make_edge(router)
    events = listen(edge)
    edge.handle(worker_invite(), WORKER)
    out = invites(rec.take())
    (inv1, _), (inv2, _) = out
    b1, b2 = inv1.via[0].parameters["branch"], inv2.via[0].parameters["branch"]
    assert events == [
        ("102", b1, "early", "recipient"),
        ("102", b2, "early", "recipient"),
    ]
    edge.handle(reply(inv2, 200, "p2"), PHONE2)
    assert events[2] == ("102", b2, "confirmed", "recipient")
    edge.handle(reply(inv2, 200, "p2"), PHONE2)  # a retransmitted 2xx is no news
    edge.handle(reply(inv1, 487, "p1"), PHONE1)  # the other phone stops ringing
    assert events[3:] == [("102", b1, "terminated", "")]
    bye = (
        b"BYE sip:127.0.0.1:6000 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:7002;rport;branch=z9hG4bKbye2\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:102@pbx>;tag=p2\r\nTo: <sip:101@pbx>;tag=wtag\r\n"
        b"Call-ID: wcall@127.0.0.1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    edge.handle(bye, PHONE2)
    assert events[4:] == [("102", b2, "terminated", "")]


async def test_the_edge_reports_a_calling_phone_and_a_ring_timeout():
    router = FakeRouter()
    edge, rec = make_edge(router)
    events = listen(edge)
    edge.handle(phone_invite(auth=False), CALLER)  # challenged: nothing yet
    assert events == []
    edge.handle(phone_invite(), CALLER)
    ((fwd, _),) = invites(rec.take())
    assert [(e[0], e[2], e[3]) for e in events] == [("101", "early", "initiator")]
    key = events[0][1]
    edge.handle(reply(fwd, 200, "w"), WORKER)
    assert events[1] == ("101", key, "confirmed", "initiator")
    edge.worker_gone("127.0.0.1", 6000)  # its dialog is over
    assert events[2] == ("101", key, "terminated", "")
    # a fork whose phones never answer: the ring timeout cancels both
    edge2, rec2 = make_edge(FakeRouter(fork_of(ring_timeout=0.05)))
    events2 = listen(edge2)
    edge2.handle(worker_invite(), WORKER)
    (inv1, _), (inv2, _) = invites(rec2.take())
    await asyncio.sleep(0.1)
    edge2.handle(reply(inv1, 487, "p1"), PHONE1)
    edge2.handle(reply(inv2, 487, "p2"), PHONE2)
    assert [(e[0], e[2]) for e in events2] == [
        ("102", "early"),
        ("102", "early"),
        ("102", "terminated"),
        ("102", "terminated"),
    ]


async def test_an_unanswered_call_from_a_phone_ends_its_early_dialog():
    edge, rec = make_edge(FakeRouter())
    events = listen(edge)
    edge.handle(phone_invite(), CALLER)
    ((fwd, _),) = invites(rec.take())
    edge.handle(reply(fwd, 486, "w"), WORKER)
    assert [e[2] for e in events] == ["early", "terminated"]
    assert responses(rec.take(), CALLER)[-1] == 486


# ------------------------------------------------------------------- the service
def service_on(edge) -> PresenceService:
    config = SimpleNamespace(
        switch=SimpleNamespace(domain=DOMAIN),
        extension=lambda n: object() if n in EXTENSIONS else None,
        features=SimpleNamespace(queue_login="*45", queue_pause="*46"),
    )
    svc = PresenceService(edge, config, None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    svc.start()
    return svc


def notifies(sent, dest: Peer) -> list[Request]:
    return [m for m, p in sent if isinstance(m, Request) and m.method == "NOTIFY" and p == dest]


def ok_for(notify: Request) -> bytes:
    resp = Response(code=200, phrase="OK")
    for key in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in notify.headers.getlist(key):
            resp.headers.add(key, value)
    resp.headers.add("Content-Length", "0")
    return bytes(resp)


async def test_the_service_challenges_then_notifies_over_the_subscribers_flow():
    router = FakeRouter(fork_of())
    edge, rec = make_edge(router)
    svc = service_on(edge)
    try:
        edge.handle(subscribe(auth=False), WATCHER)
        sent = rec.take()
        assert responses(sent, WATCHER) == [407] and notifies(sent, WATCHER) == []
        edge.handle(subscribe(), WATCHER)
        sent = rec.take()
        assert responses(sent, WATCHER) == [200]
        (first,) = notifies(sent, WATCHER)
        assert first.via[0].parameters["branch"].startswith("z9hG4bK")
        assert parse(first.body).dialogs == ()
        # a retransmitted SUBSCRIBE gets the same answer, and no second subscription
        edge.handle(subscribe(), WATCHER)
        sent = rec.take()
        assert responses(sent, WATCHER) == [200] and notifies(sent, WATCHER) == []
        assert len(svc.core.subs) == 1
        edge.handle(ok_for(first), WATCHER)
        # 102 rings: the watcher hears of it
        edge.handle(worker_invite(), WORKER)
        sent = rec.take()
        (ringing,) = notifies(sent, WATCHER)
        assert [d.state for d in parse(ringing.body).dialogs] == ["early"]
        assert ringing.cseq.sequence == 2
        # no answer to it yet: UDP retransmits it
        await asyncio.sleep(presence.T1 + 0.1)
        assert [n.cseq.sequence for n in notifies(rec.take(), WATCHER)] == [2]
        edge.handle(ok_for(ringing), WATCHER)
        await asyncio.sleep(presence.T1 * 2 + 0.1)
        assert notifies(rec.take(), WATCHER) == []  # answered: no more retransmissions
        # another event package is not ours
        edge.handle(subscribe(event="message-summary", call_id="mwi"), WATCHER)
        assert responses(rec.take(), WATCHER) == [489]
    finally:
        svc.stop()
    assert edge.presence is None and edge.dialog_listeners == []


async def test_the_service_drops_a_subscriber_that_answers_481(monkeypatch):
    edge, rec = make_edge(FakeRouter(fork_of()))
    svc = service_on(edge)
    try:
        edge.handle(subscribe(), WATCHER)
        (first,) = notifies(rec.take(), WATCHER)
        gone = ok_for(first).replace(b"SIP/2.0 200 OK", b"SIP/2.0 481 Gone")
        edge.handle(gone, WATCHER)
        assert svc.core.subs == {}
        assert edge.uac_handlers == {}
    finally:
        svc.stop()


async def test_the_service_drops_a_subscriber_that_never_answers(monkeypatch):
    monkeypatch.setattr(presence, "TIMER_F", 0.2)
    edge, rec = make_edge(FakeRouter(fork_of()))
    svc = service_on(edge)
    try:
        edge.handle(subscribe(), WATCHER)
        assert len(notifies(rec.take(), WATCHER)) == 1
        await asyncio.sleep(0.4)
        assert svc.core.subs == {} and edge.uac_handlers == {}
    finally:
        svc.stop()


async def test_a_subscription_over_tcp_gets_a_tcp_contact():
    edge, rec = make_edge(FakeRouter())
    svc = service_on(edge)
    tcp = Peer("tcp", "10.2.2.2", 40001, None, "outside")
    try:
        edge.handle(subscribe().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), tcp)
        sent = rec.take()
        ((resp, _),) = [(m, p) for m, p in sent if isinstance(m, Response)]
        assert resp.headers["Contact"] == "<sip:102@127.0.0.1:5060;transport=tcp>"
        (first,) = notifies(sent, tcp)
        assert first.via[0].transport == "TCP"
        await asyncio.sleep(presence.T1 + 0.1)
        assert notifies(rec.take(), tcp) == []  # no retransmission over TCP
    finally:
        svc.stop()


async def test_a_subscribe_with_a_broken_contact_gets_400():
    edge, rec = make_edge(FakeRouter())
    svc = service_on(edge)
    try:
        broken = subscribe().replace(b"Contact: <sip:103@10.2.2.2:5062>", b"Contact: <sip:@@>")
        edge.handle(broken, WATCHER)
        sent = rec.take()
        assert responses(sent, WATCHER) == [400] and notifies(sent, WATCHER) == []
        assert svc.core.subs == {}
    finally:
        svc.stop()
