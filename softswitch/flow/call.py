"""The Python call API: what a flow (`async def flow(call)`) works with.

A `Call` is the caller's leg on a media worker. Each method becomes commands to that
worker and waits for the events that finish it, always racing the caller's hang-up:
when the caller hangs up, whatever is awaited raises `CallerHungUp` at once, and the
session cleans up (a dialled leg is cancelled, a player stopped) whatever the flow does.
This is the ARI model, but in-process and typed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class CallerHungUp(Exception):
    """The caller hung up: raised by any awaiting Call method."""


class DialStatus(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    UNAVAILABLE = "unavailable"  # not registered, unknown, or failed
    REJECTED = "rejected"


@dataclass(frozen=True)
class DialResult:
    status: DialStatus
    target: str
    ring_seconds: float  # from the INVITE to answer or failure
    talk_seconds: float = 0.0
    sip_code: int | None = None

    @property
    def answered(self) -> bool:
        return self.status is DialStatus.ANSWERED


@dataclass(frozen=True)
class QueueResult:
    """How a caller's stay in a queue ended.

    status: answered (talked to `agent`; returned when that conversation ended) /
    timeout (max_wait) / full / empty (nobody logged in) / key (exit key) / failed."""

    status: str
    queue: str
    agent: str | None
    target: str | None  # the block the queue sends the caller to (None: the flow's next)
    wait_seconds: float
    talk_seconds: float = 0.0
    attempts: tuple = ()  # softswitch.acd.Attempt: every operator rung, how long, result

    @property
    def answered(self) -> bool:
        return self.status == "answered"


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float
    reason: str  # max / silence / digit / stopped / hangup
    sound: bool = True  # False: the caller never made a sound (an empty message)


@dataclass
class LegWaiters:
    """Futures a leg's events resolve."""

    playback: asyncio.Future | None = None
    recording: asyncio.Future | None = None
    state: dict[str, asyncio.Future] = field(default_factory=dict)


class Call:
    """The caller's side of a call inside a flow. Created by the switch, not by users."""

    def __init__(
        self,
        *,
        call_id: str,
        caller: str,
        caller_name: str,
        dialed: str,
        headers: dict[str, str],
        leg: str,
        send: Callable[[dict], None],
        resolve_prompt: Callable[[str], Path],
        originate: Callable[[Call, list[str], float], Awaitable[DialResult]],
        recording_dir: Path,
        language: str = "en",
        enqueue: Callable[[Call, str, int | None], Awaitable[QueueResult]] | None = None,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.caller_name = caller_name
        self.dialed = dialed
        self.headers = headers
        self.vars: dict[str, Any] = {}
        self.language = language
        self.leg = leg
        self._send = send
        self._resolve_prompt = resolve_prompt
        self._originate = originate
        self._enqueue = enqueue
        self._recording_dir = recording_dir
        self._loop = asyncio.get_running_loop()
        self._hung_up = self._loop.create_future()
        self._digits: list[str] = []
        self._digit_event = asyncio.Event()
        self._waiters = LegWaiters()
        self._answered = self._loop.create_future()
        self._playing = False
        self._music: str | None = None
        self._inband = False
        self._signalled_dtmf = False  # the phone sends RFC 2833 / INFO: no in-band needed
        self.answered_at: float | None = None
        self.ended_by_switch = False
        self.outcome: str | None = None  # what the flow achieved, for the call record
        # why the call is ending when the switch hangs up after a connected party left
        # ("callee hung up", "operator hung up"), for the call record
        self.end_cause: str | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def hung_up(self) -> bool:
        return self._hung_up.done()

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    async def _wait(self, fut: Awaitable, timeout: float | None = None) -> Any:
        """Wait for `fut`, or raise CallerHungUp the moment the caller hangs up.
        Returns None on timeout."""
        if self._hung_up.done():
            if asyncio.iscoroutine(fut):
                fut.close()  # never started: do not leave it un-awaited
            raise CallerHungUp
        task = asyncio.ensure_future(fut)
        try:
            done, _ = await asyncio.wait(
                {task, self._hung_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        if self._hung_up in done:
            raise CallerHungUp
        return None

    async def wait(self, awaitable: Awaitable, timeout: float | None = None) -> Any:
        """Await something of your own (a CRM lookup, say) but stop the moment the
        caller hangs up: raises CallerHungUp then. Returns None on `timeout`."""
        return await self._wait(awaitable, timeout)

    # -- events from the session -------------------------------------------------------------
    def _on_hangup(self) -> None:
        """Whatever is awaited through `_wait` raises CallerHungUp now. The playback and
        recording futures stay open: the worker still reports a recording's end."""
        if not self._hung_up.done():
            self._hung_up.set_result(True)

    def _on_confirmed(self) -> None:
        if self.answered_at is None:
            self.answered_at = time.time()
        if not self._answered.done():
            self._answered.set_result(True)

    def _on_digit(self, digit: str, method: str = "rfc2833") -> None:
        if method == "inband":
            if self._signalled_dtmf:
                return  # the same press, heard in the audio too
        elif not self._signalled_dtmf:
            self._signalled_dtmf = True
            self._detect_inband(False)
        self._digits.append(digit)
        self._digit_event.set()

    def _detect_inband(self, on: bool) -> None:
        """In-band DTMF detection costs CPU in the worker: it runs only while the flow
        waits for digits, and never for a phone that has sent RFC 2833 or INFO digits."""
        if on and self._signalled_dtmf:
            return
        if on != self._inband and not self.hung_up:
            self._inband = on
            self._send({"cmd": "inband", "leg": self.leg, "on": on})

    def _on_playback_finished(self) -> None:
        fut = self._waiters.playback
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _on_recording_finished(self, msg: dict) -> None:
        fut = self._waiters.recording
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # -- the API ------------------------------------------------------------------------------
    async def answer(self) -> None:
        """Answer the call (200 OK); returns once the caller's ACK confirmed it."""
        if self.answered:
            return
        self._send({"cmd": "answer", "leg": self.leg, "code": 200})
        await self._wait(self._answered, timeout=10.0)
        if not self.answered:
            raise CallerHungUp  # no ACK: the caller is gone

    async def ring(self) -> None:
        """Send 180 Ringing without answering."""
        self._send({"cmd": "ring", "leg": self.leg, "code": 180})

    async def play(
        self, prompt: str | Path, *, loop: bool = False, interrupt: bool = False
    ) -> str | None:
        """Play a prompt (a media/ name or a file). With `interrupt`, a digit pressed
        during it stops it and is returned (and stays buffered for `gather`). With
        `loop`, playback starts in the background and this returns at once."""
        await self.answer()
        path = self._resolve_prompt(str(prompt))
        if interrupt and self._digits:
            return self._digits[0]
        self._waiters.playback = self._loop.create_future()
        self._send({"cmd": "play", "leg": self.leg, "file": str(path), "loop": loop})
        self._playing = True
        if loop:
            return None
        waits: set[asyncio.Future] = {self._waiters.playback}
        digit_task: asyncio.Future | None = None
        if interrupt:
            self._digit_event.clear()
            digit_task = asyncio.ensure_future(self._digit_event.wait())
            waits.add(digit_task)
        try:
            await self._wait(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED))
        finally:
            if digit_task is not None:
                digit_task.cancel()
        if interrupt and self._digits:
            self.stop()
            return self._digits[0]
        self._playing = False
        return None

    async def music(self, name: str = "default") -> None:
        """Hold music (a media/music name or a file) until `music_off`, `dial` or hang-up.
        Announcements (`play`) interrupt it and it resumes by itself after them."""
        await self.answer()
        path = self._resolve_prompt(f"music:{name}" if "/" not in name else name)
        self._music = str(path)
        self._send({"cmd": "moh_start", "leg": self.leg, "file": str(path)})

    def music_off(self) -> None:
        if self._music is not None and not self.hung_up:
            self._send({"cmd": "moh_stop", "leg": self.leg})
        self._music = None

    def stop(self) -> None:
        """Stop what is playing to the caller."""
        if self._playing and not self.hung_up:
            self._send({"cmd": "stop", "leg": self.leg})
        self._playing = False

    async def gather(
        self,
        prompt: str | Path | None = None,
        *,
        max_digits: int = 1,
        timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
        terminator: str = "#",
    ) -> str:
        """Play `prompt` (interruptible) and collect up to `max_digits` digits: the first
        within `timeout` after the prompt, the next ones within `inter_digit_timeout`
        each; `terminator` ends early (not included). Returns "" on timeout."""
        await self.answer()
        self._detect_inband(True)
        if prompt is not None:
            await self.play(prompt, interrupt=True)
        got = ""
        wait = timeout
        while len(got) < max_digits:
            if not self._digits:
                self._digit_event.clear()
                await self._wait(self._digit_event.wait(), timeout=wait)
                if not self._digits:
                    break  # timed out
            digit = self._digits.pop(0)
            if digit == terminator:
                break
            got += digit
            wait = inter_digit_timeout
        return got

    def take_digits(self) -> str:
        """Digits pressed and not yet gathered (clears them)."""
        got, self._digits = "".join(self._digits), []
        return got

    async def next_digit(self, timeout: float) -> str | None:
        """The next digit within `timeout` seconds, or None."""
        if not self._digits:
            self._digit_event.clear()
            await self._wait(self._digit_event.wait(), timeout=timeout)
        return self._digits.pop(0) if self._digits else None

    async def record(
        self,
        *,
        max_seconds: float = 120,
        beep: bool = True,
        silence_timeout: float | None = 5.0,
        terminator: str = "#",
        path: Path | None = None,
    ) -> Recording:
        """Record the caller. Ends on `max_seconds`, `silence_timeout` of silence, the
        `terminator` digit, or the caller hanging up: in that last case the recording is
        still returned (a voicemail is kept), and the next await raises CallerHungUp."""
        await self.answer()
        if beep:
            await self.play("beep")
        self._digits.clear()
        self._recording_dir.mkdir(parents=True, exist_ok=True)
        path = path or self._recording_dir / f"{self.call_id}-{int(time.time() * 1000)}.wav"
        self._waiters.recording = self._loop.create_future()
        cmd: dict[str, Any] = {
            "cmd": "record",
            "leg": self.leg,
            "file": str(path),
            "max_seconds": max_seconds,
        }
        if silence_timeout:
            cmd["silence_timeout"] = silence_timeout
        if terminator:
            cmd["stop_on_digit"] = terminator
        self._send(cmd)
        fut = self._waiters.recording
        try:
            msg = await self._wait(fut)
        except CallerHungUp:
            # the worker reports the recording before the hang-up; give it a moment
            try:
                msg = await asyncio.wait_for(asyncio.shield(fut), 5.0)
            except TimeoutError:
                msg = {"file": str(path), "seconds": 0.0, "reason": "hangup"}
        return Recording(
            Path(msg.get("file", path)),
            float(msg.get("seconds", 0.0)),
            str(msg.get("reason", "stopped")),
        )

    async def dial(self, target: str | list[str], timeout: float = 20) -> DialResult:
        """Ring extension(s) `target` (a list rings together) for `timeout` seconds; when
        one answers, connect the caller and return once that conversation ends."""
        targets = [target] if isinstance(target, str) else list(target)
        if self.hung_up:
            raise CallerHungUp
        self.stop()
        self.music_off()
        self._detect_inband(False)
        result = await self._originate(self, targets, float(timeout))
        if self.hung_up:
            raise CallerHungUp
        return result

    async def queue(self, name: str, *, priority: int | None = None) -> QueueResult:
        """Put the caller in call-centre queue `name` (a `[block.NAME] type = "queue"`):
        hold music, announcements, operators rung by the queue's strategy. Returns when
        the caller talked to an operator and that conversation ended (`answered`), or
        when the queue let them go (timeout, full, empty, exit key). Raises CallerHungUp
        if they hang up, waiting or talking."""
        if self._enqueue is None:
            raise RuntimeError("this switch has no call-centre queues")
        if self.hung_up:
            raise CallerHungUp
        self.stop()
        result = await self._enqueue(self, name, priority)
        if self.hung_up:
            raise CallerHungUp
        return result

    async def hangup(self, code: int | None = None) -> None:
        """End the call (BYE, or a final `code` such as 486 when not answered)."""
        if self.hung_up:
            return
        self.ended_by_switch = True
        cmd: dict[str, Any] = {"cmd": "hangup", "leg": self.leg}
        if code is not None:
            cmd["code"] = code
        elif not self.answered:
            cmd["code"] = 480
        self._send(cmd)
        await asyncio.wait({self._hung_up}, timeout=5.0)
