"""Missed-call notifications and daily digests in the running switch.

`Notifier` listens to the call centre's queue_log rows (`CallCentre.listeners`). For an
`abandoned` or `left` row of a queue with `notify` addresses — and for a `ring` row with
result `missed` or `rejected` when the queue has `notify_missed_rings` — it builds the
notification (`softswitch.notify.content`) and writes one `outbox` row per address in
one transaction, before anything is sent: e-mail addresses get rows of kind 'email'
(the Mailer's), http(s) URLs rows of kind 'webhook' (the WebhookSender's). A restart
loses nothing: pending rows are delivered by the next run.

`Notifier.queue_digests(now)` queues each notified queue's digest of the day before,
once the day's `[notify] digest_time` has passed; every row's message id is fixed by
queue, day and address (`<digest-QUEUE-YYYY-MM-DD.HASH@domain>`) and inserted only if
new, so a restart (or a second call) never queues a digest twice.

`NotificationService` is what the coordinator starts and stops: the webhook secret
and sender task (only when a queue notifies a URL or webhooks are still pending) and
the digest timer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softswitch.config_types import Config, QueueBlock
from softswitch.notify import schedule
from softswitch.notify.content import (
    Notification,
    digest,
    digest_key,
    missed_call,
    missed_ring,
)
from softswitch.notify.signing import load_webhook_secret
from softswitch.notify.webhook import WebhookSender
from softswitch.reports.load import load_report
from softswitch.reports.missed import missed_report
from softswitch.reports.period import period_for_dates
from softswitch.reports.source import fetch
from softswitch.store import Store

if TYPE_CHECKING:
    from softswitch.callcentre import CallCentre
    from softswitch.mail import Mailer

log = logging.getLogger("softswitch.notify")

MISSED_RING_RESULTS = ("missed", "rejected")  # rings an operator let run out or declined
DIGEST_SERVICE_SECONDS = 20.0  # the digest's service level: answered within 20 s
DIGEST_RECHECK = 3600.0  # longest sleep of the digest timer (clock changes, suspends)


def is_webhook(address: str) -> bool:
    return "://" in address


def address_tag(address: str) -> str:
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:10]


def message_id(key: str, address: str, domain: str) -> str:
    """The fixed id of one notification to one address: a Message-ID for e-mail, the
    X-Softswitch-Delivery value for a webhook."""
    base = f"{key}.{address_tag(address)}"
    return base if is_webhook(address) else f"<{base}@{domain}>"


class Notifier:
    """Turns queue_log rows into outbox rows. `on_queued(kinds)` is told which kinds
    ('email', 'webhook') got new rows, to wake their senders."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.on_queued = on_queued
        self.tz = config.switch.timezone
        self.names: dict[str, str] = {e.number: e.name for e in config.extensions}
        self.queues: dict[str, QueueBlock] = {
            b.name: b for b in config.blocks.values() if isinstance(b, QueueBlock) and b.notify
        }

    # -- missed calls and rings ---------------------------------------------------------
    def notification_for(self, row: Mapping[str, Any]) -> Notification | None:
        """The notification a queue_log row calls for, if any."""
        block = self.queues.get(row.get("queue") or "")
        if block is None:
            return None
        kind = row.get("kind")
        if kind in ("abandoned", "left"):
            return missed_call(row, self.names, self.tz)
        if (
            kind == "ring"
            and block.notify_missed_rings
            and row.get("result") in MISSED_RING_RESULTS
            and row.get("agent")
        ):
            return missed_ring(row, self.names, self.tz)
        return None

    def on_queue_row(self, row: dict) -> None:
        """The CallCentre listener: called with every queue_log row as it is stored."""
        note = self.notification_for(row)
        if note is None:
            return
        ids = self.queue(note, self.queues[note.queue].notify)
        log.info(
            "%s notification %s for queue %s queued to %d address(es)",
            note.event,
            note.key,
            note.queue,
            len(ids),
        )

    # -- the outbox --------------------------------------------------------------------
    def queue(self, note: Notification, addresses: tuple[str, ...] | list[str]) -> list[int]:
        """One outbox row per address, all in one transaction; a row whose message id
        is already queued is skipped. Returns the new rows' ids."""
        now = self.clock()
        body = note.body()
        domain = self.config.switch.domain
        ids: list[int] = []
        kinds: set[str] = set()
        with self._transaction():
            for address in dict.fromkeys(addresses):
                hook = is_webhook(address)
                new = self.store.add_outbox(
                    kind="webhook" if hook else "email",
                    recipient=address,
                    subject=note.event if hook else note.subject,
                    body_text=body if hook else note.text,
                    body_html=None if hook else note.html,
                    created=now,
                    message_id=message_id(note.key, address, domain),
                    once=True,
                )
                if new:
                    ids.append(new)
                    kinds.add("webhook" if hook else "email")
        if kinds and self.on_queued is not None:
            self.on_queued(kinds)
        return ids

    def _transaction(self) -> contextlib.AbstractContextManager:
        if self.store.db.in_transaction:  # a caller's transaction: be part of it
            return contextlib.nullcontext()
        return self.store.transaction()

    # -- daily digests -------------------------------------------------------------------
    def queue_digests(self, now: float) -> int:
        """Queue the digest of every notified queue for the day that is due at `now`
        (see `schedule.due_day`), unless already queued. Returns how many rows were
        added. Nothing is sent for a day the switch kept no record before its end (the
        first start)."""
        at = self.config.notify.digest_time
        if not at or not self.queues:
            return 0
        day = schedule.due_day(now, at, self.tz)
        if day is None:
            return 0
        period = period_for_dates(day, day, self.tz)
        todo = {
            name: block
            for name, block in self.queues.items()
            if any(
                self.store.outbox_by_message_id(
                    message_id(digest_key(name, day), a, self.config.switch.domain)
                )
                is None
                for a in block.notify
            )
        }
        if not todo:
            return 0
        earlier = self.store.db.execute(
            "SELECT 1 FROM queue_log WHERE time < ? LIMIT 1", (period.end,)
        ).fetchone()
        if earlier is None:
            return 0
        added = 0
        for name, block in todo.items():
            note = self.digest_for(name, day, now)
            added += len(self.queue(note, block.notify))
        if added:
            log.info("queued %d digest message(s) for %s", added, day.isoformat())
        return added

    def digest_for(self, queue: str, day: dt.date, now: float | None = None) -> Notification:
        """The digest of `queue` for local day `day`, from the store."""
        period = period_for_dates(day, day, self.tz)
        data = fetch(self.store, period.start)
        load = load_report(
            data.events,
            period.start,
            period.end,
            self.tz,
            queues=[queue],
            service_seconds=DIGEST_SERVICE_SECONDS,
        )
        missed = missed_report(
            data.events,
            data.calls,
            period.start,
            period.end,
            self.tz,
            queues=[queue],
            extensions=list(self.names),
        )
        return digest(
            queue, day, load.total, missed.calls, self.names, self.tz, DIGEST_SERVICE_SECONDS
        )


class NotificationService:
    """The notifications of one running switch: `start(callcentre)` subscribes the
    Notifier and starts the webhook sender and the digest timer; `stop()` ends the tasks
    (the listener stays: rows written while the switch shuts down are kept for the next
    run)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        data_dir: str | Path,
        clock: Callable[[], float] = time.time,
        mailer: Mailer | None = None,
        **webhook_options: Any,
    ) -> None:
        self.config = config
        self.store = store
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.mailer = mailer
        self.webhook_options = webhook_options
        self.webhooks: WebhookSender | None = None  # only when there are webhooks
        self.notifier = Notifier(config, store, clock, on_queued=self._wake)
        self._tasks: list[asyncio.Task] = []

    def _wake(self, kinds: set[str]) -> None:
        if "email" in kinds and self.mailer is not None:
            self.mailer.notify()
        if "webhook" in kinds and self.webhooks is not None:
            self.webhooks.notify()

    def webhooks_needed(self) -> bool:
        """A queue notifies a URL, or webhooks queued by an earlier configuration still
        wait: only then is the secret loaded (or generated) and the sender run."""
        configured = any(is_webhook(a) for b in self.notifier.queues.values() for a in b.notify)
        configured = configured or any(is_webhook(a) for a in self.config.notify.alerts)
        return configured or self.store.next_outbox_attempt(kind="webhook") is not None

    def start(self, callcentre: CallCentre | None) -> None:
        if callcentre is not None:
            callcentre.listeners.append(self.notifier.on_queue_row)
        loop = asyncio.get_running_loop()
        if self.webhooks_needed():
            secret = load_webhook_secret(self.config.notify.webhook_secret, self.data_dir)
            self.webhooks = WebhookSender(
                self.store,
                secret,
                self.clock,
                timeout=self.config.notify.webhook_timeout,
                **self.webhook_options,
            )
            self._tasks.append(loop.create_task(self.webhooks.run()))
        if self.config.notify.digest_time and self.notifier.queues:
            self._tasks.append(loop.create_task(self._digests()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _digests(self) -> None:
        at = self.config.notify.digest_time
        tz = self.config.switch.timezone
        while True:
            try:
                self.notifier.queue_digests(self.clock())
            except Exception:
                log.exception("queueing the daily digests failed")
            now = self.clock()
            wait = schedule.next_run(now, at, tz) - now
            await asyncio.sleep(min(max(wait, 1.0), DIGEST_RECHECK))
