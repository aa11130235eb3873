"""The HTTP API through a real switch (`python -m softswitch run`) and real test phones:
auth and the ban, where it listens, every endpoint, hanging calls up, voicemail, and the
WebSocket event stream of a real queue call. Everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.config import load_config
from softswitch.store import Store
from softswitch.voicemail import save_voicemail
from tests.support.audio import make_tone
from tests.support.e2e import registered
from tests.support.phone import wait_until
from tests.switch import RunningSwitch, free_port

WAIT = 15.0  # seconds any awaited thing may take


# -- clients ---------------------------------------------------------------------------
class Api:
    """A tiny synchronous client: (status, headers, parsed JSON or bytes)."""

    def __init__(self, port: int, token: str | None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        token = self.token if token == "default" else token
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, got, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, got, raw = e.code, dict(e.headers), e.read()
        if got.get("Content-Type", "").startswith("application/json") and raw:
            return status, got, json.loads(raw)
        return status, got, raw

    def get(self, path: str, **kw: Any) -> Any:
        status, _, body = self.request("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, got = self.request("POST", path, body=body)
        return status, got


class Events:
    """A WebSocket client of /api/events on a thread of its own, collecting messages."""

    def __init__(self, port: int, token: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/api/events?token={token}"
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self.thread.daemon = True
        self.thread.start()
        assert self.ready.wait(WAIT), "the event stream did not connect"
        if self.error is not None:
            raise self.error

    async def _main(self) -> None:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.url) as ws:
                    self.ws = ws
                    self.ready.set()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            with self.cond:
                                self.messages.append(json.loads(msg.data))
                                self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.ready.set()

    def wait_for(self, pred, timeout: float = WAIT) -> dict:
        """The first message (received so far or later) for which pred is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such event; got {self.messages}")
                self.cond.wait(left)

    def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(5)
        self.thread.join(5)


def token_of(sw: RunningSwitch) -> str:
    return (sw.data_dir / "http-token").read_text().strip()


def api_of(sw: RunningSwitch) -> Api:
    return Api(sw.http_port, token_of(sw))


def start(tmp: Path, extra: str = "", http: str = "", **switch: object) -> RunningSwitch:
    """A switch whose [http] section has `http` lines besides its free port."""
    port = free_port()
    sw = RunningSwitch(tmp, extra + f"\n[http]\nport = {port}\n{http}", **switch)
    sw.http_port = port
    return sw


# -- queue config ----------------------------------------------------------------------
def queue_extra(tmp: Path) -> str:
    music = make_tone(str(tmp / "music.wav"), 500.0, 2.0)
    return "\n".join(
        [
            "[block.line]",
            'type = "queue"',
            'members = ["101", "102"]',
            f'music = "{music}"',
            "answer_timeout = 0",
            "",
        ]
    )


def queue_log(sw: RunningSwitch, kind: str) -> list[dict]:
    with sw.db() as conn:
        return [
            dict(r)
            for r in conn.execute("SELECT * FROM queue_log WHERE kind = ? ORDER BY id", (kind,))
        ]


def operator(api: Api, agent: str) -> dict:
    return next(o for o in api.get("/api/operators") if o["agent"] == agent)


def tcp_listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                found.append(address)
    return found


# -- tests -----------------------------------------------------------------------------
def test_auth_token_file_default_listen_and_the_ban(tmp_path):
    sw = start(tmp_path, http="max_failures = 4\nban_seconds = 120")
    try:
        # Listens on 127.0.0.1 only, by default.
        assert load_config(sw.config).http.host == "127.0.0.1"
        assert tcp_listeners(sw.http_port) == ["0100007F"]
        # The generated token: in the data dir, 0600, named (not shown) at start.
        token_file = sw.data_dir / "http-token"
        token = token_of(sw)
        assert len(token) >= 24
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        out = "".join(sw.output)
        assert f"http: http://127.0.0.1:{sw.http_port}/ (token in {token_file.resolve()})" in out
        assert token not in out and token not in sw.log_text()
        api = Api(sw.http_port, token)
        # The page and the API description need no token.
        status, headers, page = api.request("GET", "/", token=None)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"<html" in page.lower()
        status, headers, spec = api.request("GET", "/api/openapi.yaml", token=None)
        assert status == 200 and b"openapi: 3.1" in spec
        status, _, _ = api.request("GET", "/static/../../coordinator.py", token=None)
        assert status == 404
        # No token / a wrong one: 401 with a JSON error; the right one: 200.
        status, headers, body = api.request("GET", "/api/status", token=None)
        assert status == 401 and "error" in body and "Bearer" in headers["WWW-Authenticate"]
        status, _, body = api.request("GET", "/api/status", token="x" * 32)
        assert status == 401 and "wrong token" in body["error"]
        status, _, body = api.request("GET", "/api/status")
        assert status == 200
        assert body["calls_active"] == 0 and body["queues"] == [] and body["version"]
        assert isinstance(body["started"], float)
        # The WebSocket takes ?token= (browsers cannot set headers there), not without.
        status, _, _ = api.request("GET", "/api/events", token=None)
        assert status == 401
        # Unknown routes are JSON errors too.
        status, _, body = api.request("GET", "/api/nothing")
        assert status == 404 and "error" in body
        # The fourth failure within ban_seconds bans the address: 429 even with the token.
        status, _, _ = api.request("GET", "/api/queues", token="y" * 32)
        assert status == 401
        status, headers, body = api.request("GET", "/api/status")
        assert status == 429 and "error" in body and int(headers["Retry-After"]) > 0
        # A restart forgets the ban and keeps the token.
        sw.restart()
        assert token_of(sw) == token
        assert api.get("/api/status")["calls_active"] == 0
    finally:
        sw.stop()


def test_a_taken_port_stops_the_start_with_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sip = free_port()
        with pytest.raises(RuntimeError) as err:
            RunningSwitch(tmp_path, f"[http]\nport = {port}\n", listen=f'["udp:127.0.0.1:{sip}"]')
    text = str(err.value)
    assert f"not starting: [http] port {port} on 127.0.0.1: cannot listen" in text
    assert "Traceback" not in text
    # Nothing else was opened (the HTTP port is bound before any SIP socket).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", sip))


def test_configured_tokens_no_file(tmp_path):
    token = "configured-token-0123456789abcdef"
    sw = start(tmp_path, http=f'tokens = ["{token}"]')
    try:
        assert not (sw.data_dir / "http-token").exists()
        assert "(tokens from [http] tokens)" in "".join(sw.output)
        assert token not in "".join(sw.output)
        api = Api(sw.http_port, token)
        assert api.get("/api/status")["queues"] == []
    finally:
        sw.stop()


def test_queue_operators_calls_events_and_reports(tmp_path, made):
    sw = start(tmp_path, queue_extra(tmp_path), entry='"line"', entry_number='"100"')
    events: Events | None = None
    try:
        api = api_of(sw)
        events = Events(sw.http_port, token_of(sw))
        op = registered(sw, "101", made)
        assert wait_until(lambda: operator(api, "101")["status"] == "available", WAIT)
        o101, o102 = operator(api, "101"), operator(api, "102")
        assert o101["name"] == "Alice" and o101["registered"] is True
        assert o101["state"] == "idle" and o101["queues"] == ["line"] and o101["since"]
        assert o102["status"] == "logged_out" and o102["registered"] is False
        assert o101["today"] == {"answered": 0, "missed": 0, "talk_time": 0.0}
        # An operator event came with the login.
        events.wait_for(
            lambda m: (
                m["type"] == "operator"
                and m["operator"]["agent"] == "101"
                and m["operator"]["status"] == "available"
            )
        )

        # Pause with a reason: no one is rung, the caller waits.
        status, body = api.post("/api/operators/101/pause", {"reason": "lunch"})
        assert status == 200
        assert body["status"] == "paused" and body["pause_reason"] == "lunch"
        assert body["since"] >= o101["since"]
        assert queue_log(sw, "pause")[-1]["reason"] == "lunch"
        status, body = api.post("/api/operators/101/pause", {"reason": 5})
        assert status == 400 and "reason" in body["error"]
        status, body = api.post("/api/operators/999/login")
        assert status == 404 and "999" in body["error"]

        caller = registered(sw, "103", made)
        call = caller.call("100")
        caller.wait_state(call, "confirmed")

        def waiting() -> list[dict]:
            return next(q for q in api.get("/api/queues") if q["name"] == "line")["waiting"]

        assert wait_until(lambda: len(waiting()) == 1, WAIT)
        first = waiting()[0]
        assert first["number"] == "103" and first["position"] == 1
        assert first["state"] == "waiting" and first["ringing"] == []
        assert wait_until(lambda: waiting()[0]["wait"] > first["wait"], WAIT)
        line = next(q for q in api.get("/api/queues") if q["name"] == "line")
        assert line["strategy"] == "ring-all" and line["members"] == ["101", "102"]
        assert line["logged_in"] == 1 and line["available"] == 0 and line["free"] == 0
        assert line["longest_wait"] == max(w["wait"] for w in line["waiting"])
        assert line["today"]["offered"] == 1 and line["today"]["answered"] == 0

        calls = api.get("/api/calls")
        assert len(calls) == 1
        active = calls[0]
        assert active["kind"] == "flow" and active["caller"] == "103"
        assert active["callee"] == "100" and active["queue"] == "line"
        assert active["block"] == "line" and active["answered"] is not None
        status_now = api.get("/api/status")
        assert status_now["calls_active"] == 1 and status_now["queues"] == ["line"]
        assert status_now["registrations"] == {"101": 1, "103": 1}

        # Unpause: the operator rings, answers, talks.
        status, body = api.post("/api/operators/101/unpause")
        assert status == 200 and body["status"] == "available"
        incoming = op.wait_incoming()
        assert wait_until(lambda: operator(api, "101")["state"] == "ringing", WAIT)
        assert waiting()[0]["state"] == "ringing" and waiting()[0]["ringing"] == ["101"]
        op.answer(incoming)
        op.wait_state(incoming, "confirmed")
        assert wait_until(lambda: operator(api, "101")["state"] == "talking", WAIT)
        talking = operator(api, "101")
        assert talking["caller"] == active["id"] and talking["number"] == "103"
        assert waiting() == []

        # Hang the call up through the API: both phones see it end, the record closes.
        status, _, _ = api.request("DELETE", f"/api/calls/{active['id']}")
        assert status == 204
        caller.wait_state(call, "disconnected")
        op.wait_state(incoming, "disconnected")
        closed = sw.wait_for_call_closed(1, WAIT)
        assert closed[0]["id"] == active["id"] and closed[0]["cause"] == "hung up by API"
        assert closed[0]["result"] == "answered"  # it reached an operator
        done = queue_log(sw, "completed")
        assert done[-1]["result"] == "api" and done[-1]["agent"] == "101"
        assert wait_until(lambda: api.get("/api/calls") == [], WAIT)
        status, _, body = api.request("DELETE", f"/api/calls/{active['id']}")
        assert status == 404 and "error" in body

        # Log out and in through the API (rows with reason "api").
        status, body = api.post("/api/operators/101/logout")
        assert status == 200 and body["status"] == "logged_out"
        assert queue_log(sw, "logout")[-1]["reason"] == "api"
        status, body = api.post("/api/operators/101/pause")
        assert status == 409 and "logged out" in body["error"]
        status, body = api.post("/api/operators/101/login")
        assert status == 200 and body["status"] == "available"
        assert queue_log(sw, "login")[-1]["reason"] == "api"

        # The event stream saw the call, its queue rows and the operator's changes.
        cid = active["id"]
        for kind in ("joined", "connected", "completed"):
            events.wait_for(
                lambda m, k=kind: (
                    m["type"] == "queue" and m["row"]["kind"] == k and m["row"].get("caller") == cid
                )
            )
        for what in ("started", "answered"):
            events.wait_for(
                lambda m, w=what: m["type"] == "call" and m["event"] == w and m["call"]["id"] == cid
            )
        ended = events.wait_for(
            lambda m: m["type"] == "call" and m["event"] == "ended" and m["call"]["id"] == cid
        )
        assert ended["call"]["cause"] == "hung up by API" and ended["call"]["result"]
        for state in ("ringing", "talking"):
            events.wait_for(
                lambda m, s=state: (
                    m["type"] == "operator"
                    and m["operator"]["agent"] == "101"
                    and m["operator"]["state"] == s
                )
            )
        events.wait_for(
            lambda m: (
                m["type"] == "operator"
                and m["operator"]["status"] == "logged_out"
                and m["operator"]["agent"] == "101"
            )
        )

        # Today's figures and the reports.
        assert wait_until(lambda: operator(api, "101")["today"]["answered"] == 1, WAIT)
        line = next(q for q in api.get("/api/queues") if q["name"] == "line")
        assert line["today"]["offered"] == 1 and line["today"]["answered"] == 1
        assert line["today"]["handling_ratio"] == 1.0
        load = api.get("/api/reports/load?queue=line&service_seconds=30")
        assert load["report"] == "load" and load["queues"] == ["line"]
        assert load["total"]["offered"] == 1 and load["total"]["answered"] == 1
        assert load["service_seconds"] == 30.0
        ops = api.get("/api/reports/operators")
        assert [o["agent"] for o in ops["operators"]] == ["101"]
        assert ops["operators"][0]["answered"] == 1
        assert api.get("/api/reports/missed")["report"] == "missed"
        assert api.get("/api/reports/staffing?target=0.9")["report"] == "staffing"
        for bad in (
            "/api/reports/load?from=2024-02-02&to=2024-02-01",
            "/api/reports/load?from=yesterday",
            "/api/reports/load?queue=nosuch",
            "/api/reports/load?service_seconds=abc",
            "/api/reports/staffing?target=2",
            "/api/reports/load?form=2024-01-01",
        ):
            status, _, body = api.request("GET", bad)
            assert status == 400 and body["error"], (bad, body)
        status, _, body = api.request("GET", "/api/reports/nosuch")
        assert status == 404 and "load" in body["error"]
    finally:
        if events is not None:
            events.close()
        sw.stop()


def test_hanging_up_an_internal_call(tmp_path, made):
    sw = start(tmp_path)
    try:
        api = api_of(sw)
        alice, bob = registered(sw, "101", made), registered(sw, "102", made)
        call = alice.call("102")
        incoming = bob.wait_incoming()
        assert wait_until(lambda: len(api.get("/api/calls")) == 1, WAIT)
        ringing = api.get("/api/calls")[0]
        assert ringing["kind"] == "internal" and ringing["answered"] is None
        assert (ringing["caller"], ringing["callee"]) == ("101", "102")
        assert ringing["block"] is None and ringing["queue"] is None
        bob.answer(incoming)
        alice.wait_state(call, "confirmed")
        assert wait_until(lambda: api.get("/api/calls")[0]["answered"] is not None, WAIT)
        status, _, _ = api.request("DELETE", f"/api/calls/{ringing['id']}")
        assert status == 204
        alice.wait_state(call, "disconnected")
        bob.wait_state(incoming, "disconnected")
        closed = sw.wait_for_call_closed(1, WAIT)
        assert closed[0]["result"] == "answered" and closed[0]["cause"] == "hung up by API"
        assert all(leg["ended"] is not None for leg in sw.legs(ringing["id"]))
        assert api.get("/api/calls") == []
        status, _, _ = api.request("DELETE", "/api/calls/nosuch")
        assert status == 404
    finally:
        sw.stop()


def test_voicemail_list_download_and_heard(tmp_path):
    data_dir = tmp_path / "data"
    store = Store(data_dir / "softswitch.db")
    wav = make_tone(str(tmp_path / "message.wav"), 440.0, 1.0)
    vm_id = save_voicemail(
        store, data_dir, "sales", "103", "Carol", None, wav, 1.0, time.time(), [], keep_source=True
    )
    # a row whose path points outside the data dir is never served
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF")
    bad_id = store.add_voicemail(
        box="sales",
        caller="104",
        caller_name=None,
        call_id=None,
        received=time.time(),
        seconds=1.0,
        path="../secret.wav",
    )
    store.close()
    sw = start(tmp_path)
    try:
        api = api_of(sw)
        items = api.get("/api/voicemail?box=sales")
        ours = next(i for i in items if i["id"] == vm_id)
        assert ours == {
            "id": vm_id,
            "box": "sales",
            "caller": "103",
            "caller_name": "Carol",
            "received": ours["received"],
            "seconds": 1.0,
            "heard": False,
            "url": f"/api/voicemail/{vm_id}.wav",
        }
        assert api.get("/api/voicemail?box=other") == []
        assert len(api.get("/api/voicemail")) == 2
        status, headers, audio = api.request("GET", ours["url"])
        assert status == 200 and headers["Content-Type"] == "audio/wav"
        assert audio[:4] == b"RIFF" and audio == Path(wav).read_bytes()
        status, _, _ = api.request("GET", ours["url"], token=None)
        assert status == 401
        status, _, body = api.request("GET", f"/api/voicemail/{bad_id}.wav")
        assert status == 403 and "outside" in body["error"]
        status, _, _ = api.request("GET", "/api/voicemail/999.wav")
        assert status == 404
        status, _, _ = api.request("POST", f"/api/voicemail/{vm_id}/heard")
        assert status == 204
        assert next(i for i in api.get("/api/voicemail") if i["id"] == vm_id)["heard"] is True
        status, _, _ = api.request("POST", "/api/voicemail/999/heard")
        assert status == 404
    finally:
        sw.stop()
