"""Missed-call notifications through a real switch: a caller (test phone) waits in a
queue while the operator's phone rings unanswered, then hangs up. The queue's
supervisors are an e-mail address (an aiosmtpd server on 127.0.0.1) and a webhook (an
aiohttp receiver on 127.0.0.1); both must get the facts the queue_log recorded. With
the receiver down during the call and the switch restarted before it comes back, the
webhook must still arrive, once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path

from aiohttp import web

from softswitch.notify.content import show_time
from tests.support.audio import make_tone
from tests.support.e2e import registered
from tests.support.phone import wait_until
from tests.switch import RunningSwitch
from tests.test_mail import Server, free_port

SECRET = "e2e-webhook-secret-0123456789"
TZ = "Europe/Berlin"


class HookReceiver:
    """An aiohttp webhook receiver on 127.0.0.1 in a thread of its own (the phones and
    the switch are driven synchronously)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(text="thanks")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def payloads(self, event: str) -> list[tuple[dict[str, str], bytes, dict]]:
        return [
            (h, b, json.loads(b)) for h, b in list(self.got) if h["X-Softswitch-Event"] == event
        ]


def notify_config(tmp: Path, smtp_port: int, hook_url: str, **queue: object) -> str:
    music = make_tone(str(tmp / "music.wav"), 500.0, 2.0)
    lines = [
        "[switch.smtp]",
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'from = "pbx@example.test"',
        "timeout = 5",
        "",
        "[notify]",
        f'webhook_secret = "{SECRET}"',
        "webhook_timeout = 5",
        'digest_time = ""',
        "",
        "[block.line]",
        'type = "queue"',
        'members = ["101"]',
        f'music = "{music}"',
        f'notify = ["boss@example.test", "{hook_url}"]',
    ]
    for key, value in queue.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines) + "\n"


def start(tmp: Path, smtp_port: int, hook_url: str, **queue: object) -> RunningSwitch:
    return RunningSwitch(
        tmp,
        notify_config(tmp, smtp_port, hook_url, **queue),
        entry='"line"',
        entry_number='"100"',
        timezone=f'"{TZ}"',
    )


def queue_rows(sw: RunningSwitch, kind: str) -> list[dict]:
    with sw.db() as conn:
        rows = conn.execute("SELECT * FROM queue_log WHERE kind = ? ORDER BY id", (kind,))
        return [dict(r) for r in rows]


def outbox(sw: RunningSwitch, kind: str) -> list[dict]:
    with sw.db() as conn:
        rows = conn.execute("SELECT * FROM outbox WHERE kind = ? ORDER BY id", (kind,))
        return [dict(r) for r in rows]


def logged_in(sw: RunningSwitch, agent: str) -> bool:
    rows = [r for r in queue_rows(sw, "login") + queue_rows(sw, "logout") if r["agent"] == agent]
    rows.sort(key=lambda r: r["id"])
    return bool(rows) and rows[-1]["kind"] == "login"


def signed(headers: dict[str, str], body: bytes) -> bool:
    want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Softswitch-Signature", ""), want)


def mails(smtp: Server, word: str) -> list:
    return [m for _, _, m in list(smtp.sink.received) if word in m["Subject"]]


def plain(msg) -> str:
    return msg.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_missed_ring_and_missed_call_reach_mail_and_webhook(tmp_path, made):
    smtp = Server(free_port())
    smtp.start()
    hooks = HookReceiver()
    hooks.start()
    sw = start(
        tmp_path,
        smtp.port,
        hooks.url,
        strategy='"round-robin"',
        answer_timeout=2,
        retry=1,
        notify_missed_rings=True,
    )
    try:
        op = registered(sw, "101", made)  # rings (180) and never answers
        assert wait_until(lambda: logged_in(sw, "101"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        first = op.wait_incoming()
        op.wait_state(first, "disconnected", timeout=10)  # the 2 s answer timeout: missed
        second = op.wait_incoming(timeout=10)  # rung again after `retry`
        op.wait_state(second, "early")
        caller.hangup(call)  # ... and the caller gives up while it rings
        op.wait_state(second, "disconnected")
        assert wait_until(lambda: queue_rows(sw, "abandoned"), 10)
        (gone,) = queue_rows(sw, "abandoned")
        attempts = json.loads(gone["attempts"])
        assert [(a["agent"], a["result"]) for a in attempts] == [
            ("101", "missed"),
            ("101", "cancelled"),
        ]
        missed_ring_row = next(r for r in queue_rows(sw, "ring") if r["result"] == "missed")

        assert wait_until(lambda: len(smtp.sink.received) >= 2 and len(hooks.got) >= 2, 20)

        # -- the e-mail about the caller
        (mail,) = mails(smtp, "Missed call")
        assert mail["To"] == "boss@example.test"
        assert mail["Subject"] == (
            f"Missed call in queue line: 103, hung up after {round(gone['wait'])} s"
        )
        text = plain(mail).splitlines()
        assert "Caller:  103" in text
        assert f"Time:    {show_time(gone['time'], TZ)}" in text
        assert "Queue:   line" in text
        assert f"Waited:  {round(gone['wait'])} s" in text
        assert "Outcome: hung up while waiting" in text
        for a in attempts:
            rang = f"{round(a['seconds'])} s"
            assert any(
                line.startswith("  101 Alice") and f"rang {rang:>6}  {a['result']}" in line
                for line in text
            ), (a, text)
        html = mail.get_body(("html",)).get_content()
        assert "<td>103</td>" in html and "<td>Alice</td>" in html
        # -- the e-mail about the ring nobody answered
        (ring_mail,) = mails(smtp, "did not answer")
        assert "operator 101 Alice did not answer a call from 103" in ring_mail["Subject"]
        assert f"Rang:     {round(missed_ring_row['ring_time'])} s" in plain(ring_mail)

        # -- the webhooks: signed JSON with the same facts
        ((headers, body, payload),) = hooks.payloads("missed-call")
        assert signed(headers, body) and headers["Content-Type"] == "application/json"
        assert payload["number"] == "103" and payload["queue"] == "line"
        assert payload["outcome"] == "abandoned" and payload["call_id"] == gone["caller"]
        assert payload["time"] == round(gone["time"], 3)
        assert payload["wait_seconds"] == round(gone["wait"], 3)
        assert [
            (a["agent"], a["agent_name"], a["seconds"], a["result"]) for a in payload["attempts"]
        ] == [("101", "Alice", round(a["seconds"], 3), a["result"]) for a in attempts]
        ((ring_headers, ring_body, ring),) = hooks.payloads("missed-ring")
        assert signed(ring_headers, ring_body)
        assert (ring["agent"], ring["agent_name"], ring["number"], ring["result"]) == (
            "101",
            "Alice",
            "103",
            "missed",
        )
        assert ring["ring_seconds"] == round(missed_ring_row["ring_time"], 3)
        # every notification is delivered and marked so; each delivery id is its row's
        assert wait_until(
            lambda: all(r["sent"] is not None for r in outbox(sw, "email") + outbox(sw, "webhook"))
        )
        ids = {r["message_id"] for r in outbox(sw, "webhook")}
        assert {h["X-Softswitch-Delivery"] for h, _ in hooks.got} == ids
        assert len(outbox(sw, "email")) == 2 and len(ids) == 2
    finally:
        sw.stop()
        hooks.close()
        smtp.stop()


def test_webhook_receiver_down_across_a_restart_gets_it_afterwards(tmp_path, made):
    smtp = Server(free_port())
    smtp.start()
    hooks = HookReceiver()  # not started: the receiver is down
    sw = start(tmp_path, smtp.port, hooks.url)
    try:
        op = registered(sw, "101", made)
        assert wait_until(lambda: logged_in(sw, "101"))
        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")
        ringing = op.wait_incoming()
        op.wait_state(ringing, "early")
        time.sleep(1.0)  # let it ring a moment (the figure is read back from the log)
        caller.hangup(call)
        op.wait_state(ringing, "disconnected")
        assert wait_until(lambda: queue_rows(sw, "abandoned"), 10)
        (gone,) = queue_rows(sw, "abandoned")

        # The e-mail goes out; the webhook is tried, fails, and stays in the outbox.
        assert wait_until(lambda: len(smtp.sink.received) == 1, 15)
        assert wait_until(lambda: outbox(sw, "webhook") and outbox(sw, "webhook")[0]["attempts"])
        (pending,) = outbox(sw, "webhook")
        assert pending["sent"] is None and pending["last_error"]
        assert pending["recipient"] == hooks.url

        sw.stop()
        sw.start()
        hooks.start()  # back before its retry is due (the first retry waits 10 s)
        assert wait_until(lambda: len(hooks.got) >= 1, 30), sw.log_text()[-3000:]
        ((headers, body),) = hooks.got
        assert signed(headers, body)
        assert headers["X-Softswitch-Delivery"] == pending["message_id"]
        assert headers["X-Softswitch-Event"] == "missed-call"
        payload = json.loads(body)
        assert payload["number"] == "103" and payload["wait_seconds"] == round(gone["wait"], 3)
        (attempt,) = payload["attempts"]
        assert (attempt["agent"], attempt["agent_name"], attempt["result"]) == (
            "101",
            "Alice",
            "cancelled",
        )
        assert attempt["seconds"] == round(json.loads(gone["attempts"])[0]["seconds"], 3)
        assert attempt["seconds"] >= 0.5
        assert wait_until(lambda: outbox(sw, "webhook")[0]["sent"] is not None)
        done = outbox(sw, "webhook")[0]
        assert done["attempts"] >= 2 and done["message_id"] == pending["message_id"]
        time.sleep(0.5)
        assert len(hooks.got) == 1 and len(smtp.sink.received) == 1  # nothing sent twice
    finally:
        sw.stop()
        hooks.close()
        smtp.stop()
