"""How a queue picks among its free operators for one caller.

`choose(queue, free)` gets the queue's state (member order in `queue.index`, answered
calls per member in `queue.calls`) and the free members (idle, available, not on any call,
not cooling down after missing this caller), and returns the ones to ring. Ring-all
returns them all, the others exactly one. A strategy instance belongs to one queue, so
round robin remembers where it stopped in that queue.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .core import _Agent, _Queue


class Strategy(Protocol):
    name: str
    ring_all: bool

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]: ...


class RingAll:
    name = "ring-all"
    ring_all = True

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index = queue.index
        return sorted(free, key=lambda a: index[a.id])


class Linear:
    """Always the first free member in config order."""

    name = "linear"
    ring_all = False

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index = queue.index
        return [min(free, key=lambda a: index[a.id])]


class RoundRobin:
    """The first free member after the one rung last (in config order, wrapping)."""

    name = "round-robin"
    ring_all = False

    def __init__(self) -> None:
        self.last = -1

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index, n, last = queue.index, len(queue.index), self.last
        agent = min(free, key=lambda a: (index[a.id] - last - 1) % n)
        self.last = index[agent.id]
        return [agent]


class LongestIdle:
    """The member whose last call (queue or direct) ended longest ago; never-called
    members count from their login."""

    name = "longest-idle"
    ring_all = False

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index = queue.index
        return [min(free, key=lambda a: (a.idle_since, index[a.id]))]


class FewestCalls:
    """The member who answered the fewest calls of this queue (then longest idle)."""

    name = "fewest-calls"
    ring_all = False

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index, calls = queue.index, queue.calls
        return [min(free, key=lambda a: (calls.get(a.id, 0), a.idle_since, index[a.id]))]


class Random:
    name = "random"
    ring_all = False

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, queue: _Queue, free: Sequence[_Agent]) -> list[_Agent]:
        index = queue.index
        return [self.rng.choice(sorted(free, key=lambda a: index[a.id]))]


def make_strategy(name: str, queue_name: str, seed: int | None) -> Strategy:
    if name == "ring-all":
        return RingAll()
    if name == "linear":
        return Linear()
    if name == "round-robin":
        return RoundRobin()
    if name == "longest-idle":
        return LongestIdle()
    if name == "fewest-calls":
        return FewestCalls()
    if name == "random":
        return Random(random.Random(None if seed is None else f"{seed}:{queue_name}"))
    raise ValueError(f"unknown strategy {name!r}")
