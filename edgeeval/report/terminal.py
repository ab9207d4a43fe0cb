"""The ranking as `edgeeval bench` and `edgeeval report` print it: an aligned Markdown table (as
llama-bench prints its own) of the columns that answer "which one", at most WIDTH characters a
line, so it reads on a 100-column terminal. report.md and report.html hold the full table.

Columns: rank (#), variant, cap/GB (the ranked metric, ± its SE, beside the name),
capability (cap), peak GB, tg t/s and status. When the lines would be wider than WIDTH, the
variant's name (in its middle, so its family and its quant stay readable) and the status (at
its end, keeping "pareto front", "dominated by", "over budget") are cut to share the room,
the name first; "…" marks each cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgeeval.report.cells import num, pm
from edgeeval.report.summarize import RankRow, rank_label, verdict
from edgeeval.text import safe_text

WIDTH = 100
HEAD = ("#", "variant", "cap/GB", "cap", "peak GB", "tg t/s", "status")
RIGHT = (True, False, True, True, True, True, False)
KEY = (
    "# 1 = most capability (cap, 0-100) per GB of peak memory (± SE); =2 shared (tied); - unranked"
)
MIN_VARIANT, MIN_STATUS = 16, 13


def _escape(text: str) -> str:
    """A cell's text with its pipes (and the backslashes before them) escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _cut_middle(text: str, width: int) -> str:
    """`text` in `width` characters, its middle replaced by "…".

    >>> _cut_middle("deepseek-r1-distill-qwen-1.5b-q4_k_m-local", 25)
    'deepseek-r1-…q4_k_m-local'
    """
    if len(text) <= width:
        return text
    right = (width - 1) // 2
    return text[: width - 1 - right] + "…" + text[len(text) - right :]


def _shorten(text: str, limit: int, cut: Callable[[str, int], str]) -> str:
    """`text` cut (before escaping) so that it is at most `limit` characters escaped."""
    for n in range(min(len(text), limit), 0, -1):
        shown = _escape(cut(text, n))
        if len(shown) <= limit:
            return shown
    return "…"


def _cells(r: RankRow) -> list[str]:
    """A row's cells as text, before escaping (control characters already shown as escapes)."""
    return [
        rank_label(r),
        safe_text(r.name, 500),
        pm(r.capability_per_gb, r.capability_per_gb_se),
        "-" if r.capability is None else f"{r.capability:.1f}",
        num(r.peak_rss_gb, 3),
        "-" if r.tg_ts is None else f"{r.tg_ts:.1f}",
        safe_text(verdict(r), 500),
    ]


def _fit(rows: list[list[str]], width: int) -> list[list[str]]:
    """The rows escaped, the variant and the status cut to share what the other columns leave
    of `width`: the name first (down to MIN_VARIANT), the status keeps MIN_STATUS (or all of
    itself when shorter)."""
    shown = [[_escape(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in shown) for i in range(len(HEAD))]
    left = width - (sum(widths) - widths[1] - widths[6]) - (3 * len(HEAD) + 1)
    if widths[1] + widths[6] <= left:
        return shown
    name = min(widths[1], max(MIN_VARIANT, left - min(widths[6], MIN_STATUS)))
    limits = {1: (name, _cut_middle), 6: (max(MIN_STATUS, left - name), _cut_end)}
    for raw, row in zip(rows[1:], shown[1:], strict=True):
        for col, (limit, cut) in limits.items():
            if len(row[col]) > limit:
                row[col] = _shorten(raw[col], limit, cut)
    return shown


def terminal_table(rows: Sequence[RankRow], width: int = WIDTH) -> str:
    """The compact ranking, aligned, each line at most `width` characters (given a name and a
    status that can be cut that far), followed by one line that says how to read it."""
    table = _fit([list(HEAD), *(_cells(r) for r in rows)], width)
    widths = [max(len(row[i]) for row in table) for i in range(len(HEAD))]

    def line(row: Sequence[str]) -> str:
        cells = [
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(row, widths, RIGHT, strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, RIGHT, strict=True)
    )
    return "\n".join([line(table[0]), f"|{rule}|", *(line(row) for row in table[1:]), "", KEY])
