"""Presence for BLF keys: the `dialog` event package (RFC 6665 subscriptions, RFC 4235
bodies) served by the switch itself (docs/presence.md).

What can be watched (the SUBSCRIBE's Request-URI):
- `sip:102@domain`: extension 102's phones. Ringing (a branch of a call to 102 rings one
  of its phones, or 102 is dialling) is `early`, talking is `confirmed`, and the end of
  its last dialog is one `terminated`; idle is an empty document. With several phones
  (or calls) the busiest dialog is shown: confirmed over early, the oldest among equals.
- `sip:*45@domain` (the `[features] queue_login` code): the subscriber's OWN queue log-in,
  `confirmed` while they are logged in, `terminated` while out. A BLF key with that
  code lights while logged in, and pressing it dials the code, which toggles it.
- `sip:*46@domain` (`queue_pause`): likewise `confirmed` while they are paused.

Two parts:
- `PresenceCore`, sans-I/O: the phones' dialog states (fed by the edge's dialog events),
  the subscriptions and their timers' effects. It takes parsed SUBSCRIBEs and answers
  with the response and the NOTIFYs to send, each as a `Notify`; the sender reports
  every NOTIFY's answer back (`answered`). At most one NOTIFY per subscription is in
  flight (a later state waits for the answer and replaces any state waiting before it),
  so a phone never sees CSeqs out of order; every NOTIFY carries full state.
- `PresenceService`, the thin I/O side: wired to the edge (SUBSCRIBE in, NOTIFY out over
  the subscriber's own flow: the SUBSCRIBE's UDP source address or TCP connection),
  to the call centre's queue events, and to a clock for expiry and retransmissions.

Every SUBSCRIBE (refreshes and unsubscribes too) must carry digest credentials of an
extension, exactly like a phone's INVITE (407 challenge, `Registrar.authenticate_request`);
a subscription belongs to the extension that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipmessage import URI, Address, Request, Response

from softswitch.sip.dialog_info import CONTENT_TYPE, DialogView, render
from softswitch.sip.message import Peer, make_response, new_tag

if TYPE_CHECKING:
    from softswitch.callcentre import CallCentre
    from softswitch.config_types import Config
    from softswitch.sip.proxy import Edge

log = logging.getLogger(__name__)

EVENT = "dialog"
DEFAULT_EXPIRES = 3600  # RFC 4235 §3.2: the dialog package's default
MIN_EXPIRES = 60  # shorter asks get 423 with Min-Expires
MAX_EXPIRES = 3600  # longer asks are shortened to this
MAX_PER_SUBSCRIBER = 200  # an extension's phones' subscriptions together
MAX_SUBSCRIPTIONS = 20000
MAX_DIALOGS = 64  # per extension: a safety bound, the oldest go first
ACCEPTED = frozenset({CONTENT_TYPE, "application/*", "*/*"})
RANK = {"confirmed": 2, "early": 1}

T1, T2 = 0.5, 4.0  # RFC 3261 timers for the NOTIFY client transaction
TIMER_F = 64 * T1
ANSWER_LINGER = 32.0  # a SUBSCRIBE's answer is repeated for its retransmissions this long
SWEEP_INTERVAL = 1.0

SubKey = tuple[str, str, str, str]  # Call-ID, our tag, the subscriber's tag, Event id


@dataclass
class _Dialog:
    key: str
    state: str  # early / confirmed
    direction: str
    remote: str  # the other party's From/To header value
    seq: int  # order of creation


@dataclass(frozen=True)
class _Pending:
    dialogs: tuple[DialogView, ...]
    final: bool
    reason: str = ""


@dataclass
class Subscription:
    key: SubKey
    subscriber: str  # the extension that authenticated it
    kind: str  # "dialog" (resource: an extension), "login" / "pause" (the subscriber's)
    resource: str
    entity: str  # the watched URI: sip:102@domain, sip:*45@domain
    call_id: str
    local: str  # From of our NOTIFYs: the SUBSCRIBE's To with our tag
    remote: str  # To of our NOTIFYs: the SUBSCRIBE's From
    event: str  # Event header of our NOTIFYs
    target: str  # Request-URI of our NOTIFYs: the subscriber's Contact
    routes: list[str]  # the SUBSCRIBE's Record-Route (rarely any)
    dest: Peer  # where NOTIFYs go: where the SUBSCRIBE came from
    contact: str  # our Contact
    expires_at: float
    remote_cseq: int
    cseq: int = 0  # of our last NOTIFY
    version: int = 0  # of the next document
    in_flight: int | None = None  # CSeq of the NOTIFY whose answer is awaited
    pending: _Pending | None = None
    shown: tuple[DialogView, ...] | None = None  # the last state queued (no repeats)
    ending: bool = False  # its terminated NOTIFY is queued: nothing more is accepted


@dataclass(frozen=True)
class Notify:
    """A NOTIFY for the sender to send (`request`); its answer goes to `answered`."""

    sub: Subscription
    cseq: int
    version: int
    body: bytes
    subscription_state: str
    final: bool = False

    def request(self, via: str) -> Request:
        sub = self.sub
        req = Request("NOTIFY", URI.parse(sub.target), body=self.body)
        req.headers.add("Via", via)
        req.headers.add("Max-Forwards", "70")
        for route in sub.routes:
            req.headers.add("Route", route)
        req.headers.add("From", sub.local)
        req.headers.add("To", sub.remote)
        req.headers.add("Call-ID", sub.call_id)
        req.headers.add("CSeq", f"{self.cseq} NOTIFY")
        req.headers.add("Contact", sub.contact)
        req.headers.add("Event", sub.event)
        req.headers.add("Subscription-State", self.subscription_state)
        req.headers.add("Content-Type", CONTENT_TYPE)
        req.headers.add("Content-Length", str(len(self.body)))
        return req


def parse_event(value: str | None) -> tuple[str, str]:
    """An Event header value -> (package, id parameter or "")."""
    if not value:
        return "", ""
    package, *params = value.split(";")
    event_id = ""
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "id":
            event_id = val.strip()
    return package.strip().lower(), event_id


def accepts_dialog_info(request: Request) -> bool:
    """No Accept header means the package's default, which is dialog-info."""
    values = request.headers.getlist("Accept")
    if not values:
        return True
    types = {part.split(";")[0].strip().lower() for value in values for part in value.split(",")}
    return bool(types & ACCEPTED) or types <= {""}


def _parse_expires(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError("bad Expires")
    return min(int(text[:10]), 2**32 - 1)


def _identity(header: str) -> tuple[str, str]:
    """A From/To value -> (URI without parameters of the header, display name)."""
    if not header:
        return "", ""
    try:
        address = Address.parse(header)
    except Exception:
        return "", ""
    return str(address.uri), (address.name or "").strip('"')


def _dialog_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class PresenceCore:
    """Dialog states and subscriptions, sans-I/O (see the module docstring).

    `is_extension(number)`: whether a number is an extension (watchable);
    `codes`: Request-URI user -> "login" / "pause" (the feature codes, when operators exist);
    `agent_status(extension)`: "logged_out" / "available" / "paused" / ..., None for
    someone who is no queue operator."""

    def __init__(
        self,
        domain: str,
        is_extension: Callable[[str], bool],
        codes: dict[str, str] | None = None,
        agent_status: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.domain = domain
        self.is_extension = is_extension
        self.codes = dict(codes or {})
        self.agent_status = agent_status
        self.dialogs: dict[str, dict[str, _Dialog]] = {}  # extension -> key -> dialog
        self.subs: dict[SubKey, Subscription] = {}
        self.watchers: dict[tuple[str, str], set[SubKey]] = {}  # (kind, resource) -> subs
        self.per_subscriber: dict[str, int] = {}
        self._seq = 0

    # -- what a resource looks like ------------------------------------------------------
    def view(
        self, kind: str, resource: str, ended: _Dialog | None = None
    ) -> tuple[DialogView, ...]:
        if kind == "dialog":
            table = self.dialogs.get(resource)
            if table:
                busiest = max(table.values(), key=lambda d: (RANK.get(d.state, 0), -d.seq))
                return (self._dialog_view(busiest, busiest.state),)
            if ended is not None:  # its last dialog just ended: say so once
                return (self._dialog_view(ended, "terminated"),)
            return ()
        status = self.agent_status(resource)
        on = status == "paused" if kind == "pause" else status not in (None, "logged_out")
        if on:
            return (DialogView(kind, "confirmed", "initiator"),)
        return (DialogView(kind, "terminated"),)

    @staticmethod
    def _dialog_view(d: _Dialog, state: str) -> DialogView:
        uri, name = _identity(d.remote)
        return DialogView(_dialog_id(d.key), state, d.direction, uri, name)

    # -- state feeds ---------------------------------------------------------------------
    def dialog_event(
        self, extension: str, key: str, state: str, direction: str, remote: str, now: float
    ) -> list[Notify]:
        """The edge saw extension's phone dialog `key` become early, confirmed or
        terminated (Edge.dialog_listeners)."""
        if not self.is_extension(extension):
            return []
        ended: _Dialog | None = None
        if state == "terminated":
            table = self.dialogs.get(extension, {})
            ended = table.pop(key, None)
            if ended is None:
                return []
            if not table:
                self.dialogs.pop(extension, None)
        elif state in RANK:
            table = self.dialogs.setdefault(extension, {})
            d = table.get(key)
            if d is None:
                self._seq += 1
                table[key] = _Dialog(key, state, direction, remote, self._seq)
                while len(table) > MAX_DIALOGS:
                    oldest = min(table.values(), key=lambda d: d.seq)
                    del table[oldest.key]
            else:
                d.state = state
                d.direction = direction or d.direction
                d.remote = remote or d.remote
        else:
            return []
        return self._changed("dialog", extension, now, ended)

    def agent_changed(self, agent: str, now: float) -> list[Notify]:
        """Something happened to operator `agent` (a queue_log row): their log-in and
        pause keys may change."""
        return self._changed("login", agent, now) + self._changed("pause", agent, now)

    def _changed(
        self, kind: str, resource: str, now: float, ended: _Dialog | None = None
    ) -> list[Notify]:
        keys = self.watchers.get((kind, resource))
        if not keys:
            return []
        view = self.view(kind, resource, ended)
        out: list[Notify] = []
        for key in list(keys):
            out += self._queue(self.subs[key], view, now)
        return out

    # -- SUBSCRIBE -----------------------------------------------------------------------
    def subscribe(
        self, request: Request, subscriber: str, source: Peer, contact_host: str, now: float
    ) -> tuple[Response, list[Notify]]:
        """An authenticated SUBSCRIBE from extension `subscriber`, arrived from `source`;
        `contact_host` is our host:port as the subscriber reaches us."""
        package, event_id = parse_event(request.headers.get("Event"))
        if package != EVENT:
            return make_response(request, 489, headers=[("Allow-Events", EVENT)]), []
        try:
            expires = _parse_expires(request.headers.get("Expires"))
        except ValueError:
            return make_response(request, 400, "Bad Expires"), []
        their_tag = request.from_address.parameters.get("tag")
        if not their_tag:
            return make_response(request, 400, "Missing From tag"), []
        our_tag = request.to_address.parameters.get("tag")
        if our_tag:
            key = (request.call_id, our_tag, their_tag, event_id)
            return self._refresh(request, key, subscriber, source, expires, now)
        if not request.contact:
            return make_response(request, 400, "Missing Contact"), []
        if not accepts_dialog_info(request):
            return make_response(request, 406, headers=[("Accept", CONTENT_TYPE)]), []
        user = request.uri.user or ""
        if self.is_extension(user):
            kind, resource = "dialog", user
        elif user in self.codes:
            kind, resource = self.codes[user], subscriber
            if self.agent_status(subscriber) is None:
                return make_response(request, 403, "Forbidden (not a queue operator)"), []
        else:
            return make_response(request, 404), []
        expires = DEFAULT_EXPIRES if expires is None else expires
        if 0 < expires < MIN_EXPIRES:
            return make_response(request, 423, headers=[("Min-Expires", str(MIN_EXPIRES))]), []
        expires = min(expires, MAX_EXPIRES)
        if (
            len(self.subs) >= MAX_SUBSCRIPTIONS
            or self.per_subscriber.get(subscriber, 0) >= MAX_PER_SUBSCRIBER
        ):
            log.warning("presence: subscription of %s to %s refused: too many", subscriber, user)
            return make_response(request, 503, "Service Unavailable (too many subscriptions)"), []
        params = ";transport=tcp" if source.transport == "tcp" else ""
        contact = f"<sip:{user}@{contact_host}{params}>"
        tag = new_tag()
        resp = make_response(
            request,
            200,
            to_tag=tag,
            headers=[("Expires", str(expires)), ("Contact", contact), ("Allow-Events", EVENT)],
        )
        key = (request.call_id, tag, their_tag, event_id)
        sub = Subscription(
            key=key,
            subscriber=subscriber,
            kind=kind,
            resource=resource,
            entity=f"sip:{user}@{self.domain}",
            call_id=request.call_id,
            local=resp.headers["To"],
            remote=request.headers["From"],
            event=f"{EVENT};id={event_id}" if event_id else EVENT,
            target=str(request.contact[0].uri),
            routes=list(request.headers.getlist("Record-Route")),
            dest=source,
            contact=contact,
            expires_at=now + expires,
            remote_cseq=request.cseq.sequence,
        )
        self.subs[key] = sub
        self.watchers.setdefault((kind, resource), set()).add(key)
        self.per_subscriber[subscriber] = self.per_subscriber.get(subscriber, 0) + 1
        log.info("presence: %s watches %s for %d s (%s)", subscriber, sub.entity, expires, source)
        view = self.view(kind, resource)
        # Expires 0 is a fetch: one NOTIFY with the state, and the subscription is over.
        return resp, self._queue(sub, view, now, force=True, final=expires == 0)

    def _refresh(
        self,
        request: Request,
        key: SubKey,
        subscriber: str,
        source: Peer,
        expires: int | None,
        now: float,
    ) -> tuple[Response, list[Notify]]:
        sub = self.subs.get(key)
        if sub is None or sub.ending:
            return make_response(request, 481), []
        if sub.subscriber != subscriber:
            return make_response(request, 403, "Forbidden (not your subscription)"), []
        if request.cseq.sequence <= sub.remote_cseq:
            return make_response(request, 500, "Out Of Order"), []
        expires = DEFAULT_EXPIRES if expires is None else expires
        if 0 < expires < MIN_EXPIRES:
            return make_response(request, 423, headers=[("Min-Expires", str(MIN_EXPIRES))]), []
        expires = min(expires, MAX_EXPIRES)
        sub.remote_cseq = request.cseq.sequence
        sub.dest = source
        if request.contact:
            sub.target = str(request.contact[0].uri)
        resp = make_response(
            request,
            200,
            headers=[("Expires", str(expires)), ("Contact", sub.contact), ("Allow-Events", EVENT)],
        )
        view = self.view(sub.kind, sub.resource)
        if expires == 0:
            log.info("presence: %s stops watching %s", subscriber, sub.entity)
            return resp, self._queue(sub, view, now, force=True, final=True)
        sub.expires_at = now + expires
        return resp, self._queue(sub, view, now, force=True)

    # -- NOTIFY flow -----------------------------------------------------------------------
    def _queue(
        self,
        sub: Subscription,
        view: tuple[DialogView, ...],
        now: float,
        *,
        force: bool = False,
        final: bool = False,
        reason: str = "timeout",
    ) -> list[Notify]:
        if sub.ending:
            return []
        if not (force or final) and view == sub.shown:
            return []
        sub.shown = view
        if final:
            sub.ending = True
        sub.pending = _Pending(view, final, reason)
        return self._release(sub, now)

    def _release(self, sub: Subscription, now: float) -> list[Notify]:
        if sub.in_flight is not None or sub.pending is None:
            return []
        pending, sub.pending = sub.pending, None
        sub.cseq += 1
        version, sub.version = sub.version, sub.version + 1
        if pending.final:
            state = f"terminated;reason={pending.reason}"
            self._forget(sub)
        else:
            state = f"active;expires={max(1, round(sub.expires_at - now))}"
            sub.in_flight = sub.cseq
        body = render(sub.entity, version, pending.dialogs)
        return [Notify(sub, sub.cseq, version, body, state, pending.final)]

    def answered(self, key: SubKey, cseq: int, code: int, now: float) -> list[Notify]:
        """The final answer to our NOTIFY `cseq` of subscription `key` (408 when none
        came, 503 when it could not be sent). A failure ends the subscription
        (RFC 6665 §4.2.2); a success lets the next state go."""
        sub = self.subs.get(key)
        if sub is None or sub.in_flight != cseq or code < 200:
            return []
        sub.in_flight = None
        if code >= 300:
            log.info(
                "presence: NOTIFY to %s for %s got %d: subscription dropped",
                sub.subscriber,
                sub.entity,
                code,
            )
            self._forget(sub)
            return []
        return self._release(sub, now)

    def expire(self, now: float) -> list[Notify]:
        """Subscriptions not refreshed in time end with a terminated NOTIFY."""
        out: list[Notify] = []
        for sub in list(self.subs.values()):
            if sub.expires_at <= now and not sub.ending:
                log.info("presence: %s's subscription to %s expired", sub.subscriber, sub.entity)
                view = self.view(sub.kind, sub.resource)
                out += self._queue(sub, view, now, force=True, final=True)
        return out

    def _forget(self, sub: Subscription) -> None:
        if self.subs.pop(sub.key, None) is None:
            return
        watchers = self.watchers.get((sub.kind, sub.resource))
        if watchers is not None:
            watchers.discard(sub.key)
            if not watchers:
                del self.watchers[(sub.kind, sub.resource)]
        count = self.per_subscriber.get(sub.subscriber, 0) - 1
        if count > 0:
            self.per_subscriber[sub.subscriber] = count
        else:
            self.per_subscriber.pop(sub.subscriber, None)


@dataclass
class _Transaction:
    """One NOTIFY client transaction (RFC 3261 §17.1.2, timers E and F)."""

    notify: Notify
    data: bytes
    dest: Peer
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class PresenceService:
    """The I/O side: SUBSCRIBEs from the edge, NOTIFYs out through it."""

    def __init__(
        self,
        edge: Edge,
        config: Config,
        callcentre: CallCentre | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.edge = edge
        self.callcentre = callcentre
        self.clock = clock
        codes: dict[str, str] = {}
        if callcentre is not None and callcentre.agents:
            features = config.features
            for code, kind in ((features.queue_login, "login"), (features.queue_pause, "pause")):
                if code:
                    codes[code] = kind

        def agent_status(agent: str) -> str | None:
            if callcentre is None or agent not in callcentre.agents:
                return None
            return callcentre.agent_status(agent)

        self.core = PresenceCore(
            config.switch.domain,
            lambda number: config.extension(number) is not None,
            codes,
            agent_status,
        )
        self._answers: OrderedDict[tuple[str, ...], tuple[float, bytes]] = OrderedDict()
        self._txns: dict[str, _Transaction] = {}  # by our Via branch
        self._sweeper: asyncio.Task | None = None

    def start(self) -> None:
        self.edge.presence = self
        self.edge.dialog_listeners.append(self.dialog_event)
        if self.callcentre is not None:
            self.callcentre.listeners.append(self.queue_event)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for branch in list(self._txns):
            self._end(branch)
        if self.edge.presence is self:
            self.edge.presence = None
        with contextlib.suppress(ValueError):
            self.edge.dialog_listeners.remove(self.dialog_event)
        if self.callcentre is not None:
            with contextlib.suppress(ValueError):
                self.callcentre.listeners.remove(self.queue_event)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self._send_all(self.core.expire(self.clock()))
            except Exception:
                log.exception("presence sweep failed")

    # -- in ------------------------------------------------------------------------------
    def on_subscribe(self, request: Request, source: Peer) -> None:
        now = self.clock()
        key = self._answer_key(request, source)
        self._prune_answers(now)
        remembered = self._answers.get(key)
        if remembered is not None:  # a retransmission: the same answer again
            self.edge.transports.send(remembered[1], source)
            return
        package, _ = parse_event(request.headers.get("Event"))
        if package != EVENT:  # message-summary, presence, ...: not served here
            resp = make_response(request, 489, headers=[("Allow-Events", EVENT)])
            self.edge.transports.send(bytes(resp), source)
            return
        registrar = self.edge.registrar
        subscriber, challenge = registrar.authenticate_request(request, source, now)  # type: ignore[attr-defined]
        if subscriber is None:
            if challenge is not None:
                self.edge.transports.send(bytes(challenge), source)
            return
        try:
            resp, notifies = self.core.subscribe(
                request, subscriber, source, self.edge.sent_by(source), now
            )
        except Exception as exc:  # a header the parser let through but we cannot use
            log.info("presence: SUBSCRIBE from %s refused: %s", source, exc)
            resp, notifies = make_response(request, 400), []
        data = bytes(resp)
        self._answers[key] = (now, data)
        self.edge.transports.send(data, source)
        self._send_all(notifies)

    @staticmethod
    def _answer_key(request: Request, source: Peer) -> tuple[str, ...]:
        branch = request.via[0].parameters.get("branch", "") if request.via else ""
        return (branch, request.call_id, str(request.cseq.sequence), str(source))

    def _prune_answers(self, now: float) -> None:
        while self._answers:
            when, _ = next(iter(self._answers.values()))
            if when > now - ANSWER_LINGER and len(self._answers) <= 4096:
                break
            self._answers.popitem(last=False)

    def dialog_event(
        self, extension: str, key: str, state: str, direction: str, remote: str
    ) -> None:
        self._send_all(
            self.core.dialog_event(extension, key, state, direction, remote, self.clock())
        )

    def queue_event(self, row: dict) -> None:
        agent = row.get("agent")
        if agent:
            self._send_all(self.core.agent_changed(str(agent), self.clock()))

    # -- out -----------------------------------------------------------------------------
    def _send_all(self, notifies: list[Notify]) -> None:
        for notify in notifies:
            self._send(notify)

    def _send(self, notify: Notify) -> None:
        dest = notify.sub.dest
        branch = "z9hG4bK" + secrets.token_hex(12)
        try:
            sent_by = self.edge.sent_by(dest)
            via = f"SIP/2.0/{dest.transport.upper()} {sent_by};branch={branch};rport"
            data = bytes(notify.request(via))
        except Exception:
            log.exception("presence: cannot build a NOTIFY for %s", notify.sub.entity)
            self._answered(notify, 500)
            return
        txn = _Transaction(notify, data, dest)
        self._txns[branch] = txn
        self.edge.uac_handlers[branch] = lambda resp, _peer: self._on_response(branch, resp)
        if not self.edge.transports.send(data, dest):
            self._end(branch)
            self._answered(notify, 503)
            return
        loop = asyncio.get_running_loop()
        if dest.transport == "udp":
            txn.timers.append(loop.call_later(T1, self._retransmit, branch, T1))
        txn.timers.append(loop.call_later(TIMER_F, self._timeout, branch))

    def _retransmit(self, branch: str, interval: float) -> None:
        txn = self._txns.get(branch)
        if txn is None:
            return
        self.edge.transports.send(txn.data, txn.dest)
        interval = min(2 * interval, T2)
        txn.timers.append(
            asyncio.get_running_loop().call_later(interval, self._retransmit, branch, interval)
        )

    def _timeout(self, branch: str) -> None:
        txn = self._end(branch)
        if txn is not None:
            self._answered(txn.notify, 408)

    def _on_response(self, branch: str, resp: Response) -> None:
        if resp.code < 200:
            return  # provisional: keep waiting (Timer F still runs)
        txn = self._end(branch)
        if txn is not None:
            self._answered(txn.notify, resp.code)

    def _end(self, branch: str) -> _Transaction | None:
        txn = self._txns.pop(branch, None)
        self.edge.uac_handlers.pop(branch, None)
        if txn is not None:
            for timer in txn.timers:
                timer.cancel()
        return txn

    def _answered(self, notify: Notify, code: int) -> None:
        self._send_all(self.core.answered(notify.sub.key, notify.cseq, code, self.clock()))
