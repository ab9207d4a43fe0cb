"""Table cells as the Markdown reports write them: numbers, mean ± spread, gigabytes, and text
made safe for a cell. One place, so every section shows a missing value the same way ("-")."""

from __future__ import annotations

from typing import Any

from edgeeval.settings import GB
from edgeeval.text import safe_text


def md(value: Any, max_len: int = 120) -> str:
    """A string from a file or a record, safe inside a Markdown table cell or list item."""
    return safe_text(value, max_len, markdown=True)


def num(value: Any, digits: int = 2) -> str:
    """A float to `digits` places, anything else as str, None as "-".

    >>> num(1.2345), num(7), num(None)
    ('1.23', '7', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pm(mean: float | None, spread: float | None, digits: int = 1) -> str:
    """'mean ± spread' (a missing spread shows as 0), or "-" without a mean.

    >>> pm(41.25, 2.0)
    '41.2 ± 2.0'
    """
    return "-" if mean is None else f"{mean:.{digits}f} ± {(spread or 0):.{digits}f}"


def gb(n_bytes: Any) -> str:
    """Bytes as decimal gigabytes to 3 places, or "-".

    >>> gb(1_250_000_000)
    '1.250'
    """
    return "-" if n_bytes is None else f"{n_bytes / GB:.3f}"
