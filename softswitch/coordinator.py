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
from pathlib import Path

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
from softswitch.mail import Mailer
from softswitch.media.pool import Pool, Worker
from softswitch.sip.auth import DigestAuthenticator
from softswitch.sip.message import Peer
from softswitch.sip.proxy import Edge
from softswitch.sip.registrar import Registrar
from softswitch.sip.routing import Fork, ForkOutcome, Pending, Reject, Target, ToWorker
from softswitch.sip.transport import Transports
from softswitch.store import Store
from softswitch.voicemail import recover, save_voicemail_async

log = logging.getLogger(__name__)

EXPIRE_INTERVAL = 5.0  # seconds between sweeps of expired registrations


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
        self.edge: Edge | None = None
        self.pool: Pool | None = None
        self.registrar: Registrar | None = None
        self.callcentre: CallCentre | None = None
        self._sweeper: asyncio.Task | None = None
        self._mailer_task: asyncio.Task | None = None
        self.mailer: Mailer | None = None
        self._seq = 0
        self.started = asyncio.Event()

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
        self.transports = Transports(self._on_message, self.flow_closed)
        self.edge = Edge(
            self.transports,
            self,
            self.registrar,
            secret=secret,
            public_host=sw.public_address,
            clock=self.clock,
        )
        self.callcentre.edge = self.edge
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
        )
        await self.pool.start()
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
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._mailer_task is not None:
            self._mailer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mailer_task
        if self.callcentre is not None and self.store is not None:
            self.callcentre.stop()
        if self.pool is not None:
            await self.pool.stop()
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
        feature = self.config.features.codes().get(dialed)
        if feature is not None:
            place = self._feature_code(feature, caller, request.call_id)
            if place is None:
                return Reject(403, "Forbidden (not a queue operator)")
        elif sw.entry and dialed == sw.entry_number:
            place = self._place_flow
        else:
            if self.config.extension(dialed) is None:
                return Reject(404)
            if not self.registrar.lookup(dialed, now):
                return Reject(480)
            place = self._place_call
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

    def _place_call(self, caller: str, dialed: str, worker: Worker, now: float) -> ToWorker:
        call_id = self._new_call_id(now)
        call = ExtensionCall(
            call_id=call_id,
            caller=caller,
            callee=dialed,
            callee_uri=f"sip:{dialed}@{self.config.switch.domain}",
            from_header=f'"{self._caller_name(caller)}" <sip:{caller}@{self.config.switch.domain}>',
        )
        self.calls[call_id] = call
        self.call_worker[call_id] = worker
        worker.legs.update((call.leg_a, call.leg_b))
        assert self.store is not None
        self.store.open_call(call_id, started=now, caller=caller, callee=dialed)
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
    ) -> ToWorker:
        """A call to the main number: a flow session from the entry block (or `flow`)."""
        assert self.store is not None and self.pool is not None
        call_id = self._new_call_id(now)
        pool = self.pool
        deps = SessionDeps(
            send=lambda cmd: pool.send(worker, cmd),
            store=self.store,
            domain=self.config.switch.domain,
            resolve_prompt=self._prompt,
            recording_dir=self.data_dir / "recordings",
            language=self.config.switch.language,
            worker_slot=worker.slot,
            clock=self.clock,
            enqueue=self.callcentre.enter if self.callcentre and self.callcentre.blocks else None,
        )
        entry = self.config.switch.entry

        async def run_entry(call: Call) -> None:
            await run_flow(call, self.flow_context, entry)

        runner = flow or run_entry
        session = FlowSession(call_id, caller, self._caller_name(caller), dialed, deps, runner)
        session.on_closed = self._session_closed
        self.sessions[call_id] = session
        self.call_worker[call_id] = worker
        worker.legs.add(session.leg_a)
        self.store.open_call(call_id, started=now, caller=caller, callee=dialed, kind="flow")
        return self._to_worker(worker, call_id, session.leg_a, session)

    def _session_closed(self, session: FlowSession) -> None:
        assert self.pool is not None
        self.sessions.pop(session.call_id, None)
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

    def route_outbound(self, request: Request, source: Peer, now: float) -> Reject | Fork:
        assert self.registrar is not None
        call_id = request.headers.get("X-Call") or ""
        if request.headers.get("X-Queue") and self.callcentre is not None:
            qc = self.callcentre.legs.get(request.headers.get("X-Leg") or "")
            if qc is None or qc.id != call_id:
                return Reject(403, "Forbidden (no such queue caller)")
            # Held open: the call centre adds and cancels branches as operators come.
            return Fork(targets=(), ring_timeout=None, context=qc, hold_open=True)
        call: ExtensionCall | FlowSession | None = self.calls.get(call_id) or self.sessions.get(
            call_id
        )
        if call is None:
            return Reject(403, "Forbidden (no such call)")
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
        return Fork(
            targets=targets,
            ring_timeout=float(ring_timeout)
            if ring_timeout
            else float(self.config.switch.ring_timeout),
            from_header=request.headers.get("X-From"),
            context=call,
        )

    def phone_busy(self, label: str, dialog: str, context: object) -> None:
        """An extension's phone entered a dialog: an operator on a call of any kind
        (their own, a direct call, a flow's dial) is never rung by a queue. Queue calls
        themselves are the ACD's own business."""
        if self.callcentre is not None and not isinstance(context, QueueCaller):
            self.callcentre.phone_busy(label, dialog)

    def phone_free(self, label: str, dialog: str) -> None:
        if self.callcentre is not None:
            self.callcentre.phone_free(label, dialog)

    def fork_finished(self, context: object, outcome: ForkOutcome, now: float) -> None:
        if not isinstance(context, ExtensionCall | FlowSession):
            return
        results = {b.result for b in outcome.branches}
        if "answered" in results:
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

    # -- worker events -------------------------------------------------------------------
    def _on_worker_event(self, worker: Worker, msg: dict) -> None:
        event = msg.get("event")
        leg = str(msg.get("leg", ""))
        call_id = leg.rsplit("-", 1)[0]  # legs are named <call id>-a, -b, -b1, ...
        session = self.sessions.get(call_id)
        if session is not None:
            session.on_event(msg)
            return
        call = self.calls.get(call_id)
        if call is None:
            if event == "incoming":
                log.warning("worker %s: incoming leg %s for no call; rejecting", worker.slot, leg)
                assert self.pool is not None
                self.pool.send(worker, {"cmd": "hangup", "leg": leg, "code": 481})
            return
        if event == "incoming":
            actions = call.on_incoming(msg.get("sip_call_id"))
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
                    self.pool.send(worker, action.cmd)
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
            elif isinstance(action, CallClosed):
                self.store.close_call(
                    call.call_id,
                    ended=now,
                    result=action.result,
                    cause=action.cause,
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
                w = self.call_worker.pop(call.call_id, None)
                if w is not None:
                    w.legs.difference_update((call.leg_a, call.leg_b))
                    self.pool.release(w)


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
    asyncio.run(serve(config, scripts))
    return 0
