"""The webhook sender: delivers the outbox rows of kind 'webhook' as signed HTTP POSTs.

A row is `recipient` = the URL, `subject` = the event name, `body_text` = the JSON body,
`message_id` = the delivery id. Each attempt POSTs exactly those bytes with

    Content-Type: application/json
    X-Softswitch-Event: missed-call | missed-ring | digest
    X-Softswitch-Delivery: <the row's message id: the same on every retry>
    X-Softswitch-Signature: sha256=<hex HMAC-SHA256 of the body under the secret>

A 2xx answer delivers it. Anything else (a refused connection, a timeout after
`[notify] webhook_timeout` seconds, a 3xx/4xx/5xx) is recorded on the row (`attempts`,
`last_error`) and retried with the Mailer's backoff (10 s, 30 s, 2 min, 10 min, 30 min,
then hourly) forever. Delivery is at-least-once: a receiver should skip a delivery id
it has already seen.

Rows are grouped by URL; URLs are served concurrently, each URL's rows one after the
other in the order they were queued. When a receiver cannot be reached (connection
refused or lost, timeout, 429 or 5xx) its remaining rows are not tried in that pass:
they wait for the failed row's retry time, without counting an attempt. A 4xx other
than 429 is about that one body: the next row is tried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from softswitch.mail import BACKOFF, retry_delay
from softswitch.notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign
from softswitch.store import Store

log = logging.getLogger("softswitch.notify.webhook")

KIND = "webhook"  # the outbox rows this module delivers
USER_AGENT = "softswitch-webhook/1"


class DeliveryError(Exception):
    """One POST did not deliver. `receiver_down`: the receiver itself is unusable right
    now (not this body), so its other rows need not be tried in this pass."""

    def __init__(self, text: str, receiver_down: bool) -> None:
        super().__init__(text)
        self.receiver_down = receiver_down


def headers_for(message: dict[str, Any], secret: str) -> dict[str, str]:
    """The request headers of an outbox row (pure)."""
    body = message["body_text"].encode("utf-8")
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: message["subject"],
        DELIVERY_HEADER: message["message_id"],
        SIGNATURE_HEADER: sign(secret, body),
    }


class WebhookSender:
    """`WebhookSender(store, secret, clock)`; `asyncio.create_task(sender.run())`,
    `sender.notify()` after queueing. `backoff` (tests) replaces the retry delays."""

    def __init__(
        self,
        store: Store,
        secret: str,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = 10.0,
        poll_interval: float = 5.0,
        backoff: tuple[float, ...] = BACKOFF,
        warn_after: float = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.secret = secret
        self.clock = clock
        self.timeout = timeout
        self.poll_interval = poll_interval  # longest real sleep between looks
        self.backoff = backoff
        self.warn_after = warn_after
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def notify(self) -> None:
        """Something was queued: look at the outbox now."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due rows until cancelled; sleeps until the next row is due (at most
        `poll_interval`) or `notify()`."""
        pending = len(self.store.pending_outbox(kind=KIND))
        if pending:
            log.info("webhooks: %d notification(s) waiting in the outbox", pending)
        async with self._client() as session:
            self._session = session
            try:
                while True:
                    try:
                        await self.send_due()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("webhooks: outbox pass failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._sleep())
                    self._wake.clear()
            finally:
                self._session = None

    def _client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(force_close=True),
        )

    def _sleep(self) -> float:
        due = self.store.next_outbox_attempt(kind=KIND)
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.05, due - self.clock()))

    async def send_due(self) -> int:
        """One pass over the due rows; returns how many were delivered. Passes never
        overlap."""
        async with self._lock:
            by_url: dict[str, list[dict[str, Any]]] = {}
            for row in self.store.due_outbox(self.clock(), kind=KIND):
                by_url.setdefault(row["recipient"], []).append(dict(row))
            if not by_url:
                return 0
            if self._session is not None:
                return await self._send_groups(self._session, by_url)
            async with self._client() as session:
                return await self._send_groups(session, by_url)

    async def _send_groups(
        self, session: aiohttp.ClientSession, by_url: dict[str, list[dict[str, Any]]]
    ) -> int:
        counts = await asyncio.gather(*(self._send_url(session, rows) for rows in by_url.values()))
        return sum(counts)

    async def _send_url(self, session: aiohttp.ClientSession, rows: list[dict[str, Any]]) -> int:
        delivered = 0
        for i, message in enumerate(rows):
            error = await self._attempt(session, message)
            now = self.clock()
            if error is None:
                self.store.outbox_sent(message["id"], now)
                delivered += 1
                log.info(
                    "webhooks: %s %s to %s delivered (attempt %d)",
                    message["subject"],
                    message["message_id"],
                    message["recipient"],
                    message["attempts"] + 1,
                )
                continue
            retry_at = self._failed(message, now, error)
            if error.receiver_down:
                for later in rows[i + 1 :]:
                    self.store.outbox_postpone(later["id"], retry_at)
                break
        return delivered

    async def _attempt(
        self, session: aiohttp.ClientSession, message: dict[str, Any]
    ) -> DeliveryError | None:
        job = asyncio.ensure_future(self._post(session, message))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # shutting down mid-request: let it finish (bounded) and record a delivery,
            # so the next start does not POST it again
            done, _ = await asyncio.wait({job}, timeout=self.timeout)
            if job in done and not job.cancelled() and job.result() is None:
                self.store.outbox_sent(message["id"], self.clock())
            raise

    async def _post(
        self, session: aiohttp.ClientSession, message: dict[str, Any]
    ) -> DeliveryError | None:
        body = message["body_text"].encode("utf-8")
        try:
            async with session.post(
                message["recipient"],
                data=body,
                headers=headers_for(message, self.secret),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return None
                down = resp.status == 429 or resp.status >= 500
                return DeliveryError(f"HTTP {resp.status} {resp.reason or ''}".strip(), down)
        except TimeoutError:
            return DeliveryError(f"timed out after {self.timeout:g} s", True)
        except (aiohttp.ClientError, OSError) as exc:
            return DeliveryError(f"{type(exc).__name__}: {exc}", True)

    def _failed(self, message: dict[str, Any], now: float, error: DeliveryError) -> float:
        attempts = message["attempts"] + 1
        delay = retry_delay(attempts, self.backoff)
        text = str(error)[:1000]
        self.store.outbox_failed(message["id"], now, text, now + delay)
        age = now - message["created"]
        level = logging.ERROR if age >= self.warn_after else logging.WARNING
        log.log(
            level,
            "webhooks: %s %s to %s failed (attempt %d, queued %.0f s ago): %s; retry in %.0f s",
            message["subject"],
            message["message_id"],
            message["recipient"],
            attempts,
            age,
            text,
            delay,
        )
        return now + delay
