"""Load and validate the TOML configuration into `softswitch.config_types` dataclasses.

Why it looks like this:

* Every section is *declared* (`Section` of `Field`s: key, accepted TOML types, default,
  checker) in `SCHEMA`, and one generic engine walks the parsed TOML against it. Adding a
  later section (`[[trunk]]`, `[http]`) means writing its dataclass, its `Section(...)`
  entry and maybe a few checkers, not new traversal code. A dotted name (`switch.smtp`)
  declares a sub-table of another section; `variants` let each item of a section pick
  its own fields and dataclass by a key (`[block.NAME]` by `type`); `Schema.checks` see
  every built section at once (references between blocks, reachability, prompt files).
* An administrator fixes a config file in one go, so the engine collects *all* problems
  (unknown keys, wrong types, bad values, cross-field and cross-item conflicts) and raises
  one `ConfigError` carrying them, each as `FILE:LINE: key: what is wrong, what is expected`.
* `tomllib` does not report where a key was written, so `_LineScanner` re-reads the text
  (which tomllib has already accepted, so the scanner may assume valid TOML) and maps
  every key path such as `("extension", 1, "password")` to its line.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import re
import string
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from softswitch.acd.config import STRATEGIES
from softswitch.config_types import (
    Block,
    Config,
    DialBlock,
    ExtensionConfig,
    FeaturesConfig,
    HangupBlock,
    HoursBlock,
    HttpConfig,
    ListenAddress,
    MenuBlock,
    NotifyConfig,
    PlayBlock,
    QueueBlock,
    RecordingConfig,
    RouteConfig,
    ScriptBlock,
    SecurityConfig,
    SmtpConfig,
    SwitchConfig,
    TrunkConfig,
    VoicemailBlock,
)
from softswitch.flow.hours import Schedule, ScheduleError

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "default_config_path",
    "load_config",
    "parse_config",
    "validate",
    "RTP_PORTS_PER_WORKER",
    "MIN_RTP_PORTS",
    "SCHEMA",
]

# A media worker carries at most 4 legs (2 calls), each needing an RTP and an RTCP port.
RTP_PORTS_PER_WORKER = 8
# Below this the range is almost certainly a typo, whatever the worker count.
MIN_RTP_PORTS = 100
MIN_PASSWORD_LENGTH = 10

# Compared after lower-casing (and also with trailing digits/punctuation stripped), so
# "Password2024!" counts as "password". Deliberately small: it catches the defaults and
# keyboard walks that SIP scanners try first, it is not a dictionary attack.
COMMON_PASSWORDS = frozenset(
    {
        "password",
        "passw0rd",
        "p@ssw0rd",
        "p@ssword",
        "qwerty",
        "qwertyuiop",
        "qwertz",
        "azerty",
        "asdfghjkl",
        "1q2w3e4r",
        "1q2w3e4r5t",
        "zaq12wsx",
        "letmein",
        "welcome",
        "admin",
        "administrator",
        "changeme",
        "secret",
        "iloveyou",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "sunshine",
        "princess",
        "trustno",
        "abc",
        "abcdef",
        "abcdefgh",
        "default",
        "asterisk",
        "freeswitch",
        "softswitch",
        "voip",
        "sip",
        "phone",
        "pbx",
    }
)


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, printable as `FILE:LINE: key: message`.

    `line` is None only when there is no line to point at (the file cannot be read)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}"


class ConfigError(Exception):
    """The config is unusable; `problems` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Invalid(Exception):
    """Raised by a checker: the value is wrong.

    `at` extends the key path for the line lookup only (e.g. `(2,)` points at the third
    element of a multi-line array). A checker that finds several problems (one per list
    element, say) passes them all in `items` so none is hidden behind the first."""

    def __init__(
        self,
        message: str = "",
        at: tuple[int | str, ...] = (),
        *,
        items: Sequence[tuple[str, tuple[int | str, ...]]] | None = None,
    ) -> None:
        self.items: list[tuple[str, tuple[int | str, ...]]] = (
            list(items) if items is not None else [(message, tuple(at))]
        )
        super().__init__("; ".join(m for m, _ in self.items))


# --------------------------------------------------------------------------- schema

KeyPath = tuple[int | str, ...]  # a key path: ("extension", 1, "password")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED: Any = _Marker("REQUIRED")
FROM_DATACLASS: Any = _Marker("FROM_DATACLASS")


@dataclass
class Context:
    """What a checker may need besides the value itself."""

    base_dir: Path  # relative paths in the file are relative to this
    # the raw TOML table the value sits in (for cross-key checks); for a `Schema` check,
    # the whole parsed document
    item: Mapping[str, Any]


Checker = Callable[[Any, Context], Any]


@dataclass(frozen=True)
class Field:
    """One key of a section.

    `types`: the TOML value types accepted before `check` runs (bool is never an int).
    `check`: converts/validates the value, raising `Invalid`; None keeps it as is.
    `default`: REQUIRED; FROM_DATACLASS (the dataclass attribute default, used as is); or
      a raw TOML-form value that goes through `check` like a written one (so a default
      relative path is resolved the same way as a written one).
    `attr`: the dataclass attribute(s) to fill; a tuple unpacks the checked value.
    `expected`: overrides the type description in "expected ..., got ..." messages."""

    key: str
    types: tuple[type, ...]
    check: Checker | None = None
    default: Any = FROM_DATACLASS
    attr: str | tuple[str, ...] | None = None
    expected: str = ""
    doc: str = ""

    @property
    def attrs(self) -> tuple[str, ...]:
        if self.attr is None:
            return (self.key,)
        return (self.attr,) if isinstance(self.attr, str) else self.attr


@dataclass(frozen=True)
class CrossCheck:
    """A rule spanning several keys of one table; runs only once all `keys` are valid.

    `check(values)` yields `(key, message)` for each violation, reported on `key`'s line."""

    keys: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Section:
    """A top-level TOML section.

    kind "table": `[name]`, optional unless `required`.
    kind "array": `[[name]]`, zero or more items; `unique` keys must differ between items.
    kind "map":   `[name.ITEM]`, a table of named tables (e.g. `[block.main]`);
                  `item_name` validates ITEM and `item_attr` names the dataclass attribute
                  that receives it.
    A dotted `name` ("switch.smtp") is a sub-table of the section named before the dot:
    the parent accepts it as a key, and it is validated (and defaulted) on its own.
    `cls` builds the value from the attribute kwargs; `config_attr` is the `Config` field
    it lands in (tuple for arrays, dict for maps).
    `variants` (with `variant_key`): each item names one of them by that key (`type =
    "menu"`), and is checked against that variant's `fields`/`checks` and built by its
    `cls`; the variant's `name` is the key's value, its `label` is used in messages."""

    name: str
    kind: Literal["table", "array", "map"]
    fields: tuple[Field, ...]
    cls: Callable[..., Any]
    config_attr: str
    label: str = ""  # "extension": used in messages about items
    checks: tuple[CrossCheck, ...] = ()
    unique: tuple[str, ...] = ()
    required: bool = False
    item_name: Checker | None = None
    item_attr: str | None = None
    variant_key: str = ""
    variants: tuple[Section, ...] = ()
    doc: str = ""

    @property
    def path(self) -> KeyPath:
        return tuple(self.name.split("."))

    @property
    def header(self) -> str:
        return {"table": f"[{self.name}]", "array": f"[[{self.name}]]"}.get(
            self.kind, f"[{self.name}.NAME]"
        )


# A global check gets the built section values by section name and a Context (base dir,
# whole document); it yields `(path, message)`, or `(path, message, key_path)` to show
# a shorter key than the path whose line is reported.
GlobalCheck = Callable[[Mapping[str, Any], Context], Iterable[tuple[Any, ...]]]


@dataclass(frozen=True)
class Schema:
    """All sections, plus checks spanning sections (references between blocks, ...).

    The global checks run only when every section built cleanly."""

    sections: tuple[Section, ...]
    checks: tuple[GlobalCheck, ...] = ()


# --------------------------------------------------------------------------- type names

_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime.datetime, "a date-time"),
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def describe_type(value: Any) -> str:
    """The TOML-ish name of a parsed value's type, for "got ..." messages."""
    for typ, name in _TYPE_NAMES:
        if isinstance(value, typ):
            return name
    return type(value).__name__


def _type_name(typ: type) -> str:
    return dict(_TYPE_NAMES).get(typ, typ.__name__)


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # TOML true is not the integer 1
        return bool in types
    if isinstance(value, datetime.datetime) and datetime.datetime not in types:
        return False
    return isinstance(value, types)


def _type_hint(key: str, value: Any, types: tuple[type, ...]) -> str:
    """A concrete fix for the two usual slips: quoting a number or not quoting a string."""
    if str in types and isinstance(value, int | float) and not isinstance(value, bool):
        return f'; quote it: {key} = "{value}"'
    if int in types and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return f"; remove the quotes: {key} = {value.strip()}"
    return ""


# --------------------------------------------------------------------------- checkers


def int_range(lo: int | None = None, hi: int | None = None) -> Checker:
    """Checker: an integer within [lo, hi] (either bound optional)."""

    def check(value: int, ctx: Context) -> int:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if hi is None:
                want = f"an integer of at least {lo}"
            elif lo is None:
                want = f"an integer of at most {hi}"
            else:
                want = f"an integer from {lo} to {hi}"
            raise Invalid(f"{value} is out of range; expected {want}")
        return value

    return check


def one_of(*choices: str) -> Checker:
    """Checker: one of a fixed set of strings."""

    def check(value: str, ctx: Context) -> str:
        if value not in choices:
            raise Invalid(f'"{value}" is not supported; expected {_or_list(choices)}')
        return value

    return check


def _or_list(choices: Sequence[str]) -> str:
    quoted = [f'"{c}"' for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)


def _host_name_or_ip(value: str, problem: str) -> str:
    """`value` if it is a DNS name or an IP address; else Invalid(f'"{value}" {problem}')."""
    if _HOSTNAME_RE.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(f'"{value}" {problem}') from None
    return value


def check_domain(value: str, ctx: Context) -> str:
    """The SIP domain must be a DNS name or IP address: it appears in every URI."""
    return _host_name_or_ip(
        value, 'is not a domain name; expected a DNS name like "pbx.example.com" or an IP address'
    )


_LISTEN_EXPECTED = (
    'expected "udp:HOST:PORT" or "tcp:HOST:PORT" with an IP address, e.g. "udp:0.0.0.0:5060"'
)


def _parse_listen(entry: str) -> ListenAddress:
    transport, sep, rest = entry.partition(":")
    if not sep:
        raise Invalid(f'"{entry}" is not a listen address; {_LISTEN_EXPECTED}')
    if transport not in ("udp", "tcp"):
        raise Invalid(f'"{entry}": unknown transport "{transport}"; {_LISTEN_EXPECTED}')
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise Invalid(f'"{entry}": unclosed "[" or missing port; {_LISTEN_EXPECTED}')
        port = port[1:]
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise Invalid(f'"{entry}": missing port; {_LISTEN_EXPECTED}')
        if ":" in host:
            raise Invalid(f'"{entry}": put an IPv6 address in brackets, e.g. "udp:[::1]:5060"')
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(f'"{entry}": "{host}" is not an IP address; {_LISTEN_EXPECTED}') from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f'"{entry}": port "{port}" is not a number from 1 to 65535')
    return ListenAddress(transport, host, int(port))


def check_listen(value: list[Any], ctx: Context) -> tuple[ListenAddress, ...]:
    """Listen entries, each checked on its own so every bad one is reported."""
    if not value:
        raise Invalid(f"the list is empty; expected at least one entry, {_LISTEN_EXPECTED}")
    out: list[ListenAddress] = []
    errors: list[tuple[str, KeyPath]] = []
    seen: dict[ListenAddress, str] = {}
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            errors.append((f"entry {i + 1} is {describe_type(entry)}; {_LISTEN_EXPECTED}", (i,)))
            continue
        try:
            addr = _parse_listen(entry.strip())
        except Invalid as e:
            errors.append((str(e), (i,)))
            continue
        if addr in seen:
            errors.append((f'"{entry}" is listed twice (also as "{seen[addr]}")', (i,)))
            continue
        seen[addr] = entry
        out.append(addr)
    if errors:
        raise Invalid(items=errors)
    return tuple(out)


def check_public_address(value: str, ctx: Context) -> str:
    """Phones send RTP to this address, so it must be a concrete IP they can reach."""
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise Invalid(
            f'"{value}" is not an IP address; expected the address phones reach this host on,'
            ' e.g. "192.168.1.10"'
        ) from None
    if addr.is_unspecified or addr.is_multicast:
        raise Invalid(
            f'"{value}" cannot be put in SDP; expected the unicast address phones reach this'
            ' host on, e.g. "192.168.1.10"'
        )
    return str(addr)


def check_rtp_ports(value: str | list[Any], ctx: Context) -> tuple[int, int]:
    """An even-starting port range; size is checked against max_workers separately."""
    form = 'expected "MIN-MAX" like "20000-29999" or [20000, 29999]'
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not m:
            raise Invalid(f'"{value}" is not a port range; {form}')
        lo, hi = int(m.group(1)), int(m.group(2))
    else:
        if len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise Invalid(f"an array of {len(value)} values is not a port range; {form}")
        lo, hi = value
    if not (1024 <= lo <= 65535 and 1024 <= hi <= 65535):
        raise Invalid(f"{lo}-{hi} is out of range; expected ports from 1024 to 65535")
    if lo >= hi:
        raise Invalid(f"{lo}-{hi}: the first port must be lower than the last; {form}")
    if lo % 2:
        raise Invalid(
            f"{lo}-{hi} starts on an odd port; expected an even start"
            " (RTP uses even ports, RTCP the odd port above)"
        )
    if hi - lo + 1 < MIN_RTP_PORTS:
        raise Invalid(
            f"{lo}-{hi} holds only {hi - lo + 1} ports; expected at least {MIN_RTP_PORTS}"
        )
    return lo, hi


def check_data_dir(value: str, ctx: Context) -> Path:
    """Resolve against the context's base dir now, so nothing later depends on the cwd."""
    if not value.strip():
        raise Invalid('the path is empty; expected a directory path such as "data"')
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = ctx.base_dir / path
    if path.exists() and not path.is_dir():
        raise Invalid(f'"{path}" exists and is not a directory; expected a directory path')
    return path


def check_timezone(value: str, ctx: Context) -> str:
    """Must load from zoneinfo now, rather than fail when the first call is logged."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        names = sorted(zoneinfo.available_timezones())
        by_lower = {n.lower(): n for n in names}
        close = difflib.get_close_matches(value.lower(), list(by_lower), n=3, cutoff=0.6)
        hint = f"did you mean {_or_list([by_lower[c] for c in close])}? " if close else ""
        raise Invalid(
            f'"{value}" is not a known time zone; {hint}expected an IANA name like'
            ' "Europe/Moscow" or "UTC"'
        ) from None
    return value


def _two_to_six_digits(value: str, what: str, example: str) -> str:
    if not re.fullmatch(r"[0-9]{2,6}", value):
        raise Invalid(
            f'"{value}" is not {what}; expected a string of 2 to 6 digits, e.g. "{example}"'
        )
    return value


def check_extension_number(value: str, ctx: Context) -> str:
    return _two_to_six_digits(value, "an extension number", "101")


def check_name(value: str, ctx: Context) -> str:
    """Names end up in SIP display names and log lines: no control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid('contains control characters; expected plain text like "Alice Smith"')
    if len(value) > 64:
        raise Invalid(f"is {len(value)} characters long; expected at most 64")
    return value


def password_weaknesses(password: str, number: str | None) -> list[str]:
    """Why a SIP password is guessable; empty when it is acceptable.

    Exposed extensions get brute-forced within hours, so this is an error, not a warning."""
    reasons: list[str] = []
    if len(password) < MIN_PASSWORD_LENGTH:
        reasons.append(f"it is only {len(password)} characters long")
    if password.isdigit():
        reasons.append("it is all digits")
    if number and number in password:
        reasons.append(
            "it is the extension number"
            if password == number
            else "it contains the extension number"
        )
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or lowered.rstrip(string.digits + string.punctuation) in (
        COMMON_PASSWORDS
    ):
        reasons.append("it is a common password")
    elif password and len(set(password)) == 1:
        reasons.append("it repeats one character")
    return reasons


def check_password(value: str, ctx: Context) -> str:
    number = ctx.item.get("number")
    reasons = password_weaknesses(value, number if isinstance(number, str) else None)
    if reasons:
        # never echo the password itself: check output ends up in logs and tickets
        raise Invalid(
            f"weak password: {', '.join(reasons)}; expected at least {MIN_PASSWORD_LENGTH}"
            " characters, not all digits, not containing the extension number and not a"
            " common password"
        )
    return value


def check_email(value: str, ctx: Context) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+", value):
        raise Invalid(f'"{value}" is not an e-mail address; expected e.g. "alice@example.com"')
    return value


def float_range(lo: float, hi: float) -> Checker:
    """Checker: a number (integer or float) within [lo, hi], as a float."""

    def check(value: float, ctx: Context) -> float:
        if not lo <= value <= hi:
            raise Invalid(f"{value} is out of range; expected a number from {lo:g} to {hi:g}")
        return float(value)

    return check


def check_host(value: str, ctx: Context) -> str:
    return _host_name_or_ip(
        value, 'is not a host name or IP address; expected e.g. "smtp.example.com" or "127.0.0.1"'
    )


def check_media_dir(value: str, ctx: Context) -> Path | None:
    """An existing directory; "" = the prompts shipped with softswitch (None)."""
    if not value.strip():
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = ctx.base_dir / path
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise Invalid(
            f'"{path}" {what}; expected a directory with a folder per language'
            ' (en/welcome.wav, ...), or "" for the prompts shipped with softswitch'
        )
    return path


def check_entry_number(value: str, ctx: Context) -> str:
    return _two_to_six_digits(value, "a number to dial", "100")


_BLOCK_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BLOCK_NAME_EXPECTED = 'expected letters, digits, "-" and "_" (at most 64), e.g. "after-hours"'


def check_block_name(value: str, ctx: Context) -> str:
    if not _BLOCK_NAME_RE.fullmatch(value):
        raise Invalid(f'"{value}" is not a block name; {_BLOCK_NAME_EXPECTED}')
    return value


def check_entry(value: str, ctx: Context) -> str:
    """`entry` names a block ("" = no call flows); that it exists is a global check."""
    return check_block_name(value, ctx) if value else value


def _check_prompt_text(value: str, *, optional: bool) -> str:
    if not value.strip():
        if optional:
            return ""
        raise Invalid('the prompt is empty; expected a prompt name such as "welcome" or a'
                      ' path to an audio file')  # fmt: skip
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid("contains control characters; expected a prompt name or a file path")
    return value


def check_prompt(value: str, ctx: Context) -> str:
    """A prompt name or file; whether it exists and plays is checked once the switch's
    language and media_dir are known (`_check_flows`)."""
    return _check_prompt_text(value, optional=False)


def check_optional_prompt(value: str, ctx: Context) -> str:
    """Like check_prompt, but "" means "say nothing"."""
    return _check_prompt_text(value, optional=True)


DTMF_DIGITS = "0123456789*#"


def check_options(value: dict[str, Any], ctx: Context) -> dict[str, str]:
    """Menu options: single DTMF digit -> block name (existence is a global check)."""
    errors: list[tuple[str, KeyPath]] = []
    for digit, target in value.items():
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            errors.append((f'"{digit}" is not a key on the phone; expected a single digit 0-9,'
                           ' "*" or "#" (quote "*" and "#")', (digit,)))  # fmt: skip
        elif not isinstance(target, str):
            errors.append((f'option "{digit}" is {describe_type(target)}; expected the name of'
                           f' a block in quotes, e.g. "{digit}" = "sales"', (digit,)))  # fmt: skip
    if errors:
        raise Invalid(items=errors)
    return dict(value)


def _string_list(value: list[Any], what: str) -> list[tuple[str, KeyPath]]:
    return [
        (f"entry {i + 1} is {describe_type(v)}; expected {what}", (i,))
        for i, v in enumerate(value)
        if not isinstance(v, str)
    ]


def _parsed_schedule_field(
    field_name: str, value: list[Any], *parse_args: list[Any]
) -> tuple[str, ...]:
    """`value` as a tuple, once `Schedule.parse(*parse_args)` finds nothing wrong with the
    field `field_name` (each of its problems on its entry's own line)."""
    try:
        Schedule.parse(*parse_args)
    except ScheduleError as e:
        items = [(m, (i,)) for f, i, m in e.problems if f == field_name]
        if items:
            raise Invalid(items=items) from None
    return tuple(value)


def check_schedule(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """Weekly hours, each entry parsed by `Schedule.parse` (its error on its own line)."""
    return _parsed_schedule_field("schedule", value, value)


def check_holidays(value: list[Any], ctx: Context) -> tuple[str, ...]:
    return _parsed_schedule_field("holidays", value, [], value)


def check_working_days(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """Also against this block's holidays: a date cannot be both (reported here)."""
    holidays = ctx.item.get("holidays")
    if not isinstance(holidays, list):
        holidays = []
    return _parsed_schedule_field("working_days", value, [], holidays, value)


def check_targets(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """Extension numbers to ring; that they are configured is a global check."""
    if not value:
        raise Invalid('the list is empty; expected extension numbers such as ["101", "102"]')
    errors = _string_list(value, 'an extension number in quotes, e.g. "101"')
    seen: set[str] = set()
    for i, number in enumerate(value):
        if not isinstance(number, str):
            continue
        if not re.fullmatch(r"[0-9]{2,6}", number):
            errors.append((f'"{number}" is not an extension number; expected 2 to 6 digits',
                           (i,)))  # fmt: skip
        elif number in seen:
            errors.append((f'"{number}" is listed twice; expected each extension once', (i,)))
        seen.add(number)
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(value)


def check_email_list(value: list[Any], ctx: Context) -> tuple[str, ...]:
    errors = _string_list(value, 'an e-mail address in quotes, e.g. "alice@example.com"')
    for i, address in enumerate(value):
        if isinstance(address, str):
            try:
                check_email(address, ctx)
            except Invalid as e:
                errors.append((str(e), (i,)))
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(value)


def check_box(value: str, ctx: Context) -> str:
    """A mailbox name becomes a directory name under data_dir: keep it plain."""
    if value and not _BLOCK_NAME_RE.fullmatch(value):
        raise Invalid(f'"{value}" is not a mailbox name; {_BLOCK_NAME_EXPECTED}')
    return value


_FUNCTION_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def check_function(value: str, ctx: Context) -> str:
    if not _FUNCTION_RE.fullmatch(value):
        raise Invalid(
            f'"{value}" is not a function reference; expected "module:function" such as'
            ' "examples.taxi:flow" (an async def flow(call) registered with @switch.flow'
            " or importable)"
        )
    return value


def above_zero(hi: float) -> Checker:
    """Checker: a number of seconds greater than 0 (a 0 would fire at once) and at most
    `hi`, as a float."""

    def check(value: float, ctx: Context) -> float:
        if not 0 < value <= hi:
            raise Invalid(
                f"{value} is out of range; expected a number of seconds above 0, at most {hi:g}"
            )
        return float(value)

    return check


def check_music(value: str, ctx: Context) -> str:
    """Hold music name or file; whether it exists and plays is a global check, like
    prompts. Never empty: silence makes a waiting caller think the line is dead."""
    if not value.strip():
        raise Invalid('the music is empty; expected the name of hold music in media/music'
                      ' such as "default", or a path to an audio file')  # fmt: skip
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid("contains control characters; expected a music name or a file path")
    return value


def check_hold_music(value: str, ctx: Context) -> str:
    """[switch] music: like a queue's music, but "" (silence while on hold) is allowed."""
    return check_music(value, ctx) if value else value


RECORD_MODES = ("never", "always", "on-demand")


def check_dtmf_key(value: str, ctx: Context) -> str:
    if len(value) != 1 or value not in DTMF_DIGITS:
        raise Invalid(f'"{value}" is not a key on the phone; expected a single digit 0-9,'
                      ' "*" or "#"')  # fmt: skip
    return value


_URL_EXAMPLE = '"https://hooks.example.com/missed"'


def _check_url(value: str) -> None:
    """An absolute http(s) URL with a host; only the shape, nothing is fetched."""
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018 - raises ValueError for a port that is no number / too big
    except ValueError as e:
        raise Invalid(f'"{value}" is not a valid URL ({e}); expected e.g. {_URL_EXAMPLE}') from None
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise Invalid(f'"{value}" contains spaces or control characters; expected a URL'
                      f" with special characters %-encoded, e.g. {_URL_EXAMPLE}")  # fmt: skip
    host = url.hostname or ""
    if not host:
        raise Invalid(f'"{value}" has no host; expected e.g. {_URL_EXAMPLE}')
    _host_name_or_ip(host, f"in {value!r} is not a host name or IP address;"
                     f" expected e.g. {_URL_EXAMPLE}")  # fmt: skip


def check_notify_list(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """Supervisor addresses: each an e-mail address or an http(s) URL (a webhook).

    The scheme decides which: anything with "://" must be http or https, so a typo like
    "htps://..." is not taken for something else."""
    expected = 'an e-mail address or an http(s) URL, e.g. "boss@example.com" or ' + _URL_EXAMPLE
    errors = _string_list(value, f"{expected} in quotes")
    seen: set[str] = set()
    for i, address in enumerate(value):
        if not isinstance(address, str):
            continue
        try:
            if "://" in address:
                scheme = address.split("://", 1)[0]
                if scheme.lower() not in ("http", "https"):
                    raise Invalid(
                        f'"{address}": unsupported scheme "{scheme}"; expected {expected}'
                    )
                _check_url(address)
            elif "@" in address:
                check_email(address, ctx)
            else:
                raise Invalid(f'"{address}" is neither; expected {expected}')
        except Invalid as e:
            errors.append((str(e), (i,)))
            continue
        if address in seen:
            errors.append((f'"{address}" is listed twice; expected each address once', (i,)))
        seen.add(address)
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(value)


_FEATURE_CODE_RE = re.compile(r"\*[0-9*#]{1,5}")


def check_feature_code(value: str, ctx: Context) -> str:
    """A code dialled from an operator's phone: "*" first so it can never be taken for an
    extension number (those are digits only); "" turns the feature off."""
    if value and not _FEATURE_CODE_RE.fullmatch(value):
        raise Invalid(
            f'"{value}" is not a feature code; expected "*" followed by 1 to 5 of 0-9, "*"'
            ' and "#" (2 to 6 keys in all, e.g. "*45"; the "*" keeps it apart from extension'
            ' numbers), or "" to turn it off'
        )
    return value


def check_pickup_group(value: str, ctx: Context) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", value):
        raise Invalid(
            f'"{value}" is not a group name; expected 1-32 letters, digits, "_", "." or "-"'
        )
    return value


_INCALL_CODE_RE = re.compile(r"[*#][0-9*#]{1,5}")


def check_incall_code(value: str, ctx: Context) -> str:
    """A code dialled during a call (softswitch/incall.py): "*" or "#" first, so that
    ordinary digits (a menu of the other side, an account number) never start one."""
    if value and not _INCALL_CODE_RE.fullmatch(value):
        raise Invalid(
            f'"{value}" is not an in-call code; expected "*" or "#" followed by 1 to 5 of'
            ' 0-9, "*" and "#" (2 to 6 keys in all, e.g. "*1"), or "" to turn it off'
        )
    return value


# --------------------------------------------------------------------------- cross checks


def _workers_consistent(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["max_workers"] < v["workers"]:
        yield (
            "max_workers",
            f"{v['max_workers']} is less than workers = {v['workers']}; expected"
            " max_workers >= workers",
        )


def _expires_consistent(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    lo, dflt, hi = v["min_expires"], v["default_expires"], v["max_expires"]
    if hi < lo:
        yield ("max_expires", f"{hi} is less than min_expires = {lo}; expected max >= min")
    elif not lo <= dflt <= hi:
        yield (
            "default_expires",
            f"{dflt} is outside min_expires..max_expires ({lo}..{hi}); expected a value"
            " in that range",
        )


def _rtp_fits_workers(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    lo, hi = v["rtp_ports"]
    need = v["max_workers"] * RTP_PORTS_PER_WORKER
    if hi - lo + 1 < need:
        yield (
            "rtp_ports",
            f"{lo}-{hi} holds {hi - lo + 1} ports but max_workers = {v['max_workers']} needs"
            f" {need} ({RTP_PORTS_PER_WORKER} per worker); expected a range of at least"
            f" {need} ports or fewer max_workers",
        )


def _smtp_login_pair(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["username"] is not None and v["password"] is None:
        yield ("username", "username is set but password is missing; expected both or neither")
    elif v["password"] is not None and v["username"] is None:
        yield ("password", "password is set but username is missing; expected both or neither")


def _menu_offers_something(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if not v["options"] and not v["dial_extensions"]:
        yield (
            "options",
            "the menu has no options and dial_extensions is off, so no key does anything;"
            ' expected options such as { "1" = "sales" } or dial_extensions = true'
            " (or use a play block)",
        )


def _hours_ever_open(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if not v["schedule"] and not v["working_days"]:
        yield (
            "schedule",
            "the schedule is empty and there are no working_days, so every call goes to"
            ' closed; expected entries such as "mon-fri 09:00-18:00"',
        )


def _requires(
    key: str, needs: str, hint: str
) -> Callable[[Mapping[str, Any]], Iterator[tuple[str, str]]]:
    """Cross check: `key` only means something together with `needs`; setting it alone
    is a mistake (the administrator expects it to do something), not a no-op."""

    def check(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if v[key] is not None and v[key] is not False and v[needs] in (None, ()):
            yield (key, f"{key} is set but {needs} is not, so it would never be used;"
                   f" expected {needs} too ({hint}), or remove {key}")  # fmt: skip

    return check


def _feature_codes_differ(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["queue_login"] and v["queue_login"] == v["queue_pause"]:
        yield (
            "queue_pause",
            f'"{v["queue_pause"]}" is also queue_login; expected a code of its own (or ""'
            " to turn it off)",
        )


def _incall_codes_differ(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    seen: dict[str, str] = {}
    for key in ("record_toggle", "blind_transfer", "attended_transfer"):
        code = v[key]
        if code and code in seen:
            yield (key, f'"{code}" is also {seen[code]}; expected a code of its own (or "")')
        elif code:
            seen[code] = key


# --------------------------------------------------------------------------- flow checks

# the keys of each block type that name another block ("" = hang up)
_NEXT_KEYS: dict[type, tuple[str, ...]] = {
    MenuBlock: ("on_timeout",),
    HoursBlock: ("open", "closed"),
    PlayBlock: ("next",),
    DialBlock: ("on_no_answer",),
    ScriptBlock: ("next",),
    VoicemailBlock: (),
    HangupBlock: (),
    QueueBlock: ("on_timeout", "on_full", "on_empty", "exit_target", "next"),
}
# blocks that pass a call on without waiting for anything (no prompt, ringing or recording):
# a loop made only of these would spin forever
_INSTANT_BLOCKS = (HoursBlock, ScriptBlock)


def instant_targets(block: Block) -> list[str]:
    """The blocks `block` may pass a call on to without waiting for anything.

    Hours and script blocks always do. A queue does when it sends a caller on at once:
    to on_empty when nobody is logged in, and, when full (max_callers), to on_full or,
    without one, to next. Its other ways out follow a wait (max_wait, a key, a ring)."""
    if isinstance(block, _INSTANT_BLOCKS):
        return [t for _, _, t in block_references(block) if t]
    if isinstance(block, QueueBlock):
        out = [block.on_empty]
        if block.max_callers is not None:
            out.append(block.on_full if block.on_full is not None else block.next)
        return [t for t in out if t]
    return []


def block_references(block: Block) -> list[tuple[KeyPath, KeyPath, str | None]]:
    """(path within the block, displayed key within the block, target) for every block
    name `block` refers to, "" (hang up) and None (an optional key not set) included."""
    out: list[tuple[KeyPath, KeyPath, str]] = []
    if isinstance(block, MenuBlock):
        out += [(("options", digit), ("options",), t) for digit, t in block.options.items()]
    out += [((key,), (key,), getattr(block, key)) for key in _NEXT_KEYS[type(block)]]
    return out


def _unknown_block(name: str, blocks: Mapping[str, Block], *, hangup: bool) -> str:
    choices = list(blocks)
    if not choices:
        return f'unknown block "{name}"; no [block.NAME] tables are configured'
    listed = _or_list(choices) + (' (or "" to hang up)' if hangup else "")
    return f'unknown block "{name}"; {_suggest(name, choices)}expected one of {listed}'


def _find_cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), each as the list
    of its blocks starting from the first in `graph` order, ending where it began."""
    order = {name: i for i, name in enumerate(graph)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    cycles: list[list[str]] = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        if len(component) == 1 and start not in graph[start]:
            continue
        # a shortest way back to `start` inside the component (breadth-first)
        back: dict[str, str] = {}
        queue, seen, end = [start], {start}, None
        while queue and end is None:
            v = queue.pop(0)
            for w in graph[v]:
                if w == start:
                    end = v
                    break
                if w in members and w not in seen:
                    seen.add(w)
                    back[w] = v
                    queue.append(w)
        path = [start]
        v = end
        while v is not None and v != start:
            path.insert(1, v)
            v = back.get(v)
        cycles.append([*path, start])
    return sorted(cycles, key=lambda c: order[c[0]])


def _check_flows(built: Mapping[str, Any], ctx: Context) -> Iterator[tuple[Any, ...]]:
    """Everything about call flows that needs more than one block: references, the entry
    block, reachability, loops that never wait, extensions dialled, prompt files."""
    switch: SwitchConfig = built["switch"]
    blocks: dict[str, Block] = built.get("block", {})
    numbers = [e.number for e in built.get("extension", ())]

    if switch.entry and switch.entry_number in numbers:
        yield (
            ("switch", "entry_number"),
            f'"{switch.entry_number}" is also an extension number; expected a number no'
            " extension uses, so that dialling it reaches the call flow",
        )
    # blocks where calls from [[trunk]] numbers start (DIDs) are entry points too
    did_blocks = {b for t in built.get("trunk", ()) for b in t.numbers.values() if b in blocks}
    if blocks and not switch.entry and not did_blocks:
        yield (
            ("switch", "entry"),
            "[block.NAME] tables are configured but nothing says where a call starts;"
            f" expected entry = {_or_list(list(blocks))} in [switch]",
        )
    elif switch.entry and switch.entry not in blocks:
        yield (("switch", "entry"), _unknown_block(switch.entry, blocks, hangup=False))

    graph: dict[str, list[str]] = {}
    for name, block in blocks.items():
        graph[name] = []
        for sub, shown, target in block_references(block):
            if not target:
                continue
            if target not in blocks:
                yield (
                    ("block", name, *sub),
                    _unknown_block(target, blocks, hangup=True),
                    ("block", name, *shown),
                )
            elif target not in graph[name]:
                graph[name].append(target)
        dialled = {DialBlock: "targets", QueueBlock: "members"}.get(type(block))
        if dialled:
            for i, number in enumerate(getattr(block, dialled)):
                if number not in numbers:
                    known = _or_list(numbers) if numbers else "none is configured"
                    yield (
                        ("block", name, dialled, i),
                        f'"{number}" is not a configured extension; expected one of {known}',
                        ("block", name, dialled),
                    )

    # reachability: a script may continue at any block it likes, so once one is
    # reachable nothing can be called unreachable
    starts = did_blocks | ({switch.entry} & set(blocks))
    if starts:
        reached = set(starts)
        todo = list(starts)
        while todo:
            for target in graph[todo.pop()]:
                if target not in reached:
                    reached.add(target)
                    todo.append(target)
        if not any(isinstance(blocks[n], ScriptBlock) for n in reached):
            for name in blocks:
                if name not in reached:
                    yield (
                        ("block", name),
                        f'block "{name}" is never reached: no way leads to it from the entry'
                        f' block "{switch.entry}"; expected another block to name it (a menu'
                        " option, open/closed, next, on_timeout, on_no_answer or a queue's"
                        " on_full/on_empty/exit_target), a trunk's numbers, or remove it",
                    )

    instant = {n: [t for t in instant_targets(b) if t in blocks] for n, b in blocks.items()}
    for cycle in _find_cycles(instant):
        queues = [n for n in dict.fromkeys(cycle) if isinstance(blocks[n], QueueBlock)]
        why = (
            " (" + ", ".join(f'queue "{n}"' for n in queues) + " sends callers on at once"
            " through on_empty, or on_full / next when full)"
            if queues
            else ""
        )
        yield (
            ("block", cycle[0]),
            "blocks " + " -> ".join(f'"{n}"' for n in cycle) + " form a loop in which"
            f" nothing waits (no prompt, menu, dial or voicemail){why}, so a call would go"
            " round it forever; expected a play, menu, dial or voicemail block in the loop",
        )

    yield from _check_prompts(switch, blocks, ctx)


def _prompt_keys(block: Block) -> list[str]:
    if isinstance(block, MenuBlock):
        keys = ["prompt", "invalid_prompt"]
        return keys + ["unknown_extension_prompt"] if block.dial_extensions else keys
    if isinstance(block, VoicemailBlock):
        return ["greeting"]
    if isinstance(block, PlayBlock):
        return ["prompt"]
    if isinstance(block, QueueBlock):
        return ["greeting"]
    return []


def _check_prompts(
    switch: SwitchConfig, blocks: Mapping[str, Block], ctx: Context
) -> Iterator[tuple[Any, ...]]:
    """Every prompt a block plays resolves to a file that plays (softswitch.audio)."""
    if not blocks:
        return
    from softswitch import audio  # numpy and soundfile: only when there are prompts

    expected = (
        "expected the name of a prompt in media_dir or the shipped prompts (en/welcome.wav"
        ' for "welcome"), or the path of an audio file'
    )
    results: dict[str, str | None] = {}
    for name, block in blocks.items():
        for key in _prompt_keys(block):
            prompt = getattr(block, key)
            if not prompt:
                continue
            if prompt not in results:
                try:
                    path = audio.resolve_prompt(
                        prompt, switch.language, ctx.base_dir, switch.media_dir
                    )
                except audio.AudioError as e:  # its message names the prompt or file
                    results[prompt] = f"{e}; {expected}"
                else:
                    problem = audio.check_audio(path)
                    results[prompt] = (
                        f'prompt "{prompt}": {problem}; expected an audio file with sound in it'
                        " (WAV, FLAC, OGG or MP3)"
                        if problem
                        else None
                    )
            if results[prompt]:
                yield (("block", name, key), results[prompt])
    yield from _check_music(switch, blocks, ctx)


def _check_music(
    switch: SwitchConfig, blocks: Mapping[str, Block], ctx: Context
) -> Iterator[tuple[Any, ...]]:
    """Every queue's hold music resolves (media/music, or a file) and plays."""
    from softswitch import audio

    expected = (
        "expected the name of hold music in media_dir/music or the shipped media/music"
        ' (music/default.wav for "default"), or the path of an audio file'
    )
    results: dict[str, str | None] = {}
    for name, block in blocks.items():
        if not isinstance(block, QueueBlock):
            continue
        music = block.music
        if music not in results:
            try:
                path = audio.resolve_music(music, ctx.base_dir, switch.media_dir)
            except audio.AudioError as e:  # names the music or file
                results[music] = f"{e}; {expected}"
            else:
                problem = audio.check_audio(path)
                results[music] = (
                    f'music "{music}": {problem}; expected an audio file with sound in it'
                    " (WAV, FLAC, OGG or MP3)"
                    if problem
                    else None
                )
        if results[music]:
            yield (("block", name, "music"), results[music])


def _check_hold_music(built: Mapping[str, Any], ctx: Context) -> Iterator[tuple[Any, ...]]:
    """[switch] music (heard while the other party holds) resolves and plays."""
    from softswitch import audio

    switch: SwitchConfig = built["switch"]
    written = ctx.item.get("switch")
    if not switch.music or not isinstance(written, dict) or "music" not in written:
        return  # the default: without shipped music the switch holds in silence
    try:
        path = audio.resolve_music(switch.music, ctx.base_dir, switch.media_dir)
    except audio.AudioError as e:  # names the music or file
        yield (
            ("switch", "music"),
            f"{e}; expected the name of hold music in media_dir/music"
            ' or the shipped media/music ("default"), an audio file, or "" for silence',
        )
        return
    problem = audio.check_audio(path)
    if problem:
        yield (("switch", "music"), f'music "{switch.music}": {problem}; expected an audio'
               " file with sound in it (WAV, FLAC, OGG or MP3)")  # fmt: skip


def _check_features(built: Mapping[str, Any], ctx: Context) -> Iterator[tuple[Any, ...]]:
    """A feature code must not be a number that already rings something: an extension,
    or the call flow's entry_number. (The leading "*" rules that out today; this keeps it
    so should numbers ever allow "*".)"""
    features: FeaturesConfig = built["features"]
    switch: SwitchConfig = built["switch"]
    owners = {e.number: f"extension {e.number}" for e in built.get("extension", ())}
    if switch.entry:
        owners.setdefault(switch.entry_number, "[switch] entry_number")
    for code, key in features.codes().items():
        if code in owners:
            yield (
                ("features", key),
                f'"{code}" is also the number of {owners[code]}; expected a code no'
                ' extension or entry_number uses, starting with "*"',
            )


# --------------------------------------------------------------------------- the schema

SWITCH = Section(
    name="switch",
    kind="table",
    cls=SwitchConfig,
    config_attr="switch",
    doc="Global settings of the switch.",
    fields=(
        Field("domain", (str,), check_domain, doc="SIP domain of the extensions"),
        Field("listen", (list,), check_listen, expected="an array of strings",
              doc='SIP listen addresses, "udp:HOST:PORT" / "tcp:HOST:PORT"'),
        Field("public_address", (str,), check_public_address,
              doc="IP address put in SDP; phones send RTP there"),
        Field("rtp_ports", (str, list), check_rtp_ports,
              attr=("rtp_port_min", "rtp_port_max"),
              expected='a string like "20000-29999" or an array of two integers',
              doc="RTP/RTCP port range of the media workers"),
        Field("data_dir", (str,), check_data_dir, default="data",
              doc="directory for the database, recordings and logs"),
        Field("timezone", (str,), check_timezone, doc="IANA time zone for schedules and logs"),
        Field("language", (str,), one_of("en", "ru"), doc="language of the voice prompts"),
        Field("workers", (int,), int_range(1), attr="workers_min",
              doc="media worker processes kept warm"),
        Field("max_workers", (int,), int_range(1), attr="workers_max",
              doc="most media worker processes at once"),
        Field("min_expires", (int,), int_range(1), doc="shortest registration accepted (s)"),
        Field("max_expires", (int,), int_range(1), doc="longest registration granted (s)"),
        Field("default_expires", (int,), int_range(1),
              doc="registration time when the phone asks for none (s)"),
        Field("ring_timeout", (int,), int_range(5, 300), doc="seconds an extension rings"),
        Field("media_timeout", (int,), int_range(0, 3600),
              doc="seconds without RTP before an answered call is hung up (0 = off)"),
        Field("entry", (str,), check_entry,
              doc='block a call to entry_number starts at ("" = no call flows)'),
        Field("entry_number", (str,), check_entry_number,
              doc="number that reaches the call flow (2-6 digits, quoted)"),
        Field("media_dir", (str,), check_media_dir,
              doc='directory of prompts, one folder per language ("" = shipped prompts)'),
        Field("music", (str,), check_hold_music,
              doc='what the other party hears while a phone holds a call: hold music name'
                  ' (media/music) or audio file ("" = silence)'),
    ),
    checks=(
        CrossCheck(("workers", "max_workers"), _workers_consistent),
        CrossCheck(("min_expires", "default_expires", "max_expires"), _expires_consistent),
        CrossCheck(("rtp_ports", "max_workers"), _rtp_fits_workers),
    ),
)  # fmt: skip

_CLASS_RE = re.compile(r"[a-z0-9_-]{1,32}")


def check_call_classes(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """Call classes of [[route]]s (docs/trunks.md): lower-case names."""
    what = 'a call class in quotes, e.g. "local"'
    errors = _string_list(value, what)
    for i, entry in enumerate(value):
        if isinstance(entry, str) and not _CLASS_RE.fullmatch(entry):
            errors.append((f'"{entry}" is not a call class; expected lower-case letters,'
                           ' digits, "-" and "_", e.g. "national"', (i,)))  # fmt: skip
    if errors:
        raise Invalid(items=errors)
    return tuple(dict.fromkeys(value))


EXTENSION = Section(
    name="extension",
    kind="array",
    cls=ExtensionConfig,
    config_attr="extensions",
    label="extension",
    unique=("number",),
    doc="One phone user each.",
    fields=(
        Field("number", (str,), check_extension_number, default=REQUIRED,
              doc="extension number, 2-6 digits, quoted"),
        Field("name", (str,), check_name, default="", doc="display name"),
        Field("password", (str,), check_password, default=REQUIRED,
              doc="SIP digest password"),
        Field("email", (str,), check_email, default=None, doc="voicemail/notification address"),
        Field("classes", (list,), check_call_classes, expected="an array of strings",
              doc="call classes of [[route]]s this extension may dial (docs/trunks.md)"),
        Field("record", (str,), one_of(*RECORD_MODES),
              doc="record this extension's calls: never, always or on-demand (docs/recording.md)"),
        Field("pickup_group", (str,), check_pickup_group,
              doc="extensions of one group may pick up each other's ringing calls (*8)"),
    ),
)  # fmt: skip

SMTP = Section(
    name="switch.smtp",
    kind="table",
    cls=SmtpConfig,
    config_attr="smtp",
    doc="Mail server for voicemail e-mails.",
    fields=(
        Field("host", (str,), check_host, doc="SMTP server host name or IP address"),
        Field("port", (int,), int_range(1, 65535), doc="SMTP server port"),
        Field("from", (str,), check_email, attr="sender", doc="sender address of the e-mails"),
        Field("username", (str,), default=None, doc="login name, if the server wants one"),
        Field("password", (str,), default=None, doc="login password"),
        Field("starttls", (bool,), doc="upgrade the connection with STARTTLS"),
        Field("timeout", (int, float), float_range(1, 300), expected="a number of seconds",
              doc="seconds to wait for the server"),
    ),
    checks=(CrossCheck(("username", "password"), _smtp_login_pair),),
)  # fmt: skip

_SECONDS = "a number of seconds"

MENU = Section(
    name="menu",
    kind="table",
    cls=MenuBlock,
    config_attr="",
    doc="Plays a prompt and goes where the key the caller presses says.",
    fields=(
        Field("prompt", (str,), check_prompt, default=REQUIRED,
              doc="prompt name or audio file played (and repeated) to the caller"),
        Field("options", (dict,), check_options,
              expected='a table such as { "1" = "sales", "2" = "support" }',
              doc="key (0-9, *, #) -> block"),
        Field("dial_extensions", (bool,), doc="caller may dial an extension number"),
        Field("timeout", (int, float), float_range(1, 60), expected=_SECONDS,
              doc="seconds to wait for a key after the prompt"),
        Field("inter_digit_timeout", (int, float), float_range(1, 30), expected=_SECONDS,
              doc="seconds to wait for the next digit of an extension number"),
        Field("retries", (int,), int_range(0, 10),
              doc="times the prompt is repeated after no key or a wrong key"),
        Field("invalid_prompt", (str,), check_optional_prompt,
              doc='prompt after a wrong key ("" = none)'),
        Field("unknown_extension_prompt", (str,), check_optional_prompt,
              doc='prompt after a number that is no extension ("" = none)'),
        Field("on_timeout", (str,), doc='block when the retries are used up ("" = hang up)'),
    ),
    checks=(CrossCheck(("options", "dial_extensions"), _menu_offers_something),),
)  # fmt: skip

HOURS = Section(
    name="hours",
    kind="table",
    cls=HoursBlock,
    config_attr="",
    doc="Goes to one block during opening hours and to another outside them.",
    fields=(
        Field("schedule", (list,), check_schedule, default=REQUIRED,
              expected="an array of strings", doc='weekly hours, e.g. "mon-fri 09:00-18:00"'),
        Field("holidays", (list,), check_holidays, expected="an array of strings",
              doc='dates closed all day, "YYYY-MM-DD"'),
        Field("working_days", (list,), check_working_days, expected="an array of strings",
              doc='dates open at given hours, "YYYY-MM-DD HH:MM-HH:MM" or "YYYY-MM-DD"'),
        Field("open", (str,), default=REQUIRED, doc='block during opening hours ("" = hang up)'),
        Field("closed", (str,), default=REQUIRED, doc='block outside them ("" = hang up)'),
    ),
    checks=(CrossCheck(("schedule", "working_days"), _hours_ever_open),),
)  # fmt: skip

VOICEMAIL = Section(
    name="voicemail",
    kind="table",
    cls=VoicemailBlock,
    config_attr="",
    doc="Plays a greeting and records a message.",
    fields=(
        Field("box", (str,), check_box, doc="mailbox name (default: the block name)"),
        Field("greeting", (str,), check_prompt, doc="prompt name or audio file"),
        Field("greeting_only", (bool,), doc="play the greeting and hang up, record nothing"),
        Field("beep", (bool,), doc="beep before recording"),
        Field("max_seconds", (int,), int_range(5, 3600), doc="longest message (s)"),
        Field("silence_timeout", (int, float), float_range(0, 60), expected=_SECONDS,
              doc="seconds of silence that end the message (0 = never)"),
        Field("email", (list,), check_email_list, expected="an array of strings",
              doc="addresses the message is mailed to"),
    ),
)  # fmt: skip

PLAY = Section(
    name="play",
    kind="table",
    cls=PlayBlock,
    config_attr="",
    doc="Plays a prompt, then goes on.",
    fields=(
        Field("prompt", (str,), check_prompt, default=REQUIRED, doc="prompt name or audio file"),
        Field("next", (str,), doc='block after the prompt ("" = hang up)'),
    ),
)  # fmt: skip

DIAL = Section(
    name="dial",
    kind="table",
    cls=DialBlock,
    config_attr="",
    doc="Rings extensions together; the first to answer gets the call.",
    fields=(
        Field("targets", (list,), check_targets, default=REQUIRED,
              expected="an array of strings", doc='extension numbers, e.g. ["101", "102"]'),
        Field("timeout", (int,), int_range(5, 300), doc="seconds to ring"),
        Field("on_no_answer", (str,),
              doc='block when nobody answers, all are busy or unavailable ("" = hang up)'),
    ),
)  # fmt: skip

HANGUP = Section(
    name="hangup", kind="table", cls=HangupBlock, config_attr="", fields=(), doc="Hangs up."
)

SCRIPT = Section(
    name="script",
    kind="table",
    cls=ScriptBlock,
    config_attr="",
    doc="Runs a Python flow function.",
    fields=(
        Field("function", (str,), check_function, default=REQUIRED,
              doc='"module:function", an async def flow(call) -> next block name | None'),
        Field("next", (str,), doc='block when the function returns None ("" = hang up)'),
    ),
)  # fmt: skip

_TARGET = 'a block name, or "" to hang up'

QUEUE = Section(
    name="queue",
    kind="table",
    cls=QueueBlock,
    config_attr="",
    doc="Holds callers (music) while the ACD rings operators; the queue is the block name.",
    fields=(
        Field("members", (list,), check_targets, default=REQUIRED,
              expected="an array of strings",
              doc='the operators\' extension numbers, e.g. ["101", "102"]'),
        Field("strategy", (str,), one_of(*STRATEGIES), doc="who is rung: " + ", ".join(STRATEGIES)),
        Field("answer_timeout", (int, float), float_range(0, 600), expected=_SECONDS,
              doc="seconds one operator rings before it counts as missed (0 = until answered)"),
        Field("retry", (int, float), float_range(0, 3600), expected=_SECONDS,
              doc="seconds before an operator who missed is rung for the same caller again"),
        Field("ring_new_free", (bool,),
              doc="ring-all: ring operators who become free while the others still ring"),
        Field("wrap_up", (int, float), float_range(0, 3600), expected=_SECONDS,
              doc="seconds an operator rests after a call of this queue"),
        Field("music", (str,), check_music, doc="hold music name (media/music) or audio file"),
        Field("greeting", (str,), check_optional_prompt,
              doc='prompt played once when the caller joins ("" = none)'),
        Field("max_wait", (int, float), above_zero(86400), default=None, expected=_SECONDS,
              doc="seconds a caller waits at most before going to on_timeout"),
        Field("on_timeout", (str,), default=None, expected=_TARGET,
              doc="block after max_wait (default: next)"),
        Field("max_callers", (int,), int_range(1), default=None,
              doc="callers that may wait at once; one more goes to on_full"),
        Field("on_full", (str,), default=None, expected=_TARGET,
              doc="block for a caller who finds the queue full (default: next)"),
        Field("on_empty", (str,), default=None, expected=_TARGET,
              doc="block when no member is logged in (default: wait)"),
        Field("exit_key", (str,), check_dtmf_key, default=None,
              doc="key (0-9, *, #) that lets the caller leave the queue"),
        Field("exit_target", (str,), default=None, expected=_TARGET,
              doc="block the exit_key goes to (default: next)"),
        Field("announce_every", (int, float), float_range(10, 3600), default=None,
              expected=_SECONDS, doc="seconds between position / estimated wait announcements"),
        Field("auto_pause_after", (int,), int_range(1), default=None,
              doc="consecutive missed rings that pause an operator"),
        Field("priority", (int,), doc="callers of higher-priority queues are served first"),
        Field("next", (str,), expected=_TARGET,
              doc='block after leaving the queue without a target of its own ("" = hang up)'),
        Field("notify", (list,), check_notify_list, expected="an array of strings",
              doc="supervisors told about missed calls: e-mail addresses or http(s) URLs"),
        Field("notify_missed_rings", (bool,),
              doc="also tell them about every ring an operator did not answer"),
        Field("record", (str,), one_of(*RECORD_MODES),
              doc="record this queue's calls: never, always or on-demand (docs/recording.md)"),
    ),
    checks=(
        CrossCheck(("exit_target", "exit_key"),
                   _requires("exit_target", "exit_key", 'the key that leads there, e.g. "0"')),
        CrossCheck(("on_timeout", "max_wait"),
                   _requires("on_timeout", "max_wait", "the seconds after which it applies")),
        CrossCheck(("on_full", "max_callers"),
                   _requires("on_full", "max_callers", "the number of callers that is full")),
        CrossCheck(("notify_missed_rings", "notify"),
                   _requires("notify_missed_rings", "notify", "the addresses to tell")),
    ),
)  # fmt: skip

BLOCK = Section(
    name="block",
    kind="map",
    cls=dict,  # unused: each variant builds its own dataclass
    config_attr="blocks",
    label="block",
    fields=(),
    item_name=check_block_name,
    item_attr="name",
    variant_key="type",
    variants=(MENU, HOURS, VOICEMAIL, PLAY, DIAL, HANGUP, SCRIPT, QUEUE),
    doc="Call flow blocks, [block.NAME], chosen by type.",
)

FEATURES = Section(
    name="features",
    kind="table",
    cls=FeaturesConfig,
    config_attr="features",
    doc="Codes operators dial from their own phone; queue login by registration.",
    fields=(
        Field("queue_login", (str,), check_feature_code,
              doc='code that toggles the caller\'s queue login ("" = off)'),
        Field("queue_pause", (str,), check_feature_code,
              doc='code that toggles the caller\'s pause ("" = off)'),
        Field("login_by_registration", (bool,),
              doc="an operator is logged in while their phone is registered"),
        Field("record_toggle", (str,), check_incall_code,
              doc='code dialled during a call that starts/stops its recording ("" = off)'),
        Field("blind_transfer", (str,), check_incall_code,
              doc='code dialled during a call, then the target: blind transfer ("" = off)'),
        Field("attended_transfer", (str,), check_incall_code,
              doc='code dialled during a call, then the target: attended transfer ("" = off)'),
        Field("pickup", (str,), check_feature_code,
              doc='code that answers a call ringing in the caller\'s pickup group ("" = off)'),
        Field("pickup_directed", (str,), check_feature_code,
              doc='prefix + extension answers a call ringing there, e.g. "**" ("" = off)'),
    ),
    checks=(
        CrossCheck(("queue_login", "queue_pause"), _feature_codes_differ),
        CrossCheck(("record_toggle", "blind_transfer", "attended_transfer"), _incall_codes_differ),
    ),
)  # fmt: skip

RECORDING = Section(
    name="recording",
    kind="table",
    cls=RecordingConfig,
    config_attr="recording",
    doc="Call recordings; who is recorded is the record key of extensions and queues.",
    fields=(
        Field("retention_days", (int,), int_range(0, 36500),
              doc="days a recording is kept before it is deleted (0 = forever)"),
        Field("announce", (bool,),
              doc='both parties hear "this call is recorded" before recording starts'),
    ),
)  # fmt: skip


def check_bind_host(value: str, ctx: Context) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(
            f'"{value}" is not an IP address; expected e.g. "127.0.0.1" (this machine only) '
            'or "0.0.0.0" (every interface)'
        ) from None
    return value


def check_tokens(value: list[Any], ctx: Context) -> tuple[str, ...]:
    out: list[str] = []
    errors: list[tuple[str, KeyPath]] = []
    for i, token in enumerate(value):
        if not isinstance(token, str):
            errors.append((f"entry {i + 1} is {describe_type(token)}; expected a string", (i,)))
        elif len(token) < 24 or not token.isprintable() or " " in token:
            errors.append(
                (
                    f"entry {i + 1} is too weak; expected at least 24 printable characters "
                    "without spaces (e.g. from `openssl rand -hex 16`)",
                    (i,),
                )
            )
        else:
            out.append(token)
    if errors:
        raise Invalid(items=errors)
    return tuple(out)


def check_clock_time(value: str, ctx: Context) -> str:
    if value == "":
        return value
    hh, sep, mm = value.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2):
        raise Invalid(f'"{value}" is not a time; expected "HH:MM" (e.g. "08:00") or "" (off)')
    if not (0 <= int(hh) <= 23 and 0 <= int(mm) <= 59):
        raise Invalid(f'"{value}" is not a time of day; expected "00:00" to "23:59"')
    return f"{int(hh):02d}:{mm}"


def check_secret(value: str, ctx: Context) -> str:
    if value and len(value) < 16:
        raise Invalid('is too short; expected at least 16 characters, or "" to generate one')
    return value


HTTP = Section(
    name="http",
    kind="table",
    cls=HttpConfig,
    config_attr="http",
    doc="The HTTP API, event stream and dashboard.",
    fields=(
        Field("enabled", (bool,), doc="serve the API and dashboard"),
        Field("host", (str,), check_bind_host,
              doc='address to listen on ("127.0.0.1" = this machine only)'),
        Field("port", (int,), int_range(1, 65535), doc="TCP port"),
        Field("tokens", (list,), check_tokens, expected="an array of strings",
              doc="bearer tokens allowed to use the API (none: one is generated)"),
        Field("max_failures", (int,), int_range(1, 1000),
              doc="bad tokens from one address before it is refused for a while"),
        Field("ban_seconds", (int, float), float_range(1, 86400), expected=_SECONDS,
              doc="how long such an address is refused"),
    ),
)  # fmt: skip

NOTIFY = Section(
    name="notify",
    kind="table",
    cls=NotifyConfig,
    config_attr="notify",
    doc="Missed-call notifications and daily digests to queue supervisors.",
    fields=(
        Field("webhook_secret", (str,), check_secret,
              doc='HMAC key signing webhook bodies ("" = generated)'),
        Field("webhook_timeout", (int, float), float_range(1, 120), expected=_SECONDS,
              doc="seconds one webhook POST may take"),
        Field("digest_time", (str,), check_clock_time,
              doc='local time of the daily digest ("" = off)'),
        Field("alerts", (list,), check_notify_list, expected="an array of strings",
              doc="e-mail addresses / http(s) URLs told about security events"),
    ),
)  # fmt: skip


def check_networks(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """CIDR networks ("192.0.2.0/24", "2001:db8::/48") or single addresses, normalised."""
    errors = _string_list(value, 'a network in quotes, e.g. "192.0.2.0/24"')
    out: list[str] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            continue
        try:
            out.append(str(ipaddress.ip_network(entry.strip())))
            continue
        except ValueError:
            pass
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            errors.append((f'"{entry}" is not a network; expected an address or CIDR network,'
                           ' e.g. "192.0.2.0/24" or "2001:db8::/48"', (i,)))  # fmt: skip
        else:
            errors.append((f'"{entry}" has host bits set; expected "{network}"', (i,)))
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(out)


def check_user_agents(value: list[Any], ctx: Context) -> tuple[str, ...]:
    errors = _string_list(value, 'a User-Agent fragment in quotes, e.g. "friendly-scanner"')
    for i, entry in enumerate(value):
        if isinstance(entry, str) and len(entry.strip()) < 3:
            errors.append((f'"{entry}" is too short to match safely; expected at least 3'
                           " characters", (i,)))  # fmt: skip
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(v.strip() for v in value)


def _connections_consistent(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["max_tcp_connections_per_source"] > v["max_tcp_connections"]:
        yield (
            "max_tcp_connections_per_source",
            f"{v['max_tcp_connections_per_source']} is more than max_tcp_connections"
            f" ({v['max_tcp_connections']}); expected at most that",
        )


_PER_SECOND = "a number per second"

SECURITY = Section(
    name="security",
    kind="table",
    cls=SecurityConfig,
    config_attr="security",
    doc="Defences of the SIP edge: bans, rate limits, size limits, scanner filtering.",
    fields=(
        Field("ban_after", (int,), int_range(0, 1000),
              doc="failed digest attempts from one source before it is banned (0 = never)"),
        Field("ban_window", (int, float), float_range(1, 86400), expected=_SECONDS,
              doc="seconds in which those failures must fall"),
        Field("ban_seconds", (int, float), float_range(1, 30 * 86400), expected=_SECONDS,
              doc="how long a banned source is ignored"),
        Field("allow", (list,), check_networks, expected="an array of strings",
              doc="networks never banned nor rate limited (the office)"),
        Field("max_messages_per_second", (int, float), float_range(0, 1e6),
              expected=_PER_SECOND, doc="SIP messages per second from one source (0 = off)"),
        Field("message_burst", (int,), int_range(0, 10**7),
              doc="messages one source may send at once (0 = twice the rate)"),
        Field("max_tcp_connects_per_second", (int, float), float_range(0, 1e5),
              expected=_PER_SECOND, doc="new TCP connections per second from one source (0 = off)"),
        Field("tcp_connect_burst", (int,), int_range(0, 10**6),
              doc="new TCP connections one source may open at once (0 = twice the rate)"),
        Field("max_tcp_connections", (int,), int_range(1, 1_000_000),
              doc="open TCP connections in all"),
        Field("max_tcp_connections_per_source", (int,), int_range(1, 1_000_000),
              doc="open TCP connections from one source"),
        Field("max_message_size", (int,), int_range(1500, 65535),
              doc="largest SIP message accepted (bytes)"),
        Field("max_headers", (int,), int_range(20, 1000), doc="most header lines in a message"),
        Field("drop_user_agents", (list,), check_user_agents, expected="an array of strings",
              doc="User-Agent fragments of scanners: such requests are dropped"),
    ),
    checks=(
        CrossCheck(("max_tcp_connections", "max_tcp_connections_per_source"),
                   _connections_consistent),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- trunks, routes
# [[trunk]] and [[route]] (docs/trunks.md); the runtime is softswitch/sip/trunk.py and
# softswitch/routes.py.

_TRUNK_NAME_EXPECTED = 'expected letters, digits, "-" and "_" (at most 64), e.g. "provider"'
_URI_USER_RE = re.compile(r"[A-Za-z0-9+._~-]{1,64}")
_DID_RE = re.compile(r"\+?[A-Za-z0-9*#._-]{1,32}")
_DIAL_RE = re.compile(r"[+0-9*#]{1,20}")
_CODECS = {"pcmu": "PCMU", "pcma": "PCMA", "g722": "G722", "gsm": "GSM", "ilbc": "iLBC",
           "speex": "speex"}  # fmt: skip


def check_trunk_name(value: str, ctx: Context) -> str:
    if not _BLOCK_NAME_RE.fullmatch(value):
        raise Invalid(f'"{value}" is not a trunk or route name; {_TRUNK_NAME_EXPECTED}')
    return value


def check_optional_host(value: str, ctx: Context) -> str:
    if not value:
        return value
    return _host_name_or_ip(
        value, 'is not a host name or IP address; expected e.g. "sip.provider.example"'
    )


def check_proxy(value: str, ctx: Context) -> str:
    """Empty, or "host[:port]" (an IPv6 address in brackets)."""
    if not value:
        return value
    expected = 'expected "host" or "host:port", e.g. "sip.provider.example:5060"'
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = value, ""
        bracket = "]"
    if not bracket or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise Invalid(f'"{value}" is not a proxy address; {expected}')
    _host_name_or_ip(host, f"is not a host name or IP address; {expected}")
    return value


def check_uri_user(value: str, ctx: Context) -> str:
    if value and not _URI_USER_RE.fullmatch(value):
        raise Invalid(f'"{value}" cannot be put in a SIP URI; expected letters, digits and'
                      ' "+", ".", "_", "~", "-" (at most 64)')  # fmt: skip
    return value


def check_secret_text(value: str, ctx: Context) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or '"' in value:
        raise Invalid("contains control characters or a double quote; expected plain text")
    if len(value) > 128:
        raise Invalid(f"is {len(value)} characters long; expected at most 128")
    return value


def check_trunk_allow(value: list[Any], ctx: Context) -> tuple[str, ...]:
    """CIDR networks ("192.0.2.0/24"), addresses, or "address:port" ("192.0.2.1:5060",
    "[2001:db8::1]:5060"), normalised."""
    expected = 'expected a network or address in quotes, e.g. "192.0.2.0/24" or "192.0.2.1:5060"'
    errors = _string_list(value, expected)
    out: list[str] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            continue
        text = entry.strip()
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
            continue
        except ValueError:
            pass
        host, port = "", ""
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        try:
            addr = ipaddress.ip_address(host)
            if not (port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError
        except ValueError:
            errors.append((f'"{entry}" is not a network or address:port; {expected}', (i,)))
            continue
        out.append(f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}")
    if errors:
        raise Invalid(items=sorted(errors, key=lambda e: e[1]))
    return tuple(out)


def check_numbers(value: dict[str, Any], ctx: Context) -> dict[str, str]:
    """DID -> entry block name (that the block exists is a global check)."""
    errors: list[tuple[str, KeyPath]] = []
    for did, target in value.items():
        if not _DID_RE.fullmatch(did):
            errors.append((f'"{did}" is not a number; expected digits with an optional'
                           ' leading "+", e.g. "+74951234567"', (did,)))  # fmt: skip
        elif not isinstance(target, str) or not target:
            errors.append((f'number "{did}" is {describe_type(target)}; expected the name of'
                           f' the block its calls start at, e.g. "{did}" = "main"',
                           (did,)))  # fmt: skip
    if errors:
        raise Invalid(items=errors)
    return dict(value)


def check_codecs(value: list[Any], ctx: Context) -> tuple[str, ...]:
    known = _or_list(list(_CODECS.values()))
    errors = _string_list(value, f"a codec name, one of {known}")
    out: list[str] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            continue
        name = _CODECS.get(entry.strip().lower())
        if name is None:
            errors.append((f'"{entry}" is not a codec the media workers have; expected'
                           f" {known}", (i,)))  # fmt: skip
        elif name not in out:
            out.append(name)
    if errors:
        raise Invalid(items=errors)
    return tuple(out)


def _digits(most: int, example: str) -> Checker:
    def check(value: str, ctx: Context) -> str:
        if value and not re.fullmatch(rf"[0-9]{{1,{most}}}", value):
            raise Invalid(f'"{value}" is not {most} digits or fewer; expected e.g. "{example}"')
        return value

    return check


def _trunk_consistent(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["register"] and not v["host"]:
        yield ("register", "a registration needs the provider: expected host as well")
    if v["register"] and not (v["username"] and v["password"]):
        yield ("register", "a registration needs credentials: expected username and password")
    if not v["host"] and not v["allow"] and not v["anonymous"]:
        yield ("host", "the trunk names no provider and no source of calls; expected host,"
                       " allow or anonymous = true")  # fmt: skip


def _national_needs_country(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if v["caller_id_format"] == "national" and not v["country_code"]:
        yield ("country_code", 'caller_id_format = "national" needs the country code;'
                               ' expected e.g. country_code = "7"')  # fmt: skip


TRUNK = Section(
    name="trunk",
    kind="array",
    cls=TrunkConfig,
    config_attr="trunks",
    label="trunk",
    unique=("name",),
    doc="SIP providers: registration, where their calls come from, numbers (DIDs).",
    fields=(
        Field("name", (str,), check_trunk_name, default=REQUIRED,
              doc="name used by routes, logs and call records"),
        Field("host", (str,), check_optional_host,
              doc="the provider's SIP domain or address (request URIs, registration)"),
        Field("port", (int,), int_range(1, 65535), doc="the provider's SIP port"),
        Field("proxy", (str,), check_proxy,
              doc='"host[:port]" requests are sent to ("" = host:port)'),
        Field("transport", (str,), one_of("udp", "tcp"), doc="udp or tcp"),
        Field("username", (str,), check_uri_user,
              doc="account name: registration, From of outside calls by default"),
        Field("auth_username", (str,), check_uri_user,
              doc='digest user name if it is not username ("" = username)'),
        Field("password", (str,), check_secret_text, doc="digest password"),
        Field("realm", (str,), check_secret_text,
              doc='realm whose challenges are answered ("" = any)'),
        Field("register", (bool,), doc="keep a registration with the provider"),
        Field("expires", (int,), int_range(60, 86400), doc="registration time asked for (s)"),
        Field("allow", (list,), check_trunk_allow, expected="an array of strings",
              doc='where its calls come from: "CIDR" or "address:port" (default: host)'),
        Field("anonymous", (bool,),
              doc="accept calls to its numbers from any source, unauthenticated"),
        Field("numbers", (dict,), check_numbers, expected="a table",
              doc='DID -> block its calls start at, e.g. { "+74951234567" = "main" }'),
        Field("codecs", (list,), check_codecs, expected="an array of strings",
              doc="codecs offered to the provider, in order (default: the workers' own)"),
        Field("caller_id_format", (str,), one_of("e164", "international", "national", "as-is"),
              doc="how numbers are written to/read from the provider"),
        Field("country_code", (str,), _digits(3, "7"), doc="country code (national format)"),
        Field("national_prefix", (str,), _digits(4, "8"),
              doc="prefix of national numbers (national format)"),
        Field("international_prefix", (str,), _digits(4, "810"),
              doc="prefix of foreign numbers the provider sends"),
        Field("max_calls", (int,), int_range(0, 100000),
              doc="concurrent calls through the trunk, both ways (0 = no limit)"),
        Field("response_timeout", (int, float), float_range(1, 60), expected=_SECONDS,
              doc="seconds without any answer from the provider before the next trunk"),
    ),
    checks=(
        CrossCheck(("register", "host", "username", "password", "allow", "anonymous"),
                   _trunk_consistent),
        CrossCheck(("caller_id_format", "country_code"), _national_needs_country),
    ),
)  # fmt: skip


def check_prefixes(value: list[Any], ctx: Context) -> tuple[str, ...]:
    what = 'a number prefix in quotes, e.g. "8495"'
    errors = _string_list(value, what)
    for i, entry in enumerate(value):
        if isinstance(entry, str) and not _DIAL_RE.fullmatch(entry):
            errors.append((f'"{entry}" is not a number prefix; expected {what}', (i,)))
    if errors:
        raise Invalid(items=errors)
    return tuple(value)


def check_pattern(value: str, ctx: Context) -> str:
    if not value:
        return value
    if len(value) > 200:
        raise Invalid(f"is {len(value)} characters long; expected at most 200")
    try:
        re.compile(value)
    except re.error as e:
        raise Invalid(f"is not a regular expression ({e}); expected e.g."
                      ' "8[0-9]{10}"') from None  # fmt: skip
    return value


def check_prepend(value: str, ctx: Context) -> str:
    if value and not _DIAL_RE.fullmatch(value):
        raise Invalid(f'"{value}" is not digits; expected e.g. "+7" or "8"')
    return value


def check_caller_id(value: str, ctx: Context) -> str:
    if value and not re.fullmatch(r"\+?[0-9]{1,20}", value.replace("{ext}", "0")):
        raise Invalid(f'"{value}" is not a number; expected e.g. "+74951234567" or'
                      ' "+7495123{ext}" ({ext} is the caller\'s extension)')  # fmt: skip
    return value


def check_route_trunks(value: list[Any], ctx: Context) -> tuple[str, ...]:
    if not value:
        raise Invalid('the list is empty; expected the trunks to try, in order, e.g. ["main"]')
    errors = _string_list(value, "a trunk name in quotes")
    if errors:
        raise Invalid(items=errors)
    return tuple(value)


def check_call_class(value: str, ctx: Context) -> str:
    if not _CLASS_RE.fullmatch(value):
        raise Invalid(f'"{value}" is not a call class; expected e.g. "local", "national" or'
                      ' "international"')  # fmt: skip
    return value


def _route_matches_something(v: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if not v["prefixes"] and not v["pattern"]:
        yield ("prefixes", "the route matches no number; expected prefixes or pattern")


ROUTE = Section(
    name="route",
    kind="array",
    cls=RouteConfig,
    config_attr="routes",
    label="route",
    unique=("name",),
    doc="Outside calls: which dialled numbers go over which trunks, for whom.",
    fields=(
        Field("name", (str,), check_trunk_name, default=REQUIRED, doc="name for logs"),
        Field("prefixes", (list,), check_prefixes, expected="an array of strings",
              doc="the dialled number starts with one of these"),
        Field("pattern", (str,), check_pattern,
              doc="or matches this regular expression (the whole number)"),
        Field("strip", (int,), int_range(0, 20), doc="leading characters removed"),
        Field("prepend", (str,), check_prepend, doc="then put in front"),
        Field("trunks", (list,), check_route_trunks, default=REQUIRED,
              expected="an array of strings", doc="trunks tried in order (next on 5xx/timeout)"),
        Field("class", (str,), check_call_class, default=REQUIRED, attr="call_class",
              doc="call class an extension needs in its classes to use the route"),
        Field("caller_id", (str,), check_caller_id,
              doc='number presented; {ext} = the caller\'s extension ("" = see docs)'),
        Field("max_calls_per_extension", (int,), int_range(0, 1000),
              doc="outside calls one extension may have at once (0 = no limit)"),
        Field("max_calls_per_hour", (int,), int_range(0, 100000),
              doc="calls one extension may place over this route per hour (0 = no limit)"),
        Field("ring_timeout", (int,), int_range(5, 600), doc="seconds the far end may ring"),
    ),
    checks=(CrossCheck(("prefixes", "pattern"), _route_matches_something),),
)  # fmt: skip


def _check_trunks(built: Mapping[str, Any], ctx: Context) -> Iterator[tuple[Any, ...]]:
    """Trunk numbers name blocks; routes name trunks that can be called."""
    blocks: dict[str, Block] = built.get("block", {})
    trunks: tuple[TrunkConfig, ...] = built.get("trunk", ())
    by_name = {t.name: t for t in trunks}
    for n, trunk in enumerate(trunks):
        for did, target in trunk.numbers.items():
            if target not in blocks:
                yield (("trunk", n, "numbers", did), _unknown_block(target, blocks, hangup=False))
    for n, route in enumerate(built.get("route", ())):
        for i, name in enumerate(route.trunks):
            trunk = by_name.get(name)
            if trunk is None:
                known = _or_list(list(by_name)) if by_name else "none is configured"
                yield (
                    ("route", n, "trunks", i),
                    f'"{name}" is not a configured trunk; expected one of {known}',
                    ("route", n, "trunks"),
                )
            elif not trunk.host:
                yield (
                    ("route", n, "trunks", i),
                    f'trunk "{name}" has no host to send calls to; expected a trunk with host',
                    ("route", n, "trunks"),
                )


SCHEMA = Schema(
    sections=(
        SWITCH,
        SMTP,
        EXTENSION,
        BLOCK,
        FEATURES,
        HTTP,
        NOTIFY,
        SECURITY,
        TRUNK,
        ROUTE,
        RECORDING,
    ),
    checks=(_check_flows, _check_features, _check_trunks, _check_hold_music),
)


# --------------------------------------------------------------------------- line scanner


class _ScanError(Exception):
    pass


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\n#]*")


class _LineScanner:
    """Maps key paths to the line they are written on.

    Tracks `[table]` / `[[array]]` headers (counting array items, so the second
    `[[extension]]`'s keys get `("extension", 1, ...)`), dotted keys, inline tables and
    array elements (`("switch", "listen", 2)`). Runs on text tomllib has accepted; if it
    still gets confused it returns what it has, and lookups fall back to a parent's line."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.arrays: dict[KeyPath, int] = {}  # array-of-tables path -> items seen

    def scan(self) -> dict[KeyPath, int]:
        try:
            current: KeyPath = ()
            while True:
                self._skip(newlines=True)
                if self.i >= len(self.s):
                    break
                start = self.i
                if self.s[self.i] == "[":
                    current = self._header()
                else:
                    self._keyval(current)
                if self.i == start:
                    break
        except (_ScanError, IndexError, ValueError, tomllib.TOMLDecodeError):
            pass
        return self.lines

    # -- low level
    def _advance_to(self, j: int) -> None:
        self.line += self.s.count("\n", self.i, j)
        self.i = j

    def _skip(self, newlines: bool) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            elif c == "\n" and newlines:
                self.i += 1
                self.line += 1
            else:
                break

    def _record(self, path: KeyPath, line: int) -> None:
        for k in range(1, len(path)):
            self.lines.setdefault(path[:k], line)
        self.lines.setdefault(path, line)

    # -- grammar
    def _key(self) -> list[str]:
        parts: list[str] = []
        s = self.s
        while True:
            self._skip(newlines=False)
            c = s[self.i]
            if c in "\"'":
                end = self._string_end(self.i)
                raw = s[self.i : end]
                parts.append(tomllib.loads(f"k = {raw}")["k"])
                self.i = end
            else:
                m = _BARE_KEY.match(s, self.i)
                if not m:
                    raise _ScanError(self.i)
                parts.append(m.group())
                self.i = m.end()
            self._skip(newlines=False)
            if self.i < len(s) and s[self.i] == ".":
                self.i += 1
                continue
            return parts

    def _header(self) -> KeyPath:
        line = self.line
        is_array = self.s.startswith("[[", self.i)
        self.i += 2 if is_array else 1
        keys = self._key()
        self.i += 2 if is_array else 1
        path: KeyPath = ()
        for n, k in enumerate(keys):
            path = (*path, k)
            if is_array and n == len(keys) - 1:
                count = self.arrays.get(path, 0)
                self.arrays[path] = count + 1
                path = (*path, count)
            elif path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        self._record(path, line)
        self.lines[path] = line
        return path

    def _keyval(self, prefix: KeyPath) -> None:
        line = self.line
        path = (*prefix, *self._key())
        self._record(path, line)
        self._skip(newlines=False)
        if self.s[self.i] != "=":
            raise _ScanError(self.i)
        self.i += 1
        self._skip(newlines=False)
        self._value(path)

    def _string_end(self, i: int) -> int:
        s = self.s
        for quote in ('"""', "'''"):
            if s.startswith(quote, i):
                j = i + 3
                while True:
                    if quote == '"""' and s[j] == "\\":
                        j += 2
                    elif s.startswith(quote, j):
                        j += 3
                        extra = 0
                        while extra < 2 and j < len(s) and s[j] == quote[0]:
                            j += 1
                            extra += 1
                        return j
                    else:
                        j += 1
        quote = s[i]
        j = i + 1
        while s[j] != quote:
            j += 2 if (quote == '"' and s[j] == "\\") else 1
        return j + 1

    def _value(self, path: KeyPath) -> None:
        s = self.s
        c = s[self.i]
        if c in "\"'":
            self._advance_to(self._string_end(self.i))
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if s[self.i] == "]":
                    self.i += 1
                    return
                self._record((*path, index), self.line)
                self._value((*path, index))
                index += 1
                self._skip(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self._skip(newlines=True)
                if s[self.i] == "}":
                    self.i += 1
                    return
                self._keyval(path)
                self._skip(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        else:
            m = _SCALAR.match(s, self.i)
            assert m is not None  # the pattern matches the empty string
            self.i = m.end()


def key_lines(text: str) -> dict[KeyPath, int]:
    """Key path -> line number for a TOML text that tomllib accepts."""
    return _LineScanner(text).scan()


# --------------------------------------------------------------------------- engine


def _display(path: KeyPath) -> str:
    """("extension", 1, "password") -> "extension[2].password" (items count from 1)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += ("." if out else "") + part
    return out


def _suggest(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"? ' if close else ""


def _dataclass_default(cls: Any, attr: str) -> Any:
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == attr:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
    raise LookupError(f"{cls!r} has no default for {attr!r}; declare one in the Field")


@dataclass
class _Validator:
    file: str
    lines: dict[KeyPath, int]
    base_dir: Path
    problems: list[ConfigProblem] = field(default_factory=list)
    # section name -> its sub-table keys ("switch" -> ["smtp"])
    subtables: dict[str, list[str]] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return 1

    def report(self, path: KeyPath, message: str, *, key_path: KeyPath | None = None) -> None:
        display = _display(path if key_path is None else key_path) or "config"
        self.problems.append(ConfigProblem(self.file, self.line_of(path), display, message))

    # -- whole document
    def run(self, data: dict[str, Any], schema: Schema) -> dict[str, Any] | None:
        tops = list(dict.fromkeys(s.path[0] for s in schema.sections))
        self.subtables = {}
        for s in schema.sections:
            if len(s.path) > 1:
                self.subtables.setdefault(".".join(s.path[:-1]), []).append(s.path[-1])
        for key in data:
            if key not in tops:
                allowed = ", ".join(s.header for s in schema.sections)
                self.report(
                    (key,),
                    f"unknown section; {_suggest(key, tops)}expected one of {allowed}",
                )
        built: dict[str, Any] = {}
        ok = not self.problems
        for section in schema.sections:
            raw: Any = data
            for part in section.path:
                raw = raw.get(part) if isinstance(raw, dict) else None
            value = self.section(section, raw)
            if value is None:
                ok = False
            else:
                built[section.name] = value
        if ok:
            ctx = Context(self.base_dir, data)
            for check in schema.checks:
                for path, message, *key_path in check(built, ctx):
                    self.report(path, message, key_path=key_path[0] if key_path else None)
        return built if ok and not self.problems else None

    def section(self, section: Section, raw: Any) -> Any:
        """The built value of a section, or None if it had problems."""
        path: KeyPath = section.path
        if raw is None:
            if section.required:
                self.report(path, f"missing section; expected a {section.header} section")
                return None
            raw = {} if section.kind != "array" else []
        if section.kind == "table":
            if not isinstance(raw, dict):
                return self._wrong_section(section, raw)
            return self.table(section, raw, path)
        if section.kind == "array":
            if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                return self._wrong_section(section, raw)
            items = [self.item(section, r, (*path, n)) for n, r in enumerate(raw)]
            unique_ok = self._unique(section, raw)
            if not unique_ok or any(i is None for i in items):
                return None
            return tuple(items)
        # map
        if not isinstance(raw, dict) or not all(isinstance(r, dict) for r in raw.values()):
            return self._wrong_section(section, raw)
        out: dict[str, Any] = {}
        ok = True
        for name, item in raw.items():
            if section.item_name is not None:
                try:
                    section.item_name(name, Context(self.base_dir, item))
                except Invalid as e:
                    for message, _ in e.items:
                        self.report((*path, name), message)
                    ok = False
            value = self.item(section, item, (*path, name), name)
            ok = ok and value is not None
            out[name] = value
        return out if ok else None

    def _wrong_section(self, section: Section, raw: Any) -> None:
        got = describe_type(raw)
        if section.kind == "array" and isinstance(raw, dict):
            got = f"a table ([{section.name}]); write each item as {section.header}"
        elif section.kind == "table" and isinstance(raw, list):
            got = f"an array; write it once as {section.header}, not [[{section.name}]]"
        kind = {"table": "a table", "array": "an array of tables", "map": "tables"}[section.kind]
        self.report(section.path, f"expected {kind} written {section.header}, got {got}")
        return None

    def item(self, section: Section, raw: dict[str, Any], path: KeyPath, name: str = "") -> Any:
        """One item of an array/map section (or the table itself), dispatching on
        `variant_key` when the section has variants; the built object or None."""
        extra = {section.item_attr: name} if section.item_attr else {}
        if not section.variants:
            return self.table(section, raw, path, extra=extra)
        key, label = section.variant_key, section.label or section.name
        choices = [v.name for v in section.variants]
        if key not in raw:
            self.report(
                (*path, key), f"required key is missing; expected the {label} {key}: "
                + _or_list(choices)
            )  # fmt: skip
            return None
        value = raw[key]
        if not isinstance(value, str):
            self.report(
                (*path, key),
                f"expected a string, got {describe_type(value)}; expected {_or_list(choices)}",
            )
            return None
        variant = next((v for v in section.variants if v.name == value), None)
        if variant is None:
            self.report(
                (*path, key),
                f'unknown {label} {key} "{value}"; {_suggest(value, choices)}expected'
                f" {_or_list(choices)}",
            )
            return None
        return self.table(variant, raw, path, known=(key,), extra=extra)

    def _unique(self, section: Section, raw: list[dict[str, Any]]) -> bool:
        """Report items repeating a `unique` key, on the repeat's line; False if any."""
        ok = True
        label = section.label or section.name
        for key in section.unique:
            first: dict[Any, int] = {}
            for n, item in enumerate(raw):
                value = item.get(key)
                if value is None or isinstance(value, dict | list):
                    continue
                if value in first:
                    first_line = self.line_of((section.name, first[value], key))
                    self.report(
                        (section.name, n, key),
                        f'duplicate {label} {key} "{value}": already used by the {label} on'
                        f" line {first_line}; expected every {label} to have its own {key}",
                    )
                    ok = False
                else:
                    first[value] = n
        return ok

    def table(
        self,
        section: Section,
        raw: dict[str, Any],
        path: KeyPath,
        *,
        known: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """Check one table against the section's fields; the built object or None.

        `known`: keys handled by the caller (a variant key); `extra`: more constructor
        arguments (a map item's name)."""
        fields = {f.key: f for f in section.fields}
        subs = self.subtables.get(section.name, []) if section.kind == "table" else []
        ok = True
        suggested: set[str] = set()
        for key in raw:
            if key not in fields and key not in known and key not in subs:
                close = difflib.get_close_matches(key, [*fields, *subs], n=1, cutoff=0.6)
                suggested.update(close)
                hint = f'did you mean "{close[0]}"? ' if close else ""
                allowed = ", ".join([*known, *fields]) or "none"
                if known:
                    allowed = f'allowed keys for {known[0]} = "{section.name}": {allowed}'
                else:
                    allowed = f"allowed keys: {allowed}"
                if subs:
                    allowed += "; tables: " + ", ".join(f"[{section.name}.{t}]" for t in subs)
                self.report((*path, key), f"unknown key; {hint}{allowed}")
                ok = False
        ctx = Context(self.base_dir, raw)
        values: dict[str, Any] = {}
        for f in section.fields:
            fpath = (*path, f.key)
            if f.key not in raw:
                if f.default is REQUIRED:
                    # a misspelling of it was reported above: one fix, so one message
                    if f.key not in suggested:
                        what = f.expected or " or ".join(_type_name(t) for t in f.types)
                        self.report(fpath, f"required key is missing; expected {what}: {f.doc}")
                    ok = False
                elif f.default is FROM_DATACLASS:
                    defaults = tuple(_dataclass_default(section.cls, a) for a in f.attrs)
                    values[f.key] = defaults[0] if len(defaults) == 1 else defaults
                else:
                    values[f.key] = (
                        f.check(f.default, ctx) if f.check and f.default is not None else f.default
                    )
                continue
            value = raw[f.key]
            if not _is_type(value, f.types):
                what = f.expected or " or ".join(_type_name(t) for t in f.types)
                self.report(
                    fpath,
                    f"expected {what}, got {describe_type(value)}"
                    + _type_hint(f.key, value, f.types),
                )
                ok = False
                continue
            try:
                values[f.key] = f.check(value, ctx) if f.check else value
            except Invalid as e:
                for message, at in e.items:
                    self.report((*fpath, *at), message, key_path=fpath)
                ok = False
        for check in section.checks:
            if all(k in values for k in check.keys):
                for key, message in check.check(values):
                    self.report((*path, key), message)
                    ok = False
        if not ok:
            return None
        kwargs: dict[str, Any] = dict(extra or {})
        for f in section.fields:
            if len(f.attrs) == 1:
                kwargs[f.attrs[0]] = values[f.key]
            else:
                kwargs.update(zip(f.attrs, values[f.key], strict=True))
        return section.cls(**kwargs)


# --------------------------------------------------------------------------- entry points


def default_config_path() -> Path:
    """The demo config shipped inside the package (`softswitch/default.toml`)."""
    return Path(__file__).resolve().parent / "default.toml"


def _syntax_line(text: str, message: str) -> int:
    """The line of a TOMLDecodeError.

    tomllib (3.11) only gives "(at line N, column M)" or "(at end of document)"; for the
    latter (duplicate keys, unterminated strings) find the first prefix of the text that
    fails with the same message, which is where the mistake is."""
    m = re.search(r"\(at line (\d+), column \d+\)$", message)
    if m:
        return int(m.group(1))
    lines = text.splitlines()
    if len(lines) <= 5000:
        for n in range(1, len(lines) + 1):
            try:
                tomllib.loads("\n".join(lines[:n]))
            except tomllib.TOMLDecodeError as e:
                if str(e) == message:
                    return n
    return max(len(lines), 1)


def validate(
    text: str,
    *,
    file: str = "<config>",
    base_dir: Path | None = None,
    schema: Schema = SCHEMA,
) -> dict[str, Any]:
    """Parse and check TOML text against `schema`: the built value of each section by
    name, or `ConfigError` with every problem. Split from `parse_config` so a schema can
    be exercised on its own (tests, future sub-configs)."""
    base = (base_dir or Path.cwd()).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        line = _syntax_line(text, message)
        detail = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", message)
        m = re.search(r"column (\d+)\)$", message)
        where = f" at column {m.group(1)}" if m else ""
        detail = detail[:1].lower() + detail[1:]
        if detail.startswith("cannot overwrite") or detail.startswith("cannot declare"):
            detail += " (a key or table written twice?)"
        raise ConfigError(
            [ConfigProblem(file, line, "syntax", f"{detail}{where}; expected valid TOML")]
        ) from None
    validator = _Validator(file=file, lines=key_lines(text), base_dir=base)
    built = validator.run(data, schema)
    if built is None or validator.problems:
        raise ConfigError(sorted(validator.problems, key=lambda p: p.line or 0))
    return built


def parse_config(text: str, *, file: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate TOML text into a `Config`; `base_dir` anchors relative paths (default:
    the cwd). `source` is left None (`load_config` sets it)."""
    base = (base_dir or Path.cwd()).absolute()
    built = validate(text, file=file, base_dir=base)
    return Config(**{s.config_attr: built[s.name] for s in SCHEMA.sections}, base_dir=base)


def load_config(path: str | Path, *, base_dir: Path | None = None) -> Config:
    """Load and validate a config file, raising `ConfigError` with every problem found.

    Relative paths in the file (data_dir) are resolved against the file's folder, except
    for the embedded default config (`default_config_path()`), whose relative data_dir is
    resolved against the current working directory, so `softswitch run` with no --config
    keeps its data next to where it was started rather than inside the installed package.
    `base_dir` overrides both."""
    path = Path(path)
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    None,
                    "file",
                    f"cannot read: {e.strerror or e}; expected a readable TOML file",
                )
            ]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            [ConfigProblem(file, line, "encoding", "invalid UTF-8; expected a UTF-8 text file")]
        ) from None
    if base_dir is None:
        is_default = path.resolve() == default_config_path()
        base_dir = Path.cwd() if is_default else path.absolute().parent
    config = parse_config(text, file=file, base_dir=base_dir)
    return dataclasses.replace(config, source=path)
