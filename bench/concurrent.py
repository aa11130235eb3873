"""Benchmark 4: concurrent bridged calls with RTP both ways.

For each level N: bench/ua.py places N calls A -> B (B registered, answers at once),
paced at SETUP_RATE calls/s; every answered leg on both phones streams G.711 u-law RTP
(20 ms) so each bridged call carries RTP in both directions through its media worker.
All N are held HOLD seconds together, then A hangs up all of them. Reported per level:
calls set up / failed, RTP loss seen by the switch (rx_lost / rx_packets of every leg
in the `legs` table, written from the worker's RTP stats at hangup) and by the phones
(sequence-number gaps), the switch's total CPU (coordinator + media workers, from
/proc/<pid>/stat, over the hold) and its RSS per call."""

from __future__ import annotations

import time

from bench.common import (
    DOMAIN,
    CpuMeter,
    Switch,
    extensions,
    password,
    rss_bytes,
    table,
    udp_rcvbuf_errors,
    workdir,
)
from bench.ua import LoadUA

LEVELS = (10, 25, 50, 100, 125)
HOLD = 20.0
SETUP_RATE = 25.0  # new calls per second while a level ramps up
TARGET = 100


def run(levels: tuple[int, ...] = LEVELS, hold: float = HOLD) -> dict:
    workers = (max(levels) + 1) // 2 + 1
    rows = []
    notes: list[str] = []
    with workdir("concurrent") as tmp:
        a, b = extensions(2)
        # every worker warm from the start (starting ~60 takes ~6 s on 2 cores)
        sw = Switch(tmp, [a, b], workers=workers, max_workers=workers, rtp_ports='"20000-39999"')
        sw.start()
        ua = LoadUA(("127.0.0.1", sw.port), DOMAIN, (a, password(a)), (b, password(b)))
        try:
            ua.register_b()
            ua.poll(1.0)
            base_rss = sum(rss_bytes(p) for p in sw.all_pids())
            for level in levels:
                rows.append(run_level(sw, ua, level, hold, base_rss, notes))
                ua.poll(3.0)
        finally:
            ua.close()
            sw.stop()
            errors = sw.log_grep(" ERROR ", "Traceback", "died", "503")
    print(
        table(
            f"4. Concurrent bridged calls, G.711 RTP both ways, held {hold:.0f} s "
            f"({workers} media workers warm, 2 cores)",
            [
                "calls",
                "up",
                "failed",
                "switch legs",
                "legs rx pkts",
                "legs rx lost",
                "phones rx pkts",
                "phones lost",
                "udp drops",
                "switch CPU %",
                "phones CPU %",
                "RSS growth/call MB",
                "RSS total/call MB",
                "switch RSS MB",
            ],
            rows,
        )
    )
    print(
        "legs = the switch's `legs` rows (worker RTP stats at hangup); phones = what both "
        "phones received from the workers; udp drops = host-wide UDP receive-buffer "
        "overflows during the level; CPU % is of one core, over the hold"
    )
    clean = [r[0] for r in rows if r[1] == r[0] and r[2] == 0 and r[5] == 0 and r[7] == 0]
    best = max(clean, default=0)
    print(
        f"highest level with every call up and 0 RTP loss: {best} calls "
        f"(target >= {TARGET}): {'PASS' if best >= TARGET else 'FAIL'}"
    )
    for n in notes + [f"switch log: {e}" for e in errors[-8:]]:
        print("  ", n)
    return {"max_clean": best, "rows": rows}


def run_level(
    sw: Switch, ua: LoadUA, level: int, hold: float, base_rss: int, notes: list[str]
) -> list:
    start = time.time()
    drops0 = udp_rcvbuf_errors()
    ua.legs.clear()
    legs = []
    for _ in range(level):
        legs.append(ua.call())
        ua.poll(1.0 / SETUP_RATE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(leg.state in ("auth", "inviting") for leg in legs):
        ua.poll(0.1)
    up = [leg for leg in legs if leg.state == "up"]
    failed = [leg for leg in legs if leg.state != "up"]
    for leg in failed[:3]:
        notes.append(f"{level} calls: call {leg.call_id} {leg.state}: {leg.error}")
    ua.poll(1.0)  # let RTP settle on the last calls before measuring
    cpu = CpuMeter(sw.all_pids)
    me = CpuMeter(lambda: [__import__("os").getpid()])
    cpu.start()
    me.start()
    ua.poll(hold / 2)
    rss = sum(rss_bytes(p) for p in sw.all_pids())
    ua.poll(hold / 2)
    switch_cpu, _ = cpu.stop()
    phones_cpu, _ = me.stop()
    for leg in up:
        ua.hangup(leg)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(leg.state == "bye" for leg in up):
        ua.poll(0.1)
    ua.poll(1.0)
    # both phones' streams (A's legs and B's legs) of this level
    streams = [leg.stream for leg in ua.legs.values()]
    phones_rx = sum(s.rx for s in streams)
    phones_lost = sum(s.lost for s in streams)
    silent = sum(1 for leg in ua.legs.values() if leg.stream.rx == 0)
    if silent:
        notes.append(f"{level} calls: {silent} phone leg(s) received no RTP at all")
    for leg in list(ua.legs.values()):
        ua._close_stream(leg)
    db_legs = wait_legs(sw, start, 2 * len(up))
    rx = sum(r["rx_packets"] or 0 for r in db_legs)
    lost = sum(r["rx_lost"] or 0 for r in db_legs)
    zero = sum(1 for r in db_legs if not r["rx_packets"])
    if zero:
        notes.append(f"{level} calls: {zero} switch leg(s) recorded rx_packets = 0")
    per_call = (rss - base_rss) / len(up) / 1e6 if up else 0.0
    drops = udp_rcvbuf_errors() - drops0
    return [
        level,
        len(up),
        len(failed),
        len(db_legs),
        rx,
        lost,
        phones_rx,
        phones_lost,
        drops,
        round(switch_cpu),
        round(phones_cpu),
        round(per_call, 1),
        round(rss / 1e6 / level, 1),
        round(rss / 1e6),
    ]


def wait_legs(sw: Switch, since: float, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = sw.query("SELECT * FROM legs WHERE started >= ? AND ended IS NOT NULL", (since,))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


if __name__ == "__main__":
    run()
