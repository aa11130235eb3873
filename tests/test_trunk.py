"""Trunks without a network: the registration state machine over a fake clock, number
formats, DID lookup, source matching, the [[trunk]]/[[route]] config, the outside-call
decisions of TrunkService, and the edge's trunk hooks (no challenge for a trunk's call,
a trunk branch that says nothing fails over at its response_timeout, responses to our
own REGISTER handed back by branch)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from sipmessage import Message, Request, Response

from softswitch.config import ConfigError, parse_config
from softswitch.config_types import Config, ExtensionConfig, RouteConfig, TrunkConfig
from softswitch.routes import TrunkService
from softswitch.sip.auth import compute_response, parse_auth_header
from softswitch.sip.message import Peer, make_response
from softswitch.sip.proxy import Edge
from softswitch.sip.routing import Fork, Reject, Target, ToWorker
from softswitch.sip.trunk import (
    BACKOFF,
    FAILED,
    REGISTERED,
    REGISTERING,
    STOPPED,
    TIMER_F,
    Registration,
    Sources,
    find_number,
    from_provider,
    to_provider,
)
from tests.test_proxy import FakeRegistrar, FakeRouter, Recorder

TRUNK = TrunkConfig(
    name="prov",
    host="sip.provider.test",
    username="74950001122",
    password="s3cret-pw",
    register=True,
    expires=600,
)


def invite(uri: str = "sip:+74951234567@pbx", to: str = "sip:x@pbx", **headers: str) -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKin1\r\n"
        "From: <sip:84950001122@provider>;tag=f1\r\n"
        f"To: <{to}>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "Content-Length: 0\r\n\r\n"
    )
    msg = Message.parse(text.encode())
    assert isinstance(msg, Request)
    return msg


# -- numbers -------------------------------------------------------------------------------
def test_caller_id_formats_toward_the_provider() -> None:
    e164 = TrunkConfig(name="a")
    intl = TrunkConfig(name="a", caller_id_format="international")
    national = TrunkConfig(
        name="a", caller_id_format="national", country_code="7", national_prefix="8"
    )
    assert to_provider("+74951234567", e164) == "+74951234567"
    assert to_provider("+74951234567", intl) == "74951234567"
    assert to_provider("+74951234567", national) == "84951234567"
    assert to_provider("+4930123456", national) == "+4930123456"  # not national: as is
    assert to_provider("101", intl) == "101"  # not E.164: as is


def test_caller_numbers_from_the_provider_become_e164() -> None:
    intl = TrunkConfig(name="a", caller_id_format="international", international_prefix="00")
    national = TrunkConfig(
        name="a",
        caller_id_format="national",
        country_code="7",
        national_prefix="8",
        international_prefix="810",
    )
    assert from_provider("74951234567", intl) == "+74951234567"
    assert from_provider("0049301234", intl) == "+49301234"
    assert from_provider("84951234567", national) == "+74951234567"
    assert from_provider("81049301234", national) == "+49301234"
    assert from_provider("1234", national) == "1234"  # no national prefix: left alone
    assert from_provider("anonymous", national) == "anonymous"
    assert from_provider("74951234567", TrunkConfig(name="a")) == "74951234567"


def test_did_from_request_uri_then_to_then_by_digits() -> None:
    numbers = {"+74951234567": "sales", "support": "support"}
    assert find_number(invite(), numbers) == ("+74951234567", "sales")
    # a provider sending to our registration contact: the To user is the DID
    req = invite("sip:74950001122@192.0.2.1", to="sip:+74951234567@provider")
    assert find_number(req, numbers) == ("+74951234567", "sales")
    assert find_number(invite("sip:74951234567@pbx"), numbers) == ("+74951234567", "sales")
    assert find_number(invite("sip:support@pbx"), numbers) == ("support", "support")
    assert find_number(invite("sip:+70000000000@pbx"), numbers) is None


# -- sources -------------------------------------------------------------------------------
def test_sources_allow_networks_endpoints_and_provider_address() -> None:
    trunks = [
        TrunkConfig(name="net", allow=("203.0.113.0/24",)),
        TrunkConfig(name="port", allow=("198.51.100.7:5070", "[2001:db8::1]:5060")),
        TrunkConfig(name="prov", host="sip.provider.test", port=5080),
    ]
    sources = Sources(trunks)
    sources.set_provider("prov", [("192.0.2.5", 5080)])

    def src(host: str, port: int, transport: str = "udp") -> Peer:
        return Peer(transport, host, port, None, "outside")

    assert sources.match(src("203.0.113.77", 40000)) == "net"
    assert sources.match(src("198.51.100.7", 5070)) == "port"
    assert sources.match(src("198.51.100.7", 5071)) is None  # another port: a phone
    assert sources.match(src("2001:db8::1", 5060)) == "port"
    assert sources.match(src("192.0.2.5", 5080)) == "prov"
    assert sources.match(src("192.0.2.5", 5081)) is None  # UDP: the provider's port only
    assert sources.match(src("192.0.2.5", 41000, "tcp")) == "prov"  # TCP: any port
    assert sources.match(src("::ffff:203.0.113.9", 5060)) == "net"


# -- registration --------------------------------------------------------------------------
def parse(data: bytes) -> Request:
    msg = Message.parse(data)
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, code: int, *headers: tuple[str, str]) -> Response:
    resp = make_response(req, code, headers=list(headers))
    return resp


CHALLENGE = ("WWW-Authenticate", 'Digest realm="prov", nonce="n1", qop="auth", algorithm=MD5')


def new_registration(**kw) -> tuple[Registration, list[str]]:
    changes: list[str] = []
    reg = Registration(
        kw.pop("trunk", TRUNK),
        local="192.0.2.1:5060",
        contact="sip:74950001122@192.0.2.1:5060",
        rng=lambda: 0.5,
        on_change=lambda r: changes.append(f"{r.state}: {r.reason}"),
    )
    return reg, changes


def test_register_answers_the_challenge_and_refreshes_at_65_percent() -> None:
    reg, changes = new_registration()
    assert reg.due(0.0)
    first = parse(reg.start(0.0))
    assert str(first.uri) == "sip:sip.provider.test"
    assert first.headers["To"] == "<sip:74950001122@sip.provider.test>"
    assert first.headers["Expires"] == "600"
    assert first.via[0].parameters.get("branch") in reg.branches
    assert reg.state == REGISTERING

    second_data = reg.on_response(answer(first, 401, CHALLENGE), 0.1)
    assert second_data is not None
    second = parse(second_data)
    assert second.call_id == first.call_id and second.cseq.sequence == first.cseq.sequence + 1
    _, params = parse_auth_header(second.headers["Authorization"])
    assert params["response"] == compute_response(
        username="74950001122",
        password="s3cret-pw",
        realm="prov",
        nonce="n1",
        method="REGISTER",
        uri="sip:sip.provider.test",
        qop="auth",
        nc=params["nc"],
        cnonce=params["cnonce"],
    )
    ok = answer(second, 200, ("Contact", "<sip:74950001122@192.0.2.1:5060>;expires=100"))
    assert reg.on_response(ok, 0.2) is None
    assert reg.state == REGISTERED and reg.expires_at == pytest.approx(100.2)
    assert reg.next_at == pytest.approx(0.2 + 65.0)  # 50 % + 30 % * rng(0.5)
    assert changes == ["registering: sending REGISTER", "registered: for 100 s"]
    assert not reg.due(60.0) and reg.due(65.2)
    refresh = parse(reg.start(65.2))
    assert refresh.call_id == first.call_id and refresh.cseq.sequence == 3
    assert reg.state == REGISTERED  # still registered while refreshing


def test_wrong_password_fails_and_backs_off_doubling() -> None:
    reg, changes = new_registration()
    now = 0.0
    for attempt in range(len(BACKOFF) + 1):
        req = parse(reg.start(now))
        again = reg.on_response(answer(req, 401, CHALLENGE), now)
        assert again is not None  # the first challenge is answered ...
        # ... and the same challenge again means the password is wrong
        assert reg.on_response(answer(parse(again), 401, CHALLENGE), now) is None
        assert reg.state == FAILED
        expected = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        assert reg.next_at == pytest.approx(now + expected)
        now = reg.next_at
    assert "credentials refused" in changes[-1] and "retry in 600 s" in changes[-1]


def test_timeout_retransmits_then_fails_and_success_resets_backoff() -> None:
    reg, changes = new_registration()
    data = reg.start(0.0)
    assert reg.poll(0.2) is None
    assert reg.poll(0.5) == data  # T1
    assert reg.poll(1.0) is None and reg.poll(1.5) == data  # 2*T1
    assert reg.poll(TIMER_F) is None
    assert reg.state == FAILED and "no response" in reg.reason
    assert reg.next_at == pytest.approx(TIMER_F + BACKOFF[0])
    req = parse(reg.start(reg.next_at))
    reg.on_response(answer(req, 200, ("Expires", "300")), reg.next_at)
    assert reg.state == REGISTERED and reg.failures == 0


def test_423_raises_expires_and_503_retry_after_is_honoured() -> None:
    reg, _ = new_registration()
    req = parse(reg.start(0.0))
    again = reg.on_response(answer(req, 423, ("Min-Expires", "1800")), 0.0)
    assert again is not None and parse(again).headers["Expires"] == "1800"
    assert reg.on_response(answer(parse(again), 503, ("Retry-After", "90")), 1.0) is None
    assert reg.state == FAILED and reg.next_at == pytest.approx(91.0)


def test_stop_unregisters_only_when_registered() -> None:
    reg, _ = new_registration()
    req = parse(reg.start(0.0))
    reg.on_response(answer(req, 200), 0.0)
    bye = reg.stop(1.0)
    assert bye is not None and parse(bye).headers["Expires"] == "0"
    assert reg.state == STOPPED and not reg.due(10_000.0)
    other, _ = new_registration()
    assert other.stop(0.0) is None


def test_a_late_response_of_an_old_transaction_is_ignored() -> None:
    reg, _ = new_registration()
    old = parse(reg.start(0.0))
    reg.poll(TIMER_F)  # timed out
    assert reg.on_response(answer(old, 200), TIMER_F + 1) is None
    assert reg.state == FAILED


# -- config --------------------------------------------------------------------------------
BASE = """
[switch]
entry = ""
[block.main]
type = "hangup"
[[extension]]
number = "101"
password = "alice-Secret-one"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + text)
    return [f"{p.key}: {p.message}" for p in exc.value.problems]


def test_config_trunks_and_routes_load() -> None:
    config = parse_config(
        BASE
        + """
[[trunk]]
name = "prov"
host = "sip.provider.test"
proxy = "[2001:db8::5]:5070"
username = "74950001122"
password = "pw"
register = true
allow = ["203.0.113.0/24", "198.51.100.7:5060", "2001:db8::/48"]
numbers = { "+74951234567" = "main" }
codecs = ["pcma", "PCMU"]
caller_id_format = "national"
country_code = "7"
national_prefix = "8"

[[route]]
name = "city"
pattern = "8495[0-9]{7}"
strip = 1
prepend = "+7"
trunks = ["prov"]
class = "local"
caller_id = "+7495123{ext}"
"""
    )
    (trunk,) = config.trunks
    assert trunk.remote == ("2001:db8::5", 5070)
    assert trunk.allow == ("203.0.113.0/24", "198.51.100.7:5060", "2001:db8::/48")
    assert trunk.codecs == ("PCMA", "PCMU")
    (route,) = config.routes
    assert route.matches("84951234567") and not route.matches("8495123456")
    assert route.rewrite("84951234567") == "+74951234567"
    assert config.extensions[0].classes == ("internal", "local", "national")


def test_config_problems_of_trunks_and_routes() -> None:
    found = problems(
        """
[[trunk]]
name = "reg"
register = true

[[trunk]]
name = "prov"
numbers = { "+7495" = "nowhere" }
codecs = ["opus"]
allow = ["10.0.0.1:99999"]
caller_id_format = "national"

[[route]]
name = "r"
trunks = ["nope"]
class = "Local"
pattern = "("
"""
    )
    text = "\n".join(found)
    for expected in (
        "trunk[1].register: a registration needs the provider",
        "trunk[2].codecs",
        "trunk[2].allow",
        "country_code",
        "route[1].class",
        "route[1].pattern",
    ):
        assert expected in text, text


def test_config_route_trunks_must_exist_and_numbers_name_blocks() -> None:
    text = "\n".join(
        problems(
            """
[[trunk]]
name = "in"
allow = ["203.0.113.0/24"]
numbers = { "+7495" = "nowhere" }

[[route]]
name = "r"
prefixes = ["8"]
trunks = ["in", "ghost"]
class = "local"
"""
        )
    )
    assert 'unknown block "nowhere"' in text, text
    assert 'trunk "in" has no host' in text, text
    assert '"ghost" is not a configured trunk' in text, text


def test_block_reached_only_from_a_did_is_not_unreachable() -> None:
    # without the trunk: "nothing says where a call starts" (entry is "")
    config = parse_config(
        BASE
        + """
[[trunk]]
name = "in"
allow = ["203.0.113.0/24"]
numbers = { "+74951234567" = "main" }
"""
    )
    assert config.trunks[0].numbers == {"+74951234567": "main"}


# -- outside-call decisions ----------------------------------------------------------------
def service(tmp_path: Path, routes: tuple[RouteConfig, ...], trunks: tuple[TrunkConfig, ...]):
    config = Config(
        extensions=(
            ExtensionConfig("101", "A", "alice-Secret-one"),
            ExtensionConfig("102", "B", "bob-Secret-two", classes=("local", "international")),
        ),
        routes=routes,
        trunks=trunks,
    )
    co = SimpleNamespace(config=config, data_dir=tmp_path, clock=lambda: 0.0, edge=None)
    svc = TrunkService(co)  # type: ignore[arg-type]
    for t in trunks:
        svc.dests[t.name] = Peer("udp", "192.0.2.5", 5060, None, "outside")
    return svc


def route(**kw) -> RouteConfig:
    base = {"name": "r", "trunks": ("prov",), "call_class": "local", "prefixes": ("8",)}
    return RouteConfig(**{**base, **kw})


def test_outbound_class_caps_hourly_and_unreachable(tmp_path: Path) -> None:
    prov = TrunkConfig(name="prov", host="sip.provider.test", max_calls=1)
    svc = service(
        tmp_path,
        (
            route(
                name="world", prefixes=("810",), call_class="international", max_calls_per_hour=2
            ),
            route(name="city", max_calls_per_extension=1),
        ),  # fmt: skip
        (prov,),
    )
    assert svc.outbound("101", "5551234", 0.0) is None  # no route: 404
    refused = svc.outbound("101", "81049301234", 0.0)
    assert refused == Reject(403, "Forbidden (international calls not allowed)")
    assert callable(svc.outbound("101", "84951234567", 0.0))
    svc.outgoing["101"] = 1
    assert svc.outbound("101", "84951234567", 0.0) == Reject(
        403, "Forbidden (too many outside calls)"
    )
    # 102 may call abroad, twice an hour
    assert callable(svc.outbound("102", "81049301234", 0.0))
    assert callable(svc.outbound("102", "81049301234", 1.0))
    assert svc.outbound("102", "81049301234", 2.0) == Reject(403, "Forbidden (hourly call limit)")
    # the only trunk is full: 503 before anything is placed
    svc.active["prov"] = 1
    assert isinstance(svc.outbound("102", "84951234567", 0.0), Reject)
    assert svc.outbound("102", "84951234567", 0.0).code == 503  # type: ignore[union-attr]
    assert svc.outbound("101", "8x", 0.0) is None  # not a number


def test_trunk_for_sources_anonymous_numbers_and_phones(tmp_path: Path) -> None:
    svc = service(
        tmp_path,
        (),
        (
            TrunkConfig(name="in", allow=("203.0.113.0/24",), numbers={"+74951234567": "main"}),
            TrunkConfig(name="web", anonymous=True, numbers={"sales": "main"}),
        ),
    )
    provider = Peer("udp", "203.0.113.9", 5060, None, "outside")
    stranger = Peer("udp", "198.51.100.1", 5060, None, "outside")
    assert svc.trunk_for(invite(), provider) == "in"
    assert svc.trunk_for(invite(), stranger) is None  # challenged as usual
    assert svc.trunk_for(invite("sip:sales@pbx"), stranger) == ""  # anonymous allowed
    with_auth = invite("sip:sales@pbx", **{"Proxy-Authorization": "Digest x"})
    assert svc.trunk_for(with_auth, stranger) is None  # a phone answering our challenge
    assert svc.inbound(invite("sip:+70000000000@pbx"), "in", 0.0) == Reject(
        404, "Not Found (unknown number)"
    )


# -- the edge's trunk hooks ----------------------------------------------------------------
class TrunkRouter(FakeRouter):
    def __init__(self, fork: Fork | None = None) -> None:
        super().__init__(fork)
        self.from_trunk: list[tuple[str, str]] = []

    def trunk_for(self, request, source):
        return "prov" if source.host == "203.0.113.9" else None

    def route_from_trunk(self, request, trunk, source, now):
        self.from_trunk.append((trunk, request.uri.user))
        return ToWorker(worker=Peer("udp", "127.0.0.1", 6000, None, "inside"), context="t")


def edge_with(router: FakeRouter) -> tuple[Edge, Recorder]:
    rec = Recorder()
    edge = Edge(rec, router, FakeRegistrar(), secret=b"s" * 32, public_host="127.0.0.1")
    return edge, rec


async def test_edge_takes_a_trunks_invite_without_challenge() -> None:
    router = TrunkRouter()
    edge, rec = edge_with(router)
    data = bytes(invite())
    edge.handle(data, Peer("udp", "203.0.113.9", 5060, None, "outside"))
    assert router.from_trunk == [("prov", "+74951234567")]
    sent = rec.take()
    assert [m.code for m, _ in sent if isinstance(m, Response)] == [100]
    assert any(isinstance(m, Request) and m.method == "INVITE" for m, _ in sent)
    # the same INVITE from elsewhere is challenged
    edge.handle(data.replace(b"z9hG4bKin1", b"z9hG4bKin2"), Peer("udp", "198.51.100.1", 5060))
    assert [m.code for m, _ in rec.take() if isinstance(m, Response)] == [407]


async def test_trunk_branch_without_any_response_fails_at_response_timeout() -> None:
    trunk = Peer("udp", "192.0.2.5", 5060, None, "outside")
    fork = Fork(
        targets=(Target("sip:74951234567@sip.provider.test", trunk),),
        ring_timeout=None,
        context="attempt",
        response_timeout=0.05,
    )
    router = FakeRouter(fork)
    edge, rec = edge_with(router)
    from tests.test_proxy import WORKER, worker_invite

    edge.handle(worker_invite(), WORKER)
    await asyncio.sleep(0.2)
    finals = [m.code for m, dest in rec.take() if isinstance(m, Response) and dest == WORKER]
    assert finals == [100, 408]
    assert router.outcomes[0].branches[0].code == 408


async def test_edge_hands_responses_to_our_own_requests_back_by_branch() -> None:
    edge, rec = edge_with(FakeRouter())
    got: list[int] = []
    edge.uac_handlers["z9hG4bKreg1"] = lambda resp, src: got.append(resp.code)
    resp = (
        b"SIP/2.0 401 Unauthorized\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKreg1;rport=5060\r\n"
        b"From: <sip:u@p>;tag=1\r\nTo: <sip:u@p>;tag=2\r\nCall-ID: r1\r\n"
        b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    edge.handle(resp, Peer("udp", "192.0.2.5", 5060, None, "outside"))
    assert got == [401] and rec.take() == []
    assert edge.sent_by(Peer("udp", "192.0.2.5", 5060, None, "outside")) == "127.0.0.1:5060"
