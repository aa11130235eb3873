"""What the edge asks the coordinator, and the answers it gets back.

The edge (proxy core) knows SIP; the coordinator knows extensions, workers and calls.
Between them sit these small value types and the `Router` protocol, so the proxy can be
tested against a router made for the test, and the coordinator never sees SIP parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sipmessage import Request

from softswitch.sip.message import Peer


@dataclass(frozen=True)
class Reject:
    """Answer the INVITE with this final response."""

    code: int
    reason: str | None = None


@dataclass(frozen=True)
class ToWorker:
    """Hand a phone's INVITE to the media worker at `worker` (a 127.0.0.1 UDP port).
    `headers` are added to the forwarded INVITE (X-Leg, X-Call, ...)."""

    worker: Peer
    headers: tuple[tuple[str, str], ...] = ()
    context: object = None  # handed back in fork/transaction callbacks


@dataclass(frozen=True)
class Pending:
    """The answer is not known yet (e.g. a media worker is still starting): the edge
    sends 100 Trying, absorbs retransmissions and goes on when `future` resolves to a
    `Reject` or `ToWorker`."""

    future: object  # asyncio.Future[Reject | ToWorker]


@dataclass(frozen=True)
class Target:
    """One phone to ring: its registered Contact and where packets for it go."""

    contact: str
    dest: Peer
    label: str = ""  # who this is (extension number), for ring-attempt records


@dataclass(frozen=True)
class Fork:
    """Ring these targets in parallel; each branch is cancelled after `ring_timeout`
    (None: never, someone else decides). With `hold_open` the fork stays open when every
    branch has ended, so branches can be added later (a queue caller's one leg), until
    the worker cancels it or `Edge.release_fork` is called."""

    targets: tuple[Target, ...]
    ring_timeout: float | None = 30.0
    from_header: str | None = None  # replaces the worker's From (caller ID), tag kept
    context: object = None
    hold_open: bool = False
    # headers set on every forwarded INVITE (e.g. a Replaces rewritten to name the
    # dialog the target's phone knows)
    headers: tuple[tuple[str, str], ...] = ()
    # a trunk: fail a branch that got no response at all (not even 100) within this
    # many seconds (408), instead of after Timer B's 32 s, so the next trunk is tried
    response_timeout: float | None = None


@dataclass
class BranchRecord:
    """One ring attempt: exact start and end, and how it ended."""

    label: str
    contact: str
    started: float
    ended: float | None = None
    code: int | None = None
    result: str = "ringing"  # answered / busy / rejected / no-answer / cancelled / failed
    #                          declined (a 2xx the watcher refused: ACKed and BYEd)
    ringing: float | None = None  # first 18x


@dataclass
class ForkOutcome:
    code: int
    branches: list[BranchRecord] = field(default_factory=list)


class ForkWatcher:
    """A fork's context that wants each branch's life, not only the fork's outcome:
    the ACD decides who wins, so it sees every ring, every end and every 2xx.
    Subclass it and override what you need; the defaults watch nothing."""

    def fork_started(self, fork: object) -> None:
        """The edge made the fork (an `InviteTxn`), before its first branch: keep it to
        add or cancel branches later."""

    def branch_ringing(self, record: BranchRecord, now: float) -> None:
        """The branch's phone sent its first 18x."""

    def branch_ended(self, record: BranchRecord, now: float) -> None:
        """The branch ended without being accepted (its record has result and code)."""

    def accept_answer(self, record: BranchRecord, now: float) -> bool:
        """The branch's phone answered: True connects it (the edge passes the 2xx up and
        cancels the other branches); False makes the edge ACK and BYE it."""
        return True


class Router(Protocol):
    def is_worker(self, host: str, port: int) -> bool:
        """Whether this address is one of our media workers' SIP sockets."""

    def route_inbound(
        self, request: Request, caller: str, source: Peer, now: float
    ) -> Reject | ToWorker | Pending:
        """An authenticated extension's (or trunk's) INVITE: where does it go?"""

    def trunk_for(self, request: Request, source: Peer) -> str | None:
        """Optional (the edge does without it). An out-of-dialog INVITE from outside:
        the name of the [[trunk]] its source belongs to, "" when it is an anonymous call
        allowed for its number, None for everyone else (then the caller is challenged
        and must authenticate as an extension)."""

    def route_from_trunk(
        self, request: Request, trunk: str, source: Peer, now: float
    ) -> Reject | ToWorker | Pending:
        """An INVITE `trunk_for` recognised (trunk "" = anonymous): where does it go?"""

    def route_outbound(self, request: Request, source: Peer, now: float) -> Reject | Fork:
        """A worker's INVITE toward phones: which contacts to ring?"""

    def fork_finished(self, context: object, outcome: ForkOutcome, now: float) -> None:
        """Every branch of a fork has ended (or one answered): its ring attempts."""

    def inbound_finished(self, context: object, code: int, now: float) -> None:
        """The INVITE handed to a worker got its final response (or none: 408)."""

    def flow_closed(self, peer: Peer) -> None:
        """A phone's TCP connection closed (its bindings over it are dead)."""

    def phone_busy(self, label: str, dialog: str, context: object) -> None:
        """Extension `label`'s phone is now in dialog `dialog` (a SIP Call-ID) of the
        INVITE whose context is `context`: it is on a call."""

    def phone_free(self, label: str, dialog: str) -> None:
        """That dialog ended (BYE seen, worker gone, or forgotten)."""
