"""softswitch.flow.announce: queue position / waiting-time announcements as prompt lists,
operator feature confirmations, and the shipped prompts they name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from softswitch import audio
from softswitch.flow.announce import (
    ALL_OPERATORS_BUSY,
    FEATURE_PROMPTS,
    PROMPT_NAMES,
    feature_prompt,
    number_prompts,
    position_announcement,
)

LANGUAGES = ["en", "ru"]


def wait_part(position: int, wait: int | None, language: str) -> list[str]:
    out = position_announcement(position, wait, language)
    return out[out.index("queue-wait") :] if "queue-wait" in out else []


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, ["number-1"]),
        (9, ["number-9"]),
        (11, ["number-11"]),
        (20, ["number-20"]),
        (21, ["number-20", "number-1"]),
        (23, ["number-20", "number-3"]),
        (30, ["number-30"]),
        (45, ["number-40", "number-5"]),
        (60, ["number-60"]),
        (69, ["number-60", "number-9"]),
    ],
)
def test_number_prompts(n: int, expected: list[str]):
    assert number_prompts(n) == expected


def test_number_prompts_feminine_changes_only_a_final_one_or_two():
    assert number_prompts(1, feminine=True) == ["number-1f"]
    assert number_prompts(2, feminine=True) == ["number-2f"]
    assert number_prompts(21, feminine=True) == ["number-20", "number-1f"]
    assert number_prompts(32, feminine=True) == ["number-30", "number-2f"]
    assert number_prompts(11, feminine=True) == ["number-11"]
    assert number_prompts(12, feminine=True) == ["number-12"]
    assert number_prompts(3, feminine=True) == ["number-3"]
    assert number_prompts(20, feminine=True) == ["number-20"]


@pytest.mark.parametrize("n", [0, -1, 70, 100])
def test_number_prompts_out_of_range(n: int):
    with pytest.raises(ValueError, match="1..69"):
        number_prompts(n)


# --------------------------------------------------------------------------- English


def test_english_position_and_wait():
    # 125 s rounds up to 3 minutes
    assert position_announcement(3, 125, "en") == [
        "queue-position",
        "number-3",
        "queue-wait",
        "number-3",
        "minutes",
    ]


def test_english_position_over_twenty_is_tens_and_units():
    assert position_announcement(23, None, "en") == ["queue-position", "number-20", "number-3"]
    assert position_announcement(40, None, "en") == ["queue-position", "number-40"]
    assert position_announcement(69, None, "en") == ["queue-position", "number-60", "number-9"]


def test_position_over_69_is_left_out():
    assert position_announcement(70, 120, "en") == ["queue-wait", "number-2", "minutes"]
    assert position_announcement(500, 120, "ru") == ["queue-wait", "number-2f", "minutes-few"]
    assert position_announcement(70, None, "en") == []


def test_wait_none_is_left_out():
    assert position_announcement(1, None, "en") == ["queue-position", "number-1"]
    assert position_announcement(1, None, "ru") == ["queue-position", "number-1"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("wait", [0, 1, 30, 59])
def test_wait_under_a_minute(wait: int, language: str):
    assert wait_part(1, wait, language) == ["queue-wait", "less-than-a-minute"]


@pytest.mark.parametrize(
    "wait, expected",
    [
        (60, ["number-1", "minute"]),
        (61, ["number-2", "minutes"]),
        (120, ["number-2", "minutes"]),
        (121, ["number-3", "minutes"]),
        (59.5, None),  # still under a minute
        (60 * 20, ["number-20", "minutes"]),
        (60 * 20 + 1, ["number-20", "number-1", "minutes"]),  # 21 minutes in English
        (60 * 59 + 1, ["number-60", "minutes"]),
        (3600, ["number-60", "minutes"]),
        (3601, ["number-60", "minutes"]),  # capped
        (86400, ["number-60", "minutes"]),
    ],
)
def test_english_wait_rounds_up_and_caps(wait: float, expected: list[str] | None):
    expected = ["less-than-a-minute"] if expected is None else expected
    assert wait_part(5, wait, "en") == ["queue-wait", *expected]


# --------------------------------------------------------------------------- Russian


@pytest.mark.parametrize(
    "minutes, expected",
    [
        (1, ["number-1f", "minute"]),
        (2, ["number-2f", "minutes-few"]),
        (3, ["number-3", "minutes-few"]),
        (4, ["number-4", "minutes-few"]),
        (5, ["number-5", "minutes"]),
        (10, ["number-10", "minutes"]),
        (11, ["number-11", "minutes"]),
        (12, ["number-12", "minutes"]),
        (13, ["number-13", "minutes"]),
        (14, ["number-14", "minutes"]),
        (15, ["number-15", "minutes"]),
        (20, ["number-20", "minutes"]),
        (21, ["number-20", "number-1f", "minute"]),
        (22, ["number-20", "number-2f", "minutes-few"]),
        (24, ["number-20", "number-4", "minutes-few"]),
        (25, ["number-20", "number-5", "minutes"]),
        (30, ["number-30", "minutes"]),
        (31, ["number-30", "number-1f", "minute"]),
        (42, ["number-40", "number-2f", "minutes-few"]),
        (53, ["number-50", "number-3", "minutes-few"]),
        (59, ["number-50", "number-9", "minutes"]),
        (60, ["number-60", "minutes"]),
    ],
)
def test_russian_minute_forms_and_gender(minutes: int, expected: list[str]):
    assert wait_part(1, minutes * 60, "ru") == ["queue-wait", *expected]


def test_russian_position_uses_the_counting_forms():
    # "Ваш номер в очереди двадцать один" (not "одна")
    assert position_announcement(21, None, "ru") == ["queue-position", "number-20", "number-1"]
    assert position_announcement(2, None, "ru") == ["queue-position", "number-2"]


def test_russian_full_announcement():
    assert position_announcement(21, 1230, "ru") == [
        "queue-position",
        "number-20",
        "number-1",
        "queue-wait",
        "number-20",
        "number-1f",
        "minute",
    ]
    assert wait_part(1, 3601, "ru") == ["queue-wait", "number-60", "minutes"]  # capped


def test_language_spellings_and_unknown_languages():
    ru = position_announcement(1, 60, "ru")
    assert position_announcement(1, 60, "RU") == ru
    assert position_announcement(1, 60, "ru-RU") == ru
    assert position_announcement(1, 60, "ru_RU") == ru
    # a language with no rules here gets the English ones (as it gets the English prompts)
    assert position_announcement(1, 1260, "de") == position_announcement(1, 1260, "en")
    assert wait_part(1, 1260, "de") == ["queue-wait", "number-20", "number-1", "minutes"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("position", [0, -3, True])
def test_bad_position(position: int):
    with pytest.raises(ValueError, match="position"):
        position_announcement(position, 10, "en")


def test_negative_wait():
    with pytest.raises(ValueError, match="negative"):
        position_announcement(1, -1, "en")


# --------------------------------------------------------------------------- features


def test_feature_prompt():
    assert feature_prompt("logged-in") == "agent-logged-in"
    assert feature_prompt("logged-out") == "agent-logged-out"
    assert feature_prompt("paused") == "agent-paused"
    assert feature_prompt("unpaused") == "agent-unpaused"
    with pytest.raises(ValueError, match="'login'.*logged-in, logged-out, paused, unpaused"):
        feature_prompt("login")


# --------------------------------------------------------------------------- shipped media


def every_returned_name() -> set[str]:
    names: set[str] = set()
    for language in LANGUAGES:
        for position in range(1, 71):
            names.update(position_announcement(position, None, language))
        for wait in range(0, 4001):
            names.update(position_announcement(1, wait, language))
    return names


def test_prompt_names_lists_everything_the_module_can_return():
    returned = every_returned_name()
    assert returned | {ALL_OPERATORS_BUSY, *FEATURE_PROMPTS.values()} == PROMPT_NAMES


@cache
def check_wav(path: Path) -> None:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == (
        "WAV",
        "PCM_16",
        1,
        8000,
    ), f"{path}: {info}"
    x, _ = sf.read(str(path))
    assert 0.2 < x.size / 8000 < 6, f"{path}: {x.size / 8000:.2f} s"
    rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
    assert rms_db > -35, f"{path} too quiet: {rms_db:.1f} dBFS"
    assert np.max(np.abs(x)) < 0.999, f"{path} clipped"
    assert audio.check_audio(path) is None


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_name_resolves_to_a_shipped_telephony_wav_in_its_own_language(language: str):
    for name in sorted(PROMPT_NAMES):
        path = audio.resolve_prompt(name, language, None)
        # shipped in this very language, not found through the English fallback
        assert path == audio.MEDIA_DIR / language / f"{name}.wav"
        check_wav(path)
        # played as is by the media workers (no conversion)
        assert audio.prepare(path, Path("/nonexistent-cache-never-used")) == path


def test_feminine_and_plural_pieces_differ_in_russian_only():
    """ru has distinct recordings for the forms; en's copies say the same words."""

    def samples(language: str, name: str) -> np.ndarray:
        return sf.read(str(audio.MEDIA_DIR / language / f"{name}.wav"))[0]

    for a, b in [("number-1", "number-1f"), ("number-2", "number-2f"), ("minutes", "minutes-few")]:
        assert not np.array_equal(samples("ru", a), samples("ru", b)), (a, b)
        assert np.array_equal(samples("en", a), samples("en", b)), (a, b)
