"""Configuration as dataclasses: what `softswitch.config.load_config` returns.

Kept apart from the loader so every other module can import the types without the
validation machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from softswitch.acd.config import QueueConfig


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
    # what the other party hears while a phone holds a bridged call: a name in
    # media/music or a file ("" = silence)
    music: str = "default"


@dataclass(frozen=True)
class ExtensionConfig:
    number: str
    name: str
    password: str
    email: str | None = None
    # call classes of [[route]]s this extension may use (docs/trunks.md)
    classes: tuple[str, ...] = ("internal", "local", "national")
    # call recording of this extension's calls: never / always / on-demand (docs/recording.md)
    record: str = "never"
    # extensions of one pickup group may answer each other's ringing calls with *8
    pickup_group: str = ""


@dataclass(frozen=True)
class Config:
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    extensions: tuple[ExtensionConfig, ...] = ()
    blocks: dict[str, Block] = field(default_factory=dict)  # [block.NAME]
    smtp: SmtpConfig = field(default_factory=lambda: SmtpConfig())  # [switch.smtp]
    features: FeaturesConfig = field(default_factory=lambda: FeaturesConfig())  # [features]
    http: HttpConfig = field(default_factory=lambda: HttpConfig())  # [http]
    notify: NotifyConfig = field(default_factory=lambda: NotifyConfig())  # [notify]
    security: SecurityConfig = field(default_factory=lambda: SecurityConfig())  # [security]
    trunks: tuple[TrunkConfig, ...] = ()  # [[trunk]] (docs/trunks.md)
    routes: tuple[RouteConfig, ...] = ()  # [[route]]
    recording: RecordingConfig = field(default_factory=lambda: RecordingConfig())  # [recording]
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
class RecordingConfig:
    """[recording]: call recordings (docs/recording.md); who is recorded is the
    `record` key of extensions and queues."""

    retention_days: int = 90  # recordings older than this are deleted (0 = kept forever)
    announce: bool = False  # both parties hear "this call is recorded" before it starts


@dataclass(frozen=True)
class HttpConfig:
    """[http]: the JSON API, its event stream and the dashboard (one aiohttp server)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # only this machine unless the admin says otherwise
    port: int = 8088
    # Bearer tokens that may use the API; none configured: one is generated into
    # DATA_DIR/http-token (mode 0600) and printed at start.
    tokens: tuple[str, ...] = ()
    # repeated bad tokens from one address: after `max_failures` within `ban_seconds`
    # that address gets 429 for `ban_seconds`
    max_failures: int = 10
    ban_seconds: float = 300.0


@dataclass(frozen=True)
class NotifyConfig:
    """[notify]: missed-call notifications and daily digests to queue supervisors
    (each queue's `notify` list: e-mail addresses and webhook URLs)."""

    # HMAC-SHA256 key that signs webhook bodies (X-Softswitch-Signature); "" means one is
    # generated into DATA_DIR/webhook-secret (mode 0600)
    webhook_secret: str = ""
    webhook_timeout: float = 10.0  # seconds for one POST
    digest_time: str = "08:00"  # local time of the daily digest of yesterday; "" = off
    # who hears about security events (an extension hitting a paid route's hourly call
    # limit): e-mail addresses and http(s) URLs
    alerts: tuple[str, ...] = ()


# User-Agent fragments of well-known SIP scanners and war-dialers (matched anywhere in
# the header, case-insensitively). sipsak is left out: admins use it for monitoring.
SCANNER_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "vaxsipuseragent",
    "vaxipuseragent",
    "sundayddr",
    "iwar",
    "sivus",
    "gulp",
    "siparmyknife",
    "pplsip",
)


@dataclass(frozen=True)
class SecurityConfig:
    """[security]: the SIP edge's defences (softswitch/sip/defence.py, docs/security.md).

    A "source" is an IPv4 address or an IPv6 /64. Limits set to 0 are off."""

    # fail2ban-like: `ban_after` failed digest attempts from one source within
    # `ban_window` seconds and every packet from it is dropped for `ban_seconds`
    ban_after: int = 5  # 0 = never ban
    ban_window: float = 60.0
    ban_seconds: float = 600.0
    # networks (CIDR) never banned nor rate limited: the office, say; normalised strings
    allow: tuple[str, ...] = ()
    # a token bucket per source: messages (requests and responses) and new TCP connections
    max_messages_per_second: float = 200.0
    message_burst: int = 0  # 0 = twice the rate
    max_tcp_connects_per_second: float = 20.0
    tcp_connect_burst: int = 0  # 0 = twice the rate
    # open TCP connections: in all, and from one source
    max_tcp_connections: int = 1024
    max_tcp_connections_per_source: int = 32
    # one message: bytes (UDP datagram or TCP message) and header lines
    max_message_size: int = 32768
    max_headers: int = 100
    # a request whose User-Agent contains one of these (any case) is dropped unanswered
    drop_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS


@dataclass(frozen=True)
class TrunkConfig:
    """[[trunk]]: a SIP provider (or a source of calls) - docs/trunks.md."""

    name: str
    host: str = ""  # the provider's SIP domain or address; "" = no provider to call or register
    port: int = 5060
    proxy: str = ""  # "host[:port]" requests are sent to; "" = host:port
    transport: str = "udp"  # udp / tcp
    username: str = ""
    auth_username: str = ""  # digest user name when it differs from username
    password: str = ""
    realm: str = ""  # answer only challenges of this realm; "" = any
    register: bool = False  # keep a registration with the provider
    expires: int = 600  # registration time asked for (s)
    # where the provider's calls come from: "CIDR" networks or "address:port"; empty =
    # the address(es) of proxy/host (on its port, for UDP)
    allow: tuple[str, ...] = ()
    anonymous: bool = False  # calls to `numbers` are accepted from any source
    numbers: dict[str, str] = field(default_factory=dict)  # DID -> entry block
    codecs: tuple[str, ...] = ()  # offered to this trunk, in order; () = the workers' default
    # how numbers are written toward / read from this provider
    caller_id_format: str = "e164"  # e164 / international / national / as-is
    country_code: str = ""  # "7": for the national format
    national_prefix: str = ""  # "8": national numbers start with it
    international_prefix: str = ""  # "810", "00": foreign numbers start with it
    max_calls: int = 0  # concurrent calls through the trunk, both ways (0 = no limit)
    response_timeout: float = 5.0  # seconds without any answer before failing over

    @property
    def remote(self) -> tuple[str, int]:
        """Where requests to the provider go: proxy if set, else host:port."""
        if not self.proxy:
            return self.host, self.port
        text = self.proxy
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else 5060
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit():
            return host, int(port)
        return text, 5060


@dataclass(frozen=True)
class RouteConfig:
    """[[route]]: which dialled numbers go out over which trunks, and who may dial them."""

    name: str
    trunks: tuple[str, ...]  # tried in order: the next on 5xx / timeout
    call_class: str  # TOML key: class
    prefixes: tuple[str, ...] = ()  # the number starts with one of these
    pattern: str = ""  # or matches this regular expression (whole number)
    strip: int = 0  # leading characters removed
    prepend: str = ""  # then this put in front
    caller_id: str = ""  # number presented ({ext}: the caller's extension); "" = see docs
    max_calls_per_extension: int = 2  # one extension's outside calls at once (0 = no limit)
    max_calls_per_hour: int = 0  # one extension's calls over this route per hour (0 = off)
    ring_timeout: int = 120  # seconds the far end may ring

    def matches(self, number: str) -> bool:
        import re

        if any(number.startswith(p) for p in self.prefixes):
            return True
        return bool(self.pattern) and re.fullmatch(self.pattern, number) is not None

    def rewrite(self, number: str) -> str:
        return self.prepend + number[self.strip :]


@dataclass(frozen=True)
class FeaturesConfig:
    """[features]: codes an operator dials from their own phone, and how queue logins
    follow registrations. "" disables a code."""

    queue_login: str = "*45"  # toggles the caller's login to every queue they are in
    queue_pause: str = "*46"  # toggles their pause (logged in, but not rung)
    # an operator is logged in while their phone is registered (and out when it is not)
    login_by_registration: bool = True
    # dialled DURING a bridged call (in-call codes, softswitch/incall.py): toggles the
    # recording of the call for a party whose `record` is on-demand
    record_toggle: str = "*1"
    # in-call codes for phones without a transfer button: the party who presses it then
    # dials the target; blind puts the other party through at once, attended first
    # connects the presser to the target, and hanging up completes the transfer
    blind_transfer: str = "##"
    attended_transfer: str = "*2"
    pickup: str = "*8"  # answers a call ringing at an extension of the caller's pickup group
    pickup_directed: str = "**"  # followed by an extension: answers a call ringing there

    def incall_codes(self) -> dict[str, str]:
        """Enabled in-call code -> its key ("*1" -> "record_toggle")."""
        keys = ("record_toggle", "blind_transfer", "attended_transfer")
        return {getattr(self, key): key for key in keys if getattr(self, key)}

    def codes(self) -> dict[str, str]:
        """Enabled code -> the key it is configured under ("*45" -> "queue_login")."""
        return {
            code: key
            for key, code in (("queue_login", self.queue_login), ("queue_pause", self.queue_pause))
            if code
        }


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


@dataclass(frozen=True)
class QueueBlock:
    """A call-centre queue; the queue is named after the block. The ACD core gets
    `to_queue_config()`; greeting, next and notify are for the flow around it.

    Target keys are block names, "" = hang up. on_timeout, on_full, on_empty and
    exit_target are None when not set: their fallback is `next` (on_empty: keep waiting),
    which the integration applies when the core's `Leave` carries no target."""

    name: str
    members: tuple[str, ...]  # extension numbers, in order (linear / round-robin order)
    strategy: str = "ring-all"  # one of softswitch.acd.STRATEGIES
    answer_timeout: float = 20.0  # seconds one operator rings; 0 = until answered
    retry: float = 5.0  # seconds before an operator who missed is rung for the same caller
    ring_new_free: bool = True  # ring-all: add operators to the fork as they become free
    wrap_up: float = 0.0  # seconds an operator rests after a call of this queue
    music: str = "default"  # hold music: a name in media/music or a file path
    greeting: str = ""  # prompt played once when the caller joins ("" = none)
    max_wait: float | None = None  # seconds a caller waits at most, then on_timeout
    on_timeout: str | None = None  # None: next
    max_callers: int | None = None  # waiting callers; one more goes to on_full at once
    on_full: str | None = None  # None: next
    on_empty: str | None = None  # nobody logged in: None waits, a block leaves at once
    exit_key: str | None = None  # a key the caller presses to leave the queue
    exit_target: str | None = None  # where that key goes; None: next
    announce_every: float | None = None  # seconds between position / wait announcements
    auto_pause_after: int | None = None  # consecutive misses that pause an operator
    priority: int = 0  # callers of higher-priority queues are served first
    next: str = ""  # where the caller goes after leaving without a target ("" = hang up)
    # supervisors told about missed calls: e-mail addresses or http(s) URLs
    notify: tuple[str, ...] = ()
    notify_missed_rings: bool = False  # also tell them about each ring nobody answered
    record: str = "never"  # call recording of this queue's calls: never / always / on-demand

    def to_queue_config(self) -> QueueConfig:
        """The ACD core's view of this queue (members are operator ids = extensions)."""
        from softswitch.acd.config import QueueConfig  # the ACD package only when used

        return QueueConfig(
            name=self.name,
            members=self.members,
            strategy=self.strategy,
            answer_timeout=self.answer_timeout or None,  # 0: ring until answered
            retry=self.retry,
            ring_new_free=self.ring_new_free,
            wrap_up=self.wrap_up,
            music=self.music,
            max_wait=self.max_wait,
            on_timeout=self.on_timeout,
            max_callers=self.max_callers,
            on_full=self.on_full,
            on_empty=self.on_empty,
            exit_key=self.exit_key,
            exit_target=self.exit_target,
            announce_every=self.announce_every,
            auto_pause_after=self.auto_pause_after,
            priority=self.priority,
        )


Block = (
    MenuBlock
    | HoursBlock
    | VoicemailBlock
    | PlayBlock
    | DialBlock
    | HangupBlock
    | ScriptBlock
    | QueueBlock
)
