"""The HTTP server of the switch: the JSON API under /api/, its WebSocket event stream
and the dashboard's files, one aiohttp application in the coordinator's event loop.

`HttpApi(coordinator)` is created by `Coordinator.start()` when `[http] enabled`; its
`start()` binds `[http] host:port` (or raises `StartError` naming the setting, before the
switch opens any other socket), hooks the call centre's queue rows and the
coordinator's call events into the event stream, and `stop()` closes it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from softswitch.http import live
from softswitch.http.auth import Guard, auth_middleware, load_tokens
from softswitch.http.events import EventHub
from softswitch.http.views import add_routes

if TYPE_CHECKING:
    from softswitch.calls import ExtensionCall
    from softswitch.coordinator import Coordinator
    from softswitch.flow.session import FlowSession

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between checks for operator changes that write no row
SHUTDOWN_TIMEOUT = 2.0


class AccessLogger(AbstractAccessLogger):
    """Requests at DEBUG, without the query string (it may hold a token)."""

    def log(self, request, response, time: float) -> None:  # noqa: A002 - aiohttp's name
        self.logger.debug(
            "%s %s %s %s %.1f ms",
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error as JSON {"error": ...} (also the router's 404 and 405)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = getattr(exc, "message", None) or exc.text or exc.reason
        if message.startswith(f"{exc.status}: "):
            message = message.split(": ", 1)[1]
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return web.json_response({"error": message}, status=exc.status, headers=headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error (see the switch's log)"}, status=500)


@web.middleware
async def no_sniff(request: web.Request, handler):
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


API_KEY = web.AppKey("softswitch_api", object)


class HttpApi:
    def __init__(self, coordinator: Coordinator) -> None:
        from softswitch.cli import version

        co = coordinator
        assert co.store is not None and co.callcentre is not None
        self.co = co
        self.config = co.config.http
        self.version = version()
        self.started = co.clock()
        self.tokens, self.token_file = load_tokens(self.config, co.data_dir)
        self.guard = Guard(self.tokens, self.config.max_failures, self.config.ban_seconds, co.clock)
        self.hub = EventHub()
        self.tracker = live.OperatorTracker(co.callcentre, co.store)
        self.today = live.TodayStats(
            co.data_dir / "softswitch.db",
            co.config.switch.timezone,
            list(co.callcentre.blocks),
            co.clock,
        )
        self.app = web.Application(middlewares=[no_sniff, json_errors, auth_middleware(self.guard)])
        self.app[API_KEY] = self
        add_routes(self.app)
        self.app.on_shutdown.append(self._on_shutdown)
        self.runner: web.AppRunner | None = None
        self.port = self.config.port
        self._poll: asyncio.Task | None = None

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        from softswitch.coordinator import StartError

        host, port = self.config.host, self.config.port
        self.runner = web.AppRunner(
            self.app,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("softswitch.http.access"),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise StartError(
                f"[http] port {port} on {host}: cannot listen ({exc.strerror or exc}); "
                "set [http] port to a free port, or [http] enabled = false"
            ) from exc
        server = site._server  # the bound port (for the log line)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        assert self.co.callcentre is not None
        self.co.callcentre.listeners.append(self._on_queue_row)
        self.co.call_listeners.append(self._on_call)
        self._poll = asyncio.get_running_loop().create_task(self._watch_operators())
        log.info("HTTP API on http://%s:%d/", self._host_text(), self.port)

    async def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
            self._poll = None
        centre = self.co.callcentre
        if centre is not None and self._on_queue_row in centre.listeners:
            centre.listeners.remove(self._on_queue_row)
        if self._on_call in self.co.call_listeners:
            self.co.call_listeners.remove(self._on_call)
        await self.hub.close()  # before the server waits for its open requests
        await self.today.aclose()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.hub.close()

    def _host_text(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    def describe(self) -> str:
        """The start-up line: where the API is and where its token is (never the token)."""
        where = (
            f"token in {self.token_file.resolve()}"
            if self.token_file is not None
            else "tokens from [http] tokens"
        )
        return f"http: http://{self._host_text()}:{self.port}/ ({where})"

    # -- operators -----------------------------------------------------------------------
    def is_operator(self, agent: str) -> bool:
        return self.co.callcentre is not None and agent in self.co.callcentre.agents

    def operator(self, agent: str, today: dict | None = None) -> dict:
        """The operator's object; `today` figures as last computed unless given."""
        if today is None:
            _, today = self.today.cached()
        return live.operator_item(self.co, self.tracker, agent, today)

    async def operators(self) -> list[dict]:
        centre = self.co.callcentre
        if centre is None:
            return []
        _, today = await self.today.current()
        return [live.operator_item(self.co, self.tracker, a, today) for a in sorted(centre.agents)]

    def check_operator(self, agent: str, when: float | None = None) -> None:
        """Publish the operator's object if their status or state changed."""
        if self.tracker.check(agent, self.co.clock() if when is None else when) and self.hub:
            self.hub.publish({"type": "operator", "operator": self.operator(agent)})

    async def _watch_operators(self) -> None:
        """Changes no queue row tells of (a phone starting to ring for a caller)."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            centre = self.co.callcentre
            if centre is None:
                continue
            try:
                for agent in sorted(centre.agents):
                    self.check_operator(agent)
            except Exception:
                log.exception("operator watch failed")

    # -- hooks ---------------------------------------------------------------------------
    def _on_queue_row(self, row: dict) -> None:
        self.today.changed()
        self.hub.publish({"type": "queue", "row": row})
        agent = row.get("agent")
        if agent is not None and row.get("kind") in live.OPERATOR_KINDS:
            self.check_operator(agent, row.get("time"))

    def _on_call(self, event: str, call: ExtensionCall | FlowSession) -> None:
        if not self.hub:
            return
        store = self.co.store
        assert store is not None
        row = store.call(call.call_id)
        item = live.call_item(self.co, call, row)
        if event == "ended" and row is not None:
            item["ended"] = row["ended"]
            item["result"] = row["result"]
            item["cause"] = row["cause"]
        self.hub.publish({"type": "call", "event": event, "call": item})
