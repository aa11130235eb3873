"""Digest authentication: published test vectors, stateless nonces, replay protection."""

from __future__ import annotations

import pytest
from sipmessage import Message, Request

from softswitch.sip import auth as auth_mod
from softswitch.sip.auth import (
    BAD_NONCE,
    MALFORMED,
    NO_CREDENTIALS,
    NONCE_REPLAY,
    OK,
    STALE_NONCE,
    UNKNOWN_USER,
    UNSUPPORTED,
    WRONG_PASSWORD,
    DigestAuthenticator,
    answer_challenge,
    compute_response,
    parse_auth_header,
)

REALM = "pbx.test"
SECRET = b"0123456789abcdef-test-secret"
NOW = 1_700_000_000.0
USERS = {"100": "secret-100", "101": "secret-101"}
URI = f"sip:{REALM}"


def lookup(username: str) -> str | None:
    return USERS.get(username)


def request(authorization: str | None = None, header: str = "Authorization") -> Request:
    lines = [
        f"REGISTER {URI} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
        f"From: <sip:100@{REALM}>;tag=a1",
        f"To: <sip:100@{REALM}>",
        "Call-ID: c1",
        "CSeq: 1 REGISTER",
    ]
    if authorization is not None:
        lines.append(f"{header}: {authorization}")
    lines.append("Content-Length: 0")
    msg = Message.parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


@pytest.fixture
def authn() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, nonce_ttl=300.0)


def answer(
    authn: DigestAuthenticator,
    now: float = NOW,
    user: str = "100",
    password: str | None = None,
    nc: int = 1,
    challenge: str | None = None,
) -> str:
    return answer_challenge(
        challenge or authn.challenge(now),
        method="REGISTER",
        uri=URI,
        username=user,
        password=password if password is not None else USERS[user],
        nc=nc,
    )


# -- published vectors ---------------------------------------------------------------
def test_rfc2617_section_3_5_example() -> None:
    assert (
        compute_response(
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2617_example_through_answer_challenge() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    scheme, params = parse_auth_header(value)
    assert scheme == "Digest"
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["qop"] == "auth" and params["nc"] == "00000001"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    assert (
        compute_response(
            username="Mufasa",
            password="Circle of Life",
            realm="http-auth@example.org",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            method="GET",
            uri="/dir/index.html",
            algorithm=algorithm,
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_rfc2069_form_without_qop() -> None:
    # response = MD5(HA1:nonce:HA2), computed independently here with hashlib.
    import hashlib

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    ha2 = md5("GET:/dir/index.html")
    assert compute_response(
        username="Mufasa",
        password="Circle Of Life",
        realm="testrealm@host.com",
        nonce="abc",
        method="GET",
        uri="/dir/index.html",
    ) == md5(f"{ha1}:abc:{ha2}")


def test_parse_auth_header_keeps_quoted_commas_and_escapes() -> None:
    scheme, params = parse_auth_header(
        'Digest realm="a,b", qop="auth,auth-int", username="x\\"y", nc=00000001'
    )
    assert scheme == "Digest"
    assert params == {"realm": "a,b", "qop": "auth,auth-int", "username": 'x"y', "nc": "00000001"}
    with pytest.raises(ValueError):
        parse_auth_header('Digest realm="a", realm="b"')
    with pytest.raises(ValueError):
        parse_auth_header("Digest realm")


# -- server side ---------------------------------------------------------------------
def test_challenge_format(authn: DigestAuthenticator) -> None:
    scheme, params = parse_auth_header(authn.challenge(NOW))
    assert scheme == "Digest"
    assert params["realm"] == REALM
    assert params["algorithm"] == "MD5"
    assert params["qop"] == "auth"
    assert "stale" not in params
    assert parse_auth_header(authn.challenge(NOW, stale=True))[1]["stale"] == "true"
    # nonces are unique even within the same millisecond
    assert authn.make_nonce(NOW) != authn.make_nonce(NOW)


def test_round_trip_ok(authn: DigestAuthenticator) -> None:
    result = authn.check(request(answer(authn)), "Authorization", lookup, NOW + 1)
    assert (result.ok, result.username, result.stale, result.reason) == (True, "100", False, OK)


def test_proxy_authorization_header(authn: DigestAuthenticator) -> None:
    req = request(answer(authn), header="Proxy-Authorization")
    assert authn.check(req, "Proxy-Authorization", lookup, NOW).ok
    # ... and it is not mistaken for the other header
    assert authn.check(req, "Authorization", lookup, NOW).reason == NO_CREDENTIALS


def test_no_credentials(authn: DigestAuthenticator) -> None:
    result = authn.check(request(), "Authorization", lookup, NOW)
    assert not result.ok and result.reason == NO_CREDENTIALS and not result.password_failure


def test_other_realm_is_ignored(authn: DigestAuthenticator) -> None:
    other = DigestAuthenticator("elsewhere", SECRET)
    result = authn.check(request(answer(other)), "Authorization", lookup, NOW)
    assert result.reason == NO_CREDENTIALS


def test_malformed_credentials(authn: DigestAuthenticator) -> None:
    assert authn.check(request("Digest garbage"), "Authorization", lookup, NOW).reason == MALFORMED
    # nc must be 8 hex digits when qop is present
    bad_nc = answer(authn).replace("nc=00000001", "nc=1")
    assert authn.check(request(bad_nc), "Authorization", lookup, NOW).reason == MALFORMED


def test_unsupported_algorithm(authn: DigestAuthenticator) -> None:
    value = answer_challenge(
        authn.challenge(NOW).replace("algorithm=MD5", "algorithm=SHA-256"),
        method="REGISTER",
        uri=URI,
        username="100",
        password=USERS["100"],
    )
    assert authn.check(request(value), "Authorization", lookup, NOW).reason == UNSUPPORTED


def test_expired_nonce_is_stale(authn: DigestAuthenticator) -> None:
    value = answer(authn, now=NOW)
    result = authn.check(request(value), "Authorization", lookup, NOW + 301)
    assert (result.ok, result.stale, result.reason) == (False, True, STALE_NONCE)
    assert not result.password_failure


def test_expired_nonce_with_wrong_password_is_not_stale(authn: DigestAuthenticator) -> None:
    """stale=true tells the client its password was right: never say it otherwise."""
    value = answer(authn, now=NOW, password="wrong")
    result = authn.check(request(value), "Authorization", lookup, NOW + 301)
    assert (result.ok, result.stale, result.reason) == (False, False, WRONG_PASSWORD)


def test_nonce_from_the_future_is_stale(authn: DigestAuthenticator) -> None:
    # e.g. the clock was stepped back after the challenge
    value = answer(authn, now=NOW + 3600)
    result = authn.check(request(value), "Authorization", lookup, NOW)
    assert result.stale and result.reason == STALE_NONCE


@pytest.mark.parametrize("position", [0, 10, 20, 42])
def test_tampered_nonce_rejected(authn: DigestAuthenticator, position: int) -> None:
    challenge = authn.challenge(NOW)
    nonce = parse_auth_header(challenge)[1]["nonce"]
    flipped = "A" if nonce[position] != "A" else "B"
    forged = nonce[:position] + flipped + nonce[position + 1 :]
    # The client answers the forged nonce correctly: the digest is right, the nonce not ours.
    value = answer(authn, challenge=challenge.replace(nonce, forged))
    result = authn.check(request(value), "Authorization", lookup, NOW)
    assert (result.ok, result.stale, result.reason) == (False, False, BAD_NONCE)


def test_nonce_from_another_secret_rejected(authn: DigestAuthenticator) -> None:
    other = DigestAuthenticator(REALM, b"another-secret-of-16+bytes")
    value = answer(other)
    result = authn.check(request(value), "Authorization", lookup, NOW)
    assert result.reason == BAD_NONCE and not result.stale


def test_nonce_count_replay_rejected(authn: DigestAuthenticator) -> None:
    challenge = authn.challenge(NOW)
    first = answer(authn, challenge=challenge, nc=1)
    assert authn.check(request(first), "Authorization", lookup, NOW).ok
    # the very same header again: a replay (right password, so stale=true)
    replay = authn.check(request(first), "Authorization", lookup, NOW + 1)
    assert (replay.ok, replay.stale, replay.reason) == (False, True, NONCE_REPLAY)
    # the client may go on with a higher count on the same nonce
    assert authn.check(
        request(answer(authn, challenge=challenge, nc=2)), "Authorization", lookup, NOW + 2
    ).ok
    # but not go back
    lower = authn.check(
        request(answer(authn, challenge=challenge, nc=1)), "Authorization", lookup, NOW + 3
    )
    assert lower.reason == NONCE_REPLAY


def test_no_qop_nonce_is_single_use(authn: DigestAuthenticator) -> None:
    challenge = authn.challenge(NOW).replace(', qop="auth"', "")
    value = answer(authn, challenge=challenge)
    assert "qop" not in parse_auth_header(value)[1]
    assert authn.check(request(value), "Authorization", lookup, NOW).ok
    again = authn.check(request(value), "Authorization", lookup, NOW + 1)
    assert again.reason == NONCE_REPLAY and again.stale


def test_replay_refused_after_tracking_table_eviction() -> None:
    authn = DigestAuthenticator(REALM, SECRET, max_tracked_nonces=2)
    challenges = [authn.challenge(NOW + i) for i in range(3)]
    for i, ch in enumerate(challenges):
        assert authn.check(
            request(answer(authn, challenge=ch)), "Authorization", lookup, NOW + 10 + i
        ).ok
    assert authn.tracked_nonces == 2
    # the first nonce was evicted; even with a higher nc it must not be taken as fresh
    result = authn.check(
        request(answer(authn, challenge=challenges[0], nc=5)), "Authorization", lookup, NOW + 20
    )
    assert result.reason == NONCE_REPLAY
    # a nonce issued after the eviction works normally
    assert authn.check(request(answer(authn, now=NOW + 21)), "Authorization", lookup, NOW + 21).ok


def test_expired_nonces_are_forgotten(authn: DigestAuthenticator) -> None:
    assert authn.check(request(answer(authn)), "Authorization", lookup, NOW).ok
    assert authn.tracked_nonces == 1
    assert authn.check(
        request(answer(authn, now=NOW + 1000)), "Authorization", lookup, NOW + 1000
    ).ok
    assert authn.tracked_nonces == 1


def test_unknown_user_and_wrong_password_look_the_same(
    authn: DigestAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = auth_mod.compute_response

    def counting(**kwargs: object) -> str:
        calls.append(str(kwargs["username"]))
        return real(**kwargs)  # type: ignore[arg-type]

    wrong_req = request(answer(authn, password="guess"))
    unknown_req = request(
        answer(authn, password="guess").replace('username="100"', 'username="999"')
    )
    monkeypatch.setattr(auth_mod, "compute_response", counting)
    wrong = authn.check(wrong_req, "Authorization", lookup, NOW)
    unknown = authn.check(unknown_req, "Authorization", lookup, NOW)
    # both did the same work: one digest computation each
    assert calls == ["100", "999"]
    assert (wrong.ok, wrong.stale, unknown.ok, unknown.stale) == (False, False, False, False)
    assert wrong.password_failure and unknown.password_failure
    # only the internal reason differs (for logs), never anything sent to the client
    assert (wrong.reason, unknown.reason) == (WRONG_PASSWORD, UNKNOWN_USER)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"short")


def test_other_spellings_of_a_valid_nonce_are_rejected(authn: DigestAuthenticator) -> None:
    """The nonce's last base64 character has two unused bits: a string differing only
    there decodes to the same bytes, but it is not ours (replay tracking is by string)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    challenge = authn.challenge(NOW)
    nonce = parse_auth_header(challenge)[1]["nonce"]
    twin = nonce[:-1] + alphabet[alphabet.index(nonce[-1]) ^ 1]
    assert twin != nonce
    value = answer(authn, challenge=challenge.replace(nonce, twin))
    result = authn.check(request(value), "Authorization", lookup, NOW)
    assert (result.ok, result.reason) == (False, BAD_NONCE)
