"""The `softswitch` command: `check`, `run` and `version`.

`run` validates the whole config before touching anything (no data dir, no sockets, no
workers) so a typo never leaves a half-started switch; `check` is the same validation
without the start, meant for editors, CI and "did my edit break it?" before a restart.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from softswitch.config import ConfigError, default_config_path, load_config
from softswitch.config_types import Config, ListenAddress

log = logging.getLogger("softswitch")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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
