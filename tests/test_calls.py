"""The extension-to-extension call state machine, event by event (no SIP, no clock)."""

from softswitch.calls import (
    CallAnswered,
    CallClosed,
    ExtensionCall,
    LegAnswered,
    LegClosed,
    LegOpened,
    WorkerCommand,
)


def new_call() -> ExtensionCall:
    return ExtensionCall(
        call_id="c1",
        caller="101",
        callee="102",
        callee_uri="sip:102@pbx",
        from_header='"Alice" <sip:101@pbx>',
    )


def cmds(actions) -> list[dict]:
    return [a.cmd for a in actions if isinstance(a, WorkerCommand)]


def closed(actions) -> CallClosed | None:
    found = [a for a in actions if isinstance(a, CallClosed)]
    assert len(found) <= 1
    return found[0] if found else None


def test_incoming_opens_both_legs_and_originates_the_callee():
    call = new_call()
    actions = call.on_incoming("sipcid")
    opened = [a for a in actions if isinstance(a, LegOpened)]
    assert [(o.leg, o.role, o.party) for o in opened] == [
        ("c1-a", "caller", "101"),
        ("c1-b", "callee", "102"),
    ]
    (orig,) = cmds(actions)
    assert orig["cmd"] == "originate" and orig["leg"] == "c1-b"
    assert orig["uri"] == "sip:102@pbx"
    assert orig["headers"] == {"X-Call": "c1", "X-From": '"Alice" <sip:101@pbx>'}


def test_answered_call_is_bridged_and_closed_once_when_callee_hangs_up():
    call = new_call()
    call.on_incoming(None)
    assert cmds(call.on_state("c1-b", "early", 180, None)) == [
        {"cmd": "ring", "leg": "c1-a", "code": 180}
    ]
    actions = call.on_state("c1-b", "confirmed", 200, None)
    assert LegAnswered("c1-b") in actions
    assert cmds(actions) == [{"cmd": "answer", "leg": "c1-a", "code": 200}]
    actions = call.on_state("c1-a", "confirmed", 200, None)
    assert CallAnswered() in actions
    assert cmds(actions) == [{"cmd": "bridge", "a": "c1-a", "b": "c1-b"}]
    actions = call.on_state("c1-b", "disconnected", 200, "remote", {"rx_packets": 50})
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-a", "code": 200}]
    leg = [a for a in actions if isinstance(a, LegClosed)][0]
    assert (leg.result, leg.stats) == ("answered", {"rx_packets": 50})
    assert closed(actions) is None  # the caller's leg is still up
    actions = call.on_state("c1-a", "disconnected", 200, "local")
    assert closed(actions) == CallClosed("answered", "callee hung up", 200)
    assert call.finished
    # a late duplicate event changes nothing
    assert call.on_state("c1-a", "disconnected", 200, "local") == []


def test_caller_hangs_up_during_the_call():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "confirmed", 200, None)
    call.on_state("c1-a", "confirmed", 200, None)
    actions = call.on_state("c1-a", "disconnected", 200, "remote")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-b", "code": 200}]
    actions = call.on_state("c1-b", "disconnected", 200, "local")
    assert closed(actions) == CallClosed("answered", "caller hung up", 200)


def test_busy_callee_gives_the_caller_486():
    call = new_call()
    call.on_incoming(None)
    actions = call.on_state("c1-b", "disconnected", 486, "remote")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-a", "code": 486}]
    actions = call.on_state("c1-a", "disconnected", 486, "local")
    assert closed(actions) == CallClosed("busy", "102 busy", 486)


def test_ring_timeout_is_no_answer_with_480():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "early", 180, None)
    call.on_fork_result("no-answer")
    actions = call.on_state("c1-b", "disconnected", 480, "remote")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-a", "code": 480}]
    actions = call.on_state("c1-a", "disconnected", 480, "local")
    assert closed(actions).result == "no-answer"


def test_unregistered_callee_is_unavailable():
    call = new_call()
    call.on_incoming(None)
    call.on_fork_result("unavailable")
    call.on_state("c1-b", "disconnected", 480, "remote")
    actions = call.on_state("c1-a", "disconnected", 480, "local")
    assert closed(actions) == CallClosed("unavailable", "102 unavailable", 480)


def test_caller_cancels_while_callee_rings():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "early", 180, None)
    actions = call.on_state("c1-a", "disconnected", 487, "remote")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-b", "code": 487}]
    assert closed(actions) is None
    actions = call.on_state("c1-b", "disconnected", 487, "local")
    assert cmds(actions) == []  # nothing more to tell the caller
    assert closed(actions) == CallClosed("cancelled", "caller hung up while ringing", 487)


def test_worker_death_fails_open_legs_and_the_call():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "confirmed", 200, None)
    call.on_state("c1-a", "confirmed", 200, None)
    actions = call.on_worker_died()
    legs = [a for a in actions if isinstance(a, LegClosed)]
    assert {(leg.leg, leg.result) for leg in legs} == {("c1-a", "failed"), ("c1-b", "failed")}
    assert closed(actions) == CallClosed("failed", "media worker died", None)
    assert call.on_worker_died() == []


def test_callee_phone_that_stops_sending_audio_is_recorded_as_media_timeout():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "confirmed", 200, None)
    call.on_state("c1-a", "confirmed", 200, None)
    actions = call.on_state("c1-b", "disconnected", 408, "media-timeout")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-a", "code": 200}]
    actions = call.on_state("c1-a", "disconnected", 200, "local")
    assert closed(actions) == CallClosed(
        "answered", "no audio from the callee (media timeout)", 200
    )


# -- transfers ---------------------------------------------------------------------------


def talking() -> ExtensionCall:
    """101 and 102 bridged, with hold music set."""
    call = new_call()
    call.music = "/m.wav"
    call.on_incoming(None)
    call.on_state("c1-b", "confirmed", 200, None)
    call.on_state("c1-a", "confirmed", 200, None)
    assert call.bridged
    return call


def test_blind_transfer_holds_the_caller_then_bridges_the_target():
    call = talking()
    actions = call.on_transfer("c1-b", "c1-t1", "103")
    assert LegOpened("c1-t1", "transfer", "103") in actions
    assert cmds(actions) == [
        {"cmd": "unbridge", "a": "c1-a", "b": "c1-b"},
        {"cmd": "moh_start", "leg": "c1-a", "file": "/m.wav"},
    ]
    # the transferor hangs up on the NOTIFY: only its leg ends
    actions = call.on_state("c1-b", "disconnected", 200, "remote")
    assert cmds(actions) == [] and closed(actions) is None
    assert call.on_state("c1-t1", "early", 180, None) == []
    actions = call.on_state("c1-t1", "confirmed", 200, None)
    assert cmds(actions) == [
        {"cmd": "moh_stop", "leg": "c1-a"},
        {"cmd": "bridge", "a": "c1-a", "b": "c1-t1"},
    ]
    assert (call.leg_b, call.callee) == ("c1-t1", "103")
    actions = call.on_state("c1-t1", "disconnected", 200, "remote")
    assert cmds(actions) == [{"cmd": "hangup", "leg": "c1-a", "code": 200}]
    actions = call.on_state("c1-a", "disconnected", 200, "local")
    assert closed(actions) == CallClosed("answered", "callee hung up", 200)
    assert call.transfers == ["102 -> 103 (answered)"]


def test_a_failed_target_goes_back_to_the_transferor_still_on_the_line():
    call = talking()
    call.on_transfer("c1-b", "c1-t1", "103")
    call.on_fork_result("busy")
    actions = call.on_state("c1-t1", "disconnected", 480, "remote")
    assert [a.result for a in actions if isinstance(a, LegClosed)] == ["busy"]
    assert cmds(actions) == [
        {"cmd": "moh_stop", "leg": "c1-a"},
        {"cmd": "bridge", "a": "c1-a", "b": "c1-b"},
    ]
    assert call.transfer is None and call.transfers == ["102 -> 103 (busy)"]


def test_a_failed_target_after_the_transferor_left_calls_the_transferor_back():
    call = talking()
    call.on_transfer("c1-b", "c1-t1", "103")
    call.on_state("c1-b", "disconnected", 200, "remote")
    actions = call.on_state("c1-t1", "disconnected", 603, "remote")
    (orig,) = cmds(actions)
    assert orig["cmd"] == "originate" and orig["uri"] == "sip:102@pbx"
    recall = orig["leg"]
    actions = call.on_state(recall, "confirmed", 200, None)
    assert {"cmd": "bridge", "a": "c1-a", "b": recall} in cmds(actions)
    assert call.transfers[-1] == "102 -> 102 (called back)"


def test_the_transferred_party_hanging_up_while_the_target_rings_ends_everything():
    call = talking()
    call.on_transfer("c1-b", "c1-t1", "103")
    actions = call.on_state("c1-a", "disconnected", 200, "remote")
    assert {"cmd": "hangup", "leg": "c1-t1", "code": 487} in cmds(actions)
    assert {"cmd": "hangup", "leg": "c1-b", "code": 200} in cmds(actions)
    assert closed(actions) is None  # the target's leg has not ended yet
    actions = call.on_state("c1-t1", "disconnected", 487, "local")
    actions += call.on_state("c1-b", "disconnected", 200, "local")
    assert closed(actions) is not None


def test_a_transfer_of_an_unanswered_call_is_refused():
    call = new_call()
    call.on_incoming(None)
    assert cmds(call.on_transfer("c1-b", "c1-t1", "103")) == [
        {"cmd": "hangup", "leg": "c1-t1", "code": 487}
    ]


def test_pickup_takes_the_ringing_callees_place():
    call = new_call()
    call.on_incoming(None)
    call.on_state("c1-b", "early", 180, None)
    assert call.ringing
    actions = call.on_pickup("c1-p1", "103", "sip-p")
    assert LegOpened("c1-p1", "callee", "103", "sip-p") in actions
    assert cmds(actions) == [
        {"cmd": "hangup", "leg": "c1-b", "code": 487},
        {"cmd": "answer", "leg": "c1-p1", "code": 200},
    ]
    closing = call.on_state("c1-b", "disconnected", 487, "local")
    assert [(a.leg, a.result) for a in closing if isinstance(a, LegClosed)] == [
        ("c1-b", "cancelled")
    ]
    assert cmds(closing) == []  # the caller is not hung up with it
    actions = call.on_state("c1-p1", "confirmed", 200, None)
    assert cmds(actions) == [{"cmd": "answer", "leg": "c1-a", "code": 200}]
    actions = call.on_state("c1-a", "confirmed", 200, None)
    assert cmds(actions) == [{"cmd": "bridge", "a": "c1-a", "b": "c1-p1"}]
    assert call.picked_up_by == "103" and call.callee == "103"


def test_pickup_of_a_call_no_longer_ringing_is_refused():
    call = talking()
    assert not call.ringing
    assert cmds(call.on_pickup("c1-p1", "103", None)) == [
        {"cmd": "hangup", "leg": "c1-p1", "code": 481}
    ]


def test_attended_transfer_by_code_consults_then_completes_when_the_presser_hangs_up():
    call = talking()
    actions = call.on_code_transfer("c1-b", "c1-t1", "103", "pbx", attended=True)
    assert {"cmd": "moh_start", "leg": "c1-a", "file": "/m.wav"} in cmds(actions)
    assert {"cmd": "hangup", "leg": "c1-b", "code": 200} not in cmds(actions)
    actions = call.on_state("c1-t1", "confirmed", 200, None)
    assert {"cmd": "bridge", "a": "c1-b", "b": "c1-t1"} in cmds(actions)  # consulting
    actions = call.on_state("c1-b", "disconnected", 200, "remote")
    assert cmds(actions) == [
        {"cmd": "moh_stop", "leg": "c1-a"},
        {"cmd": "bridge", "a": "c1-a", "b": "c1-t1"},
    ]
    assert call.transfers == ["102 -> 103 (attended)"]
    call.on_state("c1-t1", "disconnected", 200, "remote")
    actions = call.on_state("c1-a", "disconnected", 200, "local")
    assert closed(actions) is not None


def test_attended_by_code_target_hangs_up_and_the_presser_gets_the_caller_back():
    call = talking()
    call.on_code_transfer("c1-b", "c1-t1", "103", "pbx", attended=True)
    call.on_state("c1-t1", "confirmed", 200, None)
    actions = call.on_state("c1-t1", "disconnected", 200, "remote")
    assert cmds(actions) == [
        {"cmd": "moh_stop", "leg": "c1-a"},
        {"cmd": "bridge", "a": "c1-b", "b": "c1-a"},
    ]
    assert call.transfer is None


def test_blind_transfer_by_code_lets_the_presser_go_at_once():
    call = talking()
    actions = call.on_code_transfer("c1-b", "c1-t1", "103", "pbx")
    orig = [c for c in cmds(actions) if c["cmd"] == "originate"]
    assert orig and orig[0]["uri"] == "sip:103@pbx" and orig[0]["leg"] == "c1-t1"
    assert {"cmd": "hangup", "leg": "c1-b", "code": 200} in cmds(actions)
