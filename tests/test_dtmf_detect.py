"""Unit tests of the in-band DTMF detector with synthesized signals."""

from __future__ import annotations

import time

import numpy as np
import pytest

from softswitch.media.dtmf_detect import FREQS_OF, DetectorParams, DtmfDetector, detect

RATE = 8000


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(RATE * ms / 1000))


def tone_pair(
    key: str, ms: float, level: float = 0.25, twist_db: float = 0.0, phase: float = 0.3
) -> np.ndarray:
    """The two tones of ``key``; ``twist_db`` > 0 makes the high tone louder."""
    lo, hi = FREQS_OF[key]
    t = np.arange(int(RATE * ms / 1000)) / RATE
    hi_level = level * 10 ** (twist_db / 20)
    return level * np.sin(2 * np.pi * lo * t + phase) + hi_level * np.sin(2 * np.pi * hi * t)


def keys(digits: str, on_ms: float = 100, off_ms: float = 100, **kw: float) -> np.ndarray:
    parts = [silence(off_ms)]
    for d in digits:
        parts += [tone_pair(d, on_ms, **kw), silence(off_ms)]
    return np.concatenate(parts)


def noise(n: int, level: float, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, level, n)


def vowel(
    seconds: float, f0: float, formants: list[tuple[float, float]], seed: int = 0
) -> np.ndarray:
    """A voiced sound: harmonics of a slowly wandering ``f0`` shaped by formants."""
    rng = np.random.default_rng(seed)
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    wander = 0.0001 * rng.standard_normal(n).cumsum()
    f0_t = f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t) + wander)
    phase = 2 * np.pi * np.cumsum(f0_t) / RATE
    out = np.zeros(n)
    for k in range(1, int(3800 / f0)):
        gain = sum(1 / (1 + ((k * f0 - f) / bw) ** 2) for f, bw in formants)
        out += gain / k**0.5 * np.sin(k * phase)
    return 0.3 * out / np.max(np.abs(out))


# ---------------------------------------------------------------------------- digits
def test_all_sixteen_keys() -> None:
    assert detect(keys("123A456B789C*0#D")) == "123A456B789C*0#D"


def test_one_digit_per_press_however_long() -> None:
    assert detect(keys("5", on_ms=2000)) == "5"
    assert detect(keys("55", on_ms=300, off_ms=200)) == "55"


@pytest.mark.parametrize("chunk", [1, 7, 80, 160, 333, 4000])
def test_chunk_size_does_not_matter(chunk: int) -> None:
    signal = keys("19#", on_ms=60, off_ms=60)
    det = DtmfDetector(RATE)
    got = [d for i in range(0, len(signal), chunk) for d in det.feed(signal[i : i + chunk])]
    assert "".join(got) == "19#"


def test_pcm16_input() -> None:
    pcm = (keys("7*") * 32767).astype("<i2").tobytes()
    det = DtmfDetector(RATE)
    got = [d for i in range(0, len(pcm), 320) for d in det.feed_pcm16(pcm[i : i + 320])]
    assert got == ["7", "*"]


def test_minimum_duration_40ms_accepted_20ms_rejected() -> None:
    for offset in range(0, 80, 7):  # every alignment against the 10 ms hop
        lead = silence(100 + offset / 8)
        assert detect(np.concatenate([lead, keys("3", on_ms=40)])) == "3", offset
        assert detect(np.concatenate([lead, keys("3", on_ms=20)])) == "", offset


def test_short_gaps_between_presses() -> None:
    # 40 ms pauses (the ITU minimum) still separate repeated keys ...
    assert detect(keys("1111", on_ms=50, off_ms=40)) == "1111"
    # ... and a 5 ms dropout inside one press does not split it.
    press = np.concatenate([tone_pair("8", 100), silence(5), tone_pair("8", 100, phase=1.0)])
    assert detect(np.concatenate([silence(50), press, silence(50)])) == "8"


def test_key_change_without_pause() -> None:
    sig = np.concatenate([silence(50), tone_pair("2", 100), tone_pair("6", 100), silence(50)])
    assert detect(sig) == "26"


def test_levels() -> None:
    assert detect(keys("0", level=0.7)) == "0"  # near full scale (both tones sum to 1.4)
    assert detect(keys("0", level=0.02)) == "0"  # about -34 dBFS per tone
    assert detect(keys("0", level=0.004)) == ""  # below min_level


def test_twist_limits() -> None:
    assert detect(keys("9", twist_db=-6)) == "9"  # normal twist (high weaker) 6 dB
    assert detect(keys("9", twist_db=3)) == "9"  # reverse twist 3 dB
    assert detect(keys("9", twist_db=-12)) == ""
    assert detect(keys("9", twist_db=8)) == ""


def test_tones_in_noise() -> None:
    clean = keys("147*", on_ms=80, off_ms=80)
    # About 15 dB SNR: each tone at 0.25, noise RMS 0.05.
    assert detect(clean + noise(len(clean), 0.05)) == "147*"


def test_noise_and_single_tones_do_not_trigger() -> None:
    n = RATE * 5
    assert detect(noise(n, 0.1)) == ""
    t = np.arange(n) / RATE
    assert detect(0.5 * np.sin(2 * np.pi * 697 * t)) == ""  # one low tone only
    assert detect(0.5 * np.sin(2 * np.pi * 1336 * t)) == ""  # one high tone only
    both_low = 0.3 * np.sin(2 * np.pi * 697 * t) + 0.3 * np.sin(2 * np.pi * 852 * t)
    assert detect(both_low) == ""  # two tones of the same group
    dial_tone = 0.3 * np.sin(2 * np.pi * 350 * t) + 0.3 * np.sin(2 * np.pi * 440 * t)
    assert detect(dial_tone) == ""


@pytest.mark.parametrize(
    "f0,formants",
    [
        (100.0, [(700, 80), (1200, 90), (2500, 150)]),  # harmonics right on 697/1209 Hz
        (120.0, [(730, 90), (1090, 100), (2440, 150)]),  # /a/
        (210.0, [(850, 100), (1220, 110), (2810, 160)]),  # /a/, female voice
        (140.0, [(270, 60), (2290, 120), (3010, 150)]),  # /i/
        (230.0, [(300, 60), (870, 90), (2240, 150)]),  # /u/, high voice
    ],
)
def test_speech_like_signals_do_not_trigger(f0: float, formants: list[tuple[float, float]]) -> None:
    v = vowel(4.0, f0, formants)
    assert detect(v) == ""
    assert detect(v + noise(len(v), 0.01)) == ""


def test_music_like_chord_and_sweep_do_not_trigger() -> None:
    t = np.arange(RATE * 4) / RATE
    chord = sum(0.1 / k * np.sin(2 * np.pi * f * k * t) for f in (262, 330, 392) for k in (1, 2, 3))
    assert detect(chord) == ""
    sweep = 0.4 * np.sin(2 * np.pi * (300 * t + 200 * t**2))  # 300 -> 1900 Hz
    assert detect(sweep) == ""
    # Two tones gliding together through DTMF pairs (2 and 3 kHz/s) do not hold still
    # long enough. (A slow enough glide is a key press to any detector.)
    g = t[: int(RATE * 0.6)]  # 600 -> 1800 Hz and 1100 -> 2900 Hz
    glide = 0.25 * np.sin(2 * np.pi * (600 * g + 1000 * g**2)) + 0.25 * np.sin(
        2 * np.pi * (1100 * g + 1500 * g**2)
    )
    assert detect(glide) == ""


def test_frequency_tolerance() -> None:
    t = np.arange(int(RATE * 0.1)) / RATE

    def pair(lo: float, hi: float) -> np.ndarray:
        tone = 0.25 * np.sin(2 * np.pi * lo * t) + 0.25 * np.sin(2 * np.pi * hi * t)
        return np.concatenate([silence(100), tone, silence(100)])

    assert detect(pair(697 * 1.015, 1209 * 0.985)) == "1"  # within 1.5 %: accepted
    assert detect(pair(697 * 1.04, 1209)) == ""  # 4 % off: rejected
    assert detect(pair(697, 1209 * 0.96)) == ""


def test_digits_over_speech_background_are_found() -> None:
    v = vowel(2.0, 120.0, [(730, 90), (1090, 100), (2440, 150)])
    sig = keys("42", on_ms=100, off_ms=400, level=0.3)
    mix = sig[: len(v)] + 0.1 * v[: len(sig)]
    assert detect(mix) == "42"


def test_reset_and_params() -> None:
    det = DtmfDetector(RATE, DetectorParams(on_windows=5))
    assert det.feed(keys("5", on_ms=45)) == []  # needs ~60 ms now
    det.reset()
    assert det.feed(keys("5", on_ms=80)) == ["5"]
    with pytest.raises(ValueError):
        DtmfDetector(RATE, DetectorParams(hop_ms=30))


def test_cost_per_second_of_audio() -> None:
    """One second of audio in 20 ms frames takes well under 1% of a core."""
    sig = keys("123", on_ms=100, off_ms=230)[:RATE]
    frames = [(sig[i : i + 160] * 32767).astype("<i2").tobytes() for i in range(0, RATE, 160)]
    det = DtmfDetector(RATE)
    for f in frames:  # warm up
        det.feed_pcm16(f)
    start = time.process_time()
    for _ in range(10):
        for f in frames:
            det.feed_pcm16(f)
    per_second = (time.process_time() - start) / 10
    assert per_second < 0.01, per_second
