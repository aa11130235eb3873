"""softswitch/recording.py without a switch: who is recorded, the commands and rows a
bridge produces, crash recovery of a half-written WAV and the retention sweep (a real
store in a temporary data dir, a fake worker)."""

from __future__ import annotations

import asyncio
import struct
import wave
from pathlib import Path

import numpy as np

from softswitch.config import parse_config
from softswitch.incall import FeatureContext, InCall
from softswitch.recording import CallRecorder, Party, may_toggle, must_record, repair_wav
from softswitch.store.db import Store

CONFIG = """
[[extension]]
number = "101"
password = "amber-violin-42-otter"
record = "always"

[[extension]]
number = "102"
password = "copper-tulip-87-heron"
record = "on-demand"

[[extension]]
number = "103"
password = "meadow-kettle-35-lynx"

[switch]
entry = "line"

[block.line]
type = "queue"
members = ["103"]
record = "on-demand"

[recording]
"""


def config(extra: str = ""):
    return parse_config(CONFIG + extra)


def test_who_is_recorded():
    c = config()
    assert must_record(c, [Party("101"), Party(None)])
    assert not must_record(c, [Party("102"), Party("103")])
    assert not must_record(c, [Party("999"), Party(None)])
    assert may_toggle(c, Party("102")) and not may_toggle(c, Party("103"))
    assert may_toggle(c, Party("103", "line"))  # the queue's operator
    assert not may_toggle(c, Party(None))


def write_wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(int(8000 * seconds), dtype="<i2").tobytes())


def test_repair_wav_fixes_the_sizes_a_dead_writer_left(tmp_path: Path):
    path = tmp_path / "cut.wav"
    write_wav(path, 1.5)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 36)  # as pjmedia writes them before the first close
    data[40:44] = struct.pack("<I", 0)
    path.write_bytes(bytes(data) + b"\x00")  # and a torn last sample
    assert repair_wav(path) == 1.5
    with wave.open(str(path)) as w:
        assert w.getnframes() == 12000
    assert repair_wav(path) == 1.5  # a sound file is left as it is
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    assert repair_wav(tmp_path / "junk.wav") == 0.0


class Harness:
    """A CallRecorder wired to an InCall, with the commands it sends collected."""

    def __init__(
        self, tmp: Path, extra: str = "retention_days = 2\n", parties: dict | None = None
    ) -> None:
        self.now = 1_000_000.0
        self.data_dir = tmp / "data"
        self.store = Store(self.data_dir / "softswitch.db")
        self.sent: list[tuple[str, dict]] = []
        self.parties = parties or {"c-a": Party("101"), "c-b": Party("103")}
        self.incall = InCall(self.store, lambda: self.now)
        self.rec = CallRecorder(
            config(extra),
            self.store,
            self.data_dir,
            lambda: self.now,
            lambda w, cmd: self.sent.append((w, cmd)),
            lambda name: tmp / f"{name}.wav",
            lambda leg: self.parties.get(leg, Party(None)),
        )
        self.rec.attach(self.incall)
        self.store.open_call("c", started=self.now, caller="101", callee="103")

    def rows(self) -> list[dict]:
        return [dict(r) for r in self.store.db.execute("SELECT * FROM recordings ORDER BY id")]

    def finished(self, rec: str, reason: str, seconds: float = 2.0) -> None:
        self.incall.on_event(
            "W",
            {"event": "bridge_recording_finished", "rec": rec, "legs": ["c-a", "c-b"],
             "file": "x", "seconds": seconds, "reason": reason},
        )  # fmt: skip


def test_an_always_party_is_recorded_from_the_bridge_until_hangup(tmp_path: Path):
    h = Harness(tmp_path)
    h.incall.on_command("W", {"cmd": "bridge", "a": "c-a", "b": "c-b"})
    ((worker, cmd),) = h.sent
    assert worker == "W" and cmd["cmd"] == "record_bridge" and cmd["legs"] == ["c-a", "c-b"]
    assert cmd["rec"] == "c-r1"
    (row,) = h.rows()
    assert (row["call_id"], row["started_by"], row["ended"]) == ("c", "always", None)
    assert row["path"].startswith("call-recordings/") and row["path"].endswith("/c-r1.wav")
    assert cmd["file"] == str(h.data_dir / row["path"])
    assert Path(cmd["file"]).parent.is_dir()
    # the mandatory recording cannot be stopped by the code (101 is "always")
    h.rec.toggle(FeatureContext("W", "c-a", "c-b", "c", "*1", "record_toggle"))
    assert len(h.sent) == 1
    h.now += 5
    h.finished("c-r1", "hangup", 4.9)
    (row,) = h.rows()
    assert (row["ended"], row["seconds"], row["reason"]) == (h.now, 4.9, "hangup")
    assert h.rec.active == {}


def test_on_demand_toggles_and_announce_waits_for_the_prompt(tmp_path: Path):
    h = Harness(tmp_path, "announce = true\n", {"c-a": Party("102"), "c-b": Party(None)})

    async def run() -> None:
        h.incall.on_command("W", {"cmd": "bridge", "a": "c-a", "b": "c-b"})
        assert h.sent == [] and h.rows() == []  # 102 is on-demand: nothing yet
        for digit in "*1":  # the outside party cannot toggle
            h.incall.on_event("W", {"event": "dtmf", "leg": "c-b", "digit": digit})
        assert h.sent == []
        for digit in "*1":
            h.incall.on_event("W", {"event": "dtmf", "leg": "c-a", "digit": digit})
        prompt = str(tmp_path / "call-recorded.wav")
        assert [c for _, c in h.sent] == [
            {"cmd": "play", "leg": "c-a", "file": prompt},
            {"cmd": "play", "leg": "c-b", "file": prompt},
        ]
        h.incall.on_event("W", {"event": "playback_finished", "leg": "c-a", "file": prompt})
        assert len(h.sent) == 2  # until both have heard it
        h.incall.on_event("W", {"event": "playback_finished", "leg": "c-b", "file": prompt})
        assert h.sent[-1][1]["cmd"] == "record_bridge"
        assert h.rows()[0]["started_by"] == "102"
        for digit in "*1":  # again: stop
            h.incall.on_event("W", {"event": "dtmf", "leg": "c-a", "digit": digit})
        assert h.sent[-1][1] == {"cmd": "stop_record_bridge", "rec": "c-r1"}
        h.finished("c-r1", "stopped")
        assert h.rows()[0]["reason"] == "stopped by 102"
        # a second time: a second file; hanging up during the announcement records nothing
        for digit in "*1":
            h.incall.on_event("W", {"event": "dtmf", "leg": "c-a", "digit": digit})
        h.incall.on_event("W", {"event": "state", "leg": "c-b", "state": "disconnected"})
        assert h.sent[-1][1] == {"cmd": "stop", "leg": "c-a"}
        assert len(h.rows()) == 1 and h.rec.active == {}

    asyncio.run(run())


def test_crash_leftovers_are_closed_and_old_recordings_swept(tmp_path: Path):
    h = Harness(tmp_path)
    day = 86400.0
    folder = h.data_dir / "call-recordings" / "2020-01-01"
    folder.mkdir(parents=True)
    for name, started, ended in (
        ("old", h.now - 3 * day, h.now - 3 * day + 10),
        ("new", h.now - 1 * day, h.now - 1 * day + 10),
        ("open", h.now - 60, None),
    ):
        write_wav(folder / f"{name}.wav", 1.0)
        h.store.db.execute(
            "INSERT INTO recordings (call_id, legs, path, started, ended, seconds, started_by)"
            " VALUES ('c', 'c-a,c-b', ?, ?, ?, 1.0, 'always')",
            (f"call-recordings/2020-01-01/{name}.wav", started, ended),
        )
    h.store.db.execute(
        "INSERT INTO recordings (call_id, legs, path, started, started_by)"
        " VALUES ('c', 'c-a,c-b', 'call-recordings/gone.wav', ?, 'always')",
        (h.now,),
    )
    assert h.rec.close_open(h.now, "interrupted") == 2
    by_path = {r["path"].rsplit("/", 1)[-1]: r for r in h.rows()}
    assert by_path["open.wav"]["reason"] == "interrupted"
    assert by_path["open.wav"]["seconds"] == 1.0 and by_path["open.wav"]["ended"] <= h.now
    assert by_path["gone.wav"]["reason"] == "lost"
    assert h.rec.sweep(h.now) == 1  # retention_days = 2
    assert not (folder / "old.wav").exists() and (folder / "new.wav").exists()
    assert "old.wav" not in {r["path"].rsplit("/", 1)[-1] for r in h.rows()}
    forever = Harness(tmp_path / "2", "retention_days = 0\n")
    assert forever.rec.sweep(forever.now + 1000 * day) == 0


def test_a_dead_worker_ends_its_recordings_where_the_wav_was_cut(tmp_path: Path):
    h = Harness(tmp_path)
    h.incall.on_command("W", {"cmd": "bridge", "a": "c-a", "b": "c-b"})
    path = Path(h.sent[-1][1]["file"])
    write_wav(path, 2.0)  # what the worker had written when it died
    h.rec.worker_gone("other worker")
    assert h.rows()[0]["ended"] is None
    h.rec.worker_gone("W")
    h.incall.worker_gone("W")
    (row,) = h.rows()
    assert (row["reason"], row["seconds"]) == ("media worker died", 2.0)
    assert h.rec.active == {} and h.incall.peers == {}
