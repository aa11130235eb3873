"""The CRM client the scripted flow examples share (taxi.py, manager.py).

Import it from a flow next to it (`softswitch run` puts the config's folder on sys.path):

    from crm_client import CrmUnavailable, crm_get, env_float

Settings, from the switch's environment:

    SOFTSWITCH_CRM_URL      the CRM's base URL (default http://127.0.0.1:8080,
                            where `examples/crm_standin.py` listens)
    SOFTSWITCH_CRM_TIMEOUT  seconds the whole CRM request may take (default 1.5)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


def env_float(name: str, default: float) -> float:
    """The environment variable `name` as a number; `default` when unset, empty or not one."""
    value = os.environ.get(name, "")
    try:
        return float(value) if value.strip() else default
    except ValueError:
        log.warning("%s=%r is not a number; using %g", name, value, default)
        return default


CRM_URL = os.environ.get("SOFTSWITCH_CRM_URL", "").strip() or "http://127.0.0.1:8080"
CRM_TIMEOUT = env_float("SOFTSWITCH_CRM_TIMEOUT", 1.5)


class CrmUnavailable(Exception):
    """The CRM gave no usable answer: down, too slow, an HTTP error, or not JSON."""


async def crm_get(path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
    """GET `path` (with query `params`) from the CRM: its JSON object, or None when it has
    no record (404). Anything else raises CrmUnavailable; the request never takes longer
    than CRM_TIMEOUT."""
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
