"""ACD core throughput: events per second with 1,000 operators and 1,000 waiting callers.

Pure Python, no switch: the core is driven the way the integration drives it (events
with `now`, `on_timer` when `next_timer` is due, every command carried out at once:
a RingAgents is answered by the first operator, a Connect becomes a call that ends
later). The clock is simulated; only the CPU time of the loop is measured.

Steady state: 1,000 operators all busy (talking or in a 5 s wrap-up) and 1,000 callers
waiting with an announcement every 30 s. Each cycle a call ends (the operator wraps up,
then rings the first waiting caller, who is answered), a new caller joins, and one cycle
in ten a waiting caller hangs up and another joins. An "event" is one `handle` or
`on_timer` call; the driver's own bookkeeping is included in the time.
"""

from __future__ import annotations

import random
import time
from collections import deque

from softswitch.acd import (
    Acd,
    AcdConfig,
    AgentLoggedIn,
    BranchAnswered,
    CallEnded,
    CallerJoined,
    CallerLeft,
    Connect,
    QueueConfig,
    QueueEvent,
    RingAgents,
)

OPERATORS = 1000
WAITING = 1000
EVENTS = 150_000


class Driver:
    def __init__(self, acd: Acd, queues: list[str], rng: random.Random) -> None:
        self.acd, self.queues, self.rng = acd, queues, rng
        self.now = 0.0
        self.events = 0
        self.commands = 0
        self.records = 0
        self.talking: deque[str] = deque()
        self.waiting: list[str] = []  # lazily pruned
        self.waiting_set: set[str] = set()
        self.n = 0

    def carry_out(self, out: list) -> None:
        work = deque(out)
        while work:
            cmd = work.popleft()
            if isinstance(cmd, QueueEvent):
                self.records += 1
                continue
            self.commands += 1
            if isinstance(cmd, RingAgents):
                self.events += 1
                work.extend(self.acd.handle(BranchAnswered(cmd.caller, cmd.agents[0]), self.now))
            elif isinstance(cmd, Connect):
                self.waiting_set.discard(cmd.caller)
                self.talking.append(cmd.caller)

    def handle(self, event) -> None:
        self.events += 1
        self.carry_out(self.acd.handle(event, self.now))

    def timers(self) -> None:
        acd = self.acd
        while (t := acd.next_timer()) is not None and t <= self.now:
            self.events += 1
            self.carry_out(acd.on_timer(t))

    def join(self) -> None:
        self.n += 1
        caller = f"c{self.n}"
        self.waiting.append(caller)
        self.waiting_set.add(caller)
        priority = 1 if self.rng.random() < 0.2 else 0
        self.handle(CallerJoined(caller, self.rng.choice(self.queues), priority))

    def abandon(self) -> None:
        while self.waiting:
            i = self.rng.randrange(len(self.waiting))
            caller = self.waiting[i]
            self.waiting[i] = self.waiting[-1]
            self.waiting.pop()
            if caller in self.waiting_set:
                self.waiting_set.discard(caller)
                self.handle(CallerLeft(caller))
                return

    def fill(self, operators: list[str]) -> None:
        for a in operators:
            self.handle(AgentLoggedIn(a))
        while len(self.talking) < len(operators):  # everyone busy
            self.join()
        while len(self.waiting_set) < WAITING:
            self.join()

    def steady(self, events: int) -> float:
        start_events = self.events
        t0 = time.perf_counter()
        cycle = 0
        while self.events - start_events < events:
            cycle += 1
            self.now += 0.005
            self.timers()
            if self.talking:
                self.handle(CallEnded(self.talking.popleft(), "agent"))
            while len(self.waiting_set) < WAITING:
                self.join()
            if cycle % 10 == 0:
                self.abandon()
                self.join()
        return time.perf_counter() - t0


def one_queue(strategy: str) -> tuple[Driver, float]:
    ops = [f"op{i:04d}" for i in range(OPERATORS)]
    queue = QueueConfig(
        "q", tuple(ops), strategy=strategy, answer_timeout=15, wrap_up=5, announce_every=30
    )
    driver = Driver(Acd(AcdConfig(queues=(queue,), seed=1)), ["q"], random.Random(1))
    driver.fill(ops)
    return driver, driver.steady(EVENTS)


def ten_queues(strategy: str) -> tuple[Driver, float]:
    rng = random.Random(2)
    ops = [f"op{i:04d}" for i in range(OPERATORS)]
    members: dict[str, list[str]] = {f"q{i}": [] for i in range(10)}
    for a in ops:  # every operator in 3 of the 10 queues
        for name in rng.sample(sorted(members), 3):
            members[name].append(a)
    queues = tuple(
        QueueConfig(
            name, tuple(m), strategy=strategy, answer_timeout=15, wrap_up=5, announce_every=30
        )
        for name, m in members.items()
    )
    driver = Driver(Acd(AcdConfig(queues=queues, seed=1)), sorted(members), rng)
    driver.fill(ops)
    return driver, driver.steady(EVENTS)


def ring_all_cascade() -> tuple[int, float, int]:
    """Worst case of ring-all: 1,000 free operators all ring for the first of 1,000
    waiting callers; each answer cancels 999 branches and rings them for the next."""
    ops = [f"op{i:04d}" for i in range(OPERATORS)]
    queue = QueueConfig("q", tuple(ops), strategy="ring-all", answer_timeout=None)
    acd = Acd(AcdConfig(queues=(queue,)))
    for i in range(WAITING):
        acd.handle(CallerJoined(f"c{i}", "q"), 0.0)
    for a in ops:
        acd.handle(AgentLoggedIn(a), 0.0)
    answers, commands = 200, 0
    t0 = time.perf_counter()
    for i in range(answers):
        out = acd.handle(BranchAnswered(f"c{i}", ops[i]), 1.0)
        commands += len(out)
    return answers, time.perf_counter() - t0, commands


def run() -> None:
    print(
        f"{OPERATORS} operators, {WAITING} waiting callers, {EVENTS} events per row "
        "(handle + on_timer calls); 5 s wrap-up, 15 s answer timeout, announcements / 30 s"
    )
    print(f"{'scenario':<12} {'strategy':<13} {'events/s':>9} {'us/event':>9} {'cmds/s':>9}")
    rows = [("1 queue", s, one_queue) for s in ("ring-all", "round-robin", "longest-idle")]
    rows += [("1 queue", s, one_queue) for s in ("fewest-calls", "linear", "random")]
    rows += [("10 queues", s, ten_queues) for s in ("ring-all", "round-robin")]
    for scenario, strategy, fn in rows:
        driver, seconds = fn(strategy)
        assert len(driver.waiting_set) == WAITING
        events = EVENTS  # the measured part (approximately: a cycle may overshoot)
        print(
            f"{scenario:<12} {strategy:<13} {events / seconds:>9.0f} "
            f"{seconds / events * 1e6:>9.1f} {(driver.commands + driver.records) / seconds:>9.0f}",
            flush=True,
        )
    answers, seconds, commands = ring_all_cascade()
    print(
        f"ring-all cascade: one answer with 1000 phones ringing -> Connect, 999 CancelBranch, "
        f"RingAgents(999) for the next caller: {seconds / answers * 1e3:.2f} ms per answer "
        f"({commands // answers} commands and records each)"
    )


if __name__ == "__main__":
    run()
