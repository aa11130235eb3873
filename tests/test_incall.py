"""The in-call feature code matcher and the bridge bookkeeping of softswitch/incall.py
(no switch, no asyncio timers: the matcher is sans-I/O, InCall runs without a loop as
long as no code is left half-typed)."""

from __future__ import annotations

import pytest

from softswitch.incall import FeatureContext, FeatureMatch, FeatureMatcher, InCall


def keys(m: FeatureMatcher, leg: str, digits: str, start: float = 0.0, gap: float = 0.1):
    found = []
    for i, d in enumerate(digits):
        found += m.feed(leg, d, start + i * gap)
    return found


def test_a_code_matches_and_the_buffer_starts_again():
    m = FeatureMatcher({"*1": "record_toggle"})
    assert keys(m, "L", "*1") == [FeatureMatch("L", "*1", "record_toggle")]
    assert m.buffers == {}
    assert keys(m, "L", "*1", start=5) == [FeatureMatch("L", "*1", "record_toggle")]


def test_digits_that_start_no_code_are_skipped():
    m = FeatureMatcher({"*1": "rec", "##": "xfer"})
    assert keys(m, "L", "5*1") == [FeatureMatch("L", "*1", "rec")]
    assert keys(m, "L", "**1") == [FeatureMatch("L", "*1", "rec")]
    assert keys(m, "L", "1234") == [] and m.buffers == {}
    assert keys(m, "L", "*#") == [] and m.buffers == {"L": ("#", 0.1)}
    assert keys(m, "L", "#", start=0.2) == [FeatureMatch("L", "##", "xfer")]


def test_legs_have_their_own_buffers():
    m = FeatureMatcher({"*1": "rec"})
    assert m.feed("A", "*", 0) == [] and m.feed("B", "1", 0.1) == []
    assert m.feed("A", "1", 0.2) == [FeatureMatch("A", "*1", "rec")]


def test_keys_too_far_apart_do_not_make_a_code():
    m = FeatureMatcher({"*1": "rec"}, inter_digit_timeout=3.0)
    assert m.feed("L", "*", 0.0) == []
    assert m.next_deadline() == 3.0
    assert m.feed("L", "1", 3.5) == []
    assert m.expire(10.0) == [] and m.buffers == {}


def test_a_code_that_starts_a_longer_one_waits_for_the_next_key_or_the_timeout():
    m = FeatureMatcher({"*1": "short", "*12": "long"})
    assert keys(m, "L", "*12") == [FeatureMatch("L", "*12", "long")]
    assert keys(m, "L", "*1") == []
    assert m.feed("L", "5", 0.5) == [FeatureMatch("L", "*1", "short")]
    assert keys(m, "L", "*1", start=1) == []
    assert m.expire(2.0) == []  # not yet
    assert m.expire(4.2) == [FeatureMatch("L", "*1", "short")]
    # a new key after the timeout: the waiting code fires, the key starts afresh
    assert keys(m, "L", "*1", start=10) == []
    assert m.feed("L", "*", 20) == [FeatureMatch("L", "*1", "short")]
    assert m.buffers == {"L": ("*", 20)}


def test_bad_codes_are_refused():
    m = FeatureMatcher()
    with pytest.raises(ValueError):
        m.register("", "x")
    with pytest.raises(ValueError):
        m.register("*x", "x")


class FakeStore:
    def __init__(self) -> None:
        self.sql: list[tuple] = []

    @property
    def db(self):
        return self

    def execute(self, sql: str, args: tuple = ()):
        self.sql.append((sql, args))


def test_incall_follows_bridge_commands_and_runs_actions():
    now = [100.0]
    store = FakeStore()
    ic = InCall(store, lambda: now[0])
    seen: list[tuple] = []
    ran: list[FeatureContext] = []
    ic.bridge_listeners.append(lambda what, w, a, b: seen.append((what, w, a, b)))
    ic.add_feature(["*1", ""], "rec", ran.append)
    ic.on_command("W", {"cmd": "play", "leg": "c-a"})
    ic.on_command("W", {"cmd": "bridge", "a": "c-a", "b": "c-b"})
    ic.on_command("W", {"cmd": "bridge", "a": "c-a", "b": "c-b"})  # once only
    assert seen == [("bridged", "W", "c-a", "c-b")]
    assert ic.bridged_to("c-b") == {"c-a"}
    # a leg that is not bridged: its digits go on to the call's logic
    assert ic.on_event("W", {"event": "dtmf", "leg": "c-x", "digit": "*"}) is False
    assert ic.on_event("W", {"event": "dtmf", "leg": "c-b", "digit": "*"}) is True
    assert ic.on_event("W", {"event": "dtmf", "leg": "c-b", "digit": "1"}) is True
    assert [(c.leg, c.peer, c.call_id, c.code, c.action) for c in ran] == [
        ("c-b", "c-a", "c", "*1", "rec")
    ]
    # hold: counted when it starts, its seconds added when it ends
    ic.on_event("W", {"event": "hold", "leg": "c-b"})
    now[0] = 104.5
    ic.on_event("W", {"event": "resume", "leg": "c-b"})
    assert [args for _, args in store.sql] == [("c-b",), (4.5, "c-b")]
    # a leg that hangs up is no longer bridged (and a held one stops being held)
    ic.on_event("W", {"event": "hold", "leg": "c-a"})
    now[0] = 106.0
    ic.on_event("W", {"event": "state", "leg": "c-a", "state": "disconnected"})
    assert seen[-1] == ("unbridged", "W", "c-a", "c-b")
    assert store.sql[-1][1] == (1.5, "c-a")
    assert ic.peers == {}
    assert ic.on_event("W", {"event": "dtmf", "leg": "c-b", "digit": "1"}) is False
    ic.on_command("W", {"cmd": "bridge", "a": "d-a", "b": "d-b"})
    ic.on_command("W", {"cmd": "unbridge", "a": "d-b", "b": "d-a"})
    assert seen[-1] == ("unbridged", "W", "d-b", "d-a") and ic.peers == {}
