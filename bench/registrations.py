"""Benchmark 1: registrations per second.

SIPp registers 1000 generated extensions with digest auth over UDP (REGISTER, 401,
REGISTER with credentials, 200 = one registration) at rising offered rates. Each step
is bounded by a count (rate x STEP_SECONDS) and a timeout. Reports the achieved rate,
failures, and the CPU of the switch's coordinator process (the registrar is there)."""

from __future__ import annotations

import time

from bench.common import (
    CpuMeter,
    Sipp,
    Switch,
    cpu_seconds,
    extensions,
    rate_args,
    table,
    udp_rcvbuf_errors,
    workdir,
)

RATES = (500, 1000, 2000, 2500, 3000, 4000)
STEP_SECONDS = 4
EXTENSIONS = 1000
TARGET = 2000


def run() -> dict:
    rows = []
    with workdir("register") as tmp:
        sw = Switch(tmp, extensions(EXTENSIONS), workers=1, max_workers=2)
        sw.start()
        try:
            users = sw.users_csv(tmp / "users.csv")
            cpu = CpuMeter(lambda: [sw.pid])
            for rate in RATES:
                total = rate * STEP_SECONDS
                cpu.start()
                drops0 = udp_rcvbuf_errors()
                sipp = Sipp(
                    "register_auth.xml",
                    f"127.0.0.1:{sw.port}",
                    port=0,
                    workdir=tmp,
                    name=f"reg-{rate}",
                    args=[
                        *rate_args(users, rate, total),
                        "-l",
                        str(max(rate, 1000)),
                        "-timeout",
                        f"{STEP_SECONDS * 4 + 10}s",
                        "-max_recv_loops",
                        "10000",
                        "-max_sched_loops",
                        "10000",
                    ],
                )
                sipp_cpu = 0.0
                while sipp.proc.poll() is None:  # SIPp's own CPU, read while it runs
                    sipp_cpu = cpu_seconds(sipp.pid) or sipp_cpu
                    time.sleep(0.2)
                res = sipp.wait(STEP_SECONDS * 4 + 20)
                pct, wall = cpu.stop()
                drops = udp_rcvbuf_errors() - drops0
                ok = int(res.num("SuccessfulCall(C)"))
                failed = int(res.num("FailedCall(C)"))
                retrans = int(res.num("Retransmissions(C)"))
                # SIPp's own elapsed time (first REGISTER to exit) for the achieved rate
                elapsed = stf_seconds(res.stats.get("ElapsedTime(C)", "")) or wall
                rows.append(
                    [
                        rate,
                        total,
                        ok,
                        failed,
                        retrans,
                        drops,
                        round(elapsed, 2),
                        round(ok / elapsed) if elapsed else 0,
                        round(pct),
                        round(100 * sipp_cpu / elapsed) if elapsed else 0,
                    ]
                )
                time.sleep(1)
            bindings = sw.query("SELECT COUNT(*) AS n FROM bindings")[0]["n"]
            warnings = sw.log_grep(" ERROR ", "Traceback")
        finally:
            sw.stop()
    best = max((r[7] for r in rows if r[3] == 0), default=0)
    clean = max((r[7] for r in rows if r[3] == 0 and r[4] == 0), default=0)
    print(
        table(
            f"1. Registrations/s: SIPp digest REGISTER (401 then 200) over UDP, {EXTENSIONS} "
            f"extensions, {STEP_SECONDS} s per step",
            [
                "offered/s",
                "attempted",
                "ok",
                "failed",
                "retrans",
                "udp drops",
                "seconds",
                "achieved/s",
                "coordinator CPU %",
                "SIPp CPU %",
            ],
            rows,
        )
    )
    print(f"bindings in the store afterwards: {bindings} (expected {EXTENSIONS})")
    print(f"best achieved rate with 0 failures and 0 retransmissions: {clean}/s")
    print(
        f"best achieved rate with 0 failures: {best}/s (target >= {TARGET}/s): "
        f"{'PASS' if best >= TARGET else 'FAIL'}"
    )
    for w in warnings[:5]:
        print("  switch log:", w)
    return {"best_rate": best, "clean_rate": clean, "rows": rows}


def stf_seconds(value: str) -> float:
    """SIPp's ElapsedTime(C) is HH:MM:SS:microseconds."""
    parts = value.strip().split(":")
    if len(parts) != 4:
        return 0.0
    h, m, s, us = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + us / 1e6


if __name__ == "__main__":
    run()
