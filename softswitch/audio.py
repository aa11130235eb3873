"""Prompts and audio files: finding them, and converting them for the media workers.

The pjsua2 media workers run an 8 kHz conference clock, so everything they play is an
8 kHz mono 16-bit PCM WAV. This module

- finds a prompt by name (``"welcome"`` -> ``media/<language>/welcome.wav``) or by path
  (:func:`resolve_prompt`, :func:`resolve_music`);
- converts whatever soundfile reads (WAV of any rate / depth / channel count, FLAC,
  OGG, MP3, AIFF, ...) to that format once, with a numpy-only band-limited resampler
  and level normalisation, and caches the result by content hash (:func:`prepare`);
- reports what is wrong with a file for the config validator (:func:`check_audio`).

Files that are *already* 8 kHz mono 16-bit PCM WAV are returned by :func:`prepare` as
they are (no copy, no level change): they are taken to be telephony-ready, and the
prompts shipped in ``media/`` are such files.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "MEDIA_DIR",
    "RATE",
    "CONVERSION_VERSION",
    "AudioError",
    "resolve_prompt",
    "resolve_music",
    "prepare",
    "check_audio",
    "is_telephony_wav",
    "resample",
    "normalise",
    "to_pcm16",
]

MEDIA_DIR = Path(__file__).resolve().parents[1] / "media"
RATE = 8000  # the media workers' clock
FALLBACK_LANGUAGE = "en"
# Part of every cache file name: bump it whenever the conversion's output changes.
CONVERSION_VERSION = "c1"

# Level normalisation: the active (speech/music) RMS is brought to TARGET_RMS_DBFS,
# but the gain is limited so that the peak stays at or below PEAK_LIMIT_DBFS.
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT_DBFS = -1.0
SILENCE_PEAK = 10 ** (-80 / 20)  # below this the file is silent: no gain applied

# A prompt name: letters, digits, '-' and '_' only; anything else is a file path.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Extensions tried, in order, when a prompt is looked up by name.
_NAME_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

_MAX_PHASES = 4096  # polyphase bank size limit (see resample)
_BLOCK_ELEMENTS = 1 << 21  # output samples x taps computed per vectorised block


class AudioError(Exception):
    """A prompt or audio file is missing, unreadable or unusable. The message names it."""


# --------------------------------------------------------------------------- lookup


def _is_name(name_or_path: str) -> bool:
    return bool(_NAME_RE.match(name_or_path))


def _find_named(name: str, dirs: list[Path]) -> tuple[Path | None, list[Path]]:
    looked: list[Path] = []
    for d in dirs:
        for ext in _NAME_EXTENSIONS:
            candidate = d / f"{name}{ext}"
            if ext == ".wav":
                looked.append(candidate)
            if candidate.is_file():
                return candidate, looked
    return None, looked


def _dedupe(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _resolve_path(name_or_path: str, base_dir: Path | None, what: str) -> Path:
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise AudioError(f"{what} file {str(path)!r} {state}")
    return path


def resolve_prompt(
    name_or_path: str, language: str, base_dir: Path | None, media_dir: Path | None = None
) -> Path:
    """Find a prompt and return its path (not yet converted: see :func:`prepare`).

    A bare name (letters, digits, ``-``, ``_``: ``"welcome"``) is looked up as
    ``<media_dir>/<language>/<name>.wav`` then ``<media_dir>/en/<name>.wav``; when a
    custom ``media_dir`` is given the shipped :data:`MEDIA_DIR` is searched after it
    the same way, so a custom folder only needs the prompts it changes. ``.flac``,
    ``.ogg`` and ``.mp3`` are accepted next to ``.wav``.

    Anything else (``"greetings/hello.flac"``, ``"/srv/pbx/hi.wav"``) is a file path;
    a relative one is taken relative to ``base_dir`` (the config file's folder), or to
    the current directory when ``base_dir`` is None.

    Raises :class:`AudioError` naming the prompt / file when it cannot be found.
    """
    if not name_or_path or not name_or_path.strip():
        raise AudioError("empty prompt name")
    if not _is_name(name_or_path):
        return _resolve_path(name_or_path, base_dir, "prompt")
    roots = [Path(media_dir)] if media_dir is not None else []
    roots.append(MEDIA_DIR)
    langs = [language] if language else []
    langs.append(FALLBACK_LANGUAGE)
    dirs = _dedupe([root / lang for root in roots for lang in langs])
    found, looked = _find_named(name_or_path, dirs)
    if found is None:
        where = ", ".join(str(p) for p in looked)
        raise AudioError(f"prompt {name_or_path!r} not found (looked for {where})")
    return found


def resolve_music(name_or_path: str, base_dir: Path | None, media_dir: Path | None = None) -> Path:
    """Find hold music: a bare name (``"default"``) is ``<media_dir>/music/<name>.wav``
    (then the shipped ``media/music/``); anything else is a path as in
    :func:`resolve_prompt`. Raises :class:`AudioError` naming it when missing."""
    if not name_or_path or not name_or_path.strip():
        raise AudioError("empty music name")
    if not _is_name(name_or_path):
        return _resolve_path(name_or_path, base_dir, "music")
    roots = [Path(media_dir)] if media_dir is not None else []
    roots.append(MEDIA_DIR)
    dirs = _dedupe([root / "music" for root in roots])
    found, looked = _find_named(name_or_path, dirs)
    if found is None:
        where = ", ".join(str(p) for p in looked)
        raise AudioError(f"music {name_or_path!r} not found (looked for {where})")
    return found


# --------------------------------------------------------------------------- DSP


def _kaiser_beta(attenuation_db: float) -> float:
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


@cache
def _filter_bank(rate_in: int, rate_out: int) -> tuple[np.ndarray, int, int, int, int]:
    """Polyphase windowed-sinc (Kaiser) bank for rate_in -> rate_out.

    Returns (bank[phases, taps], half_width, phases, step, divisor): output sample n sits
    at input time n * step / divisor; its phase is (n * step mod divisor) scaled to the
    bank's phase count.
    """
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g  # t_n = n * down / up (input samples)
    nyquist = min(rate_in, rate_out) / 2
    # Pass band to 85 % of the lower Nyquist, stop band from 100 %: for 8 kHz output
    # that is flat to 3.4 kHz (the telephone band) and >= 80 dB down from 4 kHz.
    f_pass, f_stop = 0.85 * nyquist, nyquist
    cutoff = (f_pass + f_stop) / 2 / rate_in  # cycles per input sample
    attenuation = 80.0
    transition = 2 * math.pi * (f_stop - f_pass) / rate_in  # rad per input sample
    taps = math.ceil((attenuation - 7.95) / (2.285 * transition)) + 1
    half = max(2, (taps + 1) // 2)
    beta = _kaiser_beta(attenuation)
    phases = up if up <= _MAX_PHASES else _MAX_PHASES
    frac = np.arange(phases, dtype=np.float64)[:, None] / phases  # (phases, 1)
    j = np.arange(-half + 1, half + 1, dtype=np.float64)[None, :]  # (1, 2*half)
    tau = frac - j  # time from input tap to output instant
    u = np.clip(tau / half, -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - u * u)) / np.i0(beta)
    bank = 2 * cutoff * np.sinc(2 * cutoff * tau) * window
    bank[np.abs(tau) >= half] = 0.0
    return bank, half, phases, down, up


def resample(x: np.ndarray, rate_in: int, rate_out: int = RATE) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal with a polyphase Kaiser-windowed
    sinc filter (>= 80 dB stop band, flat to 85 % of the lower Nyquist frequency).

    The ratio is exact when rate_out / rate_in reduces to at most 4096 phases (all the
    usual rates: 11025, 16000, 22050, 44100, 48000, 96000 ...); for odd rates the output
    instants are rounded to 1/4096 of an input sample, which is far below audibility.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("resample expects a mono (1-D) signal")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError("sample rates must be positive")
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    bank, half, phases, down, up = _filter_bank(int(rate_in), int(rate_out))
    n_out = math.ceil(x.size * up / down)
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    offsets = np.arange(-half + 1, half + 1) + half  # into padded
    out = np.empty(n_out)
    block = max(256, _BLOCK_ELEMENTS // offsets.size)
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out), dtype=np.int64)
        pos = n * down
        k0 = pos // up
        rem = pos - k0 * up
        phase = rem if phases == up else (rem * phases + up // 2) // up
        carry = phase >= phases  # rounding reached the next input sample
        k0 = k0 + carry
        phase = np.where(carry, 0, phase)
        idx = k0[:, None] + offsets[None, :]
        out[start : start + n.size] = np.einsum("ij,ij->i", padded[idx], bank[phase])
    return out


def _active_rms(x: np.ndarray, rate: int) -> float:
    """RMS over the 20 ms frames within 40 dB of the loudest one (ignores pauses)."""
    frame = max(1, rate // 50)
    n = x.size // frame
    if n == 0:
        return float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    frames = x[: n * frame].reshape(n, frame)
    power = np.mean(frames * frames, axis=1)
    loud = power >= power.max() * 1e-4
    return float(np.sqrt(np.mean(power[loud])))


def normalise(
    x: np.ndarray,
    rate: int = RATE,
    target_rms_dbfs: float = TARGET_RMS_DBFS,
    peak_limit_dbfs: float = PEAK_LIMIT_DBFS,
) -> np.ndarray:
    """Scale a float signal (full scale = 1.0) so its active RMS is target_rms_dbfs,
    limited so the peak is at most peak_limit_dbfs (so it never clips). A silent
    signal (peak below -80 dBFS) is returned unchanged."""
    x = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak < SILENCE_PEAK:
        return x.copy()
    rms = _active_rms(x, rate)
    gain = 10 ** (target_rms_dbfs / 20) / rms if rms > 0 else math.inf
    gain = min(gain, 10 ** (peak_limit_dbfs / 20) / peak)
    return x * gain


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float (full scale 1.0) -> int16, rounded and clipped."""
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- files


def is_telephony_wav(path: Path) -> bool:
    """True when the file is already what the workers play: 8 kHz mono PCM_16 WAV."""
    try:
        info = sf.info(str(path))
    except Exception:
        return False
    return (
        info.format == "WAV"
        and info.subtype == "PCM_16"
        and info.channels == 1
        and info.samplerate == RATE
    )


def _read(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"cannot read audio file {str(path)!r}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file {str(path)!r} contains no audio")
    return data.mean(axis=1), int(rate)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise AudioError(f"cannot read audio file {str(path)!r}: {e.strerror or e}") from e
    return h.hexdigest()


def cache_name(path: Path) -> str:
    """The cache file name for a source file: SHA-256 of its content + conversion tag."""
    return f"{_sha256(path)}-{CONVERSION_VERSION}.wav"


def prepare(path: Path, cache_dir: Path) -> Path:
    """Return a path the media workers can play for ``path``.

    An 8 kHz mono 16-bit PCM WAV is returned as it is. Anything else soundfile reads is
    mixed to mono, resampled to 8 kHz, level-normalised (active RMS -20 dBFS, peak at
    most -1 dBFS) and written as 16-bit PCM WAV to ``cache_dir/<sha256>-<version>.wav``;
    a later call with the same content finds that file and does not convert again.

    Raises :class:`AudioError` naming the file (and soundfile's complaint) when it is
    missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise AudioError(f"audio file {str(path)!r} {state}")
    if is_telephony_wav(path):
        if sf.info(str(path)).frames == 0:
            raise AudioError(f"audio file {str(path)!r} contains no audio")
        return path
    cache_dir = Path(cache_dir)
    target = cache_dir / cache_name(path)
    if target.is_file():
        return target
    mono, rate = _read(path)
    mono = normalise(resample(mono, rate, RATE), RATE)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=cache_dir)
        os.close(fd)
        try:
            sf.write(tmp, to_pcm16(mono), RATE, format="WAV", subtype="PCM_16")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise AudioError(f"cannot write converted audio for {str(path)!r} to {target}: {e}") from e
    return target


def check_audio(path: Path | str) -> str | None:
    """What is wrong with an audio file for playing it as a prompt, or None if fine:
    missing, not a file, unreadable by soundfile, empty, or completely silent."""
    path = Path(path)
    if not path.exists():
        return f"file {str(path)!r} does not exist"
    if not path.is_file():
        return f"{str(path)!r} is not a file"
    try:
        info = sf.info(str(path))
        if info.frames == 0:
            return f"audio file {str(path)!r} contains no audio"
        peak = 0.0
        for block in sf.blocks(str(path), blocksize=65536, dtype="float32", always_2d=True):
            if block.size:
                peak = max(peak, float(np.max(np.abs(block))))
                if peak >= SILENCE_PEAK:
                    break
    except Exception as e:
        return f"cannot read audio file {str(path)!r}: {e}"
    if info.samplerate <= 0:
        return f"audio file {str(path)!r} has an invalid sample rate"
    if peak < SILENCE_PEAK:
        return f"audio file {str(path)!r} is silent"
    return None
