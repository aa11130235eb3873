"""SIP pieces the benchmarks' own user agents share (bench/pdd.py, bench/ua.py): digest
credentials and splitting a datagram into its first line, headers and body. Raw text on
purpose: nothing here is shared with the switch's SIP stack."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection

COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def digest(challenge: str, method: str, uri: str, user: str, pw: str) -> str:
    """The Authorization / Proxy-Authorization value answering a WWW- / Proxy-Authenticate
    `challenge` (MD5, qop=auth)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    ha1 = md5(f"{user}:{params['realm']}:{pw}")
    ha2 = md5(f"{method}:{uri}")
    cnonce = secrets.token_hex(8)
    resp = md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
    out = (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}",'
        f' uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001,'
        f' cnonce="{cnonce}"'
    )
    if "opaque" in params:
        out += f', opaque="{params["opaque"]}"'
    return out


def split_message(
    data: bytes, comma_lists: Collection[str] = ()
) -> tuple[str, dict[str, list[str]], str]:
    """(first line, values by lower-case full header name, body) of a SIP datagram. The
    headers named in `comma_lists` are also split at commas, one value each."""
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers: dict[str, list[str]] = {}
    for ln in lines[1:]:
        name, _, value = ln.partition(":")
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        values = [v.strip() for v in value.split(",")] if key in comma_lists else [value.strip()]
        headers.setdefault(key, []).extend(values)
    return lines[0], headers, body
