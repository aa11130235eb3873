"""Queue announcements as lists of prompt names: a pure module (no I/O, no clock).

    position_announcement(3, 125, "en")
    # -> ["queue-position", "number-3", "queue-wait", "number-3", "minutes"]
    #    "You are number three. Your estimated waiting time is three minutes."
    position_announcement(21, 1230, "ru")
    # -> ["queue-position", "number-20", "number-1", "queue-wait",
    #     "number-20", "number-1f", "minute"]
    #    "Ваш номер в очереди двадцать один. Примерное время ожидания двадцать одна минута."
    feature_prompt("paused")  # -> "agent-paused"

The caller plays the prompts one after another (each is a name for
:func:`softswitch.audio.resolve_prompt`, so ``media/<language>/<name>.wav`` or the same
name in a custom ``media_dir``). Sentences are assembled from pieces rather than
recorded whole because positions and waits change all the time: 26 numbers, three
minute words and two lead-ins cover every announcement this module makes.

Why the rules are what they are:

* Numbers are shipped for 1..20 and the tens 30..60, so 1..69 can be said (21 = 20 + 1).
  A caller further back than 69 hears only the waiting time: the exact place in so
  long a queue tells them little, and there are no pieces to say it.
* A wait is rounded *up* to whole minutes: announcing less than the likely wait
  disappoints, a little more does not. It is capped at 60 minutes, the largest number
  we can say in one piece; an estimate that far out is a guess anyway. Under a minute
  is "less than a minute" rather than "zero minutes".
* Russian nouns after numbers take three forms (1, 21, 31 -> минута; 2-4, 22-24 ->
  минуты; otherwise, and always for 11-14, минут) and "minute" is feminine, so the
  numbers before it are "одна" / "две" (``number-1f`` / ``number-2f``), not the
  counting "один" / "два" used for positions. English uses "minute" for 1 and
  "minutes" otherwise. Every prompt name exists in both languages (the English
  ``minutes-few`` and ``number-1f`` say "minutes" and "one"), so a name never fails
  to resolve whatever the language; the *choice* of name follows the language's rules.
  A language without rules of its own here gets the English ones, as it gets the
  English prompts when it has none.
"""

from __future__ import annotations

import math

__all__ = [
    "ALL_OPERATORS_BUSY",
    "FEATURE_PROMPTS",
    "MAX_SPOKEN_POSITION",
    "MAX_WAIT_MINUTES",
    "PROMPT_NAMES",
    "feature_prompt",
    "number_prompts",
    "position_announcement",
]

MAX_SPOKEN_POSITION = 69  # 60 + 9: the largest number the shipped pieces can say
MAX_WAIT_MINUTES = 60  # waits are capped here (the largest single-piece number)

POSITION = "queue-position"  # "You are number" / "Ваш номер в очереди"
WAIT = "queue-wait"  # "Your estimated waiting time is" / "Примерное время ожидания"
LESS_THAN_A_MINUTE = "less-than-a-minute"
MINUTE_ONE = "minute"  # en 1; ru 1, 21, 31, ... (минута)
MINUTE_FEW = "minutes-few"  # ru 2-4, 22-24, ... (минуты); en never picks it
MINUTE_MANY = "minutes"  # en 2+; ru 5-20, 25-30, ... (минут)
# "All our operators are busy. Please stay on the line." Not part of a position
# announcement (the queue plays it on its own) but shipped with these prompts.
ALL_OPERATORS_BUSY = "all-operators-busy"

# What an operator hears after a queue feature code: action -> prompt name.
FEATURE_PROMPTS: dict[str, str] = {
    "logged-in": "agent-logged-in",  # "You are logged in to the queue."
    "logged-out": "agent-logged-out",  # "You are logged out of the queue."
    "paused": "agent-paused",  # "You are paused."
    "unpaused": "agent-unpaused",  # "You are no longer paused."
}

_SINGLE_NUMBERS = frozenset([*range(1, 21), 30, 40, 50, 60])  # shipped as number-N


def number_prompts(n: int, feminine: bool = False) -> list[str]:
    """The prompt names that say ``n`` (1..69): one piece up to 20 and for the tens,
    otherwise tens + units (``23`` -> ``["number-20", "number-3"]``).

    ``feminine`` picks the Russian feminine forms of a final 1 or 2 (``number-1f``
    "одна", ``number-2f`` "две") for counting feminine nouns such as "минута"; 11 and
    12 are not affected (they have one form). Raises ValueError outside 1..69.
    """
    if not 1 <= n <= MAX_SPOKEN_POSITION:
        raise ValueError(f"cannot say {n!r}: numbers 1..{MAX_SPOKEN_POSITION} only")
    tens, units = divmod(n, 10)
    if n in _SINGLE_NUMBERS:
        head, last = [], n
    else:
        head, last = [f"number-{tens * 10}"], units
    suffix = "f" if feminine and last in (1, 2) else ""
    return [*head, f"number-{last}{suffix}"]


def _primary_language(language: str) -> str:
    return language.strip().lower().replace("_", "-").partition("-")[0]


def _minute_word(minutes: int, language: str) -> str:
    """The form of "minute" that follows the number ``minutes`` in ``language``."""
    if _primary_language(language) == "ru":
        if minutes % 10 == 1 and minutes % 100 != 11:
            return MINUTE_ONE
        if 2 <= minutes % 10 <= 4 and not 12 <= minutes % 100 <= 14:
            return MINUTE_FEW
        return MINUTE_MANY
    return MINUTE_ONE if minutes == 1 else MINUTE_MANY


def _wait_prompts(estimated_wait: float, language: str) -> list[str]:
    if estimated_wait < 60:
        return [WAIT, LESS_THAN_A_MINUTE]
    minutes = min(math.ceil(estimated_wait / 60), MAX_WAIT_MINUTES)
    feminine = _primary_language(language) == "ru"  # "минута" is feminine
    return [WAIT, *number_prompts(minutes, feminine), _minute_word(minutes, language)]


def position_announcement(position: int, estimated_wait: int | None, language: str) -> list[str]:
    """The prompt names to play, in order, to tell a queued caller where they are.

    ``position`` is 1 for the caller who is next; ``estimated_wait`` is in seconds
    (None when there is no estimate yet, e.g. no call has been answered to learn
    from); ``language`` is the switch's prompt language (``"en"``, ``"ru"``).

    * position 1..69: "You are number N" (21..69 as tens + units); beyond 69 the
      position part is left out;
    * wait None: the wait part is left out; under 60 s: "... less than a minute";
      otherwise the wait rounded up to whole minutes, at most 60, with the form of
      "minute" the language needs.

    The list is empty only when there is nothing to say (position over 69 and no
    estimate). Raises ValueError for a position below 1 or a negative wait: those are
    bugs in the caller, and saying something made up would hide them.
    """
    if isinstance(position, bool) or position < 1:
        raise ValueError(f"queue position must be 1 or more, not {position!r}")
    if estimated_wait is not None and estimated_wait < 0:
        raise ValueError(f"estimated wait must not be negative, not {estimated_wait!r}")
    out: list[str] = []
    if position <= MAX_SPOKEN_POSITION:
        out += [POSITION, *number_prompts(position)]
    if estimated_wait is not None:
        out += _wait_prompts(estimated_wait, language)
    return out


def feature_prompt(action: str) -> str:
    """The confirmation prompt for an operator's queue feature code: ``"logged-in"``,
    ``"logged-out"``, ``"paused"`` or ``"unpaused"`` -> ``"agent-<action>"``. A spoken
    confirmation matters because a feature code is dialled blind: without it the
    operator cannot tell a pause from a mistyped code. Raises ValueError otherwise."""
    try:
        return FEATURE_PROMPTS[action]
    except KeyError:
        known = ", ".join(FEATURE_PROMPTS)
        raise ValueError(f"unknown queue feature action {action!r} (known: {known})") from None


# Every prompt name this module can return or names, for checking that a media folder
# has them all (the shipped one does: tests/test_announce.py).
PROMPT_NAMES: frozenset[str] = frozenset(
    [
        POSITION,
        WAIT,
        LESS_THAN_A_MINUTE,
        MINUTE_ONE,
        MINUTE_FEW,
        MINUTE_MANY,
        ALL_OPERATORS_BUSY,
        *FEATURE_PROMPTS.values(),
        *(f"number-{n}" for n in _SINGLE_NUMBERS),
        "number-1f",
        "number-2f",
    ]
)
