"""Webhook signatures: `X-Softswitch-Signature: sha256=HEX`, HEX being the HMAC-SHA256
of the raw request body under the shared secret (`[notify] webhook_secret`, or the one
generated into DATA_DIR/webhook-secret). Pure functions, plus the secret's loading."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SIGNATURE_HEADER = "X-Softswitch-Signature"
EVENT_HEADER = "X-Softswitch-Event"
DELIVERY_HEADER = "X-Softswitch-Delivery"
SECRET_FILE = "webhook-secret"


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The header value for `body`: "sha256=" + lowercase hex HMAC-SHA256."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` (constant-time comparison)."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


def load_webhook_secret(configured: str, data_dir: str | Path) -> str:
    """The configured secret, or the one in DATA_DIR/webhook-secret, generated there
    (64 hex digits, mode 0600) on first use. The text itself is the HMAC key (its UTF-8
    bytes), so a receiver uses the file's content as it is."""
    if configured:
        return configured
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created meanwhile: read that one
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it to have a new secret generated")
    return secret
