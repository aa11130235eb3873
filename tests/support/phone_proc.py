"""Child process of a test phone: one pjsua2 endpoint driven by JSON lines on stdin.

The pjsua2 wheel allows a single endpoint per process, so every test phone is its own
process (``tests/support/phone.py`` starts it). Commands arrive on stdin; replies and
events leave on the original stdout, which is moved to a private descriptor at start so
that nothing pjsua2 might print can corrupt the protocol (fd 1 then points at stderr).

Like the media worker, pjsua2 runs with ``threadCnt=0`` and ``mainThreadOnly``: the main
loop alternates ``libHandleEvents`` with reading stdin, and callbacks from media threads
(DTMF) are queued and reported from the main loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import select
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

from softswitch.media.worker import (
    DTMF_METHOD_NAMES,
    DTMF_METHODS,
    STATE_NAMES,
    audio_media,
    header_value,
    parse_sip_message,
    pj_error_text,
    stream_stats,
    wait_file_closed,
)

MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}


class PhoneCall(pj.Call):
    """A call of the phone; callbacks are forwarded to the phone object."""

    def __init__(self, phone: PhoneProc, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.phone = phone
        self.name = ""

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        self.phone.guard(self.phone.on_call_state, self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        self.phone.guard(self.phone.apply_media, self.name)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        self.phone.offthread.put((self.name, str(prm.digit), int(prm.method)))

    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:  # noqa: N802
        """An INVITE with Replaces took this call's place (attended transfer): the new
        call gets a name and a slot like any other; this one ends."""
        assert self.phone.acc is not None
        new = PhoneCall(self.phone, self.phone.acc, prm.newCallId)
        new.name = self.phone.new_name()
        self.phone.calls[new.name] = CallSlot(new)
        prm.newCall = new
        self.phone.emit({"event": "replaced", "call": self.name, "new_call": new.name})

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        """NOTIFYs about a transfer this phone asked for (REFER): progress of the
        transferred call, as the transferee reports it."""
        self.phone.emit(
            {
                "event": "xfer_status",
                "call": self.name,
                "code": int(prm.statusCode),
                "reason": str(prm.reason),
                "final": bool(prm.finalNotify),
            }
        )


class PhoneAccount(pj.Account):
    """The phone's account: registration results and incoming calls."""

    def __init__(self, phone: PhoneProc):
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        self.phone.guard(self.phone.on_reg_state, int(prm.code), int(prm.expiration))

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.phone.guard(self.phone.on_incoming_call, prm)


@dataclass
class CallSlot:
    """What the phone keeps per call until DISCONNECTED."""

    call: PhoneCall
    player: pj.AudioMediaPlayer | None = None
    recorder: pj.AudioMediaRecorder | None = None
    record_file: str = ""


class PhoneProc:
    """The child's state and main loop."""

    def __init__(self, args: argparse.Namespace, out_fd: int):
        self.args = args
        self.out_fd = out_fd
        self.running = True
        self.ep = pj.Endpoint()
        self.acc: PhoneAccount | None = None
        self.acc_cfg: pj.AccountConfig | None = None
        self.calls: dict[str, CallSlot] = {}
        self.counter = 0
        self.offthread: queue.SimpleQueue[tuple[str, str, int]] = queue.SimpleQueue()
        self.pending_reg: Any = None
        self.auto_code: int | None = None
        self.auto_delay = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.inbuf = b""

    # ----------------------------------------------------------------- setup
    def start(self) -> dict[str, Any]:
        a = self.args
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4
        cfg.uaConfig.userAgent = "softswitch-test-phone"
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.level = 5 if a.log_file else 0
        cfg.logConfig.msgLogging = 1 if a.log_file else 0
        if a.log_file:
            cfg.logConfig.filename = a.log_file
        cfg.medConfig.sndAutoCloseTime = -1
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True  # a steady test tone must not be suppressed as silence
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        # Offer G.711 first, as office phones and trunks do (pjsua's default is speex).
        self.ep.codecSetPriority("PCMU/8000", 255)
        self.ep.codecSetPriority("PCMA/8000", 254)

        tcfg = pj.TransportConfig()
        tcfg.port = 0  # the OS picks a free port: tests run in parallel
        tcfg.boundAddress = "127.0.0.1"
        udp_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        tcp_id = None
        if a.transport == "tcp":
            tcfg2 = pj.TransportConfig()
            tcfg2.port = 0
            tcfg2.boundAddress = "127.0.0.1"
            tcp_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcfg2)
        self.ep.libStart()
        udp_port = int(str(self.ep.transportGetInfo(udp_id).localName).rsplit(":", 1)[1])
        tcp_port = (
            int(str(self.ep.transportGetInfo(tcp_id).localName).rsplit(":", 1)[1])
            if tcp_id is not None
            else None
        )

        acfg = pj.AccountConfig()
        host, port = a.server.rsplit(":", 1) if a.server else ("127.0.0.1", "5060")
        tparam = ";transport=tcp" if a.transport == "tcp" else ""
        if a.user:
            acfg.idUri = f"sip:{a.user}@{host}:{port}"
            acfg.regConfig.registrarUri = f"sip:{host}:{port}{tparam}"
            acfg.regConfig.registerOnAdd = False
            acfg.regConfig.disableRegOnModify = True
            acfg.regConfig.retryIntervalSec = 0  # a failed REGISTER stays failed
            acfg.sipConfig.proxies.append(f"sip:{host}:{port};lr{tparam}")
            if a.password is not None:
                acfg.sipConfig.authCreds.append(
                    pj.AuthCredInfo("digest", "*", a.user, 0, a.password)
                )
        else:
            acfg.idUri = f"sip:phone@127.0.0.1:{udp_port}"
        acfg.sipConfig.transportId = tcp_id if tcp_id is not None else udp_id
        mt = acfg.mediaConfig.transportConfig
        mt.port = random.randrange(20000, 60000, 2)
        mt.portRange = 2000
        mt.boundAddress = "127.0.0.1"
        self.acc_cfg = acfg
        self.acc = PhoneAccount(self)
        self.acc.create(acfg, True)
        return {"sip_port": udp_port, "tcp_port": tcp_port}

    # ------------------------------------------------------------------ I/O
    def emit(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self.out_fd, data)
            data = data[n:]

    def guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a callback body; an exception escaping into pjsua2 would abort."""
        try:
            fn(*args)
        except Exception:
            self.emit({"event": "error", "message": traceback.format_exc()})

    # ------------------------------------------------------------ callbacks
    def on_reg_state(self, code: int, expiration: int) -> None:
        self.emit({"event": "reg", "code": code, "expiration": expiration})
        if self.pending_reg is not None and (code >= 200 or code == 0):
            rid, self.pending_reg = self.pending_reg, None
            self.emit({"reply": rid, "ok": True, "code": code, "expiration": expiration})

    def new_name(self) -> str:
        self.counter += 1
        return f"c{self.counter}"

    def on_incoming_call(self, prm: pj.OnIncomingCallParam) -> None:
        assert self.acc is not None
        call = PhoneCall(self, self.acc, prm.callId)
        call.name = self.new_name()
        self.calls[call.name] = CallSlot(call)
        start, headers = parse_sip_message(str(prm.rdata.wholeMsg))
        parts = start.split(" ")
        self.emit(
            {
                "event": "incoming",
                "call": call.name,
                "from": header_value(headers, "From"),
                "to": header_value(headers, "To"),
                "request_uri": parts[1] if len(parts) > 1 else "",
                "headers": {n: v for n, v in headers if n.lower().startswith("x-")},
                "call_id": header_value(headers, "Call-ID"),
            }
        )
        name = call.name
        if self.auto_code is None:
            self.timers.append((0.0, lambda: self.answer(name, 180)))
        else:
            code = self.auto_code
            self.timers.append(
                (time.monotonic() + self.auto_delay, lambda: self.answer(name, code))
            )

    def on_call_state(self, call: PhoneCall) -> None:
        info = call.getInfo()
        state = STATE_NAMES.get(info.state)
        if state is None:
            return
        event: dict[str, Any] = {
            "event": "state",
            "call": call.name,
            "state": state,
            "code": int(info.lastStatusCode),
            "reason": str(info.lastReason),
        }
        if state == "disconnected":
            slot = self.calls.pop(call.name, None)
            if slot is not None:
                slot.player = None
                if slot.recorder is not None:
                    slot.recorder = None
                    wait_file_closed(slot.record_file)  # complete before the test reads it
        self.emit(event)

    def apply_media(self, name: str) -> None:
        slot = self.calls.get(name)
        if slot is None:
            return
        with contextlib.suppress(Exception):
            info = slot.call.getInfo()  # kept: its media vector dies with the temporary
            for mi in info.media:
                if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                    self.emit(
                        {"event": "media", "call": name, "status": MEDIA_STATUS.get(mi.status)}
                    )
                    break
        aud = audio_media(slot.call)
        if aud is None:
            return
        if slot.player is not None:
            slot.player.startTransmit(aud)
        if slot.recorder is not None:
            aud.startTransmit(slot.recorder)

    # ------------------------------------------------------------- commands
    def slot(self, msg: dict[str, Any]) -> CallSlot:
        slot = self.calls.get(str(msg.get("call")))
        if slot is None:
            raise ValueError(f"no live call {msg.get('call')!r}")
        return slot

    def answer(self, name: str, code: int) -> None:
        slot = self.calls.get(name)
        if slot is None:
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        slot.call.answer(prm)

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Run one command; returns the reply fields, or None when it replies later."""
        cmd = msg.get("cmd")
        assert self.acc is not None and self.acc_cfg is not None
        if cmd == "register":
            self.acc_cfg.regConfig.timeoutSec = int(msg.get("expires", 300))
            self.acc.modify(self.acc_cfg)
            self.pending_reg = msg.get("id")
            self.acc.setRegistration(True)
            return None
        if cmd == "unregister":
            self.pending_reg = msg.get("id")
            self.acc.setRegistration(False)
            return None
        if cmd == "auto_answer":
            code = msg.get("code")
            self.auto_code = None if code is None else int(code)
            self.auto_delay = float(msg.get("delay", 0.0))
            return {}
        if cmd == "call":
            call = PhoneCall(self, self.acc)
            call.name = self.new_name()
            prm = pj.CallOpParam(True)
            for hname, value in (msg.get("headers") or {}).items():
                h = pj.SipHeader()
                h.hName = str(hname)
                h.hValue = str(value)
                prm.txOption.headers.append(h)
            self.calls[call.name] = CallSlot(call)
            try:
                call.makeCall(str(msg["uri"]), prm)
            except Exception:
                self.calls.pop(call.name, None)
                raise
            return {"call": call.name}
        if cmd == "answer":
            slot = self.slot(msg)
            prm = pj.CallOpParam()
            prm.statusCode = int(msg.get("code", 200))
            slot.call.answer(prm)
            return {}
        if cmd == "hangup":
            slot = self.slot(msg)
            prm = pj.CallOpParam()
            if msg.get("code"):
                prm.statusCode = int(msg["code"])
            slot.call.hangup(prm)
            return {}
        if cmd == "play":
            slot = self.slot(msg)
            player = pj.AudioMediaPlayer()
            loop = bool(msg.get("loop", True))
            player.createPlayer(str(msg["file"]), 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
            slot.player = player
            self.apply_media(str(msg["call"]))
            return {}
        if cmd == "stop_play":
            self.slot(msg).player = None
            return {}
        if cmd == "record":
            slot = self.slot(msg)
            rec = pj.AudioMediaRecorder()
            rec.createRecorder(str(msg["file"]))
            slot.recorder = rec
            slot.record_file = str(msg["file"])
            self.apply_media(str(msg["call"]))
            return {}
        if cmd == "stop_record":
            slot = self.calls.get(str(msg.get("call")))
            if slot is not None and slot.recorder is not None:
                slot.recorder = None
                wait_file_closed(slot.record_file)
            return {}
        if cmd == "dtmf":
            slot = self.slot(msg)
            prm = pj.CallSendDtmfParam()
            prm.digits = str(msg["digits"])
            prm.method = DTMF_METHODS[str(msg.get("method", "rfc2833"))]
            slot.call.sendDtmf(prm)
            return {}
        if cmd == "hold":  # re-INVITE with a=sendonly
            self.slot(msg).call.setHold(pj.CallOpParam(True))
            return {}
        if cmd == "unhold":  # re-INVITE with a=sendrecv
            prm = pj.CallOpParam(True)
            prm.opt.flag = pj.PJSUA_CALL_UNHOLD
            self.slot(msg).call.reinvite(prm)
            return {}
        if cmd == "xfer":  # blind transfer: REFER to `target` (a number or sip: URI)
            target = str(msg["target"])
            if not target.startswith("sip:"):
                host, port = self.args.server.rsplit(":", 1)
                target = f"sip:{target}@{host}:{port}"
            self.slot(msg).call.xfer(target, pj.CallOpParam(True))
            return {}
        if cmd == "xfer_replaces":  # attended: REFER to the other call's party, Replaces
            dest = self.calls[str(msg["other"])].call
            self.slot(msg).call.xferReplaces(dest, pj.CallOpParam(True))
            return {}
        if cmd == "stats":
            slot = self.slot(msg)
            return {"stats": stream_stats(slot.call)}
        if cmd == "quit":
            self.running = False
            return {}
        raise ValueError(f"unknown cmd {cmd!r}")

    def handle_line(self, line: bytes) -> None:
        msg = json.loads(line)
        rid = msg.get("id")
        try:
            result = self.handle(msg)
        except Exception as exc:
            self.emit({"reply": rid, "ok": False, "error": pj_error_text(exc)})
            return
        if result is not None:
            self.emit({"reply": rid, "ok": True, **result})

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        stdin_fd = sys.stdin.fileno()
        os.set_blocking(stdin_fd, False)
        while self.running:
            self.ep.libHandleEvents(5)
            while True:
                try:
                    name, digit, method = self.offthread.get_nowait()
                except queue.Empty:
                    break
                self.emit(
                    {
                        "event": "dtmf",
                        "call": name,
                        "digit": digit,
                        "method": DTMF_METHOD_NAMES.get(method, str(method)),
                    }
                )
            now = time.monotonic()
            due = [t for t in self.timers if t[0] <= now]
            if due:
                self.timers = [t for t in self.timers if t[0] > now]
                for _, fn in due:
                    self.guard(fn)
            r, _, _ = select.select([stdin_fd], [], [], 0.005)
            if not r:
                continue
            try:
                data = os.read(stdin_fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                break  # the test is gone
            self.inbuf += data
            while b"\n" in self.inbuf:
                line, _, self.inbuf = self.inbuf.partition(b"\n")
                if line.strip():
                    self.handle_line(line)

    def stop(self) -> None:
        try:
            self.ep.hangupAllCalls()
        except Exception:
            pass
        end = time.monotonic() + 1.0
        while self.calls and time.monotonic() < end:
            self.ep.libHandleEvents(10)
        self.calls.clear()
        if self.acc is not None:
            self.acc.shutdown()
            self.acc = None
        self.ep.libDestroy()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--server", default="127.0.0.1:5060")
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p.add_argument("--log-file")
    args = p.parse_args()
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # pjsua2 prints its banner before any log config applies
    os.close(devnull)
    phone = PhoneProc(args, out_fd)
    try:
        ports = phone.start()
    except Exception as exc:
        phone.emit({"event": "fatal", "message": pj_error_text(exc)})
        os._exit(1)
    phone.emit({"event": "hello", **ports})
    try:
        phone.run()
    finally:
        phone.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
