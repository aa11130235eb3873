"""The routes of the HTTP API (docs/api.md, softswitch/http/openapi.yaml)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from aiohttp import web

from softswitch.http import live

if TYPE_CHECKING:
    from softswitch.http.app import HttpApi

PACKAGE = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE / "static"
OPENAPI = PACKAGE / "openapi.yaml"
PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>softswitch</title></head>
<body><h1>softswitch</h1><p>The dashboard is not installed. The JSON API is under
<code>/api/</code> (see <a href="/api/openapi.yaml">/api/openapi.yaml</a>).</p></body></html>
"""
REPORT_PARAMS = frozenset({"from", "to", "queue", "service_seconds", "target"})
MAX_REPORT_DAYS = 366
MAX_REASON = 100
NO_STORE = {"Cache-Control": "no-store"}


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(reason="Bad Request", text=message)
        self.message = message


def api(request: web.Request) -> HttpApi:
    from softswitch.http.app import API_KEY

    return request.app[API_KEY]


def ok(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=NO_STORE)


def not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404, headers=NO_STORE)


# -- the dashboard's files -------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
    return web.Response(text=PLACEHOLDER, content_type="text/html")


async def static(request: web.Request) -> web.StreamResponse:
    root = STATIC_DIR.resolve()
    try:
        path = (root / request.match_info["path"]).resolve()
    except (OSError, ValueError):
        raise web.HTTPNotFound() from None
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def openapi(request: web.Request) -> web.StreamResponse:
    if not OPENAPI.is_file():
        return not_found("openapi.yaml is not installed with this copy of softswitch")
    return web.FileResponse(OPENAPI, headers={"Content-Type": "application/yaml"})


# -- status, queues, operators -----------------------------------------------------------
async def get_status(request: web.Request) -> web.Response:
    a = api(request)
    return ok(live.status(a.co, a.started, a.version))


async def get_queues(request: web.Request) -> web.Response:
    a = api(request)
    centre = a.co.callcentre
    if centre is None:
        return ok([])
    queues, _ = await a.today.current()
    return ok([live.queue_item(a.co, name, queues) for name in centre.blocks])


async def get_operators(request: web.Request) -> web.Response:
    a = api(request)
    return ok(await a.operators())


async def get_operator(request: web.Request) -> web.Response:
    a = api(request)
    agent = request.match_info["agent"]
    if not a.is_operator(agent):
        return not_found(f"no operator {agent!r} (operators are the members of queues)")
    _, today = await a.today.current()
    return ok(a.operator(agent, today))


async def operator_action(request: web.Request) -> web.Response:
    a = api(request)
    agent, action = request.match_info["agent"], request.match_info["action"]
    if not a.is_operator(agent):
        return not_found(f"no operator {agent!r} (operators are the members of queues)")
    centre = a.co.callcentre
    assert centre is not None
    status = centre.agent_status(agent)
    if action == "login":
        if status == "logged_out":
            centre.login(agent, "api")
    elif action == "logout":
        centre.logout(agent, "api")  # also when out: they stay out when the phone registers
    elif action == "pause":
        reason = await pause_reason(request)
        if status == "logged_out":
            return web.json_response(
                {"error": f"operator {agent} is logged out; log them in first"},
                status=409,
                headers=NO_STORE,
            )
        if status == "available":
            centre.pause(agent, reason)
    elif action == "unpause":
        if status == "paused":
            centre.unpause(agent)
    a.check_operator(agent)
    _, today = await a.today.current()
    return ok(a.operator(agent, today))


async def pause_reason(request: web.Request) -> str:
    if not request.can_read_body:
        return "api"
    raw = await request.read()
    if not raw.strip():
        return "api"
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest('the body must be JSON, e.g. {"reason": "lunch"}') from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object, e.g. {"reason": "lunch"}')
    unknown = set(body) - {"reason"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected only reason")
    reason = body.get("reason")
    if reason is None:
        return "api"
    if not isinstance(reason, str) or len(reason.strip()) > MAX_REASON:
        raise BadRequest(f"reason must be a string of at most {MAX_REASON} characters")
    return reason.strip() or "api"  # blank: as if not given


# -- calls -----------------------------------------------------------------------------
async def get_calls(request: web.Request) -> web.Response:
    return ok(live.active_calls(api(request).co))


async def delete_call(request: web.Request) -> web.Response:
    a = api(request)
    call_id = request.match_info["id"]
    if not a.co.hangup_call(call_id):
        return not_found(f"no active call {call_id!r}")
    return web.Response(status=204)


# -- reports ---------------------------------------------------------------------------
def _date(params, name: str, default: dt.date) -> dt.date:
    value = params.get(name)
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: expected a date YYYY-MM-DD, not {value!r}") from None


def _number(params, name: str, default: float, low: float, high: float, what: str) -> float:
    value = params.get(name)
    if value is None:
        return default
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not (low < x <= high) or not math.isfinite(x):
        raise BadRequest(f"{name}: expected {what}, not {value!r}")
    return x


async def get_report(request: web.Request) -> web.Response:
    from softswitch import reports

    a = api(request)
    name = request.match_info["name"]
    if name not in reports.REPORTS:
        return not_found(f"no report {name!r}; expected one of {', '.join(reports.REPORTS)}")
    params = request.query
    unknown = sorted(set(params) - REPORT_PARAMS)
    if unknown:
        raise BadRequest(
            f"unknown parameter(s) {', '.join(unknown)}; expected "
            "from, to, queue, service_seconds, target"
        )
    config = a.co.config
    tz = config.switch.timezone
    today = dt.datetime.now(ZoneInfo(tz)).date()
    last = _date(params, "to", today)
    first = _date(params, "from", last)
    if last < first:
        raise BadRequest(f"from {first} is after to {last}")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise BadRequest(f"at most {MAX_REPORT_DAYS} days at once")
    queues = params.getall("queue", [])
    known = list(a.co.callcentre.blocks) if a.co.callcentre is not None else []
    for q in queues:
        if q not in known:
            raise BadRequest(f"unknown queue {q!r}; expected one of {', '.join(known) or 'none'}")
    service = _number(params, "service_seconds", 20.0, 0.0, 3600.0, "seconds, 0 < N <= 3600")
    target = _number(params, "target", 0.8, 0.0, 0.999999, "a share, 0 < SHARE < 1")
    period = reports.period_for_dates(first, last, tz)
    db = a.co.data_dir / "softswitch.db"
    extensions = [e.number for e in config.extensions]

    def build() -> str:
        # a connection of its own, off the event loop: a long range must not stall calls
        from softswitch.store import Store

        store = Store(db)
        try:
            data = reports.fetch(store, period.start)
        finally:
            store.close()
        report = reports.build_report(
            name,
            data,
            period,
            queues=queues or None,
            service_seconds=service,
            target=target,
            extensions=extensions,
            now=time.time(),
        )
        return reports.render(report, "json")

    text = await asyncio.get_running_loop().run_in_executor(None, build)
    return web.Response(text=text, content_type="application/json", headers=NO_STORE)


# -- voicemail -------------------------------------------------------------------------
def voicemail_item(row) -> dict:
    return {
        "id": row["id"],
        "box": row["box"],
        "caller": row["caller"],
        "caller_name": row["caller_name"],
        "received": row["received"],
        "seconds": row["seconds"],
        "heard": bool(row["heard"]),
        "url": f"/api/voicemail/{row['id']}.wav",
    }


async def get_voicemail(request: web.Request) -> web.Response:
    store = api(request).co.store
    assert store is not None
    rows = store.voicemails(request.query.get("box") or None)
    return ok([voicemail_item(r) for r in rows])


async def get_voicemail_wav(request: web.Request) -> web.StreamResponse:
    a = api(request)
    assert a.co.store is not None
    vm_id = int(request.match_info["id"])
    row = a.co.store.voicemail(vm_id)
    if row is None:
        return not_found(f"no voicemail {vm_id}")
    root = a.co.data_dir.resolve()
    path = (root / row["path"]).resolve()
    if not path.is_relative_to(root):
        return web.json_response(
            {"error": f"voicemail {vm_id}: its file lies outside the data directory"},
            status=403,
        )
    if not path.is_file():
        return not_found(f"voicemail {vm_id}: its file {row['path']} is missing")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'inline; filename="voicemail-{vm_id}.wav"',
            "Cache-Control": "private, max-age=3600",
        },
    )


async def post_voicemail_heard(request: web.Request) -> web.Response:
    a = api(request)
    assert a.co.store is not None
    vm_id = int(request.match_info["id"])
    if a.co.store.voicemail(vm_id) is None:
        return not_found(f"no voicemail {vm_id}")
    a.co.store.voicemail_heard(vm_id)
    return web.Response(status=204)


# -- events ----------------------------------------------------------------------------
async def events(request: web.Request) -> web.StreamResponse:
    return await api(request).hub.handle(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
    app.router.add_get("/api/openapi.yaml", openapi)
    app.router.add_get("/api/status", get_status)
    app.router.add_get("/api/queues", get_queues)
    app.router.add_get("/api/operators", get_operators)
    app.router.add_get("/api/operators/{agent}", get_operator)
    app.router.add_post(
        "/api/operators/{agent}/{action:login|logout|pause|unpause}", operator_action
    )
    app.router.add_get("/api/calls", get_calls)
    app.router.add_delete("/api/calls/{id}", delete_call)
    app.router.add_get("/api/reports/{name}", get_report)
    app.router.add_get("/api/voicemail", get_voicemail)
    app.router.add_get(r"/api/voicemail/{id:\d+}.wav", get_voicemail_wav)
    app.router.add_post(r"/api/voicemail/{id:\d+}/heard", post_voicemail_heard)
    app.router.add_get("/api/events", events)
