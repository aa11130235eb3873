"""Erlang B / Erlang C: the M/M/c figures the simulation test checks the core against,
and what a staffing report needs."""

from __future__ import annotations

import math


def erlang_b(servers: int, traffic: float) -> float:
    """Blocking probability of M/M/c/c with `traffic` Erlang offered to `servers`."""
    if servers < 0 or traffic < 0:
        raise ValueError("servers and traffic must be >= 0")
    b = 1.0
    for k in range(1, servers + 1):
        b = traffic * b / (k + traffic * b)
    return b


def erlang_c(servers: int, traffic: float) -> float:
    """Probability that a caller has to wait in M/M/c (1.0 when traffic >= servers)."""
    if traffic >= servers:
        return 1.0
    b = erlang_b(servers, traffic)
    rho = traffic / servers
    return b / (1 - rho * (1 - b))


def average_speed_of_answer(servers: int, traffic: float, handle_time: float) -> float:
    """Mean wait over all callers (ASA), in the unit of `handle_time`."""
    if traffic >= servers:
        return math.inf
    return erlang_c(servers, traffic) * handle_time / (servers - traffic)


def service_level(servers: int, traffic: float, handle_time: float, target: float) -> float:
    """Share of callers answered within `target` (same unit as `handle_time`)."""
    if traffic >= servers:
        return 0.0
    return 1 - erlang_c(servers, traffic) * math.exp(-(servers - traffic) * target / handle_time)
