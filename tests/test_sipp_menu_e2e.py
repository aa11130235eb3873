"""SIPp walks a call flow's menu with an RFC 2833 digit.

SIPp, as extension 103, calls the main number 100 (a menu: "1" sales -> 101, "2"
support -> 102 and 104), answers the digest challenge, and once the switch has answered
plays /usr/share/sip-tester/dtmf_2833_2.pcap (digit 2, payload type 101) to the media
worker's RTP address from the 200's SDP. A pjsua2 test phone registered as 102 answers;
SIPp hangs up a few seconds later. Scenario: tests/sipp/menu_caller_2833.xml.

The pcap is sent over a raw socket, so SIPp needs CAP_NET_RAW (the test is skipped
without it). Everything stays on 127.0.0.1; ports are free ones chosen at run time; every
wait is bounded (SIPp's own -timeout, a wait on its PID, then a kill of that PID).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.phone import Phone, PhoneError
from tests.switch import EXTENSIONS, RunningSwitch, free_port
from tests.test_flows_e2e import menu_config, start, tones
from tests.test_sipp_e2e import DOMAIN, SIPP, Sipp, SippRun, auth_field, write_csv

DTMF_2 = Path("/usr/share/sip-tester/dtmf_2833_2.pcap")


def can_send_raw() -> bool:
    """SIPp's pcap play opens a raw socket: root or CAP_NET_RAW (bit 13) is needed."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 13))
    except OSError:
        pass
    return False


pytestmark = [
    pytest.mark.skipif(SIPP is None, reason="sipp (sip-tester) is not installed"),
    pytest.mark.skipif(not DTMF_2.exists(), reason=f"{DTMF_2} is missing"),
    pytest.mark.skipif(not can_send_raw(), reason="SIPp's pcap play needs CAP_NET_RAW"),
]


def diagnostics(sw: RunningSwitch, caller: SippRun | None) -> str:
    """SIPp's logs, the switch log and the media workers' logs (tails), for failures."""
    parts = [caller.report()] if caller is not None else []
    for path in [sw.tmp / "switch.log", *sorted((sw.data_dir / "logs").glob("worker-*.log"))]:
        if path.exists():
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


def test_sipp_caller_presses_2_by_rfc2833_and_reaches_support(tmp_path):
    sw = start(tmp_path, menu_config(tones(tmp_path)))
    sipp = Sipp(sw, tmp_path)
    support: Phone | None = None
    caller: SippRun | None = None
    try:
        support = Phone(user="102", password=EXTENSIONS["102"][1], server=sw.server)
        assert support.register() == 200
        support.auto_answer(200, delay=0.3)

        csv = write_csv(tmp_path / "menu-call.csv", [["103", DOMAIN, auth_field("103"), "100"]])
        caller = sipp.start("menu-caller", "menu_caller_2833.xml", free_port(), inf=csv)

        # the digit reached the menu: the switch dials support and 102 rings, answers
        try:
            inbound = support.wait_incoming(timeout=15)
            support.wait_state(inbound, "confirmed")
        except PhoneError as exc:
            pytest.fail(f"102 was not called: {exc}\n{diagnostics(sw, caller)}")
        assert "103" in support.info(inbound)["from"], support.info(inbound)

        rc = caller.wait(45)
        assert rc == 0, f"sipp exited {rc}\n{diagnostics(sw, caller)}"
        # the switch answered on 127.0.0.1 with the offer's telephone-event payload type
        assert caller.log_values("200-payloads=") == ["0 101"], caller.report()
        (media,) = caller.log_values("200-media=")
        assert media.startswith("127.0.0.1:"), media
        # SIPp's BYE ended the caller's leg, and with it the bridged callee's
        support.wait_state(inbound, "disconnected")

        (rec,) = sw.wait_for_call_closed(1)
        got = (rec["kind"], rec["caller"], rec["callee"], rec["result"], rec["cause"])
        assert got == ("flow", "103", "100", "answered", "caller hung up"), rec
        legs = {leg["role"]: leg for leg in sw.legs(rec["id"])}
        assert (legs["caller"]["party"], legs["caller"]["result"]) == ("103", "answered")
        assert (legs["callee"]["party"], legs["callee"]["result"]) == ("102,104", "answered")
        # SIPp sent no audio: what the worker got from the caller is the pcap's 10 packets
        assert legs["caller"]["rx_packets"] == 10, legs["caller"]
    finally:
        sipp.stop_all()
        if support is not None:
            support.close()
        sw.stop()
