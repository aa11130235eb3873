"""What happens during a bridged call: feature codes pressed while talking, and hold.

`FeatureMatcher` (sans-I/O) turns the DTMF digits of one leg into feature codes: a
registry of codes ("*1" -> "record_toggle"; transfers add "##", "*2", ...) and one
buffer per leg with an inter-digit timeout. Digits that cannot start or continue a code
are dropped, so "5*1" still finds "*1"; a code that is also the start of a longer one
("*1" and "*12") fires when the next digit does not continue the longer one, or when
the inter-digit timeout passes (`expire`).

`InCall` is the coordinator's glue, kept here so the coordinator only forwards to it:
- it learns which legs are bridged from the `bridge` / `unbridge` commands the
  coordinator sends (`on_command`, whatever sent them: an `ExtensionCall`, a flow's
  `dial`, a queue) and tells `bridge_listeners` (the call recorder);
- the digits of a bridged leg go to the matcher instead of the call's flow or call
  logic, and a matched code runs the action registered for it (`actions`) with a
  `FeatureContext` (which leg pressed it, its peer, the worker);
- `hold` / `resume` events of legs are written to the leg's row (`legs.held` seconds,
  `legs.holds` times; the worker plays the hold music by itself);
- other worker events are passed to `event_listeners` (the call recorder wants
  `bridge_recording_finished` and `playback_finished`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DTMF_KEYS = frozenset("0123456789*#ABCD")

INTER_DIGIT_TIMEOUT = 3.0
"""Seconds between two keys of one in-call code."""


@dataclass(frozen=True)
class FeatureMatch:
    leg: str
    code: str
    action: str


class FeatureMatcher:
    """Per-leg DTMF buffers matched against a registry of in-call codes (sans-I/O)."""

    def __init__(
        self,
        codes: Mapping[str, str] | None = None,
        inter_digit_timeout: float = INTER_DIGIT_TIMEOUT,
    ) -> None:
        self.codes: dict[str, str] = {}  # code -> action
        self.timeout = inter_digit_timeout
        self.buffers: dict[str, tuple[str, float]] = {}  # leg -> (digits, last key time)
        for code, action in (codes or {}).items():
            self.register(code, action)

    def register(self, code: str, action: str) -> None:
        """Add (or re-point) a code; an action name may have several codes."""
        if not code or not set(code) <= DTMF_KEYS:
            raise ValueError(f"in-call code {code!r}: expected DTMF keys (0-9 * # A-D)")
        self.codes[code] = action

    def unregister(self, code: str) -> None:
        self.codes.pop(code, None)

    def _starts(self, digits: str) -> bool:
        """`digits` are a code or the start of one."""
        return any(c.startswith(digits) for c in self.codes)

    def _longer(self, digits: str) -> bool:
        return any(len(c) > len(digits) and c.startswith(digits) for c in self.codes)

    def feed(self, leg: str, digit: str, now: float) -> list[FeatureMatch]:
        """One key of `leg`; returns the codes it completed (usually none or one)."""
        found: list[FeatureMatch] = []
        buf, last = self.buffers.pop(leg, ("", now))
        if buf and now - last > self.timeout:
            found += self._timed_out(leg, buf)
            buf = ""
        if buf in self.codes and not self._starts(buf + digit):
            found.append(FeatureMatch(leg, buf, self.codes[buf]))  # "*1" then not "2"
            buf = ""
        buf += digit
        while buf:
            if buf in self.codes and not self._longer(buf):
                found.append(FeatureMatch(leg, buf, self.codes[buf]))
                return found
            if self._longer(buf) or buf in self.codes:
                self.buffers[leg] = (buf, now)
                return found
            buf = buf[1:]  # cannot be the start of a code: try without the oldest key
        return found

    def _timed_out(self, leg: str, buf: str) -> list[FeatureMatch]:
        return [FeatureMatch(leg, buf, self.codes[buf])] if buf in self.codes else []

    def expire(self, now: float) -> list[FeatureMatch]:
        """Buffers idle for the inter-digit timeout are dropped; one that is a whole code
        (waiting in case a longer code followed) fires."""
        found: list[FeatureMatch] = []
        for leg, (buf, last) in list(self.buffers.items()):
            if now - last >= self.timeout:
                del self.buffers[leg]
                found += self._timed_out(leg, buf)
        return found

    def next_deadline(self) -> float | None:
        """When `expire` has something to do, or None."""
        if not self.buffers:
            return None
        return min(last for _, last in self.buffers.values()) + self.timeout

    def forget(self, leg: str) -> None:
        self.buffers.pop(leg, None)


@dataclass(frozen=True)
class FeatureContext:
    """What an in-call action gets: who pressed which code, and to whom they talk."""

    worker: Any  # softswitch.media.pool.Worker holding both legs
    leg: str  # the leg whose phone pressed the code
    peer: str  # the leg bridged to it
    call_id: str  # the call of `leg` (the part of the leg name before the last "-")
    code: str
    action: str


FeatureAction = Callable[[FeatureContext], None]
BridgeListener = Callable[[str, Any, str, str], None]  # ("bridged"|"unbridged", worker, a, b)
EventListener = Callable[[Any, dict], None]


def call_of(leg: str) -> str:
    """The call id a leg belongs to: legs are named <call id>-a, -b, -b1, -q1, ..."""
    return leg.rsplit("-", 1)[0]


class InCall:
    """The coordinator's view of bridged legs (see the module docstring)."""

    def __init__(
        self,
        store: Any,
        clock: Callable[[], float],
        matcher: FeatureMatcher | None = None,
    ) -> None:
        self.store = store  # softswitch.store.Store (legs.held / legs.holds), or None
        self.clock = clock
        self.matcher = matcher or FeatureMatcher()
        self.peers: dict[str, set[str]] = {}  # leg -> legs bridged to it
        self.workers: dict[str, Any] = {}  # leg -> its worker
        self.actions: dict[str, FeatureAction] = {}  # action name -> what it does
        self.bridge_listeners: list[BridgeListener] = []
        self.event_listeners: list[EventListener] = []
        self.held_since: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.collectors: dict[str, Collector] = {}  # legs whose digits are a number

    # -- registry --------------------------------------------------------------------
    def add_feature(self, codes: Iterable[str], action: str, run: FeatureAction) -> None:
        """Register `run` for `action`, dialled as any of `codes` ("" are skipped)."""
        self.actions[action] = run
        for code in codes:
            if code:
                self.matcher.register(code, action)

    # -- commands the coordinator sends ----------------------------------------------
    def on_command(self, worker: Any, cmd: dict) -> None:
        kind = cmd.get("cmd")
        if kind not in ("bridge", "unbridge"):
            return
        a, b = str(cmd.get("a", "")), str(cmd.get("b", ""))
        if not a or not b or a == b:
            return
        if kind == "bridge":
            if b in self.peers.get(a, ()):
                return
            self.peers.setdefault(a, set()).add(b)
            self.peers.setdefault(b, set()).add(a)
            self.workers[a] = self.workers[b] = worker
            self._tell("bridged", worker, a, b)
        elif b in self.peers.get(a, ()):
            self._unlink(a, b)
            self._tell("unbridged", worker, a, b)

    def bridged_to(self, leg: str) -> set[str]:
        return set(self.peers.get(leg, ()))

    def _unlink(self, a: str, b: str) -> None:
        for x, y in ((a, b), (b, a)):
            peers = self.peers.get(x)
            if peers is not None:
                peers.discard(y)
                if not peers:
                    del self.peers[x]
                    self.matcher.forget(x)

    def _tell(self, what: str, worker: Any, a: str, b: str) -> None:
        for listener in list(self.bridge_listeners):
            try:
                listener(what, worker, a, b)
            except Exception:
                log.exception("bridge listener failed (%s %s %s)", what, a, b)

    # -- worker events ------------------------------------------------------------------
    def on_event(self, worker: Any, msg: dict) -> bool:
        """Look at a worker event first; True: it was ours (do not route it further)."""
        event = msg.get("event")
        leg = str(msg.get("leg", ""))
        if event == "dtmf" and leg in self.collectors:
            self._collect(leg, str(msg.get("digit", "")))
            return True
        if event == "dtmf" and leg in self.peers:
            self._digit(worker, leg, str(msg.get("digit", "")))
            return True
        if event in ("hold", "resume"):
            self._hold(leg, event == "hold")
        for listener in list(self.event_listeners):
            try:
                listener(worker, msg)
            except Exception:
                log.exception("worker event listener failed (%s)", event)
        if event == "state" and msg.get("state") == "disconnected":
            self._leg_gone(worker, leg)  # after the listeners saw the leg go
        return event == "bridge_recording_finished"

    def worker_gone(self, worker: Any) -> None:
        """A worker died: its legs are gone without `disconnected` events."""
        for leg in [leg for leg, w in self.workers.items() if w is worker]:
            self._leg_gone(worker, leg)

    def _leg_gone(self, worker: Any, leg: str) -> None:
        gone = self.collectors.pop(leg, None)
        if gone is not None and gone.timer is not None:
            gone.timer.cancel()
        if leg in self.held_since:
            self._hold(leg, False)
        for peer in sorted(self.peers.get(leg, ())):
            self._unlink(leg, peer)
            self._tell("unbridged", worker, leg, peer)
        self.workers.pop(leg, None)
        self.matcher.forget(leg)

    # -- hold ------------------------------------------------------------------------------
    def _hold(self, leg: str, held: bool) -> None:
        now = self.clock()
        if held:
            if leg in self.held_since:
                return
            self.held_since[leg] = now
            log.info("leg %s: put on hold by its phone", leg)
            if self.store is not None:
                self.store.db.execute(
                    "UPDATE legs SET holds = COALESCE(holds, 0) + 1 WHERE id = ?", (leg,)
                )
            return
        since = self.held_since.pop(leg, None)
        if since is None:
            return
        log.info("leg %s: taken off hold after %.1f s", leg, now - since)
        if self.store is not None:
            self.store.db.execute(
                "UPDATE legs SET held = COALESCE(held, 0) + ? WHERE id = ?",
                (round(now - since, 3), leg),
            )

    # -- feature codes -------------------------------------------------------------------
    def _digit(self, worker: Any, leg: str, digit: str) -> None:
        for match in self.matcher.feed(leg, digit, self.clock()):
            self._run(match)
        self._arm()

    def _run(self, match: FeatureMatch) -> None:
        peers = sorted(self.peers.get(match.leg, ()))
        worker = self.workers.get(match.leg)
        run = self.actions.get(match.action)
        if not peers or worker is None or run is None:
            return
        ctx = FeatureContext(
            worker, match.leg, peers[0], call_of(match.leg), match.code, match.action
        )
        log.info("leg %s dialled %s (%s)", match.leg, match.code, match.action)
        try:
            run(ctx)
        except Exception:
            log.exception("in-call feature %s failed", match.action)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.matcher.next_deadline()
        if when is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without an event loop (tests): no timeouts then
            return
        self._timer = loop.call_later(max(0.0, when - self.clock()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        for match in self.matcher.expire(self.clock()):
            self._run(match)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for c in self.collectors.values():
            if c.timer is not None:
                c.timer.cancel()
        self.collectors.clear()

    # -- collecting a number after a code (## then the transfer target) ---------------
    def collect(
        self,
        leg: str,
        done: Callable[[str], None],
        *,
        max_digits: int = 6,
        timeout: float = 5.0,
        terminator: str = "#",
    ) -> None:
        """The next digits `leg` presses are a number, not codes: `done(number)` when
        `terminator` is pressed, `max_digits` are in, or `timeout` seconds pass without
        a key ("" when none came). A leg that hangs up meanwhile never calls back."""
        c = Collector(done, max_digits, timeout, terminator)
        self.collectors[leg] = c
        self._rearm(leg, c)

    def _rearm(self, leg: str, c: Collector) -> None:
        if c.timer is not None:
            c.timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        c.timer = loop.call_later(c.timeout, self._collected, leg)

    def _collect(self, leg: str, digit: str) -> None:
        c = self.collectors[leg]
        if digit == c.terminator:
            self._collected(leg)
            return
        c.digits += digit
        if len(c.digits) >= c.max_digits:
            self._collected(leg)
        else:
            self._rearm(leg, c)

    def _collected(self, leg: str) -> None:
        c = self.collectors.pop(leg, None)
        if c is None:
            return
        if c.timer is not None:
            c.timer.cancel()
        try:
            c.done(c.digits)
        except Exception:
            log.exception("collecting digits on %s failed", leg)


@dataclass
class Collector:
    """Digits being collected on one leg (see `InCall.collect`)."""

    done: Callable[[str], None]
    max_digits: int
    timeout: float
    terminator: str
    digits: str = ""
    timer: asyncio.TimerHandle | None = None


def hold_music_file(config: Any, data_dir: Any) -> str:
    """`[switch] music` as an 8 kHz WAV the workers play to the other party of a held
    call ("" = silence, also when the music cannot be found or read)."""
    from pathlib import Path

    from softswitch import audio

    music = config.switch.music
    if not music:
        return ""
    try:
        source = audio.resolve_music(music, config.base_dir, config.switch.media_dir)
        return str(audio.prepare(source, Path(data_dir) / "cache" / "audio"))
    except Exception as exc:
        log.warning(
            "hold music %r unusable (%s): a held call's other party hears silence", music, exc
        )
        return ""
