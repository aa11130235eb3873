"""One call running a flow: carries worker events into its `Call` and the flow's
commands out to the worker, dials extensions for it, and keeps the call record.

The session owns one reserved pair of legs on one worker: the caller's leg (`-a`) and,
while `call.dial()` runs, one outgoing leg (`-b1`, `-b2`, ... one at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softswitch.flow.call import Call, CallerHungUp, DialResult, DialStatus

log = logging.getLogger(__name__)

FlowRunner = Callable[[Call], Awaitable[None]]

DIAL_STATUS: dict[str, DialStatus] = {
    "busy": DialStatus.BUSY,
    "no-answer": DialStatus.NO_ANSWER,
    "rejected": DialStatus.REJECTED,
    "unavailable": DialStatus.UNAVAILABLE,
}


@dataclass
class SessionDeps:
    """What a session needs from the coordinator (kept narrow so it can be faked)."""

    send: Callable[[dict], None]  # a command to this session's worker
    store: Any  # softswitch.store.Store
    domain: str
    resolve_prompt: Callable[[str], Path]
    recording_dir: Path
    language: str
    worker_slot: int | None
    clock: Callable[[], float] = time.time
    # Call.queue(): (session, call, queue, priority) -> QueueResult; None: no queues
    enqueue: Callable[..., Awaitable[Any]] | None = None
    # the worker is placing a transfer call of this session to `target` (the coordinator
    # matches it with the INVITE pjsua sends on its own)
    transfer_started: Callable[[str], None] | None = None
    music: str = ""  # hold music file the caller hears while a transfer target rings


class FlowSession:
    def __init__(
        self,
        call_id: str,
        caller: str,
        caller_name: str,
        dialed: str,
        deps: SessionDeps,
        runner: FlowRunner,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.caller_name = caller_name
        self.dialed = dialed
        self.deps = deps
        self.runner = runner
        self.leg_a = f"{call_id}-a"
        self.call: Call | None = None
        self.task: asyncio.Task | None = None
        self.leg_handlers: dict[str, Callable[[dict], None]] = {}
        self.last_fork_result: str | None = None
        self.last_answerer: str | None = None  # the extension that answered the last dial
        self.transfers: list[str] = []  # "102 -> 103", for the call record
        self.ended_legs: set[str] = set()  # outgoing legs whose end was already seen
        self.dials = 0
        self.closed = False
        self.on_closed: Callable[[FlowSession], None] | None = None
        self.a_ended = asyncio.get_running_loop().create_future()

    # -- events from the worker (via the coordinator) -----------------------------------
    def on_event(self, msg: dict) -> None:
        leg = str(msg.get("leg", ""))
        if leg != self.leg_a:
            handler = self.leg_handlers.get(leg)
            if handler is not None:
                handler(msg)
            return
        event = msg.get("event")
        if event == "incoming":
            self._start(msg)
            return
        call = self.call
        if call is None:
            return
        if event == "state":
            state = msg.get("state")
            if state == "confirmed":
                call._on_confirmed()
                self.deps.store.leg_answered(self.leg_a, self.deps.clock())
                self.deps.store.call_answered(self.call_id, self.deps.clock())
            elif state == "disconnected":
                self._a_disconnected(msg)
        elif event == "dtmf":
            call._on_digit(str(msg.get("digit", "")), str(msg.get("method", "rfc2833")))
        elif event == "playback_finished":
            log.debug("call %s: playback of %s finished", self.call_id, msg.get("file"))
            call._on_playback_finished()
        elif event == "recording_finished":
            call._on_recording_finished(msg)

    def on_fork_result(self, result: str) -> None:
        self.last_fork_result = result

    def on_worker_died(self) -> None:
        """Everything on the worker is gone: close the records, end the flow."""
        now = self.deps.clock()
        for leg in [self.leg_a, *self.leg_handlers]:
            self.deps.store.close_leg(leg, ended=now, result="failed", cause="media worker died")
        if self.call is not None:
            self.call.outcome = "failed"
            self.call._on_hangup()
        if self.task is not None:
            self.task.cancel()
        self._close("failed", "media worker died", None)

    # -- the flow ------------------------------------------------------------------------
    def _start(self, msg: dict) -> None:
        headers = {k: str(v) for k, v in (msg.get("headers") or {}).items()}
        self.deps.store.open_leg(
            self.leg_a,
            call_id=self.call_id,
            role="caller",
            party=self.caller,
            started=self.deps.clock(),
            worker=self.deps.worker_slot,
            sip_call_id=msg.get("sip_call_id"),
        )
        self.call = Call(
            call_id=self.call_id,
            caller=self.caller,
            caller_name=self.caller_name,
            dialed=self.dialed,
            headers=headers,
            leg=self.leg_a,
            send=self.deps.send,
            resolve_prompt=self.deps.resolve_prompt,
            originate=self._dial,
            recording_dir=self.deps.recording_dir,
            language=self.deps.language,
            enqueue=self._enqueue if self.deps.enqueue is not None else None,
        )
        self.task = asyncio.get_running_loop().create_task(self._run(self.call))

    async def _run(self, call: Call) -> None:
        cause = "flow ended"
        try:
            await self.runner(call)
        except CallerHungUp:
            cause = "caller hung up"
        except asyncio.CancelledError:
            self._close("failed", "flow cancelled", None)  # no-op after a worker death
            raise
        except Exception:
            log.exception("flow of call %s failed", self.call_id)
            call.outcome = call.outcome or "failed"
            cause = "flow error"
        if not call.hung_up:
            if cause == "flow ended":
                cause = call.end_cause or "switch hung up"
            with contextlib.suppress(CallerHungUp):
                await call.hangup(500 if call.outcome == "failed" and not call.answered else None)
        # wait for the caller's leg to end (its disconnected event closes the record)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.a_ended), 10)
        result = call.outcome or ("abandoned" if cause == "caller hung up" else "completed")
        self._close(result, cause, None)

    def _a_disconnected(self, msg: dict) -> None:
        assert self.call is not None
        stats = msg.get("stats") or {}
        self.deps.store.close_leg(
            self.leg_a,
            ended=self.deps.clock(),
            result="answered" if self.call.answered else "cancelled",
            cause={
                "remote": "caller hung up",
                "media-timeout": "no audio from the caller (media timeout)",
            }.get(str(msg.get("cause")), "switch hung up"),
            sip_code=msg.get("code"),
            rx_packets=stats.get("rx_packets"),
            rx_lost=stats.get("rx_lost"),
            tx_packets=stats.get("tx_packets"),
        )
        self.call._on_hangup()
        if not self.a_ended.done():
            self.a_ended.set_result(True)

    def _close(self, result: str, cause: str, code: int | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transfers:
            cause += "; transferred " + ", ".join(self.transfers)
        self.deps.store.close_call(
            self.call_id, ended=self.deps.clock(), result=result, cause=cause, sip_code=code
        )
        log.info("call %s %s -> %s: %s (%s)", self.call_id, self.caller, self.dialed, result, cause)
        if self.on_closed is not None:
            self.on_closed(self)

    async def _enqueue(self, call: Call, queue: str, priority: int | None) -> Any:
        assert self.deps.enqueue is not None
        return await self.deps.enqueue(self, call, queue, priority)

    # -- dialling ------------------------------------------------------------------------
    async def _dial(self, call: Call, targets: list[str], timeout: float) -> DialResult:
        """Place one outgoing leg that the edge forks to every target's phones; bridge
        it to the caller when answered; return when that conversation ends."""
        self.dials += 1
        leg = f"{self.call_id}-b{self.dials}"
        deps = self.deps
        events: asyncio.Queue[dict] = asyncio.Queue()
        self.leg_handlers[leg] = events.put_nowait
        self.last_fork_result = None
        started = deps.clock()
        deps.store.open_leg(
            leg,
            call_id=self.call_id,
            role="callee",
            party=",".join(targets),
            started=started,
            worker=deps.worker_slot,
        )
        name = (self.caller_name or self.caller).replace('"', "")
        deps.send(
            {
                "cmd": "originate",
                "leg": leg,
                "uri": f"sip:{targets[0]}@{deps.domain}",
                "headers": {
                    "X-Call": self.call_id,
                    "X-Leg": leg,
                    "X-Targets": ",".join(targets),
                    "X-Ring-Timeout": f"{timeout:g}",
                    "X-From": f'"{name}" <sip:{self.caller}@{deps.domain}>',
                },
            }
        )
        answered_at: float | None = None
        rang = False
        end: dict = {}
        try:
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
                    await call.answer()
                    deps.send({"cmd": "bridge", "a": self.leg_a, "b": leg})
                    answerer = self.last_answerer or targets[0]
                    end = await self.talk(call, leg, answerer, events)
                    break
                elif state == "disconnected":
                    end = msg
                    break
        except CallerHungUp:
            # CANCEL while it rings, BYE once answered
            deps.send({"cmd": "hangup", "leg": leg, "code": 487 if answered_at is None else 200})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0 if leg in self.ended_legs else 5):
                    while leg not in self.ended_legs:
                        msg = await events.get()
                        if msg.get("event") == "state" and msg.get("state") == "disconnected":
                            end = msg
                            break
            self._close_dial_leg(leg, answered_at, end, "caller hung up")
            if answered_at is not None:
                call.outcome = "answered"
            raise
        finally:
            self.leg_handlers.pop(leg, None)
        now = deps.clock()
        code = end.get("code")
        if answered_at is not None:
            call.outcome = "answered"
            call.end_cause = "callee hung up"
            self._close_dial_leg(leg, answered_at, end, "callee hung up")
            return DialResult(
                DialStatus.ANSWERED,
                ",".join(targets),
                ring_seconds=answered_at - started,
                talk_seconds=now - answered_at,
                sip_code=code,
            )
        status = DIAL_STATUS.get(self.last_fork_result or "", None)
        if status is None:
            status = {
                486: DialStatus.BUSY,
                600: DialStatus.BUSY,
                603: DialStatus.REJECTED,
                408: DialStatus.NO_ANSWER,
            }.get(code or 0, DialStatus.UNAVAILABLE)
        self._close_dial_leg(leg, None, end, str(status))
        return DialResult(status, ",".join(targets), ring_seconds=now - started, sip_code=code)

    async def talk(self, call: Call, leg: str, party: str, events: asyncio.Queue[dict]) -> dict:
        """The caller talks to `party` on `leg` (bridged; `events` gets that leg's
        events). Follows transfers that party asks for (REFER): the caller hears hold
        music while the target rings, is bridged to the target when it answers, and goes
        back to the transferor (or calls them back when they have hung up) when it does
        not. Returns when the conversation is over, with `leg`'s end event; raises
        CallerHungUp (after hanging up the other legs) if the caller hangs up."""
        deps = self.deps
        current: str | None = leg  # who the caller talks to (or will go back to)
        pending: str | None = None  # the transfer target's leg while it rings
        pending_party = ""
        leg_end: dict = {}
        try:
            while True:
                msg = await call._wait(events.get())
                kind, which = msg.get("event"), str(msg.get("leg"))
                if which == leg and kind == "state" and msg.get("state") == "disconnected":
                    leg_end = msg
                    self.ended_legs.add(leg)
                if kind == "transfer" and which == current and pending is None:
                    pending, pending_party = str(msg.get("new_leg")), str(msg.get("target"))
                    self._open_transfer_leg(pending, pending_party, events)
                    deps.send({"cmd": "unbridge", "a": self.leg_a, "b": current})
                    if deps.music:
                        deps.send({"cmd": "moh_start", "leg": self.leg_a, "file": deps.music})
                    if deps.transfer_started is not None:
                        deps.transfer_started(pending_party)
                    log.info("call %s: %s transfers to %s", self.call_id, party, pending_party)
                    continue
                if kind != "state":
                    continue
                state = msg.get("state")
                if which == pending and state == "confirmed":
                    deps.store.leg_answered(pending, deps.clock())
                    deps.send({"cmd": "moh_stop", "leg": self.leg_a})
                    deps.send({"cmd": "bridge", "a": self.leg_a, "b": pending})
                    if current is not None:
                        deps.send({"cmd": "hangup", "leg": current, "code": 200})
                    self.transfers.append(f"{party} -> {pending_party}")
                    current, party, pending = pending, pending_party, None
                elif which == pending and state == "disconnected":
                    self._close_transfer_leg(pending, msg)
                    self.transfers.append(f"{party} -> {pending_party} (failed)")
                    pending = None
                    if current is not None:  # back to the transferor, still on the line
                        deps.send({"cmd": "moh_stop", "leg": self.leg_a})
                        deps.send({"cmd": "bridge", "a": self.leg_a, "b": current})
                    elif pending_party != party:  # call the transferor back
                        pending, pending_party = self._recall(party, events)
                    else:
                        return leg_end  # the transferor did not come back either
                elif which == current and state == "disconnected":
                    if current != leg:
                        self._close_transfer_leg(current, msg, answered=True)
                    current = None
                    if pending is None:
                        return leg_end
        except CallerHungUp:
            for other in (current, pending):
                if other is not None and other != leg:
                    deps.send({"cmd": "hangup", "leg": other, "code": 200})
                    self._close_transfer_leg(other, {}, answered=other == current)
            raise

    def _recall(self, party: str, events: asyncio.Queue[dict]) -> tuple[str, str]:
        """Ring the transferor back: the caller is never dropped by a failed transfer."""
        deps = self.deps
        self.dials += 1
        leg = f"{self.call_id}-r{self.dials}"
        self._open_transfer_leg(leg, party, events)
        name = (self.caller_name or self.caller).replace('"', "")
        deps.send(
            {
                "cmd": "originate",
                "leg": leg,
                "uri": f"sip:{party}@{deps.domain}",
                "headers": {
                    "X-Call": self.call_id,
                    "X-Leg": leg,
                    "X-From": f'"{name}" <sip:{self.caller}@{deps.domain}>',
                },
            }
        )
        return leg, party

    def _open_transfer_leg(self, leg: str, party: str, events: asyncio.Queue[dict]) -> None:
        self.leg_handlers[leg] = events.put_nowait
        self.deps.store.open_leg(
            leg,
            call_id=self.call_id,
            role="transfer",
            party=party,
            started=self.deps.clock(),
            worker=self.deps.worker_slot,
        )

    def _close_transfer_leg(self, leg: str, end: dict, answered: bool = False) -> None:
        self.leg_handlers.pop(leg, None)
        stats = end.get("stats") or {}
        code = end.get("code")
        self.deps.store.close_leg(
            leg,
            ended=self.deps.clock(),
            result="answered" if answered else "failed",
            cause="transfer target" if answered else f"transfer failed (SIP {code})",
            sip_code=code,
            rx_packets=stats.get("rx_packets"),
            rx_lost=stats.get("rx_lost"),
            tx_packets=stats.get("tx_packets"),
        )

    def _close_dial_leg(self, leg: str, answered_at: float | None, end: dict, cause: str) -> None:
        stats = end.get("stats") or {}
        self.deps.store.close_leg(
            leg,
            ended=self.deps.clock(),
            result="answered" if answered_at is not None else cause,
            cause=cause,
            sip_code=end.get("code"),
            rx_packets=stats.get("rx_packets"),
            rx_lost=stats.get("rx_lost"),
            tx_packets=stats.get("tx_packets"),
        )
