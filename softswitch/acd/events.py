"""Events the integration feeds to `Acd.handle(event, now)`.

Callers are identified by the integration's id for the caller's call (one id per call;
a caller may leave a queue and join another under the same id). Operators ("agents")
are identified by their id in `QueueConfig.members` (e.g. the extension number).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- callers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerJoined:
    caller: str
    queue: str
    priority: int | None = None  # None: the queue's `priority`; higher is served first
    # Waiting since (e.g. the time the caller entered a previous queue that overflowed
    # here): orders the caller among equal priorities. None: now.
    since: float | None = None


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """The caller hung up (waiting: abandoned; connected: completed, caller hung up)."""

    caller: str


@dataclass(frozen=True, slots=True)
class ExitKeyPressed:
    caller: str
    key: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A connected queue call ended. by: caller / agent / switch."""

    caller: str
    by: str = "switch"


# -- operators -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentLoggedIn:
    agent: str
    reason: str = ""  # e.g. registration / api / feature-code


@dataclass(frozen=True, slots=True)
class AgentLoggedOut:
    agent: str
    reason: str = ""  # e.g. unregistered / expired / flow-dropped / api / feature-code


@dataclass(frozen=True, slots=True)
class AgentPaused:
    agent: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AgentUnpaused:
    agent: str


@dataclass(frozen=True, slots=True)
class AgentReady:
    """The operator ends their wrap-up early (API / feature code)."""

    agent: str


@dataclass(frozen=True, slots=True)
class AgentBusy:
    """The operator is on a call that is not a queue call of this ACD (a direct call)."""

    agent: str
    call: str = ""


@dataclass(frozen=True, slots=True)
class AgentFree:
    """That non-queue call ended."""

    agent: str
    call: str = ""


# -- branches of a caller's fork (one branch per operator rung) -------------------------


@dataclass(frozen=True, slots=True)
class BranchRinging:
    """The operator's phone rings (180/183)."""

    caller: str
    agent: str


@dataclass(frozen=True, slots=True)
class BranchAnswered:
    """The operator's phone answered (2xx). The core decides who wins: Connect or cancel."""

    caller: str
    agent: str


@dataclass(frozen=True, slots=True)
class BranchRejected:
    """The operator declined or the phone said busy (486 / 600 / 603): a miss."""

    caller: str
    agent: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class BranchTimedOut:
    """The phone gave up ringing by itself (408 / 480): a miss, like the core's timeout."""

    caller: str
    agent: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class BranchFailed:
    """The branch could not ring (no contact, 404, 5xx, transport error): not a miss."""

    caller: str
    agent: str
    code: int | None = None
    reason: str = ""


Event = (
    CallerJoined
    | CallerLeft
    | ExitKeyPressed
    | CallEnded
    | AgentLoggedIn
    | AgentLoggedOut
    | AgentPaused
    | AgentUnpaused
    | AgentReady
    | AgentBusy
    | AgentFree
    | BranchRinging
    | BranchAnswered
    | BranchRejected
    | BranchTimedOut
    | BranchFailed
)
