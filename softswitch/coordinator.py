"""The coordinator: one asyncio process that owns the SIP edge, the worker pool, the
calls and the store, and wires them together (see ../shared/design/architecture.md).

It is the `Router` the edge asks where an INVITE goes, and the sink for media worker
events; call logic itself lives in `softswitch.calls` (sans-I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sipmessage import Request

from softswitch.callcentre import CallCentre, QueueCaller
from softswitch.calls import (
    Action,
    CallAnswered,
    CallClosed,
    ExtensionCall,
    LegAnswered,
    LegClosed,
    LegOpened,
    WorkerCommand,
)
from softswitch.config_types import Config, ScriptBlock, VoicemailBlock
from softswitch.flow.blocks import FlowContext, ScriptFlow, load_function, prompt_path, run_flow
from softswitch.flow.call import Call, Recording
from softswitch.flow.session import FlowSession, SessionDeps
from softswitch.incall import InCall, hold_music_file
from softswitch.mail import Mailer
from softswitch.media.pool import Pool, Worker
from softswitch.notify import NotificationService
from softswitch.recording import CallRecorder, leg_party
from softswitch.routes import TrunkService
from softswitch.sip.auth import DigestAuthenticator
from softswitch.sip.defence import Defence
from softswitch.sip.message import Peer
from softswitch.sip.presence import PresenceService
from softswitch.sip.proxy import Edge
from softswitch.sip.registrar import Registrar
from softswitch.sip.routing import Fork, ForkOutcome, Pending, Reject, Target, ToWorker
from softswitch.sip.transport import Transports
from softswitch.store import Store
from softswitch.voicemail import recover, save_voicemail_async

if TYPE_CHECKING:
    from softswitch.http import HttpApi

log = logging.getLogger(__name__)

EXPIRE_INTERVAL = 5.0  # seconds between sweeps of expired registrations


class StartError(RuntimeError):
    """The switch cannot start as configured (say, [http] port is taken); `run` prints
    it and exits 1 instead of a traceback."""


def load_secret(data_dir: Path) -> bytes:
    """The edge's secret (nonces, flow tokens, branches) is kept across restarts so
    nonces and dialogs' Record-Route tokens stay valid after a restart."""
    path = data_dir / "secret.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


@dataclass(frozen=True)
class PickupContext:
    """A picker's INVITE on its way to the worker of the ringing call it picks up."""

    call: ExtensionCall
    leg: str
    picker: str


class Coordinator:
    def __init__(
        self, config: Config, clock=time.time, scripts: dict[str, ScriptFlow] | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        sw = config.switch
        self.data_dir = Path(sw.data_dir)
        self.calls: dict[str, ExtensionCall] = {}
        self.sessions: dict[str, FlowSession] = {}
        self._prompts: dict[str, Path] = {}
        self.flow_context = FlowContext(config=config, scripts=dict(scripts or {}), clock=clock)
        self.call_worker: dict[str, Worker] = {}
        self.store: Store | None = None
        self.transports: Transports | None = None
        self.defence: Defence | None = None
        self.edge: Edge | None = None
        self.presence: PresenceService | None = None  # BLF subscriptions (sip/presence.py)
        self.pool: Pool | None = None
        self.registrar: Registrar | None = None
        self.callcentre: CallCentre | None = None
        self._sweeper: asyncio.Task | None = None
        self._mailer_task: asyncio.Task | None = None
        self.mailer: Mailer | None = None
        self.notifications: NotificationService | None = None  # softswitch/notify
        self._seq = 0
        self.started = asyncio.Event()
        # the HTTP API ([http]; softswitch/http) and what it listens to: "started",
        # "answered", "ended" of every call, with the ExtensionCall / FlowSession
        self.http: HttpApi | None = None
        self.trunks: TrunkService | None = None  # [[trunk]] and [[route]] (routes.py)
        # bridged legs: in-call codes, hold (incall.py); call recording (recording.py)
        self.incall: InCall | None = None
        self.recorder: CallRecorder | None = None
        self.call_listeners: list[Callable[[str, ExtensionCall | FlowSession], None]] = []
        self._api_hangups: set[str] = set()  # calls being hung up by hangup_call()
        # transfer INVITEs and the worker's transfer events, matched by (worker, target)
        self._transfers_waiting: dict[tuple[int, str], tuple[asyncio.Future, Request]] = {}
        self._transfers_seen: dict[tuple[int, str], ExtensionCall | FlowSession] = {}
        # SIP Call-ID of every phone dialog of an extension call -> our call id (a
        # Replaces names one of them)
        self._sip_calls: dict[str, str] = {}
        self._call_dialogs: dict[str, list[str]] = {}  # call id -> its SIP Call-IDs
        self._pickups: dict[str, PickupContext] = {}
        self._hold_music: str | None = None  # pickup legs not yet at their worker

    # -- lifecycle ---------------------------------------------------------------------
    def load_scripts(self) -> None:
        """Import every `module:function` a script block names, before anything starts:
        a flow that cannot be imported is a start-up error, not a failed call later."""
        if self.config.source is not None:
            folder = str(self.config.source.parent.resolve())
            if folder not in sys.path:
                sys.path.insert(0, folder)
        for block in self.config.blocks.values():
            if isinstance(block, ScriptBlock) and block.function not in self.flow_context.scripts:
                try:
                    self.flow_context.scripts[block.function] = load_function(block.function)
                except Exception as exc:
                    raise RuntimeError(
                        f"block {block.name}: cannot import {block.function}: {exc}"
                    ) from exc

    async def start(self) -> None:
        sw = self.config.switch
        self.load_scripts()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "softswitch.db")
        closed = self.store.close_stale(self.clock())
        if closed:
            log.warning("closed %d call(s) left open by the previous run as failed", closed)
        boxes = {
            (b.box or b.name): list(b.email)
            for b in self.config.blocks.values()
            if isinstance(b, VoicemailBlock)
        }
        recovered = recover(self.store, self.data_dir, boxes=boxes, tz=sw.timezone)
        if recovered.adopted:
            log.warning("adopted %d voicemail file(s) left by a crash", len(recovered.adopted))
        self.mailer = Mailer(self.store, self.config.smtp, self.data_dir, self.clock)
        self._mailer_task = asyncio.get_running_loop().create_task(self.mailer.run())
        self.flow_context.save_voicemail = self._save_voicemail
        secret = load_secret(self.data_dir)
        auth = DigestAuthenticator(realm=sw.domain, secret=secret)
        self.registrar = Registrar(self.config, self.store, auth)
        self.callcentre = CallCentre(self.config, self.store, self.registrar, self.clock)
        self.registrar.on_change = self.callcentre.bindings_changed
        self.notifications = NotificationService(
            self.config, self.store, self.data_dir, self.clock, self.mailer
        )
        self.notifications.start(self.callcentre)
        # [security]: bans, rate limits and scanner filtering in front of the edge
        self.defence = Defence(self.config.security)
        self.registrar.on_auth_failure = self.defence.auth_failure
        self.transports = Transports(self._on_message, self.flow_closed, guard=self.defence)
        self.edge = Edge(
            self.transports,
            self,
            self.registrar,
            secret=secret,
            public_host=sw.public_address,
            clock=self.clock,
            max_headers=self.config.security.max_headers,
        )
        self.callcentre.edge = self.edge
        self.presence = PresenceService(self.edge, self.config, self.callcentre, self.clock)
        self.presence.start()
        if self.config.http.enabled:
            from softswitch.http import HttpApi

            self.http = HttpApi(self)
            await self.http.start()  # StartError when [http] port is taken
        self.callcentre.start()
        inside = await self.transports.listen_udp("127.0.0.1", 0, side="inside")
        for addr in sw.listen:
            if addr.transport == "udp":
                await self.transports.listen_udp(addr.host, addr.port)
            else:
                await self.transports.listen_tcp(addr.host, addr.port)
        self.pool = Pool(
            edge_port=inside.port,
            public_address=sw.public_address,
            rtp_min=sw.rtp_port_min,
            rtp_max=sw.rtp_port_max,
            min_workers=sw.workers_min,
            max_workers=sw.workers_max,
            log_dir=self.data_dir / "logs",
            on_event=self._on_worker_event,
            on_death=self._on_worker_death,
            media_timeout=float(sw.media_timeout),
            hold_music=hold_music_file(self.config, self.data_dir),
        )
        self.incall = InCall(self.store, self.clock)
        features = self.config.features
        self.incall.add_feature([features.blind_transfer], "blind_transfer", self._code_transfer)
        self.incall.add_feature(
            [features.attended_transfer], "attended_transfer", self._code_transfer
        )
        self.recorder = CallRecorder(
            self.config,
            self.store,
            self.data_dir,
            self.clock,
            self._send,
            self._prompt,
            lambda leg: leg_party(self, leg),
        )
        self.recorder.attach(self.incall)
        self.call_listeners.append(self.recorder.call_ended)
        self.recorder.start()  # closes what a crash left open; retention sweep
        await self.pool.start()
        self.trunks = TrunkService(self)
        await self.trunks.start()  # registrations with providers
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self.started.set()

    async def _save_voicemail(self, call: Call, block: VoicemailBlock, rec: Recording) -> int:
        assert self.store is not None and self.mailer is not None
        voicemail_id = await save_voicemail_async(
            self.store,
            self.data_dir,
            block.box or block.name,
            call.caller,
            call.caller_name,
            call.call_id,
            rec.path,
            rec.seconds,
            self.clock(),
            list(block.email),
            tz=self.config.switch.timezone,
        )
        log.info(
            "voicemail %d for box %s from %s (%.1f s)",
            voicemail_id,
            block.box or block.name,
            call.caller,
            rec.seconds,
        )
        self.mailer.notify()
        return voicemail_id

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.trunks is not None:
            await self.trunks.stop()  # unregisters
        if self._mailer_task is not None:
            self._mailer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mailer_task
        if self.notifications is not None:
            await self.notifications.stop()
        if self.presence is not None:
            self.presence.stop()
        if self.callcentre is not None and self.store is not None:
            self.callcentre.stop()
        if self.pool is not None:
            await self.pool.stop()
        if self.incall is not None:
            self.incall.close()
        if self.recorder is not None:
            self.recorder.stop()  # rows of recordings the workers did not report ended
        if self.transports is not None:
            self.transports.close()
        if self.store is not None:
            now = self.clock()
            for call_id in [*self.calls, *self.sessions]:
                self.store.close_call(call_id, ended=now, result="failed", cause="switch stopped")
            self.store.close_stale(now, cause="switch stopped")
            self.store.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            assert self.registrar is not None and self.edge is not None
            now = self.clock()
            assert self.callcentre is not None
            self.callcentre.binding_reason = "expired"
            try:
                self.registrar.expire(now)
            finally:
                self.callcentre.binding_reason = "unregistered"
            self.edge.sweep(now)

    def describe(self) -> str:
        assert self.transports is not None
        lines = ["softswitch listening on:"]
        for lst in self.transports.listeners:
            if lst.side == "outside":
                lines.append(f"  sip {lst.transport} {lst.host}:{lst.port}")
        lines.append(f"domain: {self.config.switch.domain}")
        lines.append("extensions:")
        for ext in self.config.extensions:
            lines.append(f"  {ext.number}  {ext.name}")
        if self.http is not None:
            lines.append(self.http.describe())
        if self.trunks is not None:
            lines += self.trunks.describe()
        lines.append(f"data: {self.data_dir.resolve()}")
        return "\n".join(lines)

    # -- SIP in --------------------------------------------------------------------------
    def _on_message(self, data: bytes, peer: Peer) -> None:
        assert self.edge is not None
        self.edge.handle(data, peer)

    def flow_closed(self, peer: Peer) -> None:
        """A phone's TCP connection closed: the bindings made over it are dead."""
        assert self.registrar is not None and self.callcentre is not None
        self.callcentre.binding_reason = "connection-lost"
        try:
            dropped = self.registrar.drop_flow(peer, self.clock())
        finally:
            self.callcentre.binding_reason = "unregistered"
        if dropped:
            log.info("tcp flow %s closed: %d binding(s) dropped", peer, len(dropped))

    # -- Router (asked by the edge) --------------------------------------------------------
    def is_worker(self, host: str, port: int) -> bool:
        return self.pool is not None and self.pool.find_worker(host, port) is not None

    def route_inbound(
        self, request: Request, caller: str, source: Peer, now: float
    ) -> Reject | ToWorker | Pending:
        assert self.registrar is not None and self.pool is not None
        dialed = request.uri.user or ""
        sw = self.config.switch
        picked = self._pickup(caller, dialed)
        if picked is not None:
            return picked
        feature = self.config.features.codes().get(dialed)
        if feature is not None:
            place = self._feature_code(feature, caller, request.call_id)
            if place is None:
                return Reject(403, "Forbidden (not a queue operator)")
        elif sw.entry and dialed == sw.entry_number:
            place = self._place_flow
        elif self.config.extension(dialed) is None:
            # not an extension: an outside call if a [[route]] matches (routes.py)
            outside = self.trunks.outbound(caller, dialed, now) if self.trunks else None
            if outside is None or isinstance(outside, Reject):
                return outside or Reject(404)
            place = outside
        elif not self.registrar.lookup(dialed, now):
            return Reject(480)
        else:
            place = self._place_call
        return self._reserve_and_place(place, caller, dialed, now)

    @property
    def hold_music(self) -> str:
        """What a party on hold hears ([switch] music; "" = silence), prepared once."""
        if self._hold_music is None:
            self._hold_music = hold_music_file(self.config, self.data_dir)
        return self._hold_music

    # -- transfer by in-call code (## blind, *2 attended) ------------------------------
    def _code_transfer(self, ctx) -> None:
        """A party dialled the transfer code while talking: the other party hears hold
        music, the presser is asked for the extension (ended by # or a pause)."""
        w = ctx.worker
        self._send(w, {"cmd": "unbridge", "a": ctx.leg, "b": ctx.peer})
        if self.hold_music:
            self._send(w, {"cmd": "moh_start", "leg": ctx.peer, "file": self.hold_music})
        self._send(w, {"cmd": "play", "leg": ctx.leg, "file": str(self._prompt("enter-extension"))})
        attended = ctx.action == "attended_transfer"
        assert self.incall is not None
        self.incall.collect(ctx.leg, lambda number: self._code_transfer_to(ctx, number, attended))

    def _code_transfer_to(self, ctx, number: str, attended: bool) -> None:
        w = ctx.worker
        self._send(w, {"cmd": "stop", "leg": ctx.leg})
        call = self.calls.get(ctx.call_id)
        session = self.sessions.get(ctx.call_id)
        handler = session.leg_handlers.get(ctx.leg) if session is not None else None
        usable = bool(number) and self.config.extension(number) is not None
        if call is None and (handler is None or attended):
            usable = False  # flows: blind only, and only by the party the flow dialled
        if not usable:
            log.info("leg %s: transfer to %r not possible; back to the call", ctx.leg, number)
            self._send(w, {"cmd": "moh_stop", "leg": ctx.peer})
            self._send(w, {"cmd": "bridge", "a": ctx.leg, "b": ctx.peer})
            return
        self._seq += 1
        new_leg = f"{ctx.call_id}-t{self._seq}"
        domain = self.config.switch.domain
        if call is not None:
            self._apply(call, call.on_code_transfer(ctx.leg, new_leg, number, domain, attended))
            return
        assert handler is not None
        handler({"event": "transfer", "leg": ctx.leg, "new_leg": new_leg, "target": number})
        self._send(
            w,
            {
                "cmd": "originate",
                "leg": new_leg,
                "uri": f"sip:{number}@{domain}",
                "headers": {"X-Call": ctx.call_id, "X-Leg": new_leg},
            },
        )
        self._send(w, {"cmd": "hangup", "leg": ctx.leg, "code": 200})

    def _pickup(self, picker: str, dialed: str) -> Reject | ToWorker | None:
        """*8 (a call ringing at an extension of the picker's pickup group) or **NNN (a
        call ringing at NNN): the picker's INVITE goes to the worker of that call and
        takes the ringing phone's place. None: `dialed` is no pickup code."""
        features = self.config.features
        me = self.config.extension(picker)
        if features.pickup and dialed == features.pickup:
            group = me.pickup_group if me else ""
            extensions = self.config.extensions
            members = {e.number for e in extensions if group and e.pickup_group == group}
        elif (
            features.pickup_directed
            and dialed.startswith(features.pickup_directed)
            and self.config.extension(dialed[len(features.pickup_directed) :]) is not None
        ):
            members = {dialed[len(features.pickup_directed) :]}
        else:
            return None
        members.discard(picker)
        ringing = [c for c in self.calls.values() if c.ringing and c.callee in members]
        if not ringing:
            return Reject(404, "Not Found (no call to pick up)")
        call = min(ringing, key=lambda c: c.call_id)  # the oldest ringing call
        worker = self.call_worker.get(call.call_id)
        assert self.pool is not None
        if worker is None or not self.pool.reserve_on(worker):
            return Reject(503, "Service Unavailable (pickup not possible now)")
        call.extra_pairs += 1
        self._seq += 1
        leg = f"{call.call_id}-p{self._seq}"
        context = PickupContext(call, leg, picker)
        self._pickups[leg] = context
        log.info("call %s ringing at %s: picked up by %s", call.call_id, call.callee, picker)
        return self._to_worker(worker, call.call_id, leg, context)

    def trunk_for(self, request: Request, source: Peer) -> str | None:
        """Whether an outside INVITE is a trunk's call (not challenged); routes.py."""
        return self.trunks.trunk_for(request, source) if self.trunks is not None else None

    def route_from_trunk(
        self, request: Request, trunk: str, source: Peer, now: float
    ) -> Reject | ToWorker | Pending:
        """A trunk's call: a flow session at the block its DID names (routes.py)."""
        assert self.trunks is not None
        place = self.trunks.inbound(request, trunk, now)
        if isinstance(place, Reject):
            return place
        who = f"trunk {trunk or '(anonymous)'}"  # for log lines only: `place` knows the caller
        return self._reserve_and_place(place, who, request.uri.user or "", now)

    def trunk_status(self) -> list[dict]:
        """Each trunk's registration state, address and calls (for the API / CLI)."""
        return self.trunks.status() if self.trunks is not None else []

    def _reserve_and_place(
        self, place: Callable, caller: str, dialed: str, now: float
    ) -> Reject | ToWorker | Pending:
        """A pair of legs on a worker (or wait for a starting one), then `place`."""
        assert self.pool is not None
        worker = self.pool.reserve()
        if worker is not None:
            return place(caller, dialed, worker, now)
        later = self.pool.reserve_later()
        if later is None:
            log.warning("capacity reached (%d calls): 503 to %s", self.pool.capacity, caller)
            return Reject(503, "Service Unavailable (capacity)")
        decided: asyncio.Future = asyncio.get_running_loop().create_future()

        def placed(fut: asyncio.Future) -> None:
            w = fut.result()
            if w is None:
                log.warning("no media worker became free: 503 to %s", caller)
                decided.set_result(Reject(503, "Service Unavailable (capacity)"))
            else:
                decided.set_result(place(caller, dialed, w, self.clock()))

        later.add_done_callback(placed)
        return Pending(decided)

    def _new_call_id(self, now: float) -> str:
        self._seq += 1
        return f"{int(now)}-{self._seq}-{secrets.token_hex(3)}"

    def _caller_name(self, caller: str) -> str:
        me = self.config.extension(caller)
        return (me.name if me else caller).replace('"', "")

    def _to_worker(self, worker: Worker, call_id: str, leg: str, context: object) -> ToWorker:
        return ToWorker(
            worker=Peer("udp", "127.0.0.1", worker.sip_port, None, "inside"),
            headers=(("X-Leg", leg), ("X-Call", call_id)),
            context=context,
        )

    def _from_header(self, number: str) -> str:
        """How an extension is presented to a phone it calls: name and number."""
        return f'"{self._caller_name(number)}" <sip:{number}@{self.config.switch.domain}>'

    def _place_call(self, caller: str, dialed: str, worker: Worker, now: float) -> ToWorker:
        call_id = self._new_call_id(now)
        call = ExtensionCall(
            call_id=call_id,
            caller=caller,
            callee=dialed,
            callee_uri=f"sip:{dialed}@{self.config.switch.domain}",
            from_header=self._from_header(caller),
            music=self.hold_music,
        )
        self.calls[call_id] = call
        self.call_worker[call_id] = worker
        worker.legs.update((call.leg_a, call.leg_b))
        assert self.store is not None
        self.store.open_call(call_id, started=now, caller=caller, callee=dialed)
        self._call_event("started", call)
        return self._to_worker(worker, call_id, call.leg_a, call)

    def _feature_code(self, feature: str, caller: str, dialog: str):
        """An operator dialled a feature code (*45 log in/out, *46 pause): once a worker
        holds the call, do it and answer with a flow that says what happened (at capacity
        the 503 changes nothing). None: the caller is no operator. While they listen,
        they are on a call: a queue must not ring them yet."""
        from softswitch.flow.announce import feature_prompt

        centre = self.callcentre
        assert centre is not None
        if caller not in centre.agents:
            return None

        def place(caller: str, dialed: str, worker: Worker, now: float) -> ToWorker:
            centre.phone_busy(caller, dialog)
            if feature == "queue_login":
                done = centre.toggle_login(caller, "feature-code")
            else:
                done = centre.toggle_pause(caller, "feature-code")
            log.info("operator %s dialled %s: %s", caller, feature, done)
            prompt = feature_prompt(done)

            async def confirm(call: Call) -> None:
                await call.answer()
                await call.play(prompt)
                await call.hangup()

            placed = self._place_flow(caller, dialed, worker, now, confirm)
            session = placed.context
            assert isinstance(session, FlowSession)
            closed = session.on_closed

            def free(s: FlowSession) -> None:
                centre.phone_free(caller, dialog)
                if closed is not None:
                    closed(s)

            session.on_closed = free
            return placed

        return place

    def _place_flow(
        self,
        caller: str,
        dialed: str,
        worker: Worker,
        now: float,
        flow: Callable[[Call], Awaitable[None]] | None = None,
        kind: str = "flow",
    ) -> ToWorker:
        """A call to the main number: a flow session from the entry block (or `flow`);
        `kind` is the call record's (inbound / outbound for trunks' calls)."""
        assert self.store is not None and self.pool is not None
        call_id = self._new_call_id(now)
        deps = SessionDeps(
            send=lambda cmd: self._send(worker, cmd),
            store=self.store,
            domain=self.config.switch.domain,
            resolve_prompt=self._prompt,
            recording_dir=self.data_dir / "recordings",
            language=self.config.switch.language,
            worker_slot=worker.slot,
            clock=self.clock,
            enqueue=self.callcentre.enter if self.callcentre and self.callcentre.blocks else None,
            music=self.hold_music,
        )
        entry = self.config.switch.entry

        async def run_entry(call: Call) -> None:
            await run_flow(call, self.flow_context, entry)

        runner = flow or run_entry
        session = FlowSession(call_id, caller, self._caller_name(caller), dialed, deps, runner)
        deps.transfer_started = lambda target: self._transfer_started(worker, session, target)
        session.on_closed = self._session_closed
        self.sessions[call_id] = session
        self.call_worker[call_id] = worker
        worker.legs.add(session.leg_a)
        self.store.open_call(call_id, started=now, caller=caller, callee=dialed, kind=kind)
        self._call_event("started", session)
        return self._to_worker(worker, call_id, session.leg_a, session)

    def _session_closed(self, session: FlowSession) -> None:
        assert self.pool is not None
        self.sessions.pop(session.call_id, None)
        self._call_event("ended", session)
        w = self.call_worker.pop(session.call_id, None)
        if w is not None:
            w.legs.discard(session.leg_a)
            self.pool.release(w)

    def _prompt(self, name: str) -> Path:
        """A prompt name or file, converted once to 8 kHz mono WAV (cached by content)."""
        from softswitch import audio

        cached = self._prompts.get(name)
        if cached is not None and cached.exists():
            return cached
        source = prompt_path(name, self.config, self.config.base_dir)
        prepared = audio.prepare(source, self.data_dir / "cache" / "audio")
        self._prompts[name] = prepared
        return prepared

    def route_outbound(self, request: Request, source: Peer, now: float) -> Reject | Fork | Pending:
        assert self.registrar is not None
        trunk_fork = self.trunks.route_outbound(request) if self.trunks is not None else None
        if trunk_fork is not None:
            return trunk_fork  # an attempt of an outside call: to its trunk
        # A call the worker places for a transfer carries its context in the URI.
        call_id = request.headers.get("X-Call") or request.uri.parameters.get("x-call") or ""
        if request.headers.get("X-Queue") and self.callcentre is not None:
            qc = self.callcentre.legs.get(request.headers.get("X-Leg") or "")
            if qc is None or qc.id != call_id:
                return Reject(403, "Forbidden (no such queue caller)")
            # Held open: the call centre adds and cancels branches as operators come.
            return Fork(targets=(), ring_timeout=None, context=qc, hold_open=True)
        call: ExtensionCall | FlowSession | None = self.calls.get(call_id) or self.sessions.get(
            call_id
        )
        if call is None and not call_id:
            return self._transfer_invite(request, source)
        if call is None:
            return Reject(403, "Forbidden (no such call)")
        return self._fork_for(call, request, now)

    def _transfer_invite(self, request: Request, source: Peer) -> Reject | Fork | Pending:
        """An INVITE pjsua placed by itself for a REFER carries none of our headers: it
        is matched with the worker's `transfer` event (same worker, same target), which
        may come just before or just after it."""
        key = (source.port, request.uri.user or "")
        known = self._transfers_seen.pop(key, None)
        if known is not None:
            return self._fork_for(known, request, self.clock())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._transfers_waiting[key] = (future, request)

        def give_up() -> None:
            if self._transfers_waiting.get(key, (None,))[0] is future:
                del self._transfers_waiting[key]
            if not future.done():
                future.set_result(Reject(403, "Forbidden (no such call)"))

        asyncio.get_running_loop().call_later(3.0, give_up)
        return Pending(future)

    def _transfer_started(
        self, worker: Worker, call: ExtensionCall | FlowSession, target: str
    ) -> None:
        key = (worker.sip_port, target)
        waiting = self._transfers_waiting.pop(key, None)
        if waiting is None:
            self._transfers_seen[key] = call
            asyncio.get_running_loop().call_later(3.0, self._transfers_seen.pop, key, None)
            return
        future, request = waiting
        if not future.done():
            future.set_result(self._fork_for(call, request, self.clock()))

    def _fork_for(
        self, call: ExtensionCall | FlowSession, request: Request, now: float
    ) -> Reject | Fork:
        assert self.registrar is not None
        wanted = (request.headers.get("X-Targets") or request.uri.user or "").split(",")
        targets = tuple(
            Target(
                contact=b.contact,
                dest=Peer(b.transport, b.source_host, b.source_port, None, "outside"),
                label=number,
            )
            for number in wanted
            if self.config.extension(number) is not None
            for b in self.registrar.lookup(number, now)
        )
        if not targets:
            call.on_fork_result("unavailable")
            return Reject(480)
        ring_timeout = request.headers.get("X-Ring-Timeout")
        from_header = request.headers.get("X-From")
        if from_header is None and isinstance(call, ExtensionCall) and call.transfer is not None:
            # The target of a transfer sees who is being put through to them.
            party = call.party(call.transfer.transferee)
            from_header = self._from_header(party)
        elif from_header is None and isinstance(call, FlowSession):
            name = (call.caller_name or call.caller).replace('"', "")
            from_header = f'"{name}" <sip:{call.caller}@{self.config.switch.domain}>'
        headers: tuple[tuple[str, str], ...] = ()
        replaces = request.headers.get("Replaces")
        if replaces:
            # Attended transfer: the Replaces names the transferor's dialog with us;
            # the target's phone only knows its own dialog with us, so name that one
            # and send the INVITE to that phone only.
            found = self._replaced_dialog(replaces)
            if found is None:
                return Reject(481, "Call/Transaction Does Not Exist (Replaces)")
            target, value = found
            targets, headers = (target,), (("Replaces", value),)
        if request.headers.get("X-Call") and isinstance(call, ExtensionCall):
            self._note_dialog(request.call_id, call.call_id)  # a Replaces may name it
        return Fork(
            headers=headers,
            targets=targets,
            ring_timeout=float(ring_timeout)
            if ring_timeout
            else float(self.config.switch.ring_timeout),
            from_header=from_header,
            context=call,
        )

    def _note_dialog(self, sip_call_id: str, call_id: str) -> None:
        self._sip_calls[sip_call_id] = call_id
        self._call_dialogs.setdefault(call_id, []).append(sip_call_id)

    def _replaced_dialog(self, replaces: str) -> tuple[Target, str] | None:
        """Replaces `callid;to-tag=..;from-tag=..` of a phone's dialog with one of our
        legs -> (the phone at the other end of that call, a Replaces naming its own
        dialog with us, RFC 3891: to-tag = its tag, from-tag = ours)."""
        assert self.edge is not None
        sip_call_id = replaces.split(";", 1)[0].strip()
        call = self.calls.get(self._sip_calls.get(sip_call_id, ""))
        if call is None:
            return None
        # the other side of that call, as a SIP dialog the edge knows
        others = [
            d
            for cid in self._call_dialogs.get(call.call_id, ())
            if cid != sip_call_id and (d := self.edge.dialogs.get(cid)) is not None
        ]
        if not others:
            return None
        d = others[0]

        def tag(header: str) -> str:
            return header.split("tag=", 1)[1].split(";", 1)[0] if "tag=" in header else ""

        value = f"{d.call_id};to-tag={tag(d.remote)};from-tag={tag(d.local)}"
        return Target(contact=d.target, dest=d.phone, label=d.label), value

    def phone_busy(self, label: str, dialog: str, context: object) -> None:
        """An extension's phone entered a dialog: an operator on a call of any kind
        (their own, a direct call, a flow's dial) is never rung by a queue. Queue calls
        themselves are the ACD's own business."""
        if self.callcentre is not None and not isinstance(context, QueueCaller):
            self.callcentre.phone_busy(label, dialog)
        if isinstance(context, FlowSession) and label != context.caller and self.recorder:
            self.recorder.answered_by[context.call_id] = label  # who took a flow's dial

    def phone_free(self, label: str, dialog: str) -> None:
        if self.callcentre is not None:
            self.callcentre.phone_free(label, dialog)

    def fork_finished(self, context: object, outcome: ForkOutcome, now: float) -> None:
        if not isinstance(context, ExtensionCall | FlowSession):
            return
        results = {b.result for b in outcome.branches}
        if "answered" in results:
            if isinstance(context, FlowSession):
                context.last_answerer = next(
                    b.label for b in outcome.branches if b.result == "answered"
                )
            return
        if "busy" in results:
            context.on_fork_result("busy")
        elif results and results <= {"no-answer", "cancelled"} and "no-answer" in results:
            context.on_fork_result("no-answer")
        elif "rejected" in results:
            context.on_fork_result("rejected")

    def inbound_finished(self, context: object, code: int, now: float) -> None:
        """The caller's INVITE got its final answer. If it never reached the worker's
        call logic (caller cancelled while a worker was starting, the worker did not
        answer), close the call here and free its pair."""
        if code < 300:
            return
        if isinstance(context, PickupContext):
            if self._pickups.pop(context.leg, None) is not None:
                w = self.call_worker.get(context.call.call_id)  # never reached the worker
                context.call.extra_pairs -= 1
                if w is not None and self.pool is not None:
                    self.pool.release(w)
            return
        if isinstance(context, FlowSession) and context.call is None:
            context._close(
                "cancelled" if code == 487 else "failed",
                "caller hung up before answer" if code == 487 else f"SIP {code}",
                code,
            )
            return
        if not isinstance(context, ExtensionCall):
            return
        if context.a_state == "new" and not context.closed:
            if code == 408:
                log.warning("worker never answered call %s", context.call_id)
            result = "cancelled" if code == 487 else "failed"
            cause = "caller hung up before answer" if code == 487 else f"SIP {code}"
            self._apply(context, [CallClosed(result, cause, code)])

    # -- the HTTP API's hooks ------------------------------------------------------------
    def hangup_call(self, call_id: str) -> bool:
        """End an active call now (DELETE /api/calls/ID): the caller's leg is hung up
        and the call ends as when a party hangs up (the other leg, a queue's operator
        leg or a dial's leg follow), the record closed with cause "hung up by API". A
        waiting or connected queue caller leaves the queue first (a `left` row, result
        `removed`, reason `api`; or `completed`, result `api`). False: no such call."""
        assert self.pool is not None
        call = self.calls.get(call_id)
        session = self.sessions.get(call_id)
        worker = self.call_worker.get(call_id)
        if worker is None or (call is None and session is None):
            return False
        if call is not None:
            if call.closed:
                return False
            leg, answered, live = call.leg_a, call.a_state == "confirmed", call.a_state != "new"
            call.ended_by = call.ended_by or "switch"
        else:
            assert session is not None
            if session.closed:
                return False
            live = session.call is not None and not session.call.hung_up
            leg, answered = session.leg_a, bool(session.call and session.call.answered)
            centre = self.callcentre
            qc = centre.callers.get(call_id) if centre is not None else None
            if qc is not None:
                from softswitch.acd import CallEnded

                centre.feed(CallEnded(call_id, "api"))
            if session.call is not None and session.call.outcome is None:
                # the switch ended it: not "abandoned" (the caller did not give up)
                connected = qc is not None and qc.winner is not None
                session.call.outcome = "answered" if connected else "completed"
        self._api_hangups.add(call_id)
        if live:
            cmd: dict = {"cmd": "hangup", "leg": leg}
            if not answered:
                cmd["code"] = 480
            self.pool.send(worker, cmd)
        log.info("call %s: hung up by the API", call_id)
        return True

    def _call_event(self, event: str, call: ExtensionCall | FlowSession) -> None:
        if event == "ended" and call.call_id in self._api_hangups:
            self._api_hangups.discard(call.call_id)
            assert self.store is not None
            self.store.db.execute(
                "UPDATE calls SET cause = ? WHERE id = ?", ("hung up by API", call.call_id)
            )
        for listener in list(self.call_listeners):
            try:
                listener(event, call)
            except Exception:
                log.exception("call listener failed")

    # -- worker events -------------------------------------------------------------------
    def _send(self, worker: Worker, cmd: dict) -> None:
        """A command to a worker; bridges are noted (in-call codes, recording, incall.py)."""
        assert self.pool is not None
        if self.incall is not None:
            self.incall.on_command(worker, cmd)
        self.pool.send(worker, cmd)

    def _on_worker_event(self, worker: Worker, msg: dict) -> None:
        if self.incall is not None and self.incall.on_event(worker, msg):
            return  # a bridged leg's in-call digits, a bridge recording's end
        event = msg.get("event")
        leg = str(msg.get("leg", ""))
        call_id = leg.rsplit("-", 1)[0]  # legs are named <call id>-a, -b, -b1, ...
        session = self.sessions.get(call_id)
        if session is not None:
            session.on_event(msg)
            if event == "state" and msg.get("state") == "confirmed" and leg == session.leg_a:
                self._call_event("answered", session)
            return
        call = self.calls.get(call_id)
        if call is None:
            if event == "incoming":
                log.warning("worker %s: incoming leg %s for no call; rejecting", worker.slot, leg)
                assert self.pool is not None
                self.pool.send(worker, {"cmd": "hangup", "leg": leg, "code": 481})
            return
        if event == "incoming" and leg in self._pickups:
            pickup = self._pickups.pop(leg)
            actions = call.on_pickup(leg, pickup.picker, msg.get("sip_call_id"))
        elif event == "incoming":
            if msg.get("sip_call_id"):
                self._note_dialog(str(msg["sip_call_id"]), call.call_id)
            actions = call.on_incoming(msg.get("sip_call_id"))
        elif event == "transfer":
            if msg.get("refused"):
                log.warning("call %s: transfer refused (%s)", call.call_id, msg.get("refused"))
                return
            actions = call.on_transfer(leg, str(msg.get("new_leg")), str(msg.get("target")))
            log.info(
                "call %s: %s transfers to %s", call.call_id, call.party(leg), msg.get("target")
            )
            self._transfer_started(worker, call, str(msg.get("target")))
        elif event == "state":
            actions = call.on_state(
                leg, msg.get("state", ""), msg.get("code"), msg.get("cause"), msg.get("stats")
            )
        else:
            return
        self._apply(call, actions)

    def _on_worker_death(self, worker: Worker) -> None:
        assert self.edge is not None
        byes = self.edge.worker_gone("127.0.0.1", worker.sip_port)
        if byes:
            log.warning("worker %s died: hung up %d phone leg(s)", worker.slot, byes)
        if self.recorder is not None:
            self.recorder.worker_gone(worker)  # its recordings end where the WAV was cut
        if self.incall is not None:
            self.incall.worker_gone(worker)
        for call_id, w in list(self.call_worker.items()):
            if w is worker:
                call = self.calls.get(call_id)
                if call is not None:
                    self._apply(call, call.on_worker_died())
                session = self.sessions.get(call_id)
                if session is not None:
                    session.on_worker_died()

    def _apply(self, call: ExtensionCall, actions: list[Action]) -> None:
        assert self.store is not None and self.pool is not None
        now = self.clock()
        worker = self.call_worker.get(call.call_id)
        for action in actions:
            if isinstance(action, WorkerCommand):
                if worker is not None:
                    self._send(worker, action.cmd)
            elif isinstance(action, LegOpened):
                self.store.open_leg(
                    action.leg,
                    call_id=call.call_id,
                    role=action.role,
                    party=action.party,
                    started=now,
                    worker=worker.slot if worker else None,
                    sip_call_id=action.sip_call_id,
                )
            elif isinstance(action, LegAnswered):
                self.store.leg_answered(action.leg, now)
            elif isinstance(action, LegClosed):
                stats = action.stats or {}
                self.store.close_leg(
                    action.leg,
                    ended=now,
                    result=action.result,
                    cause=action.cause,
                    sip_code=action.sip_code,
                    rx_packets=stats.get("rx_packets"),
                    rx_lost=stats.get("rx_lost"),
                    tx_packets=stats.get("tx_packets"),
                )
            elif isinstance(action, CallAnswered):
                self.store.call_answered(call.call_id, now)
                self._call_event("answered", call)
            elif isinstance(action, CallClosed):
                cause = action.cause
                if call.picked_up_by:
                    cause += f"; picked up by {call.picked_up_by}"
                if call.transfers:
                    cause += "; transferred " + ", ".join(call.transfers)
                self.store.close_call(
                    call.call_id,
                    ended=now,
                    result=action.result,
                    cause=cause,
                    sip_code=action.sip_code,
                )
                log.info(
                    "call %s %s -> %s: %s (%s)",
                    call.call_id,
                    call.caller,
                    call.callee,
                    action.result,
                    action.cause,
                )
                self.calls.pop(call.call_id, None)
                for sip_call_id in self._call_dialogs.pop(call.call_id, ()):
                    self._sip_calls.pop(sip_call_id, None)
                w = self.call_worker.pop(call.call_id, None)
                if w is not None:
                    w.legs.difference_update((call.leg_a, call.leg_b))
                    for _ in range(1 + call.extra_pairs):
                        self.pool.release(w)
                self._call_event("ended", call)


async def serve(config: Config, scripts: dict[str, ScriptFlow] | None = None) -> None:
    coordinator = Coordinator(config, scripts=scripts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await coordinator.start()
        print(coordinator.describe(), flush=True)
        await stop.wait()
    finally:
        log.info("stopping")
        await coordinator.stop()


def run(config: Config, scripts: dict[str, ScriptFlow] | None = None) -> int:
    """Start the switch and block until SIGINT/SIGTERM. Called by `softswitch run`
    (and `Switch.run()`); `scripts` are flows registered in Python by name."""
    try:
        asyncio.run(serve(config, scripts))
    except StartError as exc:
        print(f"softswitch: not starting: {exc}", file=sys.stderr)
        return 1
    return 0
