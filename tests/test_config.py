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
