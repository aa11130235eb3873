"""Shared fixtures: a real switch on free 127.0.0.1 ports, registered test phones, and a
switch data dir with its store (for the voicemail and mail tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from softswitch.store.db import Store
from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A switch's data dir (not created: the store creates it)."""
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    """The store in `data_dir`, closed after the test."""
    s = Store(data_dir / "softswitch.db")
    yield s
    s.close()


@pytest.fixture
def made() -> Iterator[list[Phone]]:
    """Test phones a test makes itself (tests.support.e2e.registered adds them), closed
    after it."""
    phones: list[Phone] = []
    yield phones
    for p in phones:
        p.close()


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[RunningSwitch]:
    sw = RunningSwitch(tmp_path)
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture
def phone(switch: RunningSwitch) -> Iterator[Callable[..., Phone]]:
    """phone("101") -> a Phone registered as extension 101 (closed after the test)."""
    made: list[Phone] = []

    def make(
        number: str,
        transport: str = "udp",
        register: bool = True,
        password: str | None = None,
        server: RunningSwitch | None = None,
    ) -> Phone:
        target = server or switch
        p = Phone(
            user=number,
            password=password or EXTENSIONS[number][1],
            server=target.server,
            transport=transport,
        )
        made.append(p)
        if register:
            code = p.register()
            assert code == 200, f"{number} could not register: {code}"
        return p

    yield make
    for p in made:
        with contextlib.suppress(Exception):
            p.close()
