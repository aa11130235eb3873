"""The scripted flow examples (examples/taxi.py, examples/manager.py) through a real
switch, against the stand-in CRM they ship with (examples/crm_standin.py, crm.json).

The switch runs the example's own [block.*] tables (read from examples/NAME.toml and
written into the test config, which has the test extensions 101-106 and free ports);
the flow modules are imported from examples/ as `softswitch run` would, with
SOFTSWITCH_CRM_URL pointing at a stand-in CRM started on a free port for each test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.support import e2e
from tests.support.audio import dominant_frequency
from tests.support.phone import Phone
from tests.switch import EXTENSIONS, RunningSwitch, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# -- the stand-in CRM ------------------------------------------------------------------
class StandinCrm:
    """examples/crm_standin.py as a child process on a free 127.0.0.1 port."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = open(tmp / "crm.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "crm_standin.py"), "--port", "0",
             "--data", str(EXAMPLES / "crm.json"), *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        first: list[str] = []
        got = threading.Event()

        def read() -> None:
            first.append(self.proc.stdout.readline())
            got.set()

        threading.Thread(target=read, daemon=True).start()
        if not got.wait(15) or "listening on " not in first[0]:
            self.stop()
            raise RuntimeError(f"stand-in CRM did not start: {first!r}")
        self.url = first[0].split("listening on ", 1)[1].strip()

    def control(self, **behaviour: object) -> dict:
        req = urllib.request.Request(
            f"{self.url}/_control", data=json.dumps(behaviour).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_standin_crm_answers_and_misbehaves_on_request(tmp_path):
    crm = StandinCrm(tmp_path)
    try:

        def get(path: str) -> tuple[int, dict]:
            try:
                with urllib.request.urlopen(crm.url + path, timeout=5) as resp:
                    return resp.status, json.load(resp)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        assert get("/customers/103") == (
            200, {"phone": "103", "name": "Carol Baker (test phone 103)", "manager": "102"},
        )  # fmt: skip
        assert get("/customers/%2B79165550102")[1]["manager"] == "102"
        assert get("/customers/199")[0] == 404
        assert get("/orders/active?phone=103")[1]["driver_extension"] == "104"
        assert get("/orders/active?phone=%2B7%20916%20555-01-02")[1]["driver_extension"] == "105"
        assert get("/orders/active?phone=106")[0] == 404
        assert crm.control(status=500) == {"delay": 0.0, "status": 500}
        assert get("/customers/103")[0] == 500
        assert crm.control(status=None, delay=0.5) == {"delay": 0.5, "status": None}
        assert get("/customers/103")[0] == 200  # slow, but it answers
    finally:
        crm.stop()


# -- the switch with an example's blocks ----------------------------------------------------
def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML for {value!r}")


def example_blocks(name: str) -> tuple[str, str, str]:
    """(entry, entry_number, the [block.*] tables as TOML) of examples/NAME.toml."""
    with (EXAMPLES / f"{name}.toml").open("rb") as f:
        config = tomllib.load(f)
    # the example's extensions are the test extensions' numbers, so its blocks fit
    assert {ext["number"] for ext in config["extension"]} <= set(EXTENSIONS)
    tables = []
    for block, keys in config["block"].items():
        lines = [f"[block.{json.dumps(block)}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        tables.append("\n".join(lines))
    switch = config["switch"]
    return switch["entry"], switch["entry_number"], "\n\n".join(tables) + "\n"


@pytest.fixture
def crms(tmp_path):
    started: list[StandinCrm] = []

    def start(*args: str) -> StandinCrm:
        crm = StandinCrm(tmp_path, *args)
        started.append(crm)
        return crm

    yield start
    for crm in started:
        crm.stop()


@pytest.fixture
def switches(tmp_path, monkeypatch):
    started: list[RunningSwitch] = []

    def start(example: str, crm_url: str, **env: str) -> RunningSwitch:
        monkeypatch.setenv("SOFTSWITCH_CRM_URL", crm_url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # the flow modules are found in examples/, as when the example's own config runs
        path = os.environ.get("PYTHONPATH", "")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(EXAMPLES), path) if p))
        entry, number, blocks = example_blocks(example)
        sw = RunningSwitch(tmp_path, blocks, entry=json.dumps(entry),
                           entry_number=json.dumps(number))  # fmt: skip
        started.append(sw)
        return sw

    yield start
    for sw in started:
        sw.stop()


def registered(sw: RunningSwitch, number: str, made: list[Phone], answer: float | None = 200):
    """A phone registered as `number` that answers incoming calls with `answer` (None:
    rings and never answers)."""
    p = e2e.registered(sw, number, made)
    p.auto_answer(answer)
    return p


def talk(caller: Phone, call: str, callee: Phone, inbound: str, tmp: Path) -> None:
    """The two are connected: each hears the other's tone."""
    callee.wait_state(inbound, "confirmed")
    caller.wait_state(call, "confirmed")
    caller.play_tone(call, 440, seconds=3)
    callee.play_tone(inbound, 880, seconds=3)
    for phone, leg, want in ((caller, call, 880), (callee, inbound, 440)):
        path = tmp / f"heard-{phone.user}.wav"
        phone.start_recording(leg, str(path))
        time.sleep(1.2)
        phone.stop_recording(leg)
        assert abs(dominant_frequency(str(path), skip_seconds=0.2) - want) < 20


def finish(sw: RunningSwitch, caller: Phone, call: str, callee: Phone, inbound: str) -> dict:
    """The caller hangs up; the call record is closed and answered."""
    caller.hangup(call)
    callee.wait_state(inbound, "disconnected")
    (rec,) = sw.wait_for_call_closed(1)
    assert (rec["kind"], rec["caller"], rec["callee"], rec["result"]) == (
        "flow", caller.user, "100", "answered",
    )  # fmt: skip
    return rec


def callee_legs(sw: RunningSwitch, rec: dict) -> list[tuple[str, str]]:
    legs = sorted(sw.legs(rec["id"]), key=lambda leg: leg["started"])
    return [(leg["party"], leg["result"]) for leg in legs if leg["role"] == "callee"]


def reaches_fallback(sw: RunningSwitch, made: list[Phone], passed_over: str, fallback: str) -> None:
    """103 dials 100 and gets to the fallback block, whose 101 answers (ringing together
    with the rest of `fallback`, e.g. "101,105"); `passed_over`, registered too, never
    rings."""
    customer = registered(sw, "103", made)
    skipped = registered(sw, passed_over, made)
    first = registered(sw, "101", made)
    call = customer.call("100")
    inbound = first.wait_incoming()
    first.wait_state(inbound, "confirmed")
    rec = finish(sw, customer, call, first, inbound)
    assert callee_legs(sw, rec) == [(fallback, "answered")]
    assert not skipped.incoming


# -- taxi ------------------------------------------------------------------------------
def test_taxi_customer_with_an_order_reaches_their_driver(tmp_path, made, crms, switches):
    sw = switches("taxi", crms("--quiet").url)
    customer = registered(sw, "103", made)  # crm.json: order T-1042, driver 104
    driver = registered(sw, "104", made)
    dispatcher = registered(sw, "101", made)
    call = customer.call("100")
    inbound = driver.wait_incoming()
    assert "103" in driver.info(inbound)["from"]  # the driver sees the customer's number
    talk(customer, call, driver, inbound, tmp_path)
    driver.hangup(inbound)  # the driver ends the conversation: the call ends too
    customer.wait_state(call, "disconnected")
    (rec,) = sw.wait_for_call_closed(1)
    assert (rec["caller"], rec["result"]) == ("103", "answered")
    assert callee_legs(sw, rec) == [("104", "answered")]
    assert not dispatcher.incoming  # not passed on to the dispatcher afterwards
    assert "talked to driver 104" in sw.log_text()


def test_taxi_caller_without_an_order_reaches_the_dispatcher(tmp_path, made, crms, switches):
    sw = switches("taxi", crms("--quiet").url)
    caller = registered(sw, "106", made)  # not in crm.json's orders
    driver = registered(sw, "104", made)
    dispatcher = registered(sw, "101", made)
    call = caller.call("100")
    inbound = dispatcher.wait_incoming()
    talk(caller, call, dispatcher, inbound, tmp_path)
    rec = finish(sw, caller, call, dispatcher, inbound)
    assert callee_legs(sw, rec) == [("101,102", "answered")]
    assert not driver.incoming
    assert "no active order" in sw.log_text()


def test_taxi_crm_down_sends_the_caller_to_the_dispatcher(tmp_path, made, switches):
    sw = switches("taxi", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    reaches_fallback(sw, made, passed_over="104", fallback="101,102")  # the dispatchers
    assert "CRM unavailable" in sw.log_text()


# -- responsible manager ----------------------------------------------------------------
def test_manager_customer_reaches_their_manager(tmp_path, made, crms, switches):
    sw = switches("manager", crms("--quiet").url)
    customer = registered(sw, "103", made)  # crm.json: manager 102
    manager = registered(sw, "102", made)
    group = registered(sw, "101", made)
    call = customer.call("100")
    inbound = manager.wait_incoming()
    talk(customer, call, manager, inbound, tmp_path)
    rec = finish(sw, customer, call, manager, inbound)
    assert callee_legs(sw, rec) == [("102", "answered")]
    assert not group.incoming


def test_manager_slow_crm_sends_the_caller_to_the_group(tmp_path, made, crms, switches):
    sw = switches("manager", crms("--quiet", "--delay", "6").url)  # the flow waits 1.5 s
    reaches_fallback(sw, made, passed_over="102", fallback="101,105")  # the group
    assert "within 1.5 s" in sw.log_text()  # left on the timeout, not the late answer


def test_manager_crm_error_sends_the_caller_to_the_group(tmp_path, made, crms, switches):
    crm = crms("--quiet")
    sw = switches("manager", crm.url)
    crm.control(status=500)  # broken while the switch runs
    reaches_fallback(sw, made, passed_over="102", fallback="101,105")  # the group
    assert "HTTP 500" in sw.log_text()


def test_manager_not_answering_sends_the_caller_to_the_group(tmp_path, made, crms, switches):
    sw = switches("manager", crms("--quiet").url, SOFTSWITCH_MANAGER_RING_SECONDS="3")
    customer = registered(sw, "103", made)
    manager = registered(sw, "102", made, answer=None)  # rings, nobody picks up
    group = registered(sw, "101", made)
    call = customer.call("100")
    ringing = manager.wait_incoming()
    inbound = group.wait_incoming(timeout=15)
    manager.wait_state(ringing, "disconnected")  # the manager's phone stops ringing
    group.wait_state(inbound, "confirmed")
    rec = finish(sw, customer, call, group, inbound)
    assert callee_legs(sw, rec) == [("102", "no-answer"), ("101,105", "answered")]
    assert "manager 102 no-answer" in sw.log_text()
