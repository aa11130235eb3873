"""One pjsua2 media worker process, driven by the coordinator over a control socket.

Run as ``python -m softswitch.media.worker --control-fd FD --id N --sip-port P
--rtp-port R --rtp-port-count C --edge 127.0.0.1:E --public-address A``; the contract is
``docs/worker-protocol.md``. The pjsua2 wheel allows one endpoint and four calls per
process, so a worker is deliberately small and dumb: it answers, plays, records,
bridges, originates through the edge and reports events; every decision is taken by the
coordinator.

Threading: pjsua2 runs with ``threadCnt=0`` and ``mainThreadOnly``, so SIP callbacks
happen inside ``libHandleEvents`` on the main thread, which also polls the control
socket. Callbacks that pjsua2 may raise on its media threads (RFC 2833 DTMF, player end
of file, audio frames for in-band DTMF detection) only put a tuple on a queue that the
main loop drains, so no protocol or pjsua2 state is touched off the main thread.

Media resources per process are scarce (32 players, 32 recorders), so hold music is one
looping player per file shared by every leg that listens. In-band DTMF uses a pooled
conference port (an ``AudioMediaPort``, not a player) per leg that asked for it.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import time
import traceback
import urllib.parse
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from softswitch.media.dtmf_detect import DtmfDetector

MAX_LEGS = 4
"""``PJSUA_MAX_CALLS`` of the pjsua2 wheel; a larger ``maxCalls`` is silently ignored."""

MAX_TRUNK_ACCOUNTS = 6
"""Accounts with a trunk's credentials per worker (``PJSUA_MAX_ACC`` is 8 in all)."""

POLL_MS = 10
"""How long one ``libHandleEvents`` call may block. SIP traffic and timers wake it at
once; a control command waits at most this long. The control socket is then polled
without blocking, so an idle worker wakes 100 times a second (two blocking waits per
turn at 5 ms cost about twice the idle CPU, which adds up over a pool of workers)."""

IDLE_POLL_MS = 50
"""The same while the worker has no leg: an INVITE still wakes it at once, only an
``originate`` may wait this long. Measured idle CPU here: ~0.4-0.8 % of a core
instead of ~1.2-1.4 %."""

BRISK_POLL_MS = 1
BRISK_SECONDS = 0.25
"""Right after the worker reports an event the coordinator usually answers with a
command (an ``incoming`` leg is followed by ``originate`` at once): for this long after
each event the loop blocks only 1 ms at a time, so the command is carried out within
about a millisecond (post-dial delay) without paying for fast polling all the time."""

CLOCK_RATE = 8000
"""Conference bridge clock (``medConfig.clockRate``): G.711 offices need no more."""

FRAME_USEC = 20000
"""The conference bridge's frame length (``audioFramePtime``)."""

LEVEL_POLL_SECONDS = 0.1
"""How often a recording leg's audio level is sampled for silence detection."""

DEFAULT_SILENCE_LEVEL = 8
"""Level (pjsua2's 0-100 scale, roughly logarithmic) at or below which a recording
leg counts as silent: 8 is a sine of about -40 dBFS, quiet speech is 15-25, a line
with no RTP or comfort noise is 0-3."""

TAP_FRAME_USEC = 100000
"""Frame length of the in-band DTMF tap: the bridge buffers the leg's 20 ms frames and
hands the tap 100 ms (800 samples) at a time. On a mostly idle process every Python
callback and numpy call starts cold, so one pass over 100 ms costs about what one pass
over 20 ms does (~0.25 ms measured here): this cuts the cost about fivefold, for at
most 100 ms more latency on a digit."""


DTMF_DIGITS = set("0123456789*#ABCD")

STATE_NAMES: dict[int, str] = {
    pj.PJSIP_INV_STATE_CALLING: "calling",
    pj.PJSIP_INV_STATE_EARLY: "early",
    pj.PJSIP_INV_STATE_CONNECTING: "connecting",
    pj.PJSIP_INV_STATE_CONFIRMED: "confirmed",
    pj.PJSIP_INV_STATE_DISCONNECTED: "disconnected",
}

DTMF_METHODS: dict[str, int] = {
    "rfc2833": pj.PJSUA_DTMF_METHOD_RFC2833,
    "info": pj.PJSUA_DTMF_METHOD_SIP_INFO,
}
DTMF_METHOD_NAMES: dict[int, str] = {v: k for k, v in DTMF_METHODS.items()}

COMPACT_HEADERS: dict[str, str] = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "m": "Contact",
    "v": "Via",
    "c": "Content-Type",
    "l": "Content-Length",
    "k": "Supported",
    "s": "Subject",
}

log = logging.getLogger("softswitch.media.worker")


class CommandError(Exception):
    """A command that cannot be carried out; its text goes back in the reply."""


def parse_sip_message(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a raw SIP message into its start line and its (name, value) headers.

    pjsua2 gives Python the incoming INVITE only as text (``SipRxData.wholeMsg``), so
    custom headers such as ``X-Leg`` have to be read from it. Folded lines are joined
    and compact names are expanded so callers can look headers up by their long name.
    """
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")
    start = lines[0].strip() if lines else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        name = COMPACT_HEADERS.get(name.lower(), name) if len(name) == 1 else name
        headers.append((name, value.strip()))
    return start, headers


def header_value(headers: list[tuple[str, str]], name: str) -> str:
    """First value of header ``name`` (case-insensitive), or ``""``."""
    lname = name.lower()
    for hname, value in headers:
        if hname.lower() == lname:
            return value
    return ""


def pj_error_text(exc: BaseException) -> str:
    """Readable text for an exception raised by pjsua2 (it wraps ``pj.Error``)."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, pj.Error):
            return f"{arg.title}: {arg.reason} ({arg.status})"
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} ({exc.status})"
    return str(exc) or type(exc).__name__


def audio_media(call: pj.Call) -> pj.AudioMedia | None:
    """The call's active audio media, or None before/without negotiated audio."""
    try:
        info = call.getInfo()
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                return call.getAudioMedia(mi.index)
    except Exception:  # a call being torn down raises; no media then
        return None
    return None


def disconnect(src: pj.AudioMedia, dst: pj.AudioMedia) -> None:
    """``src.stopTransmit(dst)``, quietly when they were not connected (or are gone)."""
    try:
        src.stopTransmit(dst)
    except Exception:
        pass


def sent_level(call: pj.Call) -> int | None:
    """Level (0-100) of the audio the remote party sends on this call, None if no media.

    Careful with pjsua2's names: on a call's AudioMedia, ``getTxLevel()`` is the level
    of what the call port transmits INTO the bridge (the remote party's voice) and
    ``getRxLevel()`` the level of what the bridge sends to it (what the remote hears).
    """
    aud = audio_media(call)
    if aud is None:
        return None
    try:
        return int(aud.getTxLevel())
    except Exception:
        return None


def heard_level(call: pj.Call) -> int | None:
    """Level (0-100) of what the bridge sends to the remote party, None if no media."""
    aud = audio_media(call)
    if aud is None:
        return None
    try:
        return int(aud.getRxLevel())
    except Exception:
        return None


def optional_positive(msg: dict[str, Any], key: str) -> float | None:
    """``msg[key]`` as a positive number of seconds, or None when absent/null."""
    value = msg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CommandError(f"{key} must be a positive number")
    return float(value)


MEDIA_CHECK_SECONDS = 1.0  # how often an answered leg's RTP counter is looked at


def receives_audio(call: pj.Call) -> bool:
    """Whether the leg's audio is active both ways; a phone that put the call on hold
    may rightly send nothing, so a held leg never times out."""
    try:
        info = call.getInfo()  # keep it referenced: its media list lives inside it
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                return mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE
    except Exception:
        return False
    return False


def remote_held(call: pj.Call) -> bool:
    """Whether the phone has put the leg on hold: a re-INVITE with a=sendonly or
    a=inactive, which pjsua reports alike as PJSUA_CALL_MEDIA_REMOTE_HOLD. (Each such
    re-INVITE also replaces the leg's conference port, so whatever was connected to it
    is disconnected until ``apply_media`` runs again.)"""
    try:
        info = call.getInfo()
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                return mi.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD
    except Exception:
        return False
    return False


def stream_stats(call: pj.Call) -> dict[str, float] | None:
    """RTP counters of the call's audio stream, or None when it has no stream."""
    try:
        info = call.getInfo()
        idx = next(
            (mi.index for mi in info.media if mi.type == pj.PJMEDIA_TYPE_AUDIO),
            None,
        )
        if idx is None:
            return None
        st = call.getStreamStat(idx)
    except Exception:  # no stream (never answered, already destroyed)
        return None
    rx, tx = st.rtcp.rxStat, st.rtcp.txStat
    return {
        "rx_packets": int(rx.pkt),
        "rx_lost": int(rx.loss),
        "tx_packets": int(tx.pkt),
        "rx_jitter_ms": round(rx.jitterUsec.mean / 1000.0, 3),
    }


ZERO_STATS: dict[str, float] = {
    "rx_packets": 0,
    "rx_lost": 0,
    "tx_packets": 0,
    "rx_jitter_ms": 0.0,
}


def wait_file_closed(path: str, timeout: float = 0.5) -> bool:
    """Wait until this process no longer holds ``path`` open; True if it was closed.

    Destroying a pjsua2 recorder only queues the removal of its conference port; the
    WAV header is written when the bridge clock thread processes that, a frame or two
    later. Reading the file (or telling the coordinator it is done) before then finds a
    header claiming zero samples. On Linux the open descriptors are visible in
    /proc/self/fd; elsewhere a short fixed wait has to do.
    """
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        time.sleep(0.1)
        return True
    target = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while True:
        still_open = False
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) == target:
                        still_open = True
                        break
                except OSError:
                    continue
        except OSError:
            return False
        if not still_open:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def wav_seconds(path: str) -> float:
    """Duration of a finished WAV file, 0.0 if it cannot be read."""
    try:
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            return round(w.getnframes() / rate, 3) if rate else 0.0
    except (OSError, wave.Error, EOFError):
        return 0.0


_fast_frame_copy: bool | None = None
"""Whether frame buffers may be copied by address (None: not checked yet)."""


def frame_bytes(frame: pj.MediaFrame) -> bytes:
    """The PCM bytes of a frame handed to ``AudioMediaPort.onFrameReceived``.

    ``frame.buf`` is a SWIG ``ByteVector`` (``std::vector<unsigned char>``); the only
    public way to read it, iteration, costs ~115 us for 320 bytes (0.6 % of a core per
    leg at 50 frames/s). Instead the vector's begin/end pointers (libstdc++ layout) are
    read and the data copied with ``ctypes.string_at`` (~2 us). The layout is checked
    against the vector's own length every time and the result compared with the slow
    copy once; if either disagrees, the slow copy is used for good.
    """
    global _fast_frame_copy
    buf = frame.buf
    n = len(buf)
    if n == 0:
        return b""
    if _fast_frame_copy is not False:
        begin, end, cap = (ctypes.c_size_t * 3).from_address(int(buf.this))
        if begin and end - begin == n and cap >= end:
            data = ctypes.string_at(begin, n)
            if _fast_frame_copy is None:
                _fast_frame_copy = data == bytes(buf)
                if not _fast_frame_copy:
                    return bytes(buf)
            return data
        _fast_frame_copy = False
    return bytes(buf)


class DtmfTap(pj.AudioMediaPort):
    """A conference port that receives what a leg sends, for in-band DTMF detection.

    ``onFrameReceived`` runs on the bridge clock thread every 100 ms (TAP_FRAME_USEC):
    it only copies the frame and queues it; the detector runs on the main loop.

    Taps are pooled, never destroyed while the worker runs: the bridge keeps calling a
    port (heart-beat frames) even when nothing is connected to it, and destroying a
    pjsua2 ``AudioMediaPort`` only queues its removal from the bridge while its memory
    (and the Python object the callback lands in) goes at once. A free tap has
    ``leg = None`` and drops what it receives; at most MAX_LEGS taps ever exist.
    """

    def __init__(self, events: queue.SimpleQueue[tuple[Any, ...]]):
        super().__init__()
        self.events = events
        self.leg: str | None = None

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        leg = self.leg
        if leg is None:
            return
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                data = frame_bytes(frame)
            else:  # no audio this tick: silence of one frame keeps the timing right
                data = bytes(2 * CLOCK_RATE * TAP_FRAME_USEC // 1_000_000)
            self.events.put(("frame", leg, self, data))
        except Exception:  # an exception must never unwind into the clock thread
            pass


class Player(pj.AudioMediaPlayer):
    """A WAV player whose end-of-file is forwarded to the main loop.

    ``onEof2`` runs on the conference bridge clock thread, where neither pjsua2 calls
    nor protocol writes are safe, so it only enqueues.
    """

    def __init__(self, events: queue.SimpleQueue[tuple[Any, ...]], leg: str, path: str):
        super().__init__()
        self.events = events
        self.leg = leg
        self.path = path
        self.loop = False

    def onEof2(self) -> None:
        if not self.loop:
            self.events.put(("eof", self.leg, self))


class LegCall(pj.Call):
    """A pjsua2 call that forwards its callbacks to the worker."""

    def __init__(self, worker: Worker, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.worker = worker
        self.leg_id: str | None = None
        self.last_stats: dict[str, float] | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.worker.guard(self.worker.on_call_state, self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.worker.guard(self.worker.on_call_media_state, self)

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        # The stream is gone by the time DISCONNECTED is reported, so the counters are
        # kept here, the last moment they can be read.
        try:
            stats = stream_stats(self)
            if stats is not None:
                self.last_stats = stats
        except Exception:
            pass

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        # RFC 2833 digits arrive on a media thread, SIP INFO ones on the main thread;
        # both go through the queue so they are reported in order and on one thread.
        self.worker.offthread.put(("dtmf", self, str(prm.digit), int(prm.method)))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # Runs inside pjsua's REFER handling: decide here, synchronously.
        try:
            self.worker.on_transfer_request(self, prm)
        except Exception:
            log.exception("transfer request failed")
            prm.statusCode = 500


class WorkerAccount(pj.Account):
    """The worker's single local account; it only receives INVITEs from the edge."""

    def __init__(self, worker: Worker):
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.worker.guard(self.worker.on_incoming_call, prm)


@dataclass
class Recording:
    """A leg's recording and its end conditions (see ``cmd_record``)."""

    recorder: pj.AudioMediaRecorder | None
    file: str
    started: float
    max_seconds: float | None = None
    silence_timeout: float | None = None
    silence_level: int = DEFAULT_SILENCE_LEVEL
    stop_on_digit: str = ""
    last_sound: float = 0.0  # when the level was last above silence_level (or start)
    sound: bool = False  # was it ever?
    next_poll: float = 0.0


@dataclass
class Music:
    """One looping hold-music player shared by every leg listening to its file."""

    file: str
    player: pj.AudioMediaPlayer
    legs: set[str] = field(default_factory=set)
    # legs hearing it because a leg bridged to them is on hold (see apply_media)
    holders: set[str] = field(default_factory=set)


@dataclass
class BridgeRecording:
    """One recorder that hears several legs mixed (``record_bridge``)."""

    rec: str  # the coordinator's name for it
    legs: tuple[str, ...]
    file: str
    recorder: pj.AudioMediaRecorder | None


@dataclass
class Leg:
    """Everything the worker keeps for one leg until its DISCONNECTED callback."""

    id: str
    call: LegCall
    incoming: bool
    answered: bool = False
    hangup_requested: bool = False
    player: Player | None = None
    moh: str = ""  # the hold-music file the leg listens to ("" = none)
    rec: Recording | None = None
    tap: DtmfTap | None = None
    detector: DtmfDetector | None = None
    bridged: set[str] = field(default_factory=set)
    confirmed: bool = False  # the dialog is up (either direction)
    # media timeout: the RTP packet count last seen, and since when it has not moved
    rx_packets: int = -1
    rx_since: float = 0.0
    next_media_check: float = 0.0
    media_timed_out: bool = False
    # hold: the phone put this leg on hold (re-INVITE with sendonly/inactive); the legs
    # bridged to it then hear hold music: `hold_music` (set by `bridge`; None = the
    # worker's --hold-music), and `hold_moh` is the file this leg hears for that reason
    held: bool = False
    hold_music: str | None = None
    hold_moh: str = ""


class Worker:
    """The worker's state and main loop."""

    def __init__(self, args: argparse.Namespace, sock: socket.socket):
        self.args = args
        self.media_timeout = float(args.media_timeout)
        self.sock = sock
        self.worker_id: int = args.id
        self.edge = args.edge
        self.outbuf = bytearray()
        self.brisk_until = 0.0  # poll fast until then (see BRISK_SECONDS)
        self.inbuf = bytearray()
        self.running = True
        self.control_open = True
        self.offthread: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.legs: dict[str, Leg] = {}
        # Calls refused without a leg (wrong source, duplicate X-Leg): kept referenced
        # until DISCONNECTED like any other, because an unreferenced call is torn down
        # by the garbage collector under pjsua2's feet.
        self.rejected: dict[int, LegCall] = {}
        self.leg_counter = 0
        self.music: dict[str, Music] = {}  # hold music by file
        self.hold_music: str = getattr(args, "hold_music", None) or ""  # --hold-music
        self.recordings: dict[str, BridgeRecording] = {}  # record_bridge, by name
        self.taps: list[DtmfTap] = []  # every in-band DTMF tap ever made (pooled)
        self.free_taps: list[DtmfTap] = []
        self.ep = pj.Endpoint()
        self.acc: WorkerAccount | None = None
        # accounts that carry a trunk's credentials, by (username, realm, password):
        # pjsua answers a provider's 401/407 with the credentials of the call's account
        self.trunk_accounts: dict[tuple[str, str, str], WorkerAccount] = {}
        self.sip_tid = -1

    # ----------------------------------------------------------------- setup
    def start(self) -> None:
        """Create the endpoint, transport and account exactly as the design demands."""
        a = self.args
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = MAX_LEGS
        cfg.uaConfig.userAgent = f"softswitch-media-worker/{self.worker_id}"
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.msgLogging = 1 if a.log_file else 0
        cfg.logConfig.level = a.log_level if a.log_file else 0
        if a.log_file:
            cfg.logConfig.filename = a.log_file
            # append, like Python's logging handler on the same file: truncating would
            # make the two writers overwrite each other's lines
            cfg.logConfig.fileFlags = pj.PJ_O_APPEND
        cfg.medConfig.sndAutoCloseTime = -1
        cfg.medConfig.clockRate = CLOCK_RATE
        cfg.medConfig.sndClockRate = CLOCK_RATE
        cfg.medConfig.audioFramePtime = FRAME_USEC // 1000
        # No voice activity detection: pjmedia's adaptive VAD takes steady audio (hold
        # music, a long prompt) for background noise after a second or so and stops
        # sending RTP, so callers heard silence where the music should resume.
        cfg.medConfig.noVad = True
        cfg.medConfig.channelCount = 1
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        # G.711 first in the worker's own offers (originated legs): the bridge runs at
        # 8 kHz anyway, G.711 costs far less CPU than speex (pjsua's default first
        # choice) and carries in-band DTMF cleanly. Answers follow the offerer's order.
        for codec, priority in (("PCMU/8000", 255), ("PCMA/8000", 254)):
            try:
                self.ep.codecSetPriority(codec, priority)
            except Exception:
                log.warning("cannot prefer codec %s", codec)

        tcfg = pj.TransportConfig()
        tcfg.port = a.sip_port
        tcfg.boundAddress = "127.0.0.1"
        tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        # --sip-port 0: the OS picks a free port when the socket is bound (no window
        # in which another process can take a port chosen beforehand); hello reports it.
        self.sip_port = int(str(self.ep.transportGetInfo(tid).localName).rsplit(":", 1)[1])
        self.ep.libStart()
        self.sip_tid = tid
        self.acc = WorkerAccount(self)
        self.acc.create(self.account_config(f"worker{self.worker_id}"), True)

    def account_config(self, user: str) -> pj.AccountConfig:
        """A local account: every request via the edge, no registration."""
        a = self.args
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{user}@127.0.0.1:{self.sip_port}"
        acfg.sipConfig.proxies.append(f"sip:{self.edge};lr")
        acfg.sipConfig.transportId = self.sip_tid
        acfg.regConfig.registerOnAdd = False
        mt = acfg.mediaConfig.transportConfig
        mt.port = a.rtp_port
        # pjsua takes RTP from [port, port + portRange) and RTCP on RTP + 1.
        mt.portRange = max(a.rtp_port_count - 1, 0)
        mt.publicAddress = a.public_address
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        return acfg

    def trunk_account(self, auth: dict[str, Any]) -> WorkerAccount:
        """The account for a trunk's credentials (made on first use, kept: pjsua allows
        8 accounts, so at most MAX_TRUNK_ACCOUNTS different credentials per worker)."""
        user, password = str(auth.get("username") or ""), str(auth.get("password") or "")
        realm = str(auth.get("realm") or "*")
        key = (user, realm, password)
        acc = self.trunk_accounts.get(key)
        if acc is not None:
            return acc
        if len(self.trunk_accounts) >= MAX_TRUNK_ACCOUNTS:
            raise CommandError("too many trunk credentials in one worker")
        acfg = self.account_config(user or "trunk")
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", realm, user, 0, password))
        # no re-INVITE to settle on one codec when the provider's answer lists several:
        # a provider may take it badly, and the first codec of its answer is used anyway
        acfg.mediaConfig.lockCodecEnabled = False
        acc = WorkerAccount(self)
        acc.create(acfg, False)
        self.trunk_accounts[key] = acc
        return acc

    def prefer_codecs(self, names: list[str]) -> dict[str, int]:
        """Offer only `names` (codec ids start with them: "PCMA" = "PCMA/8000/1"), in
        that order; returns the previous priorities for `restore_codecs`."""
        saved = {c.codecId: c.priority for c in self.ep.codecEnum2()}
        wanted = [n.lower() for n in names]
        for codec_id in saved:
            name = codec_id.split("/", 1)[0].lower()
            rank = wanted.index(name) if name in wanted else None
            self.ep.codecSetPriority(codec_id, 0 if rank is None else 255 - rank)
        return saved

    def restore_codecs(self, saved: dict[str, int]) -> None:
        for codec_id, priority in saved.items():
            self.ep.codecSetPriority(codec_id, priority)

    # ------------------------------------------------------------- protocol I/O
    def send(self, obj: dict[str, Any]) -> None:
        """Queue one event line; the main loop writes it without ever blocking."""
        if not self.control_open:
            return
        self.outbuf += json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.brisk_until = time.monotonic() + BRISK_SECONDS
        self.flush()

    def flush(self) -> None:
        """Write as much queued output as the socket takes right now."""
        while self.outbuf and self.control_open:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.control_open = False
                self.running = False
                self.outbuf.clear()
                return
            del self.outbuf[:n]

    def read_control(self) -> None:
        """Read and execute every complete command line available."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                # EOF: the coordinator is gone; nobody will ever hang these legs up.
                self.control_open = False
                self.running = False
                break
            self.inbuf += data
        while b"\n" in self.inbuf:
            line, _, rest = bytes(self.inbuf).partition(b"\n")
            self.inbuf = bytearray(rest)
            if line.strip():
                self.handle_line(line)

    def handle_line(self, line: bytes) -> None:
        """Parse and run one command, replying when it carries an ``id``."""
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.send({"event": "error", "message": f"bad command line: {exc}"})
            return
        cmd_id = msg.get("id")
        handler = self.COMMANDS.get(str(msg.get("cmd")))
        try:
            if handler is None:
                raise CommandError(f"unknown cmd {msg.get('cmd')!r}")
            extra = handler(self, msg) or {}
        except CommandError as exc:
            self.reply_error(cmd_id, str(exc))
            return
        except Exception as exc:  # pjsua2 errors become replies
            shown = {k: ("***" if k == "auth" else v) for k, v in msg.items()}
            log.debug("command %r failed", shown, exc_info=True)
            self.reply_error(cmd_id, pj_error_text(exc))
            return
        if cmd_id is not None:
            self.send({"event": "reply", "id": cmd_id, "ok": True, **extra})

    def reply_error(self, cmd_id: Any, text: str) -> None:
        """Report a failed command (as an ``error`` event when it had no id)."""
        if cmd_id is not None:
            self.send({"event": "reply", "id": cmd_id, "ok": False, "error": text})
        else:
            self.send({"event": "error", "message": text})

    def guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a pjsua2 callback body; an exception escaping into C++ would abort."""
        try:
            fn(*args)
        except Exception:
            log.error("callback %s failed:\n%s", fn.__name__, traceback.format_exc())
            self.send({"event": "error", "message": f"{fn.__name__}: internal error"})

    # ------------------------------------------------------------ callbacks
    def on_incoming_call(self, prm: pj.OnIncomingCallParam) -> None:
        """Take an INVITE from the edge and announce it as a new leg."""
        assert self.acc is not None
        call = LegCall(self, self.acc, prm.callId)
        src = str(prm.rdata.srcAddress)
        start, headers = parse_sip_message(str(prm.rdata.wholeMsg))
        if src != self.edge:
            self.refuse(call, 403, f"Forbidden (only {self.edge})")
            return
        leg_id = header_value(headers, "X-Leg")
        if not leg_id:
            self.leg_counter += 1
            leg_id = f"w{self.worker_id}-{self.leg_counter}"
        if leg_id in self.legs:
            self.send({"event": "error", "message": f"duplicate X-Leg {leg_id}"})
            self.refuse(call, 500, "Duplicate X-Leg")
            return
        call.leg_id = leg_id
        self.legs[leg_id] = Leg(id=leg_id, call=call, incoming=True)
        parts = start.split(" ")
        self.send(
            {
                "event": "incoming",
                "leg": leg_id,
                "sip_call_id": header_value(headers, "Call-ID"),
                "from": header_value(headers, "From"),
                "to": header_value(headers, "To"),
                "request_uri": parts[1] if len(parts) > 1 else "",
                "headers": {n: v for n, v in headers if n.lower().startswith("x-")},
            }
        )

    def on_transfer_request(self, call: LegCall, prm: pj.OnCallTransferRequestParam) -> None:
        """A phone in a call with one of our legs sent REFER (blind transfer, or attended
        with Replaces). pjsua places the new call itself (and NOTIFYs the transferor of
        its progress); we name that call as a new leg and send it to the edge with the
        call's context in the request URI, where the coordinator routes it, and tell the
        coordinator so it can connect the other party to it (docs/worker-protocol.md)."""
        leg = self.legs.get(call.leg_id or "")
        if leg is None or not leg.confirmed:
            prm.statusCode = 603
            return
        if len(self.legs) + len(self.rejected) >= MAX_LEGS:
            prm.statusCode = 503  # no slot for the new call: the transferor keeps the call
            self.send({"event": "transfer", "leg": leg.id, "refused": 503})
            return
        uri = str(prm.dstUri).strip().strip("<>")
        target, _, uri_headers = uri.partition("?")
        user = target.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
        call_id = leg.id.rsplit("-", 1)[0]
        self.leg_counter += 1
        new_leg = f"{call_id}-t{self.leg_counter}"
        dst = f"sip:{user}@{self.edge};x-call={call_id};x-leg={new_leg};x-transferor={leg.id}"
        prm.dstUri = f"<{dst}?{uri_headers}>" if uri_headers else f"<{dst}>"
        new_call = LegCall(self, self.acc)
        new_call.leg_id = new_leg
        self.legs[new_leg] = Leg(id=new_leg, call=new_call, incoming=False)
        prm.newCall = new_call
        prm.statusCode = 202
        replaces = ""
        for part in uri_headers.split("&"):
            name, _, value = part.partition("=")
            if name.lower() == "replaces":
                replaces = urllib.parse.unquote(value)
        self.send(
            {
                "event": "transfer",
                "leg": leg.id,
                "new_leg": new_leg,
                "target": user,
                "replaces": replaces or None,
            }
        )

    def refuse(self, call: LegCall, code: int, reason: str) -> None:
        """Answer an INVITE that gets no leg with a final error response."""
        self.rejected[call.getId()] = call
        prm = pj.CallOpParam()
        prm.statusCode = code
        prm.reason = reason
        call.answer(prm)

    def on_call_state(self, call: LegCall) -> None:
        """Report state changes; on DISCONNECTED release everything of the leg."""
        info = call.getInfo()
        if call.leg_id is None or call.leg_id not in self.legs:
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.rejected.pop(info.id, None)
            return
        name = STATE_NAMES.get(info.state)
        if name is None:
            return
        leg = self.legs[call.leg_id]
        event: dict[str, Any] = {
            "event": "state",
            "leg": leg.id,
            "state": name,
            "code": int(info.lastStatusCode),
            "reason": str(info.lastReason),
        }
        if name == "confirmed":
            leg.confirmed = True
            leg.answered = leg.answered or leg.incoming
        if name == "disconnected":
            stats = stream_stats(call) or call.last_stats or dict(ZERO_STATS)
            self.release_media(leg)
            event["stats"] = stats
            if leg.media_timed_out:
                event["cause"] = "media-timeout"
            else:
                event["cause"] = "local" if leg.hangup_requested else "remote"
            self.send(event)
            # Dropping the last reference here is the one safe moment (pjsua2 does not
            # touch the Call after this callback returns for DISCONNECTED).
            del self.legs[leg.id]
            return
        self.send(event)

    def on_call_media_state(self, call: LegCall) -> None:
        """(Re)connect player, recorder and bridges once audio is active; report the
        phone putting the leg on hold or taking it off (the legs bridged to it hear
        hold music meanwhile, see apply_media)."""
        if call.leg_id not in self.legs:
            return
        leg = self.legs[call.leg_id]
        held = remote_held(call)
        changed = held != leg.held
        if changed:
            leg.held = held
            self.send({"event": "hold" if held else "resume", "leg": leg.id})
        self.apply_media(leg)
        if changed:
            for other_id in list(leg.bridged):
                other = self.legs.get(other_id)
                if other is not None:
                    self.apply_media(other)

    def drain_offthread(self) -> None:
        """Handle what media-thread callbacks queued (DTMF digits, players' EOF)."""
        while True:
            try:
                item = self.offthread.get_nowait()
            except queue.Empty:
                return
            kind = item[0]
            if kind == "frame":
                _, leg_id, tap, data = item
                leg = self.legs.get(leg_id)
                if leg is not None and leg.tap is tap:
                    self.detect_inband(leg, data)
            elif kind == "dtmf":
                _, call, digit, method = item
                if call.leg_id in self.legs and self.legs[call.leg_id].call is call:
                    name = DTMF_METHOD_NAMES.get(method, str(method))
                    self.on_digit(self.legs[call.leg_id], digit, name)
            elif kind == "eof":
                _, leg_id, player = item
                leg = self.legs.get(leg_id)
                if leg is not None and leg.player is player:
                    leg.player = None  # destroys it: a finished player is useless
                    self.send({"event": "playback_finished", "leg": leg_id, "file": player.path})
                    self.apply_media(leg)  # hold music comes back, if the leg had it

    def detect_inband(self, leg: Leg, data: bytes) -> None:
        """Run the leg's DTMF detector over one frame of what the leg sent."""
        if leg.detector is None:
            return
        for digit in leg.detector.feed_pcm16(data):
            if leg.id not in self.legs or leg.detector is None:
                break  # a digit ended the leg's detection (or the leg) meanwhile
            self.on_digit(leg, digit, "inband")

    def on_digit(self, leg: Leg, digit: str, method: str) -> None:
        """Report a DTMF digit; it may end the leg's recording (``stop_on_digit``)."""
        self.send({"event": "dtmf", "leg": leg.id, "digit": digit, "method": method})
        if leg.rec is not None and digit in leg.rec.stop_on_digit:
            self.finish_recording(leg, "digit", digit=digit)

    def check_media(self, leg: Leg, now: float) -> None:
        """Hang up an answered leg whose phone has sent no RTP for --media-timeout
        seconds (a phone that lost power or network sends no BYE). A leg whose audio
        we are not meant to receive (put on hold with "inactive") does not count."""
        leg.next_media_check = now + MEDIA_CHECK_SECONDS
        stats = stream_stats(leg.call)
        if stats is None:
            return
        if stats["rx_packets"] != leg.rx_packets or not receives_audio(leg.call):
            leg.rx_packets = int(stats["rx_packets"])
            leg.rx_since = now
            return
        if now - leg.rx_since < self.media_timeout:
            return
        log.warning("leg %s: no RTP for %.0f s, hanging up", leg.id, now - leg.rx_since)
        leg.media_timed_out = True
        leg.hangup_requested = True
        leg.call.last_stats = stats
        prm = pj.CallOpParam()
        prm.statusCode = 408
        prm.reason = "Media Timeout"
        leg.call.hangup(prm)

    def tick(self, now: float) -> None:
        """Timers of the main loop: recording end conditions, media timeouts."""
        for leg in list(self.legs.values()):
            if (
                self.media_timeout > 0
                and leg.confirmed
                and not leg.hangup_requested
                and now >= leg.next_media_check
            ):
                self.check_media(leg, now)
            rec = leg.rec
            if rec is None:
                continue
            if rec.max_seconds is not None and now - rec.started >= rec.max_seconds:
                self.finish_recording(leg, "max")
                continue
            if now < rec.next_poll:
                continue
            rec.next_poll = now + LEVEL_POLL_SECONDS
            level = sent_level(leg.call)
            if level is not None and level > rec.silence_level:
                rec.last_sound = now
                rec.sound = True
            elif rec.silence_timeout is not None and now - rec.last_sound >= rec.silence_timeout:
                self.finish_recording(leg, "silence")

    # ------------------------------------------------------------- media glue
    def apply_media(self, leg: Leg) -> None:
        """Connect what the leg should hear/record; idempotent, so safe to repeat.

        An announcement (``play``) takes the place of the leg's hold music: the music
        player is disconnected from the leg while the announcement plays and
        reconnected when it ends. The same goes for the hold music a leg hears while a
        leg bridged to it is held (a held leg's audio is not active, so the bridge
        passes nothing either way until it resumes).
        """
        self.update_hold_music(leg)
        aud = audio_media(leg.call)
        if aud is None:
            return
        music = self.music.get(leg.moh) if leg.moh else None
        on_hold = self.music.get(leg.hold_moh) if leg.hold_moh else None
        if leg.player is not None:
            for m in (music, on_hold):
                if m is not None:
                    disconnect(m.player, aud)
            leg.player.startTransmit(aud)
        else:
            for m in (music, on_hold):
                if m is not None:
                    m.player.startTransmit(aud)
        if leg.rec is not None and leg.rec.recorder is not None:
            aud.startTransmit(leg.rec.recorder)
        for br in self.recordings.values():
            if leg.id in br.legs and br.recorder is not None:
                aud.startTransmit(br.recorder)
        if leg.tap is not None:
            aud.startTransmit(leg.tap)
        for other_id in leg.bridged:
            other = self.legs.get(other_id)
            other_aud = audio_media(other.call) if other else None
            if other_aud is not None:
                aud.startTransmit(other_aud)
                other_aud.startTransmit(aud)

    def finish_recording(self, leg: Leg, reason: str, digit: str | None = None) -> None:
        """Close the leg's recorder (which writes the WAV header) and report it.

        ``recording_finished`` is sent only once the file is closed, so the coordinator
        may read (or mail) it at once.
        """
        rec = leg.rec
        if rec is None:
            return
        leg.rec = None
        aud = audio_media(leg.call)
        if aud is not None and rec.recorder is not None:
            disconnect(aud, rec.recorder)
        rec.recorder = None  # the destructor queues the file's finalisation
        if not wait_file_closed(rec.file):
            log.warning("recording %s still open after stop", rec.file)
        event: dict[str, Any] = {
            "event": "recording_finished",
            "leg": leg.id,
            "file": rec.file,
            "seconds": wav_seconds(rec.file),
            "reason": reason,
            "sound": rec.sound,
        }
        if digit is not None:
            event["digit"] = digit
        self.send(event)

    def leave_music(self, leg: Leg) -> None:
        """Take the leg off its hold music; the last listener destroys the player."""
        if not leg.moh:
            return
        music = self.music.get(leg.moh)
        leg.moh = ""
        if music is None:
            return
        aud = audio_media(leg.call)
        if aud is not None and leg.id not in music.holders:
            disconnect(music.player, aud)
        music.legs.discard(leg.id)
        if not music.legs and not music.holders:
            del self.music[music.file]  # destroys the player

    def music_player(self, path: str) -> Music:
        """The looping player of `path`, created for its first listener."""
        music = self.music.get(path)
        if music is None:
            player = pj.AudioMediaPlayer()
            player.createPlayer(path, 0)  # loops
            music = Music(file=path, player=player)
            self.music[path] = music
        return music

    def update_hold_music(self, leg: Leg) -> None:
        """A leg hears hold music (the shared player of its file) while a leg bridged to
        it is held by its phone, and stops when that leg resumes, hangs up or is
        unbridged. Connecting the player is apply_media's business."""
        want = ""
        if not leg.held and any(
            other.held for other in (self.legs.get(o) for o in leg.bridged) if other is not None
        ):
            want = self.hold_music if leg.hold_music is None else leg.hold_music
        if want == leg.hold_moh:
            return
        self.leave_hold_music(leg)
        if want:
            try:
                music = self.music_player(want)
            except Exception as exc:  # unreadable file: silence, as without music
                self.send({"event": "error", "message": f"hold music {want}: {exc}"})
                return
            music.holders.add(leg.id)
            leg.hold_moh = want

    def leave_hold_music(self, leg: Leg) -> None:
        """Stop the hold music a leg hears because of a held peer (see above)."""
        if not leg.hold_moh:
            return
        music = self.music.get(leg.hold_moh)
        leg.hold_moh = ""
        if music is None:
            return
        aud = audio_media(leg.call)
        if aud is not None and leg.moh != music.file:
            disconnect(music.player, aud)
        music.holders.discard(leg.id)
        if not music.legs and not music.holders:
            del self.music[music.file]  # destroys the player

    def finish_bridge_recording(self, br: BridgeRecording, reason: str) -> None:
        """Close a ``record_bridge`` recorder and report it once the WAV is complete."""
        if self.recordings.get(br.rec) is br:
            del self.recordings[br.rec]
        if br.recorder is None:
            return
        for leg_id in br.legs:
            leg = self.legs.get(leg_id)
            aud = audio_media(leg.call) if leg is not None else None
            if aud is not None:
                disconnect(aud, br.recorder)
        br.recorder = None  # the destructor queues the file's finalisation
        if not wait_file_closed(br.file):
            log.warning("recording %s still open after stop", br.file)
        self.send(
            {
                "event": "bridge_recording_finished",
                "rec": br.rec,
                "legs": list(br.legs),
                "file": br.file,
                "seconds": wav_seconds(br.file),
                "reason": reason,
            }
        )

    def retire_tap(self, leg: Leg) -> None:
        """Stop in-band detection on a leg; its tap goes back to the pool."""
        tap = leg.tap
        if tap is None:
            return
        leg.tap = None
        leg.detector = None
        tap.leg = None
        aud = audio_media(leg.call)
        if aud is not None:
            disconnect(aud, tap)
        self.free_taps.append(tap)

    def release_media(self, leg: Leg) -> None:
        """Stop everything attached to a leg that is going away."""
        leg.player = None
        self.leave_music(leg)
        self.retire_tap(leg)
        self.finish_recording(leg, "hangup")
        for br in [r for r in self.recordings.values() if leg.id in r.legs]:
            self.finish_bridge_recording(br, "hangup")
        self.leave_hold_music(leg)
        for other_id in leg.bridged:
            other = self.legs.get(other_id)
            if other is not None:
                other.bridged.discard(leg.id)
                self.update_hold_music(other)  # a held leg hanging up ends its music
        leg.bridged.clear()

    # --------------------------------------------------------------- commands
    def get_leg(self, msg: dict[str, Any], key: str = "leg") -> Leg:
        leg_id = msg.get(key)
        leg = self.legs.get(str(leg_id)) if leg_id is not None else None
        if leg is None:
            raise CommandError(f"unknown leg {leg_id!r}")
        return leg

    def cmd_ring(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        code = int(msg.get("code", 180))
        if not leg.incoming or leg.answered or not 100 < code < 200:
            raise CommandError("ring needs an unanswered incoming leg and a 1xx code")
        prm = pj.CallOpParam()
        prm.statusCode = code
        leg.call.answer(prm)

    def cmd_answer(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        code = int(msg.get("code", 200))
        if not leg.incoming or leg.answered:
            raise CommandError("answer needs an unanswered incoming leg")
        prm = pj.CallOpParam()
        prm.statusCode = code
        leg.call.answer(prm)
        if code >= 200:
            leg.answered = True
            if code >= 300:
                leg.hangup_requested = True

    def cmd_hangup(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        prm = pj.CallOpParam()
        prm.statusCode = int(msg.get("code", 603))
        if msg.get("reason"):
            prm.reason = str(msg["reason"])
        leg.hangup_requested = True
        stats = stream_stats(leg.call)
        if stats is not None:
            leg.call.last_stats = stats
        # For an unanswered incoming leg pjsua sends the final `statusCode`; for an
        # unanswered outgoing one a CANCEL; otherwise a BYE.
        leg.call.hangup(prm)

    def cmd_play(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        path = str(msg.get("file", ""))
        if not os.path.isfile(path):
            raise CommandError(f"no such file {path!r}")
        loop = bool(msg.get("loop", False))
        player = Player(self.offthread, leg.id, path)
        player.loop = loop
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        if not msg.get("resume_moh", True):
            self.leave_music(leg)
        leg.player = player  # replaces (and so destroys) any previous player
        self.apply_media(leg)  # and interrupts the leg's hold music, if any

    def cmd_stop(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        leg.player = None
        self.apply_media(leg)  # hold music comes back, if the leg had it

    def cmd_moh_start(self, msg: dict[str, Any]) -> dict[str, Any]:
        leg = self.get_leg(msg)
        path = str(msg.get("file", ""))
        if not os.path.isfile(path):
            raise CommandError(f"no such file {path!r}")
        if leg.moh != path:
            self.leave_music(leg)
            music = self.music_player(path)
            music.legs.add(leg.id)
            leg.moh = path
        self.apply_media(leg)
        return {"listeners": len(self.music[path].legs)}

    def cmd_moh_stop(self, msg: dict[str, Any]) -> None:
        self.leave_music(self.get_leg(msg))

    def cmd_record(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        path = str(msg.get("file", ""))
        if not path.lower().endswith(".wav"):
            raise CommandError("record file must end in .wav")
        max_seconds = optional_positive(msg, "max_seconds")
        silence_timeout = optional_positive(msg, "silence_timeout")
        level = msg.get("silence_level", DEFAULT_SILENCE_LEVEL)
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 <= level <= 100:
            raise CommandError("silence_level must be a number 0..100")
        digits = msg.get("stop_on_digit") or ""
        if not isinstance(digits, str) or not set(digits) <= DTMF_DIGITS:
            raise CommandError("stop_on_digit must be a string of DTMF digits")
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)  # may fail: then a recording in progress goes on
        self.finish_recording(leg, "replaced")
        now = time.monotonic()
        leg.rec = Recording(
            recorder=recorder,
            file=path,
            started=now,
            max_seconds=max_seconds,
            silence_timeout=silence_timeout,
            silence_level=int(level),
            stop_on_digit=digits,
            last_sound=now,
            next_poll=now + LEVEL_POLL_SECONDS,
        )
        self.apply_media(leg)

    def cmd_stop_record(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        if leg.rec is None:
            raise CommandError("leg is not recording")
        self.finish_recording(leg, "stopped")

    def cmd_inband(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        if not msg.get("on", True):
            self.retire_tap(leg)
            return
        if leg.tap is not None:
            return
        if self.free_taps:
            tap = self.free_taps.pop()
        else:
            tap = DtmfTap(self.offthread)
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, CLOCK_RATE, 1, TAP_FRAME_USEC, 16)
            tap.createPort(f"dtmf-tap-{len(self.taps)}", fmt)
            self.taps.append(tap)
        tap.leg = leg.id
        leg.tap = tap
        leg.detector = DtmfDetector(CLOCK_RATE)
        self.apply_media(leg)

    def cmd_debug(self, msg: dict[str, Any]) -> dict[str, Any]:
        legs = list(self.legs.values())
        return {
            "debug": {
                "legs": len(legs),
                "players": sum(leg.player is not None for leg in legs) + len(self.music),
                "music_players": len(self.music),
                "recorders": sum(leg.rec is not None for leg in legs) + len(self.recordings),
                "taps": sum(leg.tap is not None for leg in legs),
                "idle_taps": len(self.free_taps),
                "conf_ports": int(self.ep.mediaActivePorts()),
                "music": {m.file: sorted(m.legs | m.holders) for m in self.music.values()},
                "held": sorted(leg.id for leg in legs if leg.held),
                "bridge_recordings": {r.rec: list(r.legs) for r in self.recordings.values()},
                "levels": {
                    leg.id: {"sent": sent_level(leg.call), "heard": heard_level(leg.call)}
                    for leg in legs
                },
            }
        }

    def cmd_bridge(self, msg: dict[str, Any]) -> None:
        a, b = self.get_leg(msg, "a"), self.get_leg(msg, "b")
        if a is b:
            raise CommandError("cannot bridge a leg to itself")
        if "hold_music" in msg:  # what each hears while the other holds ("" = silence)
            music = str(msg.get("hold_music") or "")
            if music and not os.path.isfile(music):
                raise CommandError(f"no such file {music!r}")
            a.hold_music = b.hold_music = music
        a.bridged.add(b.id)
        b.bridged.add(a.id)
        self.apply_media(a)
        self.apply_media(b)  # b hears hold music if a is held already

    def cmd_unbridge(self, msg: dict[str, Any]) -> None:
        a, b = self.get_leg(msg, "a"), self.get_leg(msg, "b")
        a.bridged.discard(b.id)
        b.bridged.discard(a.id)
        a_aud, b_aud = audio_media(a.call), audio_media(b.call)
        if a_aud is not None and b_aud is not None:
            a_aud.stopTransmit(b_aud)
            b_aud.stopTransmit(a_aud)
        self.update_hold_music(a)  # neither hears the other's hold any more
        self.update_hold_music(b)

    def cmd_record_bridge(self, msg: dict[str, Any]) -> None:
        """Record several legs (usually the two of a bridge) mixed into one WAV."""
        rec = str(msg.get("rec") or "")
        if not rec:
            raise CommandError("record_bridge needs a rec name")
        names = msg.get("legs")
        if not isinstance(names, list) or not names:
            raise CommandError("legs must be a list of leg ids")
        legs = [self.get_leg({"leg": name}) for name in names]
        path = str(msg.get("file", ""))
        if not path.lower().endswith(".wav"):
            raise CommandError("record file must end in .wav")
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)  # may fail: then a recording in progress goes on
        old = self.recordings.get(rec)
        if old is not None:
            self.finish_bridge_recording(old, "replaced")
        self.recordings[rec] = BridgeRecording(
            rec=rec, legs=tuple(leg.id for leg in legs), file=path, recorder=recorder
        )
        for leg in legs:
            self.apply_media(leg)

    def cmd_stop_record_bridge(self, msg: dict[str, Any]) -> None:
        br = self.recordings.get(str(msg.get("rec") or ""))
        if br is None:
            raise CommandError(f"no bridge recording {msg.get('rec')!r}")
        self.finish_bridge_recording(br, "stopped")

    def cmd_originate(self, msg: dict[str, Any]) -> None:
        assert self.acc is not None
        leg_id = str(msg.get("leg") or "")
        uri = str(msg.get("uri") or "")
        if not leg_id or leg_id in self.legs:
            raise CommandError(f"leg id {leg_id!r} missing or in use")
        if len(self.legs) + len(self.rejected) >= MAX_LEGS:
            raise CommandError("no free call slot")
        auth = msg.get("auth")  # a trunk's credentials (never logged)
        acc = self.trunk_account(auth) if isinstance(auth, dict) else self.acc
        call = LegCall(self, acc)
        call.leg_id = leg_id
        prm = pj.CallOpParam(True)
        for name, value in (msg.get("headers") or {}).items():
            h = pj.SipHeader()
            h.hName = str(name)
            h.hValue = str(value)
            prm.txOption.headers.append(h)
        # Registered before makeCall: its CALLING callback may run inside makeCall.
        self.legs[leg_id] = Leg(id=leg_id, call=call, incoming=False)
        codecs = msg.get("codecs")
        # The offer is built inside makeCall: codec priorities set just around it apply
        # to this call only (the main thread is the only one touching pjsua).
        saved = self.prefer_codecs([str(c) for c in codecs]) if codecs else None
        try:
            call.makeCall(uri, prm)
        except Exception:
            self.legs.pop(leg_id, None)
            raise
        finally:
            if saved is not None:
                self.restore_codecs(saved)

    def cmd_dtmf(self, msg: dict[str, Any]) -> None:
        leg = self.get_leg(msg)
        method = str(msg.get("method", "rfc2833"))
        if method not in DTMF_METHODS:
            raise CommandError(f"unknown dtmf method {method!r}")
        prm = pj.CallSendDtmfParam()
        prm.digits = str(msg.get("digits", ""))
        prm.method = DTMF_METHODS[method]
        leg.call.sendDtmf(prm)

    def cmd_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        leg = self.get_leg(msg)
        return {"stats": stream_stats(leg.call) or leg.call.last_stats or dict(ZERO_STATS)}

    def cmd_shutdown(self, msg: dict[str, Any]) -> None:
        self.running = False

    COMMANDS: dict[str, Callable[[Worker, dict[str, Any]], dict[str, Any] | None]] = {
        "ring": cmd_ring,
        "answer": cmd_answer,
        "hangup": cmd_hangup,
        "play": cmd_play,
        "stop": cmd_stop,
        "record": cmd_record,
        "stop_record": cmd_stop_record,
        "bridge": cmd_bridge,
        "unbridge": cmd_unbridge,
        "originate": cmd_originate,
        "dtmf": cmd_dtmf,
        "stats": cmd_stats,
        "shutdown": cmd_shutdown,
        "moh_start": cmd_moh_start,
        "record_bridge": cmd_record_bridge,
        "stop_record_bridge": cmd_stop_record_bridge,
        "moh_stop": cmd_moh_stop,
        "inband": cmd_inband,
        "debug": cmd_debug,
    }

    # -------------------------------------------------------------- main loop
    def run(self) -> None:
        """Poll pjsua2 and the control socket in this one thread until told to stop."""
        self.send(
            {
                "event": "hello",
                "worker": self.worker_id,
                "sip_port": self.sip_port,
                "max_legs": MAX_LEGS,
            }
        )
        while self.running:
            if time.monotonic() < self.brisk_until:
                wait_ms = BRISK_POLL_MS
            else:
                wait_ms = POLL_MS if self.legs else IDLE_POLL_MS
            self.ep.libHandleEvents(wait_ms)
            self.drain_offthread()
            if self.legs:
                self.tick(time.monotonic())
            wlist = [self.sock] if self.outbuf and self.control_open else []
            try:
                r, w, _ = select.select([self.sock], wlist, [], 0)
            except InterruptedError:
                continue
            if w:
                self.flush()
            if r:
                self.read_control()

    def stop(self) -> None:
        """Hang up every leg, let the BYEs/CANCELs go out, then destroy the library."""
        self.hangup_all()
        # Let final responses/ACKs settle briefly.
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            self.ep.libHandleEvents(10)
        self.forget_legs()
        self.drop_taps()
        self.music.clear()
        self.recordings.clear()
        # Every pj.Call/player/recorder/port must be gone before libDestroy(): a Call
        # finalised afterwards asserts inside pjsua and aborts the process.
        gc.collect()
        if self.control_open and self.outbuf:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
                self.sock.sendall(self.outbuf)
            except OSError:
                pass
        if self.acc is not None:
            self.acc.shutdown()
            self.acc = None
        self.ep.libDestroy()

    def hangup_all(self) -> None:
        """Hang up all calls and wait (bounded) for their DISCONNECTED callbacks.

        Kept apart from ``stop`` so that no loop variable there keeps a Leg (and its
        pj.Call) alive until after libDestroy.
        """
        if not (self.legs or self.rejected):
            return
        for leg in self.legs.values():
            leg.hangup_requested = True
        try:
            self.ep.hangupAllCalls()
        except Exception:
            log.debug("hangupAllCalls failed", exc_info=True)
        deadline = time.monotonic() + 2.0
        while (self.legs or self.rejected) and time.monotonic() < deadline:
            self.ep.libHandleEvents(10)
            self.drain_offthread()

    def drop_taps(self) -> None:
        """Destroy the pooled DTMF taps, only now that every call is gone (DtmfTap).

        A method of its own so that no loop variable in ``stop`` keeps a tap alive
        until after libDestroy (its destructor would then call into a dead pjlib).
        """
        for tap in self.taps:
            tap.leg = None
        self.free_taps.clear()
        self.taps.clear()
        self.forget_legs()  # queued frames hold taps too

    def forget_legs(self) -> None:
        """Drop whatever legs did not disconnect in time (media first, then calls)."""
        for leg in list(self.legs.values()):
            self.release_media(leg)
        self.legs.clear()
        self.rejected.clear()
        while True:  # queued DTMF items reference calls too
            try:
                self.offthread.get_nowait()
            except queue.Empty:
                break


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m softswitch.media.worker")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-port-count", type=int, required=True)
    p.add_argument("--edge", required=True, help="127.0.0.1:PORT of the coordinator's edge")
    p.add_argument("--public-address", required=True)
    p.add_argument("--log-file")
    p.add_argument("--log-level", type=int, default=3)
    p.add_argument(
        "--media-timeout",
        type=float,
        default=0.0,
        help="hang up an answered leg after this many seconds without RTP (0: off)",
    )
    p.add_argument(
        "--hold-music",
        default="",
        help="WAV the other party of a bridge hears while a phone holds the call",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: the exit code is 0 after a clean shutdown or control EOF."""
    args = parse_args(argv)
    # stdout belongs to nobody: send fd 1 to /dev/null so no library banner or stray
    # print can ever interleave with anything the parent reads.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.DEBUG if args.log_level >= 5 else logging.INFO,
        format=f"%(asctime)s worker{args.id} %(levelname)s %(message)s",
    )
    sock = socket.socket(fileno=args.control_fd)
    sock.setblocking(False)
    worker = Worker(args, sock)

    def on_signal(signum: int, frame: Any) -> None:
        worker.running = False

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C in a terminal reaches the whole process group; the coordinator decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker.start()
    except Exception as exc:
        worker.send({"event": "error", "message": f"start failed: {pj_error_text(exc)}"})
        sys.stderr.write(f"media worker {args.id}: start failed: {pj_error_text(exc)}\n")
        return 1
    try:
        worker.run()
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Skip interpreter teardown: pjsua2's SWIG objects must not be finalised after
    # libDestroy(), and there is nothing left to clean up.
    os._exit(code)
