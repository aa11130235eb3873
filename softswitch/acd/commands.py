"""Commands `Acd` returns, for the integration to carry out, and `QueueEvent` records
for storage (queue_log-like: reports and missed-call notifications are queries over
them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RingAgents:
    """Ring these operators for the caller: ONE forked leg from the caller's worker; if
    the caller already has a fork, add these branches to it."""

    caller: str
    queue: str
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CancelBranch:
    """Stop this branch: CANCEL it, or BYE it if it already answered.

    reason: timeout / answered-elsewhere / answered-too-late / caller-left / exit-key /
    max-wait / empty / logged-out / paused / agent-busy
    """

    caller: str
    agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class Connect:
    """This branch won: pass its answer to the caller and bridge them."""

    caller: str
    agent: str
    queue: str


@dataclass(frozen=True, slots=True)
class StartWrapUp:
    agent: str
    until: float
    queue: str


@dataclass(frozen=True, slots=True)
class EndWrapUp:
    agent: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Interrupt the hold music: "you are number `position`, about N minutes"."""

    caller: str
    queue: str
    position: int
    estimated_wait: int | None  # seconds; None when unknown (no finished call yet / nobody)


@dataclass(frozen=True, slots=True)
class Leave:
    """The caller leaves the queue to `target` (None: the flow's next step).

    reason: timeout / full / empty / key
    """

    caller: str
    queue: str
    reason: str
    target: str | None


@dataclass(frozen=True, slots=True)
class AutoPaused:
    """The operator was paused after `misses` consecutive misses: tell the supervisor."""

    agent: str
    queue: str
    misses: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ring of one operator for one caller (also carried by the caller's last record,
    for the missed-call notification)."""

    agent: str
    start: float
    seconds: float
    result: str  # answered / missed / rejected / failed / cancelled


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """One row of the queue log. Which fields are set depends on `kind`:

    joined       queue caller position priority
    ring         queue caller agent result reason code ring_start ring_time
                 (result: answered / missed / rejected / failed / cancelled; reason why)
    late_answer  queue caller agent reason   (a 2xx after the branch was already over)
    connected    queue caller agent position wait ring_time
    completed    queue caller agent result(by: caller / agent / switch) wait talk_time
    abandoned    queue caller position wait attempts       (the caller hung up waiting)
    left         queue caller result(timeout / key / full / empty / removed) target
                 position wait attempts
    wrap_up_start agent queue duration(planned) ; wrap_up_end agent queue duration reason
    login / logout agent reason (logout: duration = session seconds)
    pause agent reason queue(auto-pause only) ; unpause agent reason duration
    """

    kind: str
    time: float
    queue: str | None = None
    caller: str | None = None
    agent: str | None = None
    result: str | None = None
    reason: str | None = None
    code: int | None = None
    position: int | None = None
    priority: int | None = None
    wait: float | None = None
    ring_start: float | None = None
    ring_time: float | None = None
    talk_time: float | None = None
    duration: float | None = None
    target: str | None = None
    attempts: tuple[Attempt, ...] = ()


Command = (
    RingAgents
    | CancelBranch
    | Connect
    | StartWrapUp
    | EndWrapUp
    | Announce
    | Leave
    | AutoPaused
    | QueueEvent
)
