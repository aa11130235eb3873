"""The Python call API inside a flow session, against a scripted worker (the
coordinator's side of the protocol only): the caller hangs up at each await point, and
every time the awaiting call raises CallerHungUp promptly, a dialled leg is hung up,
no task is left behind and the call record is closed. Real workers and phones are used
in tests/test_flows_e2e.py; this one goes through every await point, fast."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from softswitch.flow.call import Call, CallerHungUp, DialStatus
from softswitch.flow.session import FlowSession, SessionDeps
from softswitch.store import Store


class ScriptedWorker:
    """Answers commands the way a media worker does, with events; `hold` names the
    command that never completes, so the flow is parked there when the caller leaves."""

    def __init__(self, hold: str | None = None, callee: str = "answer") -> None:
        self.hold = hold
        self.callee = callee  # answer / busy / ring
        self.sent: list[dict] = []
        self.session: FlowSession | None = None

    def emit(self, **event) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self.session.on_event, event)

    def send(self, cmd: dict) -> None:
        self.sent.append(cmd)
        name, leg = cmd["cmd"], cmd.get("leg")
        if name == self.hold:
            return
        if name == "answer":
            self.emit(event="state", leg=leg, state="confirmed", code=200)
        elif name == "play" and not cmd.get("loop"):
            self.emit(event="playback_finished", leg=leg, file=cmd["file"])
        elif name == "record":
            Path(cmd["file"]).write_bytes(b"RIFF")
            self.emit(
                event="recording_finished", leg=leg, file=cmd["file"], seconds=3.0, reason="max"
            )
        elif name == "originate":
            if self.callee == "busy":
                self.session.on_fork_result("busy")
                self.emit(event="state", leg=leg, state="disconnected", code=486, cause="remote")
            else:
                self.emit(event="state", leg=leg, state="early", code=180)
                if self.callee == "answer":
                    self.emit(event="state", leg=leg, state="confirmed", code=200)
        elif name == "hangup":
            self.emit(
                event="state", leg=leg, state="disconnected", code=cmd.get("code"), cause="local"
            )

    def caller_hangs_up(self, leg: str) -> None:
        """As the real worker does: a recording in progress is reported finished
        (reason "hangup") before the leg's disconnected event."""
        if self.hold == "record" and self.commands("record"):
            rec = self.commands("record")[0]
            Path(rec["file"]).write_bytes(b"RIFF")
            self.emit(
                event="recording_finished", leg=leg, file=rec["file"], seconds=4.0, reason="hangup"
            )
        self.emit(event="state", leg=leg, state="disconnected", code=200, cause="remote")

    def commands(self, name: str) -> list[dict]:
        return [c for c in self.sent if c["cmd"] == name]


async def run_session(tmp_path: Path, flow, worker: ScriptedWorker, hang_up_after: float):
    store = Store(tmp_path / "db.sqlite")
    store.open_call("c1", started=0.0, caller="103", callee="100", kind="flow")
    deps = SessionDeps(
        send=worker.send,
        store=store,
        domain="pbx",
        resolve_prompt=lambda name: tmp_path / f"{name}.wav",
        recording_dir=tmp_path / "rec",
        language="en",
        worker_slot=0,
    )
    outcome: dict = {}

    async def runner(call: Call) -> None:
        try:
            await flow(call)
            outcome["returned"] = True
        except CallerHungUp:
            outcome["hung_up"] = True
            raise

    session = FlowSession("c1", "103", "Carol", "100", deps, runner)
    worker.session = session
    closed = asyncio.Event()
    session.on_closed = lambda s: closed.set()
    before = asyncio.all_tasks()
    session.on_event({"event": "incoming", "leg": "c1-a", "headers": {}})
    await asyncio.sleep(hang_up_after)
    worker.caller_hangs_up("c1-a")
    await asyncio.wait_for(closed.wait(), 5)
    await asyncio.sleep(0.05)
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    call = store.call("c1")
    legs = {row["id"]: dict(row) for row in store.legs("c1")}
    store.close()
    return outcome, leftover, call, legs


async def gather_flow(call: Call) -> None:
    await call.gather("menu", max_digits=3, timeout=30)


async def play_flow(call: Call) -> None:
    await call.play("greeting")


async def record_flow(call: Call) -> None:
    await call.record(max_seconds=60, beep=False)
    await call.play("goodbye")


async def dial_flow(call: Call) -> None:
    await call.dial(["102", "104"], timeout=20)


async def wait_flow(call: Call) -> None:
    await call.wait(asyncio.sleep(60))


@pytest.mark.parametrize(
    ("name", "flow", "hold", "callee"),
    [
        ("answer", play_flow, "answer", "answer"),
        ("play", play_flow, "play", "answer"),
        ("gather", gather_flow, None, "answer"),
        ("record", record_flow, "record", "answer"),
        ("dial-ringing", dial_flow, None, "ring"),
        ("dial-talking", dial_flow, None, "answer"),
        ("own-await", wait_flow, None, "answer"),
    ],
)
async def test_caller_hangs_up_at_each_await_point(tmp_path, name, flow, hold, callee):
    worker = ScriptedWorker(hold=hold, callee=callee)
    outcome, leftover, call, legs = await run_session(tmp_path, flow, worker, 0.1)
    assert outcome == {"hung_up": True}
    assert not leftover, leftover
    assert call["ended"] is not None
    assert legs["c1-a"]["ended"] is not None
    if name.startswith("dial"):
        (hangup,) = worker.commands("hangup")
        assert hangup["leg"] == "c1-b1"
        assert hangup["code"] == (487 if name == "dial-ringing" else 200)
        assert legs["c1-b1"]["ended"] is not None
        assert legs["c1-b1"]["result"] == ("answered" if callee == "answer" else "caller hung up")
        assert call["result"] == ("answered" if callee == "answer" else "abandoned")
    else:
        assert call["result"] == "abandoned"
        assert worker.commands("hangup") == []  # the caller is gone: nothing to hang up


async def test_a_recording_is_kept_when_the_caller_hangs_up_during_it(tmp_path):
    kept = {}

    async def flow(call: Call) -> None:
        rec = await call.record(max_seconds=60, beep=False)
        kept["rec"] = rec
        await call.play("goodbye")

    worker = ScriptedWorker(hold="record")
    outcome, leftover, call, _ = await run_session(tmp_path, flow, worker, 0.1)
    assert kept["rec"].reason == "hangup" and kept["rec"].seconds == 4.0
    assert outcome == {"hung_up": True}  # the next await (goodbye) raised
    assert not leftover


async def test_busy_dial_result_and_menu_digits(tmp_path):
    results = {}

    async def flow(call: Call) -> None:
        call._on_digit("4")
        call._on_digit("2")
        call._on_digit("#")
        results["digits"] = await call.gather("menu", max_digits=5, timeout=1)
        results["dial"] = await call.dial("102", timeout=5)
        await call.wait(asyncio.sleep(60))

    worker = ScriptedWorker(callee="busy")
    outcome, leftover, call, legs = await run_session(tmp_path, flow, worker, 0.2)
    assert results["digits"] == "42"
    assert results["dial"].status is DialStatus.BUSY and not results["dial"].answered
    assert legs["c1-b1"]["result"] == "busy"
    assert not leftover


async def test_inband_detection_runs_only_while_needed(tmp_path):
    got = {}

    async def flow(call: Call) -> None:
        # a trunk that sends tones in the audio only: detection is turned on to gather
        call._on_digit("7", "inband")
        got["inband"] = await call.gather(max_digits=1, timeout=1)
        # the phone turns out to send RFC 2833: its tones in the audio are ignored
        call._on_digit("1", "rfc2833")
        call._on_digit("1", "inband")
        got["2833"] = await call.gather(max_digits=2, timeout=0.3, inter_digit_timeout=0.3)
        await call.wait(asyncio.sleep(60))

    worker = ScriptedWorker()
    await run_session(tmp_path, flow, worker, 1.0)
    assert got == {"inband": "7", "2833": "1"}
    assert [c["on"] for c in worker.commands("inband")] == [True, False]
