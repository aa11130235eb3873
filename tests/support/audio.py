"""Audio helpers for tests: make tones, measure what a recording contains.

Tests prove that media flowed the right way by playing a tone of a known frequency on
one side and finding that frequency as the dominant one in the other side's recording.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf


def make_tone(
    path: str, freq: float, seconds: float = 2.0, rate: int = 8000, amplitude: float = 0.5
) -> str:
    """Write a mono 16-bit sine WAV; a whole number of cycles so looping is seamless."""
    n = int(round(seconds * rate))
    cycles = max(1, round(freq * n / rate))
    t = np.arange(n) / n
    data = amplitude * np.sin(2 * np.pi * cycles * t)
    sf.write(path, data, rate, subtype="PCM_16")
    return path


def read_mono(path: str, skip_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Samples (float, mono) of a WAV after skipping its start, and the sample rate."""
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    return mono[int(skip_seconds * rate) :], rate


def dominant_frequency(path: str, skip_seconds: float = 0.5) -> float:
    """Frequency (Hz) of the strongest FFT bin, ignoring DC; 0.0 for an empty file.

    The start is skipped because call setup and jitter buffers add silence there.
    """
    x, rate = read_mono(path, skip_seconds)
    if len(x) < 256:
        return 0.0
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    spectrum[freqs < 50] = 0.0
    return float(freqs[int(np.argmax(spectrum))])


def band_energy_ratio(
    path: str, freq: float, skip_seconds: float = 0.5, width: float = 30.0
) -> float:
    """Share of the signal's energy within ``freq`` +/- ``width`` Hz (0..1)."""
    x, rate = read_mono(path, skip_seconds)
    if len(x) < 256:
        return 0.0
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    total = power.sum()
    if total <= 0:
        return 0.0
    return float(power[(freqs > freq - width) & (freqs < freq + width)].sum() / total)


def rms(path: str, skip_seconds: float = 0.0) -> float:
    """Root mean square level of the recording (full scale = 1.0)."""
    x, _ = read_mono(path, skip_seconds)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def duration(path: str) -> float:
    """Length of a sound file in seconds."""
    info = sf.info(path)
    return info.frames / info.samplerate


DTMF_PAIRS: dict[str, tuple[float, float]] = {
    key: (low, high)
    for low, row in zip((697.0, 770.0, 852.0, 941.0), ("123A", "456B", "789C", "*0#D"), strict=True)
    for high, key in zip((1209.0, 1336.0, 1477.0, 1633.0), row, strict=True)
}
"""Standard DTMF frequency pairs (kept apart from the detector under test)."""


def write_wav(path: str, samples: np.ndarray, rate: int = 8000) -> str:
    """Write float samples (full scale 1.0) as a mono 16-bit WAV."""
    sf.write(path, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")
    return path


def tone_samples(
    freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dtmf_samples(
    digits: str,
    on_seconds: float = 0.1,
    off_seconds: float = 0.1,
    rate: int = 8000,
    amplitude: float = 0.25,
) -> np.ndarray:
    """Key presses as a telephone sends them in-band: both tones, then a pause."""
    t = np.arange(int(round(on_seconds * rate))) / rate
    gap = np.zeros(int(round(off_seconds * rate)))
    parts = [gap]
    for d in digits:
        low, high = DTMF_PAIRS[d]
        parts += [amplitude * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)), gap]
    return np.concatenate(parts)
