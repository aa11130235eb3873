"""Missed-call notifications, missed-ring notifications and daily digests for queue
supervisors, by e-mail (the Mailer) and signed webhooks (docs/notifications.md).

- `content`: what a notification says (pure: rows -> subject, text, HTML, JSON);
- `signing`: the webhook signature and the webhook secret;
- `schedule`: when the daily digest runs (pure, daylight-saving safe);
- `webhook`: `WebhookSender`, delivering the outbox rows of kind 'webhook';
- `service`: `Notifier` (queue_log rows -> outbox rows, digests) and
  `NotificationService` (what the coordinator starts and stops).
"""

from softswitch.notify.content import Notification, digest, missed_call, missed_ring
from softswitch.notify.service import NotificationService, Notifier
from softswitch.notify.signing import load_webhook_secret, sign, verify
from softswitch.notify.webhook import WebhookSender

__all__ = [
    "Notification",
    "NotificationService",
    "Notifier",
    "WebhookSender",
    "digest",
    "load_webhook_secret",
    "missed_call",
    "missed_ring",
    "sign",
    "verify",
]
