"""Taxi: put a caller through to the driver of their active order, else to the dispatcher.

A script block runs it (see taxi.toml):

    [block.main]
    type = "script"
    function = "taxi:flow"      # this file; `softswitch run` puts the config's folder on sys.path
    next = "dispatcher"         # where the call goes when the flow returns None

The flow asks the CRM for the caller's active order (GET /orders/active?phone=<caller>).
If there is one, the driver's extension rings; when the driver does not answer, or there
is no order, or the CRM is down, slow, answers an error or nonsense, the caller goes on
to the dispatcher. Every such fallback is logged with its reason. The caller hears
ringing meanwhile: nothing answers the call until a driver or a dispatcher does.

Settings, from the switch's environment:

    SOFTSWITCH_CRM_URL            the CRM's base URL (default http://127.0.0.1:8080,
                                  where `examples/crm_standin.py` listens)
    SOFTSWITCH_CRM_TIMEOUT        seconds the whole CRM request may take (default 1.5)
    SOFTSWITCH_TAXI_RING_SECONDS  how long the driver's phone rings (default 20)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp

from softswitch import Call

log = logging.getLogger(__name__)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value.strip() else default
    except ValueError:
        log.warning("%s=%r is not a number; using %g", name, value, default)
        return default


CRM_URL = os.environ.get("SOFTSWITCH_CRM_URL", "").strip() or "http://127.0.0.1:8080"
CRM_TIMEOUT = _env_float("SOFTSWITCH_CRM_TIMEOUT", 1.5)
DRIVER_RING_SECONDS = _env_float("SOFTSWITCH_TAXI_RING_SECONDS", 20)

# What the flow returns is the next block's name: None continues at the script block's
# `next` (the dispatcher in taxi.toml), "" hangs up.
TO_DISPATCHER = None
HANG_UP = ""


class CrmUnavailable(Exception):
    """The CRM gave no usable answer: down, too slow, an HTTP error, or not JSON."""


async def crm_get(path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
    """GET `path` from the CRM: its JSON object, or None when it has no record (404).
    Anything else raises CrmUnavailable; the request never takes longer than CRM_TIMEOUT."""
    url = CRM_URL.rstrip("/") + path
    timeout = aiohttp.ClientTimeout(total=CRM_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(url, params=params) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise CrmUnavailable(f"HTTP {resp.status} from {url}")
                body = await resp.json(content_type=None)
    except TimeoutError:
        raise CrmUnavailable(f"no answer from {url} within {CRM_TIMEOUT:g} s") from None
    except aiohttp.ClientError as e:
        raise CrmUnavailable(f"{url}: {type(e).__name__}: {e}") from None
    except ValueError as e:  # the body is not JSON
        raise CrmUnavailable(f"{url}: the answer is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise CrmUnavailable(f"{url}: expected a JSON object, got {type(body).__name__}")
    return body


async def flow(call: Call) -> str | None:
    await call.ring()  # ringback for the caller while the CRM is asked
    who = f"call {call.call_id} from {call.caller}"
    try:
        order = await crm_get("/orders/active", {"phone": call.caller})
    except CrmUnavailable as e:
        log.warning("%s: CRM unavailable (%s): to the dispatcher", who, e)
        return TO_DISPATCHER
    if order is None:
        log.info("%s: no active order: to the dispatcher", who)
        return TO_DISPATCHER
    driver = str(order.get("driver_extension") or "")
    if not driver.isdigit():
        log.warning(
            "%s: order without a usable driver_extension (%r): to the dispatcher",
            who,
            order.get("driver_extension"),
        )
        return TO_DISPATCHER
    call.vars["order"] = order
    log.info("%s: order %s, ringing driver %s", who, order.get("order", "?"), driver)
    result = await call.dial(driver, timeout=DRIVER_RING_SECONDS)
    if result.answered:
        log.info("%s: talked to driver %s for %.0f s", who, driver, result.talk_seconds)
        return HANG_UP
    log.info(
        "%s: driver %s %s after %.0f s: to the dispatcher",
        who,
        driver,
        result.status,
        result.ring_seconds,
    )
    return TO_DISPATCHER
