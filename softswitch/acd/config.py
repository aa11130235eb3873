"""Queue and ACD configuration: plain frozen dataclasses, validated on creation.

The TOML `[block.NAME]` of type `queue` is turned into a `QueueConfig` by the config
loader (later); the core only ever sees these objects. Every option is documented in
docs/acd.md.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("ring-all", "round-robin", "longest-idle", "fewest-calls", "linear", "random")


@dataclass(frozen=True)
class QueueConfig:
    name: str
    members: tuple[str, ...] = ()  # operator ids, in order (linear / round-robin order)
    strategy: str = "ring-all"
    # Seconds one operator's branch rings before it counts as a miss against them and is
    # cancelled (round robin then moves on). None: ring until answered or the caller leaves.
    answer_timeout: float | None = 20.0
    # Seconds before an operator who missed (timeout / rejected / failed) is offered the
    # same caller again. Other callers may ring them at once.
    retry: float = 5.0
    # "Add operators as they become free": an operator who frees up while the caller's
    # other branches still ring is added to the fork (ring-all only; one-at-a-time
    # strategies give the next turn to whoever is free when the current branch ends).
    ring_new_free: bool = True
    wrap_up: float = 0.0  # seconds an operator rests after a call of this queue
    music: str | None = None  # hold music (played by the integration, passed through)
    max_wait: float | None = None  # seconds; then Leave(reason="timeout", on_timeout)
    on_timeout: str | None = None  # target; None: the flow's next step
    max_callers: int | None = None  # waiting callers; one more gets Leave("full", on_full)
    on_full: str | None = None
    # Nobody logged in (every member logged out; paused members count as logged in):
    # None waits (hold music, max_wait still applies); a target leaves there at once, both
    # on joining and when the last member logs out while callers wait.
    on_empty: str | None = None
    exit_key: str | None = None  # DTMF key that leaves the queue (e.g. "0")
    exit_target: str | None = None  # e.g. a voicemail block
    announce_every: float | None = None  # seconds: Announce(position, estimated wait)
    auto_pause_after: int | None = None  # consecutive misses (timeouts + rejections)
    priority: int = 0  # default priority of callers joining this queue (higher first)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("queue: name must not be empty")
        object.__setattr__(self, "members", tuple(self.members))
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"queue {self.name}: members listed twice")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"queue {self.name}: strategy {self.strategy!r} is not one of "
                + ", ".join(STRATEGIES)
            )
        for key in ("answer_timeout", "max_wait", "announce_every"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"queue {self.name}: {key} must be > 0 seconds or unset")
        for key in ("retry", "wrap_up"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"queue {self.name}: {key} must be >= 0 seconds")
        for key in ("max_callers", "auto_pause_after"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"queue {self.name}: {key} must be >= 1 or unset")
        if self.exit_key is not None and (
            len(self.exit_key) != 1 or self.exit_key not in "0123456789*#"
        ):
            raise ValueError(f"queue {self.name}: exit_key must be one of 0-9 * #")


@dataclass(frozen=True)
class AcdConfig:
    queues: tuple[QueueConfig, ...] = ()
    # Operators known up front (members of queues are added automatically). Everyone
    # starts logged out: the integration logs them in (registration, API, feature code).
    agents: tuple[str, ...] = ()
    seed: int | None = 0  # seed of the `random` strategy (None: from the OS)
    # Smoothing of the per-queue average handle time (talk + wrap-up) used for the
    # estimated wait: new = old + alpha * (sample - old).
    aht_alpha: float = 0.1
    # Callers whose queue life ended are remembered (bounded) so a late branch answer
    # can still be reported with its queue.
    remember_ended: int = 10000

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", tuple(self.queues))
        object.__setattr__(self, "agents", tuple(self.agents))
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ValueError("acd: two queues with the same name")
        if not 0 < self.aht_alpha <= 1:
            raise ValueError("acd: aht_alpha must be in (0, 1]")


__all__ = ["STRATEGIES", "AcdConfig", "QueueConfig"]
