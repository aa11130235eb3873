"""Trunks in the running switch: registrations, calls from providers, and outside calls
over `[[route]]`s with failover (docs/trunks.md).

`TrunkService` is the coordinator's trunk department. The coordinator asks it:
- `trunk_for(request, source)` (for the edge): is this INVITE a provider's call?
- `inbound(request, trunk, now)`: a provider's call to a DID: a flow session at the
  block the trunk's `numbers` name (or a Reject: unknown number 404, trunk full 503);
- `outbound(caller, dialed, now)`: an extension dialled a number no extension has: the
  first `[[route]]` that matches decides (class allowed? caps?), and the call becomes a
  flow session whose flow dials the route's trunks one after the other (`_dial_out`);
- `route_outbound(request)`: the worker's INVITE for one trunk attempt: a `Fork` with one
  target, the provider, presenting the route's caller ID.

Failover happens here, one attempt (one worker leg) per trunk, and not in the edge: the
provider's digest challenge to an INVITE must be answered by the worker's pjsua (which
then keeps CSeq numbering right for the whole dialog), so every attempt is its own
INVITE with its own credentials. An attempt fails over on 5xx, 408 (including no answer
at all within the trunk's `response_timeout`), 401 and 407 (credentials refused); any
other failure (486 busy, 404, 480 ...) is the called number's answer and ends the call.

The registration of each `register = true` trunk is a `softswitch.sip.trunk.Registration`
driven by one task here: REGISTERs go out through the edge's outside sockets and the
edge hands the responses back by branch (`Edge.uac_handlers`). State changes are
logged, kept for `status()` (`Coordinator.trunk_status()`) and written to
DATA_DIR/trunks.json for `softswitch status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipmessage import Request, Response

from softswitch.config_types import RouteConfig, TrunkConfig
from softswitch.flow.call import Call, CallerHungUp
from softswitch.sip.defence import CallsPerHour
from softswitch.sip.message import Peer
from softswitch.sip.routing import BranchRecord, Fork, ForkWatcher, Reject, Target, ToWorker
from softswitch.sip.trunk import (
    Registration,
    Sources,
    find_number,
    from_provider,
    to_provider,
)

if TYPE_CHECKING:
    from softswitch.coordinator import Coordinator
    from softswitch.flow.session import FlowSession
    from softswitch.media.pool import Worker

log = logging.getLogger(__name__)

RESOLVE_EVERY = 300.0  # seconds between DNS lookups of the providers' names
FAILOVER_GRACE = 0.3  # seconds between attempts (pjsua frees a call slot late)
DIALLED = re.compile(r"\+?[0-9*#]{1,32}")
CALLER = re.compile(r"[^A-Za-z0-9+*#._-]")
FAILOVER_CODES = frozenset({401, 407, 408}) | frozenset(range(500, 600))

# what the caller gets, and what the call record says, when the last trunk said `code`
OUTCOMES: dict[int, tuple[int, str]] = {
    486: (486, "busy"),
    600: (486, "busy"),
    480: (480, "no-answer"),
    487: (480, "no-answer"),
    404: (404, "not-found"),
    484: (484, "not-found"),
    604: (404, "not-found"),
    403: (403, "rejected"),
    603: (603, "rejected"),
}

Place = Callable[[str, str, "Worker", float], ToWorker]


@dataclass
class Plan:
    """An outside call as the route decided it."""

    route: RouteConfig
    caller: str  # extension
    dialled: str  # as dialled
    number: str  # as sent (strip/prepend applied)


class Attempt(ForkWatcher):
    """One worker leg toward one trunk; the context of its fork(s) in the edge, where
    it learns the provider's real final code (the edge tells a worker 480 for a failed
    fork, whatever the phones said)."""

    def __init__(
        self, leg: str, call_id: str, trunk: TrunkConfig, uri: str, from_header: str, dest: Peer
    ) -> None:
        self.leg = leg
        self.call_id = call_id
        self.trunk = trunk
        self.uri = uri
        self.from_header = from_header
        self.dest = dest
        self.routed = False  # the worker's INVITE reached the edge
        self.code: int | None = None  # the provider's final code of the last fork
        self.ring_timeout = 120.0

    def fork_started(self, fork: object) -> None:
        self.code = None  # a new INVITE (the answer to a challenge, say)

    def branch_ended(self, record: BranchRecord, now: float) -> None:
        self.code = record.code


def sip_user(number: str) -> str:
    return number.replace("#", "%23")


@dataclass(eq=False, repr=False)
class TrunkService:
    co: Coordinator
    trunks: dict[str, TrunkConfig] = field(default_factory=dict)
    sources: Sources | None = None
    dests: dict[str, Peer] = field(default_factory=dict)  # where requests to a trunk go
    registrations: dict[str, Registration] = field(default_factory=dict)
    active: Counter = field(default_factory=Counter)  # calls per trunk, both ways
    outgoing: Counter = field(default_factory=Counter)  # outside calls per extension
    hourly: dict[str, CallsPerHour] = field(default_factory=dict)  # per route
    attempts: dict[str, Attempt] = field(default_factory=dict)  # by worker leg
    status_file: Path | None = None

    def __post_init__(self) -> None:
        config = self.co.config
        self.trunks = {t.name: t for t in config.trunks}
        self.sources = Sources(config.trunks)
        for route in config.routes:
            if route.max_calls_per_hour:
                self.hourly[route.name] = CallsPerHour(route.max_calls_per_hour)
        self.status_file = self.co.data_dir / "trunks.json"
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._branches: dict[str, str] = {}  # REGISTER branch -> trunk
        self._resolved_at = 0.0
        self._written_calls: Counter = Counter()

    def _guard_tripped(self, route: str, extension: str, limit: int, now: float) -> None:
        """Tell `[notify] alerts` (once per extension, route and hour)."""
        alerts = self.co.config.notify.alerts
        service = getattr(self.co, "notifications", None)
        if not alerts or service is None:
            return
        from softswitch.notify.content import outbound_guard

        note = outbound_guard(route, extension, limit, now, self.co.config.switch.timezone)
        service.notifier.queue(note, alerts)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self.trunks:
            return
        await self._resolve_all()
        for trunk in self.trunks.values():
            if trunk.register:
                dest = self.dests.get(trunk.name)
                self._new_registration(trunk, dest)
        self._write_status()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        now = self.co.clock()
        for name, reg in self.registrations.items():
            data = reg.stop(now)
            dest = self.dests.get(name)
            if data is not None and dest is not None and self.co.transports is not None:
                self.co.transports.send(data, dest)
        self._write_status()

    def describe(self) -> list[str]:
        """Lines for the start-up summary."""
        if not self.trunks:
            return []
        lines = ["trunks:"]
        for name, trunk in self.trunks.items():
            where = f"{trunk.transport}:{trunk.host}:{trunk.port}" if trunk.host else "no host"
            what = ["registers"] if trunk.register else []
            what += [f"{len(trunk.numbers)} number(s)"] if trunk.numbers else []
            lines.append(f"  {name}  {where}  {', '.join(what)}".rstrip())
        for route in self.co.config.routes:
            lines.append(f"  route {route.name} ({route.call_class}) -> {', '.join(route.trunks)}")
        return lines

    def status(self) -> list[dict[str, Any]]:
        """Every trunk: registration state (or "not registering"), calls, address."""
        now = self.co.clock()
        out = []
        for name, trunk in self.trunks.items():
            reg = self.registrations.get(name)
            entry: dict[str, Any] = (
                reg.status(now)
                if reg is not None
                else {"trunk": name, "state": "not registering" if trunk.host else "inbound only"}
            )
            dest = self.dests.get(name)
            entry["address"] = f"{dest.transport}:{dest.host}:{dest.port}" if dest else None
            entry["calls"] = self.active[name]
            out.append(entry)
        return out

    # -- registrations -----------------------------------------------------------------
    def _new_registration(self, trunk: TrunkConfig, dest: Peer | None) -> None:
        edge = self.co.edge
        assert edge is not None
        probe = dest or Peer(trunk.transport, "0.0.0.0", trunk.port, None, "outside")
        try:
            local = edge.sent_by(probe)
        except RuntimeError:
            local = f"{self.co.config.switch.public_address}:5060"
        params = ";transport=tcp" if trunk.transport == "tcp" else ""
        contact = f"sip:{trunk.username}@{local}{params}"
        reg = Registration(trunk, local=local, contact=contact, on_change=self._reg_changed)
        self.registrations[trunk.name] = reg

    def _reg_changed(self, reg: Registration) -> None:
        level = logging.WARNING if reg.state == "failed" else logging.INFO
        log.log(level, "trunk %s: %s (%s)", reg.trunk.name, reg.state, reg.reason)
        self._write_status()

    async def _run(self) -> None:
        while True:
            try:
                await self._turn()
            except Exception:  # a bug must not end every registration for good
                log.exception("trunk registrations: unexpected error")
                await asyncio.sleep(5.0)
                continue
            wakeups = [r.next_wakeup() for r in self.registrations.values()]
            delay = min([w - self.co.clock() for w in wakeups] + [RESOLVE_EVERY])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(max(delay, 0.05), 5.0))

    async def _turn(self) -> None:
        now = self.co.clock()
        if now - self._resolved_at >= RESOLVE_EVERY:
            await self._resolve_all()
            now = self.co.clock()
        for name, reg in self.registrations.items():
            if reg.due(now):
                await self._send_register(name, reg, now)
            else:
                data = reg.poll(now)
                if data is not None:
                    self._send(name, data)
        if +self.active != self._written_calls:
            self._write_status()  # call counts for `softswitch status`, at most every 5 s

    async def _send_register(self, name: str, reg: Registration, now: float) -> None:
        dest = self.dests.get(name)
        if dest is None:
            reg.fail(f"cannot resolve {reg.trunk.remote[0]}", now)
            return
        if dest.transport == "tcp" and not await self._connect(dest):
            reg.fail(f"cannot connect to {dest.host}:{dest.port}", now)
            return
        self._send(name, reg.start(now))

    def _send(self, name: str, data: bytes) -> None:
        reg = self.registrations[name]
        edge = self.co.edge
        assert edge is not None
        for branch, trunk in list(self._branches.items()):
            if trunk == name and branch not in reg.branches:
                edge.uac_handlers.pop(branch, None)
                del self._branches[branch]
        for branch in reg.branches:
            self._branches[branch] = name
            edge.uac_handlers[branch] = self._on_register_response
        dest = self.dests.get(name)
        if dest is not None and self.co.transports is not None:
            self.co.transports.send(data, dest)

    def _on_register_response(self, resp: Response, source: Peer) -> None:
        branch = resp.via[0].parameters.get("branch", "")
        name = self._branches.get(branch)
        reg = self.registrations.get(name or "")
        if reg is None or resp.cseq.method != "REGISTER":
            return
        follow_up = reg.on_response(resp, self.co.clock())
        if follow_up is not None:
            self._send(reg.trunk.name, follow_up)
        self._wake.set()

    async def _connect(self, dest: Peer) -> bool:
        transports = self.co.transports
        connect = getattr(transports, "connect_tcp", None)
        if connect is None:
            return False
        try:
            await connect(dest.host, dest.port)
        except OSError as exc:
            log.warning("trunk: cannot connect to %s:%s: %s", dest.host, dest.port, exc)
            return False
        return True

    async def _resolve_all(self) -> None:
        self._resolved_at = self.co.clock()
        loop = asyncio.get_running_loop()
        assert self.sources is not None
        for trunk in self.trunks.values():
            if not trunk.host:
                continue
            addresses: list[tuple[str, int]] = []
            dest: Peer | None = None
            for host, port in (trunk.remote, (trunk.host, trunk.port)):
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                except OSError as exc:
                    log.warning("trunk %s: cannot resolve %s: %s", trunk.name, host, exc)
                    continue
                for info in infos:
                    addresses.append((str(info[4][0]), port))
                if dest is None and (host, port) == trunk.remote and infos:
                    dest = Peer(trunk.transport, str(infos[0][4][0]), port, None, "outside")
            if dest is not None:
                old = self.dests.get(trunk.name)
                if old != dest:
                    log.info("trunk %s: requests go to %s", trunk.name, dest)
                self.dests[trunk.name] = dest
            self.sources.set_provider(trunk.name, addresses)

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        self._written_calls = +self.active
        data = {"pid": os.getpid(), "updated": self.co.clock(), "trunks": self.status()}
        tmp = self.status_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.status_file)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.status_file, exc)

    # -- calls from providers ------------------------------------------------------------
    def trunk_for(self, request: Request, source: Peer) -> str | None:
        """The trunk an outside INVITE comes from; "" for an anonymous caller to a number
        an `anonymous = true` trunk lists; None: not a trunk's call (challenge it)."""
        if not self.trunks or self.sources is None:
            return None
        name = self.sources.match(source)
        if name is not None:
            return name
        if request.headers.get("Proxy-Authorization"):
            return None  # a phone answering our challenge
        for trunk in self.trunks.values():
            if trunk.anonymous and find_number(request, trunk.numbers) is not None:
                return ""
        return None

    def inbound(self, request: Request, name: str, now: float) -> Reject | Place:
        """Where a provider's call (or an anonymous one, `name` "") goes."""
        if name:
            trunk: TrunkConfig | None = self.trunks[name]
            assert trunk is not None
            found = find_number(request, trunk.numbers)
        else:
            trunk, found = None, None
            for t in self.trunks.values():
                if t.anonymous:
                    found = find_number(request, t.numbers)
                    if found is not None:
                        trunk = t
                        break
        if trunk is None or found is None:
            log.info("trunk %s: call to an unknown number %s: 404", name, request.uri.user)
            return Reject(404, "Not Found (unknown number)")
        if trunk.max_calls and self.active[trunk.name] >= trunk.max_calls:
            log.warning("trunk %s: %d calls, its max_calls: 503", trunk.name, trunk.max_calls)
            return Reject(503, "Service Unavailable (trunk busy)")
        did, block = found
        try:
            raw = request.from_address.uri.user or ""
        except Exception:
            raw = ""
        caller = CALLER.sub("", from_provider(raw, trunk))[:32] or "anonymous"
        config = self.co.config
        if not name and (config.extension(caller) is not None or caller in config.features.codes()):
            caller = "anonymous"  # nobody calls as one of our extensions without a password
        label = trunk.name if name else f"{trunk.name} (anonymous)"
        log.info("trunk %s: call from %s to %s -> block %s", label, caller, did, block)
        return self._place_inbound(trunk, did, block, caller, anonymous=not name)

    def _place_inbound(
        self, trunk: TrunkConfig, did: str, block: str, caller: str, anonymous: bool
    ) -> Place:
        from softswitch.flow.blocks import run_flow

        co = self.co

        async def flow(call: Call) -> None:
            await run_flow(call, co.flow_context, block)

        def place(_caller: str, _dialled: str, worker: Worker, now: float) -> ToWorker:
            placed = co._place_flow(caller, did, worker, now, flow, kind="inbound")
            self._count(placed.context, trunk=trunk.name)
            header = ("X-Trunk", trunk.name + (";anonymous" if anonymous else ""))
            return ToWorker(placed.worker, placed.headers + (header,), placed.context)

        return place

    def _count(self, session: object, *, trunk: str | None = None, ext: str | None = None) -> None:
        """Count a session against its trunk / extension until it closes."""
        if trunk is not None:
            self.active[trunk] += 1
        if ext is not None:
            self.outgoing[ext] += 1
        closed = getattr(session, "on_closed", None)

        def done(s: FlowSession) -> None:
            if trunk is not None:
                self.active[trunk] -= 1
            if ext is not None:
                self.outgoing[ext] -= 1
            if closed is not None:
                closed(s)

        session.on_closed = done  # type: ignore[attr-defined]

    # -- outside calls -----------------------------------------------------------------
    def route_for(self, dialled: str) -> RouteConfig | None:
        if not DIALLED.fullmatch(dialled):
            return None
        for route in self.co.config.routes:
            if route.matches(dialled):
                return route
        return None

    def outbound(self, caller: str, dialled: str, now: float) -> Reject | Place | None:
        """An extension dialled `dialled`, which no extension has: None when no route
        matches (404), a Reject when the caller may not use it, else how to place it."""
        route = self.route_for(dialled)
        if route is None:
            return None
        ext = self.co.config.extension(caller)
        if ext is None or route.call_class not in ext.classes:
            log.warning(
                "route %s: %s may not call %s (class %s): 403",
                route.name,
                caller,
                dialled,
                route.call_class,
            )
            return Reject(403, f"Forbidden ({route.call_class} calls not allowed)")
        cap = route.max_calls_per_extension
        if cap and self.outgoing[caller] >= cap:
            log.warning("route %s: %s has %d outside calls already: 403", route.name, caller, cap)
            return Reject(403, "Forbidden (too many outside calls)")
        usable = [
            t
            for t in route.trunks
            if t in self.dests
            and not (self.trunks[t].max_calls and self.active[t] >= self.trunks[t].max_calls)
        ]
        if not usable:
            log.warning("route %s: no trunk can take a call now: 503", route.name)
            return Reject(503, "Service Unavailable (trunks busy or unreachable)")
        guard = self.hourly.get(route.name)
        if guard is not None and not guard.allow(caller, now):
            self._guard_tripped(route.name, caller, guard.limit, now)
            return Reject(403, "Forbidden (hourly call limit)")
        plan = Plan(route, caller, dialled, route.rewrite(dialled))
        log.info(
            "route %s: %s calls %s as %s via %s",
            route.name,
            caller,
            dialled,
            plan.number,
            ", ".join(route.trunks),
        )
        co = self.co

        async def flow(call: Call) -> None:
            await self._dial_out(call, plan)

        def place(caller: str, dialled: str, worker: Worker, now: float) -> ToWorker:
            placed = co._place_flow(caller, dialled, worker, now, flow, kind="outbound")
            self._count(placed.context, ext=caller)
            return placed

        return place

    def route_outbound(self, request: Request) -> Fork | None:
        """The worker's INVITE of a trunk attempt: to the provider, nothing else."""
        attempt = self.attempts.get(request.headers.get("X-Leg") or "")
        if attempt is None or request.headers.get("X-Call") != attempt.call_id:
            return None
        attempt.routed = True
        return Fork(
            targets=(Target(contact=attempt.uri, dest=attempt.dest, label=""),),
            ring_timeout=attempt.ring_timeout,
            from_header=attempt.from_header,
            context=attempt,
            response_timeout=attempt.trunk.response_timeout,
        )

    def caller_id(self, plan: Plan, trunk: TrunkConfig) -> str:
        """The number presented to `trunk`, in its format: the route's caller_id ({ext}
        replaced), else the trunk's username (a registered account's own number), else
        the extension number."""
        if plan.route.caller_id:
            number = plan.route.caller_id.replace("{ext}", plan.caller)
        else:
            number = trunk.username or plan.caller
        return to_provider(number, trunk)

    async def _dial_out(self, call: Call, plan: Plan) -> None:
        """The flow of an outside call: each trunk of the route in turn until one
        answers or the called number gives a final answer; then bridge, or hang up the
        caller with that answer."""
        session = self.co.sessions.get(call.call_id)
        if session is None:
            return
        tried: list[str] = []
        code: int | None = None
        attempts = 0
        for name in plan.route.trunks:
            trunk = self.trunks[name]
            dest = self.dests.get(name)
            if dest is None:
                tried.append(f"{name} unreachable")
                continue
            if trunk.max_calls and self.active[name] >= trunk.max_calls:
                tried.append(f"{name} full")
                continue
            if dest.transport == "tcp" and not await call.wait(self._connect(dest)):
                tried.append(f"{name} unreachable")
                continue
            if attempts:
                await call.wait(asyncio.sleep(FAILOVER_GRACE))
            attempts += 1
            answered, code = await self._attempt(session, call, plan, trunk, dest, attempts)
            if answered:
                return
            tried.append(f"{name} {code}")
            if code not in FAILOVER_CODES:
                break
            log.warning("call %s: trunk %s failed (%s), next trunk", call.call_id, name, code)
        relay, result = OUTCOMES.get(code or 0, (503, "failed"))
        if code in FAILOVER_CODES or code is None:
            relay, result = 503, "failed"
        call.outcome = result
        call.end_cause = "outside call: " + ", ".join(tried or ["no trunk"])
        log.info("call %s to %s: %s (%s)", call.call_id, plan.number, result, call.end_cause)
        await call.hangup(relay)

    async def _attempt(
        self,
        session: FlowSession,
        call: Call,
        plan: Plan,
        trunk: TrunkConfig,
        dest: Peer,
        n: int,
    ) -> tuple[bool, int | None]:
        """One trunk: originate, ring the caller on 18x, bridge on answer and return
        when that conversation ends. (answered, the provider's final code)."""
        deps = session.deps
        leg = f"{call.call_id}-t{n}"
        port = "" if trunk.port == 5060 else f":{trunk.port}"
        params = ";transport=tcp" if trunk.transport == "tcp" else ""
        uri = f"sip:{sip_user(plan.number)}@{trunk.host}{port}{params}"
        from_header = f"<sip:{sip_user(self.caller_id(plan, trunk))}@{trunk.host}>"
        attempt = Attempt(leg, call.call_id, trunk, uri, from_header, dest)
        attempt.ring_timeout = float(plan.route.ring_timeout)
        events: asyncio.Queue[dict] = asyncio.Queue()
        session.leg_handlers[leg] = events.put_nowait
        self.attempts[leg] = attempt
        self.active[trunk.name] += 1
        deps.store.open_leg(
            leg,
            call_id=call.call_id,
            role="callee",
            party=f"trunk:{trunk.name}:{plan.number}",
            started=deps.clock(),
            worker=deps.worker_slot,
        )
        cmd: dict[str, Any] = {
            "cmd": "originate",
            "leg": leg,
            "uri": uri,
            "headers": {"X-Call": call.call_id, "X-Leg": leg},
        }
        if trunk.password:
            cmd["auth"] = {
                "username": trunk.auth_username or trunk.username,
                "password": trunk.password,
                "realm": trunk.realm or "*",
            }
        if trunk.codecs:
            cmd["codecs"] = list(trunk.codecs)
        deps.send(cmd)
        answered_at: float | None = None
        end: dict = {}
        try:
            rang = False
            while True:
                msg = await call._wait(events.get())
                if msg.get("event") != "state":
                    continue
                state = msg.get("state")
                if state == "early" and not rang and not call.answered:
                    rang = True
                    await call.ring()
                elif state == "confirmed" and answered_at is None:
                    answered_at = deps.clock()
                    deps.store.leg_answered(leg, answered_at)
                    log.info("call %s: answered via trunk %s", call.call_id, trunk.name)
                    await call.answer()
                    deps.send({"cmd": "bridge", "a": session.leg_a, "b": leg})
                elif state == "disconnected":
                    end = msg
                    break
        except CallerHungUp:
            deps.send({"cmd": "hangup", "leg": leg, "code": 487 if answered_at is None else 200})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while not end:
                        msg = await events.get()
                        if msg.get("event") == "state" and msg.get("state") == "disconnected":
                            end = msg
            code = attempt.code or end.get("code")
            self._close_leg(deps, leg, end, answered_at, "caller hung up", "caller hung up", code)
            call.outcome = "answered" if answered_at is not None else "cancelled"
            raise
        finally:
            session.leg_handlers.pop(leg, None)
            self.attempts.pop(leg, None)
            self.active[trunk.name] -= 1
        code = attempt.code if attempt.routed and attempt.code else end.get("code")
        if not attempt.routed:
            code = 503  # the worker could not place the leg: try the next trunk
        if answered_at is not None:
            call.outcome = "answered"
            call.end_cause = f"callee hung up (trunk {trunk.name})"
            self._close_leg(deps, leg, end, answered_at, "answered", "callee hung up", code)
            return True, code
        result = OUTCOMES.get(code or 0, (0, "failed"))[1]
        self._close_leg(deps, leg, end, None, result, f"trunk {trunk.name}: {code}", code)
        return False, code

    @staticmethod
    def _close_leg(
        deps: Any,
        leg: str,
        end: dict,
        answered_at: float | None,
        result: str,
        cause: str,
        code: int | None,
    ) -> None:
        stats = end.get("stats") or {}
        deps.store.close_leg(
            leg,
            ended=deps.clock(),
            result="answered" if answered_at is not None else result,
            cause=cause,
            sip_code=code,
            rx_packets=stats.get("rx_packets"),
            rx_lost=stats.get("rx_lost"),
            tx_packets=stats.get("tx_packets"),
        )
