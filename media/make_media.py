#!/usr/bin/env python3
"""Regenerate every file in media/: the voice prompts, the beep and the hold music.

    .venv/bin/python media/make_media.py

Speech comes from espeak-ng (Debian package ``espeak-ng``), the tone and the music are
synthesised with numpy. Everything is written as 8 kHz mono 16-bit PCM WAV, the format
the pjsua2 media workers play. The output depends only on this script and on the
espeak-ng version (see media/README.md), so running it twice gives identical files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from softswitch.audio import RATE, normalise, resample, to_pcm16  # noqa: E402

PROMPTS: dict[str, dict[str, str]] = {
    "welcome": {
        "en": "Welcome to our company.",
        "ru": "Добро пожаловать в нашу компанию.",
    },
    "menu-example": {
        "en": "For sales press 1, for support press 2.",
        "ru": "Для связи с отделом продаж нажмите один. "
        "Для связи со службой поддержки нажмите два.",
    },
    "invalid-choice": {
        "en": "Sorry, that is not a valid choice. Please try again.",
        "ru": "Неверный выбор. Попробуйте ещё раз.",
    },
    "please-hold": {
        "en": "Please stay on the line. We will connect you shortly.",
        "ru": "Пожалуйста, оставайтесь на линии. Мы скоро соединим вас.",
    },
    "after-hours": {
        "en": "We are closed now. Please call back during working hours or visit our website.",
        "ru": "Сейчас мы не работаем. "
        "Пожалуйста, перезвоните в рабочее время или посетите наш сайт.",
    },
    "leave-message": {
        "en": "Please leave a message after the tone. Press hash when you are done.",
        "ru": "Пожалуйста, оставьте сообщение после сигнала. По окончании нажмите решётку.",
    },
    "extension-unavailable": {
        "en": "The extension you have dialled is not available.",
        "ru": "Этот внутренний номер сейчас недоступен.",
    },
    "goodbye": {
        "en": "Thank you for calling. Goodbye.",
        "ru": "Спасибо за звонок. До свидания.",
    },
    "enter-extension": {
        "en": "Please dial the extension number.",
        "ru": "Пожалуйста, наберите внутренний номер.",
    },
}

# espeak-ng voice and speed (words per minute) per language; slower than espeak's
# default 175 wpm, which is hard to follow over a phone line.
VOICES = {"en": ("en-us", 150), "ru": ("ru", 140)}

LEAD_SILENCE = 0.15  # seconds of silence before the speech
TAIL_SILENCE = 0.30  # and after it


def write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(x), RATE, format="WAV", subtype="PCM_16")


# --------------------------------------------------------------------------- speech


def espeak(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("make_media: espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        data, rate = sf.read(str(out), dtype="float64", always_2d=True)
    return data.mean(axis=1), rate


def trim(x: np.ndarray, rate: int, threshold_db: float = -50.0) -> np.ndarray:
    """Cut leading/trailing silence (relative to the peak), keeping 30 ms margins."""
    loud = np.flatnonzero(np.abs(x) >= np.max(np.abs(x)) * 10 ** (threshold_db / 20))
    margin = int(0.03 * rate)
    return x[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def speech(text: str, language: str) -> np.ndarray:
    voice, speed = VOICES[language]
    x, rate = espeak(text, voice, speed)
    x = trim(resample(x, rate, RATE), RATE)
    x = normalise(x, RATE)
    return np.concatenate(
        [np.zeros(int(LEAD_SILENCE * RATE)), x, np.zeros(int(TAIL_SILENCE * RATE))]
    )


# --------------------------------------------------------------------------- tones


def ramp(n: int, length: int) -> np.ndarray:
    """A raised-cosine fade-in/out envelope over n samples with `length`-sample edges."""
    env = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(length) / length)
    env[:length] = edge
    env[n - length :] = edge[::-1]
    return env


def beep(freq: float = 1000.0, seconds: float = 0.4, level_dbfs: float = -12.0) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    return 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t) * ramp(n, int(0.005 * RATE))


# --------------------------------------------------------------------------- music

BPM = 60
BEAT = RATE * 60 // BPM  # samples per beat (8000)
BAR = 4 * BEAT  # one chord per bar

# MIDI note numbers; a gentle progression in C major, two bars of each 4-bar phrase
# ending on the dominant so that the last bar leads back into the first.
CHORDS = [
    ("Cmaj7", [48, 60, 64, 67, 71]),
    ("Am7", [45, 57, 60, 64, 67]),
    ("Fmaj7", [41, 57, 60, 64, 65]),
    ("G6", [43, 55, 59, 62, 64]),
    ("Em7", [40, 55, 59, 62, 64]),
    ("Am7", [45, 57, 60, 64, 67]),
    ("Dm7", [38, 57, 60, 62, 65]),
    ("Gsus4", [43, 55, 60, 62, 67]),
]
# Arpeggio over the upper chord tones (index into chord[1:], +12 = an octave up), in
# eighth notes; the second pattern is used on every other bar for variety.
ARPEGGIOS = [
    [0, 1, 2, 3, 12 + 0, 3, 2, 1],
    [1, 2, 3, 12 + 0, 12 + 1, 12 + 0, 3, 2],
]


def midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def add_circular(buf: np.ndarray, start: int, x: np.ndarray) -> None:
    """Add x into buf from `start`, wrapping past the end: the track is a loop."""
    idx = (start + np.arange(x.size)) % buf.size
    np.add.at(buf, idx, x)


def tone(freq: float, n: int, harmonics: list[tuple[int, float, float]]) -> np.ndarray:
    """Sum of harmonics (number, amplitude, decay time constant in s, inf = none)."""
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for k, amp, tau in harmonics:
        if k * freq >= 0.45 * RATE:
            continue  # keep everything well below Nyquist
        decay = np.exp(-t / tau) if np.isfinite(tau) else 1.0
        out += amp * decay * np.sin(2 * np.pi * k * freq * t)
    return out


def pluck(freq: float, seconds: float, velocity: float) -> np.ndarray:
    """A soft electric-piano-like note: fast attack, exponential decay, tapered end."""
    n = int(seconds * RATE)
    x = tone(freq, n, [(1, 1.0, 0.9), (2, 0.35, 0.35), (3, 0.12, 0.2), (4, 0.05, 0.12)])
    env = np.ones(n)
    a = int(0.006 * RATE)
    env[:a] = np.sin(0.5 * np.pi * np.arange(a) / a) ** 2
    r = int(0.25 * RATE)
    env[n - r :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return velocity * x * env


def pad(freq: float, seconds: float, attack: float, release: float) -> np.ndarray:
    """A slow, slightly chorused pad note (two detuned partial pairs)."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = np.zeros(n)
    for detune in (-0.7, 0.7):
        f = freq + detune
        x += np.sin(2 * np.pi * f * t) + 0.2 * np.sin(2 * np.pi * 2 * f * t)
    a, r = int(attack * RATE), int(release * RATE)
    env = np.ones(n)
    env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    env[n - r :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return 0.5 * x * env


def music(repeats: int = 1) -> np.ndarray:
    """8 bars x 4 s = 32 s, synthesised on a circular buffer so it loops seamlessly."""
    total = len(CHORDS) * BAR * repeats
    buf = np.zeros(total)
    for bar in range(len(CHORDS) * repeats):
        _, notes = CHORDS[bar % len(CHORDS)]
        bass, upper = notes[0], notes[1:]
        start = bar * BAR
        # pad: the upper voicing, swelling in and overlapping into the next bar
        for note in upper:
            add_circular(buf, start, 0.05 * pad(midi_hz(note), 5.5, 1.2, 1.8))
        # bass on beats 1 and 3 (one octave up from the root keeps it audible on phones)
        for beat, vel in ((0, 0.22), (2, 0.15)):
            add_circular(buf, start + beat * BEAT, vel * pluck(midi_hz(bass + 12), 2.2, 1.0))
        # arpeggio in eighth notes, an octave above the voicing
        pattern = ARPEGGIOS[bar % 2]
        for i, step in enumerate(pattern):
            note = upper[step % 12] + 12 + (12 if step >= 12 else 0)
            vel = 0.11 if i % 4 == 0 else 0.075
            add_circular(buf, start + i * BEAT // 2, pluck(midi_hz(note), 1.6, vel))
    return normalise(buf, RATE, target_rms_dbfs=-22.0)


# --------------------------------------------------------------------------- main


def main() -> None:
    for name, texts in PROMPTS.items():
        for language, text in texts.items():
            path = HERE / language / f"{name}.wav"
            write_wav(path, speech(text, language))
            print(f"{path.relative_to(HERE)}: {text}")
    write_wav(HERE / "tones" / "beep.wav", beep())
    print("tones/beep.wav: 1 kHz, 0.4 s")
    write_wav(HERE / "music" / "default.wav", music())
    print("music/default.wav: 32 s loop")


if __name__ == "__main__":
    main()
