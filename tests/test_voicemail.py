"""Voicemail storage: layout, the row and its queued e-mails in one transaction, and
crash safety (a real process crash between the file and the row, then `recover`)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from softswitch import voicemail as vm
from softswitch.store.db import Store, _statements
from softswitch.store.schema import MIGRATIONS
from softswitch.voicemail import (
    recover,
    safe_name,
    save_voicemail,
    save_voicemail_async,
    wav_info,
)

# 2026-03-02 14:30:05 in Berlin (CET, UTC+1)
NOW = 1_772_458_205.0
TZ = "Europe/Berlin"


def make_wav(path: Path, seconds: float = 1.5, rate: int = 8000) -> bytes:
    frames = os.urandom(int(seconds * rate) * 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path.read_bytes()


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    rec = tmp_path / "rec" / "leg-1.wav"
    rec.parent.mkdir()
    make_wav(rec)
    return rec


def save(store: Store, data_dir: Path, recording: Path, **kw) -> int:
    args = dict(
        box="sales",
        caller="0301234567",
        caller_name="Alice",
        call_id="1772458200-1-abcdef",
        recorded_wav=recording,
        seconds=1.5,
        now=NOW,
        emails=["owner@office.example", "boss@office.example"],
        tz=TZ,
    )
    args.update(kw)
    return save_voicemail(store, data_dir, **args)


def test_schema_version_and_upgrade_from_1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO calls (id, started, caller, callee, kind) VALUES ('c1', 1, '101', '102', "
        "'internal')"
    )
    db.close()
    s = Store(path)
    assert s.version == len(MIGRATIONS) >= 2
    assert s.call("c1")["caller"] == "101"
    assert s.voicemails() == [] and s.pending_outbox() == []
    s.close()


def test_save_layout_row_and_outbox(store: Store, data_dir: Path, recording: Path) -> None:
    original = recording.read_bytes()
    vid = save(store, data_dir, recording, emails=["a@x.example", " a@x.example", "b@x.example"])
    row = store.voicemail(vid)
    assert row["box"] == "sales" and row["caller"] == "0301234567"
    assert row["caller_name"] == "Alice" and row["call_id"] == "1772458200-1-abcdef"
    assert row["received"] == NOW and row["seconds"] == 1.5 and row["heard"] == 0
    # local date and time of the switch's timezone
    assert re.fullmatch(
        r"voicemail/sales/2026-03-02/143005-0301234567-[0-9a-f]{8}\.wav", row["path"]
    )
    assert (data_dir / row["path"]).read_bytes() == original
    assert not recording.exists()  # moved
    assert not list((data_dir / row["path"]).parent.glob(".*"))  # no temp file left
    assert [dict(r)["id"] for r in store.voicemails("sales")] == [vid]
    assert store.voicemails("other") == []

    mails = store.pending_outbox()
    assert [m["recipient"] for m in mails] == ["a@x.example", "b@x.example"]  # deduplicated
    for m in mails:
        assert m["voicemail_id"] == vid and m["attachment"] == row["path"]
        assert m["kind"] == "email" and m["attempts"] == 0 and m["sent"] is None
        assert m["next_attempt"] == NOW and m["created"] == NOW
        assert "Alice <0301234567>" in m["subject"] and "sales" in m["subject"]
        assert "2026-03-02 14:30:05 CET" in m["body_text"]
        assert "0:02" in m["body_text"]  # 1.5 s rounds to 2
    assert len({m["message_id"] for m in mails}) == 2
    assert store.due_outbox(NOW - 1) == [] and len(store.due_outbox(NOW)) == 2

    store.voicemail_heard(vid)
    assert store.voicemail(vid)["heard"] == 1


def test_keep_source_and_no_emails(store: Store, data_dir: Path, recording: Path) -> None:
    vid = save(store, data_dir, recording, emails=[], keep_source=True)
    assert recording.exists()
    assert store.voicemail(vid) is not None and store.pending_outbox() == []


def test_names_are_safe(store: Store, data_dir: Path, recording: Path) -> None:
    assert safe_name("../../etc") == "___.._etc"  # one path component, not hidden
    assert safe_name("..") == "__"
    assert safe_name("") == "unknown" and safe_name(None) == "unknown"
    assert safe_name("+49 30-123") == "+49_30_123"
    vid = save(store, data_dir, recording, box="../x", caller="sip:a-b@host")
    path = store.voicemail(vid)["path"]
    assert path.startswith("voicemail/___x/2026-03-02/143005-sip_a_b@host-")
    assert (data_dir / path).resolve().is_relative_to((data_dir / "voicemail").resolve())
    assert store.voicemail(vid)["box"] == "../x"  # the row keeps the real name


def test_two_messages_same_second_do_not_collide(
    store: Store, data_dir: Path, tmp_path: Path
) -> None:
    ids = []
    for i in range(3):
        rec = tmp_path / f"r{i}.wav"
        make_wav(rec)
        ids.append(save(store, data_dir, rec))
    paths = {store.voicemail(i)["path"] for i in ids}
    assert len(paths) == 3 and all((data_dir / p).exists() for p in paths)


async def test_save_async(store: Store, data_dir: Path, recording: Path) -> None:
    original = recording.read_bytes()
    vid = await save_voicemail_async(
        store, data_dir, "support", "102", None, None, recording, 1.5, NOW, ["x@y.example"]
    )
    row = store.voicemail(vid)
    assert row["path"].startswith("voicemail/support/2026-03-02/133005-102-")  # UTC default
    assert (data_dir / row["path"]).read_bytes() == original
    assert len(store.pending_outbox()) == 1


def test_failed_outbox_insert_rolls_back_the_row(
    store: Store, data_dir: Path, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row and e-mails are one transaction; the WAV stays for recover(), the source too."""

    def broken(**kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "add_outbox", broken)
    with pytest.raises(sqlite3.OperationalError):
        save(store, data_dir, recording)
    assert store.voicemails() == [] and store.pending_outbox() == []
    assert recording.exists()
    wavs = list((data_dir / "voicemail").rglob("*.wav"))
    assert len(wavs) == 1
    monkeypatch.undo()

    result = recover(store, data_dir, boxes={"sales": ["owner@office.example"]}, tz=TZ)
    assert len(result.adopted) == 1
    assert store.voicemail(result.adopted[0])["path"] == wavs[0].relative_to(data_dir).as_posix()


CRASH_SCRIPT = """
import os, sys
from softswitch import voicemail as vm
from softswitch.store.db import Store, _statements

def crash(*a, **kw):
    os._exit(3)          # the process dies after the WAV is in place, before the row

vm.record_voicemail = crash
store = Store(sys.argv[1] + "/softswitch.db")
vm.save_voicemail(store, sys.argv[1], "sales", "0301234567", "Alice", "c-1", sys.argv[2],
                  1.5, float(sys.argv[3]), ["owner@office.example"], tz="Europe/Berlin")
"""


def test_crash_between_file_and_row_is_adopted(
    data_dir: Path, recording: Path, tmp_path: Path
) -> None:
    original = recording.read_bytes()
    data_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(data_dir), str(recording), str(NOW)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert recording.exists()  # the source is only removed after the commit

    store = Store(data_dir / "softswitch.db")
    assert store.voicemails() == []
    result = recover(store, data_dir, boxes={"sales": ["owner@office.example"]}, tz=TZ)
    assert len(result.adopted) == 1 and not result.removed and not result.missing
    row = store.voicemail(result.adopted[0])
    assert row["box"] == "sales" and row["caller"] == "0301234567"
    assert row["caller_name"] is None and row["call_id"] is None
    assert row["received"] == NOW  # from the directory and file name, in the timezone
    assert row["seconds"] == pytest.approx(1.5)
    assert (data_dir / row["path"]).read_bytes() == original
    (mail,) = store.pending_outbox()
    assert mail["recipient"] == "owner@office.example" and mail["attachment"] == row["path"]
    assert "recovered" in mail["body_text"]
    # idempotent: a second start adopts nothing more
    assert recover(store, data_dir, boxes={"sales": ["owner@office.example"]}).adopted == []
    assert len(store.voicemails()) == 1
    store.close()


def test_recover_temp_files_strays_and_missing(
    store: Store, data_dir: Path, recording: Path, tmp_path: Path
) -> None:
    vid = save(store, data_dir, recording)
    kept = data_dir / store.voicemail(vid)["path"]
    day = kept.parent

    # a staging copy that finished (crash between fsync and rename): renamed and adopted
    whole = make_wav(tmp_path / "whole.wav", seconds=2.0)
    (day / ".101500-555-0badc0de.wav.tmp").write_bytes(whole)
    # a staging copy cut short (crash while copying): deleted, its source still exists
    cut = make_wav(tmp_path / "cut.wav", seconds=2.0)
    (day / ".101600-556-00c0ffee.wav.tmp").write_bytes(cut[: len(cut) // 2])
    # not a WAV at all: left alone
    (day / "notes.wav").write_bytes(b"hello")
    # an unknown box directory
    other = data_dir / "voicemail" / "old-box" / "2026-01-01"
    other.mkdir(parents=True)
    (other / "090000-777-12345678.wav").write_bytes(make_wav(tmp_path / "o.wav", 3.0))
    # a row whose file is gone
    gone = save(store, data_dir, make_wav_path(tmp_path / "g.wav"), emails=[])
    (data_dir / store.voicemail(gone)["path"]).unlink()
    mails_before = len(store.pending_outbox())

    result = recover(store, data_dir, boxes={"sales": ["owner@office.example"]}, tz=TZ)
    assert len(result.adopted) == 2
    assert [p.name for p in result.removed] == [".101600-556-00c0ffee.wav.tmp"]
    assert [p.name for p in result.skipped] == ["notes.wav"]
    assert result.missing == [gone]
    assert not any(p.name.endswith(".tmp") for p in day.iterdir())

    adopted = {store.voicemail(i)["path"]: store.voicemail(i) for i in result.adopted}
    finished = adopted[f"voicemail/sales/{day.name}/101500-555-0badc0de.wav"]
    assert finished["box"] == "sales" and finished["caller"] == "555"
    assert (data_dir / finished["path"]).read_bytes() == whole
    assert finished["seconds"] == pytest.approx(2.0)
    stray = adopted["voicemail/old-box/2026-01-01/090000-777-12345678.wav"]
    assert stray["box"] == "old-box" and stray["seconds"] == pytest.approx(3.0)
    # only the known box is announced by e-mail
    assert len(store.pending_outbox()) == mails_before + 1
    assert store.voicemail(vid)["path"] == kept.relative_to(data_dir).as_posix()


def make_wav_path(path: Path, seconds: float = 1.0) -> Path:
    make_wav(path, seconds)
    return path


def test_wav_info(tmp_path: Path) -> None:
    data = make_wav(tmp_path / "a.wav", seconds=2.5, rate=16000)
    info = wav_info(tmp_path / "a.wav")
    assert info is not None and info.complete and info.seconds == pytest.approx(2.5)
    (tmp_path / "b.wav").write_bytes(data[:-16000])
    info = wav_info(tmp_path / "b.wav")
    assert info is not None and not info.complete and info.seconds == pytest.approx(2.0)
    (tmp_path / "c.wav").write_bytes(b"RIFF\0\0\0\0WAVE")
    assert wav_info(tmp_path / "c.wav") is None
    assert wav_info(tmp_path / "missing.wav") is None


def test_email_text() -> None:
    subject, body = vm.voicemail_email(
        box="sales",
        caller="102",
        caller_name=None,
        received=NOW,
        seconds=75,
        tz=TZ,
        filename="x.wav",
    )
    assert subject == "Voicemail from 102 (1:15) in box sales"
    assert "Received: 2026-03-02 14:30:05 CET" in body and "x.wav" in body
