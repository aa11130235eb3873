"""The ACD core, event by event on a fake clock (no SIP, no asyncio, no sleeping).

Every strategy and option, and the ugly orderings: an answer at the very instant of the
answer timeout, two answers at once, a caller hanging up while a branch answers, an
operator logging out while ringing, wrap-up across two queues, a direct call, the exit
key while ringing, a full queue, nobody logged in. A random event storm at the end checks
the core's invariants after every single event.
"""

from __future__ import annotations

import random

import pytest

from softswitch.acd import (
    Acd,
    AcdConfig,
    AgentBusy,
    AgentFree,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentPaused,
    AgentReady,
    AgentUnpaused,
    Announce,
    Attempt,
    AutoPaused,
    BranchAnswered,
    BranchFailed,
    BranchRejected,
    BranchRinging,
    BranchTimedOut,
    CallEnded,
    CallerJoined,
    CallerLeft,
    CancelBranch,
    Connect,
    EndWrapUp,
    ExitKeyPressed,
    Leave,
    QueueConfig,
    QueueEvent,
    RingAgents,
    StartWrapUp,
)


class Desk:
    """An Acd with a fake clock. `ev` feeds an event at `at` (running due timers first,
    as the integration does); `tick` runs timers up to a time."""

    def __init__(self, *queues: QueueConfig, login=(), agents=(), seed=0) -> None:
        self.acd = Acd(AcdConfig(queues=tuple(queues), agents=tuple(agents), seed=seed))
        self.now = 0.0
        self.log: list = []
        for a in login:
            self.ev(AgentLoggedIn(a))

    def tick(self, until: float) -> list:
        out: list = []
        while (t := self.acd.next_timer()) is not None and t <= until:
            self.now = t
            out += self.acd.on_timer(t)
        self.now = max(self.now, until)
        self.log += out
        return out

    def ev(self, event, at: float | None = None) -> list:
        out: list = []
        if at is not None:
            out += self.tick(at)
        got = self.acd.handle(event, self.now)
        self.log += got
        return out + got

    def records(self, kind: str | None = None) -> list[QueueEvent]:
        return [c for c in self.log if isinstance(c, QueueEvent) and kind in (None, c.kind)]

    def rings(self, caller: str | None = None) -> list[tuple]:
        return [
            (r.agent, r.result, r.reason, r.ring_time)
            for r in self.records("ring")
            if caller in (None, r.caller)
        ]

    def state(self, agent: str) -> tuple[str, str]:
        v = self.acd.agent_view(agent)
        return v.status, v.state


def cmds(out: list) -> list:
    """The commands without the storage records."""
    return [c for c in out if not isinstance(c, QueueEvent)]


def rung(out: list) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.caller, c.agents) for c in out if isinstance(c, RingAgents)]


def q(name="q", members=("a", "b", "c"), **kw) -> QueueConfig:
    return QueueConfig(name, members, **kw)


# -- config --------------------------------------------------------------------------


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="strategy"):
        QueueConfig("x", ("a",), strategy="roundrobin")
    with pytest.raises(ValueError, match="answer_timeout"):
        QueueConfig("x", ("a",), answer_timeout=0)
    with pytest.raises(ValueError, match="twice"):
        QueueConfig("x", ("a", "a"))
    with pytest.raises(ValueError, match="exit_key"):
        QueueConfig("x", ("a",), exit_key="10")
    with pytest.raises(ValueError, match="max_callers"):
        QueueConfig("x", ("a",), max_callers=0)
    with pytest.raises(ValueError, match="same name"):
        AcdConfig(queues=(QueueConfig("x"), QueueConfig("x")))
    desk = Desk(q())
    with pytest.raises(ValueError, match="unknown queue"):
        desk.ev(CallerJoined("c1", "nope"))
    with pytest.raises(TypeError):
        desk.acd.handle("CallerJoined", 0.0)  # type: ignore[arg-type]


# -- ring-all ------------------------------------------------------------------------


def test_ring_all_rings_every_free_member_and_first_answer_wins() -> None:
    desk = Desk(q(strategy="ring-all", answer_timeout=None), login="abc")
    out = desk.ev(CallerJoined("c1", "q"), at=1)
    assert cmds(out) == [RingAgents("c1", "q", ("a", "b", "c"))]
    assert desk.records("joined")[0].position == 1
    assert desk.acd.next_timer() is None  # no answer timeout
    desk.ev(BranchRinging("c1", "b"), at=1.2)
    out = desk.ev(BranchAnswered("c1", "b"), at=4)
    assert cmds(out) == [
        Connect("c1", "b", "q"),
        CancelBranch("c1", "a", "answered-elsewhere"),
        CancelBranch("c1", "c", "answered-elsewhere"),
    ]
    assert desk.rings() == [
        ("b", "answered", None, 3),
        ("a", "cancelled", "answered-elsewhere", 3),
        ("c", "cancelled", "answered-elsewhere", 3),
    ]
    ring_b = desk.records("ring")[0]
    assert ring_b.ring_start == 1 and ring_b.duration == pytest.approx(2.8)  # alerting
    (connected,) = desk.records("connected")
    assert (connected.wait, connected.ring_time, connected.agent) == (3, 3, "b")
    assert [desk.state(x) for x in "abc"] == [
        ("available", "idle"),
        ("available", "talking"),
        ("available", "idle"),
    ]
    out = desk.ev(CallEnded("c1", "agent"), at=64)
    (done,) = desk.records("completed")
    assert (done.result, done.talk_time, done.wait) == ("agent", 60, 3)
    assert desk.state("b") == ("available", "idle")


def test_ring_all_adds_operators_as_they_become_free() -> None:
    desk = Desk(q(members=("a", "b", "c", "d", "e"), answer_timeout=None), login="a")
    assert rung(desk.ev(CallerJoined("c1", "q"), at=0)) == [("c1", ("a",))]
    # each way of becoming free adds a branch to the same caller's fork
    assert rung(desk.ev(AgentLoggedIn("b"), at=1)) == [("c1", ("b",))]
    assert rung(desk.ev(AgentLoggedIn("c"), at=1)) == [("c1", ("c",))]
    assert desk.acd.caller_view("c1").ringing == ("a", "b", "c")
    desk.ev(AgentLoggedIn("d"))
    desk.ev(AgentBusy("e", "direct-1"))
    desk.ev(AgentLoggedIn("e"))
    assert "e" not in desk.acd.caller_view("c1").ringing  # on a direct call
    assert rung(desk.ev(AgentFree("e", "direct-1"), at=2)) == [("c1", ("e",))]


def test_ring_all_new_free_after_wrap_up_unpause_and_call_end() -> None:
    sales = q("sales", ("a", "b", "c"), answer_timeout=None, wrap_up=7)
    desk = Desk(sales, login="abc")
    desk.ev(CallerJoined("c1", "sales"), at=0)
    desk.ev(BranchAnswered("c1", "a"), at=1)
    desk.ev(AgentPaused("b", "lunch"), at=1)
    desk.ev(AgentBusy("c", "d1"), at=1)
    assert rung(desk.ev(CallerJoined("c2", "sales"), at=2)) == []  # nobody free
    out = desk.ev(CallEnded("c1", "caller"), at=10)
    assert cmds(out) == [StartWrapUp("a", 17, "sales")]
    assert rung(desk.ev(AgentUnpaused("b"), at=11)) == [("c2", ("b",))]
    assert rung(desk.ev(AgentFree("c", "d1"), at=12)) == [("c2", ("c",))]
    out = desk.tick(17)
    assert cmds(out) == [EndWrapUp("a"), RingAgents("c2", "sales", ("a",))]
    (end,) = desk.records("wrap_up_end")
    assert (end.agent, end.duration, end.reason, end.queue) == ("a", 7, "done", "sales")


def test_ring_all_without_ring_new_free_waits_for_the_next_round() -> None:
    desk = Desk(q(answer_timeout=10, ring_new_free=False, retry=0), login="a")
    desk.ev(CallerJoined("c1", "q"), at=0)
    assert rung(desk.ev(AgentLoggedIn("b"), at=2)) == []  # not added to the ringing fork
    out = desk.tick(10)  # a's branch times out: the next round rings everyone free
    assert cmds(out) == [CancelBranch("c1", "a", "timeout"), RingAgents("c1", "q", ("a", "b"))]


def test_ring_all_with_two_callers_gives_everyone_to_the_first() -> None:
    desk = Desk(q(answer_timeout=None), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    assert rung(desk.ev(CallerJoined("c2", "q"), at=1)) == []
    assert desk.acd.queue_view("q").waiting == ("c1", "c2")
    out = desk.ev(BranchAnswered("c1", "a"), at=2)
    # b's branch for c1 is cancelled and b rings for c2 at once
    assert cmds(out) == [
        Connect("c1", "a", "q"),
        CancelBranch("c1", "b", "answered-elsewhere"),
        RingAgents("c2", "q", ("b",)),
    ]


# -- one at a time -------------------------------------------------------------------


def test_round_robin_takes_turns_and_remembers_where_it_stopped() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15), login="abc")
    order = []
    for i in range(7):
        out = desk.ev(CallerJoined(f"c{i}", "q"), at=10 * i)
        ((caller, agents),) = rung(out)
        order.append(agents[0])
        desk.ev(BranchAnswered(caller, agents[0]))
        desk.ev(CallEnded(caller, "agent"), at=10 * i + 1)
    assert order == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_moves_on_after_a_miss_and_records_it() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15, retry=5), login="abc")
    assert rung(desk.ev(CallerJoined("c1", "q"), at=0)) == [("c1", ("a",))]
    out = desk.tick(15)
    assert cmds(out) == [CancelBranch("c1", "a", "timeout"), RingAgents("c1", "q", ("b",))]
    assert desk.rings("c1") == [("a", "missed", "timeout", 15)]
    assert desk.acd.agent_view("a").consecutive_misses == 1
    # a is free again, but the turn goes on: b is ringing, so c, then a
    assert rung(desk.ev(CallerJoined("c2", "q"), at=16)) == [("c2", ("c",))]
    assert rung(desk.ev(CallerJoined("c3", "q"), at=17)) == [("c3", ("a",))]


def test_round_robin_comes_back_to_a_missed_operator_after_retry() -> None:
    desk = Desk(q(members=("a", "b"), strategy="round-robin", answer_timeout=10, retry=5))
    desk.ev(AgentLoggedIn("a"), at=0)
    desk.ev(AgentLoggedIn("b"), at=0)
    desk.ev(CallerJoined("c1", "q"), at=0)
    assert rung(desk.tick(10)) == [("c1", ("b",))]  # a missed
    # b misses at 20; a's cooldown for this caller ended at 15: a rings again at once
    assert rung(desk.tick(20)) == [("c1", ("a",))]
    assert rung(desk.tick(30)) == [("c1", ("b",))]
    got = [(c.caller, c.agents) for c in desk.log if isinstance(c, RingAgents)]
    assert got == [("c1", ("a",)), ("c1", ("b",)), ("c1", ("a",)), ("c1", ("b",))]
    assert [x[:2] for x in desk.rings("c1")] == [("a", "missed"), ("b", "missed"), ("a", "missed")]


def test_round_robin_skips_busy_paused_and_logged_out() -> None:
    desk = Desk(q(members=("a", "b", "c", "d"), strategy="round-robin"), login="abcd")
    desk.ev(AgentPaused("b", "break"))
    desk.ev(AgentLoggedOut("c"))
    got = []
    for i in range(4):
        ((caller, agents),) = rung(desk.ev(CallerJoined(f"c{i}", "q"), at=i))
        got.append(agents[0])
        desk.ev(BranchAnswered(caller, agents[0]))
        desk.ev(CallEnded(caller), at=i + 0.5)
    assert got == ["a", "d", "a", "d"]


def test_linear_always_rings_the_first_free_in_order() -> None:
    desk = Desk(q(strategy="linear"), login="cba")
    got = []
    for i in range(3):
        ((caller, agents),) = rung(desk.ev(CallerJoined(f"c{i}", "q"), at=i))
        got.append(agents[0])
        desk.ev(BranchAnswered(caller, agents[0]))
    assert got == ["a", "b", "c"]
    desk.ev(CallEnded("c1"), at=5)
    assert rung(desk.ev(CallerJoined("c9", "q"))) == [("c9", ("b",))]


def test_longest_idle_picks_whose_last_call_ended_first() -> None:
    desk = Desk(q(strategy="longest-idle"))
    desk.ev(AgentLoggedIn("c"), at=0)
    desk.ev(AgentLoggedIn("a"), at=1)
    desk.ev(AgentLoggedIn("b"), at=2)
    # c is idle longest (since login at 0)
    assert rung(desk.ev(CallerJoined("x1", "q"), at=3)) == [("x1", ("c",))]
    desk.ev(BranchAnswered("x1", "c"))
    desk.ev(CallEnded("x1"), at=4)  # c: idle since 4
    desk.ev(AgentBusy("a", "d"), at=4)
    desk.ev(AgentFree("a", "d"), at=5)  # a direct call counts: a idle since 5
    assert rung(desk.ev(CallerJoined("x2", "q"), at=6)) == [("x2", ("b",))]
    desk.ev(BranchAnswered("x2", "b"))
    assert rung(desk.ev(CallerJoined("x3", "q"), at=7)) == [("x3", ("c",))]


def test_fewest_calls_picks_who_answered_least_in_this_queue() -> None:
    desk = Desk(q(strategy="fewest-calls"), login="abc")
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(9):
        ((caller, agents),) = rung(desk.ev(CallerJoined(f"x{i}", "q"), at=i))
        counts[agents[0]] += 1
        desk.ev(BranchAnswered(caller, agents[0]))
        desk.ev(CallEnded(caller), at=i + 0.5)
    assert counts == {"a": 3, "b": 3, "c": 3}
    # a missed ring is not a call: the count only grows on answer
    desk2 = Desk(q(strategy="fewest-calls", answer_timeout=5, retry=100), login="ab")
    desk2.ev(CallerJoined("y1", "q"), at=0)  # a (tie -> longest idle/order)
    desk2.tick(5)  # a misses, b rings
    desk2.ev(BranchAnswered("y1", "b"))
    desk2.ev(CallEnded("y1"), at=6)
    assert rung(desk2.ev(CallerJoined("y2", "q"), at=7)) == [("y2", ("a",))]


def test_random_is_seedable() -> None:
    def picks(seed: int) -> list[str]:
        desk = Desk(q(members=tuple("abcdefgh"), strategy="random"), login="abcdefgh", seed=seed)
        got = []
        for i in range(20):
            ((caller, agents),) = rung(desk.ev(CallerJoined(f"x{i}", "q"), at=i))
            got.append(agents[0])
            desk.ev(BranchAnswered(caller, agents[0]))
            desk.ev(CallEnded(caller), at=i + 0.5)
        return got

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert len(set(picks(3))) > 3


# -- answers, misses, retry, auto-pause ------------------------------------------------


def test_rejected_is_a_miss_failed_is_not_and_both_wait_retry() -> None:
    desk = Desk(q(strategy="linear", retry=5, answer_timeout=20), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out = desk.ev(BranchRejected("c1", "a", 486), at=1)
    assert cmds(out) == [RingAgents("c1", "q", ("b",))]  # no CancelBranch: it is over
    out = desk.ev(BranchFailed("c1", "b", 503, "unreachable"), at=2)
    assert rung(out) == []  # both cool down for this caller
    assert desk.rings("c1") == [("a", "rejected", "rejected", 1), ("b", "failed", "unreachable", 1)]
    assert [r.code for r in desk.records("ring")] == [486, 503]
    assert desk.acd.agent_view("a").consecutive_misses == 1
    assert desk.acd.agent_view("b").consecutive_misses == 0
    # another caller may ring them at once
    assert rung(desk.ev(CallerJoined("c2", "q"), at=3)) == [("c2", ("a",))]
    out = desk.tick(7)  # b's cooldown for c1 ends (a is ringing for c2)
    assert rung(out) == [("c1", ("b",))]
    out = desk.ev(BranchTimedOut("c1", "b", 480), at=8)  # the phone gave up by itself
    assert desk.rings("c1")[-1] == ("b", "missed", "no-answer", 1)


def test_auto_pause_after_consecutive_misses() -> None:
    desk = Desk(
        q(members=("a", "b"), strategy="linear", answer_timeout=10, auto_pause_after=2),
        login="ab",
    )
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.tick(10)  # a misses (1), b rings
    desk.ev(BranchAnswered("c1", "b"), at=11)
    desk.ev(CallerJoined("c2", "q"), at=12)  # a rings again (another caller)
    out = desk.tick(22)  # a misses (2): auto-paused
    assert AutoPaused("a", "q", 2) in out
    assert desk.state("a") == ("paused", "idle")
    assert desk.acd.agent_view("a").pause_reason == "auto-pause"
    (pause,) = desk.records("pause")
    assert (pause.agent, pause.reason, pause.queue) == ("a", "auto-pause", "q")
    out = desk.ev(AgentUnpaused("a"), at=30)
    assert rung(out) == [("c2", ("a",))]  # c2 still waits; a's retry for c2 is over
    assert desk.acd.agent_view("a").consecutive_misses == 0


def test_an_answer_resets_consecutive_misses() -> None:
    desk = Desk(q(members=("a",), answer_timeout=10, auto_pause_after=2, retry=0), login="a")
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.tick(10)  # miss 1, rung again at once (retry 0)
    desk.ev(BranchAnswered("c1", "a"), at=12)
    desk.ev(CallEnded("c1"), at=20)
    desk.ev(CallerJoined("c2", "q"), at=21)
    out = desk.tick(31)  # miss 1 again, not 2
    assert not [c for c in out if isinstance(c, AutoPaused)]
    assert desk.state("a") == ("available", "ringing")


# -- the ugly orderings ----------------------------------------------------------------


def test_answer_at_the_instant_of_the_timeout_answer_first_wins() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    assert desk.acd.next_timer() == 15
    desk.now = 15  # the integration drains events before running due timers
    out = desk.ev(BranchAnswered("c1", "a"))
    assert cmds(out) == [Connect("c1", "a", "q")]
    assert desk.tick(15) == []  # the timer is stale now
    assert desk.rings("c1") == [("a", "answered", None, 15)]


def test_answer_at_the_instant_of_the_timeout_timer_first_wins() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out = desk.tick(15)
    assert cmds(out) == [CancelBranch("c1", "a", "timeout"), RingAgents("c1", "q", ("b",))]
    out = desk.ev(BranchAnswered("c1", "a"))  # same now: its 2xx crossed the CANCEL
    assert cmds(out) == [CancelBranch("c1", "a", "answered-too-late")]
    (late,) = desk.records("late_answer")
    assert (late.caller, late.agent, late.queue, late.time) == ("c1", "a", "q", 15)
    assert desk.rings("c1") == [("a", "missed", "timeout", 15)]  # one record per attempt
    assert desk.acd.caller_view("c1").ringing == ("b",)
    assert desk.state("a") == ("available", "idle")


def test_handle_runs_overdue_timers_first() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out = desk.acd.handle(BranchAnswered("c1", "a"), 16)  # the integration forgot on_timer
    assert cmds(out) == [
        CancelBranch("c1", "a", "timeout"),
        RingAgents("c1", "q", ("b",)),
        CancelBranch("c1", "a", "answered-too-late"),
    ]


def test_two_operators_answer_at_once() -> None:
    desk = Desk(q(answer_timeout=None), login="abc")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out_a = desk.ev(BranchAnswered("c1", "a"), at=5)
    out_b = desk.ev(BranchAnswered("c1", "b"), at=5)
    assert cmds(out_a)[0] == Connect("c1", "a", "q")
    assert cmds(out_b) == [CancelBranch("c1", "b", "answered-too-late")]
    assert desk.rings("c1") == [
        ("a", "answered", None, 5),
        ("b", "cancelled", "answered-elsewhere", 5),
        ("c", "cancelled", "answered-elsewhere", 5),
    ]
    (late,) = desk.records("late_answer")
    assert (late.agent, late.reason) == ("b", "answered-too-late")
    assert len(desk.records("connected")) == 1
    assert desk.state("b") == ("available", "idle")


def test_caller_hangs_up_while_a_branch_is_answering() -> None:
    desk = Desk(q(strategy="linear", answer_timeout=20), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(CallerJoined("c2", "q"), at=1)  # rings b
    out = desk.ev(CallerLeft("c1"), at=6)
    assert cmds(out) == [CancelBranch("c1", "a", "caller-left")]
    (ab,) = desk.records("abandoned")
    assert (ab.caller, ab.position, ab.wait) == ("c1", 1, 6)
    assert ab.attempts == (Attempt("a", 0, 6, "cancelled"),)
    out = desk.ev(BranchAnswered("c1", "a"), at=6.01)  # a's 200 was already on its way
    assert cmds(out) == [CancelBranch("c1", "a", "caller-left")]
    (late,) = desk.records("late_answer")
    assert late.queue == "q"  # remembered after the caller left
    assert desk.state("a") == ("available", "idle")
    # the reverse order: the answer wins, then the caller's BYE ends a 0 s call
    desk.ev(BranchAnswered("c2", "b"), at=7)
    desk.ev(CallerLeft("c2"), at=7)
    done = desk.records("completed")[-1]
    assert (done.caller, done.result, done.talk_time) == ("c2", "caller", 0)


def test_operator_logs_out_while_ringing() -> None:
    desk = Desk(q(strategy="round-robin", answer_timeout=15), login="abc")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out = desk.ev(AgentLoggedOut("a", "unregistered"), at=3)
    assert cmds(out) == [CancelBranch("c1", "a", "logged-out"), RingAgents("c1", "q", ("b",))]
    assert desk.rings("c1") == [("a", "cancelled", "logged-out", 3)]
    assert desk.acd.agent_view("a").consecutive_misses == 0  # not a miss
    (logout,) = desk.records("logout")
    assert (logout.agent, logout.reason, logout.duration) == ("a", "unregistered", 3)
    assert desk.state("a") == ("logged_out", "idle")


def test_operator_paused_while_ringing_and_while_talking() -> None:
    desk = Desk(q(strategy="linear", wrap_up=5), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    out = desk.ev(AgentPaused("a", "coffee"), at=1)
    assert cmds(out) == [CancelBranch("c1", "a", "paused"), RingAgents("c1", "q", ("b",))]
    desk.ev(BranchAnswered("c1", "b"), at=2)
    desk.ev(AgentPaused("b", "end of shift"), at=3)  # status changes, the call goes on
    assert desk.state("b") == ("paused", "talking")
    desk.ev(CallEnded("c1", "agent"), at=10)
    assert desk.state("b") == ("paused", "wrap_up")
    desk.tick(15)
    assert desk.state("b") == ("paused", "idle")
    out = desk.ev(AgentUnpaused("a"), at=20)
    (unpause,) = [r for r in desk.records("unpause") if r.agent == "a"]
    assert (unpause.reason, unpause.duration) == ("coffee", 19)


def test_wrap_up_is_shared_across_two_queues() -> None:
    sales = q("sales", ("a", "b"), strategy="linear", wrap_up=7)
    support = q("support", ("a",), strategy="linear", wrap_up=30)
    desk = Desk(sales, support, login="a")
    desk.ev(CallerJoined("s1", "sales"), at=0)
    desk.ev(BranchAnswered("s1", "a"), at=1)
    assert rung(desk.ev(CallerJoined("t1", "support"), at=2)) == []  # a is talking
    out = desk.ev(CallEnded("s1", "agent"), at=10)
    assert cmds(out) == [StartWrapUp("a", 17, "sales")]  # the wrap-up of the call's queue
    assert rung(desk.tick(16.9)) == []  # support does not ring a during sales' wrap-up
    assert desk.acd.agent_view("a").wrap_until == 17
    out = desk.tick(17)
    assert cmds(out) == [EndWrapUp("a"), RingAgents("t1", "support", ("a",))]


def test_agent_ready_ends_wrap_up_early() -> None:
    desk = Desk(q(strategy="linear", wrap_up=60, answer_timeout=None), login="a")
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(BranchAnswered("c1", "a"))
    desk.ev(CallEnded("c1", "caller"), at=5)
    desk.ev(CallerJoined("c2", "q"), at=6)
    out = desk.ev(AgentReady("a"), at=9)
    assert cmds(out) == [EndWrapUp("a"), RingAgents("c2", "q", ("a",))]
    assert desk.records("wrap_up_end")[0].reason == "ready"
    assert desk.tick(100) == []  # the old wrap-up timer is stale


def test_operator_on_a_direct_call_is_never_rung() -> None:
    sales = q("sales", ("a", "b"), strategy="ring-all", answer_timeout=None)
    desk = Desk(sales, login="ab")
    desk.ev(AgentBusy("a", "d1"), at=0)
    assert rung(desk.ev(CallerJoined("c1", "sales"), at=1)) == [("c1", ("b",))]
    desk.ev(AgentBusy("a", "d2"))  # a second direct call (e.g. a transfer)
    out = desk.ev(AgentFree("a", "d1"), at=2)
    assert rung(out) == []  # still on d2
    out = desk.ev(AgentFree("a", "unknown"), at=2)
    assert rung(out) == []
    out = desk.ev(AgentFree("a", "d2"), at=3)
    assert rung(out) == [("c1", ("a",))]
    # a direct call answered while a queue branch rings: the branch is cancelled (no miss)
    out = desk.ev(AgentBusy("b", "d3"), at=4)
    assert cmds(out) == [CancelBranch("c1", "b", "agent-busy")]
    assert desk.acd.agent_view("b").consecutive_misses == 0
    assert desk.acd.agent_view("b").other_calls == 1


def test_exit_key_while_ringing() -> None:
    desk = Desk(q(exit_key="0", exit_target="voicemail", answer_timeout=None), login="ab")
    desk.ev(CallerJoined("c1", "q"), at=0)
    assert desk.ev(ExitKeyPressed("c1", "5"), at=1) == []  # not the exit key
    out = desk.ev(ExitKeyPressed("c1", "0"), at=2)
    assert cmds(out) == [
        CancelBranch("c1", "a", "exit-key"),
        CancelBranch("c1", "b", "exit-key"),
        Leave("c1", "q", "key", "voicemail"),
    ]
    (left,) = desk.records("left")
    assert (left.result, left.target, left.wait, left.position) == ("key", "voicemail", 2, 1)
    assert [x.result for x in left.attempts] == ["cancelled", "cancelled"]
    assert desk.ev(ExitKeyPressed("c1", "0"), at=3) == []  # gone
    # no exit key configured: keys are ignored
    desk2 = Desk(q(), login="a")
    desk2.ev(CallerJoined("c1", "q"))
    assert desk2.ev(ExitKeyPressed("c1", "0")) == []


def test_max_wait_leaves_to_the_timeout_target_with_the_missed_call_figures() -> None:
    desk = Desk(
        q(strategy="ring-all", answer_timeout=None, max_wait=60, on_timeout="voicemail"),
        login="ab",
    )
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(AgentLoggedOut("b"), at=20)
    out = desk.tick(60)
    assert cmds(out) == [
        CancelBranch("c1", "a", "max-wait"),
        Leave("c1", "q", "timeout", "voicemail"),
    ]
    (left,) = desk.records("left")
    # the missed-call notification: the caller waited 60 s; a rang 60 s, b 20 s
    assert left.wait == 60
    assert sorted((x.agent, x.seconds, x.result) for x in left.attempts) == [
        ("a", 60, "cancelled"),
        ("b", 20, "cancelled"),
    ]


def test_max_callers_reached() -> None:
    desk = Desk(q(max_callers=2, on_full="busy-message"))  # nobody logged in: they wait
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(CallerJoined("c2", "q"), at=1)
    out = desk.ev(CallerJoined("c3", "q"), at=2)
    assert cmds(out) == [Leave("c3", "q", "full", "busy-message")]
    joined = desk.records("joined")
    assert [r.position for r in joined] == [1, 2, 3]
    (left,) = desk.records("left")
    assert (left.caller, left.result, left.position, left.wait) == ("c3", "full", 3, 0)
    assert desk.acd.queue_view("q").waiting == ("c1", "c2")
    desk.ev(CallerLeft("c1"), at=3)
    assert cmds(desk.ev(CallerJoined("c4", "q"), at=4)) == []  # room again


def test_nobody_logged_in_leave_at_once_or_wait() -> None:
    leave = Desk(q(on_empty="voicemail"))
    out = leave.ev(CallerJoined("c1", "q"), at=0)
    assert cmds(out) == [Leave("c1", "q", "empty", "voicemail")]
    assert leave.acd.next_timer() is None
    # paused operators are logged in: the caller waits for them
    leave.ev(AgentLoggedIn("a"))
    leave.ev(AgentPaused("a", "meeting"))
    assert cmds(leave.ev(CallerJoined("c2", "q"), at=1)) == []
    # the last member logs out while callers wait: they leave too
    out = leave.ev(AgentLoggedOut("a"), at=5)
    assert Leave("c2", "q", "empty", "voicemail") in out
    wait = Desk(q(announce_every=30))  # on_empty unset: wait with music
    assert cmds(wait.ev(CallerJoined("c1", "q"), at=0)) == []
    out = wait.tick(30)
    assert cmds(out) == [Announce("c1", "q", 1, None)]  # no estimate with nobody there
    assert rung(wait.ev(AgentLoggedIn("b"), at=40)) == [("c1", ("b",))]


# -- announcements and priority --------------------------------------------------------


def test_announcements_with_position_and_estimated_wait() -> None:
    desk = Desk(q(members=("a", "b"), strategy="linear", announce_every=20, wrap_up=10))
    desk.ev(AgentLoggedIn("a"), at=0)
    desk.ev(AgentLoggedIn("b"), at=0)
    desk.ev(CallerJoined("x", "q"), at=0)
    desk.ev(BranchAnswered("x", "a"))
    desk.ev(CallEnded("x"), at=110)  # handle time 110 + 10 = 120 s
    desk.ev(CallerJoined("y", "q"), at=110)
    desk.ev(BranchAnswered("y", "b"))  # both busy now (a in wrap-up)
    desk.ev(AgentPaused("a", "x"), at=111)
    desk.ev(CallerJoined("c1", "q"), at=111)
    desk.ev(CallerJoined("c2", "q"), at=112)
    out = [c for c in desk.tick(132) if isinstance(c, Announce)]  # (a's wrap-up ends)
    # one operator available (b), average handle 120 s: position 1 -> 120 s, 2 -> 240 s
    assert cmds(out) == [Announce("c1", "q", 1, 120), Announce("c2", "q", 2, 240)]
    assert cmds(desk.tick(151)) == [Announce("c1", "q", 1, 120)]
    desk.ev(CallerLeft("c1"), at=151.5)
    assert cmds(desk.tick(152)) == [Announce("c2", "q", 1, 120)]


def test_priority_first_then_longest_waiting() -> None:
    desk = Desk(q(members=("a",)))
    desk.ev(CallerJoined("low", "q"), at=0)
    desk.ev(CallerJoined("vip", "q", priority=5), at=1)
    desk.ev(CallerJoined("low2", "q"), at=2)
    assert desk.acd.queue_view("q").waiting == ("vip", "low", "low2")
    assert desk.records("joined")[1].position == 1
    assert rung(desk.ev(AgentLoggedIn("a"), at=3)) == [("vip", ("a",))]


def test_operator_in_two_queues_takes_the_longest_waiting_caller() -> None:
    desk = Desk(q("sales", ("a",)), q("support", ("a", "b")), q("vip", ("a",), priority=3))
    desk.ev(CallerJoined("s1", "sales"), at=0)
    desk.ev(CallerJoined("t1", "support"), at=1)
    desk.ev(CallerJoined("s2", "sales"), at=2)
    assert rung(desk.ev(AgentLoggedIn("a"), at=3)) == [("s1", ("a",))]
    desk.ev(BranchAnswered("s1", "a"))
    desk.ev(CallerJoined("v1", "vip"), at=4)  # the queue's priority
    desk.ev(CallEnded("s1"), at=5)
    assert desk.log[-1] == RingAgents("v1", "vip", ("a",))
    desk.ev(BranchAnswered("v1", "a"))
    desk.ev(CallEnded("v1"), at=6)
    assert desk.log[-1] == RingAgents("t1", "support", ("a",))
    # an overflowed caller keeps its place with `since`
    desk.ev(BranchAnswered("t1", "a"))
    desk.ev(CallerJoined("s3", "sales", since=-10), at=7)
    desk.ev(CallEnded("t1"), at=8)
    assert desk.log[-1] == RingAgents("s3", "sales", ("a",))


# -- records ---------------------------------------------------------------------------


def test_login_logout_pause_records() -> None:
    desk = Desk(q())
    desk.ev(AgentLoggedIn("a", "registration"), at=100)
    desk.ev(AgentLoggedIn("a", "registration"), at=150)  # re-register: nothing
    desk.ev(AgentPaused("a", "lunch"), at=200)
    desk.ev(AgentLoggedIn("a", "registration"), at=220)  # does not unpause
    assert desk.state("a") == ("paused", "idle")
    desk.ev(AgentLoggedOut("a", "api"), at=300)
    got = [(r.kind, r.agent, r.reason, r.duration) for r in desk.records()]
    assert got == [
        ("login", "a", "registration", None),
        ("pause", "a", "lunch", None),
        ("unpause", "a", "logout", 100),
        ("logout", "a", "api", 200),
    ]
    assert desk.ev(AgentLoggedOut("a")) == []


def test_caller_ended_by_the_switch_while_waiting_and_unknown_events() -> None:
    desk = Desk(q(answer_timeout=None), login="a")
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(CallerJoined("c1", "q"), at=1)  # duplicate join: ignored
    assert len(desk.records("joined")) == 1
    out = desk.ev(CallEnded("c1", "switch"), at=2)
    assert cmds(out) == [CancelBranch("c1", "a", "removed")]
    (left,) = desk.records("left")
    assert (left.result, left.reason) == ("removed", "switch")
    for event in (
        CallerLeft("zz"),
        CallEnded("zz"),
        BranchRinging("zz", "a"),
        BranchRejected("zz", "a"),
        BranchFailed("zz", "a"),
        BranchTimedOut("zz", "a"),
        ExitKeyPressed("zz", "0"),
        AgentReady("a"),
        AgentUnpaused("a"),
    ):
        assert desk.ev(event) == []
    # an answer for a caller never seen: hang the branch up
    assert cmds(desk.ev(BranchAnswered("zz", "a"))) == [CancelBranch("zz", "a", "caller-left")]


def test_logout_during_a_call_skips_wrap_up() -> None:
    desk = Desk(q(strategy="linear", wrap_up=30), login="a")
    desk.ev(CallerJoined("c1", "q"), at=0)
    desk.ev(BranchAnswered("c1", "a"))
    desk.ev(AgentLoggedOut("a", "api"), at=5)
    assert desk.state("a") == ("logged_out", "talking")
    out = desk.ev(CallEnded("c1", "agent"), at=9)
    assert not [c for c in out if isinstance(c, StartWrapUp)]
    assert desk.state("a") == ("logged_out", "idle")
    # logging out during wrap-up ends it
    desk.ev(AgentLoggedIn("a"), at=10)
    desk.ev(CallerJoined("c2", "q"))
    desk.ev(BranchAnswered("c2", "a"))
    desk.ev(CallEnded("c2"), at=11)
    out = desk.ev(AgentLoggedOut("a"), at=12)
    assert cmds(out) == [EndWrapUp("a")]
    assert desk.records("wrap_up_end")[-1].reason == "logout"


# -- every strategy x ugly orderings: invariants after every event ---------------------


def check_invariants(acd: Acd, now: float) -> None:
    from softswitch.acd.core import AVAILABLE, IDLE, RINGING, TALKING, WAITING

    ringing: dict[str, str] = {}
    for c in acd._callers.values():
        for agent_id, b in c.branches.items():
            assert c.state == WAITING
            assert agent_id not in ringing, "an operator rings for two callers"
            ringing[agent_id] = c.id
            assert b.agent.state == RINGING and b.agent.caller is c
        if c.state != WAITING:
            assert not c.branches and c.agent is not None and c.agent.state == TALKING
    for a in acd._agents.values():
        free = a.status == AVAILABLE and a.state == IDLE and not a.external
        assert (a.id in acd._free) == free
        if a.state == RINGING:
            assert ringing.get(a.id) == a.caller.id
    for q in acd._queues.values():
        waiting = [k[3] for k in q.waiting]
        assert all(c.state == WAITING for c in waiting)
        assert q.hungry == sorted(q.hungry)
        for c in waiting:
            want = not c.branches or (q.ring_all and q.config.ring_new_free)
            assert c.hungry == want
            if want:  # the matching invariant
                for a in q.members:
                    if a.id in acd._free:
                        assert c.cooldown.get(a.id, -1e18) >= now, (c.id, a.id)
        assert q.logged_in == sum(1 for a in q.members if a.status != "logged_out")
        assert q.available == sum(1 for a in q.members if a.status == AVAILABLE)


@pytest.mark.parametrize(
    "strategy", ["ring-all", "round-robin", "longest-idle", "fewest-calls", "linear", "random"]
)
@pytest.mark.parametrize("ring_new_free", [True, False])
def test_random_event_storm_keeps_the_invariants(strategy: str, ring_new_free: bool) -> None:
    rng = random.Random(f"{strategy}{ring_new_free}")
    agents = [f"a{i}" for i in range(6)]
    queues = (
        QueueConfig(
            "q1",
            tuple(agents[:4]),
            strategy=strategy,
            answer_timeout=7,
            ring_new_free=ring_new_free,
            wrap_up=3,
            retry=2,
            max_wait=90,
            max_callers=6,
            exit_key="0",
            announce_every=15,
            auto_pause_after=3,
        ),
        QueueConfig(
            "q2",
            tuple(agents[2:]),
            strategy=strategy,
            answer_timeout=None,
            ring_new_free=ring_new_free,
            wrap_up=0,
            retry=0,
            on_empty="vm",
        ),
    )
    acd = Acd(AcdConfig(queues=queues, seed=5))
    now, n = 0.0, 0
    ringing: set[tuple[str, str]] = set()
    talking: dict[str, str] = {}
    callers: set[str] = set()
    ends: dict[tuple[str, str], int] = {}
    for _ in range(4000):
        now += rng.choice((0.0, 0.0, 0.5, 1.0, 3.0))
        timer = acd.next_timer()
        if timer is not None and timer <= now and rng.random() < 0.7:
            out = acd.on_timer(now)
        else:
            r = rng.random()
            a = rng.choice(agents)
            if r < 0.15:
                n += 1
                out = acd.handle(
                    CallerJoined(f"c{n}", rng.choice(("q1", "q2")), priority=rng.choice((0, 0, 1))),
                    now,
                )
                callers.add(f"c{n}")
            elif r < 0.40 and ringing:
                c, a = rng.choice(sorted(ringing))
                kind = rng.choice(
                    (BranchAnswered, BranchAnswered, BranchRejected, BranchFailed, BranchTimedOut)
                )
                out = acd.handle(kind(c, a), now)
            elif r < 0.50 and talking:
                c = rng.choice(sorted(talking))
                out = acd.handle(CallEnded(c, rng.choice(("caller", "agent"))), now)
            elif r < 0.55 and callers:
                out = acd.handle(CallerLeft(rng.choice(sorted(callers))), now)
            elif r < 0.58 and callers:
                out = acd.handle(ExitKeyPressed(rng.choice(sorted(callers)), "0"), now)
            else:
                event = rng.choice(
                    (
                        AgentLoggedIn(a),
                        AgentLoggedIn(a),
                        AgentLoggedOut(a),
                        AgentPaused(a, "p"),
                        AgentUnpaused(a),
                        AgentUnpaused(a),
                        AgentReady(a),
                        AgentBusy(a, "d"),
                        AgentFree(a, "d"),
                        BranchAnswered(f"c{rng.randint(1, n + 1)}", a),
                    )
                )
                out = acd.handle(event, now)
        for cmd in out:
            if isinstance(cmd, RingAgents):
                for a in cmd.agents:
                    assert (cmd.caller, a) not in ringing
                    ringing.add((cmd.caller, a))
            elif isinstance(cmd, QueueEvent) and cmd.kind == "ring":
                ringing.discard((cmd.caller, cmd.agent))  # each attempt ends exactly once
                ends[(cmd.caller, cmd.agent)] = ends.get((cmd.caller, cmd.agent), 0) + 1
            elif isinstance(cmd, Connect):
                talking[cmd.caller] = cmd.agent
            elif isinstance(cmd, QueueEvent) and cmd.kind == "completed":
                del talking[cmd.caller]
                callers.discard(cmd.caller)
            elif isinstance(cmd, QueueEvent) and cmd.kind in ("abandoned", "left"):
                callers.discard(cmd.caller)
        check_invariants(acd, now)
        # the core's own view of who rings agrees with the commands it gave
        assert ringing == {(c.id, a) for c in acd._callers.values() for a in c.branches}
    assert n > 300
    assert sum(ends.values()) > 300


def test_small_paths() -> None:
    desk = Desk(q(announce_every=10, answer_timeout=None), agents=("boss",))
    acd = desk.acd
    assert acd.queues == ("q",)
    assert acd.agent_view("boss").status == "logged_out"
    assert acd.agent_view("boss").queues == ()
    assert acd.caller_view("nobody") is None
    desk.ev(CallerJoined("c1", "q"), at=0)
    view = acd.caller_view("c1")
    assert (view.state, view.position, view.ringing) == ("waiting", 1, ())
    # the integration ran its timer late: one announcement, and the next 10 s later
    out = acd.on_timer(35)
    assert cmds(out) == [Announce("c1", "q", 1, None)]
    assert acd.next_timer() == 45
    # CallEnded(by="caller") for a waiting caller is an abandon
    desk.ev(CallEnded("c1", "caller"), at=40)
    assert [r.caller for r in desk.records("abandoned")] == ["c1"]


def test_the_memory_of_ended_callers_is_bounded() -> None:
    acd = Acd(AcdConfig(queues=(q(),), remember_ended=2))
    for i in range(4):
        acd.handle(CallerJoined(f"c{i}", "q"), i)
        acd.handle(CallerLeft(f"c{i}"), i)
    late = [r for r in acd.handle(BranchAnswered("c0", "a"), 9) if isinstance(r, QueueEvent)]
    assert late[0].queue is None  # forgotten
    late = [r for r in acd.handle(BranchAnswered("c3", "a"), 9) if isinstance(r, QueueEvent)]
    assert late[0].queue == "q"
