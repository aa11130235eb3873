"""The SIP edge's defences in-process, with a fake clock: bans, rate limits, scanner
User-Agents, connection limits, the outbound calls-per-hour guard, the [security]
config section, and that the registrar gives a known and an unknown user the same
answer in the same time (no extension enumeration)."""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sipmessage import Message, Request

from softswitch.config import ConfigError, load_config
from softswitch.config_types import SecurityConfig
from softswitch.sip.auth import UNKNOWN_USER, WRONG_PASSWORD, DigestAuthenticator
from softswitch.sip.defence import (
    Bans,
    CallsPerHour,
    Defence,
    TokenBuckets,
    source_key,
)
from softswitch.sip.message import Peer
from softswitch.sip.proxy import parse_message


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def defence(clock: Clock, **overrides: object) -> Defence:
    return Defence(replace(SecurityConfig(), **overrides), clock=clock)


def udp(host: str) -> Peer:
    return Peer("udp", host, 5060, None, "outside")


def options(user_agent: str | None = None, extra: str = "") -> bytes:
    lines = [
        "OPTIONS sip:127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx",
        "From: <sip:a@b>;tag=1",
        "To: <sip:b@b>",
        "Call-ID: c",
        "CSeq: 1 OPTIONS",
    ]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    return ("\r\n".join(lines) + extra + "\r\nContent-Length: 0\r\n\r\n").encode()


# ----------------------------------------------------------------------- building blocks
def test_source_key_is_the_ipv4_address_or_the_ipv6_slash_64():
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_token_bucket_allows_a_burst_then_the_rate():
    buckets = TokenBuckets(rate=10, burst=20)
    now = 0.0
    assert sum(buckets.take("a", now) for _ in range(50)) == 20
    assert not buckets.take("a", now)
    assert buckets.take("b", now)  # another key has its own bucket
    now += 0.5  # five tokens back
    assert sum(buckets.take("a", now) for _ in range(50)) == 5
    now += 100  # never more than the burst
    assert sum(buckets.take("a", now) for _ in range(50)) == 20


def test_token_buckets_are_bounded_and_pruned():
    buckets = TokenBuckets(rate=1, burst=2, max_keys=100)
    for i in range(1000):
        buckets.take(f"k{i}", 0.0)
    assert len(buckets) == 100
    buckets.prune(10.0)  # every bucket refilled: nothing worth keeping
    assert len(buckets) == 0


def test_bans_count_failures_in_a_sliding_window():
    bans = Bans(after=3, window=60, seconds=600)
    assert bans.failure("a", 0) == 1
    assert bans.failure("a", 30) == 2
    assert bans.failure("a", 70) == 2  # the one at 0 left the window
    assert not bans.reached(2)
    assert bans.failure("a", 80) == 3 and bans.reached(3)
    assert Bans(after=0, window=60, seconds=1).reached(10**6) is False  # 0 = never


# ----------------------------------------------------------------------- bans
def test_ban_after_n_failures_then_everything_from_that_source_is_dropped(caplog):
    clock = Clock()
    d = defence(clock, ban_after=5, ban_window=60, ban_seconds=600)
    banned_keys: list[str] = []
    d.on_ban = banned_keys.append
    attacker, phone = udp("192.0.2.66"), udp("192.0.2.10")
    caplog.set_level(logging.INFO, logger="softswitch.sip.defence")
    for i in range(4):
        d.auth_failure(attacker, "101", WRONG_PASSWORD)
        clock.advance(1)
        assert d.admit_message(options(), attacker.host), i
    d.auth_failure(attacker, "999", UNKNOWN_USER)
    assert banned_keys == ["192.0.2.66"]
    assert not d.admit_message(options(), attacker.host)
    assert not d.admit_connection(attacker.host, 0, 0)
    assert d.admit_message(options(), phone.host)  # another source is not affected
    # more failures or packets do not log again: one line per ban, with the reason
    for _ in range(20):
        d.auth_failure(attacker, "101", WRONG_PASSWORD)
        d.admit_message(options(), attacker.host)
    lines = [r.getMessage() for r in caplog.records if "banned" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "192.0.2.66" in lines[0] and "600 s" in lines[0]
    assert "5 failed digest attempts" in lines[0] and "unknown user" in lines[0]
    # the ban ends after ban_seconds
    clock.advance(600)
    assert d.admit_message(options(), attacker.host)
    assert any("ban of 192.0.2.66 ended" in r.getMessage() for r in caplog.records)
    assert d.stats["bans"] == 1 and d.stats["banned"] >= 20


def test_failures_spread_wider_than_the_window_do_not_ban():
    clock = Clock()
    d = defence(clock, ban_after=3, ban_window=60)
    for _ in range(10):
        d.auth_failure(udp("192.0.2.5"), "101", WRONG_PASSWORD)
        clock.advance(31)  # at most two within any 60 s
    assert not d.banned("192.0.2.5")


def test_allow_listed_networks_are_never_banned_nor_rate_limited():
    clock = Clock()
    d = defence(
        clock,
        ban_after=2,
        allow=("10.1.0.0/16", "2001:db8:1::/48"),
        max_messages_per_second=1,
        message_burst=1,
    )
    for host in ("10.1.200.3", "2001:db8:1:5::7"):
        for _ in range(10):
            d.auth_failure(udp(host), "101", WRONG_PASSWORD)
        assert not d.banned(host)
        assert all(d.admit_message(options(), host) for _ in range(100))
        assert not d.ban(host, "by hand")
        assert d.admit_connection(host, open_from_source=10_000, open_total=0)
    outsider = "10.2.0.1"
    for _ in range(2):
        d.auth_failure(udp(outsider), "101", WRONG_PASSWORD)
    assert d.banned(outsider)


def test_an_ipv6_ban_covers_the_whole_slash_64():
    clock = Clock()
    d = defence(clock, ban_after=2)
    d.auth_failure(udp("2001:db8:0:1::1"), "101", WRONG_PASSWORD)
    d.auth_failure(udp("2001:db8:0:1::2"), "101", WRONG_PASSWORD)
    assert d.banned("2001:db8:0:1:dead:beef::9")
    assert not d.banned("2001:db8:0:2::1")


def test_ban_zero_never_bans_and_lift_ends_a_ban():
    clock = Clock()
    d = defence(clock, ban_after=0)
    for _ in range(100):
        d.auth_failure(udp("192.0.2.1"), "101", WRONG_PASSWORD)
    assert not d.banned("192.0.2.1")
    assert d.ban("192.0.2.1", "by hand", seconds=30)
    assert d.banned("192.0.2.1")
    assert d.lift("192.0.2.1") and not d.banned("192.0.2.1")


def test_a_broken_on_ban_hook_does_not_stop_the_ban():
    clock = Clock()
    d = defence(clock, ban_after=1)

    def boom(key: str) -> None:
        raise RuntimeError("hook")

    d.on_ban = boom
    d.auth_failure(udp("192.0.2.1"), "101", WRONG_PASSWORD)
    assert d.banned("192.0.2.1")


# ----------------------------------------------------------------------- rate limits
def test_message_rate_limit_per_source_logged_once_per_episode(caplog):
    clock = Clock()
    d = defence(clock, max_messages_per_second=10, message_burst=20)
    caplog.set_level(logging.INFO, logger="softswitch.sip.defence")
    admitted = sum(d.admit_message(options(), "192.0.2.9") for _ in range(500))
    assert admitted == 20
    assert d.admit_message(options(), "192.0.2.8")  # its own bucket
    clock.advance(1.0)
    assert sum(d.admit_message(options(), "192.0.2.9") for _ in range(500)) == 10
    starts = [r for r in caplog.records if "dropping from 192.0.2.9" in r.getMessage()]
    assert len(starts) == 1, [r.getMessage() for r in caplog.records]
    clock.advance(60)
    d.sweep()
    ends = [r.getMessage() for r in caplog.records if "back within the limit" in r.getMessage()]
    assert ends and "970 dropped" in ends[0], ends
    assert d.stats["rate"] == 970


def test_default_burst_is_twice_the_rate_and_zero_is_off():
    clock = Clock()
    d = defence(clock, max_messages_per_second=50)
    assert sum(d.admit_message(options(), "192.0.2.1") for _ in range(1000)) == 100
    off = defence(clock, max_messages_per_second=0)
    assert all(off.admit_message(options(), "192.0.2.1") for _ in range(10_000))


def test_tcp_connection_limits():
    clock = Clock()
    d = defence(
        clock,
        max_tcp_connects_per_second=2,
        tcp_connect_burst=3,
        max_tcp_connections=100,
        max_tcp_connections_per_source=5,
    )
    host = "192.0.2.4"
    assert [d.admit_connection(host, 0, 0) for _ in range(5)] == [True] * 3 + [False] * 2
    clock.advance(1.0)
    assert d.admit_connection(host, 0, 0) and d.admit_connection(host, 0, 0)
    assert not d.admit_connection(host, 0, 0)
    clock.advance(10.0)
    assert not d.admit_connection(host, open_from_source=5, open_total=5)  # per source
    assert d.admit_connection(host, open_from_source=4, open_total=5)
    assert not d.admit_connection("192.0.2.99", 0, open_total=100)  # in all


# ----------------------------------------------------------------------- scanners
@pytest.mark.parametrize(
    "agent",
    [
        "friendly-scanner",
        "sipvicious",
        "Friendly-Scanner 1.0",
        "SIPVicious/0.3.3",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "sundayddr",
        "iWar",
        "SIVuS",
        "Gulp",
    ],
)
def test_scanner_user_agents_are_dropped(agent):
    d = defence(Clock())
    assert not d.admit_message(options(agent), "192.0.2.1")
    assert not d.banned("192.0.2.1")  # dropped, not banned (UDP sources can be forged)


@pytest.mark.parametrize(
    "data",
    [
        options("Yealink SIP-T46S 66.86.0.15"),
        options("Grandstream GXP2170 1.0.11.3"),
        options(None, extra="\r\nSubject: friendly-scanner"),  # not the User-Agent
        options(None, extra="\r\nX-User-Agent-Note: sipvicious"),
        options("Linphone"),
    ],
)
def test_ordinary_user_agents_pass(data):
    assert defence(Clock()).admit_message(data, "192.0.2.1")


def test_scanner_found_in_a_message_that_does_not_parse_and_in_any_header_case(caplog):
    d = defence(Clock())
    caplog.set_level(logging.INFO, logger="softswitch.sip.defence")
    junk = b"GARBAGE\r\nuser-agent:   FRIENDLY-SCANNER\r\n\r\n"
    assert not d.admit_message(junk, "192.0.2.1")
    for _ in range(10):
        d.admit_message(options("friendly-scanner"), "192.0.2.1")
    assert len([r for r in caplog.records if "scanner" in r.getMessage()]) == 1


def test_drop_user_agents_is_configurable():
    d = defence(Clock(), drop_user_agents=("evilphone",))
    assert d.admit_message(options("friendly-scanner"), "192.0.2.1")
    assert not d.admit_message(options("EvilPhone 2.0"), "192.0.2.1")
    assert defence(Clock(), drop_user_agents=()).admit_message(options("sipvicious"), "x")


# ----------------------------------------------------------------------- parser limits
def test_header_count_limit_is_checked_before_parsing():
    data = options(None, extra="".join(f"\r\nSubject: {i}" for i in range(150)))
    with pytest.raises(ValueError, match="too many headers"):
        parse_message(data, max_headers=100)
    assert parse_message(data, max_headers=200).method == "OPTIONS"  # type: ignore[union-attr]
    many = options(None, extra="".join(f"\r\nSubject: {i}" for i in range(5000)))
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ValueError):
            parse_message(many, max_headers=100)
    assert time.perf_counter() - start < 1.0  # refused without the costly parse


# ----------------------------------------------------------------------- outbound guard
def test_calls_per_hour_is_a_sliding_window_per_extension():
    guard = CallsPerHour(limit=3)
    t = 0.0
    assert [guard.allow("101", t + i) for i in range(4)] == [True, True, True, False]
    assert guard.allow("102", t)  # its own count
    assert guard.used("101", 10) == 3
    assert guard.retry_after("101", 10) == pytest.approx(3600 - 10)
    assert not guard.allow("101", 3599.0)
    assert guard.allow("101", 3600.5)  # the call at 0 is an hour old
    assert guard.used("101", 3600.5) == 3  # refusals were not counted
    assert guard.retry_after("101", 7300) == 0.0
    with pytest.raises(ValueError):
        CallsPerHour(limit=0)


# ----------------------------------------------------------------------- config
GOOD_EXTENSION = '[[extension]]\nnumber = "101"\nname = "A"\npassword = "Xk3-long-pass-9"\n'


def test_security_section_defaults_and_values(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_EXTENSION)
    sec = load_config(path).security
    assert (sec.ban_after, sec.ban_window, sec.ban_seconds, sec.allow) == (5, 60, 600, ())
    assert sec.max_messages_per_second == 200 and "friendly-scanner" in sec.drop_user_agents
    assert not any(d in sec.allow for d in ("127.0.0.0/8", "127.0.0.1/32"))
    path.write_text(
        GOOD_EXTENSION + "\n[security]\nban_after = 3\nban_seconds = 5\n"
        'allow = ["192.0.2.0/24", "198.51.100.7", "2001:DB8::/32"]\n'
        "max_messages_per_second = 0\nmax_headers = 60\n"
        'drop_user_agents = ["evilphone"]\n'
    )
    sec = load_config(path).security
    assert sec.allow == ("192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32")
    assert (sec.ban_after, sec.ban_seconds, sec.max_headers) == (3, 5.0, 60)
    assert sec.max_messages_per_second == 0 and sec.drop_user_agents == ("evilphone",)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('allow = ["192.0.2.1/24"]', 'has host bits set; expected "192.0.2.0/24"'),
        ('allow = ["office"]', '"office" is not a network'),
        ("allow = [1]", "entry 1 is an integer"),
        ('allow = "192.0.2.0/24"', "expected an array of strings"),
        ("ban_after = -1", "out of range"),
        ("ban_seconds = 0", "out of range"),
        ("max_message_size = 100", "out of range"),
        ("max_headers = 5", "out of range"),
        ('drop_user_agents = ["x"]', "too short"),
        ("max_tcp_connections = 10\nmax_tcp_connections_per_source = 20", "more than"),
        ("ban_afterr = 3", 'did you mean "ban_after"'),
    ],
)
def test_security_problems_name_the_key(tmp_path: Path, line: str, fragment: str):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_EXTENSION + f"\n[security]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "security." in text and fragment in text, text


# ----------------------------------------------------------------------- enumeration
def _registrar(tmp_path: Path):
    from softswitch.config_types import Config, ExtensionConfig
    from softswitch.sip.registrar import Registrar
    from softswitch.store import Store

    config = Config(extensions=(ExtensionConfig("101", "Alice", "alice-Secret-one"),))
    auth = DigestAuthenticator(realm="softswitch.test", secret=b"k" * 32)
    return Registrar(config, Store(tmp_path / "db.sqlite"), auth), auth


def _register(user: str, n: int, auth_header: str | None = None) -> Request:
    lines = [
        "REGISTER sip:softswitch.test SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n:012d}",
        f"From: <sip:{user}@softswitch.test>;tag=f{n}",
        f"To: <sip:{user}@softswitch.test>",
        f"Call-ID: reg-{n}",
        f"CSeq: {n + 1} REGISTER",
        f"Contact: <sip:{user}@192.0.2.1:5060>",
    ]
    if auth_header:
        lines.append(f"Authorization: {auth_header}")
    msg = Message.parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def _normalise(data: bytes) -> bytes:
    """Blank what differs between any two answers: tags, nonces, branch, Call-ID, CSeq,
    the user's name in From/To."""
    text = data.decode()
    text = re.sub(r"tag=[^;\r\n>]+", "tag=T", text)
    text = re.sub(r'nonce="[^"]+"', 'nonce="N"', text)
    text = re.sub(r"branch=[^;\r\n]+", "branch=B", text)
    text = re.sub(r"Call-ID: .*", "Call-ID: C", text)
    text = re.sub(r"CSeq: \d+", "CSeq: 1", text)
    text = re.sub(r"sip:\d+@", "sip:U@", text)
    return text.encode()


def test_known_and_unknown_users_get_the_same_register_answer_in_the_same_time(tmp_path):
    """No enumeration through REGISTER: without credentials, with a wrong password for
    an existing extension, and with any password for one that does not exist, the answer
    is the same 401 (byte for byte once tags and nonces are blanked), and it takes as
    long (the same digest work is done for an unknown user)."""
    from softswitch.sip.auth import answer_challenge

    reg, auth = _registrar(tmp_path)
    source = udp("192.0.2.1")
    now = 2_000_000_000.0
    answers: dict[str, set[bytes]] = {"known": set(), "unknown": set()}
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    n = 0
    for _ in range(200):
        for kind, user in (("known", "101"), ("unknown", "999")):
            n += 1
            first = reg.handle(_register(user, n), source, now)
            answers[kind].add(_normalise(bytes(first)))
            challenge = first.headers["WWW-Authenticate"]
            header = answer_challenge(
                challenge,
                method="REGISTER",
                uri="sip:softswitch.test",
                username=user,
                password="not-the-password",
            )
            n += 1
            request = _register(user, n, header)
            start = time.perf_counter()
            second = reg.handle(request, source, now)
            times[kind].append(time.perf_counter() - start)
            assert second.code == 401
            answers[kind].add(_normalise(bytes(second)))
    assert len(answers["known"]) == 1, answers["known"]
    assert answers["known"] == answers["unknown"]
    known, unknown = (statistics.median(times[k]) for k in ("known", "unknown"))
    # Generous: only a gross difference (a skipped hash, a database lookup) fails.
    assert abs(known - unknown) < max(0.3 * max(known, unknown), 50e-6), (known, unknown)
