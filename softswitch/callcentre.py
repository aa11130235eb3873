"""The call centre in the running switch: the sans-I/O ACD core (`softswitch.acd`) wired
to registrations, the edge's forks and the callers' flow sessions.

`CallCentre` owns the one `Acd`: it feeds it events (operators logging in by
registration, feature code or API; phones entering and leaving dialogs; branches
ringing, answering and failing; callers joining and leaving), runs the core's timers on
the event loop, stores every `acd.QueueEvent` as a `queue_log` row the moment it happens, and
carries the commands out.

`QueueCaller` is one caller waiting in a queue. It keeps ONE outgoing leg from the
caller's media worker open for the whole wait (the edge holds that fork open with no
branch ringing) and asks the edge to add a branch per operator the core wants rung and to
cancel it when the core says so. So a waiting caller costs two legs however many phones
ring, and every ring attempt is timed exactly (docs/acd.md, docs/architecture.md).

A leg never rings the same operator twice: a phone that gets a second INVITE with the
same Call-ID, From tag and CSeq may take it for a merged request (RFC 3261 §8.2.2.2,
482). When the core re-offers the caller to someone that leg already rang, the leg is
closed and a fresh one opened with everyone the core wants ringing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from softswitch import acd
from softswitch.acd import Acd, AcdConfig
from softswitch.config_types import Config, QueueBlock
from softswitch.flow.call import Call, CallerHungUp, QueueResult
from softswitch.sip.message import Peer
from softswitch.sip.routing import BranchRecord, ForkWatcher, Target

if TYPE_CHECKING:
    from softswitch.flow.session import FlowSession
    from softswitch.sip.proxy import Edge, InviteTxn
    from softswitch.sip.registrar import Registrar
    from softswitch.store import Store

log = logging.getLogger(__name__)

LEG_RETRIES = 3  # consecutive queue legs that die unanswered before the caller gives up
REJECTED_CODES = {403, 486, 600, 603}
NO_ANSWER_CODES = {408, 480, 487}


class CallCentre:
    """The ACD of one switch. Built from the config's queue blocks; `start()` restores
    operators' log-in state (registrations + what they asked for, kept in the store)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        registrar: Registrar,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.registrar = registrar
        self.clock = clock
        self.edge: Edge | None = None
        self.blocks: dict[str, QueueBlock] = {
            b.name: b for b in config.blocks.values() if isinstance(b, QueueBlock)
        }
        self.acd = Acd(AcdConfig(queues=tuple(b.to_queue_config() for b in self.blocks.values())))
        self.agents: set[str] = {m for b in self.blocks.values() for m in b.members}
        self.callers: dict[str, QueueCaller] = {}  # by the caller's call id
        self.legs: dict[str, QueueCaller] = {}  # by queue leg name
        self.numbers: dict[str, str] = {}  # caller id -> the caller's number (for rows)
        self.binding_reason = "unregistered"  # why bindings are changing right now
        self.listeners: list[Callable[[dict], None]] = []  # live events (API, tests)
        self._events: deque[acd.Event] = deque()
        self._feeding = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- life --------------------------------------------------------------------------
    def start(self) -> None:
        """Log in every operator who should be: registered (when login follows
        registration) and not logged out by their own choice; pause who paused."""
        now = self.clock()
        closed = self.store.close_stale_queue(now)
        if closed:
            log.warning("closed %d queue caller(s)/login session(s) of the previous run", closed)
        wishes = self.store.agent_status()
        by_registration = self.config.features.login_by_registration
        for agent in sorted(self.agents):
            wish = wishes.get(agent)
            chose_out = bool(wish["logged_out"]) if wish is not None else not by_registration
            if chose_out:
                continue
            if by_registration and not self.registrar.lookup(agent, now):
                continue
            self.feed(acd.AgentLoggedIn(agent, "restart" if wish is not None else "registration"))
            if wish is not None and wish["pause_reason"]:
                self.feed(acd.AgentPaused(agent, wish["pause_reason"]))

    def stop(self) -> None:
        """Clean shutdown: waiting callers and login sessions get their closing rows."""
        for caller in list(self.callers):
            self.feed(acd.CallEnded(caller, "switch"))
        for agent in sorted(self.agents):
            self.feed(acd.AgentLoggedOut(agent, "shutdown"))
        if self._timer is not None:
            self._timer.cancel()

    # -- feeding the core ----------------------------------------------------------------
    def feed(self, event: acd.Event) -> None:
        """Hand one event to the core and carry out its commands. Re-entrant calls (a
        command whose execution produces another event) are queued and run after."""
        self._events.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._events:
                ev = self._events.popleft()
                try:
                    commands = self.acd.handle(ev, self.clock())
                except Exception:
                    log.exception("ACD refused %r", ev)
                    continue
                self._run(commands)
        finally:
            self._feeding = False
        self._arm()

    def _arm(self) -> None:
        when = self.acd.next_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            delay = max(0.0, when - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock()
        if self._feeding:  # cannot happen from the event loop, but never re-enter
            self._arm()
            return
        self._feeding = True
        try:
            self._run(self.acd.on_timer(now))
            while self._events:
                ev = self._events.popleft()
                self._run(self.acd.handle(ev, self.clock()))
        finally:
            self._feeding = False
        self._arm()

    def _run(self, commands: list[acd.Command]) -> None:
        for cmd in commands:
            try:
                self._execute(cmd)
            except Exception:
                log.exception("ACD command %r failed", cmd)

    def _execute(self, cmd: acd.Command) -> None:
        if isinstance(cmd, acd.QueueEvent):
            self._store(cmd)
            return
        if isinstance(cmd, acd.AutoPaused):
            log.warning(
                "operator %s auto-paused after %d missed calls in queue %s",
                cmd.agent,
                cmd.misses,
                cmd.queue,
            )
            self.store.set_agent_status(
                cmd.agent, logged_out=False, pause_reason="auto-pause", now=self.clock()
            )
            return
        caller_id = getattr(cmd, "caller", None)
        qc = self.callers.get(caller_id) if caller_id else None
        if qc is None:
            return  # wrap-up commands, or a caller already gone
        if isinstance(cmd, acd.RingAgents):
            qc.ring(cmd.agents)
        elif isinstance(cmd, acd.CancelBranch):
            qc.cancel(cmd.agent, cmd.reason)
        elif isinstance(cmd, acd.Connect):
            qc.connect(cmd.agent)
        elif isinstance(cmd, acd.Announce):
            qc.announce(cmd.position, cmd.estimated_wait)
        elif isinstance(cmd, acd.Leave):
            qc.leave(cmd.reason, cmd.target)

    def _store(self, ev: acd.QueueEvent) -> None:
        row: dict[str, Any] = {
            k: v for k, v in asdict(ev).items() if v is not None and k not in ("attempts",)
        }
        if ev.attempts:
            row["attempts"] = [asdict(a) for a in ev.attempts]
        if ev.caller is not None and ev.caller in self.numbers:
            row["number"] = self.numbers[ev.caller]
        self.store.add_queue_event(row)
        if ev.kind in ("completed", "abandoned", "left") and ev.caller is not None:
            self.numbers.pop(ev.caller, None)
        for listener in list(self.listeners):
            try:
                listener(row)
            except Exception:
                log.exception("queue event listener failed")

    # -- operators -----------------------------------------------------------------------
    def bindings_changed(self, aor: str, live: list) -> None:
        """Registrar hook: a phone registered, unregistered, expired or lost its TCP
        flow. With `login_by_registration`, that logs the operator in or out."""
        if aor not in self.agents or not self.config.features.login_by_registration:
            return
        if live:
            wish = self.store.agent_status().get(aor)
            if wish is not None and wish["logged_out"]:
                return
            self.feed(acd.AgentLoggedIn(aor, "registration"))
            if wish is not None and wish["pause_reason"]:
                self.feed(acd.AgentPaused(aor, wish["pause_reason"]))
        else:
            self.feed(acd.AgentLoggedOut(aor, self.binding_reason))

    def agent_status(self, agent: str) -> str:
        return self.acd.agent_view(agent).status

    def toggle_login(self, agent: str, how: str = "feature-code") -> str:
        """Log the operator in if out, out if in. Returns "logged-in" / "logged-out"."""
        if self.agent_status(agent) == "logged_out":
            return self.login(agent, how)
        return self.logout(agent, how)

    def login(self, agent: str, how: str = "api") -> str:
        self.store.set_agent_status(agent, logged_out=False, pause_reason=None, now=self.clock())
        if self.config.features.login_by_registration and not self.registrar.lookup(
            agent, self.clock()
        ):
            log.info("operator %s asked to log in but no phone is registered", agent)
        self.feed(acd.AgentLoggedIn(agent, how))
        return "logged-in"

    def logout(self, agent: str, how: str = "api") -> str:
        self.store.set_agent_status(agent, logged_out=True, pause_reason=None, now=self.clock())
        self.feed(acd.AgentLoggedOut(agent, how))
        return "logged-out"

    def toggle_pause(self, agent: str, reason: str = "feature-code") -> str:
        """Pause if available, unpause if paused. Returns "paused" / "unpaused" / the
        status unchanged when logged out."""
        status = self.agent_status(agent)
        if status == "available":
            return self.pause(agent, reason)
        if status == "paused":
            return self.unpause(agent)
        return "logged-out"

    def pause(self, agent: str, reason: str = "api") -> str:
        self.store.set_agent_status(agent, logged_out=False, pause_reason=reason, now=self.clock())
        self.feed(acd.AgentPaused(agent, reason))
        return "paused"

    def unpause(self, agent: str) -> str:
        self.store.set_agent_status(agent, logged_out=False, pause_reason=None, now=self.clock())
        self.feed(acd.AgentUnpaused(agent))
        return "unpaused"

    def phone_busy(self, agent: str, dialog: str) -> None:
        """The operator's phone is in a call that is not a queue call of ours."""
        if agent in self.agents:
            self.feed(acd.AgentBusy(agent, dialog))

    def phone_free(self, agent: str, dialog: str) -> None:
        if agent in self.agents:
            self.feed(acd.AgentFree(agent, dialog))

    # -- callers -------------------------------------------------------------------------
    def targets(self, agent: str) -> list[Target]:
        """Where the operator's phones are (every live registration rings)."""
        return [
            Target(
                contact=b.contact,
                dest=Peer(b.transport, b.source_host, b.source_port, None, "outside"),
                label=agent,
            )
            for b in self.registrar.lookup(agent, self.clock())
        ]

    async def enter(
        self, session: FlowSession, call: Call, queue: str, priority: int | None
    ) -> QueueResult:
        """Run one caller's stay in `queue` (Call.queue lands here)."""
        block = self.blocks.get(queue)
        if block is None:
            raise ValueError(f"no queue {queue!r}")
        qc = QueueCaller(self, session, call, block, priority)
        self.callers[call.call_id] = qc
        self.numbers[call.call_id] = call.caller
        try:
            return await qc.run()
        finally:
            # Whatever ended the stay (a worker death cancels the flow), the core must
            # not keep ringing operators for a caller nobody is holding any more.
            if self.acd.caller_view(call.call_id) is not None:
                self.feed(acd.CallEnded(call.call_id, "switch"))
            self.callers.pop(call.call_id, None)
            self.numbers.pop(call.call_id, None)


class QueueCaller(ForkWatcher):
    """One caller in one queue: their worker leg toward the operators, the music, the
    announcements and the exit key. Commands come from `CallCentre`; branch events come
    from the edge (this object is the fork's context)."""

    def __init__(
        self,
        centre: CallCentre,
        session: FlowSession,
        call: Call,
        block: QueueBlock,
        priority: int | None,
    ) -> None:
        self.centre = centre
        self.session = session
        self.call = call
        self.block = block
        self.priority = priority
        self.id = call.call_id
        self.leg: str | None = None
        self.leg_state = "none"  # none / opening / open / closing
        self.txn: InviteTxn | None = None
        self.rung: set[str] = set()  # operators this leg has rung (never twice)
        self.ringing: set[str] = set()  # operators the core wants ringing now
        self.started: set[str] = set()  # of those, with a branch on the current leg
        self.alerted: set[str] = set()
        self.winner: str | None = None
        self.answering: str | None = None
        self.bridged = False
        self.joined_at = 0.0
        self.connected_at: float | None = None
        self.failures = 0
        self.result: asyncio.Future[QueueResult] = asyncio.get_running_loop().create_future()
        self.announcing: asyncio.Task | None = None
        self.transferring: asyncio.Task | None = None  # following the operator's REFER
        self.leg_ended: asyncio.Future | None = None

    # -- the caller's side -----------------------------------------------------------------
    async def run(self) -> QueueResult:
        call, block = self.call, self.block
        await call.answer()
        call.take_digits()
        if block.greeting:
            await call.play(block.greeting)
        self.joined_at = self.centre.clock()
        self.centre.feed(acd.CallerJoined(self.id, block.name, self.priority))
        if not self.result.done():  # full or empty: sent on at once, no music blip
            await call.music(block.music or "default")
        if block.exit_key:
            call._detect_inband(True)
        keys: asyncio.Task | None = None
        if block.exit_key:
            keys = asyncio.get_running_loop().create_task(self._watch_keys())
        try:
            result = await call.wait(self.result)
        except CallerHungUp:
            if self.connected_at is not None:
                call.outcome = "answered"
            self.centre.feed(acd.CallerLeft(self.id))
            if self.transferring is not None:
                with contextlib.suppress(asyncio.CancelledError, CallerHungUp):
                    await asyncio.wait_for(self.transferring, 5.0)
            await self._end_leg(487 if self.connected_at is None else 200)
            raise
        finally:
            if keys is not None:
                keys.cancel()
            if self.announcing is not None:
                self.announcing.cancel()
            if not call.hung_up:
                call._detect_inband(False)
                call.stop()  # an announcement cut short
                call.music_off()  # the next block must not have the queue's music under it
        await self._end_leg(487)
        if result.status == "answered":
            call.outcome = "answered"
        return result

    async def _watch_keys(self) -> None:
        while not self.result.done():
            digit = await self.call.next_digit(3600)
            if digit is not None and self.connected_at is None:
                self.centre.feed(acd.ExitKeyPressed(self.id, digit))

    async def _announce(self, prompts: list[str]) -> None:
        with contextlib.suppress(CallerHungUp):
            for prompt in prompts:
                if self.winner is not None or self.result.done():
                    return
                await self.call.play(prompt)

    def announce(self, position: int, estimated_wait: int | None) -> None:
        if self.announcing is not None and not self.announcing.done():
            return  # the previous one is still being said
        from softswitch.flow.announce import position_announcement

        prompts = position_announcement(position, estimated_wait, self.call.language)
        self.announcing = asyncio.get_running_loop().create_task(self._announce(prompts))

    def leave(self, reason: str, target: str | None) -> None:
        self._finish(
            QueueResult(
                status=reason,
                queue=self.block.name,
                agent=None,
                target=target,
                wait_seconds=self.centre.clock() - self.joined_at,
                attempts=self._attempts(),
            )
        )

    def _attempts(self) -> tuple:
        view = self.centre.acd.caller_view(self.id)
        if view is not None:
            return view.attempts
        rows = self.centre.store.queue_events(caller=self.id, kind="ring")
        return tuple(
            acd.Attempt(r["agent"], r["ring_start"], r["ring_time"], r["result"]) for r in rows
        )

    def _finish(self, result: QueueResult) -> None:
        if not self.result.done():
            self.result.set_result(result)

    # -- the leg toward the operators ------------------------------------------------------
    def ring(self, agents: tuple[str, ...]) -> None:
        self.ringing.update(agents)
        self._sync()

    def cancel(self, agent: str, reason: str) -> None:
        self.ringing.discard(agent)
        self.alerted.discard(agent)
        if agent == self.answering:
            return  # the edge declines that answer itself
        if agent in self.started:
            self.started.discard(agent)
            if self.txn is not None and self.centre.edge is not None:
                self.centre.edge.cancel_branches(self.txn, agent)

    def connect(self, agent: str) -> None:
        self.winner = agent
        self.connected_at = self.centre.clock()
        self.ringing.discard(agent)
        if self.announcing is not None:
            self.announcing.cancel()

    def _sync(self) -> None:
        """Make the edge ring exactly who the core wants ringing."""
        if self.winner is not None or self.result.done():
            return
        if self.leg_state == "none":
            if self.ringing:
                self._open_leg()
            return
        if self.leg_state != "open" or self.txn is None:
            return  # opening or closing: synced when that completes
        wanted = self.ringing - self.started
        if wanted & self.rung:
            self._close_leg()  # re-ringing someone: on a fresh leg (see the module doc)
            return
        edge = self.centre.edge
        assert edge is not None
        from_header = self._from_header()
        for agent in sorted(wanted):
            targets = self.centre.targets(agent)
            self.rung.add(agent)
            if not targets:
                self.centre.feed(acd.BranchFailed(self.id, agent, None, "not registered"))
                continue
            self.started.add(agent)
            for target in targets:
                edge.add_branch(self.txn, target, None, from_header)

    def _from_header(self) -> str:
        name = (self.call.caller_name or self.call.caller).replace('"', "")
        return f'"{name}" <sip:{self.call.caller}@{self.centre.config.switch.domain}>'

    def _open_leg(self) -> None:
        session = self.session
        session.dials += 1
        leg = f"{self.id}-q{session.dials}"
        self.leg = leg
        self.leg_state = "opening"
        self.rung.clear()
        self.started.clear()
        self.alerted.clear()
        self.leg_ended = asyncio.get_running_loop().create_future()
        self.centre.legs[leg] = self
        session.leg_handlers[leg] = self._on_leg_event
        deps = session.deps
        deps.store.open_leg(
            leg,
            call_id=self.id,
            role="callee",
            party=f"queue:{self.block.name}",
            started=deps.clock(),
            worker=deps.worker_slot,
        )
        deps.send(
            {
                "cmd": "originate",
                "leg": leg,
                "uri": f"sip:{self.block.name}@{deps.domain}",
                "headers": {"X-Call": self.id, "X-Leg": leg, "X-Queue": self.block.name},
            }
        )

    def _close_leg(self, code: int = 487) -> None:
        if self.leg is None or self.leg_state in ("closing", "none"):
            return
        self.leg_state = "closing"
        self.txn = None
        self.started.clear()
        self.session.deps.send({"cmd": "hangup", "leg": self.leg, "code": code})

    async def _end_leg(self, code: int) -> None:
        """The caller's stay is over: hang the leg up and wait (bounded) for its end."""
        if self.leg is None:
            return
        ended = self.leg_ended
        self._close_leg(200 if self.bridged else code)
        if ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), 5.0)

    # ForkWatcher: the edge tells us about the fork of our leg.
    def fork_started(self, fork: object) -> None:
        self.txn = fork  # type: ignore[assignment]
        self.leg_state = "open"
        self._sync()

    def _current(self, record: BranchRecord) -> bool:
        txn = self.txn
        return txn is not None and any(b.record is record for b in txn.branches)

    def branch_ringing(self, record: BranchRecord, now: float) -> None:
        agent = record.label
        if self._current(record) and agent in self.started and agent not in self.alerted:
            self.alerted.add(agent)
            self.centre.feed(acd.BranchRinging(self.id, agent))

    def branch_ended(self, record: BranchRecord, now: float) -> None:
        agent = record.label
        if not self._current(record) or agent not in self.started:
            return  # we cancelled it (the core knows), or an old leg's branch
        assert self.txn is not None
        mine = [b for b in self.txn.branches if b.record.label == agent]
        if any(b.state in ("calling", "proceeding") for b in mine):
            return  # another phone of the same operator still rings
        self.started.discard(agent)
        self.alerted.discard(agent)
        codes = [b.record.code or 0 for b in mine]
        rejected = [c for c in codes if c in REJECTED_CODES]
        if rejected:
            self.centre.feed(acd.BranchRejected(self.id, agent, rejected[0]))
        elif any(c in NO_ANSWER_CODES for c in codes) and not any(
            b.record.result == "failed" for b in mine
        ):
            self.centre.feed(acd.BranchTimedOut(self.id, agent, codes[0]))
        else:
            self.centre.feed(acd.BranchFailed(self.id, agent, codes[0] or None, "failed"))

    def accept_answer(self, record: BranchRecord, now: float) -> bool:
        agent = record.label
        if self.winner is not None or not self._current(record) or agent not in self.started:
            return False
        self.answering = agent
        try:
            self.centre.feed(acd.BranchAnswered(self.id, agent))
        finally:
            self.answering = None
        if self.winner == agent:
            self.started.discard(agent)
            return True
        return False

    # worker events of the leg
    def _on_leg_event(self, msg: dict) -> None:
        if msg.get("event") == "transfer" and self.bridged and self.transferring is None:
            self._operator_transfers(msg)
            return
        if msg.get("event") != "state":
            return
        state = msg.get("state")
        leg = str(msg.get("leg"))
        deps = self.session.deps
        if state == "confirmed" and self.winner is not None and not self.bridged:
            self.bridged = True
            deps.store.leg_answered(leg, deps.clock())
            if self.announcing is not None:
                self.announcing.cancel()
            self.call.stop()
            self.call.music_off()
            deps.send({"cmd": "bridge", "a": self.call.leg, "b": leg})
            return
        if state != "disconnected":
            return
        self._leg_closed(leg, msg)

    def _operator_transfers(self, msg: dict) -> None:
        """The operator passes the caller on (REFER): their queue call is over (it is
        counted once, answered by them), a `transfer` row says to whom, and the session
        follows the transfer until the caller's conversation ends."""
        leg, target = str(msg.get("leg")), str(msg.get("target"))
        assert self.winner is not None
        self.centre.feed(acd.CallEnded(self.id, "transfer"))
        self.centre.store.add_queue_event(
            {
                "time": self.centre.clock(),
                "kind": "transfer",
                "queue": self.block.name,
                "caller": self.id,
                "number": self.call.caller,
                "agent": self.winner,
                "target": target,
            }
        )
        events: asyncio.Queue[dict] = asyncio.Queue()
        self.session.leg_handlers[leg] = events.put_nowait
        events.put_nowait(msg)
        self.transferring = asyncio.get_running_loop().create_task(
            self._follow_transfer(leg, events)
        )

    async def _follow_transfer(self, leg: str, events: asyncio.Queue[dict]) -> None:
        assert self.winner is not None
        try:
            end = await self.session.talk(self.call, leg, self.winner, events)
        except CallerHungUp:
            return  # run() sees the hang-up itself
        self._leg_closed(leg, end)  # finishes the stay as answered by the operator
        self.call.end_cause = "transfer target hung up"

    def _leg_closed(self, leg: str, msg: dict) -> None:
        deps = self.session.deps
        stats = msg.get("stats") or {}
        bridged = self.bridged
        deps.store.close_leg(
            leg,
            ended=deps.clock(),
            result="answered" if bridged else "cancelled",
            cause=(
                f"operator {self.winner}"
                if bridged
                else ("queue leg closed" if self.leg_state == "closing" else "queue leg lost")
            ),
            sip_code=msg.get("code"),
            rx_packets=stats.get("rx_packets"),
            rx_lost=stats.get("rx_lost"),
            tx_packets=stats.get("tx_packets"),
        )
        self.session.leg_handlers.pop(leg, None)
        self.centre.legs.pop(leg, None)
        was = self.leg_state
        self.leg = None
        self.leg_state = "none"
        self.txn = None
        if self.leg_ended is not None and not self.leg_ended.done():
            self.leg_ended.set_result(True)
        if self.result.done() or self.call.hung_up:
            return
        if self.winner is not None:
            # The conversation with the operator is over (or never got going).
            now = self.centre.clock()
            by = "agent" if bridged and msg.get("cause") == "remote" else "switch"
            self.call.end_cause = "operator hung up" if by == "agent" else "operator leg ended"
            self.centre.feed(acd.CallEnded(self.id, by))
            self._finish(
                QueueResult(
                    status="answered",
                    queue=self.block.name,
                    agent=self.winner,
                    target=None,
                    wait_seconds=(self.connected_at or now) - self.joined_at,
                    talk_seconds=now - (self.connected_at or now),
                    attempts=self._attempts(),
                )
            )
            return
        if was != "closing":
            # Lost without being asked to close (originate refused, worker trouble):
            # whatever rang on it is over, not the operators' fault.
            self.failures += 1
            for agent in sorted(self.started):
                self.centre.feed(acd.BranchFailed(self.id, agent, msg.get("code"), "leg lost"))
            self.started.clear()
            if self.failures > LEG_RETRIES:
                log.warning("call %s: queue legs keep failing; leaving the queue", self.id)
                self.centre.feed(acd.CallEnded(self.id, "switch"))
                self._finish(
                    QueueResult(
                        status="failed",
                        queue=self.block.name,
                        agent=None,
                        target=None,
                        wait_seconds=self.centre.clock() - self.joined_at,
                        attempts=self._attempts(),
                    )
                )
                return
        else:
            self.failures = 0
        self._sync()
