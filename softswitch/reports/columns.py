"""How a report field is shown: a hint in the dataclass field's metadata, so each report
declares its own columns once and `render` needs no per-report code.

Hints: `text`, `count`, `seconds` (one decimal), `duration` (h:mm:ss), `ratio` (a
share 0..1, shown as a percentage), `time` (unix time, shown in the report's time
zone), `attempts` (a list of ring attempts), `number` (a plain float)."""

from __future__ import annotations

import dataclasses
from typing import Any

FORMATS = ("text", "count", "seconds", "duration", "ratio", "time", "attempts", "number")


def col(fmt: str, **kwargs: Any) -> Any:
    """A dataclass field shown as `fmt` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown column format {fmt!r}")
    return dataclasses.field(metadata={"fmt": fmt}, **kwargs)


def fmt_of(f: dataclasses.Field) -> str:
    return f.metadata.get("fmt", "text")


def ratio(part: float, whole: float) -> float | None:
    """part / whole, or None when there is nothing to divide by (not 0: "no calls" and
    "no call answered" are different answers)."""
    return part / whole if whole > 0 else None


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclasses.dataclass(frozen=True)
class Section:
    """One table of a report: `name` for CSV's `section` column, `title` for the text
    table, `rows` of one dataclass type."""

    name: str
    title: str
    rows: tuple[Any, ...]
