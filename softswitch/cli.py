"""The `softswitch` command: `check`, `run`, `report`, `status` and `version`.

`run` validates the whole config before touching anything (no data dir, no sockets, no
workers) so a typo never leaves a half-started switch; `check` is the same validation
without the start, meant for editors, CI and "did my edit break it?" before a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from softswitch.config import ConfigError, default_config_path, load_config
from softswitch.config_types import Config, ListenAddress

log = logging.getLogger("softswitch")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REPORT_NAMES = ("load", "operators", "missed", "staffing")  # softswitch.reports.REPORTS


def version() -> str:
    """The installed distribution's version; from pyproject.toml when run from a checkout."""
    from importlib import metadata

    try:
        return metadata.version("softswitch")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        with pyproject.open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _format_listen(addr: ListenAddress) -> str:
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    return f"{addr.transport}:{host}:{addr.port}"


def _load(config_arg: str | None) -> tuple[str, Config | None]:
    """Load the given config (or the embedded default); print problems to stderr."""
    path = Path(config_arg) if config_arg else default_config_path()
    try:
        return str(path), load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return str(path), None


def _print(text: str) -> None:
    # the summary has an em dash; do not crash on a non-UTF-8 terminal
    encoding = sys.stdout.encoding or "ascii"
    print(text.encode(encoding, errors="replace").decode(encoding))


def cmd_check(args: argparse.Namespace) -> int:
    file, config = _load(args.config)
    if config is None:
        return 1
    listening = ", ".join(_format_listen(a) for a in config.switch.listen)
    n = len(config.extensions)
    noun = "extension" if n == 1 else "extensions"
    flows = ""
    if config.blocks:
        flows = (
            f", {len(config.blocks)} blocks: calls to {config.switch.entry_number} "
            f"start at {config.switch.entry}"
        )
    _print(f"{file}: OK — {n} {noun}, listening on {listening}{flows}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    file, config = _load(args.config)
    if config is None:
        print(f"softswitch: not starting: {file} has problems (see above)", file=sys.stderr)
        return 1
    # imported here so `check` and `version` work without the runtime's dependencies
    try:
        from softswitch.coordinator import run
    except ModuleNotFoundError as e:
        if e.name != "softswitch.coordinator":
            raise
        print("softswitch: this build has no coordinator; cannot run", file=sys.stderr)
        return 2
    log.info("starting with %s", file)
    try:
        return int(run(config) or 0)
    except KeyboardInterrupt:
        return 130


def cmd_report(args: argparse.Namespace) -> int:
    """One report over the switch's database; exit 1 on a bad config, 2 when there is
    no database (or it cannot be read) or the dates are backwards."""
    import sqlite3
    import time
    from zoneinfo import ZoneInfo

    from softswitch import reports
    from softswitch.store import Store

    _, config = _load(args.config)
    if config is None:
        return 1
    tz = config.switch.timezone
    last = args.to or dt.datetime.now(ZoneInfo(tz)).date()
    first = args.since or last
    if last < first:
        print(f"softswitch report: --from {first} is after --to {last}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir) if args.data_dir else config.switch.data_dir
    db = data_dir / "softswitch.db"
    if not db.is_file():
        print(
            f"softswitch report: no database at {db} (the switch creates it in its "
            "data_dir on its first run; check --data-dir / [switch] data_dir)",
            file=sys.stderr,
        )
        return 2
    period = reports.period_for_dates(first, last, tz)
    try:
        store = Store(db)
    except (sqlite3.Error, RuntimeError) as e:
        print(f"softswitch report: cannot read {db}: {e}", file=sys.stderr)
        return 2
    try:
        data = reports.fetch(store, period.start)
    finally:
        store.close()
    report = reports.build_report(
        args.report,
        data,
        period,
        queues=args.queue or None,
        service_seconds=args.service_seconds,
        target=args.target,
        extensions=[e.number for e in config.extensions],
        now=time.time(),
    )
    _print(reports.render(report, args.format).rstrip("\n"))
    return 0


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, not {value!r}") from None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), not {value!r}")
    return seconds


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        share = 0.0
    if not 0 < share < 1:
        raise argparse.ArgumentTypeError(
            f"expected a share between 0 and 1 (e.g. 0.8), not {value!r}"
        )
    return share


def cmd_status(args: argparse.Namespace) -> int:
    """Print the trunks' state as the running switch last wrote it (DATA_DIR/trunks.json)."""
    import json
    import os

    file, config = _load(args.config)
    if config is None:
        return 1
    path = Path(args.data_dir or config.switch.data_dir) / "trunks.json"
    if not config.trunks:
        print("no [[trunk]] configured")
        return 0
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"{path}: no status (is the switch running with this config?)", file=sys.stderr)
        return 1
    pid = int(data.get("pid") or 0)
    try:
        os.kill(pid, 0)
        running = pid > 0
    except OSError:
        running = False
    when = dt.datetime.fromtimestamp(float(data.get("updated") or 0)).isoformat(" ", "seconds")
    state = f"running, pid {pid}" if running else "NOT running: last known state"
    print(f"softswitch {state}, as of {when}")
    for t in data.get("trunks", []):
        line = f"  {t['trunk']:<16} {t['state']:<16} calls {t.get('calls', 0)}"
        if t.get("address"):
            line += f"  {t['address']}"
        if t.get("reason"):
            line += f"  ({t['reason']})"
        print(line)
    return 0 if running else 1


def cmd_version(args: argparse.Namespace) -> int:
    print(f"softswitch {version()}")
    return 0


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def build_parser() -> argparse.ArgumentParser:
    # --log-level is accepted before or after the subcommand; SUPPRESS keeps the
    # subparser from overwriting a value given before it with its default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        type=_log_level,
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"logging threshold: {', '.join(LOG_LEVELS)} (default INFO)",
    )
    parser = argparse.ArgumentParser(
        prog="softswitch", description="A SIP softswitch.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="validate a config file and print its problems",
        description="Validate a config file; print each problem as FILE:LINE: key: message.",
    )
    check.add_argument(
        "--config", metavar="FILE", help="config file (default: the embedded demo config)"
    )
    check.set_defaults(func=cmd_check)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="validate the config, then run the switch until SIGINT/SIGTERM",
        description="Run the switch. Refuses to start if the config has any problem.",
    )
    run.add_argument(
        "--config", metavar="FILE", help="config file (default: the embedded demo config)"
    )
    run.set_defaults(func=cmd_run)

    report = sub.add_parser(
        "report",
        parents=[common],
        help="call-centre reports: load, operators, missed, staffing",
        description=(
            "A report over the switch's queue log (DATA_DIR/softswitch.db), by local day "
            "and hour in [switch] timezone: load (offered, answered, lost calls, service "
            "level), operators (working time and results), missed (unanswered callers and "
            "whether they were reached later), staffing (operators needed per hour, Erlang "
            "C). See docs/reports.md."
        ),
    )
    report.add_argument("report", choices=REPORT_NAMES)
    report.add_argument(
        "--config", metavar="FILE", help="config file (default: the embedded demo config)"
    )
    report.add_argument(
        "--data-dir", metavar="DIR", help="the switch's data directory (default: the config's)"
    )
    report.add_argument(
        "--from",
        dest="since",
        type=_date,
        metavar="YYYY-MM-DD",
        help="first day (default: the --to day)",
    )
    report.add_argument(
        "--to", type=_date, metavar="YYYY-MM-DD", help="last day, included (default: today)"
    )
    report.add_argument(
        "--queue",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="only these queues (repeatable; default: all)",
    )
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.add_argument(
        "--service-seconds",
        type=_seconds,
        default=20.0,
        metavar="N",
        help="service level: share of callers answered within N seconds (default 20)",
    )
    report.add_argument(
        "--target",
        type=_share,
        default=0.8,
        metavar="SHARE",
        help="staffing: service level to reach, 0..1 (default 0.8)",
    )
    report.set_defaults(func=cmd_report)

    status = sub.add_parser(
        "status",
        parents=[common],
        help="the trunks' registration state, as the running switch wrote it",
        description="Each [[trunk]]: registration state, address, calls (docs/trunks.md).",
    )
    status.add_argument(
        "--config", metavar="FILE", help="config file (default: the embedded demo config)"
    )
    status.add_argument(
        "--data-dir", metavar="DIR", help="the switch's data directory (default: the config's)"
    )
    status.set_defaults(func=cmd_status)

    ver = sub.add_parser("version", parents=[common], help="print the version")
    ver.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
