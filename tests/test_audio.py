"""softswitch.audio: prompt lookup, conversion to 8 kHz mono 16-bit, cache, shipped media."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from softswitch import audio
from softswitch.audio import (
    MEDIA_DIR,
    AudioError,
    check_audio,
    prepare,
    resample,
    resolve_music,
    resolve_prompt,
)

PROMPTS = [
    "welcome",
    "menu-example",
    "invalid-choice",
    "please-hold",
    "after-hours",
    "leave-message",
    "extension-unavailable",
    "goodbye",
    "enter-extension",
]
LANGUAGES = ["en", "ru"]


def tone(rate: int, seconds: float, *components: tuple[float, float]) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in components)


def spectrum(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.blackman(x.size)
    mag = np.abs(np.fft.rfft(x * w))
    return np.fft.rfftfreq(x.size, 1 / rate), mag


def band_peak(freqs: np.ndarray, mag: np.ndarray, lo: float, hi: float) -> float:
    return float(mag[(freqs >= lo) & (freqs <= hi)].max())


def assert_telephony(path: Path) -> None:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == (
        "WAV",
        "PCM_16",
        1,
        8000,
    ), f"{path}: {info}"


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stereo_tone_converted_peak_at_1khz_and_5khz_not_aliased(tmp_path: Path, rate: int):
    # left: 1 kHz, right: 1 kHz + a 5 kHz component that would alias to 3 kHz at 8 kHz
    left = tone(rate, 2.0, (1000, 0.5))
    right = tone(rate, 2.0, (1000, 0.5), (5000, 0.5))
    src = tmp_path / f"tone{rate}.wav"
    sf.write(str(src), np.stack([left, right], axis=1), rate, subtype="PCM_24")

    out = prepare(src, tmp_path / "cache")
    assert out.parent == tmp_path / "cache"
    assert_telephony(out)
    y, r = sf.read(str(out))
    assert r == 8000
    assert abs(y.size - 2.0 * 8000) <= 1
    y = y[400:-400]  # ignore the filter's edges
    freqs, mag = spectrum(y, 8000)
    assert abs(freqs[np.argmax(mag)] - 1000) <= 2
    main = band_peak(freqs, mag, 990, 1010)
    alias = band_peak(freqs, mag, 2950, 3050)  # where 5 kHz folds to
    # the 5 kHz component was as strong as the (mono-mixed) 1 kHz one before conversion
    assert 20 * np.log10(main / alias) >= 40
    # and nothing else anywhere is within 40 dB of the tone
    elsewhere = mag[(np.abs(freqs - 1000) > 30)].max()
    assert 20 * np.log10(main / elsewhere) >= 40


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 96000, 6000, 7999])
def test_resample_keeps_a_passband_tone_and_length(rate: int):
    x = tone(rate, 1.0, (700, 0.5))
    y = resample(x, rate, 8000)
    assert abs(y.size - 8000) <= 1
    mid = y[400:-400]
    # amplitude preserved (pass band is flat) and the tone is where it should be
    assert np.sqrt(2 * np.mean(mid**2)) == pytest.approx(0.5, rel=0.01)
    freqs, mag = spectrum(mid, 8000)
    assert abs(freqs[np.argmax(mag)] - 700) <= 3


def test_resample_rejects_content_just_above_new_nyquist():
    # 4.3 kHz at 48 kHz folds to 3.7 kHz at 8 kHz: the stop band starts at 4 kHz
    y = resample(tone(48000, 1.0, (4300, 0.5)), 48000, 8000)
    assert np.max(np.abs(y[400:-400])) < 0.5 * 10 ** (-60 / 20)


def test_resample_same_rate_is_identity():
    x = np.linspace(-1, 1, 100)
    assert np.array_equal(resample(x, 8000, 8000), x)


# --------------------------------------------------------------------------- levels


def test_quiet_input_is_normalised_up(tmp_path: Path):
    src = tmp_path / "quiet.flac"
    sf.write(str(src), tone(16000, 1.0, (440, 0.01)), 16000)
    y, _ = sf.read(str(prepare(src, tmp_path / "c")))
    rms_db = 20 * np.log10(np.sqrt(np.mean(y[400:-400] ** 2)))
    assert rms_db == pytest.approx(audio.TARGET_RMS_DBFS, abs=0.5)


def test_peaky_input_is_limited_and_never_clips(tmp_path: Path):
    # a loud click on a quiet bed: the RMS target would need a gain that clips the click
    x = tone(16000, 1.0, (300, 0.02))
    x[8000:8010] = 0.99
    src = tmp_path / "peaky.wav"
    sf.write(str(src), x, 16000, subtype="FLOAT")
    y, _ = sf.read(str(prepare(src, tmp_path / "c")))
    assert np.max(np.abs(y)) <= 10 ** (audio.PEAK_LIMIT_DBFS / 20) + 1e-3
    assert np.max(np.abs(y)) > 0.5  # but it was brought up to the limit


def test_loud_input_is_brought_down(tmp_path: Path):
    src = tmp_path / "loud.ogg"
    sf.write(str(src), np.clip(tone(48000, 1.0, (500, 1.2)), -1, 1) * 0.99, 48000)
    y, _ = sf.read(str(prepare(src, tmp_path / "c")))
    assert np.max(np.abs(y)) <= 10 ** (audio.PEAK_LIMIT_DBFS / 20) + 1e-3


def test_silent_input_stays_silent(tmp_path: Path):
    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros(16000), 16000)
    y, _ = sf.read(str(prepare(src, tmp_path / "c")))
    assert not np.any(y)
    assert "silent" in check_audio(src)


# --------------------------------------------------------------------------- cache


def test_same_content_is_a_cache_hit_without_rewrite(tmp_path: Path, monkeypatch):
    a = tmp_path / "a.wav"
    sf.write(str(a), tone(16000, 0.5, (440, 0.3)), 16000)
    b = tmp_path / "copy-of-a.wav"
    b.write_bytes(a.read_bytes())
    cache = tmp_path / "cache"

    first = prepare(a, cache)
    assert first.name.startswith(audio.cache_name(a).split("-")[0])
    assert audio.CONVERSION_VERSION in first.name
    mtime = first.stat().st_mtime_ns
    os.utime(first, ns=(mtime - 10**9, mtime - 10**9))  # so a rewrite would show

    conversions = []
    real = audio.resample
    monkeypatch.setattr(audio, "resample", lambda *a, **k: conversions.append(1) or real(*a, **k))
    assert prepare(a, cache) == first
    assert prepare(b, cache) == first  # same bytes, other name: same cache entry
    assert conversions == []
    assert first.stat().st_mtime_ns == mtime - 10**9
    assert sorted(p.name for p in cache.iterdir()) == [first.name]


def test_different_content_gets_a_different_file(tmp_path: Path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(str(a), tone(16000, 0.5, (440, 0.3)), 16000)
    sf.write(str(b), tone(16000, 0.5, (660, 0.3)), 16000)
    pa, pb = prepare(a, tmp_path / "c"), prepare(b, tmp_path / "c")
    assert pa != pb
    assert pa.is_file() and pb.is_file()
    # changing a file in place changes its cache entry too
    sf.write(str(a), tone(16000, 0.5, (880, 0.3)), 16000)
    assert prepare(a, tmp_path / "c") not in (pa, pb)


def test_telephony_wav_is_returned_as_is(tmp_path: Path):
    src = tmp_path / "ready.wav"
    sf.write(str(src), tone(8000, 0.5, (440, 0.05)), 8000, subtype="PCM_16")
    assert prepare(src, tmp_path / "c") == src
    assert not (tmp_path / "c").exists()
    # but 8 kHz mono in another sample format is converted
    other = tmp_path / "ready-float.wav"
    sf.write(str(other), tone(8000, 0.5, (440, 0.05)), 8000, subtype="FLOAT")
    out = prepare(other, tmp_path / "c")
    assert out != other
    assert_telephony(out)


# --------------------------------------------------------------------------- errors


def test_unreadable_file_is_an_error_naming_it(tmp_path: Path):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("this is not a WAV file\n")
    with pytest.raises(AudioError) as e:
        prepare(bad, tmp_path / "c")
    assert str(bad) in str(e.value)
    problem = check_audio(bad)
    assert problem is not None and str(bad) in problem
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_missing_file_is_an_error_naming_it(tmp_path: Path):
    missing = tmp_path / "nowhere.flac"
    with pytest.raises(AudioError, match="nowhere.flac"):
        prepare(missing, tmp_path / "c")
    assert "nowhere.flac" in check_audio(missing)
    assert "is not a file" in check_audio(tmp_path)


def test_empty_audio_file_is_reported(tmp_path: Path):
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0), 8000)
    assert "no audio" in check_audio(empty)
    with pytest.raises(AudioError, match="empty.wav"):
        prepare(empty, tmp_path / "c")


def test_check_audio_accepts_good_files(tmp_path: Path):
    src = tmp_path / "ok.flac"
    sf.write(str(src), tone(44100, 0.3, (440, 0.3)), 44100)
    assert check_audio(src) is None
    assert check_audio(MEDIA_DIR / "en" / "welcome.wav") is None


# --------------------------------------------------------------------------- lookup


def test_resolve_prompt_by_name_and_language():
    assert resolve_prompt("welcome", "en", None) == MEDIA_DIR / "en" / "welcome.wav"
    assert resolve_prompt("welcome", "ru", None) == MEDIA_DIR / "ru" / "welcome.wav"


def test_resolve_prompt_falls_back_to_english(tmp_path: Path):
    # a language without prompts at all
    assert resolve_prompt("goodbye", "de", None) == MEDIA_DIR / "en" / "goodbye.wav"
    # a custom media dir with only some prompts: its own first, then the shipped ones
    custom = tmp_path / "media"
    (custom / "ru").mkdir(parents=True)
    (custom / "en").mkdir(parents=True)
    sf.write(str(custom / "ru" / "welcome.flac"), tone(8000, 0.2, (440, 0.1)), 8000)
    sf.write(str(custom / "en" / "only-english.wav"), tone(8000, 0.2, (440, 0.1)), 8000)
    assert resolve_prompt("welcome", "ru", None, custom) == custom / "ru" / "welcome.flac"
    assert resolve_prompt("only-english", "ru", None, custom) == (
        custom / "en" / "only-english.wav"
    )
    assert resolve_prompt("goodbye", "ru", None, custom) == MEDIA_DIR / "ru" / "goodbye.wav"


def test_resolve_prompt_missing_name_is_an_error_naming_it():
    with pytest.raises(AudioError) as e:
        resolve_prompt("no-such-prompt", "ru", None)
    msg = str(e.value)
    assert "no-such-prompt" in msg
    assert str(MEDIA_DIR / "ru" / "no-such-prompt.wav") in msg
    assert str(MEDIA_DIR / "en" / "no-such-prompt.wav") in msg
    with pytest.raises(AudioError):
        resolve_prompt("", "en", None)


def test_resolve_prompt_paths(tmp_path: Path, monkeypatch):
    (tmp_path / "greetings").mkdir()
    hello = tmp_path / "greetings" / "hello.ogg"
    sf.write(str(hello), tone(16000, 0.2, (440, 0.1)), 16000)
    assert resolve_prompt("greetings/hello.ogg", "en", tmp_path) == hello
    assert resolve_prompt(str(hello), "ru", Path("/elsewhere")) == hello
    monkeypatch.chdir(tmp_path)
    assert resolve_prompt("greetings/hello.ogg", "en", None).resolve() == hello
    # a name with an extension is a path, not a prompt name
    with pytest.raises(AudioError, match=r"welcome\.wav"):
        resolve_prompt("welcome.wav", "en", tmp_path)
    with pytest.raises(AudioError) as e:
        resolve_prompt("greetings/missing.wav", "en", tmp_path)
    assert str(tmp_path / "greetings" / "missing.wav") in str(e.value)
    with pytest.raises(AudioError, match="not a file"):
        resolve_prompt("./greetings", "en", tmp_path)


def test_resolve_music():
    assert resolve_music("default", None) == MEDIA_DIR / "music" / "default.wav"
    with pytest.raises(AudioError, match="jazz"):
        resolve_music("jazz", None)


# --------------------------------------------------------------------------- shipped media


def test_media_dir_is_the_repos_media_folder():
    assert MEDIA_DIR == Path(__file__).resolve().parents[1] / "media"
    assert (MEDIA_DIR / "make_media.py").is_file()
    assert (MEDIA_DIR / "README.md").is_file()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", PROMPTS)
def test_shipped_prompt_is_telephony_ready_and_not_silent(name: str, language: str):
    path = MEDIA_DIR / language / f"{name}.wav"
    assert path.is_file(), path
    assert_telephony(path)
    x, _ = sf.read(str(path))
    assert 0.8 < x.size / 8000 < 15, f"{path}: {x.size / 8000:.1f} s"
    rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
    assert rms_db > -30, f"{path} too quiet: {rms_db:.1f} dBFS"
    assert np.max(np.abs(x)) < 0.999  # not clipped
    assert prepare(path, Path("/nonexistent-cache-never-used")) == path
    assert check_audio(path) is None


def test_shipped_beep_is_a_short_1khz_tone():
    path = MEDIA_DIR / "tones" / "beep.wav"
    assert_telephony(path)
    x, _ = sf.read(str(path))
    assert 0.1 <= x.size / 8000 <= 1.0
    freqs, mag = spectrum(x, 8000)
    assert abs(freqs[np.argmax(mag)] - 1000) <= 5
    assert abs(x[0]) < 0.01 and abs(x[-1]) < 0.01  # ramped: no click


def test_shipped_hold_music_is_long_and_loops_without_a_click():
    path = MEDIA_DIR / "music" / "default.wav"
    assert_telephony(path)
    x, _ = sf.read(str(path))
    assert x.size / 8000 >= 30
    assert 20 * np.log10(np.sqrt(np.mean(x**2))) > -30  # audible
    steps = np.abs(np.diff(x))
    seam = abs(x[0] - x[-1])
    # the jump from the last sample back to the first is no bigger than an ordinary step
    assert seam <= np.percentile(steps, 95)
    assert seam < 0.05
    # and the start and the end sound alike: no fade to silence either side of the seam
    edge = 400  # 50 ms
    assert np.sqrt(np.mean(x[:edge] ** 2)) > 0.01
    assert np.sqrt(np.mean(x[-edge:] ** 2)) > 0.01


def test_shipped_media_is_small():
    total = sum(p.stat().st_size for p in MEDIA_DIR.rglob("*.wav"))
    assert total < 3 * 1024 * 1024
