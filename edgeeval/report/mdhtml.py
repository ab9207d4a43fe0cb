"""The Markdown that report.md's sections are written in, as HTML, so report.html carries the
same sections with the same words and numbers (memory and roofline, failed or skipped, quant
fidelity, host and settings) without a second renderer for each.

Only the subset those sections use: `##`/`###` headings, paragraphs, `- ` lists, `> ` quotes,
pipe tables (a `---:` column is numeric: right-aligned, sorted by its leading number),
`**bold**`, `` `code` ``, the backslash escapes and the entities (&lt; &gt;) of
`text.safe_text(markdown=True)`. Text is HTML-escaped after the Markdown escapes and entities
are undone, as a Markdown viewer shows them, so a name stays text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import escape, unescape

_INLINE = re.compile(r"\\([\\`|<>*_#\[\]()!-])|`([^`]*)`|\*\*")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def inline(text: str) -> str:
    """One line of Markdown text as HTML.

    >>> inline(r"**a\\|b** `x<y` c&lt;d&gt;")
    '<b>a|b</b> <code>x&lt;y</code> c&lt;d&gt;'
    """
    out, bold, at = [], False, 0
    for m in _INLINE.finditer(text):
        out.append(escape(unescape(text[at : m.start()])))
        if m.group(1) is not None:
            out.append(escape(m.group(1)))
        elif m.group(2) is not None:
            out.append(f"<code>{escape(m.group(2))}</code>")
        else:
            out.append("</b>" if bold else "<b>")
            bold = not bold
        at = m.end()
    out.append(escape(unescape(text[at:])))
    return "".join(out) + ("</b>" if bold else "")


def split_row(line: str) -> list[str]:
    """A table row's cells (still Markdown), split on the pipes that are not escaped.

    >>> split_row(r"| a\\|b | 1.5 |")
    ['a\\\\|b', '1.5']
    """
    cells, cell, chars = [], [], iter(line.strip().removeprefix("|"))
    for ch in chars:
        if ch == "\\":
            cell += [ch, next(chars, "")]
        elif ch == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    if "".join(cell).strip():
        cells.append("".join(cell).strip())
    return cells


def sort_key(text: str) -> str:
    """A numeric cell's data-sort value: its leading number, "" when it has none ("-").

    >>> sort_key("1,731 ± 2214"), sort_key("4 %"), sort_key("-")
    ('1731', '4', '')
    """
    m = _NUMBER.match(text)
    return m.group().replace(",", "") if m else ""


def _table(lines: list[str]) -> str:
    head = split_row(lines[0])
    numeric = [c.endswith(":") for c in split_row(lines[1])] if len(lines) > 1 else []
    numeric += [False] * (len(head) - len(numeric))
    ths = "".join(
        f"<th{'' if n else ' class=t'}>{inline(h)}</th>"
        for h, n in zip(head, numeric[: len(head)], strict=True)
    )
    rows = []
    for line in lines[2:]:
        tds = [
            f'<td data-sort="{escape(sort_key(c))}">{inline(c)}</td>'
            if n
            else f'<td class="t">{inline(c)}</td>'
            for c, n in zip(split_row(line), numeric, strict=False)
        ]
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return (
        f'<div class="scroll"><table class="sortable"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """(kind, lines) per block: heading, table, list, quote or paragraph."""
    kind, lines = "", []  # type: str, list[str]
    for line in text.splitlines():
        now = (
            "blank" if not line.strip()
            else "h" if line.startswith("#")
            else "table" if line.startswith("|")
            else "list" if line.startswith("- ")
            else "quote" if line.startswith("> ")
            else "p"
        )  # fmt: skip
        if lines and (now != kind or now == "h"):
            yield kind, lines
            lines = []
        kind = now
        if now != "blank":
            lines.append(line)
    if lines:
        yield kind, lines


def markdown_html(text: str) -> str:
    """Markdown of the subset above as HTML."""
    out = []
    for kind, lines in _blocks(text):
        if kind == "h":
            level = min(len(lines[0]) - len(lines[0].lstrip("#")), 6)
            out.append(f"<h{level}>{inline(lines[0][level:].strip())}</h{level}>")
        elif kind == "table":
            out.append(_table(lines))
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{inline(x[2:])}</li>" for x in lines) + "</ul>")
        elif kind == "quote":
            out.append("<p>" + " ".join(inline(x[2:]) for x in lines) + "</p>")
        else:
            out.append("<p>" + " ".join(inline(x) for x in lines) + "</p>")
    return "".join(out)
