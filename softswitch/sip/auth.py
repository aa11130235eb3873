"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616), both sides.

Server side (`DigestAuthenticator`): we challenge with MD5 and qop="auth", which is what
every SIP phone implements, and also accept the RFC 2069 form without qop for old
devices. Nonces are *stateless*: a nonce carries its own creation time and a MAC under
the edge's secret, so a challenge costs no memory and survives nothing but the secret.
Memory is only spent after a client has proved it knows a password: the highest nonce
count (nc) seen per nonce, in a bounded dict, to refuse replays.

What an attacker can learn is kept to a minimum: an unknown user and a wrong password
take the same path (a digest is computed against a dummy password for unknown users, and
compared with `hmac.compare_digest`) and produce the same answer; only the internal
`AuthResult.reason` tells them apart, for logs and the ban counter.

Client side (`compute_response`, `answer_challenge`): used by the tests and later by
trunks that must answer a provider's challenge."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import Request

# -- reasons (AuthResult.reason) -------------------------------------------------------
NO_CREDENTIALS = "no credentials"  # no header (or none for our realm): plain challenge
MALFORMED = "malformed credentials"
UNSUPPORTED = "unsupported algorithm or qop"
BAD_NONCE = "bad nonce"  # not ours: tampered, or made under another secret
UNKNOWN_USER = "unknown user"
WRONG_PASSWORD = "wrong password"
STALE_NONCE = "stale nonce"  # right password, nonce too old: challenge with stale=true
NONCE_REPLAY = "nonce count replay"  # right password, nc not increasing
OK = "ok"

# Reasons where someone tried a password and it was wrong: what a ban counter counts.
# Bad or stale nonces are not counted: a restart with a new secret or a slow phone
# produces them, and they test no password.
PASSWORD_FAILURES = frozenset({UNKNOWN_USER, WRONG_PASSWORD})

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}

# Server side accepts what it offers: MD5 only (phones rarely do anything else).
_SERVER_ALGORITHMS = frozenset({"MD5"})
_SERVER_QOPS = frozenset({"auth", "auth-int"})

_NONCE_PAYLOAD = 8 + 8  # milliseconds timestamp + random salt
_NONCE_MAC = 16
_FUTURE_SKEW = 60.0  # a nonce from the future (clock stepped back) is treated as stale
_MAX_HEADER = 4096


@dataclass(frozen=True)
class AuthResult:
    """The outcome of `DigestAuthenticator.check`.

    `username` is whatever the client claimed (set even on failure, for logs; do not
    trust it unless `ok`). `stale` means the password was right but the nonce is no
    longer usable: answer with a fresh challenge carrying stale=true so the phone retries
    without asking its user."""

    ok: bool
    username: str | None
    stale: bool
    reason: str

    @property
    def password_failure(self) -> bool:
        """True when a password was tried and was wrong (what bans should count)."""
        return self.reason in PASSWORD_FAILURES


# -- header parsing --------------------------------------------------------------------
_PARAM = re.compile(
    r"""\s*([A-Za-z0-9!%'*+\-.^_`|~]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*(?:,|$)""",
    re.DOTALL,
)
_SCHEME = re.compile(r"\s*([A-Za-z0-9!%'*+\-.^_`|~]+)\s+")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Parse a WWW-/Proxy-Authenticate or (Proxy-)Authorization value into the scheme
    and its parameters (names lower-cased, quotes and escapes removed).

    Our own parser rather than sipmessage's: that one splits on every comma, so a quoted
    value containing one (qop="auth,auth-int", an odd URI) would break it. A repeated
    parameter is refused, so two parts of the code cannot read different values."""
    if len(value) > _MAX_HEADER:
        raise ValueError("authentication header too long")
    m = _SCHEME.match(value)
    if m is None:
        raise ValueError("no authentication scheme")
    params: dict[str, str] = {}
    pos = m.end()
    while pos < len(value):
        pm = _PARAM.match(value, pos)
        if pm is None or pm.end() == pos:
            raise ValueError("malformed authentication parameters")
        name, raw = pm.group(1).lower(), pm.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)
        if name in params:
            raise ValueError(f"repeated authentication parameter {name!r}")
        params[name] = raw
        pos = pm.end()
    return m.group(1), params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the digest itself -----------------------------------------------------------------
def compute_response(
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str = "00000001",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The `response` value of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1, as lower-case hex.

    `qop=None` is the RFC 2069 form (no nc/cnonce). `algorithm` may be MD5, SHA-256 or
    SHA-512-256, each with a "-sess" variant; `body` matters only for qop=auth-int."""
    base = algorithm.upper()
    sess = base.endswith("-SESS")
    if sess:
        base = base[: -len("-SESS")]
    h = _HASHES.get(base)
    if h is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def answer_challenge(
    challenge: str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Build an Authorization / Proxy-Authorization value answering `challenge` (the
    value of a WWW-Authenticate / Proxy-Authenticate header). Picks qop=auth when
    offered, else auth-int, else the RFC 2069 form; echoes opaque and algorithm."""
    scheme, params = parse_auth_header(challenge)
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {scheme}")
    realm = params.get("realm", "")
    nonce = params.get("nonce")
    if nonce is None:
        raise ValueError("challenge without nonce")
    algorithm = params.get("algorithm", "MD5")
    offered = {q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()}
    qop = "auth" if "auth" in offered else ("auth-int" if "auth-int" in offered else None)
    if offered and qop is None:
        raise ValueError(f"no supported qop in {params['qop']!r}")
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = compute_response(
        username=username,
        password=password,
        realm=realm,
        nonce=nonce,
        method=method,
        uri=uri,
        algorithm=algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(parts)


# -- server side -----------------------------------------------------------------------
class DigestAuthenticator:
    """Stateless-nonce Digest server for one realm.

    `now` is always passed in (wall-clock seconds, `time.time()`), so tests control time
    and nothing here reads a clock. The nonce is base64url(ms timestamp, 8 random bytes,
    HMAC-SHA256 under `secret` truncated to 16 bytes); it is valid for `nonce_ttl`
    seconds. Keep `secret` stable across restarts if you can: with a new secret every
    outstanding nonce is rejected (as "bad nonce", answered by a fresh challenge)."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        *,
        max_tracked_nonces: int = 65536,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest secret must be at least 16 bytes")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._secret = secret
        self._mac_prefix = b"softswitch-nonce\0" + realm.encode() + b"\0"
        # A password nobody has, so unknown users cost the same as known ones.
        self._dummy_password = secrets.token_urlsafe(18)
        self._max_tracked = max_tracked_nonces
        # nonce -> (creation time, highest nc accepted); insertion-ordered, oldest first.
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # Creation time of the newest nonce ever evicted from `_seen` for lack of room:
        # an untracked nonce at least that old may have been used already, so it is
        # treated as stale rather than as fresh (no replay window after an eviction).
        self._evicted_upto = float("-inf")

    # -- nonces --------------------------------------------------------------------
    def make_nonce(self, now: float) -> str:
        payload = max(0, int(now * 1000)).to_bytes(8, "big") + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, self._mac_prefix + payload, hashlib.sha256).digest()[
            :_NONCE_MAC
        ]

    def _nonce_time(self, nonce: str) -> float | None:
        """The creation time of a nonce we made, or None if it is not ours."""
        if len(nonce) != 43:  # 32 bytes in unpadded base64url
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_PAYLOAD + _NONCE_MAC:
            return None
        # Only the canonical spelling is ours: the last base64 character carries two
        # unused bits, so other strings decode to the same bytes and would slip past
        # the per-nonce replay tracking, which is keyed by the string.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != nonce:
            return None
        payload, mac = raw[:_NONCE_PAYLOAD], raw[_NONCE_PAYLOAD:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return int.from_bytes(payload[:8], "big") / 1000.0

    def challenge(self, now: float, stale: bool = False) -> str:
        """A header value for WWW-Authenticate (401) or Proxy-Authenticate (407)."""
        value = (
            f"Digest realm={_quote(self.realm)}, nonce={_quote(self.make_nonce(now))}, "
            'algorithm=MD5, qop="auth"'
        )
        if stale:
            value += ", stale=true"
        return value

    # -- verification ----------------------------------------------------------------
    def check(
        self,
        request: Request,
        header: str,
        lookup_password: Callable[[str], str | None],
        now: float,
    ) -> AuthResult:
        """Verify the credentials in `header` ("Authorization" or "Proxy-Authorization").

        `lookup_password(username)` returns the plain password or None for an unknown
        user. On success the nonce's count is recorded, so the same nc cannot be used
        twice (a UDP retransmission must therefore be absorbed by the transaction layer
        before it reaches here)."""
        params, failure = self._pick_credentials(request, header)
        if params is None:
            return AuthResult(False, None, False, failure)
        username = params.get("username")
        nonce = params.get("nonce")
        uri = params.get("uri")
        response = params.get("response", "").lower()
        if username is None or nonce is None or uri is None or not response:
            return AuthResult(False, username, False, MALFORMED)
        algorithm = params.get("algorithm", "MD5").upper()
        qop = params.get("qop")
        if algorithm not in _SERVER_ALGORITHMS or (qop is not None and qop not in _SERVER_QOPS):
            return AuthResult(False, username, False, UNSUPPORTED)
        nc_value = 0
        cnonce = ""
        nc_text = ""
        if qop is not None:
            nc_text = params.get("nc", "")
            cnonce = params.get("cnonce", "")
            if len(nc_text) != 8 or not cnonce:
                return AuthResult(False, username, False, MALFORMED)
            try:
                nc_value = int(nc_text, 16)
            except ValueError:
                return AuthResult(False, username, False, MALFORMED)
            if nc_value < 1:
                return AuthResult(False, username, False, MALFORMED)

        created = self._nonce_time(nonce)
        if created is None:
            return AuthResult(False, username, False, BAD_NONCE)

        # Same work whether or not the user exists: the timing and the answer match.
        password = lookup_password(username)
        known = password is not None
        expected = compute_response(
            username=username,
            password=password if password is not None else self._dummy_password,
            realm=self.realm,
            nonce=nonce,
            method=request.method,
            uri=uri,
            algorithm=algorithm,
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
            body=request.body,
        )
        matches = hmac.compare_digest(expected.encode(), response.encode())
        if not (matches and known):
            return AuthResult(False, username, False, WRONG_PASSWORD if known else UNKNOWN_USER)

        age = now - created
        if age > self.nonce_ttl or age < -_FUTURE_SKEW:
            return AuthResult(False, username, True, STALE_NONCE)
        if not self._accept_count(nonce, created, nc_value if qop is not None else None, now):
            return AuthResult(False, username, True, NONCE_REPLAY)
        return AuthResult(True, username, False, OK)

    def _pick_credentials(self, request: Request, header: str) -> tuple[dict[str, str] | None, str]:
        """The Digest credentials for our realm, if any. Credentials for other realms
        (a phone also talking to another proxy) are ignored, as RFC 3261 §22.3 allows."""
        values = request.headers.getlist(header)
        malformed = False
        for value in values:
            try:
                scheme, params = parse_auth_header(value)
            except ValueError:
                malformed = True
                continue
            if scheme.lower() == "digest" and params.get("realm") == self.realm:
                return params, OK
        return None, (MALFORMED if malformed else NO_CREDENTIALS)

    def _accept_count(self, nonce: str, created: float, nc: int | None, now: float) -> bool:
        """Record a use of `nonce`; False if it is a replay. With qop the count must grow;
        without qop (no count exists) a nonce is good for one request only."""
        self._prune(now)
        entry = self._seen.get(nonce)
        if entry is None:
            if created <= self._evicted_upto:
                return False
            last = 0
        else:
            last = entry[1]
        # No-qop use is recorded as the largest count, closing the nonce for good.
        new = nc if nc is not None else 1 << 32
        if new <= last:
            return False
        self._seen[nonce] = (created, new)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._max_tracked:
            _, (old_created, _) = self._seen.popitem(last=False)
            self._evicted_upto = max(self._evicted_upto, old_created)
        return True

    def _prune(self, now: float) -> None:
        """Forget nonces that have expired anyway (the oldest are at the front, roughly:
        entries move to the end on use, so this stops at the first still-valid one)."""
        horizon = now - self.nonce_ttl
        while self._seen:
            nonce, (created, _) = next(iter(self._seen.items()))
            if created >= horizon:
                break
            del self._seen[nonce]

    @property
    def tracked_nonces(self) -> int:
        return len(self._seen)
