"""Pieces of the HTTP API without a switch: the ban, the token file, the event hub's
slow-consumer rule, and softswitch/http/openapi.yaml covering every route."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from pathlib import Path

from aiohttp import WSCloseCode, web

from softswitch.config_types import HttpConfig
from softswitch.http.auth import TOKEN_FILE, Guard, load_tokens
from softswitch.http.events import Client, EventHub
from softswitch.http.views import add_routes

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_guard_bans_after_max_failures_within_the_window_then_forgives():
    clock = Clock()
    guard = Guard(["a" * 24], max_failures=3, ban_seconds=60, clock=clock)
    assert guard.valid("a" * 24) and not guard.valid("b" * 24) and not guard.valid(None)
    guard.failed("10.0.0.1")
    clock.now += 61  # the first failure is out of the window again
    guard.failed("10.0.0.1")
    guard.failed("10.0.0.1")
    assert guard.banned_for("10.0.0.1") is None
    guard.failed("10.0.0.2")  # other addresses count apart
    guard.failed("10.0.0.1")
    assert guard.banned_for("10.0.0.1") == 60
    assert guard.banned_for("10.0.0.2") is None
    clock.now += 59
    assert guard.banned_for("10.0.0.1") == 1
    clock.now += 1
    assert guard.banned_for("10.0.0.1") is None


def test_the_generated_token_is_kept_private_and_reused(tmp_path):
    tokens, path = load_tokens(HttpConfig(), tmp_path)
    assert path == tmp_path / TOKEN_FILE and len(tokens) == 1 and len(tokens[0]) >= 24
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_tokens(HttpConfig(), tmp_path) == (tokens, path)
    configured = HttpConfig(tokens=("c" * 30,))
    assert load_tokens(configured, tmp_path / "other") == (("c" * 30,), None)
    assert not (tmp_path / "other").exists()


class FakeSocket:
    def __init__(self) -> None:
        self.closed_with: tuple | None = None

    async def close(self, code: int, message: bytes) -> None:
        self.closed_with = (code, message)


async def test_a_client_that_lags_is_dropped_and_the_others_keep_their_events():
    hub = EventHub()
    slow, fast = FakeSocket(), FakeSocket()
    slow_client, fast_client = Client(slow, "1.2.3.4", 2), Client(fast, "5.6.7.8", 10)
    hub.clients.update({slow_client, fast_client})
    for n in range(3):
        hub.publish({"type": "queue", "row": {"n": n}})  # never blocks
    assert slow_client not in hub.clients and fast_client in hub.clients
    await asyncio.sleep(0)
    assert slow.closed_with == (WSCloseCode.TRY_AGAIN_LATER, b"too slow")
    got = [json.loads(fast_client.queue.get_nowait()) for _ in range(3)]
    assert [m["row"]["n"] for m in got] == [0, 1, 2]


def test_openapi_describes_every_route():
    app = web.Application()
    add_routes(app)
    routes = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path.endswith("/{action}"):
            routes |= {path.replace("{action}", a) for a in ("login", "logout", "pause", "unpause")}
        else:
            routes.add(path)
    spec = (REPO / "softswitch" / "http" / "openapi.yaml").read_text()
    documented = set(re.findall(r"^  (/\S*):$", spec, re.M))
    assert documented == routes
    guide = (DOCS / "api.md").read_text()
    for path in routes - {"/", "/static/{path}", "/api/openapi.yaml"}:
        assert path.split("{")[0].rstrip("/") in guide, path
