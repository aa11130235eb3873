"""SIP trunks, the sans-I/O parts: registration with a provider, recognising the
provider's calls, and the number formats a provider speaks (docs/trunks.md).

- `Registration` keeps one registration alive as a state machine over an explicit
  `now`: it builds the REGISTERs (answering the provider's 401/407 digest challenge),
  takes the responses, retransmits over UDP (RFC 3261 §17.1.2), refreshes at 50-80 % of
  the time the provider granted, and backs off on failure (30 s, 60 s, ... 10 min). The
  I/O around it (sockets, timers, logging) is `softswitch.routes.TrunkService`.
- `Sources` says which trunk a packet's source belongs to: the provider's resolved
  addresses (on its port, for UDP), or the trunk's `allow` networks / address:port.
- `find_number` picks the DID of an INVITE (request-URI user, else To user) among a
  trunk's `numbers`; `to_provider` / `from_provider` convert numbers between E.164
  ("+74951234567") and the provider's `caller_id_format`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sipmessage import URI, Request, Response

from softswitch.config_types import TrunkConfig
from softswitch.sip.auth import answer_challenge, parse_auth_header
from softswitch.sip.message import Peer, new_tag

T1 = 0.5  # RFC 3261 timer T1 (s)
T2 = 4.0  # RFC 3261 timer T2 (s): cap of non-INVITE retransmission intervals
TIMER_F = 64 * T1  # a REGISTER without a final response has failed
BACKOFF = (30.0, 60.0, 120.0, 240.0, 480.0, 600.0)  # seconds before retry N after failure
REFRESH_MIN, REFRESH_SPREAD = 0.5, 0.3  # refresh at 50-80 % of the granted time
MIN_REFRESH = 2.0  # never refresh more often than this (a provider granting 1 s)

# registration states
IDLE = "idle"  # not started yet
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"  # waiting to retry (backoff)
STOPPED = "stopped"


# -- numbers -----------------------------------------------------------------------------
_NUMBER = re.compile(r"\+?[0-9]+")


def to_provider(number: str, trunk: TrunkConfig) -> str:
    """An E.164 number ("+74951234567") as this provider wants it written: e164 as is,
    international without the "+", national with the country code replaced by the
    national prefix ("84951234567"). Anything else (an extension, a number without
    "+") is sent as it is."""
    fmt = trunk.caller_id_format
    if fmt == "as-is" or not number.startswith("+") or not _NUMBER.fullmatch(number):
        return number
    if fmt == "international":
        return number[1:]
    if fmt == "national":
        cc = trunk.country_code
        if cc and number.startswith("+" + cc):
            return trunk.national_prefix + number[1 + len(cc) :]
        return (trunk.international_prefix or "+") + number[1:]
    return number


def from_provider(number: str, trunk: TrunkConfig) -> str:
    """A caller number as this provider sends it, in E.164 where the format says how:
    international "74951234567" and national "84951234567" (prefix 8, country 7) both
    become "+74951234567"; a number after the international prefix ("810...") gets "+".
    Names ("anonymous") and e164 / as-is numbers are kept."""
    fmt = trunk.caller_id_format
    if fmt in ("as-is", "e164") or number.startswith("+") or not _NUMBER.fullmatch(number):
        return number
    intl = trunk.international_prefix
    if intl and number.startswith(intl) and len(number) > len(intl):
        return "+" + number[len(intl) :]
    if fmt == "international":
        return "+" + number
    # national
    prefix = trunk.national_prefix
    if prefix and not number.startswith(prefix):
        return number  # a short or local number: nothing sure to add
    return "+" + trunk.country_code + number[len(prefix) :]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def find_number(request: Request, numbers: Mapping[str, str]) -> tuple[str, str] | None:
    """(DID, block) for an INVITE: the request-URI user, else the To user, looked up
    in `numbers` exactly, then by digits alone ("74951234567" finds "+74951234567")."""
    candidates: list[str] = []
    try:
        candidates.append(request.uri.user or "")
    except Exception:
        pass
    try:
        candidates.append(request.to_address.uri.user or "")
    except Exception:
        pass
    for user in candidates:
        if user and user in numbers:
            return user, numbers[user]
    by_digits = {_digits(k): k for k in numbers if _digits(k)}
    for user in candidates:
        key = by_digits.get(_digits(user)) if _digits(user) else None
        if key is not None:
            return key, numbers[key]
    return None


# -- where the provider's calls come from ----------------------------------------------
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass
class TrunkSources:
    """What a source must be to count as one trunk."""

    name: str
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]  # from allow (any port)
    endpoints: set[tuple[str, int]]  # from allow "address:port", exact
    # the provider's own resolved addresses (host, proxy) with its port; used only when
    # `allow` is empty. UDP must come from that port, TCP from any (the provider's
    # side of a connection has an ephemeral port when it connected to us)
    provider: set[tuple[str, int]] = dataclasses.field(default_factory=set)

    def matches(self, source: Peer) -> bool:
        addr = _ip(source.host)
        if addr is None:
            return False
        host = str(addr)
        if (host, source.port) in self.endpoints:
            return True
        if any(addr in net for net in self.networks):
            return True
        if self.networks or self.endpoints:
            return False
        if source.transport == "udp":
            return (host, source.port) in self.provider
        return any(h == host for h, _ in self.provider)


def parse_allow(entries: Iterable[str]) -> tuple[list, set[tuple[str, int]]]:
    """`allow` entries (normalised by the config) into networks and address:port pairs."""
    networks: list = []
    endpoints: set[tuple[str, int]] = set()
    for entry in entries:
        if "/" in entry:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        if entry.startswith("["):
            host, _, port = entry[1:].partition("]:")
        else:
            host, _, port = entry.partition(":")
        addr = _ip(host)
        if addr is not None:
            endpoints.add((str(addr), int(port)))
    return networks, endpoints


class Sources:
    """Which trunk a request's source belongs to (first match in config order)."""

    def __init__(self, trunks: Iterable[TrunkConfig]) -> None:
        self.trunks: list[TrunkSources] = []
        for trunk in trunks:
            networks, endpoints = parse_allow(trunk.allow)
            self.trunks.append(TrunkSources(trunk.name, networks, endpoints))

    def set_provider(self, name: str, addresses: Iterable[tuple[str, int]]) -> None:
        """The provider's resolved addresses (host and proxy, with their ports)."""
        for t in self.trunks:
            if t.name == name:
                t.provider = {(str(_ip(h) or h), p) for h, p in addresses}

    def match(self, source: Peer) -> str | None:
        for t in self.trunks:
            if t.matches(source):
                return t.name
        return None


# -- registration ------------------------------------------------------------------------
@dataclass
class _Txn:
    branch: str
    data: bytes
    started: float
    retransmit_at: float | None  # UDP only
    interval: float
    provisional: bool = False
    answered: frozenset[str] = frozenset()  # nonces already answered in this attempt


class Registration:
    """One trunk's registration, sans-I/O (see the module docstring).

    The driver calls `due(now)` / `start(now)` to send a new REGISTER, `poll(now)` for
    retransmissions and timeouts, `on_response(resp, now)` for each response whose top
    Via branch is in `branches` (it may return the next REGISTER to send: the answer to
    a challenge), `next_wakeup()` to know when to call again, and `stop(now)` for an
    unregistration to send on the way out. `on_change(reg)` is called on every change of
    `state`; `reason` says why."""

    def __init__(
        self,
        trunk: TrunkConfig,
        *,
        local: str,
        contact: str,
        rng: Callable[[], float] = random.random,
        on_change: Callable[[Registration], None] | None = None,
    ) -> None:
        self.trunk = trunk
        self.local = local  # our host:port as the provider sees it (Via sent-by)
        self.contact = contact  # our Contact URI
        self.rng = rng
        self.on_change = on_change
        self.call_id = secrets.token_hex(12) + "@softswitch"
        self.tag = new_tag()
        self.cseq = 0
        self.expires = trunk.expires  # asked for (423 Min-Expires raises it)
        self.state = IDLE
        self.reason = ""
        self.code: int | None = None
        self.since = 0.0
        self.next_at = 0.0  # when the next REGISTER is due
        self.expires_at: float | None = None  # when the current registration runs out
        self.failures = 0
        self.txn: _Txn | None = None

    # -- what the driver asks ------------------------------------------------------------
    @property
    def branches(self) -> set[str]:
        return {self.txn.branch} if self.txn is not None else set()

    def due(self, now: float) -> bool:
        return self.state != STOPPED and self.txn is None and now >= self.next_at

    def next_wakeup(self) -> float:
        if self.txn is not None:
            when = self.txn.started + TIMER_F
            if self.txn.retransmit_at is not None:
                when = min(when, self.txn.retransmit_at)
            return when
        return self.next_at

    def start(self, now: float) -> bytes:
        """A new REGISTER (no credentials: the provider's challenge is answered)."""
        if self.state != REGISTERED:
            self._set(REGISTERING, "sending REGISTER", now)
        return self._send(self._request(self.expires), now, answered=frozenset())

    def poll(self, now: float) -> bytes | None:
        """A retransmission due now, if any; a transaction past Timer F fails."""
        txn = self.txn
        if txn is None:
            return None
        if now >= txn.started + TIMER_F:
            self.txn = None
            self._failed("no response from the provider", None, now)
            return None
        if txn.retransmit_at is not None and now >= txn.retransmit_at:
            txn.interval = T2 if txn.provisional else min(txn.interval * 2, T2)
            txn.retransmit_at = now + txn.interval
            return txn.data
        return None

    def on_response(self, resp: Response, now: float) -> bytes | None:
        txn = self.txn
        if txn is None or resp.via[0].parameters.get("branch") != txn.branch:
            return None  # a late retransmission of an answered REGISTER
        code = resp.code
        if code < 200:
            txn.provisional = True
            if txn.retransmit_at is not None:
                txn.retransmit_at = now + T2
            return None
        self.txn = None
        if code in (401, 407):
            return self._challenged(resp, txn, now)
        if 200 <= code < 300:
            self._registered(resp, now)
            return None
        if code == 423:
            minimum = resp.headers.get("Min-Expires") or ""
            if minimum.strip().isdigit() and int(minimum) > self.expires:
                self.expires = int(minimum)
                return self._send(self._request(self.expires), now, answered=frozenset())
        retry_after = None
        text = (resp.headers.get("Retry-After") or "").split(";")[0].strip()
        if text.isdigit():
            retry_after = float(text)
        self._failed(f"{code} {resp.phrase}".strip(), code, now, retry_after)
        return None

    def stop(self, now: float) -> bytes | None:
        """Unregister (Expires: 0) if registered; nothing is expected back."""
        was = self.state
        self.txn = None
        self._set(STOPPED, "switch stopped", now)
        if was != REGISTERED:
            return None
        return bytes(self._request(0, branch="z9hG4bK" + secrets.token_hex(12)))

    def fail(self, reason: str, now: float) -> None:
        """The driver could not send (the provider's address does not resolve, no TCP
        connection): counts as a failed attempt."""
        self.txn = None
        self._failed(reason, None, now)

    def status(self, now: float) -> dict:
        return {
            "trunk": self.trunk.name,
            "state": self.state,
            "reason": self.reason,
            "code": self.code,
            "since": self.since,
            "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - now),
            "next_in": None if self.txn is not None else max(0.0, self.next_at - now),
            "failures": self.failures,
        }

    # -- internals -----------------------------------------------------------------------
    def _set(self, state: str, reason: str, now: float, code: int | None = None) -> None:
        changed = state != self.state or reason != self.reason
        if state != self.state:
            self.since = now
        self.state, self.reason, self.code = state, reason, code
        if changed and self.on_change is not None:
            self.on_change(self)

    @property
    def _aor(self) -> str:
        t = self.trunk
        port = "" if t.port == 5060 else f":{t.port}"
        return f"sip:{t.username}@{t.host}{port}"

    @property
    def _registrar(self) -> str:
        t = self.trunk
        port = "" if t.port == 5060 else f":{t.port}"
        params = ";transport=tcp" if t.transport == "tcp" else ""
        return f"sip:{t.host}{port}{params}"

    def _request(self, expires: int, branch: str | None = None) -> Request:
        self.cseq += 1
        req = Request("REGISTER", URI.parse(self._registrar))
        branch = branch or "z9hG4bK" + secrets.token_hex(12)
        transport = self.trunk.transport.upper()
        req.headers.add("Via", f"SIP/2.0/{transport} {self.local};branch={branch};rport")
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", f"<{self._aor}>;tag={self.tag}")
        req.headers.add("To", f"<{self._aor}>")
        req.headers.add("Call-ID", self.call_id)
        req.headers.add("CSeq", f"{self.cseq} REGISTER")
        req.headers.add("Contact", f"<{self.contact}>")
        req.headers.add("Expires", str(expires))
        req.headers.add("User-Agent", "softswitch")
        req.headers.add("Content-Length", "0")
        return req

    def _send(self, req: Request, now: float, answered: frozenset[str]) -> bytes:
        data = bytes(req)
        udp = self.trunk.transport == "udp"
        self.txn = _Txn(
            branch=req.via[0].parameters.get("branch", ""),
            data=data,
            started=now,
            retransmit_at=now + T1 if udp else None,
            interval=T1,
            answered=answered,
        )
        return data

    def _challenged(self, resp: Response, txn: _Txn, now: float) -> bytes | None:
        header = "WWW-Authenticate" if resp.code == 401 else "Proxy-Authenticate"
        trunk = self.trunk
        for challenge in resp.headers.getlist(header):
            try:
                scheme, params = parse_auth_header(challenge)
            except ValueError:
                continue
            if scheme.lower() != "digest":
                continue
            if trunk.realm and params.get("realm") != trunk.realm:
                continue
            nonce = params.get("nonce", "")
            stale = params.get("stale", "").lower() == "true"
            if nonce in txn.answered and not stale:
                break  # our answer to this very challenge was refused: wrong password
            req = self._request(self.expires)
            try:
                value = answer_challenge(
                    challenge,
                    method="REGISTER",
                    uri=str(req.uri),
                    username=trunk.auth_username or trunk.username,
                    password=trunk.password,
                )
            except ValueError:
                continue
            req.headers.add("Authorization" if resp.code == 401 else "Proxy-Authorization", value)
            return self._send(req, now, answered=txn.answered | {nonce})
        self._failed(f"{resp.code} credentials refused", resp.code, now)
        return None

    def _registered(self, resp: Response, now: float) -> None:
        granted = None
        try:
            ours = URI.parse(self.contact)
            key = (ours.user, ours.host, ours.port or 5060)
            for contact in resp.contact:
                uri = contact.uri
                if (uri.user, uri.host, uri.port or 5060) == key:
                    value = contact.parameters.get("expires")
                    if value is not None and str(value).isdigit():
                        granted = int(value)
        except Exception:
            granted = None
        if granted is None:
            text = (resp.headers.get("Expires") or "").strip()
            granted = int(text) if text.isdigit() else self.expires
        if granted <= 0:
            self._failed("the provider granted no time", resp.code, now)
            return
        self.failures = 0
        self.expires_at = now + granted
        fraction = REFRESH_MIN + REFRESH_SPREAD * self.rng()
        self.next_at = now + max(MIN_REFRESH, granted * fraction)
        self._set(REGISTERED, f"for {granted} s", now, resp.code)

    def _failed(
        self, reason: str, code: int | None, now: float, retry_after: float | None = None
    ) -> None:
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        if retry_after is not None:
            delay = max(retry_after, BACKOFF[0])
        self.failures += 1
        self.next_at = now + delay
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None
        self._set(FAILED, f"{reason}; retry in {delay:g} s", now, code)
