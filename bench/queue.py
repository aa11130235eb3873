"""Benchmark: the call-centre queue (`[block.q] type = "queue"` behind main number 100).

Both parts use bench/queue_ua.py: one Python process (one selector loop, one clock)
plays the callers (extension 1000 dialling 100: INVITE, 407, INVITE with credentials,
200, ACK; then RTP both ways) and the operators (extensions 2000..., registered with
digest from their own socket; they answer at once or only ring).

1. Queue -> INVITE latency. 5 operators logged in (registered), ring-all; operator 2000
   answers at once (200 + SDP), the other 4 only ring (180) and get CANCELled. CALLS
   sequential calls, each: the caller dials 100, the queue answers it (200 OK; after the
   caller's ACK the flow starts the music and the caller joins the queue), the operators
   are rung; 2000 answers; the caller hangs up; the next call starts once every operator
   is free again. Per call:

     t_ok    the caller reads the switch's 200 OK (monotonic)
     t_join  the switch's queue_log `joined` row of this call (`time`: the switch's
             time.time() when the caller entered the ACD)
     t_inv   the first operator phone reads the queue leg's INVITE (monotonic and
             time.time(), read the moment select() wakes)

   reported: t_inv - t_join (entering the queue -> INVITE at a free operator; two
   processes' time.time() on one host) and t_inv - t_ok (one clock; includes the caller's
   ACK reaching the switch), plus the last of the 5 INVITEs (the fork's fan-out).

2. 100 callers waiting with hold music. A switch with 51 warm workers (2 calls each)
   and a 20000-port RTP range; round-robin, answer_timeout = 0 (ring until answered).
   100 callers dial in at 25/s with nobody logged in, so each waits with music
   (one leg: the caller's); held HOLD s (phase A). Then 100 operators register at once
   and only ring: each caller's queue opens its leg toward the operators (two legs per
   caller) and rings one operator; held HOLD s again (phase B). Then every caller hangs
   up. Per phase: the callers' RTP (packets received vs 50/s expected, loss from
   sequence numbers), the switch's worker count and how many carry the callers, CPU of
   the switch (coordinator + workers, /proc) over the hold, RSS. Also: operator logs in
   (REGISTER's 200 at the phone) -> that phone's INVITE, for 100 logging in at once."""

from __future__ import annotations

import os
import time

from bench.common import (
    DOMAIN,
    CpuMeter,
    Switch,
    extensions,
    password,
    percentile,
    rss_bytes,
    table,
    udp_rcvbuf_errors,
    workdir,
)
from bench.queue_ua import QueueUA
from bench.ua import Leg

CALLS = 200
WARMUP = 5
LATENCY_OPERATORS = 5
LATENCY_BUDGET = 150.0  # seconds for all the sequential calls
TARGET_P99_MS = 20.0
WAITING = 100
SETUP_RATE = 25.0
HOLD = 20.0
MAIN = "100"
CALLER = "1000"


def queue_block(members: list[str], **options: object) -> str:
    lines = [
        "",
        "[block.q]",
        'type = "queue"',
        "members = [" + ", ".join(f'"{m}"' for m in members) + "]",
        'music = "default"',
    ]
    for key, value in options.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def queue_switch(tmp, operators: list[str], block: str, **switch: object) -> Switch:
    tmp.mkdir(exist_ok=True)
    sw = Switch(
        tmp,
        [CALLER, *operators],
        entry='"q"',
        entry_number=f'"{MAIN}"',
        ring_timeout=300,
        **switch,
    )
    sw.config.write_text(sw.config.read_text() + block)
    return sw


def new_ua(sw: Switch, operators: list[str]) -> QueueUA:
    return QueueUA(
        ("127.0.0.1", sw.port),
        DOMAIN,
        (CALLER, password(CALLER)),
        MAIN,
        {n: password(n) for n in operators},
    )


def wait(ua: QueueUA, cond, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        ua.poll(step)
    return True


# -- part 1 ------------------------------------------------------------------------------
def latency(tmp) -> dict:
    ops = extensions(LATENCY_OPERATORS, 2000)
    sw = queue_switch(
        tmp / "latency", ops, queue_block(ops, strategy="ring-all"), workers=2, max_workers=4
    )
    samples: list[dict] = []
    failures: list[str] = []
    sw.start()
    ua: QueueUA | None = None
    try:
        ua = new_ua(sw, ops)
        ua.answering = {ops[0]}
        t_start = time.monotonic()
        ua.register_operators(ops)
        if ua.register_errors:
            raise RuntimeError("; ".join(ua.register_errors))
        ua.poll(1.0)  # logins reach the ACD
        for i in range(WARMUP + CALLS):
            if time.monotonic() - t_start > LATENCY_BUDGET:
                failures.append(f"time budget ({LATENCY_BUDGET:.0f} s) used up after {i} calls")
                break
            err = one_call(ua, i, samples if i >= WARMUP else None)
            if err:
                failures.append(f"call {i}: {err}")
                if len(failures) > 10:
                    break
                ua.poll(1.0)
        wall = time.monotonic() - t_start
        rows = sw.query(
            "SELECT l.sip_call_id AS sip, q.time AS t FROM queue_log q "
            "JOIN legs l ON l.call_id = q.caller AND l.role = 'caller' WHERE q.kind = 'joined'"
        )
        kinds = sw.query("SELECT kind, result, COUNT(*) AS n FROM queue_log GROUP BY kind, result")
    finally:
        if ua is not None:
            ua.close()
        sw.stop()
        errors = sw.log_grep(" ERROR ", " WARNING ", "Traceback")
    joined = {r["sip"]: r["t"] for r in rows}
    ok_inv = [(s["inv_mono"] - s["ok_mono"]) * 1000 for s in samples]
    join_inv = [(s["inv_wall"] - joined[s["sip"]]) * 1000 for s in samples if s["sip"] in joined]
    join_last = [(s["last_wall"] - joined[s["sip"]]) * 1000 for s in samples if s["sip"] in joined]
    invite_ok = [s["auth_ok"] * 1000 for s in samples]
    lines = [
        ("queue joined -> 1st INVITE at an operator", join_inv),
        ("queue joined -> last (5th) INVITE", join_last),
        ("caller's 200 OK -> 1st INVITE at an operator", ok_inv),
        ("(caller's auth. INVITE -> its 200 OK)", invite_ok),
    ]
    print(
        table(
            f"queue 1. Queue -> operator INVITE over {len(samples)} sequential calls (ms; "
            f"ring-all, {LATENCY_OPERATORS} free operators, 1 answers; {WARMUP} warm-up "
            f"calls not counted)",
            ["interval", "calls", "p50", "p95", "p99", "max"],
            [
                [
                    name,
                    len(v),
                    percentile(v, 50),
                    percentile(v, 95),
                    percentile(v, 99),
                    max(v, default=float("nan")),
                ]
                for name, v in lines
            ],
        )
    )
    print(
        "queue_log: "
        + ", ".join(
            f"{k['kind']}{'/' + k['result'] if k['result'] else ''}={k['n']}" for k in kinds
        )
    )
    p99 = percentile(join_inv, 99)
    print(
        f"failures: {len(failures)}; {len(samples)} calls in {wall:.0f} s; p99 joined -> "
        f"INVITE {p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms: "
        f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'})"
    )
    if len(join_inv) != len(samples):
        print(f"  ({len(samples) - len(join_inv)} call(s) without a joined row)")
    for f in failures[:5]:
        print("  ", f)
    for e in errors[-5:]:
        print("   switch log:", e)
    return {
        "p50": percentile(join_inv, 50),
        "p99": p99,
        "ok_p99": percentile(ok_inv, 99),
        "calls": len(samples),
        "failures": len(failures),
    }


def one_call(ua: QueueUA, i: int, samples: list[dict] | None) -> str:
    """One call through the queue; appends its timestamps to `samples`. '' or an error."""
    ua.invites.clear()
    leg = ua.call()
    sent = leg.invite_sent
    ok = wait(
        ua,
        lambda: (
            leg.state == "failed"
            or (leg.state == "up" and any(oc.state == "up" for oc in ua.invites))
        ),
        5.0,
    )
    err = ""
    if leg.state == "failed":
        err = f"caller got {leg.error}"
    elif not ok:
        err = f"no answered operator within 5 s (caller {leg.state}, {len(ua.invites)} INVITEs)"
    if leg.state == "up":
        ua.hangup(leg)
    wait(ua, lambda: leg.state != "bye", 5.0)
    if (
        not wait(ua, lambda: all(oc.state in ("cancelled", "done") for oc in ua.invites), 5.0)
        and not err
    ):
        err = "an operator's call did not end within 5 s: " + ", ".join(
            f"{oc.number}={oc.state}" for oc in ua.invites
        )
    ua._close_stream(leg)
    ua.legs.pop(("a", leg.call_id), None)
    ua.forget_op_calls()
    ua.poll(0.03)  # the edge ACKs the 487s; the operators are free
    if not err and samples is not None and ua.invites:
        first = min(ua.invites, key=lambda oc: oc.t_mono)
        last = max(ua.invites, key=lambda oc: oc.t_mono)
        samples.append(
            {
                "sip": leg.call_id,
                "ok_mono": leg.answered,
                "inv_mono": first.t_mono,
                "inv_wall": first.t_wall,
                "last_wall": last.t_wall,
                "auth_ok": leg.answered - sent,
                "n": len(ua.invites),
            }
        )
    return err


# -- part 2 ------------------------------------------------------------------------------
def snapshot(legs: list[Leg]) -> list[tuple[int, int]]:
    return [(leg.stream.rx, leg.stream.last_ext) for leg in legs]


def rtp_window(before, after, seconds: float) -> dict:
    """Callers' RTP between two snapshots: received, expected (50/s), lost (sequence
    gaps), callers that got nothing."""
    rx = lost = silent = 0
    for (rx0, ext0), (rx1, ext1) in zip(before, after, strict=True):
        d_rx = rx1 - rx0
        rx += d_rx
        lost += max(0, (ext1 - ext0) - d_rx)
        silent += d_rx == 0
    expected = round(len(before) * seconds / 0.020)
    return {"rx": rx, "expected": expected, "lost": lost, "silent": silent}


def measure(sw: Switch, ua: QueueUA, legs: list[Leg], hold: float, base_rss: int) -> dict:
    drops0 = udp_rcvbuf_errors()
    cpu = CpuMeter(sw.all_pids)
    me = CpuMeter(lambda: [os.getpid()])
    before = snapshot(legs)
    cpu.start()
    me.start()
    ua.poll(hold / 2)
    pids = sw.all_pids()
    rss = sum(rss_bytes(p) for p in pids)
    ua.poll(hold / 2)
    switch_cpu, wall = cpu.stop()
    phones_cpu, _ = me.stop()
    after = snapshot(legs)
    open_legs = sw.query(
        "SELECT role, COUNT(*) AS n, COUNT(DISTINCT worker) AS w FROM legs "
        "WHERE ended IS NULL GROUP BY role"
    )
    by_role = {r["role"]: r for r in open_legs}
    return {
        **rtp_window(before, after, wall),
        "workers": len(pids) - 1,
        "busy_workers": max((r["w"] for r in open_legs), default=0),
        "caller_legs": by_role.get("caller", {}).get("n", 0),
        "queue_legs": by_role.get("callee", {}).get("n", 0),
        "cpu": switch_cpu,
        "phones_cpu": phones_cpu,
        "rss": rss,
        "rss_growth": rss - base_rss,
        "drops": udp_rcvbuf_errors() - drops0,
    }


def waiting(tmp, count: int = WAITING, hold: float = HOLD) -> dict:
    workers = count // 2 + 1
    ops = extensions(count, 2000)
    sw = queue_switch(
        tmp / "waiting",
        ops,
        queue_block(ops, strategy="round-robin", answer_timeout=0),
        workers=workers,
        max_workers=workers,
        rtp_ports='"20000-39999"',
    )
    notes: list[str] = []
    phases: dict[str, dict] = {}
    login_inv: list[float] = []
    t0 = time.time()
    sw.start(timeout=180)
    ua: QueueUA | None = None
    try:
        ua = new_ua(sw, ops)
        ua.poll(1.0)
        base_rss = sum(rss_bytes(p) for p in sw.all_pids())
        legs = []
        ramp0 = time.monotonic()
        for _ in range(count):
            legs.append(ua.call())
            ua.poll(1.0 / SETUP_RATE)
        wait(ua, lambda: all(leg.state not in ("auth", "inviting") for leg in legs), 20.0, 0.05)
        ramp = time.monotonic() - ramp0
        up = [leg for leg in legs if leg.state == "up"]
        failed = [leg for leg in legs if leg.state != "up"]
        codes: dict[str, int] = {}
        for leg in failed:
            codes[leg.error or leg.state] = codes.get(leg.error or leg.state, 0) + 1
        if failed:
            notes.append(f"{len(failed)} of {count} callers not answered: {codes}")
        ua.poll(2.0)  # music running on the last callers
        phases["A"] = measure(sw, ua, up, hold, base_rss)
        phases["A"]["up"] = len(up)
        phases["A"]["ramp"] = ramp
        # phase B: every operator logs in; each caller's queue opens its leg and rings one
        reg0 = time.monotonic()
        ua.register_operators(ops)
        notes += ua.register_errors
        got = wait(ua, lambda: len(ua.invites) >= len(up), 20.0, 0.05)
        ring_all = time.monotonic() - reg0
        if not got:
            notes.append(f"phase B: only {len(ua.invites)} operator INVITEs for {len(up)} callers")
        for oc in ua.invites:
            if oc.number in ua.registered_at:
                login_inv.append((oc.t_mono - ua.registered_at[oc.number]) * 1000)
        ua.poll(1.0)
        phases["B"] = measure(sw, ua, up, hold, base_rss)
        phases["B"]["up"] = len(up) - sum(1 for leg in up if leg.state != "up")
        phases["B"]["ramp"] = ring_all
        phases["B"]["invites"] = len(ua.invites)
        phases["B"]["ringing"] = sum(1 for oc in ua.op_calls.values() if oc.state == "ringing")
        dropped = [leg for leg in up if leg.state != "up"]
        if dropped:
            notes.append(f"{len(dropped)} caller(s) hung up by the switch during the hold")
        for leg in up:
            ua.hangup(leg)
        wait(ua, lambda: all(leg.state != "bye" for leg in up), 15.0, 0.05)
        wait(ua, lambda: all(oc.state != "ringing" for oc in ua.op_calls.values()), 10.0, 0.05)
        still = sum(1 for oc in ua.op_calls.values() if oc.state == "ringing")
        if still:
            notes.append(f"{still} operator phone(s) still ringing 10 s after the callers left")
        ua.poll(1.0)
        for leg in legs:
            ua._close_stream(leg)
        caller_legs = wait_rows(sw, t0, len(up))
        qlog = sw.query(
            "SELECT kind, COUNT(*) AS n FROM queue_log WHERE kind IN "
            "('joined', 'abandoned', 'ring', 'connected') GROUP BY kind"
        )
    finally:
        if ua is not None:
            ua.close()
        sw.stop()
        errors = sw.log_grep(" ERROR ", " WARNING ", "Traceback", " 503", "capacity", "died")
    sw_rx = sum(r["rx_packets"] or 0 for r in caller_legs)
    sw_lost = sum(r["rx_lost"] or 0 for r in caller_legs)
    rows = []
    for name, p in (("A: nobody logged in", phases.get("A")), ("B", phases.get("B"))):
        if p is None:
            continue
        label = name if name.startswith("A") else f"B: {p.get('invites', 0)} operators ringing"
        rows.append(
            [
                label,
                p["up"],
                f"{p['caller_legs']}+{p['queue_legs']}",
                f"{p['workers']}/{p['busy_workers']}",
                p["rx"],
                p["expected"],
                p["lost"],
                p["silent"],
                p["drops"],
                round(p["cpu"]),
                round(p["phones_cpu"]),
                round(p["rss"] / 1e6),
                round(p["rss_growth"] / 1e6 / max(1, p["up"]), 2),
            ]
        )
    print(
        table(
            f"queue 2. {count} callers waiting with hold music, held {hold:.0f} s per phase "
            f"({workers} warm workers, round-robin, ring until answered)",
            [
                "phase",
                "callers up",
                "open legs caller+queue",
                "workers all/busy",
                "callers rx pkts",
                "expected",
                "lost (seq)",
                "silent callers",
                "udp drops",
                "switch CPU %",
                "phones CPU %",
                "switch RSS MB",
                "RSS growth/caller MB",
            ],
            rows,
        )
    )
    if "A" in phases:
        print(f"{count} callers set up at {SETUP_RATE:.0f}/s in {phases['A']['ramp']:.1f} s")
    if login_inv:
        print(
            f"{len(login_inv)} operators logging in at once: REGISTER 200 -> INVITE at that "
            f"phone p50 {percentile(login_inv, 50):.1f} ms, p99 {percentile(login_inv, 99):.1f}"
            f" ms, max {max(login_inv):.1f} ms (all ringing {phases['B']['ramp']:.1f} s after "
            "the first REGISTER)"
        )
    print(
        f"switch legs table (worker RTP stats at hangup) for the callers' legs: "
        f"{len(caller_legs)} rows, rx {sw_rx} packets, rx_lost {sw_lost}"
    )
    print("queue_log: " + ", ".join(f"{r['kind']}={r['n']}" for r in qlog))
    print(
        "open legs / busy workers from the legs table (ended IS NULL); CPU % is of one core "
        "over the hold; RSS = coordinator + workers; lost = gaps in the RTP sequence "
        "numbers each caller received; expected = 50 packets/s per caller"
    )
    for n in notes + [f"switch log: {e}" for e in errors[-8:]]:
        print("  ", n)
    return {"phases": phases, "notes": notes, "count": count}


def wait_rows(sw: Switch, since: float, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = sw.query(
            "SELECT * FROM legs WHERE role = 'caller' AND started >= ? AND ended IS NOT NULL",
            (since,),
        )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def run() -> dict:
    with workdir("queue") as tmp:
        t0 = time.monotonic()
        first = latency(tmp)
        print(f"(part 1: {time.monotonic() - t0:.0f} s)", flush=True)
        t1 = time.monotonic()
        second = waiting(tmp)
        print(f"(part 2: {time.monotonic() - t1:.0f} s)", flush=True)
    summary(first, second)
    return {"latency": first, "waiting": second}


def summary(first: dict, second: dict) -> None:
    met = "met" if first["p99"] <= TARGET_P99_MS else "NOT met"
    rows = [
        [
            f"queue joined -> INVITE at a free operator ({first['calls']} calls)",
            f"p50 {first['p50']:.1f} ms, p99 {first['p99']:.1f} ms",
            f"p99 <= {TARGET_P99_MS:.0f} ms: {met}",
        ],
        [
            "caller's 200 OK -> INVITE at a free operator",
            f"p99 {first['ok_p99']:.1f} ms",
            "",
        ],
    ]
    for name, p in sorted(second["phases"].items()):
        legs = "1 leg" if name == "A" else "2 legs"
        rows.append(
            [
                f"{p['up']}/{second['count']} callers on music, phase {name} ({legs} each)",
                f"RTP lost {p['lost']}, rx {p['rx']}/{p['expected']}; "
                f"{p['workers']} workers; CPU {p['cpu']:.0f} %; RSS {p['rss'] / 1e6:.0f} MB",
                "0 loss: " + ("yes" if p["lost"] == 0 and p["silent"] == 0 else "NO"),
            ]
        )
    print(table("queue: summary", ["figure", "measured", "target"], rows))


if __name__ == "__main__":
    run()
