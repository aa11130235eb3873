"""`python -m bench` runs every benchmark; `python -m bench NAME [NAME ...]` runs some.

Names: registrations, pdd, cps, concurrent, acd_core, queue. Each (but acd_core, which drives
the ACD core in-process) starts its own switch on free
127.0.0.1 ports with a generated config in a temp dir (BENCH_KEEP=1 keeps the dir:
switch.log, data/logs/worker-*.log, SIPp stats and error logs) and stops every process
it started by PID."""

from __future__ import annotations

import importlib
import shutil
import sys
import time
import traceback

BENCHMARKS = {
    "registrations": "bench.registrations",
    "pdd": "bench.pdd",
    "cps": "bench.cps",
    "concurrent": "bench.concurrent",
    "acd_core": "bench.acd_core",
    "queue": "bench.queue",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    if shutil.which("sipp") is None and any(n in ("registrations", "cps") for n in names):
        print("SIPp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    failed = []
    t0 = time.monotonic()
    for name in names:
        start = time.monotonic()
        print(f"\n=== {name} ===", flush=True)
        try:
            importlib.import_module(BENCHMARKS[name]).run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.monotonic() - start:.0f} s)", flush=True)
    print(
        f"\nall done in {time.monotonic() - t0:.0f} s"
        + (f"; errors in: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
