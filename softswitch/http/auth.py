"""Who may use the API: bearer tokens, and a ban for addresses that keep guessing.

Tokens come from `[http] tokens`; with none configured one is generated once into
`DATA_DIR/http-token` (mode 0600) and reused across restarts, so a supervisor reads it
from that file instead of from the switch's output.

Every `/api/` request must carry `Authorization: Bearer TOKEN` (the event stream may pass
`?token=TOKEN` instead: browsers cannot set headers on a WebSocket). A request without a
token or with a wrong one is a failure of its source address; `max_failures` failures
within `ban_seconds` ban that address for `ban_seconds` (429, even with a good token).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web

from softswitch.config_types import HttpConfig

TOKEN_FILE = "http-token"
MAX_TRACKED = 10_000  # addresses remembered at most (oldest forgotten first)
# Routes under /api/ that need no token (the API description is no secret).
PUBLIC = frozenset({"/api/openapi.yaml"})
# Routes that accept the token as a query parameter (browsers' WebSocket).
QUERY_TOKEN = frozenset({"/api/events"})


def load_tokens(config: HttpConfig, data_dir: Path) -> tuple[tuple[str, ...], Path | None]:
    """The accepted tokens, and the file the generated one lives in (None when the
    config names its tokens)."""
    if config.tokens:
        return tuple(config.tokens), None
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return (token,), path
        path.unlink()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return (token,), path


def bearer(request: web.Request) -> str | None:
    """The token a request presents, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path in QUERY_TOKEN:
        return request.query.get("token") or None
    return None


class Guard:
    """Token check plus the per-address failure count and ban."""

    def __init__(
        self,
        tokens: Iterable[str],
        max_failures: int,
        ban_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.tokens = tuple(t.encode() for t in tokens)
        self.max_failures = max(1, max_failures)
        self.ban_seconds = ban_seconds
        self.clock = clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.banned: OrderedDict[str, float] = OrderedDict()  # address -> until

    def valid(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode()
        # compare with every token (no early exit: the time says nothing about which)
        return sum(hmac.compare_digest(given, t) for t in self.tokens) > 0

    def banned_for(self, address: str) -> float | None:
        """Seconds the address stays banned, or None."""
        until = self.banned.get(address)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self.banned[address]
            return None
        return left

    def failed(self, address: str) -> None:
        """One more failure of `address`; bans it once it reaches the limit."""
        now = self.clock()
        times = self.failures.pop(address, None) or deque()
        times.append(now)
        while times and times[0] <= now - self.ban_seconds:
            times.popleft()
        if len(times) >= self.max_failures:
            self.banned.pop(address, None)
            self.banned[address] = now + self.ban_seconds
            while len(self.banned) > MAX_TRACKED:
                self.banned.popitem(last=False)
            return
        self.failures[address] = times
        while len(self.failures) > MAX_TRACKED:
            self.failures.popitem(last=False)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def auth_middleware(guard: Guard):
    @web.middleware
    async def check(request: web.Request, handler):
        path = request.path
        if not path.startswith("/api/") or path in PUBLIC:
            return await handler(request)
        address = request.remote or "unknown"
        left = guard.banned_for(address)
        if left is not None:
            return error(
                429,
                "too many requests with a missing or wrong token from this address; "
                f"try again in {int(left) + 1} s",
                {"Retry-After": str(int(left) + 1)},
            )
        token = bearer(request)
        if not guard.valid(token):
            guard.failed(address)
            what = "no token" if token is None else "wrong token"
            hint = (
                "send Authorization: Bearer TOKEN"
                + (" (or ?token=TOKEN)" if path in QUERY_TOKEN else "")
                + "; the token is in [http] tokens or DATA_DIR/http-token"
            )
            return error(401, f"{what}: {hint}", {"WWW-Authenticate": 'Bearer realm="softswitch"'})
        return await handler(request)

    return check
