"""asyncio UDP and TCP transports for the SIP edge.

The transports only move bytes: they frame TCP streams by Content-Length (RFC 3261
§18.3), answer RFC 5626 CRLF keepalives, enforce size limits, and hand every whole
message to one callback with the `Peer` it came from. Parsing and routing happen above.

With a `Defence` (softswitch/sip/defence.py) every message and new TCP connection from
outside is first put to it (bans, rate limits, scanners) and its limits replace the
defaults below; what it refuses is dropped without a word.

Two sides: "outside" listeners face phones and trunks (the config's `listen` entries);
the "inside" listener is a UDP socket on 127.0.0.1 that only the media workers use.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from softswitch.sip.defence import Defence, source_key
from softswitch.sip.message import Peer

log = logging.getLogger(__name__)

# Defaults without a Defence ([security] sets them otherwise):
MAX_MESSAGE = 32768  # bytes: a larger UDP datagram or TCP message is dropped (SIP needs ~4 KB)
MAX_TCP_CONNECTIONS = 1024  # in all; more are refused at accept
MAX_TCP_PER_SOURCE = 32  # per remote address
MAX_HEADER_BYTES = 16384  # a TCP header block longer than this closes the connection
TCP_IDLE_TIMEOUT = 3600.0  # seconds with no data before a TCP connection is closed

OnMessage = Callable[[bytes, Peer], None]
OnClosed = Callable[[Peer], None]


@dataclass(frozen=True)
class Listener:
    side: str  # "outside" or "inside"
    transport: str  # "udp" or "tcp"
    host: str
    port: int


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports, listener_side: str) -> None:
        self.owner = owner
        self.side = listener_side
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(data) > self.owner.max_message or not data.strip():
            return  # oversized, or a CRLF keepalive: nothing to answer over UDP
        self.owner._deliver(data, Peer("udp", addr[0], addr[1], None, self.side))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp %s: %s", self.side, exc)


class _TcpConnection(asyncio.Protocol):
    """One TCP connection: frames messages and keeps its id in the owner's table."""

    def __init__(self, owner: Transports, side: str, outbound: bool = False) -> None:
        self.owner = owner
        self.side = side
        self.outbound = outbound  # we connected (to a trunk): not put to the limits
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        if not self.outbound and not self.owner._admit_tcp(host, self.side):
            transport.abort()
            return
        conn_id = self.owner._next_conn_id()
        self.peer = Peer("tcp", host, port, conn_id, self.side)
        self.owner._tcp[(host, port)] = self
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(TCP_IDLE_TIMEOUT, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.peer is not None:
            self.owner._tcp.pop((self.peer.host, self.peer.port), None)
            self.owner._closed(self.peer)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._touch()
        while self.buf:
            # RFC 5626 §4.4.1: a double CRLF is a ping, answered with a single CRLF.
            if self.buf.startswith(b"\r\n\r\n"):
                del self.buf[:4]
                if self.transport is not None:
                    self.transport.write(b"\r\n")
                continue
            if self.buf.startswith(b"\r\n"):
                if len(self.buf) < 4 and b"\r\n\r\n".startswith(bytes(self.buf)):
                    return  # maybe the start of a ping: wait for more
                del self.buf[:2]  # a stray CRLF between messages
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > min(MAX_HEADER_BYTES, self.owner.max_message):
                    log.warning("tcp %s: header block too long, closing", self.peer)
                    self.close()
                    self.buf.clear()
                return
            length = _content_length(bytes(self.buf[:end]))
            if length is None or end + 4 + length > self.owner.max_message:
                # RFC 3261 §18.3: Content-Length is mandatory on streams; without it
                # the stream cannot be framed any further.
                log.warning("tcp %s: missing or bad Content-Length, closing", self.peer)
                self.close()
                self.buf.clear()
                return
            total = end + 4 + length
            if len(self.buf) < total:
                return
            message = bytes(self.buf[:total])
            del self.buf[:total]
            if self.peer is not None:
                self.owner._deliver(message, self.peer)


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes: absorbs bursts (mass re-registration)


def _grow_receive_buffer(sock: socket.socket | None) -> None:
    """The default UDP receive buffer (~200 KB) overflows under a burst of REGISTERs
    while the event loop is busy; ask for more (SO_RCVBUFFORCE works as root)."""
    if sock is None:
        return
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            return
        except OSError:
            continue


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _content_length(header: bytes) -> int | None:
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


class Transports:
    """All of the edge's sockets. `send` picks the socket by the destination's side."""

    def __init__(
        self,
        on_message: OnMessage,
        on_closed: OnClosed | None = None,
        guard: Defence | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_closed = on_closed
        self.guard = guard
        self.max_message = guard.max_message_size if guard is not None else MAX_MESSAGE
        if guard is not None:
            guard.on_ban = self.drop_source
        self.listeners: list[Listener] = []
        self._udp: dict[str, list[tuple[Listener, asyncio.DatagramTransport]]] = {}
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self._tcp: dict[tuple[str, int], _TcpConnection] = {}
        self._conn_seq = 0

    # -- listening ------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int, side: str = "outside") -> Listener:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self, side), local_addr=(host, port)
        )
        actual = transport.get_extra_info("sockname")
        _grow_receive_buffer(transport.get_extra_info("socket"))
        listener = Listener(side, "udp", actual[0], actual[1])
        self._udp.setdefault(side, []).append((listener, transport))
        self.listeners.append(listener)
        return listener

    async def listen_tcp(self, host: str, port: int, side: str = "outside") -> Listener:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _TcpConnection(self, side), host, port, reuse_address=True
        )
        actual = server.sockets[0].getsockname()
        listener = Listener(side, "tcp", actual[0], actual[1])
        self._tcp_servers.append(server)
        self.listeners.append(listener)
        return listener

    def close(self) -> None:
        for entries in self._udp.values():
            for _, transport in entries:
                transport.close()
        for server in self._tcp_servers:
            server.close()
        for conn in list(self._tcp.values()):
            conn.close()

    # -- sending --------------------------------------------------------------------------
    def send(self, data: bytes, dest: Peer) -> bool:
        """Send one message. For TCP it must go over the existing connection to
        (host, port): the edge never opens connections to phones (they are behind NAT
        and registered over their own connection, RFC 5626). Only to IP addresses:
        a host name (from a forged Via, say) would be resolved by a blocking DNS lookup
        inside the event loop, so it is refused."""
        if not _is_ip(dest.host):
            log.info("not an IP address: message to %s dropped", dest)
            return False
        if dest.transport == "tcp":
            conn = self._tcp.get((dest.host, dest.port))
            if conn is None or conn.transport is None or conn.transport.is_closing():
                log.info("tcp: no connection to %s:%s, message dropped", dest.host, dest.port)
                return False
            conn.transport.write(data)
            return True
        side = dest.side or "outside"
        entries = self._udp.get(side) or self._udp.get("outside") or []
        for listener, transport in entries:
            if (":" in listener.host) == (":" in dest.host):
                transport.sendto(data, (dest.host, dest.port))
                return True
        log.info("udp: no %s socket for %s, message dropped", side, dest)
        return False

    async def connect_tcp(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Open a TCP connection to a trunk's provider, unless one is open: our requests
        to it (and its requests back, if it reuses the connection) go over it. Raises
        OSError (or TimeoutError) when it cannot be opened."""
        conn = self._tcp.get((host, port))
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: _TcpConnection(self, "outside", True), host, port),
            timeout,
        )

    def listener_for(self, side: str, transport: str, ipv6: bool = False) -> Listener | None:
        for listener in self.listeners:
            if listener.side == side and listener.transport == transport:
                if (":" in listener.host) == ipv6:
                    return listener
        return None

    def _deliver(self, data: bytes, peer: Peer) -> None:
        if (
            self.guard is not None
            and peer.side == "outside"
            and not self.guard.admit_message(data, peer.host)
        ):
            return  # banned, over its rate, or a scanner: no answer at all
        try:
            self.on_message(data, peer)
        except Exception:  # a bug in handling one message must not kill the socket
            log.exception("error handling a message from %s", peer)

    def _closed(self, peer: Peer) -> None:
        if self.on_closed is not None:
            try:
                self.on_closed(peer)
            except Exception:
                log.exception("error in connection-closed handler for %s", peer)

    def _next_conn_id(self) -> int:
        self._conn_seq += 1
        return self._conn_seq

    def _admit_tcp(self, host: str, side: str = "outside") -> bool:
        if self.guard is not None and side == "outside":
            key = source_key(host)
            from_source = sum(1 for h, _ in self._tcp if source_key(h) == key)
            return self.guard.admit_connection(host, from_source, len(self._tcp))
        from_source = sum(1 for h, _ in self._tcp if h == host)
        if len(self._tcp) >= MAX_TCP_CONNECTIONS or from_source >= MAX_TCP_PER_SOURCE:
            log.warning("tcp: refusing connection from %s (connection limit)", host)
            return False
        return True

    def drop_source(self, key: str) -> int:
        """Close every TCP connection from a source (a `defence.source_key`) that was
        just banned. Returns how many were closed."""
        conns = [c for (h, _), c in self._tcp.items() if source_key(h) == key]
        for conn in conns:
            conn.buf.clear()
            if conn.transport is not None:
                conn.transport.abort()
        return len(conns)
