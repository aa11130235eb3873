"""The WebSocket event stream (`GET /api/events`): every client gets every event as one
JSON text message.

The switch never waits for a client: `publish` encodes the event once and puts it on
each client's bounded queue without blocking; a client whose queue is full (it reads
slower than events come) is dropped with close code 1013 ("try again later") and may
reconnect. A writer task per client drains its queue into the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events a client may lag behind before it is dropped
HEARTBEAT = 30.0  # seconds between pings (a dead client is noticed within 2x that)


class Client:
    def __init__(self, ws: web.WebSocketResponse, remote: str | None, size: int) -> None:
        self.ws = ws
        self.remote = remote
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=size)
        self.dropped = False


class EventHub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()

    def __bool__(self) -> bool:
        return bool(self.clients)

    def publish(self, event: dict) -> None:
        """Send `event` to every client (never blocks; drops clients that lag)."""
        if not self.clients:
            return
        text = json.dumps(event, separators=(",", ":"), default=str)
        for client in list(self.clients):
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: Client) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.clients.discard(client)
        log.warning("event stream client %s too slow: dropped", client.remote)
        asyncio.get_running_loop().create_task(
            client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
        )

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
        client = Client(ws, request.remote, self.queue_size)
        # Subscribed before the handshake completes: every event after it reaches us.
        self.clients.add(client)
        try:
            await ws.prepare(request)
            writer = asyncio.get_running_loop().create_task(self._write(client))
            try:
                async for msg in ws:  # clients have nothing to say; read to see the close
                    if msg.type == WSMsgType.ERROR:
                        break
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await writer
        finally:
            self.clients.discard(client)
        return ws

    async def _write(self, client: Client) -> None:
        try:
            while not client.ws.closed:
                text = await client.queue.get()
                await client.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the reader notices the close

    async def close(self) -> None:
        """Shutdown: close every client's socket."""
        clients, self.clients = list(self.clients), set()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"switch stopping")
