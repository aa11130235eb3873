"""The SIP edge's defences: bans, rate limits, scanner filtering, an outbound call guard.

Everything is in-process and sans-I/O (no firewall rules, no sockets here; the clock is
passed in), so it is tested with a fake clock. How it is used:

- The transport asks `Defence.admit_message` about every datagram or TCP message from
  outside before anything parses it, and `Defence.admit_connection` about every new TCP
  connection. What is refused is dropped without an answer (an answer only helps a
  scanner); it is logged once per ban, or once per episode of rate limiting or scanner
  traffic from a source, with the reason.
- The registrar reports failed digest attempts to `Defence.auth_failure` (its
  `on_auth_failure` hook): a wrong password, an unknown user, credentials used for an
  address of record that is not their own. Stale nonces and missing credentials are not
  failures: every well-behaved phone produces them.

The defences (keys of `[security]`, docs/security.md):
- **Bans** (fail2ban-like): `ban_after` failures from one source within `ban_window`
  seconds and the source is ignored for `ban_seconds`: every packet dropped, its TCP
  connections closed (`on_ban`), new ones refused. A ban cannot be provoked with forged
  UDP source addresses: a failure needs a nonce, which only reaches the real address.
- **Rate limits**: a token bucket per source for messages, one for new TCP connections,
  and limits on open TCP connections (per source and in all).
- **Scanner User-Agents**: a message whose User-Agent contains one of
  `drop_user_agents` (any case) is dropped. Deliberately not a ban: that header is easily
  sent with a forged UDP source, and must not lock out the office it claims to be.
- **`allow`**: networks (an office behind one NAT address) never banned, never rate
  limited and not held to the per-source connection limit.

A "source" is an IPv4 address, or an IPv6 /64 (what one IPv6 subscriber usually gets,
so an attacker cannot walk out of a ban by changing the low bits).

Every table is bounded (`max_sources`), least recently used first out, so a flood of
forged source addresses costs a bounded amount of memory.

`CallsPerHour` is the outbound guard: calls per extension per sliding hour. It is meant
for paid routes (trunks), which do not exist yet; it is not wired to anything today.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from softswitch.config_types import SecurityConfig
from softswitch.sip.message import Peer

log = logging.getLogger(__name__)

MAX_SOURCES = 65536  # entries per table (buckets, failures, bans, log throttles)
SWEEP_INTERVAL = 10.0  # seconds between sweeps of expired state (done lazily)
LOG_EVERY = 600.0  # a scanner from one source is logged at most this often


@functools.lru_cache(maxsize=MAX_SOURCES)
def source_key(host: str) -> str:
    """What bans and limits are kept by: the IPv4 address, or the IPv6 /64."""
    if ":" not in host:
        return host
    try:
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


class TokenBuckets:
    """One token bucket per key: `rate` tokens per second, holding at most `burst`.

    A key whose bucket is full again is indistinguishable from a new one and is
    forgotten by `prune`; at most `max_keys` are kept (least recently used dropped)."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `key`'s bucket; False (and nothing taken) if short."""
        tokens, then = self._state.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._state[key] = (tokens, now)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return ok

    def full(self, key: str, now: float) -> bool:
        entry = self._state.get(key)
        if entry is None:
            return True
        tokens, then = entry
        return tokens + max(0.0, now - then) * self.rate >= self.burst

    def prune(self, now: float) -> None:
        for key in [k for k in self._state if self.full(k, now)]:
            del self._state[key]

    def __len__(self) -> int:
        return len(self._state)


@dataclass
class Ban:
    until: float
    reason: str
    dropped: int = 0  # packets and connections refused during it


class Bans:
    """Failures per key in a sliding window; `after` of them within `window` seconds
    ban the key for `seconds`. `after` = 0: nothing is ever banned by failures."""

    def __init__(
        self, after: int, window: float, seconds: float, max_keys: int = MAX_SOURCES
    ) -> None:
        self.after = after
        self.window = window
        self.seconds = seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.active: OrderedDict[str, Ban] = OrderedDict()

    def failure(self, key: str, now: float) -> int:
        """Record a failure; the number of failures of `key` within the window."""
        times = self._failures.pop(key, None) or deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        while len(times) > max(self.after, 1):
            times.popleft()
        self._failures[key] = times
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return len(times)

    def reached(self, count: int) -> bool:
        return self.after > 0 and count >= self.after

    def ban(self, key: str, now: float, reason: str, seconds: float | None = None) -> Ban:
        entry = Ban(until=now + (self.seconds if seconds is None else seconds), reason=reason)
        self.active.pop(key, None)
        self.active[key] = entry
        self._failures.pop(key, None)
        while len(self.active) > self.max_keys:
            self.active.popitem(last=False)
        return entry

    def get(self, key: str, now: float) -> Ban | None:
        """The key's ban if it is in force (an expired one is forgotten here)."""
        entry = self.active.get(key)
        if entry is None:
            return None
        if entry.until <= now:
            del self.active[key]
            _log_ban_end(key, entry)
            return None
        return entry

    def lift(self, key: str) -> bool:
        return self.active.pop(key, None) is not None

    def prune(self, now: float) -> None:
        for key, entry in list(self.active.items()):
            if entry.until <= now:
                del self.active[key]
                _log_ban_end(key, entry)
        for key, times in list(self._failures.items()):
            if not times or times[-1] <= now - self.window:
                del self._failures[key]


def _log_ban_end(key: str, entry: Ban) -> None:
    log.info("ban of %s ended (%d packets dropped during it)", key, entry.dropped)


class Networks:
    """Membership in a list of networks, cached per address (bounded)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        if not self.networks:
            return False
        known = self._cache.get(host)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            found = False
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            found = any(addr in net for net in self.networks)
        if len(self._cache) >= MAX_SOURCES:
            self._cache.clear()
        self._cache[host] = found
        return found


class Episodes:
    """Logs the start and end of a stretch of refusals per key (rate limiting), not each
    refusal: a flood must not turn into a flood of log lines."""

    def __init__(self, what: str, max_keys: int = MAX_SOURCES) -> None:
        self.what = what
        self.max_keys = max_keys
        self._dropped: OrderedDict[str, int] = OrderedDict()

    def refused(self, key: str, detail: str) -> None:
        count = self._dropped.get(key)
        if count is None:
            log.warning("%s: dropping from %s (%s)", self.what, key, detail)
            count = 0
            while len(self._dropped) >= self.max_keys:
                self._dropped.popitem(last=False)
        self._dropped[key] = count + 1

    def ended(self, key: str) -> None:
        count = self._dropped.pop(key, None)
        if count is not None:
            log.info("%s: %s is back within the limit (%d dropped)", self.what, key, count)

    def keys(self) -> list[str]:
        return list(self._dropped)


class Defence:
    """The edge's defences for one switch (see the module docstring)."""

    def __init__(self, config: SecurityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.allow = Networks(config.allow)
        self.bans = Bans(config.ban_after, config.ban_window, config.ban_seconds)
        rate = config.max_messages_per_second
        self.messages = TokenBuckets(rate, config.message_burst or 2 * rate) if rate > 0 else None
        crate = config.max_tcp_connects_per_second
        self.connects = (
            TokenBuckets(crate, config.tcp_connect_burst or 2 * crate) if crate > 0 else None
        )
        self._rate_episodes = Episodes("rate limit")
        self._connect_episodes = Episodes("tcp connection limit")
        self._agents = tuple(a.lower().encode() for a in config.drop_user_agents if a)
        self._scanner_logged: OrderedDict[str, float] = OrderedDict()
        self._next_sweep = clock() + SWEEP_INTERVAL
        # Called with the source key when a ban starts (the transport closes its TCP
        # connections). Exceptions are logged and swallowed.
        self.on_ban: Callable[[str], None] | None = None
        self.stats = {"banned": 0, "rate": 0, "scanner": 0, "connections": 0, "bans": 0}

    # -- limits the transport and parser apply -------------------------------------------
    @property
    def max_message_size(self) -> int:
        return self.config.max_message_size

    @property
    def max_headers(self) -> int:
        return self.config.max_headers

    # -- questions -----------------------------------------------------------------------
    def trusted(self, host: str) -> bool:
        """In the `allow` list: never banned, never rate limited."""
        return host in self.allow

    def banned(self, host: str) -> bool:
        return self.bans.get(source_key(host), self.clock()) is not None

    def admit_message(self, data: bytes, host: str) -> bool:
        """May a message from `host` (outside) be handled? False: drop it silently."""
        now = self.clock()
        if now >= self._next_sweep:
            self.sweep(now)
        key = source_key(host)
        if not self.trusted(host):
            ban = self.bans.get(key, now)
            if ban is not None:
                ban.dropped += 1
                self.stats["banned"] += 1
                return False
            if self.messages is not None:
                if not self.messages.take(key, now):
                    self.stats["rate"] += 1
                    self._rate_episodes.refused(
                        key, f"more than {self.config.max_messages_per_second:g} messages/s"
                    )
                    return False
        if self._agents:
            agent = self._scanner_agent(data)
            if agent is not None:
                self.stats["scanner"] += 1
                self._log_scanner(key, agent, now)
                return False
        return True

    def admit_connection(self, host: str, open_from_source: int, open_total: int) -> bool:
        """May `host` open one more TCP connection, having `open_from_source` open (and
        `open_total` open in all)? False: close it at once."""
        now = self.clock()
        key = source_key(host)
        if open_total >= self.config.max_tcp_connections:
            self.stats["connections"] += 1
            self._connect_episodes.refused(
                "*", f"{self.config.max_tcp_connections} connections open in all"
            )
            return False
        self._connect_episodes.ended("*")
        if self.trusted(host):
            return True
        ban = self.bans.get(key, now)
        if ban is not None:
            ban.dropped += 1
            self.stats["banned"] += 1
            return False
        if open_from_source >= self.config.max_tcp_connections_per_source:
            self.stats["connections"] += 1
            self._connect_episodes.refused(
                key, f"{self.config.max_tcp_connections_per_source} connections open"
            )
            return False
        if self.connects is not None and not self.connects.take(key, now):
            self.stats["connections"] += 1
            self._connect_episodes.refused(
                key, f"more than {self.config.max_tcp_connects_per_second:g} new connections/s"
            )
            return False
        return True

    # -- events --------------------------------------------------------------------------
    def auth_failure(self, source: Peer, username: str | None, reason: str) -> None:
        """The registrar's `on_auth_failure` hook: count it; ban at `ban_after`."""
        if self.trusted(source.host):
            return
        now = self.clock()
        key = source_key(source.host)
        if self.bans.get(key, now) is not None:
            return
        count = self.bans.failure(key, now)
        if self.bans.reached(count):
            self.ban(
                source.host,
                f"{count} failed digest attempts within {self.config.ban_window:g} s "
                f"(last: user {username!r}, {reason})",
            )

    def ban(self, host: str, reason: str, seconds: float | None = None) -> bool:
        """Ban `host`'s source now (False for an allow-listed host: never banned)."""
        if self.trusted(host):
            return False
        key = source_key(host)
        entry = self.bans.ban(key, self.clock(), reason, seconds)
        self.stats["bans"] += 1
        log.warning("banned %s for %g s: %s", key, entry.until - self.clock(), reason)
        if self.on_ban is not None:
            try:
                self.on_ban(key)
            except Exception:
                log.exception("on_ban hook failed")
        return True

    def lift(self, host: str) -> bool:
        """End a ban early (an administrator's decision)."""
        key = source_key(host)
        if self.bans.lift(key):
            log.warning("ban of %s lifted", key)
            return True
        return False

    def sweep(self, now: float | None = None) -> None:
        """Forget what has expired; log the end of bans and rate-limit episodes."""
        now = self.clock() if now is None else now
        self._next_sweep = now + SWEEP_INTERVAL
        self.bans.prune(now)
        for buckets, episodes in (
            (self.messages, self._rate_episodes),
            (self.connects, self._connect_episodes),
        ):
            if buckets is None:
                continue
            for key in episodes.keys():
                if key != "*" and buckets.full(key, now):
                    episodes.ended(key)
            buckets.prune(now)
        for key, when in list(self._scanner_logged.items()):
            if when <= now - LOG_EVERY:
                del self._scanner_logged[key]

    # -- scanners ------------------------------------------------------------------------
    def _scanner_agent(self, data: bytes) -> str | None:
        """The User-Agent value if it contains a listed fragment, else None. Works on
        raw bytes, before (and whether or not) the message parses."""
        end = data.find(b"\r\n\r\n")
        head = (data if end < 0 else data[:end]).lower()
        start = 0
        while True:
            at = head.find(b"\nuser-agent", start)
            if at < 0:
                return None
            line_end = head.find(b"\n", at + 1)
            line = head[at + 1 : line_end if line_end >= 0 else len(head)]
            start = at + 1
            name, sep, value = line.partition(b":")
            if not sep or name.strip() != b"user-agent":
                continue
            for fragment in self._agents:
                if fragment in value:
                    return value.strip().decode("utf-8", "replace")[:100]

    def _log_scanner(self, key: str, agent: str, now: float) -> None:
        if key in self._scanner_logged:
            return
        self._scanner_logged[key] = now
        while len(self._scanner_logged) > MAX_SOURCES:
            self._scanner_logged.popitem(last=False)
        log.warning("scanner %s (User-Agent %r): its requests are dropped", key, agent)


class CallsPerHour:
    """The outbound guard: at most `limit` calls per key (an extension) in any sliding
    window of `window` seconds (an hour).

    Meant for paid routes: a stolen password used for toll fraud runs into it after
    `limit` calls. Trunks do not exist yet, so nothing calls it today; the trunk code
    will ask `allow(extension, now)` before placing a call on a paid route (and answer
    403 when it says no)."""

    def __init__(self, limit: int, window: float = 3600.0, max_keys: int = MAX_SOURCES) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._calls: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._calls.pop(key, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        self._calls[key] = times
        while len(self._calls) > self.max_keys:
            self._calls.popitem(last=False)
        return times

    def allow(self, key: str, now: float) -> bool:
        """Count a call for `key` and say yes, or say no (and count nothing)."""
        times = self._recent(key, now)
        if len(times) >= self.limit:
            log.warning("outbound guard: %s reached %d calls in %g s", key, self.limit, self.window)
            return False
        times.append(now)
        return True

    def used(self, key: str, now: float) -> int:
        return len(self._recent(key, now))

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may call again (0 if it may now)."""
        times = self._recent(key, now)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - now)
