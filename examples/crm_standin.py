"""A tiny stand-in CRM for the scripted flow examples (taxi.py, manager.py).

It answers the two questions the examples ask, from a JSON file:

    GET /customers/<phone>          -> 200 {"phone": ..., "name": ..., "manager": "102"}, or 404
    GET /orders/active?phone=<phone> -> 200 {"phone": ..., "order": ..., "driver_extension": "104"},
                                        or 404 when the caller has no active order

Run it next to the switch:

    .venv/bin/python examples/crm_standin.py --port 8080 --data examples/crm.json

To see the flows fall back, make it misbehave, from the start or while it runs:

    --delay 3        every answer takes 3 s (longer than the flows' 1.5 s timeout)
    --status 500     every answer is an HTTP 500

    curl -X POST localhost:8080/_control -d '{"delay": 3}'       # slow from now on
    curl -X POST localhost:8080/_control -d '{"status": 500}'    # broken from now on
    curl -X POST localhost:8080/_control -d '{"delay": 0, "status": null}'  # healthy again
    curl localhost:8080/_control                                 # the current behaviour

`--port 0` picks a free port. Once it listens, it prints one line to stdout:
`crm-standin: listening on http://HOST:PORT` (tests wait for it).

Phone numbers are compared by their digits and a leading "+" only, so "+7 916 555-01-02"
in the file matches a caller "+79165550102".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("crm-standin")

BEHAVIOUR = web.AppKey("behaviour", dict)
DATA = web.AppKey("data", dict)


def normalize(phone: str) -> str:
    """'+7 (916) 555-01-02' -> '+79165550102'; '103' -> '103'."""
    phone = phone.strip()
    plus = "+" if phone.startswith("+") else ""
    return plus + re.sub(r"\D", "", phone)


def load_data(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{"customers": {phone: {...}}, "orders": {phone: {...}}} with normalized keys."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        section: {normalize(phone): dict(record) for phone, record in raw.get(section, {}).items()}
        for section in ("customers", "orders")
    }


async def misbehave(request: web.Request) -> web.Response | None:
    """Apply the configured delay; return the configured error response, if any."""
    behaviour = request.app[BEHAVIOUR]
    if behaviour["delay"] > 0:
        await asyncio.sleep(behaviour["delay"])
    status = behaviour["status"]
    if status is not None:
        return web.json_response({"error": f"stand-in told to answer {status}"}, status=status)
    return None


async def get_customer(request: web.Request) -> web.Response:
    if (failure := await misbehave(request)) is not None:
        return failure
    phone = normalize(request.match_info["phone"])
    customer = request.app[DATA]["customers"].get(phone)
    if customer is None:
        return web.json_response({"error": "no such customer", "phone": phone}, status=404)
    return web.json_response({"phone": phone, **customer})


async def get_active_order(request: web.Request) -> web.Response:
    if (failure := await misbehave(request)) is not None:
        return failure
    phone = normalize(request.query.get("phone", ""))
    if not phone:
        return web.json_response({"error": "the query needs ?phone="}, status=400)
    order = request.app[DATA]["orders"].get(phone)
    if order is None:
        return web.json_response({"error": "no active order", "phone": phone}, status=404)
    return web.json_response({"phone": phone, **order})


async def get_control(request: web.Request) -> web.Response:
    return web.json_response(request.app[BEHAVIOUR])


async def post_control(request: web.Request) -> web.Response:
    """{"delay": seconds, "status": code or null}: either key may be left out."""
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        behaviour = dict(request.app[BEHAVIOUR])
        if "delay" in body:
            behaviour["delay"] = max(0.0, float(body["delay"]))
        if "status" in body:
            status = body["status"]
            behaviour["status"] = None if status is None else int(status)
            if behaviour["status"] is not None and not 100 <= behaviour["status"] <= 599:
                raise ValueError("status must be an HTTP status code or null")
    except (ValueError, TypeError) as e:
        return web.json_response({"error": str(e)}, status=400)
    request.app[BEHAVIOUR].update(behaviour)
    log.info("behaviour now %s", behaviour)
    return web.json_response(behaviour)


def make_app(data: dict, delay: float = 0.0, status: int | None = None) -> web.Application:
    app = web.Application()
    app[DATA] = data
    app[BEHAVIOUR] = {"delay": delay, "status": status}
    app.router.add_get("/customers/{phone}", get_customer)
    app.router.add_get("/orders/active", get_active_order)
    app.router.add_get("/_control", get_control)
    app.router.add_post("/_control", post_control)
    return app


async def serve(args: argparse.Namespace) -> None:
    app = make_app(load_data(args.data), delay=args.delay, status=args.status)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    runner = web.AppRunner(app, access_log=None if args.quiet else log)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"crm-standin: listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in CRM for the flow examples.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).with_name("crm.json"),
        help="the customers and orders (default: crm.json next to this file)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--status", type=int, default=None, help="answer every request with it")
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print(f"crm-standin: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
