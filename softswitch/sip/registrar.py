"""The registrar (RFC 3261 §10.3): who is reachable where, after digest auth.

Bindings live in memory (lookups on every INVITE must be cheap) and in the Store (so a
restart keeps phones reachable without waiting for them to re-register). Each binding
records where the REGISTER really came from (transport, host, port): that is where the
edge sends requests to the phone, because a phone behind NAT advertises a private
Contact it cannot be reached at.

The registrar is sans-I/O apart from the Store: `handle` takes a parsed REGISTER, the
packet's source and `now` (wall-clock seconds, since binding expiry times are stored as
absolute unix times) and returns the response to send.

A UDP retransmission of a REGISTER (the phone did not get our answer) must get the same
answer again, not be processed twice: a second pass would refuse its Authorization as a
nonce-count replay and its CSeq as out of order. So `handle` keeps the RFC 3261 §17.2.2
non-INVITE server transaction's one duty here: it remembers each answer for 32 s (64*T1)
by the top Via branch and the source, and repeats it for a retransmission."""

from __future__ import annotations

import email.utils
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import URI, Message, Request, Response

from softswitch.config_types import Config
from softswitch.sip.auth import PASSWORD_FAILURES, AuthResult, DigestAuthenticator
from softswitch.sip.message import Peer, make_response
from softswitch.store.db import Binding, Store

log = logging.getLogger(__name__)

# Reason given to `on_auth_failure` when valid credentials try to register (or claim)
# an address of record that is not the authenticated extension's own.
AOR_MISMATCH = "aor mismatch"

_MAX_EXPIRES_VALUE = 2**32 - 1  # RFC 3261 §20.19: larger values mean this
_TXN_LIFETIME = 32.0  # RFC 3261 Timer J for unreliable transports (64*T1)
_MAX_REMEMBERED_ANSWERS = 8192


class _BadRequest(ValueError):
    """A REGISTER we cannot make sense of: answered with 400 and the message."""


@dataclass(frozen=True)
class _ContactRequest:
    uri: str  # the Contact URI exactly as the phone wrote it (it compares our 200 to it)
    key: str  # normalised form, for matching a refresh to its existing binding
    expires: int  # requested seconds, 0 = remove
    q: float | None


class Registrar:
    """Registrar for the configured extensions, in the configured realm.

    Hooks (plain attributes, set by the edge / coordinator):
    - `on_change(aor, live_bindings)`: after any add, refresh, removal or expiry of an
      AOR's bindings (the list may be empty: the extension is now unreachable). Used for
      operator login/logout.
    - `on_auth_failure(source, username, reason)`: when credentials were presented and
      did not authenticate (a wrong password, an unknown user: `auth.PASSWORD_FAILURES`)
      or authenticated as a different extension than the one claimed (`AOR_MISMATCH`).
      The ban logic lives elsewhere; stale nonces and missing credentials are not
      reported, as every well-behaved phone produces them.
    Exceptions raised by hooks are logged and swallowed: a broken listener must not
    break registration."""

    # More contacts than this per extension and the least recently refreshed are dropped:
    # a misbehaving phone re-registering with a new Contact each time cannot make every
    # call fork to dozens of dead addresses.
    max_contacts_per_aor: int = 10

    def __init__(self, config: Config, store: Store, auth: DigestAuthenticator) -> None:
        self.config = config
        self.store = store
        self.auth = auth
        self.on_change: Callable[[str, list[Binding]], None] | None = None
        self.on_auth_failure: Callable[[Peer, str | None, str], None] | None = None
        self._passwords = {ext.number: ext.password for ext in config.extensions}
        # aor -> normalised contact key -> binding. Loaded whole (expired rows too: they
        # are filtered on lookup and dropped by `expire`, so construction needs no clock).
        self._bindings: dict[str, dict[str, Binding]] = {}
        # (branch, source, Call-ID, CSeq) -> (when answered, answer): for retransmissions.
        self._answers: OrderedDict[tuple[str, str, str, str], tuple[float, bytes]] = OrderedDict()
        for b in store.load_bindings(float("-inf")):
            self._bindings.setdefault(b.aor, {})[_contact_key(b.contact)] = b

    # -- lookups ---------------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an extension, highest q first, then most recently refreshed.
        Send to (transport, source_host, source_port), with `contact` as Request-URI."""
        live = [b for b in self._bindings.get(aor, {}).values() if b.expires > now]
        live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.updated))
        return live

    def all_bindings(self, now: float) -> list[Binding]:
        return [b for aor in sorted(self._bindings) for b in self.lookup(aor, now)]

    def expire(self, now: float) -> list[Binding]:
        """Drop bindings whose time is up (from memory and the Store) and tell `on_change`
        about each affected AOR. Call it every few seconds; returns what was dropped."""
        dropped: list[Binding] = []
        for aor in list(self._bindings):
            gone = [b for b in self._bindings[aor].values() if b.expires <= now]
            if gone:
                self._remove(aor, gone)
                dropped += gone
                self._changed(aor, now)
        return dropped

    def drop_flow(self, source: Peer, now: float) -> list[Binding]:
        """Drop the bindings that registered over a connection-oriented flow that just
        closed (a TCP phone that went away is unreachable at once, RFC 5626 spirit).
        UDP has no flows; calling this for a UDP peer does nothing."""
        if source.transport == "udp":
            return []
        dropped: list[Binding] = []
        for aor in list(self._bindings):
            gone = [
                b
                for b in self._bindings[aor].values()
                if b.transport == source.transport
                and b.source_host == source.host
                and b.source_port == source.port
            ]
            if gone:
                self._remove(aor, gone)
                dropped += gone
                self._changed(aor, now)
        return dropped

    # -- authentication ----------------------------------------------------------------
    def _password(self, username: str) -> str | None:
        return self._passwords.get(username)

    def _report_failure(self, source: Peer, username: str | None, reason: str) -> None:
        log.info("auth failure from %s user=%r: %s", source, username, reason)
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(source, username, reason)
            except Exception:
                log.exception("on_auth_failure hook failed")

    def _authenticate(
        self, request: Request, source: Peer, now: float, *, proxy: bool
    ) -> tuple[str | None, Response | None]:
        header = "Proxy-Authorization" if proxy else "Authorization"
        result: AuthResult = self.auth.check(request, header, self._password, now)
        if result.ok:
            return result.username, None
        if result.reason in PASSWORD_FAILURES:
            self._report_failure(source, result.username, result.reason)
        code = 407 if proxy else 401
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return None, make_response(
            request, code, headers=[(challenge_header, self.auth.challenge(now, result.stale))]
        )

    def authenticate_request(
        self, request: Request, source: Peer, now: float
    ) -> tuple[str | None, Response | None]:
        """Authenticate a request from a phone that is not a REGISTER (an out-of-dialog
        INVITE, say) with Proxy-Authorization. Returns (extension number, None) on
        success, else (None, response to send): 407 with a fresh Proxy-Authenticate.

        The number returned is who is calling, whatever From says."""
        return self._authenticate(request, source, now, proxy=True)

    # -- REGISTER ---------------------------------------------------------------------
    def handle(self, request: Request, source: Peer, now: float) -> Response:
        """Process a REGISTER per RFC 3261 §10.3 and return the response to send
        (the same response again for a retransmission of an answered REGISTER)."""
        key = self._txn_key(request, source)
        while self._answers:
            when, _ = next(iter(self._answers.values()))
            if when > now - _TXN_LIFETIME and len(self._answers) <= _MAX_REMEMBERED_ANSWERS:
                break
            self._answers.popitem(last=False)
        if key is not None and key in self._answers:
            answer = Message.parse(self._answers[key][1])
            assert isinstance(answer, Response)
            return answer
        response = self._handle(request, source, now)
        if key is not None:
            self._answers[key] = (now, bytes(response))
        return response

    @staticmethod
    def _txn_key(request: Request, source: Peer) -> tuple[str, str, str, str] | None:
        """RFC 3261 §17.2.3 matching (branch, source, method), plus Call-ID and CSeq so a
        client reusing a branch for a new request is not answered from the cache. Only
        for RFC 3261 branches (the magic cookie); others are just processed again."""
        try:
            branch = request.via[0].parameters.get("branch") or ""
            call_id, cseq = request.call_id, request.headers["CSeq"]
        except (IndexError, KeyError, ValueError):
            return None
        if not branch.startswith("z9hG4bK"):
            return None
        return branch, f"{source.transport}:{source.host}:{source.port}", call_id, cseq

    def _handle(self, request: Request, source: Peer, now: float) -> Response:
        if request.method != "REGISTER":
            return make_response(request, 405, headers=[("Allow", "REGISTER")])
        try:
            to = request.to_address
            call_id = request.call_id
            cseq = request.cseq
        except (KeyError, ValueError):
            return make_response(request, 400, "Bad To, Call-ID or CSeq")
        if cseq.method.upper() != "REGISTER":
            return make_response(request, 400, "CSeq method mismatch")
        # Step 3: we support no extensions, so any Require is refused (not Proxy-Require:
        # we are the registrar, not a proxy, for this request).
        required = request.require
        if required:
            return make_response(request, 420, headers=[("Unsupported", ", ".join(required))])

        # Steps 4 and 5: authenticate, then authorise the To against that identity.
        username, denial = self._authenticate(request, source, now, proxy=False)
        if denial is not None:
            return denial
        assert username is not None
        if (
            to.uri.scheme not in ("sip", "sips")
            or to.uri.user != username
            or self.config.extension(username) is None
        ):
            self._report_failure(source, username, AOR_MISMATCH)
            return make_response(request, 403)
        aor = username

        try:
            header_expires = _parse_expires(request.headers.get("Expires"))
            star, contacts = self._parse_contacts(request, header_expires)
        except _BadRequest as exc:
            return make_response(request, 400, str(exc) or None)

        if star:
            return self._remove_all(request, aor, call_id, cseq.sequence, source, now)
        if not contacts:
            return self._ok(request, aor, now)  # a query
        return self._update(request, aor, contacts, call_id, cseq.sequence, source, now)

    def _parse_contacts(
        self, request: Request, header_expires: int | None
    ) -> tuple[bool, list[_ContactRequest]]:
        raws = [c for value in request.headers.getlist("Contact") for c in _split_contacts(value)]
        if not raws:
            return False, []
        if any(r.strip() == "*" for r in raws):
            # RFC 3261 §10.2.2 / §10.3 step 6: "*" only alone and only with Expires: 0.
            if len(raws) != 1 or header_expires != 0:
                raise _BadRequest("Contact * needs Expires: 0 and no other Contact")
            return True, []
        switch = self.config.switch
        by_key: dict[str, _ContactRequest] = {}
        for raw in raws:
            uri_text, uri, params = _parse_contact(raw)
            if uri.scheme not in ("sip", "sips"):
                raise _BadRequest("Contact must be a sip or sips URI")
            param = params.get("expires")
            if param is not None:
                expires = _parse_expires(param)
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = switch.default_expires
            assert expires is not None
            q_text = params.get("q")
            try:
                q = float(q_text) if q_text is not None else None
            except ValueError as exc:
                raise _BadRequest("bad q value") from exc
            if q is not None and not 0.0 <= q <= 1.0:
                raise _BadRequest("bad q value")
            key = _uri_key(uri)
            by_key[key] = _ContactRequest(uri_text, key, expires, q)  # last one wins
        return False, list(by_key.values())

    def _out_of_order(self, existing: Binding | None, call_id: str, cseq: int) -> bool:
        """RFC 3261 §10.3 step 7: same Call-ID and a CSeq not higher than stored means
        the request is older than the binding, so the whole update is refused."""
        return existing is not None and existing.call_id == call_id and cseq <= existing.cseq

    def _remove_all(
        self, request: Request, aor: str, call_id: str, cseq: int, source: Peer, now: float
    ) -> Response:
        current = list(self._bindings.get(aor, {}).values())
        if any(self._out_of_order(b, call_id, cseq) for b in current):
            return make_response(request, 500, "Out Of Order REGISTER")
        if current:
            self._remove(aor, current)
            self._changed(aor, now)
        return self._ok(request, aor, now)

    def _update(
        self,
        request: Request,
        aor: str,
        contacts: list[_ContactRequest],
        call_id: str,
        cseq: int,
        source: Peer,
        now: float,
    ) -> Response:
        switch = self.config.switch
        # Validate everything before changing anything: the update is all or nothing.
        too_brief = [c for c in contacts if 0 < c.expires < switch.min_expires]
        if too_brief:
            return make_response(request, 423, headers=[("Min-Expires", str(switch.min_expires))])
        current = self._bindings.get(aor, {})
        if any(self._out_of_order(current.get(c.key), call_id, cseq) for c in contacts):
            return make_response(request, 500, "Out Of Order REGISTER")

        user_agent = request.headers.get("User-Agent")
        removed: list[Binding] = []
        saved: list[Binding] = []
        for c in contacts:
            existing = current.get(c.key)
            if c.expires == 0:
                if existing is not None:
                    removed.append(existing)
                continue
            if existing is not None and existing.contact != c.uri:
                removed.append(existing)  # same URI written differently: replace the row
            saved.append(
                Binding(
                    aor=aor,
                    contact=c.uri,
                    expires=now + min(c.expires, switch.max_expires),
                    transport=source.transport,
                    source_host=source.host,
                    source_port=source.port,
                    call_id=call_id,
                    cseq=cseq,
                    q=c.q,
                    user_agent=user_agent,
                    updated=now,
                )
            )
        if removed:
            self._remove(aor, removed)
        for b in saved:
            self.store.save_binding(b)
            self._bindings.setdefault(aor, {})[_contact_key(b.contact)] = b
        self._enforce_limit(aor, now)
        if removed or saved:
            self._changed(aor, now)
        return self._ok(request, aor, now)

    def _enforce_limit(self, aor: str, now: float) -> None:
        bindings = self._bindings.get(aor, {})
        live = sorted((b for b in bindings.values() if b.expires > now), key=lambda b: b.updated)
        excess = len(live) - self.max_contacts_per_aor
        if excess > 0:
            self._remove(aor, live[:excess])

    def _remove(self, aor: str, bindings: list[Binding]) -> None:
        table = self._bindings.get(aor, {})
        for b in bindings:
            self.store.delete_binding(aor, b.contact)
            key = _contact_key(b.contact)
            if table.get(key) is b:
                del table[key]
        if not table:
            self._bindings.pop(aor, None)

    def _changed(self, aor: str, now: float) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(aor, self.lookup(aor, now))
        except Exception:
            log.exception("on_change hook failed for %s", aor)

    def _ok(self, request: Request, aor: str, now: float) -> Response:
        """200 listing every current binding with its remaining time (§10.3 step 8)."""
        headers: list[tuple[str, str]] = []
        for b in self.lookup(aor, now):
            value = f"<{b.contact}>;expires={max(1, round(b.expires - now))}"
            if b.q is not None:
                value += f";q={b.q:g}"
            headers.append(("Contact", value))
        headers.append(("Date", email.utils.formatdate(now, usegmt=True)))
        return make_response(request, 200, headers=headers)


# -- parsing helpers -------------------------------------------------------------------
def _parse_expires(text: str | None) -> int | None:
    """An Expires value (header or contact parameter) as seconds; None when absent."""
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise _BadRequest("bad Expires value")
    if len(text) > 10:
        return _MAX_EXPIRES_VALUE
    return min(int(text), _MAX_EXPIRES_VALUE)


def _split_contacts(value: str) -> list[str]:
    """Split a Contact header value on the commas that separate entries (not those inside
    quotes or <...>). Done by hand so each URI keeps the exact text the phone sent."""
    parts: list[str] = []
    buf: list[str] = []
    in_quotes = in_angle = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"' and not in_angle:
            in_quotes = not in_quotes
        elif ch == "<" and not in_quotes:
            in_angle = True
        elif ch == ">" and not in_quotes:
            in_angle = False
        elif ch == "," and not in_quotes and not in_angle:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf).strip())
    if any(not p for p in parts):
        if len(parts) == 1:
            return []
        raise _BadRequest("empty Contact entry")
    return parts


def _parse_contact(raw: str) -> tuple[str, URI, dict[str, str | None]]:
    """One Contact entry: (URI text as written, parsed URI, header parameters).

    Parsed by hand rather than with `sipmessage.Address`, whose display-name pattern
    runs on to the last quote in the value and so misreads the common
    `"Name" <sip:...>;+sip.instance="<urn:uuid:...>"`."""
    rest = raw.strip()
    if rest.startswith('"'):  # quoted display name, with backslash escapes
        i, escaped = 1, False
        while i < len(rest):
            if escaped:
                escaped = False
            elif rest[i] == "\\":
                escaped = True
            elif rest[i] == '"':
                break
            i += 1
        else:
            raise _BadRequest("bad Contact display name")
        rest = rest[i + 1 :].lstrip()
        if not rest.startswith("<"):
            raise _BadRequest("bad Contact")
    lt = rest.find("<")
    if lt >= 0:
        gt = rest.find(">", lt)
        if gt < 0:
            raise _BadRequest("bad Contact")
        uri_text, params_text = rest[lt + 1 : gt].strip(), rest[gt + 1 :]
    else:  # addr-spec form: parameters after ';' belong to the header, not the URI
        uri_text, _, params_text = rest.partition(";")
        uri_text, params_text = uri_text.strip(), ";" + params_text if params_text else ""
    try:
        uri = URI.parse(uri_text)
    except ValueError as exc:
        raise _BadRequest("bad Contact URI") from exc
    return uri_text, uri, _parse_header_params(params_text)


def _parse_header_params(text: str) -> dict[str, str | None]:
    """`;name=value;flag;name="quoted"` -> {name: value}; names lower-cased."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise _BadRequest("bad Contact parameters")
    parts: list[str] = []
    buf: list[str] = []
    in_quotes = escaped = False
    for ch in text[1:]:
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ";" and not in_quotes:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise _BadRequest("bad Contact parameters")
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        params[name] = value if eq else None
    return params


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _uri_key(uri: URI) -> str:
    """An approximation of RFC 3261 §19.1.4 URI equality, good enough to recognise a
    refresh: scheme and host case-insensitive, user case-sensitive, parameters in any
    order with case-insensitive names."""
    params = ";".join(sorted(f"{k.lower()}={(v or '').lower()}" for k, v in uri.parameters.items()))
    user = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), uri.user or "")
    return f"{uri.scheme.lower()}:{user}@{uri.host.lower()}:{uri.port or ''};{params}"


def _contact_key(contact: str) -> str:
    try:
        return _uri_key(URI.parse(contact))
    except ValueError:
        return contact
