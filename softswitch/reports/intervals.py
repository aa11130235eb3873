"""Time spans from open/close rows (login → logout, pause → unpause), and the little
interval arithmetic the operators report needs: clip to the report range, intersect
(pause time counts only while logged in), total length."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

Span = tuple[float, float]


def spans(
    rows: Iterable[Mapping[str, Any]],
    opens: str,
    closes: str,
    until: float,
    also_closes: Collection[str] = (),
) -> list[Span]:
    """One operator's spans, from their rows in time order.

    An open while already open is a repeat (a re-registration) and keeps the first. A
    `closes` row with nothing open uses its `duration` (the span began before the rows we
    were given); an `also_closes` row (a logout ending a pause) only ends an open span.
    A span still open after the last row runs to `until` (now, or the end of the report
    range, whichever is earlier)."""
    out: list[Span] = []
    since: float | None = None
    for row in rows:
        t, kind = float(row["time"]), row["kind"]
        if kind == opens:
            if since is None:
                since = t
        elif kind == closes or kind in also_closes:
            if since is not None:
                out.append((since, t))
            elif kind == closes and row.get("duration") is not None:
                out.append((t - float(row["duration"]), t))
            since = None
    if since is not None and since < until:
        out.append((since, until))
    return merge(out)


def merge(items: Iterable[Span]) -> list[Span]:
    """Sorted, with overlapping spans joined (a defensive step: the log should never
    hold two open sessions of one operator, but a span rebuilt from `duration` may
    overlap a neighbour)."""
    out: list[Span] = []
    for a, b in sorted(items):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def clip(items: Iterable[Span], start: float, end: float) -> list[Span]:
    """The parts of the spans inside [start, end)."""
    out = []
    for a, b in items:
        a, b = max(a, start), min(b, end)
        if b > a:
            out.append((a, b))
    return out


def intersect(xs: list[Span], ys: list[Span]) -> list[Span]:
    """The time covered by both lists (each sorted and non-overlapping)."""
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if b > a:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def length(items: Iterable[Span]) -> float:
    return sum((b - a for a, b in items), 0.0)
