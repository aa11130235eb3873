"""Benchmark 3: calls per second.

SIPp A (uac_call.xml: INVITE, 407, authenticated INVITE, 200, ACK, hold HOLD_MS, BYE)
calls SIPp B (uas_answer.xml, registered from its own port first), which answers at
once. No RTP is sent by the phones (the media workers still set up and stream RTP
to B's and A's bound ports). The offered rate rises step by step (each step bounded by
a call count and a timeout) until a step has failures; reports the highest rate with 0
failures, the setup time (INVITE with credentials -> 200) and the switch's CPU."""

from __future__ import annotations

import re
import time

from bench.common import (
    DOMAIN,
    CpuMeter,
    Sipp,
    Switch,
    extensions,
    free_port,
    password,
    rate_args,
    register,
    table,
    workdir,
)

RATES = (10, 20, 40, 60, 80, 100, 120, 150)
STEP_SECONDS = 8
HOLD_MS = 1000
MAX_WORKERS = 90


def run() -> dict:
    rows = []
    notes: list[str] = []
    with workdir("cps") as tmp:
        a, b = extensions(2)
        sw = Switch(tmp, [a, b], workers=MAX_WORKERS, max_workers=MAX_WORKERS)
        sw.start()
        try:
            b_port = free_port()
            register(sw, [b], b_port, tmp)
            users = tmp / "callers.csv"
            users.write_text(
                f"SEQUENTIAL\n{a};{DOMAIN};[authentication username={a} "
                f"password={password(a)}];{b}\n"
            )
            uas = Sipp(
                "uas_answer.xml",
                None,
                port=b_port,
                workdir=tmp,
                name="uas",
                args=["-set", "rtp", "0"],
            )
            time.sleep(0.5)
            cpu = CpuMeter(sw.all_pids)
            for rate in RATES:
                total = rate * STEP_SECONDS
                before = sw.query("SELECT COUNT(*) AS n FROM calls")[0]["n"]
                cpu.start()
                uac = Sipp(
                    "uac_call.xml",
                    f"127.0.0.1:{sw.port}",
                    port=free_port(),
                    workdir=tmp,
                    name=f"uac-{rate}",
                    args=[
                        *rate_args(users, rate, total),
                        "-d",
                        str(HOLD_MS),
                        "-set",
                        "rtp",
                        "0",
                        "-timeout",
                        f"{STEP_SECONDS * 3 + 20}s",
                        "-trace_rtt",
                        "-rtt_freq",
                        "1",
                    ],
                )
                res = uac.wait(STEP_SECONDS * 3 + 30)
                pct, _ = cpu.stop()
                time.sleep(2)  # let the last hangups land in the store
                recs = sw.query(
                    "SELECT result, COUNT(*) AS n FROM calls WHERE rowid > ? GROUP BY result",
                    (before,),
                )
                ok = int(res.num("SuccessfulCall(C)"))
                failed = int(res.num("FailedCall(C)")) + max(
                    0, total - ok - int(res.num("FailedCall(C)"))
                )
                setup = rtt_ms(tmp, uac)
                rows.append(
                    [
                        rate,
                        total,
                        ok,
                        failed,
                        setup[0],
                        setup[1],
                        round(pct),
                        ", ".join(f"{r['result']}={r['n']}" for r in recs),
                    ]
                )
                if failed or ok < total:
                    notes += [f"at {rate} cps: {e}" for e in sipp_aborts(tmp, uac)]
                    notes += [
                        f"switch log: {ln}" for ln in sw.log_grep(" WARNING ", " ERROR ")[-6:]
                    ]
                    toomany = sum(
                        f.read_text(errors="replace").count("Error making call")
                        for f in (sw.data_dir / "logs").glob("worker-*.log")
                    )
                    if toomany:
                        notes.append(
                            f"media worker logs: {toomany} x 'Error making call' "
                            "(pjsua_call_make_call PJ_ETOOMANY: B's leg not placed)"
                        )
                    for c in sw.query(
                        "SELECT id, result, cause, sip_code, ended FROM calls "
                        "WHERE rowid > ? AND (result IS NULL OR result != "
                        "'answered') LIMIT 4",
                        (before,),
                    ):
                        notes.append(
                            f"call record {c['id']}: result={c['result']} "
                            f"cause={c['cause']} sip_code={c['sip_code']}"
                        )
                    break
                time.sleep(2)
            uas.stop()
        finally:
            sw.stop()
    best = max((r[0] for r in rows if r[3] == 0), default=0)
    print(
        table(
            f"3. Calls per second: A calls B, B answers, A hangs up after {HOLD_MS} ms; "
            f"{STEP_SECONDS} s per step; {MAX_WORKERS} media workers",
            [
                "offered cps",
                "calls",
                "ok",
                "failed",
                "setup p50 ms",
                "setup p99 ms",
                "switch CPU %",
                "call records",
            ],
            rows,
        )
    )
    print(
        f"highest rate with 0 failures: {best} calls/s"
        + ("" if rows and rows[-1][3] else " (the ramp ended before any failure)")
    )
    for n in notes:
        print("  ", n)
    return {"max_cps": best, "rows": rows}


def sipp_aborts(tmp, uac: Sipp, limit: int = 4) -> list[str]:
    """Why SIPp failed calls: its 'Aborting call ...' lines with the message it got."""
    path = tmp / f"{uac.name}.errors.log"
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    out = []
    for m in re.finditer(
        r"(Aborting call[^\n]*|while expecting[^\n]*|Call-Id[^\n]*timed[^\n]*)"
        r"(?:\n(?:received )?'?(SIP/2.0[^\n]*|[A-Z]+ sip:[^\n]*))?",
        text,
    ):
        out.append(" ".join(x for x in m.groups() if x)[:240])
        if len(out) >= limit:
            break
    reasons = re.findall(r"SIP/2.0 \d{3}[^\n']*", text)
    if reasons:
        from collections import Counter

        out.append(
            "responses in SIPp's error log: "
            + ", ".join(f"{r.strip()} x{n}" for r, n in Counter(reasons).most_common(4))
        )
    return out or [ln for ln in text.splitlines() if ln.strip()][-limit:]


def rtt_ms(tmp, uac: Sipp) -> tuple[float, float]:
    """p50/p99 of SIPp's "setup" response time (first INVITE -> 200, so it includes
    the 407 round trip), in ms (SIPp measures whole milliseconds)."""
    from bench.common import percentile

    values = []
    for path in tmp.glob("uac_call_*_rtt.csv"):
        if str(uac.pid) not in path.name:
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    pass
    return (round(percentile(values, 50), 1), round(percentile(values, 99), 1))


if __name__ == "__main__":
    run()
