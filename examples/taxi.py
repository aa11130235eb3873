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
The CRM request itself is in crm_client.py next to this file, which manager.py uses too:
copy it along with the flow.

Settings, from the switch's environment:

    SOFTSWITCH_CRM_URL            the CRM's base URL (default http://127.0.0.1:8080,
                                  where `examples/crm_standin.py` listens)
    SOFTSWITCH_CRM_TIMEOUT        seconds the whole CRM request may take (default 1.5)
    SOFTSWITCH_TAXI_RING_SECONDS  how long the driver's phone rings (default 20)
"""

from __future__ import annotations

import logging

from crm_client import CrmUnavailable, crm_get, env_float

from softswitch import Call

log = logging.getLogger(__name__)


DRIVER_RING_SECONDS = env_float("SOFTSWITCH_TAXI_RING_SECONDS", 20)

# What the flow returns is the next block's name: None continues at the script block's
# `next` (the dispatcher in taxi.toml), "" hangs up.
TO_DISPATCHER = None
HANG_UP = ""


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
