"""A call between two extensions, as a sans-I/O state machine.

The coordinator feeds it worker events (with an explicit `now`) and carries out what it
returns: commands for the media worker that holds both legs, and facts for the store.
No pjsua2, no asyncio, no clock reads here, so every ordering of events (callee busy,
caller hangs up while it rings, worker dies, ...) is tested directly.

The caller's leg (A) is answered only when the callee's leg (B) is answered, so the
caller hears ringing from their own phone and gets the callee's failure code (486, 480,
404) as a real SIP response instead of an answered call that plays a tone.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerCommand:
    cmd: dict


@dataclass(frozen=True)
class LegOpened:
    leg: str
    role: str  # caller / callee
    party: str
    sip_call_id: str | None = None


@dataclass(frozen=True)
class LegAnswered:
    leg: str


@dataclass(frozen=True)
class LegClosed:
    leg: str
    result: str
    cause: str
    sip_code: int | None
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CallAnswered:
    pass


@dataclass(frozen=True)
class CallClosed:
    result: str  # answered / busy / no-answer / unavailable / not-found / cancelled / failed
    cause: str
    sip_code: int | None


Action = WorkerCommand | LegOpened | LegAnswered | LegClosed | CallAnswered | CallClosed

# How a callee-leg failure code is passed to the caller, and what the call record says.
FAILURES: dict[int, tuple[int, str]] = {
    486: (486, "busy"),
    600: (486, "busy"),
    603: (603, "rejected"),
    404: (404, "not-found"),
    480: (480, "no-answer"),
    408: (480, "no-answer"),
    487: (487, "cancelled"),
    503: (503, "failed"),
}


@dataclass
class Transfer:
    """One transfer in progress: `transferor` (a leg) asked to connect `transferee`
    (the other leg) to `target`; `leg` is the new leg toward the target."""

    transferor: str
    transferee: str
    leg: str
    target: str
    transferor_party: str
    state: str = "calling"  # calling / early / consulting / confirmed / ended
    recall: bool = False  # `leg` calls the transferor back (the target failed)
    # attended (by code): the transferor talks to the target first; its hang-up
    # completes the transfer
    attended: bool = False


@dataclass
class ExtensionCall:
    """Extension `caller` dialed extension `callee`; both legs on one worker."""

    call_id: str
    caller: str
    callee: str
    callee_uri: str
    from_header: str
    leg_a: str = ""
    leg_b: str = ""
    a_state: str = "new"  # new / ringing / answering / confirmed / ended
    b_state: str = "new"  # new / calling / early / confirmed / ended
    bridged: bool = False
    answered_at: float | None = None
    ended_by: str | None = None  # caller / callee / switch
    fork_result: str | None = None  # from the edge: busy / no-answer / ...
    closed: bool = False
    lost_media: bool = False  # the side that ended it stopped sending RTP
    outcome: tuple[str, str, int | None] | None = None
    music: str = ""  # hold music a transferred party hears while the target rings
    transfer: Transfer | None = None  # a transfer in progress
    transfers: list[str] = field(default_factory=list)  # "102 -> 103 (answered)", ...
    # legs that left the call (a transferor, a picked-up ringing leg): their end only
    # closes their record, with this (result, cause)
    retired: dict[str, tuple[str, str]] = field(default_factory=dict)
    picked_up_by: str = ""  # the extension that answered with call pickup
    extra_pairs: int = 0  # worker pairs reserved for it besides its own (pickup)

    def __post_init__(self) -> None:
        self.leg_a = self.leg_a or f"{self.call_id}-a"
        self.leg_b = self.leg_b or f"{self.call_id}-b"

    # -- events ------------------------------------------------------------------------
    def on_incoming(self, sip_call_id: str | None) -> list[Action]:
        """The caller's INVITE reached the worker: place the callee's leg."""
        self.a_state = "ringing"
        self.b_state = "calling"
        return [
            LegOpened(self.leg_a, "caller", self.caller, sip_call_id),
            LegOpened(self.leg_b, "callee", self.callee),
            WorkerCommand(
                {
                    "cmd": "originate",
                    "leg": self.leg_b,
                    "uri": self.callee_uri,
                    "headers": {"X-Call": self.call_id, "X-From": self.from_header},
                }
            ),
        ]

    def on_state(
        self, leg: str, state: str, code: int | None, cause: str | None, stats: dict | None = None
    ) -> list[Action]:
        t = self.transfer
        if t is not None and leg == t.leg:
            return self._on_transfer_leg(state, code, cause, stats or {})
        if leg in self.retired:
            if state != "disconnected":
                return []
            result, why = self.retired.pop(leg)
            return [LegClosed(leg, result, why, code, stats or {})]
        if t is not None and leg == t.transferor and state == "disconnected":
            if t.state == "consulting":
                return self._complete_attended(t, leg, code, stats or {})
            # The transferor hangs up once it has handed the call on: only its leg ends.
            t.transferor = ""
            if leg == self.leg_a:
                self.a_state = "ended"
            else:
                self.b_state = "ended"
            cause_text = f"{self.party(leg)} transferred the call"
            return [LegClosed(leg, "answered", cause_text, code, stats or {})]
        if (
            t is not None
            and leg == t.transferee
            and state == "disconnected"
            and t.state == "consulting"
        ):
            return self._transferee_left_consultation(t, leg, code, stats or {})
        if t is not None and leg == t.transferee and state == "disconnected":
            # The transferred party hung up while the target rang: stop that too.
            actions = [WorkerCommand({"cmd": "hangup", "leg": t.leg, "code": 487})]
            t.recall = True  # nobody to go back to
            if t.transferor:
                actions.append(WorkerCommand({"cmd": "hangup", "leg": t.transferor, "code": 200}))
            return actions + self._on_a_or_b(leg, state, code, cause, stats or {})
        return self._on_a_or_b(leg, state, code, cause, stats or {})

    def _on_a_or_b(
        self, leg: str, state: str, code: int | None, cause: str | None, stats: dict
    ) -> list[Action]:
        if leg == self.leg_a:
            return self._on_a(state, code, cause, stats or {})
        if leg == self.leg_b:
            return self._on_b(state, code, cause, stats or {})
        return []

    def on_fork_result(self, result: str) -> None:
        """The edge's view of the ring attempts (e.g. every branch timed out)."""
        self.fork_result = result

    def on_worker_died(self) -> list[Action]:
        actions: list[Action] = []
        for leg, state in ((self.leg_a, self.a_state), (self.leg_b, self.b_state)):
            if state not in ("new", "ended"):
                actions.append(LegClosed(leg, "failed", "media worker died", None))
        self.a_state = self.b_state = "ended"
        actions += self._close("failed", "media worker died", None)
        return actions

    # -- caller leg --------------------------------------------------------------------
    def _on_a(self, state: str, code: int | None, cause: str | None, stats: dict) -> list[Action]:
        actions: list[Action] = []
        if state == "confirmed" and self.a_state != "ended":
            self.a_state = "confirmed"
            actions.append(LegAnswered(self.leg_a))
            actions += self._maybe_bridge()
        elif state == "disconnected" and self.a_state != "ended":
            was_answered = self.a_state == "confirmed"
            self.a_state = "ended"
            if cause in ("remote", "media-timeout") and self.ended_by is None:
                self.ended_by = "caller"
                self.lost_media = cause == "media-timeout"
            result = (
                "answered"
                if was_answered
                else ("cancelled" if self.ended_by == "caller" else "failed")
            )
            actions.append(
                LegClosed(
                    self.leg_a,
                    result,
                    self._hangup_cause() if was_answered else self._why(result),
                    code,
                    stats,
                )
            )
            if self.b_state not in ("new", "ended"):
                actions.append(
                    WorkerCommand(
                        {
                            "cmd": "hangup",
                            "leg": self.leg_b,
                            "code": 487 if not was_answered else 200,
                        }
                    )
                )
            if self.ended_by == "caller" and self.answered_at is None:
                self.outcome = ("cancelled", "caller hung up while ringing", 487)
            actions += self._maybe_close()
        return actions

    # -- callee leg --------------------------------------------------------------------
    def _on_b(self, state: str, code: int | None, cause: str | None, stats: dict) -> list[Action]:
        actions: list[Action] = []
        if self.b_state == "ended":
            return actions
        if state == "early" and self.b_state == "calling":
            self.b_state = "early"
            if self.a_state == "ringing":
                actions.append(WorkerCommand({"cmd": "ring", "leg": self.leg_a, "code": 180}))
        elif state == "confirmed":
            self.b_state = "confirmed"
            actions.append(LegAnswered(self.leg_b))
            if self.a_state == "ringing":
                self.a_state = "answering"
                actions.append(WorkerCommand({"cmd": "answer", "leg": self.leg_a, "code": 200}))
        elif state == "disconnected":
            was_answered = self.b_state == "confirmed"
            self.b_state = "ended"
            if cause in ("remote", "media-timeout") and self.ended_by is None:
                self.ended_by = "callee"
                self.lost_media = cause == "media-timeout"
            if was_answered:
                actions.append(LegClosed(self.leg_b, "answered", self._hangup_cause(), code, stats))
            else:
                relay, result = FAILURES.get(code or 0, (480, "unavailable"))
                if self.fork_result in ("busy", "no-answer", "unavailable", "rejected"):
                    result = self.fork_result
                if self.ended_by == "caller":
                    result = "cancelled"
                actions.append(LegClosed(self.leg_b, result, self._why(result), code, stats))
                if self.outcome is None:
                    self.outcome = (result, self._why(result), code)
                if self.a_state in ("ringing", "answering"):
                    self.ended_by = self.ended_by or "callee"
                    actions.append(
                        WorkerCommand({"cmd": "hangup", "leg": self.leg_a, "code": relay})
                    )
            if was_answered and self.a_state not in ("new", "ended"):
                actions.append(WorkerCommand({"cmd": "hangup", "leg": self.leg_a, "code": 200}))
            actions += self._maybe_close()
        return actions

    # -- call pickup -------------------------------------------------------------------
    @property
    def ringing(self) -> bool:
        """The callee's phones ring and nobody answered yet: it can be picked up."""
        return self.a_state == "ringing" and self.b_state in ("calling", "early")

    def on_pickup(self, leg: str, picker: str, sip_call_id: str | None) -> list[Action]:
        """`picker` dialled the pickup code; their INVITE reached this call's worker as
        `leg`: it takes the callee's place, the ringing leg is cancelled, and the caller
        is answered and bridged to the picker."""
        if not self.ringing:
            return [WorkerCommand({"cmd": "hangup", "leg": leg, "code": 481})]
        old = self.leg_b
        self.retired[old] = ("cancelled", f"picked up by {picker}")
        self.picked_up_by = picker
        self.leg_b, self.callee, self.b_state = leg, picker, "calling"
        return [
            LegOpened(leg, "callee", picker, sip_call_id),
            WorkerCommand({"cmd": "hangup", "leg": old, "code": 487}),
            WorkerCommand({"cmd": "answer", "leg": leg, "code": 200}),
        ]

    # -- transfers ---------------------------------------------------------------------
    def party(self, leg: str) -> str:
        return self.caller if leg == self.leg_a else self.callee

    def on_transfer(self, leg: str, new_leg: str, target: str) -> list[Action]:
        """The phone of `leg` sent REFER (blind transfer) to `target`; the worker is
        already calling the target on `new_leg`. The other party hears hold music
        until the target answers; then the two are bridged. If the target does not
        answer, the other party goes back to the transferor (or is called back)."""
        if not self.bridged or self.transfer is not None or leg not in (self.leg_a, self.leg_b):
            return [WorkerCommand({"cmd": "hangup", "leg": new_leg, "code": 487})]
        other = self.leg_b if leg == self.leg_a else self.leg_a
        self.transfer = Transfer(leg, other, new_leg, target, self.party(leg))
        actions: list[Action] = [
            LegOpened(new_leg, "transfer", target),
            WorkerCommand({"cmd": "unbridge", "a": self.leg_a, "b": self.leg_b}),
        ]
        if self.music:
            actions.append(WorkerCommand({"cmd": "moh_start", "leg": other, "file": self.music}))
        return actions

    def on_code_transfer(
        self, leg: str, new_leg: str, target: str, domain: str, attended: bool = False
    ) -> list[Action]:
        """The party of `leg` dialled the blind-transfer code and then `target`: the
        switch places the call to the target itself (no REFER) and lets the transferor
        go at once; the rest is a blind transfer (hold music, recall on failure)."""
        actions = self.on_transfer(leg, new_leg, target)
        if self.transfer is None or self.transfer.leg != new_leg:
            return actions  # refused (not talking, or a transfer is already running)
        if attended:
            self.transfer.attended = True
            return actions + [
                WorkerCommand(
                    {
                        "cmd": "originate",
                        "leg": new_leg,
                        "uri": f"sip:{target}@{domain}",
                        "headers": {"X-Call": self.call_id, "X-Leg": new_leg},
                    }
                )
            ]
        return actions + [
            WorkerCommand(
                {
                    "cmd": "originate",
                    "leg": new_leg,
                    "uri": f"sip:{target}@{domain}",
                    "headers": {"X-Call": self.call_id, "X-Leg": new_leg},
                }
            ),
            WorkerCommand({"cmd": "hangup", "leg": leg, "code": 200}),
        ]

    def _on_transfer_leg(
        self, state: str, code: int | None, cause: str | None, stats: dict
    ) -> list[Action]:
        t = self.transfer
        assert t is not None
        actions: list[Action] = []
        if state == "early" and t.state == "calling":
            t.state = "early"
        elif state == "confirmed" and t.state in ("calling", "early") and t.attended:
            if t.transferor:  # consultation: the presser talks to the target first
                t.state = "consulting"
                return [
                    LegAnswered(t.leg),
                    WorkerCommand({"cmd": "stop", "leg": t.transferor}),
                    WorkerCommand({"cmd": "bridge", "a": t.transferor, "b": t.leg}),
                ]
            t.attended = False  # the presser left while it rang: now it is blind
            return self._on_transfer_leg(state, code, cause, stats)
        elif state == "disconnected" and t.state == "consulting":
            # The target hung up on the consultation: the presser gets the caller back.
            self.transfer = None
            self.transfers.append(f"{t.transferor_party} -> {t.target} (consulted, not taken)")
            return [
                LegClosed(t.leg, "answered", f"consultation with {t.target}", code, stats),
                WorkerCommand({"cmd": "moh_stop", "leg": t.transferee}),
                WorkerCommand({"cmd": "bridge", "a": t.transferor, "b": t.transferee}),
            ]
        elif state == "confirmed" and t.state in ("calling", "early"):
            t.state = "confirmed"
            actions += [
                LegAnswered(t.leg),
                WorkerCommand({"cmd": "moh_stop", "leg": t.transferee}),
                WorkerCommand({"cmd": "bridge", "a": t.transferee, "b": t.leg}),
            ]
            if t.transferor:  # normally it hangs up by itself, on the NOTIFY
                actions.append(WorkerCommand({"cmd": "hangup", "leg": t.transferor, "code": 200}))
                self.retired[t.transferor] = (
                    "answered",
                    f"{t.transferor_party} transferred the call",
                )
            self.transfers.append(
                f"{t.transferor_party} -> {t.target}"
                + (" (called back)" if t.recall else " (answered)")
            )
            # From now on the new leg is the transferor's side of the call.
            if t.transferee == self.leg_a:
                self.leg_b, self.callee, self.b_state = t.leg, t.target, "confirmed"
            else:
                self.leg_a, self.caller, self.a_state = t.leg, t.target, "confirmed"
            self.transfer = None
        elif state == "disconnected":
            t.state = "ended"
            relay, result = FAILURES.get(code or 0, (480, "unavailable"))
            if self.fork_result in ("busy", "no-answer", "unavailable", "rejected"):
                result = self.fork_result  # the edge saw what each phone said
            self.fork_result = None
            actions.append(
                LegClosed(
                    t.leg,
                    result,
                    f"transfer to {t.target}: {self._why_of(result, t.target)}",
                    code,
                    stats,
                )
            )
            self.transfers.append(f"{t.transferor_party} -> {t.target} ({result})")
            self.transfer = None
            transferee_state = self.a_state if t.transferee == self.leg_a else self.b_state
            if transferee_state == "ended":
                actions += self._maybe_close()  # the transferred party is gone too
            elif t.recall:
                # The transferor did not come back either: nobody is left to talk to.
                actions.append(WorkerCommand({"cmd": "moh_stop", "leg": t.transferee}))
                actions.append(WorkerCommand({"cmd": "hangup", "leg": t.transferee, "code": 200}))
            elif t.transferor:
                # Back to the transferor, who is still on the line.
                actions += [
                    WorkerCommand({"cmd": "moh_stop", "leg": t.transferee}),
                    WorkerCommand({"cmd": "bridge", "a": self.leg_a, "b": self.leg_b}),
                ]
            else:
                actions += self._recall(t)
        return actions

    def _complete_attended(
        self, t: Transfer, leg: str, code: int | None, stats: dict
    ) -> list[Action]:
        """The presser hangs up after consulting the target: the waiting party and the
        target are put together."""
        self.transfer = None
        self.transfers.append(f"{t.transferor_party} -> {t.target} (attended)")
        if t.transferee == self.leg_a:
            self.leg_b, self.callee, self.b_state = t.leg, t.target, "confirmed"
        else:
            self.leg_a, self.caller, self.a_state = t.leg, t.target, "confirmed"
        return [
            LegClosed(leg, "answered", f"{t.transferor_party} transferred the call", code, stats),
            WorkerCommand({"cmd": "moh_stop", "leg": t.transferee}),
            WorkerCommand({"cmd": "bridge", "a": t.transferee, "b": t.leg}),
        ]

    def _transferee_left_consultation(
        self, t: Transfer, leg: str, code: int | None, stats: dict
    ) -> list[Action]:
        """The waiting party hung up during the consultation: the presser and the target
        go on talking; the target takes the waiting party's place in the call."""
        self.transfer = None
        self.transfers.append(f"{t.transferor_party} -> {t.target} (caller left)")
        if t.transferee == self.leg_a:
            self.leg_a, self.caller = t.leg, t.target
        else:
            self.leg_b, self.callee = t.leg, t.target
        return [LegClosed(leg, "answered", f"{self.party(t.transferor)} consulted", code, stats)]

    def _recall(self, failed: Transfer) -> list[Action]:
        """The target failed and the transferor has hung up: call the transferor back,
        so the transferred party is never dropped."""
        leg = f"{failed.leg}r"
        self.transfer = Transfer(
            "",
            failed.transferee,
            leg,
            failed.transferor_party,
            failed.transferor_party,
            recall=True,
        )
        return [
            LegOpened(leg, "transfer", failed.transferor_party),
            WorkerCommand(
                {
                    "cmd": "originate",
                    "leg": leg,
                    "uri": f"sip:{failed.transferor_party}@{self.callee_uri.split('@', 1)[-1]}",
                    "headers": {"X-Call": self.call_id, "X-From": self.from_header},
                }
            ),
        ]

    def _why_of(self, result: str, who: str) -> str:
        callee, self.callee = self.callee, who
        try:
            return self._why(result)
        finally:
            self.callee = callee

    # -- helpers -----------------------------------------------------------------------
    def _maybe_bridge(self) -> list[Action]:
        if self.a_state == "confirmed" and self.b_state == "confirmed" and not self.bridged:
            self.bridged = True
            return [
                CallAnswered(),
                WorkerCommand({"cmd": "bridge", "a": self.leg_a, "b": self.leg_b}),
            ]
        return []

    def _hangup_cause(self) -> str:
        if self.lost_media:
            return f"no audio from the {self.ended_by} (media timeout)"
        return f"{self.ended_by or 'switch'} hung up"

    def _why(self, result: str) -> str:
        return {
            "busy": f"{self.callee} busy",
            "no-answer": f"{self.callee} did not answer",
            "unavailable": f"{self.callee} unavailable",
            "rejected": f"{self.callee} rejected the call",
            "not-found": f"{self.callee} not found",
            "cancelled": "caller hung up before answer",
            "failed": "call failed",
        }.get(result, result)

    def _maybe_close(self) -> list[Action]:
        if self.transfer is not None:
            return []  # its leg still has to end
        if self.a_state != "ended" or self.b_state not in ("ended", "new"):
            return []
        if self.bridged:
            return self._close("answered", self._hangup_cause(), 200)
        result, cause, code = self.outcome or ("failed", "call failed", None)
        return self._close(result, cause, code)

    def _close(self, result: str, cause: str, code: int | None) -> list[Action]:
        if self.closed:
            return []
        self.closed = True
        return [CallClosed(result, cause, code)]

    @property
    def finished(self) -> bool:
        return self.closed
