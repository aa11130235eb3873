"""The mailer: delivers the durable `outbox` e-mails (voicemail, missed-call
notifications and digests: the rows of kind 'email') over SMTP. Rows of kind 'webhook'
are `softswitch.notify.webhook.WebhookSender`'s.

Every message is a row first (queued in the same transaction as its voicemail), so
nothing pending is lost across a restart: a new Mailer on the same database sends what
is due. Delivery is at-least-once: a crash after the server's "250" but before the row
is marked sent means one resend on the next start, with the same Message-ID header.

A failed attempt is logged and recorded on the row (`attempts`, `last_error`), and the
message is retried after 10 s, 30 s, 2 min, 10 min, 30 min, then every hour — forever:
a message is never dropped (the WAV and its row exist regardless); after `warn_after`
seconds undelivered its failures are logged as errors. A message whose attachment has
gone is sent without it, saying so in the body, so it never blocks the queue.

smtplib runs in a thread (`asyncio.to_thread`); the store is only touched on the event
loop's thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from softswitch.config_types import SmtpConfig
from softswitch.store import Store

log = logging.getLogger("softswitch.mail")

# seconds to wait after the 1st, 2nd, ... failure; the last one repeats forever
BACKOFF: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
KIND = "email"  # the outbox rows this module delivers


def retry_delay(attempts: int, backoff: tuple[float, ...] = BACKOFF) -> float:
    """Delay before the next try of a message that has failed `attempts` times (>= 1)."""
    return backoff[min(max(attempts, 1), len(backoff)) - 1]


def server_unusable(error: BaseException) -> bool:
    """Failures that are about the server, not the message: refused or dropped
    connections, TLS trouble, rejected login (smtplib's errors are OSErrors too)."""
    if isinstance(
        error,
        smtplib.SMTPConnectError | smtplib.SMTPServerDisconnected | smtplib.SMTPAuthenticationError,
    ):
        return True
    return isinstance(error, OSError) and not isinstance(error, smtplib.SMTPException)


class Mailer:
    """`Mailer(store, smtp, data_dir, clock)`; `asyncio.create_task(mailer.run())`,
    `mailer.notify()` after queueing (e.g. after `save_voicemail`)."""

    def __init__(
        self,
        store: Store,
        smtp: SmtpConfig,
        data_dir: str | Path,
        clock: Callable[[], float] = time.time,
        *,
        poll_interval: float = 5.0,
        warn_after: float = 24 * 3600.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.smtp = smtp
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.poll_interval = poll_interval  # real seconds between looks at the outbox
        self.warn_after = warn_after
        self.ssl_context = ssl_context  # for STARTTLS; None = system defaults, verified
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def notify(self) -> None:
        """Something was queued (or the clock moved): look at the outbox now."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due messages until cancelled; wakes on `notify()` or every
        `poll_interval` seconds. Errors other than SMTP ones are logged, never fatal."""
        pending = len(self.store.pending_outbox(kind=KIND))
        if pending:
            log.info("mailer: %d e-mail(s) waiting in the outbox", pending)
        while True:
            try:
                await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mailer: outbox pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def send_due(self) -> int:
        """One pass over the due messages; returns how many were delivered. Passes never
        overlap (a message is never sent twice concurrently). A connection-level failure
        ends the pass: the server is down, the rest wait for the next one."""
        async with self._lock:
            delivered = 0
            for row in self.store.due_outbox(self.clock(), kind=KIND):
                message = dict(row)
                error = await self._attempt(message)
                now = self.clock()
                if error is None:
                    self.store.outbox_sent(message["id"], now)
                    delivered += 1
                    log.info(
                        "mailer: e-mail %d to %s delivered (attempt %d)",
                        message["id"],
                        message["recipient"],
                        message["attempts"] + 1,
                    )
                    continue
                self._failed(message, now, error)
                if server_unusable(error):
                    break  # the other due messages would fail the same way
            return delivered

    async def _attempt(self, message: dict[str, Any]) -> BaseException | None:
        job = asyncio.ensure_future(asyncio.to_thread(self._deliver, message))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # shutting down mid-conversation: let it finish and record the outcome, so a
            # delivered message is not sent again on the next start
            done, _ = await asyncio.wait({job}, timeout=self.smtp.timeout * 3)
            if job in done and job.exception() is None:
                self.store.outbox_sent(message["id"], self.clock())
            raise
        except Exception as exc:
            return exc
        return None

    def _failed(self, message: dict[str, Any], now: float, error: BaseException) -> None:
        attempts = message["attempts"] + 1
        delay = retry_delay(attempts)
        text = f"{type(error).__name__}: {error}"[:1000]
        self.store.outbox_failed(message["id"], now, text, now + delay)
        age = now - message["created"]
        level = logging.ERROR if age >= self.warn_after else logging.WARNING
        log.log(
            level,
            "mailer: e-mail %d to %s failed (attempt %d, queued %.0f s ago): %s; retry in %.0f s",
            message["id"],
            message["recipient"],
            attempts,
            age,
            text,
            delay,
        )

    # -- in the worker thread ---------------------------------------------------------------
    def compose(self, message: dict[str, Any]) -> EmailMessage:
        """The MIME message for an outbox row (text, optional HTML, optional WAV)."""
        sender = message["sender"] or self.smtp.sender
        body = message["body_text"]
        data: bytes | None = None
        name = None
        if message["attachment"]:
            path = self.data_dir / message["attachment"]
            name = path.name
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning(
                    "mailer: e-mail %d: attachment %s unreadable (%s); sending without it",
                    message["id"],
                    path,
                    exc,
                )
                body = (
                    body.rstrip("\n")
                    + f"\n\nNote: the recording {name} could not be found on the switch when "
                    "this e-mail was sent, so it is not attached.\n"
                )
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = message["recipient"]
        msg["Subject"] = message["subject"]
        msg["Date"] = format_datetime(datetime.fromtimestamp(message["created"], UTC))
        msg["Message-ID"] = message["message_id"]
        if message["voicemail_id"] is not None:
            msg["X-Softswitch-Voicemail"] = str(message["voicemail_id"])
        msg.set_content(body)
        if message["body_html"]:
            msg.add_alternative(message["body_html"], subtype="html")
        if data is not None:
            msg.add_attachment(data, maintype="audio", subtype="wav", filename=name)
        return msg

    def _deliver(self, message: dict[str, Any]) -> None:
        msg = self.compose(message)
        cfg = self.smtp
        client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            client.ehlo()
            if cfg.starttls:
                client.starttls(context=self.ssl_context or ssl.create_default_context())
                client.ehlo()
            if cfg.username:
                client.login(cfg.username, cfg.password or "")
            refused = client.send_message(
                msg, from_addr=message["sender"] or cfg.sender, to_addrs=[message["recipient"]]
            )
            if refused:  # one recipient: send_message raises when it is refused; be sure
                raise smtplib.SMTPRecipientsRefused(refused)
            # accepted: whatever QUIT says, the message is delivered (no resend)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
        finally:
            client.close()
