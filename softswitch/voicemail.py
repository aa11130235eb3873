"""Voicemail storage: the finished recording becomes a WAV under the data directory, a
`voicemail` row and one queued e-mail per address, without ever losing a message.

Layout: `<data_dir>/voicemail/<box>/<YYYY-MM-DD>/<HHMMSS>-<caller>-<token>.wav`, date and
time in the switch's timezone, `<token>` 8 random hex digits (the file is in place before
its row exists, so the name cannot carry the row id; the row's `path` links them).

Crash safety, in the order `save_voicemail` does things:

1. copy the recording to `.<name>.tmp` in the final directory, fsync it;
2. rename it to `<name>` and fsync the directories: the file is complete and durable;
3. one transaction: the `voicemail` row and its `outbox` e-mails (all or nothing);
4. delete the source recording (unless `keep_source`).

A crash before 2 leaves a hidden `.tmp` (and the untouched source); a crash between 2 and
3 leaves a complete WAV without a row. `recover()` runs at start-up, before new calls:
it adopts every WAV without a row (row + e-mails, marked as recovered), finishes the
rename of a `.tmp` whose WAV data is complete and adopts it too, and deletes only a
`.tmp` whose copy was cut short (its source still exists). It logs all of it, and rows
whose file has gone missing.

The module does file work and store calls only; no asyncio state, so the flow engine and
the coordinator call it as they like (`save_voicemail_async` keeps the copy and fsyncs
off the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from softswitch.store import Store

log = logging.getLogger("softswitch.voicemail")

VOICEMAIL_DIR = "voicemail"
TMP_SUFFIX = ".tmp"
_FILE_RE = re.compile(r"^(\d{6})-([^-]*)-([0-9a-f]+)\.wav$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- names ---------------------------------------------------------------------------------
def safe_name(text: str | None, fallback: str = "unknown", max_len: int = 40) -> str:
    """A file-name-safe form of a box name or caller number: letters, digits and `+_.@`
    survive, anything else (also `-`, the field separator) becomes `_`; never starts
    with a dot, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9+_.@]", "_", text or "")[:max_len]
    cleaned = re.sub(r"^\.+", lambda m: "_" * len(m.group()), cleaned)
    return cleaned or fallback


def _local(when: float, tz: str) -> datetime:
    return datetime.fromtimestamp(when, ZoneInfo(tz))


def _duration(seconds: float) -> str:
    total = max(0, round(seconds))
    return f"{total // 60}:{total % 60:02d}"


# -- WAV inspection --------------------------------------------------------------------
@dataclass(frozen=True)
class WavInfo:
    seconds: float  # of the audio actually in the file
    complete: bool  # the data chunk is as long as the header says


def wav_info(path: str | Path) -> WavInfo | None:
    """Length and completeness of a RIFF/WAVE file; None when it is not one."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, clen = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = f.read(clen)
                    if len(fmt) < 16:
                        return None
                    byte_rate = int.from_bytes(fmt[8:12], "little")
                    f.seek(clen & 1, os.SEEK_CUR)
                elif cid == b"data":
                    if byte_rate <= 0:
                        return None
                    available = size - f.tell()
                    present = min(clen, available)
                    return WavInfo(present / byte_rate, clen <= available)
                else:
                    f.seek(clen + (clen & 1), os.SEEK_CUR)
    except OSError:
        return None


# -- the e-mail text -------------------------------------------------------------------
def voicemail_email(
    *,
    box: str,
    caller: str,
    caller_name: str | None,
    received: float,
    seconds: float,
    tz: str = "UTC",
    filename: str | None = None,
    recovered: bool = False,
) -> tuple[str, str]:
    """(subject, plain-text body) of the e-mail announcing a message."""
    who = f"{caller_name} <{caller}>" if caller_name else caller
    when = _local(received, tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    length = _duration(seconds)
    subject = f"Voicemail from {who} ({length}) in box {box}"
    lines = [
        f"New voicemail in box {box}.",
        "",
        f"From:     {who}",
        f"Received: {when}",
        f"Length:   {length} ({seconds:.0f} s)",
        f"Box:      {box}",
        "",
    ]
    if filename:
        lines.append(f"The recording is attached ({filename}).")
    if recovered:
        lines.append(
            "This message was recovered from disk when the switch restarted; "
            "the caller's name and the call are unknown."
        )
    return subject, "\n".join(lines) + "\n"


def _message_id(voicemail_id: int, index: int, sender: str | None) -> str:
    domain = sender.rpartition("@")[2] if sender and "@" in sender else "softswitch"
    return f"<vm{voicemail_id}.{index}.{secrets.token_hex(6)}@{safe_name(domain)}>"


# -- file work (no store: safe in a thread) -------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(data_dir: Path, directory: Path) -> None:
    """fsync `directory` and its parents up to the data directory (new entries)."""
    current = directory
    while True:
        _fsync_dir(current)
        if current == data_dir or current.parent == current:
            break
        current = current.parent


def stage_recording(
    data_dir: str | Path,
    box: str,
    caller: str,
    recorded_wav: str | Path,
    received: float,
    tz: str = "UTC",
) -> str:
    """Steps 1-2: copy the recording to its final place, durably. Returns the path
    relative to `data_dir` (POSIX form, as stored in the row). Touches no store."""
    data_dir = Path(data_dir)
    local = _local(received, tz)
    directory = data_dir / VOICEMAIL_DIR / safe_name(box, "box") / local.strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        name = f"{local.strftime('%H%M%S')}-{safe_name(caller)}-{secrets.token_hex(4)}.wav"
        final = directory / name
        if not final.exists():
            break
    tmp = directory / f".{name}{TMP_SUFFIX}"
    try:
        with open(recorded_wav, "rb") as src, open(tmp, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_tree(data_dir, directory)
    return final.relative_to(data_dir).as_posix()


# -- store work (on the thread that owns the store) ------------------------------------
def record_voicemail(
    store: Store,
    *,
    box: str,
    caller: str,
    caller_name: str | None,
    call_id: str | None,
    path: str,
    received: float,
    seconds: float,
    emails: Sequence[str],
    smtp_sender: str | None = None,
    tz: str = "UTC",
    recovered: bool = False,
) -> int:
    """Step 3: the row and one outbox e-mail per address, in one transaction."""
    subject, body = voicemail_email(
        box=box,
        caller=caller,
        caller_name=caller_name,
        received=received,
        seconds=seconds,
        tz=tz,
        filename=path.rpartition("/")[2],
        recovered=recovered,
    )
    with store.transaction():
        voicemail_id = store.add_voicemail(
            box=box,
            caller=caller,
            caller_name=caller_name,
            call_id=call_id,
            received=received,
            seconds=seconds,
            path=path,
        )
        for index, address in enumerate(dict.fromkeys(a.strip() for a in emails if a.strip())):
            store.add_outbox(
                recipient=address,
                sender=smtp_sender,
                subject=subject,
                body_text=body,
                attachment=path,
                voicemail_id=voicemail_id,
                message_id=_message_id(voicemail_id, index, smtp_sender),
                created=received,
            )
    return voicemail_id


def _drop_source(recorded_wav: str | Path, keep_source: bool) -> None:
    if keep_source:
        return
    try:
        Path(recorded_wav).unlink(missing_ok=True)
    except OSError as exc:  # the message is safe; a stray source file is only clutter
        log.warning("could not remove recording %s after saving it: %s", recorded_wav, exc)


def save_voicemail(
    store: Store,
    data_dir: str | Path,
    box: str,
    caller: str,
    caller_name: str | None,
    call_id: str | None,
    recorded_wav: str | Path,
    seconds: float,
    now: float,
    emails: Sequence[str],
    smtp_sender: str | None = None,
    *,
    tz: str = "UTC",
    keep_source: bool = False,
) -> int:
    """Store a finished recording as a message of `box`; returns the voicemail id.

    Blocks for the copy and fsyncs (~ms for a two-minute 8 kHz WAV); in the event loop
    prefer `save_voicemail_async`. `smtp_sender` is stored as the e-mails' From (None:
    the [switch.smtp] `from` at send time, the usual choice). If the store write fails
    the WAV stays in place (recover() adopts it on the next start) and the source is
    kept; the exception propagates — do not save the same recording again."""
    path = stage_recording(data_dir, box, caller, recorded_wav, now, tz)
    voicemail_id = _record_or_log(
        store, box, caller, caller_name, call_id, path, now, seconds, emails, smtp_sender, tz
    )
    _drop_source(recorded_wav, keep_source)
    return voicemail_id


async def save_voicemail_async(
    store: Store,
    data_dir: str | Path,
    box: str,
    caller: str,
    caller_name: str | None,
    call_id: str | None,
    recorded_wav: str | Path,
    seconds: float,
    now: float,
    emails: Sequence[str],
    smtp_sender: str | None = None,
    *,
    tz: str = "UTC",
    keep_source: bool = False,
) -> int:
    """`save_voicemail` with the file copy and fsyncs in a thread; the store is written
    on the calling (event-loop) thread."""
    path = await asyncio.to_thread(stage_recording, data_dir, box, caller, recorded_wav, now, tz)
    voicemail_id = _record_or_log(
        store, box, caller, caller_name, call_id, path, now, seconds, emails, smtp_sender, tz
    )
    await asyncio.to_thread(_drop_source, recorded_wav, keep_source)
    return voicemail_id


def _record_or_log(
    store: Store,
    box: str,
    caller: str,
    caller_name: str | None,
    call_id: str | None,
    path: str,
    received: float,
    seconds: float,
    emails: Sequence[str],
    smtp_sender: str | None,
    tz: str,
) -> int:
    try:
        return record_voicemail(
            store,
            box=box,
            caller=caller,
            caller_name=caller_name,
            call_id=call_id,
            path=path,
            received=received,
            seconds=seconds,
            emails=emails,
            smtp_sender=smtp_sender,
            tz=tz,
        )
    except BaseException:
        log.exception(
            "voicemail for box %s from %s is on disk at %s but not in the database; "
            "it will be adopted on the next start",
            box,
            caller,
            path,
        )
        raise


# -- start-up recovery --------------------------------------------------------------------
@dataclass
class Recovered:
    adopted: list[int] = field(default_factory=list)  # new voicemail ids
    removed: list[Path] = field(default_factory=list)  # cut-short .tmp copies deleted
    skipped: list[Path] = field(default_factory=list)  # files left alone (not a WAV)
    missing: list[int] = field(default_factory=list)  # rows whose file is gone


def recover(
    store: Store,
    data_dir: str | Path,
    *,
    boxes: Mapping[str, Sequence[str]] | None = None,
    tz: str = "UTC",
    smtp_sender: str | None = None,
) -> Recovered:
    """Reconcile `<data_dir>/voicemail` with the store after a crash; call at start-up
    before new calls. `boxes` maps box name -> e-mail addresses (the voicemail blocks
    of the config): an adopted message of a known box is announced like a new one; the
    box of an unknown directory is the directory name, with no e-mail."""
    data_dir = Path(data_dir)
    result = Recovered()
    root = data_dir / VOICEMAIL_DIR
    if not root.is_dir():
        return result
    by_dir = {safe_name(box, "box"): (box, tuple(emails)) for box, emails in (boxes or {}).items()}
    known = store.voicemail_paths()
    for box_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for day_dir in sorted(p for p in box_dir.iterdir() if p.is_dir()):
            for file in sorted(p for p in day_dir.iterdir() if p.is_file()):
                box, emails = by_dir.get(box_dir.name, (box_dir.name, ()))
                try:
                    _recover_file(
                        store, data_dir, file, box, emails, tz, smtp_sender, known, result
                    )
                except Exception:  # one bad file must not stop the switch from starting
                    log.exception("voicemail recovery: could not handle %s; left alone", file)
                    result.skipped.append(file)
    for row in store.voicemails():
        if not (data_dir / row["path"]).exists():
            result.missing.append(int(row["id"]))
    if result.missing:
        log.warning(
            "%d voicemail row(s) have no file any more (ids %s)",
            len(result.missing),
            ", ".join(map(str, result.missing[:20])),
        )
    return result


def _recover_file(
    store: Store,
    data_dir: Path,
    file: Path,
    box: str,
    emails: Sequence[str],
    tz: str,
    smtp_sender: str | None,
    known: set[str],
    result: Recovered,
) -> None:
    if file.name.startswith(".") and file.name.endswith(TMP_SUFFIX):
        finished = _finish_tmp(data_dir, file, result)
        if finished is None:
            return
        file = finished
    elif not file.name.endswith(".wav"):
        return
    rel = file.relative_to(data_dir).as_posix()
    if rel in known:
        return
    if _adopt(store, file, rel, box, emails, tz, smtp_sender, result) is not None:
        known.add(rel)


def _finish_tmp(data_dir: Path, tmp: Path, result: Recovered) -> Path | None:
    """A staging copy left by a crash: complete -> renamed into place; else deleted."""
    info = wav_info(tmp)
    if info is None or not info.complete:
        log.warning("deleting incomplete voicemail copy %s (crash while copying)", tmp)
        tmp.unlink(missing_ok=True)
        result.removed.append(tmp)
        return None
    final = tmp.with_name(tmp.name[1 : -len(TMP_SUFFIX)])
    if final.exists():  # renamed already; this is a second copy
        log.warning("deleting duplicate voicemail copy %s", tmp)
        tmp.unlink()
        result.removed.append(tmp)
        return None
    os.rename(tmp, final)
    _fsync_tree(data_dir, tmp.parent)
    return final


def _adopt(
    store: Store,
    file: Path,
    rel: str,
    box: str,
    emails: Sequence[str],
    tz: str,
    smtp_sender: str | None,
    result: Recovered,
) -> int | None:
    info = wav_info(file)
    if info is None:
        log.warning("voicemail directory holds %s, which is not a WAV file; left alone", file)
        result.skipped.append(file)
        return None
    match = _FILE_RE.match(file.name)
    caller = match.group(2) if match else "unknown"
    received = file.stat().st_mtime
    if match and _DATE_RE.match(file.parent.name):
        try:
            naive = datetime.strptime(f"{file.parent.name} {match.group(1)}", "%Y-%m-%d %H%M%S")
            received = naive.replace(tzinfo=ZoneInfo(tz)).timestamp()
        except ValueError:
            pass
    voicemail_id = record_voicemail(
        store,
        box=box,
        caller=caller,
        caller_name=None,
        call_id=None,
        path=rel,
        received=received,
        seconds=round(info.seconds, 3),
        emails=emails,
        smtp_sender=smtp_sender,
        tz=tz,
        recovered=True,
    )
    log.warning(
        "adopted voicemail %s without a database row (crash while saving): box %s, id %d",
        rel,
        box,
        voicemail_id,
    )
    result.adopted.append(voicemail_id)
    return voicemail_id
