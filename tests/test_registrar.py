"""Registrar behaviour (RFC 3261 §10.3) with digest auth, persistence and hooks.

Requests are built as bytes and parsed with sipmessage, as the edge will; time is an
explicit `now` (unix seconds), nothing sleeps."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sipmessage import Message, Request, Response

from softswitch.config_types import Config, ExtensionConfig, SwitchConfig
from softswitch.sip.auth import (
    UNKNOWN_USER,
    WRONG_PASSWORD,
    DigestAuthenticator,
    answer_challenge,
    parse_auth_header,
)
from softswitch.sip.message import Peer, apply_received
from softswitch.sip.registrar import AOR_MISMATCH, Registrar
from softswitch.store.db import Binding, Store

DOMAIN = "pbx.test"
SECRET = b"registrar-test-secret-0123456789"
NOW = 1_700_000_000.0
PASSWORDS = {"100": "pw-100", "101": "pw-101", "102": "pw-102"}
# The phone says it is at a private address; the packet came from the NAT's public one.
PHONE = Peer("udp", "203.0.113.7", 40123)
PRIVATE_CONTACT = "<sip:100@192.168.1.10:5060;transport=udp>"

CONFIG = Config(
    switch=SwitchConfig(domain=DOMAIN, min_expires=60, max_expires=3600, default_expires=600),
    extensions=tuple(ExtensionConfig(n, f"Ext {n}", pw) for n, pw in PASSWORDS.items()),
)


def build(
    method: str = "REGISTER",
    *,
    user: str = "100",
    to_user: str | None = None,
    contacts: tuple[str, ...] = (PRIVATE_CONTACT,),
    expires: str | None = None,
    call_id: str = "call-1@192.168.1.10",
    cseq: int = 1,
    authorization: str | None = None,
    auth_header: str = "Authorization",
    extra: tuple[str, ...] = (),
    branch: str | None = None,
) -> Request:
    to_user = to_user if to_user is not None else user
    # a new transaction per (Call-ID, CSeq), as a phone would do
    default_branch = "z9hG4bK" + hashlib.md5(f"{call_id}/{cseq}".encode()).hexdigest()[:12]
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{to_user}@{DOMAIN}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.168.1.10:5060;branch={branch or default_branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=from-{user}",
        f"To: <sip:{to_user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "User-Agent: test-phone/1.0",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"{auth_header}: {authorization}")
    lines += list(extra)
    lines.append("Content-Length: 0")
    msg = Message.parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


class Phone:
    """A minimal UA: sends a REGISTER, answers the 401, keeps its CSeq going up."""

    def __init__(
        self,
        reg: Registrar,
        user: str = "100",
        password: str | None = None,
        call_id: str = "call-1@192.168.1.10",
        source: Peer = PHONE,
    ) -> None:
        self.reg = reg
        self.user = user
        self.password = password if password is not None else PASSWORDS[user]
        self.call_id = call_id
        self.source = source
        self.cseq = 0

    def send(self, now: float = NOW, **kw: object) -> Response:
        """REGISTER, and if challenged, again with credentials. Returns the final answer."""
        kw.setdefault("user", self.user)
        self.cseq += 1
        first = self.reg.handle(
            build(call_id=self.call_id, cseq=self.cseq, **kw),  # type: ignore[arg-type]
            self.source,
            now,
        )
        if first.code != 401:
            return first
        self.cseq += 1
        value = answer_challenge(
            first.headers["WWW-Authenticate"],
            method="REGISTER",
            uri=f"sip:{DOMAIN}",
            username=self.user,
            password=self.password,
        )
        return self.reg.handle(
            build(call_id=self.call_id, cseq=self.cseq, authorization=value, **kw),  # type: ignore[arg-type]
            self.source,
            now,
        )


def contact_expires(resp: Response) -> dict[str, int]:
    """Contact URI -> expires, from a 200 OK."""
    out: dict[str, int] = {}
    for value in resp.headers.getlist("Contact"):
        uri, _, params = value.partition(">")
        exp = [p.split("=")[1] for p in params.split(";") if p.startswith("expires=")]
        out[uri.lstrip("<")] = int(exp[0])
    return out


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "softswitch.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store(db_path)
    yield s
    s.close()


@pytest.fixture
def reg(store: Store) -> Registrar:
    return Registrar(CONFIG, store, DigestAuthenticator(DOMAIN, SECRET))


# -- authentication ------------------------------------------------------------------
def test_register_without_credentials_is_challenged(reg: Registrar) -> None:
    resp = reg.handle(build(), PHONE, NOW)
    assert resp.code == 401
    scheme, params = parse_auth_header(resp.headers["WWW-Authenticate"])
    assert scheme == "Digest" and params["realm"] == DOMAIN and params["qop"] == "auth"
    assert ";tag=" in resp.headers["To"]
    assert reg.lookup("100", NOW) == []


def test_register_with_digest_creates_binding_at_the_packet_source(
    reg: Registrar, store: Store
) -> None:
    resp = Phone(reg).send(expires="300")
    assert resp.code == 200
    assert contact_expires(resp) == {"sip:100@192.168.1.10:5060;transport=udp": 300}
    assert resp.headers.get("Date")
    [b] = reg.lookup("100", NOW)
    # NAT fix: the edge will send to where the REGISTER came from, not to the Contact.
    assert (b.transport, b.source_host, b.source_port) == ("udp", "203.0.113.7", 40123)
    assert b.contact == "sip:100@192.168.1.10:5060;transport=udp"
    assert b.expires == NOW + 300
    assert b.user_agent == "test-phone/1.0"
    assert store.load_bindings(NOW) == [b]


def test_wrong_password_is_challenged_again_and_stores_nothing(reg: Registrar) -> None:
    failures: list[tuple[Peer, str | None, str]] = []
    reg.on_auth_failure = lambda src, user, reason: failures.append((src, user, reason))
    resp = Phone(reg, password="not-it").send()
    assert resp.code == 401
    assert "stale" not in parse_auth_header(resp.headers["WWW-Authenticate"])[1]
    assert reg.lookup("100", NOW) == []
    assert reg.store.load_bindings(NOW) == []
    assert failures == [(PHONE, "100", WRONG_PASSWORD)]


def normalised(resp: Response) -> bytes:
    """A response with its random parts (nonce, To tag) blanked out."""
    nonce = parse_auth_header(resp.headers["WWW-Authenticate"])[1]["nonce"]
    to_tag = resp.headers["To"].split(";tag=")[1]
    return bytes(resp).replace(nonce.encode(), b"NONCE").replace(to_tag.encode(), b"TAG")


def test_unknown_user_and_wrong_password_get_the_same_answer(reg: Registrar) -> None:
    failures: list[str] = []
    reg.on_auth_failure = lambda src, user, reason: failures.append(reason)
    challenge = reg.auth.challenge(NOW)

    def attempt(username: str, source: Peer) -> Response:
        value = answer_challenge(
            challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username=username, password="guess"
        )
        # identical requests but for the credentials (from two ports, as two attempts)
        return reg.handle(build(user="100", authorization=value, cseq=2), source, NOW)

    wrong = attempt("100", PHONE)
    unknown = attempt("999", Peer("udp", PHONE.host, PHONE.port + 1))
    assert wrong.code == unknown.code == 401
    assert normalised(wrong) == normalised(unknown)
    assert failures == [WRONG_PASSWORD, UNKNOWN_USER]


def test_expired_nonce_gets_stale_challenge(reg: Registrar) -> None:
    failures: list[str] = []
    reg.on_auth_failure = lambda src, user, reason: failures.append(reason)
    old_challenge = reg.auth.challenge(NOW)
    value = answer_challenge(
        old_challenge,
        method="REGISTER",
        uri=f"sip:{DOMAIN}",
        username="100",
        password=PASSWORDS["100"],
    )
    resp = reg.handle(build(authorization=value, cseq=2), PHONE, NOW + 3600)
    assert resp.code == 401
    params = parse_auth_header(resp.headers["WWW-Authenticate"])[1]
    assert params["stale"] == "true"
    assert params["nonce"] != parse_auth_header(old_challenge)[1]["nonce"]
    assert reg.lookup("100", NOW + 3600) == []
    assert failures == []  # a slow phone is not an attacker


def test_register_for_someone_else_is_forbidden(reg: Registrar) -> None:
    failures: list[str] = []
    reg.on_auth_failure = lambda src, user, reason: failures.append(reason)
    # authenticated as 100 (From/credentials), To names 101
    resp = Phone(reg).send(to_user="101")
    assert resp.code == 403
    assert reg.lookup("100", NOW) == reg.lookup("101", NOW) == []
    assert failures == [AOR_MISMATCH]


def test_register_for_unconfigured_extension_is_forbidden(reg: Registrar) -> None:
    resp = Phone(reg).send(to_user="555")
    assert resp.code == 403


# -- expiry ---------------------------------------------------------------------------
def test_expires_header_contact_param_and_default(reg: Registrar) -> None:
    phone = Phone(reg)
    resp = phone.send(
        contacts=("<sip:100@10.0.0.1>;expires=120", "<sip:100@10.0.0.2>"), expires="900"
    )
    assert contact_expires(resp) == {"sip:100@10.0.0.1": 120, "sip:100@10.0.0.2": 900}
    resp = Phone(reg, user="101", call_id="c101").send(contacts=("<sip:101@10.0.0.3>",))
    assert contact_expires(resp) == {"sip:101@10.0.0.3": CONFIG.switch.default_expires}


def test_too_brief_gets_423_with_min_expires(reg: Registrar) -> None:
    resp = Phone(reg).send(expires="30")
    assert resp.code == 423
    assert resp.headers["Min-Expires"] == "60"
    assert reg.lookup("100", NOW) == []
    # one too-brief contact refuses the whole request
    resp = Phone(reg).send(
        contacts=("<sip:100@10.0.0.1>", "<sip:100@10.0.0.2>;expires=5"), expires="600"
    )
    assert resp.code == 423 and reg.lookup("100", NOW) == []


def test_expiry_capped_at_max_expires(reg: Registrar) -> None:
    phone = Phone(reg)
    resp = phone.send(expires="86400")
    assert list(contact_expires(resp).values()) == [3600]
    assert reg.lookup("100", NOW)[0].expires == NOW + 3600
    resp = phone.send(expires="99999999999999999999")  # > 2**32-1: still capped
    assert list(contact_expires(resp).values()) == [3600]


def test_bad_expires_is_400(reg: Registrar) -> None:
    assert Phone(reg).send(expires="soon").code == 400
    assert Phone(reg).send(contacts=("<sip:100@10.0.0.1>;expires=-1",)).code == 400


def test_expires_zero_removes_one_binding(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.send(contacts=("<sip:100@10.0.0.1>", "<sip:100@10.0.0.2>"), expires="600")
    resp = phone.send(contacts=("<sip:100@10.0.0.1>",), expires="0")
    assert resp.code == 200
    assert contact_expires(resp) == {"sip:100@10.0.0.2": 600}
    assert [b.contact for b in reg.store.load_bindings(NOW)] == ["sip:100@10.0.0.2"]


def test_200_lists_all_bindings_with_remaining_time(reg: Registrar) -> None:
    Phone(reg, call_id="desk").send(contacts=("<sip:100@10.0.0.1>",), expires="600")
    resp = Phone(reg, call_id="soft").send(
        NOW + 100, contacts=("<sip:100@10.0.0.2>",), expires="600"
    )
    assert contact_expires(resp) == {"sip:100@10.0.0.1": 500, "sip:100@10.0.0.2": 600}


def test_query_without_contact_lists_bindings(reg: Registrar) -> None:
    Phone(reg).send(expires="600")
    resp = Phone(reg, call_id="query").send(NOW + 60, contacts=())
    assert resp.code == 200
    assert contact_expires(resp) == {"sip:100@192.168.1.10:5060;transport=udp": 540}
    assert len(reg.lookup("100", NOW + 60)) == 1  # nothing changed


def test_query_needs_auth_too(reg: Registrar) -> None:
    assert reg.handle(build(contacts=()), PHONE, NOW).code == 401


# -- Contact: * ----------------------------------------------------------------------------
def test_star_with_expires_zero_removes_all(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.send(contacts=("<sip:100@10.0.0.1>", "<sip:100@10.0.0.2>"), expires="600")
    Phone(reg, call_id="other").send(contacts=("<sip:100@10.0.0.3>",), expires="600")
    resp = phone.send(contacts=("*",), expires="0")
    assert resp.code == 200
    assert resp.headers.getlist("Contact") == []
    assert reg.lookup("100", NOW) == [] and reg.store.load_bindings(NOW) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (("*",), "60"),
        (("*",), None),
        (("*", "<sip:100@10.0.0.1>"), "0"),
        (("*, <sip:100@10.0.0.1>",), "0"),
    ],
)
def test_star_misuse_is_400(reg: Registrar, contacts: tuple[str, ...], expires: str | None) -> None:
    Phone(reg).send(contacts=("<sip:100@10.0.0.9>",), expires="600")
    resp = Phone(reg, call_id="star").send(contacts=contacts, expires=expires)
    assert resp.code == 400
    assert len(reg.lookup("100", NOW)) == 1


def test_star_respects_cseq_order(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.send(expires="600")  # stored with CSeq 2
    value = answer_challenge(
        reg.auth.challenge(NOW),
        method="REGISTER",
        uri=f"sip:{DOMAIN}",
        username="100",
        password=PASSWORDS["100"],
    )
    # an old request, delayed in the network (its own transaction, so its own branch)
    old = build(contacts=("*",), expires="0", cseq=1, authorization=value, branch="z9hG4bKold")
    resp = reg.handle(old, PHONE, NOW)
    assert resp.code == 500
    assert len(reg.lookup("100", NOW)) == 1


# -- Call-ID / CSeq ------------------------------------------------------------------------
def test_lower_cseq_same_call_id_is_refused(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.cseq = 10
    phone.send(expires="600")  # binding has CSeq 12
    stale = answer_challenge(
        reg.auth.challenge(NOW),
        method="REGISTER",
        uri=f"sip:{DOMAIN}",
        username="100",
        password=PASSWORDS["100"],
    )
    resp = reg.handle(build(cseq=5, expires="0", authorization=stale), PHONE, NOW + 1)
    assert resp.code == 500
    [b] = reg.lookup("100", NOW + 1)
    assert b.cseq == 12 and b.expires == NOW + 600


def test_other_call_id_may_update_with_any_cseq(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.cseq = 10
    phone.send(expires="600")
    # e.g. the phone rebooted: new Call-ID, CSeq starts again at 1
    resp = Phone(reg, call_id="after-reboot").send(NOW + 5, expires="600")
    assert resp.code == 200
    [b] = reg.lookup("100", NOW + 5)
    assert b.call_id == "after-reboot" and b.cseq == 2 and b.expires == NOW + 605


def test_refresh_updates_source_and_keeps_one_binding(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.send(expires="600")
    phone.source = Peer("udp", "203.0.113.7", 50000)  # NAT rebinding moved the port
    phone.send(NOW + 300, expires="600")
    [b] = reg.lookup("100", NOW + 300)
    assert b.source_port == 50000 and b.expires == NOW + 900
    assert len(reg.store.load_bindings(NOW)) == 1


def test_refresh_matches_equivalent_uri(reg: Registrar) -> None:
    phone = Phone(reg)
    phone.send(contacts=("<sip:100@Phone.Example:5060;Transport=UDP>",), expires="600")
    phone.send(contacts=("<sip:100@phone.example:5060;transport=UDP>",), expires="600")
    [b] = reg.lookup("100", NOW)
    assert b.contact == "sip:100@phone.example:5060;transport=UDP"
    assert [r.contact for r in reg.store.load_bindings(NOW)] == [b.contact]


# -- several contacts, limits, malformed -------------------------------------------------
def test_several_contacts_per_extension(reg: Registrar) -> None:
    Phone(reg, call_id="desk").send(contacts=("<sip:100@10.0.0.1>;q=0.5",), expires="600")
    Phone(reg, call_id="soft", source=Peer("tcp", "198.51.100.2", 61000)).send(
        contacts=("<sip:100@10.0.0.2;transport=tcp>",), expires="600"
    )
    live = reg.lookup("100", NOW)
    assert [b.contact for b in live] == ["sip:100@10.0.0.2;transport=tcp", "sip:100@10.0.0.1"]
    assert live[1].q == 0.5 and live[0].transport == "tcp"


def test_contact_limit_drops_least_recently_refreshed(reg: Registrar) -> None:
    reg.max_contacts_per_aor = 2
    for i in range(3):
        Phone(reg, call_id=f"c{i}").send(
            NOW + i, contacts=(f"<sip:100@10.0.0.{i}>",), expires="600"
        )
    assert sorted(b.contact for b in reg.lookup("100", NOW + 3)) == [
        "sip:100@10.0.0.1",
        "sip:100@10.0.0.2",
    ]
    assert len(reg.store.load_bindings(NOW)) == 2


@pytest.mark.parametrize("contact", ["<not a uri>", "<tel:+15551234>", "<sip:a@b>;q=2"])
def test_bad_contact_is_400(reg: Registrar, contact: str) -> None:
    assert Phone(reg).send(contacts=(contact,)).code == 400
    assert reg.lookup("100", NOW) == []


def test_require_is_refused_with_420(reg: Registrar) -> None:
    resp = reg.handle(build(extra=("Require: gruu",)), PHONE, NOW)
    assert resp.code == 420 and resp.headers["Unsupported"] == "gruu"


def test_contact_header_forms(reg: Registrar) -> None:
    resp = Phone(reg).send(
        contacts=(
            '"Desk, left" <sip:100@10.0.0.1;ob>;+sip.instance="<urn:uuid:1>", '
            "sip:100@10.0.0.2;expires=90",
        )
    )
    assert contact_expires(resp) == {"sip:100@10.0.0.1;ob": 600, "sip:100@10.0.0.2": 90}
    # pjsip style, and a display name with an escaped quote, on separate header lines
    resp = Phone(reg, call_id="pj").send(
        contacts=(
            '<sip:100@10.0.0.3:5060;ob>;reg-id=1;+sip.instance="<urn:uuid:00000000-1>"',
            '"Bob \\"the\\" <builder>" <sip:100@10.0.0.4>;Expires=120',
        )
    )
    assert contact_expires(resp) == {
        "sip:100@10.0.0.1;ob": 600,
        "sip:100@10.0.0.2": 90,
        "sip:100@10.0.0.3:5060;ob": 600,
        "sip:100@10.0.0.4": 120,
    }


# -- lifetime, persistence, hooks ------------------------------------------------------------
def test_lookup_hides_expired_and_expire_drops_them(reg: Registrar) -> None:
    changes: list[tuple[str, list[Binding]]] = []
    Phone(reg, call_id="a").send(contacts=("<sip:100@10.0.0.1>",), expires="60")
    Phone(reg, call_id="b").send(contacts=("<sip:100@10.0.0.2>",), expires="600")
    reg.on_change = lambda aor, bindings: changes.append((aor, bindings))
    assert len(reg.lookup("100", NOW + 59)) == 2
    assert [b.contact for b in reg.lookup("100", NOW + 60)] == ["sip:100@10.0.0.2"]
    dropped = reg.expire(NOW + 61)
    assert [b.contact for b in dropped] == ["sip:100@10.0.0.1"]
    assert [(aor, [b.contact for b in bs]) for aor, bs in changes] == [
        ("100", ["sip:100@10.0.0.2"])
    ]
    assert reg.expire(NOW + 62) == []  # nothing more, no spurious notification
    assert len(changes) == 1
    assert [b.contact for b in reg.store.load_bindings(0)] == ["sip:100@10.0.0.2"]
    assert reg.all_bindings(NOW + 601) == []


def test_on_change_on_register_and_unregister(reg: Registrar) -> None:
    changes: list[tuple[str, int]] = []
    reg.on_change = lambda aor, bindings: changes.append((aor, len(bindings)))
    phone = Phone(reg)
    phone.send(expires="600")
    phone.send(contacts=(), expires=None)  # query: no change
    phone.send(expires="0")
    assert changes == [("100", 1), ("100", 0)]


def test_failing_hook_does_not_break_registration(reg: Registrar) -> None:
    def boom(aor: str, bindings: list[Binding]) -> None:
        raise RuntimeError("listener bug")

    reg.on_change = boom
    assert Phone(reg).send(expires="600").code == 200
    assert len(reg.lookup("100", NOW)) == 1


def test_bindings_survive_a_restart(reg: Registrar, db_path: Path) -> None:
    Phone(reg).send(expires="600")
    Phone(reg, user="101", call_id="x").send(contacts=("<sip:101@10.0.0.5>",), expires="60")
    before = reg.all_bindings(NOW)
    reg.store.close()

    store2 = Store(db_path)
    try:
        reg2 = Registrar(CONFIG, store2, DigestAuthenticator(DOMAIN, SECRET))
        assert reg2.all_bindings(NOW) == before
        assert reg2.lookup("100", NOW)[0].source_port == PHONE.port
        # expired while we were down: not offered, and dropped by expire()
        assert [b.aor for b in reg2.all_bindings(NOW + 120)] == ["100"]
        assert [b.aor for b in reg2.expire(NOW + 120)] == ["101"]
        # the refresh after the restart continues the same binding (CSeq order kept)
        assert Phone(reg2, call_id="call-1@192.168.1.10").send(NOW + 200, expires="600").code == 500
    finally:
        store2.close()


def test_drop_flow_removes_tcp_bindings_of_that_connection(reg: Registrar) -> None:
    tcp = Peer("tcp", "198.51.100.2", 61000, conn=7)
    Phone(reg, call_id="tcp", source=tcp).send(
        contacts=("<sip:100@10.0.0.2;transport=tcp>",), expires="600"
    )
    Phone(reg, call_id="udp").send(expires="600")
    assert reg.drop_flow(Peer("udp", "203.0.113.7", 40123), NOW) == []
    assert [b.contact for b in reg.drop_flow(tcp, NOW)] == ["sip:100@10.0.0.2;transport=tcp"]
    assert [b.transport for b in reg.lookup("100", NOW)] == ["udp"]


# -- INVITE authentication -------------------------------------------------------------------
def test_authenticate_request_challenges_with_407(reg: Registrar) -> None:
    invite = build("INVITE", user="100", to_user="101", contacts=(PRIVATE_CONTACT,))
    user, resp = reg.authenticate_request(invite, PHONE, NOW)
    assert user is None and resp is not None and resp.code == 407
    challenge = resp.headers["Proxy-Authenticate"]
    assert resp.headers.get("WWW-Authenticate") is None

    value = answer_challenge(
        challenge,
        method="INVITE",
        uri=f"sip:101@{DOMAIN}",
        username="100",
        password=PASSWORDS["100"],
    )
    invite = build(
        "INVITE",
        user="100",
        to_user="101",
        cseq=2,
        authorization=value,
        auth_header="Proxy-Authorization",
    )
    assert reg.authenticate_request(invite, PHONE, NOW) == ("100", None)


def test_authenticate_request_wrong_password(reg: Registrar) -> None:
    failures: list[str] = []
    reg.on_auth_failure = lambda src, user, reason: failures.append(reason)
    value = answer_challenge(
        reg.auth.challenge(NOW),
        method="INVITE",
        uri=f"sip:101@{DOMAIN}",
        username="100",
        password="nope",
    )
    invite = build("INVITE", to_user="101", authorization=value, auth_header="Proxy-Authorization")
    user, resp = reg.authenticate_request(invite, PHONE, NOW)
    assert user is None and resp is not None and resp.code == 407
    assert failures == [WRONG_PASSWORD]


def test_non_register_to_handle_is_405(reg: Registrar) -> None:
    assert reg.handle(build("OPTIONS"), PHONE, NOW).code == 405


# -- retransmissions -------------------------------------------------------------------------
def test_retransmission_gets_the_same_answer_without_reprocessing(reg: Registrar) -> None:
    changes: list[int] = []
    failures: list[str] = []
    reg.on_change = lambda aor, bindings: changes.append(len(bindings))
    reg.on_auth_failure = lambda src, user, reason: failures.append(reason)
    value = answer_challenge(
        reg.auth.challenge(NOW),
        method="REGISTER",
        uri=f"sip:{DOMAIN}",
        username="100",
        password=PASSWORDS["100"],
    )
    request_bytes = bytes(build(cseq=2, expires="600", authorization=value))

    def send(now: float) -> Response:
        msg = Message.parse(request_bytes)
        assert isinstance(msg, Request)
        return reg.handle(msg, PHONE, now)

    first = send(NOW)
    again = send(NOW + 0.5)  # our 200 was lost; the phone retransmits (Timer E)
    assert first.code == again.code == 200
    assert bytes(first) == bytes(again)  # same To tag, same everything
    assert changes == [1] and failures == []
    # once the transaction is over, the same bytes are a replay, not a retransmission
    late = send(NOW + 40)
    assert late.code == 401
    assert parse_auth_header(late.headers["WWW-Authenticate"])[1]["stale"] == "true"
    assert changes == [1]


def test_same_branch_from_another_source_is_not_a_retransmission(reg: Registrar) -> None:
    first = reg.handle(build(branch="z9hG4bKsame"), PHONE, NOW)
    other = reg.handle(build(branch="z9hG4bKsame"), Peer("udp", "198.51.100.9", 5060), NOW)
    assert first.code == other.code == 401
    assert first.headers["WWW-Authenticate"] != other.headers["WWW-Authenticate"]


# -- the SIPp scenario against this registrar -------------------------------------------------
SIPP_DIR = Path(__file__).parent / "sipp"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
def test_sipp_register_auth_scenario(tmp_path: Path) -> None:
    """tests/sipp/register_auth.xml with users.csv, driven by real SIPp against this
    registrar behind a throwaway UDP loop (the real edge is tested elsewhere): every
    user gets 401 then 200 and ends up bound at SIPp's address."""
    users = [
        line.split(";")
        for line in (SIPP_DIR / "users.csv").read_text().splitlines()
        if line and not line.startswith("#") and line != "SEQUENTIAL"
    ]
    extensions = []
    for number, _domain, keyword in users:
        password = keyword.split("password=")[1].rstrip("]")
        extensions.append(ExtensionConfig(number, number, password))
    config = Config(switch=SwitchConfig(domain=users[0][1]), extensions=tuple(extensions))
    store = Store(tmp_path / "sipp.db")
    reg = Registrar(config, store, DigestAuthenticator(users[0][1], SECRET))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    codes: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, (host, port) = sock.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                request = Message.parse(data)
                assert isinstance(request, Request)
                peer = Peer("udp", host, port)
                apply_received(request, peer)
                response = reg.handle(request, peer, time.time())
                codes.append(response.code)
                sock.sendto(bytes(response), (host, port))
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    sipp_port = _free_udp_port()
    try:
        done = subprocess.run(
            ["sipp", f"127.0.0.1:{sock.getsockname()[1]}",
             "-sf", str(SIPP_DIR / "register_auth.xml"), "-inf", str(SIPP_DIR / "users.csv"),
             "-m", str(2 * len(users)), "-r", "50", "-i", "127.0.0.1", "-p", str(sipp_port),
             "-nostdin", "-timeout", "20s", "-timeout_error", "-max_recv_loops", "1000"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        stop.set()
        server.join(5)
        sock.close()
    assert errors == []
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert codes == [401, 200] * (2 * len(users))
    bound = reg.all_bindings(time.time())
    assert sorted(b.aor for b in bound) == sorted(u[0] for u in users)  # refreshed, not doubled
    assert {(b.source_host, b.source_port) for b in bound} == {("127.0.0.1", sipp_port)}
    store.close()
