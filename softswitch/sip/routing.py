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
    """Ring these targets in parallel; each branch is cancelled after `ring_timeout`."""

    targets: tuple[Target, ...]
    ring_timeout: float = 30.0
    from_header: str | None = None  # replaces the worker's From (caller ID), tag kept
    context: object = None


@dataclass
class BranchRecord:
    """One ring attempt: exact start and end, and how it ended."""

    label: str
    contact: str
    started: float
    ended: float | None = None
    code: int | None = None
    result: str = "ringing"  # answered / busy / rejected / no-answer / cancelled / failed


@dataclass
class ForkOutcome:
    code: int
    branches: list[BranchRecord] = field(default_factory=list)


class Router(Protocol):
    def is_worker(self, host: str, port: int) -> bool:
        """Whether this address is one of our media workers' SIP sockets."""

    def route_inbound(
        self, request: Request, caller: str, source: Peer, now: float
    ) -> Reject | ToWorker | Pending:
        """An authenticated extension's (or trunk's) INVITE: where does it go?"""

    def route_outbound(self, request: Request, source: Peer, now: float) -> Reject | Fork:
        """A worker's INVITE toward phones: which contacts to ring?"""

    def fork_finished(self, context: object, outcome: ForkOutcome, now: float) -> None:
        """Every branch of a fork has ended (or one answered): its ring attempts."""

    def inbound_finished(self, context: object, code: int, now: float) -> None:
        """The INVITE handed to a worker got its final response (or none: 408)."""

    def flow_closed(self, peer: Peer) -> None:
        """A phone's TCP connection closed (its bindings over it are dead)."""
