"""Configuration as dataclasses: what `softswitch.config.load_config` returns.

Kept apart from the loader so every other module can import the types without the
validation machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ListenAddress:
    transport: str  # "udp" or "tcp"
    host: str
    port: int


@dataclass(frozen=True)
class SwitchConfig:
    domain: str = "softswitch.local"
    # where phones and trunks reach us; "udp:127.0.0.1:5060" style entries
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    # the address media workers put in their SDP (phones send RTP there)
    public_address: str = "127.0.0.1"
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    data_dir: Path = Path("data")
    timezone: str = "UTC"
    language: str = "en"
    # media worker pool
    workers_min: int = 2  # warm workers kept running
    workers_max: int = 16  # capacity: 2 calls (caller + callee leg pairs) per worker
    # registrar
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 600
    # edge
    ring_timeout: int = 30  # seconds an extension rings before the call is no-answer
    # an answered leg that has sent no RTP for this long is hung up (0 = off)
    media_timeout: int = 60
    # call flows: calls to `entry_number` start at block `entry` ("" = no flows)
    entry: str = ""
    entry_number: str = "100"
    media_dir: Path | None = None  # prompts and music; None = the media/ shipped with us


@dataclass(frozen=True)
class ExtensionConfig:
    number: str
    name: str
    password: str
    email: str | None = None


@dataclass(frozen=True)
class Config:
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    extensions: tuple[ExtensionConfig, ...] = ()
    blocks: dict[str, Block] = field(default_factory=dict)  # [block.NAME]
    smtp: SmtpConfig = field(default_factory=lambda: SmtpConfig())  # [switch.smtp]
    source: Path | None = None  # the file it came from, for messages
    # what relative paths in the file are relative to (prompt files of blocks)
    base_dir: Path | None = None

    def extension(self, number: str) -> ExtensionConfig | None:
        for ext in self.extensions:
            if ext.number == number:
                return ext
        return None


# -- call flows (issue 3): [block.NAME] tables -----------------------------------------
# A block names the block(s) it goes to next by name; "" means "hang up".


@dataclass(frozen=True)
class SmtpConfig:
    """[switch.smtp]: where voicemail e-mails are sent."""

    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "softswitch@localhost"  # TOML key: from
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class MenuBlock:
    name: str
    prompt: str  # prompt name from media/ or a file path
    options: dict[str, str] = field(default_factory=dict)  # digit -> block
    dial_extensions: bool = False  # caller may dial an extension number during the prompt
    timeout: float = 5.0  # seconds to wait for the first digit after the prompt
    inter_digit_timeout: float = 3.0
    retries: int = 2  # how many times the prompt is repeated after a timeout/invalid digit
    invalid_prompt: str = "invalid-choice"
    unknown_extension_prompt: str = "extension-unavailable"
    on_timeout: str = ""  # block when retries are exhausted ("" = hang up)


@dataclass(frozen=True)
class HoursBlock:
    name: str
    schedule: tuple[str, ...]  # "mon-fri 09:00-18:00", "sat 10:00-14:00", "fri 22:00-02:00"
    open: str
    closed: str
    holidays: tuple[str, ...] = ()  # "YYYY-MM-DD": closed all day
    working_days: tuple[str, ...] = ()  # "YYYY-MM-DD HH:MM-HH:MM" or "YYYY-MM-DD" (09:00-18:00)


@dataclass(frozen=True)
class VoicemailBlock:
    name: str
    box: str = ""  # mailbox name; defaults to the block name
    greeting: str = "leave-message"  # prompt name or file
    greeting_only: bool = False  # play the greeting and hang up ("we are closed")
    beep: bool = True
    max_seconds: int = 120
    silence_timeout: float = 5.0
    email: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlayBlock:
    name: str
    prompt: str
    next: str = ""


@dataclass(frozen=True)
class DialBlock:
    name: str
    targets: tuple[str, ...]  # extension numbers, rung together
    timeout: int = 20
    on_no_answer: str = ""  # also busy / unavailable


@dataclass(frozen=True)
class HangupBlock:
    name: str


@dataclass(frozen=True)
class ScriptBlock:
    name: str
    function: str  # "module:function", an async def flow(call) registered or importable
    next: str = ""


Block = MenuBlock | HoursBlock | VoicemailBlock | PlayBlock | DialBlock | HangupBlock | ScriptBlock
