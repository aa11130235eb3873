"""In-band DTMF detection (Goertzel-style, with numpy), pure and free of pjsua2.

The media worker feeds it the audio a leg sends (16-bit PCM at the bridge clock rate, in
whatever frame size the conference bridge delivers) and reports each key press once.

How a key press is recognised:

- The audio is cut into windows of 20 ms (160 samples at 8 kHz) every 10 ms. For each
  window the amplitude of the eight DTMF frequencies is measured by correlating with a
  complex exponential at the exact frequency (the Goertzel magnitude, computed for all
  windows of a chunk with one matrix product instead of a per-sample Python loop).
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
    """Streaming detector: ``feed`` audio in any chunk size, get the new digits back.

    Cost matters more than elegance here: in the worker this runs every ~100 ms per leg
    next to pjsua2's callbacks, and on a mostly idle process every numpy call starts
    cold (tens of microseconds each). So each window is cut into ``window / hop``
    blocks of one hop, every block is projected onto the eight frequencies once (one
    matrix product for the whole chunk), a window's projection is the sum of its
    blocks' parts, and the few per-window decisions run in plain Python on short lists.
    """

    def __init__(self, rate: int = 8000, params: DetectorParams | None = None):
        self.rate = rate
        self.p = params or DetectorParams()
        self.window = int(round(rate * self.p.window_ms / 1000.0))
        self.hop = int(round(rate * self.p.hop_ms / 1000.0))
        if not 0 < self.hop <= self.window or self.window % self.hop:
            raise ValueError("the window must be a whole number of hops")
        self.parts = self.window // self.hop
        n = np.arange(self.window)
        freqs = np.array(LOW_FREQS + HIGH_FREQS)
        phase = 2.0 * np.pi * np.outer(freqs, n) / rate
        basis = np.concatenate([np.cos(phase), np.sin(phase)]).T  # (window, 16)
        # (hop, 16 * parts): columns 16k..16k+15 project a block as the window's k-th.
        self.basis = np.concatenate(
            [basis[k * self.hop : (k + 1) * self.hop] for k in range(self.parts)], axis=1
        )
        # Thresholds on the squared projections |sum x e^-jwn|^2 = (A * window / 2)^2.
        half = self.window / 2.0
        self.min_sq = (self.p.min_level * half) ** 2
        self.peak_sq = 10.0 ** (-self.p.min_peak_ratio_db / 10.0)
        self.normal_sq = 10.0 ** (-self.p.max_normal_twist_db / 10.0)
        self.reverse_sq = 10.0 ** (self.p.max_reverse_twist_db / 10.0)
        # tone energy = (A_lo^2 + A_hi^2) * window / 2 = (sq_lo + sq_hi) * 2 / window
        self.ratio = self.p.min_tone_ratio * self.window / 2.0
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio and any key in progress."""
        self.pending = np.zeros(0, dtype=np.float64)
        self.carry_proj = np.zeros((0, 16 * self.parts))  # last parts-1 blocks
        self.carry_energy = np.zeros(0)
        self.candidate = ""  # key seen in the latest hits
        self.run = 0  # consecutive hits of `candidate`
        self.current = ""  # key reported and not yet released
        self.misses = 0  # consecutive windows without `current`

    def feed_pcm16(self, data: bytes) -> list[str]:
        """Feed little-endian signed 16-bit mono PCM."""
        return self.feed(np.frombuffer(data, dtype="<i2") * (1.0 / 32768.0))

    def feed(self, samples: np.ndarray) -> list[str]:
        """Feed float samples (full scale 1.0); returns the keys newly pressed."""
        x = np.asarray(samples, dtype=np.float64)
        if self.pending.size:
            x = np.concatenate([self.pending, x])
        m = len(x) // self.hop
        if m == 0:
            self.pending = x
            return []
        blocks = x[: m * self.hop].reshape(m, self.hop)
        self.pending = x[m * self.hop :].copy()
        proj = np.concatenate([self.carry_proj, blocks @ self.basis])
        energy = np.concatenate([self.carry_energy, np.einsum("ij,ij->i", blocks, blocks)])
        keep = self.parts - 1
        self.carry_proj = proj[len(proj) - keep :]
        self.carry_energy = energy[len(energy) - keep :]
        count = len(proj) - keep
        if count <= 0:
            return []
        win = proj[:count, :16].copy()
        win_energy = energy[:count].copy()
        for k in range(1, self.parts):
            win += proj[k : k + count, 16 * k : 16 * (k + 1)]
            win_energy += energy[k : k + count]
        win *= win
        power = win[:, :8] + win[:, 8:]
        out: list[str] = []
        for sq, e in zip(power.tolist(), win_energy.tolist(), strict=True):
            digit = self.step(self.decide(sq, e))
            if digit:
                out.append(digit)
        return out

    def decide(self, sq: list[float], energy: float) -> str:
        """The key one window is a hit for (``sq``: squared projections), or ``""``."""
        lo = max(range(4), key=sq.__getitem__)
        hi = 4 + max(range(4), key=lambda i: sq[4 + i])
        s_lo, s_hi = sq[lo], sq[hi]
        if s_lo < self.min_sq or s_hi < self.min_sq:
            return ""
        if not self.normal_sq * s_lo <= s_hi <= self.reverse_sq * s_lo:
            return ""
        if (s_lo + s_hi) < self.ratio * energy:
            return ""
        for i in range(8):
            if i != lo and i != hi and sq[i] > self.peak_sq * (s_lo if i < 4 else s_hi):
                return ""
        return KEYS[lo][hi - 4]

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
