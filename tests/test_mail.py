"""The mailer against a real SMTP server (aiosmtpd on 127.0.0.1, a free port): the
message as received, retries with backoff while the server is down, exactly one
delivery, pending mail surviving a restart, STARTTLS + login."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import shutil
import socket
import ssl
import subprocess
import wave
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from softswitch.config_types import SmtpConfig
from softswitch.mail import BACKOFF, Mailer, retry_delay
from softswitch.store.db import Store
from softswitch.voicemail import save_voicemail

NOW = 1_772_458_205.0  # 2026-03-02 14:30:05 CET
TZ = "Europe/Berlin"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    """aiosmtpd handler keeping what it received; rejects RCPT to bad@..."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("bad@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, port: int, **params) -> None:
        self.port = port
        self.sink = Sink()
        self.params = params
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **self.params)
        self.controller.start()

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def server():
    srv = Server(free_port())
    yield srv
    srv.stop()


def smtp_for(srv: Server, **kw) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=srv.port, sender="pbx@office.example", **kw)


def leave_message(
    store: Store, data_dir: Path, tmp_path: Path, emails=("owner@office.example",), name="r.wav"
) -> tuple[int, bytes]:
    rec = tmp_path / name
    with wave.open(str(rec), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 125)  # 2 s
    wav = rec.read_bytes()
    vid = save_voicemail(
        store,
        data_dir,
        "sales",
        "0301234567",
        "Alice",
        "c-1",
        rec,
        2.0,
        NOW,
        list(emails),
        tz=TZ,
    )
    return vid, wav


async def test_delivers_message_with_attachment(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    server.start()
    vid, wav = leave_message(store, data_dir, tmp_path)
    (row,) = store.pending_outbox()
    mailer = Mailer(store, smtp_for(server), data_dir, Clock())
    assert await mailer.send_due() == 1

    ((mail_from, rcpt, msg),) = server.sink.received
    assert mail_from == "pbx@office.example" and rcpt == ["owner@office.example"]
    assert msg["From"] == "pbx@office.example" and msg["To"] == "owner@office.example"
    assert msg["Subject"] == "Voicemail from Alice <0301234567> (0:02) in box sales"
    assert msg["Message-ID"] == row["message_id"]
    assert msg["X-Softswitch-Voicemail"] == str(vid)
    assert msg["Date"]
    text = msg.get_body(("plain",)).get_content()
    assert "From:     Alice <0301234567>" in text
    assert "Received: 2026-03-02 14:30:05 CET" in text
    assert "Length:   0:02" in text and "Box:      sales" in text
    (part,) = list(msg.iter_attachments())
    assert part.get_content_type() == "audio/wav"
    assert part.get_filename() == Path(store.voicemail(vid)["path"]).name
    assert part.get_content() == wav

    done = store.outbox_message(row["id"])
    assert done["sent"] == NOW and done["attempts"] == 1 and done["last_error"] is None
    assert store.pending_outbox() == []
    assert await mailer.send_due() == 0 and len(server.sink.received) == 1


async def test_server_down_then_up_delivers_once(
    server: Server, store: Store, data_dir: Path, tmp_path: Path, caplog
) -> None:
    leave_message(store, data_dir, tmp_path)
    clock = Clock()
    mailer = Mailer(store, smtp_for(server, timeout=2.0), data_dir, clock)
    with caplog.at_level(logging.WARNING, logger="softswitch.mail"):
        assert await mailer.send_due() == 0
    (row,) = store.pending_outbox()
    assert row["attempts"] == 1 and row["last_error"] and row["sent"] is None
    assert "ConnectionRefused" in row["last_error"]
    assert row["next_attempt"] == NOW + BACKOFF[0] and row["last_attempt"] == NOW
    assert "retry in 10 s" in caplog.text

    # second failure: the next delay
    clock.now = NOW + 11
    assert await mailer.send_due() == 0
    (row,) = store.pending_outbox()
    assert row["attempts"] == 2 and row["next_attempt"] == NOW + 11 + BACKOFF[1]

    server.start()
    assert await mailer.send_due() == 0  # not due yet: nothing sent
    assert server.sink.received == []
    clock.now = row["next_attempt"]
    assert await mailer.send_due() == 1
    assert await mailer.send_due() == 0
    clock.now += 10_000
    assert await mailer.send_due() == 0
    assert len(server.sink.received) == 1
    sent = store.outbox_message(row["id"])
    assert sent["sent"] == clock.now - 10_000 and sent["attempts"] == 3


async def test_restart_sends_pending(server: Server, data_dir: Path, tmp_path: Path) -> None:
    store = Store(data_dir / "softswitch.db")
    leave_message(store, data_dir, tmp_path, emails=["a@office.example", "b@office.example"])
    first = Mailer(store, smtp_for(server, timeout=2.0), data_dir, Clock())
    await first.send_due()  # server down: both stay pending
    store.close()

    server.start()
    store = Store(data_dir / "softswitch.db")  # the switch restarted
    assert len(store.pending_outbox()) == 2
    mailer = Mailer(store, smtp_for(server), data_dir, Clock(NOW + 3600), poll_interval=30)
    task = asyncio.create_task(mailer.run())
    try:
        for _ in range(200):
            if len(server.sink.received) == 2:
                break
            await asyncio.sleep(0.02)
        mailer.notify()  # extra wake-ups do not send anything twice
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sorted(r[1][0] for r in server.sink.received) == ["a@office.example", "b@office.example"]
    assert store.pending_outbox() == []
    store.close()


async def test_run_wakes_on_notify(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    server.start()
    mailer = Mailer(store, smtp_for(server), data_dir, Clock(), poll_interval=60)
    task = asyncio.create_task(mailer.run())
    try:
        await asyncio.sleep(0.05)  # first pass done, now sleeping up to 60 s
        leave_message(store, data_dir, tmp_path)
        mailer.notify()
        for _ in range(200):
            if server.sink.received:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(server.sink.received) == 1


async def test_missing_attachment_is_sent_without_it(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    server.start()
    vid, _ = leave_message(store, data_dir, tmp_path)
    (data_dir / store.voicemail(vid)["path"]).unlink()
    mailer = Mailer(store, smtp_for(server), data_dir, Clock())
    assert await mailer.send_due() == 1
    ((_, _, msg),) = server.sink.received
    assert list(msg.iter_attachments()) == []
    text = msg.get_body(("plain",)).get_content()
    assert "could not be found" in text and "Alice <0301234567>" in text


async def test_refused_recipient_is_retried_and_does_not_block_others(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    server.start()
    leave_message(store, data_dir, tmp_path, emails=["bad@office.example", "ok@office.example"])
    clock = Clock()
    mailer = Mailer(store, smtp_for(server), data_dir, clock)
    assert await mailer.send_due() == 1
    assert [r[1] for r in server.sink.received] == [["ok@office.example"]]
    (bad,) = store.pending_outbox()
    assert bad["recipient"] == "bad@office.example" and "550" in bad["last_error"]
    # never given up: after many failures it is still pending, retried hourly
    for _ in range(8):
        clock.now = store.outbox_message(bad["id"])["next_attempt"]
        await mailer.send_due()
    row = store.outbox_message(bad["id"])
    assert row["attempts"] == 9 and row["sent"] is None
    assert row["next_attempt"] - row["last_attempt"] == 3600


def test_backoff_schedule() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [10, 30, 120, 600, 1800, 3600, 3600, 3600]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_starttls_and_login(
    store: Store, data_dir: Path, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = auth_data.password == b"secret"
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    srv = Server(
        free_port(),
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    srv.start()
    try:
        leave_message(store, data_dir, tmp_path)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        clock = Clock()
        wrong = smtp_for(srv, starttls=True, username="pbx", password="nope")
        assert await Mailer(store, wrong, data_dir, clock, ssl_context=client_ctx).send_due() == 0
        assert "Authentication" in store.pending_outbox()[0]["last_error"]
        clock.now += 60
        right = smtp_for(srv, starttls=True, username="pbx", password="secret")
        assert await Mailer(store, right, data_dir, clock, ssl_context=client_ctx).send_due() == 1
        assert logins[0] == ("pbx", "nope") and logins[-1] == ("pbx", "secret")
        assert len(srv.sink.received) == 1
    finally:
        srv.stop()


async def test_server_down_ends_the_pass(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    """One refused connection, not one per message: the rest wait for the next pass."""
    leave_message(store, data_dir, tmp_path, emails=["a@x.example", "b@x.example", "c@x.example"])
    clock = Clock()
    mailer = Mailer(store, smtp_for(server, timeout=2.0), data_dir, clock)
    assert await mailer.send_due() == 0
    assert [r["attempts"] for r in store.pending_outbox()] == [0, 0, 1]  # due ones first
    server.start()
    assert await mailer.send_due() == 2  # the two untried ones; the failed one backs off
    clock.now += BACKOFF[0]
    assert await mailer.send_due() == 1
    assert sorted(r[1][0] for r in server.sink.received) == [
        "a@x.example",
        "b@x.example",
        "c@x.example",
    ]


class SlowSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.data_started = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.data_started.set)
        await asyncio.sleep(0.5)
        return await super().handle_DATA(server, session, envelope)


async def test_cancel_mid_send_records_the_delivery(
    server: Server, store: Store, data_dir: Path, tmp_path: Path
) -> None:
    """Shutting the mailer down while the server is accepting a message: the send is
    finished and marked, so the next start does not send it again."""
    slow = SlowSink()
    slow.loop = asyncio.get_running_loop()
    server.sink = slow
    server.start()
    leave_message(store, data_dir, tmp_path)
    mailer = Mailer(store, smtp_for(server), data_dir, Clock())
    task = asyncio.create_task(mailer.run())
    await asyncio.wait_for(slow.data_started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(slow.received) == 1
    assert store.pending_outbox() == []
    assert await Mailer(store, smtp_for(server), data_dir, Clock()).send_due() == 0
    assert len(slow.received) == 1
