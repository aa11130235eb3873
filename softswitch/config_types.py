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
    source: Path | None = None  # the file it came from, for messages

    def extension(self, number: str) -> ExtensionConfig | None:
        for ext in self.extensions:
            if ext.number == number:
                return ext
        return None
