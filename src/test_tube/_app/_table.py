"""Plain-text tables for the terminal: cell text, alignment, fitting to a width."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

MISSING = "-"
_CELL_MAX = 40  # a text cell is shortened to this many characters when fitting a terminal


def cell(value: Any) -> str:
    """How one value reads in a table: 6 significant digits, times to the second, ``-`` for missing."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int | None = None,
           keep: int = 1) -> tuple[list[str], list[str]]:
    """Lay out a table; return its lines and the headers of the columns left out.

    Numbers are right-aligned, everything else left-aligned.  With ``width``
    (a terminal), long text cells are shortened and columns that do not fit are
    left out from the right, never the first ``keep``; without it, every
    column and every character is kept.
    """
    columns = [[row[i] for row in rows] for i in range(len(headers))]
    texts = [[cell(v) for v in col] for col in columns]
    if width is not None:
        texts = [[_shorten(t) for t in col] for col in texts]
    widths = [max([len(h)] + [len(t) for t in col]) for h, col in zip(headers, texts)]
    shown = list(range(len(headers)))
    if width is not None:
        total = 0
        for n, i in enumerate(shown):
            total += widths[i] + (2 if n else 0)
            if total > width and n >= keep:
                shown = shown[:n]
                break
    right = [_numeric(col) for col in columns]
    lines = []
    for r in range(-1, len(rows)):
        parts = []
        for i in shown:
            text = headers[i] if r < 0 else texts[i][r]
            parts.append(text.rjust(widths[i]) if right[i] else text.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    hidden = [headers[i] for i in range(len(headers)) if i not in set(shown)]
    return lines, hidden


def _shorten(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= _CELL_MAX else text[: _CELL_MAX - 1] + "…"
