"""Make strings that come from files (GGUF metadata, YAML, stored records) safe to show.

A GGUF's `general.name` or a tensor name is whatever bytes its author wrote; printed raw, an
escape sequence can recolor or rewrite the terminal, and a '|' breaks a Markdown table row.
`safe_text` is the one function every terminal line and report cell built from such a string
goes through.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

#: How a stage reports progress to whoever drives it: one line of text to show (the CLI prints
#: it; library code never does). Declared once, here, for every stage.
Progress = Callable[[str], None]

#: Default cap on the length of one shown value (characters, before escaping).
MAX_LEN = 200

# Unicode categories shown as escapes: controls (C0, C1, DEL), format characters (bidi
# overrides, zero-width), unassigned, surrogates and private use.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cn", "Cs", "Co", "Zl", "Zp"}
_ANY_UNSAFE = re.compile(r"[^\x20-\x7e]")
# Markdown: a backslash first (so later escapes stay escapes), then what ends a cell or starts
# code or raw HTML.
_MARKDOWN = (("\\", "\\\\"), ("|", "\\|"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;"))


def _escape_char(ch: str) -> str:
    """The visible escape of one character: \\n, \\t, \\x1b, \\u202e, \\U000e0001."""
    code = ord(ch)
    if ch in "\n\t\r":
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _shown(ch: str, newlines: bool) -> str:
    if newlines and ch == "\n":
        return ch
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        return _escape_char(ch)
    return ch


def safe_text(
    value: object, max_len: int = MAX_LEN, *, markdown: bool = False, newlines: bool = False
) -> str:
    """`value` as a string safe for a terminal, and with `markdown`, for a Markdown table cell.

    Control and invisible format characters (ESC, bidi overrides, ...) become visible escapes;
    a string longer than `max_len` is cut and ends in "…"; `markdown` escapes '\\', '|', '`',
    '<' and '>' so a cell stays one cell of plain text; `newlines` keeps line breaks (for
    multi-line error messages).

    >>> safe_text("evil\\x1b[31mred")
    'evil\\\\x1b[31mred'
    >>> safe_text("a|b", markdown=True)
    'a\\\\|b'
    >>> safe_text("x" * 10, 4)
    'xxxx…'
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > max_len
    text = text[:max_len]
    if _ANY_UNSAFE.search(text):
        text = "".join(_shown(ch, newlines) for ch in text)
    if markdown:
        for raw, escaped in _MARKDOWN:
            text = text.replace(raw, escaped)
    return text + "…" if cut else text
