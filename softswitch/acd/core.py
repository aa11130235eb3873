"""The ACD core: queues of waiting callers, operators, strategies and timers, as a
sans-I/O state machine (like softswitch/calls.py and aioquic's QuicConnection).

    acd = Acd(AcdConfig(queues=(QueueConfig("sales", ("101", "102")),)))
    commands = acd.handle(AgentLoggedIn("101"), now)
    commands += acd.handle(CallerJoined("call-1", "sales"), now)   # -> RingAgents(...)
    t = acd.next_timer()              # when to call acd.on_timer(t) (None: no timer)

No clock reads, no I/O: every input carries `now` (seconds, any monotonic origin) and
every output is a command for the integration or a `QueueEvent` row for the store.
docs/acd.md describes the model; the invariant kept after every call is:

    no waiting caller who wants another operator has a free, eligible member

where a caller "wants" an operator when none of its branches rings (or always, in a
ring-all queue with `ring_new_free`), and a member is eligible when their status is
available, their state is idle, they are on no other call, and they are not cooling
down (`retry`) after missing this very caller.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

from .commands import (
    Announce,
    Attempt,
    AutoPaused,
    CancelBranch,
    Command,
    Connect,
    EndWrapUp,
    Leave,
    QueueEvent,
    RingAgents,
    StartWrapUp,
)
from .config import AcdConfig, QueueConfig
from .events import (
    AgentBusy,
    AgentFree,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    AgentUnpaused,
    BranchAnswered,
    BranchFailed,
    BranchRejected,
    BranchRinging,
    BranchTimedOut,
    CallEnded,
    CallerJoined,
    CallerLeft,
    Event,
    ExitKeyPressed,
)
from .strategies import Strategy, make_strategy

# operator status (set by them / the API) and state (set by the system)
LOGGED_OUT, AVAILABLE, PAUSED = "logged_out", "available", "paused"
IDLE, RINGING, TALKING, WRAP_UP = "idle", "ringing", "talking", "wrap_up"
# caller state
WAITING, CONNECTED, GONE = "waiting", "connected", "gone"
# timer kinds
_BRANCH, _WRAP, _MAXWAIT, _ANNOUNCE, _COOLDOWN = range(5)


class _Agent:
    __slots__ = (
        "id",
        "status",
        "pause_reason",
        "paused_at",
        "login_at",
        "state",
        "caller",
        "queues",
        "external",
        "wrap_until",
        "wrap_start",
        "wrap_queue",
        "wrap_token",
        "idle_since",
        "misses",
    )

    def __init__(self, agent_id: str) -> None:
        self.id = agent_id
        self.status = LOGGED_OUT
        self.pause_reason: str | None = None
        self.paused_at = 0.0
        self.login_at = 0.0
        self.state = IDLE
        self.caller: _Caller | None = None  # ringing for / talking with
        self.queues: list[_Queue] = []
        self.external: set[str] = set()  # non-queue calls in progress
        self.wrap_until: float | None = None
        self.wrap_start = 0.0
        self.wrap_queue: _Queue | None = None
        self.wrap_token = 0
        self.idle_since: float = float("-inf")  # end of the last call, or first login
        self.misses = 0  # consecutive


class _Branch:
    __slots__ = ("agent", "start", "alerted")

    def __init__(self, agent: _Agent, start: float) -> None:
        self.agent = agent
        self.start = start
        self.alerted: float | None = None


class _Caller:
    __slots__ = (
        "id",
        "queue",
        "priority",
        "joined_at",
        "key",
        "state",
        "branches",
        "cooldown",
        "attempts",
        "agent",
        "connected_at",
        "wait",
        "deadline",
        "next_announce",
        "hungry",
    )

    def __init__(self, caller_id: str, queue: _Queue, priority: int, now: float, key) -> None:
        self.id = caller_id
        self.queue = queue
        self.priority = priority
        self.joined_at = now
        self.key = key  # (-priority, since, seq, self): the order of service
        self.state = WAITING
        self.branches: dict[str, _Branch] = {}
        self.cooldown: dict[str, float] = {}  # agent id -> not before
        self.attempts: list[Attempt] = []
        self.agent: _Agent | None = None
        self.connected_at = 0.0
        self.wait = 0.0
        self.deadline: float | None = None
        self.next_announce: float | None = None
        self.hungry = False


class _Queue:
    __slots__ = (
        "config",
        "name",
        "strategy",
        "ring_all",
        "index",
        "members",
        "calls",
        "waiting",
        "hungry",
        "logged_in",
        "available",
        "aht",
    )

    def __init__(self, config: QueueConfig, strategy: Strategy) -> None:
        self.config = config
        self.name = config.name
        self.strategy = strategy
        self.ring_all = strategy.ring_all
        self.index = {m: i for i, m in enumerate(config.members)}
        self.members: list[_Agent] = []
        self.calls: dict[str, int] = {}  # answered calls of this queue per member
        self.waiting: list[tuple] = []  # keys of waiting callers, in order of service
        self.hungry: list[tuple] = []  # keys of waiting callers who want an operator
        self.logged_in = 0  # members not logged out
        self.available = 0  # members whose status is available
        self.aht: float | None = None  # smoothed talk + wrap-up of this queue's calls


@dataclass(frozen=True)
class AgentView:
    agent: str
    status: str
    pause_reason: str | None
    state: str
    caller: str | None
    wrap_until: float | None
    other_calls: int
    consecutive_misses: int
    idle_since: float | None
    queues: tuple[str, ...]


@dataclass(frozen=True)
class QueueView:
    queue: str
    waiting: tuple[str, ...]  # caller ids, in order of service
    logged_in: int
    available: int
    free: int
    average_handle_time: float | None


@dataclass(frozen=True)
class CallerView:
    caller: str
    queue: str
    state: str
    position: int | None
    priority: int
    joined_at: float
    ringing: tuple[str, ...]
    agent: str | None
    attempts: tuple[Attempt, ...]


class Acd:
    def __init__(self, config: AcdConfig) -> None:
        self.config = config
        self._queues: dict[str, _Queue] = {}
        self._agents: dict[str, _Agent] = {}
        self._callers: dict[str, _Caller] = {}
        self._ended: dict[str, str] = {}  # caller -> queue, bounded
        self._free: dict[str, _Agent] = {}  # eligible operators
        self._timers: list[tuple] = []
        self._tseq = itertools.count()
        self._cseq = itertools.count()
        self._pending_agents: deque[_Agent] = deque()
        self._pending_callers: deque[_Caller] = deque()
        self._out: list[Command] = []
        for agent_id in config.agents:
            self._agent(agent_id)
        for qc in config.queues:
            q = _Queue(qc, make_strategy(qc.strategy, qc.name, config.seed))
            self._queues[qc.name] = q
            for member in qc.members:
                a = self._agent(member)
                a.queues.append(q)
                q.members.append(a)
        self._handlers = {
            CallerJoined: self._on_joined,
            CallerLeft: self._on_caller_left,
            ExitKeyPressed: self._on_exit_key,
            CallEnded: self._on_call_ended,
            AgentLoggedIn: self._on_logged_in,
            AgentLoggedOut: self._on_logged_out,
            AgentPaused: self._on_paused,
            AgentUnpaused: self._on_unpaused,
            AgentReady: self._on_ready,
            AgentBusy: self._on_busy,
            AgentFree: self._on_free,
            BranchRinging: self._on_branch_ringing,
            BranchAnswered: self._on_answered,
            BranchRejected: self._on_rejected,
            BranchTimedOut: self._on_branch_timed_out,
            BranchFailed: self._on_failed,
        }

    # -- the API -----------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Command]:
        """Feed one event. Timers that were due strictly before `now` run first."""
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"not an ACD event: {event!r}")
        out: list[Command] = []
        self._out = out
        if self._timers and self._timers[0][0] < now:
            self._expire(now, strict=True)
            self._dispatch(now)
        handler(event, now)
        self._dispatch(now)
        return out

    def next_timer(self) -> float | None:
        """When `on_timer` must be called next (None: no timer is pending)."""
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def on_timer(self, now: float) -> list[Command]:
        """Run every timer due at or before `now`."""
        out: list[Command] = []
        self._out = out
        self._expire(now, strict=False)
        self._dispatch(now)
        return out

    # -- views (API / dashboard / tests) -----------------------------------------------
    def agent_view(self, agent: str) -> AgentView:
        a = self._agent(agent)
        return AgentView(
            a.id,
            a.status,
            a.pause_reason,
            a.state,
            a.caller.id if a.caller else None,
            a.wrap_until if a.state == WRAP_UP else None,
            len(a.external),
            a.misses,
            None if a.idle_since == float("-inf") else a.idle_since,
            tuple(q.name for q in a.queues),
        )

    def queue_view(self, queue: str) -> QueueView:
        q = self._queues[queue]
        return QueueView(
            q.name,
            tuple(k[3].id for k in q.waiting),
            q.logged_in,
            q.available,
            sum(1 for a in q.members if a.id in self._free),
            q.aht,
        )

    def caller_view(self, caller: str) -> CallerView | None:
        c = self._callers.get(caller)
        if c is None:
            return None
        return CallerView(
            c.id,
            c.queue.name,
            c.state,
            self._position(c) if c.state == WAITING else None,
            c.priority,
            c.joined_at,
            tuple(c.branches),
            c.agent.id if c.agent else None,
            tuple(c.attempts),
        )

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(self._queues)

    # -- callers -------------------------------------------------------------------------
    def _on_joined(self, ev: CallerJoined, now: float) -> None:
        q = self._queues.get(ev.queue)
        if q is None:
            raise ValueError(f"unknown queue {ev.queue!r}")
        if ev.caller in self._callers:
            return  # already in a queue: a duplicate join is ignored
        qc = q.config
        priority = qc.priority if ev.priority is None else ev.priority
        since = now if ev.since is None else ev.since
        c = _Caller(ev.caller, q, priority, now, None)
        c.key = (-priority, since, next(self._cseq), c)
        self._callers[c.id] = c
        insort(q.waiting, c.key)
        self._out.append(
            QueueEvent("joined", now, q.name, c.id, position=self._position(c), priority=priority)
        )
        if qc.on_empty is not None and q.logged_in == 0:
            self._leave(c, "empty", qc.on_empty, now)
            return
        if qc.max_callers is not None and len(q.waiting) > qc.max_callers:
            self._leave(c, "full", qc.on_full, now)
            return
        if qc.max_wait is not None:
            c.deadline = now + qc.max_wait
            self._push(c.deadline, _MAXWAIT, c, None)
        if qc.announce_every is not None:
            c.next_announce = now + qc.announce_every
            self._push(c.next_announce, _ANNOUNCE, c, None)
        self._update_hunger(c)

    def _on_caller_left(self, ev: CallerLeft, now: float) -> None:
        c = self._callers.get(ev.caller)
        if c is None:
            return
        if c.state == CONNECTED:
            self._complete(c, "caller", now)
        else:
            self._abandon(c, now)

    def _on_call_ended(self, ev: CallEnded, now: float) -> None:
        c = self._callers.get(ev.caller)
        if c is None:
            return
        if c.state == CONNECTED:
            self._complete(c, ev.by, now)
        elif ev.by == "caller":
            self._abandon(c, now)
        else:  # the switch took a waiting caller away (flow, error)
            position = self._position(c)
            self._remove_waiting(c, "removed", now)
            self._out.append(
                QueueEvent(
                    "left",
                    now,
                    c.queue.name,
                    c.id,
                    result="removed",
                    reason=ev.by,
                    position=position,
                    wait=now - c.joined_at,
                    attempts=tuple(c.attempts),
                )
            )

    def _on_exit_key(self, ev: ExitKeyPressed, now: float) -> None:
        c = self._callers.get(ev.caller)
        if c is None or c.state != WAITING:
            return
        qc = c.queue.config
        if qc.exit_key is not None and ev.key == qc.exit_key:
            self._leave(c, "key", qc.exit_target, now)

    def _abandon(self, c: _Caller, now: float) -> None:
        position = self._position(c)
        self._remove_waiting(c, "caller-left", now)
        self._out.append(
            QueueEvent(
                "abandoned",
                now,
                c.queue.name,
                c.id,
                position=position,
                wait=now - c.joined_at,
                attempts=tuple(c.attempts),
            )
        )

    def _leave(self, c: _Caller, reason: str, target: str | None, now: float) -> None:
        position = self._position(c)
        cancel = {"timeout": "max-wait", "key": "exit-key"}.get(reason, reason)
        self._remove_waiting(c, cancel, now)
        q = c.queue
        self._out.append(Leave(c.id, q.name, reason, target))
        self._out.append(
            QueueEvent(
                "left",
                now,
                q.name,
                c.id,
                result=reason,
                target=target,
                position=position,
                wait=now - c.joined_at,
                attempts=tuple(c.attempts),
            )
        )

    def _remove_waiting(self, c: _Caller, cancel_reason: str, now: float) -> None:
        c.state = GONE
        for b in list(c.branches.values()):
            self._end_branch(c, b, "cancelled", cancel_reason, now, cancel=True)
        self._update_hunger(c)
        q = c.queue
        del q.waiting[bisect_left(q.waiting, c.key)]
        self._forget(c)

    def _forget(self, c: _Caller) -> None:
        del self._callers[c.id]
        ended = self._ended
        ended.pop(c.id, None)
        ended[c.id] = c.queue.name
        if len(ended) > self.config.remember_ended:
            del ended[next(iter(ended))]

    def _complete(self, c: _Caller, by: str, now: float) -> None:
        a, q = c.agent, c.queue
        assert a is not None
        talk = now - c.connected_at
        c.state = GONE
        self._forget(c)
        self._out.append(
            QueueEvent(
                "completed",
                now,
                q.name,
                c.id,
                a.id,
                result=by,
                wait=c.wait,
                talk_time=talk,
            )
        )
        wrap = q.config.wrap_up
        sample = talk + wrap
        q.aht = sample if q.aht is None else q.aht + self.config.aht_alpha * (sample - q.aht)
        if a.caller is not c:
            return
        a.caller = None
        a.idle_since = now
        if wrap > 0 and a.status != LOGGED_OUT:
            a.state = WRAP_UP
            a.wrap_until = now + wrap
            a.wrap_start = now
            a.wrap_queue = q
            a.wrap_token += 1
            self._push(a.wrap_until, _WRAP, a, a.wrap_token)
            self._out.append(StartWrapUp(a.id, a.wrap_until, q.name))
            self._out.append(QueueEvent("wrap_up_start", now, q.name, agent=a.id, duration=wrap))
        else:
            a.state = IDLE
        self._touch(a)

    # -- branches ------------------------------------------------------------------------
    def _on_branch_ringing(self, ev: BranchRinging, now: float) -> None:
        b = self._branch(ev.caller, ev.agent)
        if b is not None and b.alerted is None:
            b.alerted = now

    def _on_answered(self, ev: BranchAnswered, now: float) -> None:
        c = self._callers.get(ev.caller)
        b = c.branches.get(ev.agent) if c is not None and c.state == WAITING else None
        if b is None:
            # Too late: another branch won, the answer timeout already cancelled it, or
            # the caller is gone. The integration hangs this branch up.
            reason = "caller-left" if c is None else "answered-too-late"
            queue = c.queue.name if c is not None else self._ended.get(ev.caller)
            self._out.append(CancelBranch(ev.caller, ev.agent, reason))
            self._out.append(
                QueueEvent("late_answer", now, queue, ev.caller, ev.agent, reason=reason)
            )
            return
        a, q = b.agent, c.queue
        del c.branches[a.id]
        ring = now - b.start
        c.state = CONNECTED
        c.agent = a
        c.connected_at = now
        c.wait = now - c.joined_at
        self._out.append(Connect(c.id, a.id, q.name))
        self._record_ring(c, b, "answered", None, None, now)
        self._update_hunger(c)
        del q.waiting[bisect_left(q.waiting, c.key)]
        for other in list(c.branches.values()):
            self._end_branch(c, other, "cancelled", "answered-elsewhere", now, cancel=True)
        a.state = TALKING
        a.misses = 0
        q.calls[a.id] = q.calls.get(a.id, 0) + 1
        self._out.append(
            QueueEvent("connected", now, q.name, c.id, a.id, wait=c.wait, ring_time=ring)
        )

    def _on_rejected(self, ev: BranchRejected, now: float) -> None:
        self._branch_over(ev.caller, ev.agent, "rejected", "rejected", ev.code, now)

    def _on_branch_timed_out(self, ev: BranchTimedOut, now: float) -> None:
        self._branch_over(ev.caller, ev.agent, "missed", "no-answer", ev.code, now)

    def _on_failed(self, ev: BranchFailed, now: float) -> None:
        self._branch_over(ev.caller, ev.agent, "failed", ev.reason or "failed", ev.code, now)

    def _branch(self, caller: str, agent: str) -> _Branch | None:
        c = self._callers.get(caller)
        if c is None or c.state != WAITING:
            return None
        return c.branches.get(agent)

    def _branch_over(
        self, caller: str, agent: str, result: str, reason: str, code: int | None, now: float
    ) -> None:
        b = self._branch(caller, agent)
        if b is not None:
            self._end_branch(self._callers[caller], b, result, reason, now, False, code)

    def _record_ring(
        self, c: _Caller, b: _Branch, result: str, reason: str | None, code, now: float
    ) -> None:
        seconds = now - b.start
        c.attempts.append(Attempt(b.agent.id, b.start, seconds, result))
        self._out.append(
            QueueEvent(
                "ring",
                now,
                c.queue.name,
                c.id,
                b.agent.id,
                result=result,
                reason=reason,
                code=code,
                ring_start=b.start,
                ring_time=seconds,
                duration=None if b.alerted is None else now - b.alerted,
            )
        )

    def _end_branch(
        self,
        c: _Caller,
        b: _Branch,
        result: str,
        reason: str,
        now: float,
        cancel: bool,
        code: int | None = None,
    ) -> None:
        a, q = b.agent, c.queue
        del c.branches[a.id]
        if cancel:
            self._out.append(CancelBranch(c.id, a.id, reason))
        self._record_ring(c, b, result, reason, code, now)
        if a.caller is c and a.state == RINGING:
            a.caller = None
            a.state = IDLE
        if result != "cancelled":
            retry = q.config.retry
            if retry > 0 and c.state == WAITING:
                until = now + retry
                c.cooldown[a.id] = until
                self._push(until, _COOLDOWN, c, a.id)
            if result != "failed":
                a.misses += 1
                limit = q.config.auto_pause_after
                if limit is not None and a.misses >= limit and a.status == AVAILABLE:
                    self._set_status(a, PAUSED)
                    a.pause_reason = "auto-pause"
                    a.paused_at = now
                    self._out.append(AutoPaused(a.id, q.name, a.misses))
                    self._out.append(
                        QueueEvent(
                            "pause",
                            now,
                            q.name,
                            agent=a.id,
                            reason="auto-pause",
                            result=str(a.misses),
                        )
                    )
        self._touch(a)
        self._update_hunger(c)

    # -- operators -----------------------------------------------------------------------
    def _agent(self, agent_id: str) -> _Agent:
        a = self._agents.get(agent_id)
        if a is None:
            a = self._agents[agent_id] = _Agent(agent_id)
        return a

    def _set_status(self, a: _Agent, status: str) -> None:
        old = a.status
        a.status = status
        d_in = (status != LOGGED_OUT) - (old != LOGGED_OUT)
        d_av = (status == AVAILABLE) - (old == AVAILABLE)
        for q in a.queues:
            q.logged_in += d_in
            q.available += d_av

    def _on_logged_in(self, ev: AgentLoggedIn, now: float) -> None:
        a = self._agent(ev.agent)
        if a.status != LOGGED_OUT:
            return  # a re-registration does not unpause
        self._set_status(a, AVAILABLE)
        a.login_at = now
        a.misses = 0
        a.pause_reason = None
        if a.idle_since == float("-inf"):
            a.idle_since = now
        self._out.append(QueueEvent("login", now, agent=a.id, reason=ev.reason or None))
        self._touch(a)

    def _on_logged_out(self, ev: AgentLoggedOut, now: float) -> None:
        a = self._agent(ev.agent)
        if a.status == LOGGED_OUT:
            return
        if a.status == PAUSED:
            self._out.append(
                QueueEvent(
                    "unpause",
                    now,
                    agent=a.id,
                    reason="logout",
                    duration=now - a.paused_at,
                )
            )
        self._set_status(a, LOGGED_OUT)
        a.pause_reason = None
        self._touch(a)
        self._cancel_ringing(a, "logged-out", now)
        if a.state == WRAP_UP:
            self._end_wrap(a, now, "logout")
        self._out.append(
            QueueEvent(
                "logout", now, agent=a.id, reason=ev.reason or None, duration=now - a.login_at
            )
        )
        for q in a.queues:
            target = q.config.on_empty
            if q.logged_in == 0 and target is not None:
                for key in list(q.waiting):
                    self._leave(key[3], "empty", target, now)

    def _on_paused(self, ev: AgentPaused, now: float) -> None:
        a = self._agent(ev.agent)
        if a.status != AVAILABLE:
            return
        self._set_status(a, PAUSED)
        a.pause_reason = ev.reason or None
        a.paused_at = now
        self._touch(a)
        self._cancel_ringing(a, "paused", now)
        self._out.append(QueueEvent("pause", now, agent=a.id, reason=ev.reason or None))

    def _on_unpaused(self, ev: AgentUnpaused, now: float) -> None:
        a = self._agent(ev.agent)
        if a.status != PAUSED:
            return
        self._out.append(
            QueueEvent(
                "unpause", now, agent=a.id, reason=a.pause_reason, duration=now - a.paused_at
            )
        )
        self._set_status(a, AVAILABLE)
        a.pause_reason = None
        a.misses = 0
        self._touch(a)

    def _on_ready(self, ev: AgentReady, now: float) -> None:
        a = self._agent(ev.agent)
        if a.state == WRAP_UP:
            self._end_wrap(a, now, "ready")

    def _on_busy(self, ev: AgentBusy, now: float) -> None:
        a = self._agent(ev.agent)
        a.external.add(ev.call)
        self._touch(a)
        self._cancel_ringing(a, "agent-busy", now)

    def _on_free(self, ev: AgentFree, now: float) -> None:
        a = self._agent(ev.agent)
        if ev.call not in a.external:
            return
        a.external.discard(ev.call)
        if not a.external:
            a.idle_since = max(a.idle_since, now)
        self._touch(a)

    def _cancel_ringing(self, a: _Agent, reason: str, now: float) -> None:
        if a.state == RINGING and a.caller is not None:
            c = a.caller
            self._end_branch(c, c.branches[a.id], "cancelled", reason, now, cancel=True)

    def _end_wrap(self, a: _Agent, now: float, reason: str) -> None:
        a.state = IDLE
        a.wrap_until = None
        a.wrap_token += 1
        q = a.wrap_queue
        self._out.append(EndWrapUp(a.id))
        self._out.append(
            QueueEvent(
                "wrap_up_end",
                now,
                q.name if q else None,
                agent=a.id,
                reason=reason,
                duration=now - a.wrap_start,
            )
        )
        self._touch(a)

    def _touch(self, a: _Agent) -> None:
        """Keep the free set exact; a newly free operator is offered to the callers."""
        eligible = a.status == AVAILABLE and a.state == IDLE and not a.external
        if eligible:
            if a.id not in self._free:
                self._free[a.id] = a
                self._pending_agents.append(a)
        elif a.id in self._free:
            del self._free[a.id]

    # -- matching ------------------------------------------------------------------------
    def _update_hunger(self, c: _Caller) -> None:
        q = c.queue
        want = c.state == WAITING and (not c.branches or (q.ring_all and q.config.ring_new_free))
        if want == c.hungry:
            return
        c.hungry = want
        if want:
            insort(q.hungry, c.key)
            self._pending_callers.append(c)
        else:
            del q.hungry[bisect_left(q.hungry, c.key)]

    def _dispatch(self, now: float) -> None:
        agents, callers, free = self._pending_agents, self._pending_callers, self._free
        while agents or callers:
            while agents:
                a = agents.popleft()
                if free.get(a.id) is a:
                    self._offer(a, now)
            while callers:
                c = callers.popleft()
                if c.hungry:
                    self._serve(c, now)

    def _offer(self, a: _Agent, now: float) -> None:
        """A free operator goes to the first caller (priority, then waiting since) of any
        of their queues who wants one and did not just miss them."""
        aid, free = a.id, self._free
        while free.get(aid) is a:
            best = None
            for q in a.queues:
                for key in q.hungry:
                    until = key[3].cooldown.get(aid)
                    if until is not None and until > now:
                        continue
                    if best is None or key < best:
                        best = key
                    break
            if best is None:
                return
            self._serve(best[3], now)  # rings `a`, or another free member it prefers

    def _serve(self, c: _Caller, now: float) -> None:
        q, free = c.queue, self._free
        if len(free) <= len(q.members):
            index = q.index
            cands = [a for a in free.values() if a.id in index]
        else:
            cands = [a for a in q.members if a.id in free]
        if c.cooldown and cands:
            cd = c.cooldown
            cands = [a for a in cands if cd.get(a.id, now) <= now]
        if not cands:
            return
        chosen = q.strategy.choose(q, cands)
        timeout = q.config.answer_timeout
        for a in chosen:
            del free[a.id]
            a.state = RINGING
            a.caller = c
            b = _Branch(a, now)
            c.branches[a.id] = b
            if timeout is not None:
                self._push(now + timeout, _BRANCH, c, b)
        self._out.append(RingAgents(c.id, q.name, tuple(a.id for a in chosen)))
        self._update_hunger(c)

    def _position(self, c: _Caller) -> int:
        return bisect_left(c.queue.waiting, c.key) + 1

    # -- timers --------------------------------------------------------------------------
    def _push(self, t: float, kind: int, obj, extra) -> None:
        heapq.heappush(self._timers, (t, next(self._tseq), kind, obj, extra))

    def _live(self, entry: tuple) -> bool:
        t, _, kind, obj, extra = entry
        if kind == _BRANCH:
            return obj.state == WAITING and obj.branches.get(extra.agent.id) is extra
        if kind == _WRAP:
            return obj.state == WRAP_UP and obj.wrap_token == extra
        if kind == _MAXWAIT:
            return obj.state == WAITING and obj.deadline == t
        if kind == _ANNOUNCE:
            return obj.state == WAITING and obj.next_announce == t
        return obj.state == WAITING and obj.cooldown.get(extra) == t  # _COOLDOWN

    def _expire(self, now: float, strict: bool) -> None:
        timers = self._timers
        while timers:
            t = timers[0][0]
            if t > now or (strict and t == now):
                return
            entry = heapq.heappop(timers)
            if self._live(entry):
                self._fire(entry, now)

    def _fire(self, entry: tuple, now: float) -> None:
        t, _, kind, obj, extra = entry
        if kind == _BRANCH:
            self._end_branch(obj, extra, "missed", "timeout", now, cancel=True)
        elif kind == _WRAP:
            self._end_wrap(obj, now, "done")
        elif kind == _MAXWAIT:
            self._leave(obj, "timeout", obj.queue.config.on_timeout, now)
        elif kind == _ANNOUNCE:
            c, q = obj, obj.queue
            position = self._position(c)
            estimate = None
            if q.aht is not None and q.available > 0:
                estimate = round(position * q.aht / q.available)
            self._out.append(Announce(c.id, q.name, position, estimate))
            every = q.config.announce_every
            assert every is not None
            c.next_announce = t + every
            if c.next_announce <= now:  # the integration was late: do not replay them all
                c.next_announce = now + every
            self._push(c.next_announce, _ANNOUNCE, c, None)
        else:  # _COOLDOWN: the caller may ring that operator again
            del obj.cooldown[extra]
            if obj.hungry:
                self._pending_callers.append(obj)
