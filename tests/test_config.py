"""Config loader/validator and the `softswitch check` / `run` refusal.

One test per kind of problem: each asserts the `FILE:LINE: key: message` shape, the line
the problem points at, and that the message says what is expected."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from softswitch import cli
from softswitch.config import (
    REQUIRED,
    RTP_PORTS_PER_WORKER,
    SCHEMA,
    ConfigError,
    ConfigProblem,
    Field,
    Invalid,
    Schema,
    Section,
    default_config_path,
    int_range,
    key_lines,
    load_config,
    validate,
)
from softswitch.config_types import Config, ListenAddress

REPO = Path(__file__).resolve().parent.parent

GOOD_EXTENSION = """
[[extension]]
number = "101"
name = "Alice"
password = "amber-violin-42-otter"
"""


def write(tmp_path: Path, text: str, name: str = "switch.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(tmp_path: Path, text: str) -> list[ConfigProblem]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def only(tmp_path: Path, text: str) -> ConfigProblem:
    found = problems(tmp_path, text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


# --------------------------------------------------------------------------- good configs


def test_embedded_default_loads_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(default_config_path())
    assert [e.number for e in config.extensions] == ["101", "102", "103", "200"]
    assert config.switch.domain == "softswitch.local"
    assert config.switch.listen == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    # the embedded default's relative data_dir is relative to the working directory
    assert config.switch.data_dir == tmp_path / "data"
    assert not (tmp_path / "data").exists(), "loading must not create the data dir"
    assert config.source == default_config_path()


def test_embedded_default_sets_and_documents_every_key() -> None:
    """The demo config doubles as the annotated reference: every key appears in it, and
    every key is described in docs/configuration.md."""
    text = default_config_path().read_text()
    lines = key_lines(text)
    docs = (REPO / "docs" / "configuration.md").read_text()
    for section in SCHEMA.sections:
        for f in section.fields:
            assert f"`{f.key}`" in docs, f"{section.name}.{f.key} missing from the docs"
        for variant in section.variants:
            assert f'`{section.variant_key} = "{variant.name}"`' in docs, variant.name
            for f in variant.fields:
                assert f"`{f.key}`" in docs, f"{variant.name} block: {f.key} missing from the docs"
    switch = next(s for s in SCHEMA.sections if s.name == "switch")
    for f in switch.fields:
        assert ("switch", f.key) in lines, f"switch.{f.key} missing from default.toml"


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[switch]\ndata_dir = "var/pbx"\n' + GOOD_EXTENSION)
    assert load_config(path).switch.data_dir == tmp_path / "var" / "pbx"


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD_EXTENSION))
    assert isinstance(config, Config)
    assert config.switch.ring_timeout == 30
    assert (config.switch.rtp_port_min, config.switch.rtp_port_max) == (20000, 29999)
    assert config.switch.data_dir == tmp_path / "data"
    assert config.extension("101") is not None and config.extension("101").email is None


def test_rtp_ports_as_array_and_ipv6_listen(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [switch]
            rtp_ports = [30000, 30999]
            listen = ["udp:[::1]:5070", "tcp:0.0.0.0:5070"]
            workers = 1
            max_workers = 4
            """
            + GOOD_EXTENSION,
        )
    )
    assert (config.switch.rtp_port_min, config.switch.rtp_port_max) == (30000, 30999)
    assert config.switch.listen[0] == ListenAddress("udp", "::1", 5070)
    assert (config.switch.workers_min, config.switch.workers_max) == (1, 4)


# --------------------------------------------------------------------------- problems


def test_problem_str_is_file_line_key_message() -> None:
    p = ConfigProblem("a.toml", 7, "switch.domain", "bad; expected good")
    assert str(p) == "a.toml:7: switch.domain: bad; expected good"


def test_unknown_key_suggests_close_match(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\ndomain = "a.b"\n\nring_timout = 20\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (4, "switch.ring_timout")
    assert 'did you mean "ring_timeout"?' in p.message
    assert "allowed keys: domain, listen" in p.message


def test_unknown_key_in_second_extension(tmp_path: Path) -> None:
    p = only(
        tmp_path,
        GOOD_EXTENSION
        + '\n[[extension]]\nnumber = "102"\npasword = "x"\npassword = "copper-tulip-87-heron"\n',
    )
    assert (p.line, p.key) == (8, "extension[2].pasword")
    assert 'did you mean "password"?' in p.message


def test_unknown_section(tmp_path: Path) -> None:
    p = only(tmp_path, GOOD_EXTENSION + "\n[swtich]\ndomain = 'x'\n")
    assert (p.line, p.key) == (6, "swtich")
    assert 'did you mean "switch"?' in p.message and "[[extension]]" in p.message


def test_wrong_type(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nring_timeout = "30"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.ring_timeout")
    assert p.message.startswith("expected an integer, got a string")
    assert "ring_timeout = 30" in p.message  # the fix


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    p = only(tmp_path, "[switch]\nworkers = true\n" + GOOD_EXTENSION)
    assert p.message == "expected an integer, got a boolean"


def test_extension_number_as_integer_hints_to_quote_it(tmp_path: Path) -> None:
    p = only(tmp_path, '[[extension]]\nnumber = 101\npassword = "amber-violin-42-otter"\n')
    assert (p.line, p.key) == (2, "extension[1].number")
    assert "expected a string, got an integer" in p.message
    assert 'quote it: number = "101"' in p.message


def test_bad_extension_number(tmp_path: Path) -> None:
    p = only(tmp_path, '[[extension]]\nnumber = "1x"\npassword = "amber-violin-42-otter"\n')
    assert "expected a string of 2 to 6 digits" in p.message


def test_duplicate_extension_names_both_lines(tmp_path: Path) -> None:
    text = (
        GOOD_EXTENSION
        + '\n[[extension]]\nnumber = "102"\npassword = "copper-tulip-87-heron"\n'
        + '\n[[extension]]\nname = "Bob"\nnumber = "101"\npassword = "meadow-kettle-35-lynx"\n'
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (12, "extension[3].number")
    assert 'duplicate extension number "101"' in p.message
    assert "line 2" in p.message  # where the first 101 is


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Xy7-q", "only 5 characters long"),
        ("8675309123", "all digits"),
        ("101", "is the extension number"),
        ("zebra101-lantern", "contains the extension number"),
        ("Password2024!", "common password"),
        ("qwertyuiop", "common password"),
        ("aaaaaaaaaaaa", "repeats one character"),
    ],
)
def test_weak_password(tmp_path: Path, password: str, reason: str) -> None:
    p = only(tmp_path, f'[[extension]]\nnumber = "101"\npassword = "{password}"\n')
    assert (p.line, p.key) == (3, "extension[1].password")
    assert p.message.startswith("weak password:")
    assert reason in p.message
    assert "expected at least 10 characters" in p.message
    assert password not in p.message  # never echo secrets into logs


def test_missing_password_points_at_the_extension_header(tmp_path: Path) -> None:
    p = only(tmp_path, GOOD_EXTENSION + '\n[[extension]]\nnumber = "102"\nname = "Bob"\n')
    assert (p.line, p.key) == (6, "extension[2].password")
    assert "required key is missing" in p.message and "expected a string" in p.message


def test_bad_email(tmp_path: Path) -> None:
    p = only(tmp_path, GOOD_EXTENSION + 'email = "alice at example"\n')
    assert (p.line, p.key) == (5, "extension[1].email")
    assert "expected e.g." in p.message


@pytest.mark.parametrize(
    ("entry", "expect"),
    [
        ("sctp:127.0.0.1:5060", 'unknown transport "sctp"'),
        ("udp:pbx.local:5060", '"pbx.local" is not an IP address'),
        ("udp:127.0.0.1:70000", 'port "70000" is not a number from 1 to 65535'),
        ("udp:127.0.0.1", "missing port"),
        ("udp:::1:5060", "put an IPv6 address in brackets"),
        ("127.0.0.1:5060", 'unknown transport "127.0.0.1"'),
    ],
)
def test_bad_listen_entry(tmp_path: Path, entry: str, expect: str) -> None:
    text = f'[switch]\nlisten = [\n  "udp:127.0.0.1:5060",\n  "{entry}",\n]\n' + GOOD_EXTENSION
    p = only(tmp_path, text)
    assert (p.line, p.key) == (4, "switch.listen")  # the entry's own line
    assert expect in p.message


def test_every_bad_listen_entry_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, '[switch]\nlisten = ["x", "udp:1.2.3.4:5060", "y"]\n')
    assert [p.key for p in found] == ["switch.listen", "switch.listen"]


def test_duplicate_listen_entry(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nlisten = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]\n')
    assert "listed twice" in p.message


def test_public_address_must_be_reachable_ip(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\npublic_address = "0.0.0.0"\n' + GOOD_EXTENSION)
    assert p.key == "switch.public_address" and "cannot be put in SDP" in p.message


def test_bad_timezone_suggests(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\ntimezone = "Europe/Moskow"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.timezone")
    assert '"Europe/Moskow" is not a known time zone' in p.message
    assert "Europe/Moscow" in p.message


def test_bad_language(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nlanguage = "de"\n' + GOOD_EXTENSION)
    assert p.message == '"de" is not supported; expected "en" or "ru"'


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ('"29999-20000"', "first port must be lower than the last"),
        ('"20001-29999"', "starts on an odd port"),
        ('"20000-20010"', "holds only 11 ports; expected at least 100"),
        ('"20000:29999"', 'expected "MIN-MAX"'),
        ("[20000]", "not a port range"),
        ('"80-2000"', "expected ports from 1024 to 65535"),
        ("20000", 'expected a string like "20000-29999" or an array of two integers'),
    ],
)
def test_bad_rtp_range(tmp_path: Path, value: str, expect: str) -> None:
    p = only(tmp_path, f"[switch]\nrtp_ports = {value}\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.rtp_ports")
    assert expect in p.message


def test_rtp_range_too_small_for_max_workers(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nrtp_ports = "20000-20199"\nmax_workers = 40\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.rtp_ports")
    assert f"needs {40 * RTP_PORTS_PER_WORKER}" in p.message


def test_max_workers_below_workers(tmp_path: Path) -> None:
    p = only(tmp_path, "[switch]\nworkers = 8\nmax_workers = 4\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (3, "switch.max_workers")
    assert "expected max_workers >= workers" in p.message


def test_expires_inconsistent(tmp_path: Path) -> None:
    p = only(tmp_path, "[switch]\nmin_expires = 120\ndefault_expires = 60\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (3, "switch.default_expires")


def test_ring_timeout_range(tmp_path: Path) -> None:
    p = only(tmp_path, "[switch]\nring_timeout = 2\n" + GOOD_EXTENSION)
    assert p.message == "2 is out of range; expected an integer from 5 to 300"


def test_extension_written_as_table(tmp_path: Path) -> None:
    p = only(tmp_path, '[extension]\nnumber = "101"\npassword = "amber-violin-42-otter"\n')
    assert (p.line, p.key) == (1, "extension")
    assert "[[extension]]" in p.message


def test_toml_syntax_error_line(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\ndomain = "a.b"\nring_timeout = = 3\n')
    assert (p.line, p.key) == (3, "syntax")
    assert "expected valid TOML" in p.message


def test_toml_duplicate_key_line(tmp_path: Path) -> None:
    # tomllib says "at end of document" for this one; we still find the line
    p = only(tmp_path, '[switch]\ndomain = "a.b"\ndomain = "c.d"\n\n# trailing\n')
    assert (p.line, p.key) == (3, "syntax")


def test_all_problems_reported_in_line_order(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        [switch]
        domian = "x"
        ring_timeout = 1000
        language = "de"

        [[extension]]
        number = "101"
        password = "short"
        """,
    )
    assert [(p.line, p.key) for p in found] == [
        (2, "switch.domian"),
        (3, "switch.ring_timeout"),
        (4, "switch.language"),
        (8, "extension[1].password"),
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    (p,) = info.value.problems
    assert p.line is None and str(p).startswith(f"{tmp_path / 'nope.toml'}: file: cannot read")


def test_key_lines_tracks_arrays_dotted_and_inline_tables() -> None:
    text = textwrap.dedent(
        """\
        [switch]
        listen = [
          "udp:1.1.1.1:5060",  # comment ] with bracket
          '''tcp:1.1.1.1:5060''',
        ]
        note = \"\"\"
        x = 1
        \"\"\"
        a.b = 1
        t = { c = 1, "d e" = [2, 3] }
        [[extension]]
        number = "1"
        [[extension]]

        number = "2"
        """
    )
    lines = key_lines(text)
    assert lines[("switch", "listen", 1)] == 4
    assert ("switch", "x") not in lines  # inside a multi-line string
    assert lines[("switch", "a", "b")] == 9
    assert lines[("switch", "t", "d e", 1)] == 10
    assert lines[("extension", 1)] == 13
    assert lines[("extension", 1, "number")] == 15


# --------------------------------------------------------------------------- the command

PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<key>[\w.\[\]]+): (?P<msg>.+)$")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "softswitch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


BAD = """
[switch]
domian = "x"
data_dir = "state"

[[extension]]
number = "101"
password = "101"
"""


def test_check_command_prints_problems_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = run_cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    parsed = [PROBLEM_LINE.match(line) for line in lines]
    assert all(parsed), result.stderr
    assert [(m["file"], m["line"], m["key"]) for m in parsed if m] == [
        (str(path), "2", "switch.domian"),
        (str(path), "7", "extension[1].password"),
    ]


def test_check_command_ok_summary(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_EXTENSION)
    result = run_cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{path}: OK — 1 extension, listening on udp:127.0.0.1:5060, tcp:127.0.0.1:5060"
    )


def test_check_without_config_checks_embedded_default(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{default_config_path()}: OK — 4 extensions")


def test_run_with_bad_config_refuses_to_start(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = run_cli("run", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{path}:2: switch.domian: unknown key" in result.stderr
    assert "not starting" in result.stderr
    assert not (tmp_path / "state").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switch.toml"]


def test_run_with_bad_config_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: no socket is created and the coordinator is never called."""
    import socket

    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("run opened a socket with a bad config")

    def no_run(config: Config) -> int:
        raise AssertionError("run started the coordinator with a bad config")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setitem(sys.modules, "softswitch.coordinator", types.SimpleNamespace(run=no_run))
    path = write(tmp_path, BAD)
    assert cli.main(["run", "--config", str(path)]) == 1
    assert "switch.domian" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_run_with_good_config_hands_it_to_the_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Config] = []

    def fake_run(config: Config) -> int:
        seen.append(config)
        return 0

    monkeypatch.setitem(sys.modules, "softswitch.coordinator", types.SimpleNamespace(run=fake_run))
    path = write(tmp_path, GOOD_EXTENSION)
    assert cli.main(["--log-level", "warning", "run", "--config", str(path)]) == 0
    assert [c.source for c in seen] == [path]


def test_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert re.fullmatch(r"softswitch \S+\n", capsys.readouterr().out)


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _Block:
    greeting: str
    timeout: int = 5


_BLOCKS = Section(
    name="block",
    kind="map",
    cls=_Block,
    config_attr="blocks",
    fields=(
        Field("greeting", (str,), default=REQUIRED, doc="prompt to play"),
        Field("timeout", (int,), int_range(1, 60), doc="seconds to wait"),
    ),
    item_name=lambda name, ctx: None if name.isidentifier() else _reject(name),
)


def _reject(name: str) -> None:
    raise Invalid(f'"{name}" is not a block name; expected letters, digits and "_"')


def test_a_new_section_is_just_a_declaration() -> None:
    """A `[block.NAME]` map section declared in a few lines gets the whole engine (the
    misspelt required key is reported once, as unknown-with-suggestion, not also missing)."""
    schema = Schema(sections=(_BLOCKS,))
    built = validate(
        "[block.main]\ngreeting = 'hi'\n[block.night]\ngreeting = 'zz'\n", schema=schema
    )
    assert built["block"] == {"main": _Block("hi"), "night": _Block("zz", 5)}

    text = "[block.main]\ngretting = 'hi'\ntimeout = 99\n\n[block.'bad name']\ngreeting = 1\n"
    with pytest.raises(ConfigError) as info:
        validate(text, file="b.toml", schema=schema)
    assert [str(p) for p in info.value.problems] == [
        'b.toml:2: block.main.gretting: unknown key; did you mean "greeting"? allowed keys:'
        " greeting, timeout",
        "b.toml:3: block.main.timeout: 99 is out of range; expected an integer from 1 to 60",
        'b.toml:5: block.bad name: "bad name" is not a block name; expected letters, digits'
        ' and "_"',
        "b.toml:6: block.bad name.greeting: expected a string, got an integer; quote it:"
        ' greeting = "1"',
    ]


# --------------------------------------------------------------------------- call flows

EXTENSIONS = """
[[extension]]
number = "101"
password = "amber-violin-42-otter"

[[extension]]
number = "102"
password = "copper-tulip-87-heron"
"""

FLOW = (
    """
[switch]
entry = "main"
entry_number = "100"
media_dir = "media"
"""
    + EXTENSIONS
    + """
[block.main]
type = "hours"
schedule = ["mon-fri 09:00-18:00"]
open = "menu"
closed = "closed"

[block.menu]
type = "menu"
prompt = "welcome"
options = { "1" = "sales", "2" = "voicemail" }
on_timeout = "sales"

[block.sales]
type = "dial"
targets = ["101", "102"]
on_no_answer = "voicemail"

[block.voicemail]
type = "voicemail"
greeting = "leave-message"

[block.closed]
type = "voicemail"
greeting = "after-hours"
greeting_only = true
"""
)

PROMPTS = ("welcome", "leave-message", "after-hours", "invalid-choice", "extension-unavailable")


def write_wav(path: Path, seconds: float = 0.1) -> None:
    """A short 440 Hz tone (softswitch.audio refuses silent prompts)."""
    import math
    import struct
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 8000)))
        for n in range(int(8000 * seconds))
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)


@pytest.fixture
def media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/media/en/ with the prompts FLOW uses and the menu defaults; the shipped
    media/ (which softswitch.audio falls back to) is replaced by an empty folder, so a
    prompt missing here is missing."""
    from softswitch import audio

    monkeypatch.setattr(audio, "MEDIA_DIR", tmp_path / "no-shipped-media")
    for name in PROMPTS:
        write_wav(tmp_path / "media" / "en" / f"{name}.wav")
    return tmp_path / "media"


def line_of(text: str, needle: str, after: str = "") -> int:
    """1-based line of the first line containing `needle` (after the line with `after`)."""
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and needle in line) + 1


def test_flow_config_loads_into_block_dataclasses(tmp_path: Path, media: Path) -> None:
    from softswitch.config_types import DialBlock, HoursBlock, MenuBlock, VoicemailBlock

    config = load_config(write(tmp_path, FLOW))
    assert config.switch.entry == "main" and config.switch.entry_number == "100"
    assert config.switch.media_dir == media
    assert config.base_dir == tmp_path
    assert list(config.blocks) == ["main", "menu", "sales", "voicemail", "closed"]
    assert config.blocks["main"] == HoursBlock(
        name="main", schedule=("mon-fri 09:00-18:00",), open="menu", closed="closed"
    )
    menu = config.blocks["menu"]
    assert isinstance(menu, MenuBlock)
    assert menu.options == {"1": "sales", "2": "voicemail"}
    assert (menu.timeout, menu.retries, menu.dial_extensions) == (5.0, 2, False)
    assert config.blocks["sales"] == DialBlock("sales", ("101", "102"), 20, "voicemail")
    closed = config.blocks["closed"]
    assert isinstance(closed, VoicemailBlock) and closed.greeting_only and closed.box == ""
    assert config.smtp.host == "127.0.0.1" and config.smtp.port == 25  # defaults


def test_every_block_type_and_key_loads(tmp_path: Path, media: Path) -> None:
    from softswitch.config_types import HangupBlock, PlayBlock, ScriptBlock, VoicemailBlock

    write_wav(tmp_path / "sounds" / "hello.wav")
    text = FLOW.replace('on_timeout = "sales"', 'on_timeout = "sales"\n'
        'dial_extensions = true\ninter_digit_timeout = 2.5\ntimeout = 7\nretries = 0\n'
        'invalid_prompt = ""\nunknown_extension_prompt = "welcome"') + """
[block.hello]
type = "play"
prompt = "sounds/hello.wav"
next = "bye"

[block.bye]
type = "hangup"

[block.taxi]
type = "script"
function = "examples.taxi:flow"
next = "hello"

[block.box]
type = "voicemail"
box = "office_1"
greeting = "welcome"
beep = false
max_seconds = 300
silence_timeout = 0
email = ["a@example.com", "b@example.com"]
"""  # fmt: skip
    text = text.replace('"2" = "voicemail"', '"2" = "voicemail", "*" = "taxi", "#" = "box"')
    text = text.replace(
        'schedule = ["mon-fri 09:00-18:00"]',
        'schedule = ["mon-fri 09:00-18:00"]\nholidays = ["2026-12-31"]\n'
        'working_days = ["2027-01-09 10:00-15:00", "2027-01-10"]',
    )
    config = load_config(write(tmp_path, text))
    assert config.blocks["hello"] == PlayBlock("hello", "sounds/hello.wav", "bye")
    assert config.blocks["bye"] == HangupBlock("bye")
    assert config.blocks["taxi"] == ScriptBlock("taxi", "examples.taxi:flow", "hello")
    assert config.blocks["box"] == VoicemailBlock(
        "box", "office_1", "welcome", False, False, 300, 0.0, ("a@example.com", "b@example.com")
    )
    assert config.blocks["main"].working_days == ("2027-01-09 10:00-15:00", "2027-01-10")  # type: ignore[union-attr]
    menu = config.blocks["menu"]
    assert menu.inter_digit_timeout == 2.5 and menu.invalid_prompt == ""  # type: ignore[union-attr]


def test_embedded_default_has_the_demo_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from softswitch.acd import QueueConfig
    from softswitch.config_types import DialBlock, FeaturesConfig, HoursBlock, MenuBlock, QueueBlock

    monkeypatch.chdir(tmp_path)
    config = load_config(default_config_path())
    assert (config.switch.entry, config.switch.entry_number) == ("main", "100")
    assert config.switch.media_dir is None  # the shipped prompts
    assert isinstance(config.blocks["main"], HoursBlock)
    menu = config.blocks["menu"]
    assert isinstance(menu, MenuBlock) and menu.dial_extensions
    assert [config.blocks[menu.options[k]] for k in "12"] == [
        DialBlock("reception", ("101",), 20, "voicemail"),
        DialBlock("sales", ("102",), 20, "voicemail"),
    ]
    team = config.blocks[menu.options["3"]]
    assert isinstance(team, QueueBlock) and team.name == "team"
    assert team.members == ("101", "102", "103") and team.strategy == "ring-all"
    assert team.to_queue_config() == QueueConfig(
        "team", ("101", "102", "103"), wrap_up=5, music="default", max_wait=300,
        on_timeout="voicemail", on_empty="voicemail", exit_key="0", exit_target="voicemail",
    )  # fmt: skip
    assert config.features == FeaturesConfig("*45", "*46", True)


def test_no_blocks_no_entry_is_fine_even_with_extension_100(tmp_path: Path) -> None:
    text = '[[extension]]\nnumber = "100"\npassword = "amber-violin-42-otter"\n'
    config = load_config(write(tmp_path, text))
    assert config.blocks == {} and config.switch.entry == ""


# -- [switch] keys


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ('"1x"', 'expected a string of 2 to 6 digits, e.g. "100"'),
        ('"1234567"', "expected a string of 2 to 6 digits"),
        ("100", 'quote it: entry_number = "100"'),
    ],
)
def test_bad_entry_number(tmp_path: Path, value: str, expect: str) -> None:
    p = only(tmp_path, f"[switch]\nentry_number = {value}\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.entry_number")
    assert expect in p.message


def test_entry_number_clashes_with_an_extension(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('entry_number = "100"', 'entry_number = "102"'))
    assert (p.line, p.key) == (3, "switch.entry_number")
    assert '"102" is also an extension number; expected a number no extension uses' in p.message


def test_entry_names_an_unknown_block(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('entry = "main"', 'entry = "mian"'))
    assert (p.line, p.key) == (2, "switch.entry")
    assert p.message.startswith('unknown block "mian"; did you mean "main"? expected one of')
    assert '"main", "menu", "sales", "voicemail" or "closed"' in p.message
    assert "hang up" not in p.message  # "" is no entry


def test_entry_set_without_blocks(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nentry = "main"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.entry")
    assert 'unknown block "main"; no [block.NAME] tables are configured' in p.message


def test_entry_missing_when_blocks_exist(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('entry = "main"\n', ""))
    assert (p.line, p.key) == (1, "switch.entry")  # the [switch] header
    assert "nothing says where a call starts" in p.message
    assert 'expected entry = "main", "menu"' in p.message


def test_entry_bad_block_name(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nentry = "main menu"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.entry")
    assert '"main menu" is not a block name; expected letters, digits' in p.message


def test_media_dir_is_relative_to_the_config_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    config = load_config(write(tmp_path, '[switch]\nmedia_dir = "prompts"\n' + GOOD_EXTENSION))
    assert config.switch.media_dir == tmp_path / "prompts"
    config = load_config(write(tmp_path, '[switch]\nmedia_dir = ""\n' + GOOD_EXTENSION))
    assert config.switch.media_dir is None

    p = only(tmp_path, '[switch]\nmedia_dir = "nope"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.media_dir")
    assert f'"{tmp_path / "nope"}" does not exist; expected a directory' in p.message
    (tmp_path / "file").write_text("x")
    p = only(tmp_path, '[switch]\nmedia_dir = "file"\n' + GOOD_EXTENSION)
    assert "is not a directory" in p.message


# -- [switch.smtp]


def test_smtp_sub_table_loads(tmp_path: Path) -> None:
    from softswitch.config_types import SmtpConfig

    text = """
        [switch]
        domain = "pbx.example"

        [switch.smtp]
        host = "mail.example.com"
        port = 587
        from = "pbx@office.example"
        username = "pbx"
        password = "mail-secret-123"
        starttls = true
        timeout = 30
        """
    config = load_config(write(tmp_path, text + GOOD_EXTENSION))
    assert config.switch.domain == "pbx.example"
    assert config.smtp == SmtpConfig(
        "mail.example.com", 587, "pbx@office.example", "pbx", "mail-secret-123", True, 30.0
    )


@pytest.mark.parametrize(
    ("line", "key", "expect"),
    [
        ('host = "mail server"', "host", '"mail server" is not a host name or IP address'),
        ("port = 0", "port", "expected an integer from 1 to 65535"),
        ('from = "pbx"', "from", '"pbx" is not an e-mail address'),
        ("timeout = 0.5", "timeout", "expected a number from 1 to 300"),
        ('timeout = "10"', "timeout", "expected a number of seconds, got a string"),
        ('starttls = "yes"', "starttls", "expected a boolean, got a string"),
        ('username = "pbx"', "username", "username is set but password is missing"),
        ('password = "mail-secret-123"', "password", "password is set but username is missing"),
        ('hots = "x"', "hots", 'unknown key; did you mean "host"? allowed keys: host, port, from'),
    ],
)
def test_bad_smtp_key(tmp_path: Path, line: str, key: str, expect: str) -> None:
    p = only(tmp_path, f"[switch.smtp]\n{line}\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, f"switch.smtp.{key}")
    assert expect in p.message
    assert "mail-secret-123" not in p.message


def test_smtp_misspelt_in_switch_suggests_the_table(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nsmpt = { host = "x" }\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.smpt")
    assert 'did you mean "smtp"?' in p.message and "tables: [switch.smtp]" in p.message


def test_smtp_not_a_table(tmp_path: Path) -> None:
    p = only(tmp_path, '[switch]\nsmtp = "127.0.0.1"\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.smtp")
    assert "expected a table written [switch.smtp], got a string" in p.message


def test_smtp_as_inline_table_and_dotted_keys(tmp_path: Path) -> None:
    text = '[switch]\nsmtp.host = "10.0.0.1"\nsmtp.port = 2525\n' + GOOD_EXTENSION
    assert load_config(write(tmp_path, text)).smtp.port == 2525
    p = only(tmp_path, '[switch]\nsmtp = { host = "10.0.0.1", port = 99999 }\n' + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, "switch.smtp.port")


# -- [block.NAME]: types and keys


def test_unknown_block_type_suggests(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('type = "dial"', 'type = "dail"'))
    assert (p.line, p.key) == (line_of(FLOW, 'type = "dial"'), "block.sales.type")
    assert p.message == (
        'unknown block type "dail"; did you mean "dial"? expected "menu", "hours",'
        ' "voicemail", "play", "dial", "hangup", "script" or "queue"'
    )


def test_block_type_missing_or_not_a_string(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('type = "dial"\n', ""))
    assert (p.line, p.key) == (line_of(FLOW, "[block.sales]"), "block.sales.type")
    assert p.message.startswith('required key is missing; expected the block type: "menu",')
    p = only(tmp_path, FLOW.replace('type = "dial"', "type = 3"))
    assert p.message.startswith("expected a string, got an integer; expected")


def test_key_of_another_block_type_is_unknown(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('prompt = "welcome"', 'prompt = "welcome"\ntargets = ["101"]')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, 'targets = ["101"]'), "block.menu.targets")
    assert p.message.startswith('unknown key; allowed keys for type = "menu": type, prompt,')


def test_misspelt_block_key_suggests(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('greeting = "leave-message"', 'greting = "leave-message"')
    p = only(tmp_path, text)
    assert p.key == "block.voicemail.greting"
    assert 'did you mean "greeting"? allowed keys for type = "voicemail"' in p.message


def test_hangup_block_takes_no_keys(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('on_no_answer = "voicemail"', 'on_no_answer = "bye"') + (
        '\n[block.bye]\ntype = "hangup"\nnext = "main"\n'
    )
    p = only(tmp_path, text)
    assert p.key == "block.bye.next"
    assert 'allowed keys for type = "hangup": type' in p.message


def test_bad_block_name(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace("[block.closed]", '[block."closed hours"]').replace(
        'closed = "closed"', 'closed = "closed hours"'
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, '[block."closed'), "block.closed hours")
    assert '"closed hours" is not a block name; expected letters, digits, "-" and "_"' in p.message


def test_missing_required_block_key_points_at_the_header(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('open = "menu"\n', "")
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.main]"), "block.main.open")
    assert "required key is missing; expected a string" in p.message


def set_key(text: str, block: str, line: str) -> str:
    """`line` ("key = value") in [block.BLOCK]: replacing the key's line if the block
    has one, else right under the header."""
    key = line.split("=")[0].strip()
    lines = text.splitlines()
    start = lines.index(f"[block.{block}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = line
            break
    else:
        lines.insert(start + 1, line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("block", "line", "expect"),
    [
        ("menu", "timeout = 0", "0 is out of range; expected a number from 1 to 60"),
        ("menu", 'timeout = "5"', "expected a number of seconds, got a string"),
        ("menu", "inter_digit_timeout = 31", "expected a number from 1 to 30"),
        ("menu", "retries = 11", "expected an integer from 0 to 10"),
        ("menu", "retries = 1.5", "expected an integer, got a float"),
        ("menu", "dial_extensions = 1", "expected a boolean, got an integer"),
        ("menu", 'prompt = ""', "the prompt is empty; expected a prompt name"),
        ("menu", 'invalid_prompt = "a\\u0007b"', "contains control characters"),
        ("menu", 'options = "1"', 'expected a table such as { "1" = "sales"'),
        ("menu", "on_timeout = 1", "expected a string, got an integer"),
        ("sales", "timeout = 2", "expected an integer from 5 to 300"),
        ("voicemail", "max_seconds = 1", "expected an integer from 5 to 3600"),
        ("voicemail", "silence_timeout = -1", "expected a number from 0 to 60"),
        ("voicemail", "beep = 1", "expected a boolean, got an integer"),
        ("voicemail", "greeting_only = 0", "expected a boolean, got an integer"),
        ("voicemail", 'box = "../etc"', '"../etc" is not a mailbox name'),
        ("voicemail", 'email = ["x@example.com", "nope"]', '"nope" is not an e-mail address'),
        ("voicemail", "email = [1]", "entry 1 is an integer; expected an e-mail address"),
        ("voicemail", 'email = "x@example.com"', "expected an array of strings, got a string"),
        ("main", "holidays = [20261231]", "is not a string"),
        ("main", 'working_days = "2026-12-31"', "expected an array of strings, got a string"),
    ],
)
def test_bad_block_value(tmp_path: Path, media: Path, block: str, line: str, expect: str):
    text = set_key(FLOW, block, line)
    p = only(tmp_path, text)
    key = line.split("=")[0].strip()
    assert (p.line, p.key) == (
        line_of(text, line, after=f"[block.{block}]"),
        f"block.{block}.{key}",
    )
    assert expect in p.message


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ('"12" = "sales"', '"12" is not a key on the phone; expected a single digit 0-9, "*"'),
        ('"a" = "sales"', '"a" is not a key on the phone'),
        ('"1" = 2', 'option "1" is an integer; expected the name of a block in quotes'),
    ],
)
def test_bad_menu_option(tmp_path: Path, media: Path, options: str, expect: str) -> None:
    text = FLOW.replace('options = { "1" = "sales", "2" = "voicemail" }',
                        f'[block.menu.options]\n"2" = "voicemail"\n{options}')  # fmt: skip
    text = text.replace('on_timeout = "sales"\n', "")
    text = text.replace('prompt = "welcome"', 'prompt = "welcome"\non_timeout = "sales"')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, options), "block.menu.options")
    assert expect in p.message


def test_menu_that_offers_nothing(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('options = { "1" = "sales", "2" = "voicemail" }\n', "")
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.menu]"), "block.menu.options")
    assert "the menu has no options and dial_extensions is off" in p.message
    load_config(write(tmp_path, set_key(text, "menu", "dial_extensions = true")))


# -- hours blocks


def test_bad_schedule_entry_on_its_own_line(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace(
        'schedule = ["mon-fri 09:00-18:00"]',
        'schedule = [\n  "mon-fri 09:00-18:00",\n  "sat 10:00-25:00",\n  "sun",\n]',
    )
    found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [
        (line_of(text, '"sat 10:00-25:00"'), "block.main.schedule"),
        (line_of(text, '"sun",'), "block.main.schedule"),
    ]
    assert '"sat 10:00-25:00": "25:00" is not a valid time; expected 00:00 to 24:00' in (
        found[0].message
    )
    assert '"sun": no hours given; expected days then hours' in found[1].message


def test_bad_holiday_and_working_day(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace(
        'schedule = ["mon-fri 09:00-18:00"]',
        'schedule = ["mon-fri 09:00-18:00"]\nholidays = ["2026-12-31", "2026-02-30"]\n'
        'working_days = [\n  "2027-01-09 10:00",\n  "2026-12-31",\n]',
    )
    found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [
        (line_of(text, "holidays"), "block.main.holidays"),
        (line_of(text, '"2027-01-09 10:00"'), "block.main.working_days"),
        (line_of(text, '"2026-12-31",', after="working_days"), "block.main.working_days"),
    ]
    assert '"2026-02-30" is not a real date' in found[0].message
    assert '"10:00" is not a time range' in found[1].message
    assert "2026-12-31 is also a holiday (holidays entry 1)" in found[2].message


def test_schedule_entries_must_be_strings(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('["mon-fri 09:00-18:00"]', '["mon-fri 09:00-18:00", 9]'))
    assert p.key == "block.main.schedule" and "is not a string" in p.message


def test_hours_block_never_open(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('["mon-fri 09:00-18:00"]', "[]"))
    assert (p.line, p.key) == (line_of(FLOW, "schedule ="), "block.main.schedule")
    assert "the schedule is empty and there are no working_days" in p.message
    load_config(write(tmp_path, FLOW.replace(
        '["mon-fri 09:00-18:00"]', '[]\nworking_days = ["2027-01-09"]')))  # fmt: skip


# -- dial and script blocks


def test_dial_target_must_be_a_configured_extension(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('targets = ["101", "102"]', 'targets = [\n  "101",\n  "105",\n]')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, '"105"'), "block.sales.targets")
    assert p.message == '"105" is not a configured extension; expected one of "101" or "102"'


@pytest.mark.parametrize(
    ("targets", "expect"),
    [
        ("[]", "the list is empty; expected extension numbers"),
        ('["101", "1x"]', '"1x" is not an extension number; expected 2 to 6 digits'),
        ('["101", "101"]', '"101" is listed twice'),
        ("[101]", 'entry 1 is an integer; expected an extension number in quotes, e.g. "101"'),
        ('"101"', "expected an array of strings, got a string"),
    ],
)
def test_bad_dial_targets(tmp_path: Path, media: Path, targets: str, expect: str) -> None:
    p = only(tmp_path, FLOW.replace('["101", "102"]', targets))
    assert p.key == "block.sales.targets" and expect in p.message


@pytest.mark.parametrize("function", ["taxi", "examples/taxi.py:flow", "a:b:c", "1mod:f"])
def test_bad_script_function(tmp_path: Path, media: Path, function: str) -> None:
    text = FLOW.replace('"2" = "voicemail"', '"2" = "taxi"') + (
        f'\n[block.taxi]\ntype = "script"\nfunction = "{function}"\n'
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "function ="), "block.taxi.function")
    assert f'"{function}" is not a function reference; expected "module:function"' in p.message


# -- references between blocks


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('open = "menu"', 'open = "menus"', "block.main.open"),
        ('closed = "closed"', 'closed = "after-hours"', "block.main.closed"),
        ('on_timeout = "sales"', 'on_timeout = "sale"', "block.menu.on_timeout"),
        ('on_no_answer = "voicemail"', 'on_no_answer = "vm"', "block.sales.on_no_answer"),
        ('"1" = "sales"', '"1" = "support"', "block.menu.options"),
    ],
)
def test_reference_to_an_unknown_block(tmp_path: Path, media: Path, old: str, new: str, key: str):
    text = FLOW.replace(old, new)
    found = problems(tmp_path, text)
    p = next(p for p in found if p.key == key)
    assert p.line == line_of(text, new)
    target = new.split('"')[-2]
    assert p.message.startswith(f'unknown block "{target}"; ')
    assert p.message.endswith(
        'expected one of "main", "menu", "sales", "voicemail" or "closed" (or "" to hang up)'
    )
    # nothing else but, perhaps, the block that is no longer reached
    assert all(q is p or "is never reached" in q.message for q in found)


def test_unknown_reference_suggests_a_close_name(tmp_path: Path, media: Path) -> None:
    p = only(tmp_path, FLOW.replace('on_timeout = "sales"', 'on_timeout = "sale"'))
    assert 'unknown block "sale"; did you mean "sales"?' in p.message


def test_next_block_play_and_script(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('"2" = "voicemail"', '"2" = "hello"') + (
        '\n[block.hello]\ntype = "play"\nprompt = "welcome"\nnext = "nowhere"\n'
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, 'next = "nowhere"'), "block.hello.next")


def test_empty_reference_hangs_up(tmp_path: Path, media: Path) -> None:
    config = load_config(write(tmp_path, FLOW.replace('on_timeout = "sales"', 'on_timeout = ""')))
    assert config.blocks["menu"].on_timeout == ""  # type: ignore[union-attr]


def test_unreachable_blocks_are_each_reported(tmp_path: Path, media: Path) -> None:
    text = FLOW + (
        '\n[block.night]\ntype = "play"\nprompt = "welcome"\nnext = "bye"\n'
        '\n[block.bye]\ntype = "hangup"\n'
    )
    found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [
        (line_of(text, "[block.night]"), "block.night"),
        (line_of(text, "[block.bye]"), "block.bye"),
    ]
    assert found[0].message.startswith(
        'block "night" is never reached: no way leads to it from the entry block "main"; expected'
    )


def test_reachable_script_may_lead_anywhere(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('"2" = "voicemail"', '"2" = "voicemail", "3" = "taxi"') + (
        '\n[block.taxi]\ntype = "script"\nfunction = "examples.taxi:flow"\n'
        '\n[block.orders]\ntype = "dial"\ntargets = ["101"]\n'
    )
    load_config(write(tmp_path, text))


def test_loop_with_nothing_that_waits(tmp_path: Path, media: Path) -> None:
    text = (
        FLOW.replace('open = "menu"', 'open = "lunch"')
        + """
[block.lunch]
type = "hours"
schedule = ["mon-fri 13:00-14:00"]
open = "check"
closed = "menu"

[block.check]
type = "script"
function = "office.flows:check"
next = "main"
"""
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.main]"), "block.main")
    assert p.message.startswith(
        'blocks "main" -> "lunch" -> "check" -> "main" form a loop in which nothing waits'
    )
    assert "expected a play, menu, dial or voicemail block in the loop" in p.message


def test_hours_block_looping_to_itself(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('closed = "closed"', 'closed = "main"')
    text = text.replace('"2" = "voicemail"', '"2" = "voicemail", "3" = "closed"')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.main]"), "block.main")
    assert p.message.startswith('blocks "main" -> "main" form a loop in which nothing waits')


def test_loops_through_a_menu_are_fine(tmp_path: Path, media: Path) -> None:
    # menu -> (timeout) -> main (hours) -> menu: the menu waits for the caller
    load_config(write(tmp_path, FLOW.replace('on_timeout = "sales"', 'on_timeout = "main"')))


# -- prompts


def test_missing_prompt_is_named(tmp_path: Path, media: Path) -> None:
    (media / "en" / "welcome.wav").unlink()
    p = only(tmp_path, FLOW)
    assert (p.line, p.key) == (line_of(FLOW, 'prompt = "welcome"'), "block.menu.prompt")
    assert p.message.startswith("prompt 'welcome' not found (looked for ")
    assert str(media / "en" / "welcome.wav") in p.message
    assert "expected the name of a prompt in media_dir or the shipped prompts" in p.message


def test_missing_prompt_file_is_named(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('prompt = "welcome"', 'prompt = "sounds/hello.wav"')
    p = only(tmp_path, text)
    assert p.key == "block.menu.prompt"
    assert str(tmp_path / "sounds" / "hello.wav") in p.message and "does not exist" in p.message
    write_wav(tmp_path / "sounds" / "hello.wav")
    load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("content", "expect"),
    [(b"this is no audio file", "cannot read audio file"), (None, "is silent")],
)
def test_unplayable_prompt_is_named(tmp_path: Path, media: Path, content, expect) -> None:
    path = media / "en" / "after-hours.wav"
    if content is None:  # a valid WAV of silence
        import wave

        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 800)
    else:
        path.write_bytes(content)
    p = only(tmp_path, FLOW)
    assert (p.line, p.key) == (line_of(FLOW, 'greeting = "after-hours"'), "block.closed.greeting")
    assert p.message.startswith('prompt "after-hours": ')
    assert str(path) in p.message and expect in p.message
    assert "expected an audio file with sound in it" in p.message


def test_a_prompt_used_twice_is_reported_at_each_use(tmp_path: Path, media: Path) -> None:
    (media / "en" / "leave-message.wav").unlink()
    text = FLOW.replace('greeting = "after-hours"', 'greeting = "leave-message"')
    found = problems(tmp_path, text)
    assert [p.key for p in found] == ["block.voicemail.greeting", "block.closed.greeting"]


def test_default_menu_prompts_are_checked_too(tmp_path: Path, media: Path) -> None:
    (media / "en" / "invalid-choice.wav").unlink()
    (media / "en" / "extension-unavailable.wav").unlink()
    p = only(tmp_path, FLOW)  # unknown_extension_prompt only matters with dial_extensions
    assert (p.line, p.key) == (line_of(FLOW, "[block.menu]"), "block.menu.invalid_prompt")
    assert "'invalid-choice' not found" in p.message
    quiet = FLOW.replace('on_timeout = "sales"', 'on_timeout = "sales"\ninvalid_prompt = ""')
    load_config(write(tmp_path, quiet))
    text = quiet.replace('invalid_prompt = ""', 'invalid_prompt = ""\ndial_extensions = true')
    p = only(tmp_path, text)
    assert p.key == "block.menu.unknown_extension_prompt"


def test_prompts_of_the_language_come_first(tmp_path: Path, media: Path) -> None:
    text = FLOW.replace('media_dir = "media"', 'media_dir = "media"\nlanguage = "ru"')
    load_config(write(tmp_path, text))  # no ru/ folder: the English prompts are used
    (media / "ru").mkdir()
    (media / "ru" / "welcome.wav").write_bytes(b"broken")
    p = only(tmp_path, text)
    assert p.key == "block.menu.prompt" and str(media / "ru" / "welcome.wav") in p.message


# -- queue blocks

QUEUE = """
[block.team]
type = "queue"
members = ["101", "102"]
max_wait = 300
max_callers = 5
exit_key = "0"
"""

# FLOW with menu key 3 leading to the queue above
QUEUE_FLOW = FLOW.replace('"2" = "voicemail"', '"2" = "voicemail", "3" = "team"') + QUEUE


@pytest.fixture
def music(media: Path) -> Path:
    """`media` plus the hold music and the queue greeting a queue block uses by default."""
    write_wav(media / "music" / "default.wav")
    write_wav(media / "en" / "please-hold.wav")
    return media / "music"


def test_queue_block_loads_with_every_key(tmp_path: Path, music: Path) -> None:
    from softswitch.acd import QueueConfig
    from softswitch.config_types import QueueBlock

    write_wav(tmp_path / "sounds" / "jazz.flac")
    text = set_key(QUEUE_FLOW, "team", 'members = ["102", "101"]')
    for line in [
        'strategy = "round-robin"', "answer_timeout = 15", "retry = 2.5",
        "ring_new_free = false", "wrap_up = 7", 'music = "sounds/jazz.flac"',
        'greeting = "please-hold"', 'on_timeout = "voicemail"', 'on_full = "closed"',
        'on_empty = ""', 'exit_key = "#"', 'exit_target = "voicemail"', "announce_every = 60",
        "auto_pause_after = 3", "priority = -2", 'next = "sales"',
        'notify = ["boss@example.com", "https://hooks.example.com:8443/missed?q=team"]',
        "notify_missed_rings = true",
    ]:  # fmt: skip
        text = set_key(text, "team", line)
    config = load_config(write(tmp_path, text))
    team = config.blocks["team"]
    assert team == QueueBlock(
        name="team", members=("102", "101"), strategy="round-robin", answer_timeout=15.0,
        retry=2.5, ring_new_free=False, wrap_up=7.0, music="sounds/jazz.flac",
        greeting="please-hold", max_wait=300.0, on_timeout="voicemail", max_callers=5,
        on_full="closed", on_empty="", exit_key="#", exit_target="voicemail",
        announce_every=60.0, auto_pause_after=3, priority=-2, next="sales",
        notify=("boss@example.com", "https://hooks.example.com:8443/missed?q=team"),
        notify_missed_rings=True,
    )  # fmt: skip
    assert team.to_queue_config() == QueueConfig(
        name="team", members=("102", "101"), strategy="round-robin", answer_timeout=15.0,
        retry=2.5, ring_new_free=False, wrap_up=7.0, music="sounds/jazz.flac", max_wait=300.0,
        on_timeout="voicemail", max_callers=5, on_full="closed", on_empty="", exit_key="#",
        exit_target="voicemail", announce_every=60.0, auto_pause_after=3, priority=-2,
    )  # fmt: skip


def test_queue_block_defaults(tmp_path: Path, music: Path) -> None:
    from softswitch.acd import QueueConfig
    from softswitch.config_types import QueueBlock

    text = QUEUE_FLOW.replace(QUEUE, '\n[block.team]\ntype = "queue"\nmembers = ["101"]\n')
    team = load_config(write(tmp_path, text)).blocks["team"]
    assert isinstance(team, QueueBlock) and team == QueueBlock("team", ("101",))
    assert (team.strategy, team.answer_timeout, team.retry, team.wrap_up) == (
        "ring-all", 20.0, 5.0, 0.0)  # fmt: skip
    assert (team.music, team.greeting, team.next, team.notify) == ("default", "", "", ())
    assert team.to_queue_config() == QueueConfig("team", ("101",), music="default")

    # 0: ring until answered, which the core spells None
    team = load_config(write(tmp_path, set_key(text, "team", "answer_timeout = 0"))).blocks["team"]
    assert isinstance(team, QueueBlock) and team.answer_timeout == 0
    assert team.to_queue_config().answer_timeout is None


def test_queue_needs_members(tmp_path: Path, music: Path) -> None:
    text = QUEUE_FLOW.replace('members = ["101", "102"]\n', "")
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.team]"), "block.team.members")
    assert "required key is missing; expected an array of strings" in p.message


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("members = []", "the list is empty; expected extension numbers"),
        ('members = ["101", "101"]', '"101" is listed twice; expected each extension once'),
        ('members = ["101", "1x"]', '"1x" is not an extension number; expected 2 to 6 digits'),
        ('members = "101"', "expected an array of strings, got a string"),
        (
            'strategy = "roundrobin"',
            '"roundrobin" is not supported; expected "ring-all", "round-robin", "longest-idle"',
        ),  # fmt: skip
        ("answer_timeout = -1", "-1 is out of range; expected a number from 0 to 600"),
        ('answer_timeout = "20"', "expected a number of seconds, got a string"),
        ("retry = -0.5", "-0.5 is out of range; expected a number from 0 to 3600"),
        ("ring_new_free = 1", "expected a boolean, got an integer"),
        ("wrap_up = -5", "-5 is out of range; expected a number from 0 to 3600"),
        ('music = ""', "the music is empty; expected the name of hold music in media/music"),
        ('music = "a\\u0007b"', "contains control characters; expected a music name"),
        ('greeting = "a\\u0007b"', "contains control characters; expected a prompt name"),
        ("max_wait = 0", "0 is out of range; expected a number of seconds above 0"),
        ("max_callers = 0", "0 is out of range; expected an integer of at least 1"),
        ("max_callers = 2.5", "expected an integer, got a float"),
        ('exit_key = "00"', '"00" is not a key on the phone; expected a single digit 0-9'),
        ("exit_key = 0", 'quote it: exit_key = "0"'),
        ("announce_every = 5", "5 is out of range; expected a number from 10 to 3600"),
        ("auto_pause_after = 0", "0 is out of range; expected an integer of at least 1"),
        ("priority = 1.5", "expected an integer, got a float"),
        ("on_empty = 3", 'expected a block name, or "" to hang up, got an integer'),
        ("next = true", 'expected a block name, or "" to hang up, got a boolean'),
        ('notify = ["boss"]', '"boss" is neither; expected an e-mail address or an http(s) URL'),
        ('notify = ["boss@example"]', '"boss@example" is not an e-mail address'),
        ('notify = ["ftp://example.com/x"]', 'unsupported scheme "ftp"; expected an e-mail'),
        ('notify = ["https://"]', '"https://" has no host; expected e.g.'),
        ('notify = ["https://hooks example.com/"]', "contains spaces or control characters"),
        ('notify = ["http://example.com:99999/"]', "is not a valid URL ("),
        ('notify = ["http://ex_ample.com/"]', "is not a host name or IP address"),
        ('notify = ["a@example.com", "a@example.com"]', '"a@example.com" is listed twice'),
        ("notify = [1]", "entry 1 is an integer; expected an e-mail address or an http(s)"),
        ('notify = "a@example.com"', "expected an array of strings, got a string"),
        ("notify_missed_rings = 1", "expected a boolean, got an integer"),
        (
            'membres = ["101"]',
            'unknown key; did you mean "members"? allowed keys for type ='
            ' "queue": type, members, strategy',
        ),  # fmt: skip
    ],
)
def test_bad_queue_value(tmp_path: Path, music: Path, line: str, expect: str) -> None:
    text = set_key(QUEUE_FLOW, "team", line)
    p = only(tmp_path, text)
    key = line.split("=")[0].strip()
    assert (p.line, p.key) == (line_of(text, line, after="[block.team]"), f"block.team.{key}")
    assert expect in p.message


@pytest.mark.parametrize(
    ("drop", "line", "expect"),
    [
        ('exit_key = "0"', 'exit_target = "voicemail"',
         'exit_target is set but exit_key is not, so it would never be used; expected'
         ' exit_key too (the key that leads there, e.g. "0"), or remove exit_target'),
        ("max_wait = 300", 'on_timeout = "voicemail"',
         "on_timeout is set but max_wait is not, so it would never be used"),
        ("max_callers = 5", 'on_full = ""', "on_full is set but max_callers is not"),
        ("", "notify_missed_rings = true", "notify_missed_rings is set but notify is not"),
    ],
)  # fmt: skip
def test_queue_key_that_needs_another(
    tmp_path: Path, music: Path, drop: str, line: str, expect: str
) -> None:
    text = set_key(QUEUE_FLOW.replace(f"{drop}\n" if drop else "\0", ""), "team", line)
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, line), f"block.team.{line.split()[0]}")
    assert expect in p.message
    if drop:  # with the key it needs, it loads
        load_config(write(tmp_path, set_key(text, "team", drop)))


def test_queue_member_must_be_a_configured_extension(tmp_path: Path, music: Path) -> None:
    text = set_key(QUEUE_FLOW, "team", 'members = [\n  "101",\n  "105",\n]')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, '"105"'), "block.team.members")
    assert p.message == '"105" is not a configured extension; expected one of "101" or "102"'


@pytest.mark.parametrize("key", ["on_timeout", "on_full", "on_empty", "exit_target", "next"])
def test_queue_target_must_be_a_block(tmp_path: Path, music: Path, key: str) -> None:
    line = f'{key} = "voicemial"'
    text = set_key(QUEUE_FLOW, "team", line)
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, line), f"block.team.{key}")
    assert p.message.startswith('unknown block "voicemial"; did you mean "voicemail"? expected')
    assert p.message.endswith('"closed" or "team" (or "" to hang up)')


def test_queue_targets_make_blocks_reachable(tmp_path: Path, music: Path) -> None:
    text = QUEUE_FLOW + (
        '\n[block.busy]\ntype = "play"\nprompt = "welcome"\n'
        '\n[block.gone]\ntype = "hangup"\n'
        '\n[block.later]\ntype = "voicemail"\n'
    )
    found = problems(tmp_path, text)
    assert [p.key for p in found] == ["block.busy", "block.gone", "block.later"]
    assert "a queue's on_full/on_empty/exit_target" in found[0].message
    for line in ['on_full = "busy"', 'on_empty = "gone"', 'exit_target = "later"']:
        text = set_key(text, "team", line)
    load_config(write(tmp_path, text))


def test_queue_that_sends_callers_round_a_loop(tmp_path: Path, music: Path) -> None:
    text = set_key(QUEUE_FLOW, "team", 'on_empty = "lunch"') + (
        '\n[block.lunch]\ntype = "hours"\nschedule = ["mon-fri 13:00-14:00"]\n'
        'open = "team"\nclosed = "voicemail"\n'
    )
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, "[block.team]"), "block.team")
    assert p.message.startswith(
        'blocks "team" -> "lunch" -> "team" form a loop in which nothing waits (no prompt,'
        ' menu, dial or voicemail) (queue "team" sends callers on at once through on_empty,'
    )
    # full (max_callers) without on_full: next is taken at once too
    text = set_key(set_key(text, "team", 'on_empty = "voicemail"'), "team", 'next = "lunch"')
    assert only(tmp_path, text).message.startswith('blocks "team" -> "lunch" -> "team" form')
    # after max_wait or a key the caller has waited: fine
    text = set_key(set_key(text, "team", 'next = ""'), "team", 'on_timeout = "lunch"')
    load_config(write(tmp_path, set_key(text, "team", 'exit_target = "lunch"')))


def test_queue_music_and_greeting_must_play(tmp_path: Path, music: Path) -> None:
    (music / "default.wav").unlink()
    p = only(tmp_path, QUEUE_FLOW)  # the default music
    assert (p.line, p.key) == (line_of(QUEUE_FLOW, "[block.team]"), "block.team.music")
    assert p.message.startswith("music 'default' not found (looked for ")
    assert str(music / "default.wav") in p.message
    assert "expected the name of hold music in media_dir/music" in p.message

    write_wav(music / "default.wav")
    (music / "jazz.wav").write_bytes(b"no audio")
    text = set_key(QUEUE_FLOW, "team", 'music = "jazz"')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (line_of(text, 'music = "jazz"'), "block.team.music")
    assert p.message.startswith('music "jazz": cannot read audio file')
    assert "expected an audio file with sound in it" in p.message

    text = set_key(QUEUE_FLOW, "team", 'music = "sounds/hold.wav"')
    assert "does not exist" in only(tmp_path, text).message
    write_wav(tmp_path / "sounds" / "hold.wav")
    load_config(write(tmp_path, text))

    text = set_key(QUEUE_FLOW, "team", 'greeting = "please-wait"')
    p = only(tmp_path, text)
    assert (p.line, p.key) == (
        line_of(text, "greeting =", after="[block.team]"),
        "block.team.greeting",
    )
    assert p.message.startswith("prompt 'please-wait' not found")


# -- [features]


def test_features_default_and_written(tmp_path: Path) -> None:
    from softswitch.config_types import FeaturesConfig

    assert load_config(write(tmp_path, GOOD_EXTENSION)).features == FeaturesConfig()
    text = '[features]\nqueue_login = "*7#"\nqueue_pause = ""\nlogin_by_registration = false\n'
    features = load_config(write(tmp_path, text + GOOD_EXTENSION)).features
    assert features == FeaturesConfig("*7#", "", False)
    assert features.codes() == {"*7#": "queue_login"}


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ('queue_login = "45"', '"45" is not a feature code; expected "*" followed by 1 to 5'),
        ('queue_login = "101"', 'the "*" keeps it apart from extension numbers'),
        ('queue_pause = "*"', '"*" is not a feature code'),
        ('queue_pause = "*123456"', '"*123456" is not a feature code'),
        ('queue_pause = "*4a"', '"*4a" is not a feature code'),
        ("queue_login = 45", 'quote it: queue_login = "45"'),
        ('queue_pause = "*45"', '"*45" is also queue_login; expected a code of its own'),
        ('login_by_registration = "yes"', "expected a boolean, got a string"),
        ('queue_logn = "*45"', 'unknown key; did you mean "queue_login"? allowed keys:'),
    ],
)
def test_bad_feature(tmp_path: Path, line: str, expect: str) -> None:
    p = only(tmp_path, f"[features]\n{line}\n" + GOOD_EXTENSION)
    assert (p.line, p.key) == (2, f"features.{line.split()[0]}")
    assert expect in p.message


def test_feature_code_must_not_be_a_number_in_use(tmp_path: Path) -> None:
    """Digits-only numbers cannot collide with a "*" code, so the check that a code is no
    extension or entry_number is exercised on built values directly."""
    from softswitch.config import Context, _check_features
    from softswitch.config_types import ExtensionConfig, FeaturesConfig, SwitchConfig

    built = {
        "features": FeaturesConfig(queue_login="*45", queue_pause="*46"),
        "switch": SwitchConfig(entry="main", entry_number="*46"),
        "extension": (ExtensionConfig("*45", "", "x"),),
    }
    found = list(_check_features(built, Context(tmp_path, {})))
    assert found == [
        (("features", "queue_login"), '"*45" is also the number of extension *45; expected a'
         ' code no extension or entry_number uses, starting with "*"'),
        (("features", "queue_pause"), '"*46" is also the number of [switch] entry_number;'
         ' expected a code no extension or entry_number uses, starting with "*"'),
    ]  # fmt: skip
    built["switch"] = SwitchConfig(entry="", entry_number="*46")  # no flows: not dialled
    assert [p for p, *_ in _check_features(built, Context(tmp_path, {}))] == [
        ("features", "queue_login")
    ]


def test_http_and_notify_sections_load_with_defaults_and_values(tmp_path):
    path = tmp_path / "c.toml"
    token = "t" * 32
    path.write_text(
        GOOD_EXTENSION
        + f'\n[http]\nhost = "0.0.0.0"\nport = 9000\ntokens = ["{token}"]\n'
        + '\n[notify]\ndigest_time = "7:30"\nwebhook_timeout = 3\n'
    )
    cfg = load_config(path)
    assert (cfg.http.host, cfg.http.port, cfg.http.tokens) == ("0.0.0.0", 9000, (token,))
    assert cfg.http.enabled and cfg.http.max_failures == 10
    assert cfg.notify.digest_time == "07:30" and cfg.notify.webhook_timeout == 3


@pytest.mark.parametrize(
    ("table", "line", "key", "fragment"),
    [
        ("http", 'host = "localhost"', "http.host", "is not an IP address"),
        ("http", 'tokens = ["short"]', "http.tokens", "at least 24 printable characters"),
        ("http", "port = 0", "http.port", "1"),
        ("notify", 'digest_time = "25:00"', "notify.digest_time", "not a time of day"),
        ("notify", 'digest_time = "noon"', "notify.digest_time", '"HH:MM"'),
        ("notify", 'webhook_secret = "abc"', "notify.webhook_secret", "at least 16"),
    ],
)
def test_http_and_notify_problems_name_the_key(tmp_path, table, line, key, fragment):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_EXTENSION + f"\n[{table}]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:" in text and key in text and fragment in text
