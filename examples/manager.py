"""Responsible manager: put a customer through to their own manager, else to the group.

A script block runs it (see manager.toml):

    [block.main]
    type = "script"
    function = "manager:flow"   # this file; `softswitch run` puts the config's folder on sys.path
    next = "group"              # where the call goes when the flow returns None

The flow asks the CRM who the caller is (GET /customers/<caller> -> {"name", "manager"})
and rings that manager's extension. The caller goes on to the group instead when the CRM
is slow (no answer within the timeout), down, answers an error or nonsense, does not
know the caller, or when the manager does not answer (busy, no answer, not registered).
Every fallback is logged with its reason. The caller hears ringing meanwhile: nothing
answers the call until the manager or someone in the group does.
The CRM request itself is in crm_client.py next to this file, which taxi.py uses too:
copy it along with the flow.

Settings, from the switch's environment:

    SOFTSWITCH_CRM_URL               the CRM's base URL (default http://127.0.0.1:8080,
                                     where `examples/crm_standin.py` listens)
    SOFTSWITCH_CRM_TIMEOUT           seconds the whole CRM request may take (default 1.5)
    SOFTSWITCH_MANAGER_RING_SECONDS  how long the manager's phone rings (default 15)
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from crm_client import CrmUnavailable, crm_get, env_float

from softswitch import Call

log = logging.getLogger(__name__)


MANAGER_RING_SECONDS = env_float("SOFTSWITCH_MANAGER_RING_SECONDS", 15)

# What the flow returns is the next block's name: None continues at the script block's
# `next` (the group in manager.toml), "" hangs up.
TO_GROUP = None
HANG_UP = ""


async def flow(call: Call) -> str | None:
    await call.ring()  # ringback for the caller while the CRM is asked
    who = f"call {call.call_id} from {call.caller}"
    try:
        customer = await crm_get(f"/customers/{quote(call.caller, safe='')}")
    except CrmUnavailable as e:
        log.warning("%s: CRM unavailable (%s): to the group", who, e)
        return TO_GROUP
    if customer is None:
        log.info("%s: not a known customer: to the group", who)
        return TO_GROUP
    manager = str(customer.get("manager") or "")
    if not manager.isdigit():
        log.warning(
            "%s: customer without a usable manager (%r): to the group", who, customer.get("manager")
        )
        return TO_GROUP
    call.vars["customer"] = customer
    log.info("%s: %s, ringing their manager %s", who, customer.get("name", "?"), manager)
    result = await call.dial(manager, timeout=MANAGER_RING_SECONDS)
    if result.answered:
        log.info("%s: talked to manager %s for %.0f s", who, manager, result.talk_seconds)
        return HANG_UP
    log.info(
        "%s: manager %s %s after %.0f s: to the group",
        who,
        manager,
        result.status,
        result.ring_seconds,
    )
    return TO_GROUP
