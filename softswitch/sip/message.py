"""Small helpers over `sipmessage`: where a message came from, and building responses.

`sipmessage` parses and serialises; what it leaves to us is RFC 3261 §8.2.6 (copying
Via, From, To, Call-ID and CSeq into a response) and RFC 3581 (received/rport)."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

from sipmessage import Request, Response

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    513: "Message Too Large",
    603: "Decline",
}

SERVER_NAME = "softswitch"


@dataclass(frozen=True)
class Peer:
    """The far end of a packet: transport, address and, for TCP, the connection id.

    For UDP `conn` is None; for TCP a connection is identified by its remote
    (host, port) as well, which is what Via received/rport carries back."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int
    conn: int | None = None
    # which of our listeners it came in on / goes out of ("outside" or "inside");
    # None lets the transport layer choose by destination
    side: str | None = None

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


def new_tag() -> str:
    return secrets.token_hex(6)


def apply_received(request: Request, source: Peer) -> None:
    """RFC 3261 §18.2.1 and RFC 3581: note in the top Via where the request really
    came from, so the response goes back there whatever the Via claims. Combined Via
    lines are split into one header line each (equivalent on the wire)."""
    vias = request.via
    if not vias:
        return
    changes: dict[str, str | None] = {"received": source.host}
    # Over TCP the response must go back on the same connection (§18.2.2), which the
    # transport finds by the remote port: note it even if the client did not ask.
    if "rport" in vias[0].parameters or source.transport != "udp":
        changes["rport"] = str(source.port)
    vias[0] = dataclasses.replace(vias[0], parameters=vias[0].parameters.replace(**changes))
    request.headers.setlist("Via", [str(v) for v in vias])


def make_response(
    request: Request,
    code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """A response to `request` per RFC 3261 §8.2.6. A To tag is added to every
    final response except 100 when the request had none (`to_tag` or a fresh one)."""
    resp = Response(code=code, phrase=reason or REASONS.get(code, "Unknown"), body=body)
    for key in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.getlist(key):
            resp.headers.add(key, value)
    if code > 100:
        to = resp.headers.get("To")
        if to is not None and ";tag=" not in to.replace(" ", "").lower():
            resp.headers.set("To", f"{to};tag={to_tag or new_tag()}")
    resp.headers.add("Server", SERVER_NAME)
    for key, value in headers or []:
        resp.headers.add(key, value)
    resp.headers.set("Content-Length", str(len(body)))
    return resp
