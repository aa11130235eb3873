"""In-band DTMF detection (Goertzel-style, with numpy), pure and free of pjsua2.

The media worker feeds it the audio a leg sends (16-bit PCM at the bridge clock rate, in
whatever frame size the conference bridge delivers) and reports each key press once.

How a key press is recognised:

- The audio is cut into windows of 20 ms (160 samples at 8 kHz) every 10 ms. For each
  window the amplitude of the eight DTMF frequencies is measured by correlating with a
  complex exponential at the exact frequency (the Goertzel magnitude, computed for all
  windows of a frame with one matrix product instead of a per-sample Python loop).
- A window is a *hit* for a key when the strongest low-group tone and the strongest
  high-group tone are each at least ``min_level`` loud, dominate the other tones of
  their group by ``min_peak_ratio_db``, their level difference (twist) is within
  ``max_normal_twist_db`` (high tone weaker) and ``max_reverse_twist_db`` (high tone
  stronger), and the two tones carry at least ``min_tone_ratio`` of the window's
  energy. The last test is what rejects speech, music and noise: they spread their
  energy over many frequencies. It also rejects windows that only partly overlap a
  tone, which keeps the duration checks honest.
- A key is reported after ``on_windows`` consecutive hits (3 windows at a 10 ms hop:
  about 40 ms of tone) and then not again until ``off_windows`` consecutive windows
  without it (about 30-40 ms of pause) have passed, so one press is one digit however
  long it is held, and a short dropout inside a tone does not split it. A different key
  following directly (no pause) is reported as soon as it has its own hits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
HIGH_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS: tuple[str, ...] = ("123A", "456B", "789C", "*0#D")
"""``KEYS[row][col]``: row = low-group tone, column = high-group tone."""

FREQS_OF: dict[str, tuple[float, float]] = {
    KEYS[r][c]: (LOW_FREQS[r], HIGH_FREQS[c]) for r in range(4) for c in range(4)
}
"""The (low, high) frequency pair of each key, for generating test tones."""


@dataclass(frozen=True)
class DetectorParams:
    """Thresholds of the detector (the defaults suit 8 kHz telephone audio)."""

    window_ms: float = 20.0
    hop_ms: float = 10.0
    min_level: float = 0.01
    """Minimum amplitude of each tone, full scale = 1.0 (0.01 is about -40 dBFS)."""
    min_tone_ratio: float = 0.75
    """Share of the window's energy that the two tones must carry."""
    min_peak_ratio_db: float = 6.0
    """How much louder each tone must be than the other tones of its group."""
    max_normal_twist_db: float = 8.0
    """How much weaker the high-group tone may be than the low-group tone."""
    max_reverse_twist_db: float = 4.0
    """How much stronger the high-group tone may be than the low-group tone."""
    on_windows: int = 3
    """Consecutive hits before a key is reported (3 x 10 ms hop: ~40 ms of tone)."""
    off_windows: int = 3
    """Consecutive windows without the key before it may be reported again."""


class DtmfDetector:
    """Streaming detector: ``feed`` audio in any chunk size, get the new digits back."""

    def __init__(self, rate: int = 8000, params: DetectorParams | None = None):
        self.rate = rate
        self.p = params or DetectorParams()
        self.window = int(round(rate * self.p.window_ms / 1000.0))
        self.hop = int(round(rate * self.p.hop_ms / 1000.0))
        if not 0 < self.hop <= self.window:
            raise ValueError("need 0 < hop <= window")
        n = np.arange(self.window)
        freqs = np.array(LOW_FREQS + HIGH_FREQS)
        phase = 2.0 * np.pi * np.outer(freqs, n) / rate
        # (window, 16): cosines then sines of the eight frequencies.
        self.basis = np.concatenate([np.cos(phase), np.sin(phase)]).T.copy()
        self.min_peak_ratio = 10.0 ** (-self.p.min_peak_ratio_db / 20.0)
        self.normal_twist = 10.0 ** (-self.p.max_normal_twist_db / 20.0)
        self.reverse_twist = 10.0 ** (self.p.max_reverse_twist_db / 20.0)
        self.buf = np.zeros(0, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio and any key in progress."""
        self.buf = np.zeros(0, dtype=np.float64)
        self.candidate = ""  # key seen in the latest hits
        self.run = 0  # consecutive hits of `candidate`
        self.current = ""  # key reported and not yet released
        self.misses = 0  # consecutive windows without `current`

    def feed_pcm16(self, data: bytes) -> list[str]:
        """Feed little-endian signed 16-bit mono PCM."""
        return self.feed(np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0)

    def feed(self, samples: np.ndarray) -> list[str]:
        """Feed float samples (full scale 1.0); returns the keys newly pressed."""
        buf = np.concatenate([self.buf, np.asarray(samples, dtype=np.float64)])
        if len(buf) < self.window:
            self.buf = buf
            return []
        count = (len(buf) - self.window) // self.hop + 1
        windows = np.lib.stride_tricks.sliding_window_view(buf, self.window)[:: self.hop][:count]
        self.buf = buf[count * self.hop :].copy()
        keys = self.classify(windows)
        out: list[str] = []
        for key in keys:
            digit = self.step(key)
            if digit:
                out.append(digit)
        return out

    def classify(self, windows: np.ndarray) -> list[str]:
        """The key each window (rows of ``windows``) is a hit for, or ``""``."""
        proj = windows @ self.basis  # (k, 16)
        amp = (2.0 / self.window) * np.hypot(proj[:, :8], proj[:, 8:])  # (k, 8)
        energy = np.einsum("ij,ij->i", windows, windows)
        low, high = amp[:, :4], amp[:, 4:]
        li, hi = low.argmax(axis=1), high.argmax(axis=1)
        rows = np.arange(len(windows))
        lo_peak, hi_peak = low[rows, li], high[rows, hi]
        low_sorted, high_sorted = np.sort(low, axis=1), np.sort(high, axis=1)
        ok = (lo_peak >= self.p.min_level) & (hi_peak >= self.p.min_level)
        ok &= low_sorted[:, -2] <= lo_peak * self.min_peak_ratio
        ok &= high_sorted[:, -2] <= hi_peak * self.min_peak_ratio
        ok &= (hi_peak >= lo_peak * self.normal_twist) & (hi_peak <= lo_peak * self.reverse_twist)
        tone_energy = (lo_peak**2 + hi_peak**2) * (self.window / 2.0)
        ok &= tone_energy >= self.p.min_tone_ratio * np.maximum(energy, 1e-12)
        return [KEYS[li[i]][hi[i]] if ok[i] else "" for i in range(len(windows))]

    def step(self, key: str) -> str:
        """Advance the press/release state machine by one window; a new digit or ``""``."""
        if key and key == self.candidate:
            self.run += 1
        else:
            self.candidate, self.run = key, (1 if key else 0)
        if self.current:
            if key == self.current:
                self.misses = 0
                return ""
            self.misses += 1
            if self.misses >= self.p.off_windows:
                self.current, self.misses = "", 0
            elif not (key and self.run >= self.p.on_windows):
                return ""
            # else: another key took over without a pause; fall through to report it.
        if key and self.run >= self.p.on_windows:
            self.current, self.misses = key, 0
            return key
        return ""


def detect(samples: np.ndarray, rate: int = 8000, params: DetectorParams | None = None) -> str:
    """All digits in a whole signal (a convenience for tests and tools)."""
    return "".join(DtmfDetector(rate, params).feed(samples))
