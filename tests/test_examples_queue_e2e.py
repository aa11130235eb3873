"""The three office schemes of the source document, as shipped in examples/ (shop.toml,
personal-managers.toml, call-centre.toml), through a real switch.

Each test starts `softswitch run --config COPY` on a copy of the example that differs
only where a test must: 127.0.0.1 on a free port, a data dir and an RTP range of its
own, opening hours that make the call "open" or "closed" whatever the time, and a few
waits made shorter (an operator's answer time, a message's length) so the suite stays
fast. Test phones register with the example's own extension numbers and passwords. What
a caller heard is checked by frequency (each side plays a tone, the other records it);
what the call centre did, in the queue_log rows of the switch's SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.audio import dominant_frequency
from tests.support.phone import Phone, wait_until
from tests.switch import RunningSwitch, free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CALLER_TONE, OPERATOR_TONE = 700.0, 1100.0


# -- an example's config, changed only where a test must -----------------------------
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


def toml_text(config: dict) -> str:
    """A parsed config back as TOML: [switch] (and its sub-tables), [[extension]],
    [block.NAME] and any other section; values inside a table are written inline."""
    out: list[str] = []

    def table(header: str, keys: dict) -> None:
        out.append(f"\n[{header}]")
        subs = {k: v for k, v in keys.items() if isinstance(v, dict)}
        out.extend(f"{k} = {toml_value(v)}" for k, v in keys.items() if k not in subs)
        if not header.startswith("block."):
            for name, sub in subs.items():
                table(f"{header}.{name}", sub)
        else:
            for name, sub in subs.items():  # a block's inline tables (menu options)
                out.append(f"{name} = {toml_value(sub)}")

    for section, value in config.items():
        if section == "extension":
            for ext in value:
                out.append("\n[[extension]]")
                out.extend(f"{k} = {toml_value(v)}" for k, v in ext.items())
        elif section == "block":
            for name, keys in value.items():
                table(f"block.{json.dumps(name)}", keys)
        else:
            table(section, value)
    return "\n".join(out).lstrip() + "\n"


class ExampleSwitch(RunningSwitch):
    """A RunningSwitch on a config file written by the test (RunningSwitch itself
    writes a config of its own)."""

    def __init__(self, tmp: Path, config_file: Path, config: dict) -> None:
        self.tmp = tmp
        self.config_data = config
        self.argv = ["-m", "softswitch", "run", "--config", str(config_file)]
        host, port = config["switch"]["listen"][0].rsplit(":", 2)[1:]
        assert host == "127.0.0.1"
        self.port = int(port)
        self.data_dir = Path(config["switch"]["data_dir"])
        self.config = config_file
        self.proc = None
        self.output = []
        self.start()

    def password(self, number: str) -> str:
        (ext,) = [e for e in self.config_data["extension"] if e["number"] == number]
        return ext["password"]


def example_copy(
    tmp: Path, name: str, hours: str = "open", blocks: dict[str, dict] | None = None
) -> tuple[Path, dict]:
    """examples/NAME.toml for a test: its own port, data dir and RTP ports; every hours
    block open ("open": all day, every day) or closed ("closed": yesterday, today and
    tomorrow are holidays, so whatever the time zone); `blocks` replaces keys the block
    already has (only those: the example itself must have them)."""
    with (EXAMPLES / f"{name}.toml").open("rb") as f:
        config = tomllib.load(f)
    assert hours in ("open", "closed")
    port = free_port()
    rtp = 20000 + (port % 100) * 400  # disjoint from tests running side by side
    config["switch"].update(
        listen=[f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"],
        public_address="127.0.0.1",
        data_dir=str(tmp / "data"),
        rtp_ports=f"{rtp}-{rtp + 399}",
    )
    config["http"] = {"port": free_port()}  # not the example's 8088: tests run side by side
    today = dt.datetime.now(dt.UTC).date()
    around = [str(today + dt.timedelta(days=d)) for d in (-1, 0, 1)]
    for block in config["block"].values():
        if block["type"] == "hours":
            block.update(schedule=["daily 00:00-24:00"], working_days=[])
            block["holidays"] = around if hours == "closed" else []
    for block_name, keys in (blocks or {}).items():
        block = config["block"][block_name]
        assert set(keys) <= set(block), f"{name}: {block_name} lacks {set(keys) - set(block)}"
        block.update(keys)
    path = tmp / f"{name}.toml"
    path.write_text(toml_text(config))
    return path, config


@pytest.fixture
def example(tmp_path):
    started: list[ExampleSwitch] = []

    def start(name: str, hours: str = "open", **blocks: dict) -> ExampleSwitch:
        path, config = example_copy(tmp_path, name, hours, blocks)
        sw = ExampleSwitch(tmp_path, path, config)
        started.append(sw)
        return sw

    yield start
    for sw in started:
        sw.stop()


@pytest.fixture
def made():
    """Test phones a test makes (`registered` adds them), closed together after it
    (closing one takes about a second). Listed after `example` in a test's arguments,
    they are closed while the switch still runs."""
    phones: list[Phone] = []
    yield phones
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(Phone.close, phones))


def registered(sw: ExampleSwitch, number: str, made: list[Phone]) -> Phone:
    """A test phone registered as the example's extension `number`, with its password."""
    p = Phone(user=number, password=sw.password(number), server=sw.server)
    made.append(p)
    assert p.register() == 200
    return p


# -- what the switch wrote ---------------------------------------------------------------
def queue_log(sw: RunningSwitch, kind: str | None = None, **where: str) -> list[dict]:
    with sw.db() as conn:
        rows = [dict(r) for r in conn.execute("SELECT * FROM queue_log ORDER BY id")]
    return [
        r
        for r in rows
        if (kind is None or r["kind"] == kind) and all(r[k] == v for k, v in where.items())
    ]


def wait_rows(
    sw: RunningSwitch, kind: str, count: int = 1, timeout: float = 15.0, **where: str
) -> list[dict]:
    assert wait_until(lambda: len(queue_log(sw, kind, **where)) >= count, timeout), (
        f"no {count} {kind} row(s) {where}: {queue_log(sw)}"
    )
    return queue_log(sw, kind, **where)


def logged_in(sw: RunningSwitch, agent: str) -> bool:
    rows = [r["kind"] for r in queue_log(sw, agent=agent) if r["kind"] in ("login", "logout")]
    return bool(rows) and rows[-1] == "login"


def voicemails(sw: RunningSwitch) -> list[dict]:
    with sw.db() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM voicemail ORDER BY id")]


def heard(phone: Phone, call: str, path: Path, seconds: float = 1.5) -> float:
    """The dominant frequency of what `phone` receives on `call` for `seconds`."""
    phone.start_recording(call, str(path))
    time.sleep(seconds)  # the length of the recording
    phone.stop_recording(call)
    return dominant_frequency(str(path), skip_seconds=0.2)


def talk(caller: Phone, call: str, callee: Phone, inbound: str, tmp: Path) -> None:
    """The two are connected: each hears the other's tone."""
    callee.wait_state(inbound, "confirmed")
    caller.play_tone(call, CALLER_TONE)
    callee.play_tone(inbound, OPERATOR_TONE)
    assert abs(heard(caller, call, tmp / f"heard-by-{caller.user}.wav") - OPERATOR_TONE) < 20
    assert abs(heard(callee, inbound, tmp / f"heard-by-{callee.user}.wav") - CALLER_TONE) < 20


def feature_code(phone: Phone, code: str) -> None:
    """Dial a feature code; the switch answers, confirms by voice and hangs up."""
    call = phone.call(code)
    phone.wait_state(call, "confirmed")
    phone.wait_state(call, "disconnected", timeout=15)


# -- configuration 1: the shop -----------------------------------------------------------
SHOP_CUSTOMER, SHOP_SUPPORT = "106", "104"


def test_shop_open_press_1_rings_every_free_manager_and_one_takes_the_call(tmp_path, example, made):
    sw = example("shop", hours="open")
    anna, boris, vera = (registered(sw, n, made) for n in ("101", "102", "103"))
    assert sw.config_data["block"]["managers"]["members"] == ["101", "102", "103"]
    assert wait_until(lambda: all(logged_in(sw, n) for n in ("101", "102", "103")))
    # Vera is on the phone with support when the customer calls
    support = registered(sw, SHOP_SUPPORT, made)
    support.auto_answer(200)
    direct = vera.call(SHOP_SUPPORT)
    vera.wait_state(direct, "confirmed")
    customer = registered(sw, SHOP_CUSTOMER, made)
    call = customer.call("100")
    customer.wait_state(call, "confirmed")  # the greeting answers
    customer.send_dtmf(call, "1")  # sales
    ring_anna, ring_boris = anna.wait_incoming(20), boris.wait_incoming(20)
    assert "106" in anna.info(ring_anna)["from"]  # the managers see who is calling
    assert not vera.incoming  # busy: not rung
    # Vera finishes her call while the others still ring: she is rung at once too
    vera.hangup(direct)
    ring_vera = vera.wait_incoming(15)
    assert anna.state(ring_anna) != "disconnected" and boris.state(ring_boris) != "disconnected"
    vera.answer(ring_vera)
    for phone, ring in ((anna, ring_anna), (boris, ring_boris)):
        phone.wait_state(ring, "disconnected")  # the others stop ringing
        assert phone.last_code(ring) == 487
    talk(customer, call, vera, ring_vera, tmp_path)
    customer.hangup(call)
    vera.wait_state(ring_vera, "disconnected")
    (done,) = wait_rows(sw, "completed")
    assert (done["queue"], done["agent"], done["number"]) == ("managers", "103", "106")
    rings = {r["agent"]: r for r in queue_log(sw, "ring", queue="managers")}
    assert rings["103"]["result"] == "answered"
    for agent in ("101", "102"):
        assert (rings[agent]["result"], rings[agent]["reason"]) == (
            "cancelled",
            "answered-elsewhere",
        )
    # Vera was added to the ringing fork after the others had started ringing
    assert rings["103"]["ring_start"] > max(rings[a]["ring_start"] for a in ("101", "102"))


def test_shop_closed_the_answering_machine_records_the_customer(tmp_path, example, made):
    # a 5 s message at most (the example allows 120 s): the caller's tone never stops,
    # so the recording ends at max_seconds
    sw = example("shop", hours="closed", **{"answering-machine": {"max_seconds": 5}})
    manager = registered(sw, "101", made)
    customer = registered(sw, SHOP_CUSTOMER, made)
    call = customer.call("100")
    customer.wait_state(call, "confirmed")
    customer.send_dtmf(call, "1")  # sales, but it is after hours
    customer.play_tone(call, CALLER_TONE)  # the message, said all along
    # greeting, menu, "we are closed", "leave a message", beep, 5 s, "goodbye"
    customer.wait_state(call, "disconnected", timeout=60)
    (rec,) = sw.wait_for_call_closed(1)
    assert (rec["caller"], rec["callee"], rec["result"]) == ("106", "100", "voicemail")
    (msg,) = voicemails(sw)
    assert (msg["box"], msg["caller"], msg["call_id"]) == ("shop", "106", rec["id"])
    assert abs(dominant_frequency(str(sw.data_dir / msg["path"]), 0.2) - CALLER_TONE) < 20
    assert not manager.incoming  # nobody was rung after hours
    assert not queue_log(sw, "joined")


# -- configuration 2: personal managers ---------------------------------------------------
CLIENT, MANAGER, OTHER_MANAGER = "301", "201", "202"


def test_personal_managers_extension_dialled_at_the_menu_rings_that_manager(
    tmp_path, example, made
):
    sw = example("personal-managers", hours="open")
    secretaries = [registered(sw, n, made) for n in ("101", "102")]
    manager = registered(sw, MANAGER, made)
    other = registered(sw, OTHER_MANAGER, made)
    client = registered(sw, CLIENT, made)
    call = client.call("100")
    client.wait_state(call, "confirmed")  # the greeting answers
    client.send_dtmf(call, MANAGER)  # during "please dial the extension number"
    inbound = manager.wait_incoming(20)
    assert "301" in manager.info(inbound)["from"]
    manager.answer(inbound)
    talk(client, call, manager, inbound, tmp_path)
    client.hangup(call)
    manager.wait_state(inbound, "disconnected")
    (rec,) = sw.wait_for_call_closed(1)
    assert (rec["caller"], rec["callee"], rec["result"]) == ("301", "100", "answered")
    legs = sw.legs(rec["id"])
    assert [(g["party"], g["result"]) for g in legs if g["role"] == "callee"] == [
        (MANAGER, "answered")
    ]
    assert not any(s.incoming for s in secretaries)  # the secretaries were bypassed
    assert not other.incoming
    assert not queue_log(sw, "joined")


def test_personal_managers_no_digit_reaches_the_secretaries(tmp_path, example, made):
    sw = example("personal-managers", hours="open")
    anna, boris = (registered(sw, n, made) for n in ("101", "102"))
    manager = registered(sw, MANAGER, made)
    assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
    client = registered(sw, CLIENT, made)
    call = client.call("100")
    client.wait_state(call, "confirmed")
    # the client dials nothing: after the menu's timeout, both secretaries ring
    ring_anna, ring_boris = anna.wait_incoming(30), boris.wait_incoming(30)
    boris.answer(ring_boris)
    anna.wait_state(ring_anna, "disconnected")
    assert anna.last_code(ring_anna) == 487
    talk(client, call, boris, ring_boris, tmp_path)
    boris.hangup(ring_boris)  # the secretary ends the conversation: the call ends
    client.wait_state(call, "disconnected")
    (done,) = wait_rows(sw, "completed")
    assert (done["queue"], done["agent"], done["result"]) == ("secretaries", "102", "agent")
    assert not manager.incoming


# -- configuration 3: the call centre --------------------------------------------------------
CUSTOMER_1, CUSTOMER_2 = "105", "106"
ANSWER_TIMEOUT = 4  # the example: 15 s


def test_call_centre_round_robin_missed_ring_and_wrap_up(tmp_path, example, made):
    sw = example("call-centre", hotline={"answer_timeout": ANSWER_TIMEOUT})
    hotline = sw.config_data["block"]["hotline"]
    assert (hotline["strategy"], hotline["wrap_up"]) == ("round-robin", 7)
    a, b = registered(sw, "101", made), registered(sw, "102", made)  # first in turn: 101
    assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
    first, second = registered(sw, CUSTOMER_1, made), registered(sw, CUSTOMER_2, made)

    call1 = first.call("100")
    ring_a = a.wait_incoming(15)  # only A rings
    assert not b.incoming
    # A does not pick up within the answer time: the ring stops and B rings instead
    a.wait_state(ring_a, "disconnected", timeout=ANSWER_TIMEOUT + 10)
    ring_b = b.wait_incoming(10)
    b.answer(ring_b)
    talk(first, call1, b, ring_b, tmp_path)
    (missed,) = wait_rows(sw, "ring", agent="101")
    assert (missed["queue"], missed["result"], missed["number"]) == ("hotline", "missed", "105")
    assert wait_rows(sw, "ring", agent="102")[0]["result"] == "answered"

    # A closes the softphone: logged out. A second customer calls while B talks, and
    # waits: nobody is free.
    assert a.unregister() == 200
    (out,) = wait_rows(sw, "logout", agent="101")
    assert out["reason"] == "unregistered"
    call2 = second.call("100")
    second.wait_state(call2, "confirmed")
    wait_rows(sw, "joined", number=CUSTOMER_2)
    assert not b.incoming

    # B finishes the first call: 7 s of wrap-up before the waiting customer rings B
    b.hangup(ring_b)
    first.wait_state(call1, "disconnected")
    (rest,) = wait_rows(sw, "wrap_up_start", agent="102")
    assert (rest["queue"], rest["duration"]) == ("hotline", 7)
    ring_b2 = b.wait_incoming(20)
    (rested,) = queue_log(sw, "wrap_up_end", agent="102")
    assert rested["reason"] == "done"
    b.answer(ring_b2)
    b.wait_state(ring_b2, "confirmed")
    second.hangup(call2)
    b.wait_state(ring_b2, "disconnected")
    caller2 = queue_log(sw, "joined", number=CUSTOMER_2)[0]["caller"]
    (ring2,) = wait_rows(sw, "ring", caller=caller2)
    assert (ring2["agent"], ring2["result"]) == ("102", "answered")
    assert ring2["ring_start"] >= rested["time"]  # rung only once the wrap-up was over
    assert not a.incoming


def test_call_centre_operator_logs_out_and_in_with_the_feature_code(tmp_path, example, made):
    sw = example("call-centre", hotline={"answer_timeout": ANSWER_TIMEOUT})
    assert sw.config_data["features"]["queue_login"] == "*45"
    a, b = registered(sw, "101", made), registered(sw, "102", made)
    assert wait_until(lambda: logged_in(sw, "101") and logged_in(sw, "102"))
    customer = registered(sw, CUSTOMER_1, made)

    feature_code(a, "*45")  # A finishes work (the phone stays registered)
    (out,) = wait_rows(sw, "logout", agent="101")
    assert out["reason"] == "feature-code"
    assert not logged_in(sw, "101")
    call = customer.call("100")
    ring_b = b.wait_incoming(15)  # A's turn, but A is logged out: B rings
    customer.hangup(call)
    b.wait_state(ring_b, "disconnected")
    wait_rows(sw, "abandoned")
    assert not a.incoming

    feature_code(a, "*45")  # back at work
    (back,) = wait_rows(sw, "login", agent="101", reason="feature-code")
    assert logged_in(sw, "101")
    call = customer.call("100")
    ring_a = a.wait_incoming(15)  # round robin: after B, A's turn again
    a.answer(ring_a)
    a.wait_state(ring_a, "confirmed")
    customer.hangup(call)
    a.wait_state(ring_a, "disconnected")
    (done,) = wait_rows(sw, "completed")
    assert done["agent"] == "101"
