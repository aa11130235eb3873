#!/usr/bin/env python3
"""Regenerate every file in media/: the voice prompts, the beep and the hold music.

    .venv/bin/python media/make_media.py              # everything
    .venv/bin/python media/make_media.py 'number-*'   # only the prompts named

Speech comes from espeak-ng (Debian package ``espeak-ng``), the tone and the music are
synthesised with numpy. Everything is written as 8 kHz mono 16-bit PCM WAV, the format
the pjsua2 media workers play. The output depends only on this script and on the
espeak-ng version (see media/README.md), so running it twice gives identical files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatchcase as fnmatch
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

# Pieces of the queue announcements (softswitch/flow/announce.py), played back to back:
# "You are number" + "twenty" + "three", "Your estimated waiting time is" + "five" +
# "minutes". Every name exists in every language, so the same names work whatever the
# language (and a language without one of them falls back to English). The plural and
# gender forms needed by Russian ("одна минута", "две минуты", "пять минут") are shipped
# in English too, where they say the same words as the plain forms.
QUEUE_PROMPTS: dict[str, dict[str, str]] = {
    "queue-position": {"en": "You are number", "ru": "Ваш номер в очереди"},
    "queue-wait": {"en": "Your estimated waiting time is", "ru": "Примерное время ожидания"},
    "minute": {"en": "minute", "ru": "минута"},  # en 1; ru 1, 21, 31, ... (not 11)
    "minutes-few": {"en": "minutes", "ru": "минуты"},  # ru 2-4, 22-24, ... (not 12-14)
    "minutes": {"en": "minutes", "ru": "минут"},  # everything else
    "less-than-a-minute": {"en": "less than a minute.", "ru": "меньше минуты."},
}

# Numbers as words (not digits) so that the gender is under our control: the plain
# forms count (positions: "номер один"), `number-1f` / `number-2f` are the feminine
# "одна" / "две" that go with "минута" / "минуты".
NUMBER_WORDS: dict[str, tuple[str, str]] = {
    "1": ("one", "один"),
    "1f": ("one", "одна"),
    "2": ("two", "два"),
    "2f": ("two", "две"),
    "3": ("three", "три"),
    "4": ("four", "четыре"),
    "5": ("five", "пять"),
    "6": ("six", "шесть"),
    "7": ("seven", "семь"),
    "8": ("eight", "восемь"),
    "9": ("nine", "девять"),
    "10": ("ten", "десять"),
    "11": ("eleven", "одиннадцать"),
    "12": ("twelve", "двенадцать"),
    "13": ("thirteen", "тринадцать"),
    "14": ("fourteen", "четырнадцать"),
    "15": ("fifteen", "пятнадцать"),
    "16": ("sixteen", "шестнадцать"),
    "17": ("seventeen", "семнадцать"),
    "18": ("eighteen", "восемнадцать"),
    "19": ("nineteen", "девятнадцать"),
    "20": ("twenty", "двадцать"),
    "30": ("thirty", "тридцать"),
    "40": ("forty", "сорок"),
    "50": ("fifty", "пятьдесят"),
    "60": ("sixty", "шестьдесят"),
}
for _n, (_en, _ru) in NUMBER_WORDS.items():
    QUEUE_PROMPTS[f"number-{_n}"] = {"en": _en, "ru": _ru}

# Whole sentences of the queue and of the operator feature codes.
PROMPTS.update(
    {
        "all-operators-busy": {
            "en": "All our operators are busy. Please stay on the line.",
            "ru": "Все операторы заняты. Пожалуйста, оставайтесь на линии.",
        },
        "agent-logged-in": {
            "en": "You are logged in to the queue.",
            "ru": "Вы вошли в очередь.",
        },
        "agent-logged-out": {
            "en": "You are logged out of the queue.",
            "ru": "Вы вышли из очереди.",
        },
        "agent-paused": {
            "en": "You are paused.",
            "ru": "Пауза включена.",
        },
        "agent-unpaused": {
            "en": "You are no longer paused.",
            "ru": "Пауза выключена.",
        },
        # played to both parties before a call recording starts ([recording] announce)
        "call-recorded": {
            "en": "This call is recorded.",
            "ru": "Этот разговор записывается.",
        },
    }
)

# espeak-ng voice and speed (words per minute) per language; slower than espeak's
# default 175 wpm, which is hard to follow over a phone line.
VOICES = {"en": ("en-us", 150), "ru": ("ru", 140)}

LEAD_SILENCE = 0.15  # seconds of silence before the speech
TAIL_SILENCE = 0.30  # and after it

# The pieces of a queue announcement are played one after another, so they get less
# padding than a sentence: a number in the middle of a phrase must follow its lead-in
# without a gap. (lead, tail) in seconds; numbers use NUMBER_PADDING.
QUEUE_PADDING = {
    "queue-position": (LEAD_SILENCE, 0.08),  # starts the announcement, a number follows
    "queue-wait": (TAIL_SILENCE, 0.08),  # follows the position's number, a number follows
    "minute": (0.02, TAIL_SILENCE),  # these end the announcement
    "minutes-few": (0.02, TAIL_SILENCE),
    "minutes": (0.02, TAIL_SILENCE),
    "less-than-a-minute": (0.02, TAIL_SILENCE),
}
NUMBER_PADDING = (0.02, 0.08)


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


def speech(
    text: str, language: str, lead: float = LEAD_SILENCE, tail: float = TAIL_SILENCE
) -> np.ndarray:
    voice, speed = VOICES[language]
    x, rate = espeak(text, voice, speed)
    x = trim(resample(x, rate, RATE), RATE)
    x = normalise(x, RATE)
    return np.concatenate([np.zeros(int(lead * RATE)), x, np.zeros(int(tail * RATE))])


def all_prompts() -> dict[str, tuple[dict[str, str], tuple[float, float]]]:
    """Every voice prompt: name -> (text per language, (lead, tail) silence)."""
    out = {name: (texts, (LEAD_SILENCE, TAIL_SILENCE)) for name, texts in PROMPTS.items()}
    for name, texts in QUEUE_PROMPTS.items():
        out[name] = (texts, QUEUE_PADDING.get(name, NUMBER_PADDING))
    return out


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Regenerate the files in media/ (all of them when no NAME is given)."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="only these prompts (shell-style patterns: 'number-*'); the beep and the "
        "music are then left alone",
    )
    args = parser.parse_args(argv)
    prompts = all_prompts()
    selected = [n for n in prompts if not args.names or any(fnmatch(n, p) for p in args.names)]
    unmatched = [p for p in args.names if not any(fnmatch(n, p) for n in prompts)]
    if unmatched:
        sys.exit(f"make_media: no prompt matches {', '.join(unmatched)}")
    for name in selected:
        texts, (lead, tail) = prompts[name]
        for language, text in texts.items():
            path = HERE / language / f"{name}.wav"
            write_wav(path, speech(text, language, lead, tail))
            print(f"{path.relative_to(HERE)}: {text}")
    if args.names:
        return
    write_wav(HERE / "tones" / "beep.wav", beep())
    print("tones/beep.wav: 1 kHz, 0.4 s")
    write_wav(HERE / "music" / "default.wav", music())
    print("music/default.wav: 32 s loop")


if __name__ == "__main__":
    main()
