"""Missed-call notifications and digests without a switch (softswitch/notify/): the
content built from hand-written queue_log rows, the webhook signature, the digest's
schedule across daylight-saving changes, the Notifier's outbox rows, and the two
senders against real local servers (aiosmtpd, an aiohttp receiver) with a fake clock
for the retries."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from softswitch.config_types import (
    Config,
    ExtensionConfig,
    NotifyConfig,
    QueueBlock,
    SmtpConfig,
    SwitchConfig,
)
from softswitch.mail import BACKOFF, Mailer
from softswitch.notify import schedule
from softswitch.notify.content import digest, missed_call, missed_ring
from softswitch.notify.service import Notifier, message_id
from softswitch.notify.signing import load_webhook_secret, sign, verify
from softswitch.notify.webhook import WebhookSender, headers_for
from softswitch.reports.load import LoadRow
from softswitch.reports.missed import MissedRow
from softswitch.store.db import Store
from tests.test_mail import Server, free_port

TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
NOW = 1_772_458_205.0  # 2026-03-02 14:30:05 CET
NAMES = {"101": "Alice", "102": "Bob & Co"}
SECRET = "test-webhook-secret-0123456789"


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, fold: int = 0) -> float:
    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=ZONE, fold=fold).timestamp()


def abandoned_row(**over: object) -> dict:
    row = {
        "kind": "abandoned",
        "time": NOW,
        "queue": "sales",
        "caller": "1772458130-7-abcdef",
        "number": "0301234567",
        "position": 1,
        "wait": 74.4,
        "attempts": [
            {"agent": "101", "start": NOW - 70, "seconds": 20.0, "result": "missed"},
            {"agent": "102", "start": NOW - 45, "seconds": 44.6, "result": "cancelled"},
        ],
    }
    row.update(over)
    return row


def ring_row(**over: object) -> dict:
    row = {
        "kind": "ring",
        "time": NOW - 50,
        "queue": "sales",
        "caller": "1772458130-7-abcdef",
        "number": "0301234567",
        "agent": "101",
        "result": "missed",
        "reason": "timeout",
        "code": None,
        "ring_start": NOW - 70,
        "ring_time": 20.0,
    }
    row.update(over)
    return row


# -- content ------------------------------------------------------------------------------
def test_missed_call_text_html_and_json() -> None:
    n = missed_call(abandoned_row(), NAMES, TZ)
    assert n.event == "missed-call" and n.queue == "sales"
    assert n.subject == "Missed call in queue sales: 0301234567, hung up after 74 s"
    lines = n.text.splitlines()
    assert "Caller:  0301234567" in lines
    assert "Time:    2026-03-02 14:30:05 CET" in lines
    assert "Queue:   sales" in lines
    assert "Waited:  74 s" in lines
    assert "Outcome: hung up while waiting" in lines
    assert "  101 Alice     rang   20 s  missed (not answered in time)" in lines
    assert "  102 Bob & Co  rang   45 s  cancelled (stopped ringing when the caller left)" in lines
    # HTML: the same facts, escaped
    assert "<td>0301234567</td>" in n.html and "<td>2026-03-02 14:30:05 CET</td>" in n.html
    assert "<td>Bob &amp; Co</td>" in n.html and "Bob & Co" not in n.html
    assert '<td style="text-align:right">45 s</td>' in n.html
    # JSON: exact figures, local time with offset, operator names
    p = json.loads(n.body())
    assert p == n.payload
    assert p["event"] == "missed-call" and p["id"] == n.key
    assert p["number"] == "0301234567" and p["queue"] == "sales"
    assert p["time"] == NOW and p["time_local"] == "2026-03-02T14:30:05+01:00"
    assert p["timezone"] == TZ and p["wait_seconds"] == 74.4
    assert p["outcome"] == "abandoned" and p["position"] == 1
    assert p["attempts"] == [
        {
            "agent": "101",
            "agent_name": "Alice",
            "start": NOW - 70,
            "start_local": "2026-03-02T14:28:55+01:00",
            "seconds": 20.0,
            "result": "missed",
        },
        {
            "agent": "102",
            "agent_name": "Bob & Co",
            "start": NOW - 45,
            "start_local": "2026-03-02T14:29:20+01:00",
            "seconds": 44.6,
            "result": "cancelled",
        },
    ]
    # the key is stable (the same row gives the same message ids) and differs per row
    assert missed_call(abandoned_row(), NAMES, TZ).key == n.key
    assert missed_call(abandoned_row(time=NOW + 1), NAMES, TZ).key != n.key


def test_left_rows_say_how_the_caller_left() -> None:
    row = abandoned_row(kind="left", result="timeout", target="voicemail", wait=300.0)
    n = missed_call(row, NAMES, TZ)
    assert n.subject == "Missed call in queue sales: 0301234567, timed out after 300 s"
    assert "Outcome:    waited the longest time allowed and was sent on" in n.text
    assert "Sent on to: voicemail" in n.text
    assert n.payload["outcome"] == "timeout" and n.payload["target"] == "voicemail"
    empty = missed_call(
        abandoned_row(kind="left", result="empty", attempts=[], number=None, wait=0.0), NAMES, TZ
    )
    assert empty.subject == (
        "Missed call in queue sales: unknown number, no operator logged in after 0 s"
    )
    assert "No operator was rung." in empty.text and "No operator was rung." in empty.html
    assert empty.payload["attempts"] == [] and empty.payload["number"] is None
    with pytest.raises(ValueError):
        missed_call(ring_row(), NAMES, TZ)


def test_missed_ring_content() -> None:
    n = missed_ring(ring_row(), NAMES, TZ)
    assert n.event == "missed-ring"
    assert n.subject == (
        "Queue sales: operator 101 Alice did not answer a call from 0301234567 (rang 20 s)"
    )
    assert "Operator: 101 Alice" in n.text and "Rang:     20 s" in n.text
    assert "Time:     2026-03-02 14:28:55 CET" in n.text  # when the ring started
    assert "Why:      the queue's answer time ran out" in n.text
    p = n.payload
    assert (p["agent"], p["agent_name"], p["ring_seconds"], p["result"]) == (
        "101",
        "Alice",
        20.0,
        "missed",
    )
    declined = missed_ring(ring_row(agent="102", result="rejected", code=603), NAMES, TZ)
    assert "operator 102 Bob & Co declined a call" in declined.subject
    assert declined.payload["code"] == 603
    assert declined.key != n.key


def test_digest_content() -> None:
    total = LoadRow(
        label="total",
        offered=10,
        answered=7,
        abandoned=2,
        timeout=1,
        key=0,
        full=0,
        empty=0,
        other=0,
        waiting=0,
        handling_ratio=0.7,
        service_level=0.6,
        avg_wait_answered=12.0,
        max_wait_answered=41.0,
        avg_wait_abandoned=30.0,
    )
    from softswitch.acd.commands import Attempt

    missed = [
        MissedRow(
            time=local(2026, 3, 1, 9, 0, 40),
            queue="sales",
            number="0301234567",
            caller="c1",
            wait=40.0,
            result="abandoned",
            attempts=(Attempt("101", local(2026, 3, 1, 9), 20.0, "missed"),),
            reached_at=local(2026, 3, 1, 10),
            reached_via="callback",
            reached_by="102",
        ),
        MissedRow(
            time=local(2026, 3, 1, 11),
            queue="sales",
            number="0409999",
            caller="c2",
            wait=95.0,
            result="timeout",
            attempts=(),
            reached_at=None,
            reached_via=None,
            reached_by=None,
        ),
    ]
    n = digest("sales", dt.date(2026, 3, 1), total, missed, NAMES, TZ, 20)
    assert n.event == "digest" and n.key == "digest-sales-2026-03-01"
    assert n.subject == "Queue sales, Sun 2026-03-01: 10 call(s), 7 answered (70 %), 3 missed"
    for line in (
        "Offered:                 10",
        "Answered:                7",
        "Abandoned:               2",
        "Handling ratio:          70 %",
        "Service level (20 s):    60 %",
        "Longest wait (answered): 41 s",
        "Longest wait (missed):   95 s",
    ):
        assert line in n.text.splitlines(), line
    assert (
        "  2026-03-01 09:00:40 CET  0301234567  waited 40 s, hung up while waiting; "
        "rang: 101 Alice 20 s missed; reached 2026-03-01 10:00:00 CET (callback 102)"
    ) in n.text
    assert "0409999  waited 95 s" in n.text and "rang: nobody; not reached yet" in n.text
    assert "<td>0409999</td>" in n.html
    p = json.loads(n.body())
    assert (p["date"], p["offered"], p["answered"], p["handling_ratio"]) == (
        "2026-03-01",
        10,
        7,
        0.7,
    )
    assert p["max_wait_missed"] == 95.0 and p["service_seconds"] == 20
    assert [m["number"] for m in p["missed"]] == ["0301234567", "0409999"]
    assert p["missed"][0]["attempts"][0]["agent_name"] == "Alice"
    assert p["missed"][0]["reached_via"] == "callback"


# -- signature ----------------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = json.dumps({"event": "missed-call", "number": "0301234567"}).encode()
    header = sign(SECRET, body)
    want = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert header == f"sha256={want}"
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("another-secret-0123456789", body, header)
    assert not verify(SECRET, body, None) and not verify(SECRET, body, "sha256=00")
    row = {"subject": "missed-call", "message_id": "missed-x.1", "body_text": body.decode()}
    h = headers_for(row, SECRET)
    assert h["Content-Type"] == "application/json"
    assert h["X-Softswitch-Event"] == "missed-call"
    assert h["X-Softswitch-Delivery"] == "missed-x.1"
    assert h["X-Softswitch-Signature"] == header


def test_webhook_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    assert load_webhook_secret("configured-secret-0123", tmp_path) == "configured-secret-0123"
    assert not (tmp_path / "webhook-secret").exists()
    first = load_webhook_secret("", tmp_path / "data")
    path = tmp_path / "data" / "webhook-secret"
    assert len(first) == 64 and int(first, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_webhook_secret("", tmp_path / "data") == first  # kept across restarts


# -- the digest's schedule ----------------------------------------------------------------
def test_next_digest_run_is_local_time_across_dst_changes() -> None:
    # spring forward (Sun 29 March 2026): 08:00 CET -> 08:00 CEST is 23 hours
    after = local(2026, 3, 28, 8, 0, 1)
    run = schedule.next_run(after, "08:00", TZ)
    assert run == local(2026, 3, 29, 8)
    assert run - local(2026, 3, 28, 8) == 23 * 3600
    # fall back (Sun 25 October 2026): 25 hours
    run = schedule.next_run(local(2026, 10, 24, 8), "08:00", TZ)
    assert run == local(2026, 10, 25, 8) and run - local(2026, 10, 24, 8) == 25 * 3600
    # strictly after: at the very moment, the next one is tomorrow's
    assert schedule.next_run(local(2026, 3, 2, 8), "08:00", TZ) == local(2026, 3, 3, 8)
    assert schedule.next_run(local(2026, 3, 2, 7, 59, 59), "08:00", TZ) == local(2026, 3, 2, 8)


def test_digest_time_in_the_gap_and_in_the_repeated_hour() -> None:
    # 02:30 does not exist on 29 March 2026: it runs at 03:30 CEST (01:30 UTC)
    run = schedule.next_run(local(2026, 3, 28, 12), "02:30", TZ)
    assert run == dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC).timestamp()
    # 02:30 happens twice on 25 October 2026: once, at the first (00:30 UTC) ...
    first = schedule.next_run(local(2026, 10, 24, 12), "02:30", TZ)
    assert first == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC).timestamp()
    # ... and not again at the second: the next run is the next day's
    assert schedule.next_run(first, "02:30", TZ) == local(2026, 10, 26, 2, 30)
    assert schedule.due_day(local(2026, 10, 25, 2, 30, fold=1), "02:30", TZ) == dt.date(
        2026, 10, 24
    )


def test_due_day_is_yesterday_from_the_run_time_until_midnight() -> None:
    assert schedule.due_day(local(2026, 3, 2, 7, 59), "08:00", TZ) is None
    assert schedule.due_day(local(2026, 3, 2, 8), "08:00", TZ) == dt.date(2026, 3, 1)
    assert schedule.due_day(local(2026, 3, 2, 23, 59, 59), "08:00", TZ) == dt.date(2026, 3, 1)
    assert schedule.due_day(local(2026, 3, 3, 0, 0, 1), "08:00", TZ) is None


# -- the Notifier -------------------------------------------------------------------------
HOOK = "http://127.0.0.1:9/hook"


def config(
    notify: tuple[str, ...] = ("boss@example.test", HOOK),
    missed_rings: bool = False,
    digest_time: str = "08:00",
) -> Config:
    sales = QueueBlock(
        name="sales", members=("101", "102"), notify=notify, notify_missed_rings=missed_rings
    )
    quiet = QueueBlock(name="quiet", members=("101",))
    return Config(
        switch=SwitchConfig(domain="pbx.example.test", timezone=TZ),
        extensions=(
            ExtensionConfig("101", "Alice", "pw-alice-0123"),
            ExtensionConfig("102", "Bob & Co", "pw-bob-01234"),
        ),
        blocks={"sales": sales, "quiet": quiet},
        notify=NotifyConfig(webhook_secret=SECRET, digest_time=digest_time),
    )


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_notifier_queues_one_row_per_address_at_once(store: Store) -> None:
    woken: list[set[str]] = []
    n = Notifier(config(), store, Clock(), on_queued=woken.append)
    n.on_queue_row(abandoned_row())
    mail, hook = sorted(store.pending_outbox(), key=lambda r: r["kind"])
    note = missed_call(abandoned_row(), NAMES, TZ)
    assert woken == [{"email", "webhook"}]
    assert (mail["kind"], mail["recipient"], mail["subject"]) == (
        "email",
        "boss@example.test",
        note.subject,
    )
    assert mail["body_text"] == note.text and mail["body_html"] == note.html
    assert mail["message_id"] == message_id(note.key, "boss@example.test", "pbx.example.test")
    assert mail["message_id"].startswith(f"<{note.key}.") and mail["message_id"].endswith(
        "@pbx.example.test>"
    )
    assert (hook["kind"], hook["recipient"], hook["subject"]) == ("webhook", HOOK, "missed-call")
    assert json.loads(hook["body_text"]) == note.payload and hook["body_html"] is None
    assert hook["message_id"].startswith(f"{note.key}.") and "<" not in hook["message_id"]
    assert mail["next_attempt"] == NOW and hook["created"] == NOW
    # the Mailer's and the sender's views are separate
    assert [r["id"] for r in store.pending_outbox(kind="email")] == [mail["id"]]
    assert [r["id"] for r in store.due_outbox(NOW, kind="webhook")] == [hook["id"]]
    # the same row again (never expected) adds nothing
    n.on_queue_row(abandoned_row())
    assert len(store.pending_outbox()) == 2 and len(woken) == 1


def test_notifier_ignores_what_is_not_a_missed_call(store: Store) -> None:
    n = Notifier(config(), store, Clock())
    n.on_queue_row(abandoned_row(queue="quiet"))  # no notify addresses
    n.on_queue_row(ring_row())  # notify_missed_rings is off
    for kind in ("joined", "connected", "completed", "login"):
        n.on_queue_row(abandoned_row(kind=kind))
    assert store.pending_outbox() == []


def test_missed_rings_when_asked_for(store: Store) -> None:
    n = Notifier(config(missed_rings=True), store, Clock())
    n.on_queue_row(ring_row())
    n.on_queue_row(ring_row(agent="102", result="rejected", time=NOW - 40))
    for result in ("answered", "cancelled", "failed"):
        n.on_queue_row(ring_row(result=result, time=NOW - 30))
    rows = store.pending_outbox()
    assert len(rows) == 4
    events = sorted(json.loads(r["body_text"])["agent"] for r in rows if r["kind"] == "webhook")
    assert events == ["101", "102"]
    assert {r["subject"] for r in rows if r["kind"] == "webhook"} == {"missed-ring"}


# -- e-mail through the Mailer ------------------------------------------------------------
@pytest.fixture
def smtp():
    srv = Server(free_port())
    srv.start()
    yield srv
    srv.stop()


async def test_mailer_delivers_the_notification_and_leaves_webhooks_alone(
    store: Store, data_dir: Path, smtp: Server
) -> None:
    Notifier(config(), store, Clock()).on_queue_row(abandoned_row())
    mailer = Mailer(
        store, SmtpConfig(host="127.0.0.1", port=smtp.port, sender="pbx@example.test"), data_dir
    )
    assert await mailer.send_due() == 1
    ((_, rcpt, msg),) = smtp.sink.received
    assert rcpt == ["boss@example.test"]
    note = missed_call(abandoned_row(), NAMES, TZ)
    assert msg["Subject"] == note.subject
    assert msg["Message-ID"] == message_id(note.key, "boss@example.test", "pbx.example.test")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.rstrip() == note.text.rstrip()
    assert "<td>Bob &amp; Co</td>" in msg.get_body(("html",)).get_content()
    (pending,) = store.pending_outbox()
    assert pending["kind"] == "webhook" and pending["attempts"] == 0  # not the Mailer's


# -- webhooks -----------------------------------------------------------------------------
class Receiver:
    """An aiohttp webhook receiver on 127.0.0.1; `answers` are the statuses of the next
    requests (then 200)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def receiver():
    r = Receiver()
    yield r
    await r.stop()


def queue_hooks(store: Store, url: str, count: int = 1, clock: Clock | None = None) -> Notifier:
    n = Notifier(config(notify=(url,)), store, clock or Clock())
    for i in range(count):
        n.on_queue_row(abandoned_row(time=NOW + i, caller=f"c-{i}"))
    return n


async def test_webhook_is_signed_json_with_event_and_delivery_headers(
    store: Store, receiver: Receiver
) -> None:
    await receiver.start()
    queue_hooks(store, receiver.url)
    (row,) = store.pending_outbox()
    sender = WebhookSender(store, SECRET, Clock())
    assert await sender.send_due() == 1
    ((headers, body),) = receiver.got
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Softswitch-Event"] == "missed-call"
    assert headers["X-Softswitch-Delivery"] == row["message_id"]
    want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Softswitch-Signature"] == want
    payload = json.loads(body)
    assert payload["number"] == "0301234567" and payload["wait_seconds"] == 74.4
    assert [(a["agent"], a["seconds"]) for a in payload["attempts"]] == [
        ("101", 20.0),
        ("102", 44.6),
    ]
    assert store.pending_outbox() == []
    sent = store.outbox_message(row["id"])
    assert sent["sent"] == NOW and sent["attempts"] == 1
    assert await sender.send_due() == 0 and len(receiver.got) == 1


async def test_webhook_retries_with_backoff_until_a_2xx(
    store: Store, receiver: Receiver, caplog
) -> None:
    await receiver.start()
    receiver.answers = [500, 404]
    queue_hooks(store, receiver.url)
    clock = Clock()
    sender = WebhookSender(store, SECRET, clock)
    with caplog.at_level(logging.WARNING, logger="softswitch.notify.webhook"):
        assert await sender.send_due() == 0
    (row,) = store.pending_outbox()
    assert row["attempts"] == 1 and row["last_error"] == "HTTP 500 Internal Server Error"
    assert row["next_attempt"] == NOW + BACKOFF[0] and "retry in 10 s" in caplog.text
    assert await sender.send_due() == 0  # not due yet: nothing posted
    assert len(receiver.got) == 1
    clock.now = row["next_attempt"]
    assert await sender.send_due() == 0
    row = store.outbox_message(row["id"])
    assert row["attempts"] == 2 and row["last_error"] == "HTTP 404 Not Found"
    assert row["next_attempt"] == clock.now + BACKOFF[1]
    clock.now = row["next_attempt"]
    assert await sender.send_due() == 1
    assert len(receiver.got) == 3
    # every attempt carried the same delivery id and body
    assert {h["X-Softswitch-Delivery"] for h, _ in receiver.got} == {row["message_id"]}
    assert len({b for _, b in receiver.got}) == 1
    assert store.outbox_message(row["id"])["attempts"] == 3


async def test_receiver_down_keeps_everything_and_a_new_sender_delivers_in_order(
    data_dir: Path,
) -> None:
    receiver = Receiver()  # not started: connections are refused
    store = Store(data_dir / "softswitch.db")
    queue_hooks(store, receiver.url, count=3)
    other = Receiver()
    await other.start()
    queue_hooks(store, other.url, count=1, clock=Clock(NOW + 100))
    clock = Clock(NOW + 100)
    sender = WebhookSender(store, SECRET, clock, timeout=2.0)
    try:
        assert await sender.send_due() == 1  # the receiver that is up is not held up
    finally:
        await other.stop()
    first, *rest = store.pending_outbox(kind="webhook")
    assert first["attempts"] == 1 and "Connect" in first["last_error"]
    # the others to the same receiver were not tried, only moved to the same retry time
    assert [r["attempts"] for r in rest] == [0, 0]
    assert {r["next_attempt"] for r in rest} == {first["next_attempt"]} == {NOW + 100 + 10}
    assert await sender.send_due() == 0  # nothing due: nothing tried
    store.close()

    # the switch restarts; the receiver is back
    await receiver.start()
    try:
        store = Store(data_dir / "softswitch.db")
        assert len(store.pending_outbox(kind="webhook")) == 3
        clock = Clock(NOW + 110)
        sender = WebhookSender(store, SECRET, clock, poll_interval=60)
        task = asyncio.create_task(sender.run())
        try:
            for _ in range(250):
                if len(receiver.got) == 3:
                    break
                await asyncio.sleep(0.02)
            sender.notify()  # more wake-ups send nothing twice
            await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        numbers = [json.loads(b)["call_id"] for _, b in receiver.got]
        assert numbers == ["c-0", "c-1", "c-2"]  # in the order they were queued
        assert store.pending_outbox() == []
        store.close()
    finally:
        await receiver.stop()


async def test_a_slow_receiver_times_out_and_is_retried(store: Store, receiver: Receiver) -> None:
    await receiver.start()
    receiver.delay = 0.8
    queue_hooks(store, receiver.url)
    clock = Clock()
    sender = WebhookSender(store, SECRET, clock, timeout=0.2, backoff=(1.0,))
    assert await sender.send_due() == 0
    (row,) = store.pending_outbox()
    assert row["last_error"] == "timed out after 0.2 s" and row["next_attempt"] == NOW + 1.0
    receiver.delay = 0.0
    clock.now += 1.0
    assert await sender.send_due() == 1


async def test_a_4xx_for_one_body_does_not_hold_up_the_next(
    store: Store, receiver: Receiver
) -> None:
    await receiver.start()
    receiver.answers = [400]
    queue_hooks(store, receiver.url, count=2)
    sender = WebhookSender(store, SECRET, Clock())
    assert await sender.send_due() == 1
    (left,) = store.pending_outbox()
    assert left["attempts"] == 1 and left["last_error"] == "HTTP 400 Bad Request"


# -- digests ------------------------------------------------------------------------------
def seed_day(store: Store) -> None:
    """Sun 1 March 2026 in queue sales: one answered caller, one who hung up after 101
    missed, one who timed out; and a login the day before (the switch was running)."""

    def at(hh: int, mm: int, ss: int = 0) -> float:
        return local(2026, 3, 1, hh, mm, ss)

    rows = [
        {"time": local(2026, 2, 28, 8), "kind": "login", "agent": "101", "reason": "x"},
        {"time": at(9, 0), "kind": "joined", "queue": "sales", "caller": "a", "number": "111"},
        {"time": at(9, 0, 10), "kind": "connected", "queue": "sales", "caller": "a",
         "number": "111", "agent": "101", "wait": 10.0},
        {"time": at(9, 5), "kind": "completed", "queue": "sales", "caller": "a",
         "agent": "101", "result": "caller", "wait": 10.0, "talk_time": 290.0},
        {"time": at(10, 0), "kind": "joined", "queue": "sales", "caller": "b", "number": "222"},
        {"time": at(10, 0, 20), "kind": "ring", "queue": "sales", "caller": "b", "agent": "101",
         "result": "missed", "ring_start": at(10, 0), "ring_time": 20.0},
        {"time": at(10, 0, 30), "kind": "abandoned", "queue": "sales", "caller": "b",
         "number": "222", "wait": 30.0,
         "attempts": [{"agent": "101", "start": at(10, 0), "seconds": 20.0,
                       "result": "missed"}]},
        {"time": at(11, 0), "kind": "joined", "queue": "sales", "caller": "c", "number": "333"},
        {"time": at(11, 2), "kind": "left", "queue": "sales", "caller": "c", "number": "333",
         "result": "timeout", "wait": 120.0},
        {"time": local(2026, 3, 2, 9), "kind": "joined", "queue": "sales", "caller": "d",
         "number": "444"},  # the next day: not in this digest
    ]  # fmt: skip
    for r in rows:
        store.add_queue_event(r)


def test_digest_is_queued_once_per_queue_and_day_across_restarts(data_dir: Path) -> None:
    store = Store(data_dir / "softswitch.db")
    seed_day(store)
    cfg = config()
    assert Notifier(cfg, store, Clock()).queue_digests(local(2026, 3, 2, 7, 59)) == 0
    n = Notifier(cfg, store, Clock())
    assert n.queue_digests(local(2026, 3, 2, 8, 0, 1)) == 2  # one mail, one webhook
    assert n.queue_digests(local(2026, 3, 2, 9)) == 0
    store.close()
    store = Store(data_dir / "softswitch.db")  # restarted later that day
    assert Notifier(cfg, store, Clock()).queue_digests(local(2026, 3, 2, 18)) == 0
    rows = store.pending_outbox()
    mail = next(r for r in rows if r["kind"] == "email")
    hook = next(r for r in rows if r["kind"] == "webhook")
    assert mail["message_id"].startswith("<digest-sales-2026-03-01.")
    assert hook["message_id"].startswith("digest-sales-2026-03-01.")
    assert hook["subject"] == "digest"
    assert mail["subject"] == (
        "Queue sales, Sun 2026-03-01: 3 call(s), 1 answered (33 %), 2 missed"
    )
    p = json.loads(hook["body_text"])
    assert (p["offered"], p["answered"], p["abandoned"], p["timeout"]) == (3, 1, 1, 1)
    assert p["max_wait_answered"] == 10.0 and p["max_wait_missed"] == 120.0
    assert p["service_level"] == 0.333  # shares and seconds to 3 decimals
    assert [(m["number"], m["outcome"]) for m in p["missed"]] == [
        ("222", "abandoned"),
        ("333", "timeout"),
    ]
    assert p["missed"][0]["attempts"][0]["agent_name"] == "Alice"
    assert (
        "222  waited 30 s, hung up while waiting; rang: 101 Alice 20 s missed"
        in (mail["body_text"])
    )
    # the next day's digest is its own
    assert Notifier(cfg, store, Clock()).queue_digests(local(2026, 3, 3, 8)) == 2
    assert len(store.pending_outbox()) == 4
    store.close()


def test_no_digest_before_the_switch_kept_any_record(store: Store) -> None:
    cfg = config()
    store.add_queue_event({"time": local(2026, 3, 2, 7), "kind": "login", "agent": "101"})
    assert Notifier(cfg, store, Clock()).queue_digests(local(2026, 3, 2, 9)) == 0
    off = config(digest_time="")
    assert Notifier(off, store, Clock()).queue_digests(local(2026, 3, 3, 9)) == 0
    assert Notifier(cfg, store, Clock()).queue_digests(local(2026, 3, 3, 9)) == 2


def test_a_caller_removed_at_shutdown_is_a_missed_call() -> None:
    row = abandoned_row(kind="left", result="removed", reason="switch", attempts=[])
    n = missed_call(row, NAMES, TZ)
    assert n.subject == "Missed call in queue sales: 0301234567, taken out of the queue after 74 s"
    assert "Outcome: was taken out of the queue by the switch" in n.text.splitlines()
    assert (n.payload["outcome"], n.payload["reason"]) == ("removed", "switch")
    api = missed_call(abandoned_row(kind="left", result="removed", reason="api"), NAMES, TZ)
    assert "Outcome: was taken out of the queue through the HTTP API" in api.text


async def test_service_queues_the_due_digest_at_start_and_stops(data_dir: Path) -> None:
    from softswitch.notify.service import NotificationService

    store = Store(data_dir / "softswitch.db")
    seed_day(store)
    cfg = config(notify=("boss@example.test",))
    service = NotificationService(cfg, store, data_dir, Clock(local(2026, 3, 2, 9)))
    service.start(None)
    try:
        for _ in range(100):
            if store.pending_outbox():
                break
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
    (row,) = store.pending_outbox()
    assert row["kind"] == "email" and row["subject"].startswith("Queue sales, Sun 2026-03-01")
    # no webhook anywhere: no sender, no secret generated
    assert service.webhooks is None and not (data_dir / "webhook-secret").exists()
    # a URL without a configured secret: one is generated and the sender runs
    no_secret = replace(config(), notify=NotifyConfig(webhook_secret="", digest_time=""))
    service = NotificationService(no_secret, store, data_dir, Clock(local(2026, 3, 2, 9)))
    service.start(None)
    try:
        assert service.webhooks is not None
        assert service.webhooks.secret == (data_dir / "webhook-secret").read_text().strip()
    finally:
        await service.stop()
    assert len(store.pending_outbox()) == 1  # digest_time "": none queued
    store.close()


def test_an_outbound_guard_alert_is_queued_once_per_extension_route_and_hour(
    store: Store,
) -> None:
    from softswitch.notify.content import outbound_guard

    n = Notifier(config(), store, Clock())
    note = outbound_guard("intl", "102", 5, NOW, TZ)
    assert "102" in note.subject and "intl" in note.subject
    assert "5 calls per hour" in note.text
    assert note.payload == {
        "event": "outbound-guard",
        "extension": "102",
        "route": "intl",
        "limit_per_hour": 5,
        "time": note.payload["time"],
    }
    n.queue(note, ["sec@example.test", HOOK])
    n.queue(outbound_guard("intl", "102", 5, NOW + 60, TZ), ["sec@example.test", HOOK])
    assert len(store.pending_outbox()) == 2  # the same hour: one alert
    n.queue(outbound_guard("intl", "102", 5, NOW + 3600, TZ), ["sec@example.test"])
    assert len(store.pending_outbox()) == 3
