"""Helpers of the end-to-end tests that start their own switches (tests/test_flows_e2e.py,
tests/test_examples_flows_e2e.py); the `made` fixture (tests/conftest.py) closes the
phones they make."""

from __future__ import annotations

from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch


def registered(sw: RunningSwitch, number: str, made: list[Phone]) -> Phone:
    """A test phone registered on `sw` as extension `number`, added to `made`."""
    p = Phone(user=number, password=EXTENSIONS[number][1], server=sw.server)
    made.append(p)
    assert p.register() == 200
    return p
