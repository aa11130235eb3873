"""softswitch: a SIP softswitch (office PBX and call-centre engine).

The scripting API: `Switch` (load a config, register flows, run) and `Call` (what a
flow gets: answer, play, gather, record, dial, queue, hangup)."""

from softswitch.flow.call import (
    Call,
    CallerHungUp,
    DialResult,
    DialStatus,
    QueueResult,
    Recording,
)
from softswitch.switch import Switch

__all__ = [
    "Call",
    "CallerHungUp",
    "DialResult",
    "DialStatus",
    "QueueResult",
    "Recording",
    "Switch",
]
