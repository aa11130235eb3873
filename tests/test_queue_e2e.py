"""The call-centre block through a real switch: callers (pjsua2 test phones) dial the
main number into a queue; operators are test phones registered as extensions. What a
caller heard is checked by frequency in its recording; what happened, in the queue_log
rows the switch wrote."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.support.audio import band_energy_ratio, dominant_frequency, make_tone
from tests.support.e2e import registered
from tests.support.phone import Phone, PhoneError, wait_until
from tests.switch import EXTENSIONS, RunningSwitch

MUSIC, CALLER_TONE, OPERATOR_TONE, AFTER = 500.0, 700.0, 1100.0, 1500.0


def queue_config(tmp: Path, members: list[str], **options: object) -> str:
    music = make_tone(str(tmp / "music.wav"), MUSIC, 2.0)
    after = make_tone(str(tmp / "after.wav"), AFTER, 2.0)
    lines = [
        "[block.line]",
        'type = "queue"',
        "members = [" + ", ".join(f'"{m}"' for m in members) + "]",
        f'music = "{music}"',
        'next = "after"',
    ]
    for key, value in options.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    lines += ["", "[block.after]", 'type = "play"', f'prompt = "{after}"']
    return "\n".join(lines) + "\n"


def start(tmp: Path, members: list[str], **options: object) -> RunningSwitch:
    return RunningSwitch(
        tmp,
        queue_config(tmp, members, **options),
        entry='"line"',
        entry_number='"100"',
    )


def queue_log(sw: RunningSwitch, kind: str | None = None) -> list[dict]:
    with sw.db() as conn:
        sql = "SELECT * FROM queue_log"
        args: tuple = ()
        if kind:
            sql += " WHERE kind = ?"
            args = (kind,)
        return [dict(r) for r in conn.execute(sql + " ORDER BY id", args)]


def wait_rows(sw: RunningSwitch, kind: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
    wait_until(lambda: len(queue_log(sw, kind)) >= count, timeout)
    return queue_log(sw, kind)


def logged_in(sw: RunningSwitch, agent: str) -> bool:
    state: dict[str, str] = {}
    for row in queue_log(sw):
        if row["agent"] == agent and row["kind"] in ("login", "logout"):
            state[agent] = row["kind"]
    return state.get(agent) == "login"


def record(phone: Phone, call: str, path: Path, seconds: float) -> str:
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return str(path)


def test_ring_all_rings_every_operator_losers_stop_and_audio_flows(tmp_path, made):
    sw = start(tmp_path, ["101", "102"], strategy="ring-all")
    try:
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        in1, in2 = op1.wait_incoming(), op2.wait_incoming()
        # While both ring, the caller hears the hold music.
        heard = record(caller, call, tmp_path / "hold.wav", 2.0)
        assert abs(dominant_frequency(heard) - MUSIC) < 20
        op2.answer(in2)
        op2.wait_state(in2, "confirmed")
        op1.wait_state(in1, "disconnected")  # the loser stops ringing
        assert op1.last_code(in1) == 487
        caller.play_tone(call, CALLER_TONE)
        op2.play_tone(in2, OPERATOR_TONE)
        got_op = record(op2, in2, tmp_path / "op.wav", 2.0)
        got_caller = record(caller, call, tmp_path / "caller.wav", 2.0)
        assert abs(dominant_frequency(got_op) - CALLER_TONE) < 20
        assert abs(dominant_frequency(got_caller) - OPERATOR_TONE) < 20
        assert band_energy_ratio(got_caller, MUSIC) < 0.05  # the music stopped
        caller.hangup(call)
        op2.wait_state(in2, "disconnected")
        done = wait_rows(sw, "completed")
        assert done[0]["agent"] == "102" and done[0]["result"] == "caller"
        rings = {r["agent"]: r for r in queue_log(sw, "ring")}
        assert rings["102"]["result"] == "answered"
        assert rings["101"]["result"] == "cancelled"
        assert rings["101"]["reason"] == "answered-elsewhere"
        connected = queue_log(sw, "connected")[0]
        assert connected["agent"] == "102" and connected["number"] == "103"
        assert connected["wait"] >= 2.0  # it waited through the 2 s recording at least
    finally:
        sw.stop()


def test_round_robin_moves_on_after_the_answer_timeout_and_records_the_miss(tmp_path, made):
    sw = start(tmp_path, ["101", "102"], strategy="round-robin", answer_timeout=2, retry=30)
    try:
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        first = op1.wait_incoming()  # round robin starts at the first member
        assert not op2.incoming
        op1.wait_state(first, "disconnected", timeout=10)  # cancelled at the timeout
        second = op2.wait_incoming(timeout=10)
        op2.answer(second)
        op2.wait_state(second, "confirmed")
        rings = wait_rows(sw, "ring", 2)
        assert [(r["agent"], r["result"]) for r in rings] == [
            ("101", "missed"),
            ("102", "answered"),
        ]
        assert rings[0]["reason"] == "timeout"
        assert 1.5 < rings[0]["ring_time"] < 5.0  # the 2 s answer timeout, not longer
        op2.hangup(second)
        caller.wait_state(call, "disconnected")
        done = wait_rows(sw, "completed")
        assert done[0]["result"] == "agent"
        (record,) = sw.wait_for_call_closed(1)
        assert (record["result"], record["cause"]) == ("answered", "operator hung up")
        # The next caller goes to the next operator in turn (101 again after 102).
        call2 = caller.call("100")
        caller.wait_state(call2, "confirmed")
        again = op1.wait_incoming()
        op1.answer(again)
        op1.wait_state(again, "confirmed")
        caller.hangup(call2)
        op1.wait_state(again, "disconnected")
    finally:
        sw.stop()


def test_a_waiting_caller_rings_the_operator_when_wrap_up_ends(tmp_path, made):
    sw = start(tmp_path, ["101"], wrap_up=3)
    try:
        op = registered(sw, "101", made)
        assert wait_until(lambda: logged_in(sw, "101"))
        c1, c2 = registered(sw, "103", made), registered(sw, "104", made)
        a = c1.call("100")
        c1.wait_state(a, "confirmed")
        first = op.wait_incoming()
        op.answer(first)
        op.wait_state(first, "confirmed")
        b = c2.call("100")  # waits: the only operator is talking
        c2.wait_state(b, "confirmed")
        heard = record(c2, b, tmp_path / "wait.wav", 1.5)
        assert abs(dominant_frequency(heard) - MUSIC) < 20
        op.hangup(first)
        c1.wait_state(a, "disconnected")
        wait_rows(sw, "wrap_up_start")
        assert not op.incoming  # resting: not rung yet
        second = op.wait_incoming(timeout=10)
        ends = wait_rows(sw, "wrap_up_end")
        assert ends[0]["reason"] == "done"  # it ran its full length
        op.answer(second)
        op.wait_state(second, "confirmed")
        c2.wait_state(b, "confirmed")
        c2.hangup(b)
        op.wait_state(second, "disconnected")
        ring_rows = queue_log(sw, "ring")
        start_of_second_ring = ring_rows[-1]["ring_start"]
        assert start_of_second_ring >= ends[0]["time"]  # rung only after the rest
    finally:
        sw.stop()


def test_closing_the_softphone_logs_the_operator_out(tmp_path, made):
    sw = start(tmp_path, ["101", "102"])
    try:
        op1 = registered(sw, "101", made)
        op2 = Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server, transport="tcp")
        made.append(op2)
        assert op2.register() == 200
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        op1.close()  # quitting the softphone unregisters it
        assert wait_until(lambda: not logged_in(sw, "101"))
        op2.proc.kill()  # a crash: no unregister, but its TCP connection drops
        assert wait_until(lambda: not logged_in(sw, "102"))
        outs = {r["agent"]: r["reason"] for r in queue_log(sw, "logout")}
        assert outs == {"101": "unregistered", "102": "connection-lost"}
        # Nobody is logged in: a caller waits with music, nobody rings.
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        heard = record(caller, call, tmp_path / "wait.wav", 1.5)
        assert abs(dominant_frequency(heard) - MUSIC) < 20
        # The operator comes back: the waiting caller rings them.
        op1 = registered(sw, "101", made)
        incoming = op1.wait_incoming(timeout=10)
        op1.answer(incoming)
        op1.wait_state(incoming, "confirmed")
        caller.hangup(call)
        op1.wait_state(incoming, "disconnected")
    finally:
        sw.stop()


def test_an_operator_on_a_direct_call_is_never_rung(tmp_path, made):
    sw = start(tmp_path, ["101", "102"])
    try:
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        other = registered(sw, "105", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        direct = op1.call("105")  # 101 talks to 105, not through the queue
        inc = other.wait_incoming()
        other.answer(inc)
        op1.wait_state(direct, "confirmed")
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        ringing = op2.wait_incoming()
        op2.hangup(ringing, 486)  # 102 declines: 101 is still busy, so nobody rings
        rows = wait_rows(sw, "ring")
        assert [(r["agent"], r["result"]) for r in rows] == [("102", "rejected")]
        # 101 hangs up the direct call: now the waiting caller rings 101.
        op1.hangup(direct)
        other.wait_state(inc, "disconnected")
        queued = op1.wait_incoming(timeout=10)
        op1.answer(queued)
        op1.wait_state(queued, "confirmed")
        caller.hangup(call)
        op1.wait_state(queued, "disconnected")
        agents = [r["agent"] for r in queue_log(sw, "ring")]
        assert agents[0] == "102" and agents[-1] == "101"
    finally:
        sw.stop()


def closed_records(sw: RunningSwitch) -> None:
    """Every call and leg the switch opened is closed (nothing left dangling)."""
    with sw.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls WHERE ended IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM legs WHERE ended IS NULL").fetchone()[0] == 0


def test_a_caller_hanging_up_at_every_stage_leaves_consistent_records(tmp_path, made):
    sw = start(tmp_path, ["101", "102"])
    try:
        caller = registered(sw, "103", made)
        # 1. Waiting with nobody logged in.
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        wait_rows(sw, "joined")
        caller.hangup(call)
        gone = wait_rows(sw, "abandoned")
        assert gone[0]["attempts"] is None and gone[0]["number"] == "103"
        # 2. While both operators' phones ring.
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        in1, in2 = op1.wait_incoming(), op2.wait_incoming()
        caller.hangup(call)
        op1.wait_state(in1, "disconnected")
        op2.wait_state(in2, "disconnected")
        gone = wait_rows(sw, "abandoned", 2)
        assert '"result": "cancelled"' in gone[1]["attempts"]
        # 3. Talking to an operator.
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        in1, in2 = op1.wait_incoming(), op2.wait_incoming()
        op1.answer(in1)
        op1.wait_state(in1, "confirmed")
        op2.wait_state(in2, "disconnected")
        caller.hangup(call)
        op1.wait_state(in1, "disconnected")
        done = wait_rows(sw, "completed")
        assert done[0]["result"] == "caller" and done[0]["agent"] == "101"
        calls = sw.wait_for_call_closed(3)
        assert [c["result"] for c in calls] == ["abandoned", "abandoned", "answered"]
        assert wait_until(
            lambda: (
                sw.db().execute("SELECT COUNT(*) FROM legs WHERE ended IS NULL").fetchone()[0] == 0
            )
        )
        closed_records(sw)
        joined = queue_log(sw, "joined")
        assert len(joined) == 3
        ends = [r for r in queue_log(sw) if r["kind"] in ("abandoned", "completed", "left")]
        assert sorted(r["caller"] for r in ends) == sorted(r["caller"] for r in joined)
    finally:
        sw.stop()


def test_two_operators_answering_at_once_get_one_caller(tmp_path, made):
    sw = start(tmp_path, ["101", "102"])
    try:
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        in1, in2 = op1.wait_incoming(), op2.wait_incoming()
        op1.wait_state(in1, "early")
        op2.wait_state(in2, "early")
        op1.answer(in1)
        with contextlib.suppress(PhoneError):  # the CANCEL may have beaten this answer
            op2.answer(in2)
        # Exactly one of them keeps the caller; the other's call ends.
        assert wait_until(
            lambda: {op1.state(in1), op2.state(in2)} == {"confirmed", "disconnected"}, 10
        )
        winner, wcall = (op1, in1) if op1.state(in1) == "confirmed" else (op2, in2)
        caller.play_tone(call, CALLER_TONE)
        got = record(winner, wcall, tmp_path / "w.wav", 1.5)
        assert abs(dominant_frequency(got) - CALLER_TONE) < 20
        caller.hangup(call)
        winner.wait_state(wcall, "disconnected")
        assert len(wait_rows(sw, "connected")) == 1
        assert len(wait_rows(sw, "completed")) == 1
    finally:
        sw.stop()


def dial_code(phone: Phone, code: str) -> None:
    """Dial a feature code: the switch answers, says what it did, and hangs up."""
    call = phone.call(code)
    phone.wait_state(call, "confirmed")
    phone.wait_state(call, "disconnected")


def test_feature_codes_log_in_out_and_pause_and_survive_a_restart(tmp_path, made):
    sw = start(tmp_path, ["101"])
    try:
        op = registered(sw, "101", made)
        assert wait_until(lambda: logged_in(sw, "101"))
        dial_code(op, "*45")  # log out
        assert not logged_in(sw, "101")
        assert queue_log(sw, "logout")[-1]["reason"] == "feature-code"
        # A restart keeps the choice although the phone is still registered.
        sw.restart()
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        wait_rows(sw, "joined")
        assert not logged_in(sw, "101")
        dial_code(op, "*45")  # log back in: the waiting caller rings at once
        assert queue_log(sw, "login")[-1]["reason"] == "feature-code"
        first = op.wait_incoming(timeout=10)
        op.hangup(first, 486)  # declined: rung again only after `retry`
        dial_code(op, "*46")  # pause
        pause = wait_rows(sw, "pause")[-1]
        assert pause["agent"] == "101" and pause["reason"] == "feature-code"
        sw.restart()  # the pause survives a restart too
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        wait_rows(sw, "joined", 2)
        time.sleep(1.0)  # paused: nothing may ring in this second
        assert not op.incoming
        dial_code(op, "*46")  # unpause
        again = op.wait_incoming(timeout=10)
        op.answer(again)
        op.wait_state(again, "confirmed")
        caller.hangup(call)
        op.wait_state(again, "disconnected")
    finally:
        sw.stop()


def test_feature_code_from_a_non_operator_is_refused(tmp_path, made):
    sw = start(tmp_path, ["101"])
    try:
        other = registered(sw, "105", made)
        call = other.call("*45")
        other.wait_state(call, "disconnected")
        assert other.last_code(call) == 403
    finally:
        sw.stop()


def test_leaving_by_exit_key_by_max_wait_and_when_nobody_is_logged_in(tmp_path, made):
    sw = start(tmp_path, ["101"], exit_key="0", max_wait=3, on_timeout="after")
    try:
        caller = registered(sw, "103", made)
        # The exit key: straight to `next` (the AFTER tone), no operator rung.
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        wait_rows(sw, "joined")
        heard = record(caller, call, tmp_path / "heard-music.wav", 1.0)  # waiting on music
        assert abs(dominant_frequency(heard, 0.2) - MUSIC) < 20
        caller.send_dtmf(call, "0")
        left = wait_rows(sw, "left")
        assert left[0]["result"] == "key"
        heard = record(caller, call, tmp_path / "heard-after.wav", 1.0)
        assert abs(dominant_frequency(heard, 0.2) - AFTER) < 20
        caller.wait_state(call, "disconnected")
        # max_wait: after 3 s of waiting the caller goes to on_timeout.
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        left = wait_rows(sw, "left", 2)
        assert left[1]["result"] == "timeout" and left[1]["target"] == "after"
        assert left[1]["wait"] >= 3.0
        caller.wait_state(call, "disconnected")
    finally:
        sw.stop()


def test_on_empty_sends_callers_on_when_nobody_is_logged_in(tmp_path, made):
    sw = start(tmp_path, ["101"], on_empty="after")
    try:
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        left = wait_rows(sw, "left")
        assert left[0]["result"] == "empty" and left[0]["target"] == "after"
        heard = record(caller, call, tmp_path / "heard-after.wav", 1.0)
        assert abs(dominant_frequency(heard, 0.2) - AFTER) < 20
        # after the prompt the queue's music must not come back under the next step
        caller.wait_state(call, "disconnected", timeout=15)
    finally:
        sw.stop()


def test_an_operator_who_missed_is_rung_again_on_a_fresh_leg(tmp_path, made):
    """One operator, round robin: a miss, then the same operator again after `retry`.
    The second INVITE must be a new dialog (a phone may take a repeat of the first
    Call-ID/From tag/CSeq for a merged request and answer 482)."""
    sw = start(tmp_path, ["101"], strategy="round-robin", answer_timeout=2, retry=1)
    try:
        op = registered(sw, "101", made)
        assert wait_until(lambda: logged_in(sw, "101"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        first = op.wait_incoming()
        op.wait_state(first, "disconnected", timeout=10)
        second = op.wait_incoming(timeout=10)
        assert op.info(first)["call_id"] != op.info(second)["call_id"]
        op.answer(second)
        op.wait_state(second, "confirmed")
        caller.play_tone(call, CALLER_TONE)
        got = record(op, second, tmp_path / "op.wav", 1.5)
        assert abs(dominant_frequency(got) - CALLER_TONE) < 20
        caller.hangup(call)
        op.wait_state(second, "disconnected")
        rings = queue_log(sw, "ring")
        assert [r["result"] for r in rings] == ["missed", "answered"]
    finally:
        sw.stop()


def waiting_while_101_rings(sw: RunningSwitch, made: list[Phone]):
    """Operator 101 (whose phone rings and never answers) and caller 103 waiting in the
    queue while 101 rings: (operator, caller, caller's call, operator's ringing call)."""
    op = registered(sw, "101", made)
    op.auto_answer(None)
    assert wait_until(lambda: logged_in(sw, "101"))
    caller = registered(sw, "103", made)
    call = caller.call("100")
    caller.wait_state(call, "confirmed")
    return op, caller, call, op.wait_incoming()


def test_a_crash_closes_waiting_callers_and_login_sessions_on_restart(tmp_path, made):
    import signal

    sw = start(tmp_path, ["101"])
    try:
        op, caller, call, ringing = waiting_while_101_rings(sw, made)
        before = queue_log(sw)
        sw.stop(signal.SIGKILL)
        sw.start()
        rows = queue_log(sw)
        assert rows[: len(before)] == before  # nothing recorded was lost
        closing = rows[len(before) :]
        kinds = {(r["kind"], r["result"] or r["reason"]) for r in closing}
        assert ("left", "failed") in kinds
        assert ("logout", "switch restarted") in kinds
        assert logged_in(sw, "101")  # still registered: logged in again
        with sw.db() as conn:
            assert conn.execute("SELECT COUNT(*) FROM calls WHERE ended IS NULL").fetchone()[0] == 0
    finally:
        sw.stop()


def test_an_operator_freed_while_others_ring_is_added_to_the_ringing(tmp_path, made):
    sw = start(tmp_path, ["101", "102"], ring_new_free=True, answer_timeout=30)
    try:
        op1, op2 = registered(sw, "101", made), registered(sw, "102", made)
        other = registered(sw, "105", made)
        assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
        direct = op2.call("105")
        inc = other.wait_incoming()
        other.answer(inc)
        op2.wait_state(direct, "confirmed")
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        ringing = op1.wait_incoming()
        op1.wait_state(ringing, "early")
        op2.hangup(direct)  # 102 becomes free while 101 still rings
        added = op2.wait_incoming(timeout=10)
        assert op1.state(ringing) == "early"  # 101 was not interrupted
        op2.answer(added)
        op2.wait_state(added, "confirmed")
        op1.wait_state(ringing, "disconnected")
        caller.hangup(call)
        op2.wait_state(added, "disconnected")
        rings = {r["agent"]: r["result"] for r in wait_rows(sw, "ring", 2)}
        assert rings == {"101": "cancelled", "102": "answered"}
    finally:
        sw.stop()


def test_auto_pause_after_misses_until_the_operator_unpauses(tmp_path, made):
    sw = start(tmp_path, ["101"], auto_pause_after=1, retry=1)
    try:
        op = registered(sw, "101", made)
        assert wait_until(lambda: logged_in(sw, "101"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        first = op.wait_incoming()
        op.hangup(first, 603)  # declined: one miss is enough here
        pause = wait_rows(sw, "pause")[0]
        assert pause["reason"] == "auto-pause" and pause["agent"] == "101"
        time.sleep(2.0)  # longer than `retry`: still not rung, being paused
        assert not op.incoming
        dial_code(op, "*46")  # unpause
        again = op.wait_incoming(timeout=10)
        op.answer(again)
        op.wait_state(again, "confirmed")
        caller.hangup(call)
        op.wait_state(again, "disconnected")
    finally:
        sw.stop()


def test_announcements_interrupt_the_music_and_it_resumes(tmp_path, made):
    import numpy as np

    from tests.support.audio import read_mono

    sw = start(tmp_path, ["101"], announce_every=10)
    try:
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        heard = record(caller, call, tmp_path / "wait.wav", 16.0)
        x, rate = read_mono(heard)

        def music_share(start_s: float, end_s: float) -> float:
            seg = x[int(start_s * rate) : int(end_s * rate)]
            seg = seg - seg.mean()
            power = np.abs(np.fft.rfft(seg)) ** 2
            freqs = np.fft.rfftfreq(len(seg), 1.0 / rate)
            return float(power[(freqs > MUSIC - 30) & (freqs < MUSIC + 30)].sum() / power.sum())

        assert music_share(1, 8) > 0.9  # music only
        # About 10 s after joining, "you are number one" replaces it for a moment ...
        windows = [music_share(t / 4, t / 4 + 0.5) for t in range(36, 54)]
        assert min(windows) < 0.3
        assert music_share(14.5, 15.5) > 0.9  # ... and then it is back
    finally:
        sw.stop()


def test_a_media_worker_dying_under_a_waiting_caller(tmp_path, made):
    import os
    import signal

    sw = start(tmp_path, ["101"])
    try:
        op, caller, call, ringing = waiting_while_101_rings(sw, made)
        for pid in sw.worker_pids():
            os.kill(pid, signal.SIGKILL)
        caller.wait_state(call, "disconnected", timeout=15)  # the edge's BYE
        op.wait_state(ringing, "disconnected", timeout=15)  # its branch is cancelled
        left = wait_rows(sw, "left")
        assert left[0]["result"] == "removed"
        sw.wait_for_call_closed(1)
        # The queue is not haunted: the next caller is served normally.
        op.auto_answer(200)
        call = caller.call("100")
        caller.wait_state(call, "confirmed", timeout=20)
        answered = op.wait_incoming(timeout=15)
        op.wait_state(answered, "confirmed")
        caller.hangup(call)
        op.wait_state(answered, "disconnected")
        assert len(wait_rows(sw, "completed")) == 1
    finally:
        sw.stop()


def test_a_baresip_operator_answers_a_queue_caller_and_they_hear_each_other(tmp_path, made):
    import pytest

    from tests.support.baresip import BARESIP, Baresip

    if BARESIP is None:
        pytest.fail("baresip is not installed (.ci/run installs it)")
    sw = start(tmp_path, ["101"])
    source = make_tone(str(tmp_path / "op.wav"), OPERATOR_TONE, 30.0)
    operator = Baresip("101", EXTENSIONS["101"][1], sw.server, source_wav=source)
    try:
        assert operator.wait_registered(), operator.log()
        assert wait_until(lambda: logged_in(sw, "101"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        operator.wait_event("CALL_ESTABLISHED")  # auto-answer
        operator.wait_event("CALL_RTPESTAB")
        caller.play_tone(call, CALLER_TONE)
        heard = record(caller, call, tmp_path / "caller.wav", 2.0)
        assert abs(dominant_frequency(heard) - OPERATOR_TONE) < 20
        caller.hangup(call)
        operator.wait_event("CALL_CLOSED")
        done = wait_rows(sw, "completed")
        assert (done[0]["agent"], done[0]["result"]) == ("101", "caller")
        path = operator.recordings().get("dec")
        assert path is not None
        assert wait_until(lambda: dominant_frequency(path) > 0, 5)
        assert abs(dominant_frequency(path) - CALLER_TONE) < 20
    finally:
        operator.close()
        sw.stop()
