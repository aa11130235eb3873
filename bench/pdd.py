"""Benchmark 2: post-dial delay.

A tiny SIP user agent pair in this one process (raw UDP sockets on 127.0.0.1, one clock,
no SIP library shared with the switch): B registers (digest), then A places CALLS
sequential calls to B. Each call: A sends the INVITE, gets 407, ACKs it, sends the
INVITE again with Proxy-Authorization. The switch hands it to a media worker, which
originates B's leg through the edge, which forks it to B's binding. Timestamps:

  t0  the first (unauthenticated) INVITE leaves A
  t1  the authenticated INVITE leaves A
  t2  the INVITE arrives at B's socket (select() wakes; read at once)

post-dial delay = t2 - t1 (what the switch adds); t2 - t0 includes the 407 round trip.
B then answers 486 Busy Here (so no media is set up); A ACKs the 486 it gets back."""

from __future__ import annotations

import secrets
import select
import socket
import time

from bench.common import (
    DOMAIN,
    Switch,
    extensions,
    password,
    percentile,
    table,
    workdir,
)
from bench.sip import digest, split_message

CALLS = 200
WARMUP = 5
TARGET_P99_MS = 20.0
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


class UA:
    def __init__(self, number: str, server: tuple[str, int]) -> None:
        self.number = number
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tag = secrets.token_hex(4)

    def send(self, text: str, dest: tuple[str, int] | None = None) -> float:
        self.sock.sendto(text.encode(), dest or self.server)
        return time.perf_counter()

    def recv(self, timeout: float = 5.0) -> tuple[str, dict[str, list[str]], str]:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return split_message(data)

    def request(
        self,
        method: str,
        uri: str,
        call_id: str,
        cseq: int,
        to: str,
        extra: str = "",
        body: str = "",
        branch: str | None = None,
    ) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f'From: "Bench {self.number}" <sip:{self.number}@{DOMAIN}>;tag={self.tag}\r\n'
            f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.number}@127.0.0.1:{self.port}>\r\n{extra}"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )

    def register(self) -> int:
        call_id = secrets.token_hex(8)
        uri = f"sip:{DOMAIN}"
        to = f"<sip:{self.number}@{DOMAIN}>"
        self.send(self.request("REGISTER", uri, call_id, 1, to, "Expires: 3600\r\n"))
        status, h, _ = self.recv()
        if " 401 " in status:
            auth = digest(
                h["www-authenticate"][0], "REGISTER", uri, self.number, password(self.number)
            )
            self.send(
                self.request(
                    "REGISTER", uri, call_id, 2, to, f"Expires: 3600\r\nAuthorization: {auth}\r\n"
                )
            )
            status, h, _ = self.recv()
        return int(status.split()[1])


def ack_for(req_uri: str, status_headers: dict[str, list[str]], via: str, cseq: int) -> str:
    """ACK for a non-2xx final response: same branch (top Via), To with the tag."""
    return (
        f"ACK {req_uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: {status_headers['from'][0]}\r\nTo: {status_headers['to'][0]}\r\n"
        f"Call-ID: {status_headers['call-id'][0]}\r\nCSeq: {cseq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def one_call(a: UA, b: UA, callee: str) -> tuple[float, float]:
    """One call; returns (t2 - t1, t2 - t0) in ms."""
    uri = f"sip:{callee}@{DOMAIN}"
    to = f"<sip:{callee}@{DOMAIN}>"
    call_id = secrets.token_hex(10)
    a.tag = secrets.token_hex(4)
    sdp = SDP.format(port=40000)
    branch = "z9hG4bK" + secrets.token_hex(8)
    t0 = a.send(a.request("INVITE", uri, call_id, 1, to, body=sdp, branch=branch))
    while True:
        status, h, _ = a.recv()
        code = int(status.split()[1])
        if code >= 200:
            break
    if code != 407:
        raise RuntimeError(f"expected 407 to the first INVITE, got {status}")
    a.send(ack_for(uri, h, h["via"][0], 1))
    auth = digest(h["proxy-authenticate"][0], "INVITE", uri, a.number, password(a.number))
    t1 = a.send(
        a.request("INVITE", uri, call_id, 2, to, f"Proxy-Authorization: {auth}\r\n", body=sdp)
    )
    t2 = None
    final = None
    deadline = time.monotonic() + 10
    while final is None and time.monotonic() < deadline:
        ready, _, _ = select.select([a.sock, b.sock], [], [], 1.0)
        now = time.perf_counter()
        if b.sock in ready:
            data, src = b.sock.recvfrom(65535)
            line, h, _ = split_message(data)
            if line.startswith("INVITE") and t2 is None:
                t2 = now
                resp = (
                    "SIP/2.0 486 Busy Here\r\n"
                    + "".join(f"Via: {v}\r\n" for v in h["via"])
                    + f"From: {h['from'][0]}\r\nTo: {h['to'][0]};tag=b{secrets.token_hex(4)}\r\n"
                    f"Call-ID: {h['call-id'][0]}\r\nCSeq: {h['cseq'][0]}\r\n"
                    "Content-Length: 0\r\n\r\n"
                )
                b.sock.sendto(resp.encode(), src)
            # ACK to the 486 (and retransmissions) need no answer
        if a.sock in ready:
            data, _ = a.sock.recvfrom(65535)
            status, h, _ = split_message(data)
            if status.startswith("SIP/2.0") and int(status.split()[1]) >= 200:
                final = int(status.split()[1])
                a.send(ack_for(uri, h, h["via"][0], 2))
    if t2 is None:
        raise RuntimeError(f"the INVITE never reached B (A got {final})")
    if final is None:
        raise RuntimeError("A got no final response")
    # drain B's socket (the edge's ACK to the 486) before the next call
    b.sock.settimeout(0.05)
    try:
        while True:
            b.sock.recvfrom(65535)
    except OSError:
        pass
    return (t2 - t1) * 1000, (t2 - t0) * 1000


def run() -> dict:
    with workdir("pdd") as tmp:
        numbers = extensions(2)
        sw = Switch(tmp, numbers, workers=2, max_workers=4)
        sw.start()
        failures: list[str] = []
        pdd: list[float] = []
        with_auth: list[float] = []
        a = UA(numbers[0], ("127.0.0.1", sw.port))
        b = UA(numbers[1], ("127.0.0.1", sw.port))
        try:
            if b.register() != 200:
                raise RuntimeError("B could not register")
            for i in range(WARMUP + CALLS):
                try:
                    d1, d0 = one_call(a, b, numbers[1])
                except (RuntimeError, OSError) as e:
                    failures.append(f"call {i}: {e}")
                    time.sleep(0.5)
                    continue
                if i >= WARMUP:
                    pdd.append(d1)
                    with_auth.append(d0)
                time.sleep(0.02)
            calls = sw.query("SELECT result, COUNT(*) AS n FROM calls GROUP BY result")
        finally:
            sw.stop()
            a.sock.close()
            b.sock.close()
    rows = []
    for name, values in (
        ("auth INVITE leaves A -> INVITE at B", pdd),
        ("first INVITE leaves A (incl. 407) -> at B", with_auth),
    ):
        rows.append(
            [
                name,
                len(values),
                percentile(values, 50),
                percentile(values, 95),
                percentile(values, 99),
                max(values, default=float("nan")),
            ]
        )
    print(
        table(
            f"2. Post-dial delay over {CALLS} sequential calls (ms; B answers 486, "
            f"{WARMUP} warm-up calls not counted)",
            ["interval", "calls", "p50", "p95", "p99", "max"],
            rows,
        )
    )
    print("call records:", ", ".join(f"{c['result']}={c['n']}" for c in calls))
    p99 = percentile(pdd, 99)
    print(
        f"failures: {len(failures)}; p99 {p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms): "
        f"{'PASS' if p99 <= TARGET_P99_MS and not failures else 'FAIL'}"
    )
    for f in failures[:5]:
        print("  ", f)
    return {
        "p50": percentile(pdd, 50),
        "p95": percentile(pdd, 95),
        "p99": p99,
        "failures": len(failures),
    }


if __name__ == "__main__":
    run()
